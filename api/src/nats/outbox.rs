//! The outbox: every committed event, in log order, to the JetStream
//! stream `LEDGER_EVENTS` as `ledger.events.{account_id}.{event_type}`
//! with `Nats-Msg-Id` = the event id; low-balance crossings to
//! `LEDGER_ALERTS` as `ledger.alerts.{account_id}.low_balance` with
//! `Nats-Msg-Id` = `{event_id}:low_balance`.
//!
//! The log is the outbox: the checkpoint row `outbox_checkpoints.events`
//! says how far JetStream has acknowledged. A batch is read after it,
//! published (a bounded pipeline of acknowledgements), and only when every
//! acknowledgement came back is the checkpoint moved, by compare-and-set.
//! A crash between the two publishes the batch again after the restart,
//! and JetStream's duplicate window drops the repeats. Nothing is held in
//! memory beyond one batch; with NATS away the loop waits with backoff and
//! resumes from the checkpoint.
//!
//! The outbox never passes the projector, so that the account's
//! low-balance threshold is in `rm_accounts` when its events go out.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::context::Publish;
use async_nats::jetstream::{self, stream};
use async_nats::Client;
use events::{AccountEvent, ACCOUNT_AGGREGATE_TYPE};
use projections::{ProjectionError, ProjectorHandle, ReadModels};
use serde_json::json;
use store::{Store, StoredEvent};
use tokio::sync::watch;
use tracing::{debug, warn};

use super::ensure_stream;

pub const EVENTS_STREAM: &str = "LEDGER_EVENTS";
pub const EVENTS_SUBJECTS: &str = "ledger.events.>";
pub const ALERTS_STREAM: &str = "LEDGER_ALERTS";
pub const ALERTS_SUBJECTS: &str = "ledger.alerts.>";
/// The checkpoint row of this outbox.
pub const OUTBOX_NAME: &str = "events";
/// Events read, published and acknowledged per round: the most the outbox
/// holds in memory, and the most publish acknowledgements in flight.
pub const OUTBOX_BATCH_EVENTS_MAX: u32 = 256;
/// JetStream drops a message whose `Nats-Msg-Id` it saw within this window:
/// a restart re-publishes at most one batch, well within it.
pub const DUPLICATE_WINDOW_SECONDS: u64 = 600;
/// Bounds of the published streams (discard old: the log in the store
/// remains the record; consumers that fall further behind replay from it).
/// JetStream reserves `max_bytes` against the server's storage when it
/// creates a stream, so these stay modest; an operator can raise them on
/// the stream (an existing stream is used as it is).
pub const EVENTS_STREAM_MESSAGES_MAX: i64 = 2_000_000;
pub const EVENTS_STREAM_BYTES_MAX: i64 = 1024 * 1024 * 1024;
pub const ALERTS_STREAM_MESSAGES_MAX: i64 = 100_000;
pub const ALERTS_STREAM_BYTES_MAX: i64 = 64 * 1024 * 1024;
pub const STREAM_AGE_SECONDS_MAX: u64 = 7 * 24 * 3600;
/// Longest failure reason `/ready` shows.
const ERROR_CHARS_MAX: usize = 300;
/// How often an idle outbox looks for new events.
const IDLE_POLL_MILLIS: u64 = 50;
/// Backoff after a failed round: doubles from the first to the last.
const BACKOFF_MILLIS_MIN: u64 = 100;
const BACKOFF_MILLIS_MAX: u64 = 5_000;

pub fn events_stream_config() -> stream::Config {
    stream::Config {
        name: EVENTS_STREAM.into(),
        subjects: vec![EVENTS_SUBJECTS.into()],
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        max_messages: EVENTS_STREAM_MESSAGES_MAX,
        max_bytes: EVENTS_STREAM_BYTES_MAX,
        max_age: Duration::from_secs(STREAM_AGE_SECONDS_MAX),
        duplicate_window: Duration::from_secs(DUPLICATE_WINDOW_SECONDS),
        ..Default::default()
    }
}

pub fn alerts_stream_config() -> stream::Config {
    stream::Config {
        name: ALERTS_STREAM.into(),
        subjects: vec![ALERTS_SUBJECTS.into()],
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::Old,
        max_messages: ALERTS_STREAM_MESSAGES_MAX,
        max_bytes: ALERTS_STREAM_BYTES_MAX,
        max_age: Duration::from_secs(STREAM_AGE_SECONDS_MAX),
        duplicate_window: Duration::from_secs(DUPLICATE_WINDOW_SECONDS),
        ..Default::default()
    }
}

