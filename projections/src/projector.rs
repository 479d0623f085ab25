//! The projector: tails the global log into the read models.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use store::sql::Arg;
use store::Store;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tracing::{debug, error};

use crate::live::{apply_batch, read_page, Page};
use crate::ProjectionError;

/// The checkpoint row of the read models.
pub const PROJECTION_NAME: &str = "read_models";
/// Events the first batch may hold; later batches adapt
/// ([`Projector::run_once`]) between [`PROJECTOR_BATCH_MIN`] and
/// [`PROJECTOR_BATCH_MAX`].
pub const PROJECTOR_BATCH_EVENTS: u32 = 1_000;
/// Fewest events a batch may be limited to.
pub const PROJECTOR_BATCH_MIN: u32 = 100;
/// Most events applied in one transaction.
pub const PROJECTOR_BATCH_MAX: u32 = store::audit::AUDIT_PAGE_EVENTS_MAX;
/// How long a full batch may take: a full batch that took less may double,
/// one that took over twice as long is halved. Long
/// enough that a projector behind the log writes big sets (a batch's cost
/// is mostly per touched row, not per event: 10,000 deductions over 1,000
/// accounts write 1,000 balance rows, 1,000 deductions ~630), short enough
/// that a fresh read waits little and (SQLite) writers are not held up.
const BATCH_TARGET: Duration = Duration::from_millis(500);
/// How often an idle projector looks for events written by other processes.
const IDLE_POLL: Duration = Duration::from_millis(100);
/// Pause after a failed batch (store down, a poison event) before trying
/// again; doubled after each failure in a row, up to [`ERROR_BACKOFF_MAX`].
pub const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between retries of a failing batch.
pub const ERROR_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Milliseconds since the Unix epoch, now.
fn unix_millis() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis()),
    )
    .unwrap_or(i64::MAX)
}

const READ_MODEL_TABLES: [&str; 10] = [
    "rm_accounts",
    "rm_balances",
    "rm_transactions",
    "rm_usage",
    "rm_usage_daily",
    "rm_cost_history",
    "rm_invoices",
    "rm_payments",
    "rm_subscriptions",
    "rm_team_members",
];

/// A page being read ahead: the position it starts after, and its task.
type ReadAhead = (i64, JoinHandle<Result<Page, ProjectionError>>);

pub struct Projector {
    store: Store,
    position: watch::Sender<i64>,
    /// Why the last batch failed, until one succeeds.
    error: watch::Sender<Option<String>>,
    /// When the read models last reached the end of the log (Unix ms).
    caught_up_at: Arc<AtomicI64>,
    /// Batches that failed, in all.
    failures: Arc<AtomicU64>,
    wake: Arc<Notify>,
    /// The next batch's most events (adaptive).
    batch_limit: AtomicU32,
    /// The page after the batch being written, read and decoded meanwhile
    /// (only while the projector is behind): the position it starts after,
    /// and the task.
    prefetch: std::sync::Mutex<Option<ReadAhead>>,
}

/// What the API holds: the projected position, and a way to wake the
/// projector right after a write.
#[derive(Clone, Debug)]
pub struct ProjectorHandle {
    position: watch::Receiver<i64>,
    error: watch::Receiver<Option<String>>,
    caught_up_at: Arc<AtomicI64>,
    failures: Arc<AtomicU64>,
    wake: Arc<Notify>,
}

impl ProjectorHandle {
    /// The log position the read models have reached.
    pub fn position(&self) -> i64 {
        *self.position.borrow()
    }

    /// Why the projector is stuck: its last batch failed (or panicked)
    /// and none has succeeded since. `None` while it is healthy.
    pub fn error(&self) -> Option<String> {
        self.error.borrow().clone()
    }

