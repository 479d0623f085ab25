//! The hot command path for credit accounts: one in-process committer that
//! keeps account states warm and commits many accounts' commands in one
//! store transaction (group commit).
//!
//! Callers submit into a bounded queue and wait for their answer, which comes
//! only after the transaction holding their events has committed. The
//! committer takes what is queued (up to [`CommitterConfig::batch_commands_max`],
//! waiting at most [`CommitterConfig::batch_wait`] for more), decides every
//! command against the cached state of its account — in arrival order, so
//! commands for one account are serialized — and appends all their events,
//! claims and reservations together. A full queue is refused at once
//! ([`SubmitError::Overloaded`]) instead of growing memory.
//!
//! A caller's batch ([`AccountCommitter::execute_batch`]) is queued as one
//! unit and taken whole into one transaction, its commands decided in order
//! next to other callers' commands. An atomic unit (one account) is written
//! only if every command in it is: on the first refusal none is, and the
//! unit runs again alone through [`CommandService::execute_atomic`], which
//! answers with the refusal (and replays keys used long ago).
//!
//! Another process writing the same account makes the batch's append fail
//! with a conflict (the per-stream sequence is still checked by the store):
//! the committer then drops the batch's cached states and runs each of its
//! commands through [`CommandService`], which reloads and retries, so nothing
//! is lost or applied twice.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{AccountEvent, GENESIS_HASH};
use ledger::{AccountCommand, AccountError, CreditAccount};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use crate::service::{
    prepare, slot, AtomicCommand, CommandContext, Executed, IdempotencyClaim, ServiceError,
};
use crate::{AppendError, CommandService, RecentOutcomes, Reservation, StoreError, StreamAppend};

/// Bounds of the committer.
#[derive(Debug, Clone)]
pub struct CommitterConfig {
    /// Most commands decided and committed in one transaction.
    pub batch_commands_max: usize,
    /// Longest the committer waits for more commands once one is queued.
    pub batch_wait: Duration,
    /// Most commands queued; beyond it callers are refused. A batch counts
    /// its commands.
    pub queue_commands_max: usize,
    /// Most account states kept warm in memory.
    pub cache_accounts_max: usize,
    /// Most accounts loaded from the store at once for one batch.
    pub loads_in_flight_max: usize,
    /// A snapshot is written once a warm account is this many events past
    /// its last one, so loading it never folds more than that.
    pub snapshot_every_events: u64,
    /// Committers sharing the accounts (each account always on the same
    /// one, by a hash of its id): their transactions are in flight at once,
    /// one deciding and claiming while the other commits (PostgreSQL hands
    /// out log positions under a lock held to commit, so the second appends
    /// its events only after the first committed). 1 on SQLite, whose
    /// writers take turns anyway.
    pub shards: usize,
}

impl Default for CommitterConfig {
    fn default() -> Self {
        Self {
            batch_commands_max: 512,
            batch_wait: Duration::from_millis(1),
            queue_commands_max: 20_000,
            cache_accounts_max: 100_000,
            loads_in_flight_max: 16,
            snapshot_every_events: 500,
            shards: 1,
        }
    }
}

/// Why a command was not taken.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the command queue is full")]
    Overloaded,
    #[error("the committer has stopped")]
    Stopped,
    #[error("an atomic batch must be on one account")]
    AtomicAcrossAccounts,
    #[error(transparent)]
    Service(#[from] ServiceError<AccountError>),
}

/// What became of one command of a batch.
pub type BatchResult = Result<Executed<CreditAccount>, ServiceError<AccountError>>;

type Reply = oneshot::Sender<BatchResult>;

/// One command of a caller's batch ([`AccountCommitter::execute_batch`]).
#[derive(Debug, Clone)]
pub struct BatchCommand {
    pub account_id: String,
    pub command: AccountCommand,
    pub ctx: CommandContext,
    pub claim: Option<IdempotencyClaim>,
}

struct Request {
    account_id: String,
    command: AccountCommand,
    ctx: CommandContext,
    claim: Option<IdempotencyClaim>,
    reservations: Vec<Reservation>,
    reply: Reply,
}

