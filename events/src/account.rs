//! Events of the credit account aggregate (one stream per account).

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::{
    AccountId, AccountStatus, BillingAddress, CountryCode, Currency, GrantSource, IdempotencyKey,
    OperationKey, ReleaseReason,
};
use crate::EVENT_VERSION_1;

/// The aggregate type under which account streams are stored.
pub const ACCOUNT_AGGREGATE_TYPE: &str = "account";

/// Credits taken from one lot (a grant, a positive adjustment or a refund).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotDraw {
    pub lot_id: Uuid,
    pub credits: i64,
}

/// What an AI operation used: recorded with every deduction and capture.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    pub operation: Option<OperationKey>,
    pub units: u64,
    pub cost_version: Option<u64>,
    pub model: Option<String>,
    pub tokens_input: Option<u64>,
    pub tokens_output: Option<u64>,
    pub cost_usd: Option<Decimal>,
    pub related_object_type: Option<String>,
    pub related_object_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountOpened {
    pub account_id: AccountId,
    pub name: String,
    pub slug: String,
    pub owner_user_id: String,
    pub plan: String,
    pub status: AccountStatus,
    pub country: CountryCode,
    pub billing_email: String,
    pub credit_limit: i64,
    pub low_balance_threshold: i64,
    pub tax_rate: Decimal,
    /// The currency staff chose to bill the account in; `None` bills in
    /// the country's ([`Currency::for_country`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<Currency>,
    pub opened_at: DateTime<Utc>,
}

/// A partial update: absent fields are unchanged.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AccountUpdated {
    pub name: Option<String>,
    pub billing_email: Option<String>,
    pub billing_address: Option<BillingAddress>,
    pub tax_id: Option<String>,
    pub tax_rate: Option<Decimal>,
    pub country: Option<CountryCode>,
    pub credit_limit: Option<i64>,
    pub low_balance_threshold: Option<i64>,
    /// `Some(Some(c))` bills the account in `c` from now on, `Some(None)`
    /// in its country's currency again; `None` leaves it.
    #[serde(
        default,
        deserialize_with = "present_currency",
        skip_serializing_if = "Option::is_none"
    )]
    pub currency: Option<Option<Currency>>,
    pub updated_at: DateTime<Utc>,
}

/// A `currency` that is present reads as `Some`, even when it is `null`,
/// so that "unchanged" and "back to the country's" stay apart.
fn present_currency<'de, D>(d: D) -> Result<Option<Option<Currency>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<Currency>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanChanged {
    pub from: String,
    pub to: String,
    pub changed_at: DateTime<Utc>,
}

/// The billing status changed (a subscription became past_due, recovered
/// or ended). Recorded while the account is suspended too: then it is the
/// status the account returns to when reactivated, and `from` is the one it
/// would have returned to before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountStatusChanged {
    pub from: AccountStatus,
    pub to: AccountStatus,
    pub reason: String,
    pub changed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountSuspended {
    pub reason: String,
    pub suspended_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountReactivated {
    pub status: AccountStatus,
    pub reactivated_at: DateTime<Utc>,
}

/// Credits added as a new lot. `debt_repaid` of them first paid back an
/// overdraft; the lot keeps `credits - debt_repaid`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditsGranted {
    pub grant_id: Uuid,
    pub credits: i64,
    pub source: GrantSource,
    pub expires_at: Option<DateTime<Utc>>,
    pub description: Option<String>,
    pub debt_repaid: i64,
    pub balance_after: i64,
    pub idempotency_key: Option<IdempotencyKey>,
    pub granted_at: DateTime<Utc>,
}

/// Credits spent on an operation. `draws` say which lots paid, `overdraft`
/// how much went below zero (within the credit limit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditsDeducted {
    pub deduction_id: Uuid,
    pub credits: i64,
    pub usage: Usage,
    pub draws: Vec<LotDraw>,
    pub overdraft: i64,
    pub balance_after: i64,
    pub available_after: i64,
    pub idempotency_key: Option<IdempotencyKey>,
    pub recorded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditsHeld {
    pub hold_id: Uuid,
    pub credits: i64,
    pub operation: Option<OperationKey>,
    pub units: Option<u64>,
    pub cost_version: Option<u64>,
    pub expires_at: DateTime<Utc>,
    pub available_after: i64,
    pub idempotency_key: Option<IdempotencyKey>,
    pub held_at: DateTime<Utc>,
}

