//! Subscriptions (SPEC §2, issue 6; docs/adr/0012-subscriptions.md):
//! create, upgrade, downgrade, cancel, renewal and period processing.
//!
//! The subscription is its own aggregate (`ledger::subscription`), run
//! through the plain command service. Every operation is a short chain of
//! steps that each apply at most once, so a retry finishes what a crash
//! left undone:
//!
//! 1. the subscription command (its invoices' ids are derived from the
//!    subscription, the purpose and the period or Idempotency-Key);
//! 2. [`ensure_invoices`]: every pending invoice the subscription records is
//!    issued (skipped when its stream exists);
//! 3. credits: a paid invoice's under the key `subscription-invoice-{id}`,
//!    a free period's under `subscription-{id}-period-{start}`;
//! 4. [`sync_account`]: the account's plan and billing status follow the
//!    subscription (`ChangePlan`, `SetBillingStatus`, both no-ops when
//!    already so).

use std::future::Future;
use std::time::Duration as StdDuration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Duration, Utc};
use events::{
    AccountId, Actor, CancelReason, GrantSource, IdempotencyKey, InvoiceIssued, Plan, PlanTerms,
    SubscriptionEvent, SubscriptionInvoice, SubscriptionStatus,
};
use ledger::account::GrantCredits;
use ledger::invoice::{IssueInvoice, LineInput};
use ledger::subscription::{CreateSubscription, Step};
use ledger::{
    AccountCommand, AccountError, Invoice, InvoiceCommand, Subscription, SubscriptionCommand,
    SubscriptionError,
};
use serde::Deserialize;
use serde_json::{json, Value};
use store::{request_hash, CommandContext, Executed, IdempotencyClaim, Reservation, ServiceError};
use tracing::{debug, warn};
use utoipa::OpenApi;
use uuid::Uuid;

use super::billing::{billing_account, derived_id, issue_invoice};
use super::extract::{Body, Fresh, IdemKey, Q};
use super::openapi as doc;
use super::respond::{account_error, claim, projection_error, service_error, store_error};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::AppState;
use app::reads::page_request;

/// How often the background ticker processes due subscriptions.
pub const PERIOD_TICK_SECONDS: u64 = 60;
/// Most subscriptions one run of period processing handles.
pub const RUN_PERIODS_BATCH_MAX: i64 = 500;
/// Most steps (renewal, past_due, cancel) one subscription takes in one run.
pub const STEPS_PER_SUBSCRIPTION_MAX: usize = 8;
/// Days until a subscription invoice is due.
pub const SUBSCRIPTION_INVOICE_DUE_DAYS: i64 = super::billing::INVOICE_DUE_DAYS;
/// The reservation scope that keeps one open subscription per account: the
/// n-th subscription of an account reserves `{account}/{n}`.
pub const SUBSCRIPTION_SLOT_SCOPE: &str = "subscription_slot";

/// Owners and admins of the account; developers for any account.
const SUBSCRIBERS: &[Role] = &[Role::Owner, Role::Admin, Role::Developer];
const STAFF: &[Role] = &[Role::Developer];

#[derive(OpenApi)]
#[openapi(paths(list, create, upgrade, cancel, run_periods))]
pub struct Api;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/billing/subscriptions", get(list))
        .route("/billing/subscriptions/create", post(create))
        .route("/billing/subscriptions/upgrade", post(upgrade))
        .route("/billing/subscriptions/cancel", post(cancel))
        .route("/admin/billing/run-periods", post(run_periods))
}

// ---------------------------------------------------------------------------
// Shared steps
// ---------------------------------------------------------------------------

pub(super) fn subscription_error(e: SubscriptionError) -> ApiError {
    app::AppError::from(e).into()
}

/// The catalog's facts of a plan, as the subscription records them.
fn terms(plan: &Plan) -> PlanTerms {
    PlanTerms {
        slug: plan.slug.clone(),
        name: plan.name.clone(),
        price: plan.price.clone(),
        billing_cycle: plan.billing_cycle,
        included_credits: plan.included_credits,
    }
}

async fn load(state: &AppState, id: Uuid) -> Result<Subscription, ApiError> {
    Ok(state
        .store
        .load::<Subscription>(&id.to_string())
        .await
        .map_err(store_error)?
        .aggregate)
}

async fn execute(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    command: SubscriptionCommand,
    claim: Option<&IdempotencyClaim>,
    reservations: &[Reservation],
) -> Result<Executed<Subscription>, ServiceError<SubscriptionError>> {
    let done = state
        .commands
        .execute_with::<Subscription>(
            &id.to_string(),
            command,
            &CommandContext::new(actor.clone()),
            claim,
            reservations,
        )
        .await?;
    state.projector.wake();
    Ok(done)
}

fn max_position(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    a.max(b)
}

fn key(raw: &str) -> Result<IdempotencyKey, ApiError> {
    IdempotencyKey::parse(raw).map_err(|_| ApiError::Internal)
}

/// Grants `credits` (expiring at `expires_at`) once under `raw_key`. Credits
/// whose expiry has already passed for the account are not granted.
/// Credits a subscription grants once, under `key`.
struct Grant<'a> {
    account: AccountId,
    key: &'a str,
    credits: i64,
    expires_at: DateTime<Utc>,
    description: String,
}

