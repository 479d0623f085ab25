//! Buying a credit package: a pending invoice (numbered by
//! [`super::numbering`]) and a payment, either manual (pending approval,
//! with the country's instructions) or at a gateway (a Stripe
//! PaymentIntent whose `client_secret` the answer carries, or a PayPal
//! order whose `approval_url` the payer follows; docs/adr/0018-paypal.md).
//! The credits are granted only once the payment succeeds
//! ([`super::settle`]).
//!
//! The invoice's and payment's ids derive from the account and the
//! Idempotency-Key, so a retry finds what the first attempt wrote.

use chrono::Duration;
use events::{AccountId, CreditPurchase, Money, PaymentMethod};
use ledger::invoice::{IssueInvoice, LineInput};
use ledger::payment::{InitiatePayment, SubmitManualPayment};
use ledger::{Payment, PaymentCommand};
use serde::Deserialize;
use serde_json::{json, Value};
use store::{CommandContext, IdempotencyClaim, Reservation};
use tracing::warn;
use uuid::Uuid;

use super::numbering::issue_invoice;
use super::payments::{gateway_payment_json, manual_method, payment_json};
use super::{billing_account, derived_id, INVOICE_DUE_DAYS};
use crate::access;
use crate::caller::Caller;
use crate::error::AppError;
use crate::gateway::{PaymentGateway, PaymentIntentRequest};
use crate::input::{Input, Key};
use crate::runner::claim;
use crate::{now, App, Written};

/// `POST /billing/credits/purchase`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// A credit package's slug (`GET /v1/billing/credits/packages/`).
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 64, pattern = r"^[a-z0-9_-]{1,64}$")
    )]
    pub package: String,
    /// `bank_transfer`, `local_wallet`, `stripe` (a PaymentIntent; the
    /// response carries its `client_secret`) or `paypal` (an order; the
    /// response carries its `order_id` and `approval_url`); `stripe` and
    /// `paypal` answer 503 while their gateway is not configured.
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::CustomerPaymentMethod))]
    pub method: String,
}

/// The invoice of a purchase, as the answer shows it.
fn invoice_summary(invoice_id: Uuid, invoice: &events::InvoiceIssued) -> Value {
    json!({
        "id": invoice_id,
        "number": invoice.number,
        "status": "pending",
        "currency": invoice.currency.as_str(),
        "subtotal": invoice.subtotal,
        "tax": invoice.tax,
        "total": invoice.total,
        "due_date": invoice.due_at,
    })
}

fn higher(a: Option<i64>, b: Option<i64>) -> i64 {
    match (a, b) {
        (Some(a), Some(b)) => a.max(b),
        (a, b) => a.or(b).unwrap_or_default(),
    }
}

/// Buys a credit package for the caller's account: 201 with the pending
/// invoice and payment (manual instructions, or a gateway's
/// `client_secret`). Idempotent per account and key.
pub async fn buy_package(
    app: &App,
    caller: &Caller,
    key: Key,
    input: Input<PurchaseRequest>,
) -> Result<Written<Value>, AppError> {
    caller.require(access::BUY_PACKAGE)?;
    let account = caller.own_account()?;
    purchase_for(app, caller, account, key, input, None).await
}

