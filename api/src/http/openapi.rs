//! The OpenAPI 3.1 description of the HTTP API, served at `/openapi.json`
//! (SPEC §3).
//!
//! Where each part comes from:
//! - paths, parameters and statuses: the `#[utoipa::path]` attribute on each
//!   handler, next to the code it describes;
//! - request bodies and query strings: `ToSchema`/`IntoParams` derived on the
//!   handlers' own request structs, so they cannot drift from what is parsed;
//! - response bodies: the `app` types the handlers render where they are
//!   typed, else the mirror structs of `schemas` (read-model views, the
//!   catalog, the error body). The integration tests
//!   (`api/tests/operations.rs`) validate live responses against these
//!   schemas, which is what keeps them true.
//!
//! What every `/v1` operation shares (the bearer token, and the 401, 500 and
//! 503 answers; 400, 413 and 429 for those with a body) is added by
//! `Common` rather than repeated in forty attributes.

use std::sync::OnceLock;

use super::schemas::*;
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, ResponseBuilder, Schema};
use utoipa::{Modify, OpenApi};

/// Name of the bearer-token security scheme in `components.securitySchemes`.
pub const BEARER_SCHEME: &str = "bearer";

/// The tags operations are grouped under, in the order Swagger UI shows them.
/// An operation under `/v1/admin` is tagged `admin`; the others by the
/// handler module they live in.
pub const TAGS: [&str; 8] = [
    "accounts",
    "credits",
    "reads",
    "catalog",
    "billing",
    "team",
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
        super::budget::get_budget,
        super::budget::put_budget,
        super::budget::get_budget_own,
        super::budget::put_budget_own,
        super::budget::get_auto_top_up,
        super::budget::put_auto_top_up,
        super::budget::get_auto_top_up_own,
        super::budget::put_auto_top_up_own,
        super::notify::create,
        super::notify::list,
        super::notify::get,
        super::notify::delete,
        super::notify::deliveries,
        super::notify::redeliver,
        super::credits::deduct,
        super::credits::deduct_batch,
        super::credits::deduct_batch_any,
        super::credits::hold,
        super::credits::capture,
        super::credits::release,
        super::credits::refund,
        super::credits::grant,
        super::credits::adjust,
        super::tokens::revoke,
        super::team::team,
        super::team::team_own,
        super::team::invite,
        super::team::invite_own,
        super::team::accept,
        super::team::revoke,
        super::team::revoke_own,
        super::team::change_role,
        super::team::change_role_own,
        super::team::remove,
        super::team::remove_own,
        super::team::add,
        super::team::transfer,
        super::team::users,
        super::team::usage_counts,
        super::team::override_limits,
        super::reads::balance,
        super::reads::balance_own,
        super::reads::transactions,
        super::reads::transactions_own,
        super::reads::usage,
        super::reads::usage_own,
        super::reads::analytics,
        super::reads::analytics_own,
        super::reads::forecast,
        super::reads::forecast_own,
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
        super::billing::cancel_payment,
        super::billing::cancel_payment_staff,
        super::billing::purchase,
        super::admin_billing::invoices,
        super::admin_billing::create_invoice,
        super::admin_billing::finalize,
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
        (name = "team", description = "Members, invitations, roles and the roster check"),
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
            // Stripe's and PayPal's webhooks authenticate by signature, not
            // a token.
            if super::webhooks::WEBHOOK_PATHS.contains(&path.as_str()) {
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
            ApiError::BudgetExceeded {
                monthly_credits: 1,
                used: 1,
                held: 0,
                required: 1,
            },
            ApiError::UnknownOperation("x".into()),
            ApiError::OperationInactive("x".into()),
            ApiError::PlanLimit { limit: 1, used: 1 },
            ApiError::InvitationExpired("x".into()),
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
                let webhook = super::super::webhooks::WEBHOOK_PATHS.contains(&path.as_str());
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
