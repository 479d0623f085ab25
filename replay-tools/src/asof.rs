//! As-of balances: an account folded from its events up to an instant.
//!
//! The instant compared is each event's own (`AccountEvent::occurred_at`:
//! when the grant, deduction or expiry happened), which the ledger keeps
//! non-decreasing along a stream, so "the events at or before T" is a prefix
//! of the stream. Lots that expired and holds whose TTL ran out by T, but
//! whose events were written after T (or not yet), are expired at T by the
//! ledger's own rule: the aggregate handles `ExpireDue { now: T }` on the
//! folded state. A replay checkpoint at or before T is used when it sits on
//! the chain (its hash is the stored event's); the events after it are
//! chain-checked as they are folded.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{AccountEvent, ACCOUNT_AGGREGATE_TYPE};
use ledger::{AccountCommand, CreditAccount};
use projections::time_text;
use serde::Serialize;
use store::audit::{RawEvent, AUDIT_PAGE_EVENTS_MAX};
use store::Store;
use tracing::warn;

use crate::chain::{metadata, Chain};
use crate::ReplayError;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LotView {
    pub lot_id: String,
    pub remaining: i64,
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HoldView {
    pub hold_id: String,
    pub credits: i64,
    pub expires_at: String,
}

/// An expiry due by the instant that the log had not recorded by then.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImpliedExpiry {
    pub event_type: String,
    pub id: String,
    pub credits: i64,
    pub at: String,
}

/// An account at an instant, from events only.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AsOfBalance {
    pub account_id: String,
    pub as_of: String,
    pub balance: i64,
    pub held: i64,
    pub available: i64,
    pub debt: i64,
    pub credit_limit: i64,
    pub status: String,
    pub plan: String,
    pub lots: Vec<LotView>,
    pub open_holds: Vec<HoldView>,
    /// Expiries and hold releases due by `as_of` that the log records later
    /// (or not yet): already applied to the figures above.
    pub implied_expiries: Vec<ImpliedExpiry>,
    /// The last event at or before `as_of`: its sequence and position.
    pub sequence: i64,
    pub position: i64,
    /// The checkpoint the fold started from, if any.
    pub checkpoint_sequence: Option<i64>,
    /// Events folded after the checkpoint (or from the start).
    pub events_folded: i64,
}

/// Folds `account` up to `at` (see the module docs).
pub async fn balance_as_of(
    store: &Store,
    account: &str,
    at: DateTime<Utc>,
) -> Result<AsOfBalance, ReplayError> {
    if store
        .stream_head(ACCOUNT_AGGREGATE_TYPE, account)
        .await?
        .is_none()
    {
        return Err(ReplayError::UnknownAccount(account.to_owned()));
    }
    let at_text = time_text(at);
    let mut state = CreditAccount::default();
    let mut chain = Chain::genesis();
    let mut position = 0;
    let mut sequence = 0;
    let mut checkpoint_sequence = None;
    if let Some(cp) = store
        .checkpoint_at_or_before(ACCOUNT_AGGREGATE_TYPE, account, &at_text)
        .await?
    {
        let stored = store
            .event_at(ACCOUNT_AGGREGATE_TYPE, account, cp.sequence)
            .await?;
        let state_read = serde_json::from_str::<CreditAccount>(&cp.payload).ok();
        let on_chain = match (&stored, &state_read) {
            (Some(raw), Some(s)) => checkpoint_agrees(raw, &cp.last_hash, s),
            _ => false,
        };
        match (on_chain, state_read) {
            (true, Some(s)) => {
                state = s;
                chain = Chain::at(cp.sequence, &cp.last_hash);
                position = cp.position.unwrap_or(0);
                sequence = cp.sequence;
                checkpoint_sequence = Some(cp.sequence);
            }
            _ => warn!(
                account,
                sequence = cp.sequence,
                "ignoring a checkpoint that does not match the log; run `ledger-replay verify`"
            ),
        }
    }
    let mut folded = 0;
    'pages: loop {
        let page = store
            .stream_page(
                ACCOUNT_AGGREGATE_TYPE,
                account,
                chain.sequence,
                AUDIT_PAGE_EVENTS_MAX,
                true,
            )
            .await?;
        if page.is_empty() {
            break;
        }
        for raw in page {
            let (_, wrong) = chain.check(&raw);
            if let Some(first) = wrong.first() {
                return Err(ReplayError::Tampered(first.to_string()));
            }
            let event: AccountEvent = serde_json::from_str(&raw.payload).map_err(|e| {
                ReplayError::Tampered(format!(
                    "{} does not read: {e}",
                    crate::chain::event_subject(&raw, None)
                ))
            })?;
            if event.occurred_at() > at {
                if let (false, AccountEvent::AccountOpened(o)) = (state.is_open(), &event) {
                    return Err(ReplayError::NotOpenYet {
                        account: account.to_owned(),
                        at: at_text,
                        opened_at: time_text(o.opened_at),
                    });
                }
                break 'pages;
            }
            crate::guard::applicable(&state, &event).map_err(|why| {
                ReplayError::Tampered(format!(
                    "{} does not follow from the events before it: {why}",
                    crate::chain::event_subject(&raw, None)
                ))
            })?;
            state.apply(event);
            position = raw.position;
            sequence = raw.sequence;
            folded += 1;
        }
    }
    if !state.is_open() {
        return Err(ReplayError::NeverOpened(account.to_owned()));
    }
    let (state, implied) = expire_at(state, at).await;
    Ok(AsOfBalance {
        account_id: account.to_owned(),
        as_of: at_text,
        balance: state.balance(),
        held: state.held(),
        available: state.available(),
        debt: state.debt(),
        credit_limit: state.credit_limit(),
        status: state.status().as_str().to_owned(),
        plan: state.plan().to_owned(),
        lots: state
            .lots()
            .iter()
            .map(|l| LotView {
                lot_id: l.id.to_string(),
                remaining: l.remaining,
                expires_at: l.expires_at.map(time_text),
            })
            .collect(),
        open_holds: state
            .open_holds()
            .iter()
            .map(|(id, h)| HoldView {
                hold_id: id.to_string(),
                credits: h.credits,
                expires_at: time_text(h.expires_at),
            })
            .collect(),
        implied_expiries: implied,
        sequence,
        position,
        checkpoint_sequence,
        events_folded: folded,
    })
}