async fn grant_once(
    state: &AppState,
    actor: &Actor,
    grant: Grant<'_>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    let Grant {
        account,
        key: raw_key,
        credits,
        expires_at,
        description,
    } = grant;
    if credits <= 0 {
        return Ok(None);
    }
    let key = key(raw_key)?;
    let claim = IdempotencyClaim {
        request_hash: request_hash(format!("subscription-grant\n{raw_key}").as_bytes()),
        key: key.clone(),
    };
    let done = state
        .run_account(
            &account.to_string(),
            AccountCommand::GrantCredits(GrantCredits {
                grant_id: derived_id(&["subscription-grant", raw_key]),
                credits,
                source: GrantSource::Subscription,
                expires_at: Some(expires_at),
                description: Some(description),
                idempotency_key: Some(key),
                now,
            }),
            &CommandContext::new(actor.clone()),
            Some(&claim),
            &[],
        )
        .await;
    state.projector.wake();
    match done {
        Ok(done) => Ok(done.position()),
        Err(ServiceError::Domain(AccountError::ExpiryNotInFuture { .. })) => {
            debug!(
                key = raw_key,
                "subscription credits already past their expiry"
            );
            Ok(None)
        }
        Err(e) => Err(service_error(e, account_error)),
    }
}

/// The credits of a free plan's current period, granted at its start.
async fn grant_free_period(
    state: &AppState,
    actor: &Actor,
    sub: &Subscription,
    now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    let (Some(id), Some(account), Some(plan), Some((start, end))) =
        (sub.id(), sub.account_id(), sub.plan(), sub.period())
    else {
        return Ok(None);
    };
    if !plan.price.amount.is_zero()
        || !matches!(
            sub.status(),
            Some(SubscriptionStatus::Active | SubscriptionStatus::Trialing)
        )
    {
        return Ok(None);
    }
    let raw = format!("subscription-{id}-period-{}", start.timestamp());
    grant_once(
        state,
        actor,
        Grant {
            account,
            key: &raw,
            credits: plan.included_credits,
            expires_at: end,
            description: ledger::subscription::period_line(plan, start, end),
        },
        now,
    )
    .await
}

/// Issues every pending invoice the subscription records whose stream does
/// not exist yet (a step a crash may have left undone).
async fn ensure_invoices(
    state: &AppState,
    actor: &Actor,
    sub: &Subscription,
    now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    let (Some(id), Some(account)) = (sub.id(), sub.account_id()) else {
        return Ok(None);
    };
    let mut position = None;
    for invoice in sub.open_invoices() {
        let existing = state
            .store
            .load::<Invoice>(&invoice.invoice_id.to_string())
            .await
            .map_err(store_error)?
            .aggregate;
        if existing.issued().is_some() {
            continue;
        }
        let issued = issue(state, actor, id, account, invoice, now).await?;
        position = max_position(position, issued.position());
    }
    Ok(position)
}

async fn issue(
    state: &AppState,
    actor: &Actor,
    subscription_id: Uuid,
    account: AccountId,
    invoice: &SubscriptionInvoice,
    now: DateTime<Utc>,
) -> Result<Executed<Invoice>, ApiError> {
    let holder = billing_account(state, account).await?;
    issue_invoice(
        state,
        &CommandContext::new(actor.clone()),
        IssueInvoice {
            invoice_id: invoice.invoice_id,
            number: String::new(),
            account_id: account,
            subscription_id: Some(subscription_id),
            buyer_name: holder.name.clone(),
            billing_email: Some(holder.billing_email.clone()),
            billing_address: holder
                .billing_address
                .clone()
                .and_then(|a| serde_json::from_value(a).ok()),
            tax_id: holder.tax_id.clone(),
            lines: vec![LineInput {
                description: invoice.description.clone(),
                quantity: 1,
                unit_price: invoice.amount.amount,
            }],
            tax_rate: holder.tax_rate,
            currency: invoice.amount.currency.clone(),
            draft: false,
            purchase: None,
            notes: None,
            now,
            due_at: invoice.due_at.max(now),
        },
        None,
    )
    .await
}

/// The account's plan and billing status follow the subscription.
async fn sync_account(
    state: &AppState,
    actor: &Actor,
    sub: &Subscription,
    now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    let (Some(account), Some((plan, status))) = (sub.account_id(), sub.account_target()) else {
        return Ok(None);
    };
    let reason = format!(
        "subscription {} is {}",
        sub.id().unwrap_or_default(),
        sub.status().map(|s| s.as_str()).unwrap_or("unknown")
    );
    let changed = super::settle::run_account_command(
        state,
        actor,
        account,
        AccountCommand::ChangePlan { plan, now },
        None,
    )
    .await?;
    let set = match super::settle::run_account_command(
        state,
        actor,
        account,
        AccountCommand::SetBillingStatus {
            status,
            reason,
            now,
        },
        None,
    )
    .await
    {
        Ok(done) => done.position(),
        // A closed account keeps its status.
        Err(ApiError::Conflict(_)) => None,
        Err(e) => return Err(e),
    };
    Ok(max_position(changed.position(), set))
}

