//! Team and access routes (docs/adr/0017): the team, invitations, roles,
//! removals, ownership, the staff's user list, reported counts and limit
//! overrides. Each handler extracts, calls `app::team`, renders.

use app::caller::Target;
use app::team::{
    AcceptRequest, AddRequest, CountsRequest, InviteRequest, RoleRequest, TransferRequest,
    UsersQuery,
};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{delete, get, patch, post, put};
use axum::Router;

use super::extract::{account_id, Body, IdemKey, Q};
use super::render;
use super::schemas as doc;
use crate::auth::{AnySigned, Principal};
use crate::error::ApiError;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/accounts/{account_id}/team", get(team).post(add))
        .route("/account/team", get(team_own))
        .route("/accounts/{account_id}/team/invite", post(invite))
        .route("/account/team/invite", post(invite_own))
        .route("/team/invitations/accept", post(accept))
        .route(
            "/accounts/{account_id}/team/invitations/{invitation_id}",
            delete(revoke),
        )
        .route(
            "/account/team/invitations/{invitation_id}",
            delete(revoke_own),
        )
        .route(
            "/accounts/{account_id}/team/{user_id}",
            patch(change_role).delete(remove),
        )
        .route(
            "/account/team/{user_id}",
            patch(change_role_own).delete(remove_own),
        )
        .route("/accounts/{account_id}/transfer-ownership", post(transfer))
        .route("/admin/users", get(users))
        .route("/accounts/{account_id}/usage-counts", put(usage_counts))
        .route("/admin/accounts/{account_id}/limits", put(override_limits))
}

fn invitation_id(raw: &str) -> Result<uuid::Uuid, ApiError> {
    Ok(app::input::path_id(raw, "invitation")?)
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/team",
    tag = "team",
    summary = "The account's team: active members, open invitations and seats",
    params(("account_id" = String, Path, description = "The account's id (a UUID)")),
    responses(
        (status = 200, description = "The team", body = app::team::TeamView),
        (status = 403, description = "`forbidden`: the role may not call this, or the token's user is not an active member", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the account id is not a UUID", body = doc::ErrorBody),
    ),
)]
pub async fn team(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::ok(&app::team::team(&state, &principal, target).await?)
}

#[utoipa::path(
    get,
    path = "/v1/account/team",
    tag = "team",
    summary = "The token's account's team",
    responses(
        (status = 200, description = "The team", body = app::team::TeamView),
        (status = 403, description = "`forbidden`: the role may not call this, or the token's user is not an active member", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account", body = doc::ErrorBody),
    ),
)]
pub async fn team_own(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    render::ok(&app::team::team(&state, &principal, Target::Own).await?)
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account_id}/team/invite",
    tag = "team",
    summary = "Invite someone by email",
    description = "Seats are active members plus open invitations; one more than the plan's `max_users` (or the account's override) is 409 `plan_limit`. The answer's `token` is shown here only (and to a retry with the same Idempotency-Key): the invitee accepts with it at `POST /v1/team/invitations/accept`.",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Optional. A retry with the same key and body replays the first response"),
    ),
    request_body = app::team::InviteRequest,
    responses(
        (status = 201, description = "The invitation, with its token", body = app::team::InvitationView),
        (status = 403, description = "`forbidden`: the role may not invite, or only an owner may invite an owner", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`plan_limit` (`details`: limit, used); `conflict`: already a member or already invited; `idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a bad email, role or expiry; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn invite(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    key: IdemKey,
    body: Body<InviteRequest>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    let done = app::team::invite(&state, &principal, target, key.key(), body.input()).await?;
    render::written(&done)
}

#[utoipa::path(
    post,
    path = "/v1/account/team/invite",
    tag = "team",
    summary = "Invite someone to the token's account",
    description = "As `POST /v1/accounts/{account_id}/team/invite`.",
    params(("Idempotency-Key" = Option<String>, Header, description = "Optional. A retry with the same key and body replays the first response")),
    request_body = app::team::InviteRequest,
    responses(
        (status = 201, description = "The invitation, with its token", body = app::team::InvitationView),
        (status = 403, description = "`forbidden`: the role may not invite, or only an owner may invite an owner", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
        (status = 409, description = "`plan_limit` (`details`: limit, used); `conflict`: already a member or already invited; `idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a bad email, role or expiry, or the token names no account", body = doc::ErrorBody),
    ),
)]
pub async fn invite_own(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    body: Body<InviteRequest>,
) -> Result<Response, ApiError> {
    let done = app::team::invite(&state, &principal, Target::Own, key.key(), body.input()).await?;
    render::written(&done)
}

