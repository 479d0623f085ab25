//! Stripe's webhook events (SPEC §3, issue 6 item 4;
//! docs/adr/0011-payments-gateway.md), once the transport has read the raw
//! body: the `Stripe-Signature` check (HMAC-SHA256 of `{t}.{raw body}` with
//! `STRIPE_WEBHOOK_SECRET`, [`crate::gateway::stripe::verify_signature`]),
//! then the event applied.
//!
//! Each Stripe event id is applied once: once handled, it is recorded as
//! `StripeEventReceived` in the stream `stripe-{evt_id}`, and a redelivery
//! finds it and answers `{"received": true, "duplicate": true}` without
//! doing anything. Handling comes before recording, and every step of it
//! applies at most once (the invoice by its state, grants by their keys,
//! payments by their state), so a crash between the two, or two deliveries
//! racing, still changes things once.

use chrono::{DateTime, Utc};
use events::{Actor, PaymentMethod};
use ledger::payment::{stripe_event_stream, RefundPayment, StripeEventCommand, StripeEventLog};
use ledger::{Invoice, Payment, PaymentCommand, PaymentError};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use store::{CommandContext, Reservation, ServiceError};
use tracing::{info, warn};
use uuid::Uuid;

use crate::billing::derived_id;
use crate::billing::settle::{self, Settled};
use crate::error::{status, AppError};
use crate::gateway::stripe::{verify_signature, SignatureError};
use crate::gateway::{from_minor_units, minor_units};
use crate::settings::Secret;
use crate::subscriptions;
use crate::{now, App};

/// Most refunds of one `charge.refunded` looked at.
pub const REFUNDS_PER_CHARGE_MAX: usize = 100;
/// The event types acted on; any other is recorded and acknowledged.
pub const HANDLED_TYPES: [&str; 7] = [
    "invoice.paid",
    "invoice.payment_failed",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "charge.refunded",
];

/// A Stripe event, as sent (the fields we read).
#[derive(Debug, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StripeEventBody {
    /// `evt_…`
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 255, pattern = r"^[A-Za-z0-9_]+$")
    )]
    pub id: String,
    /// `invoice.paid`, `payment_intent.succeeded`, …
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 255))]
    pub event_type: String,
    /// Unix seconds.
    #[serde(default)]
    pub created: i64,
    /// `{"object": {...}}`: the Stripe object the event is about.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Value,
}

fn signature_error(e: SignatureError) -> AppError {
    AppError::InvalidRequest {
        status: status::BAD_REQUEST,
        message: format!("invalid webhook signature: {e}"),
        details: json!({ "field": "Stripe-Signature", "reason": "invalid_signature" }),
    }
}

/// A Stripe event id is Stripe's (`evt_` and letters, digits, `_`).
fn valid_event_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= ledger::payment::STRIPE_EVENT_TEXT_BYTES_MAX
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The webhook's signing secret; 503 while none is configured (checked
/// before the transport reads the body).
pub fn webhook_secret(app: &App) -> Result<Secret, AppError> {
    app.settings
        .stripe_webhook_secret
        .clone()
        .ok_or_else(|| AppError::Unavailable("stripe webhooks are not configured".into()))
}

