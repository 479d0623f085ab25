//! PayPal's webhook events (issue 16; docs/adr/0018-paypal.md), once the
//! transport has read the raw body and the `PAYPAL-*` transmission headers.
//! Nothing is trusted unverified: PayPal itself vouches for each delivery
//! (`verify-webhook-signature` with `PAYPAL_WEBHOOK_ID` and the body as
//! received), and only then is the event read and applied.
//!
//! Each PayPal event id is applied once: once handled it is recorded as
//! `PaypalEventReceived` in the stream `paypal-{id}`, and a redelivery
//! finds it and answers `{"received": true, "duplicate": true}` without
//! doing anything. As for Stripe, handling comes before recording and every
//! step applies at most once (the payment and the invoice by their state,
//! the credits by their key, PayPal's capture by its request id), so a
//! crash between the two, or two deliveries racing, still changes things
//! once.
//!
//! - `CHECKOUT.ORDER.APPROVED`: the payer approved our order; it is
//!   captured, and a capture PayPal completes at once settles the invoice.
//! - `PAYMENT.CAPTURE.COMPLETED`: the payment succeeded and the invoice is
//!   settled through [`crate::billing::settle`] (credits once).
//! - `PAYMENT.CAPTURE.DENIED`: the payment failed.
//! - `PAYMENT.CAPTURE.REFUNDED`: a refund is recorded on the payment
//!   (credits are never taken back on PayPal's word).
//!
//! Every amount is checked against the invoice, currency included: a
//! mismatch is refused and recorded with its reason, never settled. Any
//! other event type is recorded and acknowledged.

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use events::{Actor, PaymentMethod, PaymentStatus};
use ledger::payment::{
    paypal_event_stream, PaypalEventCommand, PaypalEventLog, RefundPayment,
    PAYPAL_EVENT_TEXT_BYTES_MAX, PAYPAL_REFUSAL_BYTES_MAX,
};
use ledger::{Invoice, Payment, PaymentCommand, PaymentError};
use serde_json::{json, Value};
use store::{CommandContext, Reservation, ServiceError};
use tracing::{info, warn};
use uuid::Uuid;

use crate::billing::derived_id;
use crate::billing::settle;
use crate::error::{status, AppError};
use crate::gateway::paypal::{is_paypal_id, parse_amount, parse_capture};
use crate::gateway::{
    CaptureOrderRequest, GatewayAmount, GatewayError, PaypalCheckout, WebhookVerificationRequest,
};
use crate::{now, App};

/// Reservation scope tying a PayPal order id to the payment of ours it
/// pays (taken when the payment is initiated).
pub const PAYPAL_ORDER_SCOPE: &str = "paypal_order";
/// Reservation scope tying a PayPal capture id to the payment it settled
/// (taken when the payment succeeds), so that a refund of the capture
/// finds the payment.
pub const PAYPAL_CAPTURE_SCOPE: &str = "paypal_capture";
/// The event types acted on; any other is recorded and acknowledged.
pub const HANDLED_TYPES: [&str; 4] = [
    "CHECKOUT.ORDER.APPROVED",
    "PAYMENT.CAPTURE.COMPLETED",
    "PAYMENT.CAPTURE.DENIED",
    "PAYMENT.CAPTURE.REFUNDED",
];
/// Longest `PAYPAL-*` transmission header read.
pub const TRANSMISSION_HEADER_BYTES_MAX: usize = 2_048;

/// A PayPal webhook event, as sent (the fields we read).
#[derive(Debug, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PaypalEventBody {
    /// `WH-…`
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 255, pattern = r"^[A-Za-z0-9_-]+$")
    )]
    pub id: String,
    /// `CHECKOUT.ORDER.APPROVED`, `PAYMENT.CAPTURE.COMPLETED`, …
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub event_type: String,
    /// RFC 3339.
    #[serde(default)]
    pub create_time: Option<String>,
    /// `checkout-order`, `capture`, `refund`, …
    #[serde(default)]
    pub resource_type: Option<String>,
    /// The order, capture or refund the event is about.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub resource: Value,
}

/// The `PAYPAL-*` headers of a delivery, each `None` when absent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Transmission<'a> {
    pub auth_algo: Option<&'a str>,
    pub cert_url: Option<&'a str>,
    pub transmission_id: Option<&'a str>,
    pub transmission_sig: Option<&'a str>,
    pub transmission_time: Option<&'a str>,
}