#[utoipa::path(
    post,
    path = "/v1/team/invitations/accept",
    tag = "team",
    summary = "Accept an invitation",
    description = "Any signed, unexpired token may call this, whatever its role and account (the invitee has no account yet): its `sub` becomes an active member with the invited role. Accepting again as the same user changes nothing.",
    request_body = app::team::AcceptRequest,
    responses(
        (status = 200, description = "The new member", body = app::team::MemberView),
        (status = 404, description = "`not_found`: no invitation has this token", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: accepted by another user already, or the user is already a member", body = doc::ErrorBody),
        (status = 410, description = "`invitation_expired`: the invitation expired or was revoked", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: no token", body = doc::ErrorBody),
    ),
)]
pub async fn accept(
    State(state): State<AppState>,
    caller: AnySigned,
    body: Body<AcceptRequest>,
) -> Result<Response, ApiError> {
    render::written(&app::team::accept(&state, &caller, body.input()).await?)
}

#[utoipa::path(
    delete,
    path = "/v1/accounts/{account_id}/team/invitations/{invitation_id}",
    tag = "team",
    summary = "Revoke an invitation",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("invitation_id" = String, Path, description = "The invitation's id (a UUID)"),
    ),
    responses(
        (status = 200, description = "The invitation, revoked", body = app::team::InvitationView),
        (status = 403, description = "`forbidden`: the role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account or invitation", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the invitation was accepted already", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: an id is not a UUID", body = doc::ErrorBody),
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, invitation)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    let done = app::team::revoke(&state, &principal, target, invitation_id(&invitation)?).await?;
    render::written(&done)
}

#[utoipa::path(
    delete,
    path = "/v1/account/team/invitations/{invitation_id}",
    tag = "team",
    summary = "Revoke an invitation of the token's account",
    params(("invitation_id" = String, Path, description = "The invitation's id (a UUID)")),
    responses(
        (status = 200, description = "The invitation, revoked", body = app::team::InvitationView),
        (status = 403, description = "`forbidden`: the role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such invitation", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the invitation was accepted already", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the id is not a UUID, or the token names no account", body = doc::ErrorBody),
    ),
)]
pub async fn revoke_own(
    State(state): State<AppState>,
    principal: Principal,
    Path(invitation): Path<String>,
) -> Result<Response, ApiError> {
    let done =
        app::team::revoke(&state, &principal, Target::Own, invitation_id(&invitation)?).await?;
    render::written(&done)
}

#[utoipa::path(
    patch,
    path = "/v1/accounts/{account_id}/team/{user_id}",
    tag = "team",
    summary = "Change a member's role",
    description = "Only an owner grants or takes `owner`; the last active owner keeps it (409).",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("user_id" = String, Path, description = "The member's user id (JWT `sub`)"),
    ),
    request_body = app::team::RoleRequest,
    responses(
        (status = 200, description = "The member", body = app::team::MemberView),
        (status = 403, description = "`forbidden`: the role may not call this, or only an owner may grant or take owner", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account or active member", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the last active owner cannot be demoted", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: an unknown role", body = doc::ErrorBody),
    ),
)]
pub async fn change_role(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, user)): Path<(String, String)>,
    body: Body<RoleRequest>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    let done = app::team::change_role(&state, &principal, target, &user, body.input()).await?;
    render::written(&done)
}

#[utoipa::path(
    patch,
    path = "/v1/account/team/{user_id}",
    tag = "team",
    summary = "Change a role in the token's account",
    params(("user_id" = String, Path, description = "The member's user id (JWT `sub`)")),
    request_body = app::team::RoleRequest,
    responses(
        (status = 200, description = "The member", body = app::team::MemberView),
        (status = 403, description = "`forbidden`: the role may not call this, or only an owner may grant or take owner", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such active member", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the last active owner cannot be demoted", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: an unknown role, or the token names no account", body = doc::ErrorBody),
    ),
)]
pub async fn change_role_own(
    State(state): State<AppState>,
    principal: Principal,
    Path(user): Path<String>,
    body: Body<RoleRequest>,
) -> Result<Response, ApiError> {
    let done = app::team::change_role(&state, &principal, Target::Own, &user, body.input()).await?;
    render::written(&done)
}

