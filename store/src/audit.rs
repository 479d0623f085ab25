//! Read paths for the audit tools (`ledger-replay`, docs/adr/0008).
//!
//! Opening an *existing* database (never creating or migrating one, and
//! read-only where the database allows it), consistent read snapshots, a
//! stream or the global log page by page with payloads as stored text, the
//! ledger's snapshots and the replay checkpoints. The same SQL runs on both
//! databases through [`crate::sql`].

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use crate::sql::{Arg, SqlRow, SqlTx};
use crate::{Store, StoreError};

/// Most events one audit read returns.
pub const AUDIT_PAGE_EVENTS_MAX: u32 = 10_000;
/// Connections the audit tools keep (they read one page at a time).
pub const AUDIT_POOL_CONNECTIONS_MAX: u32 = 4;
/// How long the tools wait for a connection before calling the database
/// unreachable.
pub const AUDIT_CONNECT_TIMEOUT_SECONDS: u64 = 5;
/// Version of the checkpoint payloads; older ones are ignored by readers
/// (and reported by verify).
pub const CHECKPOINT_FORMAT: i64 = 1;

/// How the tools use the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads only: SQLite opened read-only, PostgreSQL sessions with
    /// `default_transaction_read_only`.
    ReadOnly,
    /// Rebuilds write the read models and checkpoints.
    ReadWrite,
}

/// Why an existing database could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the database URL must start with postgres://, postgresql:// or sqlite:")]
    UnsupportedUrl,
    #[error("no SQLite database at {0} (nothing is created; check --database-url)")]
    MissingFile(PathBuf),
    #[error("cannot reach the database: {0}")]
    Unreachable(String),
    #[error("the database has no ledger event log (table `events` is missing); run `ledger-server migrate` first")]
    NoSchema,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One stored event with its payload and metadata as stored text.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    pub position: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    /// Empty when the read did not ask for metadata.
    pub metadata: String,
}

/// A stored checkpoint or snapshot: a stream's state at a sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredState {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub last_hash: String,
    pub format: i64,
    pub payload: String,
    /// Checkpoints only: the log position and the instant of the event at
    /// `sequence`.
    pub position: Option<i64>,
    pub occurred_at: Option<String>,
}

/// A checkpoint to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCheckpoint {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub position: i64,
    pub occurred_at: String,
    pub last_hash: String,
    pub payload: String,
}

/// A URL safe to print: the password, if any, is masked.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

fn unreachable(url: &str, e: impl std::fmt::Display) -> OpenError {
    OpenError::Unreachable(format!("{}: {e}", redact_url(url)))
}

const EVENT_COLUMNS: &str = "position, aggregate_type, aggregate_id, sequence, event_type, \
     event_version, CAST(payload AS text) AS payload";

fn raw_event(row: &SqlRow, with_metadata: bool) -> Result<RawEvent, StoreError> {
    Ok(RawEvent {
        position: row.i64("position")?,
        aggregate_type: row.text("aggregate_type")?,
        aggregate_id: row.text("aggregate_id")?,
        sequence: row.i64("sequence")?,
        event_type: row.text("event_type")?,
        event_version: row.text("event_version")?,
        payload: row.text("payload")?,
        metadata: if with_metadata {
            row.text("metadata")?
        } else {
            String::new()
        },
    })
}

fn select_events(with_metadata: bool) -> String {
    if with_metadata {
        format!("SELECT {EVENT_COLUMNS}, CAST(metadata AS text) AS metadata FROM events")
    } else {
        format!("SELECT {EVENT_COLUMNS} FROM events")
    }
}

fn stored_state(row: &SqlRow, checkpoint: bool) -> Result<StoredState, StoreError> {
    Ok(StoredState {
        aggregate_type: row.text("aggregate_type")?,
        aggregate_id: row.text("aggregate_id")?,
        sequence: row.i64("sequence")?,
        last_hash: row.text("last_hash")?,
        format: row.i64("format")?,
        payload: row.text("payload")?,
        position: if checkpoint {
            Some(row.i64("position")?)
        } else {
            None
        },
        occurred_at: if checkpoint {
            Some(row.text("occurred_at")?)
        } else {
            None
        },
    })
}