/// A subject token from an id: NATS separators and wildcards, spaces and
/// control characters cannot appear in it.
fn token(raw: &str) -> String {
    let t: String = raw
        .chars()
        .map(|c| {
            if c == '.' || c == '*' || c == '>' || c.is_whitespace() || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if t.is_empty() {
        "_".into()
    } else {
        t
    }
}

/// `ledger.events.{aggregate id}.{event type}`: accounts by their id,
/// catalog events by theirs (`catalog`).
pub fn event_subject(e: &StoredEvent) -> String {
    format!(
        "ledger.events.{}.{}",
        token(&e.aggregate_id),
        token(&e.event_type)
    )
}

/// The event id the outbox deduplicates by; the position when metadata
/// lacks one (never for events the ledger wrote).
fn event_id(e: &StoredEvent) -> String {
    app::notify::event_id(e)
}

pub struct Outbox {
    client: Client,
    store: Store,
    projector: ProjectorHandle,
    position: watch::Sender<super::OutboxStatus>,
}

impl Outbox {
    pub fn new(
        client: Client,
        store: Store,
        projector: ProjectorHandle,
        position: watch::Sender<super::OutboxStatus>,
    ) -> Self {
        Self {
            client,
            store,
            projector,
            position,
        }
    }

    /// Publishes until `shutdown` resolves; a round in flight at shutdown
    /// is dropped (its events go out again after the restart).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let js = super::jetstream(&self.client);
        let mut ready = false;
        let mut backoff = BACKOFF_MILLIS_MIN;
        loop {
            let round = async {
                if !ready {
                    self.store.create_outbox_checkpoint(OUTBOX_NAME).await?;
                    ensure_stream(&js, events_stream_config()).await?;
                    ensure_stream(&js, alerts_stream_config()).await?;
                    ready = true;
                }
                self.round(&js).await
            };
            let result = tokio::select! {
                () = &mut shutdown => return,
                r = round => r,
            };
            match &result {
                Ok(_) => {
                    self.position.send_if_modified(|s| s.error.take().is_some());
                }
                Err(e) => {
                    let why: String = e.to_string().chars().take(ERROR_CHARS_MAX).collect();
                    self.position.send_if_modified(|s| {
                        let changed = s.error.as_deref() != Some(why.as_str());
                        s.error = Some(why);
                        changed
                    });
                }
            }
            let pause = match result {
                Ok(0) => {
                    backoff = BACKOFF_MILLIS_MIN;
                    IDLE_POLL_MILLIS
                }
                Ok(_) => {
                    backoff = BACKOFF_MILLIS_MIN;
                    continue;
                }
                Err(e) => {
                    // The first failure of a streak is worth a warning
                    // (NATS away, a stream refused); the retries not.
                    if backoff == BACKOFF_MILLIS_MIN {
                        warn!(error = %e, "outbox round failed; retrying with backoff");
                    } else {
                        debug!(error = %e, backoff_millis = backoff, "outbox round failed; retrying");
                    }
                    let pause = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MILLIS_MAX);
                    pause
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(Duration::from_millis(pause)) => {}
            }
        }
    }

    /// One round: the next batch after the checkpoint, up to the
    /// projector's position, published and acknowledged, then the
    /// checkpoint moved. Returns how many events went out.
    async fn round(&self, js: &jetstream::Context) -> Result<usize, async_nats::Error> {
        // Idle: the read models (and so the log this outbox may publish)
        // have not moved past what was published; no query needed.
        if self.projector.position() <= self.position.borrow().position {
            return Ok(0);
        }
        let from = checkpoint(&self.store).await?;
        self.position.send_if_modified(|s| {
            let changed = s.position != from;
            s.position = from;
            changed
        });
        let projected = self.projector.position();
        if projected <= from {
            return Ok(0);
        }
        let mut events = self.store.read_after(from, OUTBOX_BATCH_EVENTS_MAX).await?;
        events.retain(|e| e.position <= projected);
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(0);
        };
        let thresholds = self.thresholds(&events).await?;
        let mut acks = Vec::with_capacity(events.len());
        for e in &events {
            // The same body a webhook delivery carries.
            let body = app::notify::event_body(e);
            let id = event_id(e);
            let publish = Publish::build()
                .payload(body.to_string().into())
                .message_id(&id)
                .header("Ledger-Position", e.position.to_string().as_str());
            acks.push(js.send_publish(event_subject(e), publish).await?);
            if let Some(alert) = low_balance_alert(e, &thresholds) {
                acks.push(alert_publish(js, e, &id, alert).await?);
            }
            if let Some(reached) = budget_alert(e) {
                acks.push(budget_publish(js, e, &id, reached).await?);
            }
        }
        for ack in acks {
            ack.await?;
        }
        let claimed = self
            .store
            .advance_outbox_checkpoint(OUTBOX_NAME, from, last)
            .await?;
        if !claimed {
            // Another server published the same batch; its checkpoint wins
            // and JetStream kept one copy of each event.
            debug!(from, "another outbox advanced the checkpoint");
            return Ok(events.len());
        }
        // The round went through: its position and the end of an earlier
        // error are one change, so nobody sees the one without the other.
        self.position.send_modify(|s| {
            s.position = last;
            s.error = None;
        });
        Ok(events.len())
    }

    /// The low-balance threshold of every account of the batch that has a
    /// candidate crossing, from `rm_accounts` (which has reached the batch:
    /// the outbox never passes the projector).
    async fn thresholds(
        &self,
        events: &[StoredEvent],
    ) -> Result<HashMap<String, i64>, store::StoreError> {
        let mut out = HashMap::new();
        for e in events {
            if e.aggregate_type != ACCOUNT_AGGREGATE_TYPE
                || !matches!(
                    e.event_type.as_str(),
                    "CreditsDeducted" | "CreditsHeld" | "HoldCaptured"
                )
                || out.contains_key(&e.aggregate_id)
            {
                continue;
            }
            let threshold = ReadModels::new(self.store.clone())
                .low_balance_threshold(&e.aggregate_id)
                .await
                .map_err(|e| match e {
                    ProjectionError::Store(e) => e,
                    other => store::StoreError::Persistence(other.to_string()),
                })?;
            if let Some(threshold) = threshold {
                out.insert(e.aggregate_id.clone(), threshold);
            }
        }
        Ok(out)
    }
}

