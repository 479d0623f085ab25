//! Team and access (docs/adr/0017): an account's members and invitations,
//! kept in its team stream; seats limited by the plan's `max_users` (or
//! the staff's override); the counts the SaaS reports; and the roster
//! check every owner/admin/editor/viewer token passes ([`admit`]): its
//! `sub` must be an active member of its account, and it acts with the
//! roster's role, not the one its token claims.
//!
//! The roster is read from the team stream itself (authoritative, a few
//! events per account), cached per process for [`ROSTER_CACHE_MILLIS`]
//! and forgotten at once when this process changes the team, so a
//! removal or a demotion takes effect on the user's next request here and
//! within that time on every other instance.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use events::{AccountId, LimitOverrides, MemberRole, TeamEvent, UsageCounts};
use hmac::{Hmac, Mac};
use ledger::team::{Member, MemberStatus, Seed, TeamAction};
use ledger::{Team, TeamCommand};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use store::{CommandContext, Executed, Reservation};
use tracing::debug;
use uuid::Uuid;

use crate::access;
use crate::caller::{Caller, Role, Target};
use crate::error::AppError;
use crate::input::{Input, Key, Query};
use crate::runner::claim;
use crate::{now, App, Written};

/// How long a roster read from the store answers this process's checks.
pub const ROSTER_CACHE_MILLIS: u64 = 500;
/// Most accounts whose rosters are cached at once (then the cache starts
/// over).
pub const ROSTER_CACHE_ACCOUNTS_MAX: usize = 100_000;
/// An invitation's lifetime unless the request says otherwise, and the
/// longest one may ask for.
pub const INVITATION_DAYS_DEFAULT: i64 = 7;
pub const INVITATION_DAYS_MAX: i64 = 30;
/// Longest email, user id and invitation token accepted.
pub const EMAIL_BYTES_MAX: usize = 254;
pub const USER_ID_BYTES_MAX: usize = 200;
pub const TOKEN_BYTES_MAX: usize = 256;
/// Largest count the SaaS may report (sites, industries, author profiles)
/// and largest limit staff may set.
pub const COUNT_MAX: i64 = 1_000_000_000;
/// The reservation scope of invitation token hashes: its owner is the
/// team stream (the account) that issued the token.
const INVITATION_SCOPE: &str = "invitation_token";

// ---------------------------------------------------------------------------
// The roster check
// ---------------------------------------------------------------------------

/// The active members of one account, as the check needs them.
#[derive(Debug, Clone, Default)]
struct Roster {
    /// `sub` → (role, member id, last seen).
    active: HashMap<String, (MemberRole, Uuid, Option<DateTime<Utc>>)>,
}

/// Rosters by account, with the instant each was read.
type RosterCache = HashMap<AccountId, (Instant, Arc<Roster>)>;

/// The rosters this process read, briefly, and the members it last noted
/// as seen.
#[derive(Debug, Clone, Default)]
pub struct Rosters {
    cache: Arc<Mutex<RosterCache>>,
    /// Bumped by every local team change: a read that began before it is
    /// not cached.
    generation: Arc<AtomicU64>,
    seen: Arc<Mutex<HashMap<(AccountId, String), Instant>>>,
}

impl Rosters {
    /// Forgets an account's roster (this process just changed it).
    pub fn forget(&self, account: AccountId) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(&account);
        }
    }

    fn cached(&self, account: AccountId) -> Option<Arc<Roster>> {
        let cache = self.cache.lock().ok()?;
        let (at, roster) = cache.get(&account)?;
        (at.elapsed() < Duration::from_millis(ROSTER_CACHE_MILLIS)).then(|| roster.clone())
    }

    fn keep(&self, account: AccountId, roster: Arc<Roster>, generation: u64) {
        if self.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= ROSTER_CACHE_ACCOUNTS_MAX {
                cache.clear();
            }
            cache.insert(account, (Instant::now(), roster));
        }
    }

    /// Whether `sub` of `account` is due a "seen" record (at most hourly
    /// per process; the aggregate keeps it hourly across processes).
    fn due_seen(&self, account: AccountId, sub: &str) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return false;
        };
        let key = (account, sub.to_owned());
        let every = Duration::from_secs(ledger::team::SEEN_EVERY_SECONDS as u64);
        if seen.get(&key).is_some_and(|at| at.elapsed() < every) {
            return false;
        }
        if seen.len() >= ROSTER_CACHE_ACCOUNTS_MAX {
            seen.clear();
        }
        seen.insert(key, Instant::now());
        true
    }
}

fn role_of(role: MemberRole) -> Role {
    match role {
        MemberRole::Owner => Role::Owner,
        MemberRole::Admin => Role::Admin,
        MemberRole::Editor => Role::Editor,
        MemberRole::Viewer => Role::Viewer,
    }
}

/// Strength of a roster role: owner 3 … viewer 0.
fn rank(role: MemberRole) -> u8 {
    match role {
        MemberRole::Owner => 3,
        MemberRole::Admin => 2,
        MemberRole::Editor => 1,
        MemberRole::Viewer => 0,
    }
}

