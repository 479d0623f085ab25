//! Notifications (issue 17, docs/adr/0021-notifications.md): signed
//! outgoing webhooks and emails, driven by the event log.
//!
//! **Planning.** A checkpoint (`outbox_checkpoints.notifications`) says how
//! far the log has been planned. A round reads the next batch after it (up
//! to the projector's position, so that the read models know the accounts,
//! invoices and payments the events name), works out every delivery the
//! batch asks for (a webhook POST per matching endpoint, an email per
//! message kind and recipient) and writes them with the checkpoint's move
//! in one transaction. A crash before the commit plans the batch again; a
//! delivery is unique per (event, channel, target, kind), so nothing is
//! queued twice.
//!
//! **Sending.** Due deliveries are claimed one by one by compare-and-set
//! on their next attempt time (a lease a little longer than an attempt's
//! timeout), attempted,
//! and marked delivered, due again after an exponential backoff, or failed
//! (a dead letter) after [`EMAIL_ATTEMPTS_MAX`] tries (email) or
//! [`WEBHOOK_RETRY_WINDOW_MILLIS`] (webhooks). At least once per event
//! and channel, with the same event id on every retry; a second attempt
//! only after a failure or a lease that ran out (a crash mid-attempt).

pub mod mail;
pub mod plan;
pub mod templates;
pub mod webhooks;

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Value};
use store::notifications::{Attempt, DeliveryRow};
use store::StoredEvent;
use tracing::{debug, warn};

use crate::error::AppError;
use crate::App;

/// The checkpoint row of the notification planner.
pub const PLANNER_NAME: &str = "notifications";
/// Events planned per round (a busy log is planned in big rounds).
pub const PLAN_BATCH_EVENTS_MAX: u32 = 2_000;
/// Deliveries attempted per round (concurrently).
pub const SEND_BATCH_MAX: i64 = 16;
/// How long a claimed email is someone's before another sender may retry
/// it (longer than an SMTP exchange's timeout); a webhook's lease is its
/// timeout and [`LEASE_MARGIN_MILLIS`].
pub const EMAIL_LEASE_MILLIS: i64 = 60_000;
pub const LEASE_MARGIN_MILLIS: i64 = 5_000;
/// Webhooks are retried for this long after they were planned.
pub const WEBHOOK_RETRY_WINDOW_MILLIS: i64 = 24 * 3_600_000;
/// Emails are tried this many times.
pub const EMAIL_ATTEMPTS_MAX: i64 = 8;
/// The longest pause between two attempts.
pub const RETRY_MILLIS_MAX: i64 = 3_600_000;
/// How often the notifier looks for subscriptions that renew soon.
const RENEWAL_SCAN_EVERY: Duration = Duration::from_secs(60);
/// The pause between two rounds without a backlog.
const IDLE_POLL_MILLIS: u64 = 200;
/// Longest error text kept on a delivery.
const ERROR_CHARS_MAX: usize = 500;

/// The notification settings.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// `smtp://host:port`, `smtps://user:pass@host`; without it, messages
    /// are written as `.eml` files to `mail_dir`.
    pub smtp_url: Option<crate::settings::Secret>,
    pub mail_from: String,
    pub mail_dir: std::path::PathBuf,
    /// Where links in emails point (`LEDGER_PUBLIC_URL`).
    pub public_url: String,
    /// Who gets the staff's messages (a payment awaiting approval).
    pub staff_email: Option<String>,
    /// Webhooks may go to link-local and cloud metadata addresses.
    pub webhook_allow_link_local: bool,
    /// Timeout of one webhook POST.
    pub webhook_timeout_millis: u64,
    /// The first retry's pause, doubled on each further one.
    pub retry_base_millis: i64,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            smtp_url: None,
            mail_from: "Ledger <ledger@localhost>".into(),
            mail_dir: std::path::PathBuf::from("mail"),
            public_url: "http://127.0.0.1:8080".into(),
            staff_email: None,
            webhook_allow_link_local: false,
            webhook_timeout_millis: 10_000,
            retry_base_millis: 5_000,
        }
    }
}

/// The event's id: the one its metadata carries, else its position.
pub fn event_id(e: &StoredEvent) -> String {
    e.metadata
        .get("event_id")
        .and_then(|v| v.as_str())
        .map_or_else(|| format!("position-{}", e.position), str::to_owned)
}

/// The event's own fields: its payload is the event enum, externally
/// tagged (`{"InvoiceIssued": {…}}`).
pub fn event_fields(e: &StoredEvent) -> &Value {
    e.payload.get(&e.event_type).unwrap_or(&e.payload)
}

