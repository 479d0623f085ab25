//! Opening, reading and administering accounts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use events::{AccountEvent, AccountId, AccountStatus, BillingAddress, CountryCode};
use ledger::account::{AccountPatch, OpenAccount};
use ledger::{AccountCommand, CreditAccount};
use projections::{AccountFilter, PageRequest, PAGE_LIMIT_DEFAULT};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::json;
use store::{CommandContext, IdempotencyClaim, Reservation, ServiceError};

use super::extract::{account_id, Body, Fresh, IdemKey, Q};
use super::openapi as doc;
use super::respond::{account_error, claim, outcome, projection_error, service_error, store_error};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::AppState;

const READERS: &[Role] = &[
    Role::Developer,
    Role::Owner,
    Role::Admin,
    Role::Editor,
    Role::Viewer,
];
const MANAGERS: &[Role] = &[Role::Developer, Role::Owner, Role::Admin];
const SLUG_BYTES_MAX: usize = 64;
const NAME_BYTES_MAX: usize = 200;
const EMAIL_BYTES_MAX: usize = 254;

fn check_len(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > max {
        return Err(ApiError::invalid_field(
            field,
            format!("{field} must be 1 to {max} bytes"),
        ));
    }
    Ok(())
}

fn check_email(value: &str) -> Result<(), ApiError> {
    check_len("billing_email", value, EMAIL_BYTES_MAX)?;
    let ok = value
        .split_once('@')
        .is_some_and(|(user, host)| !user.is_empty() && host.contains('.') && !value.contains(' '));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "billing_email",
            "billing_email must be an email address",
        ))
    }
}

fn check_slug(slug: &str) -> Result<(), ApiError> {
    let ok = !slug.is_empty()
        && slug.len() <= SLUG_BYTES_MAX
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_field(
            "slug",
            format!("slug must be 1 to {SLUG_BYTES_MAX} characters of a-z, 0-9 and inner hyphens"),
        ))
    }
}

fn check_tax_rate(rate: Decimal) -> Result<(), ApiError> {
    if rate < Decimal::ZERO || rate > Decimal::ONE_HUNDRED {
        return Err(ApiError::invalid_field(
            "tax_rate",
            "tax_rate is a percent between 0 and 100",
        ));
    }
    Ok(())
}

fn country(raw: &str) -> Result<CountryCode, ApiError> {
    CountryCode::parse(raw).map_err(|e| ApiError::invalid_field("country", e.reason))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    pub name: String,
    pub slug: String,
    #[serde(default = "free")]
    #[schema(default = "free")]
    pub plan: String,
    pub country: String,
    pub billing_email: String,
    pub owner_user_id: String,
    #[schema(value_type = Option<doc::AccountStatus>)]
    pub status: Option<AccountStatus>,
    pub credit_limit: Option<i64>,
    pub low_balance_threshold: Option<i64>,
    pub tax_rate: Option<Decimal>,
}

fn free() -> String {
    "free".into()
}

fn opened(e: &AccountEvent) -> Option<serde_json::Value> {
    match e {
        AccountEvent::AccountOpened(o) => Some(json!({
            "account_id": o.account_id,
            "name": o.name,
            "slug": o.slug,
            "owner_user_id": o.owner_user_id,
            "plan": o.plan,
            "status": o.status,
            "country": o.country,
            "billing_email": o.billing_email,
            "credit_limit": o.credit_limit,
            "low_balance_threshold": o.low_balance_threshold,
            "tax_rate": o.tax_rate,
            "created_at": o.opened_at,
        })),
        _ => None,
    }
}