/// Voids the pending invoices a canceled subscription left.
async fn void_invoices(
    state: &AppState,
    actor: &Actor,
    invoices: &[Uuid],
    now: DateTime<Utc>,
) -> Option<i64> {
    let mut position = None;
    for id in invoices {
        match state
            .commands
            .execute::<Invoice>(
                &id.to_string(),
                InvoiceCommand::Void {
                    reason: Some("subscription canceled".into()),
                    actor: actor.sub.clone(),
                    now,
                },
                &CommandContext::new(actor.clone()),
                None,
            )
            .await
        {
            Ok(done) => position = max_position(position, done.position()),
            Err(e) => debug!(invoice = %id, error = %e, "invoice not voided"),
        }
    }
    state.projector.wake();
    position
}

/// Everything after a subscription command: invoices, a free period's
/// credits, the account.
async fn follow_up(
    state: &AppState,
    actor: &Actor,
    sub: &Subscription,
    now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    let a = ensure_invoices(state, actor, sub, now).await?;
    let b = grant_free_period(state, actor, sub, now).await?;
    let c = sync_account(state, actor, sub, now).await?;
    Ok(max_position(max_position(a, b), c))
}

fn invoice_json(i: &SubscriptionInvoice) -> Value {
    json!({
        "id": i.invoice_id,
        "purpose": i.purpose.as_str(),
        "description": i.description,
        "amount": i.amount.amount,
        "currency": i.amount.currency.as_str(),
        "due_date": i.due_at,
        "credits": i.credits,
    })
}

/// A subscription as JSON, from the aggregate.
fn subscription_json(sub: &Subscription) -> Value {
    let plan = sub.plan();
    json!({
        "id": sub.id(),
        "account_id": sub.account_id().map(|a| a.to_string()),
        "plan": plan.map(|p| p.slug.clone()),
        "status": sub.status().map(|s| s.as_str()),
        "billing_cycle": plan.map(|p| p.billing_cycle),
        "price": plan.map(|p| p.price.amount),
        "currency": plan.map(|p| p.price.currency.as_str().to_owned()),
        "included_credits": plan.map(|p| p.included_credits),
        "method": sub.method().map(|m| m.as_str()),
        "current_period_start": sub.period().map(|p| p.0),
        "current_period_end": sub.period().map(|p| p.1),
        "cancel_at_period_end": sub.cancel_at_period_end(),
        "scheduled_plan": sub.scheduled_plan().map(|p| p.slug.clone()),
        "stripe_subscription_id": sub.stripe_subscription_id(),
        "past_due_since": sub.past_due_since(),
        "open_invoices": sub.open_invoices().iter().map(invoice_json).collect::<Vec<_>>(),
    })
}

fn replayed(mut response: Response, replay: bool) -> Response {
    if replay {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// The account a request acts for: `account_id` (developers, or the
/// caller's own) or the token's.
fn acting_account(principal: &Principal, raw: Option<&str>) -> Result<AccountId, ApiError> {
    match (raw, principal.account_id()) {
        (Some(raw), _) => Ok(principal.scope(super::extract::account_id(raw)?)?),
        (None, Some(own)) => Ok(own),
        (None, None) => Ok(principal.own_account()?),
    }
}

/// The account's open (not canceled) subscription.
async fn open_subscription(state: &AppState, account: AccountId) -> Result<Uuid, ApiError> {
    super::fresh_read_models(state).await?;
    let (_, open) = state
        .read_models
        .subscription_count(&account.to_string())
        .await
        .map_err(projection_error)?;
    open.and_then(|s| Uuid::parse_str(&s.id).ok())
        .ok_or_else(|| ApiError::NotFound("the account has no open subscription".into()))
}

/// The subscription method named by the body: a manual one, or Stripe.
fn subscription_method(raw: &str) -> Result<events::PaymentMethod, ApiError> {
    use events::PaymentMethod as M;
    match M::parse(raw) {
        Some(m @ (M::BankTransfer | M::LocalWallet | M::Stripe)) => Ok(m),
        Some(M::Paypal) => Err(ApiError::Unavailable(
            "paypal is not available; use bank_transfer or local_wallet".into(),
        )),
        _ => Err(ApiError::invalid_field(
            "method",
            "method must be one of bank_transfer, local_wallet, stripe",
        )),
    }
}

/// Starts the subscription at Stripe (docs/adr/0011-payments-gateway.md):
/// a customer for the account and a subscription to the plan's Stripe
/// price, both created under idempotency keys derived from our ids, and
/// records their ids on `subscription` (so `SubscriptionCreated` keeps
/// them). Called only for `method: "stripe"`, before anything is written;
/// without a Stripe key it answers 503, and a plan without a Stripe price
/// 503 too (nothing to subscribe to at Stripe).
pub async fn start_stripe_subscription(
    state: &AppState,
    subscription: &mut CreateSubscription,
) -> Result<Option<String>, ApiError> {
    let gateway = state.gateways.for_method(events::PaymentMethod::Stripe)?;
    let catalog = state.catalog.get().await;
    let price_id = catalog
        .plan(&subscription.plan.slug)
        .and_then(|p| p.stripe_price_id.clone())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            ApiError::Unavailable(format!(
                "the {} plan has no Stripe price; set its stripe_price_id first",
                subscription.plan.slug
            ))
        })?;
    let holder = billing_account(state, subscription.account_id).await?;
    let account = subscription.account_id.to_string();
    let customer = gateway
        .create_customer(&app::gateway::CustomerRequest {
            account_id: account.clone(),
            name: holder.name.clone(),
            email: Some(holder.billing_email.clone()),
            idempotency_key: format!("customer-{account}"),
        })
        .await?;
    let created = gateway
        .create_subscription(&app::gateway::SubscriptionRequest {
            customer_id: customer.clone(),
            price_id,
            subscription_id: subscription.subscription_id.to_string(),
            account_id: account,
            first_invoice_id: subscription.first_invoice_id.to_string(),
            idempotency_key: format!("subscription-{}", subscription.subscription_id),
        })
        .await?;
    subscription.stripe_customer_id = Some(customer);
    Ok(Some(created.id))
}

