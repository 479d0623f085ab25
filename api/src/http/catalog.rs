//! Plans, credit packages and the credit cost table.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use events::{
    BillingCycle, CostUnit, CreditPackage, Money, OperationKey, Plan, PlanLimits, CATALOG_ID,
};
use ledger::{Catalog, CatalogCommand};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use store::{CommandContext, Executed};

use super::extract::{Body, Fresh, Q};
use super::openapi as doc;
use super::respond::{catalog_error, projection_error, service_error};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::AppState;

/// Runs a catalog command as the caller, then keeps this instance's cached
/// catalog and the projector up to date.
pub(super) async fn run(
    state: &AppState,
    principal: &Principal,
    command: CatalogCommand,
) -> Result<Executed<Catalog>, ApiError> {
    let name = super::metrics::catalog_command_name(&command);
    let done = super::metrics::time_command(
        name,
        state.commands.execute::<Catalog>(
            CATALOG_ID,
            command,
            &CommandContext::new(principal.actor()),
            None,
        ),
    )
    .await
    .map_err(|e| service_error(e, catalog_error))?;
    if let Some(catalog) = &done.state {
        state.catalog.set(catalog.clone()).await;
    }
    state.projector.wake();
    Ok(done)
}

fn with_position<T: serde::Serialize>(
    status: StatusCode,
    value: &T,
    position: i64,
) -> Result<Response, ApiError> {
    let mut body = serde_json::to_value(value).map_err(|_| ApiError::Internal)?;
    body["position"] = json!(position);
    Ok((status, Json(body)).into_response())
}

/// `GET /v1/plans`: active plans for everyone; developers see all.
#[utoipa::path(
    get,
    path = "/v1/plans",
    tag = "catalog",
    summary = "Plans (active ones; developers see all)",
    responses(
        (status = 200, description = "The plans", body = doc::PlanList),
    ),
)]
pub async fn plans(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    let catalog = state.catalog.get().await;
    let all = principal.role() == Role::Developer;
    let items: Vec<&Plan> = catalog.plans().filter(|p| all || p.active).collect();
    Ok(Json(json!({ "items": items, "next_cursor": null })).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub name: String,
    #[schema(value_type = doc::Money)]
    pub price: Money,
    #[schema(value_type = doc::BillingCycle)]
    pub billing_cycle: BillingCycle,
    pub included_credits: i64,
    #[schema(value_type = Option<doc::Money>)]
    pub extra_credit_price: Option<Money>,
    #[serde(default)]
    pub allow_credit_topup: bool,
    #[serde(default)]
    #[schema(value_type = doc::PlanLimits)]
    pub limits: PlanLimits,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default = "yes")]
    pub active: bool,
    pub stripe_product_id: Option<String>,
    pub stripe_price_id: Option<String>,
}

fn yes() -> bool {
    true
}

