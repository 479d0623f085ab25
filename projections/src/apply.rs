//! One event → the read-model rows it changes, inside the projector's
//! transaction.

use chrono::{DateTime, Utc};
use events::{AccountEvent, CatalogEvent, Usage, ACCOUNT_AGGREGATE_TYPE, CATALOG_AGGREGATE_TYPE};
use rust_decimal::Decimal;
use store::sql::{Arg, SqlTx};
use store::StoredEvent;
use uuid::Uuid;

use crate::billing::{self, BillingEvent};
use crate::{time_text, ProjectionError};

fn month(t: DateTime<Utc>) -> String {
    t.format("%Y-%m").to_string()
}

fn day(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d").to_string()
}

fn bad(e: &StoredEvent, reason: impl ToString) -> ProjectionError {
    ProjectionError::BadEvent {
        position: e.position,
        event_type: e.event_type.clone(),
        reason: reason.to_string(),
    }
}

/// Applies one stored event. Events of other aggregate types are skipped.
pub(crate) async fn apply(tx: &mut SqlTx, stored: &StoredEvent) -> Result<(), ProjectionError> {
    match stored.aggregate_type.as_str() {
        ACCOUNT_AGGREGATE_TYPE => {
            let event: AccountEvent =
                serde_json::from_value(stored.payload.clone()).map_err(|e| bad(stored, e))?;
            apply_account(tx, stored, event).await
        }
        CATALOG_AGGREGATE_TYPE => {
            let event: CatalogEvent =
                serde_json::from_value(stored.payload.clone()).map_err(|e| bad(stored, e))?;
            apply_catalog(tx, stored, event).await
        }
        events::SUBSCRIPTION_AGGREGATE_TYPE => {
            let event: events::SubscriptionEvent =
                serde_json::from_value(stored.payload.clone()).map_err(|e| bad(stored, e))?;
            crate::subscriptions::apply(tx, stored, &event).await
        }
        other => match BillingEvent::parse(other, &stored.payload.to_string()) {
            Some(event) => apply_billing(tx, stored, event.map_err(|e| bad(stored, e))?).await,
            None => Ok(()),
        },
    }
}

/// An invoice or payment event: one INSERT or UPDATE of its row.
async fn apply_billing(
    tx: &mut SqlTx,
    stored: &StoredEvent,
    event: BillingEvent,
) -> Result<(), ProjectionError> {
    let (table, change) = billing::change(&event, stored.position);
    change.write(tx, table, &stored.aggregate_id).await
}

struct Entry<'a> {
    entry_type: &'a str,
    reference_id: Uuid,
    description: Option<String>,
}

