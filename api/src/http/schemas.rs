//! The response schemas of the OpenAPI document that are not `app` types
//! (the error body, and mirrors of the read-model views and catalog types,
//! which live in crates free of web dependencies). Handlers name them in
//! their `#[utoipa::path]` attributes; `openapi` gathers the paths. Kept
//! apart from `openapi` so that the handlers and the document builder do
//! not import each other.

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Errors.

/// Every error: `{"error": {"code", "message", "details"}}`.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// For people; not stable.
    pub message: String,
    /// Machine-readable specifics: `field` for `invalid_request`; `balance`,
    /// `available` and `required` for `insufficient_credits`; `operation`
    /// for `unknown_operation`; `limit_bytes`; `retry_after_seconds`;
    /// `limit` and `used` for `plan_limit`.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    AccountSuspended,
    NotFound,
    Conflict,
    IdempotencyKeyReused,
    InsufficientCredits,
    BudgetExceeded,
    UnknownOperation,
    OperationInactive,
    PlanLimit,
    InvitationExpired,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Internal,
}

// ---------------------------------------------------------------------------
// Mirrors of `events` types.

pub use app::schema::{
    AccountStatus, BillingAddress, BillingCycle, CostUnit, EntryType, GrantSource, GroupBy, Money,
    PlanLimits, ReleaseReason,
};

