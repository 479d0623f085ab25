//! Billing administration (developer role): invoice and payment lists over
//! all tenants, void and mark-uncollectible, and the maker-checker approval
//! of manual payments. Approving marks the invoice paid and grants a
//! purchase's credits through the account's command path, keyed by the
//! payment id, so a retried approval never grants twice. Refunds
//! (docs/adr/0011-payments-gateway.md) never exceed what was paid: the
//! credits to take back first (402 refunds nothing), then the gateway,
//! then the refund recorded; each step keyed by the refund id.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use events::{InvoiceStatus, PaymentStatus};
use ledger::account::AdjustCredits;
use ledger::payment::RefundPayment;
use ledger::{AccountCommand, Invoice, InvoiceCommand, Payment, PaymentCommand, PaymentError};
use projections::billing::{InvoiceFilter, PaymentFilter};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use store::{request_hash, CommandContext, IdempotencyClaim, ServiceError};
use uuid::Uuid;

use super::billing::{derived_id, invoice_error, invoice_json, path_id, payment_error};
use super::extract::{Body, Fresh, IdemKey, Q};
use super::openapi as doc;
use super::respond::{claim, projection_error, service_error, store_error};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::AppState;
use app::reads::page_request;

/// Longest reason accepted, in bytes.
pub const REASON_BYTES_MAX: usize = 1_024;

const STAFF: &[Role] = &[Role::Developer];

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/invoices", get(invoices))
        .route("/admin/invoices/{invoice_id}/void", post(void))
        .route(
            "/admin/invoices/{invoice_id}/mark-uncollectible",
            post(mark_uncollectible),
        )
        .route("/admin/payments", get(payments))
        .route("/admin/payments/{payment_id}/approve", post(approve))
        .route("/admin/payments/{payment_id}/reject", post(reject))
        .route("/admin/payments/{payment_id}/refund", post(refund))
}

/// RFC 3339 → the read models' text form, so text order is time order.
fn time_param(field: &str, raw: Option<String>) -> Result<Option<String>, ApiError> {
    Ok(raw
        .map(|r| super::extract::time(field, &r).map(projections::time_text))
        .transpose()?)
}

fn status_param<T>(
    raw: Option<String>,
    all: &[T],
    name: impl Fn(&T) -> &'static str,
) -> Result<Option<String>, ApiError> {
    match raw {
        Some(s) if !all.iter().any(|v| name(v) == s) => Err(ApiError::invalid_field(
            "status",
            format!(
                "status must be one of {}",
                all.iter().map(&name).collect::<Vec<_>>().join(", ")
            ),
        )),
        s => Ok(s),
    }
}