/// A purchase for `account` (the caller's checks made): what
/// [`buy_package`] does, and what an automatic top-up does with
/// `off_session` (a saved card charged without the payer).
pub(crate) async fn purchase_for(
    app: &App,
    caller: &Caller,
    account: AccountId,
    key: Key,
    input: Input<PurchaseRequest>,
    off_session: Option<crate::gateway::OffSession>,
) -> Result<Written<Value>, AppError> {
    let body = input.parse()?;
    let key = key.required()?;
    let req = body.value;
    // A gateway method must be configured before anything is written.
    let gateway = match PaymentMethod::parse(&req.method) {
        Some(m @ (PaymentMethod::Stripe | PaymentMethod::Paypal)) => {
            Some((m, app.gateways.for_method(m)?))
        }
        _ => None,
    };
    let method = match &gateway {
        Some((m, _)) => *m,
        None => manual_method(&req.method)?,
    };
    let catalog = app.catalog.get().await;
    let package = catalog
        .package(&req.package)
        .filter(|p| p.active)
        .ok_or_else(|| AppError::NotFound(format!("no active credit package {:?}", req.package)))?
        .clone();
    let allows = |plan: &str| catalog.plan(plan).is_some_and(|p| p.allow_credit_topup);
    let mut holder = billing_account(app, account).await?;
    if !allows(&holder.plan) {
        // The plan may have changed a moment ago (a subscription just
        // activated): refuse only on what the log says now.
        app.fresh_read_models().await?;
        holder = billing_account(app, account).await?;
    }
    if !allows(&holder.plan) {
        return Err(AppError::Forbidden(format!(
            "the {} plan does not allow credit top-ups; upgrade the plan first",
            holder.plan
        )));
    }
    let now = now();
    let invoice_id = derived_id(&["purchase-invoice", &account.to_string(), key.as_str()]);
    let payment_id = derived_id(&["purchase-payment", &account.to_string(), key.as_str()]);
    let terms = super::payment_methods::method_terms(app, account, method, payment_id).await?;
    let claim = claim(&key, "credits/purchase", &body.canonical);
    let ctx = CommandContext::new(caller.actor());
    // The package's price in the account's currency, else its own price:
    // never a conversion.
    let price = package.price_for(&super::account_currency(&holder));
    let currency = price.currency.clone();
    let issued = issue_invoice(
        app,
        &ctx,
        IssueInvoice {
            invoice_id,
            number: String::new(),
            account_id: account,
            subscription_id: None,
            buyer_name: holder.name.clone(),
            billing_email: Some(holder.billing_email.clone()),
            billing_address: holder
                .billing_address
                .clone()
                .and_then(|a| serde_json::from_value(a).ok()),
            tax_id: holder.tax_id.clone(),
            lines: vec![LineInput {
                description: format!(
                    "{} credit package ({} credits)",
                    package.name, package.credits
                ),
                quantity: 1,
                unit_price: price.amount,
            }],
            tax_rate: holder.tax_rate,
            currency: currency.clone(),
            draft: false,
            purchase: Some(CreditPurchase {
                package_slug: package.slug.clone(),
                credits: package.credits,
            }),
            notes: None,
            now,
            due_at: now + Duration::days(INVOICE_DUE_DAYS),
        },
        Some(&claim),
    )
    .await?;
    let invoice = issued
        .state
        .as_ref()
        .and_then(|s| s.issued().cloned())
        .ok_or(AppError::Internal)?;
    let total = Money::new(invoice.total, invoice.currency.clone());
    if let Some((_, gateway)) = gateway {
        let started = GatewayPurchase {
            method,
            account,
            invoice_id,
            payment_id,
            invoice: &invoice,
            total: &total,
            package: &package.slug,
            credits: package.credits,
            off_session: off_session.as_ref(),
        };
        let (value, payment_replayed) = gateway_purchase(
            app,
            caller,
            &ctx,
            &claim,
            gateway.as_ref(),
            &started,
            issued.position(),
        )
        .await?;
        return Ok(Written {
            value,
            replayed: issued.replayed.is_some() && payment_replayed,
            created: true,
        });
    }
    let submitted = app
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::SubmitManual(Box::new(SubmitManualPayment {
                payment_id,
                invoice_id,
                account_id: account,
                amount: total.clone(),
                invoice_total: total.clone(),
                method,
                reference: Some(invoice.number.clone()),
                submitted_by: caller.sub().to_owned(),
                instructions: Some(terms.instructions(&invoice.number, &total)),
                now,
            })),
            &ctx,
            Some(&claim),
            &[],
        )
        .await?;
    let payment = app
        .store
        .load::<Payment>(&payment_id.to_string())
        .await?
        .aggregate;
    let sub = payment.submitted().ok_or(AppError::Internal)?;
    let status = payment.status().map(|s| s.as_str()).unwrap_or("pending");
    let value = json!({
        "invoice": invoice_summary(invoice_id, &invoice),
        "payment": payment_json(payment_id, sub, status),
        "credits": package.credits,
        "package": package.slug,
        "position": higher(issued.position(), submitted.position()),
    });
    Ok(Written {
        value,
        replayed: issued.replayed.is_some() && submitted.replayed.is_some(),
        created: true,
    })
}

