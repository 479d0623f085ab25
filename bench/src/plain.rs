//! Baseline (a): the same deductions through plain cqrs-es,
//! `CqrsFramework::execute` over postgres-es's event store on a fresh,
//! migrated database, retrying on `AggregateConflict`. In process, no HTTP:
//! what the ledger would get from the framework alone.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, CqrsFramework, EventStore};
use events::{
    AccountId, AccountStatus, CostEntry, CostUnit, CountryCode, GrantSource, IdempotencyKey,
    OperationKey, Usage,
};
use futures::stream::{self, StreamExt, TryStreamExt};
use ledger::account::{DeductCredits, GrantCredits, OpenAccount};
use ledger::{AccountCommand, CreditAccount};
use postgres_es::PostgresEventRepository;
use rust_decimal::Decimal;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::http::GRANT_CREDITS;
use crate::pg::Databases;
use crate::report::{histogram, micros, CpuMark, ScenarioResult, Verification};
use crate::{Cli, Scenario};

type Framework = CqrsFramework<CreditAccount, EventStoreOf>;
type EventStoreOf = PersistedEventStore<PostgresEventRepository, CreditAccount>;

/// Attempts of one command before it counts as an error.
const ATTEMPTS_MAX: u32 = 100;
/// Largest connection pool of the baseline.
const POOL_CONNECTIONS_MAX: usize = 64;
const SETUP_CONCURRENCY: usize = 16;
const COST: i64 = 1;
const EXAMPLES_MAX: usize = 10;

fn key(k: &str) -> anyhow::Result<IdempotencyKey> {
    IdempotencyKey::parse(k).map_err(|e| anyhow::anyhow!("bad idempotency key {k:?}: {e:?}"))
}

fn cost() -> anyhow::Result<CostEntry> {
    Ok(CostEntry {
        operation: OperationKey::parse("clustering")
            .map_err(|e| anyhow::anyhow!("bad operation: {e:?}"))?,
        cost: COST,
        unit: CostUnit::PerRequest,
        version: 1,
    })
}

pub(crate) fn open(id: AccountId, slug: String) -> anyhow::Result<AccountCommand> {
    Ok(AccountCommand::OpenAccount(OpenAccount {
        account_id: id,
        name: "Bench".into(),
        slug,
        owner_user_id: "ledger-bench".into(),
        plan: "free".into(),
        status: AccountStatus::Active,
        country: CountryCode::parse("US").map_err(|e| anyhow::anyhow!("{e:?}"))?,
        billing_email: "bench@example.test".into(),
        credit_limit: 0,
        low_balance_threshold: 0,
        tax_rate: Decimal::ZERO,
        currency: None,
        now: chrono::Utc::now(),
    }))
}

pub(crate) fn grant(k: &str) -> anyhow::Result<AccountCommand> {
    Ok(AccountCommand::GrantCredits(GrantCredits {
        grant_id: Uuid::now_v7(),
        credits: GRANT_CREDITS,
        source: GrantSource::Purchase,
        expires_at: None,
        description: None,
        idempotency_key: Some(key(k)?),
        now: chrono::Utc::now(),
    }))
}

fn deduct(cost: &CostEntry, k: &str) -> anyhow::Result<AccountCommand> {
    Ok(AccountCommand::DeductCredits(DeductCredits {
        deduction_id: Uuid::now_v7(),
        cost: cost.clone(),
        usage: Usage {
            units: 1,
            ..Usage::default()
        },
        idempotency_key: Some(key(k)?),
        now: chrono::Utc::now(),
    }))
}

/// Runs the plain baseline for the scenarios the command line asks for.
pub async fn run(cli: &Cli, databases: &Databases) -> anyhow::Result<Vec<ScenarioResult>> {
    let url = databases.create("plain").await?;
    let connections = cli.workers.max(cli.hot_workers).min(POOL_CONNECTIONS_MAX);
    let pool = PgPoolOptions::new()
        .max_connections(connections as u32)
        .acquire_timeout(Duration::from_secs(30))
        .connect(&url)
        .await
        .context("connecting to the plain baseline's database")?;
    migrations::POSTGRES
        .run(&pool)
        .await
        .context("migrating the plain baseline's database")?;
    let repo = || PostgresEventRepository::new(pool.clone());
    let cqrs: Arc<Framework> = Arc::new(CqrsFramework::new(
        PersistedEventStore::new_event_store(repo()),
        vec![],
        (),
    ));
    let store: EventStoreOf = PersistedEventStore::new_event_store(repo());
    let mut results = Vec::new();
    if cli.runs(Scenario::Accounts) {
        results.push(
            scenario(
                &cqrs,
                &store,
                "plain accounts",
                cli.accounts,
                cli.workers,
                cli.duration,
            )
            .await?,
        );
    }
    if cli.runs(Scenario::Hot) {
        results.push(scenario(&cqrs, &store, "plain hot", 1, cli.hot_workers, cli.duration).await?);
    }
    pool.close().await;
    Ok(results)
}

