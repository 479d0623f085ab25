//! Billing routes of SPEC §3 (docs/adr/0010-billing.md): the caller's
//! invoices and their PDFs, manual payments and credit purchases. The admin
//! side (lists, void, approval) is in `admin_billing`.
//!
//! Invoices and payments are their own aggregates, run through the plain
//! command service; the credits a paid purchase buys go through the
//! account's command path (the committer) under an idempotency key derived
//! from the payment id, so they are granted exactly once.

use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{Datelike, Duration};
use events::{AccountId, CreditPurchase, Currency, Money, PaymentMethod};
use ledger::invoice::{IssueInvoice, LineInput};
use ledger::payment::{InitiatePayment, SubmitManualPayment};
use ledger::{Invoice, InvoiceCommand, InvoiceError, Payment, PaymentCommand, PaymentError};
use projections::billing::{InvoiceFilter, InvoiceView};
use projections::AccountView;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use store::{CommandContext, Executed, IdempotencyClaim, Reservation, ServiceError};
use tracing::warn;
use uuid::Uuid;

use super::extract::{Body, Fresh, IdemKey, Q};
use super::openapi as doc;
use super::respond::{claim, projection_error, service_error, store_error};
use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::AppState;
use app::gateway::{PaymentGateway, PaymentIntentRequest};
use app::reads::page_request;

/// The reservation scope that makes invoice numbers unique (and, taken only
/// by committed invoices, gapless).
pub const INVOICE_NUMBER_SCOPE: &str = "invoice_number";
/// How often one issue tries the next number after losing it to another.
pub const INVOICE_NUMBER_ATTEMPTS_MAX: u32 = 200;
/// Highest sequence number of a year (six digits).
const INVOICE_SEQUENCE_MAX: u32 = 999_999;
/// Days until a purchase invoice is due.
pub const INVOICE_DUE_DAYS: i64 = 14;
/// Longest manual payment reference accepted, in bytes.
pub const REFERENCE_BYTES_MAX: usize = ledger::payment::REFERENCE_BYTES_MAX;

/// Who may see and pay the account's invoices.
pub(super) const BILLING_ROLES: &[Role] = &[Role::Owner, Role::Admin];
/// Manual payments may also be recorded by staff on the customer's behalf.
const PAYERS: &[Role] = &[Role::Owner, Role::Admin, Role::Developer];

/// The billing routes, to be nested under `/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/billing/invoices", get(invoices_own))
        .route("/billing/invoices/{invoice_id}", get(invoice_own))
        .route("/billing/invoices/{invoice_id}/pdf", get(invoice_pdf))
        .route("/billing/payments/manual", post(manual_payment))
        .route("/billing/credits/purchase", post(purchase))
        .merge(super::admin_billing::routes())
        .merge(super::subscriptions::routes())
        .merge(super::webhooks::routes())
        .merge(super::payment_methods::routes())
        .merge(super::billing_stats::routes())
}

/// A UUID derived from its parts (SHA-256, version bits 8): the same
/// account and Idempotency-Key name the same invoice or payment, so a
/// retried purchase finds the streams it already wrote.
pub(super) fn derived_id(parts: &[&str]) -> Uuid {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

pub(super) fn invoice_error(e: InvoiceError) -> ApiError {
    app::AppError::from(e).into()
}

pub(super) fn payment_error(e: PaymentError) -> ApiError {
    app::AppError::from(e).into()
}

/// Parses a path id; anything else is simply not found.
pub(super) fn path_id(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound(format!("{what} not found")))
}

/// An invoice as JSON: the row's state and the issued document.
pub(super) fn invoice_json(v: &InvoiceView) -> Value {
    let d = &v.document;
    json!({
        "id": v.id,
        "number": v.number,
        "account_id": v.account_id,
        "subscription_id": d.subscription_id,
        "status": v.status,
        "currency": v.currency,
        "lines": d.lines.iter().map(|l| json!({
            "description": l.description,
            "quantity": l.quantity,
            "unit_price": l.unit_price,
            "amount": l.amount,
        })).collect::<Vec<_>>(),
        "subtotal": v.subtotal,
        "tax_rate": d.tax_rate,
        "tax": v.tax,
        "total": v.total,
        "buyer_name": d.buyer_name,
        "billing_email": d.billing_email,
        "billing_address": d.billing_address,
        "tax_id": d.tax_id,
        "credit_purchase": d.purchase,
        "notes": d.notes,
        "invoice_date": v.issued_at,
        "due_date": v.due_at,
        "paid_at": v.paid_at,
        "payment_id": v.payment_id,
        "payment_method": v.payment_method,
        "updated_at": v.updated_at,
    })
}

