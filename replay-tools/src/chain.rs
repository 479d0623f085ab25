//! Recomputing a stream's hash chain (docs/adr/0003) and naming what breaks
//! it.

use std::collections::HashMap;
use std::fmt;

use events::{chain_hash, EventMetadata, GENESIS_HASH};
use serde::Serialize;
use store::audit::RawEvent;

/// One thing verify found wrong: which event or row, expected vs found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discrepancy {
    /// `chain`, `sequence`, `metadata`, `payload`, `balance_after`,
    /// `read_model`, `checkpoint`, `snapshot`, `pack`.
    pub kind: String,
    /// The event (stream, sequence, position, event id) or row it concerns.
    pub subject: String,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for Discrepancy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: expected {}, found {}",
            self.kind, self.subject, self.expected, self.found
        )
    }
}

impl Discrepancy {
    pub fn new(
        kind: &str,
        subject: impl Into<String>,
        expected: impl fmt::Display,
        found: impl fmt::Display,
    ) -> Self {
        Self {
            kind: kind.to_owned(),
            subject: subject.into(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }
}

/// How an event is named in reports: stream, sequence, position, event id.
pub fn event_subject(raw: &RawEvent, event_id: Option<&str>) -> String {
    format!(
        "event {}/{} sequence {} (position {}, event id {}, {})",
        raw.aggregate_type,
        raw.aggregate_id,
        raw.sequence,
        raw.position,
        event_id.unwrap_or("unreadable"),
        raw.event_type,
    )
}

/// The stored metadata, typed; `None` when it does not read.
pub fn metadata(raw: &RawEvent) -> Option<EventMetadata> {
    let map: HashMap<String, String> = serde_json::from_str(&raw.metadata).ok()?;
    EventMetadata::from_map(&map).ok()
}

/// A stream's chain as far as it has been checked.
#[derive(Debug, Clone)]
pub struct Chain {
    /// Sequence of the last event checked (0 before the first).
    pub sequence: i64,
    /// Hash of the last event checked, as stored (so one edited event is
    /// reported once, and the events after it are checked against what the
    /// log says).
    pub hash: String,
}

impl Default for Chain {
    fn default() -> Self {
        Self::genesis()
    }
}

impl Chain {
    pub fn genesis() -> Self {
        Self {
            sequence: 0,
            hash: GENESIS_HASH.to_owned(),
        }
    }

    /// Continues from a checkpoint or snapshot at `sequence`.
    pub fn at(sequence: i64, hash: &str) -> Self {
        Self {
            sequence,
            hash: hash.to_owned(),
        }
    }

    /// Checks the next stored event of the stream: its sequence follows,
    /// its metadata reads, its `prev_hash` is the previous event's hash and
    /// its `hash` is the canonical hash of what is stored. Returns the
    /// metadata (when it reads) and what is wrong.
    pub fn check(&mut self, raw: &RawEvent) -> (Option<EventMetadata>, Vec<Discrepancy>) {
        let meta = metadata(raw);
        let subject = event_subject(
            raw,
            meta.as_ref().map(|m| m.event_id.to_string()).as_deref(),
        );
        let mut found = Vec::new();
        if raw.sequence != self.sequence + 1 {
            found.push(Discrepancy::new(
                "sequence",
                subject.clone(),
                self.sequence + 1,
                raw.sequence,
            ));
        }
        let Some(m) = meta.clone() else {
            found.push(Discrepancy::new(
                "metadata",
                subject,
                "readable metadata with prev_hash and hash",
                "unreadable metadata",
            ));
            self.sequence = raw.sequence;
            return (None, found);
        };
        if m.prev_hash != self.hash {
            found.push(Discrepancy::new(
                "chain",
                subject.clone(),
                format!(
                    "prev_hash {} (the hash of sequence {})",
                    self.hash, self.sequence
                ),
                format!("prev_hash {}", m.prev_hash),
            ));
        }
        let recomputed = match serde_json::from_str::<serde_json::Value>(&raw.payload) {
            Ok(payload) => chain_hash(
                &m.prev_hash,
                &raw.aggregate_type,
                &raw.aggregate_id,
                u64::try_from(raw.sequence).unwrap_or(0),
                &raw.event_type,
                &raw.event_version,
                &payload,
            ),
            Err(e) => format!("(payload is not JSON: {e})"),
        };
        if recomputed != m.hash {
            found.push(Discrepancy::new(
                "chain",
                subject,
                format!("hash {recomputed} (recomputed from the stored event)"),
                format!("hash {}", m.hash),
            ));
        }
        self.sequence = raw.sequence;
        self.hash = m.hash.clone();
        (Some(m), found)
    }
}
