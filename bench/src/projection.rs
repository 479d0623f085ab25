//! `--scenario projection`: the read side's own throughput, in process.
//!
//! 1. *write*: `--events` deductions over `--accounts` accounts go through
//!    the write path the server uses (the group committer over the command
//!    service), closed loop with `--workers` workers, with no projector
//!    running: the write path's peak, and a log for the projector to read.
//! 2. *catch-up*: the live projector (`Projector::catch_up`, the batched
//!    path the server runs) projects the whole log from an empty checkpoint:
//!    its rate in events/s.
//! 3. *rebuild*: `Projector::rebuild_bulk` (what `ledger-replay rebuild`
//!    runs) over the same log, and the read models it writes are compared
//!    row for row with the catch-up's.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use events::{AccountId, CostEntry, OperationKey, Usage};
use futures::stream::{self, StreamExt, TryStreamExt};
use ledger::account::DeductCredits;
use ledger::AccountCommand;
use projections::{Projector, ReadModels};
use rust_decimal::Decimal;
use store::{AccountCommitter, CommandContext, CommandService, CommitterConfig, Store};
use uuid::Uuid;

use crate::pg::Databases;
use crate::plain::{grant, open};
use crate::report::{histogram, micros, CpuMark, ScenarioResult, Verification};
use crate::Cli;

const SETUP_CONCURRENCY: usize = 16;
const EXAMPLES_MAX: usize = 10;

fn context() -> CommandContext {
    CommandContext::new(events::Actor {
        sub: "ledger-bench".into(),
        role: "developer".into(),
    })
}

/// A deduction with the usage record an AI worker sends.
fn deduct(cost: &CostEntry, n: u64) -> anyhow::Result<AccountCommand> {
    let model = ["gpt-4o", "claude-3-5-sonnet", "dall-e-3"][(n % 3) as usize];
    Ok(AccountCommand::DeductCredits(DeductCredits {
        deduction_id: Uuid::now_v7(),
        cost: cost.clone(),
        usage: Usage {
            operation: Some(cost.operation.clone()),
            units: 1,
            cost_version: Some(cost.version),
            model: Some(model.into()),
            tokens_input: Some(1_200 + n % 500),
            tokens_output: Some(300 + n % 200),
            cost_usd: Some(Decimal::new(21 + (n % 7) as i64, 4)),
            related_object_type: Some("keyword_cluster".into()),
            related_object_id: Some(format!("kc-{}", n % 10_000)),
            metadata: None,
        },
        idempotency_key: None,
        now: chrono::Utc::now(),
    }))
}

