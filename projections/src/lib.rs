//! Read models folded from the global event log, and the projector that
//! keeps them.
//!
//! The [`Projector`] tails the log from its checkpoint and, per batch,
//! folds the events in memory from the rows they touch and writes the
//! changed rows with set-based statements (`live`), with the checkpoint in
//! one transaction, so a crash neither loses nor double-counts an event. The checkpoint is advanced
//! with a compare-and-set, so two server instances never apply one batch
//! twice. [`ReadModels`] answers the API's queries. Every table can be
//! dropped and refilled from the log ([`Projector::rebuild`]) with identical
//! rows; [`Projector::rebuild_bulk`] does the same in one transaction
//! through [`bulk`], whose fold the live batches use too.

pub mod billing;
pub mod bulk;
mod live;
mod projector;
mod queries;
pub mod stats;
pub mod subscriptions;
pub mod team;

pub use projector::{
    Projector, ProjectorHandle, PROJECTION_NAME, PROJECTOR_BATCH_EVENTS, PROJECTOR_BATCH_MAX,
    PROJECTOR_BATCH_MIN,
};
pub use queries::*;

/// Why a read model could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("event {position} ({event_type}) cannot be read: {reason}")]
    BadEvent {
        position: i64,
        event_type: String,
        reason: String,
    },
    #[error("the cursor is not one of this list")]
    BadCursor,
    #[error("stored value {column} is malformed: {reason}")]
    BadRow {
        column: &'static str,
        reason: String,
    },
    /// A sum that does not fit its type: checked, never a panic.
    #[error("{what} overflows")]
    Overflow { what: &'static str },
    /// The task folding a page in the background did not finish (it
    /// panicked, or the runtime is shutting down).
    #[error("the fold task failed: {0}")]
    FoldTask(String),
}

/// `a + b`, or [`ProjectionError::Overflow`] naming `what`.
pub(crate) fn add_i64(a: i64, b: i64, what: &'static str) -> Result<i64, ProjectionError> {
    a.checked_add(b).ok_or(ProjectionError::Overflow { what })
}

/// `a + b` of money, or [`ProjectionError::Overflow`] naming `what`.
pub(crate) fn add_money(
    a: rust_decimal::Decimal,
    b: rust_decimal::Decimal,
    what: &'static str,
) -> Result<rust_decimal::Decimal, ProjectionError> {
    a.checked_add(b).ok_or(ProjectionError::Overflow { what })
}

/// RFC 3339 UTC with microseconds: fixed width, so text order is time order.
pub fn time_text(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}