/// A hold turned into a deduction of `captured` credits; the rest of the hold
/// (`released`) went back to available.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldCaptured {
    pub hold_id: Uuid,
    pub deduction_id: Uuid,
    pub held: i64,
    pub captured: i64,
    pub released: i64,
    pub usage: Usage,
    pub draws: Vec<LotDraw>,
    pub overdraft: i64,
    pub balance_after: i64,
    pub available_after: i64,
    pub idempotency_key: Option<IdempotencyKey>,
    pub captured_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldReleased {
    pub hold_id: Uuid,
    pub credits: i64,
    pub reason: ReleaseReason,
    pub available_after: i64,
    pub idempotency_key: Option<IdempotencyKey>,
    pub released_at: DateTime<Utc>,
}

/// Credits of a deduction (or capture) given back. They keep the expiry of
/// the lots the deduction drew them from: `lots` lists the new lots with
/// their expiries. Empty (every event before it existed, and refunds of
/// credits that never expired): one lot `refund_id` of `credits -
/// debt_repaid` that does not expire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditsRefunded {
    pub refund_id: Uuid,
    pub deduction_id: Uuid,
    pub credits: i64,
    pub reason: String,
    pub debt_repaid: i64,
    pub balance_after: i64,
    pub idempotency_key: Option<IdempotencyKey>,
    pub refunded_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lots: Vec<RefundedLot>,
}

/// A lot a refund restores: credits back with the expiry they had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundedLot {
    pub lot_id: Uuid,
    pub credits: i64,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A signed correction by staff. Positive: a new lot (after repaying debt).
/// Negative: draws from lots like a deduction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditsAdjusted {
    pub adjustment_id: Uuid,
    pub credits: i64,
    pub reason: String,
    pub draws: Vec<LotDraw>,
    pub overdraft: i64,
    pub debt_repaid: i64,
    pub balance_after: i64,
    pub idempotency_key: Option<IdempotencyKey>,
    pub adjusted_at: DateTime<Utc>,
}

/// Unused credits of a lot left the balance because the lot expired.
/// `expired_at` is the lot's expiry instant, or the later instant when the
/// credits stopped backing an open hold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditsExpired {
    pub lot_id: Uuid,
    pub credits: i64,
    pub balance_after: i64,
    pub expired_at: DateTime<Utc>,
}

/// A monthly credit budget (issue 17): thresholds alert once per calendar
/// month (UTC) each; with `hard_cap`, deductions and holds beyond
/// `monthly_credits` are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    pub monthly_credits: i64,
    /// Percents of `monthly_credits`, ascending and distinct.
    pub thresholds_percent: Vec<u32>,
    pub hard_cap: bool,
}

/// The account's budget was set (`Some`) or removed (`None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetSet {
    pub budget: Option<Budget>,
    pub set_at: DateTime<Utc>,
}

/// The credits used this month reached `percent` of the budget: written
/// once per month and threshold, with the command that reached it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetThresholdReached {
    /// The calendar month (UTC), `YYYY-MM`.
    pub period: String,
    pub percent: u32,
    pub monthly_credits: i64,
    /// Credits used this month when it was reached.
    pub used: i64,
    pub hard_cap: bool,
    pub reached_at: DateTime<Utc>,
}

/// Automatic top-up (issue 17): when available credits fall below
/// `threshold`, buy `package` with `method` (`stripe`: the saved card,
/// off-session; `bank_transfer`: an invoice), at most `daily_limit` times
/// a day (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoTopUp {
    pub enabled: bool,
    pub threshold: i64,
    pub package: String,
    pub method: crate::billing::PaymentMethod,
    pub daily_limit: u32,
}

