//! Durable intake for fire-and-forget workers: the JetStream stream
//! `LEDGER_INTAKE` (`ledger.intake.{kind}`), read by the durable pull
//! consumer `ledger-intake`.
//!
//! Each message runs the same use case as a request/reply command. Its
//! outcome is published to `ledger.outcomes.{account_id}` and the message
//! is acknowledged only then, i.e. after the commit. Only a caller whose
//! token may act on that account gets its outcome published there; any
//! other outcome (no or a bad token, another tenant's account, no valid
//! account) goes to the dead letter instead. A 4xx is final. A 5xx or 429 is retried (nak with a
//! growing delay); after [`INTAKE_DELIVERIES_MAX`] deliveries the message,
//! with its last error, goes to `ledger.deadletter.intake.{kind}` (stream
//! `LEDGER_DEADLETTER`) and is terminated. Redelivery is harmless: the
//! idempotency key makes a repeat a replay.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy};
use async_nats::jetstream::context::Publish;
use async_nats::jetstream::message::AckKind;
use async_nats::jetstream::{self, stream};
use async_nats::Client;
use std::sync::Arc;

use app::caller::{Caller, JwtKeys};
use app::App;
use futures::StreamExt;
use serde_json::{json, Value};
use tracing::{debug, warn};

use super::commands::{self, Kind, Outcome};
use super::{authorization, ensure_stream, outcome_headers};
use crate::telemetry::metrics;

pub const INTAKE_STREAM: &str = "LEDGER_INTAKE";
pub const INTAKE_SUBJECTS: [&str; 5] = [
    "ledger.intake.deduct",
    "ledger.intake.deduct_batch",
    "ledger.intake.hold",
    "ledger.intake.capture",
    "ledger.intake.release",
];
pub const INTAKE_CONSUMER: &str = "ledger-intake";
pub const DEADLETTER_STREAM: &str = "LEDGER_DEADLETTER";
/// Outside `ledger.intake.>`, so a dead letter is never taken in again.
pub const DEADLETTER_SUBJECTS: &str = "ledger.deadletter.>";
/// Commands waiting in the intake stream; past it, publishers are refused
/// (discard new) rather than older commands dropped.
/// (JetStream reserves `max_bytes` against the server's storage.)
pub const INTAKE_STREAM_MESSAGES_MAX: i64 = 1_000_000;
pub const INTAKE_STREAM_BYTES_MAX: i64 = 256 * 1024 * 1024;
pub const DEADLETTER_STREAM_MESSAGES_MAX: i64 = 100_000;
pub const DEADLETTER_STREAM_BYTES_MAX: i64 = 64 * 1024 * 1024;
/// Attempts at a command that keeps failing with a 5xx before it is
/// dead-lettered.
pub const INTAKE_DELIVERIES_MAX: i64 = 5;
/// The consumer's own cap, a little above ours, so that a message whose
/// dead-lettering failed is offered again to be dead-lettered.
const CONSUMER_DELIVERIES_MAX: i64 = INTAKE_DELIVERIES_MAX + 3;
/// Unacknowledged messages the consumer hands out at once (across servers).
pub const INTAKE_ACK_PENDING_MAX: i64 = 1_024;
/// Messages one fetch asks for; they run concurrently.
pub const INTAKE_BATCH_MESSAGES_MAX: usize = 64;
/// How long JetStream waits for an acknowledgement before redelivering:
/// longer than a command's own timeout.
const ACK_WAIT_MILLIS: u64 = 30_000;
/// How long an empty fetch waits for messages.
const FETCH_EXPIRES_MILLIS: u64 = 1_000;
/// Delay before a failed command is offered again: this, times the attempt.
const NAK_DELAY_MILLIS_STEP: u64 = 500;
const ERROR_BACKOFF_MILLIS: u64 = 1_000;

pub fn intake_stream_config() -> stream::Config {
    stream::Config {
        name: INTAKE_STREAM.into(),
        subjects: INTAKE_SUBJECTS.iter().map(|s| (*s).to_owned()).collect(),
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        max_messages: INTAKE_STREAM_MESSAGES_MAX,
        max_bytes: INTAKE_STREAM_BYTES_MAX,
        ..Default::default()
    }
}

pub fn deadletter_stream_config() -> stream::Config {
    stream::Config {
        name: DEADLETTER_STREAM.into(),
        subjects: vec![DEADLETTER_SUBJECTS.into()],
        discard: stream::DiscardPolicy::Old,
        storage: stream::StorageType::File,
        max_messages: DEADLETTER_STREAM_MESSAGES_MAX,
        max_bytes: DEADLETTER_STREAM_BYTES_MAX,
        ..Default::default()
    }
}

