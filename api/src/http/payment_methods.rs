//! Payment method configuration per country (issue 6 item 7,
//! docs/adr/0013-payment-methods-and-stats.md).
//!
//! The rows are catalog events (`PaymentMethodConfigured`), so they are
//! read from the in-memory catalog like plans and packages. A row for a
//! country overrides the `*` row of the same method. The customer sees the
//! enabled methods of the account's country, each marked `available`
//! (Stripe only with a key, PayPal never); purchases and manual payments
//! take their method's row through [`method_terms`], which refuses a method
//! the country does not offer and renders the configured instructions.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use events::{AccountId, Money, PaymentMethod, PaymentMethodConfig};
use ledger::catalog::payment_methods::is_config_country;
use ledger::{CatalogCommand, Payment};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::OpenApi;
use uuid::Uuid;

use super::billing::{billing_account, BILLING_ROLES};
use super::extract::{Body, Fresh, Q};
use super::openapi as doc;
use super::respond::store_error;
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::AppState;

const STAFF: &[Role] = &[Role::Developer];

#[derive(OpenApi)]
#[openapi(
    paths(offered, configs, put_config),
    components(schemas(
        OfferedMethods,
        OfferedMethod,
        MethodConfig,
        MethodConfigList,
        SavedMethodConfig
    ))
)]
pub struct Api;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/billing/payment-methods", get(offered))
        .route("/admin/payment-method-configs", get(configs))
        .route(
            "/admin/payment-method-configs/{country}/{method}",
            put(put_config),
        )
}

/// Whether Stripe can take payments: only with a secret key.
fn stripe_configured(state: &AppState) -> bool {
    state.gateways.stripe_configured()
}

/// Whether the server can take a payment by `method` at all, whatever the
/// configuration says: Stripe needs its key, PayPal has no gateway yet.
fn available(state: &AppState, method: PaymentMethod) -> bool {
    match method {
        PaymentMethod::Stripe => stripe_configured(state),
        PaymentMethod::Paypal => false,
        PaymentMethod::BankTransfer | PaymentMethod::LocalWallet | PaymentMethod::Manual => true,
    }
}

/// What a payment by a configured method needs: the row that applies in
/// the account's country (none only for the retry of a payment submitted
/// before its method was withdrawn, whose stored instructions win anyway).
#[derive(Debug, Clone)]
pub(super) struct MethodTerms {
    config: Option<PaymentMethodConfig>,
}

impl MethodTerms {
    /// The instructions shown for a payment of `total` under `reference`:
    /// the configured text with `{amount}`, `{currency}` and `{reference}`
    /// filled in, then the bank details, then the reference if the text
    /// did not name it.
    pub fn instructions(&self, reference: &str, total: &Money) -> String {
        match &self.config {
            Some(c) => render_instructions(c, reference, total),
            None => format!(
                "Pay {} {} with reference {reference}.",
                total.amount,
                total.currency.as_str()
            ),
        }
    }
}

fn render_instructions(config: &PaymentMethodConfig, reference: &str, total: &Money) -> String {
    let text = config
        .instructions
        .as_deref()
        .unwrap_or("Pay {amount} {currency} with reference {reference}.");
    let mut lines = vec![text
        .replace("{amount}", &total.amount.to_string())
        .replace("{currency}", total.currency.as_str())
        .replace("{reference}", reference)];
    for (label, value) in [
        ("Bank", &config.bank_name),
        ("Account number", &config.account_number),
        ("Routing number", &config.routing_number),
        ("SWIFT/BIC", &config.swift),
    ] {
        if let Some(v) = value {
            lines.push(format!("{label}: {v}"));
        }
    }
    if !text.contains("{reference}") {
        lines.push(format!("Reference: {reference}"));
    }
    lines.join("\n")
}

