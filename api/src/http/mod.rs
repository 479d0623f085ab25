//! HTTP API (SPEC §3), base path `/v1`, plus the operational routes that
//! need no token: `/health`, `/ready`, `/metrics`, `/openapi.json` and the
//! Swagger UI at `/docs`.
//!
//! Canonical resources live under `/v1/accounts/{account_id}/...`; the
//! original plan's paths (`/v1/billing/...`, `/v1/account/...`) are aliases
//! taking the account from the token. A trailing slash is optional on every
//! route.

mod accounts;
mod admin_billing;
mod billing;
mod billing_stats;
mod budget;
mod catalog;
mod credits;
mod docs;
pub mod extract;
pub mod guard;
pub mod listener;
mod notify;
pub mod openapi;
mod payment_methods;
mod reads;
mod render;
pub mod schemas;
mod subscriptions;
mod team;
mod tokens;
mod webhooks;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::json;
use tower::Layer;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::{warn, Level};

use crate::error::ApiError;
use crate::AppState;

/// The router as one service, for the server loop ([`listener::serve`]):
/// `/path/` and `/path` are the same route.
pub fn service(state: AppState) -> NormalizePath<Router> {
    NormalizePathLayer::trim_trailing_slash().layer(router(state))
}

pub fn router(state: AppState) -> Router {
    let guard = guard::Guard {
        limiter: std::sync::Arc::new(guard::RateLimiter::new(&state.config.limits)),
        keys: state.jwt.clone(),
        request_timeout: std::time::Duration::from_secs(state.config.limits.request_timeout_secs),
    };
    let v1 = Router::new()
        // Accounts.
        .route("/accounts", post(accounts::open))
        .route(
            "/accounts/{account_id}",
            get(accounts::get).patch(accounts::patch),
        )
        .route(
            "/account/settings",
            get(accounts::get_own).patch(accounts::patch_own),
        )
        .route("/accounts/{account_id}/limits", get(accounts::limits))
        .route("/account/limits", get(accounts::limits_own))
        // Notifications.
        .route(
            "/admin/webhook-endpoints",
            get(notify::list).post(notify::create),
        )
        .route(
            "/admin/webhook-endpoints/{endpoint_id}",
            get(notify::get).delete(notify::delete),
        )
        .route(
            "/admin/webhook-endpoints/{endpoint_id}/deliveries",
            get(notify::deliveries),
        )
        .route(
            "/admin/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver",
            post(notify::redeliver),
        )
        .route(
            "/accounts/{account_id}/budget",
            get(budget::get_budget).put(budget::put_budget),
        )
        .route(
            "/account/budget",
            get(budget::get_budget_own).put(budget::put_budget_own),
        )
        .route(
            "/accounts/{account_id}/auto-top-up",
            get(budget::get_auto_top_up).put(budget::put_auto_top_up),
        )
        .route(
            "/account/auto-top-up",
            get(budget::get_auto_top_up_own).put(budget::put_auto_top_up_own),
        )
        // Credits.
        .route("/accounts/{account_id}/deductions", post(credits::deduct))
        // Batches: their own body limit, above a single command's.
        .route(
            "/accounts/{account_id}/deductions/batch",
            post(credits::deduct_batch)
                .layer(DefaultBodyLimit::max(app::credits::BATCH_BODY_BYTES_MAX)),
        )
        .route(
            "/deductions/batch",
            post(credits::deduct_batch_any)
                .layer(DefaultBodyLimit::max(app::credits::BATCH_BODY_BYTES_MAX)),
        )
        .route("/accounts/{account_id}/holds", post(credits::hold))
        .route(
            "/accounts/{account_id}/holds/{hold_id}/capture",
            post(credits::capture),
        )
        .route(
            "/accounts/{account_id}/holds/{hold_id}/release",
            post(credits::release),
        )
        .route(
            "/accounts/{account_id}/deductions/{deduction_id}/refund",
            post(credits::refund),
        )
        .route("/accounts/{account_id}/grants", post(credits::grant))
        .route(
            "/admin/accounts/{account_id}/adjust-credits",
            post(credits::adjust),
        )
        // Reads.
        .route("/accounts/{account_id}/balance", get(reads::balance))
        .route("/billing/account_balance", get(reads::balance_own))
        .route(
            "/accounts/{account_id}/transactions",
            get(reads::transactions),
        )
        .route("/billing/transactions", get(reads::transactions_own))
        .route("/accounts/{account_id}/usage", get(reads::usage))
        .route("/billing/usage", get(reads::usage_own))
        .route(
            "/accounts/{account_id}/usage/analytics",
            get(reads::analytics),
        )
        .route("/account/usage/analytics", get(reads::analytics_own))
        .route("/accounts/{account_id}/forecast", get(reads::forecast))
        .route("/account/forecast", get(reads::forecast_own))
        // Catalog.
        .route("/plans", get(catalog::plans))
        .route("/admin/plans/{slug}", put(catalog::put_plan))
        .route("/billing/credits/packages", get(catalog::packages))
        .route("/admin/credit-packages/{slug}", put(catalog::put_package))
        .route("/admin/credit-costs", get(catalog::costs))
        .route("/admin/credit-costs/history", get(catalog::cost_history))
        .route("/admin/credit-costs/{operation}", put(catalog::put_cost))
        .route(
            "/admin/credit-costs/{operation}/history",
            get(catalog::cost_history_of),
        )
        // Administration.
        .route("/admin/accounts", get(accounts::search))
        .route(
            "/admin/accounts/{account_id}/suspend",
            post(accounts::suspend),
        )
        .route(
            "/admin/accounts/{account_id}/activate",
            post(accounts::activate),
        )
        .route("/admin/tokens/revoke", post(tokens::revoke));
    Router::new()
        .nest("/v1", v1.merge(billing::routes()).merge(team::routes()))
        .route("/health", get(health))
        .route("/ready", get(ready))
        // Operations: no token, like `/health`.
        .route("/metrics", get(crate::telemetry::scrape))
        .route("/openapi.json", get(openapi::openapi_json))
        .route("/docs", get(docs::index))
        .route("/docs/{file}", get(docs::asset))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::REQUEST_BODY_BYTES_MAX))
        .layer(axum::middleware::from_fn_with_state(
            guard.clone(),
            guard::timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            guard,
            guard::rate_limit,
        ))
        .layer(CatchPanicLayer::custom(guard::panicked))
        .layer(axum::middleware::from_fn(guard::utf8_path))
        // Inside the routing, where `MatchedPath` is known; the trace layer
        // outermost so that its span covers the metrics too.
        .layer(axum::middleware::from_fn(crate::telemetry::track))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(crate::telemetry::request_span)
                .on_request(())
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::INFO)
                        .latency_unit(LatencyUnit::Micros),
                ),
        )
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