/// A webhook delivery: `signature` is the `Stripe-Signature` header (if
/// any), `body` the exact bytes it signs. Verifies, parses, applies the
/// event once and records it; answers `{received, duplicate, handled,
/// position}` (a redelivery `{received, duplicate: true}`).
pub async fn receive(
    app: &App,
    secret: &Secret,
    signature: Option<&str>,
    body: &[u8],
) -> Result<Value, AppError> {
    verify_signature(signature, body, secret.expose(), Utc::now().timestamp())
        .map_err(signature_error)?;
    let event: StripeEventBody = serde_json::from_slice(body)
        .map_err(|e| AppError::bad_request(format!("the body is not a Stripe event: {e}")))?;
    if !valid_event_id(&event.id)
        || event.event_type.is_empty()
        || event.event_type.len() > ledger::payment::STRIPE_EVENT_TEXT_BYTES_MAX
    {
        return Err(AppError::bad_request(
            "the Stripe event has no valid id or type",
        ));
    }
    let stream = stripe_event_stream(&event.id);
    let seen = app.store.load::<StripeEventLog>(&stream).await?.aggregate;
    if seen.received().is_some() {
        return Ok(json!({ "received": true, "duplicate": true }));
    }
    let actor = Actor::system("stripe-webhook");
    let now = now();
    let object = &event.data["object"];
    let handled = if HANDLED_TYPES.contains(&event.event_type.as_str()) {
        match handle(app, &actor, &event.event_type, object, now).await {
            Ok(handled) => handled,
            // A state that refuses the change (a canceled subscription, a
            // void invoice) will refuse it on every retry too: acknowledged
            // and logged for staff. Only failures worth a retry (5xx) make
            // Stripe deliver again.
            Err(e) if !e.is_server_error() => {
                warn!(stripe_event = %event.id, event_type = %event.event_type, error = %e, "a Stripe event could not be applied");
                false
            }
            Err(e) => return Err(e),
        }
    } else {
        false
    };
    let recorded = app
        .execute::<StripeEventLog>(
            &stream,
            StripeEventCommand::Record {
                id: event.id.clone(),
                event_type: event.event_type.clone(),
                created: event.created,
                handled,
                now,
            },
            &CommandContext::new(actor),
            None,
            &[],
        )
        .await
        .map_err(|e| {
            crate::error::service_error(e, |e| {
                AppError::bad_request(format!("the Stripe event cannot be recorded: {e}"))
            })
        })?;
    let duplicate = recorded.events.is_empty();
    info!(
        stripe_event = %event.id,
        event_type = %event.event_type,
        handled,
        duplicate,
        "stripe webhook"
    );
    Ok(json!({
        "received": true,
        "duplicate": duplicate,
        "handled": handled,
        "position": recorded.position(),
    }))
}

/// Acts on one event; whether it found something of ours to act on.
pub async fn handle(
    app: &App,
    actor: &Actor,
    event_type: &str,
    object: &Value,
    now: DateTime<Utc>,
) -> Result<bool, AppError> {
    match event_type {
        "invoice.paid" => stripe_invoice_paid(app, actor, object).await,
        "invoice.payment_failed" => {
            let Some(invoice_id) = our_invoice(app, object).await? else {
                return Ok(false);
            };
            let reason = object["last_finalization_error"]["message"]
                .as_str()
                .unwrap_or("the payment of the Stripe invoice failed");
            subscriptions::on_invoice_payment_failed(app, actor, invoice_id, reason, now).await?;
            Ok(true)
        }
        "customer.subscription.updated" | "customer.subscription.deleted" => {
            let Some(stripe_id) = object["id"].as_str() else {
                return Ok(false);
            };
            let Some(id) = subscriptions::by_stripe_id(app, stripe_id).await? else {
                return Ok(false);
            };
            if event_type == "customer.subscription.deleted" {
                subscriptions::on_stripe_subscription_deleted(app, actor, id, now).await?;
            } else {
                subscriptions::on_stripe_subscription_updated(
                    app,
                    actor,
                    id,
                    object["status"].as_str().unwrap_or(""),
                    object["cancel_at_period_end"].as_bool().unwrap_or(false),
                    now,
                )
                .await?;
            }
            Ok(true)
        }
        "payment_intent.succeeded" => payment_succeeded(app, actor, object, now).await,
        "payment_intent.payment_failed" => payment_failed(app, actor, object, now).await,
        "charge.refunded" => charge_refunded(app, actor, object, now).await,
        _ => Ok(false),
    }
}

/// Reservation scope tying a Stripe invoice (`in_…`) to the invoice of
/// ours it paid, taken with the payment: a redelivery finds our invoice by
/// it even once that invoice is no longer open.
pub const STRIPE_INVOICE_SCOPE: &str = "stripe_invoice";

