//! Subscriptions (SPEC §2, issue 6; docs/adr/0012-subscriptions.md):
//! create, upgrade, downgrade, cancel ([`lifecycle`]), renewal and period
//! processing ([`periods`]), and the hooks that settling an invoice and
//! Stripe's webhooks call (here).
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

pub mod lifecycle;
pub mod periods;

use chrono::{DateTime, Utc};
use events::{
    AccountId, Actor, CancelReason, GrantSource, IdempotencyKey, InvoiceIssued, Plan, PlanTerms,
    SubscriptionEvent, SubscriptionInvoice, SubscriptionStatus,
};
use ledger::account::GrantCredits;
use ledger::invoice::{IssueInvoice, LineInput};
use ledger::{
    AccountCommand, AccountError, Invoice, InvoiceCommand, Subscription, SubscriptionCommand,
    SubscriptionError,
};
use serde_json::{json, Value};
use store::{request_hash, CommandContext, Executed, IdempotencyClaim, Reservation, ServiceError};
use tracing::{debug, warn};
use uuid::Uuid;

use crate::billing::numbering::issue_invoice;
use crate::billing::settle::run_account_command;
use crate::billing::{billing_account, derived_id, max_position};
use crate::caller::Caller;
use crate::error::AppError;
use crate::{now, App};

/// Days until a subscription invoice is due.
pub const SUBSCRIPTION_INVOICE_DUE_DAYS: i64 = crate::billing::INVOICE_DUE_DAYS;
/// The reservation scope that keeps one open subscription per account: the
/// n-th subscription of an account reserves `{account}/{n}`.
pub const SUBSCRIPTION_SLOT_SCOPE: &str = "subscription_slot";

/// The catalog's facts of a plan, as the subscription records them: its
/// price in `currency` (the account's, or the subscription's on a plan
/// change), else its own price (never a conversion).
fn terms(plan: &Plan, currency: &events::Currency) -> PlanTerms {
    PlanTerms {
        slug: plan.slug.clone(),
        name: plan.name.clone(),
        price: plan.price_for(currency),
        billing_cycle: plan.billing_cycle,
        included_credits: plan.included_credits,
    }
}

/// The currency a subscription is billed in (USD before it has a plan).
fn sub_currency(sub: &Subscription) -> events::Currency {
    sub.plan()
        .map(|p| p.price.currency.clone())
        .unwrap_or_else(events::Currency::usd)
}

async fn load(app: &App, id: Uuid) -> Result<Subscription, AppError> {
    Ok(app
        .store
        .load::<Subscription>(&id.to_string())
        .await?
        .aggregate)
}

async fn execute(
    app: &App,
    actor: &Actor,
    id: Uuid,
    command: SubscriptionCommand,
    claim: Option<&IdempotencyClaim>,
    reservations: &[Reservation],
) -> Result<Executed<Subscription>, ServiceError<SubscriptionError>> {
    app.execute::<Subscription>(
        &id.to_string(),
        command,
        &CommandContext::new(actor.clone()),
        claim,
        reservations,
    )
    .await
}

fn key(raw: &str) -> Result<IdempotencyKey, AppError> {
    IdempotencyKey::parse(raw).map_err(|_| AppError::Internal)
}

/// Credits a subscription grants once, under `key`.
struct Grant<'a> {
    account: AccountId,
    key: &'a str,
    credits: i64,
    expires_at: DateTime<Utc>,
    description: String,
    /// A value only one grant may take (the free plan's credits are per
    /// account and month, whatever the subscription).
    once_per: Option<Reservation>,
}

/// Reservation scope of the free plan's monthly credits: one grant per
/// account and calendar month of its period start, so cancelling and
/// subscribing to the free plan again grants nothing more.
pub const FREE_CREDITS_SCOPE: &str = "free_credits";

