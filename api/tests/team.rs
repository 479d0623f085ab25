//! Team and access through the real router over real HTTP, on PostgreSQL
//! and SQLite (SPEC §10 "Team and access"), every server started with
//! `--roster-check on` but one: invitations (accept, revoke, bad input,
//! idempotent retries, a race of two accepts), seats against the plan's
//! `max_users` and the staff's override, roles changed and members removed
//! taking effect on the very next request, the roster's role winning over a
//! token's claim, the last owner protected, ownership transferred, members
//! added by the platform, the admin user search, the usage counts in the
//! limits, tenant isolation, and developer and system_bot tokens never
//! roster-checked.

mod common;

use std::future::Future;
use std::sync::Arc;

use api::auth::{Claims, Role};
use common::{key, now_unix, time, unique_slug, Api, Backend, Resp, Server};
use serde_json::{json, Value};

/// The flags of every server here but the roster-off one.
const ROSTER_ON: &[&str] = &["--roster-check", "on"];
/// Today's behaviour: tokens are taken at their word.
const ROSTER_OFF: &[&str] = &["--roster-check", "off"];

/// Starts a server on `backend` with `flags`, runs `body` against it, then
/// stops the server and drops its database even when the body panicked
/// (re-raising the panic afterwards), as `common::run` does.
async fn run_on<F, Fut>(backend: Backend, flags: &[&str], body: F)
where
    F: FnOnce(Arc<Api>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let server = Server::start_with(backend, flags).await;
    let body = body(server.api.clone());
    server.run_and_stop(body).await;
}

/// Runs `async fn $body(api: &Api)` (or, with `shared`, `$body(Arc<Api>)`)
/// on PostgreSQL and on SQLite, as `$body::on_postgres` and
/// `$body::on_sqlite`, on a server with the roster check on (or, with
/// `roster_off`, off).
macro_rules! team_test {
    (@each $body:ident, $flags:ident, $call:expr) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                super::run_on(super::Backend::Postgres, super::$flags, $call).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                super::run_on(super::Backend::Sqlite, super::$flags, $call).await;
            }
        }
    };
    (shared $body:ident) => {
        team_test!(@each $body, ROSTER_ON, super::$body);
    };
    (roster_off $body:ident) => {
        team_test!(@each $body, ROSTER_OFF, |api| async move {
            super::$body(&api).await
        });
    };
    ($body:ident) => {
        team_test!(@each $body, ROSTER_ON, |api| async move {
            super::$body(&api).await
        });
    };
}

/// An account opened for a test, and its owner as the roster has it.
struct Acct {
    id: String,
    slug: String,
    /// The owner's `sub`: the account's `owner_user_id`.
    owner_sub: String,
    /// An owner token for `owner_sub`.
    owner: String,
}

impl Acct {
    fn path(&self, rest: &str) -> String {
        format!("/v1/accounts/{}{rest}", self.id)
    }

    /// A token of `role` for `sub`, scoped to this account.
    fn token(&self, api: &Api, sub: &str, role: Role) -> String {
        api.token_as(sub, role, Some(&self.id))
    }

    /// A fresh email address for this account's tests.
    fn email(&self, who: &str) -> String {
        format!("{who}@{}.example", self.slug)
    }
}

/// Opens an account on `plan` as a developer.
async fn open(api: &Api, plan: &str) -> Acct {
    let slug = unique_slug();
    let mut body = Api::account_body(&slug);
    body["plan"] = json!(plan);
    let opened = api.open_account_with(body).await;
    let b = opened.expect(201);
    assert_eq!(b["plan"], plan);
    let id = b["account_id"].as_str().expect("an account_id").to_owned();
    let owner_sub = format!("user-{slug}");
    assert_eq!(b["owner_user_id"], owner_sub.as_str());
    let owner = api.token_as(&owner_sub, Role::Owner, Some(&id));
    Acct {
        id,
        slug,
        owner_sub,
        owner,
    }
}

/// A validly signed viewer token for `sub` that names no account: what a
/// user who belongs to no account yet holds.
fn unscoped_token(api: &Api, sub: &str) -> String {
    let now = now_unix();
    let claims = Claims {
        sub: sub.to_owned(),
        role: Role::Viewer,
        account_id: None,
        exp: now + 3600,
        iat: now,
        jti: None,
    };
    api.keys.mint(&claims)
}

/// `POST /v1/accounts/{id}/team/invite` without an Idempotency-Key.
async fn invite(api: &Api, acct: &Acct, token: &str, email: &str, role: &str) -> Resp {
    api.post(
        &acct.path("/team/invite"),
        token,
        None,
        json!({ "email": email, "role": role }),
    )
    .await
}

/// `POST /v1/team/invitations/accept` with `bearer`.
async fn accept(api: &Api, bearer: &str, invitation_token: &str) -> Resp {
    api.post(
        "/v1/team/invitations/accept",
        bearer,
        None,
        json!({ "token": invitation_token }),
    )
    .await
}

/// The secret token of a 201 invitation.
#[track_caller]
fn secret(invited: &Resp) -> String {
    invited.expect(201)["token"]
        .as_str()
        .unwrap_or_else(|| panic!("an invitation shows its token: {}", invited.text))
        .to_owned()
}

/// Invites `email` as `role` (by the owner) and has `sub` accept it with a
/// token naming no account; returns the accepted member.
async fn join(api: &Api, acct: &Acct, sub: &str, email: &str, role: &str) -> Value {
    let invited = invite(api, acct, &acct.owner, email, role).await;
    let token = secret(&invited);
    let accepted = accept(api, &unscoped_token(api, sub), &token).await;
    let m = accepted.expect(200).clone();
    assert_eq!(m["user_id"], sub);
    assert_eq!(m["role"], role);
    assert_eq!(m["status"], "active");
    assert!(accepted.position() > 0);
    m
}

/// The team as the account's owner sees it (always fresh).
async fn team(api: &Api, acct: &Acct) -> Value {
    api.get(&acct.path("/team"), &acct.owner)
        .await
        .expect(200)
        .clone()
}

