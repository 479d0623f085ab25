//! The read models folded in memory: the one definition of their rows,
//! used by the live projector's batches (`live.rs`, docs/adr/0016), by
//! rebuilds, and as the "fresh fold" that `ledger-replay verify` diffs the
//! live tables against (docs/adr/0008).
//!
//! [`ReadModelFold`] keeps the keyed tables (accounts, balances, daily
//! usage, the expiry schedule, billing rows) in memory and hands out the
//! insert-only rows (transactions, usage, cost history) as they are made.
//! [`BulkRebuild`] writes them with COPY or multi-row INSERTs in one
//! transaction. The projection tests check that a rebuild and the live
//! batches, of any sizes, give the same `dump()`.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use events::{AccountEvent, CatalogEvent, Usage, ACCOUNT_AGGREGATE_TYPE, CATALOG_AGGREGATE_TYPE};
use rust_decimal::Decimal;
use serde_json::Value;
use store::audit::RawEvent;
use store::sql::{Arg, SqlRow, SqlTx};
use store::Store;
use uuid::Uuid;

use crate::billing::{self, BillingEvent};
use crate::{add_i64, add_money, time_text, time_text_into, ProjectionError, PROJECTION_NAME};

/// Most bind parameters in one multi-row statement on SQLite (it allows
/// 32,766). Kept small on purpose: binding costs sqlx one
/// `sqlite3_bind_parameter_name` per parameter, each linear in the
/// statement's parameter count, so a statement of P parameters costs P²:
/// at 30,000 a rebuild spent 92 % of its CPU there (878 events/s, perf).
/// `ledger-bench --scenario projection --events 100000` on SQLite, same
/// session: 200 gave rebuilds of 17,778–21,055 events/s against
/// 14,775–16,226 at 1,000 and 14,678 at 100 (docs/benchmarks.md).
pub const INSERT_PARAMS_MAX: usize = 200;

/// A read-model table that [`ReadModelFold`] fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Accounts,
    Balances,
    Transactions,
    Usage,
    UsageDaily,
    CostHistory,
    Invoices,
    Payments,
    Subscriptions,
    TeamMembers,
    /// The sweeper's queue: rebuilt with the read models, but not diffed
    /// (the sweeper deletes what it has handled).
    ExpirySchedule,
}

impl Table {
    pub const ALL: [Table; 11] = [
        Table::Accounts,
        Table::Balances,
        Table::Transactions,
        Table::Usage,
        Table::UsageDaily,
        Table::CostHistory,
        Table::Invoices,
        Table::Payments,
        Table::Subscriptions,
        Table::TeamMembers,
        Table::ExpirySchedule,
    ];

    /// The SQL table.
    pub fn sql_name(self) -> &'static str {
        match self {
            Self::Accounts => "rm_accounts",
            Self::Balances => "rm_balances",
            Self::Transactions => "rm_transactions",
            Self::Usage => "rm_usage",
            Self::UsageDaily => "rm_usage_daily",
            Self::CostHistory => "rm_cost_history",
            Self::Invoices => "rm_invoices",
            Self::Payments => "rm_payments",
            Self::Subscriptions => crate::subscriptions::TABLE,
            Self::TeamMembers => crate::team::TABLE,
            Self::ExpirySchedule => "expiry_schedule",
        }
    }

    /// The name users give it (`rebuild --projection NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Accounts => "accounts",
            Self::Balances => "balances",
            Self::Transactions => "transactions",
            Self::Usage => "usage",
            Self::UsageDaily => "usage_daily",
            Self::CostHistory => "cost_history",
            Self::Invoices => "invoices",
            Self::Payments => "payments",
            Self::Subscriptions => "subscriptions",
            Self::TeamMembers => "team_members",
            Self::ExpirySchedule => "expiry_schedule",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name() == name || t.sql_name() == name)
    }

    /// Columns in the order rows carry them.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Self::Accounts => &[
                "account_id",
                "name",
                "slug",
                "owner_user_id",
                "plan",
                "status",
                "country",
                "billing_email",
                "billing_address",
                "tax_id",
                "tax_rate",
                "credit_limit",
                "low_balance_threshold",
                "opened_at",
                "updated_at",
                "last_position",
                "currency",
            ],
            Self::Balances => &[
                "account_id",
                "balance",
                "held",
                "credit_limit",
                "period",
                "period_granted",
                "period_used",
                "last_position",
                "updated_at",
            ],
            Self::Transactions => &[
                "position",
                "account_id",
                "sequence",
                "entry_type",
                "reference_id",
                "amount",
                "balance_after",
                "description",
                "occurred_at",
            ],
            Self::Usage => &[
                "position",
                "account_id",
                "deduction_id",
                "hold_id",
                "operation",
                "credits",
                "units",
                "cost_version",
                "cost_usd",
                "model",
                "tokens_input",
                "tokens_output",
                "related_object_type",
                "related_object_id",
                "metadata",
                "recorded_at",
            ],
            Self::UsageDaily => &[
                "account_id",
                "day",
                "operation",
                "model",
                "credits",
                "cost_usd",
                "count",
            ],
            Self::CostHistory => &[
                "version",
                "operation",
                "cost",
                "unit",
                "previous_cost",
                "previous_unit",
                "actor",
                "changed_at",
                "position",
            ],
            Self::Invoices => &billing::INVOICE_COLUMNS,
            Self::Payments => &billing::PAYMENT_COLUMNS,
            Self::Subscriptions => &crate::subscriptions::SUBSCRIPTION_COLUMNS,
            Self::TeamMembers => &crate::team::MEMBER_COLUMNS,
            Self::ExpirySchedule => &["account_id", "item_id", "due_at"],
        }
    }

    /// The columns that identify a row, for diffs and ordering.
    pub fn key(self) -> &'static [&'static str] {
        match self {
            Self::Accounts | Self::Balances => &["account_id"],
            Self::Transactions | Self::Usage => &["position"],
            Self::UsageDaily => &["account_id", "day", "operation", "model"],
            Self::CostHistory => &["version"],
            Self::Invoices => &["invoice_id"],
            Self::Payments => &["payment_id"],
            Self::Subscriptions => &["subscription_id"],
            Self::TeamMembers => &["member_id"],
            Self::ExpirySchedule => &["account_id", "item_id"],
        }
    }

    /// Rows are insert-only and handed out as they are made.
    fn streamed(self) -> bool {
        matches!(self, Self::Transactions | Self::Usage | Self::CostHistory)
    }

    /// Whether the table has an `account_id` column.
    pub fn per_account(self) -> bool {
        self != Self::CostHistory
    }
}

/// One row: values in [`Table::columns`] order.
pub type Row = Vec<Arg>;

/// A row as the JSON object `SqlRow::to_json` renders (for diffs).
pub fn row_json(table: Table, row: &[Arg]) -> Value {
    let mut map = serde_json::Map::new();
    for (c, v) in table.columns().iter().zip(row) {
        let v = match v {
            Arg::I64(v) => Value::from(*v),
            Arg::OptI64(v) => v.map_or(Value::Null, Value::from),
            Arg::Text(v) => Value::from(v.clone()),
            Arg::OptText(v) => v.clone().map_or(Value::Null, Value::from),
        };
        map.insert((*c).to_owned(), v);
    }
    Value::Object(map)
}

