//! Billing statistics (issue 6 item 8,
//! docs/adr/0013-payment-methods-and-stats.md): accounts by status, active
//! subscriptions and MRR, revenue of the invoices paid in a range,
//! outstanding invoices, and the credits granted, used and expired in the
//! same range, all from the read models (`projections::stats`).
//!
//! Money is summed as `Decimal` in Rust, never in SQL (SQLite would sum
//! decimal text as a float), and shown as decimal strings.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use events::{AccountStatus, Currency};
use ledger::invoice::round_money;
use projections::stats::{ActivePlanGroup, TimeRange};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::access;
use crate::caller::Caller;
use crate::error::AppError;
use crate::input::Query;
use crate::{now, App};

/// Months in a year: an annual plan's monthly share is its price / 12.
const MONTHS_PER_YEAR: i64 = 12;

/// Every account status, so a count of zero is shown rather than missing.
const ACCOUNT_STATUSES: [AccountStatus; 5] = [
    AccountStatus::Trial,
    AccountStatus::Active,
    AccountStatus::PastDue,
    AccountStatus::Suspended,
    AccountStatus::Cancelled,
];

/// `?from=&to=` of the statistics.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct StatsQuery {
    /// RFC 3339; start of the range (inclusive) of revenue and credits.
    /// Unbounded when absent.
    #[cfg_attr(feature = "openapi", param(value_type = Option<DateTime<Utc>>))]
    pub from: Option<String>,
    /// RFC 3339; end of the range (exclusive), later than `from`.
    /// Unbounded when absent.
    #[cfg_attr(feature = "openapi", param(value_type = Option<DateTime<Utc>>))]
    pub to: Option<String>,
    /// Wait (at most 5 s) until the read models reach this event-log position.
    #[serde(rename = "min_position")]
    pub _min_position: Option<i64>,
}

/// `from` and `to`, each unbounded when `None`.
type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The range asked for, checked: both ends RFC 3339, `from` before `to`.
fn range(q: &StatsQuery) -> Result<Bounds, AppError> {
    let from = q
        .from
        .as_deref()
        .map(|r| crate::input::time("from", r))
        .transpose()?;
    let to =
        q.to.as_deref()
            .map(|r| crate::input::time("to", r))
            .transpose()?;
    if let (Some(f), Some(t)) = (from, to) {
        if f >= t {
            return Err(AppError::invalid_field("to", "to must be later than from"));
        }
    }
    Ok((from, to))
}

