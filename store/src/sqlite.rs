//! SQLite adapter: sqlite-es reads streams; appends are our own SQL.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, EventEnvelope, EventStore};
use sqlite_es::SqliteEventRepository;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::{AppendError, KeyRecord, StoreError, StoredEvent, StreamAppend};

/// Connections kept to the SQLite file (one writes at a time; WAL lets the
/// others read meanwhile).
pub const SQLITE_POOL_CONNECTIONS_MAX: u32 = 4;
/// How long a writer waits for SQLite's write lock before failing.
pub const SQLITE_BUSY_TIMEOUT_SECONDS: u64 = 10;

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(SQLITE_BUSY_TIMEOUT_SECONDS))
            .foreign_keys(true);
        let file = options.get_filename();
        if let Some(dir) = Path::new(file).parent() {
            if !dir.as_os_str().is_empty() && !dir.exists() {
                std::fs::create_dir_all(dir)?;
            }
        }
        let pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_POOL_CONNECTIONS_MAX)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// A store over a pool opened elsewhere (the audit tools open
    /// existing databases read-only, see `audit`).
    pub(crate) fn from_pool(pool: SqlitePool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrations::SQLITE.run(&self.pool).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn load_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, StoreError> {
        let store: PersistedEventStore<SqliteEventRepository, A> =
            PersistedEventStore::new_event_store(SqliteEventRepository::new(self.pool.clone()));
        store
            .load_events(aggregate_id)
            .await
            .map_err(|e| StoreError::Persistence(e.to_string()))
    }

    /// The stream's events after `after` (the tail behind a snapshot).
    pub async fn load_events_after<A: Aggregate>(
        &self,
        aggregate_id: &str,
        after: u64,
    ) -> Result<Vec<EventEnvelope<A>>, StoreError> {
        crate::events_after(
            &SqliteEventRepository::new(self.pool.clone()),
            aggregate_id,
            after,
        )
        .await
    }

    pub async fn append(&self, appends: &[StreamAppend]) -> Result<Vec<i64>, AppendError> {
        // BEGIN IMMEDIATE takes the write lock up front (waiting up to the
        // busy timeout) instead of failing when a read turns into a write.
        // The transaction rolls back on drop, also when the caller goes away.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        // Claims and reservations are taken in one global order, so two
        // processes' batches cannot wait on each other in a cycle.
        let mut reservations: Vec<(&crate::Reservation, &str)> = appends
            .iter()
            .flat_map(|a| {
                a.reservations
                    .iter()
                    .map(move |r| (r, a.aggregate_id.as_str()))
            })
            .collect();
        reservations.sort_by(|x, y| (&x.0.scope, &x.0.value).cmp(&(&y.0.scope, &y.0.value)));
        let mut claims: Vec<(&crate::KeyClaim, &StreamAppend)> = appends
            .iter()
            .filter_map(|a| a.claim.as_ref().map(|c| (c, a)))
            .collect();
        claims.sort_by(|x, y| (&x.1.aggregate_id, &x.0.key).cmp(&(&y.1.aggregate_id, &y.0.key)));
        {
            for (r, owner) in reservations {
                let inserted = sqlx::query(
                    "INSERT INTO reservations (scope, value, owner) VALUES (?, ?, ?) \
                     ON CONFLICT DO NOTHING",
                )
                .bind(&r.scope)
                .bind(&r.value)
                .bind(owner)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Err(AppendError::Reserved {
                        scope: r.scope.clone(),
                        value: r.value.clone(),
                    });
                }
            }
        }
        {
            for (claim, a) in claims {
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys \
                       (account_id, idempotency_key, request_hash, aggregate_type, sequence) \
                     VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                )
                .bind(&a.aggregate_id)
                .bind(&claim.key)
                .bind(&claim.request_hash)
                .bind(a.aggregate_type)
                .bind(claim.sequence as i64)
                .execute(&mut *tx)
                .await?;
                if inserted.rows_affected() == 0 {
                    return Err(AppendError::DuplicateKey {
                        account_id: a.aggregate_id.clone(),
                        key: claim.key.clone(),
                    });
                }
            }
        }
        let mut positions = Vec::new();
        for a in appends {
            for e in &a.events {
                let position: i64 = sqlx::query_scalar(
                    "INSERT INTO events \
                       (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
                     VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING position",
                )
                .bind(a.aggregate_type)
                .bind(&a.aggregate_id)
                .bind(e.sequence as i64)
                .bind(&e.event_type)
                .bind(&e.event_version)
                .bind(&e.payload)
                .bind(&e.metadata)
                .fetch_one(&mut *tx)
                .await
                .map_err(|err| classify(err, &a.aggregate_id))?;
                positions.push(position);
            }
        }
        tx.commit().await?;
        Ok(positions)
    }

    pub async fn read_after(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
                    payload, metadata \
               FROM events WHERE position > ? ORDER BY position LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(StoredEvent {
                    position: r.get("position"),
                    aggregate_type: r.get("aggregate_type"),
                    aggregate_id: r.get("aggregate_id"),
                    sequence: r.get("sequence"),
                    event_type: r.get("event_type"),
                    event_version: r.get("event_version"),
                    payload: json(r.get("payload"))?,
                    metadata: json(r.get("metadata"))?,
                })
            })
            .collect()
    }

    pub async fn head_position(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(position), 0) FROM events")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn find_key(
        &self,
        account_id: &str,
        key: &str,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT k.request_hash, k.sequence, e.position, e.event_type, e.event_version, e.payload \
               FROM idempotency_keys k \
               JOIN events e ON e.aggregate_type = k.aggregate_type \
                            AND e.aggregate_id = k.account_id AND e.sequence = k.sequence \
              WHERE k.account_id = ? AND k.idempotency_key = ?",
        )
        .bind(account_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(KeyRecord {
                request_hash: r.get("request_hash"),
                sequence: r.get("sequence"),
                position: r.get("position"),
                event_type: r.get("event_type"),
                event_version: r.get("event_version"),
                payload: json(r.get("payload"))?,
            })
        })
        .transpose()
    }
}

fn json(text: String) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(&text).map_err(|e| StoreError::Persistence(e.to_string()))
}

fn classify(e: sqlx::Error, aggregate_id: &str) -> AppendError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() && db.message().contains("events.") {
            return AppendError::Conflict {
                aggregate_id: aggregate_id.to_owned(),
            };
        }
    }
    AppendError::from(e)
}
