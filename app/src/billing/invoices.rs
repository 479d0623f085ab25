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
                from: None,
                to: None,
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