// ---------------------------------------------------------------------------
// Hooks called by settle and the Stripe webhooks
// ---------------------------------------------------------------------------

/// A subscription invoice was paid: activate or renew the subscription and
/// grant the period's included credits, at most once. Returns the highest
/// position written.
pub async fn on_invoice_paid(
    state: &AppState,
    actor: &Actor,
    invoice: &InvoiceIssued,
) -> Result<Option<i64>, ApiError> {
    let Some(id) = invoice.subscription_id else {
        return Ok(None);
    };
    let now = super::now();
    let done = match execute(
        state,
        actor,
        id,
        SubscriptionCommand::InvoicePaid {
            invoice_id: invoice.invoice_id,
            now,
        },
        None,
        &[],
    )
    .await
    {
        Ok(done) => done,
        Err(ServiceError::Domain(
            e
            @ (SubscriptionError::UnknownInvoice(_) | SubscriptionError::IllegalTransition { .. }),
        )) => {
            // E.g. the subscription was canceled before its invoice was paid.
            warn!(subscription = %id, invoice = %invoice.invoice_id, error = %e, "paid invoice not applied to its subscription");
            return Ok(None);
        }
        Err(e) => return Err(service_error(e, subscription_error)),
    };
    let sub = done.state.clone().ok_or(ApiError::Internal)?;
    let mut position = done.position();
    if let (Some(paid), Some(account)) = (sub.paid_invoice(invoice.invoice_id), sub.account_id()) {
        let raw = format!("subscription-invoice-{}", invoice.invoice_id);
        let granted = grant_once(
            state,
            actor,
            Grant {
                account,
                key: &raw,
                credits: paid.credits,
                expires_at: paid.credits_expire_at,
                description: format!(
                    "subscription {} ({} invoice {})",
                    sub.plan().map(|p| p.name.as_str()).unwrap_or(""),
                    paid.purpose.as_str(),
                    invoice.number
                ),
            },
            now,
        )
        .await?;
        position = max_position(position, granted);
    }
    let synced = follow_up(state, actor, &sub, now).await?;
    Ok(max_position(position, synced))
}

/// A subscription invoice's payment failed (Stripe `invoice.payment_failed`,
/// `payment_intent.payment_failed`): the subscription becomes past_due.
/// Doing it twice changes nothing. Returns the highest position written.
pub async fn on_invoice_payment_failed(
    state: &AppState,
    actor: &Actor,
    invoice_id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    let invoice = state
        .store
        .load::<Invoice>(&invoice_id.to_string())
        .await
        .map_err(store_error)?
        .aggregate;
    let Some(id) = invoice.issued().and_then(|i| i.subscription_id) else {
        return Ok(None);
    };
    debug!(subscription = %id, invoice = %invoice_id, reason, "subscription invoice payment failed");
    let done = match execute(
        state,
        actor,
        id,
        SubscriptionCommand::MarkPastDue {
            invoice_id,
            payment_failed: true,
            now,
        },
        None,
        &[],
    )
    .await
    {
        Ok(done) => done,
        Err(ServiceError::Domain(
            SubscriptionError::UnknownInvoice(_) | SubscriptionError::IllegalTransition { .. },
        )) => return Ok(None),
        Err(e) => return Err(service_error(e, subscription_error)),
    };
    let sub = done.state.clone().ok_or(ApiError::Internal)?;
    let synced = sync_account(state, actor, &sub, now).await?;
    Ok(max_position(done.position(), synced))
}

/// The subscription of ours that Stripe knows as `stripe_subscription_id`.
pub async fn by_stripe_id(
    state: &AppState,
    stripe_subscription_id: &str,
) -> Result<Option<Uuid>, ApiError> {
    Ok(state
        .read_models
        .subscription_by_stripe_id(stripe_subscription_id)
        .await
        .map_err(projection_error)?
        .and_then(|id| Uuid::parse_str(&id).ok()))
}

/// The oldest pending invoice of a subscription (what a Stripe
/// `invoice.paid` for it pays).
pub async fn open_invoice(
    state: &AppState,
    subscription_id: Uuid,
) -> Result<Option<Uuid>, ApiError> {
    let sub = load(state, subscription_id).await?;
    Ok(sub
        .open_invoices()
        .iter()
        .min_by_key(|i| i.due_at)
        .map(|i| i.invoice_id))
}

