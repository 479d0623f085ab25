//! Refunds of payments (docs/adr/0011-payments-gateway.md): never more
//! than what was paid. The amount is held on the payment first (of two
//! refunds at once only one passes), then the credits to take back go
//! (402 refunds nothing), then the gateway, then the refund is recorded.
//! Each step is keyed by the refund id (derived from the payment and the
//! Idempotency-Key) and its attempt, so a retry finishes what is missing
//! and takes, refunds and records once. A gateway that refuses gets the
//! credits given back and the hold released: nothing is taken for a
//! refund that did not happen.

use events::IdempotencyKey;
use ledger::account::AdjustCredits;
use ledger::payment::RefundPayment;
use ledger::{AccountCommand, Invoice, Payment, PaymentCommand};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use store::{request_hash, CommandContext, IdempotencyClaim};
use uuid::Uuid;

use super::derived_id;
use super::invoices::reason;
use super::payments::load_payment;
use super::settle::run_account_command;
use crate::access;
use crate::caller::Caller;
use crate::error::AppError;
use crate::input::{Input, Key};
use crate::runner::claim;
use crate::{now, App, Written};

/// `POST /admin/payments/{id}/refund`.
///
/// Named `PaymentRefundRequest` in the OpenAPI document: the refund of a
/// deduction has its own `RefundRequest` (`crate::credits`).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = PaymentRefundRequest))]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// A positive decimal string; defaults to everything not refunded yet.
    #[cfg_attr(
        feature = "openapi",
        schema(
            example = "10.00",
            pattern = r"^[0-9]*[1-9][0-9]*(\.[0-9]+)?$|^[0-9]+\.[0-9]*[1-9][0-9]*$"
        )
    )]
    pub amount: Option<String>,
    /// Why: 1 to 1,024 bytes, not blank.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 1024, pattern = r"\S")
    )]
    pub reason: String,
    /// Take back the credits the payment bought, in proportion to the
    /// amount refunded (all of them for a full refund).
    #[serde(default)]
    pub revoke_credits: bool,
}

/// A refund, and the payment's refunded total and status after it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RefundOutcome {
    /// The payment's id.
    pub id: Uuid,
    pub refund_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub amount: Decimal,
    pub currency: String,
    /// Everything refunded of the payment so far.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub refunded_amount: Decimal,
    /// The payment's status: `succeeded`, or `refunded` once all of it is.
    pub status: Option<&'static str>,
    pub revoke_credits: bool,
    pub revoked_credits: i64,
    /// The gateway's refund id (`re_…`) for a gateway payment.
    pub gateway_refund_ref: Option<String>,
    pub position: i64,
}

/// Credits a refund of `amount` (after `before` was refunded) out of
/// `paid` takes back of the `credits` bought: the difference of the
/// proportional shares before and after, each rounded down, so a run of
/// revoking refunds that returns everything takes back exactly `credits`.
pub fn credits_to_revoke(
    credits: i64,
    before: Decimal,
    amount: Decimal,
    paid: Decimal,
) -> Option<i64> {
    if paid <= Decimal::ZERO || amount <= Decimal::ZERO || credits <= 0 {
        return Some(0);
    }
    let share = |refunded: Decimal| -> Option<i64> {
        if refunded >= paid {
            return Some(credits);
        }
        Decimal::from(credits)
            .checked_mul(refunded)?
            .checked_div(paid)?
            .floor()
            .to_i64()
    };
    share(before.checked_add(amount)?)?.checked_sub(share(before)?)
}