/// What the queue carries: one command, or a caller's batch, taken into a
/// transaction whole.
struct Unit {
    requests: Vec<Request>,
    /// All or none of the requests (one account).
    atomic: bool,
}

impl Unit {
    fn one(request: Request) -> Self {
        Self {
            requests: vec![request],
            atomic: false,
        }
    }
}

/// Counters of what the committer did, for metrics and tests.
#[derive(Debug, Default)]
pub struct CommitterStats {
    /// Transactions that appended a batch.
    pub batches: AtomicU64,
    /// Commands whose events went out in a batch.
    pub batched_commands: AtomicU64,
    /// Commands run alone through the command service (after a conflict
    /// with another process, or in the rare cases the warm state cannot be
    /// trusted).
    pub alone: AtomicU64,
    /// Commands refused because the queue was full.
    pub overloaded: AtomicU64,
}

/// A handle to submit account commands; cheap to clone.
#[derive(Clone, Debug)]
pub struct AccountCommitter {
    /// One queue per shard.
    shards: Arc<[mpsc::Sender<Unit>]>,
    /// Commands queued and not yet taken by the committer.
    queued: Arc<AtomicUsize>,
    queue_commands_max: usize,
    stats: Arc<CommitterStats>,
}

impl AccountCommitter {
    /// Starts the committer task on the current runtime.
    pub fn start(service: CommandService, config: CommitterConfig) -> Self {
        let queue_commands_max = config.queue_commands_max.max(1);
        let shards = config.shards.max(1);
        let stats = Arc::new(CommitterStats::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let mut senders = Vec::with_capacity(shards);
        for _ in 0..shards {
            let (tx, rx) = mpsc::channel(queue_commands_max);
            let config = CommitterConfig {
                cache_accounts_max: (config.cache_accounts_max / shards).max(1),
                ..config.clone()
            };
            tokio::spawn(
                Committer {
                    service: service.clone(),
                    config,
                    cache: HashMap::new(),
                    tick: 0,
                    stats: stats.clone(),
                    queued: queued.clone(),
                }
                .run(rx),
            );
            senders.push(tx);
        }
        Self {
            shards: senders.into(),
            queued,
            queue_commands_max,
            stats,
        }
    }

    /// The shard an account's commands go to.
    fn shard_of(&self, account_id: &str) -> usize {
        if self.shards.len() == 1 {
            return 0;
        }
        slot(account_id, self.shards.len())
    }

    /// Queues a unit on its account's shard (a unit on several accounts is
    /// split by shard, each part still whole), or refuses it when its
    /// commands do not fit the queue.
    fn enqueue(&self, unit: Unit) -> Result<(), SubmitError> {
        let n = unit.requests.len();
        let before = self.queued.fetch_add(n, Ordering::AcqRel);
        if before + n > self.queue_commands_max {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            self.stats.overloaded.fetch_add(n as u64, Ordering::Relaxed);
            return Err(SubmitError::Overloaded);
        }
        let first = unit
            .requests
            .first()
            .map_or(0, |r| self.shard_of(&r.account_id));
        if unit.atomic
            || unit
                .requests
                .iter()
                .all(|r| self.shard_of(&r.account_id) == first)
        {
            return self.send(first, unit);
        }
        // Parts of a cross-account batch: each shard's commands in order.
        // (Sending fails only when the server stops; the part's callers are
        // then answered that the committer stopped.)
        let mut parts: Vec<Vec<Request>> = (0..self.shards.len()).map(|_| Vec::new()).collect();
        for r in unit.requests {
            let shard = self.shard_of(&r.account_id);
            parts[shard].push(r);
        }
        for (shard, requests) in parts.into_iter().enumerate() {
            if !requests.is_empty() {
                let _ = self.send(
                    shard,
                    Unit {
                        requests,
                        atomic: false,
                    },
                );
            }
        }
        Ok(())
    }

    fn send(&self, shard: usize, unit: Unit) -> Result<(), SubmitError> {
        let n = unit.requests.len();
        self.shards[shard].try_send(unit).map_err(|e| {
            self.queued.fetch_sub(n, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => {
                    self.stats.overloaded.fetch_add(n as u64, Ordering::Relaxed);
                    SubmitError::Overloaded
                }
                mpsc::error::TrySendError::Closed(_) => SubmitError::Stopped,
            }
        })
    }

    /// Runs a caller's batch as one unit of one transaction, each command
    /// decided in order (so a later one sees the earlier ones' effects) and
    /// answered on its own, in order, once committed. With `atomic`, all
    /// commands are on one account and either all are written or none: the
    /// first refused one gets its refusal, the others
    /// [`ServiceError::NotApplied`].
    pub async fn execute_batch(
        &self,
        commands: Vec<BatchCommand>,
        atomic: bool,
    ) -> Result<Vec<BatchResult>, SubmitError> {
        if atomic
            && commands
                .windows(2)
                .any(|w| w[0].account_id != w[1].account_id)
        {
            return Err(SubmitError::AtomicAcrossAccounts);
        }
        let mut answers = Vec::with_capacity(commands.len());
        let mut requests = Vec::with_capacity(commands.len());
        for c in commands {
            let (reply, answer) = oneshot::channel();
            answers.push(answer);
            requests.push(Request {
                account_id: c.account_id,
                command: c.command,
                ctx: c.ctx,
                claim: c.claim,
                reservations: Vec::new(),
                reply,
            });
        }
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        self.enqueue(Unit { requests, atomic })?;
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(answer.await.unwrap_or_else(|_| {
                Err(ServiceError::Store(StoreError::Persistence(
                    "the committer has stopped".into(),
                )))
            }));
        }
        Ok(results)
    }