/// The invoice, if it is the caller's (another tenant's is 404).
async fn own_invoice(
    state: &AppState,
    principal: &Principal,
    raw: &str,
) -> Result<InvoiceView, ApiError> {
    principal.require(BILLING_ROLES)?;
    let account = principal.own_account()?;
    let id = path_id(raw, "invoice")?;
    let invoice = state
        .read_models
        .invoice(&id.to_string())
        .await
        .map_err(projection_error)?
        .filter(|i| i.account_id == account.to_string())
        .ok_or_else(|| ApiError::NotFound("invoice not found".into()))?;
    Ok(invoice)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct OwnInvoicesQuery {
    /// `draft|pending|paid|void|uncollectible`
    pub status: Option<String>,
    #[param(minimum = 1, maximum = 500, default = 50)]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

#[utoipa::path(
    get,
    path = "/v1/billing/invoices",
    tag = "billing",
    summary = "The caller's account's invoices, newest first",
    params(OwnInvoicesQuery),
    responses(
        (status = 200, description = "A page of invoices", body = doc::BillingPage),
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
    principal.require(BILLING_ROLES)?;
    let account = principal.own_account()?;
    fresh.wait(&state).await?;
    let q = query.parse()?;
    let page = state
        .read_models
        .invoices(
            &InvoiceFilter {
                account_id: Some(account.to_string()),
                status: super::admin_billing::invoice_status(q.status)?,
                from: None,
                to: None,
            },
            &page_request(q.limit, q.cursor)?,
        )
        .await
        .map_err(projection_error)?;
    let items: Vec<Value> = page.items.iter().map(invoice_json).collect();
    Ok(Json(json!({ "items": items, "next_cursor": page.next_cursor })).into_response())
}

#[utoipa::path(
    get,
    path = "/v1/billing/invoices/{invoice_id}",
    tag = "billing",
    summary = "One of the caller's invoices",
    params(("invoice_id" = String, Path, description = "The invoice's id (a UUID)")),
    responses(
        (status = 200, description = "The invoice", body = Object),
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
    principal.require(BILLING_ROLES)?;
    fresh.wait(&state).await?;
    let invoice = own_invoice(&state, &principal, &id).await?;
    Ok(Json(invoice_json(&invoice)).into_response())
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
    principal.require(BILLING_ROLES)?;
    fresh.wait(&state).await?;
    let invoice = own_invoice(&state, &principal, &id).await?;
    let bytes = super::invoice_pdf::render(&invoice);
    let mut response = (StatusCode::OK, bytes).into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/pdf"));
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{}.pdf\"", invoice.number)) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

/// The account's billing facts, from the read model; waits (bounded) for
/// the projector when the account is newer than it.
pub(super) async fn billing_account(
    state: &AppState,
    account: AccountId,
) -> Result<AccountView, ApiError> {
    let id = account.to_string();
    if let Some(a) = state
        .read_models
        .account(&id)
        .await
        .map_err(projection_error)?
    {
        return Ok(a);
    }
    let head = state.store.head_position().await.map_err(store_error)?;
    state
        .projector
        .wait_for(head, std::time::Duration::from_secs(5))
        .await;
    state
        .read_models
        .account(&id)
        .await
        .map_err(projection_error)?
        .ok_or_else(|| ApiError::NotFound("account not found".into()))
}

/// Issues an invoice under the next free number of its year: the year's
/// highest reserved number plus one, reserved in the invoice's own append.
/// Losing the number to a concurrent issue (`Reserved`) tries the next; an
/// issue that fails takes no number, so the numbers stay gapless.
pub(super) async fn issue_invoice(
    state: &AppState,
    ctx: &CommandContext,
    mut command: IssueInvoice,
    claim: Option<&IdempotencyClaim>,
) -> Result<Executed<Invoice>, ApiError> {
    let prefix = format!("INV-{:04}-", command.now.year());
    let stream = command.invoice_id.to_string();
    for _ in 0..INVOICE_NUMBER_ATTEMPTS_MAX {
        let last = state
            .store
            .highest_reservation(INVOICE_NUMBER_SCOPE, &prefix)
            .await
            .map_err(store_error)?;
        let next = match last {
            None => 1,
            Some(v) => v[prefix.len()..]
                .parse::<u32>()
                .map_err(|_| ApiError::Internal)?
                .checked_add(1)
                .ok_or(ApiError::Internal)?,
        };
        if next > INVOICE_SEQUENCE_MAX {
            return Err(ApiError::Conflict(format!(
                "invoice numbers of {} are exhausted",
                command.now.year()
            )));
        }
        command.number = format!("{prefix}{next:06}");
        let reservation = Reservation {
            scope: INVOICE_NUMBER_SCOPE.into(),
            value: command.number.clone(),
        };
        match state
            .commands
            .execute_with::<Invoice>(
                &stream,
                InvoiceCommand::Issue(Box::new(command.clone())),
                ctx,
                claim,
                std::slice::from_ref(&reservation),
            )
            .await
        {
            Err(ServiceError::Reserved { .. }) => continue,
            other => {
                let done = other.map_err(|e| service_error(e, invoice_error))?;
                state.projector.wake();
                return Ok(done);
            }
        }
    }
    Err(ApiError::RateLimited {
        retry_after_seconds: 1,
    })
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurchaseRequest {
    /// A credit package's slug (`GET /v1/billing/credits/packages/`).
    pub package: String,
    /// `bank_transfer`, `local_wallet` or `stripe` (a PaymentIntent; the
    /// response carries its `client_secret`); `stripe` answers 503 while no
    /// Stripe key is configured, `paypal` always.
    pub method: String,
}

/// The manual method named by the body, or the reason it cannot be used.
fn manual_method(raw: &str) -> Result<PaymentMethod, ApiError> {
    match PaymentMethod::parse(raw) {
        Some(PaymentMethod::Stripe) => Err(ApiError::Unavailable(
            "stripe is not configured on this server; use bank_transfer or local_wallet".into(),
        )),
        Some(PaymentMethod::Paypal) => Err(ApiError::Unavailable(
            "paypal is not available; use bank_transfer or local_wallet".into(),
        )),
        Some(m @ (PaymentMethod::BankTransfer | PaymentMethod::LocalWallet)) => Ok(m),
        _ => Err(ApiError::invalid_field(
            "method",
            "method must be one of bank_transfer, local_wallet, stripe, paypal",
        )),
    }
}

fn payment_json(payment_id: Uuid, submitted: &events::PaymentSubmitted, status: &str) -> Value {
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

fn replayed(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}

#[utoipa::path(
    post,
    path = "/v1/billing/credits/purchase",
    tag = "billing",
    summary = "Buy a credit package: a pending invoice and a payment (manual: pending approval; stripe: a PaymentIntent whose `client_secret` the response carries); credits are granted once the payment succeeds",
    params(("Idempotency-Key" = String, Header, description = "Required. A retry with the same key and body replays the first response; another body is 409 idempotency_key_reused")),
    request_body = PurchaseRequest,
    responses(
        (status = 201, description = "The invoice and the payment with its instructions (or, for stripe, `client_secret`)", body = Object),
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
    principal.require(BILLING_ROLES)?;
    let account = principal.own_account()?;
    let body = body.parse()?;
    let key = key.required()?;
    let req = body.value;
    // A gateway method must be configured before anything is written.
    let gateway = match PaymentMethod::parse(&req.method) {
        Some(m @ (PaymentMethod::Stripe | PaymentMethod::Paypal)) => {
            Some((m, state.gateways.for_method(m)?))
        }
        _ => None,
    };
    let method = match &gateway {
        Some((m, _)) => *m,
        None => manual_method(&req.method)?,
    };
    let catalog = state.catalog.get().await;
    let package = catalog
        .package(&req.package)
        .filter(|p| p.active)
        .ok_or_else(|| ApiError::NotFound(format!("no active credit package {:?}", req.package)))?
        .clone();
    let holder = billing_account(&state, account).await?;
    let plan = catalog.plan(&holder.plan);
    if !plan.is_some_and(|p| p.allow_credit_topup) {
        return Err(ApiError::Forbidden(format!(
            "the {} plan does not allow credit top-ups; upgrade the plan first",
            holder.plan
        )));
    }
    let now = super::now();
    let invoice_id = derived_id(&["purchase-invoice", &account.to_string(), key.as_str()]);
    let payment_id = derived_id(&["purchase-payment", &account.to_string(), key.as_str()]);
    let terms = super::payment_methods::method_terms(&state, account, method, payment_id).await?;
    let claim = claim(&key, "credits/purchase", &body.canonical);
    let ctx = CommandContext::new(principal.actor());
    let currency = package.price.currency.clone();
    let issued = issue_invoice(
        &state,
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
                unit_price: package.price.amount,
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
        .ok_or(ApiError::Internal)?;
    let total = Money::new(invoice.total, invoice.currency.clone());
    if let Some((_, gateway)) = gateway {
        let started = GatewayPurchase {
            account,
            invoice_id,
            payment_id,
            invoice: &invoice,
            total: &total,
            package: &package.slug,
            credits: package.credits,
        };
        let response = gateway_purchase(
            &state,
            &principal,
            &ctx,
            &claim,
            gateway.as_ref(),
            &started,
            issued.position(),
        )
        .await?;
        return Ok(if issued.replayed.is_some() && response.1 {
            replayed(response.0)
        } else {
            response.0
        });
    }
    let submitted = state
        .commands
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
                submitted_by: principal.sub().to_owned(),
                instructions: Some(terms.instructions(&invoice.number, &total)),
                now,
            })),
            &ctx,
            Some(&claim),
        )
        .await
        .map_err(|e| service_error(e, payment_error))?;
    state.projector.wake();
    let payment = state
        .store
        .load::<Payment>(&payment_id.to_string())
        .await
        .map_err(store_error)?
        .aggregate;
    let sub = payment.submitted().ok_or(ApiError::Internal)?;
    let status = payment.status().map(|s| s.as_str()).unwrap_or("pending");
    let position = match (issued.position(), submitted.position()) {
        (Some(a), Some(b)) => a.max(b),
        (a, b) => a.or(b).unwrap_or_default(),
    };
    let body = json!({
        "invoice": {
            "id": invoice_id,
            "number": invoice.number,
            "status": "pending",
            "currency": invoice.currency.as_str(),
            "subtotal": invoice.subtotal,
            "tax": invoice.tax,
            "total": invoice.total,
            "due_date": invoice.due_at,
        },
        "payment": payment_json(payment_id, sub, status),
        "credits": package.credits,
        "package": package.slug,
        "position": position,
    });
    let response = (StatusCode::CREATED, Json(body)).into_response();
    Ok(
        if issued.replayed.is_some() && submitted.replayed.is_some() {
            replayed(response)
        } else {
            response
        },
    )
}

