//! Plans, credit packages and the credit cost table.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use events::{BillingCycle, CostUnit, CreditPackage, Money, OperationKey, Plan, PlanLimits, CATALOG_ID};
use ledger::{Catalog, CatalogCommand};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use store::{CommandContext, Executed};

use super::extract::{Body, Fresh};
use super::respond::{catalog_error, projection_error, service_error};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::AppState;

async fn run(state: &AppState, principal: &Principal, command: CatalogCommand) -> Result<Executed<Catalog>, ApiError> {
    let done = state
        .commands
        .execute::<Catalog>(CATALOG_ID, command, &CommandContext::new(principal.actor()), None)
        .await
        .map_err(|e| service_error(e, catalog_error))?;
    state.catalog.set(done.state.clone()).await;
    state.projector.wake();
    Ok(done)
}

fn with_position<T: serde::Serialize>(status: StatusCode, value: &T, position: i64) -> Result<Response, ApiError> {
    let mut body = serde_json::to_value(value).map_err(|_| ApiError::Internal)?;
    body["position"] = json!(position);
    Ok((status, Json(body)).into_response())
}

/// `GET /v1/plans`: active plans for everyone; developers see all.
pub async fn plans(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    let catalog = state.catalog.get().await;
    let all = principal.role() == Role::Developer;
    let items: Vec<&Plan> = catalog.plans().filter(|p| all || p.active).collect();
    Ok(Json(json!({ "items": items, "next_cursor": null })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanRequest {
    pub name: String,
    pub price: Money,
    pub billing_cycle: BillingCycle,
    pub included_credits: i64,
    pub extra_credit_price: Option<Money>,
    #[serde(default)]
    pub allow_credit_topup: bool,
    #[serde(default)]
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

pub async fn put_plan(
    State(state): State<AppState>,
    principal: Principal,
    Path(slug): Path<String>,
    body: Body<PlanRequest>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
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
pub async fn packages(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    let catalog = state.catalog.get().await;
    let all = principal.role() == Role::Developer;
    let items: Vec<&CreditPackage> = catalog.packages().filter(|p| all || p.active).collect();
    Ok(Json(json!({ "items": items, "next_cursor": null })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageRequest {
    pub name: String,
    pub credits: i64,
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

pub async fn put_package(
    State(state): State<AppState>,
    principal: Principal,
    Path(slug): Path<String>,
    body: Body<PackageRequest>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
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
pub async fn costs(State(state): State<AppState>, principal: Principal) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
    let catalog = state.catalog.refresh().await.map_err(super::respond::store_error)?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostRequest {
    pub cost: i64,
    pub unit: CostUnit,
}

pub async fn put_cost(
    State(state): State<AppState>,
    principal: Principal,
    Path(operation): Path<String>,
    body: Body<CostRequest>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
    let operation = OperationKey::parse(&operation).map_err(|e| ApiError::invalid_field("operation", e.reason))?;
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
    let entry = done.state.cost(&operation).ok_or(ApiError::Internal)?;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    pub operation: Option<String>,
    /// Read by the `Fresh` extractor; named here so it is not an unknown field.
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

pub async fn cost_history(
    State(state): State<AppState>,
    principal: Principal,
    _fresh: Fresh,
    q: Result<Query<HistoryQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
    let Query(q) = q.map_err(|e| ApiError::invalid_field("query", e.body_text()))?;
    history(&state, q.operation.as_deref()).await
}

pub async fn cost_history_of(
    State(state): State<AppState>,
    principal: Principal,
    _fresh: Fresh,
    Path(operation): Path<String>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
    history(&state, Some(&operation)).await
}