/// The key of a rendered row, as text (for ordering and messages).
pub fn row_key(table: Table, row: &Value) -> String {
    table
        .key()
        .iter()
        .map(|k| match &row[*k] {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// A stored event decoded once, for every fold that needs it.
/// Account events, nearly every event of a log, are kept inline (boxing
/// them would allocate once per event); the rare, large catalog ones are
/// boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Decoded {
    Account(AccountEvent),
    /// Boxed: catalog events are rare and large (plans with their prices).
    Catalog(Box<CatalogEvent>),
    /// Another aggregate type: the read models skip it.
    Other,
}

impl Decoded {
    pub fn parse(e: &RawEvent) -> Result<Self, ProjectionError> {
        let bad = |reason: serde_json::Error| ProjectionError::BadEvent {
            position: e.position,
            event_type: e.event_type.clone(),
            reason: reason.to_string(),
        };
        Ok(match e.aggregate_type.as_str() {
            ACCOUNT_AGGREGATE_TYPE => Self::Account(serde_json::from_str(&e.payload).map_err(bad)?),
            CATALOG_AGGREGATE_TYPE => {
                Self::Catalog(Box::new(serde_json::from_str(&e.payload).map_err(bad)?))
            }
            _ => Self::Other,
        })
    }
}

#[derive(Debug, Clone)]
struct AccountRow {
    name: String,
    slug: String,
    owner_user_id: String,
    plan: String,
    status: String,
    country: String,
    billing_email: String,
    billing_address: Option<String>,
    tax_id: Option<String>,
    tax_rate: String,
    credit_limit: i64,
    low_balance_threshold: i64,
    opened_at: String,
    updated_at: String,
    last_position: i64,
    /// Staff's choice of billing currency, if any.
    currency: Option<String>,
}

#[derive(Debug, Clone)]
struct BalanceRow {
    balance: i64,
    held: i64,
    credit_limit: i64,
    period: String,
    period_granted: i64,
    period_used: i64,
    last_position: i64,
    updated_at: String,
}

#[derive(Debug, Clone, Default)]
struct DailyRow {
    credits: i64,
    cost_usd: Decimal,
    count: i64,
}

type DailyKey = (String, String, String, String);

/// `rm_usage_daily` rows by account, day, operation and model: nested so
/// that a usage record finds its row by borrowed strings, allocating only
/// for a key it has not seen. Iterates in the order of the tuple key.
#[derive(Debug, Default)]
struct DailyMap(BTreeMap<String, ByDay>);

/// One account's rows: by day, operation and model.
type ByDay = BTreeMap<String, BTreeMap<String, BTreeMap<String, DailyRow>>>;

/// Calls `f` with `m[k]`, inserting a default value first if there is none;
/// the key is copied only then.
fn with_entry<V: Default, R>(
    m: &mut BTreeMap<String, V>,
    k: &str,
    f: impl FnOnce(&mut V) -> R,
) -> R {
    if let Some(v) = m.get_mut(k) {
        return f(v);
    }
    f(m.entry(k.to_owned()).or_default())
}

impl DailyMap {
    fn update<R>(
        &mut self,
        (account, day, operation, model): (&str, &str, &str, &str),
        f: impl FnOnce(&mut DailyRow) -> R,
    ) -> R {
        with_entry(&mut self.0, account, |m| {
            with_entry(m, day, |m| {
                with_entry(m, operation, |m| with_entry(m, model, f))
            })
        })
    }

    fn insert(&mut self, (account, day, operation, model): DailyKey, row: DailyRow) {
        self.0
            .entry(account)
            .or_default()
            .entry(day)
            .or_default()
            .entry(operation)
            .or_default()
            .insert(model, row);
    }

    fn iter(&self) -> impl Iterator<Item = ((&str, &str, &str, &str), &DailyRow)> {
        self.0.iter().flat_map(|(a, m)| {
            m.iter().flat_map(move |(d, m)| {
                m.iter().flat_map(move |(o, m)| {
                    m.iter().map(move |(model, row)| {
                        ((a.as_str(), d.as_str(), o.as_str(), model.as_str()), row)
                    })
                })
            })
        })
    }
}

/// The insert-only rows of one table, as the fold makes them: kept as rows
/// (SQLite's INSERTs, `verify`'s diff), or written straight into
/// PostgreSQL's COPY text, which spares an allocation per cell. The same
/// row functions write both, so the two cannot differ.
#[derive(Debug)]
pub enum Streamed {
    Rows(Vec<Row>),
    Copy(Vec<u8>),
}

impl Default for Streamed {
    fn default() -> Self {
        Self::Rows(Vec::new())
    }
}

impl Streamed {
    /// Whether no row was written.
    pub fn is_empty(&self) -> bool {
        match self {
            Self::Rows(rows) => rows.is_empty(),
            Self::Copy(text) => text.is_empty(),
        }
    }

    /// Takes the rows written so far, leaving an empty one of the same kind.
    fn take(&mut self) -> Self {
        let empty = match self {
            Self::Rows(_) => Self::Rows(Vec::new()),
            Self::Copy(text) => Self::Copy(Vec::with_capacity(text.capacity())),
        };
        std::mem::replace(self, empty)
    }

    /// Starts a row; its cells follow in [`Table::columns`] order.
    fn row(&mut self, columns: usize) -> RowWriter<'_> {
        let row = match self {
            Self::Rows(_) => Vec::with_capacity(columns),
            Self::Copy(_) => Vec::new(),
        };
        RowWriter {
            out: self,
            row,
            cells: 0,
        }
    }
}

/// One row being written into a [`Streamed`].
struct RowWriter<'a> {
    out: &'a mut Streamed,
    /// The cells so far ([`Streamed::Rows`] only).
    row: Row,
    cells: usize,
}

impl RowWriter<'_> {
    /// The COPY buffer, after the separator before this cell.
    fn copy_cell(&mut self) -> Option<&mut Vec<u8>> {
        self.cells += 1;
        match self.out {
            Streamed::Copy(buf) => {
                if self.cells > 1 {
                    buf.push(b'\t');
                }
                Some(buf)
            }
            Streamed::Rows(_) => None,
        }
    }

    fn int(&mut self, v: i64) -> &mut Self {
        match self.copy_cell() {
            Some(buf) => push_i64(buf, v),
            None => self.row.push(Arg::I64(v)),
        }
        self
    }

    fn opt_int(&mut self, v: Option<i64>) -> &mut Self {
        match (self.copy_cell(), v) {
            (Some(buf), Some(v)) => push_i64(buf, v),
            (Some(buf), None) => buf.extend_from_slice(b"\\N"),
            (None, v) => self.row.push(Arg::OptI64(v)),
        }
        self
    }

    fn opt_u64(&mut self, v: Option<u64>) -> &mut Self {
        self.opt_int(v.map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
    }

    fn text(&mut self, v: &str) -> &mut Self {
        match self.copy_cell() {
            Some(buf) => push_escaped(buf, v),
            None => self.row.push(Arg::Text(v.to_owned())),
        }
        self
    }

    fn opt_text(&mut self, v: Option<&str>) -> &mut Self {
        match (self.copy_cell(), v) {
            (Some(buf), Some(v)) => push_escaped(buf, v),
            (Some(buf), None) => buf.extend_from_slice(b"\\N"),
            (None, v) => self.row.push(Arg::OptText(v.map(str::to_owned))),
        }
        self
    }

    fn uuid(&mut self, v: Uuid) -> &mut Self {
        match self.copy_cell() {
            Some(buf) => {
                let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
                buf.extend_from_slice(v.hyphenated().encode_lower(&mut text).as_bytes());
            }
            None => self.row.push(Arg::Text(v.to_string())),
        }
        self
    }

    fn opt_display(&mut self, v: Option<&dyn std::fmt::Display>) -> &mut Self {
        use std::fmt::Write as _;
        match (self.copy_cell(), v) {
            (Some(buf), Some(v)) => {
                // Writing to a Vec cannot fail.
                let _ = write!(Escaping(buf), "{v}");
            }
            (Some(buf), None) => buf.extend_from_slice(b"\\N"),
            (None, v) => self.row.push(Arg::OptText(v.map(|v| v.to_string()))),
        }
        self
    }

    fn end(&mut self) {
        match self.out {
            Streamed::Copy(buf) => buf.push(b'\n'),
            Streamed::Rows(rows) => rows.push(std::mem::take(&mut self.row)),
        }
    }
}