/// Runs the three phases; `database_url` is the store to fill (a fresh
/// PostgreSQL database when `None`).
pub async fn run(cli: &Cli, databases: &Databases) -> anyhow::Result<Vec<ScenarioResult>> {
    let url = match &cli.database_url {
        Some(u) => u.clone(),
        None => databases.create("projection").await?,
    };
    let store = Store::connect(&url)
        .await
        .context("connecting to the projection scenario's database")?;
    store.migrate().await.context("migrating")?;
    let backend = match store.backend() {
        store::Backend::Postgres => "postgres",
        store::Backend::Sqlite => "sqlite",
    };
    if store.head_position().await? != 0 {
        bail!("--scenario projection needs an empty database");
    }
    let committer = AccountCommitter::start(
        CommandService::new(store.clone()),
        CommitterConfig::default(),
    );
    let ctx = context();

    crate::progress(format!("projection: opening {} accounts", cli.accounts));
    let tag = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let ids: Vec<String> = stream::iter(0..cli.accounts)
        .map(|i| {
            let (committer, ctx, tag) = (&committer, &ctx, &tag);
            async move {
                let id = AccountId::new_v7();
                let sid = id.to_string();
                committer
                    .execute(&sid, open(id, format!("bench-{tag}-{i}"))?, ctx, None, &[])
                    .await?;
                committer
                    .execute(&sid, grant(&format!("grant-{tag}-{i}"))?, ctx, None, &[])
                    .await?;
                anyhow::Ok(sid)
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
        .context("opening the accounts")?;
    let ids = Arc::new(ids);

    crate::progress(format!(
        "projection: {} deductions by {} workers, no projector running",
        cli.events, cli.workers
    ));
    let cost = CostEntry {
        operation: OperationKey::parse("content_generation")
            .map_err(|e| anyhow::anyhow!("bad operation: {e:?}"))?,
        cost: 1,
        unit: events::CostUnit::PerRequest,
        version: 1,
    };
    let issued = Arc::new(AtomicU64::new(0));
    let cpu = CpuMark::now(None);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(cli.workers);
    for _ in 0..cli.workers {
        let (committer, ids, issued, cost, ctx) = (
            committer.clone(),
            ids.clone(),
            issued.clone(),
            cost.clone(),
            ctx.clone(),
        );
        let total = cli.events;
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut ok = 0u64;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut rng = (Uuid::new_v4().as_u128() as u64) | 1;
            loop {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    break;
                }
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let id = &ids[(rng % ids.len() as u64) as usize];
                let t0 = Instant::now();
                match committer
                    .execute(id, deduct(&cost, n)?, &ctx, None, &[])
                    .await
                {
                    Ok(_) => {
                        ok += 1;
                        hist.saturating_record(micros(t0.elapsed()));
                    }
                    Err(e) => *errors.entry(e.to_string()).or_default() += 1,
                }
            }
            anyhow::Ok((hist, ok, errors))
        }));
    }
    let mut hist = histogram();
    let mut ok = 0;
    let mut errors = BTreeMap::new();
    for t in tasks {
        let (h, o, e) = t.await.context("a worker panicked")??;
        let _ = hist.add(&h);
        ok += o;
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    let mut write = ScenarioResult::new(
        "projection write",
        "projection",
        backend,
        cli.accounts,
        cli.workers,
    );
    cpu.charge(&mut write);
    write.set_counts(ok, start.elapsed(), &hist);
    write.add_errors(&errors);
    write.note = Some(
        "in-process group committer, closed loop, no projector running; one event per deduction"
            .into(),
    );

    let head = store.head_position().await?;
    crate::progress(format!(
        "projection: the live projector catches up {head} events"
    ));
    let (projector, _) = Projector::new(store.clone()).await?;
    let cpu = CpuMark::now(None);
    let start = Instant::now();
    let mut batches = 0u64;
    let mut events = 0usize;
    loop {
        let n = projector.run_once().await?;
        if n == 0 {
            break;
        }
        batches += 1;
        events += n;
    }
    let elapsed = start.elapsed();
    let mut catch_up = ScenarioResult::new(
        "projection catch-up",
        "projection",
        backend,
        cli.accounts,
        1,
    );
    cpu.charge(&mut catch_up);
    catch_up.set_counts(events as u64, elapsed, &histogram());
    catch_up.note = Some(format!(
        "live projector from an empty checkpoint: {events} events in {batches} batches \
         (mean {:.0} events), ops = events",
        events as f64 / batches.max(1) as f64
    ));
    let models = ReadModels::new(store.clone());
    let live = models.dump().await?;

    crate::progress("projection: bulk rebuild of the same log");
    let cpu = CpuMark::now(None);
    let start = Instant::now();
    let rebuilt_events = projector.rebuild_bulk().await?;
    let elapsed = start.elapsed();
    let mut rebuild =
        ScenarioResult::new("projection rebuild", "projection", backend, cli.accounts, 1);
    cpu.charge(&mut rebuild);
    rebuild.set_counts(rebuilt_events as u64, elapsed, &histogram());
    rebuild.note = Some("Projector::rebuild_bulk (ledger-replay rebuild), ops = events".into());
    let rebuilt = models.dump().await?;
    let mut v = Verification {
        accounts_checked: ids.len(),
        ..Verification::default()
    };
    let live_set: std::collections::BTreeSet<&String> = live.iter().collect();
    let rebuilt_set: std::collections::BTreeSet<&String> = rebuilt.iter().collect();
    for row in live_set.symmetric_difference(&rebuilt_set) {
        v.mismatches += 1;
        if v.examples.len() < EXAMPLES_MAX {
            v.examples
                .push(format!("only in one of live and rebuilt: {row}"));
        }
    }
    catch_up.verification = Some(v);
    Ok(vec![write, catch_up, rebuild])
}