async fn apply_account(
    tx: &mut SqlTx,
    stored: &StoredEvent,
    event: AccountEvent,
) -> Result<(), ProjectionError> {
    let id = stored.aggregate_id.clone();
    let at = event.occurred_at();
    let position = stored.position;
    match &event {
        AccountEvent::AccountOpened(e) => {
            tx.execute(
                "INSERT INTO rm_accounts (account_id, name, slug, owner_user_id, plan, status, \
                   country, billing_email, billing_address, tax_id, tax_rate, credit_limit, \
                   low_balance_threshold, opened_at, updated_at, last_position) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, $9, $10, $11, $12, $12, $13)",
                &[
                    id.clone().into(),
                    e.name.clone().into(),
                    e.slug.clone().into(),
                    e.owner_user_id.clone().into(),
                    e.plan.clone().into(),
                    e.status.as_str().into(),
                    e.country.as_str().into(),
                    e.billing_email.clone().into(),
                    e.tax_rate.to_string().into(),
                    e.credit_limit.into(),
                    e.low_balance_threshold.into(),
                    time_text(at).into(),
                    position.into(),
                ],
            )
            .await?;
            tx.execute(
                "INSERT INTO rm_balances (account_id, balance, held, credit_limit, period, \
                   period_granted, period_used, last_position, updated_at) \
                 VALUES ($1, 0, 0, $2, $3, 0, 0, $4, $5)",
                &[
                    id.into(),
                    e.credit_limit.into(),
                    month(at).into(),
                    position.into(),
                    time_text(at).into(),
                ],
            )
            .await?;
        }
        AccountEvent::AccountUpdated(e) => {
            let address = e
                .billing_address
                .as_ref()
                .map(|a| serde_json::to_string(a).unwrap_or_default());
            tx.execute(
                "UPDATE rm_accounts SET name = COALESCE($2, name), \
                   billing_email = COALESCE($3, billing_email), \
                   billing_address = COALESCE($4, billing_address), \
                   tax_id = COALESCE($5, tax_id), tax_rate = COALESCE($6, tax_rate), \
                   country = COALESCE($7, country), credit_limit = COALESCE($8, credit_limit), \
                   low_balance_threshold = COALESCE($9, low_balance_threshold), \
                   updated_at = $10, last_position = $11 \
                 WHERE account_id = $1",
                &[
                    id.clone().into(),
                    e.name.clone().into(),
                    e.billing_email.clone().into(),
                    address.into(),
                    e.tax_id.clone().into(),
                    e.tax_rate.map(|r| r.to_string()).into(),
                    e.country.as_ref().map(|c| c.as_str().to_owned()).into(),
                    e.credit_limit.into(),
                    e.low_balance_threshold.into(),
                    time_text(at).into(),
                    position.into(),
                ],
            )
            .await?;
            if let Some(limit) = e.credit_limit {
                tx.execute(
                    "UPDATE rm_balances SET credit_limit = $2, last_position = $3 WHERE account_id = $1",
                    &[id.into(), limit.into(), position.into()],
                )
                .await?;
            }
        }
        AccountEvent::PlanChanged(e) => {
            touch_account(tx, &id, "plan", &e.to, at, position).await?;
        }
        AccountEvent::AccountSuspended(_) => {
            touch_account(tx, &id, "status", "suspended", at, position).await?;
        }
        AccountEvent::AccountReactivated(e) => {
            touch_account(tx, &id, "status", e.status.as_str(), at, position).await?;
        }
        AccountEvent::AccountStatusChanged(e) => {
            // While suspended it is the status to return to (the
            // reactivation event carries it), not the status shown.
            tx.execute(
                "UPDATE rm_accounts SET status = CASE WHEN status = 'suspended' THEN status ELSE $2 END, \
                 updated_at = $3, last_position = $4 WHERE account_id = $1",
                &[
                    id.as_str().into(),
                    e.to.as_str().into(),
                    time_text(at).into(),
                    position.into(),
                ],
            )
            .await?;
        }
        AccountEvent::CreditsHeld(e) => {
            move_balance(tx, &id, &event, 0, 0, at, position).await?;
            schedule(tx, &id, e.hold_id, e.expires_at).await?;
        }
        AccountEvent::HoldReleased(e) => {
            move_balance(tx, &id, &event, 0, 0, at, position).await?;
            unschedule(tx, &id, e.hold_id).await?;
        }
        AccountEvent::CreditsGranted(e) => {
            move_balance(tx, &id, &event, e.credits, 0, at, position).await?;
            if let Some(expires_at) = e.expires_at {
                schedule(tx, &id, e.grant_id, expires_at).await?;
            }
            let description = e
                .description
                .clone()
                .or_else(|| Some(format!("{:?} grant", e.source).to_lowercase()));
            entry(
                tx,
                stored,
                &event,
                Entry {
                    entry_type: "grant",
                    reference_id: e.grant_id,
                    description,
                },
            )
            .await?;
        }
        AccountEvent::CreditsDeducted(e) => {
            move_balance(tx, &id, &event, 0, e.credits, at, position).await?;
            let description = e.usage.operation.as_ref().map(|o| o.to_string());
            entry(
                tx,
                stored,
                &event,
                Entry {
                    entry_type: "deduction",
                    reference_id: e.deduction_id,
                    description,
                },
            )
            .await?;
            usage(tx, stored, e.deduction_id, None, e.credits, &e.usage, at).await?;
        }
        AccountEvent::HoldCaptured(e) => {
            move_balance(tx, &id, &event, 0, e.captured, at, position).await?;
            unschedule(tx, &id, e.hold_id).await?;
            let description = e.usage.operation.as_ref().map(|o| o.to_string());
            entry(
                tx,
                stored,
                &event,
                Entry {
                    entry_type: "capture",
                    reference_id: e.deduction_id,
                    description,
                },
            )
            .await?;
            usage(
                tx,
                stored,
                e.deduction_id,
                Some(e.hold_id),
                e.captured,
                &e.usage,
                at,
            )
            .await?;
        }
        AccountEvent::CreditsRefunded(e) => {
            move_balance(tx, &id, &event, 0, 0, at, position).await?;
            for lot in &e.lots {
                if let Some(expires_at) = lot.expires_at {
                    schedule(tx, &id, lot.lot_id, expires_at).await?;
                }
            }
            entry(
                tx,
                stored,
                &event,
                Entry {
                    entry_type: "refund",
                    reference_id: e.refund_id,
                    description: Some(e.reason.clone()),
                },
            )
            .await?;
        }
        AccountEvent::CreditsAdjusted(e) => {
            move_balance(tx, &id, &event, 0, 0, at, position).await?;
            entry(
                tx,
                stored,
                &event,
                Entry {
                    entry_type: "adjustment",
                    reference_id: e.adjustment_id,
                    description: Some(e.reason.clone()),
                },
            )
            .await?;
        }
        AccountEvent::CreditsExpired(e) => {
            move_balance(tx, &id, &event, 0, 0, at, position).await?;
            unschedule(tx, &id, e.lot_id).await?;
            entry(
                tx,
                stored,
                &event,
                Entry {
                    entry_type: "expiry",
                    reference_id: e.lot_id,
                    description: Some("credits expired".into()),
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// Puts a hold's TTL or a lot's expiry on the sweeper's schedule.
async fn schedule(
    tx: &mut SqlTx,
    id: &str,
    item: Uuid,
    due_at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    tx.execute(
        "INSERT INTO expiry_schedule (account_id, item_id, due_at) VALUES ($1, $2, $3) \
         ON CONFLICT (account_id, item_id) DO NOTHING",
        &[id.into(), item.to_string().into(), time_text(due_at).into()],
    )
    .await?;
    Ok(())
}

async fn unschedule(tx: &mut SqlTx, id: &str, item: Uuid) -> Result<(), ProjectionError> {
    tx.execute(
        "DELETE FROM expiry_schedule WHERE account_id = $1 AND item_id = $2",
        &[id.into(), item.to_string().into()],
    )
    .await?;
    Ok(())
}

async fn touch_account(
    tx: &mut SqlTx,
    id: &str,
    column: &'static str,
    value: &str,
    at: DateTime<Utc>,
    position: i64,
) -> Result<(), ProjectionError> {
    // `column` is one of a fixed set of names chosen above, never input.
    let sql = format!(
        "UPDATE rm_accounts SET {column} = $2, updated_at = $3, last_position = $4 WHERE account_id = $1"
    );
    tx.execute(
        &sql,
        &[
            id.into(),
            value.into(),
            time_text(at).into(),
            position.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Balance and held follow the events' signed deltas; the period counters
/// restart when the event falls in a later month.
async fn move_balance(
    tx: &mut SqlTx,
    id: &str,
    event: &AccountEvent,
    granted: i64,
    used: i64,
    at: DateTime<Utc>,
    position: i64,
) -> Result<(), ProjectionError> {
    tx.execute(
        "UPDATE rm_balances SET balance = balance + $2, held = held + $3, \
           period_granted = CASE WHEN period = $4 THEN period_granted + $5 ELSE $5 END, \
           period_used = CASE WHEN period = $4 THEN period_used + $6 ELSE $6 END, \
           period = $4, last_position = $7, updated_at = $8 \
         WHERE account_id = $1",
        &[
            id.into(),
            event.balance_delta().into(),
            event.held_delta().into(),
            month(at).into(),
            granted.into(),
            used.into(),
            position.into(),
            time_text(at).into(),
        ],
    )
    .await?;
    Ok(())
}

async fn entry(
    tx: &mut SqlTx,
    stored: &StoredEvent,
    event: &AccountEvent,
    entry: Entry<'_>,
) -> Result<(), ProjectionError> {
    let balance_after = event
        .balance_after()
        .ok_or_else(|| bad(stored, "a ledger entry without balance_after"))?;
    tx.execute(
        "INSERT INTO rm_transactions (position, account_id, sequence, entry_type, reference_id, \
           amount, balance_after, description, occurred_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        &[
            stored.position.into(),
            stored.aggregate_id.clone().into(),
            stored.sequence.into(),
            entry.entry_type.into(),
            entry.reference_id.to_string().into(),
            event.balance_delta().into(),
            balance_after.into(),
            entry.description.into(),
            time_text(event.occurred_at()).into(),
        ],
    )
    .await?;
    Ok(())
}

fn opt_u64(v: Option<u64>) -> Arg {
    Arg::OptI64(v.map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
}

async fn usage(
    tx: &mut SqlTx,
    stored: &StoredEvent,
    deduction_id: Uuid,
    hold_id: Option<Uuid>,
    credits: i64,
    usage: &Usage,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let operation = usage.operation.as_ref().map(|o| o.to_string());
    tx.execute(
        "INSERT INTO rm_usage (position, account_id, deduction_id, hold_id, operation, credits, \
           units, cost_version, cost_usd, model, tokens_input, tokens_output, \
           related_object_type, related_object_id, metadata, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        &[
            stored.position.into(),
            stored.aggregate_id.clone().into(),
            deduction_id.to_string().into(),
            hold_id.map(|h| h.to_string()).into(),
            operation.clone().into(),
            credits.into(),
            opt_u64(Some(usage.units)),
            opt_u64(usage.cost_version),
            usage.cost_usd.map(|c| c.to_string()).into(),
            usage.model.clone().into(),
            opt_u64(usage.tokens_input),
            opt_u64(usage.tokens_output),
            usage.related_object_type.clone().into(),
            usage.related_object_id.clone().into(),
            usage.metadata.as_ref().map(|m| m.to_string()).into(),
            time_text(at).into(),
        ],
    )
    .await?;
    // Daily totals: money is summed as Decimal here, not by the database.
    let key: [Arg; 4] = [
        stored.aggregate_id.clone().into(),
        day(at).into(),
        operation.unwrap_or_default().into(),
        usage.model.clone().unwrap_or_default().into(),
    ];
    let current = tx
        .fetch_optional(
            "SELECT cost_usd FROM rm_usage_daily \
             WHERE account_id = $1 AND day = $2 AND operation = $3 AND model = $4",
            &key,
        )
        .await?;
    let cost_before = match current {
        Some(row) => {
            row.text("cost_usd")?
                .parse::<Decimal>()
                .map_err(|e| ProjectionError::BadRow {
                    column: "rm_usage_daily.cost_usd",
                    reason: e.to_string(),
                })?
        }
        None => Decimal::ZERO,
    };
    let cost_after = crate::add_money(
        cost_before,
        usage.cost_usd.unwrap_or(Decimal::ZERO),
        "rm_usage_daily.cost_usd",
    )?;
    let mut args = key.to_vec();
    args.push(credits.into());
    args.push(cost_after.to_string().into());
    tx.execute(
        "INSERT INTO rm_usage_daily (account_id, day, operation, model, credits, cost_usd, count) \
         VALUES ($1, $2, $3, $4, $5, $6, 1) \
         ON CONFLICT (account_id, day, operation, model) DO UPDATE SET \
           credits = rm_usage_daily.credits + excluded.credits, \
           cost_usd = excluded.cost_usd, count = rm_usage_daily.count + 1",
        &args,
    )
    .await?;
    Ok(())
}

async fn apply_catalog(
    tx: &mut SqlTx,
    stored: &StoredEvent,
    event: CatalogEvent,
) -> Result<(), ProjectionError> {
    if let CatalogEvent::CreditCostSet(e) = event {
        tx.execute(
            "INSERT INTO rm_cost_history (version, operation, cost, unit, previous_cost, \
               previous_unit, actor, changed_at, position) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                i64::try_from(e.entry.version).unwrap_or(i64::MAX).into(),
                e.entry.operation.to_string().into(),
                e.entry.cost.into(),
                e.entry.unit.as_str().into(),
                e.previous.as_ref().map(|p| p.cost).into(),
                e.previous
                    .as_ref()
                    .map(|p| p.unit.as_str().to_owned())
                    .into(),
                e.actor.into(),
                time_text(e.at).into(),
                stored.position.into(),
            ],
        )
        .await?;
    }
    Ok(())
}
