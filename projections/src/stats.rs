//! Billing statistics over the read models (`GET /v1/admin/billing/stats`,
//! docs/adr/0013-payment-methods-and-stats.md): SQL that works on both
//! PostgreSQL and SQLite, grouped so that few rows come back.
//!
//! Money is decimal text in the read models, and SQLite can only sum it as
//! a float, so money is never summed in SQL: the queries group by
//! `(currency, amount)` and [`ReadModels`] sums `Decimal`s, reading the
//! groups in pages of [`STATS_PAGE_ROWS`]. Credits are integers and are
//! summed in SQL.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use store::sql::Arg;

use crate::{ProjectionError, ReadModels};

/// Groups read per query round trip while summing money.
pub const STATS_PAGE_ROWS: i64 = 1_000;

/// A range of RFC 3339 UTC texts (as the read models store times):
/// `from` inclusive, `to` exclusive; `None` is unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeRange {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// One plan price's active subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivePlanGroup {
    pub plan: String,
    /// `monthly|annual`
    pub billing_cycle: String,
    pub price: Decimal,
    pub currency: String,
    pub count: i64,
}

/// Sums of credits by ledger entry type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreditTotals {
    /// Σ of grants.
    pub granted: i64,
    /// Σ of deductions and captures, as a positive number.
    pub used: i64,
    /// Σ of refunds of deductions.
    pub refunded: i64,
    /// Σ of expiries, as a positive number.
    pub expired: i64,
    /// Net Σ of adjustments (signed).
    pub adjusted: i64,
}

/// Money totals by currency, and how many rows made them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MoneyTotals {
    pub by_currency: BTreeMap<String, Decimal>,
    pub count: i64,
}

fn bad_amount(column: &'static str, raw: &str) -> ProjectionError {
    ProjectionError::BadRow {
        column,
        reason: format!("{raw:?} is not a decimal"),
    }
}

impl ReadModels {
    /// Accounts by status.
    pub async fn accounts_by_status(&self) -> Result<BTreeMap<String, i64>, ProjectionError> {
        let rows = self
            .store
            .fetch_all(
                "SELECT status, COUNT(*) AS n FROM rm_accounts GROUP BY status ORDER BY status",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.text("status")?, r.i64("n")?)))
            .collect()
    }

    /// Active subscriptions grouped by plan, cycle and price (a handful of
    /// rows whatever the number of subscriptions).
    pub async fn active_subscription_groups(
        &self,
    ) -> Result<Vec<ActivePlanGroup>, ProjectionError> {
        let rows = self
            .store
            .fetch_all(
                "SELECT plan, billing_cycle, price, currency, COUNT(*) AS n \
                 FROM rm_subscriptions WHERE status = 'active' \
                 GROUP BY plan, billing_cycle, price, currency \
                 ORDER BY plan, billing_cycle, price, currency",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| {
                let price = r.text("price")?;
                Ok(ActivePlanGroup {
                    plan: r.text("plan")?,
                    billing_cycle: r.text("billing_cycle")?,
                    price: price.parse().map_err(|_| bad_amount("price", &price))?,
                    currency: r.text("currency")?,
                    count: r.i64("n")?,
                })
            })
            .collect()
    }

    /// Σ `total` by currency of the invoices in `status` paid in
    /// `paid_in` (pass the unbounded range for unpaid ones), and their
    /// count.
    pub async fn invoice_totals(
        &self,
        status: &str,
        paid_in: &TimeRange,
    ) -> Result<MoneyTotals, ProjectionError> {
        let mut totals = MoneyTotals::default();
        // Keyset pages over (currency, total) groups.
        let mut after: Option<(String, String)> = None;
        loop {
            let (after_currency, after_total) = after.clone().unzip();
            let args: Vec<Arg> = vec![
                status.into(),
                paid_in.from.clone().into(),
                paid_in.to.clone().into(),
                after_currency.into(),
                after_total.into(),
                STATS_PAGE_ROWS.into(),
            ];
            let rows = self
                .store
                .fetch_all(
                    "SELECT currency, total, COUNT(*) AS n FROM rm_invoices \
                     WHERE status = $1 \
                       AND (CAST($2 AS TEXT) IS NULL OR paid_at >= $2) \
                       AND (CAST($3 AS TEXT) IS NULL OR paid_at < $3) \
                       AND (CAST($4 AS TEXT) IS NULL OR currency > $4 \
                            OR (currency = $4 AND total > $5)) \
                     GROUP BY currency, total ORDER BY currency, total LIMIT $6",
                    &args,
                )
                .await?;
            for r in &rows {
                let currency = r.text("currency")?;
                let raw = r.text("total")?;
                let total: Decimal = raw.parse().map_err(|_| bad_amount("total", &raw))?;
                let n = r.i64("n")?;
                let sum = total
                    .checked_mul(Decimal::from(n))
                    .and_then(|t| {
                        t.checked_add(
                            totals
                                .by_currency
                                .get(&currency)
                                .copied()
                                .unwrap_or_default(),
                        )
                    })
                    .ok_or_else(|| bad_amount("total", "an overflowing sum"))?;
                totals.by_currency.insert(currency.clone(), sum);
                totals.count = totals.count.saturating_add(n);
                after = Some((currency, raw));
            }
            if i64::try_from(rows.len()).unwrap_or(i64::MAX) < STATS_PAGE_ROWS {
                return Ok(totals);
            }
        }
    }

    /// Credits granted, used, refunded, expired and adjusted by the ledger
    /// entries that occurred in `range`.
    pub async fn credit_totals(&self, range: &TimeRange) -> Result<CreditTotals, ProjectionError> {
        let rows = self
            .store
            .fetch_all(
                "SELECT entry_type, CAST(SUM(amount) AS BIGINT) AS total FROM rm_transactions \
                 WHERE (CAST($1 AS TEXT) IS NULL OR occurred_at >= $1) \
                   AND (CAST($2 AS TEXT) IS NULL OR occurred_at < $2) \
                 GROUP BY entry_type",
                &[range.from.clone().into(), range.to.clone().into()],
            )
            .await?;
        let mut totals = CreditTotals::default();
        for r in &rows {
            let sum = r.i64("total")?;
            match r.text("entry_type")?.as_str() {
                "grant" => totals.granted = totals.granted.saturating_add(sum),
                "deduction" | "capture" => totals.used = totals.used.saturating_sub(sum),
                "refund" => totals.refunded = totals.refunded.saturating_add(sum),
                "expiry" => totals.expired = totals.expired.saturating_sub(sum),
                "adjustment" => totals.adjusted = totals.adjusted.saturating_add(sum),
                _ => {}
            }
        }
        Ok(totals)
    }
}
