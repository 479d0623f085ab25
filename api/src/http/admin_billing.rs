//! Billing administration routes (developer role): invoice and payment
//! lists over all tenants, void and mark-uncollectible, the maker-checker
//! approval of manual payments and refunds. Each handler extracts, calls
//! `app::billing`, renders.

use app::billing::invoices::{FinalizeRequest, InvoiceListQuery, NewInvoiceRequest, ReasonRequest};
use app::billing::payments::{ApproveRequest, PaymentListQuery, RejectRequest};
use app::billing::refunds::RefundRequest;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use super::extract::{Body, Fresh, IdemKey, Q};
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/invoices", get(invoices).post(create_invoice))
        .route("/admin/invoices/{invoice_id}/finalize", post(finalize))
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

#[utoipa::path(
    get,
    path = "/v1/admin/invoices",
    tag = "admin",
    summary = "Invoices of all tenants, newest first, by status, account and invoice date",
    params(InvoiceListQuery),
    responses(
        (status = 200, description = "A page of invoices", body = app::billing::invoices::InvoicePage),
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
    render::ok(&app::billing::invoices::invoices(&state, &principal, fresh.0, query.query()).await?)
}

#[utoipa::path(
    post,
    path = "/v1/admin/invoices",
    tag = "admin",
    summary = "Write an invoice with arbitrary lines for an account: a draft, or pending at once with `finalize: true`",
    description = "The invoice takes the next INV-YYYY-NNNNNN number and snapshots the account's billing details and tax rate. A draft is not payable until `POST /v1/admin/invoices/{invoice_id}/finalize`; it can be voided.",
    params(("Idempotency-Key" = Option<String>, Header, description = "Optional. A retry with the same key and body replays the first response")),
    request_body = app::billing::invoices::NewInvoiceRequest,
    responses(
        (status = 201, description = "The invoice", body = app::billing::invoices::InvoiceBody, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 403, description = "`forbidden`: only a developer may write invoices", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such account", body = doc::ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a bad line, currency, due date or account id; `details.field` names it", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: the read models did not show the invoice in time (it is written; read it again)", body = doc::ErrorBody),
    ),
)]
pub async fn create_invoice(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    body: Body<NewInvoiceRequest>,
) -> Result<Response, ApiError> {
    render::written(
        &app::billing::invoices::create(&state, &principal, key.key(), body.input()).await?,
    )
}

#[utoipa::path(
    post,
    path = "/v1/admin/invoices/{invoice_id}/finalize",
    tag = "admin",
    summary = "Finalize a draft invoice: it becomes pending and payable",
    params(("invoice_id" = String, Path, description = "The invoice's id (a UUID)")),
    request_body = Option<FinalizeRequest>,
    responses(
        (status = 200, description = "The invoice, pending", body = app::billing::invoices::InvoiceBody),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such invoice", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the invoice is paid, void or uncollectible", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a bad due date", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: the read models did not show the change in time", body = doc::ErrorBody),
    ),
)]
pub async fn finalize(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Body<FinalizeRequest>,
) -> Result<Response, ApiError> {
    render::ok(&app::billing::invoices::finalize(&state, &principal, &id, body.input()).await?)
}

#[utoipa::path(
    post,
    path = "/v1/admin/invoices/{invoice_id}/void",
    tag = "admin",
    summary = "Void a draft or pending invoice",
    params(("invoice_id" = String, Path, description = "The invoice's id (a UUID)")),
    request_body = Option<ReasonRequest>,
    responses(
        (status = 200, description = "The invoice's new status", body = app::billing::invoices::InvoiceChange),
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
    render::ok(&app::billing::invoices::void(&state, &principal, &id, body.input()).await?)
}

#[utoipa::path(
    post,
    path = "/v1/admin/invoices/{invoice_id}/mark-uncollectible",
    tag = "admin",
    summary = "Mark a pending invoice uncollectible",
    params(("invoice_id" = String, Path, description = "The invoice's id (a UUID)")),
    request_body = Option<ReasonRequest>,
    responses(
        (status = 200, description = "The invoice's new status", body = app::billing::invoices::InvoiceChange),
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
    let changed =
        app::billing::invoices::mark_uncollectible(&state, &principal, &id, body.input()).await?;
    render::ok(&changed)
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
    render::ok(&app::billing::payments::payments(&state, &principal, fresh.0, query.query()).await?)
}

#[utoipa::path(
    post,
    path = "/v1/admin/payments/{payment_id}/approve",
    tag = "admin",
    summary = "Approve a manual payment (not by its submitter): the invoice is paid and a purchase's credits are granted, once",
    params(("payment_id" = String, Path, description = "The payment's id (a UUID)")),
    request_body = Option<ApproveRequest>,
    responses(
        (status = 200, description = "The approved payment", body = app::billing::payments::Approval),
        (status = 403, description = "`forbidden`: not a developer, or the submitter approving their own payment", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such payment", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the payment was already decided, or the invoice cannot be paid", body = doc::ErrorBody),
    ),
)]
pub async fn approve(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Body<ApproveRequest>,
) -> Result<Response, ApiError> {
    render::ok(&app::billing::payments::approve(&state, &principal, &id, body.input()).await?)
}

#[utoipa::path(
    post,
    path = "/v1/admin/payments/{payment_id}/reject",
    tag = "admin",
    summary = "Reject a manual payment (not by its submitter); the invoice stays pending",
    params(("payment_id" = String, Path, description = "The payment's id (a UUID)")),
    request_body = RejectRequest,
    responses(
        (status = 200, description = "The rejected payment", body = app::billing::payments::Rejection),
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
    render::ok(&app::billing::payments::reject(&state, &principal, &id, body.input()).await?)
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
        (status = 200, description = "The refund and the payment's refunded total and status", body = app::billing::refunds::RefundOutcome, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
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
    let done =
        app::billing::refunds::refund_payment(&state, &principal, &id, key.key(), body.input())
            .await?;
    render::written(&done)
}
