//! Payment method routes (docs/adr/0013-payment-methods-and-stats.md):
//! the methods offered to the caller's account and the per-country rows
//! staff configure. Each handler extracts, calls
//! `app::billing::payment_methods`, renders.

use app::billing::payment_methods::{ConfigRequest, ConfigsQuery, OfferedQuery};
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, put};
use axum::Router;
use utoipa::OpenApi;

use super::extract::{Body, Fresh, Q};
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

#[derive(OpenApi)]
#[openapi(paths(offered, configs, put_config))]
pub struct Api;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/billing/payment-methods", get(offered))
        .route("/admin/payment-method-configs", get(configs))
        .route(
            "/admin/payment-method-configs/{country}/{method}",
            put(put_config),
        )
}

#[utoipa::path(
    get,
    path = "/v1/billing/payment-methods",
    tag = "billing",
    summary = "The payment methods enabled for the caller's account's country, with instructions and bank details",
    params(OfferedQuery),
    responses(
        (status = 200, description = "The enabled methods, by sort order", body = app::billing::payment_methods::OfferedMethods),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn offered(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<OfferedQuery>,
) -> Result<Response, ApiError> {
    let offered =
        app::billing::payment_methods::offered(&state, &principal, fresh.0, query.query()).await?;
    render::ok(&offered)
}

#[utoipa::path(
    get,
    path = "/v1/admin/payment-method-configs",
    tag = "admin",
    summary = "Every payment method row, by country, sort order and method",
    params(ConfigsQuery),
    responses(
        (status = 200, description = "The rows", body = app::billing::payment_methods::MethodConfigList),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: `country` is not an ISO 3166-1 alpha-2 code or *", body = doc::ErrorBody),
    ),
)]
pub async fn configs(
    State(state): State<AppState>,
    principal: Principal,
    query: Q<ConfigsQuery>,
) -> Result<Response, ApiError> {
    render::ok(&app::billing::payment_methods::configs(&state, &principal, query.query()).await?)
}

#[utoipa::path(
    put,
    path = "/v1/admin/payment-method-configs/{country}/{method}",
    tag = "admin",
    summary = "Create or replace the payment method row of one country (or * for every country without its own)",
    params(
        ("country" = String, Path, description = "ISO 3166-1 alpha-2 in upper case, or `*`"),
        ("method" = String, Path, description = "`stripe|paypal|bank_transfer|local_wallet|manual`"),
    ),
    request_body = ConfigRequest,
    responses(
        (status = 200, description = "The row, saved", body = app::billing::payment_methods::SavedMethodConfig),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn put_config(
    State(state): State<AppState>,
    principal: Principal,
    Path((country, method)): Path<(String, String)>,
    body: Body<ConfigRequest>,
) -> Result<Response, ApiError> {
    let saved = app::billing::payment_methods::put_config(
        &state,
        &principal,
        &country,
        &method,
        body.input(),
    )
    .await?;
    render::ok(&saved)
}
