//! Payments: a customer's manual payment (bank transfer, local wallet) of
//! an invoice, and the staff's side: the list over every tenant and the
//! maker-checker decision (approve, reject) by someone other than the
//! submitter. Approving settles the invoice ([`super::settle`]).

use events::{Currency, InvoiceStatus, Money, PaymentMethod, PaymentStatus};
use ledger::payment::SubmitManualPayment;
use ledger::{Invoice, Payment, PaymentCommand, PaymentError};
use projections::billing::{PaymentFilter, PaymentView};
use projections::Page;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use store::{CommandContext, ServiceError};
use uuid::Uuid;

use super::invoices::{reason, status_param};
use super::{derived_id, settle};
use crate::access;
use crate::caller::Caller;
use crate::error::AppError;
use crate::input::{path_id, Input, Key, Query};
use crate::reads::page_request;
use crate::runner::claim;
use crate::{now, App, Written};

/// Longest manual payment reference accepted, in bytes.
pub const REFERENCE_BYTES_MAX: usize = ledger::payment::REFERENCE_BYTES_MAX;

/// The manual method named by a body, or the reason it cannot be used.
pub(crate) fn manual_method(raw: &str) -> Result<PaymentMethod, AppError> {
    match PaymentMethod::parse(raw) {
        Some(PaymentMethod::Stripe) => Err(AppError::Unavailable(
            "stripe is not configured on this server; use bank_transfer or local_wallet".into(),
        )),
        Some(PaymentMethod::Paypal) => Err(AppError::Unavailable(
            "paypal is not available; use bank_transfer or local_wallet".into(),
        )),
        Some(m @ (PaymentMethod::BankTransfer | PaymentMethod::LocalWallet)) => Ok(m),
        _ => Err(AppError::invalid_field(
            "method",
            "method must be one of bank_transfer, local_wallet, stripe, paypal",
        )),
    }
}

/// A manual payment as JSON.
pub(crate) fn payment_json(
    payment_id: Uuid,
    submitted: &events::PaymentSubmitted,
    status: &str,
) -> Value {
    json!({
        "id": payment_id,
        "invoice_id": submitted.invoice_id,
        "account_id": submitted.account_id,
        "amount": submitted.amount.amount,
        "currency": submitted.amount.currency.as_str(),
        "method": submitted.method.as_str(),
        "status": status,
        "reference": submitted.reference,
        "submitted_by": submitted.submitted_by,
        "instructions": submitted.instructions,
        "created_at": submitted.submitted_at,
    })
}

/// A gateway payment as JSON.
pub(crate) fn gateway_payment_json(payment_id: Uuid, payment: &Payment) -> Value {
    let initiated = payment.initiated();
    json!({
        "id": payment_id,
        "invoice_id": payment.invoice_id(),
        "account_id": payment.account_id(),
        "amount": payment.amount().map(|m| m.amount),
        "currency": payment.amount().map(|m| m.currency.as_str()),
        "method": payment.method().map(|m| m.as_str()),
        "status": payment.status().map(|s| s.as_str()),
        "gateway": initiated.map(|i| i.gateway.as_str()),
        "gateway_ref": payment.gateway_ref(),
        "refunded_amount": payment.refunded(),
        "submitted_by": initiated.map(|i| i.submitted_by.as_str()),
        "created_at": initiated.map(|i| i.initiated_at),
    })
}

/// `POST /billing/payments/manual`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ManualPaymentRequest {
    /// The invoice's id (a UUID).
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub invoice_id: String,
    /// `bank_transfer` or `local_wallet` (`stripe` and `paypal` are not
    /// manual: 503).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::schema::CustomerPaymentMethod))]
    pub method: String,
    /// The transfer's or wallet receipt's reference: 1 to 255 bytes, not
    /// blank.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 255, pattern = r"\S")
    )]
    pub reference: String,
    /// The amount paid, a decimal string: must equal the invoice total.
    #[cfg_attr(
        feature = "openapi",
        schema(example = "29.00", pattern = r"^[0-9]+(\.[0-9]+)?$")
    )]
    pub amount: String,
    /// Defaults to the invoice's currency.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Z]{3}$"))]
    pub currency: Option<String>,
    /// For staff recording a payment: the account (defaults to the token's).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<uuid::Uuid>))]
    pub account_id: Option<String>,
}

