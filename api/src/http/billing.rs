//! Billing routes of SPEC §3 (docs/adr/0010-billing.md): the caller's
//! invoices and their PDFs, manual payments and credit purchases; the
//! route table of every billing module. Each handler extracts, calls
//! `app::billing`, renders.

use app::billing::invoices::OwnInvoicesQuery;
use app::billing::payments::ManualPaymentRequest;
use app::billing::purchases::PurchaseRequest;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use super::extract::{Body, Fresh, IdemKey, Q};
use super::render;
use super::schemas as doc;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::AppState;

/// The billing routes, to be nested under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/billing/invoices", get(invoices_own))
        .route("/billing/invoices/{invoice_id}", get(invoice_own))
        .route("/billing/invoices/{invoice_id}/pdf", get(invoice_pdf))
        .route("/billing/payments/manual", post(manual_payment))
        .route(
            "/billing/payments/{payment_id}/cancel",
            post(cancel_payment),
        )
        .route(
            "/admin/payments/{payment_id}/cancel",
            post(cancel_payment_staff),
        )
        .route("/billing/credits/purchase", post(purchase))
        .merge(super::admin_billing::routes())
        .merge(super::subscriptions::routes())
        .merge(super::webhooks::routes())
        .merge(super::payment_methods::routes())
        .merge(super::billing_stats::routes())
}

#[utoipa::path(
    get,
    path = "/v1/billing/invoices",
    tag = "billing",
    summary = "The caller's account's invoices, newest first",
    params(OwnInvoicesQuery),
    responses(
        (status = 200, description = "A page of invoices", body = app::billing::invoices::InvoicePage),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a query value is invalid; `details.field` names it", body = doc::ErrorBody),
    ),
)]
pub async fn invoices_own(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    query: Q<OwnInvoicesQuery>,
) -> Result<Response, ApiError> {
    render::ok(
        &app::billing::invoices::own_invoices(&state, &principal, fresh.0, query.query()).await?,
    )
}

#[utoipa::path(
    get,
    path = "/v1/billing/invoices/{invoice_id}",
    tag = "billing",
    summary = "One of the caller's invoices",
    params(("invoice_id" = String, Path, description = "The invoice's id (a UUID)")),
    responses(
        (status = 200, description = "The invoice", body = app::billing::invoices::InvoiceBody),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such invoice, or another tenant's", body = doc::ErrorBody),
    ),
)]
pub async fn invoice_own(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    render::ok(&app::billing::invoices::own_invoice(&state, &principal, fresh.0, &id).await?)
}

