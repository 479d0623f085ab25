//! The OpenAPI 3.1 description of the HTTP API, served at `/openapi.json`
//! (SPEC §3).
//!
//! Where each part comes from:
//! - paths, parameters and statuses: the `#[utoipa::path]` attribute on each
//!   handler, next to the code it describes;
//! - request bodies and query strings: `ToSchema`/`IntoParams` derived on the
//!   handlers' own request structs, so they cannot drift from what is parsed;
//! - response bodies: the handlers build them with `json!`, so they are
//!   described here by mirror structs that are never constructed. The
//!   integration tests (`api/tests/operations.rs`) validate live responses
//!   against these schemas, which is what keeps them true;
//! - event and catalog types (`Money`, `Plan`, `GrantSource`, …) are mirrored
//!   here as well, because `events` and `ledger` stay free of web crates.
//!
//! What every `/v1` operation shares (the bearer token, and the 401, 500 and
//! 503 answers; 400, 413 and 429 for those with a body) is added by
//! `Common` rather than repeated in forty attributes.

use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi, ToSchema};
use uuid::Uuid;

/// Name of the bearer-token security scheme in `components.securitySchemes`.
pub const BEARER_SCHEME: &str = "bearer";

/// The tags operations are grouped under, in the order Swagger UI shows them.
/// An operation under `/v1/admin` is tagged `admin`; the others by the
/// handler module they live in.
pub const TAGS: [&str; 7] = [
    "accounts",
    "credits",
    "reads",
    "catalog",
    "billing",
    "admin",
    "operations",
];

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ledger-server",
        description = "Event-sourced credit and billing ledger. Every `/v1` route takes \
            `Authorization: Bearer <JWT, HS256>`. Errors are `{\"error\": {\"code\", \"message\", \
            \"details\"}}`. Mutating POSTs take an `Idempotency-Key`: a retry with the same key and \
            body returns the first response with `Idempotent-Replayed: true`. Every write answers \
            with the event-log `position` it reached, and every read accepts `?min_position=N` \
            (read-your-writes, waits at most 5 s). Credits are integers; money is a decimal string.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        super::accounts::open,
        super::accounts::get,
        super::accounts::patch,
        super::accounts::get_own,
        super::accounts::patch_own,
        super::accounts::limits,
        super::accounts::limits_own,
        super::credits::deduct,
        super::credits::hold,
        super::credits::capture,
        super::credits::release,
        super::credits::refund,
        super::credits::grant,
        super::credits::adjust,
        super::tokens::revoke,
        super::reads::balance,
        super::reads::balance_own,
        super::reads::transactions,
        super::reads::transactions_own,
        super::reads::usage,
        super::reads::usage_own,
        super::reads::analytics,
        super::reads::analytics_own,
        super::catalog::plans,
        super::catalog::put_plan,
        super::catalog::packages,
        super::catalog::put_package,
        super::catalog::costs,
        super::catalog::cost_history,
        super::catalog::put_cost,
        super::catalog::cost_history_of,
        super::accounts::search,
        super::accounts::suspend,
        super::accounts::activate,
        super::billing::invoices_own,
        super::billing::invoice_own,
        super::billing::invoice_pdf,
        super::billing::manual_payment,
        super::billing::purchase,
        super::admin_billing::invoices,
        super::admin_billing::void,
        super::admin_billing::mark_uncollectible,
        super::admin_billing::payments,
        super::admin_billing::approve,
        super::admin_billing::reject,
        super::admin_billing::refund,
        super::health,
        super::ready,
        crate::telemetry::scrape,
        openapi_json,
        super::docs::index,
        super::docs::asset,
    ),
    // Query parameters refer to these by name: registered so every
    // `$ref` of the document resolves.
    components(schemas(
        ErrorBody,
        ErrorCode,
        app::schema::InvoiceStatus,
        app::schema::PaymentStatus
    )),
    tags(
        (name = "accounts", description = "Opening, reading and updating accounts"),
        (name = "credits", description = "Deductions, holds, captures, releases, refunds and grants"),
        (name = "reads", description = "Balance, ledger entries, usage and analytics from the read models"),
        (name = "catalog", description = "Plans and credit packages"),
        (name = "billing", description = "Invoices, their PDFs, manual payments and credit purchases"),
        (name = "admin", description = "Platform administration (developer role)"),
        (name = "operations", description = "Health, readiness, metrics and this description; no token needed"),
    ),
)]
pub struct ApiDoc;

