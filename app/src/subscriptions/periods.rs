//! Period processing: the subscriptions due at an instant take their next
//! steps (cancel at period end, scheduled downgrades, renewal with its
//! invoice, past_due, cancel unpaid), the ended period's credits expire
//! first. Staff run it with an explicit `now` (`run-periods`); the server's
//! ticker ([`crate::jobs::run_period_ticker`]) with the clock. Running it
//! again at the same `now` changes nothing.

use chrono::{DateTime, Duration, Utc};
use events::{Actor, CancelReason, SubscriptionEvent};
use ledger::subscription::Step;
use ledger::{AccountCommand, SubscriptionCommand};
use serde::{Deserialize, Serialize};
use tracing::warn;
use uuid::Uuid;

use super::{
    ensure_invoices, execute, follow_up, load, sub_currency, terms, void_invoices,
    SUBSCRIPTION_INVOICE_DUE_DAYS,
};
use crate::access;
use crate::billing::derived_id;
use crate::billing::settle::run_account_command;
use crate::caller::Caller;
use crate::error::AppError;
use crate::input::Input;
use crate::App;

/// Most subscriptions one run of period processing handles.
pub const RUN_PERIODS_BATCH_MAX: i64 = 500;
/// Most steps (renewal, past_due, cancel) one subscription takes in one run.
pub const STEPS_PER_SUBSCRIPTION_MAX: usize = 8;

/// `POST /admin/billing/run-periods`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunPeriodsRequest {
    /// The instant to process at (RFC 3339); default the server's clock. A
    /// time in the future (past [`CLOCK_SKEW_SECONDS`]) is refused unless
    /// the server runs with `LEDGER_ALLOW_CLOCK_OVERRIDE=true` (tests and
    /// demos that move time).
    #[cfg_attr(feature = "openapi", schema(value_type = Option<DateTime<Utc>>))]
    pub now: Option<String>,
}

/// How far ahead of the server's clock a `now` may be without the clock
/// override: what clocks of two well-run hosts differ by.
pub const CLOCK_SKEW_SECONDS: i64 = 5;

/// What one run of period processing did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeriodRun {
    /// Subscriptions looked at.
    pub processed: usize,
    /// Of those, how many changed (renewed, past_due, canceled…).
    pub changed: usize,
    /// Of those, how many failed (logged; retried by the next run).
    pub failed: usize,
    /// Whether more may be due than this run's batch took.
    pub more: bool,
}

/// A run of period processing and the log's head after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PeriodRunAt {
    #[serde(flatten)]
    pub run: PeriodRun,
    pub position: i64,
}

/// Processes the subscriptions due at the `now` the staff names.
pub async fn run_periods(
    app: &App,
    caller: &Caller,
    input: Input<RunPeriodsRequest>,
) -> Result<PeriodRunAt, AppError> {
    caller.require(access::RUN_PERIODS)?;
    let req = input.parse()?.value;
    let clock = crate::now();
    let now = match &req.now {
        Some(raw) => crate::input::time("now", raw)?,
        None => clock,
    };
    // A `now` in the future would expire credits early and stamp later
    // real events in the future: only a server started to move time takes
    // one.
    if now > clock + Duration::seconds(CLOCK_SKEW_SECONDS) && !app.settings.allow_clock_override {
        return Err(AppError::invalid_field(
            "now",
            "now is in the future: the server takes one only when started with \
             LEDGER_ALLOW_CLOCK_OVERRIDE=true",
        ));
    }
    let run = process_due(app, &caller.actor(), now).await?;
    let position = app.store.head_position().await?;
    Ok(PeriodRunAt { run, position })
}

/// Processes the subscriptions due at `now` (at most
/// [`RUN_PERIODS_BATCH_MAX`]). Running it again at the same `now` changes
/// nothing.
pub async fn process_due(
    app: &App,
    actor: &Actor,
    now: DateTime<Utc>,
) -> Result<PeriodRun, AppError> {
    app.fresh_read_models().await?;
    let ids = app
        .read_models
        .subscriptions_maybe_due(
            &projections::time_text(now),
            &projections::time_text(
                now - Duration::days(ledger::subscription::PAST_DUE_GRACE_DAYS),
            ),
            "",
            RUN_PERIODS_BATCH_MAX,
        )
        .await?;
    let mut run = PeriodRun {
        more: i64::try_from(ids.len()).unwrap_or(i64::MAX) >= RUN_PERIODS_BATCH_MAX,
        ..PeriodRun::default()
    };
    for raw in ids {
        let Ok(id) = Uuid::parse_str(&raw) else {
            continue;
        };
        run.processed += 1;
        match process_one(app, actor, id, now).await {
            Ok(true) => run.changed += 1,
            Ok(false) => {}
            Err(e) => {
                run.failed += 1;
                warn!(subscription = %id, error = ?e, "subscription period processing failed");
            }
        }
    }
    Ok(run)
}

/// Takes every step due at `now` for one subscription; true if it changed.
async fn process_one(
    app: &App,
    actor: &Actor,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, AppError> {
    let mut sub = load(app, id).await?;
    let Some(account) = sub.account_id() else {
        return Ok(false);
    };
    // The ended period's credits leave the balance at its end first.
    run_account_command(app, actor, account, AccountCommand::ExpireDue { now }, None).await?;
    let mut changed = false;
    for _ in 0..STEPS_PER_SUBSCRIPTION_MAX {
        let Some(step) = sub.next_step(now) else {
            break;
        };
        let command = match step {
            Step::CancelAtPeriodEnd => SubscriptionCommand::Cancel {
                at_period_end: false,
                reason: CancelReason::Customer,
                now,
            },
            Step::CancelUnpaid => SubscriptionCommand::Cancel {
                at_period_end: false,
                reason: CancelReason::Unpaid,
                now,
            },
            Step::PastDue { invoice_id } => SubscriptionCommand::MarkPastDue {
                invoice_id,
                payment_failed: false,
                now,
            },
            Step::Renew { plan } => {
                let (_, end) = sub.period().ok_or(AppError::Internal)?;
                // Today's catalog terms of the plan in the subscription's
                // currency, else the ones recorded (a renewal never
                // changes the currency).
                let catalog = app.catalog.get().await;
                let currency = sub_currency(&sub);
                let terms = catalog
                    .plan(&plan)
                    .filter(|p| p.active && p.price_in(&currency).is_some())
                    .map(|p| terms(p, &currency))
                    .or_else(|| {
                        sub.scheduled_plan()
                            .filter(|p| p.slug == plan)
                            .or(sub.plan())
                            .cloned()
                    })
                    .ok_or(AppError::Internal)?;
                SubscriptionCommand::Renew {
                    plan: terms,
                    invoice_id: derived_id(&[
                        "subscription-invoice",
                        &id.to_string(),
                        "renewal",
                        &end.timestamp().to_string(),
                    ]),
                    invoice_due_at: end.max(now) + Duration::days(SUBSCRIPTION_INVOICE_DUE_DAYS),
                    now,
                }
            }
        };
        let done = execute(app, actor, id, command, None, &[]).await?;
        if done.events.is_empty() {
            break;
        }
        changed = true;
        for e in &done.events {
            if let SubscriptionEvent::SubscriptionCanceled(c) = &e.event {
                void_invoices(app, actor, &c.open_invoices, now).await;
            }
        }
        sub = done.state.ok_or(AppError::Internal)?;
    }
    if changed {
        follow_up(app, actor, &sub, now).await?;
    } else {
        // A step a crash may have left undone.
        ensure_invoices(app, actor, &sub, now).await?;
    }
    Ok(changed)
}