fn consumer_config() -> pull::Config {
    pull::Config {
        durable_name: Some(INTAKE_CONSUMER.into()),
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_millis(ACK_WAIT_MILLIS),
        max_deliver: CONSUMER_DELIVERIES_MAX,
        max_ack_pending: INTAKE_ACK_PENDING_MAX,
        ..Default::default()
    }
}

/// The subject outcomes of `account` are published on.
pub fn outcome_subject(account: &events::AccountId) -> String {
    format!("ledger.outcomes.{account}")
}

/// Consumes the intake until `shutdown` resolves, riding out NATS outages.
pub async fn run(client: Client, app: App, keys: Arc<JwtKeys>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let js = super::jetstream(&client);
    let mut last_warning: Option<std::time::Instant> = None;
    loop {
        let pass = consume(&client, &js, &app, &keys);
        let result = tokio::select! {
            () = &mut shutdown => return,
            r = pass => r,
        };
        if let Err(e) = result {
            // One warning a minute while NATS is away, not one a second.
            if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                warn!(error = %e, "NATS intake paused; retrying");
                last_warning = Some(std::time::Instant::now());
            } else {
                debug!(error = %e, "NATS intake still paused");
            }
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(Duration::from_millis(ERROR_BACKOFF_MILLIS)) => {}
        }
    }
}

/// Ensures the streams and the consumer, then fetches and handles batches
/// until something fails. Dropping it between two messages loses nothing:
/// an unacknowledged message is redelivered.
async fn consume(
    client: &Client,
    js: &jetstream::Context,
    app: &App,
    keys: &JwtKeys,
) -> Result<(), async_nats::Error> {
    ensure_stream(js, deadletter_stream_config()).await?;
    let stream = ensure_stream(js, intake_stream_config()).await?;
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(INTAKE_CONSUMER, consumer_config())
        .await?;
    loop {
        let mut batch = consumer
            .batch()
            .max_messages(INTAKE_BATCH_MESSAGES_MAX)
            .expires(Duration::from_millis(FETCH_EXPIRES_MILLIS))
            .messages()
            .await?;
        let mut messages = Vec::with_capacity(INTAKE_BATCH_MESSAGES_MAX);
        while let Some(m) = batch.next().await {
            messages.push(m?);
        }
        futures::future::join_all(
            messages
                .into_iter()
                .map(|m| handle(client, js, app, keys, m)),
        )
        .await;
    }
}

async fn handle(
    client: &Client,
    js: &jetstream::Context,
    app: &App,
    keys: &JwtKeys,
    message: jetstream::Message,
) {
    let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
    let Some(kind) = Kind::from_subject(&message.subject) else {
        // The stream's subjects are the four kinds; anything else is an
        // operator's mistake, kept for inspection.
        dead_letter(
            js,
            &message,
            "unknown",
            delivered,
            &json!({"error": "unknown subject"}),
        )
        .await;
        return;
    };
    let auth = authorization(message.headers.as_ref());
    let outcome = commands::execute(app, keys, kind, auth.as_deref(), &message.payload).await;
    metrics().observe_nats_command("intake", kind.as_str(), outcome.status);
    if outcome.is_retryable() {
        if delivered >= INTAKE_DELIVERIES_MAX {
            let error = serde_json::from_slice::<Value>(&outcome.body).unwrap_or(Value::Null);
            dead_letter(js, &message, kind.as_str(), delivered, &error).await;
        } else {
            let delay = Duration::from_millis(
                NAK_DELAY_MILLIS_STEP.saturating_mul(u64::try_from(delivered).unwrap_or(1)),
            );
            debug!(
                kind = kind.as_str(),
                delivered,
                status = outcome.status,
                "intake command failed; offered again later"
            );
            if let Err(e) = message.ack_with(AckKind::Nak(Some(delay))).await {
                warn!(error = %e, "could not nak an intake message");
            }
        }
        return;
    }
    if let Some(batch) = &outcome.batch {
        // A batch read: each item's outcome goes to its account's subject,
        // as a single deduction's would.
        let caller = Caller::from_authorization(keys, auth.as_deref()).ok();
        if let Err(e) = publish_items(client, caller.as_ref(), batch).await {
            warn!(error = %e, "could not publish a batch's outcomes");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_millis(
                    NAK_DELAY_MILLIS_STEP,
                ))))
                .await;
            return;
        }
        if let Err(e) = message.ack().await {
            warn!(error = %e, "could not ack an intake message; it will be replayed");
        }
        return;
    }
    // Outcomes go to the account's subject only for a caller that may act
    // on that account: otherwise anyone able to publish could put words
    // (a 401, a 404 under a key of their choosing) in another tenant's
    // outcome stream. The rest, like a payload without a valid account,
    // is kept as a dead letter with its error.
    let trusted = outcome.account_id.filter(|account| {
        Caller::from_authorization(keys, auth.as_deref())
            .and_then(|caller| caller.scope(*account))
            .is_ok()
    });
    let Some(account) = trusted else {
        let error = serde_json::from_slice::<Value>(&outcome.body).unwrap_or(Value::Null);
        dead_letter(js, &message, kind.as_str(), delivered, &error).await;
        return;
    };
    if let Err(e) = publish_outcome(client, kind, &account, &outcome).await {
        // Not acknowledged: it comes back and replays the same outcome.
        warn!(error = %e, "could not publish an intake outcome");
        let _ = message
            .ack_with(AckKind::Nak(Some(Duration::from_millis(
                NAK_DELAY_MILLIS_STEP,
            ))))
            .await;
        return;
    }
    if let Err(e) = message.ack().await {
        warn!(error = %e, "could not ack an intake message; it will be replayed");
    }
}