/// The weaker of two roles: a token acts with its member's roster role, or
/// with less when it claims less (least privilege: a viewer token minted
/// for an owner reads like a viewer; an admin claim of a viewer member
/// acts as a viewer).
fn weaker(a: MemberRole, b: Option<MemberRole>) -> MemberRole {
    match b {
        Some(b) if rank(b) < rank(a) => b,
        _ => a,
    }
}

/// The caller's roster role, for the rules on the owner role (None for
/// staff and bots, who are not on rosters).
fn roster_role(caller: &Caller) -> Option<MemberRole> {
    match caller.role() {
        Role::Owner => Some(MemberRole::Owner),
        Role::Admin => Some(MemberRole::Admin),
        Role::Editor => Some(MemberRole::Editor),
        Role::Viewer => Some(MemberRole::Viewer),
        Role::Developer | Role::SystemBot => None,
    }
}

async fn roster(app: &App, account: AccountId) -> Result<Option<Arc<Roster>>, AppError> {
    if let Some(r) = app.rosters.cached(account) {
        return Ok(Some(r));
    }
    let generation = app.rosters.generation.load(Ordering::SeqCst);
    let Some((team, seed)) = load_or_seed(app, account).await? else {
        return Ok(None);
    };
    let mut roster = Roster::default();
    if team.started() {
        for m in team.records().filter(|m| m.is_active()) {
            if let Some(user) = &m.user_id {
                roster
                    .active
                    .insert(user.clone(), (m.role, m.id, m.last_seen_at));
            }
        }
    } else if let Some(seed) = seed {
        roster.active.insert(
            seed.owner_user_id,
            (MemberRole::Owner, seed.member_id, None),
        );
    }
    let roster = Arc::new(roster);
    app.rosters.keep(account, roster.clone(), generation);
    Ok(Some(roster))
}

/// The roster check (SPEC §10): a token of owner, admin, editor or viewer
/// is accepted only when its `sub` is an active member of its account, and
/// acts with the roster's role. Developer and system_bot tokens, and every
/// token when the check is off (`LEDGER_ROSTER_CHECK=off`), pass as they
/// are. A token for an account that does not exist is 404, as every route
/// would answer.
pub async fn admit(app: &App, caller: Caller) -> Result<Caller, AppError> {
    if !app.settings.roster_check || matches!(caller.role(), Role::Developer | Role::SystemBot) {
        return Ok(caller);
    }
    let Some(account) = caller.account_id() else {
        return Ok(caller);
    };
    let roster = roster(app, account)
        .await?
        .ok_or_else(|| AppError::NotFound("account not found".into()))?;
    let Some((role, _, last_seen)) = roster.active.get(caller.sub()).copied() else {
        return Err(AppError::Forbidden(format!(
            "user {:?} is not an active member of this account",
            caller.sub()
        )));
    };
    let stale = last_seen
        .is_none_or(|at| (Utc::now() - at).num_seconds() >= ledger::team::SEEN_EVERY_SECONDS);
    if stale && app.rosters.due_seen(account, caller.sub()) {
        note_seen(app, account, caller.sub().to_owned());
    }
    let acting = weaker(role, roster_role(&caller));
    Ok(caller.with_role(role_of(acting)))
}

/// Records, in the background, that a member used the API.
fn note_seen(app: &App, account: AccountId, user_id: String) {
    let app = app.clone();
    tokio::spawn(async move {
        let ctx = CommandContext::new(Caller::system("roster").actor());
        let command = TeamCommand {
            seed: None,
            action: TeamAction::Seen { user_id },
            now: now(),
        };
        match app
            .execute::<Team>(&account.to_string(), command, &ctx, None, &[])
            .await
        {
            Ok(_) => app.rosters.forget(account),
            Err(e) => debug!(error = %e, %account, "recording a member as seen"),
        }
    });
}

// ---------------------------------------------------------------------------
// Loading a team
// ---------------------------------------------------------------------------

/// The account's team, and the seed that begins its stream if it has not
/// begun (from the account's `owner_user_id` and billing email); None when
/// the account does not exist.
async fn load_or_seed(
    app: &App,
    account: AccountId,
) -> Result<Option<(Team, Option<Seed>)>, AppError> {
    let team = app
        .store
        .load::<Team>(&account.to_string())
        .await?
        .aggregate;
    if team.started() {
        return Ok(Some((team, None)));
    }
    Ok(account_view(app, account).await?.map(|v| {
        (
            team,
            Some(Seed {
                member_id: Uuid::now_v7(),
                owner_user_id: v.owner_user_id,
                email: v.billing_email,
            }),
        )
    }))
}

/// The account's row; when it is not there yet (an account opened a
/// moment ago, perhaps), after the read models caught up once. None when
/// there is no such account.
async fn account_view(
    app: &App,
    account: AccountId,
) -> Result<Option<projections::AccountView>, AppError> {
    let id = account.to_string();
    if let Some(v) = app.read_models.account(&id).await? {
        return Ok(Some(v));
    }
    app.fresh_read_models().await?;
    Ok(app.read_models.account(&id).await?)
}