/// What receiving PayPal's webhooks needs: the gateway PayPal verifies
/// through, and the webhook's id at PayPal.
pub struct PaypalWebhook {
    checkout: Arc<dyn PaypalCheckout>,
    webhook_id: String,
}

/// The webhook's configuration; 503 while PayPal's credentials or
/// `PAYPAL_WEBHOOK_ID` are missing (checked before the transport reads the
/// body).
pub fn webhook(app: &App) -> Result<PaypalWebhook, AppError> {
    let unavailable = || AppError::Unavailable("paypal webhooks are not configured".into());
    let checkout = app.gateways.paypal_checkout().map_err(|_| unavailable())?;
    let webhook_id = app
        .settings
        .paypal_webhook_id
        .clone()
        .ok_or_else(unavailable)?;
    Ok(PaypalWebhook {
        checkout,
        webhook_id,
    })
}

fn unverified(field: &str, why: &str) -> AppError {
    AppError::InvalidRequest {
        status: status::BAD_REQUEST,
        message: format!("the webhook is not verified: {why}"),
        details: json!({ "field": field, "reason": "invalid_signature" }),
    }
}

/// The verification request of a delivery: every transmission header
/// present, not blank and bounded, else 400 naming it.
fn verification_request(
    hook: &PaypalWebhook,
    t: Transmission<'_>,
    body: &[u8],
) -> Result<WebhookVerificationRequest, AppError> {
    let header = |name: &str, value: Option<&str>| -> Result<String, AppError> {
        match value {
            None => Err(unverified(name, &format!("the {name} header is missing"))),
            Some(v) if v.trim().is_empty() || v.len() > TRANSMISSION_HEADER_BYTES_MAX => {
                Err(unverified(name, &format!("the {name} header is malformed")))
            }
            Some(v) => Ok(v.to_owned()),
        }
    };
    Ok(WebhookVerificationRequest {
        auth_algo: header("PAYPAL-AUTH-ALGO", t.auth_algo)?,
        cert_url: header("PAYPAL-CERT-URL", t.cert_url)?,
        transmission_id: header("PAYPAL-TRANSMISSION-ID", t.transmission_id)?,
        transmission_sig: header("PAYPAL-TRANSMISSION-SIG", t.transmission_sig)?,
        transmission_time: header("PAYPAL-TRANSMISSION-TIME", t.transmission_time)?,
        webhook_id: hook.webhook_id.clone(),
        event: body.to_vec(),
    })
}

/// A PayPal event id is PayPal's (`WH-` and letters, digits, `-`, `_`).
fn valid_event_id(id: &str) -> bool {
    id.len() <= PAYPAL_EVENT_TEXT_BYTES_MAX && is_paypal_id(id)
}

/// What applying an event came to.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    handled: bool,
    refused: Option<String>,
}

