//! A subscription's life as its customer sees it: list, create (manual or
//! at Stripe, answering the first payment's `client_secret`), change plan
//! (upgrade now, prorated; downgrade at the period end; Stripe told first)
//! and cancel (at the period end or now, Stripe told first).

use chrono::{DateTime, Duration, Utc};
use events::{CancelReason, PaymentMethod, SubscriptionEvent, SubscriptionStatus};
use ledger::subscription::CreateSubscription;
use ledger::{Subscription, SubscriptionCommand};
use projections::Page;
use serde::Deserialize;
use serde_json::{json, Value};
use store::{Reservation, ServiceError};
use uuid::Uuid;

use super::{
    acting_account, apply_and_follow, execute, follow_up, grant_once, invoice_json, load,
    open_subscription, sub_currency, subscription_json, terms, Grant,
    SUBSCRIPTION_INVOICE_DUE_DAYS, SUBSCRIPTION_SLOT_SCOPE,
};
use crate::access;
use crate::billing::{billing_account, derived_id, max_position};
use crate::caller::Caller;
use crate::error::AppError;
use crate::input::{Input, Key, Query};
use crate::reads::page_request;
use crate::runner::claim;
use crate::{now, App, Written};

/// `?account_id=&limit=&cursor=` of the subscriptions list.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// For developers: the account (defaults to the token's).
    #[cfg_attr(feature = "openapi", param(value_type = Option<uuid::Uuid>))]
    pub account_id: Option<String>,
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500, default = 50))]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

/// The account's subscriptions, the open one first, then newest first.
pub async fn list(
    app: &App,
    caller: &Caller,
    min_position: Option<i64>,
    query: Query<ListQuery>,
) -> Result<Page<projections::subscriptions::SubscriptionView>, AppError> {
    caller.require(access::SUBSCRIBE)?;
    app.wait_for(min_position).await?;
    let q = query.parse()?;
    let account = acting_account(caller, q.account_id.as_deref())?;
    Ok(app
        .read_models
        .subscriptions(&account.to_string(), &page_request(q.limit, q.cursor)?)
        .await?)
}

/// `POST /billing/subscriptions/create`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// A plan's slug (`free`, `starter`, `professional`, `enterprise`).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9_-]{1,64}$")
    )]
    pub plan: String,
    /// `bank_transfer` or `local_wallet` (pay the first invoice with
    /// `POST /v1/billing/payments/manual`), or `stripe` (a Stripe
    /// subscription; the answer's `client_secret` confirms its first
    /// payment, and its `invoice.paid` webhook pays ours); `stripe`
    /// answers 503 while no Stripe key is configured, `paypal` always. Not
    /// needed for a free plan; required for a paid one.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::CustomerPaymentMethod>))]
    pub method: Option<String>,
    /// For developers: the account (defaults to the token's).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<uuid::Uuid>))]
    pub account_id: Option<String>,
}

/// The subscription method named by the body: a manual one, or Stripe.
fn subscription_method(raw: &str) -> Result<PaymentMethod, AppError> {
    use PaymentMethod as M;
    match M::parse(raw) {
        Some(m @ (M::BankTransfer | M::LocalWallet | M::Stripe)) => Ok(m),
        Some(M::Paypal) => Err(AppError::Unavailable(
            "paypal is not available; use bank_transfer or local_wallet".into(),
        )),
        _ => Err(AppError::invalid_field(
            "method",
            "method must be one of bank_transfer, local_wallet, stripe",
        )),
    }
}

