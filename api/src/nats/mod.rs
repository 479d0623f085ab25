//! NATS (SPEC §4), on when `LEDGER_NATS_URL` is set (docs/adr/0009-nats.md):
//!
//! - request/reply commands on `ledger.commands.{kind}` (queue group
//!   `ledger`), answered by [`commands::execute`], which sends each command
//!   as an in-process HTTP request through the same router as HTTP;
//! - durable intake from the JetStream stream `LEDGER_INTAKE` ([`intake`]),
//!   acknowledged only after the router answered;
//! - the outbox ([`outbox`]), which publishes every committed event to
//!   `LEDGER_EVENTS` in log order and low-balance crossings to
//!   `LEDGER_ALERTS`, behind a checkpoint in the store.
//!
//! NATS being away never stops HTTP: the client reconnects in the
//! background, the outbox waits and catches up, and `/ready` says
//! `"nats": "degraded"`.

pub mod commands;
pub mod intake;
pub mod outbox;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use app::caller::JwtKeys;
use app::App;
use async_nats::connection::State;
use async_nats::jetstream::{self, stream};
use async_nats::{Client, ConnectOptions, HeaderMap};
use futures::StreamExt;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use self::commands::{Kind, Outcome};
use crate::telemetry::metrics;

/// Subjects of the request/reply commands (the last token is the kind).
pub const COMMAND_SUBJECTS: &str = "ledger.commands.*";
/// Queue group of the request/reply subscribers: one server answers.
pub const QUEUE_GROUP: &str = "ledger";
/// Most request/reply commands run at once; further requests wait in the
/// client's bounded subscription buffer.
pub const COMMANDS_IN_FLIGHT_MAX: usize = 256;
/// Messages a subscription buffers in the client before the server counts
/// this subscriber as slow (and drops for it).
pub const SUBSCRIPTION_MESSAGES_MAX: usize = 8_192;
/// Longest pause between two attempts to reach NATS.
pub const RECONNECT_DELAY_MILLIS_MAX: u64 = 2_000;
/// How long JetStream API calls and publish acknowledgements may take.
pub const JETSTREAM_TIMEOUT_MILLIS: u64 = 5_000;
/// Longest a shutdown waits for in-flight NATS commands.
const DRAIN_MILLIS_MAX: u64 = 10_000;

/// What the outbox last reported: its checkpoint, and why its last round
/// failed while it is failing (`/ready` shows it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxStatus {
    pub position: i64,
    pub error: Option<String>,
}

/// What the rest of the server sees of NATS.
#[derive(Clone)]
pub struct NatsHandle {
    client: Client,
    outbox: watch::Receiver<OutboxStatus>,
}

impl NatsHandle {
    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// The log position JetStream has acknowledged up to (the outbox's
    /// checkpoint as this process last saw it).
    pub fn outbox_position(&self) -> i64 {
        self.outbox.borrow().position
    }