/// The account's automatic top-up was set (`Some`) or removed (`None`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoTopUpSet {
    pub config: Option<AutoTopUp>,
    pub set_at: DateTime<Utc>,
}

/// Available credits crossed below the top-up threshold: the package is
/// to be bought, once for this crossing. `trigger_id` is the id of the
/// deduction, hold or capture that crossed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoTopUpTriggered {
    pub trigger_id: Uuid,
    pub package: String,
    pub method: crate::billing::PaymentMethod,
    pub threshold: i64,
    pub available_after: i64,
    pub triggered_at: DateTime<Utc>,
}

/// The purchase of a trigger was made: an invoice and a payment (paid by
/// the saved card, or awaiting a bank transfer).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoTopUpSucceeded {
    pub trigger_id: Uuid,
    pub package: String,
    pub invoice_id: Uuid,
    pub payment_id: Uuid,
    pub succeeded_at: DateTime<Utc>,
}

/// The purchase of a trigger failed; after `failures` in a row reach the
/// limit the top-up is turned off (`disabled`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AutoTopUpFailed {
    pub trigger_id: Uuid,
    pub package: String,
    pub reason: String,
    pub failures: u32,
    pub disabled: bool,
    pub failed_at: DateTime<Utc>,
}

/// Available credits fell below an account's low-balance threshold
/// ([`AccountEvent::low_balance_crossing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LowBalanceCrossing {
    pub threshold: i64,
    pub available_before: i64,
    pub available_after: i64,
}

/// Every event of an account stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    AccountOpened(AccountOpened),
    AccountUpdated(AccountUpdated),
    PlanChanged(PlanChanged),
    AccountSuspended(AccountSuspended),
    AccountReactivated(AccountReactivated),
    CreditsGranted(CreditsGranted),
    CreditsDeducted(CreditsDeducted),
    CreditsHeld(CreditsHeld),
    HoldCaptured(HoldCaptured),
    HoldReleased(HoldReleased),
    CreditsRefunded(CreditsRefunded),
    CreditsAdjusted(CreditsAdjusted),
    CreditsExpired(CreditsExpired),
    AccountStatusChanged(AccountStatusChanged),
    BudgetSet(BudgetSet),
    BudgetThresholdReached(BudgetThresholdReached),
    AutoTopUpSet(AutoTopUpSet),
    AutoTopUpTriggered(AutoTopUpTriggered),
    AutoTopUpSucceeded(AutoTopUpSucceeded),
    AutoTopUpFailed(AutoTopUpFailed),
}