/// Whether a checkpoint may be trusted by an as-of fold: the event at its
/// sequence is intact (its hash recomputes, and is the checkpoint's), and
/// the state agrees with the figures that event carries (`balance_after`,
/// `available_after`). Full equality with a fresh fold is `verify`'s job.
fn checkpoint_agrees(raw: &RawEvent, last_hash: &str, state: &CreditAccount) -> bool {
    let Some(m) = metadata(raw) else {
        return false;
    };
    let mut chain = Chain::at(raw.sequence - 1, &m.prev_hash);
    let (_, wrong) = chain.check(raw);
    if !wrong.is_empty() || m.hash != last_hash {
        return false;
    }
    let Ok(event) = serde_json::from_str::<AccountEvent>(&raw.payload) else {
        return false;
    };
    let available_after = match &event {
        AccountEvent::CreditsDeducted(e) => Some(e.available_after),
        AccountEvent::CreditsHeld(e) => Some(e.available_after),
        AccountEvent::HoldCaptured(e) => Some(e.available_after),
        AccountEvent::HoldReleased(e) => Some(e.available_after),
        _ => None,
    };
    event.balance_after().is_none_or(|b| b == state.balance())
        && available_after.is_none_or(|a| a == state.available())
}

/// Applies the expiries due by `at` with the ledger's own rule.
pub async fn expire_at(
    mut state: CreditAccount,
    at: DateTime<Utc>,
) -> (CreditAccount, Vec<ImpliedExpiry>) {
    let sink = EventSink::default();
    // Only an unopened account refuses ExpireDue, and callers fold open ones.
    let _ = state
        .handle(AccountCommand::ExpireDue { now: at }, &(), &sink)
        .await;
    let implied = sink
        .collect()
        .await
        .into_iter()
        .filter_map(|e| match e {
            AccountEvent::CreditsExpired(x) => Some(ImpliedExpiry {
                event_type: "CreditsExpired".into(),
                id: x.lot_id.to_string(),
                credits: x.credits,
                at: time_text(x.expired_at),
            }),
            AccountEvent::HoldReleased(x) => Some(ImpliedExpiry {
                event_type: "HoldReleased".into(),
                id: x.hold_id.to_string(),
                credits: x.credits,
                at: time_text(x.released_at),
            }),
            _ => None,
        })
        .collect();
    (state, implied)
}