async fn method_not_allowed() -> Response {
    let mut r = ApiError::bad_request("this method is not allowed on this route").into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// Liveness: the process answers.
#[utoipa::path(
    get,
    path = "/health",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "The process answers", body = schemas::Health)),
)]
async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store answers; where the log's head, the read models and
/// (with NATS) the outbox are.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "operations",
    summary = "Readiness: the store answers; the log head, the projector's lag and, with NATS, its state and the outbox's lag",
    responses(
        (status = 200, description = "Ready", body = schemas::Ready),
        (status = 503, description = "`unavailable`: the event store is not reachable", body = schemas::ErrorBody),
    ),
)]
async fn ready(State(state): State<AppState>) -> Response {
    // The store's head as of the (cached) probe, never behind what this
    // process itself has written.
    let probe = state.ready_probe.head(&state.store).await;
    match probe.map(|head| head.max(state.written_head())) {
        Ok(position) => {
            let projected = state.projector.position();
            // A projector that keeps failing leaves every fresh read and
            // every refund waiting: this instance is not ready.
            if let Some(error) = state.projector.error() {
                return ApiError::from(app::AppError::Unavailable(format!(
                    "the projector is stuck at position {projected}: {error}"
                )))
                .into_response();
            }
            let mut body = json!({
                "status": "ready",
                "store": { "status": "ok", "backend": format!("{:?}", state.store.backend()).to_lowercase() },
                "position": position,
                "projector": {
                    "position": projected,
                    "lag": (position - projected).max(0),
                    "lag_ms": state.projector.lag_millis(position),
                },
            });
            // NATS away leaves the server ready (200): HTTP still takes
            // every command and the outbox catches up when NATS returns, so
            // a load balancer must not take this instance out for it
            // (docs/adr/0009-nats.md).
            if let Some(nats) = &state.nats {
                let published = nats.outbox_position();
                body["nats"] = json!(if nats.is_connected() {
                    "ok"
                } else {
                    "degraded"
                });
                body["outbox"] =
                    json!({ "position": published, "lag": (position - published).max(0) });
                if let Some(error) = nats.outbox_error() {
                    body["outbox"]["error"] = json!(error);
                }
            }
            Json(body).into_response()
        }
        Err(e) => {
            warn!(error = %e, "store is not ready");
            ApiError::Unavailable("the event store is not reachable".into()).into_response()
        }
    }
}