impl AccountEvent {
    /// The literal, never-renamed type name stored with the event.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::AccountOpened(_) => "AccountOpened",
            Self::AccountUpdated(_) => "AccountUpdated",
            Self::PlanChanged(_) => "PlanChanged",
            Self::AccountSuspended(_) => "AccountSuspended",
            Self::AccountReactivated(_) => "AccountReactivated",
            Self::CreditsGranted(_) => "CreditsGranted",
            Self::CreditsDeducted(_) => "CreditsDeducted",
            Self::CreditsHeld(_) => "CreditsHeld",
            Self::HoldCaptured(_) => "HoldCaptured",
            Self::HoldReleased(_) => "HoldReleased",
            Self::CreditsRefunded(_) => "CreditsRefunded",
            Self::CreditsAdjusted(_) => "CreditsAdjusted",
            Self::CreditsExpired(_) => "CreditsExpired",
            Self::AccountStatusChanged(_) => "AccountStatusChanged",
            Self::BudgetSet(_) => "BudgetSet",
            Self::BudgetThresholdReached(_) => "BudgetThresholdReached",
            Self::AutoTopUpSet(_) => "AutoTopUpSet",
            Self::AutoTopUpTriggered(_) => "AutoTopUpTriggered",
            Self::AutoTopUpSucceeded(_) => "AutoTopUpSucceeded",
            Self::AutoTopUpFailed(_) => "AutoTopUpFailed",
        }
    }

    /// The signed change this event makes to the balance.
    pub fn balance_delta(&self) -> i64 {
        match self {
            Self::CreditsGranted(e) => e.credits,
            Self::CreditsDeducted(e) => -e.credits,
            Self::HoldCaptured(e) => -e.captured,
            Self::CreditsRefunded(e) => e.credits,
            Self::CreditsAdjusted(e) => e.credits,
            Self::CreditsExpired(e) => -e.credits,
            _ => 0,
        }
    }

    /// The signed change this event makes to the held credits.
    pub fn held_delta(&self) -> i64 {
        match self {
            Self::CreditsHeld(e) => e.credits,
            Self::HoldCaptured(e) => -e.held,
            Self::HoldReleased(e) => -e.credits,
            _ => 0,
        }
    }

    /// The balance after this event, for the events that move it.
    pub fn balance_after(&self) -> Option<i64> {
        match self {
            Self::CreditsGranted(e) => Some(e.balance_after),
            Self::CreditsDeducted(e) => Some(e.balance_after),
            Self::HoldCaptured(e) => Some(e.balance_after),
            Self::CreditsRefunded(e) => Some(e.balance_after),
            Self::CreditsAdjusted(e) => Some(e.balance_after),
            Self::CreditsExpired(e) => Some(e.balance_after),
            _ => None,
        }
    }

    /// Available credits (balance − held) after this event, for the events
    /// that state it: deductions, holds, captures and releases.
    pub fn available_after(&self) -> Option<i64> {
        match self {
            Self::CreditsDeducted(e) => Some(e.available_after),
            Self::CreditsHeld(e) => Some(e.available_after),
            Self::HoldCaptured(e) => Some(e.available_after),
            Self::HoldReleased(e) => Some(e.available_after),
            _ => None,
        }
    }

    /// The signed change this event makes to available (balance − held).
    /// `None` only on an overflow, which a stored event cannot reach.
    pub fn available_delta(&self) -> Option<i64> {
        self.balance_delta().checked_sub(self.held_delta())
    }

    /// Whether this event made available fall from at or above `threshold`
    /// to below it (SPEC §4's low-balance crossing); the available credits
    /// before and after when it did. Only events that state their
    /// `available_after` can be judged from the event alone.
    pub fn low_balance_crossing(&self, threshold: i64) -> Option<LowBalanceCrossing> {
        let after = self.available_after()?;
        let before = after.checked_sub(self.available_delta()?)?;
        (before >= threshold && after < threshold).then_some(LowBalanceCrossing {
            threshold,
            available_before: before,
            available_after: after,
        })
    }

    /// The idempotency key of the command that produced this event, if any.
    pub fn idempotency_key(&self) -> Option<&IdempotencyKey> {
        match self {
            Self::CreditsGranted(e) => e.idempotency_key.as_ref(),
            Self::CreditsDeducted(e) => e.idempotency_key.as_ref(),
            Self::CreditsHeld(e) => e.idempotency_key.as_ref(),
            Self::HoldCaptured(e) => e.idempotency_key.as_ref(),
            Self::HoldReleased(e) => e.idempotency_key.as_ref(),
            Self::CreditsRefunded(e) => e.idempotency_key.as_ref(),
            Self::CreditsAdjusted(e) => e.idempotency_key.as_ref(),
            _ => None,
        }
    }

    /// When the fact happened (the instant an as-of fold compares against).
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::AccountOpened(e) => e.opened_at,
            Self::AccountUpdated(e) => e.updated_at,
            Self::PlanChanged(e) => e.changed_at,
            Self::AccountSuspended(e) => e.suspended_at,
            Self::AccountReactivated(e) => e.reactivated_at,
            Self::CreditsGranted(e) => e.granted_at,
            Self::CreditsDeducted(e) => e.recorded_at,
            Self::CreditsHeld(e) => e.held_at,
            Self::HoldCaptured(e) => e.captured_at,
            Self::HoldReleased(e) => e.released_at,
            Self::CreditsRefunded(e) => e.refunded_at,
            Self::CreditsAdjusted(e) => e.adjusted_at,
            Self::CreditsExpired(e) => e.expired_at,
            Self::AccountStatusChanged(e) => e.changed_at,
            Self::BudgetSet(e) => e.set_at,
            Self::BudgetThresholdReached(e) => e.reached_at,
            Self::AutoTopUpSet(e) => e.set_at,
            Self::AutoTopUpTriggered(e) => e.triggered_at,
            Self::AutoTopUpSucceeded(e) => e.succeeded_at,
            Self::AutoTopUpFailed(e) => e.failed_at,
        }
    }
}