async fn load(app: &App, account: AccountId) -> Result<(Team, Option<Seed>), AppError> {
    load_or_seed(app, account)
        .await?
        .ok_or_else(|| AppError::NotFound("account not found".into()))
}

/// The account's owner, for `ledger-server token --role owner`: the
/// earliest active owner on its roster (the opening owner before its team
/// began); None when there is no such account.
pub async fn current_owner(
    store: &store::Store,
    account: AccountId,
) -> Result<Option<String>, AppError> {
    let id = account.to_string();
    let team = store.load::<Team>(&id).await?.aggregate;
    if team.started() {
        return Ok(team
            .records()
            .filter(|m| m.is_active() && m.role == MemberRole::Owner)
            .min_by_key(|m| m.joined_at)
            .and_then(|m| m.user_id.clone()));
    }
    let view = projections::ReadModels::new(store.clone())
        .account(&id)
        .await?;
    Ok(view.map(|v| v.owner_user_id))
}

/// Begins a new account's team with its owner (called when it is opened;
/// an account whose team never began is seeded by its first team command).
pub async fn start(
    app: &App,
    account: AccountId,
    owner_user_id: &str,
    email: &str,
) -> Result<(), AppError> {
    let ctx = CommandContext::new(Caller::system("accounts").actor());
    let command = TeamCommand {
        seed: Some(Seed {
            member_id: Uuid::now_v7(),
            owner_user_id: owner_user_id.to_owned(),
            email: email.to_owned(),
        }),
        action: TeamAction::Start,
        now: now(),
    };
    app.execute::<Team>(&account.to_string(), command, &ctx, None, &[])
        .await?;
    app.rosters.forget(account);
    Ok(())
}

/// Runs a team command for `caller` and forgets the cached roster.
async fn run(
    app: &App,
    caller: &Caller,
    account: AccountId,
    seed: Option<Seed>,
    action: TeamAction,
    claim: Option<&store::IdempotencyClaim>,
    reservations: &[Reservation],
) -> Result<Executed<Team>, AppError> {
    let ctx = CommandContext::new(caller.actor());
    let command = TeamCommand {
        seed,
        action,
        now: now(),
    };
    let done = crate::telemetry::time_command(
        "team",
        app.execute::<Team>(&account.to_string(), command, &ctx, claim, reservations),
    )
    .await;
    app.rosters.forget(account);
    Ok(done?)
}

// ---------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------

/// A member of an account.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberView {
    pub id: Uuid,
    pub account_id: String,
    /// The JWT `sub` of the member (none while invited).
    pub user_id: Option<String>,
    pub email: String,
    /// `owner`, `admin`, `editor` or `viewer`.
    pub role: String,
    /// `active`, `removed` or `invited`.
    pub status: String,
    pub invited_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub joined_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
}

impl MemberView {
    fn of(account: AccountId, m: &Member, position: Option<i64>) -> Self {
        Self {
            id: m.id,
            account_id: account.to_string(),
            user_id: m.user_id.clone(),
            email: m.email.clone(),
            role: m.role.as_str().to_owned(),
            status: match m.status {
                MemberStatus::Revoked => "removed",
                s => s.as_str(),
            }
            .to_owned(),
            invited_by: m.invited_by.clone(),
            created_at: m.created_at,
            joined_at: m.joined_at,
            removed_at: m.removed_at,
            last_seen_at: m.last_seen_at,
            position,
        }
    }
}

/// An invitation to an account's team.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvitationView {
    pub id: Uuid,
    pub account_id: String,
    pub email: String,
    pub role: String,
    /// `invited` (open), `accepted`, `revoked` or `expired`.
    pub status: String,
    pub invited_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The secret the invitee accepts with: in the answer to the invite
    /// only (and to its retries with the same Idempotency-Key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub position: Option<i64>,
}

impl InvitationView {
    fn of(account: AccountId, m: &Member, at: DateTime<Utc>) -> Self {
        let status = match m.status {
            MemberStatus::Invited if m.is_open_invitation(at) => "invited",
            MemberStatus::Invited => "expired",
            MemberStatus::Active | MemberStatus::Removed => "accepted",
            MemberStatus::Revoked => "revoked",
        };
        Self {
            id: m.id,
            account_id: account.to_string(),
            email: m.email.clone(),
            role: m.role.as_str().to_owned(),
            status: status.to_owned(),
            invited_by: m.invited_by.clone(),
            created_at: m.created_at,
            expires_at: m.expires_at,
            token: None,
            position: None,
        }
    }
}

/// Seats: active members and open invitations, against the limit.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Seats {
    /// `max_users` of the plan or the account's override; null: unlimited.
    pub limit: Option<i64>,
    pub used: i64,
}

/// An account's team: its active members and open invitations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TeamView {
    pub account_id: String,
    pub members: Vec<MemberView>,
    pub invitations: Vec<InvitationView>,
    pub seats: Seats,
}

// ---------------------------------------------------------------------------
// Input
// ---------------------------------------------------------------------------

