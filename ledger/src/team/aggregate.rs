use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{
    InvitationAccepted, InvitationRevoked, JoinSource, LimitOverrides, LimitsOverridden,
    MemberAdded, MemberInvited, MemberRemoved, MemberRole, MemberRoleChanged, MemberSeen,
    TeamEvent, UsageCounts, UsageCountsReported, TEAM_AGGREGATE_TYPE,
};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most member records (active, removed, invitations of any state) one
/// team keeps: a bound on the stream's state, far above any plan's seats.
pub const MEMBERS_MAX: usize = 10_000;
/// Most invitations open at once in one team.
pub const INVITATIONS_OPEN_MAX: usize = 1_000;
/// A member's use of the API is recorded at most this often.
pub const SEEN_EVERY_SECONDS: i64 = 3_600;

/// Where a member record stands. An invitation is a record `Invited`
/// until it is accepted (`Active`), revoked (`Revoked`) or outlives its
/// expiry (still `Invited`, but no longer open).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberStatus {
    Invited,
    Active,
    Removed,
    Revoked,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invited => "invited",
            Self::Active => "active",
            Self::Removed => "removed",
            Self::Revoked => "revoked",
        }
    }
}

/// One member, or one invitation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: Uuid,
    /// The JWT `sub`; none while invited.
    pub user_id: Option<String>,
    pub email: String,
    pub role: MemberRole,
    pub status: MemberStatus,
    pub invited_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub token_hash: Option<String>,
    pub joined_at: Option<DateTime<Utc>>,
    pub removed_at: Option<DateTime<Utc>>,
    pub last_seen_at: Option<DateTime<Utc>>,
}

impl Member {
    pub fn is_active(&self) -> bool {
        self.status == MemberStatus::Active
    }

    /// An invitation that can still be accepted at `now`.
    pub fn is_open_invitation(&self, now: DateTime<Utc>) -> bool {
        self.status == MemberStatus::Invited && self.expires_at.is_some_and(|e| e > now)
    }
}

/// The account's first owner, for a team stream that has not begun (an
/// account opened before teams existed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    pub member_id: Uuid,
    pub owner_user_id: String,
    pub email: String,
}

/// A command: what to do, and the seed that begins the stream if it has
/// not begun.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamCommand {
    pub seed: Option<Seed>,
    pub action: TeamAction,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TeamAction {
    /// Begins the stream (with the seed) and nothing else.
    Start,
    Add {
        member_id: Uuid,
        user_id: String,
        email: String,
        role: MemberRole,
        by: String,
        /// The account's `max_users` (None: unlimited).
        seats: Option<i64>,
    },
    Invite {
        member_id: Uuid,
        email: String,
        role: MemberRole,
        token_hash: String,
        expires_at: DateTime<Utc>,
        by: String,
        /// The inviter's roster role; None for the platform's staff.
        by_role: Option<MemberRole>,
        seats: Option<i64>,
    },
    Accept {
        token_hash: String,
        user_id: String,
    },
    Revoke {
        member_id: Uuid,
        by: String,
    },
    ChangeRole {
        user_id: String,
        role: MemberRole,
        by: String,
        by_role: Option<MemberRole>,
    },
    Remove {
        user_id: String,
        by: String,
        by_role: Option<MemberRole>,
    },
    /// Makes `to` an owner; the caller (an owner) becomes an admin, or,
    /// when staff transfer it (`by_role` None), every other owner does.
    TransferOwnership {
        to: String,
        by: String,
        by_role: Option<MemberRole>,
    },
    Seen {
        user_id: String,
    },
    OverrideLimits {
        overrides: LimitOverrides,
        by: String,
    },
    ReportCounts {
        counts: UsageCounts,
        by: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TeamError {
    #[error("the account's team has not begun")]
    NotStarted,
    #[error("the plan allows {limit} users and {used} seats are taken (active members and open invitations)")]
    PlanLimit { limit: i64, used: i64 },
    #[error("{0} is already an active member")]
    AlreadyMember(String),
    #[error("an invitation to {0} is already open")]
    AlreadyInvited(String),
    #[error("no such invitation")]
    UnknownInvitation,
    #[error("the invitation has expired")]
    InvitationExpired,
    #[error("the invitation was revoked")]
    InvitationRevoked,
    #[error("the invitation was already accepted by another user")]
    InvitationUsed,
    /// The message does not repeat the id: it reads the same for any id.
    #[error("no active member of this account has that user id")]
    UnknownMember(String),
    #[error("the account's last active owner can be neither removed nor demoted")]
    LastOwner,
    #[error("only an owner may grant or take the owner role")]
    OwnerOnly,
    #[error(
        "the team keeps at most {MEMBERS_MAX} members and {INVITATIONS_OPEN_MAX} open invitations"
    )]
    TooMany,
    #[error("{0} is already the account's owner")]
    AlreadyOwner(String),
}