/// What a gateway purchase pays.
struct GatewayPurchase<'a> {
    method: PaymentMethod,
    account: AccountId,
    invoice_id: Uuid,
    payment_id: Uuid,
    invoice: &'a events::InvoiceIssued,
    total: &'a Money,
    package: &'a str,
    credits: i64,
    off_session: Option<&'a crate::gateway::OffSession>,
}

/// The gateway side of a purchase: a PaymentIntent (Stripe) or an order
/// (PayPal) at the gateway, its idempotency key derived from our payment
/// id so a retry finds the same one; then the payment recorded as
/// initiated under the purchase's claim (a PayPal order id reserved to it,
/// so PayPal's webhooks find the payment by the order). Answers the body
/// and whether the payment append was a replay.
async fn gateway_purchase(
    app: &App,
    caller: &Caller,
    ctx: &CommandContext,
    claim: &IdempotencyClaim,
    gateway: &dyn PaymentGateway,
    p: &GatewayPurchase<'_>,
    invoice_position: Option<i64>,
) -> Result<(Value, bool), AppError> {
    let intent = gateway
        .create_payment_intent(&PaymentIntentRequest {
            amount: p.total.amount,
            currency: p.total.currency.clone(),
            invoice_id: p.invoice_id.to_string(),
            payment_id: p.payment_id.to_string(),
            account_id: p.account.to_string(),
            invoice_number: p.invoice.number.clone(),
            description: format!("{} ({} credits)", p.invoice.number, p.credits),
            idempotency_key: match p.method {
                PaymentMethod::Paypal => format!("order-{}", p.payment_id),
                _ => format!("payment-intent-{}", p.payment_id),
            },
            off_session: p.off_session.cloned(),
        })
        .await?;
    let reservations: Vec<Reservation> = match p.method {
        PaymentMethod::Paypal => vec![Reservation {
            scope: crate::paypal_events::PAYPAL_ORDER_SCOPE.into(),
            value: intent.id.clone(),
        }],
        _ => Vec::new(),
    };
    let done = app
        .execute::<Payment>(
            &p.payment_id.to_string(),
            PaymentCommand::Initiate(Box::new(InitiatePayment {
                payment_id: p.payment_id,
                invoice_id: p.invoice_id,
                account_id: p.account,
                amount: p.total.clone(),
                invoice_total: p.total.clone(),
                method: p.method,
                gateway: gateway.name().to_owned(),
                gateway_ref: intent.id.clone(),
                submitted_by: caller.sub().to_owned(),
                now: now(),
            })),
            ctx,
            Some(claim),
            &reservations,
        )
        .await?;
    // The command service hands back the payment as it stands after the
    // command (or, on a replay, as stored).
    let payment = done.state.as_ref().ok_or(AppError::Internal)?;
    let same = payment.gateway_ref() == Some(intent.id.as_str());
    if !same {
        warn!(payment = %p.payment_id, "the gateway returned another PaymentIntent than the one recorded");
    }
    let mut value = json!({
        "invoice": invoice_summary(p.invoice_id, p.invoice),
        "payment": gateway_payment_json(p.payment_id, payment),
        "credits": p.credits,
        "package": p.package,
        "position": higher(invoice_position, done.position()),
    });
    match p.method {
        // Only the recorded order's link: approving another order (PayPal
        // forgot the request id after its retention) would pay nothing of
        // ours.
        PaymentMethod::Paypal => {
            value["order_id"] = json!(payment.gateway_ref());
            value["approval_url"] = json!(intent.approval_url.filter(|_| same));
        }
        _ => value["client_secret"] = json!(intent.client_secret),
    }
    Ok((value, done.replayed.is_some()))
}
