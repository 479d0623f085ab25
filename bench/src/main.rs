//! `ledger-bench`: drives the real `ledger-server` over HTTP (many accounts,
//! one hot account), checks every balance afterwards, and runs in the same
//! invocation the baselines the ledger is compared against: plain cqrs-es on
//! postgres-es, and PostgreSQL's raw single-row insert rate. `--scenario
//! batch` compares batches of deductions with single ones and with
//! PostgreSQL's multi-row insert rate.
//!
//! Load only ever goes to 127.0.0.1 (or the `--target` given); every loop is
//! bounded in time and every request has a timeout. Databases the bench
//! creates are dropped at the end, even on error or Ctrl-C, and a spawned
//! server is killed when its guard drops.

mod batch;
mod http;
mod pg;
mod plain;
mod projection;
mod raw;
mod report;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, ValueEnum};

use crate::pg::Databases;
use crate::report::{Report, ScenarioResult};

/// Longest load phase accepted, per scenario.
pub const DURATION_MAX: Duration = Duration::from_secs(600);
/// Most accounts one scenario opens.
pub const ACCOUNTS_MAX: usize = 1_000_000;
/// Most concurrent workers.
pub const WORKERS_MAX: usize = 1_024;
/// Most events `--scenario projection` writes.
pub const EVENTS_MAX: u64 = 10_000_000;
/// Highest open-loop rate accepted, in operations per second.
pub const RATE_MAX: f64 = 1_000_000.0;
/// Admin URL the bench creates its PostgreSQL databases on.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Deductions spread over `--accounts` accounts.
    Accounts,
    /// Deductions on one hot account.
    Hot,
    /// Both (not `projection` nor `batch`).
    All,
    /// The read side alone, in process: `--events` deductions written with
    /// no projector running, then the live projector's catch-up and a bulk
    /// rebuild over them, timed (events/s). Runs no baseline.
    Projection,
    /// Batches over HTTP: single deductions, then batches of each
    /// `--batch-sizes` size (`POST …/deductions/batch`), `--workers` workers
    /// over `--accounts` fresh accounts per phase; with the `raw` baseline,
    /// single-row and 100-row insert transactions. Not the `plain` baseline.
    Batch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Transport {
    /// `POST /v1/accounts/{id}/deductions` over keep-alive HTTP.
    Http,
    /// NATS request/reply on `ledger.commands.deduct` (the spawned server
    /// gets `LEDGER_NATS_URL`); set-up and balance checks still use HTTP.
    Nats,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Nats => "nats",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Baseline {
    /// Plain cqrs-es `CqrsFramework::execute` on postgres-es, retrying conflicts.
    Plain,
    /// PostgreSQL's raw rate: one single-row insert per transaction.
    Raw,
    /// No baselines.
    None,
}

/// Benchmark of the credit ledger's deduction path, with its baselines.
#[derive(Debug, Parser)]
#[command(name = "ledger-bench", version)]
pub struct Cli {
    /// Drive an already running server at this base URL (e.g.
    /// http://127.0.0.1:8080) instead of spawning one; needs --jwt-secret.
    #[arg(long, conflicts_with_all = ["spawn", "database_url", "server_bin"])]
    pub target: Option<String>,
    /// Spawn a fresh ledger-server (the default when --target is absent).
    #[arg(long)]
    pub spawn: bool,
    /// Database of the spawned server: `sqlite://PATH` or `postgres://…`.
    /// Default: a fresh PostgreSQL database on --admin-url, dropped at the end.
    #[arg(long)]
    pub database_url: Option<String>,
    /// PostgreSQL URL the bench creates (and drops) its databases on.
    #[arg(long, default_value = DEFAULT_ADMIN_URL)]
    pub admin_url: String,
    /// The ledger-server binary to spawn. Default: `ledger-server` next to
    /// this executable.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// HS256 secret of the --target server, to mint tokens with.
    #[arg(long, env = "LEDGER_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Concurrent workers of the many-accounts scenario (and of the open-loop run).
    #[arg(long, default_value_t = 32)]
    pub workers: usize,
    /// Concurrent workers of the hot-account scenario.
    #[arg(long, default_value_t = 64)]
    pub hot_workers: usize,
    /// Length of each load phase: `10s`, `500ms`, `2m` or plain seconds.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Accounts of the many-accounts scenario.
    #[arg(long, default_value_t = 1_000)]
    pub accounts: usize,
    /// Which scenarios to run.
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// Baselines to run, comma separated: `plain,raw` or `none`.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "plain,raw")]
    pub baselines: Vec<Baseline>,
    /// Also run the many-accounts scenario open-loop at this rate (ops/s),
    /// or `half` for half the rate the closed-loop run reached: the p99 at
    /// half the peak rate.
    #[arg(long, value_parser = parse_rate)]
    pub rate: Option<Rate>,
    /// How the deductions are sent. With `nats`, no other ledger-server may
    /// listen on the same NATS (the queue group would share the requests).
    #[arg(long, value_enum, default_value = "http")]
    pub transport: Transport,
    /// NATS server for `--transport nats` (loopback only).
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Clients of the raw insert baseline.
    #[arg(long, default_value_t = 32)]
    pub raw_clients: usize,
    /// Deductions `--scenario projection` writes before the projector runs.
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Items per request of `--scenario batch`'s phases, comma separated
    /// (each 1 to 1000, at most 8 sizes).
    #[arg(long, value_delimiter = ',', default_value = "1,10,100,1000")]
    pub batch_sizes: Vec<usize>,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    Fixed(f64),
    HalfPeak,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration such as 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => n / 1_000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("unknown unit {unit:?}: use ms, s or m")),
    };
    if !seconds.is_finite() || seconds <= 0.0 || seconds > DURATION_MAX.as_secs_f64() {
        return Err(format!(
            "the duration must be above 0 and at most {} s",
            DURATION_MAX.as_secs()
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_rate(s: &str) -> Result<Rate, String> {
    if s == "half" {
        return Ok(Rate::HalfPeak);
    }
    let r: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is neither a rate in ops/s nor `half`"))?;
    if !r.is_finite() || r <= 0.0 || r > RATE_MAX {
        return Err(format!("the rate must be above 0 and at most {RATE_MAX}"));
    }
    Ok(Rate::Fixed(r))
}

impl Cli {
    fn check(&self) -> anyhow::Result<()> {
        for (name, n) in [
            ("--workers", self.workers),
            ("--hot-workers", self.hot_workers),
            ("--raw-clients", self.raw_clients),
        ] {
            if n == 0 || n > WORKERS_MAX {
                bail!("{name} must be 1 to {WORKERS_MAX}");
            }
        }
        if self.events == 0 || self.events > EVENTS_MAX {
            bail!("--events must be 1 to {EVENTS_MAX}");
        }
        if self.scenario == Scenario::Projection && self.target.is_some() {
            bail!("--scenario projection runs in process; it cannot drive a --target");
        }
        if self.accounts == 0 || self.accounts > ACCOUNTS_MAX {
            bail!("--accounts must be 1 to {ACCOUNTS_MAX}");
        }
        if self.baselines.contains(&Baseline::None) && self.baselines.len() > 1 {
            bail!("--baselines none cannot be combined with other baselines");
        }
        if self.target.is_some() && self.jwt_secret.is_none() {
            bail!("--target needs the server's secret: --jwt-secret or LEDGER_JWT_SECRET");
        }
        if self.rate.is_some() && matches!(self.scenario, Scenario::Hot | Scenario::Batch) {
            bail!("--rate applies to the many-accounts scenario; add --scenario accounts or all");
        }
        batch::check_sizes(&self.batch_sizes)?;
        if self.scenario == Scenario::Batch && self.transport != Transport::Http {
            bail!("--scenario batch runs over HTTP only");
        }
        Ok(())
    }

    fn runs(&self, s: Scenario) -> bool {
        (self.scenario == Scenario::All && matches!(s, Scenario::Accounts | Scenario::Hot))
            || self.scenario == s
    }

    fn baseline(&self, b: Baseline) -> bool {
        self.baselines.contains(&b)
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    // sqlx (PostgreSQL) and reqwest both build on rustls with ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Err(e) = cli.check() {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
    let databases = Databases::new(&cli.admin_url);
    let outcome = tokio::select! {
        r = run(&cli, &databases) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    // The run's future is dropped by now, so a spawned server is stopped
    // before its database goes.
    databases.drop_all().await;
    match outcome {
        Ok(report) => {
            if cli.json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: {e}");
                        std::process::exit(1);
                    }
                }
            } else {
                print!("{}", report.render());
            }
            let failures = report.failures();
            if !failures.is_empty() {
                for f in &failures {
                    eprintln!("FAILED: {f}");
                }
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn progress(msg: impl AsRef<str>) {
    eprintln!("[ledger-bench] {}", msg.as_ref());
}

async fn run(cli: &Cli, databases: &Databases) -> anyhow::Result<Report> {
    let mut report = Report::new(cli);
    if cli.scenario == Scenario::Projection {
        report
            .results
            .extend(projection::run(cli, databases).await?);
        report.finish();
        return Ok(report);
    }

    // The server under test: spawned (the default) or given.
    let mut spawned = None;
    let (base, secret) = match &cli.target {
        Some(url) => {
            let url = url.trim_end_matches('/').to_owned();
            (url, cli.jwt_secret.clone().unwrap_or_default())
        }
        None => {
            let database_url = match &cli.database_url {
                Some(u) => u.clone(),
                None => databases
                    .create("server")
                    .await
                    .context("creating the server's database")?,
            };
            let bin = match &cli.server_bin {
                Some(p) => p.clone(),
                None => std::env::current_exe()
                    .context("locating this executable")?
                    .with_file_name("ledger-server"),
            };
            let secret = server::random_secret()?;
            progress(format!(
                "starting {} on {}",
                bin.display(),
                report::redact(&database_url)
            ));
            let nats = (cli.transport == Transport::Nats).then_some(cli.nats_url.as_str());
            let s = server::Server::spawn(&bin, &database_url, &secret, nats).await?;
            let base = s.base_url().to_owned();
            report.server.backend = Some(server::backend_of(&database_url).to_owned());
            report.server.pid = Some(s.pid());
            spawned = Some(s);
            (base, secret)
        }
    };
    report.server.url = Some(base.clone());

    if cli.runs(Scenario::Accounts) || cli.runs(Scenario::Hot) {
        let mut bench = http::HttpBench::new(&base, &secret, report.server.pid)?;
        bench.prepare().await.context("preparing the server")?;
        if cli.transport == Transport::Nats {
            bench
                .use_nats(&cli.nats_url)
                .await
                .context("connecting to NATS")?;
        }
        let t = cli.transport.name();
        let mut runs = Vec::new();
        if cli.runs(Scenario::Accounts) {
            progress(format!("http: opening {} accounts", cli.accounts));
            let set = bench.open_accounts(cli.accounts).await?;
            progress(format!(
                "http: {} workers for {:?} over {} accounts",
                cli.workers, cli.duration, cli.accounts
            ));
            let r = bench
                .load(
                    &format!("{t} accounts"),
                    &set,
                    cli.workers,
                    cli.duration,
                    None,
                )
                .await?;
            let peak = r.result.ops_per_s;
            runs.push(r);
            if let Some(rate) = cli.rate {
                let rate = match rate {
                    Rate::Fixed(r) => r,
                    Rate::HalfPeak => (peak / 2.0).max(1.0),
                };
                // Fresh accounts, so that each run's balances check alone.
                progress(format!("http: opening {} more accounts", cli.accounts));
                let set = bench.open_accounts(cli.accounts).await?;
                progress(format!("http: open loop at {rate:.0} ops/s"));
                let name = format!("{t} accounts @{rate:.0}/s");
                runs.push(
                    bench
                        .load(&name, &set, cli.workers, cli.duration, Some(rate))
                        .await?,
                );
            }
        }
        if cli.runs(Scenario::Hot) {
            let set = bench.open_accounts(1).await?;
            progress(format!(
                "http: {} workers for {:?} on one hot account",
                cli.hot_workers, cli.duration
            ));
            runs.push(
                bench
                    .load(
                        &format!("{t} hot"),
                        &set,
                        cli.hot_workers,
                        cli.duration,
                        None,
                    )
                    .await?,
            );
        }
        progress("http: checking every balance");
        for run in &mut runs {
            bench.verify(run).await?;
        }
        report.results.extend(runs.into_iter().map(|r| r.result));
    }

    if cli.runs(Scenario::Batch) {
        let mut bench = http::HttpBench::new(&base, &secret, report.server.pid)?;
        bench.prepare().await.context("preparing the server")?;
        report.results.extend(batch::run(cli, &bench).await?);
    }

    if let Some(s) = spawned.take() {
        let (rss, hwm) = s.memory_kib();
        report.server.rss_kib = rss;
        report.server.peak_rss_kib = hwm;
        // Stopped before the baselines so that they have the machine alone.
        s.stop().await;
    }

    let batches = cli.runs(Scenario::Batch);
    if cli.baseline(Baseline::Plain) && !batches {
        progress("plain cqrs-es baseline");
        report.results.extend(plain::run(cli, databases).await?);
    }
    if cli.baseline(Baseline::Raw) {
        // The batch scenario compares its 100-item batches with 100-row
        // transactions, and shows the single-row rate beside them.
        let rows: &[usize] = if batches {
            &[1, report::TARGET_BATCH_ITEMS]
        } else {
            &[1]
        };
        for &rows in rows {
            progress(format!(
                "raw insert baseline, {} clients for {:?}, {rows} row(s) per transaction",
                cli.raw_clients, cli.duration
            ));
            let mut r = raw::run(databases, cli.raw_clients, cli.duration, rows).await?;
            if batches && r.batch.is_none() {
                r.batch = Some(report::BatchStats::new(rows, r.ops, r.elapsed_s));
                if let Some(b) = r.batch.as_mut() {
                    // pgbench's rate, without connection set-up, as `ops_per_s`.
                    b.requests_per_s = r.ops_per_s / rows as f64;
                }
            }
            report.results.push(r);
        }
    }
    report.finish();
    Ok(report)
}

/// The result of one load phase before its balances are checked.
pub struct LoadRun<T> {
    pub result: ScenarioResult,
    pub detail: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("11m").is_err());
        assert!(parse_duration("5h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("half").unwrap(), Rate::HalfPeak);
        assert_eq!(parse_rate("250").unwrap(), Rate::Fixed(250.0));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
    }

    #[test]
    fn cli_bounds() {
        let cli = Cli::parse_from(["ledger-bench", "--workers", "0"]);
        assert!(cli.check().is_err());
        let cli = Cli::parse_from(["ledger-bench", "--baselines", "none,raw"]);
        assert!(cli.check().is_err());
        let cli = Cli::parse_from(["ledger-bench", "--baselines", "plain,raw"]);
        assert!(cli.check().is_ok());
        assert!(cli.baseline(Baseline::Plain) && cli.baseline(Baseline::Raw));
    }

    #[test]
    fn batch_scenario_options() {
        let cli = Cli::parse_from(["ledger-bench", "--scenario", "batch"]);
        assert!(cli.check().is_ok());
        assert_eq!(cli.batch_sizes, vec![1, 10, 100, 1000]);
        assert!(cli.runs(Scenario::Batch));
        assert!(!cli.runs(Scenario::Accounts) && !cli.runs(Scenario::Hot));
        let all = Cli::parse_from(["ledger-bench"]);
        assert!(!all.runs(Scenario::Batch) && all.runs(Scenario::Accounts));
        let cli = Cli::parse_from([
            "ledger-bench",
            "--scenario",
            "batch",
            "--batch-sizes",
            "5,50",
        ]);
        assert!(cli.check().is_ok());
        assert_eq!(cli.batch_sizes, vec![5, 50]);
        for bad in ["0", "1001", "1,1", "1,2,3,4,5,6,7,8,9"] {
            let cli =
                Cli::parse_from(["ledger-bench", "--scenario", "batch", "--batch-sizes", bad]);
            assert!(cli.check().is_err(), "{bad}");
        }
        let cli = Cli::parse_from(["ledger-bench", "--scenario", "batch", "--transport", "nats"]);
        assert!(cli.check().is_err());
        let cli = Cli::parse_from(["ledger-bench", "--scenario", "batch", "--rate", "half"]);
        assert!(cli.check().is_err());
    }
}