/// Grants `credits` (expiring at `expires_at`) once under its key. Credits
/// whose expiry has already passed for the account are not granted.
async fn grant_once(
    app: &App,
    actor: &Actor,
    grant: Grant<'_>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, AppError> {
    let Grant {
        account,
        key: raw_key,
        credits,
        expires_at,
        description,
        once_per,
    } = grant;
    if credits <= 0 {
        return Ok(None);
    }
    let key = key(raw_key)?;
    let claim = IdempotencyClaim {
        request_hash: request_hash(format!("subscription-grant\n{raw_key}").as_bytes()),
        key: key.clone(),
    };
    let done = app
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
            once_per.as_slice(),
        )
        .await;
    match done {
        Ok(done) => Ok(done.position()),
        Err(ServiceError::Reserved { scope, value }) if scope == FREE_CREDITS_SCOPE => {
            debug!(%value, "the account had this month's free credits already");
            Ok(None)
        }
        Err(ServiceError::Domain(AccountError::ExpiryNotInFuture { .. })) => {
            debug!(
                key = raw_key,
                "subscription credits already past their expiry"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The credits of a free plan's current period, granted at its start.
async fn grant_free_period(
    app: &App,
    actor: &Actor,
    sub: &Subscription,
    now: DateTime<Utc>,
) -> Result<Option<i64>, AppError> {
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
        app,
        actor,
        Grant {
            account,
            key: &raw,
            credits: plan.included_credits,
            expires_at: end,
            description: ledger::subscription::period_line(plan, start, end),
            once_per: Some(Reservation {
                scope: FREE_CREDITS_SCOPE.into(),
                value: format!("{account}:{}", start.format("%Y-%m")),
            }),
        },
        now,
    )
    .await
}

/// Issues every pending invoice the subscription records whose stream does
/// not exist yet (a step a crash may have left undone).
async fn ensure_invoices(
    app: &App,
    actor: &Actor,
    sub: &Subscription,
    now: DateTime<Utc>,
) -> Result<Option<i64>, AppError> {
    let (Some(id), Some(account)) = (sub.id(), sub.account_id()) else {
        return Ok(None);
    };
    let mut position = None;
    for invoice in sub.open_invoices() {
        let existing = app
            .store
            .load::<Invoice>(&invoice.invoice_id.to_string())
            .await?
            .aggregate;
        if existing.issued().is_some() {
            continue;
        }
        let issued = issue(app, actor, id, account, invoice, now).await?;
        position = max_position(position, issued.position());
    }
    Ok(position)
}

async fn issue(
    app: &App,
    actor: &Actor,
    subscription_id: Uuid,
    account: AccountId,
    invoice: &SubscriptionInvoice,
    now: DateTime<Utc>,
) -> Result<Executed<Invoice>, AppError> {
    let holder = billing_account(app, account).await?;
    issue_invoice(
        app,
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
    app: &App,
    actor: &Actor,
    sub: &Subscription,
    now: DateTime<Utc>,
) -> Result<Option<i64>, AppError> {
    let (Some(account), Some((plan, status))) = (sub.account_id(), sub.account_target()) else {
        return Ok(None);
    };
    let reason = format!(
        "subscription {} is {}",
        sub.id().unwrap_or_default(),
        sub.status().map(|s| s.as_str()).unwrap_or("unknown")
    );
    let changed = run_account_command(
        app,
        actor,
        account,
        AccountCommand::ChangePlan { plan, now },
        None,
    )
    .await?;
    let set = match run_account_command(
        app,
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
        Err(AppError::Conflict(_)) => None,
        Err(e) => return Err(e),
    };
    Ok(max_position(changed.position(), set))
}

/// Voids the pending invoices a canceled subscription left.
async fn void_invoices(
    app: &App,
    actor: &Actor,
    invoices: &[Uuid],
    now: DateTime<Utc>,
) -> Option<i64> {
    let mut position = None;
    for id in invoices {
        match app
            .execute::<Invoice>(
                &id.to_string(),
                InvoiceCommand::Void {
                    reason: Some("subscription canceled".into()),
                    actor: actor.sub.clone(),
                    now,
                },
                &CommandContext::new(actor.clone()),
                None,
                &[],
            )
            .await
        {
            Ok(done) => position = max_position(position, done.position()),
            Err(e) => debug!(invoice = %id, error = %e, "invoice not voided"),
        }
    }
    position
}

/// Everything after a subscription command: invoices, a free period's
/// credits, the account.
async fn follow_up(
    app: &App,
    actor: &Actor,
    sub: &Subscription,
    now: DateTime<Utc>,
) -> Result<Option<i64>, AppError> {
    let a = ensure_invoices(app, actor, sub, now).await?;
    let b = grant_free_period(app, actor, sub, now).await?;
    let c = sync_account(app, actor, sub, now).await?;
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

/// The account a request acts for: `account_id` (developers, or the
/// caller's own) or the token's.
fn acting_account(caller: &Caller, raw: Option<&str>) -> Result<AccountId, AppError> {
    match (raw, caller.account_id()) {
        (Some(raw), _) => caller.scope(crate::input::account_id(raw)?),
        (None, Some(own)) => Ok(own),
        (None, None) => caller.own_account(),
    }
}

/// The account's open (not canceled) subscription.
async fn open_subscription(app: &App, account: AccountId) -> Result<Uuid, AppError> {
    app.fresh_read_models().await?;
    let (_, open) = app
        .read_models
        .subscription_count(&account.to_string())
        .await?;
    open.and_then(|s| Uuid::parse_str(&s.id).ok())
        .ok_or_else(|| AppError::NotFound("the account has no open subscription".into()))
}

// ---------------------------------------------------------------------------
// Hooks called by settle and the Stripe webhooks
// ---------------------------------------------------------------------------

/// A subscription invoice was paid: activate or renew the subscription and
/// grant the period's included credits, at most once. Returns the highest
/// position written.
pub async fn on_invoice_paid(
    app: &App,
    actor: &Actor,
    invoice: &InvoiceIssued,
) -> Result<Option<i64>, AppError> {
    let Some(id) = invoice.subscription_id else {
        return Ok(None);
    };
    let now = now();
    let done = match execute(
        app,
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
        Err(e) => return Err(e.into()),
    };
    let sub = done.state.clone().ok_or(AppError::Internal)?;
    let mut position = done.position();
    if let (Some(paid), Some(account)) = (sub.paid_invoice(invoice.invoice_id), sub.account_id()) {
        let raw = format!("subscription-invoice-{}", invoice.invoice_id);
        let granted = grant_once(
            app,
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
                once_per: None,
            },
            now,
        )
        .await?;
        position = max_position(position, granted);
    }
    let synced = follow_up(app, actor, &sub, now).await?;
    Ok(max_position(position, synced))
}

/// A subscription invoice's payment failed (Stripe `invoice.payment_failed`,
/// `payment_intent.payment_failed`): the subscription becomes past_due.
/// Doing it twice changes nothing. Returns the highest position written.
pub async fn on_invoice_payment_failed(
    app: &App,
    actor: &Actor,
    invoice_id: Uuid,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Option<i64>, AppError> {
    let invoice = app
        .store
        .load::<Invoice>(&invoice_id.to_string())
        .await?
        .aggregate;
    let Some(id) = invoice.issued().and_then(|i| i.subscription_id) else {
        return Ok(None);
    };
    debug!(subscription = %id, invoice = %invoice_id, reason, "subscription invoice payment failed");
    let done = match execute(
        app,
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
        Err(e) => return Err(e.into()),
    };
    let sub = done.state.clone().ok_or(AppError::Internal)?;
    let synced = sync_account(app, actor, &sub, now).await?;
    Ok(max_position(done.position(), synced))
}

/// The subscription of ours that Stripe knows as `stripe_subscription_id`.
pub async fn by_stripe_id(
    app: &App,
    stripe_subscription_id: &str,
) -> Result<Option<Uuid>, AppError> {
    Ok(app
        .read_models
        .subscription_by_stripe_id(stripe_subscription_id)
        .await?
        .and_then(|id| Uuid::parse_str(&id).ok()))
}

/// The pending invoice of a subscription a Stripe `invoice.paid` for it
/// pays: the oldest proration invoice for Stripe's invoice of a plan change
/// (`proration`), else the oldest other one; the oldest of any kind when
/// there is none of the kind.
pub async fn open_invoice(
    app: &App,
    subscription_id: Uuid,
    proration: bool,
) -> Result<Option<Uuid>, AppError> {
    let sub = load(app, subscription_id).await?;
    let open = sub.open_invoices();
    let oldest = |kind: Option<bool>| {
        open.iter()
            .filter(|i| kind.is_none_or(|p| (i.purpose == events::InvoicePurpose::Proration) == p))
            .min_by_key(|i| i.due_at)
            .map(|i| i.invoice_id)
    };
    Ok(oldest(Some(proration)).or_else(|| oldest(None)))
}

/// Stripe `customer.subscription.updated`: `status` is Stripe's
/// (`active|past_due|canceled|unpaid|incomplete|…`), `cancel_at_period_end`
/// as Stripe reports it. Applied at most once per change.
pub async fn on_stripe_subscription_updated(
    app: &App,
    actor: &Actor,
    subscription_id: Uuid,
    status: &str,
    cancel_at_period_end: bool,
    now: DateTime<Utc>,
) -> Result<Option<i64>, AppError> {
    let sub = load(app, subscription_id).await?;
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
        // Taken back at Stripe (its dashboard, or our reactivate).
        _ if !cancel_at_period_end && sub.cancel_at_period_end() => {
            Some(SubscriptionCommand::Reactivate { now })
        }
        _ => None,
    };
    let Some(command) = command else {
        return Ok(None);
    };
    apply_and_follow(app, actor, subscription_id, command, now).await
}

/// Stripe `customer.subscription.deleted`: the subscription is canceled now.
pub async fn on_stripe_subscription_deleted(
    app: &App,
    actor: &Actor,
    subscription_id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<i64>, AppError> {
    let sub = load(app, subscription_id).await?;
    if sub.status().is_none() || sub.status() == Some(SubscriptionStatus::Canceled) {
        return Ok(None);
    }
    apply_and_follow(
        app,
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
    app: &App,
    actor: &Actor,
    id: Uuid,
    command: SubscriptionCommand,
    now: DateTime<Utc>,
) -> Result<Option<i64>, AppError> {
    let done = execute(app, actor, id, command, None, &[]).await?;
    let mut position = done.position();
    for e in &done.events {
        if let SubscriptionEvent::SubscriptionCanceled(c) = &e.event {
            position = max_position(
                position,
                void_invoices(app, actor, &c.open_invoices, now).await,
            );
        }
    }
    let sub = done.state.clone().ok_or(AppError::Internal)?;
    Ok(max_position(
        position,
        follow_up(app, actor, &sub, now).await?,
    ))
}