/// Records a bank transfer or local wallet payment of an invoice: pending
/// until a developer who is not the submitter approves it.
pub async fn pay_manually(
    app: &App,
    caller: &Caller,
    key: Key,
    input: Input<ManualPaymentRequest>,
) -> Result<Written<Value>, AppError> {
    caller.require(access::PAY_MANUALLY)?;
    let body = input.parse()?;
    let key = key.required()?;
    let req = body.value;
    let account = match (&req.account_id, caller.account_id()) {
        (Some(raw), _) => caller.scope(crate::input::account_id(raw)?)?,
        (None, Some(own)) => own,
        (None, None) => caller.own_account()?,
    };
    // Staff may record money received by other means (a cheque, cash):
    // method `manual`, offered in no country's list.
    let method =
        match req.method.as_str() {
            "manual" if caller.role() == crate::caller::Role::Developer => PaymentMethod::Manual,
            "manual" => return Err(AppError::Forbidden(
                "only staff record payments with method manual; use bank_transfer or local_wallet"
                    .into(),
            )),
            other => manual_method(other)?,
        };
    let amount: Decimal = req.amount.parse().map_err(|_| {
        AppError::invalid_field(
            "amount",
            "amount must be a decimal string such as \"29.00\"",
        )
    })?;
    let amount = crate::input::money("amount", amount, false)?;
    if req.reference.trim().is_empty() || req.reference.len() > REFERENCE_BYTES_MAX {
        return Err(AppError::invalid_field(
            "reference",
            format!("reference must be 1 to {REFERENCE_BYTES_MAX} bytes"),
        ));
    }
    let invoice_id = Uuid::parse_str(&req.invoice_id)
        .map_err(|_| AppError::invalid_field("invoice_id", "invoice_id must be a UUID"))?;
    let invoice = app
        .store
        .load::<Invoice>(&invoice_id.to_string())
        .await?
        .aggregate;
    let issued = invoice
        .issued()
        .filter(|i| i.account_id == account)
        .ok_or_else(|| AppError::NotFound("invoice not found".into()))?;
    let currency = match &req.currency {
        Some(c) => Currency::parse(c).map_err(|e| AppError::invalid_field("currency", e.reason))?,
        None => issued.currency.clone(),
    };
    let payment_id = derived_id(&["manual-payment", &account.to_string(), key.as_str()]);
    let terms = if method == PaymentMethod::Manual {
        super::payment_methods::MethodTerms { config: None }
    } else {
        super::payment_methods::method_terms(app, account, method, payment_id).await?
    };
    let claim = claim(&key, "payments/manual", &body.canonical);
    let ctx = CommandContext::new(caller.actor());
    // A new payment is only for an invoice still waiting for one; a retry
    // of an earlier submission replays whatever the invoice became since.
    let existing = app
        .store
        .load::<Payment>(&payment_id.to_string())
        .await?
        .aggregate;
    if existing.submitted().is_none() && invoice.status() != Some(InvoiceStatus::Pending) {
        return Err(AppError::Conflict(format!(
            "invoice {} is {}, not pending payment",
            issued.number,
            invoice.status().map(|s| s.as_str()).unwrap_or("unknown")
        )));
    }
    let total = Money::new(issued.total, issued.currency.clone());
    let done = app
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::SubmitManual(Box::new(SubmitManualPayment {
                payment_id,
                invoice_id,
                account_id: account,
                amount: Money::new(amount, currency),
                invoice_total: total.clone(),
                method,
                reference: Some(req.reference.clone()),
                submitted_by: caller.sub().to_owned(),
                instructions: Some(terms.instructions(&issued.number, &total)),
                now: now(),
            })),
            &ctx,
            Some(&claim),
            &[],
        )
        .await?;
    let payment = done
        .state
        .as_ref()
        .filter(|p| p.submitted().is_some())
        .ok_or(AppError::Internal)?;
    let sub = payment.submitted().ok_or(AppError::Internal)?;
    let status = payment.status().map(|s| s.as_str()).unwrap_or("pending");
    let mut value = payment_json(payment_id, sub, status);
    value["position"] = json!(app.position_of(&done).await?);
    Ok(Written {
        value,
        replayed: done.replayed.is_some(),
        created: true,
    })
}