/// `invoice.paid`: our invoice is paid when Stripe's paid exactly its total
/// in its currency; a redelivery (after a settle that stopped half way)
/// finishes the same settle.
async fn stripe_invoice_paid(app: &App, actor: &Actor, object: &Value) -> Result<bool, AppError> {
    let stripe_invoice = object["id"]
        .as_str()
        .filter(|id| !id.is_empty() && id.len() <= ledger::payment::STRIPE_EVENT_TEXT_BYTES_MAX);
    let known = match stripe_invoice {
        Some(id) => app
            .store
            .reservation_owner(STRIPE_INVOICE_SCOPE, id)
            .await?
            .and_then(|owner| Uuid::parse_str(&owner).ok()),
        None => None,
    };
    let invoice_id = match known {
        Some(id) => id,
        None => match our_invoice(app, object).await? {
            Some(id) => id,
            None => return Ok(false),
        },
    };
    let invoice = app
        .store
        .load::<Invoice>(&invoice_id.to_string())
        .await?
        .aggregate;
    let Some(issued) = invoice.issued() else {
        return Ok(false);
    };
    // What Stripe collected must be what we asked: a $0 (or a euro) Stripe
    // invoice pays nothing of ours.
    let expected = crate::gateway::minor_units(issued.total, &issued.currency)?;
    let paid = object["amount_paid"].as_i64();
    let currency = object["currency"].as_str();
    let currency_ok = currency.is_none_or(|c| c.eq_ignore_ascii_case(issued.currency.as_str()));
    if paid != Some(expected) || !currency_ok {
        warn!(
            invoice = %invoice_id,
            expected,
            paid = ?paid,
            currency = ?currency,
            "a Stripe invoice paid another amount or currency than ours; not applied"
        );
        return Ok(false);
    }
    let reservations: Vec<Reservation> = stripe_invoice
        .map(|id| Reservation {
            scope: STRIPE_INVOICE_SCOPE.into(),
            value: id.to_owned(),
        })
        .into_iter()
        .collect();
    settled(
        settle::invoice_paid_reserving(
            app,
            actor,
            invoice_id,
            None,
            PaymentMethod::Stripe,
            &reservations,
        )
        .await,
    )
}

