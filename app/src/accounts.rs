//! Opening, reading and administering accounts.

use chrono::{DateTime, Utc};
use events::{AccountEvent, AccountId, AccountStatus, BillingAddress, CountryCode, Currency};
use ledger::account::{AccountPatch, OpenAccount};
use ledger::{AccountCommand, CreditAccount};
use projections::{AccountFilter, AccountView, Page};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::{CommandContext, Executed, IdempotencyClaim, Reservation, ServiceError};

use crate::access;
use crate::caller::{Caller, Target};
use crate::credits::EmptyRequest;
use crate::error::AppError;
use crate::input::{Input, Key, Query, MIN_POSITION_WAIT_MILLIS_MAX};
use crate::reads::page_request;
use crate::runner::{claim, written};
use crate::{now, App, Written};

const SLUG_BYTES_MAX: usize = 64;
const NAME_BYTES_MAX: usize = 200;
const EMAIL_BYTES_MAX: usize = 254;
const TAX_ID_BYTES_MAX: usize = 64;
/// The reservation scope that makes slugs unique.
const SLUG_SCOPE: &str = "account slug";
/// The reservation scope of an open's idempotency key (per caller: there
/// is no account yet to scope it to).
const OPEN_KEY_SCOPE: &str = "account open key";

fn check_len(field: &str, value: &str, max: usize) -> Result<(), AppError> {
    if value.trim().is_empty() || value.len() > max {
        return Err(AppError::invalid_field(
            field,
            format!("{field} must be 1 to {max} bytes"),
        ));
    }
    Ok(())
}

fn check_email(value: &str) -> Result<(), AppError> {
    check_len("billing_email", value, EMAIL_BYTES_MAX)?;
    let ok = value
        .split_once('@')
        .is_some_and(|(user, host)| !user.is_empty() && host.contains('.') && !value.contains(' '));
    if ok {
        Ok(())
    } else {
        Err(AppError::invalid_field(
            "billing_email",
            "billing_email must be an email address",
        ))
    }
}

fn check_slug(slug: &str) -> Result<(), AppError> {
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
        Err(AppError::invalid_field(
            "slug",
            format!("slug must be 1 to {SLUG_BYTES_MAX} characters of a-z, 0-9 and inner hyphens"),
        ))
    }
}

fn check_tax_rate(rate: Decimal) -> Result<(), AppError> {
    if rate < Decimal::ZERO || rate > Decimal::ONE_HUNDRED {
        return Err(AppError::invalid_field(
            "tax_rate",
            "tax_rate is a percent between 0 and 100",
        ));
    }
    Ok(())
}

fn country(raw: &str) -> Result<CountryCode, AppError> {
    CountryCode::parse(raw).map_err(|e| AppError::invalid_field("country", e.reason))
}

fn currency(raw: &str) -> Result<Currency, AppError> {
    Currency::parse(raw).map_err(|e| AppError::invalid_field("currency", e.reason))
}

/// `POST /accounts`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct OpenRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = r"\S")
    )]
    pub name: String,
    /// Unique: 1 to 64 characters of a-z, 0-9 and inner hyphens.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 64,
            pattern = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
        )
    )]
    pub slug: String,
    /// A plan's slug (`GET /v1/plans`).
    #[serde(default = "free")]
    #[cfg_attr(feature = "openapi", schema(default = "free"))]
    pub plan: String,
    /// ISO 3166-1 alpha-2.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z]{2}$", min_length = 2, max_length = 2)
    )]
    pub country: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 3, max_length = 254, pattern = r"^[^@ ]+@[^@ ]*\.[^@ ]*$")
    )]
    pub billing_email: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = r"\S")
    )]
    pub owner_user_id: String,
    /// `trial`, `active` (default) or `past_due`.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::OpeningStatus>))]
    pub status: Option<AccountStatus>,
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_000_000_000_000_i64)
    )]
    pub credit_limit: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub low_balance_threshold: Option<i64>,
    /// A percent between 0 and 100, as a decimal string.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = r"^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)$"))]
    pub tax_rate: Option<Decimal>,
    /// ISO 4217: the currency to bill the account in; absent, the
    /// country's (`DE` → `EUR`, `GB` → `GBP`, unknown → `USD`).
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Z]{3}$", min_length = 3, max_length = 3)
    )]
    pub currency: Option<String>,
}

fn free() -> String {
    "free".into()
}