/// `?status=` of an invoice list: one of the invoice statuses, else 422.
pub(super) fn invoice_status(raw: Option<String>) -> Result<Option<String>, ApiError> {
    let all = [
        InvoiceStatus::Draft,
        InvoiceStatus::Pending,
        InvoiceStatus::Paid,
        InvoiceStatus::Void,
        InvoiceStatus::Uncollectible,
    ];
    status_param(raw, &all, |s| s.as_str())
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InvoiceListQuery {
    /// `draft|pending|paid|void|uncollectible`
    pub status: Option<String>,
    pub account_id: Option<String>,
    /// Invoice date at or after (RFC 3339).
    pub from: Option<String>,
    /// Invoice date before (RFC 3339).
    pub to: Option<String>,
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/invoices",
    tag = "admin",
    summary = "Invoices of all tenants, newest first, by status, account and invoice date",
    params(InvoiceListQuery),
    responses(
        (status = 200, description = "A page of invoices", body = doc::BillingPage),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn invoices(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<InvoiceListQuery>,
) -> Result<Response, ApiError> {
    principal.require(STAFF)?;
    fresh.wait(&state).await?;
    let q = query.parse()?;
    let account_id = q
        .account_id
        .map(|a| {
            events::AccountId::parse(&a)
                .map(|a| a.to_string())
                .map_err(|_| ApiError::invalid_field("account_id", "account_id must be a UUID"))
        })
        .transpose()?;
    let page = state
        .read_models
        .invoices(
            &InvoiceFilter {
                account_id,
                status: invoice_status(q.status)?,
                from: time_param("from", q.from)?,
                to: time_param("to", q.to)?,
            },
            &page_request(q.limit, q.cursor)?,
        )
        .await
        .map_err(projection_error)?;
    let items: Vec<Value> = page.items.iter().map(invoice_json).collect();
    Ok(Json(json!({ "items": items, "next_cursor": page.next_cursor })).into_response())
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    pub reason: Option<String>,
}

fn reason(r: Option<String>) -> Result<Option<String>, ApiError> {
    match r {
        Some(r) if r.len() > REASON_BYTES_MAX => Err(ApiError::invalid_field(
            "reason",
            format!("reason must be at most {REASON_BYTES_MAX} bytes"),
        )),
        r => Ok(r),
    }
}

async fn change_invoice(
    state: &AppState,
    principal: &Principal,
    raw: &str,
    command: InvoiceCommand,
) -> Result<Response, ApiError> {
    let id = path_id(raw, "invoice")?;
    let done = state
        .commands
        .execute::<Invoice>(
            &id.to_string(),
            command,
            &CommandContext::new(principal.actor()),
            None,
        )
        .await
        .map_err(|e| service_error(e, invoice_error))?;
    state.projector.wake();
    let invoice = done.state.as_ref().ok_or(ApiError::Internal)?;
    let issued = invoice.issued().ok_or(ApiError::Internal)?;
    Ok(Json(json!({
        "id": id,
        "number": issued.number,
        "status": invoice.status().map(|s| s.as_str()),
        "position": state.position_of(&done).await?,
    }))
    .into_response())
}

#[utoipa::path(
    post,
    path = "/v1/admin/invoices/{invoice_id}/void",
    tag = "admin",
    summary = "Void a draft or pending invoice",
    params(("invoice_id" = String, Path, description = "The invoice's id (a UUID)")),
    request_body = Option<ReasonRequest>,
    responses(
        (status = 200, description = "The invoice's new status", body = Object),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such invoice", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the invoice is paid, void or uncollectible", body = doc::ErrorBody),
    ),
)]
pub async fn void(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Body<ReasonRequest>,
) -> Result<Response, ApiError> {
    principal.require(STAFF)?;
    let req = body.parse()?.value;
    let command = InvoiceCommand::Void {
        reason: reason(req.reason)?,
        actor: principal.sub().to_owned(),
        now: super::now(),
    };
    change_invoice(&state, &principal, &id, command).await
}