/// `?status=&account_id=&invoice_id=&limit=&cursor=` of the staff's list.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct PaymentListQuery {
    /// `pending|processing|succeeded|failed|refunded|cancelled`
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::schema::PaymentStatus>))]
    pub status: Option<String>,
    pub account_id: Option<String>,
    pub invoice_id: Option<String>,
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500, default = 50))]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

/// Payments of all tenants, newest first, by status, account and invoice.
pub async fn payments(
    app: &App,
    caller: &Caller,
    min_position: Option<i64>,
    query: Query<PaymentListQuery>,
) -> Result<Page<PaymentView>, AppError> {
    caller.require(access::DECIDE_PAYMENTS)?;
    app.wait_for(min_position).await?;
    let q = query.parse()?;
    let statuses = [
        PaymentStatus::Pending,
        PaymentStatus::Processing,
        PaymentStatus::Succeeded,
        PaymentStatus::Failed,
        PaymentStatus::Refunded,
        PaymentStatus::Cancelled,
    ];
    Ok(app
        .read_models
        .payments(
            &PaymentFilter {
                account_id: q.account_id,
                invoice_id: q.invoice_id,
                status: status_param(q.status, &statuses, |s| s.as_str())?,
            },
            &page_request(q.limit, q.cursor)?,
        )
        .await?)
}

/// A payment by its path id; 404 when there is none.
pub(crate) async fn load_payment(app: &App, raw: &str) -> Result<(Uuid, Payment), AppError> {
    let id = path_id(raw, "payment")?;
    let payment = app.store.load::<Payment>(&id.to_string()).await?.aggregate;
    if !payment.exists() {
        return Err(AppError::NotFound("payment not found".into()));
    }
    Ok((id, payment))
}

/// `POST /billing/payments/{id}/cancel` and its staff route: `{reason?}`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CancelPaymentRequest {
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub reason: Option<String>,
}

/// Withdraws a pending manual payment: its account (owner, admin) or staff.
/// The invoice stays pending, open for another payment; cancelling again
/// answers the same. Another tenant's payment is 404.
pub async fn cancel(
    app: &App,
    caller: &Caller,
    payment: &str,
    input: Input<CancelPaymentRequest>,
) -> Result<Value, AppError> {
    caller.require(access::CANCEL_PAYMENT)?;
    let why = reason(input.parse()?.value.reason)?;
    let (payment_id, existing) = load_payment(app, payment).await?;
    let account = existing
        .account_id()
        .ok_or_else(|| AppError::NotFound("payment not found".into()))?;
    caller
        .scope(account)
        .map_err(|_| AppError::NotFound("payment not found".into()))?;
    let Some(submitted) = existing.submitted().cloned() else {
        return Err(AppError::Conflict(
            "a gateway payment is settled or cancelled by its gateway".into(),
        ));
    };
    let invoice = app
        .store
        .load::<Invoice>(&submitted.invoice_id.to_string())
        .await?
        .aggregate;
    if invoice.paid_by() == Some(payment_id) {
        return Err(AppError::Conflict(
            "the invoice is paid by this payment; it cannot be cancelled".into(),
        ));
    }
    let done = app
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::Cancel {
                by: caller.sub().to_owned(),
                reason: why,
                now: now(),
            },
            &CommandContext::new(caller.actor()),
            None,
            &[],
        )
        .await?;
    let mut body = payment_json(payment_id, &submitted, PaymentStatus::Cancelled.as_str());
    body["position"] = json!(app.position_of(&done).await?);
    Ok(body)
}

