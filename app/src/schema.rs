//! Schemas of the `events` types that use cases take and answer, for the
//! OpenAPI document (feature `openapi`): `events` stays free of utoipa, so
//! its enums and value types are described here once, and the input and
//! output types of the use cases point at these with `value_type`.

use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

/// An amount of money and its currency. The amount is a decimal string
/// (`"29.00"`), never a float.
#[derive(Serialize, ToSchema)]
pub struct Money {
    #[schema(value_type = String, example = "29.00", pattern = r"^[0-9]+(\.[0-9]+)?$")]
    pub amount: Decimal,
    /// ISO 4217, upper case.
    #[schema(example = "USD", pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    Trial,
    Active,
    PastDue,
    Suspended,
    Cancelled,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantSource {
    Subscription,
    Purchase,
    Promotional,
    Adjustment,
    Trial,
}

/// Why a hold was released: by its caller, or at its expiry.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseReason {
    Caller,
    Expired,
}

/// How an operation's units are counted: credits = cost × ceil(units / unit_size).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CostUnit {
    PerRequest,
    #[serde(rename = "per_100_words")]
    Per100Words,
    #[serde(rename = "per_200_words")]
    Per200Words,
    PerImage,
    PerItem,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BillingCycle {
    Monthly,
    Annual,
}

/// Plan limits; `null` means unlimited.
#[derive(Serialize, ToSchema)]
pub struct PlanLimits {
    pub max_users: Option<u32>,
    pub max_sites: Option<u32>,
    pub max_industries: Option<u32>,
    pub max_author_profiles: Option<u32>,
}

/// A postal billing address, kept as entered.
#[derive(Serialize, ToSchema)]
pub struct BillingAddress {
    pub line1: Option<String>,
    pub line2: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub postal_code: Option<String>,
    /// ISO 3166-1 alpha-2.
    pub country: Option<String>,
}

/// The status an account may open with.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpeningStatus {
    Trial,
    Active,
    PastDue,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EntryType {
    Grant,
    Deduction,
    Capture,
    Refund,
    Adjustment,
    Expiry,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Day,
    Operation,
    Model,
}

/// An invoice's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceStatus {
    Draft,
    Pending,
    Paid,
    Void,
    Uncollectible,
}

/// A payment's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Processing,
    Succeeded,
    Failed,
    Refunded,
    Cancelled,
}

/// Every payment method a row of the payment method table can name.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    Stripe,
    Paypal,
    BankTransfer,
    LocalWallet,
    Manual,
}

/// The methods a customer may pay by: the manual ones, and the gateways
/// (`stripe` answers 503 while no Stripe key is configured, `paypal` while
/// no PayPal client id and secret are; subscriptions take no `paypal` yet).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CustomerPaymentMethod {
    BankTransfer,
    LocalWallet,
    Stripe,
    Paypal,
}
