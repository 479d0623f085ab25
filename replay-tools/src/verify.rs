//! `verify`: the log, its checkpoints and snapshots, and the read models,
//! checked from the events alone.
//!
//! One pass over the log (or one account's stream) up to the head:
//! - every stream's hash chain is recomputed ([`crate::chain`]);
//! - every account is folded by the ledger's aggregate, and each event's
//!   `balance_after` is checked against the running fold;
//! - every replay checkpoint and ledger snapshot met on the way must carry
//!   the stored event's hash and equal the fold at its sequence;
//! - the read models are folded afresh ([`projections::bulk`]) up to the
//!   projector's checkpoint and diffed row by row against the live tables,
//!   and each account's folded balance, held and credit limit against its
//!   `rm_balances` row.
//!
//! The live tables, the projector's checkpoint, the snapshots and the
//! checkpoints are read in one read-only snapshot transaction, so a running
//! server does not make verify report rows that were merely in flight.

use std::collections::{BTreeMap, HashMap, HashSet};

use cqrs_es::Aggregate;
use events::{AccountEvent, ACCOUNT_AGGREGATE_TYPE, CATALOG_AGGREGATE_TYPE};
use ledger::{Catalog, CreditAccount};
use projections::bulk::{live_rows, row_json, row_key, Decoded, ReadModelFold, Table};
use projections::{time_text, PROJECTION_NAME};
use serde::Serialize;
use serde_json::Value;
use store::audit::{RawEvent, StoredState, AUDIT_PAGE_EVENTS_MAX, CHECKPOINT_FORMAT};
use store::sql::SqlTx;
use store::{Store, SNAPSHOT_FORMAT};

use crate::chain::{event_subject, Chain, Discrepancy};
use crate::ReplayError;

/// Most discrepancies a report lists (all are counted).
pub const DISCREPANCIES_LISTED_MAX: usize = 1_000;

/// What verify checked and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    /// The account verified, or `None` for the whole log.
    pub account: Option<String>,
    pub head_position: i64,
    /// The read models were compared up to here (the projector's checkpoint).
    pub projected_position: i64,
    pub streams: u64,
    pub events: u64,
    pub accounts: u64,
    pub checkpoints_checked: u64,
    pub snapshots_checked: u64,
    pub read_model_rows_checked: u64,
    /// The last checked event's hash per stream `type/id` (the chain heads).
    pub chain_heads: BTreeMap<String, String>,
    pub discrepancy_count: u64,
    pub discrepancies: Vec<Discrepancy>,
}

impl VerifyReport {
    fn push(&mut self, d: Discrepancy) {
        self.discrepancy_count += 1;
        if self.discrepancies.len() < DISCREPANCIES_LISTED_MAX {
            self.discrepancies.push(d);
        }
    }
}

enum Folded {
    Account(Box<CreditAccount>),
    Catalog(Box<Catalog>),
    Other,
}

struct StreamState {
    chain: Chain,
    folded: Folded,
    /// Once a payload does not read, the fold stops (its state would be
    /// wrong) but the chain is still checked.
    fold_broken: bool,
    /// An account's (balance, held, credit limit) after its last event at
    /// or below the projected position.
    at_projection: Option<(i64, i64, i64)>,
}

impl StreamState {
    fn new(aggregate_type: &str) -> Self {
        Self {
            chain: Chain::genesis(),
            folded: match aggregate_type {
                ACCOUNT_AGGREGATE_TYPE => Folded::Account(Box::default()),
                CATALOG_AGGREGATE_TYPE => Folded::Catalog(Box::default()),
                _ => Folded::Other,
            },
            fold_broken: false,
            at_projection: None,
        }
    }
}

type StreamKey = (String, String);

struct Verifier {
    tx: SqlTx,
    account: Option<String>,
    projected: i64,
    report: VerifyReport,
    streams: HashMap<StreamKey, StreamState>,
    snapshots: HashMap<StreamKey, StoredState>,
    checkpoints: HashSet<(String, String, i64)>,
    models: ReadModelFold,
    /// Live rows of streamed tables were compared up to this position.
    compared_upto: i64,
}

