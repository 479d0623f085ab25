//! Token administration: revoking a token by its id (`jti`).

use app::tokens::RevokeRequest;
use axum::extract::State;
use axum::response::Response;

use super::extract::Body;
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

#[utoipa::path(
    post,
    path = "/v1/admin/tokens/revoke",
    tag = "admin",
    summary = "Revoke a token by its id (`jti`)",
    description = "Every server refuses the token from then on (this one at once, others within 5 s). Idempotent: revoking an id twice answers `newly_revoked: false`.",
    request_body = app::tokens::RevokeRequest,
    responses(
        (status = 200, description = "The token id is revoked", body = app::tokens::Revoked),
        (status = 403, description = "`forbidden`: only a developer may revoke tokens", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: `jti` is empty, too long or not printable ASCII", body = doc::ErrorBody),
    ),
)]
pub async fn revoke(
    State(state): State<AppState>,
    principal: Principal,
    body: Body<RevokeRequest>,
) -> Result<Response, ApiError> {
    let done = app::tokens::revoke(&state, &principal, body.input()).await?;
    render::ok(&done)
}