/// An account's roster.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Team {
    started: bool,
    members: BTreeMap<Uuid, Member>,
    overrides: LimitOverrides,
    counts: UsageCounts,
}

impl Team {
    pub fn started(&self) -> bool {
        self.started
    }

    /// Every record, invitations included, in id (creation) order.
    pub fn records(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The active member whose `sub` is `user_id`.
    pub fn active(&self, user_id: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.is_active() && m.user_id.as_deref() == Some(user_id))
    }

    pub fn record(&self, id: Uuid) -> Option<&Member> {
        self.members.get(&id)
    }

    pub fn by_token(&self, token_hash: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.token_hash.as_deref() == Some(token_hash))
    }

    pub fn active_count(&self) -> i64 {
        self.members.values().filter(|m| m.is_active()).count() as i64
    }

    /// Seats taken at `now`: active members and open invitations.
    pub fn seats_used(&self, now: DateTime<Utc>) -> i64 {
        self.members
            .values()
            .filter(|m| m.is_active() || m.is_open_invitation(now))
            .count() as i64
    }

    pub fn overrides(&self) -> &LimitOverrides {
        &self.overrides
    }

    pub fn counts(&self) -> &UsageCounts {
        &self.counts
    }

    fn owners(&self) -> impl Iterator<Item = &Member> {
        self.members
            .values()
            .filter(|m| m.is_active() && m.role == MemberRole::Owner)
    }

    fn check_seat(&self, seats: Option<i64>, now: DateTime<Utc>) -> Result<(), TeamError> {
        let used = self.seats_used(now);
        match seats {
            Some(limit) if used >= limit => Err(TeamError::PlanLimit { limit, used }),
            _ => Ok(()),
        }
    }

    fn check_room(&self, now: DateTime<Utc>) -> Result<(), TeamError> {
        let open = self
            .members
            .values()
            .filter(|m| m.is_open_invitation(now))
            .count();
        if self.members.len() >= MEMBERS_MAX || open >= INVITATIONS_OPEN_MAX {
            Err(TeamError::TooMany)
        } else {
            Ok(())
        }
    }

    fn active_or_unknown(&self, user_id: &str) -> Result<&Member, TeamError> {
        self.active(user_id)
            .ok_or_else(|| TeamError::UnknownMember(user_id.to_owned()))
    }

    /// Only owners and staff grant or take `owner`.
    fn may_touch_owner(by_role: Option<MemberRole>) -> Result<(), TeamError> {
        match by_role {
            None | Some(MemberRole::Owner) => Ok(()),
            Some(_) => Err(TeamError::OwnerOnly),
        }
    }

    fn decide(&self, action: TeamAction, now: DateTime<Utc>) -> Result<Vec<TeamEvent>, TeamError> {
        let email_taken = |email: &str| {
            self.members
                .values()
                .find(|m| m.is_active() && m.email.eq_ignore_ascii_case(email))
        };
        Ok(match action {
            TeamAction::Start => Vec::new(),
            TeamAction::Add {
                member_id,
                user_id,
                email,
                role,
                by,
                seats,
            } => {
                if self.active(&user_id).is_some() {
                    return Err(TeamError::AlreadyMember(user_id));
                }
                self.check_room(now)?;
                self.check_seat(seats, now)?;
                vec![TeamEvent::MemberAdded(MemberAdded {
                    member_id,
                    user_id,
                    email,
                    role,
                    source: JoinSource::Direct,
                    added_by: Some(by),
                    added_at: now,
                })]
            }
            TeamAction::Invite {
                member_id,
                email,
                role,
                token_hash,
                expires_at,
                by,
                by_role,
                seats,
            } => {
                if role == MemberRole::Owner {
                    Self::may_touch_owner(by_role)?;
                }
                if email_taken(&email).is_some() {
                    return Err(TeamError::AlreadyMember(email));
                }
                if self
                    .members
                    .values()
                    .any(|m| m.is_open_invitation(now) && m.email.eq_ignore_ascii_case(&email))
                {
                    return Err(TeamError::AlreadyInvited(email));
                }
                self.check_room(now)?;
                self.check_seat(seats, now)?;
                vec![TeamEvent::MemberInvited(MemberInvited {
                    member_id,
                    email,
                    role,
                    token_hash,
                    invited_by: by,
                    invited_at: now,
                    expires_at,
                })]
            }
            TeamAction::Accept {
                token_hash,
                user_id,
            } => {
                let invitation = self
                    .by_token(&token_hash)
                    .ok_or(TeamError::UnknownInvitation)?;
                match invitation.status {
                    MemberStatus::Revoked => return Err(TeamError::InvitationRevoked),
                    MemberStatus::Active | MemberStatus::Removed => {
                        // A retry by the user who accepted it changes nothing.
                        return if invitation.user_id.as_deref() == Some(user_id.as_str())
                            && invitation.is_active()
                        {
                            Ok(Vec::new())
                        } else {
                            Err(TeamError::InvitationUsed)
                        };
                    }
                    MemberStatus::Invited => {}
                }
                if !invitation.is_open_invitation(now) {
                    return Err(TeamError::InvitationExpired);
                }
                if self.active(&user_id).is_some() {
                    return Err(TeamError::AlreadyMember(user_id));
                }
                vec![TeamEvent::InvitationAccepted(InvitationAccepted {
                    member_id: invitation.id,
                    user_id,
                    accepted_at: now,
                })]
            }
            TeamAction::Revoke { member_id, by } => {
                let invitation = self
                    .members
                    .get(&member_id)
                    .filter(|m| m.token_hash.is_some())
                    .ok_or(TeamError::UnknownInvitation)?;
                match invitation.status {
                    MemberStatus::Revoked => Vec::new(),
                    MemberStatus::Active | MemberStatus::Removed => {
                        return Err(TeamError::InvitationUsed)
                    }
                    MemberStatus::Invited => {
                        vec![TeamEvent::InvitationRevoked(InvitationRevoked {
                            member_id,
                            revoked_by: by,
                            revoked_at: now,
                        })]
                    }
                }
            }
            TeamAction::ChangeRole {
                user_id,
                role,
                by,
                by_role,
            } => {
                let member = self.active_or_unknown(&user_id)?;
                if member.role == role {
                    return Ok(Vec::new());
                }
                if member.role == MemberRole::Owner || role == MemberRole::Owner {
                    Self::may_touch_owner(by_role)?;
                }
                if member.role == MemberRole::Owner && self.owners().count() <= 1 {
                    return Err(TeamError::LastOwner);
                }
                vec![TeamEvent::MemberRoleChanged(MemberRoleChanged {
                    member_id: member.id,
                    user_id,
                    from: member.role,
                    to: role,
                    changed_by: by,
                    changed_at: now,
                })]
            }
            TeamAction::Remove {
                user_id,
                by,
                by_role,
            } => {
                let member = self.active_or_unknown(&user_id)?;
                if member.role == MemberRole::Owner {
                    Self::may_touch_owner(by_role)?;
                    if self.owners().count() <= 1 {
                        return Err(TeamError::LastOwner);
                    }
                }
                vec![TeamEvent::MemberRemoved(MemberRemoved {
                    member_id: member.id,
                    user_id,
                    removed_by: by,
                    removed_at: now,
                })]
            }
            TeamAction::TransferOwnership { to, by, by_role } => {
                Self::may_touch_owner(by_role)?;
                let target = self.active_or_unknown(&to)?;
                if target.role == MemberRole::Owner && by_role.is_none() {
                    return Err(TeamError::AlreadyOwner(to));
                }
                if by_role.is_some() && to == by {
                    return Err(TeamError::AlreadyOwner(to));
                }
                let mut out = Vec::new();
                if target.role != MemberRole::Owner {
                    out.push(TeamEvent::MemberRoleChanged(MemberRoleChanged {
                        member_id: target.id,
                        user_id: to.clone(),
                        from: target.role,
                        to: MemberRole::Owner,
                        changed_by: by.clone(),
                        changed_at: now,
                    }));
                }
                let stepping_down: Vec<&Member> = match by_role {
                    Some(_) => self.active(&by).into_iter().collect(),
                    None => self
                        .owners()
                        .filter(|m| m.user_id.as_deref() != Some(to.as_str()))
                        .collect(),
                };
                for m in stepping_down {
                    out.push(TeamEvent::MemberRoleChanged(MemberRoleChanged {
                        member_id: m.id,
                        user_id: m.user_id.clone().unwrap_or_default(),
                        from: m.role,
                        to: MemberRole::Admin,
                        changed_by: by.clone(),
                        changed_at: now,
                    }));
                }
                out
            }
            TeamAction::Seen { user_id } => match self.active(&user_id) {
                Some(m)
                    if m.last_seen_at
                        .is_none_or(|last| (now - last).num_seconds() >= SEEN_EVERY_SECONDS) =>
                {
                    vec![TeamEvent::MemberSeen(MemberSeen {
                        member_id: m.id,
                        seen_at: now,
                    })]
                }
                _ => Vec::new(),
            },
            TeamAction::OverrideLimits { overrides, by } => {
                if overrides == self.overrides {
                    Vec::new()
                } else {
                    vec![TeamEvent::LimitsOverridden(LimitsOverridden {
                        overrides,
                        changed_by: by,
                        changed_at: now,
                    })]
                }
            }
            TeamAction::ReportCounts { counts, by } => {
                let merged = UsageCounts {
                    sites: counts.sites.or(self.counts.sites),
                    industries: counts.industries.or(self.counts.industries),
                    author_profiles: counts.author_profiles.or(self.counts.author_profiles),
                };
                if merged == self.counts {
                    Vec::new()
                } else {
                    vec![TeamEvent::UsageCountsReported(UsageCountsReported {
                        counts: merged,
                        reported_by: by,
                        reported_at: now,
                    })]
                }
            }
        })
    }
}

