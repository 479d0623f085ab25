//! Catalog routes: plans, credit packages and the credit cost table. Each
//! handler extracts, calls `app::catalog`, renders.

use app::catalog::{CostRequest, HistoryQuery, PackageRequest, PlanRequest};
use axum::extract::{Path, State};
use axum::response::Response;

use super::extract::{Body, Fresh, Q};
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

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
    render::ok(&app::catalog::plans(&state, &principal).await?)
}

#[utoipa::path(
    put,
    path = "/v1/admin/plans/{slug}",
    tag = "admin",
    summary = "Create or replace a plan",
    params(
        ("slug" = String, Path, description = "The catalog entry's slug"),
    ),
    request_body = app::catalog::PlanRequest,
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
    render::ok(&app::catalog::put_plan(&state, &principal, slug, body.input()).await?)
}

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
    render::ok(&app::catalog::packages(&state, &principal).await?)
}

#[utoipa::path(
    put,
    path = "/v1/admin/credit-packages/{slug}",
    tag = "admin",
    summary = "Create or replace a credit package",
    params(
        ("slug" = String, Path, description = "The catalog entry's slug"),
    ),
    request_body = app::catalog::PackageRequest,
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
    render::ok(&app::catalog::put_package(&state, &principal, slug, body.input()).await?)
}

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
    render::ok(&app::catalog::costs(&state, &principal).await?)
}

#[utoipa::path(
    put,
    path = "/v1/admin/credit-costs/{operation}",
    tag = "admin",
    summary = "Set the cost of an operation (a new table version)",
    params(
        ("operation" = String, Path, description = "The operation key, snake_case (e.g. `article_generation`)"),
    ),
    request_body = app::catalog::CostRequest,
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
    render::ok(&app::catalog::put_cost(&state, &principal, &operation, body.input()).await?)
}

#[utoipa::path(
    get,
    path = "/v1/admin/credit-costs/history",
    tag = "admin",
    summary = "Every change of the cost table",
    params(
        app::catalog::HistoryQuery,
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
    query: Q<HistoryQuery>,
) -> Result<Response, ApiError> {
    render::ok(&app::catalog::cost_history(&state, &principal, fresh.0, query.query()).await?)
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
    let history = app::catalog::cost_history_of(&state, &principal, &operation, fresh.0).await?;
    render::ok(&history)
}
