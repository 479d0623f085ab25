//! The billing read models' rows (`rm_invoices`, `rm_payments`), made by
//! pure functions that the fold (`bulk.rs`) applies: the live projector's
//! batches and rebuilds use that one fold, so a rebuild gives the very rows
//! the live projector wrote.

use std::collections::BTreeMap;

use events::{
    InvoiceEvent, PaymentEvent, PaymentStatus, INVOICE_AGGREGATE_TYPE, PAYMENT_AGGREGATE_TYPE,
};
use store::sql::Arg;

use crate::{time_text, ProjectionError};

/// An event of a billing stream.
#[derive(Debug, Clone)]
pub enum BillingEvent {
    Invoice(InvoiceEvent),
    Payment(PaymentEvent),
}

impl BillingEvent {
    /// The event, when `aggregate_type` is a billing stream's.
    pub fn parse(aggregate_type: &str, payload: &str) -> Option<Result<Self, serde_json::Error>> {
        match aggregate_type {
            INVOICE_AGGREGATE_TYPE => Some(serde_json::from_str(payload).map(Self::Invoice)),
            PAYMENT_AGGREGATE_TYPE => Some(serde_json::from_str(payload).map(Self::Payment)),
            _ => None,
        }
    }
}

pub const INVOICE_COLUMNS: [&str; 16] = [
    "invoice_id",
    "number",
    "account_id",
    "status",
    "currency",
    "subtotal",
    "tax",
    "total",
    "issued_at",
    "due_at",
    "paid_at",
    "payment_id",
    "method",
    "document",
    "updated_at",
    "last_position",
];

pub const PAYMENT_COLUMNS: [&str; 19] = [
    "payment_id",
    "invoice_id",
    "account_id",
    "amount",
    "currency",
    "method",
    "status",
    "reference",
    "submitted_by",
    "decided_by",
    "decided_at",
    "failure_reason",
    "submitted_at",
    "updated_at",
    "last_position",
    "gateway",
    "gateway_ref",
    "refunded_amount",
    "notes",
];

/// Zero at the scale of `amount` (`0.00` for `29.00`).
fn zero_like(amount: rust_decimal::Decimal) -> String {
    let mut zero = rust_decimal::Decimal::ZERO;
    zero.rescale(amount.scale());
    zero.to_string()
}

/// What one event does to its aggregate's row (billing and subscription
/// tables keep one row per aggregate).
#[derive(Debug, Clone)]
pub enum RowChange {
    /// A new row, in column order.
    Insert(Vec<Arg>),
    /// Named columns of the existing row take new values.
    Update(Vec<(&'static str, Arg)>),
}

/// A read-model table with one row per aggregate, changed through
/// [`RowChange`] by the fold ([`RowChange::fold`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowTable {
    pub name: &'static str,
    pub columns: &'static [&'static str],
    /// The column holding the aggregate id.
    pub key: &'static str,
}

pub const INVOICES: RowTable = RowTable {
    name: "rm_invoices",
    columns: &INVOICE_COLUMNS,
    key: "invoice_id",
};

pub const PAYMENTS: RowTable = RowTable {
    name: "rm_payments",
    columns: &PAYMENT_COLUMNS,
    key: "payment_id",
};

