//! Billing statistics `GET /v1/admin/billing/stats`
//! (docs/adr/0013-payment-methods-and-stats.md): extract, call
//! `app::billing::stats`, render.

use app::billing::stats::StatsQuery;
use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use utoipa::OpenApi;

use super::extract::{Fresh, Q};
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

#[derive(OpenApi)]
#[openapi(paths(stats))]
pub struct Api;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/billing/stats", get(stats))
}

#[utoipa::path(
    get,
    path = "/v1/admin/billing/stats",
    tag = "admin",
    summary = "Accounts by status, active subscriptions, MRR, revenue in a range, outstanding invoices, credits issued/used/expired",
    params(StatsQuery),
    responses(
        (status = 200, description = "The figures", body = app::billing::stats::BillingStats),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: `from` or `to` is not RFC 3339, or `from` is not before `to`; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn stats(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<StatsQuery>,
) -> Result<Response, ApiError> {
    render::ok(&app::billing::stats::stats(&state, &principal, fresh.0, query.query()).await?)
}