/// Starts the subscription at Stripe (docs/adr/0011-payments-gateway.md):
/// a customer for the account and a subscription to the plan's Stripe
/// price (`payment_behavior=default_incomplete`, its latest invoice
/// expanded so that the first payment's `client_secret` comes back), both
/// created under idempotency keys derived from our ids, and records their
/// ids on `subscription` (so `SubscriptionCreated` keeps them). Called only
/// for `method: "stripe"`, before anything is written; without a Stripe
/// key it answers 503, and a plan without a Stripe price 503 too (nothing
/// to subscribe to at Stripe). Answers Stripe's subscription.
pub async fn start_stripe_subscription(
    app: &App,
    subscription: &mut CreateSubscription,
) -> Result<crate::gateway::GatewaySubscription, AppError> {
    let gateway = app.gateways.for_method(PaymentMethod::Stripe)?;
    let catalog = app.catalog.get().await;
    let plan = catalog.plan(&subscription.plan.slug);
    // Billed in another currency than the plan's own: the Stripe price's
    // currency option of that currency.
    let currency = Some(subscription.plan.price.currency.clone())
        .filter(|c| plan.is_some_and(|p| &p.price.currency != c));
    let price_id = plan
        .and_then(|p| p.stripe_price_id.clone())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            AppError::Unavailable(format!(
                "the {} plan has no Stripe price; set its stripe_price_id first",
                subscription.plan.slug
            ))
        })?;
    let account = subscription.account_id.to_string();
    // The account's one Stripe customer (created once, shared with its
    // saved cards).
    let customer = crate::billing::saved_cards::stripe_customer(
        app,
        gateway.as_ref(),
        subscription.account_id,
    )
    .await?;
    let created = gateway
        .create_subscription(&crate::gateway::SubscriptionRequest {
            customer_id: customer.clone(),
            price_id,
            currency,
            subscription_id: subscription.subscription_id.to_string(),
            account_id: account,
            first_invoice_id: subscription.first_invoice_id.to_string(),
            idempotency_key: format!("subscription-{}", subscription.subscription_id),
        })
        .await?;
    subscription.stripe_customer_id = Some(customer);
    subscription.stripe_subscription_id = Some(created.id.clone());
    Ok(created)
}

/// The first payment's `client_secret` of a Stripe subscription: from the
/// answer that created it, else (a replay, or a retry after the create
/// answered) read again from Stripe. The secret is never stored in the
/// log.
async fn first_payment_secret(
    app: &App,
    sub: &Subscription,
    created: Option<crate::gateway::GatewaySubscription>,
) -> Result<Option<String>, AppError> {
    let Some(stripe_id) = sub.stripe_subscription_id() else {
        return Ok(None);
    };
    if let Some(secret) = created.and_then(|c| c.client_secret) {
        return Ok(Some(secret));
    }
    let gateway = app.gateways.for_method(PaymentMethod::Stripe)?;
    Ok(gateway.get_subscription(stripe_id).await?.client_secret)
}