impl Store {
    /// Opens a database that must already exist and hold the event log.
    /// Nothing is created and no migration runs; with [`Access::ReadOnly`]
    /// the database itself refuses writes.
    pub async fn open_existing(url: &str, access: Access) -> Result<Self, OpenError> {
        let store = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let mut options: PgConnectOptions = url.parse().map_err(|e| unreachable(url, e))?;
            if access == Access::ReadOnly {
                options = options.options([("default_transaction_read_only", "on")]);
            }
            let pool = PgPoolOptions::new()
                .max_connections(AUDIT_POOL_CONNECTIONS_MAX)
                .acquire_timeout(Duration::from_secs(AUDIT_CONNECT_TIMEOUT_SECONDS))
                .connect_with(options)
                .await
                .map_err(|e| unreachable(url, e))?;
            Self::Postgres(crate::postgres::PgStore::from_pool(pool))
        } else if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| unreachable(url, e))?
                .create_if_missing(false)
                .busy_timeout(Duration::from_secs(
                    crate::sqlite::SQLITE_BUSY_TIMEOUT_SECONDS,
                ));
            let file: PathBuf = options.get_filename().to_path_buf();
            if !is_memory(&file) && !file.exists() {
                return Err(OpenError::MissingFile(file));
            }
            let options = match access {
                // Read-only connections leave the journal mode as the
                // server set it (changing it would be a write).
                Access::ReadOnly => options.read_only(true),
                Access::ReadWrite => options
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true),
            };
            let pool = SqlitePoolOptions::new()
                .max_connections(AUDIT_POOL_CONNECTIONS_MAX)
                .acquire_timeout(Duration::from_secs(AUDIT_CONNECT_TIMEOUT_SECONDS))
                .connect_with(options)
                .await
                .map_err(|e| unreachable(url, e))?;
            Self::Sqlite(crate::sqlite::SqliteStore::from_pool(pool))
        } else {
            return Err(OpenError::UnsupportedUrl);
        };
        if !store.has_table("events").await? {
            return Err(OpenError::NoSchema);
        }
        Ok(store)
    }

    /// Whether a table exists (in PostgreSQL's search path / the SQLite file).
    pub async fn has_table(&self, name: &str) -> Result<bool, StoreError> {
        let sql = match self {
            Self::Postgres(_) => "SELECT COUNT(*) AS n FROM pg_catalog.pg_tables \
                                   WHERE tablename = $1 AND schemaname = ANY (current_schemas(false))",
            Self::Sqlite(_) => {
                "SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table' AND name = $1"
            }
        };
        let row = self.fetch_optional(sql, &[name.into()]).await?;
        Ok(row.map(|r| r.i64("n")).transpose()?.unwrap_or(0) > 0)
    }

    /// A read-only transaction that sees one consistent state of the whole
    /// database (PostgreSQL: REPEATABLE READ; SQLite: a deferred
    /// transaction, whose snapshot is taken at its first read).
    pub async fn begin_read(&self) -> Result<SqlTx, StoreError> {
        Ok(match self {
            Self::Postgres(s) => {
                let mut tx = s.pool().begin().await?;
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                SqlTx::Pg(tx)
            }
            Self::Sqlite(s) => SqlTx::Sqlite(s.pool().begin().await?),
        })
    }

    /// Up to `limit` (≤ [`AUDIT_PAGE_EVENTS_MAX`]) events of the global log
    /// with `after < position ≤ upto`, in log order.
    ///
    /// Each query asks for a window of at most `limit` positions, not for
    /// "the first `limit` after `after`": on a log that grew faster than
    /// PostgreSQL's statistics (a fresh database, a burst of writes), the
    /// planner took the open range for a few rows and sorted all of it,
    /// tens of MB on disk, for every page (440 ms a page instead of 70,
    /// measured). A window bounds that sort. Positions are dense but for
    /// rolled-back appends, so a window short of `limit` events is either
    /// a gap, and the next window is read, or the end of the log.
    pub async fn log_page(
        &self,
        after: i64,
        upto: i64,
        limit: u32,
        with_metadata: bool,
    ) -> Result<Vec<RawEvent>, StoreError> {
        let limit = i64::from(limit.clamp(1, AUDIT_PAGE_EVENTS_MAX));
        let sql = format!(
            "{} WHERE position > $1 AND position <= $2 ORDER BY position LIMIT $3",
            select_events(with_metadata)
        );
        let mut page: Vec<RawEvent> = Vec::new();
        let mut from = after;
        let mut head = None;
        while from < upto {
            let window_end = upto.min(from.saturating_add(limit));
            let missing = limit - page.len() as i64;
            for r in self
                .fetch_all(&sql, &[from.into(), window_end.into(), missing.into()])
                .await?
            {
                page.push(raw_event(&r, with_metadata)?);
            }
            if page.len() as i64 >= limit {
                break;
            }
            let head = match head {
                Some(h) => h,
                None => *head.insert(self.head_position().await?),
            };
            if window_end >= head {
                break;
            }
            from = window_end;
        }
        Ok(page)
    }

    /// Up to `limit` (≤ [`AUDIT_PAGE_EVENTS_MAX`]) events of one stream
    /// after sequence `after`, in stream order.
    pub async fn stream_page(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after: i64,
        limit: u32,
        with_metadata: bool,
    ) -> Result<Vec<RawEvent>, StoreError> {
        let limit = i64::from(limit.min(AUDIT_PAGE_EVENTS_MAX));
        let sql = format!(
            "{} WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 \
             ORDER BY sequence LIMIT $4",
            select_events(with_metadata)
        );
        self.fetch_all(
            &sql,
            &[
                aggregate_type.into(),
                aggregate_id.into(),
                after.into(),
                limit.into(),
            ],
        )
        .await?
        .iter()
        .map(|r| raw_event(r, with_metadata))
        .collect()
    }

    /// One stored event of a stream.
    pub async fn event_at(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
    ) -> Result<Option<RawEvent>, StoreError> {
        let sql = format!(
            "{} WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
            select_events(true)
        );
        self.fetch_optional(
            &sql,
            &[aggregate_type.into(), aggregate_id.into(), sequence.into()],
        )
        .await?
        .map(|r| raw_event(&r, true))
        .transpose()
    }

    /// How many events a stream has and the position of its last one.
    pub async fn stream_head(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let row = self
            .fetch_optional(
                "SELECT sequence, position FROM events \
                  WHERE aggregate_type = $1 AND aggregate_id = $2 \
                  ORDER BY sequence DESC LIMIT 1",
                &[aggregate_type.into(), aggregate_id.into()],
            )
            .await?;
        row.map(|r| Ok((r.i64("sequence")?, r.i64("position")?)))
            .transpose()
    }

    /// The latest checkpoint of a stream whose event happened at or before
    /// `at` (RFC 3339 text, microseconds), if the checkpoint table exists.
    pub async fn checkpoint_at_or_before(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        at: &str,
    ) -> Result<Option<StoredState>, StoreError> {
        if !self.has_table("replay_checkpoints").await? {
            return Ok(None);
        }
        self.fetch_optional(
            "SELECT aggregate_type, aggregate_id, sequence, position, occurred_at, last_hash, \
                    format, payload \
               FROM replay_checkpoints \
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND occurred_at <= $3 \
                AND format = $4 \
              ORDER BY sequence DESC LIMIT 1",
            &[
                aggregate_type.into(),
                aggregate_id.into(),
                at.into(),
                CHECKPOINT_FORMAT.into(),
            ],
        )
        .await?
        .map(|r| stored_state(&r, true))
        .transpose()
    }
}