fn email(field: &str, raw: &str) -> Result<String, AppError> {
    let v = raw.trim();
    let ok = v.len() <= EMAIL_BYTES_MAX
        && v.split_once('@').is_some_and(|(user, host)| {
            !user.is_empty()
                && !host.contains('@')
                && host.contains('.')
                && !host.starts_with('.')
                && !host.ends_with('.')
        })
        && !v.chars().any(char::is_whitespace);
    if ok {
        Ok(v.to_owned())
    } else {
        Err(AppError::invalid_field(
            field,
            format!("{field} must be an email address of at most {EMAIL_BYTES_MAX} bytes"),
        ))
    }
}

fn role(raw: &str) -> Result<MemberRole, AppError> {
    MemberRole::parse(raw).ok_or_else(|| {
        AppError::invalid_field("role", "role must be owner, admin, editor or viewer")
    })
}

fn user_id(field: &str, raw: &str) -> Result<String, AppError> {
    if raw.trim().is_empty() || raw.len() > USER_ID_BYTES_MAX {
        return Err(AppError::invalid_field(
            field,
            format!("{field} must be 1 to {USER_ID_BYTES_MAX} bytes"),
        ));
    }
    Ok(raw.to_owned())
}

fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The invitation's secret: an HMAC of its id under the server's key (so a
/// retry with the same Idempotency-Key can answer it again, and only its
/// hash is ever stored), or random bytes when no key is configured.
pub(crate) fn invitation_token(app: &App, account: AccountId, member_id: Uuid) -> String {
    let bytes = match &app.settings.invitation_key {
        Some(key) => match Hmac::<Sha256>::new_from_slice(key.expose().as_bytes()) {
            Ok(mut mac) => {
                mac.update(format!("ledger-invitation:{account}:{member_id}").as_bytes());
                mac.finalize().into_bytes().to_vec()
            }
            Err(_) => random_bytes(),
        },
        None => random_bytes(),
    };
    format!("inv_{}", hex::encode(bytes))
}

fn random_bytes() -> Vec<u8> {
    let mut v = Uuid::new_v4().as_bytes().to_vec();
    v.extend_from_slice(Uuid::new_v4().as_bytes());
    v
}

/// The account's `max_users`: the staff's override, else the plan's. A
/// write that takes a seat reads the plan `fresh` (after every event
/// written so far: a plan just changed counts); a read takes the read
/// model as it is.
async fn seat_limit(
    app: &App,
    account: AccountId,
    team: &Team,
    fresh: bool,
) -> Result<Option<i64>, AppError> {
    if let Some(v) = team.overrides().max_users {
        return Ok(v);
    }
    if fresh {
        app.fresh_read_models().await?;
    }
    let view = account_view(app, account)
        .await?
        .ok_or_else(|| AppError::NotFound("account not found".into()))?;
    let catalog = app.catalog.get().await;
    Ok(catalog
        .plan(&view.plan)
        .and_then(|p| p.limits.max_users)
        .map(i64::from))
}

// ---------------------------------------------------------------------------
// Use cases
// ---------------------------------------------------------------------------

/// `GET /accounts/{id}/team`: active members and open invitations.
pub async fn team(app: &App, caller: &Caller, target: Target) -> Result<TeamView, AppError> {
    let account = caller.target(access::READ_TEAM, target)?;
    let (team, seed) = load(app, account).await?;
    let at = Utc::now();
    let mut members: Vec<MemberView> = team
        .records()
        .filter(|m| m.is_active())
        .map(|m| MemberView::of(account, m, None))
        .collect();
    if let Some(seed) = &seed {
        members.push(MemberView {
            id: seed.member_id,
            account_id: account.to_string(),
            user_id: Some(seed.owner_user_id.clone()),
            email: seed.email.clone(),
            role: MemberRole::Owner.as_str().into(),
            status: "active".into(),
            invited_by: None,
            created_at: at,
            joined_at: None,
            removed_at: None,
            last_seen_at: None,
            position: None,
        });
    }
    let invitations = team
        .records()
        .filter(|m| m.is_open_invitation(at))
        .map(|m| InvitationView::of(account, m, at))
        .collect();
    let limit = seat_limit(app, account, &team, false).await?;
    let used = if seed.is_some() {
        1
    } else {
        team.seats_used(at)
    };
    Ok(TeamView {
        account_id: account.to_string(),
        members,
        invitations,
        seats: Seats { limit, used },
    })
}

/// `POST /accounts/{id}/team/invite`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct InviteRequest {
    #[cfg_attr(feature = "openapi", schema(max_length = 254))]
    pub email: String,
    /// `owner` (owners only), `admin`, `editor` or `viewer`.
    pub role: String,
    /// Days until the invitation expires (1 to 30; default 7).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 30))]
    pub expires_in_days: Option<i64>,
}