#[utoipa::path(
    put,
    path = "/v1/admin/plans/{slug}",
    tag = "admin",
    summary = "Create or replace a plan",
    params(
        ("slug" = String, Path, description = "The catalog entry's slug"),
    ),
    request_body = PlanRequest,
    responses(
        (status = 200, description = "The plan, saved", body = doc::SavedPlan),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn put_plan(
    State(state): State<AppState>,
    principal: Principal,
    Path(slug): Path<String>,
    body: Body<PlanRequest>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
    let body = body.parse()?;
    let r = body.value;
    let plan = Plan {
        slug,
        name: r.name,
        price: r.price,
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
        &state,
        &principal,
        CatalogCommand::UpsertPlan {
            plan: plan.clone(),
            actor: principal.sub().to_owned(),
            now: super::now(),
        },
    )
    .await?;
    let position = state.position_of(&done).await?;
    with_position(StatusCode::OK, &plan, position)
}

/// `GET /v1/billing/credits/packages/`: active packages for everyone;
/// developers see all.
#[utoipa::path(
    get,
    path = "/v1/billing/credits/packages",
    tag = "catalog",
    summary = "Credit packages (active ones; developers see all)",
    responses(
        (status = 200, description = "The packages", body = doc::PackageList),
    ),
)]
pub async fn packages(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    let catalog = state.catalog.get().await;
    let all = principal.role() == Role::Developer;
    let items: Vec<&CreditPackage> = catalog.packages().filter(|p| all || p.active).collect();
    Ok(Json(json!({ "items": items, "next_cursor": null })).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PackageRequest {
    pub name: String,
    pub credits: i64,
    #[schema(value_type = doc::Money)]
    pub price: Money,
    #[serde(default)]
    pub discount_percent: Decimal,
    #[serde(default = "yes")]
    pub active: bool,
    #[serde(default)]
    pub featured: bool,
    pub description: Option<String>,
    #[serde(default)]
    pub features: Vec<String>,
}

#[utoipa::path(
    put,
    path = "/v1/admin/credit-packages/{slug}",
    tag = "admin",
    summary = "Create or replace a credit package",
    params(
        ("slug" = String, Path, description = "The catalog entry's slug"),
    ),
    request_body = PackageRequest,
    responses(
        (status = 200, description = "The package, saved", body = doc::SavedPackage),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn put_package(
    State(state): State<AppState>,
    principal: Principal,
    Path(slug): Path<String>,
    body: Body<PackageRequest>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
    let body = body.parse()?;
    let r = body.value;
    let package = CreditPackage {
        slug,
        name: r.name,
        credits: r.credits,
        price: r.price,
        discount_percent: r.discount_percent,
        active: r.active,
        featured: r.featured,
        description: r.description,
        features: r.features,
    };
    let done = run(
        &state,
        &principal,
        CatalogCommand::UpsertPackage {
            package: package.clone(),
            actor: principal.sub().to_owned(),
            now: super::now(),
        },
    )
    .await?;
    let position = state.position_of(&done).await?;
    with_position(StatusCode::OK, &package, position)
}

/// `GET /v1/admin/credit-costs`: the table in force and its version.
#[utoipa::path(
    get,
    path = "/v1/admin/credit-costs",
    tag = "admin",
    summary = "The credit cost table in force",
    responses(
        (status = 200, description = "The cost table and its version", body = doc::CostTable),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
    ),
)]
pub async fn costs(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
    let catalog = state
        .catalog
        .refresh()
        .await
        .map_err(super::respond::store_error)?;
    let items: Vec<_> = catalog
        .costs()
        .map(|c| {
            json!({
                "operation": c.operation,
                "cost": c.cost,
                "unit": c.unit,
                "unit_size": c.unit.unit_size(),
                "version": c.version,
            })
        })
        .collect();
    Ok(Json(json!({ "version": catalog.cost_version(), "items": items })).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CostRequest {
    pub cost: i64,
    #[schema(value_type = doc::CostUnit)]
    pub unit: CostUnit,
}

#[utoipa::path(
    put,
    path = "/v1/admin/credit-costs/{operation}",
    tag = "admin",
    summary = "Set the cost of an operation (a new table version)",
    params(
        ("operation" = String, Path, description = "The operation key, snake_case (e.g. `article_generation`)"),
    ),
    request_body = CostRequest,
    responses(
        (status = 200, description = "The row, saved", body = doc::SavedCost),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn put_cost(
    State(state): State<AppState>,
    principal: Principal,
    Path(operation): Path<String>,
    body: Body<CostRequest>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
    let body = body.parse()?;
    let operation = OperationKey::parse(&operation)
        .map_err(|e| ApiError::invalid_field("operation", e.reason))?;
    let done = run(
        &state,
        &principal,
        CatalogCommand::SetCreditCost {
            operation: operation.clone(),
            cost: body.value.cost,
            unit: body.value.unit,
            actor: principal.sub().to_owned(),
            now: super::now(),
        },
    )
    .await?;
    let position = state.position_of(&done).await?;
    let entry = done
        .state
        .as_ref()
        .and_then(|c| c.cost(&operation))
        .ok_or(ApiError::Internal)?;
    with_position(
        StatusCode::OK,
        &json!({
            "operation": entry.operation,
            "cost": entry.cost,
            "unit": entry.unit,
            "unit_size": entry.unit.unit_size(),
            "version": entry.version,
        }),
        position,
    )
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub operation: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    // Read by the `Fresh` extractor; named here so it is not an unknown field.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

async fn history(state: &AppState, operation: Option<&str>) -> Result<Response, ApiError> {
    let items = state
        .read_models
        .cost_history(operation)
        .await
        .map_err(projection_error)?;
    Ok(Json(json!({ "items": items, "next_cursor": null })).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/admin/credit-costs/history",
    tag = "admin",
    summary = "Every change of the cost table",
    params(
        HistoryQuery,
    ),
    responses(
        (status = 200, description = "The changes", body = doc::CostHistory),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid, or `min_position` is not an integer; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn cost_history(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    q: Q<HistoryQuery>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
    fresh.wait(&state).await?;
    let q = q.parse()?;
    history(&state, q.operation.as_deref()).await
}

#[utoipa::path(
    get,
    path = "/v1/admin/credit-costs/{operation}/history",
    tag = "admin",
    summary = "Changes of one operation's cost",
    params(
        ("operation" = String, Path, description = "The operation key, snake_case (e.g. `article_generation`)"),
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "The changes", body = doc::CostHistory),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid, or `min_position` is not an integer; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn cost_history_of(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    Path(operation): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
    let operation = OperationKey::parse(&operation)
        .map_err(|e| ApiError::invalid_field("operation", e.reason))?;
    if state
        .catalog
        .cost(&operation)
        .await
        .map_err(super::respond::store_error)?
        .is_none()
    {
        return Err(ApiError::NotFound(format!(
            "no cost is set for operation {operation}"
        )));
    }
    fresh.wait(&state).await?;
    history(&state, Some(operation.as_str())).await
}