async fn publish_outcome(
    client: &Client,
    kind: Kind,
    account: &events::AccountId,
    outcome: &Outcome,
) -> Result<(), async_nats::Error> {
    client
        .publish_with_headers(
            outcome_subject(account),
            outcome_headers(kind, outcome),
            outcome.body.clone(),
        )
        .await?;
    // Outcomes are core NATS: a flush makes sure this one left the process
    // before the command is acknowledged.
    client.flush().await?;
    Ok(())
}

/// Publishes each item of a batch to `ledger.outcomes.{account_id}` (only
/// accounts the caller may act on: an item for another tenant's account was
/// refused and is not written into that tenant's subject), with the headers
/// of a single deduction's outcome.
async fn publish_items(
    client: &Client,
    caller: Option<&Caller>,
    batch: &app::credits::DeductionBatch,
) -> Result<(), async_nats::Error> {
    for item in &batch.items {
        let Some(account) = item
            .get("account_id")
            .and_then(Value::as_str)
            .and_then(|a| events::AccountId::parse(a).ok())
        else {
            continue;
        };
        if caller.is_none_or(|c| c.scope(account).is_err()) {
            continue;
        }
        let mut headers = async_nats::HeaderMap::new();
        let status = item.get("status").and_then(Value::as_u64).unwrap_or(0);
        headers.insert("Ledger-Status", status.to_string().as_str());
        headers.insert("Ledger-Command", Kind::Deduct.as_str());
        if item.get("idempotent_replayed") == Some(&Value::Bool(true)) {
            headers.insert("Idempotent-Replayed", "true");
        }
        if let Some(k) = item.get("idempotency_key").and_then(Value::as_str) {
            headers.insert("Ledger-Idempotency-Key", k);
        }
        client
            .publish_with_headers(outcome_subject(&account), headers, item.to_string().into())
            .await?;
    }
    client.flush().await?;
    Ok(())
}

/// Keeps a message that cannot be handled in `LEDGER_DEADLETTER` (never its
/// token), then terminates it; if the dead letter cannot be stored, the
/// message is offered again instead.
async fn dead_letter(
    js: &jetstream::Context,
    message: &jetstream::Message,
    kind: &str,
    delivered: i64,
    error: &Value,
) {
    let letter = json!({
        "subject": message.subject.as_str(),
        "payload": String::from_utf8_lossy(&message.payload),
        "deliveries": delivered,
        "last_error": error,
    });
    let subject = format!("ledger.deadletter.intake.{kind}");
    // Keyed by the intake message, so that a dead letter stored twice (its
    // acknowledgement lost, the message offered again) is kept once.
    let id = message.info().map_or_else(
        |_| format!("intake-{}", uuid::Uuid::now_v7()),
        |i| format!("intake-{}", i.stream_sequence),
    );
    let stored = async {
        js.send_publish(
            subject,
            Publish::build()
                .payload(letter.to_string().into())
                .message_id(id),
        )
        .await?
        .await?;
        Ok::<(), async_nats::Error>(())
    }
    .await;
    match stored {
        Ok(()) => {
            warn!(kind, delivered, "an intake message was dead-lettered");
            if let Err(e) = message.ack_with(AckKind::Term).await {
                warn!(error = %e, "could not terminate a dead-lettered message");
            }
        }
        Err(e) => {
            warn!(error = %e, "could not dead-letter an intake message");
            let _ = message
                .ack_with(AckKind::Nak(Some(Duration::from_millis(
                    ERROR_BACKOFF_MILLIS,
                ))))
                .await;
        }
    }
}