/// Invites someone by email: the answer carries the token, once.
pub async fn invite(
    app: &App,
    caller: &Caller,
    target: Target,
    key: Key,
    input: Input<InviteRequest>,
) -> Result<Written<InvitationView>, AppError> {
    let account = caller.target(access::MANAGE_TEAM, target)?;
    let body = input.parse()?;
    let req = body.value;
    let email = email("email", &req.email)?;
    let role = role(&req.role)?;
    let days = req.expires_in_days.unwrap_or(INVITATION_DAYS_DEFAULT);
    if !(1..=INVITATION_DAYS_MAX).contains(&days) {
        return Err(AppError::invalid_field(
            "expires_in_days",
            format!("expires_in_days must be 1 to {INVITATION_DAYS_MAX}"),
        ));
    }
    let (team, seed) = load(app, account).await?;
    let seats = seat_limit(app, account, &team, true).await?;
    let member_id = Uuid::now_v7();
    let token = invitation_token(app, account, member_id);
    let hash = token_hash(&token);
    let at = now();
    let action = TeamAction::Invite {
        member_id,
        email,
        role,
        token_hash: hash.clone(),
        expires_at: at + chrono::Duration::days(days),
        by: caller.sub().to_owned(),
        by_role: roster_role(caller),
        seats,
    };
    let claim = key
        .0
        .as_ref()
        .map(|k| claim(k, "team/invite", &body.canonical));
    let reservation = Reservation {
        scope: INVITATION_SCOPE.into(),
        value: hash,
    };
    let done = run(
        app,
        caller,
        account,
        seed,
        action,
        claim.as_ref(),
        std::slice::from_ref(&reservation),
    )
    .await?;
    let Some(TeamEvent::MemberInvited(e)) = done.outcome() else {
        return Err(AppError::Internal);
    };
    let replayed = done.replayed.is_some();
    // A replay answers the first invitation, and its token again.
    let token = if replayed {
        invitation_token(app, account, e.member_id)
    } else {
        token
    };
    let record = Member {
        id: e.member_id,
        user_id: None,
        email: e.email.clone(),
        role: e.role,
        status: MemberStatus::Invited,
        invited_by: Some(e.invited_by.clone()),
        created_at: e.invited_at,
        expires_at: Some(e.expires_at),
        token_hash: None,
        joined_at: None,
        removed_at: None,
        last_seen_at: None,
    };
    let mut view = InvitationView::of(account, &record, e.invited_at);
    view.token = Some(token);
    view.position = done.position();
    Ok(Written {
        value: view,
        replayed,
        created: true,
    })
}

/// `POST /team/invitations/accept`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    /// The token the invitation answered.
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub token: String,
}

/// Accepts an invitation: the caller's `sub` becomes an active member with
/// the invited role. Any signed token will do (the invitee has no account
/// yet); accepting again as the same user changes nothing.
pub async fn accept(
    app: &App,
    caller: &Caller,
    input: Input<AcceptRequest>,
) -> Result<Written<MemberView>, AppError> {
    let req = input.parse()?.value;
    if req.token.is_empty() || req.token.len() > TOKEN_BYTES_MAX {
        return Err(AppError::invalid_field(
            "token",
            format!("token must be 1 to {TOKEN_BYTES_MAX} bytes"),
        ));
    }
    let hash = token_hash(&req.token);
    let not_found = || AppError::NotFound("no such invitation".into());
    let owner = app
        .store
        .reservation_owner(INVITATION_SCOPE, &hash)
        .await?
        .ok_or_else(not_found)?;
    let account = AccountId::parse(&owner).map_err(|_| not_found())?;
    let (_, seed) = load(app, account).await?;
    let action = TeamAction::Accept {
        token_hash: hash.clone(),
        user_id: caller.sub().to_owned(),
    };
    let done = run(app, caller, account, seed, action, None, &[]).await?;
    let team = done.state.as_ref().ok_or(AppError::Internal)?;
    let member = team.by_token(&hash).ok_or(AppError::Internal)?;
    Ok(Written {
        value: MemberView::of(account, member, Some(app.position_of(&done).await?)),
        replayed: false,
        created: false,
    })
}

/// `DELETE /accounts/{id}/team/invitations/{invitation_id}`.
pub async fn revoke(
    app: &App,
    caller: &Caller,
    target: Target,
    invitation: Uuid,
) -> Result<Written<InvitationView>, AppError> {
    let account = caller.target(access::MANAGE_TEAM, target)?;
    let (_, seed) = load(app, account).await?;
    let action = TeamAction::Revoke {
        member_id: invitation,
        by: caller.sub().to_owned(),
    };
    let done = run(app, caller, account, seed, action, None, &[]).await?;
    let team = done.state.as_ref().ok_or(AppError::Internal)?;
    let record = team.record(invitation).ok_or(AppError::Internal)?;
    let mut view = InvitationView::of(account, record, Utc::now());
    view.position = Some(app.position_of(&done).await?);
    Ok(Written {
        value: view,
        replayed: false,
        created: false,
    })
}

/// `PATCH /accounts/{id}/team/{user_id}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    /// `owner` (owners only), `admin`, `editor` or `viewer`.
    pub role: String,
}

/// The record of the member an executed command was about.
fn member_after(done: &Executed<Team>, user: &str, id: Option<Uuid>) -> Result<Member, AppError> {
    let team = done.state.as_ref().ok_or(AppError::Internal)?;
    let found = match id {
        Some(id) => team.record(id),
        None => team.active(user),
    };
    found.cloned().ok_or(AppError::Internal)
}