impl Outcome {
    fn applied() -> Self {
        Self {
            handled: true,
            refused: None,
        }
    }
    /// Nothing of ours, or nothing to do.
    fn ignored() -> Self {
        Self {
            handled: false,
            refused: None,
        }
    }
    /// About a payment of ours, but not applied, for `why`.
    fn refused(why: impl Into<String>) -> Self {
        Self {
            handled: false,
            refused: Some(why.into()),
        }
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn cut(s: String, max: usize) -> String {
    if s.len() > max {
        crate::gateway::truncate(&s, max).to_owned()
    } else {
        s
    }
}

/// A webhook delivery: the `PAYPAL-*` headers and the body as received.
/// Has PayPal verify it, parses it, applies the event once and records it;
/// answers `{received, duplicate, handled, refused, position}` (a
/// redelivery `{received, duplicate: true}`).
pub async fn receive(
    app: &App,
    hook: &PaypalWebhook,
    transmission: Transmission<'_>,
    body: &[u8],
) -> Result<Value, AppError> {
    let request = verification_request(hook, transmission, body)?;
    let event: PaypalEventBody = serde_json::from_slice(body)
        .map_err(|e| AppError::bad_request(format!("the body is not a PayPal event: {e}")))?;
    match hook.checkout.verify_webhook(&request).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(unverified(
                "PAYPAL-TRANSMISSION-SIG",
                "PayPal did not verify its signature",
            ))
        }
        // PayPal away: it retries the delivery.
        Err(e @ GatewayError::Unreachable(_)) => return Err(e.into()),
        Err(e) => {
            warn!(error = %e, "PayPal refused to verify a webhook delivery");
            return Err(unverified(
                "PAYPAL-TRANSMISSION-SIG",
                "PayPal refused to verify the delivery",
            ));
        }
    }
    if !valid_event_id(&event.id)
        || event.event_type.is_empty()
        || event.event_type.len() > PAYPAL_EVENT_TEXT_BYTES_MAX
    {
        return Err(AppError::bad_request(
            "the PayPal event has no valid id or type",
        ));
    }
    let stream = paypal_event_stream(&event.id);
    let seen = app.store.load::<PaypalEventLog>(&stream).await?.aggregate;
    if seen.received().is_some() {
        return Ok(json!({ "received": true, "duplicate": true }));
    }
    let actor = Actor::system("paypal-webhook");
    let now = now();
    let outcome = if HANDLED_TYPES.contains(&event.event_type.as_str()) {
        match handle(
            app,
            hook.checkout.as_ref(),
            &actor,
            &event.event_type,
            &event.resource,
            now,
        )
        .await
        {
            Ok(outcome) => outcome,
            // A state that refuses the change will refuse it on every
            // retry too: recorded with its reason and acknowledged. Only
            // failures worth a retry (5xx) make PayPal deliver again.
            Err(e) if !e.is_server_error() => Outcome::refused(e.to_string()),
            Err(e) => return Err(e),
        }
    } else {
        Outcome::ignored()
    };
    if let Some(why) = &outcome.refused {
        warn!(paypal_event = %event.id, event_type = %event.event_type, reason = %why, "a PayPal event was not applied");
    }
    let refused = outcome
        .refused
        .map(|r| cut(r, PAYPAL_REFUSAL_BYTES_MAX))
        .filter(|r| !r.is_empty());
    let recorded = app
        .execute::<PaypalEventLog>(
            &stream,
            PaypalEventCommand::Record {
                id: event.id.clone(),
                event_type: event.event_type.clone(),
                resource_id: event.resource["id"]
                    .as_str()
                    .filter(|id| is_paypal_id(id))
                    .map(str::to_owned),
                created_at: event
                    .create_time
                    .as_deref()
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map(|t| t.with_timezone(&Utc).trunc_subsecs(6)),
                handled: outcome.handled,
                refused: refused.clone(),
                now,
            },
            &CommandContext::new(actor),
            None,
            &[],
        )
        .await
        .map_err(|e| {
            crate::error::service_error(e, |e| {
                AppError::bad_request(format!("the PayPal event cannot be recorded: {e}"))
            })
        })?;
    let duplicate = recorded.events.is_empty();
    info!(
        paypal_event = %event.id,
        event_type = %event.event_type,
        handled = outcome.handled,
        duplicate,
        "paypal webhook"
    );
    Ok(json!({
        "received": true,
        "duplicate": duplicate,
        "handled": outcome.handled,
        "refused": refused,
        "position": recorded.position(),
    }))
}

/// Acts on one verified event.
async fn handle(
    app: &App,
    checkout: &dyn PaypalCheckout,
    actor: &Actor,
    event_type: &str,
    resource: &Value,
    now: DateTime<Utc>,
) -> Result<Outcome, AppError> {
    match event_type {
        "CHECKOUT.ORDER.APPROVED" => order_approved(app, checkout, actor, resource, now).await,
        "PAYMENT.CAPTURE.COMPLETED" => capture_completed(app, actor, resource, now).await,
        "PAYMENT.CAPTURE.DENIED" => capture_denied(app, actor, resource, now).await,
        "PAYMENT.CAPTURE.REFUNDED" => capture_refunded(app, actor, resource, now).await,
        _ => Ok(Outcome::ignored()),
    }
}

/// Our PayPal payment that reserved `value` in `scope`, if any.
async fn reserved_payment(
    app: &App,
    scope: &str,
    value: &str,
) -> Result<Option<(Uuid, Payment)>, AppError> {
    let Some(owner) = app.store.reservation_owner(scope, value).await? else {
        return Ok(None);
    };
    let Ok(id) = Uuid::parse_str(&owner) else {
        return Ok(None);
    };
    let payment = app.store.load::<Payment>(&owner).await?.aggregate;
    if payment.method() != Some(PaymentMethod::Paypal) {
        warn!(payment = %id, scope, value, "a PayPal reference names a payment that is not PayPal's");
        return Ok(None);
    }
    Ok(Some((id, payment)))
}