    pub fn stats(&self) -> &CommitterStats {
        &self.stats
    }

    /// Runs a command and answers once it is committed (or refused).
    pub async fn execute(
        &self,
        account_id: &str,
        command: AccountCommand,
        ctx: &CommandContext,
        claim: Option<&IdempotencyClaim>,
        reservations: &[Reservation],
    ) -> Result<Executed<CreditAccount>, SubmitError> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            account_id: account_id.to_owned(),
            command,
            ctx: ctx.clone(),
            claim: claim.cloned(),
            reservations: reservations.to_vec(),
            reply,
        };
        self.enqueue(Unit::one(request))?;
        answer
            .await
            .map_err(|_| SubmitError::Stopped)?
            .map_err(SubmitError::Service)
    }
}

/// A warm account: its state and what the next append needs.
struct Warm {
    state: CreditAccount,
    sequence: u64,
    last_hash: String,
    used: u64,
    /// Sequence of the stream's latest snapshot (0 for none).
    snapshot: u64,
}

/// What became of one request while deciding a batch. It lives only for
/// the batch, so its variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Decided {
    /// Events to append; answered after the commit.
    Append {
        request: Request,
        /// Taken out into the batch's append list once decided.
        append: Option<StreamAppend>,
        committed: Vec<crate::CommittedEvent<AccountEvent>>,
        keep_state: bool,
    },
    /// Answered after the commit, from the store's idempotency claim: a
    /// repeated key, or a keyed refusal whose key may have been used before.
    CheckKey {
        request: Request,
        refusal: Option<AccountError>,
        recent: Option<AccountEvent>,
    },
    /// Decided from the warm state without writing: a refusal or a no-op.
    /// It stands only if the stream has not moved since (another process
    /// may have written it); otherwise the command runs alone.
    Unwritten {
        request: Request,
        sequence: u64,
        result: Result<Executed<CreditAccount>, ServiceError<AccountError>>,
    },
    /// Decided without writing anything.
    Done {
        request: Request,
        result: Result<Executed<CreditAccount>, ServiceError<AccountError>>,
    },
    /// Run alone through the command service after the batch.
    Alone(Request),
    /// An atomic unit whose every command writes (each an `Append`).
    Atomic(Vec<Decided>),
    /// An atomic unit run alone through the command service after the
    /// batch (a command of it was refused, replays a key, or its account's
    /// state cannot be trusted).
    AloneAtomic(Vec<Request>),
}