/// The crossing an account event makes, if any, given the thresholds.
fn low_balance_alert(
    e: &StoredEvent,
    thresholds: &HashMap<String, i64>,
) -> Option<events::LowBalanceCrossing> {
    if e.aggregate_type != ACCOUNT_AGGREGATE_TYPE {
        return None;
    }
    let threshold = *thresholds.get(&e.aggregate_id)?;
    let event = decode(e)?;
    event.low_balance_crossing(threshold)
}

/// The stored payload as an [`AccountEvent`].
fn decode(e: &StoredEvent) -> Option<AccountEvent> {
    serde_json::from_value::<AccountEvent>(e.payload.clone()).ok()
}

async fn alert_publish(
    js: &jetstream::Context,
    e: &StoredEvent,
    id: &str,
    crossing: events::LowBalanceCrossing,
) -> Result<jetstream::context::PublishAckFuture, async_nats::Error> {
    let body = json!({
        "account_id": e.aggregate_id,
        "event_id": id,
        "event_type": e.event_type,
        "position": e.position,
        "threshold": crossing.threshold,
        "available_before": crossing.available_before,
        "available_after": crossing.available_after,
    });
    let subject = format!("ledger.alerts.{}.low_balance", token(&e.aggregate_id));
    let publish = Publish::build()
        .payload(body.to_string().into())
        .message_id(format!("{id}:low_balance"));
    Ok(js.send_publish(subject, publish).await?)
}

/// A budget threshold the event says was reached, if it is one.
fn budget_alert(e: &StoredEvent) -> Option<events::BudgetThresholdReached> {
    if e.aggregate_type != ACCOUNT_AGGREGATE_TYPE || e.event_type != "BudgetThresholdReached" {
        return None;
    }
    match decode(e)? {
        AccountEvent::BudgetThresholdReached(r) => Some(r),
        _ => None,
    }
}

/// `ledger.alerts.{account_id}.budget`: one per threshold and month (the
/// event is written once), deduplicated by JetStream on `{event id}:budget`.
async fn budget_publish(
    js: &jetstream::Context,
    e: &StoredEvent,
    id: &str,
    reached: events::BudgetThresholdReached,
) -> Result<jetstream::context::PublishAckFuture, async_nats::Error> {
    let body = json!({
        "account_id": e.aggregate_id,
        "event_id": id,
        "event_type": e.event_type,
        "position": e.position,
        "period": reached.period,
        "percent": reached.percent,
        "monthly_credits": reached.monthly_credits,
        "used": reached.used,
        "hard_cap": reached.hard_cap,
    });
    let subject = format!("ledger.alerts.{}.budget", token(&e.aggregate_id));
    let publish = Publish::build()
        .payload(body.to_string().into())
        .message_id(format!("{id}:budget"));
    Ok(js.send_publish(subject, publish).await?)
}

/// The outbox's checkpoint: the last position JetStream acknowledged.
pub async fn checkpoint(store: &Store) -> Result<i64, store::StoreError> {
    store.outbox_checkpoint(OUTBOX_NAME).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_tokens_cannot_split_or_wildcard_a_subject() {
        assert_eq!(token("a.b*c>d e"), "a_b_c_d_e");
        assert_eq!(token(""), "_");
        assert_eq!(
            token("0191e5a0-0000-7000-8000-000000000001"),
            "0191e5a0-0000-7000-8000-000000000001"
        );
    }
}