/// The document, built once: this file's paths plus each billing module's
/// own `Api` (so the modules can be extended without touching this list),
/// then what every operation shares.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = ApiDoc::openapi();
        doc.merge(super::subscriptions::Api::openapi());
        doc.merge(super::webhooks::Api::openapi());
        doc.merge(super::payment_methods::Api::openapi());
        doc.merge(super::billing_stats::Api::openapi());
        Common.modify(&mut doc);
        doc
    })
}

fn json_text() -> &'static str {
    static TEXT: OnceLock<String> = OnceLock::new();
    TEXT.get_or_init(|| {
        // Serializing plain structs and maps cannot fail.
        serde_json::to_string(document()).expect("the OpenAPI document serializes")
    })
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    summary = "This OpenAPI 3.1 document",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)),
)]
pub async fn openapi_json() -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        json_text(),
    )
        .into_response()
}

/// Adds what every `/v1` operation shares: the bearer scheme and the answers
/// any of them can give.
struct Common;

impl Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.security_schemes.insert(
            BEARER_SCHEME.into(),
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "HS256 JWT signed with LEDGER_JWT_SECRET; claims sub, role, account_id, exp. \
                         Mint one with `ledger-server token --role developer`.",
                    ))
                    .build(),
            ),
        );
        // A constraint utoipa's field attributes cannot express: the keys a
        // usage's `metadata` may have (`app::credits::METADATA_KEYS_MAX`).
        for name in ["DeductRequest", "CaptureRequest"] {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(name) {
                if let Some(RefOr::T(Schema::Object(metadata))) =
                    object.properties.get_mut("metadata")
                {
                    metadata.max_properties = Some(app::credits::METADATA_KEYS_MAX);
                }
            }
        }
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") {
                continue;
            }
            // Stripe's webhook authenticates by its signature, not a token.
            if path == super::webhooks::STRIPE_WEBHOOK_PATH {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                secure(operation);
                optional_body(operation);
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<utoipa::openapi::Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

/// A handler taking `Option<T>` as its documented body accepts no body (read
/// as `{}`) or a `T`; JSON `null` is refused. utoipa renders that as
/// `oneOf: [null, T]`, so the body is rewritten as an optional `T`.
fn optional_body(operation: &mut Operation) {
    let Some(body) = operation.request_body.as_mut() else {
        return;
    };
    if matches!(body.required, Some(Required::True)) {
        return;
    }
    for content in body.content.values_mut() {
        if let Some(RefOr::T(Schema::OneOf(one_of))) = &content.schema {
            let refs: Vec<_> = one_of
                .items
                .iter()
                .filter(|s| matches!(s, RefOr::Ref(_)))
                .collect();
            if let [inner] = refs[..] {
                content.schema = Some(inner.clone());
            }
        }
    }
    body.description
        .get_or_insert_with(|| "Optional: an empty body reads as `{}`.".into());
}

fn secure(operation: &mut Operation) {
    operation.security = Some(vec![SecurityRequirement::new(
        BEARER_SCHEME,
        Vec::<String>::new(),
    )]);
    let mut common = vec![
        (
            "401",
            "`unauthorized`: no bearer token, or one that is expired or not ours",
        ),
        (
            "500",
            "`internal`: an unexpected failure; the body says nothing internal",
        ),
        (
            "503",
            "`unavailable`: the store is unreachable, or the read models did not reach \
             `min_position` within 5 s",
        ),
    ];
    if operation.request_body.is_some() {
        common.push((
            "400",
            "`invalid_request`: the body is not a JSON object, or a header is malformed",
        ));
        common.push(("413", "`payload_too_large`: the body is over 64 KiB"));
        common.push((
            "429",
            "`rate_limited`: the account is too contended right now; retry after `Retry-After` seconds",
        ));
    }
    let responses = &mut operation.responses.responses;
    for (status, description) in common {
        responses
            .entry(status.into())
            .or_insert_with(|| error_response(description));
    }
}

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
    /// for `unknown_operation`; `limit_bytes`; `retry_after_seconds`.
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
    UnknownOperation,
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
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
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
    /// `null` when the plan is no longer in the catalog.
    pub limits: Option<PlanLimits>,
    pub features: Option<Vec<String>>,
    pub credits: LimitCredits,
    pub current: CurrentCounts,
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

/// Users, sites, industries and author profiles live in the SaaS back end;
/// the ledger does not count them, so these are `null`.
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
    pub cost: i64,
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
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::error::ApiError;

    fn doc() -> Value {
        serde_json::to_value(document()).unwrap()
    }

    fn enum_values(doc: &Value, schema: &str) -> Vec<String> {
        doc["components"]["schemas"][schema]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema} is not an enum schema"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    /// The mirrors of `events` enums spell every variant as the wire does.
    fn assert_mirrors<T: serde::Serialize>(doc: &Value, schema: &str, values: &[T]) {
        let documented = enum_values(doc, schema);
        assert_eq!(documented.len(), values.len(), "{schema}: {documented:?}");
        for v in values {
            let wire = serde_json::to_value(v).unwrap();
            let wire = wire.as_str().unwrap();
            assert!(
                documented.iter().any(|d| d == wire),
                "{schema} lacks {wire}"
            );
        }
    }

    #[test]
    fn enum_mirrors_match_the_wire_spelling_of_the_events_types() {
        use events::{
            AccountStatus as S, BillingCycle as B, CostUnit as C, GrantSource as G,
            ReleaseReason as R,
        };
        let doc = doc();
        assert_mirrors(
            &doc,
            "AccountStatus",
            &[S::Trial, S::Active, S::PastDue, S::Suspended, S::Cancelled],
        );
        assert_mirrors(
            &doc,
            "GrantSource",
            &[
                G::Subscription,
                G::Purchase,
                G::Promotional,
                G::Adjustment,
                G::Trial,
            ],
        );
        assert_mirrors(&doc, "ReleaseReason", &[R::Caller, R::Expired]);
        assert_mirrors(
            &doc,
            "CostUnit",
            &[
                C::PerRequest,
                C::Per100Words,
                C::Per200Words,
                C::PerImage,
                C::PerItem,
            ],
        );
        assert_mirrors(&doc, "BillingCycle", &[B::Monthly, B::Annual]);
    }

    #[test]
    fn every_error_code_the_api_renders_is_documented() {
        let doc = doc();
        let codes = enum_values(&doc, "ErrorCode");
        let errors = [
            ApiError::bad_request("x"),
            ApiError::Unauthorized("x".into()),
            ApiError::Forbidden("x".into()),
            ApiError::AccountSuspended,
            ApiError::NotFound("x".into()),
            ApiError::Conflict("x".into()),
            ApiError::IdempotencyKeyReused,
            ApiError::InsufficientCredits {
                balance: 0,
                available: 0,
                required: 1,
            },
            ApiError::UnknownOperation("x".into()),
            ApiError::PayloadTooLarge { limit_bytes: 1 },
            ApiError::RateLimited {
                retry_after_seconds: 1,
            },
            ApiError::Unavailable("x".into()),
            ApiError::Internal,
        ];
        assert_eq!(codes.len(), errors.len());
        for e in errors {
            assert!(
                codes.iter().any(|c| c == e.code()),
                "{} is not documented",
                e.code()
            );
        }
    }

    #[test]
    fn the_document_is_openapi_3_1_with_the_bearer_scheme_on_every_v1_operation() {
        let doc = doc();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        assert_eq!(
            doc["components"]["securitySchemes"][BEARER_SCHEME]["scheme"],
            "bearer"
        );
        let tags: Vec<&str> = doc["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(tags, TAGS);
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let tag = op["tags"][0].as_str().unwrap_or_default();
                assert!(TAGS.contains(&tag), "{method} {path} has tag {tag:?}");
                let secured = op
                    .get("security")
                    .is_some_and(|s| s != &serde_json::json!([{}]));
                let webhook = path == super::super::webhooks::STRIPE_WEBHOOK_PATH;
                assert_eq!(
                    secured,
                    path.starts_with("/v1/") && !webhook,
                    "{method} {path}"
                );
                if path.starts_with("/v1/") && !webhook {
                    assert!(op["responses"]["401"].is_object(), "{method} {path}");
                    assert_eq!(
                        path.starts_with("/v1/admin/"),
                        tag == "admin",
                        "{method} {path}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_error_schema_matches_what_api_error_renders() {
        let doc = doc();
        let body = ApiError::InsufficientCredits {
            balance: 1,
            available: 1,
            required: 2,
        }
        .body();
        let detail = &doc["components"]["schemas"]["ErrorDetail"];
        let mut required: Vec<&str> = detail["required"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        required.sort_unstable();
        let mut rendered: Vec<&str> = body["error"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        rendered.sort_unstable();
        assert_eq!(required, rendered);
    }
}
