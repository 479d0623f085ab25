//! The command path: load, handle, append, retry on conflict.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use chrono::Utc;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use events::{chain_hash_text, Actor, EventMetadata, IdempotencyKey};
use ledger::{Catalog, CreditAccount, Invoice, Payment};
use sha2::{Digest, Sha256};
use tracing::{debug, instrument};
use uuid::Uuid;

use crate::{AppendError, NewEvent, Store, StoreError, StreamAppend};

/// How often a command is re-run after losing an optimistic-concurrency race
/// before the caller is told the account is too contended.
pub const CONFLICT_RETRIES_MAX: u32 = 100;
/// Longest pause between two attempts.
const BACKOFF_MILLIS_MAX: u64 = 50;

/// Who is acting and under which correlation, stamped on every event.
#[derive(Debug, Clone)]
pub struct CommandContext {
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
}

impl CommandContext {
    /// A context that starts a new correlation.
    pub fn new(actor: Actor) -> Self {
        let id = Uuid::now_v7();
        Self {
            actor,
            correlation_id: id,
            causation_id: id,
        }
    }
}

/// An idempotency key and the hash of the request that first used it.
#[derive(Debug, Clone)]
pub struct IdempotencyClaim {
    pub key: IdempotencyKey,
    pub request_hash: String,
}

/// SHA-256 of a request's canonical bytes, in hex: what a key is bound to.
pub fn request_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug, Clone)]
pub struct CommittedEvent<E> {
    pub event: E,
    pub sequence: u64,
    pub position: i64,
    pub metadata: EventMetadata,
}

/// What a command did.
#[derive(Debug)]
pub struct Executed<A: Aggregate> {
    /// The aggregate after the command, when the path that ran it kept a
    /// copy: the command service always does; the group committer only for
    /// the rare administrative commands, not to copy hot accounts per call.
    pub state: Option<A>,
    /// The events this command appended (empty for a no-op or a replay).
    pub events: Vec<CommittedEvent<A::Event>>,
    /// For a repeated idempotency key: the first outcome and its position.
    pub replayed: Option<(A::Event, i64)>,
}

impl<A: Aggregate> Executed<A> {
    /// The log position the command reached, if it wrote or replayed one.
    pub fn position(&self) -> Option<i64> {
        self.events
            .last()
            .map(|e| e.position)
            .or(self.replayed.as_ref().map(|(_, p)| *p))
    }