/// Stripe `customer.subscription.updated`: `status` is Stripe's
/// (`active|past_due|canceled|unpaid|incomplete|…`), `cancel_at_period_end`
/// as Stripe reports it. Applied at most once per change.
pub async fn on_stripe_subscription_updated(
    state: &AppState,
    actor: &Actor,
    subscription_id: Uuid,
    status: &str,
    cancel_at_period_end: bool,
    now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    let sub = load(state, subscription_id).await?;
    if sub.status().is_none() || sub.status() == Some(SubscriptionStatus::Canceled) {
        return Ok(None);
    }
    let command = match status {
        "canceled" | "incomplete_expired" => Some(SubscriptionCommand::Cancel {
            at_period_end: false,
            reason: CancelReason::Stripe,
            now,
        }),
        "past_due" | "unpaid" if sub.status() != Some(SubscriptionStatus::PastDue) => sub
            .open_invoices()
            .iter()
            .find(|i| i.purpose != events::InvoicePurpose::Proration)
            .map(|i| SubscriptionCommand::MarkPastDue {
                invoice_id: i.invoice_id,
                payment_failed: true,
                now,
            }),
        _ if cancel_at_period_end && !sub.cancel_at_period_end() => {
            Some(SubscriptionCommand::Cancel {
                at_period_end: true,
                reason: CancelReason::Stripe,
                now,
            })
        }
        _ => None,
    };
    let Some(command) = command else {
        return Ok(None);
    };
    apply_and_follow(state, actor, subscription_id, command, now).await
}

/// Stripe `customer.subscription.deleted`: the subscription is canceled now.
pub async fn on_stripe_subscription_deleted(
    state: &AppState,
    actor: &Actor,
    subscription_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    let sub = load(state, subscription_id).await?;
    if sub.status().is_none() || sub.status() == Some(SubscriptionStatus::Canceled) {
        return Ok(None);
    }
    apply_and_follow(
        state,
        actor,
        subscription_id,
        SubscriptionCommand::Cancel {
            at_period_end: false,
            reason: CancelReason::Stripe,
            now,
        },
        now,
    )
    .await
}

