//! Invoices: the account's own (list, one, its PDF) and the staff's view
//! over every tenant (list, void, mark uncollectible).

use events::{BillingAddress, CreditPurchase, InvoiceStatus};
use ledger::{Invoice, InvoiceCommand};
use projections::billing::{InvoiceFilter, InvoiceView};
use projections::Page;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use store::CommandContext;
use uuid::Uuid;

use crate::access;
use crate::caller::Caller;
use crate::error::AppError;
use crate::input::{path_id, Input, Query};
use crate::reads::page_request;
use crate::{now, App};

/// Longest reason (void, uncollectible, rejection, refund) accepted, in
/// bytes.
pub const REASON_BYTES_MAX: usize = 1_024;

/// One line of an invoice.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvoiceLineBody {
    pub description: String,
    pub quantity: i64,
    /// A decimal string.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub unit_price: Decimal,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub amount: Decimal,
}

/// An invoice: the read model's row and the issued document.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvoiceBody {
    pub id: String,
    /// `INV-YYYY-NNNNNN`, gapless per year.
    pub number: String,
    pub account_id: String,
    pub subscription_id: Option<Uuid>,
    /// `draft|pending|paid|void|uncollectible`
    pub status: String,
    pub currency: String,
    pub lines: Vec<InvoiceLineBody>,
    /// Decimal strings.
    pub subtotal: String,
    /// Percent, as a decimal string.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub tax_rate: Decimal,
    pub tax: String,
    pub total: String,
    pub buyer_name: String,
    pub billing_email: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<crate::schema::BillingAddress>))]
    pub billing_address: Option<BillingAddress>,
    pub tax_id: Option<String>,
    /// What a credit purchase buys (`package_slug`, `credits`).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub credit_purchase: Option<CreditPurchase>,
    pub notes: Option<String>,
    pub invoice_date: String,
    pub due_date: String,
    pub paid_at: Option<String>,
    pub payment_id: Option<String>,
    pub payment_method: Option<String>,
    pub updated_at: String,
}

impl From<&InvoiceView> for InvoiceBody {
    fn from(v: &InvoiceView) -> Self {
        let d = &v.document;
        Self {
            id: v.id.clone(),
            number: v.number.clone(),
            account_id: v.account_id.clone(),
            subscription_id: d.subscription_id,
            status: v.status.clone(),
            currency: v.currency.clone(),
            lines: d
                .lines
                .iter()
                .map(|l| InvoiceLineBody {
                    description: l.description.clone(),
                    quantity: l.quantity,
                    unit_price: l.unit_price,
                    amount: l.amount,
                })
                .collect(),
            subtotal: v.subtotal.clone(),
            tax_rate: d.tax_rate,
            tax: v.tax.clone(),
            total: v.total.clone(),
            buyer_name: d.buyer_name.clone(),
            billing_email: d.billing_email.clone(),
            billing_address: d.billing_address.clone(),
            tax_id: d.tax_id.clone(),
            credit_purchase: d.purchase.clone(),
            notes: d.notes.clone(),
            invoice_date: v.issued_at.clone(),
            due_date: v.due_at.clone(),
            paid_at: v.paid_at.clone(),
            payment_id: v.payment_id.clone(),
            payment_method: v.payment_method.clone(),
            updated_at: v.updated_at.clone(),
        }
    }
}

/// A page of invoices.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvoicePage {
    pub items: Vec<InvoiceBody>,
    /// Pass as `cursor` for the next page; `null` on the last.
    pub next_cursor: Option<String>,
}

impl From<Page<InvoiceView>> for InvoicePage {
    fn from(page: Page<InvoiceView>) -> Self {
        Self {
            items: page.items.iter().map(InvoiceBody::from).collect(),
            next_cursor: page.next_cursor,
        }
    }
}

/// RFC 3339 → the read models' text form, so text order is time order.
pub(crate) fn time_param(field: &str, raw: Option<String>) -> Result<Option<String>, AppError> {
    raw.map(|r| crate::input::time(field, &r).map(projections::time_text))
        .transpose()
}