    /// The event answering the command: the last one written, or the replayed one.
    pub fn outcome(&self) -> Option<&A::Event> {
        self.events
            .last()
            .map(|e| &e.event)
            .or(self.replayed.as_ref().map(|(e, _)| e))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError<E: std::error::Error> {
    #[error(transparent)]
    Domain(E),
    #[error("idempotency key {key} was already used with a different request")]
    KeyReused { key: String },
    #[error("{scope} {value:?} is already taken")]
    Reserved { scope: String, value: String },
    #[error("gave up after {attempts} conflicting attempts")]
    Contention { attempts: u32 },
    /// Not applied: another command of its atomic batch (the one at
    /// `index`) was refused, so none of them was.
    #[error("not applied: command {index} of its atomic batch was refused")]
    NotApplied { index: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Aggregates that remember the first outcome of recent idempotency keys.
pub trait RecentOutcomes: Aggregate {
    fn recent_outcome(&self, key: &IdempotencyKey) -> Option<&Self::Event>;
}

impl RecentOutcomes for CreditAccount {
    fn recent_outcome(&self, key: &IdempotencyKey) -> Option<&Self::Event> {
        self.outcome_for(key)
    }
}

impl RecentOutcomes for Catalog {
    fn recent_outcome(&self, _key: &IdempotencyKey) -> Option<&Self::Event> {
        None
    }
}

// Invoices and payments keep no window of keys: their streams are short and
// a repeated key is found by its claim (`find_key`).
impl RecentOutcomes for Invoice {
    fn recent_outcome(&self, _key: &IdempotencyKey) -> Option<&Self::Event> {
        None
    }
}

impl RecentOutcomes for Payment {
    fn recent_outcome(&self, _key: &IdempotencyKey) -> Option<&Self::Event> {
        None
    }
}

impl RecentOutcomes for ledger::Subscription {
    fn recent_outcome(&self, _key: &IdempotencyKey) -> Option<&Self::Event> {
        None
    }
}

impl RecentOutcomes for ledger::Team {
    fn recent_outcome(&self, _key: &IdempotencyKey) -> Option<&Self::Event> {
        None
    }
}

impl RecentOutcomes for ledger::payment::StripeEventLog {
    fn recent_outcome(&self, _key: &IdempotencyKey) -> Option<&Self::Event> {
        None
    }
}

impl RecentOutcomes for ledger::payment::StripeCustomer {
    fn recent_outcome(&self, _key: &IdempotencyKey) -> Option<&Self::Event> {
        None
    }
}

impl RecentOutcomes for ledger::payment::PaypalEventLog {
    fn recent_outcome(&self, _key: &IdempotencyKey) -> Option<&Self::Event> {
        None
    }
}

/// How many locks serialize commands per stream within one process.
pub const STREAM_LOCK_STRIPES: usize = 1_024;

/// Runs commands against the store with optimistic concurrency.
///
/// Within one process, commands for one stream run one at a time (a striped
/// lock keyed by the stream), so a hot account does not burn its time on
/// conflicts between its own callers; writers in other processes are still
/// caught by the optimistic check and retried.
#[derive(Clone, Debug)]
pub struct CommandService {
    store: Store,
    stripes: Arc<Vec<Mutex<()>>>,
    conflicts: Arc<AtomicU64>,
}

impl CommandService {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            stripes: Arc::new((0..STREAM_LOCK_STRIPES).map(|_| Mutex::new(())).collect()),
            conflicts: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many appends lost an optimistic-concurrency race so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.load(Ordering::Relaxed)
    }

    fn stripe(&self, aggregate_type: &str, aggregate_id: &str) -> &Mutex<()> {
        &self.stripes[slot((aggregate_type, aggregate_id), self.stripes.len())]
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Loads the aggregate, handles the command and appends its events in
    /// one transaction with the idempotency claim. On a conflict (another
    /// writer appended first) it reloads and runs the command again, so a
    /// command is never lost and never applied twice.
    pub async fn execute<A>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        ctx: &CommandContext,
        claim: Option<&IdempotencyClaim>,
    ) -> Result<Executed<A>, ServiceError<A::Error>>
    where
        A: RecentOutcomes<Services = ()>,
        A::Command: Clone,
    {
        self.execute_with(aggregate_id, command, ctx, claim, &[])
            .await
    }

    /// [`execute`](Self::execute), also reserving values that must be unique
    /// across streams; a taken value fails with [`ServiceError::Reserved`].
    #[instrument(skip_all, fields(aggregate_type = A::TYPE, aggregate_id, idempotency_key))]
    pub async fn execute_with<A>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        ctx: &CommandContext,
        claim: Option<&IdempotencyClaim>,
        reservations: &[crate::Reservation],
    ) -> Result<Executed<A>, ServiceError<A::Error>>
    where
        A: RecentOutcomes<Services = ()>,
        A::Command: Clone,
    {
        tracing::Span::current().record("aggregate_id", aggregate_id);
        if let Some(c) = claim {
            tracing::Span::current().record("idempotency_key", c.key.as_str());
        }
        let _turn = self.stripe(A::TYPE, aggregate_id).lock().await;
        for attempt in 0..CONFLICT_RETRIES_MAX {
            let loaded = self.store.load::<A>(aggregate_id).await?;
            let mut state = loaded.aggregate;
            if let Some(claim) = claim {
                if let Some(first) = state.recent_outcome(&claim.key).cloned() {
                    return self
                        .replay(aggregate_id, claim, Some(state), Some(first))
                        .await;
                }
            }
            let sink = EventSink::default();
            let handled = state.handle(command.clone(), &(), &sink).await;
            let new_events = sink.collect().await;
            if handled.is_err() || new_events.is_empty() {
                // A key older than the aggregate's window may still be
                // claimed: its first outcome wins over today's answer.
                if let Some(claim) = claim {
                    if self
                        .store
                        .find_key(aggregate_id, claim.key.as_str())
                        .await?
                        .is_some()
                    {
                        let state = self.store.load::<A>(aggregate_id).await?.aggregate;
                        return self.replay(aggregate_id, claim, Some(state), None).await;
                    }
                }
                handled.map_err(ServiceError::Domain)?;
                return Ok(Executed {
                    state: Some(state),
                    events: Vec::new(),
                    replayed: None,
                });
            }
            let (mut append, committed) = prepare::<A>(
                aggregate_id,
                loaded.sequence,
                &loaded.last_hash,
                new_events,
                ctx,
                claim,
            )?;
            append.reservations = reservations.to_vec();
            match self.store.append(std::slice::from_ref(&append)).await {
                Ok(positions) => {
                    let events = committed
                        .into_iter()
                        .zip(positions)
                        .map(|(mut c, p)| {
                            c.position = p;
                            c
                        })
                        .collect();
                    return Ok(Executed {
                        state: Some(state),
                        events,
                        replayed: None,
                    });
                }
                Err(AppendError::Conflict { .. }) => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    debug!(attempt, "conflict; reloading");
                    tokio::time::sleep(backoff(attempt)).await;
                }
                Err(AppendError::DuplicateKey { .. }) => {
                    let claim = claim.ok_or_else(|| {
                        StoreError::Persistence("duplicate key without a claim".into())
                    })?;
                    let state = self.store.load::<A>(aggregate_id).await?.aggregate;
                    return self.replay(aggregate_id, claim, Some(state), None).await;
                }
                Err(AppendError::Reserved { scope, value }) => {
                    return Err(ServiceError::Reserved { scope, value })
                }
                Err(AppendError::Store(e)) => return Err(e.into()),
            }
        }
        Err(ServiceError::Contention {
            attempts: CONFLICT_RETRIES_MAX,
        })
    }

    /// Runs several commands on one stream as one unit: decided in order on
    /// one loaded state and appended in one transaction, or none of them
    /// is. A command whose key was used before replays its first outcome
    /// (a key used with another request refuses the unit, like a domain
    /// refusal); the first refusal answers its command with the refusal
    /// and every other with [`ServiceError::NotApplied`]. Conflicts with
    /// other writers reload and decide again, as [`Self::execute_with`].
    pub async fn execute_atomic<A>(
        &self,
        aggregate_id: &str,
        commands: &[AtomicCommand<A::Command>],
    ) -> Vec<Result<Executed<A>, ServiceError<A::Error>>>
    where
        A: RecentOutcomes<Services = ()>,
        A::Command: Clone,
    {
        let _turn = self.stripe(A::TYPE, aggregate_id).lock().await;
        let all =
            |e: &dyn Fn() -> ServiceError<A::Error>| commands.iter().map(|_| Err(e())).collect();
        // Commands found claimed only when appending (keys older than the
        // aggregate's window): replayed on the next attempt.
        let mut claimed_before: HashSet<usize> = HashSet::new();
        let mut attempt = 0;
        while attempt < CONFLICT_RETRIES_MAX {
            let (planned, appends) = match self
                .plan_atomic::<A>(aggregate_id, commands, &claimed_before)
                .await
            {
                Ok(Planned::Refused { index, error }) => {
                    let mut answers: Vec<_> = commands
                        .iter()
                        .map(|_| Err(ServiceError::NotApplied { index }))
                        .collect();
                    if let Some(answer) = answers.get_mut(index) {
                        *answer = Err(error);
                    }
                    return answers;
                }
                Ok(Planned::Again(index)) => {
                    claimed_before.insert(index);
                    continue;
                }
                Ok(Planned::Steps { steps, appends }) => (steps, appends),
                Err(e) => {
                    let message = e.to_string();
                    return all(&|| StoreError::Persistence(message.clone()).into());
                }
            };
            let positions = if appends.is_empty() {
                Ok(Vec::new())
            } else {
                self.store.append(&appends).await
            };
            match positions {
                Ok(positions) => {
                    let mut positions = positions.into_iter();
                    let mut answers = Vec::with_capacity(planned.len());
                    for step in planned {
                        answers.push(match step {
                            Step::Write { committed } => Ok(Executed {
                                state: None,
                                events: committed
                                    .into_iter()
                                    .map(|mut c| {
                                        c.position = positions.next().unwrap_or_default();
                                        c
                                    })
                                    .collect(),
                                replayed: None,
                            }),
                            Step::Replayed(done) => Ok(done),
                            Step::ReplayOfThisUnit { claim, recent } => {
                                self.replay::<A>(aggregate_id, &claim, None, Some(recent))
                                    .await
                            }
                            Step::Nothing => Ok(Executed {
                                state: None,
                                events: Vec::new(),
                                replayed: None,
                            }),
                        });
                    }
                    return answers;
                }
                Err(AppendError::Conflict { .. }) => {
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                    debug!(attempt, "conflict; reloading the atomic unit");
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(AppendError::DuplicateKey { key, .. }) => {
                    let offender = commands
                        .iter()
                        .position(|c| c.claim.as_ref().is_some_and(|k| k.key.as_str() == key));
                    match offender {
                        Some(i) if claimed_before.insert(i) => {}
                        _ => {
                            return all(&|| {
                                StoreError::Persistence(format!(
                                    "idempotency key {key} is claimed but could not be replayed"
                                ))
                                .into()
                            })
                        }
                    }
                }
                Err(AppendError::Reserved { scope, value }) => {
                    return all(&|| ServiceError::Reserved {
                        scope: scope.clone(),
                        value: value.clone(),
                    })
                }
                Err(AppendError::Store(e)) => {
                    let message = e.to_string();
                    return all(&|| StoreError::Persistence(message.clone()).into());
                }
            }
        }
        all(&|| ServiceError::Contention {
            attempts: CONFLICT_RETRIES_MAX,
        })
    }

    /// Decides an atomic unit's commands on one freshly loaded state.
    async fn plan_atomic<A>(
        &self,
        aggregate_id: &str,
        commands: &[AtomicCommand<A::Command>],
        claimed_before: &HashSet<usize>,
    ) -> Result<Planned<A>, StoreError>
    where
        A: RecentOutcomes<Services = ()>,
        A::Command: Clone,
    {
        let loaded = self.store.load::<A>(aggregate_id).await?;
        let mut state = loaded.aggregate;
        let mut sequence = loaded.sequence;
        let mut last_hash = loaded.last_hash;
        // Keys claimed by this unit's own writes, with their request hash.
        let mut claimed_here: HashMap<&str, &str> = HashMap::new();
        let mut steps = Vec::with_capacity(commands.len());
        let mut appends = Vec::new();
        for (index, c) in commands.iter().enumerate() {
            if let Some(claim) = &c.claim {
                if let Some(hash) = claimed_here.get(claim.key.as_str()) {
                    if *hash != claim.request_hash {
                        return Ok(Planned::Refused {
                            index,
                            error: ServiceError::KeyReused {
                                key: claim.key.to_string(),
                            },
                        });
                    }
                    let Some(recent) = state.recent_outcome(&claim.key).cloned() else {
                        return Err(StoreError::Persistence(format!(
                            "idempotency key {} was written but has no outcome",
                            claim.key
                        )));
                    };
                    steps.push(Step::ReplayOfThisUnit {
                        claim: claim.clone(),
                        recent,
                    });
                    continue;
                }
                let recent = state.recent_outcome(&claim.key).cloned();
                if recent.is_some() || claimed_before.contains(&index) {
                    match self.replay::<A>(aggregate_id, claim, None, recent).await {
                        Ok(done) => steps.push(Step::Replayed(done)),
                        Err(ServiceError::Store(e)) => return Err(e),
                        Err(error) => return Ok(Planned::Refused { index, error }),
                    }
                    continue;
                }
            }
            let sink = EventSink::default();
            let handled = state.handle(c.command.clone(), &(), &sink).await;
            let new_events = sink.collect().await;
            if handled.is_err() || new_events.is_empty() {
                // A key older than the aggregate's window may be claimed: its
                // first outcome wins (decided again from a fresh load, the
                // refusal may have moved this state).
                if let Some(claim) = &c.claim {
                    if self
                        .store
                        .find_key(aggregate_id, claim.key.as_str())
                        .await?
                        .is_some()
                    {
                        return Ok(Planned::Again(index));
                    }
                }
                match handled {
                    Err(e) => {
                        return Ok(Planned::Refused {
                            index,
                            error: ServiceError::Domain(e),
                        })
                    }
                    Ok(()) => {
                        steps.push(Step::Nothing);
                        continue;
                    }
                }
            }
            let (append, committed) = prepare::<A>(
                aggregate_id,
                sequence,
                &last_hash,
                new_events,
                &c.ctx,
                c.claim.as_ref(),
            )?;
            sequence += committed.len() as u64;
            if let Some(last) = committed.last() {
                last_hash = last.metadata.hash.clone();
            }
            if let Some(claim) = &c.claim {
                claimed_here.insert(claim.key.as_str(), claim.request_hash.as_str());
            }
            appends.push(append);
            steps.push(Step::Write { committed });
        }
        Ok(Planned::Steps { steps, appends })
    }

    /// The first outcome of a key, if the request matches the first one.
    pub(crate) async fn replay<A: Aggregate>(
        &self,
        aggregate_id: &str,
        claim: &IdempotencyClaim,
        state: Option<A>,
        recent: Option<A::Event>,
    ) -> Result<Executed<A>, ServiceError<A::Error>> {
        let record = self
            .store
            .find_key(aggregate_id, claim.key.as_str())
            .await?;
        let Some(record) = record else {
            return Err(StoreError::Persistence(format!(
                "idempotency key {} is in the stream but not claimed",
                claim.key
            ))
            .into());
        };
        if record.request_hash != claim.request_hash {
            return Err(ServiceError::KeyReused {
                key: claim.key.to_string(),
            });
        }
        let first = match recent {
            Some(e) => e,
            None => serde_json::from_value(record.payload)
                .map_err(|e| StoreError::Persistence(e.to_string()))?,
        };
        Ok(Executed {
            state,
            events: Vec::new(),
            replayed: Some((first, record.position)),
        })
    }
}

/// Which of `slots` (at least one) a key falls in, by its hash: the same
/// key always in the same one.
pub(crate) fn slot(key: impl Hash, slots: usize) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() % slots.max(1) as u64) as usize
}