/// `POST /v1/accounts`: a new account with a UUIDv7 id. The slug is unique.
#[utoipa::path(
    post,
    path = "/v1/accounts",
    tag = "accounts",
    summary = "Open an account",
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Optional. A retry with the same key and body replays the first response; another body is 409 idempotency_key_reused"),
    ),
    request_body = OpenRequest,
    responses(
        (status = 201, description = "The account, opened", body = doc::OpenedAccount, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the slug is taken; `idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn open(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    body: Body<OpenRequest>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
    let body = body.parse()?;
    let req = body.value;
    check_len("name", &req.name, NAME_BYTES_MAX)?;
    check_slug(&req.slug)?;
    check_email(&req.billing_email)?;
    check_len("owner_user_id", &req.owner_user_id, NAME_BYTES_MAX)?;
    let country = country(&req.country)?;
    let tax_rate = req.tax_rate.unwrap_or(Decimal::ZERO);
    check_tax_rate(tax_rate)?;
    if matches!(
        req.status,
        Some(AccountStatus::Suspended | AccountStatus::Cancelled)
    ) {
        return Err(ApiError::invalid_field(
            "status",
            "an account opens as trial, active or past_due",
        ));
    }
    let plan = state
        .catalog
        .get()
        .await
        .plan(&req.plan)
        .cloned()
        .ok_or_else(|| ApiError::invalid_field("plan", format!("unknown plan {:?}", req.plan)))?;
    let account = AccountId::new_v7();
    let command = AccountCommand::OpenAccount(OpenAccount {
        account_id: account,
        name: req.name,
        slug: req.slug.clone(),
        owner_user_id: req.owner_user_id,
        plan: plan.slug.clone(),
        status: req.status.unwrap_or(AccountStatus::Active),
        country,
        billing_email: req.billing_email,
        credit_limit: req.credit_limit.unwrap_or(0),
        low_balance_threshold: req
            .low_balance_threshold
            .unwrap_or(plan.included_credits / 10),
        tax_rate,
        now: super::now(),
    });
    let slug = req.slug;
    let claim = key
        .0
        .as_ref()
        .map(|k| claim(k, "accounts", &body.canonical));
    // The slug is unique; so is an open's key per caller, since there is no
    // account yet to scope it to.
    let mut reservations = vec![Reservation {
        scope: SLUG_SCOPE.into(),
        value: slug.clone(),
    }];
    if let Some(k) = &key.0 {
        reservations.push(Reservation {
            scope: OPEN_KEY_SCOPE.into(),
            value: open_key(&principal, k.as_str()),
        });
    }
    let ctx = CommandContext::new(principal.actor());
    let name = command.name();
    let result = super::metrics::time_command(
        name,
        state.submit(
            &account.to_string(),
            command,
            &ctx,
            claim.as_ref(),
            &reservations,
        ),
    )
    .await;
    match result {
        Ok(done) => {
            state.projector.wake();
            outcome(StatusCode::CREATED, &done, opened)
        }
        // A retry of the same open (same key, same body) finds the account
        // its first attempt created, through the key it reserved.
        Err(ServiceError::Reserved { .. }) if claim.is_some() => {
            let claim = claim.as_ref().ok_or(ApiError::Internal)?;
            replay_open(&state, &principal, &slug, claim).await
        }
        Err(e) => Err(service_error(e, account_error)),
    }
}

const SLUG_SCOPE: &str = "account slug";

const OPEN_KEY_SCOPE: &str = "account open key";

fn open_key(principal: &Principal, key: &str) -> String {
    format!("{}:{key}", principal.sub())
}

async fn replay_open(
    state: &AppState,
    principal: &Principal,
    slug: &str,
    claim: &IdempotencyClaim,
) -> Result<Response, ApiError> {
    let taken = || ApiError::Conflict(format!("account slug {slug:?} is already taken"));
    let owner = state
        .store
        .reservation_owner(OPEN_KEY_SCOPE, &open_key(principal, claim.key.as_str()))
        .await
        .map_err(store_error)?
        .ok_or_else(taken)?;
    let record = state
        .store
        .find_key(&owner, claim.key.as_str())
        .await
        .map_err(store_error)?
        .ok_or_else(taken)?;
    if record.request_hash != claim.request_hash {
        return Err(ApiError::IdempotencyKeyReused);
    }
    let event: AccountEvent =
        serde_json::from_value(record.payload).map_err(|_| ApiError::Internal)?;
    let done = store::Executed::<CreditAccount> {
        state: None,
        events: Vec::new(),
        replayed: Some((event, record.position)),
    };
    outcome(StatusCode::CREATED, &done, opened)
}

async fn read_account(state: &AppState, account: AccountId) -> Result<Response, ApiError> {
    let view = state
        .read_models
        .account(&account.to_string())
        .await
        .map_err(projection_error)?
        .ok_or_else(|| ApiError::NotFound("account not found".into()))?;
    Ok(Json(view).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}",
    tag = "accounts",
    summary = "An account",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "The account", body = doc::Account),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid, or `min_position` is not an integer; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(READERS, account_id(&account)?)?;
    fresh.wait(&state).await?;
    read_account(&state, account).await
}

#[utoipa::path(
    get,
    path = "/v1/account/settings",
    tag = "accounts",
    summary = "The token's account",
    params(
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "The account", body = doc::Account),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account (use the `/v1/accounts/{account_id}` route), or a query value is invalid", body = doc::ErrorBody),
    ),
)]
pub async fn get_own(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
) -> Result<Response, ApiError> {
    principal.require(READERS)?;
    fresh.wait(&state).await?;
    let account = principal.own_account()?;
    read_account(&state, account).await
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    pub name: Option<String>,
    pub billing_email: Option<String>,
    #[schema(value_type = Option<doc::BillingAddress>)]
    pub billing_address: Option<BillingAddress>,
    pub tax_id: Option<String>,
    pub tax_rate: Option<Decimal>,
    pub country: Option<String>,
    pub credit_limit: Option<i64>,
    pub low_balance_threshold: Option<i64>,
}

async fn patch_account(
    state: &AppState,
    principal: &Principal,
    account: AccountId,
    req: PatchRequest,
) -> Result<Response, ApiError> {
    let empty = req.name.is_none()
        && req.billing_email.is_none()
        && req.billing_address.is_none()
        && req.tax_id.is_none()
        && req.tax_rate.is_none()
        && req.country.is_none()
        && req.credit_limit.is_none()
        && req.low_balance_threshold.is_none();
    if empty {
        return Err(ApiError::bad_request(
            "the patch changes nothing: name at least one field",
        ));
    }
    if let Some(n) = &req.name {
        check_len("name", n, NAME_BYTES_MAX)?;
    }
    if let Some(e) = &req.billing_email {
        check_email(e)?;
    }
    if let Some(t) = &req.tax_id {
        check_len("tax_id", t, 64)?;
    }
    if let Some(r) = req.tax_rate {
        check_tax_rate(r)?;
    }
    // The credit limit is a risk setting: only the platform changes it.
    if req.credit_limit.is_some() && principal.role() != Role::Developer {
        return Err(ApiError::Forbidden(
            "only a developer may change the credit limit".into(),
        ));
    }
    let country = req.country.as_deref().map(country).transpose()?;
    let command = AccountCommand::UpdateAccount {
        patch: AccountPatch {
            name: req.name,
            billing_email: req.billing_email,
            billing_address: req.billing_address,
            tax_id: req.tax_id,
            tax_rate: req.tax_rate,
            country,
            credit_limit: req.credit_limit,
            low_balance_threshold: req.low_balance_threshold,
        },
        now: super::now(),
    };
    let done = state.run(principal, account, command, None, &[]).await?;
    let position = state.position_of(&done).await?;
    // Answer from the read model once it has this write.
    state
        .projector
        .wait_for(
            position,
            std::time::Duration::from_millis(super::extract::MIN_POSITION_WAIT_MILLIS_MAX),
        )
        .await;
    let view = state
        .read_models
        .account(&account.to_string())
        .await
        .map_err(projection_error)?
        .ok_or_else(|| ApiError::NotFound("account not found".into()))?;
    let mut body = serde_json::to_value(view).map_err(|_| ApiError::Internal)?;
    body["position"] = json!(position);
    Ok(Json(body).into_response())
}

#[utoipa::path(
    patch,
    path = "/v1/accounts/{account_id}",
    tag = "accounts",
    summary = "Update an account (absent fields are unchanged)",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
    ),
    request_body = PatchRequest,
    responses(
        (status = 200, description = "The account, updated", body = doc::UpdatedAccount),
        (status = 403, description = "`forbidden`: the role may not call this, or only a developer may change `credit_limit`", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the account is cancelled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn patch(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    body: Body<PatchRequest>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(MANAGERS, account_id(&account)?)?;
    let body = body.parse()?;
    patch_account(&state, &principal, account, body.value).await
}

#[utoipa::path(
    patch,
    path = "/v1/account/settings",
    tag = "accounts",
    summary = "Update the token's account",
    request_body = PatchRequest,
    responses(
        (status = 200, description = "The account, updated", body = doc::UpdatedAccount),
        (status = 403, description = "`forbidden`: the role may not call this, or only a developer may change `credit_limit`", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the account is cancelled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account (use the `/v1/accounts/{account_id}` route), or a query value is invalid", body = doc::ErrorBody),
    ),
)]
pub async fn patch_own(
    State(state): State<AppState>,
    principal: Principal,
    body: Body<PatchRequest>,
) -> Result<Response, ApiError> {
    principal.require(MANAGERS)?;
    let body = body.parse()?;
    let account = principal.own_account()?;
    patch_account(&state, &principal, account, body.value).await
}

async fn read_limits(state: &AppState, account: AccountId) -> Result<Response, ApiError> {
    let view = state
        .read_models
        .balance(&account.to_string(), Utc::now())
        .await
        .map_err(projection_error)?
        .ok_or_else(|| ApiError::NotFound("account not found".into()))?;
    let catalog = state.catalog.get().await;
    let plan = catalog.plan(&view.plan);
    Ok(Json(json!({
        "account_id": view.account_id,
        "plan": view.plan,
        "limits": plan.map(|p| &p.limits),
        "features": plan.map(|p| &p.features),
        "credits": {
            "included_per_period": plan.map(|p| p.included_credits),
            "period": view.current_period.period,
            "granted_this_period": view.current_period.granted,
            "used_this_period": view.current_period.used,
            "balance": view.balance,
            "available": view.available,
        },
        // Users, sites, industries and author profiles live in the SaaS
        // back end; the ledger does not count them.
        "current": { "users": null, "sites": null, "industries": null, "author_profiles": null },
    }))
    .into_response())
}

#[utoipa::path(
    get,
    path = "/v1/accounts/{account_id}/limits",
    tag = "accounts",
    summary = "Plan limits and current counts",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "The limits", body = doc::Limits),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid, or `min_position` is not an integer; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn limits(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    Path(account): Path<String>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(READERS, account_id(&account)?)?;
    fresh.wait(&state).await?;
    read_limits(&state, account).await
}

#[utoipa::path(
    get,
    path = "/v1/account/limits",
    tag = "accounts",
    summary = "Plan limits of the token's account",
    params(
        ("min_position" = Option<i64>, Query, description = "Wait (at most 5 s) until the read models reach this event-log position; 503 when they do not"),
    ),
    responses(
        (status = 200, description = "The limits", body = doc::Limits),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the token names no account (use the `/v1/accounts/{account_id}` route), or a query value is invalid", body = doc::ErrorBody),
    ),
)]
pub async fn limits_own(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
) -> Result<Response, ApiError> {
    principal.require(READERS)?;
    fresh.wait(&state).await?;
    read_limits(&state, principal.own_account()?).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    pub q: Option<String>,
    pub status: Option<String>,
    pub plan: Option<String>,
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    // Read by the `Fresh` extractor; named here so it is not an unknown field.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

pub fn page_request(limit: Option<u32>, cursor: Option<String>) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    if !(1..=projections::PAGE_LIMIT_MAX).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!(
                "limit must be between 1 and {}",
                projections::PAGE_LIMIT_MAX
            ),
        ));
    }
    Ok(PageRequest {
        limit,
        after: cursor,
    })
}

#[utoipa::path(
    get,
    path = "/v1/admin/accounts",
    tag = "admin",
    summary = "Search accounts",
    params(
        SearchQuery,
    ),
    responses(
        (status = 200, description = "A page of accounts", body = doc::AccountPage),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid, or `min_position` is not an integer; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn search(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<SearchQuery>,
) -> Result<Response, ApiError> {
    principal.require(&[Role::Developer])?;
    fresh.wait(&state).await?;
    let q = query.parse()?;
    let page = state
        .read_models
        .search_accounts(
            &AccountFilter {
                q: q.q,
                status: q.status,
                plan: q.plan,
            },
            &page_request(q.limit, q.cursor)?,
        )
        .await
        .map_err(projection_error)?;
    Ok(Json(page).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    pub reason: Option<String>,
}

async fn status_response(
    state: &AppState,
    account: AccountId,
    done: &store::Executed<ledger::CreditAccount>,
) -> Result<Response, ApiError> {
    let position = state.position_of(done).await?;
    let status = done
        .state
        .as_ref()
        .map(|s| s.status().as_str())
        .ok_or(ApiError::Internal)?;
    Ok(
        Json(json!({ "account_id": account, "status": status, "position": position }))
            .into_response(),
    )
}

#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{account_id}/suspend",
    tag = "admin",
    summary = "Suspend an account (deductions refused, reads still work)",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
    ),
    request_body = Option<SuspendRequest>,
    responses(
        (status = 200, description = "The account status", body = doc::AccountStatusChange),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the account is cancelled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn suspend(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    body: Body<SuspendRequest>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(&[Role::Developer], account_id(&account)?)?;
    let body = body.parse()?;
    let command = AccountCommand::Suspend {
        reason: body.value.reason.unwrap_or_default(),
        now: super::now(),
    };
    let done = state.run(&principal, account, command, None, &[]).await?;
    status_response(&state, account, &done).await
}

#[utoipa::path(
    post,
    path = "/v1/admin/accounts/{account_id}/activate",
    tag = "admin",
    summary = "Reactivate a suspended account",
    params(
        ("account_id" = String, Path, description = "The account's id (a UUID)"),
    ),
    request_body = Option<super::credits::EmptyRequest>,
    responses(
        (status = 200, description = "The account status", body = doc::AccountStatusChange),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the account is cancelled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn activate(
    State(state): State<AppState>,
    principal: Principal,
    Path(account): Path<String>,
    body: Body<super::credits::EmptyRequest>,
) -> Result<Response, ApiError> {
    let account = principal.authorize(&[Role::Developer], account_id(&account)?)?;
    body.parse()?;
    let command = AccountCommand::Reactivate { now: super::now() };
    let done = state.run(&principal, account, command, None, &[]).await?;
    status_response(&state, account, &done).await
}
