//! Plans, credit packages and the credit cost table: everyone reads the
//! active rows, staff change them; every change is a catalog event, so the
//! table is versioned and audited.

use std::collections::BTreeMap;

use events::{
    BillingCycle, CostUnit, CreditPackage, Currency, Money, OperationKey, Plan, PlanLimits,
    CATALOG_ID,
};
use ledger::{Catalog, CatalogCommand};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use store::{CommandContext, Executed};

use crate::access;
use crate::caller::Caller;
use crate::error::AppError;
use crate::input::{Input, Query};
use crate::{now, App};

/// The name of a catalog command, for the command histogram.
pub fn command_name(command: &CatalogCommand) -> &'static str {
    use CatalogCommand as C;
    match command {
        C::SeedDefaults { .. } => "seed_catalog",
        C::UpsertPlan { .. } => "upsert_plan",
        C::UpsertPackage { .. } => "upsert_package",
        C::SetCreditCost { .. } | C::UpdateCreditCost { .. } => "set_credit_cost",
        C::ConfigurePaymentMethod { .. } => "configure_payment_method",
    }
}

/// Runs a catalog command as the caller, then keeps this instance's cached
/// catalog up to date.
pub async fn run(
    app: &App,
    caller: &Caller,
    command: CatalogCommand,
) -> Result<Executed<Catalog>, AppError> {
    let name = command_name(&command);
    let done = app
        .execute_timed::<Catalog>(
            name,
            CATALOG_ID,
            command,
            &CommandContext::new(caller.actor()),
        )
        .await?;
    if let Some(catalog) = &done.state {
        app.catalog.set(catalog.clone()).await;
    }
    Ok(done)
}

/// Writes the default plans, packages and cost table once per database
/// (start-up); how many events that took.
pub async fn seed(app: &App) -> Result<usize, AppError> {
    let caller = Caller::system("ledger-server");
    let done = run(
        app,
        &caller,
        CatalogCommand::SeedDefaults {
            actor: "ledger-server".into(),
            now: chrono::Utc::now(),
        },
    )
    .await?;
    Ok(done.events.len())
}

/// `value` as JSON with the `position` of the write that made it.
fn with_position(mut body: Value, position: i64) -> Result<Value, AppError> {
    body["position"] = json!(position);
    Ok(body)
}

/// A plan or package as JSON, its `prices` listing every currency it is
/// sold in (the base price's included).
fn priced<T: serde::Serialize>(
    value: &T,
    prices: BTreeMap<Currency, Decimal>,
) -> Result<Value, AppError> {
    let mut body = serde_json::to_value(value).map_err(|_| AppError::Internal)?;
    body["prices"] = serde_json::to_value(prices).map_err(|_| AppError::Internal)?;
    Ok(body)
}

pub fn plan_json(plan: &Plan) -> Result<Value, AppError> {
    priced(plan, plan.all_prices())
}

pub fn package_json(package: &CreditPackage) -> Result<Value, AppError> {
    priced(package, package.all_prices())
}

/// Other-currency prices of a request: each a valid amount (422 naming
/// `prices.{currency}` otherwise).
fn check_prices(prices: &BTreeMap<Currency, Decimal>) -> Result<(), AppError> {
    for (currency, amount) in prices {
        crate::input::money(&format!("prices.{}", currency.as_str()), *amount, false)?;
    }
    Ok(())
}

/// Plans: the active ones, or every one for staff.
pub async fn plans(app: &App, caller: &Caller) -> Result<Value, AppError> {
    let catalog = app.catalog.get().await;
    let all = access::SEE_INACTIVE_CATALOG.contains(&caller.role());
    let items = catalog
        .plans()
        .filter(|p| all || p.active)
        .map(plan_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "items": items, "next_cursor": null }))
}

/// `PUT /admin/plans/{slug}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Money))]
    pub price: Money,
    /// The price in other currencies, by ISO 4217 code (`{"EUR": "27.00"}`):
    /// an account billed in one of them pays that price.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub prices: BTreeMap<Currency, Decimal>,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::BillingCycle))]
    pub billing_cycle: BillingCycle,
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub included_credits: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::Money>))]
    pub extra_credit_price: Option<Money>,
    #[serde(default)]
    pub allow_credit_topup: bool,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::PlanLimits))]
    pub limits: PlanLimits,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default = "yes")]
    #[cfg_attr(feature = "openapi", schema(default = true))]
    pub active: bool,
    pub stripe_product_id: Option<String>,
    pub stripe_price_id: Option<String>,
}