/// An account, as opened.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct OpenedAccount {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub account_id: AccountId,
    pub name: String,
    pub slug: String,
    pub owner_user_id: String,
    pub plan: String,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::AccountStatus))]
    pub status: AccountStatus,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub country: CountryCode,
    pub billing_email: String,
    pub credit_limit: i64,
    pub low_balance_threshold: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub tax_rate: Decimal,
    /// The currency the account is billed in.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub currency: Currency,
    /// Staff's choice of currency; `null` bills in the country's.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub currency_override: Option<Currency>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(required = true, value_type = i64))]
    pub position: Option<i64>,
}

fn opened(done: &Executed<CreditAccount>) -> Result<Written<OpenedAccount>, AppError> {
    written(done, true, |e, position| match e {
        AccountEvent::AccountOpened(o) => Some(OpenedAccount {
            account_id: o.account_id,
            name: o.name.clone(),
            slug: o.slug.clone(),
            owner_user_id: o.owner_user_id.clone(),
            plan: o.plan.clone(),
            status: o.status,
            country: o.country.clone(),
            billing_email: o.billing_email.clone(),
            credit_limit: o.credit_limit,
            low_balance_threshold: o.low_balance_threshold,
            tax_rate: o.tax_rate,
            currency: o
                .currency
                .clone()
                .unwrap_or_else(|| Currency::for_country(&o.country)),
            currency_override: o.currency.clone(),
            created_at: o.opened_at,
            position,
        }),
        _ => None,
    })
}

fn open_key(caller: &Caller, key: &str) -> String {
    format!("{}:{key}", caller.sub())
}

/// Opens an account with a new UUIDv7 id; the slug is unique. An optional
/// key makes a retry answer the first open.
pub async fn open(
    app: &App,
    caller: &Caller,
    key: Key,
    input: Input<OpenRequest>,
) -> Result<Written<OpenedAccount>, AppError> {
    caller.require(access::OPEN_ACCOUNT)?;
    let body = input.parse()?;
    let req = body.value;
    check_len("name", &req.name, NAME_BYTES_MAX)?;
    check_slug(&req.slug)?;
    check_email(&req.billing_email)?;
    check_len("owner_user_id", &req.owner_user_id, NAME_BYTES_MAX)?;
    let country = country(&req.country)?;
    let tax_rate = req.tax_rate.unwrap_or(Decimal::ZERO);
    check_tax_rate(tax_rate)?;
    let currency = req.currency.as_deref().map(currency).transpose()?;
    if matches!(
        req.status,
        Some(AccountStatus::Suspended | AccountStatus::Cancelled)
    ) {
        return Err(AppError::invalid_field(
            "status",
            "an account opens as trial, active or past_due",
        ));
    }
    let plan = app
        .catalog
        .get()
        .await
        .plan(&req.plan)
        .cloned()
        .ok_or_else(|| AppError::invalid_field("plan", format!("unknown plan {:?}", req.plan)))?;
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
        currency,
        now: now(),
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
            value: open_key(caller, k.as_str()),
        });
    }
    let ctx = CommandContext::new(caller.actor());
    let result = app
        .run_account(
            &account.to_string(),
            command,
            &ctx,
            claim.as_ref(),
            &reservations,
        )
        .await;
    match result {
        Ok(done) => {
            let answer = opened(&done)?;
            if done.replayed.is_none() {
                // The owner is the team's first member. Should this fail,
                // the team's first command seeds it the same way.
                if let Err(e) = crate::team::start(
                    app,
                    account,
                    &answer.value.owner_user_id,
                    &answer.value.billing_email,
                )
                .await
                {
                    tracing::warn!(error = %e, %account, "starting the account's team");
                }
            }
            Ok(answer)
        }
        // A retry of the same open (same key, same body) finds the account
        // its first attempt created, through the key it reserved.
        Err(ServiceError::Reserved { .. }) if claim.is_some() => {
            let claim = claim.as_ref().ok_or(AppError::Internal)?;
            replay_open(app, caller, &slug, claim).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn replay_open(
    app: &App,
    caller: &Caller,
    slug: &str,
    claim: &IdempotencyClaim,
) -> Result<Written<OpenedAccount>, AppError> {
    let taken = || AppError::Conflict(format!("account slug {slug:?} is already taken"));
    let owner = app
        .store
        .reservation_owner(OPEN_KEY_SCOPE, &open_key(caller, claim.key.as_str()))
        .await?
        .ok_or_else(taken)?;
    let record = app
        .store
        .find_key(&owner, claim.key.as_str())
        .await?
        .ok_or_else(taken)?;
    if record.request_hash != claim.request_hash {
        return Err(AppError::IdempotencyKeyReused);
    }
    let event: AccountEvent =
        serde_json::from_value(record.payload).map_err(|_| AppError::Internal)?;
    let done = Executed::<CreditAccount> {
        state: None,
        events: Vec::new(),
        replayed: Some((event, record.position)),
    };
    opened(&done)
}

async fn read_account(app: &App, account: AccountId) -> Result<AccountView, AppError> {
    app.read_models
        .account(&account.to_string())
        .await?
        .ok_or_else(|| AppError::NotFound("account not found".into()))
}

/// An account's settings and status.
pub async fn get(
    app: &App,
    caller: &Caller,
    target: Target,
    min_position: Option<i64>,
) -> Result<AccountView, AppError> {
    let account = caller.target(access::READ_ACCOUNT, target)?;
    app.wait_for(min_position).await?;
    read_account(app, account).await
}

/// `PATCH /accounts/{id}`: absent fields are unchanged.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatchRequest {
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = r"\S")
    )]
    pub name: Option<String>,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 3, max_length = 254, pattern = r"^[^@ ]+@[^@ ]*\.[^@ ]*$")
    )]
    pub billing_email: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::BillingAddress>))]
    pub billing_address: Option<BillingAddress>,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = r"\S")
    )]
    pub tax_id: Option<String>,
    /// A percent between 0 and 100, as a decimal string.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = r"^(100(\.0+)?|[0-9]{1,2}(\.[0-9]+)?)$"))]
    pub tax_rate: Option<Decimal>,
    /// ISO 3166-1 alpha-2.
    #[cfg_attr(
        feature = "openapi",
        schema(pattern = r"^[A-Za-z]{2}$", min_length = 2, max_length = 2)
    )]
    pub country: Option<String>,
    /// Developer only.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_000_000_000_000_i64)
    )]
    pub credit_limit: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub low_balance_threshold: Option<i64>,
    /// Developer only. ISO 4217: bill the account in this currency from
    /// now on; `null` bills it in its country's again.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = Option<String>, pattern = r"^[A-Z]{3}$", nullable)
    )]
    pub currency: Option<Option<String>>,
}