#[utoipa::path(
    post,
    path = "/v1/admin/invoices/{invoice_id}/mark-uncollectible",
    tag = "admin",
    summary = "Mark a pending invoice uncollectible",
    params(("invoice_id" = String, Path, description = "The invoice's id (a UUID)")),
    request_body = Option<ReasonRequest>,
    responses(
        (status = 200, description = "The invoice's new status", body = Object),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such invoice", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the invoice is not pending", body = doc::ErrorBody),
    ),
)]
pub async fn mark_uncollectible(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Body<ReasonRequest>,
) -> Result<Response, ApiError> {
    principal.require(STAFF)?;
    let req = body.parse()?.value;
    let command = InvoiceCommand::MarkUncollectible {
        reason: reason(req.reason)?,
        actor: principal.sub().to_owned(),
        now: super::now(),
    };
    change_invoice(&state, &principal, &id, command).await
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PaymentListQuery {
    /// `pending|processing|succeeded|failed|refunded|cancelled`
    pub status: Option<String>,
    pub account_id: Option<String>,
    pub invoice_id: Option<String>,
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/admin/payments",
    tag = "admin",
    summary = "Payments of all tenants, newest first, by status, account and invoice",
    params(PaymentListQuery),
    responses(
        (status = 200, description = "A page of payments", body = doc::BillingPage),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn payments(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<PaymentListQuery>,
) -> Result<Response, ApiError> {
    principal.require(STAFF)?;
    fresh.wait(&state).await?;
    let q = query.parse()?;
    let statuses = [
        PaymentStatus::Pending,
        PaymentStatus::Processing,
        PaymentStatus::Succeeded,
        PaymentStatus::Failed,
        PaymentStatus::Refunded,
        PaymentStatus::Cancelled,
    ];
    let page = state
        .read_models
        .payments(
            &PaymentFilter {
                account_id: q.account_id,
                invoice_id: q.invoice_id,
                status: status_param(q.status, &statuses, |s| s.as_str())?,
            },
            &page_request(q.limit, q.cursor)?,
        )
        .await
        .map_err(projection_error)?;
    Ok(Json(page).into_response())
}

async fn load_payment(state: &AppState, raw: &str) -> Result<(Uuid, Payment), ApiError> {
    let id = path_id(raw, "payment")?;
    let payment = state
        .store
        .load::<Payment>(&id.to_string())
        .await
        .map_err(store_error)?
        .aggregate;
    if !payment.exists() {
        return Err(ApiError::NotFound("payment not found".into()));
    }
    Ok((id, payment))
}

#[utoipa::path(
    post,
    path = "/v1/admin/payments/{payment_id}/approve",
    tag = "admin",
    summary = "Approve a manual payment (not by its submitter): the invoice is paid and a purchase's credits are granted, once",
    params(("payment_id" = String, Path, description = "The payment's id (a UUID)")),
    request_body = Option<app::credits::EmptyRequest>,
    responses(
        (status = 200, description = "The approved payment", body = Object),
        (status = 403, description = "`forbidden`: not a developer, or the submitter approving their own payment", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such payment", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the payment was already decided, or the invoice cannot be paid", body = doc::ErrorBody),
    ),
)]
pub async fn approve(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Body<app::credits::EmptyRequest>,
) -> Result<Response, ApiError> {
    principal.require(STAFF)?;
    body.parse()?;
    let (payment_id, payment) = load_payment(&state, &id).await?;
    // The invoice must still take this payment before the payment is
    // approved: a void invoice, or one paid by another payment, refuses.
    let submitted = payment.submitted().ok_or_else(|| {
        ApiError::Conflict(
            "a gateway payment is settled by its gateway, not approved by staff".into(),
        )
    })?;
    let invoice = state
        .store
        .load::<Invoice>(&submitted.invoice_id.to_string())
        .await
        .map_err(store_error)?
        .aggregate;
    match invoice.status() {
        Some(InvoiceStatus::Pending) => {}
        Some(InvoiceStatus::Paid) if invoice.paid_by() == Some(payment_id) => {}
        other => {
            return Err(ApiError::Conflict(format!(
                "the invoice is {}, it cannot take this payment",
                other.map(|s| s.as_str()).unwrap_or("missing")
            )))
        }
    }
    let approved = state
        .commands
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::Approve {
                by: principal.sub().to_owned(),
                now: super::now(),
            },
            &CommandContext::new(principal.actor()),
            None,
        )
        .await;
    match approved {
        Ok(done) => {
            state.projector.wake();
            let settled = super::settle::invoice_paid(
                &state,
                &principal.actor(),
                submitted.invoice_id,
                Some(payment_id),
                submitted.method,
            )
            .await?;
            Ok(Json(json!({
                "id": payment_id,
                "status": "succeeded",
                "invoice_id": submitted.invoice_id,
                "invoice_status": "paid",
                "approved_by": principal.sub(),
                "credits_granted": settled.credits_granted,
                "position": settled.position.or(done.position()),
            }))
            .into_response())
        }
        Err(ServiceError::Domain(PaymentError::NotPending { status }))
            if status == PaymentStatus::Succeeded.as_str() =>
        {
            // A retry of an approval that may have stopped half way: finish
            // what is missing (each step applies at most once), then say
            // that the payment was approved already.
            super::settle::invoice_paid(
                &state,
                &principal.actor(),
                submitted.invoice_id,
                Some(payment_id),
                submitted.method,
            )
            .await?;
            Err(ApiError::Conflict(
                "the payment is already approved; the invoice is paid and its credits granted once"
                    .into(),
            ))
        }
        Err(e) => Err(service_error(e, payment_error)),
    }
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RejectRequest {
    pub reason: String,
}

#[utoipa::path(
    post,
    path = "/v1/admin/payments/{payment_id}/reject",
    tag = "admin",
    summary = "Reject a manual payment (not by its submitter); the invoice stays pending",
    params(("payment_id" = String, Path, description = "The payment's id (a UUID)")),
    request_body = RejectRequest,
    responses(
        (status = 200, description = "The rejected payment", body = Object),
        (status = 403, description = "`forbidden`: not a developer, or the submitter rejecting their own payment", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such payment", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the payment was already decided", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the reason is missing or too long", body = doc::ErrorBody),
    ),
)]
pub async fn reject(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Body<RejectRequest>,
) -> Result<Response, ApiError> {
    principal.require(STAFF)?;
    let req = body.parse()?.value;
    let why = reason(Some(req.reason))?.unwrap_or_default();
    if why.trim().is_empty() {
        return Err(ApiError::invalid_field(
            "reason",
            "a rejection needs a reason",
        ));
    }
    let (payment_id, _) = load_payment(&state, &id).await?;
    let done = state
        .commands
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::Reject {
                by: principal.sub().to_owned(),
                reason: why.clone(),
                now: super::now(),
            },
            &CommandContext::new(principal.actor()),
            None,
        )
        .await
        .map_err(|e| service_error(e, payment_error))?;
    state.projector.wake();
    Ok(Json(json!({
        "id": payment_id,
        "status": "failed",
        "failure_reason": why,
        "position": state.position_of(&done).await?,
    }))
    .into_response())
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefundRequest {
    /// A decimal string; defaults to everything not refunded yet.
    #[schema(example = "10.00")]
    pub amount: Option<String>,
    pub reason: String,
    /// Take back the credits the payment bought, in proportion to the
    /// amount refunded (all of them for a full refund).
    #[serde(default)]
    pub revoke_credits: bool,
}