async fn execute(cqrs: &Framework, id: &str, command: AccountCommand) -> anyhow::Result<()> {
    for _ in 0..ATTEMPTS_MAX {
        match cqrs.execute(id, command.clone()).await {
            Ok(()) => return Ok(()),
            Err(AggregateError::AggregateConflict) => continue,
            Err(e) => bail!("{e}"),
        }
    }
    bail!("{ATTEMPTS_MAX} conflicting attempts")
}

async fn scenario(
    cqrs: &Arc<Framework>,
    store: &EventStoreOf,
    name: &str,
    accounts: usize,
    workers: usize,
    duration: Duration,
) -> anyhow::Result<ScenarioResult> {
    crate::progress(format!(
        "{name}: opening {accounts} accounts, then {workers} workers for {duration:?}"
    ));
    let tag = Uuid::new_v4().simple().to_string()[..12].to_owned();
    let ids: Vec<String> = stream::iter(0..accounts)
        .map(|i| {
            let tag = &tag;
            async move {
                let id = AccountId::new_v7();
                let sid = id.to_string();
                execute(cqrs, &sid, open(id, format!("bench-{tag}-{i}"))?).await?;
                execute(cqrs, &sid, grant(&format!("grant-{tag}-{i}"))?).await?;
                anyhow::Ok(sid)
            }
        })
        .buffered(SETUP_CONCURRENCY)
        .try_collect()
        .await
        .context("opening the baseline's accounts")?;
    let ids = Arc::new(ids);
    let deducted: Arc<Vec<AtomicI64>> = Arc::new(ids.iter().map(|_| AtomicI64::new(0)).collect());
    // Deductions whose outcome is unknown (a database error on the last try).
    let in_doubt: Arc<Vec<AtomicI64>> = Arc::new(ids.iter().map(|_| AtomicI64::new(0)).collect());
    let cost = cost()?;
    let cpu = CpuMark::now(None);
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let cqrs = cqrs.clone();
        let ids = ids.clone();
        let deducted = deducted.clone();
        let in_doubt = in_doubt.clone();
        let cost = cost.clone();
        let tag = tag.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut ok = 0u64;
            let mut conflicts = 0u64;
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            let mut rng = (Uuid::new_v4().as_u128() as u64) | 1;
            let mut i = 0u64;
            while Instant::now() < end {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let idx = (rng % ids.len() as u64) as usize;
                let command = deduct(&cost, &format!("d-{tag}-{w}-{i}"))?;
                i += 1;
                let t0 = Instant::now();
                let mut attempts = 0;
                loop {
                    attempts += 1;
                    // The same command (same key) on every attempt: the
                    // aggregate's idempotency window turns a repeat of one
                    // that did commit into a no-op.
                    match cqrs.execute(&ids[idx], command.clone()).await {
                        Ok(()) => {
                            ok += 1;
                            hist.saturating_record(micros(t0.elapsed()));
                            deducted[idx].fetch_add(COST, Ordering::Relaxed);
                            break;
                        }
                        Err(AggregateError::AggregateConflict) => {
                            conflicts += 1;
                            if attempts >= ATTEMPTS_MAX {
                                *errors
                                    .entry("conflict_retries_exhausted".into())
                                    .or_default() += 1;
                                break;
                            }
                        }
                        Err(AggregateError::UserError(_)) => {
                            *errors.entry("domain".into()).or_default() += 1;
                            break;
                        }
                        Err(_) => {
                            if attempts >= ATTEMPTS_MAX.min(5) {
                                *errors.entry("database".into()).or_default() += 1;
                                in_doubt[idx].fetch_add(COST, Ordering::Relaxed);
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            }
            anyhow::Ok((hist, ok, conflicts, errors))
        }));
    }
    let mut hist = histogram();
    let mut ok = 0;
    let mut conflicts = 0;
    let mut errors = BTreeMap::new();
    for t in tasks {
        let (h, o, c, e) = t.await.context("a baseline worker panicked")??;
        let _ = hist.add(&h);
        ok += o;
        conflicts += c;
        for (k, v) in e {
            *errors.entry(k).or_default() += v;
        }
    }
    let elapsed = start.elapsed();
    let mut result = ScenarioResult::new(name, "plain", "postgres", accounts, workers);
    cpu.charge(&mut result);
    result.set_counts(ok, elapsed, &hist);
    result.add_errors(&errors);
    result.conflicts = Some(conflicts);
    result.note = Some("in-process CqrsFramework::execute, postgres-es".into());

    // Every balance, folded from its stream.
    let mut v = Verification::default();
    for (idx, id) in ids.iter().enumerate() {
        let loaded = store
            .load_aggregate(id)
            .await
            .with_context(|| format!("loading account {id}"))?;
        let found = loaded.aggregate.balance();
        let expected = GRANT_CREDITS - deducted[idx].load(Ordering::Relaxed);
        let doubt = in_doubt[idx].load(Ordering::Relaxed);
        v.accounts_checked += 1;
        if doubt > 0 {
            v.in_doubt_settled += 1;
        }
        if found > expected || found < expected - doubt {
            v.mismatches += 1;
            if v.examples.len() < EXAMPLES_MAX {
                v.examples
                    .push(format!("{id}: expected {expected}, found {found}"));
            }
        }
    }
    result.verification = Some(v);
    Ok(result)
}
