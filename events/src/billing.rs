//! Events of the billing aggregates: invoices (one stream per invoice) and
//! payments (one stream per payment). Money is `Decimal` + `Currency`,
//! serialized as strings; never a float.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::types::{AccountId, BillingAddress, Currency, Money};
use crate::EVENT_VERSION_1;

/// The aggregate type under which invoice streams are stored.
pub const INVOICE_AGGREGATE_TYPE: &str = "invoice";
/// The aggregate type under which payment streams are stored.
pub const PAYMENT_AGGREGATE_TYPE: &str = "payment";
/// The aggregate type of the Stripe webhook log: one stream per Stripe
/// event id (`stripe-{evt_id}`), so each event is applied once.
pub const STRIPE_EVENT_AGGREGATE_TYPE: &str = "stripe_event";
/// The aggregate type of an account's Stripe customer: one stream per
/// account (`stripe-customer-{account_id}`), so the customer is created
/// once and reused.
pub const STRIPE_CUSTOMER_AGGREGATE_TYPE: &str = "stripe_customer";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Draft,
    Pending,
    Paid,
    Void,
    Uncollectible,
}

impl InvoiceStatus {
    /// The wire name, as serde writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Void => "void",
            Self::Uncollectible => "uncollectible",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Processing,
    Succeeded,
    Failed,
    Refunded,
    Cancelled,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Refunded => "refunded",
            Self::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Stripe,
    Paypal,
    BankTransfer,
    LocalWallet,
    Manual,
}

impl PaymentMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stripe => "stripe",
            Self::Paypal => "paypal",
            Self::BankTransfer => "bank_transfer",
            Self::LocalWallet => "local_wallet",
            Self::Manual => "manual",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Stripe,
            Self::Paypal,
            Self::BankTransfer,
            Self::LocalWallet,
            Self::Manual,
        ]
        .into_iter()
        .find(|m| m.as_str() == s)
    }
    /// Methods settled by a person checking a reference (maker-checker).
    pub fn is_manual(self) -> bool {
        matches!(self, Self::BankTransfer | Self::LocalWallet | Self::Manual)
    }
}

/// One invoice line; `amount` = quantity × unit price, in the currency's
/// minor unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceLine {
    pub description: String,
    pub quantity: i64,
    pub unit_price: Decimal,
    pub amount: Decimal,
}

/// What a paid invoice buys in credits (a credit package), granted when it
/// is paid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditPurchase {
    pub package_slug: String,
    pub credits: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceIssued {
    pub invoice_id: Uuid,
    pub number: String,
    pub account_id: AccountId,
    pub subscription_id: Option<Uuid>,
    pub buyer_name: String,
    pub billing_email: Option<String>,
    /// The account's billing address at issue time.
    pub billing_address: Option<BillingAddress>,
    pub tax_id: Option<String>,
    pub lines: Vec<InvoiceLine>,
    pub subtotal: Decimal,
    /// Percent, as on the account (`19.00` is 19 %).
    pub tax_rate: Decimal,
    pub tax: Decimal,
    pub total: Decimal,
    pub currency: Currency,
    /// `draft` or `pending`.
    pub status: InvoiceStatus,
    pub purchase: Option<CreditPurchase>,
    pub notes: Option<String>,
    pub issued_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoicePaid {
    pub payment_id: Option<Uuid>,
    pub method: PaymentMethod,
    pub paid_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceVoided {
    pub reason: Option<String>,
    pub actor: String,
    pub voided_at: DateTime<Utc>,
}

/// A draft became a pending invoice, open for payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceFinalized {
    pub actor: String,
    pub finalized_at: DateTime<Utc>,
    /// The due date from now on.
    pub due_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvoiceMarkedUncollectible {
    pub reason: Option<String>,
    pub actor: String,
    pub marked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InvoiceEvent {
    InvoiceIssued(Box<InvoiceIssued>),
    InvoicePaid(InvoicePaid),
    InvoiceVoided(InvoiceVoided),
    InvoiceFinalized(InvoiceFinalized),
    InvoiceMarkedUncollectible(InvoiceMarkedUncollectible),
}

impl InvoiceEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::InvoiceIssued(_) => "InvoiceIssued",
            Self::InvoicePaid(_) => "InvoicePaid",
            Self::InvoiceVoided(_) => "InvoiceVoided",
            Self::InvoiceFinalized(_) => "InvoiceFinalized",
            Self::InvoiceMarkedUncollectible(_) => "InvoiceMarkedUncollectible",
        }
    }
}

impl DomainEvent for InvoiceEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}