/// One command of an atomic unit ([`CommandService::execute_atomic`]).
#[derive(Debug, Clone)]
pub struct AtomicCommand<C> {
    pub command: C,
    pub ctx: CommandContext,
    pub claim: Option<IdempotencyClaim>,
}

/// What deciding an atomic unit came to.
enum Planned<A: Aggregate> {
    /// Every command decided: what to answer, in order, and the appends of
    /// the commands that write, in the same order.
    Steps {
        steps: Vec<Step<A>>,
        appends: Vec<StreamAppend>,
    },
    /// The command at `index` was refused: nothing is written.
    Refused {
        index: usize,
        error: ServiceError<A::Error>,
    },
    /// The command at `index` turned out to be a replay of a key older than
    /// the aggregate's window: decide again from a fresh load.
    Again(usize),
}

/// One decided command of an atomic unit.
#[allow(clippy::large_enum_variant)]
enum Step<A: Aggregate> {
    /// Its events, answered with their positions once appended.
    Write {
        committed: Vec<CommittedEvent<A::Event>>,
    },
    /// A key claimed before: its first outcome, checked against the request.
    Replayed(Executed<A>),
    /// A key claimed by an earlier command of this unit, with the same
    /// request: answered from the store once the unit is committed.
    ReplayOfThisUnit {
        claim: IdempotencyClaim,
        recent: A::Event,
    },
    /// Decided without anything to write.
    Nothing,
}

