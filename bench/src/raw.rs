//! Baseline (b): PostgreSQL's raw limit for this workload, inserts into an
//! events-shaped table from a fixed number of clients: one row per
//! transaction, or (`--scenario batch`) `rows` rows per transaction in one
//! multi-row `INSERT … SELECT … FROM generate_series`; pgbench when it is on
//! PATH, else the bench's own clients over sqlx.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::pg::Databases;
use crate::report::{histogram, micros, BatchStats, CpuMark, ScenarioResult};

/// The events table's shape (postgres-es 0.5's columns and key), without
/// the ledger's position trigger: the plain cost of a durable insert.
const DDL: &str = "CREATE TABLE events (
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint NOT NULL,
    event_type     text NOT NULL,
    event_version  text NOT NULL,
    payload        json NOT NULL,
    metadata       json NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
)";

/// Payload and metadata of a real `CreditsDeducted` event as the ledger
/// stores it (about 500 and 450 bytes).
const PAYLOAD: &str = r#"{"CreditsDeducted":{"available_after":999999999,"balance_after":999999999,"credits":1,"deduction_id":"01a2183f-d1e7-73d5-ad8f-9eb4e9452396","draws":[{"credits":1,"lot_id":"01a2183f-d1d0-779b-8a88-e932f2eae050"}],"idempotency_key":"3c95daf856ed-1-0","overdraft":0,"recorded_at":"2026-11-26T14:26:05.415450Z","usage":{"cost_usd":null,"cost_version":10,"metadata":null,"model":null,"operation":"clustering","related_object_id":null,"related_object_type":null,"tokens_input":null,"tokens_output":null,"units":1}}}"#;
const METADATA: &str = r#"{"actor_role":"system_bot","actor_sub":"ledger-bench","causation_id":"01a2183f-d1e7-73d5-ad8f-9eb53581ba35","correlation_id":"01a2183f-d1e7-73d5-ad8f-9eb53581ba35","event_id":"01a2183f-d1e9-7276-8a64-af5ca8f4aa88","hash":"780f688fab4a898a51358e9d172d3b906f784dc83134e14238ece5df11eb6f80","idempotency_key":"3c95daf856ed-1-0","prev_hash":"e77c9f290d039f6ee94b1e2fe1f1472aedc71d4acef87a70a460f2fb15c25a37","recorded_at":"2026-11-26T14:26:05.417289Z"}"#;

const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Extra time pgbench gets beyond the run's length before it is killed.
const PGBENCH_GRACE: Duration = Duration::from_secs(60);
/// Most rows one transaction inserts.
pub const ROWS_MAX: usize = 1_000;

/// The result's name: `raw insert` for one row per transaction, else
/// `raw insert N rows`.
pub fn name(rows: usize) -> String {
    if rows == 1 {
        "raw insert".to_owned()
    } else {
        format!("raw insert {rows} rows")
    }
}