/// Rows kept in memory by (table name, aggregate id).
pub(crate) type FoldedRows = BTreeMap<(&'static str, String), Vec<Arg>>;

impl RowChange {
    /// The in-memory fold's path (`bulk.rs`): the same row, kept by
    /// `(table, aggregate id)`.
    pub(crate) fn fold(self, rows: &mut FoldedRows, table: RowTable, id: &str) {
        let key = (table.name, id.to_owned());
        match self {
            RowChange::Insert(row) => {
                rows.insert(key, row);
            }
            RowChange::Update(sets) => {
                if let Some(row) = rows.get_mut(&key) {
                    for (column, value) in sets {
                        if let Some(i) = table.columns.iter().position(|c| *c == column) {
                            row[i] = value;
                        }
                    }
                }
            }
        }
    }
}

/// Which table and row an event changes, and how.
pub fn change(event: &BillingEvent, position: i64) -> (RowTable, RowChange) {
    match event {
        BillingEvent::Invoice(e) => (INVOICES, invoice_change(e, position)),
        BillingEvent::Payment(e) => (PAYMENTS, payment_change(e, position)),
    }
}

fn invoice_change(event: &InvoiceEvent, position: i64) -> RowChange {
    match event {
        InvoiceEvent::InvoiceIssued(e) => RowChange::Insert(vec![
            e.invoice_id.to_string().into(),
            e.number.clone().into(),
            e.account_id.to_string().into(),
            e.status.as_str().into(),
            e.currency.as_str().into(),
            e.subtotal.to_string().into(),
            e.tax.to_string().into(),
            e.total.to_string().into(),
            time_text(e.issued_at).into(),
            time_text(e.due_at).into(),
            Option::<String>::None.into(),
            Option::<String>::None.into(),
            Option::<String>::None.into(),
            serde_json::to_string(e).unwrap_or_default().into(),
            time_text(e.issued_at).into(),
            position.into(),
        ]),
        InvoiceEvent::InvoicePaid(e) => RowChange::Update(vec![
            ("status", "paid".into()),
            ("paid_at", Some(time_text(e.paid_at)).into()),
            ("payment_id", e.payment_id.map(|p| p.to_string()).into()),
            ("method", Some(e.method.as_str().to_owned()).into()),
            ("updated_at", time_text(e.paid_at).into()),
            ("last_position", position.into()),
        ]),
        InvoiceEvent::InvoiceVoided(e) => RowChange::Update(vec![
            ("status", "void".into()),
            ("updated_at", time_text(e.voided_at).into()),
            ("last_position", position.into()),
        ]),
        InvoiceEvent::InvoiceFinalized(e) => RowChange::Update(vec![
            ("status", "pending".into()),
            ("due_at", time_text(e.due_at).into()),
            ("updated_at", time_text(e.finalized_at).into()),
            ("last_position", position.into()),
        ]),
        InvoiceEvent::InvoiceMarkedUncollectible(e) => RowChange::Update(vec![
            ("status", "uncollectible".into()),
            ("updated_at", time_text(e.marked_at).into()),
            ("last_position", position.into()),
        ]),
    }
}

fn payment_change(event: &PaymentEvent, position: i64) -> RowChange {
    match event {
        PaymentEvent::PaymentSubmitted(e) => RowChange::Insert(vec![
            e.payment_id.to_string().into(),
            e.invoice_id.to_string().into(),
            e.account_id.to_string().into(),
            e.amount.amount.to_string().into(),
            e.amount.currency.as_str().into(),
            e.method.as_str().into(),
            PaymentStatus::Pending.as_str().into(),
            e.reference.clone().into(),
            e.submitted_by.clone().into(),
            Option::<String>::None.into(),
            Option::<String>::None.into(),
            Option::<String>::None.into(),
            time_text(e.submitted_at).into(),
            time_text(e.submitted_at).into(),
            position.into(),
            Option::<String>::None.into(),
            Option::<String>::None.into(),
            zero_like(e.amount.amount).into(),
            Option::<String>::None.into(),
        ]),
        PaymentEvent::PaymentInitiated(e) => RowChange::Insert(vec![
            e.payment_id.to_string().into(),
            e.invoice_id.to_string().into(),
            e.account_id.to_string().into(),
            e.amount.amount.to_string().into(),
            e.amount.currency.as_str().into(),
            e.method.as_str().into(),
            PaymentStatus::Processing.as_str().into(),
            Option::<String>::None.into(),
            e.submitted_by.clone().into(),
            Option::<String>::None.into(),
            Option::<String>::None.into(),
            Option::<String>::None.into(),
            time_text(e.initiated_at).into(),
            time_text(e.initiated_at).into(),
            position.into(),
            Some(e.gateway.clone()).into(),
            Some(e.gateway_ref.clone()).into(),
            zero_like(e.amount.amount).into(),
            Option::<String>::None.into(),
        ]),
        PaymentEvent::PaymentSucceeded(e) => RowChange::Update(vec![
            ("status", PaymentStatus::Succeeded.as_str().into()),
            ("decided_at", Some(time_text(e.succeeded_at)).into()),
            ("failure_reason", Option::<String>::None.into()),
            ("updated_at", time_text(e.succeeded_at).into()),
            ("last_position", position.into()),
        ]),
        PaymentEvent::PaymentFailed(e) => RowChange::Update(vec![
            ("status", PaymentStatus::Failed.as_str().into()),
            ("decided_at", Some(time_text(e.failed_at)).into()),
            ("failure_reason", Some(e.reason.clone()).into()),
            ("updated_at", time_text(e.failed_at).into()),
            ("last_position", position.into()),
        ]),
        PaymentEvent::PaymentRefunded(e) => {
            let mut columns = vec![
                ("refunded_amount", e.refunded_total.to_string().into()),
                ("updated_at", time_text(e.refunded_at).into()),
                ("last_position", position.into()),
            ];
            if e.fully_refunded {
                columns.push(("status", PaymentStatus::Refunded.as_str().into()));
            }
            RowChange::Update(columns)
        }
        // A refund in progress changes nothing a reader sees until it is
        // recorded; only the row's position moves.
        PaymentEvent::RefundReserved(e) => RowChange::Update(vec![
            ("updated_at", time_text(e.reserved_at).into()),
            ("last_position", position.into()),
        ]),
        PaymentEvent::RefundReleased(e) => RowChange::Update(vec![
            ("updated_at", time_text(e.released_at).into()),
            ("last_position", position.into()),
        ]),
        PaymentEvent::PaymentApproved(e) => RowChange::Update(vec![
            ("status", PaymentStatus::Succeeded.as_str().into()),
            ("notes", e.notes.clone().into()),
            ("decided_by", Some(e.approved_by.clone()).into()),
            ("decided_at", Some(time_text(e.approved_at)).into()),
            ("updated_at", time_text(e.approved_at).into()),
            ("last_position", position.into()),
        ]),
        PaymentEvent::PaymentCancelled(e) => RowChange::Update(vec![
            ("status", PaymentStatus::Cancelled.as_str().into()),
            ("decided_by", Some(e.cancelled_by.clone()).into()),
            ("decided_at", Some(time_text(e.cancelled_at)).into()),
            ("failure_reason", e.reason.clone().into()),
            ("updated_at", time_text(e.cancelled_at).into()),
            ("last_position", position.into()),
        ]),
        PaymentEvent::PaymentRejected(e) => RowChange::Update(vec![
            ("status", PaymentStatus::Failed.as_str().into()),
            ("decided_by", Some(e.rejected_by.clone()).into()),
            ("decided_at", Some(time_text(e.rejected_at)).into()),
            ("failure_reason", Some(e.reason.clone()).into()),
            ("updated_at", time_text(e.rejected_at).into()),
            ("last_position", position.into()),
        ]),
    }
}

/// The key column of a billing table.
// ---------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------
use serde::Serialize;
use store::sql::SqlRow;

use crate::{Page, PageRequest, ReadModels};

/// An invoice as the API shows it: the row's state and the issued document.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InvoiceView {
    pub id: String,
    pub number: String,
    pub account_id: String,
    pub status: String,
    pub currency: String,
    pub subtotal: String,
    pub tax: String,
    pub total: String,
    pub issued_at: String,
    pub due_at: String,
    pub paid_at: Option<String>,
    pub payment_id: Option<String>,
    pub payment_method: Option<String>,
    pub updated_at: String,
    /// The `InvoiceIssued` event: lines, tax rate, address snapshot, notes.
    #[serde(skip)]
    pub document: events::InvoiceIssued,
}