/// Verifies the whole log, or one account's stream.
pub async fn verify(store: &Store, account: Option<&str>) -> Result<VerifyReport, ReplayError> {
    if let Some(a) = account {
        if store
            .stream_head(ACCOUNT_AGGREGATE_TYPE, a)
            .await?
            .is_none()
        {
            return Err(ReplayError::UnknownAccount(a.to_owned()));
        }
    }
    let mut tx = store.begin_read().await?;
    let projected = tx.projector_position(PROJECTION_NAME).await?;
    let head = tx.head_position().await?;
    let snapshots = tx
        .snapshots(account)
        .await?
        .into_iter()
        .map(|s| ((s.aggregate_type.clone(), s.aggregate_id.clone()), s))
        .collect();
    let checkpoints = if store.has_table("replay_checkpoints").await? {
        tx.checkpoint_keys(account).await?.into_iter().collect()
    } else {
        HashSet::new()
    };
    let mut v = Verifier {
        tx,
        account: account.map(str::to_owned),
        projected,
        report: VerifyReport {
            account: account.map(str::to_owned),
            head_position: head,
            projected_position: projected,
            ..VerifyReport::default()
        },
        streams: HashMap::new(),
        snapshots,
        checkpoints,
        models: ReadModelFold::new(),
        compared_upto: 0,
    };
    let mut after = 0;
    loop {
        let page = match account {
            Some(a) => {
                store
                    .stream_page(
                        ACCOUNT_AGGREGATE_TYPE,
                        a,
                        after,
                        AUDIT_PAGE_EVENTS_MAX,
                        true,
                    )
                    .await?
            }
            None => {
                store
                    .log_page(after, head, AUDIT_PAGE_EVENTS_MAX, true)
                    .await?
            }
        };
        let Some(last) = page.last() else { break };
        after = if account.is_some() {
            last.sequence
        } else {
            last.position
        };
        let page_last_position = last.position;
        for raw in &page {
            if raw.position > head {
                continue;
            }
            v.event(raw).await?;
        }
        v.compare_streamed(page_last_position.min(projected))
            .await?;
    }
    let mut report = v.finish().await?;
    if account.is_none() {
        projector_progress(store, &mut report).await?;
    }
    Ok(report)
}