/// Refunds part or all of a succeeded payment (at the gateway for a
/// gateway payment), optionally taking back the credits it bought.
pub async fn refund_payment(
    app: &App,
    caller: &Caller,
    payment: &str,
    key: Key,
    input: Input<RefundRequest>,
) -> Result<Written<RefundOutcome>, AppError> {
    caller.require(access::REFUND_PAYMENT)?;
    let body = input.parse()?;
    let key = key.required()?;
    let req = body.value;
    let why = reason(Some(req.reason))?.unwrap_or_default();
    if why.trim().is_empty() {
        return Err(AppError::invalid_field("reason", "a refund needs a reason"));
    }
    let requested = req
        .amount
        .as_deref()
        .map(|a| {
            a.parse::<Decimal>().map_err(|_| {
                AppError::invalid_field(
                    "amount",
                    "amount must be a decimal string such as \"10.00\"",
                )
            })
        })
        .transpose()?
        .map(|a| crate::input::money("amount", a, false))
        .transpose()?;
    let (payment_id, payment) = load_payment(app, payment).await?;
    let refund_id = derived_id(&["refund", &payment_id.to_string(), key.as_str()]);
    let claim = claim(&key, "payments/refund", &body.canonical);
    // The key with another body is refused before anything moves (the
    // refund id, and so the keys below, come from the key alone).
    if let Some(first) = app
        .store
        .find_key(&payment_id.to_string(), key.as_str())
        .await?
    {
        if first.request_hash != claim.request_hash {
            return Err(AppError::IdempotencyKeyReused);
        }
    }
    let paid = payment.amount().cloned().ok_or(AppError::Internal)?;
    let done_before = payment.has_refund(refund_id);
    let amount = requested.unwrap_or_else(|| {
        payment
            .pending_refund(refund_id)
            .unwrap_or_else(|| payment.refundable())
    });
    let invoice_id = payment.invoice_id().ok_or(AppError::Internal)?;
    let account = payment.account_id().ok_or(AppError::Internal)?;
    // A gateway payment needs its gateway configured before anything moves.
    let gateway = match (payment.gateway_ref(), payment.method(), done_before) {
        (Some(gateway_ref), Some(method), false) => {
            Some((app.gateways.for_method(method)?, gateway_ref.to_owned()))
        }
        _ => None,
    };
    let ctx = CommandContext::new(caller.actor());
    // 0. The amount is held on the payment first: of two refunds at once,
    //    only one passes the check (the payment's stream serializes them).
    //    A retry of this refund finds its own hold and goes on.
    let mut attempt = payment.refund_attempt(refund_id);
    if !done_before {
        let held = app
            .execute::<Payment>(
                &payment_id.to_string(),
                PaymentCommand::ReserveRefund {
                    refund_id,
                    amount,
                    by: caller.sub().to_owned(),
                    now: now(),
                },
                &ctx,
                None,
                &[],
            )
            .await?;
        if let Some(state) = &held.state {
            attempt = state.refund_attempt(refund_id);
        }
    }
    // Each attempt's steps have their own keys: after a gateway refused an
    // attempt (its credits given back), a retry takes them again.
    let step = if attempt == 0 {
        format!("refund-{refund_id}")
    } else {
        format!("refund-{refund_id}-{attempt}")
    };
    // 1. The credits go first: an account that cannot give them back
    //    (402) gets no refund. Keyed by the attempt, so a retry takes once.
    let mut revoked = 0;
    if req.revoke_credits && !done_before {
        let invoice = app
            .store
            .load::<Invoice>(&invoice_id.to_string())
            .await?
            .aggregate;
        let purchase = invoice.issued().and_then(|i| i.purchase.clone());
        let revoked_now = match purchase {
            None => Err(AppError::invalid_field(
                "revoke_credits",
                "this payment bought no credit package; there are no credits to take back",
            )),
            Some(purchase) => {
                credits_to_revoke(purchase.credits, payment.refunded(), amount, paid.amount)
                    .ok_or(AppError::Internal)
            }
        };
        let taken = match revoked_now {
            Ok(0) => Ok(0),
            Ok(credits) => adjust(
                app,
                caller,
                account,
                &step,
                -credits,
                format!(
                    "refund of {} {} of payment {payment_id}: {why}",
                    amount,
                    paid.currency.as_str()
                ),
            )
            .await
            .map(|()| credits),
            Err(e) => Err(e),
        };
        match taken {
            Ok(credits) => revoked = credits,
            Err(e) => {
                // Nothing moved: the hold goes.
                release(app, &ctx, payment_id, refund_id, &e, 0).await?;
                return Err(e);
            }
        }
    }
    // 2. The money, at the gateway for a gateway payment (its idempotency
    //    key derived from the attempt, so a retry refunds once).
    let mut gateway_refund_ref = None;
    if let Some((gateway, gateway_ref)) = gateway {
        let refunded = gateway
            .refund(&crate::gateway::RefundRequest {
                payment_ref: gateway_ref,
                amount,
                currency: paid.currency.clone(),
                refund_id: refund_id.to_string(),
                payment_id: payment_id.to_string(),
                idempotency_key: step.clone(),
            })
            .await;
        match refunded {
            Ok(r) => gateway_refund_ref = Some(r.id),
            Err(e) => {
                // The gateway refused: the credits taken back are given
                // back, the hold goes, and the refund can be asked again.
                let e = AppError::from(e);
                if revoked > 0 {
                    adjust(
                        app,
                        caller,
                        account,
                        &format!("{step}-back"),
                        revoked,
                        format!(
                            "refund of payment {payment_id} refused by the gateway: credits back"
                        ),
                    )
                    .await?;
                }
                release(app, &ctx, payment_id, refund_id, &e, revoked).await?;
                return Err(e);
            }
        }
    }
    // 3. The refund recorded on the payment.
    let done = app
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::Refund(Box::new(RefundPayment {
                refund_id,
                amount,
                revoke_credits: req.revoke_credits,
                revoked_credits: revoked,
                reason: Some(why),
                by: caller.sub().to_owned(),
                gateway_refund_ref: gateway_refund_ref.clone(),
                now: now(),
            })),
            &ctx,
            Some(&claim),
            &[],
        )
        .await?;
    let after = done.state.clone().ok_or(AppError::Internal)?;
    Ok(Written {
        value: RefundOutcome {
            id: payment_id,
            refund_id,
            amount,
            currency: paid.currency.as_str().to_owned(),
            refunded_amount: after.refunded(),
            status: after.status().map(|s| s.as_str()),
            revoke_credits: req.revoke_credits,
            revoked_credits: revoked,
            gateway_refund_ref,
            position: app.position_of(&done).await?,
        },
        replayed: done.replayed.is_some(),
        created: false,
    })
}