/// Monthly recurring revenue by currency: Σ monthly prices plus Σ annual
/// prices / 12, summed exactly and rounded half away from zero to the
/// currency's minor unit once, at the end.
fn mrr(groups: &[ActivePlanGroup]) -> Result<BTreeMap<String, Decimal>, AppError> {
    let mut monthly: BTreeMap<&str, Decimal> = BTreeMap::new();
    let mut annual: BTreeMap<&str, Decimal> = BTreeMap::new();
    for g in groups {
        // Every currency with a subscription gets an MRR, even an
        // annual-only one.
        monthly.entry(&g.currency).or_default();
        let into = if g.billing_cycle == "annual" {
            &mut annual
        } else {
            &mut monthly
        };
        let sum = into.entry(&g.currency).or_default();
        *sum = g
            .price
            .checked_mul(Decimal::from(g.count))
            .and_then(|v| v.checked_add(*sum))
            .ok_or(AppError::Internal)?;
    }
    monthly
        .into_iter()
        .map(|(currency, m)| {
            let a = annual.get(currency).copied().unwrap_or_default();
            let total = m
                .checked_add(a / Decimal::from(MONTHS_PER_YEAR))
                .ok_or(AppError::Internal)?;
            let rounded = match Currency::parse(currency) {
                Ok(c) => round_money(total, &c),
                Err(_) => total,
            };
            Ok((currency.to_owned(), rounded))
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StatsRange {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AccountStats {
    pub total: i64,
    /// Every status (`trial|active|past_due|suspended|cancelled`) and its
    /// count.
    pub by_status: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SubscriptionStats {
    /// Subscriptions whose status is `active`.
    pub active: i64,
    /// Active subscriptions by plan slug.
    pub by_plan: BTreeMap<String, i64>,
}

/// Money by currency (ISO 4217 → decimal string) and the invoices it sums.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MoneyStats {
    pub invoices: i64,
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub by_currency: BTreeMap<String, Decimal>,
}

/// Credits of the ledger entries that occurred in the range (all time when
/// no range is given).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreditStats {
    /// `range` or `all_time`.
    pub scope: &'static str,
    /// Granted (subscriptions, purchases, promotions, trials, adjustments
    /// by grant).
    pub issued: i64,
    /// Deducted and captured.
    pub used: i64,
    /// Given back by refunds of deductions.
    pub refunded: i64,
    /// Left the balance when their grant expired.
    pub expired: i64,
    /// Net of admin adjustments (signed).
    pub adjusted: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BillingStats {
    /// The range of `revenue` and `credits`.
    pub range: StatsRange,
    pub accounts: AccountStats,
    pub subscriptions: SubscriptionStats,
    /// Monthly recurring revenue of the active subscriptions by currency:
    /// monthly prices plus annual prices / 12, rounded to the minor unit.
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, String>))]
    pub mrr: BTreeMap<String, Decimal>,
    /// Invoices paid in the range.
    pub revenue: MoneyStats,
    /// Pending invoices (whenever issued).
    pub outstanding: MoneyStats,
    pub credits: CreditStats,
    pub generated_at: DateTime<Utc>,
}

/// Accounts by status, active subscriptions, MRR, revenue in a range,
/// outstanding invoices, credits issued, used and expired.
pub async fn stats(
    app: &App,
    caller: &Caller,
    min_position: Option<i64>,
    query: Query<StatsQuery>,
) -> Result<BillingStats, AppError> {
    caller.require(access::READ_BILLING_STATS)?;
    let q = query.parse()?;
    let (from, to) = range(&q)?;
    app.wait_for(min_position).await?;
    let rm = &app.read_models;
    let span = TimeRange {
        from: from.map(projections::time_text),
        to: to.map(projections::time_text),
    };

    let counted = rm.accounts_by_status().await?;
    let mut by_status: BTreeMap<String, i64> = ACCOUNT_STATUSES
        .iter()
        .map(|s| (s.as_str().to_owned(), 0))
        .collect();
    by_status.extend(counted);
    let accounts_total: i64 = by_status.values().sum();

    let groups = rm.active_subscription_groups().await?;
    let mut by_plan: BTreeMap<String, i64> = BTreeMap::new();
    for g in &groups {
        *by_plan.entry(g.plan.clone()).or_default() += g.count;
    }
    let active: i64 = by_plan.values().sum();

    let revenue = rm.invoice_totals("paid", &span).await?;
    let outstanding = rm.invoice_totals("pending", &TimeRange::default()).await?;
    let credits = rm.credit_totals(&span).await?;
    let scope = if from.is_some() || to.is_some() {
        "range"
    } else {
        "all_time"
    };

    Ok(BillingStats {
        range: StatsRange { from, to },
        accounts: AccountStats {
            total: accounts_total,
            by_status,
        },
        subscriptions: SubscriptionStats { active, by_plan },
        mrr: mrr(&groups)?,
        revenue: MoneyStats {
            invoices: revenue.count,
            by_currency: revenue.by_currency,
        },
        outstanding: MoneyStats {
            invoices: outstanding.count,
            by_currency: outstanding.by_currency,
        },
        credits: CreditStats {
            scope,
            issued: credits.granted,
            used: credits.used,
            refunded: credits.refunded,
            expired: credits.expired,
            adjusted: credits.adjusted,
        },
        generated_at: now(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(plan: &str, cycle: &str, cents: i64, currency: &str, count: i64) -> ActivePlanGroup {
        ActivePlanGroup {
            plan: plan.into(),
            billing_cycle: cycle.into(),
            price: Decimal::new(cents, 2),
            currency: currency.into(),
            count,
        }
    }

    #[test]
    fn mrr_adds_monthly_prices_and_a_twelfth_of_annual_ones_rounded_once() {
        let groups = [
            group("starter", "monthly", 2_900, "USD", 2),
            // 100.00 / 12 = 8.333…, and 3 × that = 25.00 exactly: rounding
            // once at the end, not per subscription (3 × 8.33 = 24.99).
            group("yearly", "annual", 10_000, "USD", 3),
            group("eu", "annual", 1_000, "EUR", 1),
        ];
        let m = mrr(&groups).unwrap();
        assert_eq!(m["USD"].to_string(), "83.00");
        // 10.00 / 12 = 0.8333… → 0.83
        assert_eq!(m["EUR"].to_string(), "0.83");
        assert_eq!(m.len(), 2);
        assert!(mrr(&[]).unwrap().is_empty());
    }

    #[test]
    fn the_range_must_be_rfc_3339_and_ordered() {
        let q = |from: Option<&str>, to: Option<&str>| StatsQuery {
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            _min_position: None,
        };
        assert!(range(&q(None, None)).is_ok());
        assert!(range(&q(
            Some("2026-03-01T00:00:00Z"),
            Some("2026-04-01T00:00:00+02:00")
        ))
        .is_ok());
        for (from, to) in [
            (Some("yesterday"), None),
            (None, Some("2026-13-01T00:00:00Z")),
            (Some("2026-04-01T00:00:00Z"), Some("2026-03-01T00:00:00Z")),
            (Some("2026-04-01T00:00:00Z"), Some("2026-04-01T00:00:00Z")),
        ] {
            assert!(range(&q(from, to)).is_err(), "{from:?} {to:?}");
        }
    }
}