/// The terms of paying by `method` from `account` as payment `payment_id`:
/// refused (422 naming `method`) when the account's country has no enabled
/// row for it, unless that payment was already submitted: a retry with the
/// same Idempotency-Key replays the first response even after the method
/// was withdrawn.
pub(super) async fn method_terms(
    state: &AppState,
    account: AccountId,
    method: PaymentMethod,
    payment_id: Uuid,
) -> Result<MethodTerms, ApiError> {
    let holder = billing_account(state, account).await?;
    let catalog = state.catalog.get().await;
    let config = catalog
        .payment_method_for(&holder.country, method)
        .filter(|c| c.enabled)
        .cloned();
    if config.is_some() {
        return Ok(MethodTerms { config });
    }
    let submitted = state
        .store
        .load::<Payment>(&payment_id.to_string())
        .await
        .map_err(store_error)?
        .aggregate
        .submitted()
        .is_some();
    if submitted {
        return Ok(MethodTerms { config: None });
    }
    Err(ApiError::invalid_field(
                "method",
        format!(
            "{} is not offered for accounts in {}; GET /v1/billing/payment-methods lists the methods that are",
            method.as_str(),
            holder.country
        ),
    ))
}

/// A row as the admin API shows it.
fn config_json(c: &PaymentMethodConfig) -> Value {
    json!({
        "country": c.country,
        "method": c.method.as_str(),
        "enabled": c.enabled,
        "display_name": c.display_name,
        "instructions": c.instructions,
        "bank_name": c.bank_name,
        "account_number": c.account_number,
        "routing_number": c.routing_number,
        "swift": c.swift,
        "sort_order": c.sort_order,
    })
}

/// A method as the customer sees it: bank details only for manual methods.
fn offered_json(state: &AppState, c: &PaymentMethodConfig) -> Value {
    let manual = c.method.is_manual();
    let bank = |v: &Option<String>| if manual { v.clone() } else { None };
    json!({
        "method": c.method.as_str(),
        "display_name": c.display_name,
        "instructions": c.instructions,
        "bank_name": bank(&c.bank_name),
        "account_number": bank(&c.account_number),
        "routing_number": bank(&c.routing_number),
        "swift": bank(&c.swift),
        "sort_order": c.sort_order,
        "manual": manual,
        "available": available(state, c.method),
        "configured_for": c.country,
    })
}

// ---------------------------------------------------------------------------
// Schema mirrors of the `json!` bodies (see `openapi.rs`)
// ---------------------------------------------------------------------------

/// A method offered to the caller's account.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OfferedMethod {
    /// `stripe|paypal|bank_transfer|local_wallet|manual`
    pub method: String,
    pub display_name: String,
    /// The configured text; `{amount}`, `{currency}` and `{reference}` are
    /// filled in when a payment is made.
    pub instructions: Option<String>,
    /// Bank details, shown for manual methods only.
    pub bank_name: Option<String>,
    pub account_number: Option<String>,
    pub routing_number: Option<String>,
    pub swift: Option<String>,
    pub sort_order: i32,
    /// Settled by staff checking a reference (bank transfer, local wallet).
    pub manual: bool,
    /// Whether the server can take it now: Stripe needs its key, PayPal is
    /// never available yet.
    pub available: bool,
    /// The row's country: the account's own, or `*`.
    pub configured_for: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct OfferedMethods {
    /// The account's country (ISO 3166-1 alpha-2).
    pub country: String,
    /// Enabled methods, by sort order.
    pub items: Vec<OfferedMethod>,
}

