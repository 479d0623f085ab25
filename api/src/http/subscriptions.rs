//! Subscriptions (SPEC §2, issue 6 item 6): create, upgrade, downgrade,
//! cancel, renewal and period processing. Placeholder until the module
//! lands; `settle` already calls [`on_invoice_paid`].

use axum::Router;
use events::{Actor, InvoiceIssued};
use utoipa::OpenApi;

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