#[derive(Serialize, ToSchema)]
pub struct Plan {
    pub slug: String,
    pub name: String,
    pub price: Money,
    /// Every currency the plan is sold in (ISO 4217 → amount as a decimal
    /// string), the base price's included.
    pub prices: std::collections::BTreeMap<String, String>,
    pub billing_cycle: BillingCycle,
    pub included_credits: i64,
    /// Price of one credit beyond the included ones, if top-ups are sold.
    pub extra_credit_price: Option<Money>,
    pub allow_credit_topup: bool,
    pub limits: PlanLimits,
    pub features: Vec<String>,
    pub active: bool,
    pub stripe_product_id: Option<String>,
    pub stripe_price_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreditPackage {
    pub slug: String,
    pub name: String,
    pub credits: i64,
    pub price: Money,
    /// Every currency the package is sold in (ISO 4217 → amount as a
    /// decimal string), the base price's included.
    pub prices: std::collections::BTreeMap<String, String>,
    /// Percent, 0 to 100, as a decimal string.
    pub discount_percent: Decimal,
    pub active: bool,
    pub featured: bool,
    pub description: Option<String>,
    pub features: Vec<String>,
}

// ---------------------------------------------------------------------------
// Accounts.

/// An account as the read models hold it.
#[derive(Serialize, ToSchema)]
pub struct Account {
    pub account_id: Uuid,
    pub name: String,
    pub slug: String,
    pub owner_user_id: String,
    pub plan: String,
    pub status: AccountStatus,
    pub country: String,
    pub billing_email: String,
    pub billing_address: Option<BillingAddress>,
    pub tax_id: Option<String>,
    /// Percent, as a decimal string.
    pub tax_rate: Decimal,
    pub credit_limit: i64,
    pub low_balance_threshold: i64,
    /// ISO 4217: the currency the account is billed in (staff's choice,
    /// else its country's).
    pub currency: String,
    /// Staff's choice of currency; `null` bills in the country's.
    pub currency_override: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A monthly budget and this month's usage (issue 17).
#[derive(Serialize, ToSchema)]
pub struct BudgetView {
    pub account_id: Uuid,
    /// `null` when no budget is set.
    pub monthly_credits: Option<i64>,
    pub thresholds_percent: Vec<u32>,
    pub hard_cap: bool,
    /// The calendar month (UTC), `YYYY-MM`.
    pub period: String,
    /// Credits used this month: deductions and captures less refunds.
    pub used: i64,
    /// Credits held now (they count against a hard cap).
    pub held: i64,
    /// `monthly_credits - used`, never below 0; `null` without a budget.
    pub remaining: Option<i64>,
    /// The thresholds reached this month.
    pub thresholds_reached: Vec<u32>,
    /// The log position of the write (on `PUT`).
    #[schema(required = false)]
    pub position: Option<i64>,
}

/// An automatic top-up (issue 17).
#[derive(Serialize, ToSchema)]
pub struct AutoTopUpView {
    pub account_id: Uuid,
    pub enabled: bool,
    /// `null` when none is set.
    pub threshold: Option<i64>,
    pub package: Option<String>,
    /// `stripe` or `bank_transfer`.
    pub method: Option<String>,
    pub daily_limit: Option<u32>,
    /// Top-ups triggered today (UTC).
    pub triggered_today: u32,
    /// Failed top-ups in a row (three turn it off).
    pub consecutive_failures: u32,
    /// The log position of the write (on `PUT`).
    #[schema(required = false)]
    pub position: Option<i64>,
}

/// The account after an update, and the position the update reached.
#[derive(Serialize, ToSchema)]
pub struct UpdatedAccount {
    #[serde(flatten)]
    pub account: Account,
    pub position: i64,
}

#[derive(Serialize, ToSchema)]
pub struct AccountPage {
    pub items: Vec<Account>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// Plan limits and the credits of the current period.
#[derive(Serialize, ToSchema)]
pub struct Limits {
    pub account_id: Uuid,
    pub plan: String,
    /// The limits in effect: the plan's, with the account's overrides.
    pub limits: PlanLimits,
    /// The plan's own limits; `null` when the plan is no longer in the
    /// catalog.
    pub plan_limits: Option<PlanLimits>,
    /// The staff's overrides for this account (`PUT
    /// /v1/admin/accounts/{account_id}/limits`): only the limits overridden.
    pub overrides: LimitOverrides,
    pub features: Option<Vec<String>>,
    pub credits: LimitCredits,
    pub current: CurrentCounts,
}

/// Per-account limit overrides: a number, null (unlimited) or absent (the
/// plan's).
#[derive(Serialize, ToSchema)]
pub struct LimitOverrides {
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub max_users: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub max_sites: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub max_industries: Option<i64>,
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    pub max_author_profiles: Option<i64>,
}

/// The answer to a limit override.
#[derive(Serialize, ToSchema)]
pub struct LimitsOverridden {
    pub account_id: Uuid,
    pub overrides: LimitOverrides,
    pub limits: PlanLimits,
    pub position: i64,
}

/// A member record as the staff's user list shows it.
#[derive(Serialize, ToSchema)]
pub struct UserRow {
    pub id: Uuid,
    pub account_id: Uuid,
    pub user_id: Option<String>,
    pub email: String,
    pub role: String,
    /// `invited`, `active`, `removed` or `revoked`.
    pub status: String,
    pub invited_by: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub joined_at: Option<String>,
    pub removed_at: Option<String>,
    pub last_seen_at: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserRow>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct LimitCredits {
    pub included_per_period: Option<i64>,
    /// The calendar month, `YYYY-MM` (UTC).
    pub period: String,
    pub granted_this_period: i64,
    pub used_this_period: i64,
    pub balance: i64,
    pub available: i64,
}

/// Users are the account's active members; sites, industries and author
/// profiles are what the SaaS last reported (`null`: never reported).
#[derive(Serialize, ToSchema)]
pub struct CurrentCounts {
    pub users: Option<i64>,
    pub sites: Option<i64>,
    pub industries: Option<i64>,
    pub author_profiles: Option<i64>,
}

// ---------------------------------------------------------------------------
// Credits.

// ---------------------------------------------------------------------------
// Reads.

#[derive(Serialize, ToSchema)]
pub struct Balance {
    pub account_id: Uuid,
    pub balance: i64,
    pub held: i64,
    /// `balance - held + credit_limit`: what a deduction may take.
    pub available: i64,
    pub credit_limit: i64,
    pub plan: String,
    pub current_period: Period,
    /// How far the read models have read the log (for `min_position`).
    pub position: i64,
    /// The log position of this account's last projected event.
    pub account_position: i64,
    #[serde(flatten)]
    pub burn: Burn,
}

/// How fast the account spends (issue 17): its usage over the last 7 and
/// 30 days (today included) per day, and when it runs out at that pace.
#[derive(Serialize, ToSchema)]
pub struct Burn {
    /// Credits a day over the last 7 days (2 decimals).
    #[schema(value_type = f64)]
    pub burn_rate_7d: serde_json::Value,
    /// Credits a day over the last 30 days (2 decimals).
    #[schema(value_type = f64)]
    pub burn_rate_30d: serde_json::Value,
    pub credits_used_7d: i64,
    pub credits_used_30d: i64,
    /// When available credits (and the credit limit) run out at the 7-day
    /// rate (the 30-day one when the last 7 days used nothing); `null` when
    /// not burning.
    pub runs_out_at: Option<DateTime<Utc>>,
    /// Whole days left at that rate; `null` when not burning.
    pub days_left: Option<i64>,
}

/// One day of a forecast.
#[derive(Serialize, ToSchema)]
pub struct ForecastDay {
    pub date: NaiveDate,
    /// Available credits expected at the end of the day (never below
    /// `-credit_limit`).
    pub available: i64,
}

/// The next 30 days at the account's burn rate.
#[derive(Serialize, ToSchema)]
pub struct Forecast {
    pub account_id: Uuid,
    pub balance: i64,
    pub held: i64,
    pub available: i64,
    pub credit_limit: i64,
    /// `7d` or `30d`: the rate the projection uses; `null` when not burning.
    pub basis: Option<String>,
    pub days: Vec<ForecastDay>,
    pub position: i64,
    #[serde(flatten)]
    pub burn: Burn,
}

#[derive(Serialize, ToSchema)]
pub struct Period {
    /// The calendar month, `YYYY-MM` (UTC).
    pub period: String,
    pub granted: i64,
    pub used: i64,
}

/// One ledger entry.
#[derive(Serialize, ToSchema)]
pub struct Transaction {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub entry_type: EntryType,
    /// Signed: credits in are positive, credits out negative.
    pub amount: i64,
    pub balance_after: i64,
    pub description: Option<String>,
    pub occurred_at: DateTime<Utc>,
    pub position: i64,
}

#[derive(Serialize, ToSchema)]
pub struct TransactionPage {
    pub items: Vec<Transaction>,
    pub next_cursor: Option<String>,
}

/// One line of the usage log.
#[derive(Serialize, ToSchema)]
pub struct UsageEntry {
    pub id: Uuid,
    pub hold_id: Option<Uuid>,
    pub operation: Option<String>,
    pub credits: i64,
    pub units: i64,
    pub cost_version: Option<i64>,
    pub cost_usd: Option<Decimal>,
    pub model: Option<String>,
    pub tokens_input: Option<i64>,
    pub tokens_output: Option<i64>,
    pub related_object_type: Option<String>,
    pub related_object_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    pub recorded_at: DateTime<Utc>,
    pub position: i64,
}

#[derive(Serialize, ToSchema)]
pub struct UsagePage {
    pub items: Vec<UsageEntry>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Analytics {
    pub account_id: Uuid,
    pub group_by: GroupBy,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub items: Vec<AnalyticsRow>,
    pub totals: AnalyticsTotals,
    /// The account's burn now, whatever the range.
    #[serde(flatten)]
    pub burn: Burn,
}

#[derive(Serialize, ToSchema)]
pub struct AnalyticsRow {
    /// The day (`YYYY-MM-DD`), operation or model.
    pub key: String,
    pub credits: i64,
    pub cost_usd: Decimal,
    pub count: i64,
}

#[derive(Serialize, ToSchema)]
pub struct AnalyticsTotals {
    pub credits: i64,
    pub cost_usd: Decimal,
    pub count: i64,
}

// ---------------------------------------------------------------------------
// Catalog.

#[derive(Serialize, ToSchema)]
pub struct PlanList {
    pub items: Vec<Plan>,
    /// Always `null`: the catalog is one page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SavedPlan {
    #[serde(flatten)]
    pub plan: Plan,
    pub position: i64,
}

#[derive(Serialize, ToSchema)]
pub struct PackageList {
    pub items: Vec<CreditPackage>,
    /// Always `null`: the catalog is one page.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SavedPackage {
    #[serde(flatten)]
    pub package: CreditPackage,
    pub position: i64,
}

/// One row of the cost table: `cost` credits per `unit`.
#[derive(Serialize, ToSchema)]
pub struct Cost {
    pub operation: String,
    /// The name shown to people (made from the key when none was set).
    pub display_name: String,
    pub description: Option<String>,
    /// False: deductions and holds of it are 422 `operation_inactive`.
    pub is_active: bool,
    pub cost: i64,
    /// The SaaS plan's name for `cost` (the same value).
    pub credits_cost: i64,
    pub unit: CostUnit,
    /// Units per priced step.
    pub unit_size: u64,
    /// The cost-table version at which this row took this value.
    pub version: u64,
}

#[derive(Serialize, ToSchema)]
pub struct CostTable {
    /// The table's current version.
    pub version: u64,
    pub items: Vec<Cost>,
}

#[derive(Serialize, ToSchema)]
pub struct SavedCost {
    #[serde(flatten)]
    pub cost: Cost,
    pub position: i64,
}

/// One change of the cost table.
#[derive(Serialize, ToSchema)]
pub struct CostChange {
    pub version: i64,
    pub operation: String,
    pub cost: i64,
    pub unit: CostUnit,
    pub previous_cost: Option<i64>,
    pub previous_unit: Option<CostUnit>,
    pub actor: String,
    pub changed_at: DateTime<Utc>,
}

#[derive(Serialize, ToSchema)]
pub struct CostHistory {
    pub items: Vec<CostChange>,
    /// Always `null`: the history is one page.
    pub next_cursor: Option<String>,
}

// ---------------------------------------------------------------------------
// Operations.

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}

/// A page of invoices or payments (their fields: docs/adr/0010-billing.md).
#[derive(Serialize, ToSchema)]
pub struct BillingPage {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<serde_json::Value>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: String,
    pub store: StoreStatus,
    /// The log's head.
    pub position: i64,
    pub projector: ProjectorStatus,
    /// With NATS configured: `ok` when connected, `degraded` when not
    /// (the server stays ready: HTTP works and the outbox catches up).
    #[schema(example = "ok")]
    pub nats: Option<String>,
    /// With NATS configured: the last position JetStream acknowledged.
    pub outbox: Option<ProjectorStatus>,
}

#[derive(Serialize, ToSchema)]
pub struct StoreStatus {
    #[schema(example = "ok")]
    pub status: String,
    #[schema(example = "sqlite")]
    pub backend: String,
}

#[derive(Serialize, ToSchema)]
pub struct ProjectorStatus {
    pub position: i64,
    /// Events the read models are behind the head.
    pub lag: i64,
    /// How far behind in time: 0 at the head, else the milliseconds since
    /// the read models last reached it.
    pub lag_ms: i64,
}

// ---------------------------------------------------------------------------
// Notifications (issue 17).

/// A webhook endpoint (its secret is shown only when it is created).
#[derive(Serialize, ToSchema)]
pub struct WebhookEndpoint {
    /// `we_…`
    pub id: String,
    pub url: String,
    /// Event types, or `["*"]`.
    pub events: Vec<String>,
    /// Only this account's events; `null`: every account's.
    pub account_id: Option<Uuid>,
    pub description: Option<String>,
    pub created_by: String,
    pub created_at: Option<DateTime<Utc>>,
}

/// A webhook endpoint as created, with its signing secret (shown once).
#[derive(Serialize, ToSchema)]
pub struct WebhookEndpointCreated {
    #[serde(flatten)]
    pub endpoint: WebhookEndpoint,
    /// `whsec_…`: the key of `Ledger-Signature`'s HMAC.
    pub secret: String,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookEndpointPage {
    pub items: Vec<WebhookEndpoint>,
    pub next_cursor: Option<String>,
}

/// One delivery of a notification (a webhook POST or an email).
#[derive(Serialize, ToSchema)]
pub struct Delivery {
    pub id: String,
    /// The event's id: `Ledger-Event-Id`, the same on every retry.
    pub event_id: String,
    pub event_type: String,
    pub position: i64,
    pub account_id: Option<String>,
    /// `webhook` or `email`.
    pub channel: String,
    /// The endpoint's id, or the email address.
    pub target: String,
    /// The event type (webhooks) or the message kind (emails).
    pub kind: String,
    /// `pending`, `delivered` or `failed` (no more retries).
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last attempt.
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, ToSchema)]
pub struct DeliveryPage {
    pub items: Vec<Delivery>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

/// A deleted resource.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub id: String,
    pub deleted: bool,
}