/// A settle that meets an invoice paid by another payment, void or
/// uncollectible is acknowledged (Stripe would retry a failure forever);
/// the conflict is logged for staff.
fn settled(result: Result<Settled, AppError>) -> Result<bool, AppError> {
    match result {
        Ok(_) => Ok(true),
        Err(AppError::Conflict(why)) => {
            warn!(reason = %why, "a Stripe payment could not settle its invoice");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn metadata_uuid(object: &Value, field: &str) -> Option<Uuid> {
    object["metadata"][field]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// The Stripe subscription id of a Stripe invoice (`subscription`, or
/// `parent.subscription_details.subscription` in newer API versions).
fn invoice_subscription(object: &Value) -> Option<&str> {
    object["subscription"]
        .as_str()
        .or(object["parent"]["subscription_details"]["subscription"].as_str())
}

/// Our invoice a Stripe invoice pays: named in its metadata, else an open
/// invoice of our subscription that Stripe's belongs to: a proration
/// invoice for Stripe's invoice of a plan change (`billing_reason`
/// `subscription_update`), else the oldest other one.
async fn our_invoice(app: &App, object: &Value) -> Result<Option<Uuid>, AppError> {
    if let Some(id) = metadata_uuid(object, "invoice_id") {
        let exists = app
            .store
            .load::<Invoice>(&id.to_string())
            .await?
            .aggregate
            .issued()
            .is_some();
        if exists {
            return Ok(Some(id));
        }
    }
    let Some(stripe_sub) = invoice_subscription(object) else {
        return Ok(None);
    };
    app.fresh_read_models().await?;
    let Some(sub) = subscriptions::by_stripe_id(app, stripe_sub).await? else {
        return Ok(None);
    };
    let proration = object["billing_reason"].as_str() == Some("subscription_update");
    subscriptions::open_invoice(app, sub, proration).await
}

/// Our payment behind the PaymentIntent `object` (its `id`), if any.
async fn our_intent_payment(
    app: &App,
    object: &Value,
) -> Result<Option<(Uuid, Payment)>, AppError> {
    match object["id"].as_str() {
        Some(intent_id) => our_payment(app, intent_id, object).await,
        None => Ok(None),
    }
}

/// Our payment a PaymentIntent is: by its metadata `payment_id`, else by
/// its id recorded as the payment's gateway reference. Only a payment whose
/// recorded PaymentIntent is this one counts.
async fn our_payment(
    app: &App,
    intent_id: &str,
    object: &Value,
) -> Result<Option<(Uuid, Payment)>, AppError> {
    let mut id = metadata_uuid(object, "payment_id");
    if id.is_none() {
        app.fresh_read_models().await?;
        id = app
            .read_models
            .payment_by_gateway_ref(intent_id)
            .await?
            .and_then(|p| Uuid::parse_str(&p.id).ok());
    }
    let Some(id) = id else {
        return Ok(None);
    };
    let payment = app.store.load::<Payment>(&id.to_string()).await?.aggregate;
    if payment.gateway_ref() != Some(intent_id) {
        warn!(payment = %id, intent = intent_id, "a PaymentIntent names a payment that is not its own");
        return Ok(None);
    }
    Ok(Some((id, payment)))
}

async fn payment_command(
    app: &App,
    actor: &Actor,
    id: Uuid,
    command: PaymentCommand,
) -> Result<Option<i64>, ServiceError<PaymentError>> {
    let done = app
        .execute::<Payment>(
            &id.to_string(),
            command,
            &CommandContext::new(actor.clone()),
            None,
            &[],
        )
        .await?;
    Ok(done.position())
}

/// `payment_intent.succeeded`: the payment succeeded (once), then the
/// invoice is paid and what it buys granted (once).
async fn payment_succeeded(
    app: &App,
    actor: &Actor,
    object: &Value,
    now: DateTime<Utc>,
) -> Result<bool, AppError> {
    let Some((id, payment)) = our_intent_payment(app, object).await? else {
        return Ok(false);
    };
    let (Some(amount), Some(invoice_id)) = (payment.amount().cloned(), payment.invoice_id()) else {
        return Ok(false);
    };
    // What Stripe received must be what the invoice asks, in its currency.
    let expected = minor_units(amount.amount, &amount.currency)?;
    let received = object["amount_received"]
        .as_i64()
        .or(object["amount"].as_i64());
    let currency = object["currency"].as_str().unwrap_or("");
    if received != Some(expected) || !currency.eq_ignore_ascii_case(amount.currency.as_str()) {
        warn!(payment = %id, ?received, expected, currency, "a PaymentIntent's amount does not match its payment; not settled");
        return Ok(false);
    }
    match payment_command(
        app,
        actor,
        id,
        PaymentCommand::MarkSucceeded {
            gateway_ref: object["latest_charge"].as_str().map(str::to_owned),
            now,
        },
    )
    .await
    {
        Ok(_) => {}
        Err(ServiceError::Domain(e @ PaymentError::NotPending { .. })) => {
            warn!(payment = %id, error = %e, "a succeeded PaymentIntent of a cancelled payment");
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    }
    settled(settle::invoice_paid(app, actor, invoice_id, Some(id), PaymentMethod::Stripe).await)
}

/// `payment_intent.payment_failed`: the payment failed with Stripe's
/// reason; a subscription's invoice makes its subscription past_due.
async fn payment_failed(
    app: &App,
    actor: &Actor,
    object: &Value,
    now: DateTime<Utc>,
) -> Result<bool, AppError> {
    let Some((id, payment)) = our_intent_payment(app, object).await? else {
        return Ok(false);
    };
    let error = &object["last_payment_error"];
    let reason = match (error["code"].as_str(), error["message"].as_str()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_owned(),
        (None, Some(m)) => m.to_owned(),
        (None, None) => "the payment failed at Stripe".to_owned(),
    };
    match payment_command(
        app,
        actor,
        id,
        PaymentCommand::MarkFailed {
            reason: reason.clone(),
            now,
        },
    )
    .await
    {
        Ok(_) => {}
        Err(ServiceError::Domain(
            e @ (PaymentError::AlreadySucceeded | PaymentError::NotPending { .. }),
        )) => {
            warn!(payment = %id, error = %e, "a failed PaymentIntent of a settled payment");
            return Ok(false);
        }
        Err(e) => return Err(e.into()),
    }
    if let Some(invoice_id) = payment.invoice_id() {
        subscriptions::on_invoice_payment_failed(app, actor, invoice_id, &reason, now).await?;
    }
    Ok(true)
}

/// `charge.refunded`: refunds made at Stripe are recorded on the payment
/// (credits are never revoked here: only an admin's refund does that). Each
/// Stripe refund is recorded once, by its `re_…` id when the charge lists
/// them, else the cumulative `amount_refunded` beyond what we recorded.
async fn charge_refunded(
    app: &App,
    actor: &Actor,
    object: &Value,
    now: DateTime<Utc>,
) -> Result<bool, AppError> {
    let Some(intent_id) = object["payment_intent"].as_str() else {
        return Ok(false);
    };
    let Some((id, payment)) = our_payment(app, intent_id, object).await? else {
        return Ok(false);
    };
    let Some(currency) = payment.amount().map(|m| m.currency.clone()) else {
        return Ok(false);
    };
    let refund = |refund_id: Uuid, amount: Decimal, gateway_ref: Option<String>| {
        PaymentCommand::Refund(Box::new(RefundPayment {
            refund_id,
            amount,
            revoke_credits: false,
            revoked_credits: 0,
            reason: Some("refunded at Stripe".into()),
            by: "stripe".into(),
            gateway_refund_ref: gateway_ref,
            now,
        }))
    };
    let mut commands = Vec::new();
    match object["refunds"]["data"].as_array() {
        Some(refunds) => {
            for r in refunds.iter().take(REFUNDS_PER_CHARGE_MAX) {
                let (Some(re), Some(minor)) = (r["id"].as_str(), r["amount"].as_i64()) else {
                    continue;
                };
                commands.push(refund(
                    derived_id(&["stripe-refund", re]),
                    from_minor_units(minor, &currency),
                    Some(re.to_owned()),
                ));
            }
        }
        None => {
            let Some(total) = object["amount_refunded"].as_i64() else {
                return Ok(false);
            };
            let beyond = from_minor_units(total, &currency) - payment.refunded();
            if beyond > Decimal::ZERO {
                commands.push(refund(
                    derived_id(&["stripe-refund", intent_id, &total.to_string()]),
                    beyond,
                    None,
                ));
            }
        }
    }
    let mut handled = false;
    for command in commands {
        match payment_command(app, actor, id, command).await {
            Ok(_) => handled = true,
            Err(ServiceError::Domain(
                e @ (PaymentError::RefundExceedsPaid { .. } | PaymentError::NotRefundable { .. }),
            )) => {
                // Already recorded by the admin refund that caused it, or
                // a payment we never saw succeed: nothing more to record.
                warn!(payment = %id, error = %e, "a Stripe refund not recorded");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(handled)
}

// ---------------------------------------------------------------------------
// Sync: what a missed webhook would have applied
// ---------------------------------------------------------------------------

/// `POST /admin/billing/stripe/sync`: one of the two.
#[derive(Debug, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SyncRequest {
    /// A Stripe subscription of ours (`sub_…`).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 255, pattern = r"^[A-Za-z0-9_]+$")
    )]
    pub subscription_id: Option<String>,
    /// A PaymentIntent of one of our payments (`pi_…`).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 255, pattern = r"^[A-Za-z0-9_]+$")
    )]
    pub payment_intent_id: Option<String>,
}

/// What a sync found at Stripe and applied.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Synced {
    /// `subscription` or `payment_intent`.
    pub object: String,
    /// Stripe's id.
    pub id: String,
    /// Stripe's status of the object.
    pub status: String,
    /// The webhook types whose effect was missing and is now applied
    /// (empty: nothing was missing).
    pub applied: Vec<String>,
    /// The event-log head after the sync.
    pub position: i64,
}

fn stripe_id_field<'a>(field: &str, raw: &'a str) -> Result<&'a str, AppError> {
    if valid_event_id(raw) {
        Ok(raw)
    } else {
        Err(AppError::invalid_field(
            field,
            format!("{field} is a Stripe id: 1 to 255 letters, digits and _"),
        ))
    }
}

