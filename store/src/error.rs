/// A technical failure of the store: never a domain refusal.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the database URL must start with postgres:// or sqlite:")]
    UnsupportedUrl,
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("could not read stored events: {0}")]
    Persistence(String),
    #[error("could not create the data directory: {0}")]
    Io(#[from] std::io::Error),
}

/// Why an append wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("stream {aggregate_id} moved on: another writer appended first")]
    Conflict { aggregate_id: String },
    #[error("idempotency key already used on account {account_id}")]
    DuplicateKey { account_id: String, key: String },
    #[error("{scope} {value:?} is already taken")]
    Reserved { scope: String, value: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Failures that only mean "not now": PostgreSQL deadlocks and
/// serialization failures, SQLite busy or locked. The append wrote nothing
/// and the commands may simply be decided again.
const RETRYABLE_CODES: [&str; 6] = ["40P01", "40001", "5", "6", "261", "517"];

impl AppendError {
    /// The database refused what one of the batch's commands carried (a
    /// value it cannot store, a constraint), as opposed to the database
    /// being away or busy: the batch's other commands would succeed
    /// without it.
    pub fn is_refused_data(&self) -> bool {
        matches!(
            self,
            Self::Store(StoreError::Database(sqlx::Error::Database(_)))
        ) || matches!(self, Self::Store(StoreError::Persistence(_)))
    }
}

impl From<sqlx::Error> for AppendError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            if db
                .code()
                .is_some_and(|c| RETRYABLE_CODES.contains(&c.as_ref()))
            {
                return Self::Conflict {
                    aggregate_id: String::new(),
                };
            }
        }
        Self::Store(StoreError::Database(e))
    }
}
