//! Events of the subscription aggregate (one stream per subscription,
//! docs/adr/0012-subscriptions.md). Plan facts (price, cycle, included
//! credits) are copied into the events that start using them, so the
//! stream alone tells what was sold for which period.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::catalog::BillingCycle;
use crate::types::{AccountId, Money};
use crate::EVENT_VERSION_1;

/// The aggregate type under which subscription streams are stored.
pub const SUBSCRIPTION_AGGREGATE_TYPE: &str = "subscription";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubscriptionStatus {
    Incomplete,
    Trialing,
    Active,
    PastDue,
    Canceled,
}

impl SubscriptionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Incomplete => "incomplete",
            Self::Trialing => "trialing",
            Self::Active => "active",
            Self::PastDue => "past_due",
            Self::Canceled => "canceled",
        }
    }
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// The customer asked (now, or at the period end).
    Customer,
    /// Its invoice stayed unpaid past the grace period.
    Unpaid,
    /// Stripe ended it.
    Stripe,
}

impl CancelReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Unpaid => "unpaid",
            Self::Stripe => "stripe",
        }
    }
}

/// What an invoice of a subscription pays for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoicePurpose {
    /// The first period.
    Initial,
    /// A later period.
    Renewal,
    /// The rest of the current period on a higher plan.
    Proration,
}

impl InvoicePurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::Renewal => "renewal",
            Self::Proration => "proration",
        }
    }
}

/// A plan as sold: the catalog's facts at the time they were used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanTerms {
    pub slug: String,
    pub name: String,
    pub price: Money,
    pub billing_cycle: BillingCycle,
    pub included_credits: i64,
}

/// A pending invoice of the subscription and what its payment grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionInvoice {
    pub invoice_id: Uuid,
    pub purpose: InvoicePurpose,
    /// The invoice's one line: what it bills and its price before tax.
    pub description: String,
    pub amount: Money,
    pub due_at: DateTime<Utc>,
    /// Credits granted when it is paid.
    pub credits: i64,
    /// When those credits expire (the end of the period they are for).
    pub credits_expire_at: DateTime<Utc>,
}

/// A new subscription; `incomplete` until its first invoice is paid
/// (`first_invoice` is `None` for a free plan, which is active at once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionCreated {
    pub subscription_id: Uuid,
    pub account_id: AccountId,
    pub plan: PlanTerms,
    pub method: crate::billing::PaymentMethod,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub first_invoice: Option<SubscriptionInvoice>,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The subscription became active (its first invoice was paid, or at once
/// for a free plan) for the period stated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionActivated {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub activated_at: DateTime<Utc>,
}

/// One of the subscription's invoices was paid; its credits are granted
/// under a key derived from the invoice id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionInvoicePaid {
    pub invoice_id: Uuid,
    pub purpose: InvoicePurpose,
    pub credits: i64,
    pub credits_expire_at: DateTime<Utc>,
    pub paid_at: DateTime<Utc>,
}

/// Upgraded now; the rest of the period is billed by `proration_invoice`
/// (`None` when the prorated amount is zero).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionPlanChanged {
    pub from: PlanTerms,
    pub to: PlanTerms,
    pub prorated_amount: Decimal,
    pub prorated_credits: i64,
    pub proration_invoice: Option<SubscriptionInvoice>,
    pub changed_at: DateTime<Utc>,
}

/// A lower plan takes over at the end of the current period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionDowngradeScheduled {
    pub from: String,
    pub to: PlanTerms,
    pub effective_at: DateTime<Utc>,
    pub scheduled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionCancelScheduled {
    pub cancel_at: DateTime<Utc>,
    pub scheduled_at: DateTime<Utc>,
}

/// A cancel scheduled for the period end was taken back: the subscription
/// renews as before.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionReactivated {
    pub reactivated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionCanceled {
    pub reason: CancelReason,
    /// Pending invoices of the subscription, left for the caller to void.
    pub open_invoices: Vec<Uuid>,
    pub canceled_at: DateTime<Utc>,
}

/// A new period began on `plan` (a scheduled downgrade takes effect here);
/// `invoice` bills it (`None` for a free plan, whose credits are granted at
/// once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRenewed {
    pub plan: PlanTerms,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub invoice: Option<SubscriptionInvoice>,
    pub renewed_at: DateTime<Utc>,
}

/// An invoice that starts or renews the subscription is past its due date.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionPastDue {
    pub invoice_id: Uuid,
    pub past_due_at: DateTime<Utc>,
}

/// The invoice that made it past_due was paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionRecovered {
    pub invoice_id: Uuid,
    pub recovered_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SubscriptionEvent {
    SubscriptionCreated(Box<SubscriptionCreated>),
    SubscriptionActivated(SubscriptionActivated),
    SubscriptionInvoicePaid(SubscriptionInvoicePaid),
    SubscriptionPlanChanged(Box<SubscriptionPlanChanged>),
    SubscriptionDowngradeScheduled(SubscriptionDowngradeScheduled),
    SubscriptionCancelScheduled(SubscriptionCancelScheduled),
    SubscriptionCanceled(SubscriptionCanceled),
    SubscriptionRenewed(Box<SubscriptionRenewed>),
    SubscriptionPastDue(SubscriptionPastDue),
    SubscriptionRecovered(SubscriptionRecovered),
    SubscriptionReactivated(SubscriptionReactivated),
}

impl SubscriptionEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::SubscriptionCreated(_) => "SubscriptionCreated",
            Self::SubscriptionActivated(_) => "SubscriptionActivated",
            Self::SubscriptionInvoicePaid(_) => "SubscriptionInvoicePaid",
            Self::SubscriptionPlanChanged(_) => "SubscriptionPlanChanged",
            Self::SubscriptionDowngradeScheduled(_) => "SubscriptionDowngradeScheduled",
            Self::SubscriptionCancelScheduled(_) => "SubscriptionCancelScheduled",
            Self::SubscriptionCanceled(_) => "SubscriptionCanceled",
            Self::SubscriptionRenewed(_) => "SubscriptionRenewed",
            Self::SubscriptionPastDue(_) => "SubscriptionPastDue",
            Self::SubscriptionRecovered(_) => "SubscriptionRecovered",
            Self::SubscriptionReactivated(_) => "SubscriptionReactivated",
        }
    }

    /// When the fact happened.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::SubscriptionCreated(e) => e.created_at,
            Self::SubscriptionActivated(e) => e.activated_at,
            Self::SubscriptionInvoicePaid(e) => e.paid_at,
            Self::SubscriptionPlanChanged(e) => e.changed_at,
            Self::SubscriptionDowngradeScheduled(e) => e.scheduled_at,
            Self::SubscriptionCancelScheduled(e) => e.scheduled_at,
            Self::SubscriptionCanceled(e) => e.canceled_at,
            Self::SubscriptionRenewed(e) => e.renewed_at,
            Self::SubscriptionPastDue(e) => e.past_due_at,
            Self::SubscriptionRecovered(e) => e.recovered_at,
            Self::SubscriptionReactivated(e) => e.reactivated_at,
        }
    }
}

impl DomainEvent for SubscriptionEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}
