//! The ledger's event catalog: the wire format of every stored event.
//!
//! Events are facts in the past tense. Their `event_type` and `event_version`
//! strings are stored next to the payload and are never renamed: a change of
//! shape gets a new version and an upcaster. Everything here is plain data and
//! pure functions (serde, hashing); this crate does no I/O.

pub mod account;
pub mod billing;
pub mod catalog;
pub mod metadata;
pub mod paypal;
pub mod subscription;
pub mod team;
pub mod types;

pub use account::*;
pub use billing::*;
pub use catalog::*;
pub use metadata::{
    chain_hash, chain_hash_text, Actor, EventMetadata, MetadataError, GENESIS_HASH,
};
pub use paypal::*;
pub use subscription::*;
pub use team::*;
pub use types::*;

/// Every event type of this catalog is at version 1.0 today.
pub const EVENT_VERSION_1: &str = "1.0";