fn yes() -> bool {
    true
}

/// Creates or replaces a plan (staff).
pub async fn put_plan(
    app: &App,
    caller: &Caller,
    slug: String,
    input: Input<PlanRequest>,
) -> Result<Value, AppError> {
    caller.require(access::EDIT_CATALOG)?;
    let r = input.parse()?.value;
    crate::input::money("price.amount", r.price.amount, false)?;
    check_prices(&r.prices)?;
    if let Some(extra) = &r.extra_credit_price {
        crate::input::money("extra_credit_price.amount", extra.amount, false)?;
    }
    let plan = Plan {
        slug,
        name: r.name,
        price: r.price,
        prices: r.prices,
        billing_cycle: r.billing_cycle,
        included_credits: r.included_credits,
        extra_credit_price: r.extra_credit_price,
        allow_credit_topup: r.allow_credit_topup,
        limits: r.limits,
        features: r.features,
        active: r.active,
        stripe_product_id: r.stripe_product_id,
        stripe_price_id: r.stripe_price_id,
    };
    let done = run(
        app,
        caller,
        CatalogCommand::UpsertPlan {
            plan: plan.clone(),
            actor: caller.sub().to_owned(),
            now: now(),
        },
    )
    .await?;
    let position = app.position_of(&done).await?;
    with_position(plan_json(&plan)?, position)
}

/// Credit packages: the active ones, or every one for staff.
pub async fn packages(app: &App, caller: &Caller) -> Result<Value, AppError> {
    let catalog = app.catalog.get().await;
    let all = access::SEE_INACTIVE_CATALOG.contains(&caller.role());
    let items = catalog
        .packages()
        .filter(|p| all || p.active)
        .map(package_json)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!({ "items": items, "next_cursor": null }))
}

/// `PUT /admin/credit-packages/{slug}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PackageRequest {
    pub name: String,
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub credits: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::Money))]
    pub price: Money,
    /// The price in other currencies, by ISO 4217 code.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub prices: BTreeMap<Currency, Decimal>,
    /// A percent between 0 and 100.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = r"^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)$"))]
    pub discount_percent: Decimal,
    #[serde(default = "yes")]
    #[cfg_attr(feature = "openapi", schema(default = true))]
    pub active: bool,
    #[serde(default)]
    pub featured: bool,
    pub description: Option<String>,
    #[serde(default)]
    pub features: Vec<String>,
}

/// Creates or replaces a credit package (staff).
pub async fn put_package(
    app: &App,
    caller: &Caller,
    slug: String,
    input: Input<PackageRequest>,
) -> Result<Value, AppError> {
    caller.require(access::EDIT_CATALOG)?;
    let r = input.parse()?.value;
    crate::input::money("price.amount", r.price.amount, false)?;
    check_prices(&r.prices)?;
    let package = CreditPackage {
        slug,
        name: r.name,
        credits: r.credits,
        price: r.price,
        prices: r.prices,
        discount_percent: r.discount_percent,
        active: r.active,
        featured: r.featured,
        description: r.description,
        features: r.features,
    };
    let done = run(
        app,
        caller,
        CatalogCommand::UpsertPackage {
            package: package.clone(),
            actor: caller.sub().to_owned(),
            now: now(),
        },
    )
    .await?;
    let position = app.position_of(&done).await?;
    with_position(package_json(&package)?, position)
}