/// A manual payment was submitted and waits for a second person's approval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentSubmitted {
    pub payment_id: Uuid,
    pub invoice_id: Uuid,
    pub account_id: AccountId,
    pub amount: Money,
    pub method: PaymentMethod,
    pub reference: Option<String>,
    /// The `sub` of whoever submitted it: never its approver.
    pub submitted_by: String,
    pub instructions: Option<String>,
    pub submitted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentApproved {
    pub approved_by: String,
    pub approved_at: DateTime<Utc>,
    /// What the approver noted (a bank statement line, a ticket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// A pending manual payment was withdrawn (by its account or by staff):
/// the invoice stays open for another payment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentCancelled {
    pub cancelled_by: String,
    pub reason: Option<String>,
    pub cancelled_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRejected {
    pub rejected_by: String,
    pub reason: String,
    pub rejected_at: DateTime<Utc>,
}

/// A payment through a gateway (Stripe) was started: the gateway holds the
/// money flow and reports the outcome (webhook), so the payment is
/// `processing` until then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentInitiated {
    pub payment_id: Uuid,
    pub invoice_id: Uuid,
    pub account_id: AccountId,
    pub amount: Money,
    pub method: PaymentMethod,
    /// The gateway's name (`stripe`).
    pub gateway: String,
    /// The gateway's id of the payment (a Stripe PaymentIntent `pi_…`).
    pub gateway_ref: String,
    /// The `sub` of whoever started it.
    pub submitted_by: String,
    pub initiated_at: DateTime<Utc>,
}

/// The gateway reported the payment as paid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentSucceeded {
    /// The gateway's reference for the success (a charge id), if any.
    pub gateway_ref: Option<String>,
    pub succeeded_at: DateTime<Utc>,
}

/// The gateway reported the payment as failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentFailed {
    pub reason: String,
    pub failed_at: DateTime<Utc>,
}

/// Part or all of a succeeded payment went back to the payer. The sum of a
/// payment's refunds never exceeds its amount; `refunded_total` is that sum
/// after this refund, so a read model needs no running state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentRefunded {
    pub refund_id: Uuid,
    pub amount: Decimal,
    pub refunded_total: Decimal,
    /// Whether `refunded_total` reached the payment's amount: the payment
    /// is then `refunded`.
    pub fully_refunded: bool,
    /// Whether the credits the payment bought are taken back.
    pub revoke_credits: bool,
    /// Credits taken back by this refund (0 when not revoked).
    pub revoked_credits: i64,
    pub reason: Option<String>,
    /// The `sub` of the admin who asked, or `stripe` for a refund made at
    /// the gateway.
    pub by: String,
    /// The gateway's refund id (`re_…`), for gateway payments.
    pub gateway_refund_ref: Option<String>,
    pub refunded_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentEvent {
    PaymentSubmitted(PaymentSubmitted),
    PaymentApproved(PaymentApproved),
    PaymentRejected(PaymentRejected),
    PaymentInitiated(PaymentInitiated),
    PaymentSucceeded(PaymentSucceeded),
    PaymentFailed(PaymentFailed),
    PaymentRefunded(PaymentRefunded),
    RefundReserved(RefundReserved),
    RefundReleased(RefundReleased),
    PaymentCancelled(PaymentCancelled),
}

/// A refund in progress holds its amount on the payment, so that two
/// refunds at once cannot both pass the check: the second sees the first's
/// amount as taken until it is recorded ([`PaymentRefunded`]) or released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundReserved {
    pub refund_id: Uuid,
    pub amount: Decimal,
    pub by: String,
    pub reserved_at: DateTime<Utc>,
}

/// A refund in progress that did not happen (the gateway refused it): its
/// amount is refundable again, and the credits it took back were given
/// back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundReleased {
    pub refund_id: Uuid,
    pub reason: String,
    /// Credits given back to the account (what the attempt had revoked).
    pub credits_restored: i64,
    pub released_at: DateTime<Utc>,
}

impl PaymentEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::PaymentSubmitted(_) => "PaymentSubmitted",
            Self::PaymentApproved(_) => "PaymentApproved",
            Self::PaymentRejected(_) => "PaymentRejected",
            Self::PaymentInitiated(_) => "PaymentInitiated",
            Self::PaymentSucceeded(_) => "PaymentSucceeded",
            Self::PaymentFailed(_) => "PaymentFailed",
            Self::PaymentRefunded(_) => "PaymentRefunded",
            Self::RefundReserved(_) => "RefundReserved",
            Self::RefundReleased(_) => "RefundReleased",
            Self::PaymentCancelled(_) => "PaymentCancelled",
        }
    }
}

impl DomainEvent for PaymentEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}

/// A Stripe webhook event was received, verified and handled (or, for a
/// type we do not act on, only recorded). Its stream is `stripe-{id}`: a
/// redelivery finds it and changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StripeEventReceived {
    /// Stripe's event id (`evt_…`).
    pub id: String,
    /// Stripe's event type (`invoice.paid`, …).
    pub event_type: String,
    /// Stripe's `created` (Unix seconds).
    pub created: i64,
    /// Whether the ledger acted on it (false: recorded and acknowledged).
    pub handled: bool,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StripeEvent {
    StripeEventReceived(StripeEventReceived),
}

impl StripeEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::StripeEventReceived(_) => "StripeEventReceived",
        }
    }
}

impl DomainEvent for StripeEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}

/// The account's Stripe customer (`cus_…`) was created and is the one every
/// later Stripe call for the account uses (subscriptions, saved cards).
/// Its stream is `stripe-customer-{account_id}`; the first link stays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StripeCustomerLinked {
    pub account_id: AccountId,
    /// Stripe's customer id (`cus_…`).
    pub customer_id: String,
    pub linked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StripeCustomerEvent {
    StripeCustomerLinked(StripeCustomerLinked),
}

impl StripeCustomerEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::StripeCustomerLinked(_) => "StripeCustomerLinked",
        }
    }
}

impl DomainEvent for StripeCustomerEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}
