//! The one error type of the replay tools: each variant renders as one
//! clear line for stderr.

use store::audit::OpenError;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("unknown account {0}: the log has no events for it")]
    UnknownAccount(String),
    #[error(
        "bad time {input:?}: use RFC 3339 (2026-03-31T12:00:00Z) or a plain date (2026-03-31)"
    )]
    BadTime { input: String },
    #[error("account {account} was not open at {at} (it opened at {opened_at})")]
    NotOpenYet {
        account: String,
        at: String,
        opened_at: String,
    },
    #[error("account {0} has no AccountOpened event")]
    NeverOpened(String),
    #[error("{0}; run `ledger-replay verify` for the full report")]
    Tampered(String),
    #[error("unknown projection {0:?}: use one of {1}")]
    UnknownProjection(String, String),
    #[error("--from {from} is after --to {to}")]
    EmptyRange { from: String, to: String },
    #[error("the audit pack is unreadable: {0}")]
    BadPack(String),
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Projection(#[from] projections::ProjectionError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl ReplayError {
    pub fn io(context: impl Into<String>) -> impl Fn(std::io::Error) -> Self {
        let context = context.into();
        move |source| Self::Io {
            context: context.clone(),
            source,
        }
    }
}