/// Changes a member's role; only owners grant or take `owner`, and the
/// last active owner keeps it.
pub async fn change_role(
    app: &App,
    caller: &Caller,
    target: Target,
    user: &str,
    input: Input<RoleRequest>,
) -> Result<Written<MemberView>, AppError> {
    let account = caller.target(access::MANAGE_TEAM, target)?;
    let req = input.parse()?.value;
    let role = role(&req.role)?;
    let (_, seed) = load(app, account).await?;
    let action = TeamAction::ChangeRole {
        user_id: user.to_owned(),
        role,
        by: caller.sub().to_owned(),
        by_role: roster_role(caller),
    };
    let done = run(app, caller, account, seed, action, None, &[]).await?;
    let member = member_after(&done, user, None)?;
    Ok(Written {
        value: MemberView::of(account, &member, Some(app.position_of(&done).await?)),
        replayed: false,
        created: false,
    })
}

/// Removes a member: their tokens are refused from their next request.
pub async fn remove(
    app: &App,
    caller: &Caller,
    target: Target,
    user: &str,
) -> Result<Written<MemberView>, AppError> {
    let account = caller.target(access::MANAGE_TEAM, target)?;
    let (_, seed) = load(app, account).await?;
    let action = TeamAction::Remove {
        user_id: user.to_owned(),
        by: caller.sub().to_owned(),
        by_role: roster_role(caller),
    };
    let done = run(app, caller, account, seed, action, None, &[]).await?;
    let id = done.events.iter().find_map(|e| match &e.event {
        TeamEvent::MemberRemoved(r) => Some(r.member_id),
        _ => None,
    });
    let member = member_after(&done, user, id)?;
    Ok(Written {
        value: MemberView::of(account, &member, done.position()),
        replayed: false,
        created: false,
    })
}

/// `POST /accounts/{id}/transfer-ownership`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TransferRequest {
    /// An active member's `user_id`.
    pub user_id: String,
}

/// Ownership moved.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Transferred {
    pub account_id: String,
    pub owner_user_id: String,
    /// Who stepped down to admin (none when staff made an owner of
    /// someone while no other owner was active).
    pub previous_owner_user_id: Option<String>,
    pub position: i64,
}

/// Makes another active member the owner; the caller (an owner) becomes an
/// admin. Staff may do it too: then every other owner becomes an admin.
pub async fn transfer(
    app: &App,
    caller: &Caller,
    target: Target,
    input: Input<TransferRequest>,
) -> Result<Written<Transferred>, AppError> {
    let account = caller.target(access::TRANSFER_OWNERSHIP, target)?;
    let req = input.parse()?.value;
    let to = user_id("user_id", &req.user_id)?;
    let (_, seed) = load(app, account).await?;
    let action = TeamAction::TransferOwnership {
        to: to.clone(),
        by: caller.sub().to_owned(),
        by_role: roster_role(caller),
    };
    let done = run(app, caller, account, seed, action, None, &[]).await?;
    let previous = done.events.iter().find_map(|e| match &e.event {
        TeamEvent::MemberRoleChanged(c) if c.to == MemberRole::Admin => Some(c.user_id.clone()),
        _ => None,
    });
    Ok(Written {
        value: Transferred {
            account_id: account.to_string(),
            owner_user_id: to,
            previous_owner_user_id: previous,
            position: app.position_of(&done).await?,
        },
        replayed: false,
        created: false,
    })
}

/// `POST /accounts/{id}/team` (staff): a member added directly.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    /// The member's JWT `sub`.
    pub user_id: String,
    pub email: String,
    pub role: String,
}

/// Adds an active member (sign-up flows, importing an existing team).
pub async fn add(
    app: &App,
    caller: &Caller,
    target: Target,
    key: Key,
    input: Input<AddRequest>,
) -> Result<Written<MemberView>, AppError> {
    let account = caller.target(access::ADD_MEMBER, target)?;
    let body = input.parse()?;
    let req = body.value;
    let user = user_id("user_id", &req.user_id)?;
    let email = email("email", &req.email)?;
    let role = role(&req.role)?;
    let (team, seed) = load(app, account).await?;
    let seats = seat_limit(app, account, &team, true).await?;
    let member_id = Uuid::now_v7();
    let action = TeamAction::Add {
        member_id,
        user_id: user,
        email,
        role,
        by: caller.sub().to_owned(),
        seats,
    };
    let claim = key
        .0
        .as_ref()
        .map(|k| claim(k, "team/add", &body.canonical));
    let done = run(app, caller, account, seed, action, claim.as_ref(), &[]).await?;
    let Some(TeamEvent::MemberAdded(e)) = done.outcome() else {
        return Err(AppError::Internal);
    };
    let record = Member {
        id: e.member_id,
        user_id: Some(e.user_id.clone()),
        email: e.email.clone(),
        role: e.role,
        status: MemberStatus::Active,
        invited_by: e.added_by.clone(),
        created_at: e.added_at,
        expires_at: None,
        token_hash: None,
        joined_at: Some(e.added_at),
        removed_at: None,
        last_seen_at: None,
    };
    Ok(Written {
        value: MemberView::of(account, &record, done.position()),
        replayed: done.replayed.is_some(),
        created: true,
    })
}