impl InvoiceView {
    fn from_row(r: &SqlRow) -> Result<Self, ProjectionError> {
        let document =
            serde_json::from_str(&r.text("document")?).map_err(|e| ProjectionError::BadRow {
                column: "document",
                reason: e.to_string(),
            })?;
        Ok(Self {
            id: r.text("invoice_id")?,
            number: r.text("number")?,
            account_id: r.text("account_id")?,
            status: r.text("status")?,
            currency: r.text("currency")?,
            subtotal: r.text("subtotal")?,
            tax: r.text("tax")?,
            total: r.text("total")?,
            issued_at: r.text("issued_at")?,
            due_at: r.text("due_at")?,
            paid_at: r.opt_text("paid_at")?,
            payment_id: r.opt_text("payment_id")?,
            payment_method: r.opt_text("method")?,
            updated_at: r.text("updated_at")?,
            document,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PaymentView {
    pub id: String,
    pub invoice_id: String,
    pub account_id: String,
    pub amount: String,
    pub currency: String,
    pub method: String,
    pub status: String,
    pub reference: Option<String>,
    pub submitted_by: String,
    pub approved_by: Option<String>,
    pub decided_at: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    /// The gateway (`stripe`) and its payment id, for gateway payments.
    pub gateway: Option<String>,
    pub gateway_ref: Option<String>,
    /// The sum refunded so far.
    pub refunded_amount: String,
    /// The approver's notes.
    pub notes: Option<String>,
}

impl PaymentView {
    fn from_row(r: &SqlRow) -> Result<Self, ProjectionError> {
        let status = r.text("status")?;
        let decided_by = r.opt_text("decided_by")?;
        Ok(Self {
            id: r.text("payment_id")?,
            invoice_id: r.text("invoice_id")?,
            account_id: r.text("account_id")?,
            amount: r.text("amount")?,
            currency: r.text("currency")?,
            method: r.text("method")?,
            // Who decided: the approver of a succeeded payment; a rejected
            // one has its decider in `decided_by` only.
            approved_by: if status == "succeeded" {
                decided_by
            } else {
                None
            },
            status,
            reference: r.opt_text("reference")?,
            submitted_by: r.text("submitted_by")?,
            decided_at: r.opt_text("decided_at")?,
            failure_reason: r.opt_text("failure_reason")?,
            created_at: r.text("submitted_at")?,
            updated_at: r.text("updated_at")?,
            gateway: r.opt_text("gateway")?,
            gateway_ref: r.opt_text("gateway_ref")?,
            refunded_amount: r.text("refunded_amount")?,
            notes: r.opt_text("notes")?,
        })
    }
}

/// Filters of the invoice lists; `from`/`to` bound the invoice date
/// (RFC 3339 text, `from` inclusive, `to` exclusive).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvoiceFilter {
    pub account_id: Option<String>,
    pub status: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PaymentFilter {
    pub account_id: Option<String>,
    pub invoice_id: Option<String>,
    pub status: Option<String>,
}

const INVOICES_CURSOR: &str = "invoices";
const PAYMENTS_CURSOR: &str = "payments";

/// The cursor's (time, id) of the last item of the previous page.
fn after_key(list: &str, req: &PageRequest) -> Result<Option<(String, String)>, ProjectionError> {
    req.after
        .as_deref()
        .map(|c| {
            let key = crate::queries::decode_cursor(list, c)?;
            key.split_once('|')
                .map(|(t, id)| (t.to_owned(), id.to_owned()))
                .ok_or(ProjectionError::BadCursor)
        })
        .transpose()
}

/// Keyset condition for "after (time, id)" in descending order.
fn push_after(
    sql: &mut String,
    args: &mut Vec<Arg>,
    time: &str,
    id: &str,
    after: (String, String),
) {
    args.push(after.0.into());
    let t = args.len();
    args.push(after.1.into());
    let i = args.len();
    sql.push_str(&format!(
        " AND ({time} < ${t} OR ({time} = ${t} AND {id} < ${i}))"
    ));
}

impl ReadModels {
    pub async fn invoice(&self, invoice_id: &str) -> Result<Option<InvoiceView>, ProjectionError> {
        let row = self
            .store
            .fetch_optional(
                "SELECT * FROM rm_invoices WHERE invoice_id = $1",
                &[invoice_id.into()],
            )
            .await?;
        row.as_ref().map(InvoiceView::from_row).transpose()
    }

    /// Newest first: by invoice date, then id (ids of purchases are derived
    /// from their idempotency key, so they are not time-ordered).
    pub async fn invoices(
        &self,
        filter: &InvoiceFilter,
        req: &PageRequest,
    ) -> Result<Page<InvoiceView>, ProjectionError> {
        let mut sql = String::from("SELECT * FROM rm_invoices WHERE 1 = 1");
        let mut args: Vec<Arg> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, v: String| {
            args.push(v.into());
            sql.push_str(&format!(" AND {clause} ${}", args.len()));
        };
        if let Some(a) = &filter.account_id {
            push(&mut sql, "account_id =", a.clone());
        }
        if let Some(s) = &filter.status {
            push(&mut sql, "status =", s.clone());
        }
        if let Some(f) = &filter.from {
            push(&mut sql, "issued_at >=", f.clone());
        }
        if let Some(t) = &filter.to {
            push(&mut sql, "issued_at <", t.clone());
        }
        if let Some(after) = after_key(INVOICES_CURSOR, req)? {
            push_after(&mut sql, &mut args, "issued_at", "invoice_id", after);
        }
        args.push((i64::from(req.limit.clamp(1, crate::PAGE_LIMIT_MAX)) + 1).into());
        sql.push_str(&format!(
            " ORDER BY issued_at DESC, invoice_id DESC LIMIT ${}",
            args.len()
        ));
        let rows = self.store.fetch_all(&sql, &args).await?;
        let items = rows
            .iter()
            .map(InvoiceView::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::queries::page(items, req, |i| {
            crate::queries::encode_cursor(INVOICES_CURSOR, &format!("{}|{}", i.issued_at, i.id))
        }))
    }

    pub async fn payment(&self, payment_id: &str) -> Result<Option<PaymentView>, ProjectionError> {
        let row = self
            .store
            .fetch_optional(
                "SELECT * FROM rm_payments WHERE payment_id = $1",
                &[payment_id.into()],
            )
            .await?;
        row.as_ref().map(PaymentView::from_row).transpose()
    }

    /// The payment a gateway knows as `gateway_ref` (a PaymentIntent id).
    pub async fn payment_by_gateway_ref(
        &self,
        gateway_ref: &str,
    ) -> Result<Option<PaymentView>, ProjectionError> {
        let row = self
            .store
            .fetch_optional(
                "SELECT * FROM rm_payments WHERE gateway_ref = $1 ORDER BY payment_id LIMIT 1",
                &[gateway_ref.into()],
            )
            .await?;
        row.as_ref().map(PaymentView::from_row).transpose()
    }

    /// Newest first: by submission time, then id.
    pub async fn payments(
        &self,
        filter: &PaymentFilter,
        req: &PageRequest,
    ) -> Result<Page<PaymentView>, ProjectionError> {
        let mut sql = String::from("SELECT * FROM rm_payments WHERE 1 = 1");
        let mut args: Vec<Arg> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, v: String| {
            args.push(v.into());
            sql.push_str(&format!(" AND {clause} ${}", args.len()));
        };
        if let Some(a) = &filter.account_id {
            push(&mut sql, "account_id =", a.clone());
        }
        if let Some(i) = &filter.invoice_id {
            push(&mut sql, "invoice_id =", i.clone());
        }
        if let Some(s) = &filter.status {
            push(&mut sql, "status =", s.clone());
        }
        if let Some(after) = after_key(PAYMENTS_CURSOR, req)? {
            push_after(&mut sql, &mut args, "submitted_at", "payment_id", after);
        }
        args.push((i64::from(req.limit.clamp(1, crate::PAGE_LIMIT_MAX)) + 1).into());
        sql.push_str(&format!(
            " ORDER BY submitted_at DESC, payment_id DESC LIMIT ${}",
            args.len()
        ));
        let rows = self.store.fetch_all(&sql, &args).await?;
        let items = rows
            .iter()
            .map(PaymentView::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::queries::page(items, req, |p| {
            crate::queries::encode_cursor(PAYMENTS_CURSOR, &format!("{}|{}", p.created_at, p.id))
        }))
    }
}