impl Aggregate for Team {
    const TYPE: &'static str = TEAM_AGGREGATE_TYPE;
    type Command = TeamCommand;
    type Event = TeamEvent;
    type Error = TeamError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let TeamCommand { seed, action, now } = command;
        let mut planned = Vec::new();
        let mut state = self.clone();
        if !state.started {
            let seed = seed.ok_or(TeamError::NotStarted)?;
            let first = TeamEvent::MemberAdded(MemberAdded {
                member_id: seed.member_id,
                user_id: seed.owner_user_id,
                email: seed.email,
                role: MemberRole::Owner,
                source: JoinSource::AccountOpened,
                added_by: None,
                added_at: now,
            });
            state.apply(first.clone());
            planned.push(first);
        }
        // Decided against the state the seed made: nothing is written
        // unless the whole command stands.
        planned.extend(state.decide(action, now)?);
        for e in planned {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            TeamEvent::MemberAdded(e) => {
                self.started = true;
                self.members.insert(
                    e.member_id,
                    Member {
                        id: e.member_id,
                        user_id: Some(e.user_id),
                        email: e.email,
                        role: e.role,
                        status: MemberStatus::Active,
                        invited_by: e.added_by,
                        created_at: e.added_at,
                        expires_at: None,
                        token_hash: None,
                        joined_at: Some(e.added_at),
                        removed_at: None,
                        last_seen_at: None,
                    },
                );
            }
            TeamEvent::MemberInvited(e) => {
                self.members.insert(
                    e.member_id,
                    Member {
                        id: e.member_id,
                        user_id: None,
                        email: e.email,
                        role: e.role,
                        status: MemberStatus::Invited,
                        invited_by: Some(e.invited_by),
                        created_at: e.invited_at,
                        expires_at: Some(e.expires_at),
                        token_hash: Some(e.token_hash),
                        joined_at: None,
                        removed_at: None,
                        last_seen_at: None,
                    },
                );
            }
            TeamEvent::InvitationAccepted(e) => {
                if let Some(m) = self.members.get_mut(&e.member_id) {
                    m.user_id = Some(e.user_id);
                    m.status = MemberStatus::Active;
                    m.joined_at = Some(e.accepted_at);
                }
            }
            TeamEvent::InvitationRevoked(e) => {
                if let Some(m) = self.members.get_mut(&e.member_id) {
                    m.status = MemberStatus::Revoked;
                    m.removed_at = Some(e.revoked_at);
                }
            }
            TeamEvent::MemberRoleChanged(e) => {
                if let Some(m) = self.members.get_mut(&e.member_id) {
                    m.role = e.to;
                }
            }
            TeamEvent::MemberRemoved(e) => {
                if let Some(m) = self.members.get_mut(&e.member_id) {
                    m.status = MemberStatus::Removed;
                    m.removed_at = Some(e.removed_at);
                }
            }
            TeamEvent::MemberSeen(e) => {
                if let Some(m) = self.members.get_mut(&e.member_id) {
                    m.last_seen_at = Some(e.seen_at);
                }
            }
            TeamEvent::LimitsOverridden(e) => self.overrides = e.overrides,
            TeamEvent::UsageCountsReported(e) => self.counts = e.counts,
        }
    }
}