/// Our payment of the PayPal order `order_id`: the one that reserved it,
/// and whose recorded order it is.
async fn order_payment(app: &App, order_id: &str) -> Result<Option<(Uuid, Payment)>, AppError> {
    Ok(reserved_payment(app, PAYPAL_ORDER_SCOPE, order_id)
        .await?
        .filter(|(_, p)| p.gateway_ref() == Some(order_id)))
}

/// Our payment a capture resource is about: by its order
/// (`supplementary_data.related_ids.order_id`, or its `up` link), else by
/// the capture id.
async fn capture_payment(
    app: &App,
    capture: &Value,
    capture_id: &str,
) -> Result<Option<(Uuid, Payment)>, AppError> {
    let order = capture["supplementary_data"]["related_ids"]["order_id"]
        .as_str()
        .filter(|id| is_paypal_id(id))
        .or_else(|| up_link(capture, "/v2/checkout/orders/"));
    if let Some(order) = order {
        if let Some(found) = order_payment(app, order).await? {
            return Ok(Some(found));
        }
    }
    reserved_payment(app, PAYPAL_CAPTURE_SCOPE, capture_id).await
}

/// Why PayPal's `amount` (and the resource's `custom_id`) cannot pay the
/// payment's invoice, if they cannot: the value must be the invoice's
/// total exactly, in its currency.
async fn mismatch(
    app: &App,
    payment: &Payment,
    amount: Option<&GatewayAmount>,
    custom_id: Option<&str>,
) -> Result<Option<String>, AppError> {
    let Some(invoice_id) = payment.invoice_id() else {
        return Ok(Some("the payment has no invoice".into()));
    };
    let invoice = app
        .store
        .load::<Invoice>(&invoice_id.to_string())
        .await?
        .aggregate;
    let Some(issued) = invoice.issued() else {
        return Ok(Some(format!("invoice {invoice_id} was never issued")));
    };
    if let Some(custom) = custom_id {
        if custom != invoice_id.to_string() {
            return Ok(Some(format!(
                "the custom_id {:?} is not invoice {invoice_id}",
                cut(custom.to_owned(), 64)
            )));
        }
    }
    let Some(amount) = amount else {
        return Ok(Some(format!(
            "PayPal sent no readable amount for invoice {}",
            issued.number
        )));
    };
    if !amount
        .currency
        .eq_ignore_ascii_case(issued.currency.as_str())
        || amount.value != issued.total
    {
        return Ok(Some(format!(
            "PayPal's amount is {} {}; invoice {} is {} {}",
            amount.value,
            amount.currency,
            issued.number,
            issued.total,
            issued.currency.as_str()
        )));
    }
    Ok(None)
}

/// `CHECKOUT.ORDER.APPROVED`: the payer approved our order; once its
/// amount is the invoice's, it is captured (PayPal answers the same
/// capture to the same request id). A capture PayPal completes at once
/// settles the invoice now; a pending one waits for
/// `PAYMENT.CAPTURE.COMPLETED`.
async fn order_approved(
    app: &App,
    checkout: &dyn PaypalCheckout,
    actor: &Actor,
    order: &Value,
    now: DateTime<Utc>,
) -> Result<Outcome, AppError> {
    let Some(order_id) = order["id"].as_str().filter(|id| is_paypal_id(id)) else {
        return Ok(Outcome::ignored());
    };
    let Some((payment_id, payment)) = order_payment(app, order_id).await? else {
        return Ok(Outcome::ignored());
    };
    let unit = &order["purchase_units"][0];
    let amount = parse_amount(&unit["amount"]);
    if let Some(why) = mismatch(app, &payment, amount.as_ref(), unit["custom_id"].as_str()).await? {
        return Ok(Outcome::refused(format!(
            "order {order_id} not captured: {why}"
        )));
    }
    match payment.status() {
        // Captured and settled already (a redelivery under another id).
        Some(PaymentStatus::Succeeded | PaymentStatus::Refunded) => return Ok(Outcome::applied()),
        Some(PaymentStatus::Cancelled) => {
            return Ok(Outcome::refused(format!(
                "payment {payment_id} is cancelled; order {order_id} is not captured"
            )))
        }
        _ => {}
    }
    let captured = match checkout
        .capture_order(&CaptureOrderRequest {
            order_id: order_id.to_owned(),
            idempotency_key: format!("capture-{payment_id}"),
        })
        .await
    {
        Ok(captured) => captured,
        // A 4xx (already captured elsewhere, the payer's funding declined):
        // retrying the same capture would meet the same answer.
        Err(GatewayError::Refused(why)) => {
            return Ok(Outcome::refused(format!(
                "PayPal refused to capture order {order_id}: {why}"
            )))
        }
        Err(e) => return Err(e.into()),
    };
    match captured.capture {
        Some(capture) if capture.status == "COMPLETED" => {
            if let Some(why) = mismatch(app, &payment, capture.amount.as_ref(), None).await? {
                return Ok(Outcome::refused(format!(
                    "capture {} not settled: {why}",
                    capture.id
                )));
            }
            settle_capture(app, actor, payment_id, &payment, &capture.id, now).await
        }
        Some(capture) if matches!(capture.status.as_str(), "DECLINED" | "FAILED") => {
            fail(
                app,
                actor,
                payment_id,
                format!("PayPal {} the capture", capture.status.to_lowercase()),
                now,
            )
            .await
        }
        // Pending: PAYMENT.CAPTURE.COMPLETED or DENIED follows.
        _ => Ok(Outcome::applied()),
    }
}