/// `GET /admin/users?q=&role=&status=&account_id=&limit=&cursor=`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct UsersQuery {
    /// A piece of the email or user id (case-insensitive).
    pub q: Option<String>,
    /// `owner`, `admin`, `editor` or `viewer`.
    pub role: Option<String>,
    /// `invited`, `active`, `removed` or `revoked`.
    pub status: Option<String>,
    pub account_id: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    pub min_position: Option<i64>,
}

/// Every member record across accounts (staff).
pub async fn users(
    app: &App,
    caller: &Caller,
    query: Query<UsersQuery>,
) -> Result<projections::Page<projections::team::MemberRowView>, AppError> {
    caller.require(access::READ_USERS)?;
    let q = query.parse()?;
    if let Some(r) = &q.role {
        role(r)?;
    }
    if let Some(s) = &q.status {
        if !["invited", "active", "removed", "revoked"].contains(&s.as_str()) {
            return Err(AppError::invalid_field(
                "status",
                "status must be invited, active, removed or revoked",
            ));
        }
    }
    let account_id = q
        .account_id
        .as_deref()
        .map(crate::input::account_id)
        .transpose()?
        .map(|a| a.to_string());
    if q.q.as_ref().is_some_and(|s| s.len() > EMAIL_BYTES_MAX) {
        return Err(AppError::invalid_field(
            "q",
            format!("q must be at most {EMAIL_BYTES_MAX} bytes"),
        ));
    }
    app.wait_for(q.min_position).await?;
    let filter = projections::team::UserFilter {
        q: q.q.filter(|s| !s.is_empty()),
        role: q.role,
        status: q.status,
        account_id,
    };
    let page = crate::reads::page_request(q.limit, q.cursor)?;
    Ok(app.read_models.users(&filter, &page).await?)
}

/// `PUT /accounts/{id}/usage-counts` (D S): counts the SaaS keeps.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CountsRequest {
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000_000_000))]
    pub sites: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000_000_000))]
    pub industries: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000_000_000))]
    pub author_profiles: Option<i64>,
}

/// The counts, as kept.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CountsView {
    pub account_id: String,
    pub sites: Option<i64>,
    pub industries: Option<i64>,
    pub author_profiles: Option<i64>,
    pub position: i64,
}

fn count(field: &str, v: Option<i64>) -> Result<Option<i64>, AppError> {
    match v {
        Some(n) if !(0..=COUNT_MAX).contains(&n) => Err(AppError::invalid_field(
            field,
            format!("{field} must be 0 to {COUNT_MAX}"),
        )),
        v => Ok(v),
    }
}

/// Records the counts the SaaS reports (a count not sent keeps its value).
pub async fn report_counts(
    app: &App,
    caller: &Caller,
    target: Target,
    input: Input<CountsRequest>,
) -> Result<Written<CountsView>, AppError> {
    let account = caller.target(access::REPORT_COUNTS, target)?;
    let req = input.parse()?.value;
    let counts = UsageCounts {
        sites: count("sites", req.sites)?,
        industries: count("industries", req.industries)?,
        author_profiles: count("author_profiles", req.author_profiles)?,
    };
    let (_, seed) = load(app, account).await?;
    let action = TeamAction::ReportCounts {
        counts,
        by: caller.sub().to_owned(),
    };
    let done = run(app, caller, account, seed, action, None, &[]).await?;
    let team = done.state.as_ref().ok_or(AppError::Internal)?;
    let c = team.counts();
    Ok(Written {
        value: CountsView {
            account_id: account.to_string(),
            sites: c.sites,
            industries: c.industries,
            author_profiles: c.author_profiles,
            position: app.position_of(&done).await?,
        },
        replayed: false,
        created: false,
    })
}

const LIMIT_FIELDS: [&str; 4] = [
    "max_users",
    "max_sites",
    "max_industries",
    "max_author_profiles",
];

/// `PUT /admin/accounts/{id}/limits` (staff): each of `max_users`,
/// `max_sites`, `max_industries`, `max_author_profiles` a number (the
/// account's own limit), null (unlimited) or absent (the plan's). The body
/// replaces the overrides.
pub async fn override_limits(
    app: &App,
    caller: &Caller,
    target: Target,
    input: Input<serde_json::Map<String, Value>>,
) -> Result<Written<Value>, AppError> {
    let account = caller.target(access::OVERRIDE_LIMITS, target)?;
    let body = input.parse()?.value;
    if let Some(unknown) = body.keys().find(|k| !LIMIT_FIELDS.contains(&k.as_str())) {
        return Err(AppError::invalid_field(
            unknown,
            format!("unknown field {unknown:?}: expected one of {LIMIT_FIELDS:?}"),
        ));
    }
    let field = |name: &str| -> Result<Option<Option<i64>>, AppError> {
        match body.get(name) {
            None => Ok(None),
            Some(Value::Null) => Ok(Some(None)),
            Some(v) => match v.as_i64() {
                Some(n) if (0..=COUNT_MAX).contains(&n) => Ok(Some(Some(n))),
                _ => Err(AppError::invalid_field(
                    name,
                    format!("{name} must be null (unlimited) or 0 to {COUNT_MAX}"),
                )),
            },
        }
    };
    let overrides = LimitOverrides {
        max_users: field("max_users")?,
        max_sites: field("max_sites")?,
        max_industries: field("max_industries")?,
        max_author_profiles: field("max_author_profiles")?,
    };
    let (_, seed) = load(app, account).await?;
    let action = TeamAction::OverrideLimits {
        overrides,
        by: caller.sub().to_owned(),
    };
    let done = run(app, caller, account, seed, action, None, &[]).await?;
    let team = done.state.as_ref().ok_or(AppError::Internal)?;
    let plan = account_plan_limits(app, account).await?;
    Ok(Written {
        value: json!({
            "account_id": account.to_string(),
            "overrides": overrides_json(team.overrides()),
            "limits": effective_limits(plan.as_ref(), team.overrides()),
            "position": app.position_of(&done).await?,
        }),
        replayed: false,
        created: false,
    })
}

