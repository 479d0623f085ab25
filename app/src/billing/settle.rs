//! What happens when an invoice is paid, whoever learnt it first: a
//! developer approving a manual payment, or a Stripe webhook
//! (`payment_intent.succeeded`, `invoice.paid`). Every step applies at most
//! once, so a retry (a second approval, a redelivered webhook, a crash
//! half way) finishes what is missing and never pays or grants twice:
//!
//! 1. the invoice is marked paid (the aggregate refuses another payment and
//!    ignores the same one again);
//! 2. a credit purchase grants its package's credits under the idempotency
//!    key `purchase-{payment_id}` (or `purchase-invoice-{invoice_id}` when
//!    the invoice was paid without a payment of ours);
//! 3. a subscription invoice activates or renews its subscription and grants
//!    the period's included credits
//!    ([`crate::subscriptions::on_invoice_paid`]).

use events::{AccountId, Actor, GrantSource, IdempotencyKey, PaymentMethod};
use ledger::account::GrantCredits;
use ledger::{AccountCommand, CreditAccount, Invoice, InvoiceCommand};
use store::{request_hash, CommandContext, Executed, IdempotencyClaim, Reservation};
use uuid::Uuid;

use crate::error::AppError;
use crate::{now, App};

/// What settling an invoice did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Credits a purchase granted (`None` when the invoice buys none).
    pub credits_granted: Option<i64>,
    /// The highest event-log position written, if anything was written.
    pub position: Option<i64>,
}

/// The idempotency key of the grant a paid purchase makes: one per payment
/// (or per invoice when no payment of ours paid it).
pub fn purchase_grant_key(payment_id: Option<Uuid>, invoice_id: Uuid) -> IdempotencyKey {
    let raw = match payment_id {
        Some(p) => format!("purchase-{p}"),
        None => format!("purchase-invoice-{invoice_id}"),
    };
    // A UUID's text is printable ASCII well under the key's length limit.
    IdempotencyKey::parse(&raw).unwrap_or_else(|_| unreachable!())
}

/// Runs an account command as `actor` through the committer (timed, and
/// waking the projector), its refusal mapped through the error table.
pub(crate) async fn run_account_command(
    app: &App,
    actor: &Actor,
    account: AccountId,
    command: AccountCommand,
    claim: Option<&IdempotencyClaim>,
) -> Result<Executed<CreditAccount>, AppError> {
    Ok(app
        .run_account(
            &account.to_string(),
            command,
            &CommandContext::new(actor.clone()),
            claim,
            &[],
        )
        .await?)
}

/// The invoice paid (by `payment_id`, when a payment of ours paid it) and
/// everything its payment buys, each at most once.
pub async fn invoice_paid(
    app: &App,
    actor: &Actor,
    invoice_id: Uuid,
    payment_id: Option<Uuid>,
    method: PaymentMethod,
) -> Result<Settled, AppError> {
    invoice_paid_reserving(app, actor, invoice_id, payment_id, method, &[]).await
}

/// [`invoice_paid`], taking `reservations` with the payment (a Stripe
/// invoice's id, so its redelivery finds this invoice again). A value
/// another invoice took is a conflict.
pub async fn invoice_paid_reserving(
    app: &App,
    actor: &Actor,
    invoice_id: Uuid,
    payment_id: Option<Uuid>,
    method: PaymentMethod,
    reservations: &[Reservation],
) -> Result<Settled, AppError> {
    let ctx = CommandContext::new(actor.clone());
    let paid = app
        .execute::<Invoice>(
            &invoice_id.to_string(),
            InvoiceCommand::MarkPaid {
                payment_id,
                method,
                now: now(),
            },
            &ctx,
            None,
            reservations,
        )
        .await
        .map_err(|e| match e {
            store::ServiceError::Reserved { scope, value } => {
                AppError::Conflict(format!("{scope} {value} paid another invoice"))
            }
            e => e.into(),
        })?;
    let mut settled = Settled {
        credits_granted: None,
        position: paid.position(),
    };
    let invoice = paid.state.as_ref().ok_or(AppError::Internal)?;
    let issued = invoice.issued().ok_or(AppError::Internal)?.clone();
    if let Some(purchase) = &issued.purchase {
        let key = purchase_grant_key(payment_id, invoice_id);
        let claim = IdempotencyClaim {
            request_hash: request_hash(format!("purchase-grant\n{}", key.as_str()).as_bytes()),
            key: key.clone(),
        };
        let granted = run_account_command(
            app,
            actor,
            issued.account_id,
            AccountCommand::GrantCredits(GrantCredits {
                grant_id: Uuid::now_v7(),
                credits: purchase.credits,
                source: GrantSource::Purchase,
                expires_at: None,
                description: Some(format!(
                    "credit package {} (invoice {})",
                    purchase.package_slug, issued.number
                )),
                idempotency_key: Some(key),
                now: now(),
            }),
            Some(&claim),
        )
        .await?;
        settled.credits_granted = Some(purchase.credits);
        settled.position = settled.position.max(granted.position());
    }
    if issued.subscription_id.is_some() {
        let position = crate::subscriptions::on_invoice_paid(app, actor, &issued).await?;
        settled.position = settled.position.max(position);
    }
    Ok(settled)
}