/// Moves `credits` on `account` for a refund step, once under `step`.
async fn adjust(
    app: &App,
    caller: &Caller,
    account: events::AccountId,
    step: &str,
    credits: i64,
    reason: String,
) -> Result<(), AppError> {
    let key = IdempotencyKey::parse(step).map_err(|_| AppError::Internal)?;
    run_account_command(
        app,
        &caller.actor(),
        account,
        AccountCommand::AdjustCredits(AdjustCredits {
            adjustment_id: derived_id(&["refund-revoke", step]),
            credits,
            reason,
            idempotency_key: Some(key.clone()),
            now: now(),
        }),
        Some(&IdempotencyClaim {
            request_hash: request_hash(format!("refund-revoke\n{step}").as_bytes()),
            key,
        }),
    )
    .await?;
    Ok(())
}

/// Gives a refund's hold back after an attempt failed.
async fn release(
    app: &App,
    ctx: &CommandContext,
    payment_id: Uuid,
    refund_id: Uuid,
    why: &AppError,
    credits_restored: i64,
) -> Result<(), AppError> {
    app.execute::<Payment>(
        &payment_id.to_string(),
        PaymentCommand::ReleaseRefund {
            refund_id,
            reason: why.to_string(),
            credits_restored,
            now: now(),
        },
        ctx,
        None,
        &[],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revoked_credits_are_proportional_and_add_up_to_all_of_them() {
        let d = |cents: i64| Decimal::new(cents, 2);
        assert_eq!(
            credits_to_revoke(2_000, d(0), d(1_725), d(3_451)),
            Some(999)
        );
        assert_eq!(
            credits_to_revoke(2_000, d(1_725), d(1_726), d(3_451)),
            Some(1_001)
        );
        assert_eq!(
            credits_to_revoke(2_000, d(0), d(3_451), d(3_451)),
            Some(2_000)
        );
        assert_eq!(credits_to_revoke(0, d(0), d(1), d(3_451)), Some(0));
        assert_eq!(credits_to_revoke(2_000, d(0), d(1), d(3_451)), Some(0));
    }
}
