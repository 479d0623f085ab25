//! Payment method routes (docs/adr/0013-payment-methods-and-stats.md):
//! the methods offered to the caller's account with its saved cards, the
//! cards themselves (save through a SetupIntent, default, detach;
//! docs/adr/0011-payments-gateway.md) and the per-country rows staff
//! configure. Each handler extracts, calls `app::billing::payment_methods`
//! or `app::billing::saved_cards`, renders.

use app::billing::payment_methods::{ConfigRequest, ConfigsQuery, OfferedQuery};
use app::billing::saved_cards::AddRequest;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use axum::Router;
use utoipa::OpenApi;

use super::extract::{Body, Fresh, IdemKey, Q};
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

#[derive(OpenApi)]
#[openapi(paths(offered, add_card, default_card, detach_card, configs, put_config))]
pub struct Api;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/billing/payment-methods", get(offered).post(add_card))
        .route(
            "/billing/payment-methods/{payment_method_id}/default",
            post(default_card),
        )
        .route(
            "/billing/payment-methods/{payment_method_id}",
            delete(detach_card),
        )
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
    summary = "The payment methods enabled for the caller's account's country, with instructions and bank details, and the account's saved cards",
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
    post,
    path = "/v1/billing/payment-methods",
    tag = "billing",
    summary = "Save a card: a Stripe SetupIntent for the account's Stripe customer (created once), whose client_secret the browser confirms",
    params(("Idempotency-Key" = Option<String>, Header, description = "Optional. A retry with the same key answers the same SetupIntent")),
    request_body = Option<AddRequest>,
    responses(
        (status = 201, description = "The SetupIntent's id and client_secret", body = app::billing::saved_cards::CardSetup),
        (status = 400, description = "`invalid_request`: the body is not a JSON object", body = doc::ErrorBody),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: `type` is not `card`", body = doc::ErrorBody),
        (status = 502, description = "`unavailable`: Stripe refused the request", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: Stripe is not configured or unreachable", body = doc::ErrorBody),
    ),
)]
pub async fn add_card(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    body: Body<AddRequest>,
) -> Result<Response, ApiError> {
    let done = app::billing::saved_cards::add(&state, &principal, key.key(), body.input()).await?;
    render::written(&done)
}

#[utoipa::path(
    post,
    path = "/v1/billing/payment-methods/{payment_method_id}/default",
    tag = "billing",
    summary = "Make a saved card the one the account's invoices are paid with",
    params(("payment_method_id" = String, Path, description = "The card's id at Stripe (`pm_…`)")),
    responses(
        (status = 200, description = "The change and the account's cards", body = app::billing::saved_cards::CardChanged),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such card of this account", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the id is not a Stripe id", body = doc::ErrorBody),
        (status = 502, description = "`unavailable`: Stripe refused the request", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: Stripe is not configured or unreachable", body = doc::ErrorBody),
    ),
)]
pub async fn default_card(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    render::ok(&app::billing::saved_cards::set_default(&state, &principal, key.key(), &id).await?)
}

#[utoipa::path(
    delete,
    path = "/v1/billing/payment-methods/{payment_method_id}",
    tag = "billing",
    summary = "Detach a saved card: it can no longer be charged",
    params(("payment_method_id" = String, Path, description = "The card's id at Stripe (`pm_…`)")),
    responses(
        (status = 200, description = "The change and the cards left", body = app::billing::saved_cards::CardChanged),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such card of this account", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the id is not a Stripe id", body = doc::ErrorBody),
        (status = 502, description = "`unavailable`: Stripe refused the request", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: Stripe is not configured or unreachable", body = doc::ErrorBody),
    ),
)]
pub async fn detach_card(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    render::ok(&app::billing::saved_cards::detach(&state, &principal, key.key(), &id).await?)
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