#[utoipa::path(
    delete,
    path = "/v1/accounts/{account_id}/team/{user_id}",
    tag = "team",
    summary = "Remove a member",
    description = "The member's tokens are refused (403) from their next request. The last active owner cannot be removed (409).",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("user_id" = String, Path, description = "The member's user id (JWT `sub`)"),
    ),
    responses(
        (status = 200, description = "The member, removed", body = app::team::MemberView),
        (status = 403, description = "`forbidden`: the role may not call this, or only an owner may remove an owner", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account or active member", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the last active owner cannot be removed", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the account id is not a UUID", body = doc::ErrorBody),
    ),
)]
pub async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path((account, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::written(&app::team::remove(&state, &principal, target, &user).await?)
}

#[utoipa::path(
    delete,
    path = "/v1/account/team/{user_id}",
    tag = "team",
    summary = "Remove a member of the token's account",
    params(("user_id" = String, Path, description = "The member's user id (JWT `sub`)")),
    responses(
        (status = 200, description = "The member, removed", body = app::team::MemberView),
        (status = 403, description = "`forbidden`: the role may not call this, or only an owner may remove an owner", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such active member", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the last active owner cannot be removed", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account", body = doc::ErrorBody),
    ),
)]
pub async fn remove_own(
    State(state): State<AppState>,
    principal: Principal,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    render::written(&app::team::remove(&state, &principal, Target::Own, &user).await?)
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account_id}/team",
    tag = "team",
    summary = "Add an active member directly (developer)",
    description = "For the SaaS's sign-up flows and for importing the members of accounts opened before teams existed. Seats are checked as for invitations.",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("Idempotency-Key" = Option<String>, Header, description = "Optional. A retry with the same key and body replays the first response"),
    ),
    request_body = app::team::AddRequest,
    responses(
        (status = 201, description = "The member", body = app::team::MemberView),
        (status = 403, description = "`forbidden`: only a developer may add members directly", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
        (status = 409, description = "`plan_limit` (`details`: limit, used); `conflict`: already an active member; `idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a bad user id, email or role", body = doc::ErrorBody),
    ),
)]
pub async fn add(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    key: IdemKey,
    body: Body<AddRequest>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    let done = app::team::add(&state, &principal, target, key.key(), body.input()).await?;
    render::written(&done)
}

#[utoipa::path(
    post,
    path = "/v1/accounts/{account_id}/transfer-ownership",
    tag = "team",
    summary = "Make another active member the owner",
    description = "An owner hands the account over and becomes an admin; a developer may do it too (every other owner then becomes an admin).",
    params(("account_id" = String, Path, description = "The account's id (a UUID)")),
    request_body = app::team::TransferRequest,
    responses(
        (status = 200, description = "Ownership moved", body = app::team::Transferred),
        (status = 403, description = "`forbidden`: only an owner (or a developer) may transfer ownership", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or the user is not an active member", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the user is the owner already", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: no user id", body = doc::ErrorBody),
    ),
)]
pub async fn transfer(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    body: Body<TransferRequest>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::written(&app::team::transfer(&state, &principal, target, body.input()).await?)
}

#[utoipa::path(
    get,
    path = "/v1/admin/users",
    tag = "admin",
    summary = "Every member and invitation across accounts (developer)",
    params(app::team::UsersQuery),
    responses(
        (status = 200, description = "A page of members, newest first", body = doc::UserPage),
        (status = 403, description = "`forbidden`: only a developer may list users", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: the read models did not reach `min_position` in time", body = doc::ErrorBody),
    ),
)]
pub async fn users(
    State(state): State<AppState>,
    principal: Principal,
    query: Q<UsersQuery>,
) -> Result<Response, ApiError> {
    render::ok(&app::team::users(&state, &principal, query.query()).await?)
}

#[utoipa::path(
    put,
    path = "/v1/accounts/{account_id}/usage-counts",
    tag = "team",
    summary = "Report the counts the SaaS keeps (sites, industries, author profiles)",
    description = "A count not sent keeps its last value; `GET /v1/accounts/{account_id}/limits` shows them under `current`.",
    params(("account_id" = String, Path, description = "The account's id (a UUID)")),
    request_body = app::team::CountsRequest,
    responses(
        (status = 200, description = "The counts, as kept", body = app::team::CountsView),
        (status = 403, description = "`forbidden`: only a developer or system_bot may report counts", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a count is negative or too large", body = doc::ErrorBody),
    ),
)]
pub async fn usage_counts(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    body: Body<CountsRequest>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::written(&app::team::report_counts(&state, &principal, target, body.input()).await?)
}

#[utoipa::path(
    put,
    path = "/v1/admin/accounts/{account_id}/limits",
    tag = "admin",
    summary = "Override the plan's limits for one account (developer)",
    description = "Each of `max_users`, `max_sites`, `max_industries`, `max_author_profiles`: a number (this account's limit), null (unlimited) or absent (the plan's). The body replaces the overrides.",
    params(("account_id" = String, Path, description = "The account's id (a UUID)")),
    request_body = doc::LimitOverrides,
    responses(
        (status = 200, description = "The overrides and the limits in effect", body = doc::LimitsOverridden),
        (status = 403, description = "`forbidden`: only a developer may override limits", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: an unknown field or a bad value", body = doc::ErrorBody),
    ),
)]
pub async fn override_limits(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    body: Body<serde_json::Map<String, serde_json::Value>>,
) -> Result<Response, ApiError> {
    let target = Target::Account(account_id(&account)?);
    render::written(&app::team::override_limits(&state, &principal, target, body.input()).await?)
}