/// The active members' `user_id`s and roles, sorted.
fn roster(team: &Value) -> Vec<(String, String)> {
    let mut members: Vec<(String, String)> = team["members"]
        .as_array()
        .unwrap_or_else(|| panic!("a team lists its members: {team}"))
        .iter()
        .map(|m| {
            assert_eq!(m["status"], "active", "only active members are listed");
            (
                m["user_id"].as_str().unwrap().to_owned(),
                m["role"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    members.sort();
    members
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// The open invitations of a team.
fn invitations(team: &Value) -> &Vec<Value> {
    team["invitations"]
        .as_array()
        .unwrap_or_else(|| panic!("a team lists its invitations: {team}"))
}

/// Checks the shape of a Member object.
#[track_caller]
fn assert_member(m: &Value, account: &str, user_id: &str, role: &str, status: &str) {
    uuid::Uuid::parse_str(m["id"].as_str().expect("a member id")).expect("a uuid member id");
    assert_eq!(m["account_id"], account, "{m}");
    assert_eq!(m["user_id"], user_id, "{m}");
    assert!(m["email"].is_string(), "a member has an email: {m}");
    assert_eq!(m["role"], role, "{m}");
    assert_eq!(m["status"], status, "{m}");
    assert!(
        m["invited_by"].is_null() || m["invited_by"].is_string(),
        "{m}"
    );
    time(&m["joined_at"]);
    if status == "removed" {
        time(&m["removed_at"]);
    } else {
        assert!(m["removed_at"].is_null(), "{m}");
    }
    assert!(
        m.as_object().unwrap().contains_key("last_seen_at"),
        "a member has last_seen_at: {m}"
    );
    if !m["last_seen_at"].is_null() {
        time(&m["last_seen_at"]);
    }
}

/// Checks the shape of an Invitation object.
#[track_caller]
fn assert_invitation(i: &Value, account: &str, email: &str, role: &str, status: &str) {
    uuid::Uuid::parse_str(i["id"].as_str().expect("an invitation id"))
        .expect("a uuid invitation id");
    assert_eq!(i["account_id"], account, "{i}");
    assert_eq!(i["email"], email, "{i}");
    assert_eq!(i["role"], role, "{i}");
    assert_eq!(i["status"], status, "{i}");
    assert!(i["invited_by"].is_string(), "{i}");
    let created = time(&i["created_at"]);
    let expires = time(&i["expires_at"]);
    assert!(expires > created, "{i}");
}

/// Moves the account to `plan` the way an account changes plan: its owner
/// subscribes by bank transfer and a developer approves the payment of the
/// first invoice. Waits until the account reads on `plan`.
async fn upgrade(api: &Api, acct: &Acct, plan: &str) {
    let created = api
        .post(
            "/v1/billing/subscriptions/create",
            &acct.owner,
            Some(&key()),
            json!({ "plan": plan, "method": "bank_transfer" }),
        )
        .await;
    let invoice_id = created.expect(201)["open_invoices"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a first invoice: {}", created.text))
        .to_owned();
    let p = created.position();
    let invoice = api
        .get(
            &format!("/v1/billing/invoices/{invoice_id}?min_position={p}"),
            &acct.owner,
        )
        .await;
    let total = invoice.expect(200)["total"].clone();
    let paid = api
        .post(
            "/v1/billing/payments/manual",
            &acct.owner,
            Some(&key()),
            json!({
                "invoice_id": invoice_id,
                "method": "bank_transfer",
                "reference": "TRANSFER-1",
                "amount": total,
            }),
        )
        .await;
    let payment_id = paid.expect(201)["id"].as_str().unwrap().to_owned();
    api.post_empty(
        &format!("/v1/admin/payments/{payment_id}/approve"),
        &api.developer(),
        None,
    )
    .await
    .expect(200);
    let p = api.head().await;
    let account = api
        .get(
            &format!("/v1/accounts/{}?min_position={p}", acct.id),
            &api.developer(),
        )
        .await;
    assert_eq!(account.expect(200)["plan"], plan);
}

async fn an_invitee_accepts_and_then_reads_with_the_invited_role(api: &Api) {
    let acct = open(api, "professional").await;

    // A new account's team is its owner.
    let t = team(api, &acct).await;
    assert_eq!(t["account_id"], acct.id.as_str());
    assert_eq!(roster(&t), vec![(acct.owner_sub.clone(), "owner".into())]);
    assert_member(
        &t["members"][0],
        &acct.id,
        &acct.owner_sub,
        "owner",
        "active",
    );
    assert!(invitations(&t).is_empty());
    assert_eq!(t["seats"], json!({ "limit": 5, "used": 1 }));

    // The invitation, shown once with its token, and its replay.
    let email = acct.email("viewer");
    let idem = key();
    let body = json!({ "email": email, "role": "viewer" });
    let invited = api
        .post(
            &acct.path("/team/invite"),
            &acct.owner,
            Some(&idem),
            body.clone(),
        )
        .await;
    let inv = invited.expect(201).clone();
    assert_invitation(&inv, &acct.id, &email, "viewer", "invited");
    assert_eq!(inv["invited_by"], acct.owner_sub.as_str());
    let days = time(&inv["expires_at"]) - time(&inv["created_at"]);
    assert!(
        (days - chrono::Duration::days(7)).num_seconds().abs() <= 60,
        "an invitation expires in 7 days by default: {inv}"
    );
    let token = secret(&invited);
    assert!(!token.is_empty());
    assert!(invited.position() > 0);
    let again = api
        .post(&acct.path("/team/invite"), &acct.owner, Some(&idem), body)
        .await;
    assert_eq!(again.expect(201)["id"], inv["id"]);
    assert_eq!(again.body["token"], inv["token"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    let t = team(api, &acct).await;
    assert_eq!(roster(&t).len(), 1, "an invitation is not a member yet");
    let pending = invitations(&t);
    assert_eq!(pending.len(), 1, "{t}");
    assert_invitation(&pending[0], &acct.id, &email, "viewer", "invited");
    assert_eq!(pending[0]["id"], inv["id"]);
    assert!(
        pending[0].get("token").is_none(),
        "the token is shown once, never listed: {t}"
    );
    assert_eq!(t["seats"], json!({ "limit": 5, "used": 2 }));

    // Before accepting, the invitee's token is not a member's.
    let sub = format!("viewer-{}", acct.slug);
    let viewer = acct.token(api, &sub, Role::Viewer);
    api.get(&acct.path("/balance"), &viewer)
        .await
        .expect_error(403, "forbidden");

    let accepted = accept(api, &unscoped_token(api, &sub), &token).await;
    let m = accepted.expect(200).clone();
    assert_member(&m, &acct.id, &sub, "viewer", "active");
    assert_eq!(m["email"], email.as_str());
    assert_eq!(m["invited_by"], acct.owner_sub.as_str());
    let p = accepted.position();

    let t = team(api, &acct).await;
    assert_eq!(
        roster(&t),
        vec![
            (acct.owner_sub.clone(), "owner".into()),
            (sub.clone(), "viewer".into()),
        ]
    );
    assert!(
        invitations(&t).is_empty(),
        "an accepted invitation is not open"
    );
    assert_eq!(t["seats"], json!({ "limit": 5, "used": 2 }));
    // The alias takes the account from the token.
    let alias = api.get("/v1/account/team", &acct.owner).await;
    assert_eq!(alias.expect(200)["account_id"], acct.id.as_str());
    assert_eq!(roster(&alias.body), roster(&t));

    // The same user accepting again is the same membership.
    let again = accept(api, &unscoped_token(api, &sub), &token).await;
    assert_member(again.expect(200), &acct.id, &sub, "viewer", "active");
    assert_eq!(roster(&team(api, &acct).await).len(), 2);

    // The member reads as a viewer, and is refused what a viewer may not do.
    let balance = api
        .get(&acct.path(&format!("/balance?min_position={p}")), &viewer)
        .await;
    assert_eq!(balance.expect(200)["account_id"], acct.id.as_str());
    invite(api, &acct, &viewer, &acct.email("other"), "viewer")
        .await
        .expect_error(403, "forbidden");
    api.get(&acct.path("/team"), &viewer)
        .await
        .expect_error(403, "forbidden");
}
team_test!(an_invitee_accepts_and_then_reads_with_the_invited_role);

async fn any_signed_token_accepts_an_invitation(api: &Api) {
    let acct = open(api, "professional").await;
    let elsewhere = open(api, "free").await;

    // A token that names no account.
    let a = acct.email("a");
    let token = secret(&invite(api, &acct, &acct.owner, &a, "editor").await);
    let sub_a = format!("a-{}", acct.slug);
    let m = accept(api, &unscoped_token(api, &sub_a), &token).await;
    assert_member(m.expect(200), &acct.id, &sub_a, "editor", "active");

    // A token of another account, whose subject is no member there either.
    let b = acct.email("b");
    let token = secret(&invite(api, &acct, &acct.owner, &b, "admin").await);
    let sub_b = format!("b-{}", acct.slug);
    let bearer = elsewhere.token(api, &sub_b, Role::Owner);
    let m = accept(api, &bearer, &token).await;
    assert_member(m.expect(200), &acct.id, &sub_b, "admin", "active");

    assert_eq!(
        roster(&team(api, &acct).await),
        sorted(vec![
            (acct.owner_sub.clone(), "owner".to_owned()),
            (sub_a, "editor".to_owned()),
            (sub_b, "admin".to_owned()),
        ])
    );
    // Joining one account gives nothing on another.
    assert_eq!(roster(&team(api, &elsewhere).await).len(), 1);
}
team_test!(any_signed_token_accepts_an_invitation);

async fn seats_on_the_free_plan_are_one_until_the_plan_is_upgraded(api: &Api) {
    let acct = open(api, "free").await;
    let t = team(api, &acct).await;
    assert_eq!(t["seats"], json!({ "limit": 1, "used": 1 }));

    let refused = invite(api, &acct, &acct.owner, &acct.email("one"), "editor").await;
    let details = refused.expect_error(409, "plan_limit");
    assert_eq!(details["limit"], 1, "{}", refused.text);
    assert_eq!(details["used"], 1, "{}", refused.text);
    assert!(invitations(&team(api, &acct).await).is_empty());

    upgrade(api, &acct, "starter").await;
    let t = team(api, &acct).await;
    assert_eq!(t["seats"], json!({ "limit": 2, "used": 1 }));

    let first = invite(api, &acct, &acct.owner, &acct.email("one"), "editor").await;
    first.expect(201);
    let refused = invite(api, &acct, &acct.owner, &acct.email("two"), "editor").await;
    let details = refused.expect_error(409, "plan_limit");
    assert_eq!(details["limit"], 2, "{}", refused.text);
    assert_eq!(details["used"], 2, "{}", refused.text);

    // A revoked invitation frees its seat.
    let id = first.body["id"].as_str().unwrap();
    api.send(
        reqwest::Method::DELETE,
        &acct.path(&format!("/team/invitations/{id}")),
        Some(&acct.owner),
        None,
        None,
    )
    .await
    .expect(200);
    assert_eq!(
        team(api, &acct).await["seats"],
        json!({ "limit": 2, "used": 1 })
    );
    invite(api, &acct, &acct.owner, &acct.email("two"), "editor")
        .await
        .expect(201);
}
team_test!(seats_on_the_free_plan_are_one_until_the_plan_is_upgraded);

async fn a_removed_member_is_refused_on_its_very_next_request(api: &Api) {
    let acct = open(api, "professional").await;
    let editor_sub = format!("editor-{}", acct.slug);
    join(api, &acct, &editor_sub, &acct.email("editor"), "editor").await;
    let admin_sub = format!("admin-{}", acct.slug);
    join(api, &acct, &admin_sub, &acct.email("admin"), "admin").await;

    let editor = acct.token(api, &editor_sub, Role::Editor);
    api.get(&acct.path("/balance"), &editor).await.expect(200);

    let removed = api
        .send(
            reqwest::Method::DELETE,
            &acct.path(&format!("/team/{editor_sub}")),
            Some(&acct.owner),
            None,
            None,
        )
        .await;
    assert_member(
        removed.expect(200),
        &acct.id,
        &editor_sub,
        "editor",
        "removed",
    );
    // The same, still valid, token: refused at once.
    api.get(&acct.path("/balance"), &editor)
        .await
        .expect_error(403, "forbidden");
    api.get("/v1/billing/account_balance", &editor)
        .await
        .expect_error(403, "forbidden");

    // An admin removes through the alias.
    let admin = acct.token(api, &admin_sub, Role::Admin);
    api.get(&acct.path("/team"), &admin).await.expect(200);
    let viewer_sub = format!("viewer-{}", acct.slug);
    join(api, &acct, &viewer_sub, &acct.email("viewer"), "viewer").await;
    let viewer = acct.token(api, &viewer_sub, Role::Viewer);
    api.get(&acct.path("/balance"), &viewer).await.expect(200);
    let removed = api
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/account/team/{viewer_sub}"),
            Some(&admin),
            None,
            None,
        )
        .await;
    assert_member(
        removed.expect(200),
        &acct.id,
        &viewer_sub,
        "viewer",
        "removed",
    );
    api.get(&acct.path("/balance"), &viewer)
        .await
        .expect_error(403, "forbidden");

    // An unknown user is not found.
    api.send(
        reqwest::Method::DELETE,
        &acct.path("/team/nobody-at-all"),
        Some(&acct.owner),
        None,
        None,
    )
    .await
    .expect_error(404, "not_found");

    assert_eq!(
        roster(&team(api, &acct).await),
        sorted(vec![
            (admin_sub, "admin".to_owned()),
            (acct.owner_sub.clone(), "owner".to_owned()),
        ])
    );
}
team_test!(a_removed_member_is_refused_on_its_very_next_request);

async fn a_demoted_admin_acts_as_a_viewer_at_once(api: &Api) {
    let acct = open(api, "professional").await;
    let sub = format!("admin-{}", acct.slug);
    join(api, &acct, &sub, &acct.email("admin"), "admin").await;
    let admin = acct.token(api, &sub, Role::Admin);

    let by_admin = invite(api, &acct, &admin, &acct.email("first"), "editor").await;
    assert_eq!(by_admin.expect(201)["invited_by"], sub.as_str());

    let changed = api
        .patch(
            &acct.path(&format!("/team/{sub}")),
            &acct.owner,
            json!({ "role": "viewer" }),
        )
        .await;
    assert_member(changed.expect(200), &acct.id, &sub, "viewer", "active");

    // The same token, still claiming admin: the roster's viewer.
    invite(api, &acct, &admin, &acct.email("second"), "editor")
        .await
        .expect_error(403, "forbidden");
    api.get(&acct.path("/team"), &admin)
        .await
        .expect_error(403, "forbidden");
    api.get(&acct.path("/balance"), &admin).await.expect(200);

    assert_eq!(
        roster(&team(api, &acct).await),
        sorted(vec![
            (sub.clone(), "viewer".to_owned()),
            (acct.owner_sub.clone(), "owner".to_owned()),
        ])
    );
}
team_test!(a_demoted_admin_acts_as_a_viewer_at_once);

async fn a_token_claiming_more_than_the_roster_acts_with_the_roster_role(api: &Api) {
    let acct = open(api, "professional").await;
    let sub = format!("viewer-{}", acct.slug);
    join(api, &acct, &sub, &acct.email("viewer"), "viewer").await;

    for claimed in [Role::Admin, Role::Owner] {
        let token = acct.token(api, &sub, claimed);
        invite(api, &acct, &token, &acct.email("x"), "viewer")
            .await
            .expect_error(403, "forbidden");
        api.get(&acct.path("/team"), &token)
            .await
            .expect_error(403, "forbidden");
        api.send(
            reqwest::Method::DELETE,
            &acct.path(&format!("/team/{}", acct.owner_sub)),
            Some(&token),
            None,
            None,
        )
        .await
        .expect_error(403, "forbidden");
        api.get(&acct.path("/balance"), &token).await.expect(200);
    }
    assert!(invitations(&team(api, &acct).await).is_empty());
    assert_eq!(roster(&team(api, &acct).await).len(), 2);
}
team_test!(a_token_claiming_more_than_the_roster_acts_with_the_roster_role);

async fn the_last_owner_can_be_neither_removed_nor_demoted(api: &Api) {
    let acct = open(api, "professional").await;
    let me = acct.path(&format!("/team/{}", acct.owner_sub));

    for token in [&acct.owner, &api.developer()] {
        api.send(reqwest::Method::DELETE, &me, Some(token), None, None)
            .await
            .expect_error(409, "conflict");
        api.patch(&me, token, json!({ "role": "admin" }))
            .await
            .expect_error(409, "conflict");
    }
    api.send(
        reqwest::Method::DELETE,
        &format!("/v1/account/team/{}", acct.owner_sub),
        Some(&acct.owner),
        None,
        None,
    )
    .await
    .expect_error(409, "conflict");

    // Only an owner grants owner.
    let heir = format!("heir-{}", acct.slug);
    join(api, &acct, &heir, &acct.email("heir"), "admin").await;
    let helper = format!("helper-{}", acct.slug);
    join(api, &acct, &helper, &acct.email("helper"), "admin").await;
    let admin = acct.token(api, &helper, Role::Admin);
    let them = acct.path(&format!("/team/{heir}"));
    api.patch(&them, &admin, json!({ "role": "owner" }))
        .await
        .expect_error(403, "forbidden");
    api.patch(&them, &acct.owner, json!({ "role": "superuser" }))
        .await
        .expect_error(422, "invalid_request");
    let promoted = api
        .patch(&them, &acct.owner, json!({ "role": "owner" }))
        .await;
    assert_member(promoted.expect(200), &acct.id, &heir, "owner", "active");

    // Two owners now: still none an admin may demote or remove.
    api.patch(&me, &admin, json!({ "role": "viewer" }))
        .await
        .expect_error(403, "forbidden");
    api.send(reqwest::Method::DELETE, &them, Some(&admin), None, None)
        .await
        .expect_error(403, "forbidden");

    // The first owner is no longer the last, and steps down.
    let demoted = api
        .patch(&me, &acct.owner, json!({ "role": "admin" }))
        .await;
    assert_member(
        demoted.expect(200),
        &acct.id,
        &acct.owner_sub,
        "admin",
        "active",
    );
    assert_eq!(
        roster(&team(api, &acct).await),
        sorted(vec![
            (acct.owner_sub.clone(), "admin".to_owned()),
            (heir.clone(), "owner".to_owned()),
            (helper.clone(), "admin".to_owned()),
        ])
    );

    // The new owner is now the last one.
    let new_owner = acct.token(api, &heir, Role::Owner);
    api.send(reqwest::Method::DELETE, &them, Some(&new_owner), None, None)
        .await
        .expect_error(409, "conflict");
    api.patch(&them, &new_owner, json!({ "role": "editor" }))
        .await
        .expect_error(409, "conflict");
    api.patch(&them, &api.developer(), json!({ "role": "viewer" }))
        .await
        .expect_error(409, "conflict");
}
team_test!(the_last_owner_can_be_neither_removed_nor_demoted);

async fn ownership_transfers_and_the_previous_owner_becomes_admin(api: &Api) {
    let acct = open(api, "enterprise").await;
    let heir = format!("heir-{}", acct.slug);
    join(api, &acct, &heir, &acct.email("heir"), "admin").await;
    let path = acct.path("/transfer-ownership");

    // Not an admin's to give; not to someone outside the team.
    api.post(
        &path,
        &acct.token(api, &heir, Role::Admin),
        None,
        json!({ "user_id": heir }),
    )
    .await
    .expect_error(403, "forbidden");
    api.post(
        &path,
        &acct.owner,
        None,
        json!({ "user_id": "nobody-here" }),
    )
    .await
    .expect_error(404, "not_found");

    let moved = api
        .post(&path, &acct.owner, None, json!({ "user_id": heir }))
        .await;
    let b = moved.expect(200);
    assert_eq!(b["account_id"], acct.id.as_str());
    assert_eq!(b["owner_user_id"], heir.as_str());
    assert_eq!(b["previous_owner_user_id"], acct.owner_sub.as_str());
    assert!(moved.position() > 0);
    assert_eq!(
        roster(&team(api, &acct).await),
        sorted(vec![
            (acct.owner_sub.clone(), "admin".to_owned()),
            (heir.clone(), "owner".to_owned()),
        ])
    );

    // The new owner may invite an owner; the previous one (an admin now,
    // whatever its token claims) may not, but may invite an editor.
    let new_owner = acct.token(api, &heir, Role::Owner);
    let co = invite(api, &acct, &new_owner, &acct.email("co-owner"), "owner").await;
    assert_invitation(
        co.expect(201),
        &acct.id,
        &acct.email("co-owner"),
        "owner",
        "invited",
    );
    invite(api, &acct, &acct.owner, &acct.email("another"), "owner")
        .await
        .expect_error(403, "forbidden");
    invite(api, &acct, &acct.owner, &acct.email("editor"), "editor")
        .await
        .expect(201);
    api.post(
        &path,
        &acct.owner,
        None,
        json!({ "user_id": acct.owner_sub }),
    )
    .await
    .expect_error(403, "forbidden");

    // A developer may transfer it back.
    let back = api
        .post(
            &path,
            &api.developer(),
            None,
            json!({ "user_id": acct.owner_sub }),
        )
        .await;
    let b = back.expect(200);
    assert_eq!(b["owner_user_id"], acct.owner_sub.as_str());
    assert_eq!(b["previous_owner_user_id"], heir.as_str());
    assert_eq!(
        roster(&team(api, &acct).await),
        sorted(vec![
            (acct.owner_sub.clone(), "owner".to_owned()),
            (heir.clone(), "admin".to_owned()),
        ])
    );
}
team_test!(ownership_transfers_and_the_previous_owner_becomes_admin);

async fn a_revoked_invitation_is_gone_and_bad_invitations_are_refused(api: &Api) {
    let acct = open(api, "enterprise").await;

    // Revoked: no longer open, and accepting it is 410.
    let email = acct.email("revoked");
    let invited = invite(api, &acct, &acct.owner, &email, "editor").await;
    let token = secret(&invited);
    let id = invited.body["id"].as_str().unwrap().to_owned();
    let revoked = api
        .send(
            reqwest::Method::DELETE,
            &acct.path(&format!("/team/invitations/{id}")),
            Some(&acct.owner),
            None,
            None,
        )
        .await;
    let r = revoked.expect(200);
    assert_invitation(r, &acct.id, &email, "editor", "revoked");
    assert_eq!(r["id"], id.as_str());
    let t = team(api, &acct).await;
    assert!(invitations(&t).is_empty(), "{t}");
    assert_eq!(t["seats"]["used"], 1);
    let sub = format!("late-{}", acct.slug);
    accept(api, &unscoped_token(api, &sub), &token)
        .await
        .expect_error(410, "invitation_expired");
    assert_eq!(roster(&team(api, &acct).await).len(), 1);

    // Bad input.
    let path = acct.path("/team/invite");
    for body in [
        json!({ "email": "not-an-email", "role": "viewer" }),
        json!({ "email": acct.email("x"), "role": "superuser" }),
        json!({ "email": acct.email("x"), "role": "viewer", "expires_in_days": 0 }),
        json!({ "email": acct.email("x"), "role": "viewer", "expires_in_days": 31 }),
    ] {
        let r = api.post(&path, &acct.owner, None, body.clone()).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text);
        r.expect_error(422, "invalid_request");
    }
    let long = api
        .post(
            &path,
            &acct.owner,
            None,
            json!({ "email": acct.email("long"), "role": "viewer", "expires_in_days": 30 }),
        )
        .await;
    let l = long.expect(201);
    let days = time(&l["expires_at"]) - time(&l["created_at"]);
    assert!(
        (days - chrono::Duration::days(30)).num_seconds().abs() <= 60,
        "expires_in_days 30: {l}"
    );

    // The same email again while its invitation is open; an active
    // member's email.
    invite(api, &acct, &acct.owner, &acct.email("long"), "editor")
        .await
        .expect_error(409, "conflict");
    let member_email = acct.email("member");
    join(
        api,
        &acct,
        &format!("member-{}", acct.slug),
        &member_email,
        "editor",
    )
    .await;
    invite(api, &acct, &acct.owner, &member_email, "viewer")
        .await
        .expect_error(409, "conflict");

    // Roles that may not invite, or not that role.
    let admin_sub = format!("admin-{}", acct.slug);
    join(api, &acct, &admin_sub, &acct.email("admin"), "admin").await;
    let admin = acct.token(api, &admin_sub, Role::Admin);
    invite(api, &acct, &admin, &acct.email("o"), "owner")
        .await
        .expect_error(403, "forbidden");
    invite(api, &acct, &admin, &acct.email("a2"), "admin")
        .await
        .expect(201);
    let editor = acct.token(api, &format!("member-{}", acct.slug), Role::Editor);
    invite(api, &acct, &editor, &acct.email("e"), "viewer")
        .await
        .expect_error(403, "forbidden");

    // An unknown invitation cannot be revoked.
    api.send(
        reqwest::Method::DELETE,
        &acct.path(&format!("/team/invitations/{}", uuid::Uuid::now_v7())),
        Some(&acct.owner),
        None,
        None,
    )
    .await
    .expect_error(404, "not_found");
}
team_test!(a_revoked_invitation_is_gone_and_bad_invitations_are_refused);

async fn an_unknown_invitation_token_is_not_found(api: &Api) {
    let acct = open(api, "starter").await;
    invite(api, &acct, &acct.owner, &acct.email("real"), "viewer")
        .await
        .expect(201);
    let bearer = unscoped_token(api, &format!("guess-{}", acct.slug));
    for guess in [
        "no-such-invitation-token",
        "0000000000000000000000000000000000",
    ] {
        accept(api, &bearer, guess)
            .await
            .expect_error(404, "not_found");
    }
    assert_eq!(roster(&team(api, &acct).await).len(), 1);
}
team_test!(an_unknown_invitation_token_is_not_found);

async fn concurrent_accepts_of_one_invitation_make_one_member(api: Arc<Api>) {
    let acct = open(&api, "enterprise").await;
    let rounds = 6;
    for round in 0..rounds {
        let email = acct.email(&format!("race{round}"));
        let token = secret(&invite(&api, &acct, &acct.owner, &email, "editor").await);
        let subs = [
            format!("racer-a{round}-{}", acct.slug),
            format!("racer-b{round}-{}", acct.slug),
        ];
        let tasks: Vec<_> = subs
            .iter()
            .map(|sub| {
                let api = api.clone();
                let bearer = unscoped_token(&api, sub);
                let token = token.clone();
                tokio::spawn(async move { accept(&api, &bearer, &token).await })
            })
            .collect();
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.expect("the accept task"));
        }
        let won: Vec<usize> = (0..2).filter(|&i| results[i].status == 200).collect();
        assert_eq!(
            won.len(),
            1,
            "exactly one accept wins: {:?}",
            results.iter().map(|r| &r.text).collect::<Vec<_>>()
        );
        let (winner, loser) = (won[0], 1 - won[0]);
        results[loser].expect_error(409, "conflict");
        assert_member(
            &results[winner].body,
            &acct.id,
            &subs[winner],
            "editor",
            "active",
        );

        // The winner again is the same membership; the loser stays out.
        accept(&api, &unscoped_token(&api, &subs[winner]), &token)
            .await
            .expect(200);
        accept(&api, &unscoped_token(&api, &subs[loser]), &token)
            .await
            .expect_error(409, "conflict");
        let members = roster(&team(&api, &acct).await);
        assert_eq!(members.len(), round + 2, "{members:?}");
        assert!(members.contains(&(subs[winner].clone(), "editor".to_owned())));
        assert!(!members.iter().any(|(u, _)| u == &subs[loser]));
    }
    let t = team(&api, &acct).await;
    assert!(invitations(&t).is_empty(), "{t}");
    assert_eq!(t["seats"], json!({ "limit": 20, "used": rounds + 1 }));
}
team_test!(shared concurrent_accepts_of_one_invitation_make_one_member);

async fn developer_and_system_bot_tokens_are_never_roster_checked(api: &Api) {
    let acct = open(api, "starter").await;
    let p = api.grant(&acct.id, 100).await.position();

    // Their subjects are on no roster.
    for bot in [api.bot(Some(&acct.id)), api.bot(None)] {
        let b = api
            .get(&acct.path(&format!("/balance?min_position={p}")), &bot)
            .await;
        assert_eq!(b.expect(200)["balance"], 100);
    }
    api.deduct(&acct.id, json!({ "operation": "clustering" }))
        .await
        .expect(201);
    let t = api.get(&acct.path("/team"), &api.developer()).await;
    assert_eq!(
        roster(t.expect(200)),
        vec![(acct.owner_sub.clone(), "owner".to_owned())]
    );
    api.get(&acct.path("/limits"), &api.developer())
        .await
        .expect(200);
    // A developer may invite and revoke without being a member.
    let invited = invite(api, &acct, &api.developer(), &acct.email("dev"), "editor").await;
    let id = invited.expect(201)["id"].as_str().unwrap().to_owned();
    api.send(
        reqwest::Method::DELETE,
        &acct.path(&format!("/team/invitations/{id}")),
        Some(&api.developer()),
        None,
        None,
    )
    .await
    .expect(200);

    // An owner token whose subject is not on the roster is refused.
    api.get(&acct.path("/balance"), &api.owner(&acct.id))
        .await
        .expect_error(403, "forbidden");
}
team_test!(developer_and_system_bot_tokens_are_never_roster_checked);

async fn with_the_roster_check_off_tokens_are_taken_at_their_word(api: &Api) {
    let (account, p) = api.funded_account(50).await;
    for token in [
        api.owner(&account),
        api.viewer(&account),
        api.token_as("anyone-at-all", Role::Owner, Some(&account)),
    ] {
        let b = api
            .get(
                &format!("/v1/accounts/{account}/balance?min_position={p}"),
                &token,
            )
            .await;
        assert_eq!(b.expect(200)["balance"], 50);
        api.get(
            &format!("/v1/accounts/{account}/limits?min_position={p}"),
            &token,
        )
        .await
        .expect(200);
    }
    api.get(
        &format!("/v1/accounts/{account}/team"),
        &api.owner(&account),
    )
    .await
    .expect(200);
    api.get(
        &format!("/v1/accounts/{account}/team"),
        &api.viewer(&account),
    )
    .await
    .expect_error(403, "forbidden");
}
team_test!(roster_off with_the_roster_check_off_tokens_are_taken_at_their_word);

async fn the_platform_adds_a_member_directly(api: &Api) {
    let acct = open(api, "starter").await;
    let path = acct.path("/team");
    let sub = format!("direct-{}", acct.slug);
    let body = json!({ "user_id": sub, "email": acct.email("direct"), "role": "editor" });

    api.post(&path, &acct.owner, None, body.clone())
        .await
        .expect_error(403, "forbidden");
    let added = api.post(&path, &api.developer(), None, body.clone()).await;
    let m = added.expect(201);
    assert_member(m, &acct.id, &sub, "editor", "active");
    assert_eq!(m["email"], acct.email("direct").as_str());
    api.post(&path, &api.developer(), None, body)
        .await
        .expect_error(409, "conflict");
    api.get(&acct.path("/balance"), &acct.token(api, &sub, Role::Editor))
        .await
        .expect(200);

    // Starter has two seats, both taken now.
    let refused = api
        .post(
            &path,
            &api.developer(),
            None,
            json!({ "user_id": "third", "email": acct.email("third"), "role": "viewer" }),
        )
        .await;
    let details = refused.expect_error(409, "plan_limit");
    assert_eq!(details["limit"], 2, "{}", refused.text);
    assert_eq!(details["used"], 2, "{}", refused.text);
    assert_eq!(
        team(api, &acct).await["seats"],
        json!({ "limit": 2, "used": 2 })
    );
}
team_test!(the_platform_adds_a_member_directly);

async fn the_admin_user_search_finds_members_by_email_role_and_status(api: &Api) {
    let acct = open(api, "professional").await;
    let needle = format!("needle{}", &acct.slug[5..]);
    let email = format!("{needle}@invitee.example");
    let sub = format!("invitee-{}", acct.slug);
    join(api, &acct, &sub, &email, "viewer").await;
    let gone = format!("gone-{}", acct.slug);
    join(api, &acct, &gone, &acct.email("gone"), "editor").await;
    let removed = api
        .send(
            reqwest::Method::DELETE,
            &acct.path(&format!("/team/{gone}")),
            Some(&acct.owner),
            None,
            None,
        )
        .await;
    removed.expect(200);
    let p = api.head().await;
    let dev = api.developer();
    let search = |query: String| {
        let dev = dev.clone();
        async move {
            let r = api
                .get(&format!("/v1/admin/users?min_position={p}&{query}"), &dev)
                .await;
            let b = r.expect(200).clone();
            assert!(
                b["next_cursor"].is_null() || b["next_cursor"].is_string(),
                "{b}"
            );
            b
        }
    };
    let users = |b: &Value| -> Vec<String> {
        b["items"]
            .as_array()
            .unwrap_or_else(|| panic!("items: {b}"))
            .iter()
            .map(|m| m["user_id"].as_str().unwrap().to_owned())
            .collect()
    };

    let by_email = search(format!("q={needle}")).await;
    assert_eq!(users(&by_email), vec![sub.clone()], "{by_email}");
    assert_member(&by_email["items"][0], &acct.id, &sub, "viewer", "active");
    assert_eq!(by_email["items"][0]["email"], email.as_str());
    let by_user = search(format!("q=invitee-{}", acct.slug)).await;
    assert_eq!(users(&by_user), vec![sub.clone()], "{by_user}");

    let mut all = users(&search(format!("account_id={}", acct.id)).await);
    all.sort();
    let mut expected = vec![acct.owner_sub.clone(), sub.clone(), gone.clone()];
    expected.sort();
    assert_eq!(all, expected);
    let viewers = search(format!("account_id={}&role=viewer", acct.id)).await;
    assert_eq!(users(&viewers), vec![sub.clone()]);
    let active = users(&search(format!("account_id={}&status=active", acct.id)).await);
    assert!(
        active.contains(&sub) && !active.contains(&gone),
        "{active:?}"
    );
    let out = search(format!("account_id={}&status=removed", acct.id)).await;
    assert_eq!(users(&out), vec![gone.clone()]);
    assert_member(&out["items"][0], &acct.id, &gone, "editor", "removed");

    // Pages of one.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let q = match &cursor {
            Some(c) => format!(
                "account_id={}&limit=1&cursor={}",
                acct.id,
                percent_encoding::utf8_percent_encode(c, percent_encoding::NON_ALPHANUMERIC)
            ),
            None => format!("account_id={}&limit=1", acct.id),
        };
        let page = search(q).await;
        let items = users(&page);
        assert!(items.len() <= 1, "{page}");
        seen.extend(items);
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, expected, "every member once across the pages");

    for token in [acct.owner.clone(), api.bot(None)] {
        api.get("/v1/admin/users", &token)
            .await
            .expect_error(403, "forbidden");
    }
}
team_test!(the_admin_user_search_finds_members_by_email_role_and_status);

async fn usage_counts_and_limit_overrides_show_in_the_limits(api: &Api) {
    let acct = open(api, "free").await;
    let p = api.head().await;
    let limits = |p: i64| {
        let path = acct.path(&format!("/limits?min_position={p}"));
        let token = acct.owner.clone();
        async move { api.get(&path, &token).await.expect(200).clone() }
    };
    let l = limits(p).await;
    assert_eq!(
        l["current"],
        json!({ "users": 1, "sites": null, "industries": null, "author_profiles": null })
    );
    assert_eq!(l["limits"]["max_users"], 1);
    assert_eq!(l["limits"]["max_sites"], 1);

    // Counts the SaaS reports.
    let path = acct.path("/usage-counts");
    let reported = api
        .put(
            &path,
            &api.bot(Some(&acct.id)),
            json!({ "sites": 1, "industries": 0, "author_profiles": 2 }),
        )
        .await;
    let r = reported.expect(200);
    assert_eq!(r["account_id"], acct.id.as_str());
    assert_eq!(r["sites"], 1);
    assert_eq!(r["industries"], 0);
    assert_eq!(r["author_profiles"], 2);
    let l = limits(reported.position()).await;
    assert_eq!(
        l["current"],
        json!({ "users": 1, "sites": 1, "industries": 0, "author_profiles": 2 })
    );
    let again = api
        .put(&path, &api.developer(), json!({ "sites": 3 }))
        .await;
    assert_eq!(again.expect(200)["sites"], 3);
    let l = limits(again.position()).await;
    assert_eq!(l["current"]["sites"], 3);
    assert_eq!(
        l["current"]["author_profiles"], 2,
        "an unsent count keeps its value"
    );
    api.put(&path, &api.developer(), json!({ "sites": -1 }))
        .await
        .expect_error(422, "invalid_request");
    api.put(&path, &acct.owner, json!({ "sites": 2 }))
        .await
        .expect_error(403, "forbidden");

    // The staff's override: three users, sites unlimited.
    let admin_path = format!("/v1/admin/accounts/{}/limits", acct.id);
    let body = json!({ "max_users": 3, "max_sites": null });
    api.put(&admin_path, &acct.owner, body.clone())
        .await
        .expect_error(403, "forbidden");
    let overridden = api.put(&admin_path, &api.developer(), body).await;
    let o = overridden.expect(200);
    assert_eq!(o["account_id"], acct.id.as_str());
    assert_eq!(o["overrides"]["max_users"], 3);
    assert_eq!(o["limits"]["max_users"], 3);
    assert!(o["limits"]["max_sites"].is_null(), "{o}");
    assert_eq!(o["limits"]["max_industries"], 1, "the plan's: {o}");
    let l = limits(overridden.position()).await;
    assert_eq!(l["limits"]["max_users"], 3);
    assert!(l["limits"]["max_sites"].is_null(), "{l}");
    assert_eq!(l["limits"]["max_author_profiles"], 1);

    assert_eq!(
        team(api, &acct).await["seats"],
        json!({ "limit": 3, "used": 1 })
    );
    invite(api, &acct, &acct.owner, &acct.email("one"), "editor")
        .await
        .expect(201);
    invite(api, &acct, &acct.owner, &acct.email("two"), "viewer")
        .await
        .expect(201);
    let refused = invite(api, &acct, &acct.owner, &acct.email("three"), "viewer").await;
    let details = refused.expect_error(409, "plan_limit");
    assert_eq!(details["limit"], 3, "{}", refused.text);
    assert_eq!(details["used"], 3, "{}", refused.text);
    // Invitations are seats, not users.
    let l = limits(api.head().await).await;
    assert_eq!(l["current"]["users"], 1);
}
team_test!(usage_counts_and_limit_overrides_show_in_the_limits);

async fn an_owner_of_one_account_gets_404_on_another_accounts_team(api: &Api) {
    let a = open(api, "professional").await;
    let b = open(api, "professional").await;

    api.get(&b.path("/team"), &a.owner)
        .await
        .expect_error(404, "not_found");
    invite(api, &b, &a.owner, &a.email("intruder"), "admin")
        .await
        .expect_error(404, "not_found");
    api.send(
        reqwest::Method::DELETE,
        &b.path(&format!("/team/{}", b.owner_sub)),
        Some(&a.owner),
        None,
        None,
    )
    .await
    .expect_error(404, "not_found");
    api.patch(
        &b.path(&format!("/team/{}", b.owner_sub)),
        &a.owner,
        json!({ "role": "viewer" }),
    )
    .await
    .expect_error(404, "not_found");
    api.post(
        &b.path("/transfer-ownership"),
        &a.owner,
        None,
        json!({ "user_id": a.owner_sub }),
    )
    .await
    .expect_error(404, "not_found");

    // B's invitation cannot be revoked through A.
    let inv = invite(api, &b, &b.owner, &b.email("x"), "viewer").await;
    let id = inv.expect(201)["id"].as_str().unwrap().to_owned();
    api.send(
        reqwest::Method::DELETE,
        &a.path(&format!("/team/invitations/{id}")),
        Some(&a.owner),
        None,
        None,
    )
    .await
    .expect_error(404, "not_found");
    assert_eq!(invitations(&team(api, &b).await).len(), 1);

    // A's owner naming B's account in its token is no member there.
    api.get(&b.path("/team"), &b.token(api, &a.owner_sub, Role::Owner))
        .await
        .expect_error(403, "forbidden");

    // Nothing changed on B; A's own team still answers.
    assert_eq!(
        roster(&team(api, &b).await),
        vec![(b.owner_sub.clone(), "owner".to_owned())]
    );
    assert_eq!(roster(&team(api, &a).await).len(), 1);
}
team_test!(an_owner_of_one_account_gets_404_on_another_accounts_team);

/// A second server on `first`'s database, as a second instance behind a
/// load balancer would be: its base URL, and what stops it.
async fn second_instance(
    first: &Server,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("a data dir");
    let config = common::config_with(&first.db().url, dir.path(), ROSTER_ON);
    let prepared = api::prepare(config)
        .await
        .expect("the second server prepares");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        api::serve(prepared, listener, async {
            let _ = rx.await;
        })
        .await
        .expect("the second server runs until shut down");
    });
    (base, tx, task, dir)
}