/// Formats into COPY text, escaped.
struct Escaping<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        push_escaped(self.0, s);
        Ok(())
    }
}

/// The read models of a prefix of the log, in memory.
#[derive(Debug, Default)]
pub struct ReadModelFold {
    accounts: BTreeMap<String, AccountRow>,
    balances: BTreeMap<String, BalanceRow>,
    daily: DailyMap,
    expiry: BTreeMap<(String, String), String>,
    /// Insert-only rows made since the last [`ReadModelFold::take_streamed`].
    transactions: Streamed,
    usage: Streamed,
    cost_history: Streamed,
    /// Billing rows by (table, key), in [`billing`]'s column order.
    billing: BTreeMap<(&'static str, String), Row>,
    /// `time_text` of the event being applied, formatted once: its first
    /// 7 and 10 characters are the month and the day.
    at_text: String,
    /// The live projector's fold (`live.rs`) starts from the rows a batch
    /// touches, not from an empty schedule: there the schedule's changes
    /// are kept as what to do to each row, applied to the table at the end.
    expiry_ops: Option<BTreeMap<(String, String), ExpiryOp>>,
}

/// What a batch does to one row of the expiry schedule, its changes
/// collapsed: a schedule is an insert unless the row exists, an unschedule
/// a delete, and the collapsed operation has the effect of the sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ExpiryOp {
    /// Insert unless the row exists (its due time is kept).
    InsertIfAbsent(String),
    /// The row was deleted, then scheduled again: it ends with this time.
    Set(String),
    Delete,
}

/// `2026-03` of `2026-03-25T08:00:00.000000Z` (`%Y-%m`).
fn month(at_text: &str) -> &str {
    at_text.get(..7).unwrap_or(at_text)
}

/// `2026-03-25` of `2026-03-25T08:00:00.000000Z` (`%Y-%m-%d`).
fn day(at_text: &str) -> &str {
    at_text.get(..10).unwrap_or(at_text)
}

/// The `rm_usage_daily` row a usage record of `account` at `at_text`
/// (`time_text`) adds to.
fn daily_key(account: &str, at_text: &str, usage: &Usage) -> DailyKey {
    (
        account.to_owned(),
        day(at_text).to_owned(),
        usage
            .operation
            .as_ref()
            .map(|o| o.to_string())
            .unwrap_or_default(),
        usage.model.clone().unwrap_or_default(),
    )
}

/// The same key, borrowed.
fn daily_key_ref<'a>(
    account: &'a str,
    at_text: &'a str,
    usage: &'a Usage,
) -> (&'a str, &'a str, &'a str, &'a str) {
    (
        account,
        day(at_text),
        usage.operation.as_ref().map_or("", |o| o.as_str()),
        usage.model.as_deref().unwrap_or(""),
    )
}

/// The keyed rows a batch of events reads and changes: the live projector
/// (`live.rs`) loads them and seeds its fold with them.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    /// Keys of `rm_accounts` rows.
    accounts: std::collections::BTreeSet<String>,
    /// Keys of `rm_balances` rows.
    balances: std::collections::BTreeSet<String>,
    daily: std::collections::BTreeSet<DailyKey>,
    billing: std::collections::BTreeSet<(Table, String)>,
}

impl Touched {
    pub(crate) fn add(&mut self, stored: &RawEvent, decoded: &Decoded) {
        match decoded {
            Decoded::Account(event) => {
                // Which of the two rows `apply_account` changes: a batch of
                // deductions reads and writes no `rm_accounts` row.
                let (account, balance) = match event {
                    AccountEvent::AccountOpened(_) => (true, true),
                    AccountEvent::AccountUpdated(e) => (true, e.credit_limit.is_some()),
                    AccountEvent::PlanChanged(_)
                    | AccountEvent::AccountSuspended(_)
                    | AccountEvent::AccountReactivated(_)
                    | AccountEvent::AccountStatusChanged(_) => (true, false),
                    AccountEvent::CreditsHeld(_)
                    | AccountEvent::HoldReleased(_)
                    | AccountEvent::CreditsGranted(_)
                    | AccountEvent::CreditsDeducted(_)
                    | AccountEvent::HoldCaptured(_)
                    | AccountEvent::CreditsRefunded(_)
                    | AccountEvent::CreditsAdjusted(_)
                    | AccountEvent::CreditsExpired(_) => (false, true),
                    // Budgets live in the aggregate; no read model row.
                    AccountEvent::BudgetSet(_)
                    | AccountEvent::BudgetThresholdReached(_)
                    | AccountEvent::AutoTopUpSet(_)
                    | AccountEvent::AutoTopUpTriggered(_)
                    | AccountEvent::AutoTopUpSucceeded(_)
                    | AccountEvent::AutoTopUpFailed(_) => (false, false),
                };
                if account {
                    self.accounts.insert(stored.aggregate_id.clone());
                }
                if balance {
                    self.balances.insert(stored.aggregate_id.clone());
                }
                let usage = match event {
                    AccountEvent::CreditsDeducted(e) => Some(&e.usage),
                    AccountEvent::HoldCaptured(e) => Some(&e.usage),
                    _ => None,
                };
                if let Some(usage) = usage {
                    let at = time_text(event.occurred_at());
                    self.daily
                        .insert(daily_key(&stored.aggregate_id, &at, usage));
                }
            }
            Decoded::Catalog(_) => {}
            Decoded::Other => {
                if stored.aggregate_type == events::TEAM_AGGREGATE_TYPE {
                    // A team event touches its member's row (limits and
                    // counts touch none); an undecodable one touches
                    // nothing here, and the fold reports it.
                    if let Some(Ok(event)) =
                        crate::team::parse(&stored.aggregate_type, &stored.payload)
                    {
                        if let Some(member) = event.member_id() {
                            self.billing
                                .insert((Table::TeamMembers, member.to_string()));
                        }
                    }
                    return;
                }
                let table = match stored.aggregate_type.as_str() {
                    events::INVOICE_AGGREGATE_TYPE => Table::Invoices,
                    events::PAYMENT_AGGREGATE_TYPE => Table::Payments,
                    events::SUBSCRIPTION_AGGREGATE_TYPE => Table::Subscriptions,
                    _ => return,
                };
                self.billing.insert((table, stored.aggregate_id.clone()));
            }
        }
    }