async fn account_plan_limits(
    app: &App,
    account: AccountId,
) -> Result<Option<events::PlanLimits>, AppError> {
    let view = app.read_models.account(&account.to_string()).await?;
    let catalog = app.catalog.get().await;
    Ok(view.and_then(|v| catalog.plan(&v.plan).map(|p| p.limits.clone())))
}

fn overrides_json(o: &LimitOverrides) -> Value {
    let mut map = serde_json::Map::new();
    for (name, v) in [
        ("max_users", o.max_users),
        ("max_sites", o.max_sites),
        ("max_industries", o.max_industries),
        ("max_author_profiles", o.max_author_profiles),
    ] {
        if let Some(v) = v {
            map.insert(name.into(), json!(v));
        }
    }
    Value::Object(map)
}

/// The plan's limits with the account's overrides applied.
pub fn effective_limits(plan: Option<&events::PlanLimits>, o: &LimitOverrides) -> Value {
    let pick = |over: Option<Option<i64>>, plan: Option<Option<u32>>| match over {
        Some(v) => json!(v),
        None => json!(plan.flatten()),
    };
    json!({
        "max_users": pick(o.max_users, plan.map(|p| p.max_users)),
        "max_sites": pick(o.max_sites, plan.map(|p| p.max_sites)),
        "max_industries": pick(o.max_industries, plan.map(|p| p.max_industries)),
        "max_author_profiles": pick(o.max_author_profiles, plan.map(|p| p.max_author_profiles)),
    })
}

/// What `GET /accounts/{id}/limits` adds: the effective limits, the
/// overrides, and the current counts (users from the roster, the rest as
/// reported).
pub async fn limits_part(
    app: &App,
    account: AccountId,
    plan: Option<&events::PlanLimits>,
) -> Result<(Value, Value, Value), AppError> {
    let (team, seed) = load(app, account).await?;
    let users = if seed.is_some() {
        1
    } else {
        team.active_count()
    };
    let c = team.counts();
    Ok((
        effective_limits(plan, team.overrides()),
        overrides_json(team.overrides()),
        json!({
            "users": users,
            "sites": c.sites,
            "industries": c.industries,
            "author_profiles": c.author_profiles,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_checked() {
        assert_eq!(email("email", " a@b.example ").unwrap(), "a@b.example");
        for bad in [
            "",
            "a",
            "a@b",
            "@b.example",
            "a@@b.example",
            "a b@c.example",
            "a@.example",
        ] {
            assert!(email("email", bad).is_err(), "{bad:?}");
        }
        assert!(email("email", &format!("{}@b.example", "a".repeat(300))).is_err());
    }

    #[test]
    fn limits_take_the_override_over_the_plan() {
        let plan = events::PlanLimits {
            max_users: Some(1),
            max_sites: Some(3),
            max_industries: None,
            max_author_profiles: Some(2),
        };
        let o = LimitOverrides {
            max_users: Some(Some(4)),
            max_sites: Some(None),
            ..LimitOverrides::default()
        };
        let v = effective_limits(Some(&plan), &o);
        assert_eq!(v["max_users"], 4);
        assert_eq!(v["max_sites"], Value::Null);
        assert_eq!(v["max_industries"], Value::Null);
        assert_eq!(v["max_author_profiles"], 2);
        assert_eq!(
            overrides_json(&o),
            json!({"max_users": 4, "max_sites": null})
        );
    }

    #[test]
    fn a_token_acts_with_the_weaker_of_its_claim_and_the_roster() {
        use MemberRole::{Admin, Editor, Owner, Viewer};
        assert_eq!(
            weaker(Viewer, Some(Admin)),
            Viewer,
            "roster below the claim"
        );
        assert_eq!(
            weaker(Owner, Some(Viewer)),
            Viewer,
            "claim below the roster"
        );
        assert_eq!(weaker(Editor, Some(Editor)), Editor);
        assert_eq!(weaker(Admin, None), Admin);
    }

    #[test]
    fn tokens_are_stored_as_hashes_only() {
        let h = token_hash("inv_abc");
        assert_eq!(h.len(), 64);
        assert_ne!(h, "inv_abc");
    }
}