/// `?status=`: one of `all` (spelled by `name`), else 422.
pub(crate) fn status_param<T>(
    raw: Option<String>,
    all: &[T],
    name: impl Fn(&T) -> &'static str,
) -> Result<Option<String>, AppError> {
    match raw {
        Some(s) if !all.iter().any(|v| name(v) == s) => Err(AppError::invalid_field(
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
pub fn invoice_status(raw: Option<String>) -> Result<Option<String>, AppError> {
    let all = [
        InvoiceStatus::Draft,
        InvoiceStatus::Pending,
        InvoiceStatus::Paid,
        InvoiceStatus::Void,
        InvoiceStatus::Uncollectible,
    ];
    status_param(raw, &all, |s| s.as_str())
}

/// `?status=&limit=&cursor=` of the account's invoices.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct OwnInvoicesQuery {
    /// `draft|pending|paid|void|uncollectible`
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::schema::InvoiceStatus>))]
    pub status: Option<String>,
    /// Invoice date at or after (RFC 3339).
    #[cfg_attr(feature = "openapi", param(value_type = Option<chrono::DateTime<chrono::Utc>>))]
    pub from: Option<String>,
    /// Invoice date before (RFC 3339).
    #[cfg_attr(feature = "openapi", param(value_type = Option<chrono::DateTime<chrono::Utc>>))]
    pub to: Option<String>,
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500, default = 50))]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

/// The caller's account's invoices, newest first.
pub async fn own_invoices(
    app: &App,
    caller: &Caller,
    min_position: Option<i64>,
    query: Query<OwnInvoicesQuery>,
) -> Result<InvoicePage, AppError> {
    caller.require(access::READ_INVOICES)?;
    let account = caller.own_account()?;
    app.wait_for(min_position).await?;
    let q = query.parse()?;
    let page = app
        .read_models
        .invoices(
            &InvoiceFilter {
                account_id: Some(account.to_string()),
                status: invoice_status(q.status)?,
                from: time_param("from", q.from)?,
                to: time_param("to", q.to)?,
            },
            &page_request(q.limit, q.cursor)?,
        )
        .await?;
    Ok(page.into())
}

/// The invoice, if it is the caller's (another tenant's is 404).
async fn own_invoice_view(app: &App, caller: &Caller, raw: &str) -> Result<InvoiceView, AppError> {
    caller.require(access::READ_INVOICES)?;
    let account = caller.own_account()?;
    let id = path_id(raw, "invoice")?;
    app.read_models
        .invoice(&id.to_string())
        .await?
        .filter(|i| i.account_id == account.to_string())
        .ok_or_else(|| AppError::NotFound("invoice not found".into()))
}

/// One of the caller's invoices.
pub async fn own_invoice(
    app: &App,
    caller: &Caller,
    min_position: Option<i64>,
    invoice: &str,
) -> Result<InvoiceBody, AppError> {
    caller.require(access::READ_INVOICES)?;
    app.wait_for(min_position).await?;
    Ok(InvoiceBody::from(
        &own_invoice_view(app, caller, invoice).await?,
    ))
}

/// An invoice rendered as a PDF document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoicePdf {
    /// The invoice's number, which names the file.
    pub number: String,
    pub bytes: Vec<u8>,
}

impl InvoicePdf {
    pub fn file_name(&self) -> String {
        format!("{}.pdf", self.number)
    }
}

/// One of the caller's invoices as a one-page PDF.
pub async fn own_invoice_pdf(
    app: &App,
    caller: &Caller,
    min_position: Option<i64>,
    invoice: &str,
) -> Result<InvoicePdf, AppError> {
    caller.require(access::READ_INVOICES)?;
    app.wait_for(min_position).await?;
    let view = own_invoice_view(app, caller, invoice).await?;
    Ok(InvoicePdf {
        bytes: super::pdf::render(&view),
        number: view.number,
    })
}

/// `?status=&account_id=&from=&to=&limit=&cursor=` of the staff's list.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct InvoiceListQuery {
    /// `draft|pending|paid|void|uncollectible`
    #[cfg_attr(feature = "openapi", param(value_type = Option<crate::schema::InvoiceStatus>))]
    pub status: Option<String>,
    /// An account's id (a UUID).
    #[cfg_attr(feature = "openapi", param(value_type = Option<uuid::Uuid>))]
    pub account_id: Option<String>,
    /// Invoice date at or after (RFC 3339).
    #[cfg_attr(feature = "openapi", param(value_type = Option<chrono::DateTime<chrono::Utc>>))]
    pub from: Option<String>,
    /// Invoice date before (RFC 3339).
    #[cfg_attr(feature = "openapi", param(value_type = Option<chrono::DateTime<chrono::Utc>>))]
    pub to: Option<String>,
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 500, default = 50))]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

/// Invoices of all tenants, newest first, by status, account and date.
pub async fn invoices(
    app: &App,
    caller: &Caller,
    min_position: Option<i64>,
    query: Query<InvoiceListQuery>,
) -> Result<InvoicePage, AppError> {
    caller.require(access::MANAGE_INVOICES)?;
    app.wait_for(min_position).await?;
    let q = query.parse()?;
    let account_id = q
        .account_id
        .map(|a| {
            events::AccountId::parse(&a)
                .map(|a| a.to_string())
                .map_err(|_| AppError::invalid_field("account_id", "account_id must be a UUID"))
        })
        .transpose()?;
    let page = app
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
        .await?;
    Ok(page.into())
}