    /// The keys of `table`'s touched rows, as the texts of its key columns.
    pub(crate) fn keys(&self, table: Table) -> Vec<Vec<String>> {
        match table {
            Table::Accounts => self.accounts.iter().map(|a| vec![a.clone()]).collect(),
            Table::Balances => self.balances.iter().map(|a| vec![a.clone()]).collect(),
            Table::UsageDaily => self
                .daily
                .iter()
                .map(|(a, d, o, m)| vec![a.clone(), d.clone(), o.clone(), m.clone()])
                .collect(),
            Table::Invoices | Table::Payments | Table::Subscriptions | Table::TeamMembers => self
                .billing
                .iter()
                .filter(|(t, _)| *t == table)
                .map(|(_, id)| vec![id.clone()])
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Reads column `i` of a stored row.
fn cell(row: &[Arg], table: Table, i: usize) -> Result<&Arg, ProjectionError> {
    row.get(i).ok_or(ProjectionError::BadRow {
        column: table.sql_name(),
        reason: format!(
            "a row of {} columns, not {}",
            row.len(),
            table.columns().len()
        ),
    })
}

fn text_at(row: &[Arg], table: Table, i: usize) -> Result<String, ProjectionError> {
    match cell(row, table, i)? {
        Arg::Text(t) | Arg::OptText(Some(t)) => Ok(t.clone()),
        other => Err(ProjectionError::BadRow {
            column: table.columns()[i],
            reason: format!("expected text, found {other:?}"),
        }),
    }
}

fn opt_text_at(row: &[Arg], table: Table, i: usize) -> Result<Option<String>, ProjectionError> {
    match cell(row, table, i)? {
        Arg::OptText(None) | Arg::OptI64(None) => Ok(None),
        _ => text_at(row, table, i).map(Some),
    }
}

fn i64_at(row: &[Arg], table: Table, i: usize) -> Result<i64, ProjectionError> {
    match cell(row, table, i)? {
        Arg::I64(v) | Arg::OptI64(Some(v)) => Ok(*v),
        other => Err(ProjectionError::BadRow {
            column: table.columns()[i],
            reason: format!("expected an integer, found {other:?}"),
        }),
    }
}

impl ReadModelFold {
    pub fn new() -> Self {
        Self::default()
    }

    /// A fold for one live batch: it is seeded with the stored rows the
    /// batch touches ([`ReadModelFold::seed`]) and keeps the expiry
    /// schedule's changes as operations ([`ReadModelFold::take_expiry_ops`]).
    pub(crate) fn for_batch() -> Self {
        Self {
            expiry_ops: Some(BTreeMap::new()),
            ..Self::default()
        }
    }

    /// Puts a stored row of a keyed table (in [`Table::columns`] order)
    /// into the fold, as if the fold had made it.
    pub(crate) fn seed(&mut self, table: Table, row: Row) -> Result<(), ProjectionError> {
        let t = |i| text_at(&row, table, i);
        let ot = |i| opt_text_at(&row, table, i);
        let n = |i| i64_at(&row, table, i);
        match table {
            Table::Accounts => {
                self.accounts.insert(
                    t(0)?,
                    AccountRow {
                        name: t(1)?,
                        slug: t(2)?,
                        owner_user_id: t(3)?,
                        plan: t(4)?,
                        status: t(5)?,
                        country: t(6)?,
                        billing_email: t(7)?,
                        billing_address: ot(8)?,
                        tax_id: ot(9)?,
                        tax_rate: t(10)?,
                        credit_limit: n(11)?,
                        low_balance_threshold: n(12)?,
                        opened_at: t(13)?,
                        updated_at: t(14)?,
                        last_position: n(15)?,
                        currency: ot(16)?,
                    },
                );
            }
            Table::Balances => {
                self.balances.insert(
                    t(0)?,
                    BalanceRow {
                        balance: n(1)?,
                        held: n(2)?,
                        credit_limit: n(3)?,
                        period: t(4)?,
                        period_granted: n(5)?,
                        period_used: n(6)?,
                        last_position: n(7)?,
                        updated_at: t(8)?,
                    },
                );
            }
            Table::UsageDaily => {
                let cost_usd = t(5)?
                    .parse::<Decimal>()
                    .map_err(|e| ProjectionError::BadRow {
                        column: "rm_usage_daily.cost_usd",
                        reason: e.to_string(),
                    })?;
                self.daily.insert(
                    (t(0)?, t(1)?, t(2)?, t(3)?),
                    DailyRow {
                        credits: n(4)?,
                        cost_usd,
                        count: n(6)?,
                    },
                );
            }
            Table::Invoices | Table::Payments | Table::Subscriptions | Table::TeamMembers => {
                // Each billing table's first column is its key.
                self.billing.insert((table.sql_name(), t(0)?), row);
            }
            Table::Transactions | Table::Usage | Table::CostHistory | Table::ExpirySchedule => {
                return Err(ProjectionError::BadRow {
                    column: table.sql_name(),
                    reason: "not a table the live fold is seeded with".into(),
                })
            }
        }
        Ok(())
    }

    /// The expiry schedule's changes since [`ReadModelFold::for_batch`].
    pub(crate) fn take_expiry_ops(&mut self) -> BTreeMap<(String, String), ExpiryOp> {
        self.expiry_ops.take().unwrap_or_default()
    }

    /// Applies one event, exactly as the projector's `apply` would.
    pub fn apply(&mut self, stored: &RawEvent, decoded: &Decoded) -> Result<(), ProjectionError> {
        match decoded {
            Decoded::Account(event) => self.apply_account(stored, event),
            Decoded::Catalog(c) if matches!(**c, CatalogEvent::CreditCostSet(_)) => {
                let CatalogEvent::CreditCostSet(e) = &**c else {
                    return Ok(());
                };
                self.cost_history
                    .row(Table::CostHistory.columns().len())
                    .int(i64::try_from(e.entry.version).unwrap_or(i64::MAX))
                    .text(e.entry.operation.as_str())
                    .int(e.entry.cost)
                    .text(e.entry.unit.as_str())
                    .opt_int(e.previous.as_ref().map(|p| p.cost))
                    .opt_text(e.previous.as_ref().map(|p| p.unit.as_str()))
                    .text(&e.actor)
                    .text(&time_text(e.at))
                    .int(stored.position)
                    .end();
                Ok(())
            }
            Decoded::Catalog(_) => Ok(()),
            Decoded::Other if stored.aggregate_type == events::SUBSCRIPTION_AGGREGATE_TYPE => {
                let event: events::SubscriptionEvent = serde_json::from_str(&stored.payload)
                    .map_err(|e| ProjectionError::BadEvent {
                        position: stored.position,
                        event_type: stored.event_type.clone(),
                        reason: e.to_string(),
                    })?;
                crate::subscriptions::fold(
                    &mut self.billing,
                    &stored.aggregate_id,
                    &event,
                    stored.position,
                );
                Ok(())
            }
            Decoded::Other if stored.aggregate_type == events::TEAM_AGGREGATE_TYPE => {
                let event: events::TeamEvent =
                    serde_json::from_str(&stored.payload).map_err(|e| {
                        ProjectionError::BadEvent {
                            position: stored.position,
                            event_type: stored.event_type.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                crate::team::fold(
                    &mut self.billing,
                    &stored.aggregate_id,
                    &event,
                    stored.position,
                );
                Ok(())
            }
            Decoded::Other => match BillingEvent::parse(&stored.aggregate_type, &stored.payload) {
                Some(event) => {
                    let event = event.map_err(|e| ProjectionError::BadEvent {
                        position: stored.position,
                        event_type: stored.event_type.clone(),
                        reason: e.to_string(),
                    })?;
                    self.apply_billing(stored, &event);
                    Ok(())
                }
                None => Ok(()),
            },
        }
    }

    /// A billing event: insert the row or set its columns.
    fn apply_billing(&mut self, stored: &RawEvent, event: &BillingEvent) {
        let (table, change) = billing::change(event, stored.position);
        change.fold(&mut self.billing, table, &stored.aggregate_id);
    }

    fn apply_account(
        &mut self,
        stored: &RawEvent,
        event: &AccountEvent,
    ) -> Result<(), ProjectionError> {
        let id = &stored.aggregate_id;
        let at = event.occurred_at();
        time_text_into(&mut self.at_text, at);
        let position = stored.position;
        match event {
            AccountEvent::AccountOpened(e) => {
                let opened = self.at_text.clone();
                self.accounts.insert(
                    id.clone(),
                    AccountRow {
                        name: e.name.clone(),
                        slug: e.slug.clone(),
                        owner_user_id: e.owner_user_id.clone(),
                        plan: e.plan.clone(),
                        status: e.status.as_str().to_owned(),
                        country: e.country.as_str().to_owned(),
                        billing_email: e.billing_email.clone(),
                        billing_address: None,
                        tax_id: None,
                        tax_rate: e.tax_rate.to_string(),
                        credit_limit: e.credit_limit,
                        low_balance_threshold: e.low_balance_threshold,
                        opened_at: opened.clone(),
                        updated_at: opened.clone(),
                        last_position: position,
                        currency: e.currency.as_ref().map(|c| c.as_str().to_owned()),
                    },
                );
                self.balances.insert(
                    id.clone(),
                    BalanceRow {
                        balance: 0,
                        held: 0,
                        credit_limit: e.credit_limit,
                        period: month(&self.at_text).to_owned(),
                        period_granted: 0,
                        period_used: 0,
                        last_position: position,
                        updated_at: opened,
                    },
                );
            }
            AccountEvent::AccountUpdated(e) => {
                if let Some(a) = self.accounts.get_mut(id) {
                    if let Some(v) = &e.name {
                        a.name.clone_from(v);
                    }
                    if let Some(v) = &e.billing_email {
                        a.billing_email.clone_from(v);
                    }
                    if let Some(v) = &e.billing_address {
                        a.billing_address = Some(serde_json::to_string(v).unwrap_or_default());
                    }
                    if let Some(v) = &e.tax_id {
                        a.tax_id = Some(v.clone());
                    }
                    if let Some(v) = e.tax_rate {
                        a.tax_rate = v.to_string();
                    }
                    if let Some(v) = &e.country {
                        a.country = v.as_str().to_owned();
                    }
                    if let Some(v) = &e.currency {
                        a.currency = v.as_ref().map(|c| c.as_str().to_owned());
                    }
                    if let Some(v) = e.credit_limit {
                        a.credit_limit = v;
                    }
                    if let Some(v) = e.low_balance_threshold {
                        a.low_balance_threshold = v;
                    }
                    a.updated_at.clone_from(&self.at_text);
                    a.last_position = position;
                }
                if let Some(limit) = e.credit_limit {
                    if let Some(b) = self.balances.get_mut(id) {
                        b.credit_limit = limit;
                        b.last_position = position;
                    }
                }
            }
            AccountEvent::PlanChanged(e) => self.touch(id, |a| a.plan.clone_from(&e.to), position),
            AccountEvent::AccountSuspended(_) => {
                self.touch(id, |a| a.status = "suspended".into(), position);
            }
            AccountEvent::AccountReactivated(e) => {
                self.touch(id, |a| a.status = e.status.as_str().into(), position);
            }
            AccountEvent::AccountStatusChanged(e) => self.touch(
                id,
                |a| {
                    if a.status != "suspended" {
                        a.status = e.to.as_str().into();
                    }
                },
                position,
            ),
            AccountEvent::BudgetSet(_)
            | AccountEvent::BudgetThresholdReached(_)
            | AccountEvent::AutoTopUpSet(_)
            | AccountEvent::AutoTopUpTriggered(_)
            | AccountEvent::AutoTopUpSucceeded(_)
            | AccountEvent::AutoTopUpFailed(_) => {}
            AccountEvent::CreditsHeld(e) => {
                self.move_balance(id, event, 0, 0, position)?;
                self.schedule(id, e.hold_id, e.expires_at);
            }
            AccountEvent::HoldReleased(e) => {
                self.move_balance(id, event, 0, 0, position)?;
                self.unschedule(id, e.hold_id);
            }
            AccountEvent::CreditsGranted(e) => {
                self.move_balance(id, event, e.credits, 0, position)?;
                if let Some(expires_at) = e.expires_at {
                    self.schedule(id, e.grant_id, expires_at);
                }
                let description = match &e.description {
                    Some(d) => d.clone(),
                    None => format!("{:?} grant", e.source).to_lowercase(),
                };
                self.entry(stored, event, "grant", e.grant_id, Some(&description))?;
            }
            AccountEvent::CreditsDeducted(e) => {
                self.move_balance(id, event, 0, e.credits, position)?;
                let description = e.usage.operation.as_ref().map(|o| o.as_str());
                self.entry(stored, event, "deduction", e.deduction_id, description)?;
                self.usage(stored, e.deduction_id, None, e.credits, &e.usage)?;
            }
            AccountEvent::HoldCaptured(e) => {
                self.move_balance(id, event, 0, e.captured, position)?;
                self.unschedule(id, e.hold_id);
                let description = e.usage.operation.as_ref().map(|o| o.as_str());
                self.entry(stored, event, "capture", e.deduction_id, description)?;
                self.usage(
                    stored,
                    e.deduction_id,
                    Some(e.hold_id),
                    e.captured,
                    &e.usage,
                )?;
            }
            AccountEvent::CreditsRefunded(e) => {
                self.move_balance(id, event, 0, 0, position)?;
                for lot in &e.lots {
                    if let Some(expires_at) = lot.expires_at {
                        self.schedule(id, lot.lot_id, expires_at);
                    }
                }
                self.entry(stored, event, "refund", e.refund_id, Some(&e.reason))?;
            }
            AccountEvent::CreditsAdjusted(e) => {
                self.move_balance(id, event, 0, 0, position)?;
                self.entry(
                    stored,
                    event,
                    "adjustment",
                    e.adjustment_id,
                    Some(&e.reason),
                )?;
            }
            AccountEvent::CreditsExpired(e) => {
                self.move_balance(id, event, 0, 0, position)?;
                self.unschedule(id, e.lot_id);
                self.entry(stored, event, "expiry", e.lot_id, Some("credits expired"))?;
            }
        }
        Ok(())
    }

    fn touch(&mut self, id: &str, change: impl FnOnce(&mut AccountRow), position: i64) {
        if let Some(a) = self.accounts.get_mut(id) {
            change(a);
            a.updated_at.clone_from(&self.at_text);
            a.last_position = position;
        }
    }

    fn schedule(&mut self, id: &str, item: Uuid, due_at: DateTime<Utc>) {
        let key = (id.to_owned(), item.to_string());
        if let Some(ops) = &mut self.expiry_ops {
            let due = time_text(due_at);
            match ops.get(&key) {
                None => {
                    ops.insert(key.clone(), ExpiryOp::InsertIfAbsent(due));
                }
                Some(ExpiryOp::Delete) => {
                    ops.insert(key.clone(), ExpiryOp::Set(due));
                }
                Some(_) => {}
            }
        }
        self.expiry.entry(key).or_insert_with(|| time_text(due_at));
    }

    fn unschedule(&mut self, id: &str, item: Uuid) {
        let key = (id.to_owned(), item.to_string());
        if let Some(ops) = &mut self.expiry_ops {
            ops.insert(key.clone(), ExpiryOp::Delete);
        }
        self.expiry.remove(&key);
    }

    fn move_balance(
        &mut self,
        id: &str,
        event: &AccountEvent,
        granted: i64,
        used: i64,
        position: i64,
    ) -> Result<(), ProjectionError> {
        if let Some(b) = self.balances.get_mut(id) {
            let period = month(&self.at_text);
            b.balance = add_i64(b.balance, event.balance_delta(), "rm_balances.balance")?;
            b.held = add_i64(b.held, event.held_delta(), "rm_balances.held")?;
            if b.period == period {
                b.period_granted =
                    add_i64(b.period_granted, granted, "rm_balances.period_granted")?;
                b.period_used = add_i64(b.period_used, used, "rm_balances.period_used")?;
            } else {
                b.period_granted = granted;
                b.period_used = used;
                b.period = period.to_owned();
            }
            b.last_position = position;
            b.updated_at.clone_from(&self.at_text);
        }
        Ok(())
    }

    fn entry(
        &mut self,
        stored: &RawEvent,
        event: &AccountEvent,
        entry_type: &str,
        reference_id: Uuid,
        description: Option<&str>,
    ) -> Result<(), ProjectionError> {
        let balance_after = event
            .balance_after()
            .ok_or_else(|| ProjectionError::BadEvent {
                position: stored.position,
                event_type: stored.event_type.clone(),
                reason: "a ledger entry without balance_after".into(),
            })?;
        self.transactions
            .row(Table::Transactions.columns().len())
            .int(stored.position)
            .text(&stored.aggregate_id)
            .int(stored.sequence)
            .text(entry_type)
            .uuid(reference_id)
            .int(event.balance_delta())
            .int(balance_after)
            .opt_text(description)
            .text(&self.at_text)
            .end();
        Ok(())
    }

    fn usage(
        &mut self,
        stored: &RawEvent,
        deduction_id: Uuid,
        hold_id: Option<Uuid>,
        credits: i64,
        usage: &Usage,
    ) -> Result<(), ProjectionError> {
        let mut row = self.usage.row(Table::Usage.columns().len());
        row.int(stored.position)
            .text(&stored.aggregate_id)
            .uuid(deduction_id);
        match hold_id {
            Some(h) => row.uuid(h),
            None => row.opt_text(None),
        };
        row.opt_text(usage.operation.as_ref().map(|o| o.as_str()))
            .int(credits)
            .opt_u64(Some(usage.units))
            .opt_u64(usage.cost_version)
            .opt_display(usage.cost_usd.as_ref().map(|c| c as &dyn std::fmt::Display))
            .opt_text(usage.model.as_deref())
            .opt_u64(usage.tokens_input)
            .opt_u64(usage.tokens_output)
            .opt_text(usage.related_object_type.as_deref())
            .opt_text(usage.related_object_id.as_deref())
            .opt_display(usage.metadata.as_ref().map(|m| m as &dyn std::fmt::Display))
            .text(&self.at_text)
            .end();
        let key = daily_key_ref(&stored.aggregate_id, &self.at_text, usage);
        self.daily.update(key, |row| {
            row.credits = add_i64(row.credits, credits, "rm_usage_daily.credits")?;
            row.cost_usd = add_money(
                row.cost_usd,
                usage.cost_usd.unwrap_or(Decimal::ZERO),
                "rm_usage_daily.cost_usd",
            )?;
            row.count = add_i64(row.count, 1, "rm_usage_daily.count")?;
            Ok(())
        })
    }

    /// Makes the insert-only rows as PostgreSQL COPY text from now on
    /// ([`ReadModelFold::take_streamed_text`]) instead of rows.
    pub fn stream_copy_text(&mut self) {
        for s in [
            &mut self.transactions,
            &mut self.usage,
            &mut self.cost_history,
        ] {
            *s = Streamed::Copy(Vec::new());
        }
    }

    /// The insert-only rows of `table` made since the last call, as made.
    pub fn take_streamed_text(&mut self, table: Table) -> Streamed {
        match table {
            Table::Transactions => self.transactions.take(),
            Table::Usage => self.usage.take(),
            Table::CostHistory => self.cost_history.take(),
            _ => Streamed::default(),
        }
    }

    /// The insert-only rows of `table` made since the last call (none
    /// after [`ReadModelFold::stream_copy_text`]: those are text).
    pub fn take_streamed(&mut self, table: Table) -> Vec<Row> {
        match self.take_streamed_text(table) {
            Streamed::Rows(rows) => rows,
            Streamed::Copy(_) => Vec::new(),
        }
    }

    /// The rows of a keyed table, in key order.
    pub fn keyed_rows(&self, table: Table) -> Vec<Row> {
        match table {
            Table::Accounts => self
                .accounts
                .iter()
                .map(|(id, a)| {
                    vec![
                        id.clone().into(),
                        a.name.clone().into(),
                        a.slug.clone().into(),
                        a.owner_user_id.clone().into(),
                        a.plan.clone().into(),
                        a.status.clone().into(),
                        a.country.clone().into(),
                        a.billing_email.clone().into(),
                        a.billing_address.clone().into(),
                        a.tax_id.clone().into(),
                        a.tax_rate.clone().into(),
                        a.credit_limit.into(),
                        a.low_balance_threshold.into(),
                        a.opened_at.clone().into(),
                        a.updated_at.clone().into(),
                        a.last_position.into(),
                        a.currency.clone().into(),
                    ]
                })
                .collect(),
            Table::Balances => self
                .balances
                .iter()
                .map(|(id, b)| {
                    vec![
                        id.clone().into(),
                        b.balance.into(),
                        b.held.into(),
                        b.credit_limit.into(),
                        b.period.clone().into(),
                        b.period_granted.into(),
                        b.period_used.into(),
                        b.last_position.into(),
                        b.updated_at.clone().into(),
                    ]
                })
                .collect(),
            Table::UsageDaily => self
                .daily
                .iter()
                .map(|((id, d, op, model), r)| {
                    vec![
                        id.into(),
                        d.into(),
                        op.into(),
                        model.into(),
                        r.credits.into(),
                        r.cost_usd.to_string().into(),
                        r.count.into(),
                    ]
                })
                .collect(),
            Table::ExpirySchedule => self
                .expiry
                .iter()
                .map(|((id, item), due)| {
                    vec![id.clone().into(), item.clone().into(), due.clone().into()]
                })
                .collect(),
            Table::Invoices | Table::Payments | Table::Subscriptions | Table::TeamMembers => self
                .billing
                .iter()
                .filter(|((t, _), _)| *t == table.sql_name())
                .map(|(_, row)| row.clone())
                .collect(),
            Table::Transactions | Table::Usage | Table::CostHistory => Vec::new(),
        }
    }
}

/// Inserts rows: PostgreSQL through `COPY … FROM STDIN`, SQLite with
/// multi-row INSERTs as large as the parameter limit allows.
pub async fn insert_rows(
    tx: &mut SqlTx,
    table: Table,
    rows: &[Row],
) -> Result<(), ProjectionError> {
    if rows.is_empty() {
        return Ok(());
    }
    if let SqlTx::Pg(_) = tx {
        return copy_in(tx, table, copy_text(rows)).await;
    }
    insert_values(tx, table, rows).await
}

/// Writes insert-only rows as the fold made them: COPY text or rows.
pub(crate) async fn write_streamed(
    tx: &mut SqlTx,
    table: Table,
    rows: Streamed,
) -> Result<(), ProjectionError> {
    match rows {
        Streamed::Copy(text) => copy_in(tx, table, text).await,
        Streamed::Rows(rows) => insert_rows(tx, table, &rows).await,
    }
}

/// Rows in PostgreSQL's COPY text format.
pub fn copy_text(rows: &[Row]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(rows.len() * 160);
    for row in rows {
        copy_text_row(&mut buf, row);
    }
    buf
}

/// Sends rows already in COPY text format (PostgreSQL only).
async fn copy_in(tx: &mut SqlTx, table: Table, text: Vec<u8>) -> Result<(), ProjectionError> {
    let SqlTx::Pg(pg) = tx else {
        return Err(ProjectionError::BadRow {
            column: table.sql_name(),
            reason: "COPY text sent to a database other than PostgreSQL".into(),
        });
    };
    if text.is_empty() {
        return Ok(());
    }
    let statement = format!(
        "COPY {} ({}) FROM STDIN",
        table.sql_name(),
        table.columns().join(", ")
    );
    let mut copy = pg
        .copy_in_raw(&statement)
        .await
        .map_err(store::StoreError::from)?;
    copy.send(text).await.map_err(store::StoreError::from)?;
    copy.finish().await.map_err(store::StoreError::from)?;
    Ok(())
}

/// Appends the decimal digits of `n` (no allocation, unlike `to_string`).
fn push_i64(buf: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        buf.push(b'-');
    }
    buf.extend_from_slice(&digits[i..]);
}

/// One row in PostgreSQL's COPY text format: tab-separated, `\N` for NULL,
/// backslash escapes for backslash, tab, newline and carriage return.
fn copy_text_row(buf: &mut Vec<u8>, row: &[Arg]) {
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            buf.push(b'\t');
        }
        match v {
            Arg::I64(n) | Arg::OptI64(Some(n)) => push_i64(buf, *n),
            Arg::OptI64(None) | Arg::OptText(None) => buf.extend_from_slice(b"\\N"),
            Arg::Text(t) | Arg::OptText(Some(t)) => push_escaped(buf, t),
        }
    }
    buf.push(b'\n');
}

/// Appends a text value in COPY text format: backslash, tab, newline and
/// carriage return escaped with a backslash.
fn push_escaped(buf: &mut Vec<u8>, t: &str) {
    let special = |b: u8| matches!(b, b'\\' | b'\t' | b'\n' | b'\r');
    // Most values need no escape: look for one in 16-byte blocks without
    // an early exit per byte (the compiler vectorizes it), then copy once.
    let bytes = t.as_bytes();
    let blocks = bytes.chunks(16);
    if !blocks
        .into_iter()
        .any(|c| c.iter().fold(false, |found, &b| found | special(b)))
    {
        buf.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            other => buf.push(other),
        }
    }
}

/// Multi-row INSERTs within the parameter limit (SQLite's path).
async fn insert_values(tx: &mut SqlTx, table: Table, rows: &[Row]) -> Result<(), ProjectionError> {
    let columns = table.columns();
    let per_statement = (INSERT_PARAMS_MAX / columns.len()).max(1);
    for chunk in rows.chunks(per_statement) {
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ",
            table.sql_name(),
            columns.join(", ")
        );
        let mut args = Vec::with_capacity(chunk.len() * columns.len());
        for (i, row) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push('(');
            for j in 0..columns.len() {
                if j > 0 {
                    sql.push_str(", ");
                }
                sql.push('$');
                sql.push_str(&(i * columns.len() + j + 1).to_string());
            }
            sql.push(')');
            args.extend(row.iter().cloned());
        }
        tx.execute(&sql, &args).await?;
    }
    Ok(())
}

