//! Payment method configuration per country (issue 6 item 7,
//! docs/adr/0013-payment-methods-and-stats.md).
//!
//! The rows are catalog events (`PaymentMethodConfigured`), so they are
//! read from the in-memory catalog like plans and packages. A row for a
//! country overrides the `*` row of the same method. The customer sees the
//! enabled methods of the account's country, each marked `available`
//! (Stripe only with a key, PayPal only with its credentials); purchases
//! and manual payments take their method's row through [`method_terms`],
//! which refuses a method the country does not offer and renders the
//! configured instructions.

use events::{AccountId, Money, PaymentMethod, PaymentMethodConfig};
use ledger::catalog::payment_methods::is_config_country;
use ledger::{CatalogCommand, Payment};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::billing_account;
use crate::access;
use crate::caller::Caller;
use crate::error::AppError;
use crate::input::{Input, Query};
use crate::{now, App};

/// Whether the server can take a payment by `method` at all, whatever the
/// configuration says: Stripe needs its key, PayPal its client id and
/// secret.
fn available(app: &App, method: PaymentMethod) -> bool {
    match method {
        PaymentMethod::Stripe => app.gateways.stripe_configured(),
        PaymentMethod::Paypal => app.gateways.paypal_configured(),
        PaymentMethod::BankTransfer | PaymentMethod::LocalWallet | PaymentMethod::Manual => true,
    }
}

/// What a payment by a configured method needs: the row that applies in
/// the account's country (none only for the retry of a payment submitted
/// before its method was withdrawn, whose stored instructions win anyway).
#[derive(Debug, Clone)]
pub struct MethodTerms {
    pub(crate) config: Option<PaymentMethodConfig>,
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
pub async fn method_terms(
    app: &App,
    account: AccountId,
    method: PaymentMethod,
    payment_id: Uuid,
) -> Result<MethodTerms, AppError> {
    let holder = billing_account(app, account).await?;
    let catalog = app.catalog.get().await;
    let config = catalog
        .payment_method_for(&holder.country, method)
        .filter(|c| c.enabled)
        .cloned();
    if config.is_some() {
        return Ok(MethodTerms { config });
    }
    let submitted = app
        .store
        .load::<Payment>(&payment_id.to_string())
        .await?
        .aggregate
        .submitted()
        .is_some();
    if submitted {
        return Ok(MethodTerms { config: None });
    }
    Err(AppError::invalid_field(
        "method",
        format!(
            "{} is not offered for accounts in {}; GET /v1/billing/payment-methods lists the methods that are",
            method.as_str(),
            holder.country
        ),
    ))
}

/// A method offered to the caller's account.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    /// Whether the server can take it now: Stripe needs its key, PayPal its
    /// client id and secret.
    pub available: bool,
    /// The row's country: the account's own, or `*`.
    pub configured_for: String,
}