/// Pulls a subscription or a PaymentIntent from Stripe and applies what
/// its webhooks would have, through the same handlers ([`handle`]), only
/// where our state lacks it: a second sync applies nothing. Staff only.
pub async fn sync(
    app: &App,
    caller: &crate::caller::Caller,
    input: crate::input::Input<SyncRequest>,
) -> Result<Synced, AppError> {
    caller.require(crate::access::SYNC_STRIPE)?;
    let req = input.parse()?.value;
    let gateway = app.gateways.for_method(PaymentMethod::Stripe)?;
    let actor = Actor::system("stripe-sync");
    let now = now();
    let (object, id, status, applied) = match (&req.subscription_id, &req.payment_intent_id) {
        (Some(sub), None) => {
            let sub = stripe_id_field("subscription_id", sub)?;
            let at_stripe = gateway.get_subscription(sub).await?;
            let applied = sync_subscription(app, &actor, sub, &at_stripe.raw, now).await?;
            ("subscription", sub, at_stripe.status, applied)
        }
        (None, Some(pi)) => {
            let pi = stripe_id_field("payment_intent_id", pi)?;
            let raw = gateway.get_payment_intent(pi).await?;
            let applied = sync_payment_intent(app, &actor, pi, &raw, now).await?;
            let status = raw["status"].as_str().unwrap_or("").to_owned();
            ("payment_intent", pi, status, applied)
        }
        _ => {
            return Err(AppError::invalid_field(
                "subscription_id",
                "give exactly one of subscription_id and payment_intent_id",
            ))
        }
    };
    info!(object, id, ?applied, "stripe sync");
    Ok(Synced {
        object: object.into(),
        id: id.to_owned(),
        status,
        applied: applied.into_iter().map(str::to_owned).collect(),
        position: app.store.head_position().await?,
    })
}

