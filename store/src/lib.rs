//! Event store adapters and the command service.
//!
//! [`Store`] is the ledger's event log on PostgreSQL (read through
//! postgres-es) or SQLite (read through sqlite-es): aggregates are loaded with
//! cqrs-es's plain `PersistedEventStore::new_event_store` (never its snapshot
//! or aggregate stores, which apply events twice in 0.5.0), while appends go
//! through this crate's own transaction so that the idempotency claim, the
//! hash-chained metadata and the events commit together, and every event gets
//! a global log position. [`CommandService`] runs load → handle → append with
//! optimistic concurrency, retrying on conflict.

pub mod audit;
mod committer;
mod error;
pub mod notifications;
mod outbox;
mod postgres;
mod service;
pub mod sql;
mod sqlite;
pub mod testing;
mod tokens;

use cqrs_es::Aggregate;
use serde_json::Value;

pub use committer::{
    AccountCommitter, BatchCommand, BatchResult, CommitterConfig, CommitterStats, SubmitError,
};
pub use error::{AppendError, StoreError};
pub use service::{
    request_hash, AtomicCommand, CommandContext, CommandService, CommittedEvent, Executed,
    IdempotencyClaim, RecentOutcomes, ServiceError, CONFLICT_RETRIES_MAX,
};
pub use tokens::REVOKED_TOKENS_MAX;

/// Most events one read of the global log returns.
pub const READ_BATCH_EVENTS_MAX: u32 = 10_000;

/// The default database: an SQLite file under `./data`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://./data/ledger.db";

/// A stream's events after `after`, through either adapter's cqrs-es
/// repository (the tail behind a snapshot).
async fn events_after<A: Aggregate, R: cqrs_es::persist::PersistedEventRepository>(
    repo: &R,
    aggregate_id: &str,
    after: u64,
) -> Result<Vec<cqrs_es::EventEnvelope<A>>, StoreError> {
    repo.get_last_events::<A>(aggregate_id, after as usize)
        .await
        .map_err(|e| StoreError::Persistence(e.to_string()))?
        .into_iter()
        .map(|e| {
            cqrs_es::EventEnvelope::<A>::try_from(e)
                .map_err(|e| StoreError::Persistence(e.to_string()))
        })
        .collect()
}

/// One event as stored in the global log (also a line of an audit pack's
/// `events.jsonl`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StoredEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
    pub metadata: Value,
}

/// An aggregate folded from its stream, with what the next append needs.
#[derive(Debug, Clone)]
pub struct Loaded<A> {
    pub aggregate: A,
    /// Sequence of the stream's last event (0 for a new stream).
    pub sequence: u64,
    /// Chain hash of the stream's last event (the genesis hash for a new one).
    pub last_hash: String,
    /// The snapshot the fold started from, if one was used.
    pub snapshot_sequence: Option<u64>,
}

/// Version of the snapshot payloads: bump it when an aggregate's state
/// changes shape, and older snapshots are ignored (the stream is folded).
/// 2: `CreditAccount` keeps refunded amounts only, not every deduction.
/// 3: `CreditAccount` remembers lot expiries (refunds restore them).
pub const SNAPSHOT_FORMAT: i64 = 3;

/// An event ready to append: its payload and metadata as the JSON text the
/// log keeps (compact, keys sorted: what a `serde_json::Value` prints, and
/// what the hash chain covers), serialized once.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub sequence: u64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
}

/// The events one command appends to one stream.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    pub aggregate_type: &'static str,
    pub aggregate_id: String,
    pub events: Vec<NewEvent>,
    /// Claims an idempotency key for the stream's account in the same
    /// transaction; `sequence` names the event that holds the outcome.
    pub claim: Option<KeyClaim>,
    /// Values this command takes for good (e.g. an account's slug).
    pub reservations: Vec<Reservation>,
}

/// A value unique within its scope across all streams.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub scope: String,
    pub value: String,
}

#[derive(Debug, Clone)]
pub struct KeyClaim {
    pub key: String,
    pub request_hash: String,
    pub sequence: u64,
}

/// A claimed idempotency key and the event holding the first outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyRecord {
    pub request_hash: String,
    pub sequence: i64,
    pub position: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: Value,
}

fn fold<A: Aggregate>(loaded: &mut Loaded<A>, envelopes: Vec<cqrs_es::EventEnvelope<A>>) {
    for envelope in envelopes {
        loaded.sequence = envelope.sequence as u64;
        if let Some(hash) = envelope.metadata.get("hash") {
            loaded.last_hash.clone_from(hash);
        }
        loaded.aggregate.apply(envelope.payload);
    }
}

/// Which database a [`Store`] runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// The event log on one of the supported databases.
#[derive(Clone, Debug)]
pub enum Store {
    Postgres(postgres::PgStore),
    Sqlite(sqlite::SqliteStore),
}

