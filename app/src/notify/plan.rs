//! Planning: which deliveries a batch of the log asks for.

use chrono::Utc;
use events::{
    ACCOUNT_AGGREGATE_TYPE, INVOICE_AGGREGATE_TYPE, PAYMENT_AGGREGATE_TYPE,
    SUBSCRIPTION_AGGREGATE_TYPE, TEAM_AGGREGATE_TYPE,
};
use serde_json::Value;
use store::notifications::NewDelivery;
use store::StoredEvent;
use uuid::Uuid;

use super::{event_body, event_fields, event_id, mail, PLANNER_NAME, PLAN_BATCH_EVENTS_MAX};
use crate::error::AppError;
use crate::App;

/// The account an event is about: its stream's for account and team
/// streams, the payload's `account_id` where it names one, else the read
/// model's row of the invoice, payment or subscription.
pub async fn event_account(app: &App, e: &StoredEvent) -> Result<Option<String>, AppError> {
    if e.aggregate_type == ACCOUNT_AGGREGATE_TYPE || e.aggregate_type == TEAM_AGGREGATE_TYPE {
        return Ok(Some(e.aggregate_id.clone()));
    }
    if let Some(a) = event_fields(e).get("account_id").and_then(|v| v.as_str()) {
        return Ok(Some(a.to_owned()));
    }
    let rm = &app.read_models;
    Ok(match e.aggregate_type.as_str() {
        INVOICE_AGGREGATE_TYPE => rm.invoice(&e.aggregate_id).await?.map(|i| i.account_id),
        PAYMENT_AGGREGATE_TYPE => rm.payment(&e.aggregate_id).await?.map(|p| p.account_id),
        SUBSCRIPTION_AGGREGATE_TYPE => rm
            .subscription(&e.aggregate_id)
            .await?
            .map(|s| s.account_id),
        _ => None,
    })
}

/// Plans the next batch after the checkpoint (up to the projector): its
/// deliveries and the checkpoint's move, in one transaction. Returns how
/// many events it planned. `planned` is how far this process last saw the
/// checkpoint: while the projector has not passed it, nothing is asked of
/// the store.
pub async fn plan_round(app: &App, planned: &mut i64) -> Result<usize, AppError> {
    let projected = app.projector.position();
    if projected <= *planned {
        return Ok(0);
    }
    let from = app.store.outbox_checkpoint(PLANNER_NAME).await?;
    *planned = from;
    if projected <= from {
        return Ok(0);
    }
    let mut events = app.store.read_after(from, PLAN_BATCH_EVENTS_MAX).await?;
    events.retain(|e| e.position <= projected);
    let Some(last) = events.last().map(|e| e.position) else {
        return Ok(0);
    };
    let endpoints = app.store.webhook_endpoints().await?;
    let now = Utc::now().timestamp_millis();
    let mut deliveries = Vec::new();
    let mut thresholds = mail::Thresholds::default();
    for e in &events {
        let account = event_account(app, e).await?;
        let id = event_id(e);
        let delivery = |channel: &str, target: &str, kind: &str, payload: String| NewDelivery {
            id: Uuid::now_v7().to_string(),
            position: e.position,
            event_id: id.clone(),
            event_type: e.event_type.clone(),
            account_id: account.clone(),
            channel: channel.into(),
            target: target.into(),
            kind: kind.into(),
            payload,
            created_ms: now,
        };
        let wanted = endpoints
            .iter()
            .filter(|ep| ep.wants(&e.event_type, account.as_deref()));
        let mut body = None;
        for endpoint in wanted {
            let body = body.get_or_insert_with(|| event_body(e).to_string());
            deliveries.push(delivery(
                "webhook",
                &endpoint.id,
                &e.event_type,
                body.clone(),
            ));
        }
        if e.event_type == "AutoTopUpTriggered" {
            if let Some(trigger) = event_fields(e).as_object() {
                deliveries.push(delivery(
                    "top_up",
                    &e.aggregate_id,
                    "auto_top_up",
                    Value::Object(trigger.clone()).to_string(),
                ));
            }
        }
        for m in mail::messages_for(app, e, account.as_deref(), &mut thresholds).await? {
            deliveries.push(delivery(
                "email",
                &m.to,
                m.kind.as_str(),
                m.params.to_string(),
            ));
        }
    }
    let moved = app
        .store
        .plan_notifications(PLANNER_NAME, from, last, &deliveries)
        .await?;
    if moved {
        *planned = last;
    }
    Ok(if moved { events.len() } else { 0 })
}

/// How far ahead a renewal notice goes out.
pub const RENEWAL_NOTICE_DAYS: i64 = 3;
/// Subscriptions read per page of the renewal scan.
const RENEWAL_PAGE: i64 = 200;

/// Queues a "renews soon" email for each running subscription whose
/// period ends within [`RENEWAL_NOTICE_DAYS`] of `now`: once per
/// subscription and period (its delivery's event id names both), so a
/// scan that runs again queues nothing new. Returns how many it queued.
pub async fn plan_renewal_notices(app: &App, now: chrono::DateTime<Utc>) -> Result<u64, AppError> {
    let from = projections::time_text(now);
    let to = projections::time_text(now + chrono::Duration::days(RENEWAL_NOTICE_DAYS));
    let created = now.timestamp_millis();
    let mut after = String::new();
    let mut queued = 0;
    loop {
        let subs = app
            .read_models
            .subscriptions_renewing(&from, &to, &after, RENEWAL_PAGE)
            .await?;
        let Some(last) = subs.last().map(|s| s.id.clone()) else {
            break;
        };
        let mut deliveries = Vec::with_capacity(subs.len());
        for s in &subs {
            let Some(to) = mail::billing_email(app, Some(&s.account_id)).await? else {
                continue;
            };
            let end = s.current_period_end.clone().unwrap_or_default();
            let params = serde_json::json!({
                "account_id": s.account_id,
                "aggregate_id": s.id,
                "event_type": "SubscriptionRenewalUpcoming",
                "position": 0,
                "event": {
                    "plan": s.plan,
                    "price": s.price,
                    "currency": s.currency,
                    "current_period_end": end,
                },
            });
            deliveries.push(NewDelivery {
                id: Uuid::now_v7().to_string(),
                position: 0,
                event_id: format!("renewal-notice:{}:{end}", s.id),
                event_type: "SubscriptionRenewalUpcoming".into(),
                account_id: Some(s.account_id.clone()),
                channel: "email".into(),
                target: to,
                kind: mail::Kind::SubscriptionRenewing.as_str().into(),
                payload: params.to_string(),
                created_ms: created,
            });
        }
        queued += app.store.queue_notifications(&deliveries).await?;
        after = last;
    }
    Ok(queued)
}