/// `clustering` → `Clustering`, `idea_generation` → `Idea generation`: the
/// name shown for an operation nobody named.
fn default_display_name(operation: &str) -> String {
    let text = operation.replace('_', " ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

/// A cost row as staff read it; `credits_cost` is the SaaS plan's name of
/// `cost`.
fn cost_json(c: &events::CostEntry, d: &events::CostDetails) -> Value {
    json!({
        "operation": c.operation,
        "display_name": d
            .display_name
            .clone()
            .unwrap_or_else(|| default_display_name(c.operation.as_str())),
        "description": d.description,
        "is_active": d.is_active,
        "cost": c.cost,
        "credits_cost": c.cost,
        "unit": c.unit,
        "unit_size": c.unit.unit_size(),
        "version": c.version,
    })
}

/// The cost table in force and its version (staff).
pub async fn costs(app: &App, caller: &Caller) -> Result<Value, AppError> {
    caller.require(access::READ_COSTS)?;
    let catalog = app.catalog.refresh().await?;
    let items: Vec<_> = catalog
        .costs()
        .map(|c| cost_json(c, &catalog.cost_details(&c.operation)))
        .collect();
    Ok(json!({ "version": catalog.cost_version(), "items": items }))
}

/// `PUT /admin/credit-costs/{operation}`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CostRequest {
    /// Credits per unit (required for a new operation; absent: unchanged).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000_000))]
    pub cost: Option<i64>,
    /// The SaaS plan's name for `cost`; either may be sent (the same value
    /// if both are).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1_000_000))]
    pub credits_cost: Option<i64>,
    /// Required for a new operation; absent: unchanged.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::CostUnit>))]
    pub unit: Option<CostUnit>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub display_name: Option<String>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub description: Option<String>,
    /// False: deductions and holds of this operation are refused with 422
    /// `operation_inactive`.
    pub is_active: Option<bool>,
}

fn operation_key(raw: &str) -> Result<OperationKey, AppError> {
    OperationKey::parse(raw).map_err(|e| AppError::invalid_field("operation", e.reason))
}

/// Sets an operation's cost: a new version of the table (staff).
pub async fn put_cost(
    app: &App,
    caller: &Caller,
    operation: &str,
    input: Input<CostRequest>,
) -> Result<Value, AppError> {
    caller.require(access::EDIT_CATALOG)?;
    let body = input.parse()?;
    let operation = operation_key(operation)?;
    let req = body.value;
    let cost = match (req.cost, req.credits_cost) {
        (Some(a), Some(b)) if a != b => {
            return Err(AppError::invalid_field(
                "credits_cost",
                "cost and credits_cost are one value: send one, or the same in both",
            ))
        }
        (a, b) => a.or(b),
    };
    let done = run(
        app,
        caller,
        CatalogCommand::UpdateCreditCost {
            operation: operation.clone(),
            cost,
            unit: req.unit,
            display_name: req.display_name,
            description: req.description,
            is_active: req.is_active,
            actor: caller.sub().to_owned(),
            now: now(),
        },
    )
    .await?;
    let position = app.position_of(&done).await?;
    let catalog = done.state.as_ref().ok_or(AppError::Internal)?;
    let entry = catalog.cost(&operation).ok_or(AppError::Internal)?;
    with_position(
        cost_json(entry, &catalog.cost_details(&operation)),
        position,
    )
}

/// `GET /admin/credit-costs/history?operation=`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub operation: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    // Read by the transport; named here so it is not an unknown field.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

async fn history(app: &App, operation: Option<&str>) -> Result<Value, AppError> {
    let items = app.read_models.cost_history(operation).await?;
    Ok(json!({ "items": items, "next_cursor": null }))
}

/// Every change of the cost table, or one operation's (staff).
pub async fn cost_history(
    app: &App,
    caller: &Caller,
    min_position: Option<i64>,
    query: Query<HistoryQuery>,
) -> Result<Value, AppError> {
    caller.require(access::READ_COSTS)?;
    app.wait_for(min_position).await?;
    let q = query.parse()?;
    history(app, q.operation.as_deref()).await
}

/// The changes of one operation's cost; 404 for an operation that has
/// none (staff).
pub async fn cost_history_of(
    app: &App,
    caller: &Caller,
    operation: &str,
    min_position: Option<i64>,
) -> Result<Value, AppError> {
    caller.require(access::READ_COSTS)?;
    let operation = operation_key(operation)?;
    if app.catalog.cost(&operation).await?.is_none() {
        return Err(AppError::NotFound(format!(
            "no cost is set for operation {operation}"
        )));
    }
    app.wait_for(min_position).await?;
    history(app, Some(operation.as_str())).await
}