/// A field that is present reads as `Some`, even when it is `null`.
fn present<'de, D>(d: D) -> Result<Option<Option<String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<String>::deserialize(d).map(Some)
}

/// Updates an account's settings; answers the account as the read models
/// have it once they include the change, with the change's `position`.
pub async fn update(
    app: &App,
    caller: &Caller,
    target: Target,
    input: Input<PatchRequest>,
) -> Result<Value, AppError> {
    let (account, req) = caller.target_with_body(access::UPDATE_ACCOUNT, target, input)?;
    let empty = req.name.is_none()
        && req.billing_email.is_none()
        && req.billing_address.is_none()
        && req.tax_id.is_none()
        && req.tax_rate.is_none()
        && req.country.is_none()
        && req.credit_limit.is_none()
        && req.low_balance_threshold.is_none()
        && req.currency.is_none();
    if empty {
        return Err(AppError::bad_request(
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
        check_len("tax_id", t, TAX_ID_BYTES_MAX)?;
    }
    if let Some(r) = req.tax_rate {
        check_tax_rate(r)?;
    }
    // The credit limit is a risk setting: only the platform changes it.
    if req.credit_limit.is_some() && !access::SET_CREDIT_LIMIT.contains(&caller.role()) {
        return Err(AppError::Forbidden(
            "only a developer may change the credit limit".into(),
        ));
    }
    // Tax rate, country and currency decide every invoice: the seller's.
    if (req.tax_rate.is_some() || req.country.is_some() || req.currency.is_some())
        && !access::SET_TAX.contains(&caller.role())
    {
        return Err(AppError::Forbidden(
            "only a developer may change the tax rate, the country or the currency".into(),
        ));
    }
    let country = req.country.as_deref().map(country).transpose()?;
    let currency = match req.currency {
        Some(Some(c)) => Some(Some(currency(&c)?)),
        Some(None) => Some(None),
        None => None,
    };
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
            currency,
        },
        now: now(),
    };
    let done = app.run(caller, account, command, None, &[]).await?;
    let position = app.position_of(&done).await?;
    // Answer from the read model once it has this write.
    app.projector
        .wait_for(
            position,
            std::time::Duration::from_millis(MIN_POSITION_WAIT_MILLIS_MAX),
        )
        .await;
    let view = read_account(app, account).await?;
    let mut body = serde_json::to_value(view).map_err(|_| AppError::Internal)?;
    body["position"] = json!(position);
    Ok(body)
}