/// An event as published: the body of a `LEDGER_EVENTS` message on NATS
/// and of a webhook delivery.
pub fn event_body(e: &StoredEvent) -> Value {
    json!({
        "position": e.position,
        "aggregate_type": e.aggregate_type,
        "aggregate_id": e.aggregate_id,
        "sequence": e.sequence,
        "event_type": e.event_type,
        "event_version": e.event_version,
        "payload": e.payload,
        "metadata": e.metadata,
    })
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// The pause before attempt `attempts + 1`: the base, doubled per attempt
/// made, at most [`RETRY_MILLIS_MAX`].
pub fn backoff_millis(base: i64, attempts: i64) -> i64 {
    let shift = u32::try_from(attempts.clamp(0, 20)).unwrap_or(20);
    base.max(1)
        .saturating_mul(1_i64 << shift)
        .min(RETRY_MILLIS_MAX)
}

/// What an attempt that failed becomes: due again, or failed for good.
fn after_failure(
    app: &App,
    d: &DeliveryRow,
    status: Option<i64>,
    error: String,
    now: i64,
) -> Attempt {
    let error: String = error.chars().take(ERROR_CHARS_MAX).collect();
    let attempts = d.attempts + 1;
    let next_ms = now + backoff_millis(app.settings.notify.retry_base_millis, d.attempts);
    let exhausted = match d.channel.as_str() {
        "webhook" => next_ms - d.created_ms > WEBHOOK_RETRY_WINDOW_MILLIS,
        // Emails and top-ups (whose failures are recorded, not retried:
        // only the store's are).
        _ => attempts >= EMAIL_ATTEMPTS_MAX,
    };
    if exhausted {
        Attempt::Failed { status, error }
    } else {
        Attempt::Retry {
            status,
            error,
            next_ms,
        }
    }
}

/// One attempt of a claimed delivery; records its outcome.
async fn attempt(app: &App, d: DeliveryRow) -> Result<(), AppError> {
    let outcome = match d.channel.as_str() {
        "webhook" => webhooks::deliver(app, &d).await,
        "email" => mail::deliver(app, &d).await,
        "top_up" => crate::auto_top_up::execute(app, &d).await,
        other => Err((None, format!("unknown channel {other}"))),
    };
    let now = now_ms();
    let result = match outcome {
        Ok(status) => Attempt::Delivered { status, at_ms: now },
        Err((status, error)) => {
            debug!(delivery = %d.id, channel = %d.channel, %error, "a delivery attempt failed");
            after_failure(app, &d, status, error, now)
        }
    };
    app.store.finish_notification(&d.id, &result).await?;
    Ok(())
}

/// Attempts the due deliveries this sender could claim; how many.
pub async fn send_round(app: &App) -> Result<usize, AppError> {
    let now = now_ms();
    let due = app.store.due_notifications(now, SEND_BATCH_MAX).await?;
    let mut claimed = Vec::with_capacity(due.len());
    let webhook_lease = i64::try_from(app.settings.notify.webhook_timeout_millis)
        .unwrap_or(60_000)
        .saturating_add(LEASE_MARGIN_MILLIS);
    for d in due {
        let lease = if d.channel == "webhook" {
            webhook_lease
        } else {
            EMAIL_LEASE_MILLIS
        };
        if app
            .store
            .claim_notification(&d.id, d.next_attempt_ms, now + lease)
            .await?
        {
            claimed.push(d);
        }
    }
    let n = claimed.len();
    let mut attempts = tokio::task::JoinSet::new();
    for d in claimed {
        let app = app.clone();
        attempts.spawn(async move { attempt(&app, d).await });
    }
    let mut first_error = None;
    while let Some(done) = attempts.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                warn!(error = %e, "a delivery attempt panicked");
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(n),
    }
}

/// Plans and sends until `shutdown` resolves.
pub async fn run_notifier(app: App, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut ready = false;
    let mut failing = false;
    let mut last_scan: Option<std::time::Instant> = None;
    let mut planned_up_to = 0_i64;
    loop {
        let round = async {
            if !ready {
                app.store.create_outbox_checkpoint(PLANNER_NAME).await?;
                ready = true;
            }
            let planned = plan::plan_round(&app, &mut planned_up_to).await?;
            // The clock-driven notices, once a minute.
            if last_scan.is_none_or(|at: std::time::Instant| at.elapsed() >= RENEWAL_SCAN_EVERY) {
                plan::plan_renewal_notices(&app, Utc::now()).await?;
                last_scan = Some(std::time::Instant::now());
            }
            let sent = send_round(&app).await?;
            // Straight on only while there is a backlog (a full batch
            // planned or sent); otherwise a pause, so that a busy log is
            // planned a few times a second, not once per event.
            let backlog = planned >= PLAN_BATCH_EVENTS_MAX as usize
                || sent >= usize::try_from(SEND_BATCH_MAX).unwrap_or(usize::MAX);
            Ok::<bool, AppError>(backlog)
        };
        let result = tokio::select! {
            () = &mut shutdown => return,
            r = round => r,
        };
        let pause = match result {
            Ok(false) => {
                failing = false;
                IDLE_POLL_MILLIS
            }
            Ok(true) => {
                failing = false;
                continue;
            }
            Err(e) => {
                if !failing {
                    warn!(error = %e, "notifier round failed; retrying");
                }
                failing = true;
                1_000
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(Duration::from_millis(pause)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_from_its_base_up_to_an_hour() {
        assert_eq!(backoff_millis(5_000, 0), 5_000);
        assert_eq!(backoff_millis(5_000, 1), 10_000);
        assert_eq!(backoff_millis(5_000, 3), 40_000);
        assert_eq!(backoff_millis(5_000, 30), RETRY_MILLIS_MAX);
        assert_eq!(backoff_millis(0, 0), 1);
    }
}