impl Decided {
    /// The requests this decision answers.
    fn requests(self) -> Vec<Request> {
        match self {
            Self::Append { request, .. }
            | Self::CheckKey { request, .. }
            | Self::Unwritten { request, .. }
            | Self::Done { request, .. }
            | Self::Alone(request) => vec![request],
            Self::Atomic(inner) => inner.into_iter().flat_map(Self::requests).collect(),
            Self::AloneAtomic(requests) => requests,
        }
    }

    /// The decision, with an atomic unit's written commands taken apart
    /// (once the transaction holding them has committed).
    fn flatten(self) -> Vec<Decided> {
        match self {
            Self::Atomic(inner) => inner,
            other => vec![other],
        }
    }

    /// Moves this decision's appends into the batch's list.
    fn take_appends(&mut self, out: &mut Vec<StreamAppend>) {
        match self {
            Self::Append { append, .. } => out.extend(append.take()),
            Self::Atomic(inner) => inner.iter_mut().for_each(|d| d.take_appends(out)),
            _ => {}
        }
    }

    /// Whether one of this decision's appends is for a request `matches`.
    fn appends_for(&self, matches: &impl Fn(&Request) -> bool) -> bool {
        match self {
            Self::Append { request, .. } => matches(request),
            Self::Atomic(inner) => inner.iter().any(|d| d.appends_for(matches)),
            _ => false,
        }
    }
}

struct Committer {
    service: CommandService,
    config: CommitterConfig,
    /// Boxed values: the table reserves up to twice its entries, and a warm
    /// state is several hundred bytes.
    cache: HashMap<String, Box<Warm>>,
    tick: u64,
    stats: Arc<CommitterStats>,
    /// Commands queued and not yet taken (shared with the handles).
    queued: Arc<AtomicUsize>,
}

fn is_admin(command: &AccountCommand) -> bool {
    matches!(
        command,
        AccountCommand::OpenAccount(_)
            | AccountCommand::UpdateAccount { .. }
            | AccountCommand::ChangePlan { .. }
            | AccountCommand::Suspend { .. }
            | AccountCommand::Reactivate { .. }
            | AccountCommand::SetBudget { .. }
            | AccountCommand::SetAutoTopUp { .. }
    )
}

