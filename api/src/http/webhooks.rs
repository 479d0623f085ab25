//! Stripe webhooks `POST /v1/billing/webhooks/stripe` (SPEC §3;
//! docs/adr/0011-payments-gateway.md) and PayPal webhooks
//! `POST /v1/billing/webhooks/paypal` (docs/adr/0018-paypal.md): no bearer
//! token; a Stripe request is authenticated by its `Stripe-Signature`, a
//! PayPal one by PayPal verifying its `PAYPAL-*` transmission headers. The
//! transport's part is the raw body, read whole (at most
//! [`WEBHOOK_BODY_BYTES_MAX`]) before it is parsed, since the signatures
//! cover the exact bytes, and the headers; checking them and applying the
//! event once is `app::stripe_events` and `app::paypal_events`.

use app::paypal_events::{PaypalEventBody, Transmission};
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

/// The path of the Stripe webhook: with PayPal's, the `/v1` routes without
/// a bearer token (the OpenAPI `Common` modifier leaves them unsecured).
pub const STRIPE_WEBHOOK_PATH: &str = "/v1/billing/webhooks/stripe";
/// The path of the PayPal webhook.
pub const PAYPAL_WEBHOOK_PATH: &str = "/v1/billing/webhooks/paypal";
/// The webhook routes, which authenticate by signature, not a token.
pub const WEBHOOK_PATHS: [&str; 2] = [STRIPE_WEBHOOK_PATH, PAYPAL_WEBHOOK_PATH];
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

/// A webhook's whole body, or 413 when it is over
/// [`WEBHOOK_BODY_BYTES_MAX`] (declared or sent).
async fn webhook_body(
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Result<axum::body::Bytes, ApiError> {
    let too_large = || ApiError::PayloadTooLarge {
        limit_bytes: WEBHOOK_BODY_BYTES_MAX,
    };
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > WEBHOOK_DRAIN_BYTES_MAX) {
        return Err(too_large());
    }
    read_bounded(body).await.ok_or_else(too_large)
}

#[derive(OpenApi)]
#[openapi(paths(stripe, paypal))]
pub struct Api;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/billing/webhooks/stripe", post(stripe))
        .route("/billing/webhooks/paypal", post(paypal))
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
    let bytes = webhook_body(&headers, body).await?;
    // A header that is not text is as good as a malformed one.
    let signature = headers
        .get("stripe-signature")
        .map(|v| v.to_str().unwrap_or(""));
    render::ok(&app::stripe_events::receive(&state, &secret, signature, &bytes).await?)
}

#[utoipa::path(
    post,
    path = "/v1/billing/webhooks/paypal",
    tag = "billing",
    summary = "PayPal webhook: no bearer token; authenticated by PayPal verifying the delivery (verify-webhook-signature with PAYPAL_WEBHOOK_ID). Each PayPal event id is applied once; CHECKOUT.ORDER.APPROVED (the order is captured), PAYMENT.CAPTURE.COMPLETED (the invoice is settled, credits once), PAYMENT.CAPTURE.DENIED and PAYMENT.CAPTURE.REFUNDED are handled, amounts and currency checked against the invoice; any other type recorded and acknowledged",
    security(()),
    params(
        ("PAYPAL-AUTH-ALGO" = String, Header, description = "As PayPal sends it, e.g. `SHA256withRSA`"),
        ("PAYPAL-CERT-URL" = String, Header, description = "As PayPal sends it"),
        ("PAYPAL-TRANSMISSION-ID" = String, Header, description = "As PayPal sends it"),
        ("PAYPAL-TRANSMISSION-SIG" = String, Header, description = "As PayPal sends it"),
        ("PAYPAL-TRANSMISSION-TIME" = String, Header, description = "As PayPal sends it"),
    ),
    request_body(content = PaypalEventBody, description = "A PayPal webhook event, as sent (at most 256 KiB)"),
    responses(
        (status = 200, description = "`{received: true, duplicate, handled, refused}`; a redelivery is `duplicate: true` and changes nothing; `refused` says why an event about one of our payments was not applied (an amount or currency that is not the invoice's)", body = Object),
        (status = 400, description = "`invalid_request`: a PAYPAL-* header is missing or malformed, or PayPal did not verify the delivery (`details.reason` is `invalid_signature`), or the body is not a PayPal event", body = doc::ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 256 KiB", body = doc::ErrorBody),
        (status = 500, description = "`internal`: an unexpected failure; PayPal retries", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: PayPal's credentials or PAYPAL_WEBHOOK_ID are not configured, or PayPal or the store is unreachable; PayPal retries", body = doc::ErrorBody),
    ),
)]
pub async fn paypal(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let hook = app::paypal_events::webhook(&state)?;
    let bytes = webhook_body(&headers, body).await?;
    // A header that is not text is as good as a malformed one.
    let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or(""));
    let transmission = Transmission {
        auth_algo: header("paypal-auth-algo"),
        cert_url: header("paypal-cert-url"),
        transmission_id: header("paypal-transmission-id"),
        transmission_sig: header("paypal-transmission-sig"),
        transmission_time: header("paypal-transmission-time"),
    };
    render::ok(&app::paypal_events::receive(&state, &hook, transmission, &bytes).await?)
}