impl Store {
    /// Opens the database named by `url`: `postgres://…` or `sqlite://path`
    /// (the file and its folder are created when missing).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres(postgres::PgStore::connect(url).await?))
        } else if url.starts_with("sqlite:") {
            Ok(Self::Sqlite(sqlite::SqliteStore::connect(url).await?))
        } else {
            Err(StoreError::UnsupportedUrl)
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Self::Postgres(_) => Backend::Postgres,
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// Applies the pending migrations of this database.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.migrate().await,
            Self::Sqlite(s) => s.migrate().await,
        }
    }

    /// Answers when the database does.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self {
            Self::Postgres(s) => s.ping().await,
            Self::Sqlite(s) => s.ping().await,
        }
    }

    /// Folds an aggregate: from its latest snapshot and the events after it
    /// when there is a usable one, else from the whole stream. Both read
    /// through postgres-es / sqlite-es (cqrs-es's plain event store).
    pub async fn load<A: Aggregate>(&self, aggregate_id: &str) -> Result<Loaded<A>, StoreError> {
        let Some(mut loaded) = self.snapshot::<A>(aggregate_id).await? else {
            return self.load_full(aggregate_id).await;
        };
        let after = loaded.sequence;
        let tail = match self {
            Self::Postgres(s) => s.load_events_after::<A>(aggregate_id, after).await?,
            Self::Sqlite(s) => s.load_events_after::<A>(aggregate_id, after).await?,
        };
        fold(&mut loaded, tail);
        Ok(loaded)
    }

    /// Folds an aggregate from its whole stream, ignoring snapshots.
    pub async fn load_full<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Loaded<A>, StoreError> {
        let envelopes = match self {
            Self::Postgres(s) => s.load_events::<A>(aggregate_id).await?,
            Self::Sqlite(s) => s.load_events::<A>(aggregate_id).await?,
        };
        let mut loaded = Loaded {
            aggregate: A::default(),
            sequence: 0,
            last_hash: events::GENESIS_HASH.to_owned(),
            snapshot_sequence: None,
        };
        fold(&mut loaded, envelopes);
        Ok(loaded)
    }

    /// The stream's snapshot, if there is one of the current format that
    /// reads; anything else is ignored (a snapshot is only a cache).
    async fn snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<Loaded<A>>, StoreError> {
        let row = self
            .fetch_optional(
                "SELECT sequence, last_hash, format, payload FROM snapshots \
                  WHERE aggregate_type = $1 AND aggregate_id = $2",
                &[A::TYPE.into(), aggregate_id.into()],
            )
            .await?;
        let Some(row) = row else { return Ok(None) };
        if row.i64("format")? != SNAPSHOT_FORMAT {
            return Ok(None);
        }
        match serde_json::from_str::<A>(&row.text("payload")?) {
            Ok(aggregate) => {
                let sequence = row.i64("sequence")? as u64;
                Ok(Some(Loaded {
                    aggregate,
                    sequence,
                    last_hash: row.text("last_hash")?,
                    snapshot_sequence: Some(sequence),
                }))
            }
            Err(e) => {
                tracing::warn!(aggregate_id, error = %e, "ignoring an unreadable snapshot");
                Ok(None)
            }
        }
    }

    /// Saves a stream's state at `sequence` as its snapshot, unless a later
    /// one is there already.
    pub async fn save_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
        sequence: u64,
        last_hash: &str,
        state: &A,
    ) -> Result<(), StoreError> {
        let payload =
            serde_json::to_string(state).map_err(|e| StoreError::Persistence(e.to_string()))?;
        self.execute(
            "INSERT INTO snapshots (aggregate_type, aggregate_id, sequence, last_hash, format, payload) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (aggregate_type, aggregate_id) DO UPDATE SET \
               sequence = excluded.sequence, last_hash = excluded.last_hash, \
               format = excluded.format, payload = excluded.payload \
             WHERE snapshots.sequence < excluded.sequence",
            &[
                A::TYPE.into(),
                aggregate_id.into(),
                (sequence as i64).into(),
                last_hash.into(),
                SNAPSHOT_FORMAT.into(),
                payload.into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Appends the streams' events in one transaction. Fails with
    /// [`AppendError::Conflict`] when another writer got there first and
    /// [`AppendError::DuplicateKey`] when an idempotency key is taken;
    /// nothing is written then.
    pub async fn append(&self, appends: &[StreamAppend]) -> Result<Vec<i64>, AppendError> {
        match self {
            Self::Postgres(s) => s.append(appends).await,
            Self::Sqlite(s) => s.append(appends).await,
        }
    }

    /// Up to `limit` events with a position above `after`, in log order.
    pub async fn read_after(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let limit = limit.min(READ_BATCH_EVENTS_MAX);
        match self {
            Self::Postgres(s) => s.read_after(after, limit).await,
            Self::Sqlite(s) => s.read_after(after, limit).await,
        }
    }

    /// The highest committed position (0 for an empty log).
    pub async fn head_position(&self) -> Result<i64, StoreError> {
        match self {
            Self::Postgres(s) => s.head_position().await,
            Self::Sqlite(s) => s.head_position().await,
        }
    }

    /// The sequence of a stream's last event (0 for none).
    pub async fn stream_sequence(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<u64, StoreError> {
        let row = self
            .fetch_optional(
                "SELECT COALESCE(MAX(sequence), 0) AS sequence FROM events \
                  WHERE aggregate_type = $1 AND aggregate_id = $2",
                &[aggregate_type.into(), aggregate_id.into()],
            )
            .await?;
        Ok(row.map(|r| r.i64("sequence")).transpose()?.unwrap_or(0) as u64)
    }

    /// Which stream reserved a value, if any.
    pub async fn reservation_owner(
        &self,
        scope: &str,
        value: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = self
            .fetch_optional(
                "SELECT owner FROM reservations WHERE scope = $1 AND value = $2",
                &[scope.into(), value.into()],
            )
            .await?;
        row.map(|r| r.text("owner")).transpose()
    }

    /// The claim on an account's idempotency key, with its outcome event.
    pub async fn find_key(
        &self,
        account_id: &str,
        key: &str,
    ) -> Result<Option<KeyRecord>, StoreError> {
        match self {
            Self::Postgres(s) => s.find_key(account_id, key).await,
            Self::Sqlite(s) => s.find_key(account_id, key).await,
        }
    }
}
