//! The ledger's application layer: every use case a caller can run, as a
//! plain async function taking a [`Caller`] and parsed input and returning
//! a domain outcome or an [`AppError`] — never a transport's type. HTTP,
//! NATS and the background jobs call these; none of them decides a rule
//! of its own (docs/adr/0014-app-layer.md).
//!
//! Plumbing: [`caller`] (who asks; tenant scoping), [`access`] (the role
//! table), [`error`] (the SPEC's error table), [`input`] (the one JSON
//! intake and the canonical form idempotency hashes), [`runner`] (the one
//! place commands run), [`telemetry`] (the metrics registry). Use cases:
//! [`accounts`], [`credits`], [`reads`], [`catalog`], [`billing`],
//! [`subscriptions`], [`stripe_events`], [`paypal_events`]; [`jobs`] run
//! on the server's own behalf.

pub mod access;
pub mod caller;
pub mod catalog_cache;
pub mod error;
pub mod gateway;
pub mod input;
pub mod jobs;
pub mod runner;
#[cfg(feature = "openapi")]
pub mod schema;
pub mod settings;
pub mod telemetry;

pub mod accounts;
pub mod auto_top_up;
pub mod billing;
pub mod budget;
pub mod catalog;
pub mod credits;
pub mod notify;
pub mod paypal_events;
pub mod reads;
pub mod stripe_events;
pub mod subscriptions;
pub mod team;
pub mod tokens;

use std::sync::Arc;

use projections::{ProjectorHandle, ReadModels};
use store::{AccountCommitter, CommandService, Store};

pub use caller::{Caller, Role};
pub use catalog_cache::CatalogCache;
pub use error::AppError;
pub use input::{Input, Key, Parsed, Query};
pub use settings::{Secret, Settings};

/// Everything a use case runs against: the store and its command paths,
/// the read models, the catalog in memory, the payment gateways and the
/// settings. Cheap to clone.
#[derive(Clone)]
pub struct App {
    pub store: Store,
    /// The plain command path (catalog, billing aggregates).
    pub commands: CommandService,
    /// The one writer of account streams in this process (group commit).
    pub committer: AccountCommitter,
    pub read_models: ReadModels,
    pub projector: ProjectorHandle,
    pub catalog: CatalogCache,
    /// The payment gateways configured (Stripe with `STRIPE_SECRET_KEY`,
    /// PayPal with `PAYPAL_CLIENT_ID` and `PAYPAL_CLIENT_SECRET`).
    pub gateways: gateway::Gateways,
    pub settings: Arc<Settings>,
    /// Revoked token ids, shared with the keys that verify tokens.
    pub revocations: caller::Revocations,
    /// The highest log position this process has written (0 before its
    /// first write): a head that is never behind its own writes, whatever
    /// a cached store probe says.
    pub written: Arc<std::sync::atomic::AtomicI64>,
    /// The rosters the roster check read, briefly cached.
    pub rosters: team::Rosters,
}

impl App {
    /// Notes that this process wrote up to `position`.
    pub fn wrote(&self, position: Option<i64>) {
        if let Some(p) = position {
            self.written
                .fetch_max(p, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The highest log position this process has written.
    pub fn written_head(&self) -> i64 {
        self.written.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// A write's answer: what it made, whether it replays an earlier request
/// with the same idempotency key, and whether it created something (201)
/// or changed something that was there (200).
#[derive(Debug, Clone, PartialEq)]
pub struct Written<T> {
    pub value: T,
    pub replayed: bool,
    pub created: bool,
}

/// The instant stamped on commands: UTC, to the microsecond, which is what
/// the read models and both databases keep.
pub fn now() -> chrono::DateTime<chrono::Utc> {
    use chrono::SubsecRound;
    chrono::Utc::now().trunc_subsecs(6)
}