/// The plan's limits and the credits of the current period.
pub async fn limits(
    app: &App,
    caller: &Caller,
    target: Target,
    min_position: Option<i64>,
) -> Result<Value, AppError> {
    let account = caller.target(access::READ_LIMITS, target)?;
    app.wait_for(min_position).await?;
    let view = app
        .read_models
        .balance(&account.to_string(), Utc::now())
        .await?
        .ok_or_else(|| AppError::NotFound("account not found".into()))?;
    let catalog = app.catalog.get().await;
    let plan = catalog.plan(&view.plan);
    let (limits, overrides, current) =
        crate::team::limits_part(app, account, plan.map(|p| &p.limits)).await?;
    Ok(json!({
        "account_id": view.account_id,
        "plan": view.plan,
        "limits": limits,
        "plan_limits": plan.map(|p| &p.limits),
        "overrides": overrides,
        "features": plan.map(|p| &p.features),
        "credits": {
            "included_per_period": plan.map(|p| p.included_credits),
            "period": view.current_period.period,
            "granted_this_period": view.current_period.granted,
            "used_this_period": view.current_period.used,
            "balance": view.balance,
            "available": view.available,
        },
        // Users from the roster; sites, industries and author profiles as
        // the SaaS reports them (`PUT /accounts/{id}/usage-counts`).
        "current": current,
    }))
}

/// `GET /admin/accounts?q=&status=&plan=&limit=&cursor=`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    pub q: Option<String>,
    pub status: Option<String>,
    pub plan: Option<String>,
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500, default = 50))]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    // Read by the transport; named here so it is not an unknown field.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

/// Every tenant's accounts, searched and filtered (staff).
pub async fn search(
    app: &App,
    caller: &Caller,
    min_position: Option<i64>,
    query: Query<SearchQuery>,
) -> Result<Page<AccountView>, AppError> {
    caller.require(access::SEARCH_ACCOUNTS)?;
    app.wait_for(min_position).await?;
    let q = query.parse()?;
    Ok(app
        .read_models
        .search_accounts(
            &AccountFilter {
                q: q.q,
                status: q.status,
                plan: q.plan,
            },
            &page_request(q.limit, q.cursor)?,
        )
        .await?)
}

/// `POST /admin/accounts/{id}/suspend`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SuspendRequest {
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub reason: Option<String>,
}

/// An account's status after a suspension or reactivation.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatusChange {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub account_id: AccountId,
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::AccountStatus))]
    pub status: AccountStatus,
    pub position: i64,
}

async fn status_change(
    app: &App,
    account: AccountId,
    done: &Executed<CreditAccount>,
) -> Result<StatusChange, AppError> {
    let position = app.position_of(done).await?;
    let status = done
        .state
        .as_ref()
        .map(|s| s.status())
        .ok_or(AppError::Internal)?;
    Ok(StatusChange {
        account_id: account,
        status,
        position,
    })
}

/// Suspends an account: deductions are refused, reads still work.
pub async fn suspend(
    app: &App,
    caller: &Caller,
    account: AccountId,
    input: Input<SuspendRequest>,
) -> Result<StatusChange, AppError> {
    let account = caller.authorize(access::SUSPEND_ACCOUNT, account)?;
    let body = input.parse()?;
    let reason = crate::credits::text("reason", body.value.reason)?.unwrap_or_default();
    let command = AccountCommand::Suspend { reason, now: now() };
    let done = app.run(caller, account, command, None, &[]).await?;
    status_change(app, account, &done).await
}

/// Reactivates a suspended account.
pub async fn activate(
    app: &App,
    caller: &Caller,
    account: AccountId,
    input: Input<EmptyRequest>,
) -> Result<StatusChange, AppError> {
    let account = caller.authorize(access::SUSPEND_ACCOUNT, account)?;
    input.parse()?;
    let command = AccountCommand::Reactivate { now: now() };
    let done = app.run(caller, account, command, None, &[]).await?;
    status_change(app, account, &done).await
}