/// A rebuild in progress: one write transaction that holds the projector's
/// checkpoint row, emptied tables, and the fold that refills them.
///
/// Three stages overlap: the caller reads and decodes the log ahead; each
/// page is folded and its insert-only rows encoded (COPY text on
/// PostgreSQL) on a blocking thread; and a writer task that owns the
/// transaction sends them to the database while the next page is folded.
pub struct BulkRebuild {
    writer: Writer,
    tables: Vec<Table>,
    fold: ReadModelFold,
    /// Events up to here are projected (the log head for a full rebuild,
    /// the projector's checkpoint for a partial one).
    upto: i64,
    full: bool,
    /// Secondary indexes dropped for the load, recreated by `finish`.
    indexes: Vec<String>,
}

/// Pages written ahead: at most this many encoded tables wait for the
/// writer (a bound on memory: about two pages of rows).
const WRITE_AHEAD: usize = 6;

/// The rebuild's transaction: held here, or owned by the writer task.
enum Writer {
    Idle(SqlTx),
    Busy {
        sender: tokio::sync::mpsc::Sender<(Table, Streamed)>,
        task: tokio::task::JoinHandle<(SqlTx, Result<(), ProjectionError>)>,
    },
    /// Only while switching between the two, or after a failed writer.
    Gone,
}

