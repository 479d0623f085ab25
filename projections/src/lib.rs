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

/// [`time_text`] into a reused buffer (the folds format one per event).
pub(crate) fn time_text_into(out: &mut String, t: chrono::DateTime<chrono::Utc>) {
    use chrono::{Datelike, Timelike};
    use std::fmt::Write as _;
    out.clear();
    let nanos = t.nanosecond();
    if !(0..=9999).contains(&t.year()) || nanos >= 1_000_000_000 {
        // Years outside four digits and leap seconds: chrono's own format.
        out.push_str(&time_text(t));
        return;
    }
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        nanos / 1_000
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, TimeZone, Utc};

    #[test]
    fn time_text_into_writes_what_time_text_writes() {
        let mut out = String::from("left over");
        let mut instants: Vec<DateTime<Utc>> = vec![
            Utc.timestamp_opt(0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 3, 25, 8, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(9999, 12, 31, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(-1, 1, 1, 0, 0, 0).unwrap(),
            // A leap second.
            Utc.timestamp_opt(1_483_228_799, 1_500_000_000).unwrap(),
        ];
        let mut seconds: i64 = 12_345;
        for i in 0..2_000u32 {
            seconds = (seconds.wrapping_mul(1_103_515_245) + 12_345).rem_euclid(253_402_300_799);
            instants.push(Utc.timestamp_opt(seconds, i * 499_979).unwrap());
        }
        for t in instants {
            time_text_into(&mut out, t);
            assert_eq!(out, time_text(t), "{t:?}");
        }
    }
}