#[utoipa::path(
    get,
    path = "/v1/billing/invoices/{invoice_id}/pdf",
    tag = "billing",
    summary = "One of the caller's invoices as a PDF",
    params(("invoice_id" = String, Path, description = "The invoice's id (a UUID)")),
    responses(
        (status = 200, description = "The invoice", content_type = "application/pdf", body = Vec<u8>),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such invoice, or another tenant's", body = doc::ErrorBody),
    ),
)]
pub async fn invoice_pdf(
    State(state): State<AppState>,
    principal: Principal,
    fresh: Fresh,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let pdf = app::billing::invoices::own_invoice_pdf(&state, &principal, fresh.0, &id).await?;
    let disposition = format!("inline; filename=\"{}\"", pdf.file_name());
    let mut response = (StatusCode::OK, pdf.bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/pdf"));
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

#[utoipa::path(
    post,
    path = "/v1/billing/credits/purchase",
    tag = "billing",
    summary = "Buy a credit package: a pending invoice and a payment (manual: pending approval; stripe: a PaymentIntent whose `client_secret` the response carries; paypal: an order whose `order_id` and `approval_url` the response carries); credits are granted once the payment succeeds",
    params(("Idempotency-Key" = String, Header, description = "Required. A retry with the same key and body replays the first response; another body is 409 idempotency_key_reused")),
    request_body = PurchaseRequest,
    responses(
        (status = 201, description = "The invoice and the payment with its instructions (or, for stripe, `client_secret`; for paypal, `order_id` and `approval_url`, where the payer approves the order)", body = Object, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 403, description = "`forbidden`: the role may not buy, or the plan does not allow credit top-ups", body = doc::ErrorBody),
        (status = 502, description = "`unavailable`: the payment gateway refused the request", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such package", body = doc::ErrorBody),
        (status = 409, description = "`idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid; `details.field` names it", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: the method (stripe, paypal) is not configured", body = doc::ErrorBody),
    ),
)]
pub async fn purchase(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    body: Body<PurchaseRequest>,
) -> Result<Response, ApiError> {
    let done =
        app::billing::purchases::buy_package(&state, &principal, key.key(), body.input()).await?;
    render::written(&done)
}

#[utoipa::path(
    post,
    path = "/v1/billing/payments/manual",
    tag = "billing",
    summary = "Record a bank transfer or local wallet payment for an invoice; pending until a developer who is not the submitter approves it",
    params(("Idempotency-Key" = String, Header, description = "Required. A retry with the same key and body replays the first response; another body is 409 idempotency_key_reused")),
    request_body = ManualPaymentRequest,
    responses(
        (status = 201, description = "The pending payment", body = Object, headers(("Idempotent-Replayed" = String, description = "`true` on a replay of an earlier request with the same Idempotency-Key"))),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such invoice, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the invoice is not pending; `idempotency_key_reused`", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: a value is invalid (the amount must equal the invoice total); `details.field` names it", body = doc::ErrorBody),
        (status = 503, description = "`unavailable`: the method (stripe, paypal) is not configured", body = doc::ErrorBody),
    ),
)]
pub async fn manual_payment(
    State(state): State<AppState>,
    principal: Principal,
    key: IdemKey,
    body: Body<ManualPaymentRequest>,
) -> Result<Response, ApiError> {
    let done =
        app::billing::payments::pay_manually(&state, &principal, key.key(), body.input()).await?;
    render::written(&done)
}

#[utoipa::path(
    post,
    path = "/v1/billing/payments/{payment_id}/cancel",
    tag = "billing",
    summary = "Withdraw a pending manual payment of the token's account; the invoice stays open",
    params(("payment_id" = String, Path, description = "The payment's id (a UUID)")),
    request_body = Option<app::billing::payments::CancelPaymentRequest>,
    responses(
        (status = 200, description = "The payment, cancelled", body = Object),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such payment, or another tenant's", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the payment is decided already, or is a gateway payment", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the id is not a UUID, or the reason is too long", body = doc::ErrorBody),
    ),
)]
pub async fn cancel_payment(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Body<app::billing::payments::CancelPaymentRequest>,
) -> Result<Response, ApiError> {
    render::ok(&app::billing::payments::cancel(&state, &principal, &id, body.input()).await?)
}

#[utoipa::path(
    post,
    path = "/v1/admin/payments/{payment_id}/cancel",
    tag = "admin",
    summary = "Withdraw any account's pending manual payment (developer)",
    params(("payment_id" = String, Path, description = "The payment's id (a UUID)")),
    request_body = Option<app::billing::payments::CancelPaymentRequest>,
    responses(
        (status = 200, description = "The payment, cancelled", body = Object),
        (status = 403, description = "`forbidden`: the token's role may not call this", body = doc::ErrorBody),
        (status = 404, description = "`not_found`: no such payment", body = doc::ErrorBody),
        (status = 409, description = "`conflict`: the payment is decided already, or is a gateway payment", body = doc::ErrorBody),
        (status = 422, description = "`invalid_request`: the id is not a UUID, or the reason is too long", body = doc::ErrorBody),
    ),
)]
pub async fn cancel_payment_staff(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: Body<app::billing::payments::CancelPaymentRequest>,
) -> Result<Response, ApiError> {
    render::ok(&app::billing::payments::cancel_any(&state, &principal, &id, body.input()).await?)
}
