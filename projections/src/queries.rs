//! Reads of the read models, for the API.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use store::sql::{Arg, SqlRow};
use store::Store;

use crate::ProjectionError;

/// Default and largest page sizes of list endpoints.
pub const PAGE_LIMIT_DEFAULT: u32 = 50;
pub const PAGE_LIMIT_MAX: u32 = 500;

/// A page of a list and the cursor of the next one.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Which page: `limit` is clamped to 1..=PAGE_LIMIT_MAX; `after` is the
/// decoded cursor of the previous page.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: u32,
    pub after: Option<String>,
}

impl PageRequest {
    fn limit(&self) -> i64 {
        i64::from(self.limit.clamp(1, PAGE_LIMIT_MAX))
    }
}

pub(crate) fn page<T>(
    mut items: Vec<T>,
    req: &PageRequest,
    cursor: impl Fn(&T) -> String,
) -> Page<T> {
    let limit = req.limit() as usize;
    let next_cursor = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next_cursor }
}

fn decimal(row: &SqlRow, col: &'static str) -> Result<Decimal, ProjectionError> {
    row.text(col)?
        .parse()
        .map_err(|e: rust_decimal::Error| ProjectionError::BadRow {
            column: col,
            reason: e.to_string(),
        })
}

fn json(row: &SqlRow, col: &'static str) -> Result<Option<serde_json::Value>, ProjectionError> {
    row.opt_text(col)?
        .map(|t| {
            serde_json::from_str(&t).map_err(|e| ProjectionError::BadRow {
                column: col,
                reason: e.to_string(),
            })
        })
        .transpose()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AccountView {
    pub account_id: String,
    pub name: String,
    pub slug: String,
    pub owner_user_id: String,
    pub plan: String,
    pub status: String,
    pub country: String,
    pub billing_email: String,
    pub billing_address: Option<serde_json::Value>,
    pub tax_id: Option<String>,
    pub tax_rate: Decimal,
    pub credit_limit: i64,
    pub low_balance_threshold: i64,
    /// The currency the account is billed in: staff's choice, else the
    /// country's.
    pub currency: String,
    /// Staff's choice of billing currency (`null`: the country's).
    pub currency_override: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl AccountView {
    fn from_row(r: &SqlRow) -> Result<Self, ProjectionError> {
        let country = r.text("country")?;
        let currency_override = r.opt_text("currency")?;
        Ok(Self {
            account_id: r.text("account_id")?,
            name: r.text("name")?,
            slug: r.text("slug")?,
            owner_user_id: r.text("owner_user_id")?,
            plan: r.text("plan")?,
            status: r.text("status")?,
            country: country.clone(),
            billing_email: r.text("billing_email")?,
            billing_address: json(r, "billing_address")?,
            tax_id: r.opt_text("tax_id")?,
            tax_rate: decimal(r, "tax_rate")?,
            credit_limit: r.i64("credit_limit")?,
            low_balance_threshold: r.i64("low_balance_threshold")?,
            currency: match &currency_override {
                Some(c) => c.clone(),
                None => events::CountryCode::parse(&country)
                    .map(|c| events::Currency::for_country(&c).as_str().to_owned())
                    .unwrap_or_else(|_| "USD".to_owned()),
            },
            currency_override,
            created_at: r.text("opened_at")?,
            updated_at: r.text("updated_at")?,
        })
    }
}

const ACCOUNT_COLUMNS: &str = "account_id, name, slug, owner_user_id, plan, status, country, \
    billing_email, billing_address, tax_id, tax_rate, credit_limit, low_balance_threshold, \
    currency, opened_at, updated_at";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeriodView {
    /// The calendar month, `YYYY-MM` (UTC).
    pub period: String,
    pub granted: i64,
    pub used: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BalanceView {
    pub account_id: String,
    pub balance: i64,
    pub held: i64,
    pub available: i64,
    pub credit_limit: i64,
    pub plan: String,
    pub current_period: PeriodView,
    /// The log position of the account's last projected event.
    pub position: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransactionView {
    pub id: String,
    #[serde(rename = "type")]
    pub entry_type: String,
    pub amount: i64,
    pub balance_after: i64,
    pub description: Option<String>,
    pub occurred_at: String,
    pub position: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransactionFilter {
    pub entry_type: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageView {
    pub id: String,
    pub hold_id: Option<String>,
    pub operation: Option<String>,
    pub credits: i64,
    pub units: i64,
    pub cost_version: Option<i64>,
    pub cost_usd: Option<Decimal>,
    pub model: Option<String>,
    pub tokens_input: Option<i64>,
    pub tokens_output: Option<i64>,
    pub related_object_type: Option<String>,
    pub related_object_id: Option<String>,
    pub metadata: Option<serde_json::Value>,
    pub recorded_at: String,
    pub position: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageFilter {
    pub operation: Option<String>,
    pub model: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Operation,
    Model,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AnalyticsRow {
    pub key: String,
    pub credits: i64,
    pub cost_usd: Decimal,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CostHistoryView {
    pub version: i64,
    pub operation: String,
    pub cost: i64,
    pub unit: String,
    pub previous_cost: Option<i64>,
    pub previous_unit: Option<String>,
    pub actor: String,
    pub changed_at: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountFilter {
    /// Matches name, slug or billing email, case-insensitively.
    pub q: Option<String>,
    pub status: Option<String>,
    pub plan: Option<String>,
}

fn opt_time(t: Option<DateTime<Utc>>) -> Arg {
    Arg::OptText(t.map(crate::time_text))
}

/// Queries over the read models.
#[derive(Clone, Debug)]
pub struct ReadModels {
    pub(crate) store: Store,
}

impl ReadModels {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// An account's low-balance threshold, if the account is projected.
    pub async fn low_balance_threshold(
        &self,
        account_id: &str,
    ) -> Result<Option<i64>, ProjectionError> {
        let row = self
            .store
            .fetch_optional(
                "SELECT low_balance_threshold FROM rm_accounts WHERE account_id = $1",
                &[account_id.into()],
            )
            .await?;
        Ok(row.map(|r| r.i64("low_balance_threshold")).transpose()?)
    }

    /// Up to `limit` accounts with a hold or lot due at or before `now`
    /// (the sweeper's work list, from `expiry_schedule`).
    pub async fn accounts_due(
        &self,
        now: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<String>, ProjectionError> {
        let rows = self
            .store
            .fetch_all(
                "SELECT DISTINCT account_id FROM expiry_schedule WHERE due_at <= $1 \
                 ORDER BY account_id LIMIT $2",
                &[crate::time_text(now).as_str().into(), limit.into()],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.text("account_id"))
            .collect::<Result<_, _>>()?)
    }

    /// Forgets an account's schedule entries due at or before `now`, once
    /// its `ExpireDue` has run.
    pub async fn clear_due(
        &self,
        account_id: &str,
        now: DateTime<Utc>,
    ) -> Result<(), ProjectionError> {
        self.store
            .execute(
                "DELETE FROM expiry_schedule WHERE account_id = $1 AND due_at <= $2",
                &[account_id.into(), crate::time_text(now).as_str().into()],
            )
            .await?;
        Ok(())
    }

    pub async fn account(&self, account_id: &str) -> Result<Option<AccountView>, ProjectionError> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM rm_accounts WHERE account_id = $1");
        self.store
            .fetch_optional(&sql, &[account_id.into()])
            .await?
            .map(|r| AccountView::from_row(&r))
            .transpose()
    }

    /// The credits a deduction (or a hold's capture) of this account took,
    /// from the usage log; `None` if the projection holds no such deduction.
    /// The credits a deduction (or capture) took and the log position of
    /// its event.
    pub async fn deduction(
        &self,
        account_id: &str,
        deduction_id: &str,
    ) -> Result<Option<(i64, i64)>, ProjectionError> {
        let row = self
            .store
            .fetch_optional(
                "SELECT credits, position FROM rm_usage WHERE account_id = $1 AND deduction_id = $2",
                &[account_id.into(), deduction_id.into()],
            )
            .await?;
        Ok(match row {
            Some(r) => Some((r.i64("credits")?, r.i64("position")?)),
            None => None,
        })
    }

    pub async fn search_accounts(
        &self,
        filter: &AccountFilter,
        req: &PageRequest,
    ) -> Result<Page<AccountView>, ProjectionError> {
        // The cursor carries the last account id of the previous page.
        let after = match &req.after {
            Some(c) => {
                let id = decode_cursor(ACCOUNTS_CURSOR, c)?;
                uuid::Uuid::parse_str(&id).map_err(|_| ProjectionError::BadCursor)?;
                id
            }
            None => String::new(),
        };
        let pattern = filter.q.as_ref().map(|q| {
            let escaped = q
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM rm_accounts \
             WHERE account_id > $1 \
               AND (CAST($2 AS TEXT) IS NULL OR LOWER(name) LIKE $2 ESCAPE '\\' \
                    OR LOWER(slug) LIKE $2 ESCAPE '\\' OR LOWER(billing_email) LIKE $2 ESCAPE '\\') \
               AND (CAST($3 AS TEXT) IS NULL OR status = $3) \
               AND (CAST($4 AS TEXT) IS NULL OR plan = $4) \
             ORDER BY account_id LIMIT $5"
        );
        let rows = self
            .store
            .fetch_all(
                &sql,
                &[
                    after.into(),
                    pattern.into(),
                    filter.status.clone().into(),
                    filter.plan.clone().into(),
                    (req.limit() + 1).into(),
                ],
            )
            .await?;
        let items = rows
            .iter()
            .map(AccountView::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(page(items, req, |a| {
            encode_cursor(ACCOUNTS_CURSOR, &a.account_id)
        }))
    }

    /// The balance read model; `now` decides which month is current.
    pub async fn balance(
        &self,
        account_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<BalanceView>, ProjectionError> {
        let row = self
            .store
            .fetch_optional(
                "SELECT b.account_id, b.balance, b.held, b.credit_limit, b.period, \
                        b.period_granted, b.period_used, b.last_position, a.plan \
                   FROM rm_balances b JOIN rm_accounts a ON a.account_id = b.account_id \
                  WHERE b.account_id = $1",
                &[account_id.into()],
            )
            .await?;
        let Some(r) = row else { return Ok(None) };
        let current = now.format("%Y-%m").to_string();
        let stored = r.text("period")?;
        let (granted, used) = if stored == current {
            (r.i64("period_granted")?, r.i64("period_used")?)
        } else {
            (0, 0)
        };
        let balance = r.i64("balance")?;
        let held = r.i64("held")?;
        Ok(Some(BalanceView {
            account_id: r.text("account_id")?,
            balance,
            held,
            available: balance - held,
            credit_limit: r.i64("credit_limit")?,
            plan: r.text("plan")?,
            current_period: PeriodView {
                period: current,
                granted,
                used,
            },
            position: r.i64("last_position")?,
        }))
    }

    /// Ledger entries, newest first.
    pub async fn transactions(
        &self,
        account_id: &str,
        filter: &TransactionFilter,
        req: &PageRequest,
    ) -> Result<Page<TransactionView>, ProjectionError> {
        let before = cursor_position(TRANSACTIONS_CURSOR, req)?;
        let rows = self
            .store
            .fetch_all(
                "SELECT reference_id, entry_type, amount, balance_after, description, occurred_at, position \
                   FROM rm_transactions \
                  WHERE account_id = $1 AND position < $2 \
                    AND (CAST($3 AS TEXT) IS NULL OR entry_type = $3) \
                    AND (CAST($4 AS TEXT) IS NULL OR occurred_at >= $4) \
                    AND (CAST($5 AS TEXT) IS NULL OR occurred_at < $5) \
                  ORDER BY position DESC LIMIT $6",
                &[
                    account_id.into(),
                    before.into(),
                    filter.entry_type.clone().into(),
                    opt_time(filter.from),
                    opt_time(filter.to),
                    (req.limit() + 1).into(),
                ],
            )
            .await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(TransactionView {
                    id: r.text("reference_id")?,
                    entry_type: r.text("entry_type")?,
                    amount: r.i64("amount")?,
                    balance_after: r.i64("balance_after")?,
                    description: r.opt_text("description")?,
                    occurred_at: r.text("occurred_at")?,
                    position: r.i64("position")?,
                })
            })
            .collect::<Result<Vec<_>, ProjectionError>>()?;
        Ok(page(items, req, |t| {
            encode_cursor(TRANSACTIONS_CURSOR, &t.position.to_string())
        }))
    }

    /// The usage log, newest first.
    pub async fn usage(
        &self,
        account_id: &str,
        filter: &UsageFilter,
        req: &PageRequest,
    ) -> Result<Page<UsageView>, ProjectionError> {
        let before = cursor_position(USAGE_CURSOR, req)?;
        let rows = self
            .store
            .fetch_all(
                "SELECT deduction_id, hold_id, operation, credits, units, cost_version, cost_usd, \
                        model, tokens_input, tokens_output, related_object_type, related_object_id, \
                        metadata, recorded_at, position \
                   FROM rm_usage \
                  WHERE account_id = $1 AND position < $2 \
                    AND (CAST($3 AS TEXT) IS NULL OR operation = $3) \
                    AND (CAST($4 AS TEXT) IS NULL OR model = $4) \
                    AND (CAST($5 AS TEXT) IS NULL OR recorded_at >= $5) \
                    AND (CAST($6 AS TEXT) IS NULL OR recorded_at < $6) \
                  ORDER BY position DESC LIMIT $7",
                &[
                    account_id.into(),
                    before.into(),
                    filter.operation.clone().into(),
                    filter.model.clone().into(),
                    opt_time(filter.from),
                    opt_time(filter.to),
                    (req.limit() + 1).into(),
                ],
            )
            .await?;
        let items = rows
            .iter()
            .map(|r| {
                Ok(UsageView {
                    id: r.text("deduction_id")?,
                    hold_id: r.opt_text("hold_id")?,
                    operation: r.opt_text("operation")?,
                    credits: r.i64("credits")?,
                    units: r.i64("units")?,
                    cost_version: r.opt_i64("cost_version")?,
                    cost_usd: r
                        .opt_text("cost_usd")?
                        .map(|c| {
                            c.parse()
                                .map_err(|e: rust_decimal::Error| ProjectionError::BadRow {
                                    column: "rm_usage.cost_usd",
                                    reason: e.to_string(),
                                })
                        })
                        .transpose()?,
                    model: r.opt_text("model")?,
                    tokens_input: r.opt_i64("tokens_input")?,
                    tokens_output: r.opt_i64("tokens_output")?,
                    related_object_type: r.opt_text("related_object_type")?,
                    related_object_id: r.opt_text("related_object_id")?,
                    metadata: json(r, "metadata")?,
                    recorded_at: r.text("recorded_at")?,
                    position: r.i64("position")?,
                })
            })
            .collect::<Result<Vec<_>, ProjectionError>>()?;
        Ok(page(items, req, |u| {
            encode_cursor(USAGE_CURSOR, &u.position.to_string())
        }))
    }

    /// Credits, cost and count per day, operation or model over
    /// `[from_day, to_day]` (`YYYY-MM-DD`, inclusive), sorted by key.
    pub async fn usage_analytics(
        &self,
        account_id: &str,
        group_by: GroupBy,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<AnalyticsRow>, ProjectionError> {
        let rows = self
            .store
            .fetch_all(
                "SELECT day, operation, model, credits, cost_usd, count FROM rm_usage_daily \
                  WHERE account_id = $1 AND day >= $2 AND day <= $3",
                &[account_id.into(), from_day.into(), to_day.into()],
            )
            .await?;
        let mut groups: BTreeMap<String, AnalyticsRow> = BTreeMap::new();
        for r in &rows {
            let key = match group_by {
                GroupBy::Day => r.text("day")?,
                GroupBy::Operation => r.text("operation")?,
                GroupBy::Model => r.text("model")?,
            };
            let g = groups.entry(key.clone()).or_insert(AnalyticsRow {
                key,
                credits: 0,
                cost_usd: Decimal::ZERO,
                count: 0,
            });
            g.credits = crate::add_i64(g.credits, r.i64("credits")?, "analytics credits")?;
            g.cost_usd =
                crate::add_money(g.cost_usd, decimal(r, "cost_usd")?, "analytics cost_usd")?;
            g.count = crate::add_i64(g.count, r.i64("count")?, "analytics count")?;
        }
        Ok(groups.into_values().collect())
    }

    /// Every change of the cost table, newest first, optionally for one
    /// operation.
    pub async fn cost_history(
        &self,
        operation: Option<&str>,
    ) -> Result<Vec<CostHistoryView>, ProjectionError> {
        let rows = self
            .store
            .fetch_all(
                "SELECT version, operation, cost, unit, previous_cost, previous_unit, actor, changed_at \
                   FROM rm_cost_history WHERE (CAST($1 AS TEXT) IS NULL OR operation = $1) \
                  ORDER BY version DESC",
                &[operation.map(str::to_owned).into()],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok(CostHistoryView {
                    version: r.i64("version")?,
                    operation: r.text("operation")?,
                    cost: r.i64("cost")?,
                    unit: r.text("unit")?,
                    previous_cost: r.opt_i64("previous_cost")?,
                    previous_unit: r.opt_text("previous_unit")?,
                    actor: r.text("actor")?,
                    changed_at: r.text("changed_at")?,
                })
            })
            .collect()
    }

    /// Every row of every read model, as canonical JSON lines sorted per
    /// table: what a rebuild must reproduce exactly.
    pub async fn dump(&self) -> Result<Vec<String>, ProjectionError> {
        let mut out = Vec::new();
        for (table, order) in [
            ("rm_accounts", "account_id"),
            ("rm_balances", "account_id"),
            ("rm_transactions", "position"),
            ("rm_usage", "position"),
            ("rm_usage_daily", "account_id, day, operation, model"),
            ("rm_cost_history", "version"),
            ("rm_invoices", "invoice_id"),
            ("rm_payments", "payment_id"),
            ("rm_subscriptions", "subscription_id"),
            ("rm_team_members", "member_id"),
        ] {
            let rows = self
                .store
                .fetch_all(&format!("SELECT * FROM {table} ORDER BY {order}"), &[])
                .await?;
            for r in rows {
                out.push(format!("{table}: {}", r.to_json()?));
            }
        }
        Ok(out)
    }
}

const ACCOUNTS_CURSOR: &str = "accounts";
const TRANSACTIONS_CURSOR: &str = "transactions";
const USAGE_CURSOR: &str = "usage";

/// Cursors are opaque to clients: the list's name and the last item's key,
/// hex-encoded, so a cursor of one list is refused by another.
pub(crate) fn encode_cursor(list: &str, key: &str) -> String {
    hex::encode(format!("{list}:{key}"))
}

pub(crate) fn decode_cursor(list: &str, cursor: &str) -> Result<String, ProjectionError> {
    let bytes = hex::decode(cursor).map_err(|_| ProjectionError::BadCursor)?;
    let text = String::from_utf8(bytes).map_err(|_| ProjectionError::BadCursor)?;
    text.strip_prefix(list)
        .and_then(|rest| rest.strip_prefix(':'))
        .map(str::to_owned)
        .ok_or(ProjectionError::BadCursor)
}

fn cursor_position(list: &str, req: &PageRequest) -> Result<i64, ProjectionError> {
    match &req.after {
        None => Ok(i64::MAX),
        Some(c) => decode_cursor(list, c)?
            .parse()
            .map_err(|_| ProjectionError::BadCursor),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_belong_to_one_list() {
        let c = encode_cursor(USAGE_CURSOR, "42");
        assert_eq!(decode_cursor(USAGE_CURSOR, &c).unwrap(), "42");
        assert!(decode_cursor(TRANSACTIONS_CURSOR, &c).is_err());
        assert!(decode_cursor(USAGE_CURSOR, "zz").is_err());
        assert!(decode_cursor(USAGE_CURSOR, "42").is_err());
    }
}