/// The payment succeeded by `capture_id` (once; the capture reserved to it
/// for refunds), then its invoice is settled (credits once).
async fn settle_capture(
    app: &App,
    actor: &Actor,
    payment_id: Uuid,
    payment: &Payment,
    capture_id: &str,
    now: DateTime<Utc>,
) -> Result<Outcome, AppError> {
    let invoice_id = payment.invoice_id().ok_or(AppError::Internal)?;
    let succeeded = app
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::MarkSucceeded {
                gateway_ref: Some(capture_id.to_owned()),
                now,
            },
            &CommandContext::new(actor.clone()),
            None,
            &[Reservation {
                scope: PAYPAL_CAPTURE_SCOPE.into(),
                value: capture_id.to_owned(),
            }],
        )
        .await;
    match succeeded {
        Ok(_) => {}
        Err(ServiceError::Domain(e @ PaymentError::NotPending { .. })) => {
            return Ok(Outcome::refused(format!(
                "capture {capture_id} of payment {payment_id} not applied: {e}"
            )))
        }
        Err(ServiceError::Reserved { .. }) => {
            return Ok(Outcome::refused(format!(
                "capture {capture_id} already settled another payment"
            )))
        }
        Err(e) => return Err(e.into()),
    }
    match settle::invoice_paid(
        app,
        actor,
        invoice_id,
        Some(payment_id),
        PaymentMethod::Paypal,
    )
    .await
    {
        Ok(_) => Ok(Outcome::applied()),
        // Paid by another payment, void, uncollectible: PayPal would retry
        // a failure forever; staff find the reason on the event.
        Err(AppError::Conflict(why)) => Ok(Outcome::refused(format!(
            "invoice {invoice_id} not settled by capture {capture_id}: {why}"
        ))),
        Err(e) => Err(e),
    }
}

