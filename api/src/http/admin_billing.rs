//! Billing administration (developer role): invoice and payment lists over
//! all tenants, void and mark-uncollectible, and the maker-checker approval
//! of manual payments. Approving marks the invoice paid and grants a
//! purchase's credits through the account's command path, keyed by the
//! payment id, so a retried approval never grants twice.

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use events::{InvoiceStatus, PaymentStatus};
use ledger::{Invoice, InvoiceCommand, Payment, PaymentCommand, PaymentError};
use projections::billing::{InvoiceFilter, PaymentFilter};
use serde::Deserialize;
use serde_json::{json, Value};
use store::{CommandContext, ServiceError};
use uuid::Uuid;

use super::accounts::page_request;
use super::billing::{invoice_error, invoice_json, path_id, payment_error};
use super::extract::{Body, Fresh, Q};
use super::openapi as doc;
use super::respond::{projection_error, service_error, store_error};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::AppState;

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
}

/// RFC 3339 → the read models' text form, so text order is time order.
fn time_param(field: &str, raw: Option<String>) -> Result<Option<String>, ApiError> {
    raw.map(|r| {
        chrono::DateTime::parse_from_rfc3339(&r)
            .map(|t| projections::time_text(t.with_timezone(&chrono::Utc)))
            .map_err(|_| {
                ApiError::invalid_field(field, format!("{field} must be an RFC 3339 time"))
            })
    })
    .transpose()
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
    if payment.submitted().is_none() {
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
    request_body = Option<super::credits::EmptyRequest>,
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
    body: Body<super::credits::EmptyRequest>,
) -> Result<Response, ApiError> {
    principal.require(STAFF)?;
    body.parse()?;
    let (payment_id, payment) = load_payment(&state, &id).await?;
    // The invoice must still take this payment before the payment is
    // approved: a void invoice, or one paid by another payment, refuses.
    let submitted = payment.submitted().ok_or(ApiError::Internal)?;
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