impl DomainEvent for AccountEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn deducted(credits: i64, available_after: i64) -> AccountEvent {
        AccountEvent::CreditsDeducted(CreditsDeducted {
            deduction_id: Uuid::nil(),
            credits,
            usage: Usage::default(),
            draws: vec![],
            overdraft: 0,
            balance_after: available_after,
            available_after,
            idempotency_key: None,
            recorded_at: at(),
        })
    }

    fn captured(held: i64, captured: i64, available_after: i64) -> AccountEvent {
        AccountEvent::HoldCaptured(HoldCaptured {
            hold_id: Uuid::nil(),
            deduction_id: Uuid::nil(),
            held,
            captured,
            released: (held - captured).max(0),
            usage: Usage::default(),
            draws: vec![],
            overdraft: 0,
            balance_after: available_after,
            available_after,
            idempotency_key: None,
            captured_at: at(),
        })
    }

    #[test]
    fn a_deduction_that_falls_below_the_threshold_is_a_crossing() {
        let crossing = deducted(30, 80).low_balance_crossing(100).unwrap();
        assert_eq!(crossing.available_before, 110);
        assert_eq!(crossing.available_after, 80);
        assert_eq!(crossing.threshold, 100);
    }

    #[test]
    fn starting_exactly_at_the_threshold_counts_and_staying_above_does_not() {
        assert!(deducted(1, 99).low_balance_crossing(100).is_some());
        assert!(deducted(10, 100).low_balance_crossing(100).is_none());
    }

    #[test]
    fn a_deduction_already_below_the_threshold_is_no_new_crossing() {
        assert!(deducted(10, 50).low_balance_crossing(100).is_none());
    }

    #[test]
    fn a_capture_moves_available_by_what_was_held_minus_what_was_captured() {
        // Held 50, captured 30: 20 come back, available rises.
        assert_eq!(captured(50, 30, 120).available_delta(), Some(20));
        assert!(captured(50, 30, 120).low_balance_crossing(110).is_none());
        // Captured more than held: available falls by the difference.
        let over = captured(10, 40, 95);
        assert_eq!(over.available_delta(), Some(-30));
        assert_eq!(
            over.low_balance_crossing(100).unwrap().available_before,
            125
        );
    }

    #[test]
    fn a_hold_lowers_available_and_a_release_raises_it() {
        let held = AccountEvent::CreditsHeld(CreditsHeld {
            hold_id: Uuid::nil(),
            credits: 40,
            operation: None,
            units: None,
            cost_version: None,
            expires_at: at(),
            available_after: 90,
            idempotency_key: None,
            held_at: at(),
        });
        assert_eq!(held.available_delta(), Some(-40));
        assert!(held.low_balance_crossing(100).is_some());
        let released = AccountEvent::HoldReleased(HoldReleased {
            hold_id: Uuid::nil(),
            credits: 40,
            reason: ReleaseReason::Caller,
            available_after: 130,
            idempotency_key: None,
            released_at: at(),
        });
        assert_eq!(released.available_delta(), Some(40));
        assert!(released.low_balance_crossing(100).is_none());
    }

    #[test]
    fn events_without_available_after_are_not_judged() {
        let granted = AccountEvent::CreditsGranted(CreditsGranted {
            grant_id: Uuid::nil(),
            credits: 10,
            source: GrantSource::Purchase,
            expires_at: None,
            description: None,
            debt_repaid: 0,
            balance_after: 10,
            idempotency_key: None,
            granted_at: at(),
        });
        assert_eq!(granted.available_after(), None);
        assert!(granted.low_balance_crossing(100).is_none());
    }
}