/// The payment failed for `reason` (once).
async fn fail(
    app: &App,
    actor: &Actor,
    payment_id: Uuid,
    reason: String,
    now: DateTime<Utc>,
) -> Result<Outcome, AppError> {
    let failed = app
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::MarkFailed { reason, now },
            &CommandContext::new(actor.clone()),
            None,
            &[],
        )
        .await;
    match failed {
        Ok(_) => Ok(Outcome::applied()),
        Err(ServiceError::Domain(
            e @ (PaymentError::AlreadySucceeded | PaymentError::NotPending { .. }),
        )) => Ok(Outcome::refused(format!(
            "payment {payment_id} cannot fail: {e}"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `PAYMENT.CAPTURE.COMPLETED`: the capture's amount must be the invoice's;
/// then the payment succeeded and the invoice is settled.
async fn capture_completed(
    app: &App,
    actor: &Actor,
    resource: &Value,
    now: DateTime<Utc>,
) -> Result<Outcome, AppError> {
    let Some(capture) = parse_capture(resource) else {
        return Ok(Outcome::ignored());
    };
    if capture.status != "COMPLETED" {
        return Ok(Outcome::ignored());
    }
    let Some((payment_id, payment)) = capture_payment(app, resource, &capture.id).await? else {
        return Ok(Outcome::ignored());
    };
    if let Some(why) = mismatch(
        app,
        &payment,
        capture.amount.as_ref(),
        resource["custom_id"].as_str(),
    )
    .await?
    {
        return Ok(Outcome::refused(format!(
            "capture {} not settled: {why}",
            capture.id
        )));
    }
    settle_capture(app, actor, payment_id, &payment, &capture.id, now).await
}

/// `PAYMENT.CAPTURE.DENIED`: the payment failed.
async fn capture_denied(
    app: &App,
    actor: &Actor,
    resource: &Value,
    now: DateTime<Utc>,
) -> Result<Outcome, AppError> {
    let Some(capture) = parse_capture(resource) else {
        return Ok(Outcome::ignored());
    };
    let Some((payment_id, _)) = capture_payment(app, resource, &capture.id).await? else {
        return Ok(Outcome::ignored());
    };
    let reason = match resource["status_details"]["reason"].as_str() {
        Some(r) => format!("PayPal denied the capture: {}", cut(r.to_owned(), 200)),
        None => "PayPal denied the capture".to_owned(),
    };
    fail(app, actor, payment_id, reason, now).await
}

/// The id a resource's `up` link names under `prefix`: a capture's order
/// (`…/v2/checkout/orders/{id}`), a refund's capture
/// (`…/v2/payments/captures/{id}`).
fn up_link<'a>(resource: &'a Value, prefix: &str) -> Option<&'a str> {
    resource["links"]
        .as_array()?
        .iter()
        .take(crate::gateway::paypal::LINKS_MAX)
        .filter(|l| l["rel"].as_str() == Some("up"))
        .filter_map(|l| l["href"].as_str())
        .find_map(|href| {
            let (_, id) = href.split_once(prefix)?;
            let id = id.split(['/', '?', '#']).next()?;
            is_paypal_id(id).then_some(id)
        })
}

/// `PAYMENT.CAPTURE.REFUNDED`: a refund of our capture is recorded on the
/// payment, once. A refund the staff asked for carries our refund id as
/// `custom_id`: while that refund is in progress it is left to the staff's
/// request to record (with the credits it took back), and one already
/// recorded is not recorded again. Any other refund (made at PayPal) is
/// recorded under an id derived from PayPal's.
async fn capture_refunded(
    app: &App,
    actor: &Actor,
    refund: &Value,
    now: DateTime<Utc>,
) -> Result<Outcome, AppError> {
    let Some(refund_ref) = refund["id"].as_str().filter(|id| is_paypal_id(id)) else {
        return Ok(Outcome::ignored());
    };
    let Some(capture_id) = up_link(refund, "/v2/payments/captures/") else {
        return Ok(Outcome::ignored());
    };
    let Some((payment_id, payment)) =
        reserved_payment(app, PAYPAL_CAPTURE_SCOPE, capture_id).await?
    else {
        return Ok(Outcome::ignored());
    };
    if matches!(refund["status"].as_str(), Some("FAILED" | "CANCELLED")) {
        return Ok(Outcome::ignored());
    }
    let Some(paid) = payment.amount().cloned() else {
        return Ok(Outcome::ignored());
    };
    let Some(amount) = parse_amount(&refund["amount"]) else {
        return Ok(Outcome::refused(format!(
            "refund {refund_ref} has no readable amount"
        )));
    };
    if !amount.currency.eq_ignore_ascii_case(paid.currency.as_str()) {
        return Ok(Outcome::refused(format!(
            "refund {refund_ref} is in {}; payment {payment_id} was in {}",
            amount.currency,
            paid.currency.as_str()
        )));
    }
    let ours = refund["custom_id"]
        .as_str()
        .and_then(|c| Uuid::parse_str(c).ok())
        .filter(|id| Some(*id) != payment.invoice_id());
    if let Some(id) = ours {
        if payment.pending_refund(id).is_some() || payment.has_refund(id) {
            return Ok(Outcome::applied());
        }
    }
    let refund_id = ours.unwrap_or_else(|| derived_id(&["paypal-refund", refund_ref]));
    let recorded = app
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::Refund(Box::new(RefundPayment {
                refund_id,
                amount: amount.value,
                revoke_credits: false,
                revoked_credits: 0,
                reason: Some("refunded at PayPal".into()),
                by: "paypal".into(),
                gateway_refund_ref: Some(refund_ref.to_owned()),
                now,
            })),
            &CommandContext::new(actor.clone()),
            None,
            &[],
        )
        .await;
    match recorded {
        Ok(_) => Ok(Outcome::applied()),
        Err(ServiceError::Domain(
            e @ (PaymentError::RefundExceedsPaid { .. }
            | PaymentError::NotRefundable { .. }
            | PaymentError::AmountPrecision { .. }
            | PaymentError::NonPositiveAmount
            | PaymentError::TooManyRefunds),
        )) => Ok(Outcome::refused(format!(
            "refund {refund_ref} not recorded on payment {payment_id}: {e}"
        ))),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paypal_event_ids_are_letters_digits_dashes_and_underscores() {
        assert!(valid_event_id("WH-2WR32451HC0233532-67976317FL4543714"));
        assert!(!valid_event_id(""));
        assert!(!valid_event_id("WH/../x"));
        assert!(!valid_event_id(&"W".repeat(300)));
    }

    #[test]
    fn a_refund_names_its_capture_and_a_capture_its_order_in_its_up_link() {
        let refund = json!({
            "id": "1JU08902781691411",
            "links": [
                { "rel": "self", "href": "https://api.paypal.com/v2/payments/refunds/1JU08902781691411" },
                { "rel": "up", "href": "https://api.paypal.com/v2/payments/captures/2GG279541U471931P" },
            ],
        });
        let captures = "/v2/payments/captures/";
        assert_eq!(up_link(&refund, captures), Some("2GG279541U471931P"));
        assert_eq!(up_link(&refund, "/v2/checkout/orders/"), None);
        let capture = json!({ "links": [
            { "rel": "up", "href": "https://api.paypal.com/v2/checkout/orders/5O190127TN364715T" },
        ]});
        assert_eq!(
            up_link(&capture, "/v2/checkout/orders/"),
            Some("5O190127TN364715T")
        );
        let odd =
            json!({ "links": [{ "rel": "up", "href": "https://x/v2/payments/captures/a b" }] });
        assert_eq!(up_link(&odd, captures), None);
        assert_eq!(up_link(&json!({}), captures), None);
    }

    #[test]
    fn missing_or_oversized_transmission_headers_are_refused_by_name() {
        struct Never;
        #[async_trait::async_trait]
        impl PaypalCheckout for Never {
            async fn capture_order(
                &self,
                _: &CaptureOrderRequest,
            ) -> Result<crate::gateway::CapturedOrder, GatewayError> {
                Err(GatewayError::Refused("never".into()))
            }
            async fn verify_webhook(
                &self,
                _: &WebhookVerificationRequest,
            ) -> Result<bool, GatewayError> {
                Ok(false)
            }
        }
        let hook = PaypalWebhook {
            checkout: Arc::new(Never),
            webhook_id: "WH-ID".into(),
        };
        let full = Transmission {
            auth_algo: Some("SHA256withRSA"),
            cert_url: Some("https://api.paypal.com/v1/notifications/certs/CERT"),
            transmission_id: Some("id"),
            transmission_sig: Some("sig"),
            transmission_time: Some("2026-03-03T12:00:00Z"),
        };
        let ok = verification_request(&hook, full, b"{}").unwrap();
        assert_eq!(ok.webhook_id, "WH-ID");
        assert_eq!(ok.event, b"{}");
        let long = "x".repeat(TRANSMISSION_HEADER_BYTES_MAX + 1);
        for (t, name) in [
            (
                Transmission {
                    transmission_sig: None,
                    ..full
                },
                "PAYPAL-TRANSMISSION-SIG",
            ),
            (
                Transmission {
                    auth_algo: Some(" "),
                    ..full
                },
                "PAYPAL-AUTH-ALGO",
            ),
            (
                Transmission {
                    cert_url: Some(&long),
                    ..full
                },
                "PAYPAL-CERT-URL",
            ),
        ] {
            let e = verification_request(&hook, t, b"{}").unwrap_err();
            assert_eq!(e.status(), 400);
            assert_eq!(e.body()["error"]["details"]["field"], name);
            assert_eq!(e.body()["error"]["details"]["reason"], "invalid_signature");
        }
    }

    #[test]
    fn refusals_are_cut_at_a_character_boundary() {
        assert_eq!(cut("é".repeat(3), 3), "é");
        assert_eq!(cut("abc".into(), 10), "abc");
    }
}