fn is_memory(file: &Path) -> bool {
    file.as_os_str().is_empty() || file.to_string_lossy().contains(":memory:")
}

/// Reads inside a transaction (a [`Store::begin_read`] snapshot, or a
/// rebuild's write transaction).
impl SqlTx {
    /// The position the read models' projector has reached (0 when none).
    pub async fn projector_position(&mut self, name: &str) -> Result<i64, StoreError> {
        let row = self
            .fetch_optional(
                "SELECT position FROM projection_checkpoints WHERE name = $1",
                &[name.into()],
            )
            .await?;
        Ok(row.map(|r| r.i64("position")).transpose()?.unwrap_or(0))
    }

    /// The highest committed position this transaction sees.
    pub async fn head_position(&mut self) -> Result<i64, StoreError> {
        let row = self
            .fetch_optional("SELECT COALESCE(MAX(position), 0) AS head FROM events", &[])
            .await?;
        Ok(row.map(|r| r.i64("head")).transpose()?.unwrap_or(0))
    }

    /// The ledger's snapshots (one per stream at most), optionally of one
    /// stream only.
    pub async fn snapshots(
        &mut self,
        aggregate_id: Option<&str>,
    ) -> Result<Vec<StoredState>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT aggregate_type, aggregate_id, sequence, last_hash, format, payload \
                   FROM snapshots WHERE ($1 IS NULL OR aggregate_id = $1) \
                  ORDER BY aggregate_type, aggregate_id",
                &[Arg::OptText(aggregate_id.map(str::to_owned))],
            )
            .await?;
        rows.iter().map(|r| stored_state(r, false)).collect()
    }

    /// The replay checkpoints' keys `(aggregate_type, aggregate_id,
    /// sequence)`, optionally of one stream only (payloads are read one by
    /// one with [`SqlTx::checkpoint`]).
    pub async fn checkpoint_keys(
        &mut self,
        aggregate_id: Option<&str>,
    ) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT aggregate_type, aggregate_id, sequence FROM replay_checkpoints \
                  WHERE ($1 IS NULL OR aggregate_id = $1) \
                  ORDER BY aggregate_type, aggregate_id, sequence",
                &[Arg::OptText(aggregate_id.map(str::to_owned))],
            )
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.text("aggregate_type")?,
                    r.text("aggregate_id")?,
                    r.i64("sequence")?,
                ))
            })
            .collect()
    }

    /// One replay checkpoint.
    pub async fn checkpoint(
        &mut self,
        aggregate_type: &str,
        aggregate_id: &str,
        sequence: i64,
    ) -> Result<Option<StoredState>, StoreError> {
        self.fetch_optional(
            "SELECT aggregate_type, aggregate_id, sequence, position, occurred_at, last_hash, \
                    format, payload \
               FROM replay_checkpoints \
              WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence = $3",
            &[aggregate_type.into(), aggregate_id.into(), sequence.into()],
        )
        .await?
        .map(|r| stored_state(&r, true))
        .transpose()
    }

    /// Removes every replay checkpoint (a rebuild writes them anew).
    pub async fn delete_checkpoints(&mut self) -> Result<u64, StoreError> {
        self.execute("DELETE FROM replay_checkpoints", &[]).await
    }

    /// Writes replay checkpoints.
    pub async fn insert_checkpoints(&mut self, rows: &[NewCheckpoint]) -> Result<(), StoreError> {
        for c in rows {
            self.execute(
                "INSERT INTO replay_checkpoints (aggregate_type, aggregate_id, sequence, position, \
                   occurred_at, last_hash, format, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    c.aggregate_type.clone().into(),
                    c.aggregate_id.clone().into(),
                    c.sequence.into(),
                    c.position.into(),
                    c.occurred_at.clone().into(),
                    c.last_hash.clone().into(),
                    CHECKPOINT_FORMAT.into(),
                    c.payload.clone().into(),
                ],
            )
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn urls_are_printed_without_their_password() {
        assert_eq!(
            redact_url("postgres://app:secret@db:5432/ledger"),
            "postgres://app:***@db:5432/ledger"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/x"),
            "postgres://postgres@127.0.0.1/x"
        );
        assert_eq!(
            redact_url("sqlite://./data/ledger.db"),
            "sqlite://./data/ledger.db"
        );
    }
}