/// [`cancel`] on the staff's route: any account's payment, staff only.
pub async fn cancel_any(
    app: &App,
    caller: &Caller,
    payment: &str,
    input: Input<CancelPaymentRequest>,
) -> Result<Value, AppError> {
    caller.require(access::STAFF)?;
    cancel(app, caller, payment, input).await
}

/// An approved payment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Approval {
    pub id: Uuid,
    /// What the approver noted, if anything.
    pub notes: Option<String>,
    /// `succeeded`
    pub status: &'static str,
    pub invoice_id: Uuid,
    /// `paid`
    pub invoice_status: &'static str,
    pub approved_by: String,
    /// Credits the purchase granted (`null` when the invoice buys none).
    pub credits_granted: Option<i64>,
    pub position: Option<i64>,
}

/// `POST /admin/payments/{id}/approve`: optional notes, kept on the
/// payment.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApproveRequest {
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub notes: Option<String>,
}

/// Approves a manual payment (not by its submitter): the invoice is paid
/// and a purchase's credits are granted, once. A retry of an approval that
/// stopped half way finishes it and answers 409.
pub async fn approve(
    app: &App,
    caller: &Caller,
    payment: &str,
    input: Input<ApproveRequest>,
) -> Result<Approval, AppError> {
    caller.require(access::DECIDE_PAYMENTS)?;
    let notes = crate::credits::text("notes", input.parse()?.value.notes)?;
    let (payment_id, payment) = load_payment(app, payment).await?;
    // The invoice must still take this payment before the payment is
    // approved: a void invoice, or one paid by another payment, refuses.
    let submitted = payment.submitted().ok_or_else(|| {
        AppError::Conflict(
            "a gateway payment is settled by its gateway, not approved by staff".into(),
        )
    })?;
    let invoice = app
        .store
        .load::<Invoice>(&submitted.invoice_id.to_string())
        .await?
        .aggregate;
    match invoice.status() {
        Some(InvoiceStatus::Pending) => {}
        Some(InvoiceStatus::Paid) if invoice.paid_by() == Some(payment_id) => {}
        other => {
            return Err(AppError::Conflict(format!(
                "the invoice is {}, it cannot take this payment",
                other.map(|s| s.as_str()).unwrap_or("missing")
            )))
        }
    }
    check_approver(app, caller, &submitted.submitted_by)?;
    // The invoice takes this payment first, on its own stream: of two
    // payments of one invoice approved at once, only one can, and the
    // other is refused before it is approved (money is never recorded
    // twice). A pending payment only: a retry of a finished approval goes
    // on to the Approve below, which says so.
    if payment.status() == Some(PaymentStatus::Pending) {
        app.execute::<Invoice>(
            &submitted.invoice_id.to_string(),
            ledger::InvoiceCommand::MarkPaid {
                payment_id: Some(payment_id),
                method: submitted.method,
                now: now(),
            },
            &CommandContext::new(caller.actor()),
            None,
            &[],
        )
        .await?;
    }
    let approved = app
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::Approve {
                by: caller.sub().to_owned(),
                notes: notes.clone(),
                now: now(),
            },
            &CommandContext::new(caller.actor()),
            None,
            &[],
        )
        .await;
    match approved {
        Ok(done) => {
            let settled = settle::invoice_paid(
                app,
                &caller.actor(),
                submitted.invoice_id,
                Some(payment_id),
                submitted.method,
            )
            .await?;
            Ok(Approval {
                id: payment_id,
                status: "succeeded",
                invoice_id: submitted.invoice_id,
                invoice_status: "paid",
                approved_by: caller.sub().to_owned(),
                notes,
                credits_granted: settled.credits_granted,
                position: settled.position.or(done.position()),
            })
        }
        Err(ServiceError::Domain(PaymentError::NotPending { status }))
            if status == PaymentStatus::Succeeded.as_str() =>
        {
            // A retry of an approval that may have stopped half way: finish
            // what is missing (each step applies at most once), then say
            // that the payment was approved already.
            settle::invoice_paid(
                app,
                &caller.actor(),
                submitted.invoice_id,
                Some(payment_id),
                submitted.method,
            )
            .await?;
            Err(AppError::Conflict(
                "the payment is already approved; the invoice is paid and its credits granted once"
                    .into(),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Maker-checker: the submitter never decides on their own payment
/// (subjects compared trimmed and case-folded), and with `LEDGER_APPROVERS`
/// set only those subjects decide.
fn check_approver(app: &App, caller: &Caller, submitted_by: &str) -> Result<(), AppError> {
    if crate::settings::normalize_subject(caller.sub())
        == crate::settings::normalize_subject(submitted_by)
    {
        return Err(PaymentError::SameApprover.into());
    }
    if !app.settings.is_approver(caller.sub()) {
        return Err(AppError::Forbidden(
            "only the subjects in LEDGER_APPROVERS may approve or reject payments".into(),
        ));
    }
    Ok(())
}

/// `POST /admin/payments/{id}/reject`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    /// Why: 1 to 1,024 bytes, not blank.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 1024, pattern = r"\S")
    )]
    pub reason: String,
}

/// A rejected payment.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rejection {
    pub id: Uuid,
    /// `failed`
    pub status: &'static str,
    pub failure_reason: String,
    pub position: i64,
}

