//! `ledger-replay`: the finance team's audit tools, working from the event
//! log alone (SPEC §5, docs/adr/0008-replay-tools.md).
//!
//! - [`asof`]: an account's balance, held and available at any instant,
//!   folded with the ledger's own rules (expiries and hold TTLs included),
//!   starting from a verified checkpoint when there is one;
//! - [`history`]: every event of an account with its signed amount and the
//!   running balance, as a table, RFC 4180 CSV or JSON;
//! - [`verify`]: every stream's hash chain recomputed, every account folded
//!   and diffed against the live read models, checkpoints and snapshots
//!   checked against the log and a fresh fold;
//! - [`rebuild`]: the read models refilled through the bulk path, and the
//!   replay checkpoints written;
//! - [`export`]: an audit pack that [`export::verify_pack`] re-checks
//!   offline.
//!
//! Every command but `rebuild` opens the database read-only
//! ([`store::audit::Access::ReadOnly`]) and none creates or migrates one.

pub mod asof;
pub mod chain;
pub mod error;
pub mod export;
pub mod guard;
pub mod history;
pub mod rebuild;
pub mod time;
pub mod verify;

pub use error::ReplayError;

/// Events between two replay checkpoints of a stream.
pub const CHECKPOINT_INTERVAL_EVENTS: i64 = 10_000;