/// What a gateway purchase pays.
struct GatewayPurchase<'a> {
    account: AccountId,
    invoice_id: Uuid,
    payment_id: Uuid,
    invoice: &'a events::InvoiceIssued,
    total: &'a Money,
    package: &'a str,
    credits: i64,
}

/// A gateway payment as JSON.
pub(super) fn gateway_payment_json(payment_id: Uuid, payment: &Payment) -> Value {
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

/// The gateway side of a purchase: a PaymentIntent at the gateway (its
/// idempotency key derived from our payment id, so a retry finds the same
/// one), then the payment recorded as initiated under the purchase's claim.
/// Answers the 201 response and whether the payment append was a replay.
async fn gateway_purchase(
    state: &AppState,
    principal: &Principal,
    ctx: &CommandContext,
    claim: &IdempotencyClaim,
    gateway: &dyn PaymentGateway,
    p: &GatewayPurchase<'_>,
    invoice_position: Option<i64>,
) -> Result<(Response, bool), ApiError> {
    let intent = gateway
        .create_payment_intent(&PaymentIntentRequest {
            amount: p.total.amount,
            currency: p.total.currency.clone(),
            invoice_id: p.invoice_id.to_string(),
            payment_id: p.payment_id.to_string(),
            account_id: p.account.to_string(),
            description: format!("{} ({} credits)", p.invoice.number, p.credits),
            idempotency_key: format!("payment-intent-{}", p.payment_id),
        })
        .await?;
    let done = state
        .commands
        .execute::<Payment>(
            &p.payment_id.to_string(),
            PaymentCommand::Initiate(Box::new(InitiatePayment {
                payment_id: p.payment_id,
                invoice_id: p.invoice_id,
                account_id: p.account,
                amount: p.total.clone(),
                invoice_total: p.total.clone(),
                method: PaymentMethod::Stripe,
                gateway: gateway.name().to_owned(),
                gateway_ref: intent.id.clone(),
                submitted_by: principal.sub().to_owned(),
                now: super::now(),
            })),
            ctx,
            Some(claim),
        )
        .await
        .map_err(|e| service_error(e, payment_error))?;
    state.projector.wake();
    // The command service hands back the payment as it stands after the
    // command (or, on a replay, as stored).
    let payment = done.state.as_ref().ok_or(ApiError::Internal)?;
    if payment.gateway_ref() != Some(intent.id.as_str()) {
        warn!(payment = %p.payment_id, "the gateway returned another PaymentIntent than the one recorded");
    }
    let position = match (invoice_position, done.position()) {
        (Some(a), Some(b)) => a.max(b),
        (a, b) => a.or(b).unwrap_or_default(),
    };
    let body = json!({
        "invoice": {
            "id": p.invoice_id,
            "number": p.invoice.number,
            "status": "pending",
            "currency": p.invoice.currency.as_str(),
            "subtotal": p.invoice.subtotal,
            "tax": p.invoice.tax,
            "total": p.invoice.total,
            "due_date": p.invoice.due_at,
        },
        "payment": gateway_payment_json(p.payment_id, payment),
        "client_secret": intent.client_secret,
        "credits": p.credits,
        "package": p.package,
        "position": position,
    });
    Ok((
        (StatusCode::CREATED, Json(body)).into_response(),
        done.replayed.is_some(),
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualPaymentRequest {
    /// The invoice's id (a UUID).
    pub invoice_id: String,
    /// `bank_transfer` or `local_wallet`.
    pub method: String,
    /// The transfer's or wallet receipt's reference.
    pub reference: String,
    /// The amount paid, a decimal string: must equal the invoice total.
    #[schema(example = "29.00")]
    pub amount: String,
    /// Defaults to the invoice's currency.
    pub currency: Option<String>,
    /// For staff recording a payment: the account (defaults to the token's).
    pub account_id: Option<String>,
}

#[utoipa::path(
    post,
    path = "/v1/billing/payments/manual",
    tag = "billing",
    summary = "Record a bank transfer or local wallet payment for an invoice; pending until a developer who is not the submitter approves it",
    params(("Idempotency-Key" = String, Header, description = "Required. A retry with the same key and body replays the first response; another body is 409 idempotency_key_reused")),
    request_body = ManualPaymentRequest,
    responses(
        (status = 201, description = "The pending payment", body = Object),
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
    principal.require(PAYERS)?;
    let body = body.parse()?;
    let key = key.required()?;
    let req = body.value;
    let account = match (&req.account_id, principal.account_id()) {
        (Some(raw), _) => principal.scope(super::extract::account_id(raw)?)?,
        (None, Some(own)) => own,
        (None, None) => principal.own_account()?,
    };
    let method = manual_method(&req.method)?;
    let amount: Decimal = req.amount.parse().map_err(|_| {
        ApiError::invalid_field(
            "amount",
            "amount must be a decimal string such as \"29.00\"",
        )
    })?;
    if req.reference.trim().is_empty() || req.reference.len() > REFERENCE_BYTES_MAX {
        return Err(ApiError::invalid_field(
            "reference",
            format!("reference must be 1 to {REFERENCE_BYTES_MAX} bytes"),
        ));
    }
    let invoice_id = Uuid::parse_str(&req.invoice_id)
        .map_err(|_| ApiError::invalid_field("invoice_id", "invoice_id must be a UUID"))?;
    let invoice = state
        .store
        .load::<Invoice>(&invoice_id.to_string())
        .await
        .map_err(store_error)?
        .aggregate;
    let issued = invoice
        .issued()
        .filter(|i| i.account_id == account)
        .ok_or_else(|| ApiError::NotFound("invoice not found".into()))?;
    let currency = match &req.currency {
        Some(c) => Currency::parse(c).map_err(|e| ApiError::invalid_field("currency", e.reason))?,
        None => issued.currency.clone(),
    };
    let payment_id = derived_id(&["manual-payment", &account.to_string(), key.as_str()]);
    let terms = super::payment_methods::method_terms(&state, account, method, payment_id).await?;
    let claim = claim(&key, "payments/manual", &body.canonical);
    let ctx = CommandContext::new(principal.actor());
    // A new payment is only for an invoice still waiting for one; a retry
    // of an earlier submission replays whatever the invoice became since.
    let existing = state
        .store
        .load::<Payment>(&payment_id.to_string())
        .await
        .map_err(store_error)?
        .aggregate;
    if existing.submitted().is_none() && invoice.status() != Some(events::InvoiceStatus::Pending) {
        return Err(ApiError::Conflict(format!(
            "invoice {} is {}, not pending payment",
            issued.number,
            invoice.status().map(|s| s.as_str()).unwrap_or("unknown")
        )));
    }
    let done = state
        .commands
        .execute::<Payment>(
            &payment_id.to_string(),
            PaymentCommand::SubmitManual(Box::new(SubmitManualPayment {
                payment_id,
                invoice_id,
                account_id: account,
                amount: Money::new(amount, currency),
                invoice_total: Money::new(issued.total, issued.currency.clone()),
                method,
                reference: Some(req.reference.clone()),
                submitted_by: principal.sub().to_owned(),
                instructions: Some(terms.instructions(
                    &issued.number,
                    &Money::new(issued.total, issued.currency.clone()),
                )),
                now: super::now(),
            })),
            &ctx,
            Some(&claim),
        )
        .await
        .map_err(|e| service_error(e, payment_error))?;
    state.projector.wake();
    let payment = done
        .state
        .clone()
        .filter(|p| p.submitted().is_some())
        .map(Ok)
        .unwrap_or_else(|| Err(ApiError::Internal))?;
    let sub = payment.submitted().ok_or(ApiError::Internal)?;
    let status = payment.status().map(|s| s.as_str()).unwrap_or("pending");
    let mut body = payment_json(payment_id, sub, status);
    body["position"] = json!(state.position_of(&done).await?);
    let response = (StatusCode::CREATED, Json(body)).into_response();
    Ok(if done.replayed.is_some() {
        replayed(response)
    } else {
        response
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_distinct_and_well_formed() {
        let a = derived_id(&["purchase-invoice", "acct", "k1"]);
        assert_eq!(a, derived_id(&["purchase-invoice", "acct", "k1"]));
        assert_ne!(a, derived_id(&["purchase-payment", "acct", "k1"]));
        assert_ne!(
            derived_id(&["ab", "c"]),
            derived_id(&["a", "bc"]),
            "parts are separated"
        );
        assert_eq!(a.get_version_num(), 8);
    }

    #[test]
    fn stripe_and_paypal_are_reported_unavailable_never_faked() {
        assert!(matches!(
            manual_method("stripe"),
            Err(ApiError::Unavailable(_))
        ));
        assert!(matches!(
            manual_method("paypal"),
            Err(ApiError::Unavailable(_))
        ));
        assert_eq!(
            manual_method("bank_transfer"),
            Ok(PaymentMethod::BankTransfer)
        );
        assert!(matches!(
            manual_method("cash"),
            Err(ApiError::InvalidRequest { .. })
        ));
    }
}
