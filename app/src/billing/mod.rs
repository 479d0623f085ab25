//! Billing use cases (SPEC §3, docs/adr/0010–0013): the account's invoices
//! and their PDFs, credit purchases, manual and gateway payments, the
//! staff's approval, rejection and refunds, settling a paid invoice, the
//! payment methods per country and the billing statistics.
//!
//! Invoices and payments are their own aggregates, run through the plain
//! command service ([`crate::App::execute`]); the credits a paid purchase
//! buys go through the account's command path (the committer) under an
//! idempotency key derived from the payment id, so they are granted
//! exactly once ([`settle`]).

pub mod invoices;
pub mod numbering;
pub mod payment_methods;
pub mod payments;
pub mod pdf;
pub mod purchases;
pub mod refunds;
pub mod saved_cards;
pub mod settle;
pub mod stats;

use std::time::Duration;

use events::AccountId;
use projections::AccountView;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::AppError;
use crate::input::MIN_POSITION_WAIT_MILLIS_MAX;
use crate::App;

/// Days until a purchase or subscription invoice is due.
pub const INVOICE_DUE_DAYS: i64 = 14;

/// A UUID derived from its parts (SHA-256, version bits 8): the same
/// account and Idempotency-Key name the same invoice or payment, so a
/// retried purchase finds the streams it already wrote.
pub fn derived_id(parts: &[&str]) -> Uuid {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

/// The account's billing facts, from the read model; waits (bounded) for
/// the projector when the account is newer than it.
pub async fn billing_account(app: &App, account: AccountId) -> Result<AccountView, AppError> {
    let id = account.to_string();
    if let Some(a) = app.read_models.account(&id).await? {
        return Ok(a);
    }
    let head = app.store.head_position().await?;
    app.projector
        .wait_for(head, Duration::from_millis(MIN_POSITION_WAIT_MILLIS_MAX))
        .await;
    app.read_models
        .account(&id)
        .await?
        .ok_or_else(|| AppError::NotFound("account not found".into()))
}

/// The currency an account is billed in (its read model's `currency`:
/// staff's choice, else the country's).
pub fn account_currency(view: &AccountView) -> events::Currency {
    events::Currency::parse(&view.currency).unwrap_or_else(|_| events::Currency::usd())
}

/// The higher of two optional log positions.
pub(crate) fn max_position(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_distinct_and_well_formed() {
        let a = derived_id(&["purchase-invoice", "acct", "k1"]);
        assert_eq!(a, derived_id(&["purchase-invoice", "acct", "k1"]));
        assert_ne!(a, derived_id(&["purchase-payment", "acct", "k1"]));
        assert_ne!(
            derived_id(&["ab", "c"]),
            derived_id(&["a", "bc"]),
            "parts are separated"
        );
        assert_eq!(a.get_version_num(), 8);
    }
}