/// Runs a command, voids what a cancel left open, and follows up.
async fn apply_and_follow(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    command: SubscriptionCommand,
    now: DateTime<Utc>,
) -> Result<Option<i64>, ApiError> {
    let done = execute(state, actor, id, command, None, &[])
        .await
        .map_err(|e| service_error(e, subscription_error))?;
    let mut position = done.position();
    for e in &done.events {
        if let SubscriptionEvent::SubscriptionCanceled(c) = &e.event {
            position = max_position(
                position,
                void_invoices(state, actor, &c.open_invoices, now).await,
            );
        }
    }
    let sub = done.state.clone().ok_or(ApiError::Internal)?;
    Ok(max_position(
        position,
        follow_up(state, actor, &sub, now).await?,
    ))
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// For developers: the account (defaults to the token's).
    pub account_id: Option<String>,
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/billing/subscriptions",
    tag = "billing",
    summary = "The account's subscriptions, the open one first, then newest first",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of subscriptions", body = doc::BillingPage),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<ListQuery>,
) -> Result<Response, ApiError> {
    principal.require(SUBSCRIBERS)?;
    fresh.wait(&state).await?;
    let q = query.parse()?;
    let account = acting_account(&principal, q.account_id.as_deref())?;
    let page = state
        .read_models
        .subscriptions(&account.to_string(), &page_request(q.limit, q.cursor)?)
        .await
        .map_err(projection_error)?;
    Ok(Json(json!({ "items": page.items, "next_cursor": page.next_cursor })).into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// A plan's slug (`free`, `starter`, `professional`, `enterprise`).
    pub plan: String,
    /// `bank_transfer` or `local_wallet` (pay the first invoice with
    /// `POST /v1/billing/payments/manual`), or `stripe` (a Stripe
    /// subscription; its `invoice.paid` webhook pays ours); `stripe`
    /// answers 503 while no Stripe key is configured. Not needed for a free
    /// plan.
    pub method: Option<String>,
    /// For developers: the account (defaults to the token's).
    pub account_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/billing/subscriptions/create",
    tag = "billing",
    summary = "Subscribe to a plan: incomplete with a pending first invoice (active once it is paid), or active at once on a free plan",
    params(("Idempotency-Key" = String, Header, description = "Required. A retry with the same key and body replays the first response; another body is 409 idempotency_key_reused")),
    request_body = CreateRequest,
    responses(
        (status = 201, description = "The subscription and its first invoice", body = Object),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such active plan", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the account already has an open subscription; `idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: the method (stripe, paypal) is not configured", body = doc::ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    body: Body<CreateRequest>,
) -> Result<Response, ApiError> {
    principal.require(SUBSCRIBERS)?;
    let body = body.parse()?;
    let key = key.required()?;
    let req = body.value;
    let account = acting_account(&principal, req.account_id.as_deref())?;
    // The account must exist before its subscription does.
    billing_account(&state, account).await?;
    let catalog = state.catalog.get().await;
    let plan = catalog
        .plan(&req.plan)
        .filter(|p| p.active)
        .ok_or_else(|| ApiError::NotFound(format!("no active plan {:?}", req.plan)))?
        .clone();
    let free = plan.price.amount.is_zero();
    let method = match (&req.method, free) {
        (Some(m), _) => subscription_method(m)?,
        (None, true) => events::PaymentMethod::Manual,
        (None, false) => {
            return Err(ApiError::invalid_field(
                "method",
                "method is required for a paid plan: bank_transfer, local_wallet or stripe",
            ))
        }
    };
    let id = derived_id(&["subscription", &account.to_string(), key.as_str()]);
    let claim = claim(&key, "subscriptions/create", &body.canonical);
    let now = super::now();
    let actor = principal.actor();
    let mut command = CreateSubscription {
        subscription_id: id,
        account_id: account,
        plan: terms(&plan),
        method,
        first_invoice_id: derived_id(&["subscription-invoice", &id.to_string(), "initial"]),
        first_invoice_due_at: now + Duration::days(SUBSCRIPTION_INVOICE_DUE_DAYS),
        stripe_customer_id: None,
        stripe_subscription_id: None,
        now,
    };
    let existing = load(&state, id).await?;
    let mut reservations = Vec::new();
    if existing.status().is_none() {
        // One open subscription per account: the n-th subscription takes the
        // slot `{account}/{n}` in its own append, so of two concurrent
        // creates only one commits.
        super::fresh_read_models(&state).await?;
        let (count, open) = state
            .read_models
            .subscription_count(&account.to_string())
            .await
            .map_err(projection_error)?;
        if let Some(open) = open {
            return Err(ApiError::Conflict(format!(
                "the account already has an open subscription ({}, {})",
                open.id, open.status
            )));
        }
        reservations.push(Reservation {
            scope: SUBSCRIPTION_SLOT_SCOPE.into(),
            value: format!("{account}/{count}"),
        });
        if method == events::PaymentMethod::Stripe && !free {
            command.stripe_subscription_id =
                start_stripe_subscription(&state, &mut command).await?;
        }
    }
    let done = match execute(
        &state,
        &actor,
        id,
        SubscriptionCommand::Create(Box::new(command)),
        Some(&claim),
        &reservations,
    )
    .await
    {
        Err(ServiceError::Reserved { .. }) => {
            return Err(ApiError::Conflict(
                "the account already has an open subscription".into(),
            ))
        }
        other => other.map_err(|e| service_error(e, subscription_error))?,
    };
    let sub = load(&state, id).await?;
    let followed = follow_up(&state, &actor, &sub, now).await?;
    let mut body = subscription_json(&sub);
    body["position"] = json!(max_position(done.position(), followed));
    let response = (StatusCode::CREATED, Json(body)).into_response();
    Ok(replayed(response, done.replayed.is_some()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    /// The plan to change to: a higher one now (prorated), a lower one at
    /// the period end.
    pub plan: String,
    /// For developers: the account (defaults to the token's).
    pub account_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/billing/subscriptions/upgrade",
    tag = "billing",
    summary = "Change plan: upgrade now with a prorated pending invoice, or schedule a downgrade at the period end",
    params(("Idempotency-Key" = String, Header, description = "Required. A retry with the same key and body replays the first response; another body is 409 idempotency_key_reused")),
    request_body = UpgradeRequest,
    responses(
        (status = 200, description = "The change (`upgrade` with the proration figures and invoice, or `downgrade_scheduled`) and the subscription", body = Object),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such plan, or no open subscription", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the same plan, a downgrade already scheduled, the subscription is not active, or it is a Stripe subscription (plan changes at Stripe are not supported yet)", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    body: Body<UpgradeRequest>,
) -> Result<Response, ApiError> {
    principal.require(SUBSCRIBERS)?;
    let body = body.parse()?;
    let key = key.required()?;
    let req = body.value;
    let account = acting_account(&principal, req.account_id.as_deref())?;
    let catalog = state.catalog.get().await;
    let plan = catalog
        .plan(&req.plan)
        .filter(|p| p.active)
        .ok_or_else(|| ApiError::NotFound(format!("no active plan {:?}", req.plan)))?
        .clone();
    let id = open_subscription(&state, account).await?;
    if load(&state, id).await?.stripe_subscription_id().is_some() {
        return Err(ApiError::Conflict(
            "plan changes of a Stripe subscription are not supported yet; \
             cancel and subscribe again"
                .into(),
        ));
    }
    let claim = claim(&key, "subscriptions/upgrade", &body.canonical);
    let now = super::now();
    let actor = principal.actor();
    let done = execute(
        &state,
        &actor,
        id,
        SubscriptionCommand::ChangePlan {
            to: terms(&plan),
            proration_invoice_id: derived_id(&[
                "subscription-invoice",
                &id.to_string(),
                "proration",
                key.as_str(),
            ]),
            invoice_due_at: now + Duration::days(SUBSCRIPTION_INVOICE_DUE_DAYS),
            now,
        },
        Some(&claim),
        &[],
    )
    .await
    .map_err(|e| service_error(e, subscription_error))?;
    let sub = load(&state, id).await?;
    let mut position = done.position();
    let change = match done.outcome() {
        Some(SubscriptionEvent::SubscriptionPlanChanged(c)) => {
            if c.proration_invoice.is_none() {
                // Nothing to pay: the prorated credits are granted now.
                let raw = format!("subscription-{id}-upgrade-{}", key.as_str());
                let granted = grant_once(
                    &state,
                    &actor,
                    Grant {
                        account,
                        key: &raw,
                        credits: c.prorated_credits,
                        expires_at: sub.period().map(|p| p.1).unwrap_or(now),
                        description: format!("upgrade to {}", c.to.name),
                    },
                    now,
                )
                .await?;
                position = max_position(position, granted);
            }
            json!({
                "kind": "upgrade",
                "from": c.from.slug,
                "to": c.to.slug,
                "prorated_amount": c.prorated_amount,
                "prorated_credits": c.prorated_credits,
                "changed_at": c.changed_at,
                "invoice": c.proration_invoice.as_ref().map(invoice_json),
            })
        }
        Some(SubscriptionEvent::SubscriptionDowngradeScheduled(d)) => json!({
            "kind": "downgrade_scheduled",
            "from": d.from,
            "to": d.to.slug,
            "effective_at": d.effective_at,
        }),
        _ => return Err(ApiError::Internal),
    };
    position = max_position(position, follow_up(&state, &actor, &sub, now).await?);
    let body = json!({
        "change": change,
        "subscription": subscription_json(&sub),
        "position": position,
    });
    Ok(replayed(
        (StatusCode::OK, Json(body)).into_response(),
        done.replayed.is_some(),
    ))
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Cancel at the end of the paid period (default) or now.
    #[serde(default = "default_true")]
    pub at_period_end: bool,
    /// For developers: the account (defaults to the token's).
    pub account_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/billing/subscriptions/cancel",
    tag = "billing",
    summary = "Cancel the open subscription at the period end (default) or now; the account returns to the free plan when it ends",
    request_body = CancelRequest,
    responses(
        (status = 200, description = "The subscription", body = Object),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no open subscription", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the subscription is already canceled", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
        (status = 502, description = "`unavailable`: Stripe refused to cancel the Stripe subscription; nothing was written", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: Stripe is unreachable or not configured; nothing was written", body = doc::ErrorBody),
    ),
)]
pub async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    body: Body<CancelRequest>,
) -> Result<Response, ApiError> {
    principal.require(SUBSCRIBERS)?;
    let req = body.parse()?.value;
    let account = acting_account(&principal, req.account_id.as_deref())?;
    let id = open_subscription(&state, account).await?;
    let now = super::now();
    let actor = principal.actor();
    let sub = load(&state, id).await?;
    cancel_at_stripe(&state, &sub, id, req.at_period_end, now).await?;
    let position = apply_and_follow(
        &state,
        &actor,
        id,
        SubscriptionCommand::Cancel {
            at_period_end: req.at_period_end,
            reason: CancelReason::Customer,
            now,
        },
        now,
    )
    .await?;
    let sub = load(&state, id).await?;
    let mut body = subscription_json(&sub);
    body["position"] = json!(position);
    Ok(Json(body).into_response())
}

/// Whether a customer's cancel of `sub` at `now` waits for the period end:
/// asked for, and the subscription runs (active or trialing) in a period
/// not yet over. Otherwise it cancels now (as the aggregate decides).
fn cancel_waits_for_period_end(
    sub: &Subscription,
    at_period_end: bool,
    now: DateTime<Utc>,
) -> bool {
    at_period_end
        && matches!(
            sub.status(),
            Some(SubscriptionStatus::Active | SubscriptionStatus::Trialing)
        )
        && sub.period().is_some_and(|(_, end)| now < end)
}

/// Tells Stripe first when `sub` lives there (docs/adr/0011-payments-gateway.md):
/// `cancel_at_period_end` when ours waits for the period end, else the
/// subscription is deleted now, under an idempotency key derived from our
/// id. A failure answers the gateway's error before anything is written.
/// Nothing is sent when the cancel is already scheduled and stays so, or
/// when the subscription is already canceled (the local cancel refuses).
async fn cancel_at_stripe(
    state: &AppState,
    sub: &Subscription,
    id: Uuid,
    at_period_end: bool,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let Some(stripe_id) = sub.stripe_subscription_id() else {
        return Ok(());
    };
    if sub.status().is_none() || sub.status() == Some(SubscriptionStatus::Canceled) {
        return Ok(());
    }
    let at_period_end = cancel_waits_for_period_end(sub, at_period_end, now);
    if at_period_end && sub.cancel_at_period_end() {
        return Ok(());
    }
    let gateway = state.gateways.for_method(events::PaymentMethod::Stripe)?;
    gateway
        .cancel_subscription(&app::gateway::CancelSubscriptionRequest {
            gateway_subscription_id: stripe_id.to_owned(),
            subscription_id: id.to_string(),
            at_period_end,
            idempotency_key: format!(
                "cancel-{id}-{}",
                if at_period_end {
                    "at_period_end"
                } else {
                    "now"
                }
            ),
        })
        .await?;
    Ok(())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunPeriodsRequest {
    /// The instant to process at (RFC 3339), so tests can move time.
    pub now: String,
}

/// What one run of period processing did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PeriodRun {
    /// Subscriptions looked at.
    pub processed: usize,
    /// Of those, how many changed (renewed, past_due, canceled…).
    pub changed: usize,
    /// Of those, how many failed (logged; retried by the next run).
    pub failed: usize,
    /// Whether more may be due than this run's batch took.
    pub more: bool,
}

#[utoipa::path(
    post,
    path = "/v1/admin/billing/run-periods",
    tag = "admin",
    summary = "Process due subscriptions at `now`: cancel at period end, apply scheduled downgrades, renew, past_due, cancel unpaid; and expire due credits",
    request_body = RunPeriodsRequest,
    responses(
        (status = 200, description = "`{processed, changed, failed, more}`", body = Object),
        (status = 403, description = "`forbidden`: not a developer", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: `now` is not an RFC 3339 time", body = doc::ErrorBody),
    ),
)]
pub async fn run_periods(
    State(state): State<AppState>,
    principal: Principal,
    body: Body<RunPeriodsRequest>,
) -> Result<Response, ApiError> {
    principal.require(STAFF)?;
    let req = body.parse()?.value;
    let now = super::extract::time("now", &req.now)?;
    let run = process_due(&state, &principal.actor(), now).await?;
    let head = state.store.head_position().await.map_err(store_error)?;
    let mut body = serde_json::to_value(&run).map_err(|_| ApiError::Internal)?;
    body["position"] = json!(head);
    Ok(Json(body).into_response())
}

/// Processes the subscriptions due at `now` (at most
/// [`RUN_PERIODS_BATCH_MAX`]). Running it again at the same `now` changes
/// nothing.
pub async fn process_due(
    state: &AppState,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<PeriodRun, ApiError> {
    super::fresh_read_models(state).await?;
    let ids = state
        .read_models
        .subscriptions_maybe_due(
            &projections::time_text(now),
            &projections::time_text(
                now - Duration::days(ledger::subscription::PAST_DUE_GRACE_DAYS),
            ),
            "",
            RUN_PERIODS_BATCH_MAX,
        )
        .await
        .map_err(projection_error)?;
    let mut run = PeriodRun {
        more: i64::try_from(ids.len()).unwrap_or(i64::MAX) >= RUN_PERIODS_BATCH_MAX,
        ..PeriodRun::default()
    };
    for raw in ids {
        let Ok(id) = Uuid::parse_str(&raw) else {
            continue;
        };
        run.processed += 1;
        match process_one(state, actor, id, now).await {
            Ok(true) => run.changed += 1,
            Ok(false) => {}
            Err(e) => {
                run.failed += 1;
                warn!(subscription = %id, error = ?e, "subscription period processing failed");
            }
        }
    }
    Ok(run)
}

/// Takes every step due at `now` for one subscription; true if it changed.
async fn process_one(
    state: &AppState,
    actor: &Actor,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, ApiError> {
    let mut sub = load(state, id).await?;
    let Some(account) = sub.account_id() else {
        return Ok(false);
    };
    // The ended period's credits leave the balance at its end first.
    super::settle::run_account_command(
        state,
        actor,
        account,
        AccountCommand::ExpireDue { now },
        None,
    )
    .await?;
    let mut changed = false;
    for _ in 0..STEPS_PER_SUBSCRIPTION_MAX {
        let Some(step) = sub.next_step(now) else {
            break;
        };
        let command = match step {
            Step::CancelAtPeriodEnd => SubscriptionCommand::Cancel {
                at_period_end: false,
                reason: CancelReason::Customer,
                now,
            },
            Step::CancelUnpaid => SubscriptionCommand::Cancel {
                at_period_end: false,
                reason: CancelReason::Unpaid,
                now,
            },
            Step::PastDue { invoice_id } => SubscriptionCommand::MarkPastDue {
                invoice_id,
                payment_failed: false,
                now,
            },
            Step::Renew { plan } => {
                let (_, end) = sub.period().ok_or(ApiError::Internal)?;
                // Today's catalog terms of the plan, else the ones recorded.
                let catalog = state.catalog.get().await;
                let terms = catalog
                    .plan(&plan)
                    .filter(|p| p.active)
                    .map(terms)
                    .or_else(|| {
                        sub.scheduled_plan()
                            .filter(|p| p.slug == plan)
                            .or(sub.plan())
                            .cloned()
                    })
                    .ok_or(ApiError::Internal)?;
                SubscriptionCommand::Renew {
                    plan: terms,
                    invoice_id: derived_id(&[
                        "subscription-invoice",
                        &id.to_string(),
                        "renewal",
                        &end.timestamp().to_string(),
                    ]),
                    invoice_due_at: end.max(now) + Duration::days(SUBSCRIPTION_INVOICE_DUE_DAYS),
                    now,
                }
            }
        };
        let done = execute(state, actor, id, command, None, &[])
            .await
            .map_err(|e| service_error(e, subscription_error))?;
        if done.events.is_empty() {
            break;
        }
        changed = true;
        for e in &done.events {
            if let SubscriptionEvent::SubscriptionCanceled(c) = &e.event {
                void_invoices(state, actor, &c.open_invoices, now).await;
            }
        }
        sub = done.state.ok_or(ApiError::Internal)?;
    }
    if changed {
        follow_up(state, actor, &sub, now).await?;
    } else {
        // A step a crash may have left undone.
        ensure_invoices(state, actor, &sub, now).await?;
    }
    Ok(changed)
}

/// The background ticker: processes due subscriptions with the real clock
/// every [`PERIOD_TICK_SECONDS`], next to the expiry sweeper.
pub async fn run(state: AppState, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let actor = Actor::system("subscription-periods");
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(StdDuration::from_secs(PERIOD_TICK_SECONDS)) => {
                match process_due(&state, &actor, super::now()).await {
                    Ok(run) if run.changed > 0 || run.failed > 0 => {
                        debug!(?run, "subscription periods processed");
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = ?e, "subscription period processing failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_is_a_subscription_method_and_paypal_is_unavailable() {
        assert_eq!(
            subscription_method("stripe"),
            Ok(events::PaymentMethod::Stripe)
        );
        assert!(matches!(
            subscription_method("paypal"),
            Err(ApiError::Unavailable(_))
        ));
        assert!(matches!(
            subscription_method("cash"),
            Err(ApiError::InvalidRequest { .. })
        ));
    }
}
