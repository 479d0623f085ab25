//! Event metadata and the per-stream hash chain.
//!
//! cqrs-es stores metadata as a string map; [`EventMetadata`] is its typed
//! form. Each event's `hash` covers its stream, type, version, sequence,
//! payload and the previous event's hash (see `docs/adr/0003-hash-chain.md`),
//! so editing any stored event breaks every later link.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The `prev_hash` of a stream's first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who caused an event: the JWT subject and role, or a system process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    pub role: String,
}

impl Actor {
    pub fn system(process: &str) -> Self {
        Self {
            sub: process.to_owned(),
            role: "system".to_owned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventMetadata {
    pub event_id: Uuid,
    pub recorded_at: DateTime<Utc>,
    pub actor: Actor,
    pub correlation_id: Uuid,
    pub causation_id: Uuid,
    pub idempotency_key: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    #[error("metadata field {0} is missing")]
    Missing(&'static str),
    #[error("metadata field {0} is malformed")]
    Malformed(&'static str),
}

impl EventMetadata {
    /// The string map cqrs-es stores.
    /// The metadata as the log keeps it: a JSON object of strings, keys
    /// sorted — byte for byte what `serde_json::to_value(self.to_map())`
    /// prints, without building the `Value`.
    pub fn to_json_text(&self) -> String {
        let sorted: std::collections::BTreeMap<String, String> =
            self.to_map().into_iter().collect();
        // A map of strings always serializes.
        serde_json::to_string(&sorted).unwrap_or_default()
    }

    pub fn to_map(&self) -> HashMap<String, String> {
        let mut m = HashMap::with_capacity(9);
        m.insert("event_id".into(), self.event_id.to_string());
        m.insert(
            "recorded_at".into(),
            self.recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        );
        m.insert("actor_sub".into(), self.actor.sub.clone());
        m.insert("actor_role".into(), self.actor.role.clone());
        m.insert("correlation_id".into(), self.correlation_id.to_string());
        m.insert("causation_id".into(), self.causation_id.to_string());
        if let Some(k) = &self.idempotency_key {
            m.insert("idempotency_key".into(), k.clone());
        }
        m.insert("prev_hash".into(), self.prev_hash.clone());
        m.insert("hash".into(), self.hash.clone());
        m
    }

    pub fn from_map(m: &HashMap<String, String>) -> Result<Self, MetadataError> {
        let get = |k: &'static str| m.get(k).ok_or(MetadataError::Missing(k));
        let uuid = |k: &'static str| -> Result<Uuid, MetadataError> {
            Uuid::parse_str(get(k)?).map_err(|_| MetadataError::Malformed(k))
        };
        Ok(Self {
            event_id: uuid("event_id")?,
            recorded_at: DateTime::parse_from_rfc3339(get("recorded_at")?)
                .map_err(|_| MetadataError::Malformed("recorded_at"))?
                .with_timezone(&Utc),
            actor: Actor {
                sub: get("actor_sub")?.clone(),
                role: get("actor_role")?.clone(),
            },
            correlation_id: uuid("correlation_id")?,
            causation_id: uuid("causation_id")?,
            idempotency_key: m.get("idempotency_key").cloned(),
            prev_hash: get("prev_hash")?.clone(),
            hash: get("hash")?.clone(),
        })
    }
}

/// The chain hash of one event, lower-case hex SHA-256 over the canonical
/// form: each field on its own line, in this order, the payload as compact
/// JSON with object keys sorted (serde_json's default map is sorted).
pub fn chain_hash(
    prev_hash: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: u64,
    event_type: &str,
    event_version: &str,
    payload: &serde_json::Value,
) -> String {
    // Writing a Value to a Vec cannot fail.
    chain_hash_text(
        prev_hash,
        aggregate_type,
        aggregate_id,
        sequence,
        event_type,
        event_version,
        &serde_json::to_vec(payload).unwrap_or_default(),
    )
}

/// [`chain_hash`] of a payload given as its JSON text (what
/// `serde_json::to_vec` of the payload's `Value` writes: compact, keys
/// sorted), for writers that keep the text anyway.
pub fn chain_hash_text(
    prev_hash: &str,
    aggregate_type: &str,
    aggregate_id: &str,
    sequence: u64,
    event_type: &str,
    event_version: &str,
    payload_text: &[u8],
) -> String {
    let mut h = Sha256::new();
    for part in [
        prev_hash,
        aggregate_type,
        aggregate_id,
        &sequence.to_string(),
        event_type,
        event_version,
    ] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    h.update(payload_text);
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> EventMetadata {
        EventMetadata {
            event_id: Uuid::now_v7(),
            recorded_at: DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
                .unwrap()
                .with_timezone(&Utc),
            actor: Actor {
                sub: "worker-1".into(),
                role: "system_bot".into(),
            },
            correlation_id: Uuid::now_v7(),
            causation_id: Uuid::now_v7(),
            idempotency_key: Some("job-1".into()),
            prev_hash: GENESIS_HASH.into(),
            hash: "ab".repeat(32),
        }
    }

    #[test]
    fn metadata_round_trips_through_the_string_map() {
        let m = sample();
        assert_eq!(EventMetadata::from_map(&m.to_map()).unwrap(), m);
    }

    #[test]
    fn metadata_text_is_what_the_value_prints() {
        let mut m = sample();
        m.actor.sub = "quote \" backslash \\ tab \t é ✓".into();
        let via_value = serde_json::to_value(m.to_map()).unwrap().to_string();
        assert_eq!(m.to_json_text(), via_value);
        let payload = serde_json::json!({ "b": [1, "x\ny"], "a": { "z": null, "c": 1.5 } });
        assert_eq!(
            chain_hash_text("p", "t", "i", 3, "E", "1.0", payload.to_string().as_bytes()),
            chain_hash("p", "t", "i", 3, "E", "1.0", &payload)
        );
    }

    #[test]
    fn metadata_without_a_hash_is_refused() {
        let mut map = sample().to_map();
        map.remove("hash");
        assert_eq!(
            EventMetadata::from_map(&map),
            Err(MetadataError::Missing("hash"))
        );
    }

    #[test]
    fn the_chain_hash_changes_with_every_covered_field() {
        let p = serde_json::json!({"b": 1, "a": "x"});
        let base = chain_hash(GENESIS_HASH, "account", "id", 1, "T", "1.0", &p);
        assert_eq!(base.len(), 64);
        assert_ne!(
            base,
            chain_hash(&"1".repeat(64), "account", "id", 1, "T", "1.0", &p)
        );
        assert_ne!(
            base,
            chain_hash(GENESIS_HASH, "catalog", "id", 1, "T", "1.0", &p)
        );
        assert_ne!(
            base,
            chain_hash(GENESIS_HASH, "account", "id2", 1, "T", "1.0", &p)
        );
        assert_ne!(
            base,
            chain_hash(GENESIS_HASH, "account", "id", 2, "T", "1.0", &p)
        );
        assert_ne!(
            base,
            chain_hash(GENESIS_HASH, "account", "id", 1, "U", "1.0", &p)
        );
        assert_ne!(
            base,
            chain_hash(GENESIS_HASH, "account", "id", 1, "T", "2.0", &p)
        );
        let p2 = serde_json::json!({"b": 2, "a": "x"});
        assert_ne!(
            base,
            chain_hash(GENESIS_HASH, "account", "id", 1, "T", "1.0", &p2)
        );
        // Key order in the input does not matter: the form is canonical.
        let same: serde_json::Value = serde_json::from_str(r#"{"a":"x","b":1}"#).unwrap();
        assert_eq!(
            base,
            chain_hash(GENESIS_HASH, "account", "id", 1, "T", "1.0", &same)
        );
    }
}