/// Credits a refund of `amount` (after `before` was refunded) out of
/// `paid` takes back of the `credits` bought: the difference of the
/// proportional shares before and after, each rounded down, so a run of
/// revoking refunds that returns everything takes back exactly `credits`.
pub(super) fn credits_to_revoke(
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

#[utoipa::path(
    post,
    path = "/v1/admin/payments/{payment_id}/refund",
    tag = "admin",
    summary = "Refund part or all of a succeeded payment (at the gateway for a Stripe payment); refunds never exceed what was paid; optionally take back the credits it bought",
    params(
        ("payment_id" = String, Path, description = "The payment's id (a UUID)"),
        ("Idempotency-Key" = String, Header, description = "Required. A retry with the same key and body replays the refund; another body is 409 idempotency_key_reused"),
    ),
    request_body = RefundRequest,
    responses(
        (status = 200, description = "The refund and the payment's refunded total and status", body = Object),
        (status = 402, description = "`insufficient_credits`: the credits to take back are no longer there (within the credit limit); nothing was refunded", body = doc::ErrorBody),
        (status = 403, description = "`forbidden`: not a developer", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such payment", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the payment is not succeeded, or the amount exceeds what is left to refund; `idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
        (status = 502, description = "`unavailable`: the payment gateway refused the refund", body = doc::ErrorBody),
    ),
)]
pub async fn refund(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    key: IdemKey,
    body: Body<RefundRequest>,
) -> Result<Response, ApiError> {
    principal.require(STAFF)?;
    let body = body.parse()?;
    let key = key.required()?;
    let req = body.value;
    let why = reason(Some(req.reason))?.unwrap_or_default();
    if why.trim().is_empty() {
        return Err(ApiError::invalid_field("reason", "a refund needs a reason"));
    }
    let requested = req
        .amount
        .as_deref()
        .map(|a| {
            a.parse::<Decimal>().map_err(|_| {
                ApiError::invalid_field(
                    "amount",
                    "amount must be a decimal string such as \"10.00\"",
                )
            })
        })
        .transpose()?;
    let (payment_id, payment) = load_payment(&state, &id).await?;
    let refund_id = derived_id(&["refund", &payment_id.to_string(), key.as_str()]);
    let claim = claim(&key, "payments/refund", &body.canonical);
    // The key with another body is refused before anything moves (the
    // refund id, and so the keys below, come from the key alone).
    if let Some(first) = state
        .store
        .find_key(&payment_id.to_string(), key.as_str())
        .await
        .map_err(store_error)?
    {
        if first.request_hash != claim.request_hash {
            return Err(ApiError::IdempotencyKeyReused);
        }
    }
    let paid = payment.amount().cloned().ok_or(ApiError::Internal)?;
    let done_before = payment.has_refund(refund_id);
    let amount = requested.unwrap_or_else(|| payment.refundable());
    if !done_before {
        payment
            .refund_check(amount)
            .map_err(super::billing::payment_error)?;
    }
    let invoice_id = payment.invoice_id().ok_or(ApiError::Internal)?;
    let account = payment.account_id().ok_or(ApiError::Internal)?;
    // A gateway payment needs its gateway configured before anything moves.
    let gateway = match (payment.gateway_ref(), payment.method(), done_before) {
        (Some(gateway_ref), Some(method), false) => {
            Some((state.gateways.for_method(method)?, gateway_ref.to_owned()))
        }
        _ => None,
    };
    // 1. The credits go first: an account that cannot give them back
    //    (402) gets no refund. Keyed by the refund, so a retry takes once.
    let mut revoked = 0;
    if req.revoke_credits && !done_before {
        let invoice = state
            .store
            .load::<Invoice>(&invoice_id.to_string())
            .await
            .map_err(store_error)?
            .aggregate;
        let purchase = invoice
            .issued()
            .and_then(|i| i.purchase.clone())
            .ok_or_else(|| {
                ApiError::invalid_field(
                    "revoke_credits",
                    "this payment bought no credit package; there are no credits to take back",
                )
            })?;
        revoked = credits_to_revoke(purchase.credits, payment.refunded(), amount, paid.amount)
            .ok_or(ApiError::Internal)?;
        if revoked > 0 {
            let raw = format!("refund-{refund_id}");
            let revoke_key = events::IdempotencyKey::parse(&raw).map_err(|_| ApiError::Internal)?;
            super::settle::run_account_command(
                &state,
                &principal.actor(),
                account,
                AccountCommand::AdjustCredits(AdjustCredits {
                    adjustment_id: super::billing::derived_id(&["refund-revoke", &raw]),
                    credits: -revoked,
                    reason: format!(
                        "refund of {} {} of payment {payment_id}: {why}",
                        amount,
                        paid.currency.as_str()
                    ),
                    idempotency_key: Some(revoke_key.clone()),
                    now: super::now(),
                }),
                Some(&IdempotencyClaim {
                    request_hash: request_hash(format!("refund-revoke\n{raw}").as_bytes()),
                    key: revoke_key,
                }),
            )
            .await?;
        }
    }
    // 2. The money, at the gateway for a gateway payment (its idempotency
    //    key derived from the refund, so a retry refunds once).
    let mut gateway_refund_ref = None;
    if let Some((gateway, gateway_ref)) = gateway {
        let refunded = gateway
            .refund(&app::gateway::RefundRequest {
                payment_ref: gateway_ref,
                amount,
                currency: paid.currency.clone(),
                refund_id: refund_id.to_string(),
                payment_id: payment_id.to_string(),
                idempotency_key: format!("refund-{refund_id}"),
            })
            .await?;
        gateway_refund_ref = Some(refunded.id);
    }
    // 3. The refund recorded on the payment.
    let done = state
        .commands
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::Refund(Box::new(RefundPayment {
                refund_id,
                amount,
                revoke_credits: req.revoke_credits,
                revoked_credits: revoked,
                reason: Some(why),
                by: principal.sub().to_owned(),
                gateway_refund_ref: gateway_refund_ref.clone(),
                now: super::now(),
            })),
            &CommandContext::new(principal.actor()),
            Some(&claim),
        )
        .await
        .map_err(|e| service_error(e, payment_error))?;
    state.projector.wake();
    let after = done.state.clone().ok_or(ApiError::Internal)?;
    let response = Json(json!({
        "id": payment_id,
        "refund_id": refund_id,
        "amount": amount,
        "currency": paid.currency.as_str(),
        "refunded_amount": after.refunded(),
        "status": after.status().map(|s| s.as_str()),
        "revoke_credits": req.revoke_credits,
        "revoked_credits": revoked,
        "gateway_refund_ref": gateway_refund_ref,
        "position": state.position_of(&done).await?,
    }))
    .into_response();
    Ok(if done.replayed.is_some() {
        let mut r = response;
        r.headers_mut().insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
        r
    } else {
        response
    })
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
        assert_eq!(credits_to_revoke(2_000, d(0), d(1), d(3_451)), Some(0));
        assert_eq!(credits_to_revoke(0, d(0), d(1), d(3_451)), Some(0));
    }
}