/// Rejects a manual payment (not by its submitter); the invoice stays
/// pending.
pub async fn reject(
    app: &App,
    caller: &Caller,
    payment: &str,
    input: Input<RejectRequest>,
) -> Result<Rejection, AppError> {
    caller.require(access::DECIDE_PAYMENTS)?;
    let req = input.parse()?.value;
    let why = reason(Some(req.reason))?.unwrap_or_default();
    if why.trim().is_empty() {
        return Err(AppError::invalid_field(
            "reason",
            "a rejection needs a reason",
        ));
    }
    let (payment_id, payment) = load_payment(app, payment).await?;
    if let Some(submitted) = payment.submitted() {
        check_approver(app, caller, &submitted.submitted_by)?;
        // A payment its invoice already took (an approval under way) is
        // not rejected behind its back.
        let invoice = app
            .store
            .load::<Invoice>(&submitted.invoice_id.to_string())
            .await?
            .aggregate;
        if invoice.paid_by() == Some(payment_id) {
            return Err(AppError::Conflict(
                "the invoice is paid by this payment; it cannot be rejected".into(),
            ));
        }
    }
    let done = app
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::Reject {
                by: caller.sub().to_owned(),
                reason: why.clone(),
                now: now(),
            },
            &CommandContext::new(caller.actor()),
            None,
            &[],
        )
        .await?;
    Ok(Rejection {
        id: payment_id,
        status: "failed",
        failure_reason: why,
        position: app.position_of(&done).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripe_and_paypal_are_reported_unavailable_never_faked() {
        assert!(matches!(
            manual_method("stripe"),
            Err(AppError::Unavailable(_))
        ));
        assert!(matches!(
            manual_method("paypal"),
            Err(AppError::Unavailable(_))
        ));
        assert_eq!(
            manual_method("bank_transfer"),
            Ok(PaymentMethod::BankTransfer)
        );
        assert!(matches!(
            manual_method("cash"),
            Err(AppError::InvalidRequest { .. })
        ));
    }
}