/// A subscription: its latest invoice paid (`invoice.paid`) unless ours is
/// paid already, then its status and cancel flag
/// (`customer.subscription.updated`), which apply only a change.
async fn sync_subscription(
    app: &App,
    actor: &Actor,
    stripe_id: &str,
    object: &Value,
    now: DateTime<Utc>,
) -> Result<Vec<&'static str>, AppError> {
    app.fresh_read_models().await?;
    let Some(ours) = subscriptions::by_stripe_id(app, stripe_id).await? else {
        return Err(AppError::NotFound(format!(
            "no subscription of ours is Stripe's {stripe_id}"
        )));
    };
    let mut applied = Vec::new();
    let invoice = &object["latest_invoice"];
    if invoice["status"].as_str() == Some("paid") && !stripe_invoice_settled(app, invoice).await? {
        if handle(app, actor, "invoice.paid", invoice, now).await? {
            applied.push("invoice.paid");
        } else {
            warn!(subscription = %ours, stripe_id, "Stripe's paid invoice pays nothing of ours");
        }
    }
    let changed = subscriptions::on_stripe_subscription_updated(
        app,
        actor,
        ours,
        object["status"].as_str().unwrap_or(""),
        object["cancel_at_period_end"].as_bool().unwrap_or(false),
        now,
    )
    .await?;
    if changed.is_some() {
        applied.push("customer.subscription.updated");
    }
    Ok(applied)
}

/// Whether the Stripe invoice `object` already paid an invoice of ours
/// (the reservation a settle takes, and that invoice paid).
async fn stripe_invoice_settled(app: &App, object: &Value) -> Result<bool, AppError> {
    let Some(stripe_invoice) = object["id"].as_str().filter(|id| valid_event_id(id)) else {
        return Ok(false);
    };
    let Some(owner) = app
        .store
        .reservation_owner(STRIPE_INVOICE_SCOPE, stripe_invoice)
        .await?
        .and_then(|owner| Uuid::parse_str(&owner).ok())
    else {
        return Ok(false);
    };
    let invoice = app
        .store
        .load::<Invoice>(&owner.to_string())
        .await?
        .aggregate;
    Ok(invoice.status() == Some(events::InvoiceStatus::Paid))
}

/// A PaymentIntent: succeeded (`payment_intent.succeeded`) unless our
/// payment succeeded and its invoice is paid, or failed
/// (`payment_intent.payment_failed`) unless our payment failed already.
async fn sync_payment_intent(
    app: &App,
    actor: &Actor,
    intent_id: &str,
    object: &Value,
    now: DateTime<Utc>,
) -> Result<Vec<&'static str>, AppError> {
    let Some((_, payment)) = our_payment(app, intent_id, object).await? else {
        return Err(AppError::NotFound(format!(
            "no payment of ours is Stripe's {intent_id}"
        )));
    };
    let invoice_paid = match payment.invoice_id() {
        Some(invoice) => {
            app.store
                .load::<Invoice>(&invoice.to_string())
                .await?
                .aggregate
                .status()
                == Some(events::InvoiceStatus::Paid)
        }
        None => false,
    };
    let status = payment.status();
    let event_type = match object["status"].as_str() {
        Some("succeeded")
            if !(invoice_paid
                && matches!(
                    status,
                    Some(events::PaymentStatus::Succeeded | events::PaymentStatus::Refunded)
                )) =>
        {
            "payment_intent.succeeded"
        }
        Some("requires_payment_method" | "canceled")
            if !object["last_payment_error"].is_null()
                && status == Some(events::PaymentStatus::Processing) =>
        {
            "payment_intent.payment_failed"
        }
        _ => return Ok(Vec::new()),
    };
    Ok(if handle(app, actor, event_type, object, now).await? {
        vec![event_type]
    } else {
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_event_ids_are_letters_digits_and_underscores() {
        assert!(valid_event_id("evt_1NAbc"));
        assert!(!valid_event_id(""));
        assert!(!valid_event_id("evt/../x"));
        assert!(!valid_event_id(&"e".repeat(300)));
    }

    #[test]
    fn a_stripe_invoice_names_its_subscription_in_either_api_version() {
        assert_eq!(
            invoice_subscription(&json!({ "subscription": "sub_1" })),
            Some("sub_1")
        );
        assert_eq!(
            invoice_subscription(
                &json!({ "parent": { "subscription_details": { "subscription": "sub_2" } } })
            ),
            Some("sub_2")
        );
        assert_eq!(invoice_subscription(&json!({})), None);
    }
}
