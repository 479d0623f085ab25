use chrono::{DateTime, Utc};
use events::{
    AccountId, AccountStatus, BillingAddress, CostEntry, CountryCode, Currency, GrantSource,
    IdempotencyKey, LotDraw, Usage,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Largest number of credits one command may move.
pub const CREDITS_PER_COMMAND_MAX: i64 = 1_000_000_000_000;
/// Largest credit limit (overdraft) an account may have.
pub const CREDIT_LIMIT_MAX: i64 = 1_000_000_000_000;
/// Longest a hold may live before the ledger releases it.
pub const HOLD_TTL_SECONDS_MAX: u64 = 7 * 24 * 3600;

/// How many credits a hold reserves or a capture takes: a number, or a
/// priced quantity of an operation (the caller looks the cost row up).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Amount {
    Credits(i64),
    Priced { cost: CostEntry, units: u64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpenAccount {
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
    /// Staff's choice of billing currency; `None` bills in the country's.
    pub currency: Option<Currency>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AccountPatch {
    pub name: Option<String>,
    pub billing_email: Option<String>,
    pub billing_address: Option<BillingAddress>,
    pub tax_id: Option<String>,
    pub tax_rate: Option<Decimal>,
    pub country: Option<CountryCode>,
    pub credit_limit: Option<i64>,
    pub low_balance_threshold: Option<i64>,
    /// `Some(None)`: back to the country's currency.
    pub currency: Option<Option<Currency>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantCredits {
    pub grant_id: Uuid,
    pub credits: i64,
    pub source: GrantSource,
    pub expires_at: Option<DateTime<Utc>>,
    pub description: Option<String>,
    pub idempotency_key: Option<IdempotencyKey>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeductCredits {
    pub deduction_id: Uuid,
    /// The cost row in force, looked up by the caller; its version is recorded.
    pub cost: CostEntry,
    /// `operation` and `cost_version` are taken from `cost`.
    pub usage: Usage,
    pub idempotency_key: Option<IdempotencyKey>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HoldCredits {
    pub hold_id: Uuid,
    pub amount: Amount,
    pub ttl_seconds: u64,
    pub idempotency_key: Option<IdempotencyKey>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptureHold {
    pub hold_id: Uuid,
    pub deduction_id: Uuid,
    pub amount: Amount,
    pub usage: Usage,
    pub idempotency_key: Option<IdempotencyKey>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseHold {
    pub hold_id: Uuid,
    pub idempotency_key: Option<IdempotencyKey>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundDeduction {
    pub refund_id: Uuid,
    pub deduction_id: Uuid,
    /// The credits the deduction (or capture) took, looked up by the caller
    /// in this account's log; `None` when the account has no such deduction.
    /// The account itself keeps only what was refunded of each deduction,
    /// so its state does not grow with every deduction it ever made.
    pub deducted: Option<i64>,
    /// The lots the deduction drew from, in its burn order (its event's
    /// `draws`): refunded credits go back with those lots' expiries. Empty
    /// when unknown: the refund then makes a lot that never expires.
    pub draws: Vec<LotDraw>,
    /// `None` refunds everything still refundable.
    pub credits: Option<i64>,
    pub reason: String,
    pub idempotency_key: Option<IdempotencyKey>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdjustCredits {
    pub adjustment_id: Uuid,
    /// Signed: positive adds credits, negative removes them.
    pub credits: i64,
    pub reason: String,
    pub idempotency_key: Option<IdempotencyKey>,
    pub now: DateTime<Utc>,
}

/// Every command a credit account accepts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountCommand {
    OpenAccount(OpenAccount),
    UpdateAccount {
        patch: AccountPatch,
        now: DateTime<Utc>,
    },
    ChangePlan {
        plan: String,
        now: DateTime<Utc>,
    },
    Suspend {
        reason: String,
        now: DateTime<Utc>,
    },
    Reactivate {
        now: DateTime<Utc>,
    },
    /// The billing status a subscription puts the account in (`active`,
    /// `past_due`, `trial`, `cancelled`; never `suspended`). While the
    /// account is suspended it is recorded as the status to return to.
    SetBillingStatus {
        status: AccountStatus,
        reason: String,
        now: DateTime<Utc>,
    },
    GrantCredits(GrantCredits),
    DeductCredits(DeductCredits),
    HoldCredits(HoldCredits),
    CaptureHold(CaptureHold),
    ReleaseHold(ReleaseHold),
    RefundDeduction(RefundDeduction),
    AdjustCredits(AdjustCredits),
    /// Expire the lots and holds that are due; sent by the server's sweeper.
    ExpireDue {
        now: DateTime<Utc>,
    },
    /// Set (`Some`) or remove (`None`) the monthly budget.
    SetBudget {
        budget: Option<events::Budget>,
        now: DateTime<Utc>,
    },
    /// Set (`Some`) or remove (`None`) the automatic top-up.
    SetAutoTopUp {
        config: Option<events::AutoTopUp>,
        now: DateTime<Utc>,
    },
    /// Record how the purchase of a top-up trigger went (once per trigger):
    /// `Ok((invoice_id, payment_id))`, or why it failed.
    RecordAutoTopUp {
        trigger_id: Uuid,
        outcome: Result<(Uuid, Uuid), String>,
        now: DateTime<Utc>,
    },
}

impl AccountCommand {
    pub fn idempotency_key(&self) -> Option<&IdempotencyKey> {
        match self {
            Self::GrantCredits(c) => c.idempotency_key.as_ref(),
            Self::DeductCredits(c) => c.idempotency_key.as_ref(),
            Self::HoldCredits(c) => c.idempotency_key.as_ref(),
            Self::CaptureHold(c) => c.idempotency_key.as_ref(),
            Self::ReleaseHold(c) => c.idempotency_key.as_ref(),
            Self::RefundDeduction(c) => c.idempotency_key.as_ref(),
            Self::AdjustCredits(c) => c.idempotency_key.as_ref(),
            _ => None,
        }
    }

    /// The instant the caller stamped on the command.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::OpenAccount(c) => c.now,
            Self::UpdateAccount { now, .. }
            | Self::ChangePlan { now, .. }
            | Self::Suspend { now, .. }
            | Self::Reactivate { now }
            | Self::SetBillingStatus { now, .. }
            | Self::SetBudget { now, .. }
            | Self::SetAutoTopUp { now, .. }
            | Self::RecordAutoTopUp { now, .. }
            | Self::ExpireDue { now } => *now,
            Self::GrantCredits(c) => c.now,
            Self::DeductCredits(c) => c.now,
            Self::HoldCredits(c) => c.now,
            Self::CaptureHold(c) => c.now,
            Self::ReleaseHold(c) => c.now,
            Self::RefundDeduction(c) => c.now,
            Self::AdjustCredits(c) => c.now,
        }
    }

    /// The command's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::OpenAccount(_) => "open_account",
            Self::UpdateAccount { .. } => "update_account",
            Self::ChangePlan { .. } => "change_plan",
            Self::Suspend { .. } => "suspend",
            Self::Reactivate { .. } => "reactivate",
            Self::SetBillingStatus { .. } => "set_billing_status",
            Self::GrantCredits(_) => "grant_credits",
            Self::DeductCredits(_) => "deduct_credits",
            Self::HoldCredits(_) => "hold_credits",
            Self::CaptureHold(_) => "capture_hold",
            Self::ReleaseHold(_) => "release_hold",
            Self::RefundDeduction(_) => "refund_deduction",
            Self::AdjustCredits(_) => "adjust_credits",
            Self::ExpireDue { .. } => "expire_due",
            Self::SetBudget { .. } => "set_budget",
            Self::SetAutoTopUp { .. } => "set_auto_top_up",
            Self::RecordAutoTopUp { .. } => "record_auto_top_up",
        }
    }
}