    /// How far behind the log the read models are in time: 0 at the head,
    /// else the time since the read models last held every event written
    /// before it (they reached the end of the log, or applied a batch read
    /// to its end): an upper bound of the oldest unprojected event's age,
    /// in milliseconds.
    pub fn lag_millis(&self, head: i64) -> i64 {
        if self.position() >= head {
            return 0;
        }
        (unix_millis() - self.caught_up_at.load(Ordering::Relaxed)).max(0)
    }

    /// Batches that failed since the process started.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Asks the projector to look for new events now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Waits until the read models reach `min` or `timeout` passes; true
    /// when they did.
    pub async fn wait_for(&self, min: i64, timeout: Duration) -> bool {
        if self.position() >= min {
            return true;
        }
        self.wake();
        let mut rx = self.position.clone();
        tokio::time::timeout(timeout, rx.wait_for(|p| *p >= min))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

impl Projector {
    /// A projector starting from the stored checkpoint.
    pub async fn new(store: Store) -> Result<(Self, ProjectorHandle), ProjectionError> {
        store
            .execute(
                "INSERT INTO projection_checkpoints (name, position) VALUES ($1, 0) \
                 ON CONFLICT (name) DO NOTHING",
                &[PROJECTION_NAME.into()],
            )
            .await?;
        let start = checkpoint(&store).await?;
        let (tx, rx) = watch::channel(start);
        let (error_tx, error_rx) = watch::channel(None);
        let wake = Arc::new(Notify::new());
        let caught_up_at = Arc::new(AtomicI64::new(unix_millis()));
        let failures = Arc::new(AtomicU64::new(0));
        Ok((
            Self {
                store,
                position: tx,
                error: error_tx,
                caught_up_at: caught_up_at.clone(),
                failures: failures.clone(),
                wake: wake.clone(),
                batch_limit: AtomicU32::new(PROJECTOR_BATCH_EVENTS),
                prefetch: std::sync::Mutex::new(None),
            },
            ProjectorHandle {
                position: rx,
                error: error_rx,
                caught_up_at,
                failures,
                wake,
            },
        ))
    }

    /// Applies the next batch of events; returns how many (0 only when the
    /// read models have reached the end of the log). The batch's size
    /// adapts: it doubles while full batches take under [`BATCH_TARGET`]
    /// (the projector is behind: bigger sets, fewer rows per event, fewer
    /// commits) and halves when one takes over twice as long.
    pub async fn run_once(&self) -> Result<usize, ProjectionError> {
        let limit = self.batch_limit.load(Ordering::Relaxed);
        let started = Instant::now();
        let n = self.run_batch(limit).await?;
        let took = started.elapsed();
        let next = if n >= limit as usize && took < BATCH_TARGET {
            limit.saturating_mul(2).min(PROJECTOR_BATCH_MAX)
        } else if took > BATCH_TARGET * 2 {
            (limit / 2).max(PROJECTOR_BATCH_MIN)
        } else {
            limit
        };
        if next != limit {
            debug!(
                from = limit,
                to = next,
                took_ms = took.as_millis() as u64,
                "projector batch size"
            );
            self.batch_limit.store(next, Ordering::Relaxed);
        }
        Ok(n)
    }

    /// Applies the next batch of at most `max_events` events (at least 1)
    /// in one transaction with the checkpoint; returns how many. A batch
    /// another projector claimed first is left to it, and the next one is
    /// tried. An event that cannot be applied ends the batch before it;
    /// alone at the head of a batch, it is the error.
    pub async fn run_batch(&self, max_events: u32) -> Result<usize, ProjectionError> {
        // Where this projector left the checkpoint; read from the store
        // again only when a claim shows another process moved it.
        let mut from = self.position();
        loop {
            let read_at = unix_millis();
            let mut page = self.page(from, max_events).await?;
            // A page short of its limit held every event committed when it
            // was read (a page read ahead is always full).
            let to_the_end = !page.is_full();
            let Some(read_upto) = page.events.last().map(|e| e.position) else {
                return Ok(0);
            };
            if page.is_full() {
                // A full page: the projector is behind. Read and decode the
                // next one while this batch is written.
                let next = tokio::spawn(read_page(self.store.clone(), read_upto, max_events));
                if let Ok(mut slot) = self.prefetch.lock() {
                    if let Some((_, stale)) = slot.replace((read_upto, next)) {
                        stale.abort();
                    }
                }
            }
            page.truncate(max_events as usize);
            let mut tx = self.store.begin().await?;
            if matches!(tx, store::sql::SqlTx::Pg(_)) {
                // The read models are derived: a batch lost to a database
                // crash before its WAL reached the disk is lost with its
                // checkpoint, atomically, and projected again. Not waiting
                // for the flush takes the commit's fsync off every batch.
                tx.execute("SET LOCAL synchronous_commit TO off", &[])
                    .await?;
            }
            // Claim the batch: the no-op update locks the checkpoint row if
            // it is still where we read it. If another process moved it, this
            // batch is theirs and we write nothing. The rows the batch
            // starts from are read after this, under the lock.
            let claimed = tx
                .execute(
                    "UPDATE projection_checkpoints SET position = position \
                     WHERE name = $1 AND position = $2",
                    &[PROJECTION_NAME.into(), from.into()],
                )
                .await?;
            if claimed == 0 {
                // Returning 0 here would tell `catch_up` the log is exhausted
                // and leave this handle's position behind the read models.
                debug!(from, "another projector advanced the checkpoint");
                drop(tx);
                from = checkpoint(&self.store).await?;
                self.position.send_replace(from);
                continue;
            }
            let positions: Vec<i64> = page.events.iter().map(|e| e.position).collect();
            let n = apply_batch(&mut tx, page).await?;
            let last = positions[n - 1];
            tx.execute(
                "UPDATE projection_checkpoints SET position = $2 WHERE name = $1",
                &[PROJECTION_NAME.into(), last.into()],
            )
            .await?;
            tx.commit().await?;
            if to_the_end && n == positions.len() {
                // The read models now hold everything written before
                // `read_at`: under a steady load the projector may never
                // meet an empty page, and the lag is the age of what it
                // has not read, not the time since it last idled.
                self.caught_up_at.fetch_max(read_at, Ordering::Relaxed);
            }
            self.position.send_replace(last);
            return Ok(n);
        }
    }

    /// The page of events after `from`: the one read ahead when it starts
    /// there and is full (a partial page read ahead may have missed events
    /// written since), else read now.
    async fn page(&self, from: i64, max_events: u32) -> Result<Page, ProjectionError> {
        let ahead = self.prefetch.lock().ok().and_then(|mut slot| slot.take());
        if let Some((at, task)) = ahead {
            if at == from {
                if let Ok(Ok(page)) = task.await {
                    if page.from == from && page.is_full() {
                        return Ok(page);
                    }
                }
            } else {
                task.abort();
            }
        }
        read_page(self.store.clone(), from, max_events).await
    }

    /// The checkpoint this projector last read or wrote.
    fn position(&self) -> i64 {
        *self.position.borrow()
    }

    /// Applies batches until the log is exhausted; returns how many events.
    pub async fn catch_up(&self) -> Result<usize, ProjectionError> {
        let mut total = 0;
        loop {
            let n = self.run_once().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// Empties every read model and refills it from the whole log.
    pub async fn rebuild(&self) -> Result<usize, ProjectionError> {
        self.reset().await?;
        self.catch_up().await
    }

    /// Empties every read model and moves the checkpoint to the start of
    /// the log: the next batches refill them.
    pub async fn reset(&self) -> Result<(), ProjectionError> {
        let mut tx = self.store.begin().await?;
        // The checkpoint row first: its lock waits for a batch another
        // projector is committing, so the deletes below see (and remove) its
        // rows, and no batch can commit in between. Deleting first would miss
        // rows inserted after the delete's snapshot, and the refill would
        // then fail on their keys (PostgreSQL, READ COMMITTED).
        tx.execute(
            "UPDATE projection_checkpoints SET position = 0 WHERE name = $1",
            &[Arg::from(PROJECTION_NAME)],
        )
        .await?;
        for table in READ_MODEL_TABLES.iter().chain(&["expiry_schedule"]) {
            tx.execute(&format!("DELETE FROM {table}"), &[]).await?;
        }
        tx.commit().await?;
        self.position.send_replace(0);
        Ok(())
    }

    /// [`Projector::rebuild`] through the fast path (`bulk`): the read
    /// models folded in memory and written with multi-row INSERTs in one
    /// transaction, so readers see the old rows until it commits. Gives
    /// the same rows as `rebuild`.
    pub async fn rebuild_bulk(&self) -> Result<usize, ProjectionError> {
        let n =
            crate::bulk::rebuild_tables(&self.store, &crate::bulk::Table::ALL, |_, _| {}).await?;
        self.position.send_replace(checkpoint(&self.store).await?);
        Ok(n)
    }

    /// Runs until `shutdown` resolves: applies batches as they come, wakes on
    /// [`ProjectorHandle::wake`] or every poll interval, and rides out store
    /// outages. A failed batch, even one that panics, never ends the task:
    /// it is logged, shown by [`ProjectorHandle::error`] (so `/ready` and
    /// `verify` report it) and tried again after a pause.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut failed_in_a_row: u32 = 0;
        loop {
            let batch = AssertUnwindSafe(self.run_once()).catch_unwind().await;
            let failure = match batch {
                Ok(Ok(n)) => {
                    failed_in_a_row = 0;
                    self.error.send_if_modified(|e| e.take().is_some());
                    if n > 0 {
                        continue;
                    }
                    self.caught_up_at.store(unix_millis(), Ordering::Relaxed);
                    None
                }
                Ok(Err(e)) => Some(e.to_string()),
                Err(panic) => Some(format!("panicked: {}", panic_message(&*panic))),
            };
            match failure {
                None => tokio::select! {
                    () = &mut shutdown => return,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                },
                Some(reason) => {
                    failed_in_a_row = failed_in_a_row.saturating_add(1);
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    let at = *self.position.borrow();
                    let pause = backoff(failed_in_a_row);
                    error!(
                        position = at,
                        error = %reason,
                        failed_in_a_row,
                        retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                        "projector batch failed; retrying"
                    );
                    self.error.send_replace(Some(format!(
                        "the batch after position {at} failed: {reason}"
                    )));
                    // A failing projector waits at least ERROR_BACKOFF before
                    // a write may wake it: a poison event retried on every
                    // write would burn the CPU the writes need. After that a
                    // write ends the pause early, so a store that is back is
                    // noticed with the first write, not after the backoff.
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(ERROR_BACKOFF.min(pause)) => {}
                    }
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(pause.saturating_sub(ERROR_BACKOFF)) => {}
                    }
                }
            }
        }
    }
}

async fn checkpoint(store: &Store) -> Result<i64, ProjectionError> {
    let row = store
        .fetch_optional(
            "SELECT position FROM projection_checkpoints WHERE name = $1",
            &[PROJECTION_NAME.into()],
        )
        .await?;
    Ok(match row {
        Some(r) => r.i64("position")?,
        None => 0,
    })
}

/// The pause before retry number `n` (1-based) of a failing batch.
fn backoff(n: u32) -> Duration {
    ERROR_BACKOFF
        .saturating_mul(1_u32 << n.saturating_sub(1).min(16))
        .min(ERROR_BACKOFF_MAX)
}

/// The text a panic carried, if it was a string.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), ERROR_BACKOFF);
        assert_eq!(backoff(2), ERROR_BACKOFF * 2);
        assert_eq!(backoff(3), ERROR_BACKOFF * 4);
        assert_eq!(backoff(10), ERROR_BACKOFF_MAX);
        assert_eq!(backoff(u32::MAX), ERROR_BACKOFF_MAX);
    }
}
