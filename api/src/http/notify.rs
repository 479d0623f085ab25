//! Outgoing webhook endpoints (issue 17, docs/adr/0021-notifications.md):
//! staff register, list and delete them, read their deliveries and
//! redeliver one. Each handler extracts, calls `app::notify::webhooks`,
//! renders.

use app::notify::webhooks::{DeliveriesQuery, EndpointRequest};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::extract::{Body, Q};
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

#[utoipa::path(
    post,
    path = "/v1/admin/webhook-endpoints",
    tag = "admin",
    summary = "Register a webhook endpoint",
    description = "Each event the endpoint asks for (`events`: event types, or `[\"*\"]`; `account_id`: one account's, else all) is POSTed to `url` as the JSON NATS publishes on `LEDGER_EVENTS`, with `Ledger-Event-Id` and `Ledger-Signature: t={unix seconds},v1={hex HMAC-SHA256 of \"{t}.{body}\" keyed with the secret}`; a non-2xx answer or a timeout is retried with exponential backoff for 24 h. The `secret` is answered here only.",
    request_body = app::notify::webhooks::EndpointRequest,
    responses(
        (status = 201, description = "The endpoint, with its secret (shown once)", body = doc::WebhookEndpointCreated),
        (status = 403, description = "`forbidden`: only a developer manages webhooks", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the most endpoints are registered", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the URL is not http(s), or is a link-local or metadata address; `events` or `account_id` is invalid", body = doc::ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: Body<EndpointRequest>,
) -> Result<Response, ApiError> {
    render::written(&app::notify::webhooks::create(&state, &principal, body.input()).await?)
}

#[utoipa::path(
    get,
    path = "/v1/admin/webhook-endpoints",
    tag = "admin",
    summary = "The webhook endpoints (without their secrets)",
    responses(
        (status = 200, description = "Every endpoint", body = doc::WebhookEndpointPage),
        (status = 403, description = "`forbidden`: only a developer manages webhooks", body = doc::ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    render::ok(&app::notify::webhooks::list(&state, &principal).await?)
}

#[utoipa::path(
    get,
    path = "/v1/admin/webhook-endpoints/{endpoint_id}",
    tag = "admin",
    summary = "One webhook endpoint (without its secret)",
    params(("endpoint_id" = String, Path, description = "The endpoint's id (`we_…`)")),
    responses(
        (status = 200, description = "The endpoint", body = doc::WebhookEndpoint),
        (status = 403, description = "`forbidden`: only a developer manages webhooks", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such endpoint", body = doc::ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    render::ok(&app::notify::webhooks::get(&state, &principal, &id).await?)
}

#[utoipa::path(
    delete,
    path = "/v1/admin/webhook-endpoints/{endpoint_id}",
    tag = "admin",
    summary = "Delete a webhook endpoint",
    description = "Its pending deliveries fail; its delivery log stays.",
    params(("endpoint_id" = String, Path, description = "The endpoint's id (`we_…`)")),
    responses(
        (status = 200, description = "Deleted", body = doc::Deleted),
        (status = 403, description = "`forbidden`: only a developer manages webhooks", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such endpoint", body = doc::ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    render::ok(&app::notify::webhooks::delete(&state, &principal, &id).await?)
}

#[utoipa::path(
    get,
    path = "/v1/admin/webhook-endpoints/{endpoint_id}/deliveries",
    tag = "admin",
    summary = "An endpoint's delivery log, newest first",
    params(
        ("endpoint_id" = String, Path, description = "The endpoint's id (`we_…`)"),
        app::notify::webhooks::DeliveriesQuery,
    ),
    responses(
        (status = 200, description = "Deliveries: status, attempts, the last HTTP status and error", body = doc::DeliveryPage),
        (status = 403, description = "`forbidden`: only a developer manages webhooks", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such endpoint", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid", body = doc::ErrorBody),
    ),
)]
pub async fn deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    query: Q<DeliveriesQuery>,
) -> Result<Response, ApiError> {
    render::ok(&app::notify::webhooks::deliveries(&state, &principal, &id, query.query()).await?)
}

#[utoipa::path(
    post,
    path = "/v1/admin/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    tag = "admin",
    summary = "Send a delivery again",
    description = "Queues the delivery (also a delivered or failed one) to be sent at once, with the same event id.",
    params(
        ("endpoint_id" = String, Path, description = "The endpoint's id (`we_…`)"),
        ("delivery_id" = String, Path, description = "The delivery's id"),
    ),
    responses(
        (status = 202, description = "Queued", body = doc::Delivery),
        (status = 403, description = "`forbidden`: only a developer manages webhooks", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such endpoint or delivery", body = doc::ErrorBody),
    ),
)]
pub async fn redeliver(
    State(state): State<AppState>,
    principal: Principal,
    Path((id, delivery)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let body = app::notify::webhooks::redeliver(&state, &principal, &id, &delivery).await?;
    Ok((StatusCode::ACCEPTED, Json(render::body(&body)?)).into_response())
}