/// Writes what it receives, in order, until the channel closes or a write
/// fails; hands the transaction back either way.
async fn write_loop(
    mut tx: SqlTx,
    mut rows: tokio::sync::mpsc::Receiver<(Table, Streamed)>,
) -> (SqlTx, Result<(), ProjectionError>) {
    while let Some((table, streamed)) = rows.recv().await {
        let t = std::time::Instant::now();
        let written = write_streamed(&mut tx, table, streamed).await;
        tracing::debug!(
            table = table.name(),
            write_us = t.elapsed().as_micros() as u64,
            "bulk write"
        );
        if let Err(e) = written {
            return (tx, Err(e));
        }
    }
    (tx, Ok(()))
}

impl BulkRebuild {
    /// Locks the projector's checkpoint (a batch another projector is
    /// committing finishes first, and none can commit until this one does)
    /// and empties `tables`. Rebuilding every table moves the checkpoint to
    /// the log head; rebuilding some refills them up to the checkpoint the
    /// other tables are at.
    pub async fn begin(store: &Store, tables: &[Table]) -> Result<Self, ProjectionError> {
        let mut tables = tables.to_vec();
        tables.sort();
        tables.dedup();
        let full = tables.len() == Table::ALL.len();
        store
            .execute(
                "INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0) \
                 ON CONFLICT (name) DO NOTHING",
                &[PROJECTION_NAME.into()],
            )
            .await?;
        let mut tx = store.begin().await?;
        // Taking the row lock with a no-op update works on both databases.
        tx.execute(
            "UPDATE projection_checkpoints SET position = position WHERE name = $1",
            &[PROJECTION_NAME.into()],
        )
        .await?;
        let upto = if full {
            tx.head_position().await?
        } else {
            tx.projector_position(PROJECTION_NAME).await?
        };
        let mut indexes = Vec::new();
        if full && matches!(tx, SqlTx::Pg(_)) {
            // A full rebuild on PostgreSQL empties the tables with TRUNCATE
            // and loads the big ones without their secondary indexes, then
            // builds those once: several times faster than DELETE and
            // row-by-row index upkeep. Both take ACCESS EXCLUSIVE locks, so
            // readers of the read models wait until the rebuild commits
            // (docs/adr/0008); partial rebuilds keep the old rows readable.
            let names: Vec<&str> = tables.iter().map(|t| t.sql_name()).collect();
            tx.execute(&format!("TRUNCATE {}", names.join(", ")), &[])
                .await?;
            for t in [Table::Transactions, Table::Usage] {
                let rows = tx
                    .fetch_all(
                        "SELECT i.indexname, i.indexdef FROM pg_indexes i \
                          WHERE i.tablename = $1 AND i.schemaname = current_schema() \
                            AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
                        &[t.sql_name().into()],
                    )
                    .await?;
                for r in rows {
                    let name = r.text("indexname")?;
                    tx.execute(
                        &format!("DROP INDEX \"{}\"", name.replace('"', "\"\"")),
                        &[],
                    )
                    .await?;
                    indexes.push(r.text("indexdef")?);
                }
            }
        } else {
            for t in &tables {
                tx.execute(&format!("DELETE FROM {}", t.sql_name()), &[])
                    .await?;
            }
        }
        let mut fold = ReadModelFold::new();
        if matches!(tx, SqlTx::Pg(_)) {
            fold.stream_copy_text();
        }
        Ok(Self {
            writer: Writer::Idle(tx),
            tables,
            fold,
            upto,
            full,
            indexes,
        })
    }