/// `{reason?}` of a void or mark-uncollectible.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub reason: Option<String>,
}

/// A reason of at most [`REASON_BYTES_MAX`] bytes, else 422.
pub(crate) fn reason(r: Option<String>) -> Result<Option<String>, AppError> {
    match r {
        Some(r) if r.len() > REASON_BYTES_MAX => Err(AppError::invalid_field(
            "reason",
            format!("reason must be at most {REASON_BYTES_MAX} bytes"),
        )),
        r => Ok(r),
    }
}

/// An invoice's new status after a staff change.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InvoiceChange {
    pub id: Uuid,
    pub number: String,
    /// `void` or `uncollectible`.
    pub status: Option<&'static str>,
    pub position: i64,
}

async fn change_invoice(
    app: &App,
    caller: &Caller,
    raw: &str,
    command: InvoiceCommand,
) -> Result<InvoiceChange, AppError> {
    let id = path_id(raw, "invoice")?;
    let done = app
        .execute::<Invoice>(
            &id.to_string(),
            command,
            &CommandContext::new(caller.actor()),
            None,
            &[],
        )
        .await?;
    let invoice = done.state.as_ref().ok_or(AppError::Internal)?;
    let issued = invoice.issued().ok_or(AppError::Internal)?;
    Ok(InvoiceChange {
        id,
        number: issued.number.clone(),
        status: invoice.status().map(|s| s.as_str()),
        position: app.position_of(&done).await?,
    })
}

/// One line of an invoice staff write.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewInvoiceLine {
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 1024))]
    pub description: String,
    /// Default 1.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub quantity: Option<i64>,
    /// A decimal string, not negative.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub unit_price: Decimal,
}

/// `POST /admin/invoices`: an invoice with arbitrary lines, a draft until
/// it is finalized (or finalized at once with `finalize: true`).
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewInvoiceRequest {
    /// The account billed (a UUID).
    pub account_id: String,
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 100))]
    pub lines: Vec<NewInvoiceLine>,
    /// ISO 4217; default the account's billing currency.
    pub currency: Option<String>,
    /// Days from finalizing to the due date (0 to 365; default 14).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 365))]
    pub due_in_days: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub notes: Option<String>,
    /// Issue it pending (payable) at once instead of as a draft.
    pub finalize: Option<bool>,
}

/// Most days an invoice staff write may be due in.
pub const INVOICE_DUE_DAYS_MAX: i64 = 365;

fn due_days(raw: Option<i64>) -> Result<i64, AppError> {
    let days = raw.unwrap_or(super::INVOICE_DUE_DAYS);
    if (0..=INVOICE_DUE_DAYS_MAX).contains(&days) {
        Ok(days)
    } else {
        Err(AppError::invalid_field(
            "due_in_days",
            format!("due_in_days must be 0 to {INVOICE_DUE_DAYS_MAX}"),
        ))
    }
}

/// The invoice a write reached, from the read models (waiting for them).
async fn invoice_body_at(
    app: &App,
    id: Uuid,
    position: i64,
) -> Result<serde_json::Value, AppError> {
    app.wait_for(Some(position)).await?;
    let view = app
        .read_models
        .invoice(&id.to_string())
        .await?
        .ok_or(AppError::Internal)?;
    let mut body =
        serde_json::to_value(InvoiceBody::from(&view)).map_err(|_| AppError::Internal)?;
    body["position"] = serde_json::json!(position);
    Ok(body)
}