/// Runs the baseline on a fresh database: `clients` clients for
/// `duration`, each transaction inserting `rows` rows. With more than one
/// row, `ops` and `ops_per_s` count rows and the latency is per transaction.
pub async fn run(
    databases: &Databases,
    clients: usize,
    duration: Duration,
    rows: usize,
) -> anyhow::Result<ScenarioResult> {
    if rows == 0 || rows > ROWS_MAX {
        bail!("the raw baseline inserts 1 to {ROWS_MAX} rows per transaction, not {rows}");
    }
    let url = databases.create("raw").await?;
    tokio::time::timeout(SETUP_TIMEOUT, async {
        let mut conn = PgConnection::connect(&url).await?;
        sqlx::query(DDL).execute(&mut conn).await?;
        let _ = conn.close().await;
        anyhow::Ok(())
    })
    .await
    .context("creating the raw baseline's table timed out")?
    .context("creating the raw baseline's table")?;
    let cpu = CpuMark::now(None);
    let mut result = match find_on_path("pgbench") {
        Some(pgbench) => with_pgbench(&pgbench, &url, clients, duration, rows).await?,
        None => own_clients(&url, clients, duration, rows).await?,
    };
    result.workers = clients;
    // With pgbench, `bench` is near zero (pgbench's own CPU is not counted)
    // and the backends have exited before the reading, so only the
    // machine-wide figure means something.
    cpu.charge(&mut result);
    result.postgres_cpu_s = None;
    Ok(result)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// pgbench's transaction: one INSERT of `rows` rows on a random aggregate,
/// at consecutive sequences from a random one.
fn script(rows: usize) -> String {
    let payload = PAYLOAD.replace('\'', "''");
    let metadata = METADATA.replace('\'', "''");
    let head = "\\set id random(1, 1000000000)\n\\set seq random(1, 1000000000)\n";
    if rows <= 1 {
        return format!(
            "{head}INSERT INTO events VALUES ('account', 'acct-' || :id, :seq, 'CreditsDeducted', \
             '1.0', '{payload}', '{metadata}') ON CONFLICT DO NOTHING;\n"
        );
    }
    format!(
        "{head}INSERT INTO events SELECT 'account', 'acct-' || :id, :seq + g, 'CreditsDeducted', \
         '1.0', '{payload}'::json, '{metadata}'::json FROM generate_series(0, {last}) AS g \
         ON CONFLICT DO NOTHING;\n",
        last = rows - 1
    )
}

/// How a transaction's rows are written, for the note.
fn rows_note(rows: usize) -> String {
    if rows == 1 {
        "one INSERT per transaction".to_owned()
    } else {
        format!("one {rows}-row INSERT … SELECT per transaction, rows/s")
    }
}

/// Counts `transactions` of `rows` rows each into `result`: items (rows)
/// as `ops`, and the transactions as requests when there are several rows.
fn set_rows(result: &mut ScenarioResult, rows: usize, transactions: u64) {
    if rows > 1 {
        result.ops = transactions * rows as u64;
        result.ops_per_s *= rows as f64;
        result.batch = Some(BatchStats::new(rows, transactions, result.elapsed_s));
    }
}

async fn with_pgbench(
    pgbench: &Path,
    url: &str,
    clients: usize,
    duration: Duration,
    rows: usize,
) -> anyhow::Result<ScenarioResult> {
    let dir = tempfile::Builder::new()
        .prefix("ledger-bench-pgbench-")
        .tempdir()?;
    let script_path = dir.path().join("insert.sql");
    std::fs::write(&script_path, script(rows))?;
    let out_path = dir.path().join("out.txt");
    let out = std::fs::File::create(&out_path)?;
    let seconds = duration.as_secs_f64().ceil().max(1.0) as u64;
    let threads = clients.min(2);
    let mut child = Command::new(pgbench)
        .arg("-n")
        .arg("-c")
        .arg(clients.to_string())
        .arg("-j")
        .arg(threads.to_string())
        .arg("-T")
        .arg(seconds.to_string())
        .arg("-f")
        .arg(&script_path)
        .arg("-l")
        .arg(format!("--log-prefix={}", dir.path().join("tx").display()))
        .arg(url)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("starting {}", pgbench.display()))?;
    let deadline = Instant::now() + Duration::from_secs(seconds) + PGBENCH_GRACE;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("pgbench did not finish in time");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !status.success() {
        bail!("pgbench failed ({status}):\n{output}");
    }
    let tps = output
        .lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<f64>().ok())
        })
        .with_context(|| format!("no tps in pgbench's output:\n{output}"))?;
    let processed = output
        .lines()
        .find_map(|l| {
            l.strip_prefix("number of transactions actually processed: ")
                .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let failed = output
        .lines()
        .find_map(|l| {
            l.strip_prefix("number of failed transactions: ")
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // Per-transaction logs: `client tx latency_us script epoch epoch_us`.
    let mut hist = histogram();
    for entry in std::fs::read_dir(dir.path())? {
        let path = entry?.path();
        let is_log = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("tx."));
        if !is_log {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            if let Some(us) = line
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u64>().ok())
            {
                hist.saturating_record(us.max(1));
            }
        }
    }
    let mut result = ScenarioResult::new(&name(rows), "raw", "postgres", 0, clients);
    result.set_counts(processed, duration, &hist);
    // pgbench's own rate excludes connection set-up.
    result.ops_per_s = tps;
    result.elapsed_s = seconds as f64;
    set_rows(&mut result, rows, processed);
    if let Some(b) = result.batch.as_mut() {
        b.requests_per_s = tps;
    }
    let mut errors = BTreeMap::new();
    if failed > 0 {
        errors.insert("failed".to_owned(), failed);
    }
    result.add_errors(&errors);
    result.note = Some(format!(
        "pgbench -n -c {clients} -j {threads} -T {seconds}, {}",
        rows_note(rows)
    ));
    Ok(result)
}

async fn own_clients(
    url: &str,
    clients: usize,
    duration: Duration,
    rows: usize,
) -> anyhow::Result<ScenarioResult> {
    let rows_bind = i32::try_from(rows).context("too many rows per transaction")?;
    let pool = PgPoolOptions::new()
        .max_connections(clients as u32)
        .min_connections(clients as u32)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await?;
    let start = Instant::now();
    let end = start + duration;
    let mut tasks = Vec::with_capacity(clients);
    for _ in 0..clients {
        let pool = pool.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut ok = 0u64;
            let mut failed = 0u64;
            while Instant::now() < end {
                let t0 = Instant::now();
                // Outside a transaction block, each statement commits alone.
                let r = if rows_bind == 1 {
                    sqlx::query(
                        "INSERT INTO events VALUES ('account', $1, $2, 'CreditsDeducted', '1.0', \
                         $3::json, $4::json)",
                    )
                    .bind(Uuid::new_v4().to_string())
                    .bind(1_i64)
                    .bind(PAYLOAD)
                    .bind(METADATA)
                    .execute(&pool)
                    .await
                } else {
                    sqlx::query(
                        "INSERT INTO events SELECT 'account', $1, g, 'CreditsDeducted', '1.0', \
                         $2::json, $3::json FROM generate_series(1, $4::int) AS g",
                    )
                    .bind(Uuid::new_v4().to_string())
                    .bind(PAYLOAD)
                    .bind(METADATA)
                    .bind(rows_bind)
                    .execute(&pool)
                    .await
                };
                match r {
                    Ok(_) => {
                        ok += 1;
                        hist.saturating_record(micros(t0.elapsed()));
                    }
                    Err(_) => failed += 1,
                }
            }
            (hist, ok, failed)
        }));
    }
    let mut hist = histogram();
    let mut ok = 0;
    let mut failed = 0;
    for t in tasks {
        let (h, o, f) = t.await?;
        let _ = hist.add(&h);
        ok += o;
        failed += f;
    }
    let elapsed = start.elapsed();
    pool.close().await;
    let mut result = ScenarioResult::new(&name(rows), "raw", "postgres", 0, clients);
    result.set_counts(ok, elapsed, &hist);
    set_rows(&mut result, rows, ok);
    let mut errors = BTreeMap::new();
    if failed > 0 {
        errors.insert("failed".to_owned(), failed);
    }
    result.add_errors(&errors);
    result.note = Some(format!(
        "own {clients} sqlx clients (no pgbench on PATH), {}",
        rows_note(rows)
    ));
    Ok(result)
}

#[cfg(test)]
mod tests {
    #[test]
    fn script_inserts_one_row() {
        let s = super::script(1);
        assert!(s.starts_with("\\set id random(1, 1000000000)\n"));
        assert_eq!(s.matches("INSERT INTO events").count(), 1);
        assert!(s.contains("VALUES ('account'"));
        assert!(s.trim_end().ends_with("ON CONFLICT DO NOTHING;"));
    }

    #[test]
    fn script_inserts_a_hundred_rows_in_one_statement() {
        let s = super::script(100);
        assert!(s.starts_with("\\set id random(1, 1000000000)\n"));
        assert_eq!(s.matches("INSERT INTO events").count(), 1);
        assert!(s.contains(":seq + g"));
        assert!(s.contains("FROM generate_series(0, 99) AS g"));
        assert!(s.trim_end().ends_with("ON CONFLICT DO NOTHING;"));
        // pgbench reads one command per line (no line continuation).
        assert_eq!(s.lines().count(), 3);
    }

    #[test]
    fn names() {
        assert_eq!(super::name(1), "raw insert");
        assert_eq!(super::name(100), "raw insert 100 rows");
    }
}