    /// The last position this rebuild projects.
    pub fn upto(&self) -> i64 {
        self.upto
    }

    /// The rebuild's transaction, for writes that should commit with it:
    /// waits until the rows of the pages applied so far are written.
    pub async fn tx(&mut self) -> Result<&mut SqlTx, ProjectionError> {
        self.drain().await?;
        match &mut self.writer {
            Writer::Idle(tx) => Ok(tx),
            _ => Err(ProjectionError::FoldTask(
                "the rebuild's writer is gone".into(),
            )),
        }
    }

    /// Waits for the writer task, if one runs, and takes the transaction
    /// back.
    async fn drain(&mut self) -> Result<(), ProjectionError> {
        match std::mem::replace(&mut self.writer, Writer::Gone) {
            Writer::Busy { sender, task } => {
                drop(sender);
                let (tx, written) = task
                    .await
                    .map_err(|e| ProjectionError::FoldTask(e.to_string()))?;
                self.writer = Writer::Idle(tx);
                written
            }
            other => {
                self.writer = other;
                Ok(())
            }
        }
    }

    /// Hands rows to the writer task (starting it if needed).
    async fn write(&mut self, table: Table, rows: Streamed) -> Result<(), ProjectionError> {
        self.writer = match std::mem::replace(&mut self.writer, Writer::Gone) {
            Writer::Idle(tx) => {
                let (sender, receiver) = tokio::sync::mpsc::channel(WRITE_AHEAD);
                let task = tokio::spawn(write_loop(tx, receiver));
                Writer::Busy { sender, task }
            }
            other => other,
        };
        let Writer::Busy { sender, .. } = &self.writer else {
            return Err(ProjectionError::FoldTask(
                "the rebuild's writer is gone".into(),
            ));
        };
        if sender.send((table, rows)).await.is_err() {
            // The writer stopped at a failed write: its error says why.
            self.drain().await?;
            return Err(ProjectionError::FoldTask(
                "the rebuild's writer stopped".into(),
            ));
        }
        Ok(())
    }