/// Writes an invoice with arbitrary lines for an account (staff): a draft
/// (numbered, not payable, voidable) or, with `finalize`, pending at once.
/// The account's billing details and tax rate are snapshotted as for every
/// invoice. An Idempotency-Key makes a retry answer the first invoice.
pub async fn create(
    app: &App,
    caller: &Caller,
    key: crate::input::Key,
    input: Input<NewInvoiceRequest>,
) -> Result<crate::Written<serde_json::Value>, AppError> {
    caller.require(access::MANAGE_INVOICES)?;
    let body = input.parse()?;
    let req = body.value;
    let account = crate::input::account_id(&req.account_id).map_err(|_| {
        AppError::invalid_field("account_id", "account_id must be an account's UUID")
    })?;
    if req.lines.is_empty() || req.lines.len() > ledger::invoice::INVOICE_LINES_MAX {
        return Err(AppError::invalid_field(
            "lines",
            format!(
                "an invoice has 1 to {} lines",
                ledger::invoice::INVOICE_LINES_MAX
            ),
        ));
    }
    let mut lines = Vec::with_capacity(req.lines.len());
    for (i, l) in req.lines.into_iter().enumerate() {
        let field = format!("lines[{i}]");
        if l.description.trim().is_empty() || l.description.len() > REASON_BYTES_MAX {
            return Err(AppError::invalid_field(
                &format!("{field}.description"),
                format!("a description is 1 to {REASON_BYTES_MAX} bytes"),
            ));
        }
        let unit_price = crate::input::money(&format!("{field}.unit_price"), l.unit_price, false)?;
        lines.push(ledger::invoice::LineInput {
            description: l.description,
            quantity: l.quantity.unwrap_or(1),
            unit_price,
        });
    }
    let currency = req
        .currency
        .as_deref()
        .map(events::Currency::parse)
        .transpose()
        .map_err(|e| AppError::invalid_field("currency", e.reason))?;
    let days = due_days(req.due_in_days)?;
    let notes = crate::credits::text("notes", req.notes)?;
    let holder = super::billing_account(app, account).await?;
    let currency = currency.unwrap_or_else(|| super::account_currency(&holder));
    let at = now();
    let invoice_id = match &key.0 {
        Some(k) => super::derived_id(&["admin-invoice", caller.sub(), k.as_str()]),
        None => Uuid::now_v7(),
    };
    let claim = key
        .0
        .as_ref()
        .map(|k| crate::runner::claim(k, "admin/invoices", &body.canonical));
    let done = super::numbering::issue_invoice(
        app,
        &CommandContext::new(caller.actor()),
        ledger::invoice::IssueInvoice {
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
            lines,
            tax_rate: holder.tax_rate,
            currency,
            draft: !req.finalize.unwrap_or(false),
            purchase: None,
            notes,
            now: at,
            due_at: at + chrono::Duration::days(days),
        },
        claim.as_ref(),
    )
    .await?;
    let replayed = done.replayed.is_some();
    let id = match done.outcome() {
        Some(events::InvoiceEvent::InvoiceIssued(e)) => e.invoice_id,
        _ => invoice_id,
    };
    let position = app.position_of(&done).await?;
    Ok(crate::Written {
        value: invoice_body_at(app, id, position).await?,
        replayed,
        created: true,
    })
}

/// `POST /admin/invoices/{id}/finalize`: `{due_in_days?}`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct FinalizeRequest {
    /// Days from now to the due date (0 to 365; default 14).
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 365))]
    pub due_in_days: Option<i64>,
}

/// A draft becomes pending: the customer sees it payable (staff).
/// Finalizing a pending invoice again changes nothing.
pub async fn finalize(
    app: &App,
    caller: &Caller,
    invoice: &str,
    input: Input<FinalizeRequest>,
) -> Result<serde_json::Value, AppError> {
    caller.require(access::MANAGE_INVOICES)?;
    let req = input.parse()?.value;
    let days = due_days(req.due_in_days)?;
    let id = path_id(invoice, "invoice")?;
    let at = now();
    let done = app
        .execute::<Invoice>(
            &id.to_string(),
            InvoiceCommand::Finalize {
                actor: caller.sub().to_owned(),
                due_at: at + chrono::Duration::days(days),
                now: at,
            },
            &CommandContext::new(caller.actor()),
            None,
            &[],
        )
        .await?;
    let position = app.position_of(&done).await?;
    invoice_body_at(app, id, position).await
}

/// Voids a draft or pending invoice.
pub async fn void(
    app: &App,
    caller: &Caller,
    invoice: &str,
    input: Input<ReasonRequest>,
) -> Result<InvoiceChange, AppError> {
    caller.require(access::MANAGE_INVOICES)?;
    let req = input.parse()?.value;
    let command = InvoiceCommand::Void {
        reason: reason(req.reason)?,
        actor: caller.sub().to_owned(),
        now: now(),
    };
    change_invoice(app, caller, invoice, command).await
}

/// Marks a pending invoice uncollectible.
pub async fn mark_uncollectible(
    app: &App,
    caller: &Caller,
    invoice: &str,
    input: Input<ReasonRequest>,
) -> Result<InvoiceChange, AppError> {
    caller.require(access::MANAGE_INVOICES)?;
    let req = input.parse()?.value;
    let command = InvoiceCommand::MarkUncollectible {
        reason: reason(req.reason)?,
        actor: caller.sub().to_owned(),
        now: now(),
    };
    change_invoice(app, caller, invoice, command).await
}