/// How long verify watches a projector that is behind the log for it to
/// move before calling it stuck.
pub const PROJECTOR_STALL_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Read models behind the log are fine while a projector is catching up;
/// a checkpoint that does not move while events wait is a stuck (or
/// stopped) projector, and the read models every reader sees are stale:
/// a discrepancy, with the position it stopped at.
async fn projector_progress(store: &Store, report: &mut VerifyReport) -> Result<(), ReplayError> {
    let (projected, head) = (report.projected_position, report.head_position);
    if projected >= head {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + PROJECTOR_STALL_WAIT;
    loop {
        let mut tx = store.begin_read().await?;
        let now = tx.projector_position(PROJECTION_NAME).await?;
        drop(tx);
        if now != projected {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    report.push(Discrepancy::new(
        "projector",
        "read_models",
        format!("the read models following the log to position {head}"),
        format!(
            "stuck at position {projected} for {} s, {} events not projected (a stopped server, or a projector failing on the next event: see /ready)",
            PROJECTOR_STALL_WAIT.as_secs(),
            head - projected
        ),
    ));
    report.ok = false;
    Ok(())
}

impl Verifier {
    async fn event(&mut self, raw: &RawEvent) -> Result<(), ReplayError> {
        self.report.events += 1;
        let key = (raw.aggregate_type.clone(), raw.aggregate_id.clone());
        let stream = self.streams.entry(key.clone()).or_insert_with(|| {
            self.report.streams += 1;
            if raw.aggregate_type == ACCOUNT_AGGREGATE_TYPE {
                self.report.accounts += 1;
            }
            StreamState::new(&raw.aggregate_type)
        });
        let (meta, wrong) = stream.chain.check(raw);
        let event_id = meta.as_ref().map(|m| m.event_id.to_string());
        let subject = event_subject(raw, event_id.as_deref());
        for d in wrong {
            self.report.discrepancies_push(d);
        }
        let decoded = match Decoded::parse(raw) {
            Ok(d) => Some(d),
            Err(e) => {
                self.report.discrepancies_push(Discrepancy::new(
                    "payload",
                    subject.clone(),
                    format!("a readable {} event", raw.event_type),
                    e,
                ));
                stream.fold_broken = true;
                None
            }
        };
        if let (Some(d), false) = (&decoded, stream.fold_broken) {
            match (&mut stream.folded, d) {
                (Folded::Account(state), Decoded::Account(event)) => {
                    if let Err(why) = crate::guard::applicable(state, event) {
                        // The fold of this stream stops here: its state
                        // would be wrong from now on.
                        self.report.discrepancies_push(Discrepancy::new(
                            "fold",
                            subject.clone(),
                            "an event that follows from the ones before it",
                            why,
                        ));
                        stream.fold_broken = true;
                    } else {
                        state.apply(event.clone());
                    }
                    if !stream.fold_broken && raw.position <= self.projected {
                        stream.at_projection =
                            Some((state.balance(), state.held(), state.credit_limit()));
                    }
                }
                (Folded::Catalog(state), Decoded::Catalog(event)) => state.apply((**event).clone()),
                _ => {}
            }
        }
        if raw.position <= self.projected {
            if let Some(d) = &decoded {
                self.models.apply(raw, d)?;
            }
        }
        // Checkpoints and snapshots at this sequence.
        let stored_hash = meta.as_ref().map(|m| m.hash.clone()).unwrap_or_default();
        let occurred_at = match &decoded {
            Some(Decoded::Account(e)) => Some(time_text(AccountEvent::occurred_at(e))),
            _ => None,
        };
        let state_value = |folded: &Folded| -> Option<Value> {
            match folded {
                Folded::Account(s) => serde_json::to_value(s.as_ref()).ok(),
                Folded::Catalog(s) => serde_json::to_value(s.as_ref()).ok(),
                Folded::Other => None,
            }
        };
        let ckey = (
            raw.aggregate_type.clone(),
            raw.aggregate_id.clone(),
            raw.sequence,
        );
        if self.checkpoints.remove(&ckey) {
            if let Some(cp) = self
                .tx
                .checkpoint(&raw.aggregate_type, &raw.aggregate_id, raw.sequence)
                .await?
            {
                self.report.checkpoints_checked += 1;
                let name = format!(
                    "replay_checkpoints {}/{} sequence {}",
                    raw.aggregate_type, raw.aggregate_id, raw.sequence
                );
                let mut found = Vec::new();
                if cp.last_hash != stored_hash {
                    found.push(("last_hash", stored_hash.clone(), cp.last_hash.clone()));
                }
                if cp.position != Some(raw.position) {
                    found.push((
                        "position",
                        raw.position.to_string(),
                        format!("{:?}", cp.position),
                    ));
                }
                if let Some(at) = &occurred_at {
                    if cp.occurred_at.as_ref() != Some(at) {
                        found.push(("occurred_at", at.clone(), format!("{:?}", cp.occurred_at)));
                    }
                }
                if cp.format == CHECKPOINT_FORMAT && !stream.fold_broken {
                    let expected = state_value(&stream.folded);
                    let stored = serde_json::from_str::<Value>(&cp.payload).ok();
                    if expected != stored {
                        found.push((
                            "state",
                            "the fold of the events up to it".into(),
                            "a different state".into(),
                        ));
                    }
                }
                for (what, expected, got) in found {
                    self.report.discrepancies_push(Discrepancy::new(
                        "checkpoint",
                        format!("{name} {what}"),
                        expected,
                        got,
                    ));
                }
            }
        }
        if self
            .snapshots
            .get(&key)
            .is_some_and(|s| s.sequence == raw.sequence)
        {
            if let Some(snap) = self.snapshots.remove(&key) {
                self.report.snapshots_checked += 1;
                let name = format!(
                    "snapshots {}/{} sequence {}",
                    raw.aggregate_type, raw.aggregate_id, raw.sequence
                );
                if snap.last_hash != stored_hash {
                    self.report.discrepancies_push(Discrepancy::new(
                        "snapshot",
                        format!("{name} last_hash"),
                        &stored_hash,
                        &snap.last_hash,
                    ));
                }
                if snap.format == SNAPSHOT_FORMAT && !stream.fold_broken {
                    let expected = state_value(&stream.folded);
                    let stored = serde_json::from_str::<Value>(&snap.payload).ok();
                    if expected != stored {
                        self.report.discrepancies_push(Discrepancy::new(
                            "snapshot",
                            format!("{name} state"),
                            "the fold of the events up to it",
                            "a different state",
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Diffs the insert-only tables' rows made so far against the live rows
    /// with positions in `(compared_upto, upto]`.
    async fn compare_streamed(&mut self, upto: i64) -> Result<(), ReplayError> {
        if upto <= self.compared_upto {
            // Rows of events beyond the projection are not compared.
            for t in [Table::Transactions, Table::Usage, Table::CostHistory] {
                let _ = self.models.take_streamed(t);
            }
            return Ok(());
        }
        let range = (self.compared_upto, upto);
        for table in [Table::Transactions, Table::Usage, Table::CostHistory] {
            let expected: Vec<Value> = self
                .models
                .take_streamed(table)
                .iter()
                .map(|r| row_json(table, r))
                .filter(|r| r["position"].as_i64().is_some_and(|p| p <= upto))
                .collect();
            if table == Table::CostHistory && self.account.is_some() {
                continue;
            }
            let live = live_rows(&mut self.tx, table, self.account.as_deref(), Some(range)).await?;
            self.diff(table, expected, live);
        }
        self.compared_upto = upto;
        Ok(())
    }

    fn diff(&mut self, table: Table, expected: Vec<Value>, live: Vec<Value>) {
        self.report.read_model_rows_checked += expected.len().max(live.len()) as u64;
        let mut live: BTreeMap<String, Value> =
            live.into_iter().map(|r| (row_key(table, &r), r)).collect();
        for row in expected {
            let key = row_key(table, &row);
            let subject = format!("row {}/{key}", table.sql_name());
            match live.remove(&key) {
                None => self.report.discrepancies_push(Discrepancy::new(
                    "read_model",
                    subject,
                    row.to_string(),
                    "no row",
                )),
                Some(found) => {
                    for column in table.columns() {
                        if row[*column] != found[*column] {
                            self.report.discrepancies_push(Discrepancy::new(
                                "read_model",
                                format!("{subject} column {column}"),
                                &row[*column],
                                &found[*column],
                            ));
                        }
                    }
                }
            }
        }
        for (key, row) in live {
            self.report.discrepancies_push(Discrepancy::new(
                "read_model",
                format!("row {}/{key}", table.sql_name()),
                "no row (no event makes it)",
                row,
            ));
        }
    }

    async fn finish(mut self) -> Result<VerifyReport, ReplayError> {
        // Rows past the last event (none should exist).
        let projected = self.projected;
        self.compare_streamed(projected).await?;
        for table in [Table::Accounts, Table::Balances, Table::UsageDaily] {
            let expected: Vec<Value> = self
                .models
                .keyed_rows(table)
                .iter()
                .map(|r| row_json(table, r))
                .collect();
            let live = live_rows(&mut self.tx, table, self.account.as_deref(), None).await?;
            self.diff(table, expected, live);
        }
        // The aggregate's own fold against the balances the API serves.
        let balances: HashMap<String, Value> =
            live_rows(&mut self.tx, Table::Balances, self.account.as_deref(), None)
                .await?
                .into_iter()
                .map(|r| (row_key(Table::Balances, &r), r))
                .collect();
        let mut accounts: Vec<_> = self
            .streams
            .iter()
            .filter(|((t, _), _)| t == ACCOUNT_AGGREGATE_TYPE)
            .filter_map(|((_, id), s)| s.at_projection.map(|v| (id.clone(), v)))
            .collect();
        accounts.sort();
        for (id, (balance, held, limit)) in accounts {
            let Some(row) = balances.get(&id) else {
                continue;
            };
            for (column, folded) in [
                ("balance", balance),
                ("held", held),
                ("credit_limit", limit),
            ] {
                if row[column].as_i64() != Some(folded) {
                    self.report.discrepancies_push(Discrepancy::new(
                        "read_model",
                        format!(
                            "row rm_balances/{id} column {column} (against the account's fold)"
                        ),
                        folded,
                        &row[column],
                    ));
                }
            }
        }
        // Checkpoints and snapshots never met: past the stream's end.
        let mut left: Vec<String> = self
            .checkpoints
            .iter()
            .map(|(t, id, seq)| format!("replay_checkpoints {t}/{id} sequence {seq}"))
            .chain(self.snapshots.values().map(|s| {
                format!(
                    "snapshots {}/{} sequence {}",
                    s.aggregate_type, s.aggregate_id, s.sequence
                )
            }))
            .collect();
        left.sort();
        for name in left {
            self.report.discrepancies_push(Discrepancy::new(
                "checkpoint",
                name,
                "an event at its sequence",
                "none in the log",
            ));
        }
        for ((t, id), s) in &self.streams {
            self.report
                .chain_heads
                .insert(format!("{t}/{id}"), s.chain.hash.clone());
        }
        self.report.ok = self.report.discrepancy_count == 0;
        Ok(self.report)
    }
}

impl VerifyReport {
    fn discrepancies_push(&mut self, d: Discrepancy) {
        self.push(d);
    }
}