/// One (country, method) row.
#[derive(Serialize, utoipa::ToSchema)]
pub struct MethodConfig {
    /// ISO 3166-1 alpha-2, or `*` for every country without its own row.
    pub country: String,
    pub method: String,
    pub enabled: bool,
    pub display_name: String,
    pub instructions: Option<String>,
    pub bank_name: Option<String>,
    pub account_number: Option<String>,
    pub routing_number: Option<String>,
    pub swift: Option<String>,
    pub sort_order: i32,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct MethodConfigList {
    pub items: Vec<MethodConfig>,
    /// Always null: the list is bounded by countries × methods.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct SavedMethodConfig {
    #[serde(flatten)]
    pub config: MethodConfig,
    /// The event-log position the change reached (or the head, if nothing
    /// changed).
    pub position: i64,
}

// ---------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OfferedQuery {
    /// Wait (at most 5 s) until the read models reach this event-log position.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/billing/payment-methods",
    tag = "billing",
    summary = "The payment methods enabled for the caller's account's country, with instructions and bank details",
    params(OfferedQuery),
    responses(
        (status = 200, description = "The enabled methods, by sort order", body = OfferedMethods),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn offered(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<OfferedQuery>,
) -> Result<Response, ApiError> {
    principal.require(BILLING_ROLES)?;
    let account = principal.own_account()?;
    query.parse()?;
    fresh.wait(&state).await?;
    let holder = billing_account(&state, account).await?;
    let catalog = state.catalog.get().await;
    let items: Vec<Value> = catalog
        .payment_methods_for(&holder.country)
        .into_iter()
        .filter(|c| c.enabled)
        .map(|c| offered_json(&state, c))
        .collect();
    Ok(Json(json!({ "country": holder.country, "items": items })).into_response())
}

fn country_param(raw: &str) -> Result<String, ApiError> {
    if is_config_country(raw) {
        Ok(raw.to_owned())
    } else {
        Err(ApiError::invalid_field(
            "country",
            "country must be an assigned ISO 3166-1 alpha-2 code in upper case (\"DE\"), or *",
        ))
    }
}

fn method_param(raw: &str) -> Result<PaymentMethod, ApiError> {
    PaymentMethod::parse(raw).ok_or_else(|| {
        ApiError::invalid_field(
            "method",
            "method must be one of stripe, paypal, bank_transfer, local_wallet, manual",
        )
    })
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConfigsQuery {
    /// Only this country's rows (`*` for the rows of every country).
    pub country: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/payment-method-configs",
    tag = "admin",
    summary = "Every payment method row, by country, sort order and method",
    params(ConfigsQuery),
    responses(
        (status = 200, description = "The rows", body = MethodConfigList),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: `country` is not an ISO 3166-1 alpha-2 code or *", body = doc::ErrorBody),
    ),
)]
pub async fn configs(
    State(state): State<AppState>,
    principal: Principal,
    query: Q<ConfigsQuery>,
) -> Result<Response, ApiError> {
    principal.require(STAFF)?;
    let q = query.parse()?;
    let country = q.country.as_deref().map(country_param).transpose()?;
    // Fresh from the stream, so another instance's change is seen at once.
    let catalog = state.catalog.refresh().await.map_err(store_error)?;
    let mut rows: Vec<&PaymentMethodConfig> = catalog
        .payment_methods()
        .filter(|c| country.as_ref().is_none_or(|k| &c.country == k))
        .collect();
    rows.sort_by(|a, b| {
        (a.country.as_str(), a.sort_order, a.method.as_str()).cmp(&(
            b.country.as_str(),
            b.sort_order,
            b.method.as_str(),
        ))
    });
    let items: Vec<Value> = rows.into_iter().map(config_json).collect();
    Ok(Json(json!({ "items": items, "next_cursor": null })).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigRequest {
    /// Defaults to true.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// 1 to 64 bytes.
    pub display_name: String,
    /// At most 2,000 bytes; `{amount}`, `{currency}` and `{reference}` are
    /// filled in when a payment is made.
    pub instructions: Option<String>,
    /// At most 128 bytes.
    pub bank_name: Option<String>,
    /// At most 64 bytes.
    pub account_number: Option<String>,
    /// At most 64 bytes.
    pub routing_number: Option<String>,
    /// A BIC: 8 or 11 upper-case letters and digits.
    pub swift: Option<String>,
    /// 0 to 10,000; lists are sorted ascending. Defaults to 0.
    #[serde(default)]
    pub sort_order: i32,
}

fn yes() -> bool {
    true
}

#[utoipa::path(
    put,
    path = "/v1/admin/payment-method-configs/{country}/{method}",
    tag = "admin",
    summary = "Create or replace the payment method row of one country (or * for every country without its own)",
    params(
        ("country" = String, Path, description = "ISO 3166-1 alpha-2 in upper case, or `*`"),
        ("method" = String, Path, description = "`stripe|paypal|bank_transfer|local_wallet|manual`"),
    ),
    request_body = ConfigRequest,
    responses(
        (status = 200, description = "The row, saved", body = SavedMethodConfig),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn put_config(
    State(state): State<AppState>,
    principal: Principal,
    Path((country, method)): Path<(String, String)>,
    body: Body<ConfigRequest>,
) -> Result<Response, ApiError> {
    principal.require(STAFF)?;
    let country = country_param(&country)?;
    let method = method_param(&method)?;
    let r = body.parse()?.value;
    let config = PaymentMethodConfig {
        country,
        method,
        enabled: r.enabled,
        display_name: r.display_name,
        instructions: r.instructions,
        bank_name: r.bank_name,
        account_number: r.account_number,
        routing_number: r.routing_number,
        swift: r.swift,
        sort_order: r.sort_order,
    };
    let command = CatalogCommand::ConfigurePaymentMethod {
        config: config.clone(),
        actor: principal.sub().to_owned(),
        now: super::now(),
    };
    let done = app::catalog::run(&state, &principal, command).await?;
    let mut body = config_json(&config);
    body["position"] = json!(state.position_of(&done).await?);
    Ok((StatusCode::OK, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::Currency;
    use rust_decimal::Decimal;

    fn bank(instructions: Option<&str>) -> PaymentMethodConfig {
        PaymentMethodConfig {
            country: "DE".into(),
            method: PaymentMethod::BankTransfer,
            enabled: true,
            display_name: "SEPA".into(),
            instructions: instructions.map(str::to_owned),
            bank_name: Some("Acme Bank".into()),
            account_number: Some("DE89370400440532013000".into()),
            routing_number: None,
            swift: Some("COBADEFFXXX".into()),
            sort_order: 1,
        }
    }

    #[test]
    fn instructions_fill_in_the_amount_and_reference_and_list_the_bank_details() {
        let total = Money::new(Decimal::new(3_451, 2), Currency::parse("EUR").unwrap());
        let text = render_instructions(
            &bank(Some("Send {amount} {currency}, reference {reference}.")),
            "INV-2026-000001",
            &total,
        );
        assert_eq!(
            text,
            "Send 34.51 EUR, reference INV-2026-000001.\nBank: Acme Bank\n\
             Account number: DE89370400440532013000\nSWIFT/BIC: COBADEFFXXX"
        );
    }

    #[test]
    fn instructions_without_a_reference_placeholder_still_name_the_reference() {
        let total = Money::usd(Decimal::new(900, 2));
        let text = render_instructions(&bank(Some("Wire it.")), "INV-2026-000002", &total);
        assert!(text.starts_with("Wire it.\nBank: Acme Bank"), "{text}");
        assert!(text.ends_with("Reference: INV-2026-000002"), "{text}");
        let text = render_instructions(&bank(None), "INV-2026-000003", &total);
        assert!(
            text.starts_with("Pay 9.00 USD with reference INV-2026-000003."),
            "{text}"
        );
    }

    #[test]
    fn country_and_method_parameters_are_checked() {
        assert_eq!(country_param("DE").unwrap(), "DE");
        assert_eq!(country_param("*").unwrap(), "*");
        for bad in ["de", "XX", "DEU", "", "**"] {
            assert!(country_param(bad).is_err(), "{bad}");
        }
        assert_eq!(method_param("manual").unwrap(), PaymentMethod::Manual);
        assert!(method_param("cash").is_err());
    }
}
