//! Subscriptions (SPEC §2, issue 6 item 6): create, upgrade, downgrade,
//! cancel, renewal and period processing. Placeholder until the module
//! lands; `settle` and the Stripe webhooks already call the hooks below,
//! whose signatures are the contract between them.
#![allow(dead_code)] // until the webhooks call every hook

use axum::Router;
use chrono::{DateTime, Utc};
use events::{Actor, InvoiceIssued};
use utoipa::OpenApi;
use uuid::Uuid;

use crate::error::ApiError;
use crate::AppState;

#[derive(OpenApi)]
#[openapi(paths())]
pub struct Api;

pub fn routes() -> Router<AppState> {
    Router::new()
}

/// A subscription invoice was paid: activate or renew the subscription and
/// grant the period's included credits, at most once. Returns the highest
/// position written.
pub async fn on_invoice_paid(
    _state: &AppState,
    _actor: &Actor,
    _invoice: &InvoiceIssued,
) -> Result<Option<i64>, ApiError> {
    Ok(None)
}

/// A subscription invoice's payment failed (Stripe `invoice.payment_failed`,
/// `payment_intent.payment_failed`): the subscription becomes past_due.
/// Doing it twice changes nothing. Returns the highest position written.
pub async fn on_invoice_payment_failed(
    _state: &AppState,
    _actor: &Actor,
    _invoice_id: Uuid,
    _reason: &str,
    _now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    Ok(None)
}

/// The subscription of ours that Stripe knows as `stripe_subscription_id`.
pub async fn by_stripe_id(
    _state: &AppState,
    _stripe_subscription_id: &str,
) -> Result<Option<Uuid>, ApiError> {
    Ok(None)
}

/// The oldest pending invoice of a subscription (what a Stripe
/// `invoice.paid` for it pays).
pub async fn open_invoice(
    _state: &AppState,
    _subscription_id: Uuid,
) -> Result<Option<Uuid>, ApiError> {
    Ok(None)
}

/// Stripe `customer.subscription.updated`: `status` is Stripe's
/// (`active|past_due|canceled|unpaid|incomplete|…`), `cancel_at_period_end`
/// as Stripe reports it. Applied at most once per change.
pub async fn on_stripe_subscription_updated(
    _state: &AppState,
    _actor: &Actor,
    _subscription_id: Uuid,
    _status: &str,
    _cancel_at_period_end: bool,
    _now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    Ok(None)
}

/// Stripe `customer.subscription.deleted`: the subscription is canceled now.
pub async fn on_stripe_subscription_deleted(
    _state: &AppState,
    _actor: &Actor,
    _subscription_id: Uuid,
    _now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    Ok(None)
}