/// A removal and a demotion made through one instance are refused by
/// another within a second (its roster cache lives 500 ms), with no
/// request to the first in between.
async fn another_instance_sees_a_removal_and_a_demotion_within_a_second(backend: Backend) {
    let server = Server::start_with(backend, ROSTER_ON).await;
    let (base_b, stop_b, task_b, _dir_b) = second_instance(&server).await;
    let api = server.api.clone();
    let body = async move {
        let acct = open(&api, "professional").await;
        let dev = api.developer();
        for (sub, role) in [("bob", "viewer"), ("carol", "admin")] {
            api.post(
                &acct.path("/team"),
                &dev,
                None,
                json!({ "user_id": sub, "email": acct.email(sub), "role": role }),
            )
            .await
            .expect(201);
        }
        let bob = acct.token(&api, "bob", Role::Viewer);
        let carol = acct.token(&api, "carol", Role::Admin);
        let on_b = |token: &str, method: reqwest::Method, path: &str| {
            api.http
                .request(method, format!("{base_b}{path}"))
                .bearer_auth(token)
                .send()
        };
        // B reads both rosters (and caches them).
        let balance = format!("/v1/accounts/{}/balance", acct.id);
        let team = format!("/v1/accounts/{}/team", acct.id);
        assert_eq!(
            on_b(&bob, reqwest::Method::GET, &balance)
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            on_b(&carol, reqwest::Method::GET, &team)
                .await
                .unwrap()
                .status(),
            200
        );

        // Through A: Bob removed, Carol demoted to viewer.
        api.send(
            reqwest::Method::DELETE,
            &acct.path("/team/bob"),
            Some(&acct.owner),
            None,
            None,
        )
        .await
        .expect(200);
        api.patch(
            &acct.path("/team/carol"),
            &acct.owner,
            json!({ "role": "viewer" }),
        )
        .await
        .expect(200);
        let changed = std::time::Instant::now();
        for (token, path, what) in [
            (&bob, &balance, "the removal"),
            (&carol, &team, "the demotion"),
        ] {
            loop {
                let status = on_b(token, reqwest::Method::GET, path)
                    .await
                    .unwrap()
                    .status();
                if status == 403 {
                    break;
                }
                assert_eq!(status, 200);
                assert!(
                    changed.elapsed() < std::time::Duration::from_secs(1),
                    "the other instance still honours the token a second after {what}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    let outcome = tokio::spawn(body).await;
    let _ = stop_b.send(());
    task_b.await.expect("the second server stops");
    server.stop().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_instance_sees_a_removal_and_a_demotion_within_a_second_on_postgres() {
    another_instance_sees_a_removal_and_a_demotion_within_a_second(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_instance_sees_a_removal_and_a_demotion_within_a_second_on_sqlite() {
    another_instance_sees_a_removal_and_a_demotion_within_a_second(Backend::Sqlite).await;
}

/// A team's history passes `ledger-replay verify`: its stream's hash chain,
/// and `rm_team_members` equal to a fresh fold of the log.
async fn a_teams_history_verifies_clean(backend: Backend) {
    let server = Server::start_with(backend, ROSTER_ON).await;
    let api = server.api.clone();
    let store = server.db().store.clone();
    let body = async move {
        let acct = open(&api, "professional").await;
        let invited = invite(&api, &acct, &acct.owner, &acct.email("bob"), "editor").await;
        let token = invited.expect(201)["token"].as_str().unwrap().to_owned();
        accept(&api, &acct.token(&api, "bob", Role::Viewer), &token)
            .await
            .expect(200);
        let revoked = invite(&api, &acct, &acct.owner, &acct.email("carol"), "viewer").await;
        let carol = revoked.expect(201)["id"].as_str().unwrap().to_owned();
        api.send(
            reqwest::Method::DELETE,
            &acct.path(&format!("/team/invitations/{carol}")),
            Some(&acct.owner),
            None,
            None,
        )
        .await
        .expect(200);
        api.patch(
            &acct.path("/team/bob"),
            &acct.owner,
            json!({ "role": "admin" }),
        )
        .await
        .expect(200);
        api.put(
            &format!("/v1/admin/accounts/{}/limits", acct.id),
            &api.developer(),
            json!({ "max_users": 9, "max_sites": null }),
        )
        .await
        .expect(200);
        let last = api
            .put(
                &acct.path("/usage-counts"),
                &api.bot(Some(&acct.id)),
                json!({ "sites": 4 }),
            )
            .await;
        let p = last.expect(200)["position"].as_i64().unwrap();
        // The staff's user list has caught up with the log: then verify.
        let users = api
            .get(
                &format!("/v1/admin/users?account_id={}&min_position={p}", acct.id),
                &api.developer(),
            )
            .await;
        assert_eq!(users.expect(200)["items"].as_array().unwrap().len(), 3);
        let report = common::assert_verify_clean(&store).await;
        assert!(report.read_model_rows_checked > 0, "{report:?}");
    };
    server.run_and_stop(body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_teams_history_verifies_clean_on_postgres() {
    a_teams_history_verifies_clean(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_teams_history_verifies_clean_on_sqlite() {
    a_teams_history_verifies_clean(Backend::Sqlite).await;
}

/// A token never acts above its claim: a viewer token minted for the
/// account's owner reads like a viewer (least privilege), while the
/// owner's own owner token manages the team.
async fn a_token_claiming_less_than_the_roster_acts_with_its_claim(api: &Api) {
    let acct = open(api, "starter").await;
    let as_viewer = acct.token(api, &acct.owner_sub, Role::Viewer);
    let head = api.head().await;
    api.get(
        &format!("{}?min_position={head}", acct.path("/balance")),
        &as_viewer,
    )
    .await
    .expect(200);
    api.get(&acct.path("/team"), &as_viewer)
        .await
        .expect_error(403, "forbidden");
    invite(api, &acct, &as_viewer, &acct.email("bob"), "viewer")
        .await
        .expect_error(403, "forbidden");
    api.get(&acct.path("/team"), &acct.owner).await.expect(200);
}
team_test!(a_token_claiming_less_than_the_roster_acts_with_its_claim);
