//! `rebuild`: the read models refilled from the log through the bulk path
//! (`projections::bulk`), and the replay checkpoints written, in one pass.

use std::collections::HashMap;
use std::time::Instant;

use cqrs_es::Aggregate;
use events::ACCOUNT_AGGREGATE_TYPE;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use ledger::CreditAccount;
use projections::bulk::{BulkRebuild, Decoded, Table};
use projections::time_text;
use serde::Serialize;
use store::audit::{NewCheckpoint, RawEvent, AUDIT_PAGE_EVENTS_MAX};
use store::Store;

use crate::chain::metadata;
use crate::{ReplayError, CHECKPOINT_INTERVAL_EVENTS};

/// What to rebuild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub tables: Vec<Table>,
    pub checkpoints: bool,
    /// A checkpoint every this many events of a stream.
    pub checkpoint_every: i64,
}

/// The names `--projection` accepts, for help and errors.
pub fn projection_names() -> String {
    let mut names = vec!["all", "read_models", "checkpoints"];
    names.extend(Table::ALL.iter().map(|t| t.name()));
    names.join(", ")
}

impl Selection {
    /// `all` (default: every read model and the checkpoints),
    /// `read_models`, `checkpoints`, or one table (`balances`,
    /// `rm_balances`, …).
    pub fn parse(name: Option<&str>) -> Result<Self, ReplayError> {
        Ok(match name.unwrap_or("all") {
            "all" => Self {
                tables: Table::ALL.to_vec(),
                checkpoints: true,
                checkpoint_every: CHECKPOINT_INTERVAL_EVENTS,
            },
            "read_models" => Self {
                tables: Table::ALL.to_vec(),
                checkpoints: false,
                checkpoint_every: CHECKPOINT_INTERVAL_EVENTS,
            },
            "checkpoints" | "replay_checkpoints" => Self {
                tables: Vec::new(),
                checkpoints: true,
                checkpoint_every: CHECKPOINT_INTERVAL_EVENTS,
            },
            other => match Table::parse(other) {
                Some(t) => Self {
                    tables: vec![t],
                    checkpoints: false,
                    checkpoint_every: CHECKPOINT_INTERVAL_EVENTS,
                },
                None => {
                    return Err(ReplayError::UnknownProjection(
                        other.to_owned(),
                        projection_names(),
                    ))
                }
            },
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct RebuildOutcome {
    pub events: u64,
    pub upto_position: i64,
    pub tables: Vec<&'static str>,
    pub checkpoints: u64,
    pub seconds: f64,
    pub events_per_second: f64,
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} positions {msg}",
    ) {
        bar.set_style(style);
    }
    bar
}

struct CheckpointFold {
    every: i64,
    accounts: HashMap<String, CreditAccount>,
    pending: Vec<NewCheckpoint>,
}

impl CheckpointFold {
    async fn apply(
        &mut self,
        store: &Store,
        raw: &RawEvent,
        decoded: &Decoded,
    ) -> Result<(), ReplayError> {
        let Decoded::Account(event) = decoded else {
            return Ok(());
        };
        let state = self.accounts.entry(raw.aggregate_id.clone()).or_default();
        crate::guard::applicable(state, event).map_err(|why| {
            ReplayError::Tampered(format!(
                "{} does not follow from the events before it: {why}",
                crate::chain::event_subject(raw, None)
            ))
        })?;
        state.apply(event.clone());
        if raw.sequence % self.every == 0 {
            // The page was read without metadata; the hash of the few
            // checkpointed events is read on its own.
            let hash = store
                .event_at(ACCOUNT_AGGREGATE_TYPE, &raw.aggregate_id, raw.sequence)
                .await?
                .as_ref()
                .and_then(metadata)
                .map(|m| m.hash)
                .unwrap_or_default();
            self.pending.push(NewCheckpoint {
                aggregate_type: ACCOUNT_AGGREGATE_TYPE.to_owned(),
                aggregate_id: raw.aggregate_id.clone(),
                sequence: raw.sequence,
                position: raw.position,
                occurred_at: time_text(event.occurred_at()),
                last_hash: hash,
                payload: serde_json::to_string(&state)?,
            });
        }
        Ok(())
    }
}

fn decode(page: Vec<RawEvent>) -> Result<Vec<(RawEvent, Decoded)>, ReplayError> {
    page.into_iter()
        .map(|e| {
            let d = Decoded::parse(&e)?;
            Ok((e, d))
        })
        .collect()
}

/// Rebuilds the selection; `bar` shows positions as they are reached.
pub async fn rebuild(
    store: &Store,
    selection: &Selection,
    bar: &ProgressBar,
) -> Result<RebuildOutcome, ReplayError> {
    let started = Instant::now();
    if selection.checkpoints && !store.has_table("replay_checkpoints").await? {
        // The only migration the tools ever run: the table they write.
        store.migrate().await?;
    }
    let mut bulk = if selection.tables.is_empty() {
        None
    } else {
        Some(BulkRebuild::begin(store, &selection.tables).await?)
    };
    let upto = match &bulk {
        Some(b) => b.upto(),
        None => store.head_position().await?,
    };
    bar.set_length(u64::try_from(upto).unwrap_or(0));
    let mut checkpoints = selection.checkpoints.then(|| CheckpointFold {
        every: selection.checkpoint_every.max(1),
        accounts: HashMap::new(),
        pending: Vec::new(),
    });
    let fetch = |after: i64| {
        let store = store.clone();
        tokio::spawn(async move {
            let page = store
                .log_page(after, upto, AUDIT_PAGE_EVENTS_MAX, false)
                .await?;
            decode(page)
        })
    };
    let mut events = 0u64;
    let mut next = fetch(0);
    let (mut waited, mut applied) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
    loop {
        let wait = Instant::now();
        let page = next
            .await
            .map_err(|e| ReplayError::BadPack(format!("reader task failed: {e}")))??;
        waited += wait.elapsed();
        let apply = Instant::now();
        let Some(last) = page.last().map(|(e, _)| e.position) else {
            break;
        };
        // Read the next page while this one is written.
        next = fetch(last);
        let page = std::sync::Arc::new(page);
        if let Some(b) = bulk.as_mut() {
            b.apply(page.clone()).await?;
        }
        if let Some(c) = checkpoints.as_mut() {
            for (raw, decoded) in page.iter() {
                c.apply(store, raw, decoded).await?;
            }
        }
        applied += apply.elapsed();
        events += page.len() as u64;
        bar.set_position(u64::try_from(last).unwrap_or(0));
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        bar.set_message(format!("{:.0} events/s", events as f64 / secs));
    }
    tracing::debug!(
        waited_for_reads_ms = waited.as_millis() as u64,
        applied_ms = applied.as_millis() as u64,
        begin_ms = (started.elapsed() - waited - applied).as_millis() as u64,
        "rebuild pass done"
    );
    let mut written = 0;
    if let Some(c) = checkpoints {
        written = c.pending.len() as u64;
        match bulk.as_mut() {
            Some(b) => {
                b.tx().await?.delete_checkpoints().await?;
                b.tx().await?.insert_checkpoints(&c.pending).await?;
            }
            None => {
                let mut tx = store.begin().await?;
                tx.delete_checkpoints().await?;
                tx.insert_checkpoints(&c.pending).await?;
                tx.commit().await?;
            }
        }
    }
    if let Some(b) = bulk {
        b.finish().await?;
    }
    bar.finish();
    let seconds = started.elapsed().as_secs_f64();
    Ok(RebuildOutcome {
        events,
        upto_position: upto,
        tables: selection.tables.iter().map(|t| t.sql_name()).collect(),
        checkpoints: written,
        seconds,
        events_per_second: if seconds > 0.0 {
            events as f64 / seconds
        } else {
            0.0
        },
    })
}