impl OfferedMethod {
    /// A method as the customer sees it: bank details only for manual
    /// methods.
    fn new(app: &App, c: &PaymentMethodConfig) -> Self {
        let manual = c.method.is_manual();
        let bank = |v: &Option<String>| if manual { v.clone() } else { None };
        Self {
            method: c.method.as_str().to_owned(),
            display_name: c.display_name.clone(),
            instructions: c.instructions.clone(),
            bank_name: bank(&c.bank_name),
            account_number: bank(&c.account_number),
            routing_number: bank(&c.routing_number),
            swift: bank(&c.swift),
            sort_order: c.sort_order,
            manual,
            available: available(app, c.method),
            configured_for: c.country.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OfferedMethods {
    /// The account's country (ISO 3166-1 alpha-2).
    pub country: String,
    /// Enabled methods, by sort order.
    pub items: Vec<OfferedMethod>,
    /// The cards the account saved at Stripe (`POST
    /// /v1/billing/payment-methods`); empty without Stripe or before the
    /// first card.
    pub saved_cards: Vec<super::saved_cards::SavedCardView>,
}

/// One (country, method) row.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

impl From<&PaymentMethodConfig> for MethodConfig {
    fn from(c: &PaymentMethodConfig) -> Self {
        Self {
            country: c.country.clone(),
            method: c.method.as_str().to_owned(),
            enabled: c.enabled,
            display_name: c.display_name.clone(),
            instructions: c.instructions.clone(),
            bank_name: c.bank_name.clone(),
            account_number: c.account_number.clone(),
            routing_number: c.routing_number.clone(),
            swift: c.swift.clone(),
            sort_order: c.sort_order,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MethodConfigList {
    pub items: Vec<MethodConfig>,
    /// Always null: the list is bounded by countries × methods.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SavedMethodConfig {
    #[serde(flatten)]
    pub config: MethodConfig,
    /// The event-log position the change reached (or the head, if nothing
    /// changed).
    pub position: i64,
}

/// `?min_position=` of the offered methods.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct OfferedQuery {
    /// Wait (at most 5 s) until the read models reach this event-log position.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

/// The payment methods enabled for the caller's account's country, by sort
/// order, with instructions and (manual methods) bank details, and the
/// account's saved cards.
pub async fn offered(
    app: &App,
    caller: &Caller,
    min_position: Option<i64>,
    query: Query<OfferedQuery>,
) -> Result<OfferedMethods, AppError> {
    caller.require(access::READ_PAYMENT_METHODS)?;
    let account = caller.own_account()?;
    query.parse()?;
    app.wait_for(min_position).await?;
    let holder = billing_account(app, account).await?;
    let catalog = app.catalog.get().await;
    let items = catalog
        .payment_methods_for(&holder.country)
        .into_iter()
        .filter(|c| c.enabled)
        .map(|c| OfferedMethod::new(app, c))
        .collect();
    // Stripe away does not take the configured methods with it.
    let saved_cards = super::saved_cards::cards(app, account)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, "saved cards not listed");
            Vec::new()
        });
    Ok(OfferedMethods {
        country: holder.country,
        items,
        saved_cards,
    })
}

/// A `country` path or query value: an assigned ISO 3166-1 alpha-2 code in
/// upper case, or `*`; else 422.
pub fn country_param(raw: &str) -> Result<String, AppError> {
    if is_config_country(raw) {
        Ok(raw.to_owned())
    } else {
        Err(AppError::invalid_field(
            "country",
            "country must be an assigned ISO 3166-1 alpha-2 code in upper case (\"DE\"), or *",
        ))
    }
}

/// A `method` path value; else 422.
pub fn method_param(raw: &str) -> Result<PaymentMethod, AppError> {
    PaymentMethod::parse(raw).ok_or_else(|| {
        AppError::invalid_field(
            "method",
            "method must be one of stripe, paypal, bank_transfer, local_wallet, manual",
        )
    })
}

/// `?country=` of the rows.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ConfigsQuery {
    /// Only this country's rows (`*` for the rows of every country).
    #[cfg_attr(feature = "openapi", param(pattern = r"^([A-Z]{2}|\*)$"))]
    pub country: Option<String>,
}

/// Every payment method row, by country, sort order and method.
pub async fn configs(
    app: &App,
    caller: &Caller,
    query: Query<ConfigsQuery>,
) -> Result<MethodConfigList, AppError> {
    caller.require(access::CONFIGURE_PAYMENT_METHODS)?;
    let q = query.parse()?;
    let country = q.country.as_deref().map(country_param).transpose()?;
    // Fresh from the stream, so another instance's change is seen at once.
    let catalog = app.catalog.refresh().await?;
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
    Ok(MethodConfigList {
        items: rows.into_iter().map(MethodConfig::from).collect(),
        next_cursor: None,
    })
}

/// `PUT /admin/payment-method-configs/{country}/{method}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ConfigRequest {
    /// Defaults to true.
    #[serde(default = "yes")]
    #[cfg_attr(feature = "openapi", schema(default = true))]
    pub enabled: bool,
    /// 1 to 64 bytes, not blank.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = r"\S")
    )]
    pub display_name: String,
    /// 1 to 2,000 bytes; `{amount}`, `{currency}` and `{reference}` are
    /// filled in when a payment is made.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 2000))]
    pub instructions: Option<String>,
    /// 1 to 128 bytes.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 128))]
    pub bank_name: Option<String>,
    /// 1 to 64 bytes.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub account_number: Option<String>,
    /// 1 to 64 bytes.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub routing_number: Option<String>,
    /// A BIC: 8 or 11 upper-case letters and digits.
    #[cfg_attr(feature = "openapi", schema(pattern = r"^[A-Z0-9]{8}([A-Z0-9]{3})?$"))]
    pub swift: Option<String>,
    /// 0 to 10,000; lists are sorted ascending. Defaults to 0.
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 10_000, default = 0)
    )]
    pub sort_order: i32,
}

fn yes() -> bool {
    true
}

/// Creates or replaces the payment method row of one country (or `*`).
pub async fn put_config(
    app: &App,
    caller: &Caller,
    country: &str,
    method: &str,
    input: Input<ConfigRequest>,
) -> Result<SavedMethodConfig, AppError> {
    caller.require(access::CONFIGURE_PAYMENT_METHODS)?;
    let country = country_param(country)?;
    let method = method_param(method)?;
    let r = input.parse()?.value;
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
        actor: caller.sub().to_owned(),
        now: now(),
    };
    let done = crate::catalog::run(app, caller, command).await?;
    Ok(SavedMethodConfig {
        config: MethodConfig::from(&config),
        position: app.position_of(&done).await?,
    })
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