impl Committer {
    async fn run(mut self, mut rx: mpsc::Receiver<Unit>) {
        let max = self.config.batch_commands_max.max(1);
        let mut batch: Vec<Unit> = Vec::new();
        // A unit that did not fit the last batch: the first of the next.
        // (Counted out of the queue already.)
        let mut carried: Option<Unit> = None;
        loop {
            let first = match carried.take() {
                Some(u) => u,
                None => match rx.recv().await {
                    Some(u) => {
                        self.taken(&u);
                        u
                    }
                    None => break,
                },
            };
            // A unit larger than a batch is still taken whole, alone.
            let mut commands = first.requests.len();
            batch.push(first);
            // Take what is already queued, then wait briefly for more: the
            // commit is paid once for all of them.
            let deadline = tokio::time::Instant::now() + self.config.batch_wait;
            while commands < max {
                let next = match rx.try_recv() {
                    Ok(u) => u,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        match tokio::time::timeout_at(deadline, rx.recv()).await {
                            Ok(Some(u)) => u,
                            _ => break,
                        }
                    }
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                };
                let n = self.taken(&next);
                if commands + n > max {
                    carried = Some(next);
                    break;
                }
                commands += n;
                batch.push(next);
            }
            self.process(std::mem::take(&mut batch)).await;
        }
    }

    /// Counts a unit out of the queue.
    fn taken(&self, unit: &Unit) -> usize {
        let n = unit.requests.len();
        self.queued.fetch_sub(n, Ordering::AcqRel);
        n
    }

    /// Loads the accounts of a batch that are not warm, a few at a time.
    async fn warm_up(&mut self, batch: &[Unit]) -> Result<(), StoreError> {
        let mut missing: Vec<String> = batch
            .iter()
            .flat_map(|u| &u.requests)
            .map(|r| r.account_id.clone())
            .filter(|id| !self.cache.contains_key(id))
            .collect();
        missing.sort();
        missing.dedup();
        for chunk in missing.chunks(self.config.loads_in_flight_max.max(1)) {
            let loads = chunk.iter().map(|id| {
                let store = self.service.store().clone();
                async move { (id.clone(), store.load::<CreditAccount>(id).await) }
            });
            for (id, loaded) in futures::future::join_all(loads).await {
                let loaded = loaded?;
                self.cache.insert(
                    id,
                    Box::new(Warm {
                        state: loaded.aggregate,
                        sequence: loaded.sequence,
                        last_hash: loaded.last_hash,
                        used: self.tick,
                        snapshot: loaded.snapshot_sequence.unwrap_or(0),
                    }),
                );
            }
        }
        Ok(())
    }

    /// Keeps the cache within its bound by dropping the least recently used
    /// tenth when it overflows.
    fn trim(&mut self) {
        if self.cache.len() <= self.config.cache_accounts_max {
            return;
        }
        let mut ages: Vec<(u64, String)> = self
            .cache
            .iter()
            .map(|(id, w)| (w.used, id.clone()))
            .collect();
        ages.sort_unstable();
        let drop = self.cache.len() - self.config.cache_accounts_max * 9 / 10;
        for (_, id) in ages.into_iter().take(drop) {
            self.cache.remove(&id);
        }
    }

    /// Decides an atomic unit on the warm state of its account: every
    /// command must write. Anything else (a refusal, a replay, an account
    /// whose state cannot be trusted) forgets the state the unit went
    /// ahead with, and the unit runs alone after the batch, where the
    /// refusal is answered.
    async fn decide_atomic(
        &mut self,
        requests: Vec<Request>,
        tainted: &mut Vec<String>,
    ) -> Decided {
        let Some(account) = requests.first().map(|r| r.account_id.clone()) else {
            return Decided::Atomic(Vec::new());
        };
        if tainted.contains(&account) {
            return Decided::AloneAtomic(requests);
        }
        let mut decided = Vec::with_capacity(requests.len());
        let mut requests = requests.into_iter();
        let mut all_write = true;
        for request in requests.by_ref() {
            let d = self.decide(request).await;
            let writes = matches!(d, Decided::Append { .. });
            decided.push(d);
            if !writes {
                all_write = false;
                break;
            }
        }
        if all_write {
            return Decided::Atomic(decided);
        }
        self.cache.remove(&account);
        tainted.push(account);
        let mut again: Vec<Request> = decided.into_iter().flat_map(Decided::requests).collect();
        again.extend(requests);
        Decided::AloneAtomic(again)
    }

    async fn process(&mut self, batch: Vec<Unit>) {
        self.tick += 1;
        if let Err(e) = self.warm_up(&batch).await {
            warn!(error = %e, "could not load accounts for a batch");
            let message = e.to_string();
            for r in batch.into_iter().flat_map(|u| u.requests) {
                let _ = r
                    .reply
                    .send(Err(ServiceError::Store(StoreError::Persistence(
                        message.clone(),
                    ))));
            }
            return;
        }
        let mut decided = Vec::with_capacity(batch.len());
        // Accounts whose cached state can no longer be trusted in this batch.
        let mut tainted: Vec<String> = Vec::new();
        for unit in batch {
            if unit.atomic {
                let d = self.decide_atomic(unit.requests, &mut tainted).await;
                decided.push(d);
                continue;
            }
            for request in unit.requests {
                if tainted.contains(&request.account_id) {
                    decided.push(Decided::Alone(request));
                    continue;
                }
                let decision = self.decide(request).await;
                if let Decided::Alone(r) = &decision {
                    tainted.push(r.account_id.clone());
                }
                decided.push(decision);
            }
        }
        // Moved, not copied: the events' JSON is the bulk of a batch.
        let mut appends: Vec<StreamAppend> = Vec::new();
        for d in &mut decided {
            d.take_appends(&mut appends);
        }
        let outcome = if appends.is_empty() {
            Ok(Vec::new())
        } else {
            self.service.store().append(&appends).await
        };
        match outcome {
            Ok(positions) => {
                if !appends.is_empty() {
                    self.stats.batches.fetch_add(1, Ordering::Relaxed);
                    self.stats
                        .batched_commands
                        .fetch_add(appends.len() as u64, Ordering::Relaxed);
                }
                let mut positions = positions.into_iter();
                let mut later = VecDeque::new();
                for d in decided.into_iter().flat_map(Decided::flatten) {
                    match d {
                        Decided::Append {
                            request,
                            committed,
                            keep_state,
                            ..
                        } => {
                            let events = committed
                                .into_iter()
                                .map(|mut c| {
                                    c.position = positions.next().unwrap_or_default();
                                    c
                                })
                                .collect();
                            let state = if keep_state {
                                self.cache.get(&request.account_id).map(|w| w.state.clone())
                            } else {
                                None
                            };
                            let _ = request.reply.send(Ok(Executed {
                                state,
                                events,
                                replayed: None,
                            }));
                        }
                        Decided::Done { request, result } => {
                            let _ = request.reply.send(result);
                        }
                        other => later.push_back(other),
                    }
                }
                for d in later {
                    self.after_commit(d).await;
                }
                self.snapshot(&appends).await;
            }
            Err(AppendError::DuplicateKey { account_id, key }) => {
                // A key older than the warm window, used again: only its
                // command is a replay. The others are decided again, as a
                // batch of their own, from states reloaded from the store.
                debug!(%account_id, %key, "a batch met an old idempotency key");
                self.drop_cached(&decided);
                let is_offender = |r: &Request| {
                    r.account_id == account_id
                        && r.claim.as_ref().is_some_and(|c| c.key.as_str() == key)
                };
                // The offender is always one of the batch's appends; were it
                // ever not found, deciding the rest again would meet the same
                // key forever, so each command then runs alone instead.
                let found = decided.iter().any(|d| d.appends_for(&is_offender));
                let mut again = Vec::new();
                for d in decided {
                    match d {
                        Decided::Append { request, .. } if !found => self.run_alone(request).await,
                        Decided::Append { request, .. } if is_offender(&request) => {
                            self.after_commit(Decided::CheckKey {
                                request,
                                refusal: None,
                                recent: None,
                            })
                            .await;
                        }
                        Decided::Append { request, .. } => again.push(Unit::one(request)),
                        // An atomic unit holding the key replays it alone,
                        // with the rest of the unit.
                        Decided::Atomic(inner)
                            if !found || inner.iter().any(|d| d.appends_for(&is_offender)) =>
                        {
                            let requests = inner.into_iter().flat_map(Decided::requests).collect();
                            self.run_alone_atomic(requests).await;
                        }
                        Decided::Atomic(inner) => again.push(Unit {
                            requests: inner.into_iter().flat_map(Decided::requests).collect(),
                            atomic: true,
                        }),
                        Decided::Done { request, result } => {
                            let _ = request.reply.send(result);
                        }
                        other => self.after_commit(other).await,
                    }
                }
                if !again.is_empty() {
                    Box::pin(self.process(again)).await;
                }
            }
            Err(e) => {
                // The states in the cache went ahead of the store: forget
                // them, and let each command find its own way. A value the
                // database refused fails only the command that carried it:
                // each runs alone, and only the offender gets the error.
                let retry = matches!(
                    e,
                    AppendError::Conflict { .. } | AppendError::Reserved { .. }
                ) || (e.is_refused_data() && appends.len() > 1);
                debug!(error = %e, retry, "batch append failed");
                self.drop_cached(&decided);
                for d in decided {
                    match d {
                        Decided::Append { request, .. } if retry => self.run_alone(request).await,
                        Decided::Atomic(inner) if retry => {
                            let requests = inner.into_iter().flat_map(Decided::requests).collect();
                            self.run_alone_atomic(requests).await;
                        }
                        d @ (Decided::Append { .. } | Decided::Atomic(_)) => {
                            for request in d.requests() {
                                let _ = request.reply.send(Err(ServiceError::Store(
                                    StoreError::Persistence(e.to_string()),
                                )));
                            }
                        }
                        Decided::Done { request, result } => {
                            let _ = request.reply.send(result);
                        }
                        other => self.after_commit(other).await,
                    }
                }
            }
        }
        self.trim();
    }

    /// Forgets the warm states a failed batch's decisions went ahead with.
    fn drop_cached(&mut self, decided: &[Decided]) {
        for d in decided {
            match d {
                Decided::Append { request, .. } => {
                    self.cache.remove(&request.account_id);
                }
                Decided::Atomic(inner) => self.drop_cached(inner),
                _ => {}
            }
        }
    }

    /// Decides one command against the warm state of its account.
    async fn decide(&mut self, request: Request) -> Decided {
        let Some(warm) = self.cache.get_mut(&request.account_id) else {
            return Decided::Alone(request);
        };
        warm.used = self.tick;
        if let Some(claim) = &request.claim {
            if let Some(first) = warm.state.recent_outcome(&claim.key).cloned() {
                return Decided::CheckKey {
                    request,
                    refusal: None,
                    recent: Some(first),
                };
            }
        }
        let sink = EventSink::default();
        let handled = warm.state.handle(request.command.clone(), &(), &sink).await;
        let events = sink.collect().await;
        match handled {
            Err(e) => {
                if !events.is_empty() {
                    // Expiries were applied in memory before the refusal:
                    // the cached state is ahead of the store.
                    self.cache.remove(&request.account_id);
                    return Decided::Alone(request);
                }
                Decided::Unwritten {
                    request,
                    sequence: warm.sequence,
                    result: Err(ServiceError::Domain(e)),
                }
            }
            Ok(()) if events.is_empty() => {
                if request.claim.is_some() {
                    return Decided::Alone(request);
                }
                let state = is_admin(&request.command).then(|| warm.state.clone());
                Decided::Unwritten {
                    request,
                    sequence: warm.sequence,
                    result: Ok(Executed {
                        state,
                        events: Vec::new(),
                        replayed: None,
                    }),
                }
            }
            Ok(()) => {
                let prepared = prepare::<CreditAccount>(
                    &request.account_id,
                    warm.sequence,
                    &warm.last_hash,
                    events,
                    &request.ctx,
                    request.claim.as_ref(),
                );
                match prepared {
                    Ok((mut append, committed)) => {
                        append.reservations = request.reservations.clone();
                        warm.sequence += committed.len() as u64;
                        warm.last_hash = committed
                            .last()
                            .map(|c| c.metadata.hash.clone())
                            .unwrap_or_else(|| GENESIS_HASH.to_owned());
                        let keep_state = is_admin(&request.command);
                        Decided::Append {
                            request,
                            append: Some(append),
                            committed,
                            keep_state,
                        }
                    }
                    Err(e) => {
                        self.cache.remove(&request.account_id);
                        Decided::Done {
                            request,
                            result: Err(ServiceError::Store(e)),
                        }
                    }
                }
            }
        }
    }

    /// Writes snapshots of the batch's accounts that are far enough past
    /// their last one. A snapshot is a cache: a failure is only logged.
    async fn snapshot(&mut self, appends: &[StreamAppend]) {
        let every = self.config.snapshot_every_events.max(1);
        for a in appends {
            let Some(warm) = self.cache.get_mut(&a.aggregate_id) else {
                continue;
            };
            if warm.sequence < warm.snapshot + every {
                continue;
            }
            match self
                .service
                .store()
                .save_snapshot(&a.aggregate_id, warm.sequence, &warm.last_hash, &warm.state)
                .await
            {
                Ok(()) => warm.snapshot = warm.sequence,
                Err(e) => warn!(account = %a.aggregate_id, error = %e, "snapshot not written"),
            }
        }
    }

    /// Answers what needs the store once the batch is committed.
    async fn after_commit(&mut self, decided: Decided) {
        match decided {
            Decided::CheckKey {
                request,
                refusal,
                recent,
            } => {
                let Some(claim) = request.claim.as_ref() else {
                    return;
                };
                let found = self
                    .service
                    .store()
                    .find_key(&request.account_id, claim.key.as_str())
                    .await;
                let result = match (found, refusal) {
                    (Err(e), _) => Err(ServiceError::Store(e)),
                    (Ok(None), Some(refusal)) => Err(ServiceError::Domain(refusal)),
                    (Ok(_), _) => {
                        self.service
                            .replay::<CreditAccount>(&request.account_id, claim, None, recent)
                            .await
                    }
                };
                let _ = request.reply.send(result);
            }
            Decided::Alone(request) | Decided::Append { request, .. } => {
                self.run_alone(request).await;
            }
            Decided::AloneAtomic(requests) => self.run_alone_atomic(requests).await,
            Decided::Atomic(inner) => {
                let requests = inner.into_iter().flat_map(Decided::requests).collect();
                self.run_alone_atomic(requests).await;
            }
            Decided::Unwritten {
                request,
                sequence,
                result,
            } => {
                // The decision stands if nobody else wrote the account: the
                // stream is where this committer left it (after the batch's
                // own later writes, when the account is still warm).
                let ours = self
                    .cache
                    .get(&request.account_id)
                    .map_or(sequence, |w| w.sequence);
                let current = self
                    .service
                    .store()
                    .stream_sequence(CreditAccount::TYPE, &request.account_id)
                    .await;
                match current {
                    Ok(current) if current == ours => match result {
                        // A keyed refusal may be a retry of a key used long
                        // ago: its first answer wins.
                        Err(ServiceError::Domain(refusal)) if request.claim.is_some() => {
                            Box::pin(self.after_commit(Decided::CheckKey {
                                request,
                                refusal: Some(refusal),
                                recent: None,
                            }))
                            .await;
                        }
                        result => {
                            let _ = request.reply.send(result);
                        }
                    },
                    // Another process wrote the account: decide again on
                    // what is stored.
                    Ok(_) => self.run_alone(request).await,
                    Err(e) => {
                        let _ = request.reply.send(Err(ServiceError::Store(e)));
                    }
                }
            }
            Decided::Done { request, result } => {
                let _ = request.reply.send(result);
            }
        }
    }

    /// Runs an atomic unit through the command service: loaded, decided
    /// and written together, or refused together.
    async fn run_alone_atomic(&mut self, requests: Vec<Request>) {
        let Some(account) = requests.first().map(|r| r.account_id.clone()) else {
            return;
        };
        self.stats
            .alone
            .fetch_add(requests.len() as u64, Ordering::Relaxed);
        self.cache.remove(&account);
        let mut replies = Vec::with_capacity(requests.len());
        let mut commands = Vec::with_capacity(requests.len());
        for r in requests {
            replies.push(r.reply);
            commands.push(AtomicCommand {
                command: r.command,
                ctx: r.ctx,
                claim: r.claim,
            });
        }
        let results = self
            .service
            .execute_atomic::<CreditAccount>(&account, &commands)
            .await;
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }

    /// Runs one command through the command service, which loads the
    /// stream, retries on conflict and replays claimed keys; the cached state
    /// of the account is stale once it writes.
    async fn run_alone(&mut self, request: Request) {
        self.stats.alone.fetch_add(1, Ordering::Relaxed);
        self.cache.remove(&request.account_id);
        let result = self
            .service
            .execute_with::<CreditAccount>(
                &request.account_id,
                request.command,
                &request.ctx,
                request.claim.as_ref(),
                &request.reservations,
            )
            .await;
        let _ = request.reply.send(result);
    }
}