/// Subscribes to a plan: incomplete with a pending first invoice (active
/// once it is paid), or active at once on a free plan. 201.
pub async fn create(
    app: &App,
    caller: &Caller,
    key: Key,
    input: Input<CreateRequest>,
) -> Result<Written<Value>, AppError> {
    caller.require(access::SUBSCRIBE)?;
    let body = input.parse()?;
    let key = key.required()?;
    let req = body.value;
    let account = acting_account(caller, req.account_id.as_deref())?;
    // The account must exist before its subscription does; its currency
    // picks the plan's price.
    let currency = crate::billing::account_currency(&billing_account(app, account).await?);
    let catalog = app.catalog.get().await;
    let plan = catalog
        .plan(&req.plan)
        .filter(|p| p.active)
        .ok_or_else(|| AppError::NotFound(format!("no active plan {:?}", req.plan)))?
        .clone();
    let free = plan.price.amount.is_zero();
    let method = match (&req.method, free) {
        (Some(m), _) => subscription_method(m)?,
        (None, true) => PaymentMethod::Manual,
        (None, false) => {
            return Err(AppError::invalid_field(
                "method",
                "method is required for a paid plan: bank_transfer, local_wallet or stripe",
            ))
        }
    };
    let id = derived_id(&["subscription", &account.to_string(), key.as_str()]);
    let claim = claim(&key, "subscriptions/create", &body.canonical);
    let now = now();
    let actor = caller.actor();
    let mut command = CreateSubscription {
        subscription_id: id,
        account_id: account,
        plan: terms(&plan, &currency),
        method,
        first_invoice_id: derived_id(&["subscription-invoice", &id.to_string(), "initial"]),
        first_invoice_due_at: now + Duration::days(SUBSCRIPTION_INVOICE_DUE_DAYS),
        stripe_customer_id: None,
        stripe_subscription_id: None,
        now,
    };
    let existing = load(app, id).await?;
    let mut reservations = Vec::new();
    let mut at_stripe = None;
    if existing.status().is_none() {
        // One open subscription per account: the n-th subscription takes the
        // slot `{account}/{n}` in its own append, so of two concurrent
        // creates only one commits.
        app.fresh_read_models().await?;
        let (count, open) = app
            .read_models
            .subscription_count(&account.to_string())
            .await?;
        if let Some(open) = open {
            return Err(AppError::Conflict(format!(
                "the account already has an open subscription ({}, {})",
                open.id, open.status
            )));
        }
        reservations.push(Reservation {
            scope: SUBSCRIPTION_SLOT_SCOPE.into(),
            value: format!("{account}/{count}"),
        });
        if method == PaymentMethod::Stripe && !free {
            at_stripe = Some(start_stripe_subscription(app, &mut command).await?);
        }
    }
    let done = match execute(
        app,
        &actor,
        id,
        SubscriptionCommand::Create(Box::new(command)),
        Some(&claim),
        &reservations,
    )
    .await
    {
        Err(ServiceError::Reserved { .. }) => {
            return Err(AppError::Conflict(
                "the account already has an open subscription".into(),
            ))
        }
        other => other?,
    };
    let sub = load(app, id).await?;
    let followed = follow_up(app, &actor, &sub, now).await?;
    let mut value = subscription_json(&sub);
    if sub.stripe_subscription_id().is_some() {
        value["client_secret"] = json!(first_payment_secret(app, &sub, at_stripe).await?);
    }
    value["position"] = json!(max_position(done.position(), followed));
    Ok(Written {
        value,
        replayed: done.replayed.is_some(),
        created: true,
    })
}

/// `POST /billing/subscriptions/upgrade`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    /// The plan to change to: a higher one now (prorated), a lower one at
    /// the period end.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9_-]{1,64}$")
    )]
    pub plan: String,
    /// For developers: the account (defaults to the token's).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<uuid::Uuid>))]
    pub account_id: Option<String>,
}

