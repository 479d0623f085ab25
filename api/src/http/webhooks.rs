//! Stripe webhooks `POST /v1/billing/webhooks/stripe` (SPEC §3;
//! docs/adr/0011-payments-gateway.md): no bearer token, the request is
//! authenticated by its `Stripe-Signature`. The transport's part is the
//! raw body, read whole (at most [`WEBHOOK_BODY_BYTES_MAX`]) before it is
//! parsed, since the signature covers the exact bytes; checking the
//! signature and applying the event once is `app::stripe_events`.

use app::stripe_events::StripeEventBody;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use utoipa::OpenApi;

use super::render;
use super::schemas as doc;
use crate::error::ApiError;
use crate::AppState;

/// The path of the Stripe webhook: the one `/v1` route without a bearer
/// token (the OpenAPI `Common` modifier leaves it unsecured).
pub const STRIPE_WEBHOOK_PATH: &str = "/v1/billing/webhooks/stripe";
/// Largest webhook body read (Stripe's events are far smaller).
pub const WEBHOOK_BODY_BYTES_MAX: usize = 256 * 1024;
/// A body over the limit but under this is read to its end (and dropped)
/// before the 413, so the sender reads the answer instead of a connection
/// reset; a larger one is refused at once.
const WEBHOOK_DRAIN_BYTES_MAX: usize = 1024 * 1024;
/// Longest the drain of an oversized body may take.
const WEBHOOK_DRAIN_MILLIS_MAX: u64 = 5_000;

/// The body, or `None` when it is over [`WEBHOOK_BODY_BYTES_MAX`] (then read
/// on, within the drain bounds, and dropped) or breaks off.
async fn read_bounded(body: axum::body::Body) -> Option<axum::body::Bytes> {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut kept = Vec::new();
    let mut seen = 0usize;
    let read = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.ok()?;
            seen = seen.saturating_add(chunk.len());
            if seen > WEBHOOK_DRAIN_BYTES_MAX {
                return None;
            }
            if seen <= WEBHOOK_BODY_BYTES_MAX {
                kept.extend_from_slice(&chunk);
            }
        }
        Some(())
    };
    tokio::time::timeout(
        std::time::Duration::from_millis(WEBHOOK_DRAIN_MILLIS_MAX),
        read,
    )
    .await
    .ok()??;
    (seen <= WEBHOOK_BODY_BYTES_MAX).then(|| kept.into())
}

#[derive(OpenApi)]
#[openapi(paths(stripe))]
pub struct Api;

pub fn routes() -> Router<AppState> {
    Router::new().route("/billing/webhooks/stripe", post(stripe))
}

#[utoipa::path(
    post,
    path = "/v1/billing/webhooks/stripe",
    tag = "billing",
    summary = "Stripe webhook: no bearer token; authenticated by `Stripe-Signature`. Each Stripe event id is applied once; invoice.paid, invoice.payment_failed, customer.subscription.updated/deleted, payment_intent.succeeded/payment_failed and charge.refunded are handled, any other type recorded and acknowledged",
    security(()),
    params(("Stripe-Signature" = String, Header, description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of {t}.{body}>` (several v1 allowed), within 300 s")),
    request_body(content = StripeEventBody, description = "A Stripe event, signed as sent (at most 256 KiB)"),
    responses(
        (status = 200, description = "`{received: true, duplicate, handled}`; a redelivery is `duplicate: true` and changes nothing", body = Object),
        (status = 400, description = "`invalid_request`: the signature is missing, malformed, stale or wrong (`details.reason` is `invalid_signature`), or the body is not a Stripe event", body = doc::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 256 KiB", body = doc::ErrorBody),
        (status = 500, description = "`internal`: an unexpected failure; Stripe retries", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: no `STRIPE_WEBHOOK_SECRET` is configured, or the store is unreachable; Stripe retries", body = doc::ErrorBody),
    ),
)]
pub async fn stripe(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let secret = app::stripe_events::webhook_secret(&state)?;
    let too_large = ApiError::PayloadTooLarge {
        limit_bytes: WEBHOOK_BODY_BYTES_MAX,
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > WEBHOOK_DRAIN_BYTES_MAX) {
        return Err(too_large);
    }
    let bytes = read_bounded(body).await.ok_or(too_large)?;
    // A header that is not text is as good as a malformed one.
    let signature = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or(""));
    render::ok(&app::stripe_events::receive(&state, &secret, signature, &bytes).await?)
}