pub(crate) type Prepared<E> = (StreamAppend, Vec<CommittedEvent<E>>);

/// Serializes events, stamps metadata and extends the stream's hash chain.
pub(crate) fn prepare<A: Aggregate>(
    aggregate_id: &str,
    last_sequence: u64,
    last_hash: &str,
    new_events: Vec<A::Event>,
    ctx: &CommandContext,
    claim: Option<&IdempotencyClaim>,
) -> Result<Prepared<A::Event>, StoreError> {
    let recorded_at = Utc::now();
    let mut prev_hash = last_hash.to_owned();
    let mut events = Vec::with_capacity(new_events.len());
    let mut committed = Vec::with_capacity(new_events.len());
    for (i, event) in new_events.into_iter().enumerate() {
        let sequence = last_sequence + 1 + i as u64;
        // Through a `Value`: its text has the keys sorted, as the log and
        // the hash chain keep them.
        let payload = serde_json::to_value(&event)
            .map_err(|e| StoreError::Persistence(e.to_string()))?
            .to_string();
        let event_type = event.event_type();
        let event_version = event.event_version();
        let hash = chain_hash_text(
            &prev_hash,
            A::TYPE,
            aggregate_id,
            sequence,
            &event_type,
            &event_version,
            payload.as_bytes(),
        );
        let metadata = EventMetadata {
            event_id: Uuid::now_v7(),
            recorded_at,
            actor: ctx.actor.clone(),
            correlation_id: ctx.correlation_id,
            causation_id: ctx.causation_id,
            idempotency_key: claim.map(|c| c.key.to_string()),
            prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
            hash,
        };
        events.push(NewEvent {
            sequence,
            event_type,
            event_version,
            payload,
            metadata: metadata.to_json_text(),
        });
        committed.push(CommittedEvent {
            event,
            sequence,
            position: 0,
            metadata,
        });
    }
    let last = last_sequence + events.len() as u64;
    Ok((
        StreamAppend {
            aggregate_type: A::TYPE,
            aggregate_id: aggregate_id.to_owned(),
            events,
            claim: claim.map(|c| crate::KeyClaim {
                key: c.key.to_string(),
                request_hash: c.request_hash.clone(),
                sequence: last,
            }),
            reservations: Vec::new(),
        },
        committed,
    ))
}

/// Exponential backoff with jitter, so racing writers spread out.
fn backoff(attempt: u32) -> Duration {
    let ceiling = (1u64 << attempt.min(6)).min(BACKOFF_MILLIS_MAX);
    let jitter = u64::from(Uuid::new_v4().as_u128() as u16) % 1000;
    Duration::from_micros(ceiling * jitter)
}