    /// Folds a page of events (positions ≤ [`BulkRebuild::upto`], in log
    /// order) and encodes its insert-only rows on a blocking thread, then
    /// hands them to the writer: the fold (this process's CPU) and the
    /// writes (the database's) overlap.
    pub async fn apply(
        &mut self,
        page: Arc<Vec<(RawEvent, Decoded)>>,
    ) -> Result<(), ProjectionError> {
        let mut fold = std::mem::take(&mut self.fold);
        let tables = self.tables.clone();
        let (fold, made) = tokio::task::spawn_blocking(move || {
            let t = std::time::Instant::now();
            for (raw, decoded) in page.iter() {
                fold.apply(raw, decoded)?;
            }
            let mut made = Vec::new();
            for table in [Table::Transactions, Table::Usage, Table::CostHistory] {
                let rows = fold.take_streamed_text(table);
                if tables.contains(&table) && !rows.is_empty() {
                    made.push((table, rows));
                }
            }
            tracing::debug!(fold_us = t.elapsed().as_micros() as u64, "bulk fold");
            Ok::<_, ProjectionError>((fold, made))
        })
        .await
        .map_err(|e| ProjectionError::FoldTask(e.to_string()))??;
        self.fold = fold;
        for (table, rows) in made {
            self.write(table, rows).await?;
        }
        Ok(())
    }

    /// Writes the keyed tables, moves the checkpoint (full rebuilds) and
    /// commits.
    pub async fn finish(mut self) -> Result<i64, ProjectionError> {
        self.drain().await?;
        let Writer::Idle(mut tx) = std::mem::replace(&mut self.writer, Writer::Gone) else {
            return Err(ProjectionError::FoldTask(
                "the rebuild's writer is gone".into(),
            ));
        };
        for table in self.tables.clone() {
            if !table.streamed() {
                let rows = self.fold.keyed_rows(table);
                insert_rows(&mut tx, table, &rows).await?;
            }
        }
        for definition in std::mem::take(&mut self.indexes) {
            tx.execute(&definition, &[]).await?;
        }
        if self.full {
            tx.execute(
                "UPDATE projection_checkpoints SET position = $2 WHERE name = $1",
                &[PROJECTION_NAME.into(), self.upto.into()],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(self.upto)
    }
}

/// Rebuilds `tables` from the log through the fast path; returns how many
/// events were read. `progress` is told the position reached after each page.
pub async fn rebuild_tables(
    store: &Store,
    tables: &[Table],
    mut progress: impl FnMut(i64, usize),
) -> Result<usize, ProjectionError> {
    let mut rebuild = BulkRebuild::begin(store, tables).await?;
    let upto = rebuild.upto();
    // The log is read and decoded ahead, by a task of its own on its own
    // connection, while the previous page is folded and the one before it
    // written: three stages at once instead of one after the other.
    let (pages, mut next) = tokio::sync::mpsc::channel(REBUILD_READ_AHEAD_PAGES);
    let reader = tokio::spawn(read_log(store.clone(), upto, pages));
    let _stop_reader = AbortOnDrop(reader.abort_handle());
    let mut total = 0;
    while let Some(page) = next.recv().await {
        let page: Arc<Vec<(RawEvent, Decoded)>> = page?;
        let (n, last) = (page.len(), page.last().map_or(0, |(e, _)| e.position));
        total += n;
        rebuild.apply(page).await?;
        progress(last, n);
    }
    reader
        .await
        .map_err(|e| ProjectionError::FoldTask(e.to_string()))?;
    rebuild.finish().await?;
    Ok(total)
}

/// Pages of the log a rebuild reads ahead of its fold (a bound on memory:
/// each is at most `AUDIT_PAGE_EVENTS_MAX` events).
pub const REBUILD_READ_AHEAD_PAGES: usize = 2;

type DecodedPage = Result<Arc<Vec<(RawEvent, Decoded)>>, ProjectionError>;

/// Reads the log up to `upto` page by page, decodes each on a blocking
/// thread and sends it on; stops at the end, at the first error (sent on)
/// or when the receiver is gone.
async fn read_log(store: Store, upto: i64, pages: tokio::sync::mpsc::Sender<DecodedPage>) {
    let mut after = 0;
    loop {
        let page = match store
            .log_page(after, upto, store::audit::AUDIT_PAGE_EVENTS_MAX, false)
            .await
        {
            Ok(p) => p,
            Err(e) => {
                let _ = pages.send(Err(e.into())).await;
                return;
            }
        };
        let Some(last) = page.last().map(|e| e.position) else {
            return;
        };
        let decoded = tokio::task::spawn_blocking(move || {
            page.into_iter()
                .map(|e| Decoded::parse(&e).map(|d| (e, d)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .unwrap_or_else(|e| Err(ProjectionError::FoldTask(e.to_string())));
        let failed = decoded.is_err();
        if pages.send(decoded.map(Arc::new)).await.is_err() || failed {
            return;
        }
        after = last;
    }
}

/// Aborts a task when dropped (a rebuild that fails stops its reader).
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The live rows of a table, rendered like [`row_json`], in key order;
/// optionally only one account's, and only keys in `(lo, hi]` for tables
/// keyed by position.
pub async fn live_rows(
    tx: &mut SqlTx,
    table: Table,
    account: Option<&str>,
    positions: Option<(i64, i64)>,
) -> Result<Vec<Value>, ProjectionError> {
    let mut sql = format!("SELECT * FROM {} WHERE 1 = 1", table.sql_name());
    let mut args: Vec<Arg> = Vec::new();
    if let (Some(a), true) = (account, table.per_account()) {
        args.push(a.into());
        sql.push_str(&format!(" AND account_id = ${}", args.len()));
    }
    if let Some((lo, hi)) = positions {
        args.push(lo.into());
        sql.push_str(&format!(" AND position > ${}", args.len()));
        args.push(hi.into());
        sql.push_str(&format!(" AND position <= ${}", args.len()));
    }
    sql.push_str(&format!(" ORDER BY {}", table.key().join(", ")));
    let rows: Vec<SqlRow> = tx.fetch_all(&sql, &args).await?;
    rows.iter()
        .map(|r| r.to_json().map_err(ProjectionError::from))
        .collect()
}