/// Changes plan: an upgrade now with a prorated pending invoice (or the
/// prorated credits at once when there is nothing to pay), or a downgrade
/// scheduled at the period end. 200.
pub async fn upgrade(
    app: &App,
    caller: &Caller,
    key: Key,
    input: Input<UpgradeRequest>,
) -> Result<Written<Value>, AppError> {
    caller.require(access::SUBSCRIBE)?;
    let body = input.parse()?;
    let key = key.required()?;
    let req = body.value;
    let account = acting_account(caller, req.account_id.as_deref())?;
    let catalog = app.catalog.get().await;
    let plan = catalog
        .plan(&req.plan)
        .filter(|p| p.active)
        .ok_or_else(|| AppError::NotFound(format!("no active plan {:?}", req.plan)))?
        .clone();
    let id = open_subscription(app, account).await?;
    let claim = claim(&key, "subscriptions/upgrade", &body.canonical);
    let now = now();
    let actor = caller.actor();
    let current = load(app, id).await?;
    // The new plan's price in the subscription's currency.
    let currency = sub_currency(&current);
    // Stripe's invoice for the upgrade, if it lives there: ours takes its
    // amount, so that Stripe's payment pays ours exactly.
    let gateway_proration = change_at_stripe(app, &current, id, &plan, key.as_str(), now).await?;
    let done = execute(
        app,
        &actor,
        id,
        SubscriptionCommand::ChangePlan {
            to: terms(&plan, &currency),
            proration_invoice_id: derived_id(&[
                "subscription-invoice",
                &id.to_string(),
                "proration",
                key.as_str(),
            ]),
            invoice_due_at: now + Duration::days(SUBSCRIPTION_INVOICE_DUE_DAYS),
            gateway_proration,
            now,
        },
        Some(&claim),
        &[],
    )
    .await?;
    let sub = load(app, id).await?;
    let mut position = done.position();
    let change = match done.outcome() {
        Some(SubscriptionEvent::SubscriptionPlanChanged(c)) => {
            if c.proration_invoice.is_none() {
                // Nothing to pay: the prorated credits are granted now.
                let raw = format!("subscription-{id}-upgrade-{}", key.as_str());
                let granted = grant_once(
                    app,
                    &actor,
                    Grant {
                        account,
                        key: &raw,
                        credits: c.prorated_credits,
                        expires_at: sub.period().map(|p| p.1).unwrap_or(now),
                        description: format!("upgrade to {}", c.to.name),
                        once_per: None,
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
        _ => return Err(AppError::Internal),
    };
    position = max_position(position, follow_up(app, &actor, &sub, now).await?);
    Ok(Written {
        value: json!({
            "change": change,
            "subscription": subscription_json(&sub),
            "position": position,
        }),
        replayed: done.replayed.is_some(),
        created: false,
    })
}

fn default_true() -> bool {
    true
}

/// `POST /billing/subscriptions/cancel`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Cancel at the end of the paid period (default) or now.
    #[serde(default = "default_true")]
    #[cfg_attr(feature = "openapi", schema(default = true))]
    pub at_period_end: bool,
    /// For developers: the account (defaults to the token's).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<uuid::Uuid>))]
    pub account_id: Option<String>,
}

/// Cancels the open subscription at the period end (default) or now; the
/// account returns to the free plan when it ends. A Stripe subscription is
/// canceled at Stripe first; its failure writes nothing.
pub async fn cancel(
    app: &App,
    caller: &Caller,
    input: Input<CancelRequest>,
) -> Result<Value, AppError> {
    caller.require(access::SUBSCRIBE)?;
    let req = input.parse()?.value;
    let account = acting_account(caller, req.account_id.as_deref())?;
    let id = open_subscription(app, account).await?;
    let now = now();
    let actor = caller.actor();
    let sub = load(app, id).await?;
    cancel_at_stripe(app, &sub, id, req.at_period_end, now).await?;
    let position = apply_and_follow(
        app,
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
    let sub = load(app, id).await?;
    let mut value = subscription_json(&sub);
    value["position"] = json!(position);
    Ok(value)
}

/// `POST /billing/subscriptions/reactivate`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReactivateRequest {
    /// For developers: the account (defaults to the token's).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<uuid::Uuid>))]
    pub account_id: Option<String>,
}

/// Takes back a cancel scheduled for the period end: the subscription
/// renews as before. Nothing to take back is not an error (the answer is
/// the subscription as it is); a canceled subscription cannot be (409).
/// A Stripe subscription is reactivated at Stripe first.
pub async fn reactivate(
    app: &App,
    caller: &Caller,
    input: Input<ReactivateRequest>,
) -> Result<Value, AppError> {
    caller.require(access::SUBSCRIBE)?;
    let req = input.parse()?.value;
    let account = acting_account(caller, req.account_id.as_deref())?;
    let id = open_subscription(app, account).await?;
    let now = now();
    let sub = load(app, id).await?;
    if sub.cancel_at_period_end() {
        reactivate_at_stripe(app, &sub, id).await?;
    }
    let position = apply_and_follow(
        app,
        &caller.actor(),
        id,
        SubscriptionCommand::Reactivate { now },
        now,
    )
    .await?;
    let sub = load(app, id).await?;
    let mut value = subscription_json(&sub);
    value["position"] = json!(match position {
        Some(p) => p,
        None => app.store.head_position().await?,
    });
    Ok(value)
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
    app: &App,
    sub: &Subscription,
    id: Uuid,
    at_period_end: bool,
    now: DateTime<Utc>,
) -> Result<(), AppError> {
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
    let gateway = app.gateways.for_method(PaymentMethod::Stripe)?;
    gateway
        .cancel_subscription(&crate::gateway::CancelSubscriptionRequest {
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

/// Tells Stripe first when `sub` lives there (docs/adr/0011-payments-gateway.md):
/// the subscription's item (found with `GET /v1/subscriptions/{id}`) gets
/// the new plan's Stripe price, under an idempotency key derived from our
/// id and the request's key. An upgrade is prorated and invoiced by Stripe
/// at once (`proration_behavior=always_invoice`), and that invoice's amount
/// is answered: our proration invoice takes it. A downgrade, which takes
/// effect here at the period end, is not prorated (`none`: Stripe charges
/// the new price from the next period on). A change this subscription
/// refuses is not sent (the local command then answers the refusal, or
/// replays the first answer under this key); a Stripe failure answers
/// before anything is written.
async fn change_at_stripe(
    app: &App,
    sub: &Subscription,
    id: Uuid,
    plan: &events::Plan,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<events::Money>, AppError> {
    let Some(stripe_id) = sub.stripe_subscription_id() else {
        return Ok(None);
    };
    let Ok(upgrade) = sub.plan_change_is_upgrade(&terms(plan, &sub_currency(sub)), now) else {
        return Ok(None);
    };
    let price_id = plan
        .stripe_price_id
        .clone()
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            AppError::Unavailable(format!(
                "the {} plan has no Stripe price; set its stripe_price_id first",
                plan.slug
            ))
        })?;
    let gateway = app.gateways.for_method(PaymentMethod::Stripe)?;
    let current = gateway.get_subscription(stripe_id).await?;
    let item_id = current.item_id.ok_or_else(|| {
        AppError::BadGateway(format!("the Stripe subscription {stripe_id} has no item"))
    })?;
    let changed = gateway
        .change_subscription_price(&crate::gateway::ChangePriceRequest {
            gateway_subscription_id: stripe_id.to_owned(),
            item_id,
            price_id,
            prorate: upgrade,
            idempotency_key: format!("plan-change-{id}-{key}"),
        })
        .await?;
    Ok(changed.proration.filter(|_| upgrade))
}

/// Tells Stripe first when `sub` lives there: its `cancel_at_period_end`
/// is cleared (under an idempotency key derived from our id); Stripe's
/// `customer.subscription.updated` then says the same, and applies nothing
/// twice. A failure answers the gateway's error before anything is written.
async fn reactivate_at_stripe(app: &App, sub: &Subscription, id: Uuid) -> Result<(), AppError> {
    let Some(stripe_id) = sub.stripe_subscription_id() else {
        return Ok(());
    };
    let gateway = app.gateways.for_method(PaymentMethod::Stripe)?;
    gateway
        .resume_subscription(&crate::gateway::ResumeSubscriptionRequest {
            gateway_subscription_id: stripe_id.to_owned(),
            subscription_id: id.to_string(),
            idempotency_key: format!(
                "reactivate-{id}-{}",
                sub.period().map_or(0, |(s, _)| s.timestamp())
            ),
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_is_a_subscription_method_and_paypal_is_unavailable() {
        assert_eq!(subscription_method("stripe"), Ok(PaymentMethod::Stripe));
        assert!(matches!(
            subscription_method("paypal"),
            Err(AppError::Unavailable(_))
        ));
        assert!(matches!(
            subscription_method("cash"),
            Err(AppError::InvalidRequest { .. })
        ));
    }
}