    /// Why the outbox's rounds are failing, while they are.
    pub fn outbox_error(&self) -> Option<String> {
        self.outbox.borrow().error.clone()
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// The connection and the outbox's position sender, made at start-up.
pub struct Nats {
    pub handle: NatsHandle,
    outbox_position: watch::Sender<OutboxStatus>,
}

/// Connects in the background: start-up never waits for NATS, and the
/// client keeps trying to reconnect forever with a bounded delay.
pub async fn connect(url: &str) -> anyhow::Result<Nats> {
    let client = ConnectOptions::new()
        .name("ledger-server")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .subscription_capacity(SUBSCRIPTION_MESSAGES_MAX)
        .reconnect_delay_callback(|attempts| {
            let millis = 100u64.saturating_mul(attempts as u64);
            Duration::from_millis(millis.min(RECONNECT_DELAY_MILLIS_MAX))
        })
        .event_callback(|event| async move {
            match event {
                async_nats::Event::Connected => info!("NATS connected"),
                async_nats::Event::Disconnected => warn!("NATS disconnected; reconnecting"),
                other => debug!(event = %other, "NATS event"),
            }
        })
        .connect(url)
        .await?;
    let (tx, rx) = watch::channel(OutboxStatus::default());
    Ok(Nats {
        handle: NatsHandle { client, outbox: rx },
        outbox_position: tx,
    })
}

/// A JetStream context with the server's timeout.
pub fn jetstream(client: &Client) -> jetstream::Context {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(Duration::from_millis(JETSTREAM_TIMEOUT_MILLIS));
    js
}

/// Creates the stream when it does not exist; an existing stream is used as
/// it is (another server, or an operator, may have tuned it).
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<stream::Stream, async_nats::Error> {
    let wanted = config.subjects.clone();
    let mut stream = js.get_or_create_stream(config).await?;
    // A stream made by an older version lacks the subjects added since
    // (`ledger.intake.deduct_batch`): they are added, nothing else changes.
    let mut current = stream.cached_info().config.clone();
    let missing: Vec<String> = wanted
        .into_iter()
        .filter(|s| !current.subjects.contains(s))
        .collect();
    if !missing.is_empty() {
        current.subjects.extend(missing);
        js.update_stream(current).await?;
        stream = js.get_stream(&stream.cached_info().config.name).await?;
    }
    Ok(stream)
}

/// Runs the NATS side of the server until `shutdown` resolves: the
/// request/reply commands, the durable intake and the outbox.
pub async fn run(
    nats: Nats,
    app: App,
    keys: Arc<JwtKeys>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let Nats {
        handle,
        outbox_position,
    } = nats;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = JoinSet::new();
    tasks.spawn(serve_commands(
        handle.client.clone(),
        app.clone(),
        keys.clone(),
        stopped(stop_rx.clone()),
    ));
    tasks.spawn(intake::run(
        handle.client.clone(),
        app.clone(),
        keys,
        stopped(stop_rx.clone()),
    ));
    tasks.spawn(
        outbox::Outbox::new(
            handle.client.clone(),
            app.store.clone(),
            app.projector.clone(),
            outbox_position,
        )
        .run(stopped(stop_rx)),
    );
    shutdown.await;
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    // Bounded: with NATS away a flush would wait for its return.
    let flush = tokio::time::timeout(
        Duration::from_millis(DRAIN_MILLIS_MAX),
        handle.client.flush(),
    );
    if !matches!(flush.await, Ok(Ok(()))) {
        debug!("NATS not flushed at shutdown");
    }
}

/// Headers of a reply or an outcome: the HTTP status, and
/// `Idempotent-Replayed: true` on a replay, as HTTP sends it.
pub fn outcome_headers(kind: Kind, outcome: &Outcome) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("Ledger-Status", outcome.status.to_string().as_str());
    headers.insert("Ledger-Command", kind.as_str());
    if outcome.replayed {
        headers.insert("Idempotent-Replayed", "true");
    }
    if let Some(k) = &outcome.idempotency_key {
        headers.insert("Ledger-Idempotency-Key", k.as_str());
    }
    headers
}

/// The `Authorization` header of a message, if any.
pub fn authorization(headers: Option<&HeaderMap>) -> Option<String> {
    headers
        .and_then(|h| h.get("Authorization"))
        .map(|v| v.as_str().to_owned())
}

/// Request/reply: one queue subscription on `ledger.commands.*`, at most
/// [`COMMANDS_IN_FLIGHT_MAX`] commands at once. The subscription survives
/// reconnections (the client re-subscribes).
async fn serve_commands(
    client: Client,
    app: App,
    keys: Arc<JwtKeys>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut subscriber = loop {
        match client
            .queue_subscribe(COMMAND_SUBJECTS, QUEUE_GROUP.into())
            .await
        {
            Ok(s) => {
                debug!(subjects = COMMAND_SUBJECTS, "subscribed to NATS commands");
                break s;
            }
            Err(e) => {
                warn!(error = %e, "could not subscribe to NATS commands; retrying");
                tokio::select! {
                    () = &mut shutdown => return,
                    () = tokio::time::sleep(Duration::from_millis(RECONNECT_DELAY_MILLIS_MAX)) => {}
                }
            }
        }
    };
    let permits = Arc::new(Semaphore::new(COMMANDS_IN_FLIGHT_MAX));
    let mut running = JoinSet::new();
    loop {
        let message = tokio::select! {
            () = &mut shutdown => break,
            m = subscriber.next() => match m {
                Some(m) => m,
                None => break,
            },
            // Reap finished tasks so the set stays as small as the permits.
            Some(_) = running.join_next(), if !running.is_empty() => continue,
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let client = client.clone();
        let (app, keys) = (app.clone(), keys.clone());
        running.spawn(async move {
            let _permit = permit;
            let Some(reply) = message.reply.clone() else {
                debug!(subject = %message.subject, "a NATS command without a reply subject");
                return;
            };
            let outcome = match Kind::from_subject(&message.subject) {
                Some(kind) => {
                    let auth = authorization(message.headers.as_ref());
                    let outcome =
                        commands::execute(&app, &keys, kind, auth.as_deref(), &message.payload)
                            .await;
                    metrics().observe_nats_command("request", kind.as_str(), outcome.status);
                    Some((kind, outcome))
                }
                None => None,
            };
            let sent = match outcome {
                Some((kind, outcome)) => {
                    client
                        .publish_with_headers(reply, outcome_headers(kind, &outcome), outcome.body)
                        .await
                }
                None => {
                    let e = app::AppError::NotFound(
                        "no such command; use deduct, deduct_batch, hold, capture or release"
                            .into(),
                    );
                    let mut body = e.body();
                    body["status"] = serde_json::json!(404);
                    client.publish(reply, body.to_string().into()).await
                }
            };
            if let Err(e) = sent {
                warn!(error = %e, "could not send a NATS reply");
            }
        });
    }
    let _ = tokio::time::timeout(
        Duration::from_millis(DRAIN_MILLIS_MAX),
        subscriber.unsubscribe(),
    )
    .await;
    // Let the commands already taken finish and answer.
    let drain = async { while running.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_millis(DRAIN_MILLIS_MAX), drain)
        .await
        .is_err()
    {
        warn!("NATS commands still running at shutdown were abandoned");
    }
}
