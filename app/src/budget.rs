//! Monthly credit budgets (issue 17): `PUT|GET /accounts/{id}/budget`.
//! The budget lives in the account's own stream, so the hard cap is
//! decided with every deduction and hold (no double spend past it under
//! concurrency) and each threshold is reached once a month by the command
//! that reaches it (`BudgetThresholdReached`, which the NATS outbox and
//! the notifications turn into alerts).

use chrono::Utc;
use events::Budget;
use ledger::AccountCommand;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::access;
use crate::caller::{Caller, Target};
use crate::error::AppError;
use crate::input::Input;
use crate::{now, App};

/// The thresholds of a budget that names none.
pub const DEFAULT_THRESHOLDS_PERCENT: [u32; 3] = [50, 80, 100];

/// `PUT /accounts/{id}/budget`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BudgetRequest {
    /// Credits a calendar month (UTC) may use; `null` removes the budget.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 1_000_000_000_000_i64)
    )]
    pub monthly_credits: Option<i64>,
    /// Percents of `monthly_credits` that alert once a month each (1 to
    /// 1000, at most 10; default `[50, 80, 100]`).
    pub thresholds_percent: Option<Vec<u32>>,
    /// Refuse deductions and holds beyond `monthly_credits` (402
    /// `budget_exceeded`); default false.
    #[serde(default)]
    pub hard_cap: bool,
}

/// The budget as answered: its settings, this month's usage and the
/// thresholds reached this month.
fn budget_json(account: &ledger::CreditAccount, id: &str) -> Value {
    let now = Utc::now();
    let used = account.used_in_month(now);
    let budget = account.budget();
    let monthly = budget.map(|b| b.monthly_credits);
    json!({
        "account_id": id,
        "monthly_credits": monthly,
        "thresholds_percent": budget
            .map(|b| b.thresholds_percent.clone())
            .unwrap_or_else(|| DEFAULT_THRESHOLDS_PERCENT.to_vec()),
        "hard_cap": budget.is_some_and(|b| b.hard_cap),
        "period": now.format("%Y-%m").to_string(),
        "used": used,
        "held": account.held(),
        "remaining": monthly.map(|m| (m - used).max(0)),
        "thresholds_reached": account.thresholds_reached(now),
    })
}

/// The account's budget and this month's usage, read from its stream
/// (always fresh).
pub async fn get(app: &App, caller: &Caller, target: Target) -> Result<Value, AppError> {
    let account = caller.target(access::MANAGE_BUDGET, target)?;
    let loaded = open_account(app, account).await?;
    Ok(budget_json(&loaded, &account.to_string()))
}

/// The account's state from its stream (what its own settings are read
/// from); 404 unless it is open.
pub(crate) async fn open_account(
    app: &App,
    account: events::AccountId,
) -> Result<ledger::CreditAccount, AppError> {
    let loaded = app
        .store
        .load::<ledger::CreditAccount>(&account.to_string())
        .await?
        .aggregate;
    if !loaded.is_open() {
        return Err(AppError::NotFound("account not found".into()));
    }
    Ok(loaded)
}

/// Sets or (with `monthly_credits: null`) removes the budget.
pub async fn put(
    app: &App,
    caller: &Caller,
    target: Target,
    input: Input<BudgetRequest>,
) -> Result<Value, AppError> {
    let (account, req) = caller.target_with_body(access::MANAGE_BUDGET, target, input)?;
    let budget = match req.monthly_credits {
        None => None,
        Some(monthly) => {
            let mut thresholds = req
                .thresholds_percent
                .unwrap_or_else(|| DEFAULT_THRESHOLDS_PERCENT.to_vec());
            thresholds.sort_unstable();
            thresholds.dedup();
            Some(Budget {
                monthly_credits: monthly,
                thresholds_percent: thresholds,
                hard_cap: req.hard_cap,
            })
        }
    };
    let done = app
        .run(
            caller,
            account,
            AccountCommand::SetBudget { budget, now: now() },
            None,
            &[],
        )
        .await?;
    let position = app.position_of(&done).await?;
    let state = done.state.as_ref().ok_or(AppError::Internal)?;
    let mut body = budget_json(state, &account.to_string());
    body["position"] = json!(position);
    Ok(body)
}
