//! Results, ratios and their rendering as a table or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::Cli;

/// Targets of the issue, checked and printed (not enforced by the exit code).
pub const TARGET_ACCOUNTS_OVER_RAW: f64 = 1.0;
pub const TARGET_ACCOUNTS_OVER_PLAIN: f64 = 10.0;
pub const TARGET_HOT_OVER_ACCOUNTS: f64 = 0.8;
pub const TARGET_P99_AT_HALF_PEAK_MS: f64 = 10.0;
pub const TARGET_RSS_MIB: f64 = 256.0;
/// The live projector's catch-up (`--scenario projection`), events/s.
pub const TARGET_PROJECTION_EVENTS_PER_S: f64 = 20_000.0;
/// The catch-up's rate over the write path's, in the same run.
pub const TARGET_PROJECTION_OVER_WRITE: f64 = 5.0;
/// A bulk rebuild (`ledger-replay rebuild`), events/s.
pub const TARGET_REBUILD_EVENTS_PER_S: f64 = 100_000.0;
/// Accounts touched at which the RSS target applies.
pub const TARGET_RSS_ACCOUNTS: usize = 100_000;
/// `--scenario batch`: the batch size the targets are stated for.
pub const TARGET_BATCH_ITEMS: usize = 100;
/// Deductions/s of 100-item batches over single deductions, same run.
pub const TARGET_BATCH_OVER_SINGLE: f64 = 5.0;
/// Deductions/s of 100-item batches over PostgreSQL's raw rate of
/// 100-row insert transactions (rows/s), same run.
pub const TARGET_BATCH_OVER_RAW_BATCH: f64 = 0.2;

/// Latency histogram in microseconds, 1 µs to 10 min, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// CPU time (user + system) a process has used so far, from
/// `/proc/<pid>/stat` (`None`: this process). Linux's USER_HZ is 100.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU time used so far by the processes named `postgres` on this machine
/// (the PostgreSQL server and its backends), keyed by pid.
fn postgres_cpu() -> BTreeMap<u32, f64> {
    let mut cpu = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return cpu;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let is_postgres = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "postgres");
        if is_postgres {
            if let Some(c) = cpu_seconds(Some(pid)) {
                cpu.insert(pid, c);
            }
        }
    }
    cpu
}

/// Busy CPU seconds of the whole machine so far (all but idle and iowait),
/// from `/proc/stat`.
fn machine_busy() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3)? + ticks.get(4)?;
    Some(total.saturating_sub(idle) as f64 / 100.0)
}

/// CPU seconds used between two readings.
#[derive(Debug, Clone)]
pub struct CpuMark {
    server_pid: Option<u32>,
    server: Option<f64>,
    bench: Option<f64>,
    postgres: BTreeMap<u32, f64>,
    machine: Option<f64>,
}

impl CpuMark {
    pub fn now(server_pid: Option<u32>) -> Self {
        Self {
            server_pid,
            server: server_pid.and_then(|p| cpu_seconds(Some(p))),
            bench: cpu_seconds(None),
            postgres: postgres_cpu(),
            machine: machine_busy(),
        }
    }

    /// Writes the CPU used since this mark into `result`.
    pub fn charge(&self, result: &mut ScenarioResult) {
        let later = Self::now(self.server_pid);
        let diff = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        result.server_cpu_s = diff(self.server, later.server);
        result.bench_cpu_s = diff(self.bench, later.bench);
        result.machine_busy_s = diff(self.machine, later.machine);
        // Backends that ended in between are missed; new ones count whole.
        let pg: f64 = later
            .postgres
            .iter()
            .map(|(pid, c)| c - self.postgres.get(pid).copied().unwrap_or(0.0))
            .sum();
        result.postgres_cpu_s = (!later.postgres.is_empty()).then_some(pg);
    }
}

/// A URL with its password replaced, for printing.
pub fn redact(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1_000.0;
        Self {
            p50_ms: ms(h.value_at_quantile(0.50)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1_000.0,
        }
    }
}

/// What the balance check found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    pub accounts_checked: usize,
    pub mismatches: usize,
    /// Requests whose outcome was unknown (a timeout or a 5xx), settled
    /// afterwards by repeating them with the same idempotency key.
    pub in_doubt_settled: usize,
    /// Up to ten mismatches, `account: expected X, found Y`.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    /// `http`, `plain` or `raw`.
    pub kind: String,
    pub backend: String,
    pub accounts: usize,
    pub workers: usize,
    /// Open-loop target rate, when the run was paced.
    pub target_rate: Option<f64>,
    pub elapsed_s: f64,
    pub ops: u64,
    pub ops_per_s: f64,
    pub latency: Latency,
    pub errors: u64,
    /// Errors by kind: an HTTP status, `transport`, `conflict_retries_exhausted`, …
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Optimistic-concurrency conflicts retried (plain cqrs-es).
    pub conflicts: Option<u64>,
    pub verification: Option<Verification>,
    /// How the numbers were obtained (e.g. `pgbench`).
    pub note: Option<String>,
    /// CPU seconds the spawned server used during the load.
    pub server_cpu_s: Option<f64>,
    /// CPU seconds this process (the load generator; for `plain`, also the
    /// framework) used during the load.
    pub bench_cpu_s: Option<f64>,
    /// CPU seconds of the local `postgres` processes during the load
    /// (backends that exited before its end are missed).
    pub postgres_cpu_s: Option<f64>,
    /// Busy CPU seconds of the whole machine during the load, whoever used
    /// them: at most elapsed × cores.
    pub machine_busy_s: Option<f64>,
    /// The read side during the load: the projector's lag sampled every
    /// 100 ms from `/ready`, and how long it took to reach the load's last
    /// position once the load stopped.
    pub projector: Option<ProjectorLag>,
    /// Requests carrying several items (`--scenario batch`, and the raw
    /// multi-row baseline): `ops` then counts items (deductions applied,
    /// rows inserted) and the latency is per request (per transaction).
    pub batch: Option<BatchStats>,
    /// Any error of this phase makes the run fail (`--scenario batch`).
    pub errors_fail_run: bool,
}

/// Items and requests of a phase whose requests carry several items.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchStats {
    pub items_per_request: usize,
    /// Requests answered with every item applied or failed (HTTP 200, or
    /// 201 for the single route; committed transactions for raw).
    pub requests: u64,
    pub requests_per_s: f64,
}

impl BatchStats {
    pub fn new(items_per_request: usize, requests: u64, elapsed_s: f64) -> Self {
        Self {
            items_per_request,
            requests,
            requests_per_s: if elapsed_s > 0.0 {
                requests as f64 / elapsed_s
            } else {
                0.0
            },
        }
    }
}

/// The projector's lag during a load (HTTP scenarios).
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProjectorLag {
    pub samples: u64,
    pub lag_events_p50: u64,
    pub lag_events_p99: u64,
    pub lag_events_max: u64,
    pub lag_ms_p50: u64,
    pub lag_ms_p99: u64,
    pub lag_ms_max: u64,
    /// From the load's end until the read models reached its last
    /// position.
    pub catch_up_ms: u64,
}

impl ScenarioResult {
    pub fn new(name: &str, kind: &str, backend: &str, accounts: usize, workers: usize) -> Self {
        Self {
            name: name.to_owned(),
            kind: kind.to_owned(),
            backend: backend.to_owned(),
            accounts,
            workers,
            target_rate: None,
            elapsed_s: 0.0,
            ops: 0,
            ops_per_s: 0.0,
            latency: Latency::default(),
            errors: 0,
            errors_by_kind: BTreeMap::new(),
            conflicts: None,
            verification: None,
            note: None,
            server_cpu_s: None,
            bench_cpu_s: None,
            postgres_cpu_s: None,
            machine_busy_s: None,
            projector: None,
            batch: None,
            errors_fail_run: false,
        }
    }

    pub fn set_counts(&mut self, ops: u64, elapsed: Duration, h: &Histogram<u64>) {
        self.ops = ops;
        self.elapsed_s = elapsed.as_secs_f64();
        self.ops_per_s = if self.elapsed_s > 0.0 {
            ops as f64 / self.elapsed_s
        } else {
            0.0
        };
        self.latency = Latency::of(h);
    }

    pub fn add_errors(&mut self, errors: &BTreeMap<String, u64>) {
        for (k, v) in errors {
            *self.errors_by_kind.entry(k.clone()).or_default() += v;
        }
        self.errors = self.errors_by_kind.values().sum();
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerInfo {
    pub url: Option<String>,
    pub backend: Option<String>,
    pub pid: Option<u32>,
    /// VmRSS after the load, KiB (spawned servers only).
    pub rss_kib: Option<u64>,
    /// VmHWM (peak resident), KiB.
    pub peak_rss_kib: Option<u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub name: String,
    pub value: f64,
    pub target: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub duration_s: f64,
    pub workers: usize,
    pub hot_workers: usize,
    pub accounts: usize,
    pub raw_clients: usize,
    /// How deductions reached the ledger: `http` or `nats`.
    pub transport: String,
    pub cpus: usize,
    /// Items per request of the batch phases (`--scenario batch` only).
    pub batch_sizes: Option<Vec<usize>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: Settings,
    pub server: ServerInfo,
    pub results: Vec<ScenarioResult>,
    pub ratios: Vec<Ratio>,
}

impl Report {
    pub fn new(cli: &Cli) -> Self {
        Self {
            settings: Settings {
                duration_s: cli.duration.as_secs_f64(),
                workers: cli.workers,
                hot_workers: cli.hot_workers,
                accounts: cli.accounts,
                raw_clients: cli.raw_clients,
                transport: cli.transport.name().to_owned(),
                cpus: std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(0),
                batch_sizes: (cli.scenario == crate::Scenario::Batch)
                    .then(|| cli.batch_sizes.clone()),
            },
            server: ServerInfo::default(),
            results: Vec::new(),
            ratios: Vec::new(),
        }
    }

    fn find(&self, name: &str) -> Option<&ScenarioResult> {
        self.results.iter().find(|r| r.name == name)
    }

    /// Computes the ratios against the baselines and the targets.
    pub fn finish(&mut self) {
        let rate = |n: &str| self.find(n).map(|r| r.ops_per_s).filter(|r| *r > 0.0);
        // The ledger's scenarios are named after the transport that drove them.
        let t = self.settings.transport.clone();
        let accounts = rate(&format!("{t} accounts"));
        let mut ratios = Vec::new();
        let mut ratio = |name: &str, num: Option<f64>, den: Option<f64>, target: f64| {
            if let (Some(n), Some(d)) = (num, den) {
                ratios.push(Ratio {
                    name: name.to_owned(),
                    value: n / d,
                    target: format!(">= {target}"),
                    met: n / d >= target,
                });
            }
        };
        ratio(
            &format!("{t} accounts / raw insert"),
            accounts,
            rate("raw insert"),
            TARGET_ACCOUNTS_OVER_RAW,
        );
        ratio(
            &format!("{t} accounts / plain accounts"),
            accounts,
            rate("plain accounts"),
            TARGET_ACCOUNTS_OVER_PLAIN,
        );
        ratio(
            &format!("{t} hot / {t} accounts"),
            rate(&format!("{t} hot")),
            accounts,
            TARGET_HOT_OVER_ACCOUNTS,
        );
        ratio(
            "plain hot / plain accounts",
            rate("plain hot"),
            rate("plain accounts"),
            0.0,
        );
        let at_least = |name: &str, value: Option<f64>, target: f64| {
            value.map(|v| Ratio {
                name: name.to_owned(),
                value: v,
                target: format!(">= {target}"),
                met: v >= target,
            })
        };
        ratios.extend(at_least(
            "projection catch-up events/s",
            rate("projection catch-up"),
            TARGET_PROJECTION_EVENTS_PER_S,
        ));
        ratios.extend(at_least(
            "projection rebuild events/s",
            rate("projection rebuild"),
            TARGET_REBUILD_EVENTS_PER_S,
        ));
        if let (Some(p), Some(w)) = (rate("projection catch-up"), rate("projection write")) {
            ratios.extend(at_least(
                "projection catch-up / write",
                Some(p / w),
                TARGET_PROJECTION_OVER_WRITE,
            ));
        }
        if let Some(paced) = self
            .results
            .iter()
            .find(|r| r.kind == t && r.target_rate.is_some())
        {
            ratios.push(Ratio {
                name: format!(
                    "p99 ms at {:.0} ops/s",
                    paced.target_rate.unwrap_or_default()
                ),
                value: paced.latency.p99_ms,
                target: format!("<= {TARGET_P99_AT_HALF_PEAK_MS}"),
                met: paced.latency.p99_ms <= TARGET_P99_AT_HALF_PEAK_MS,
            });
        }
        ratios.extend(self.batch_ratios());
        if let Some(hot) = self.find(&format!("{t} hot")) {
            ratios.push(Ratio {
                name: format!("{t} hot errors"),
                value: hot.errors as f64,
                target: "= 0".into(),
                met: hot.errors == 0,
            });
        }
        if let Some(hwm) = self.server.peak_rss_kib {
            let mib = hwm as f64 / 1_024.0;
            let touched: usize = self
                .results
                .iter()
                .filter(|r| r.kind == t)
                .map(|r| r.accounts)
                .sum();
            ratios.push(Ratio {
                name: format!("server peak RSS MiB, {touched} accounts"),
                value: mib,
                target: format!("<= {TARGET_RSS_MIB} at {TARGET_RSS_ACCOUNTS}"),
                met: mib <= TARGET_RSS_MIB,
            });
        }
        self.ratios = ratios;
    }

    /// `--scenario batch`: 100-item batches against single deductions and
    /// against PostgreSQL's 100-row insert transactions, and the errors of
    /// its phases (which must be none).
    fn batch_ratios(&self) -> Vec<Ratio> {
        let rate = |n: &str| self.find(n).map(|r| r.ops_per_s).filter(|r| *r > 0.0);
        let mut ratios = Vec::new();
        let batch = batch_phase_name(TARGET_BATCH_ITEMS);
        let single = rate(SINGLE_PHASE_NAME);
        let raw_batch_name = crate::raw::name(TARGET_BATCH_ITEMS);
        for (den_name, den, target) in [
            (SINGLE_PHASE_NAME, single, TARGET_BATCH_OVER_SINGLE),
            (
                raw_batch_name.as_str(),
                rate(&raw_batch_name),
                TARGET_BATCH_OVER_RAW_BATCH,
            ),
        ] {
            if let (Some(n), Some(d)) = (rate(&batch), den) {
                ratios.push(Ratio {
                    name: format!("{batch} / {den_name}"),
                    value: n / d,
                    target: format!(">= {target}"),
                    met: n / d >= target,
                });
            }
        }
        let phases: Vec<&ScenarioResult> =
            self.results.iter().filter(|r| r.errors_fail_run).collect();
        if !phases.is_empty() {
            let errors: u64 = phases.iter().map(|r| r.errors).sum();
            ratios.push(Ratio {
                name: "http batch scenario failures".into(),
                value: errors as f64,
                target: "= 0".into(),
                met: errors == 0,
            });
        }
        ratios
    }

    /// What makes the run fail: a balance that is not what it should be, a
    /// hot-account error, an error in a phase that allows none, or a
    /// scenario that completed nothing.
    pub fn failures(&self) -> Vec<String> {
        let mut f = Vec::new();
        for r in &self.results {
            if r.errors_fail_run && r.errors > 0 {
                f.push(format!(
                    "{}: {} unexpected failures {:?}",
                    r.name, r.errors, r.errors_by_kind
                ));
            }
            if let Some(v) = &r.verification {
                if v.mismatches > 0 {
                    f.push(format!(
                        "{}: {} of {} balances differ from the expected value ({})",
                        r.name,
                        v.mismatches,
                        v.accounts_checked,
                        v.examples.join("; ")
                    ));
                }
            }
            if r.ops == 0 {
                f.push(format!("{}: no operation succeeded", r.name));
            }
        }
        f
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n{:<28} {:>8} {:>8} {:>8} {:>10} {:>9} {:>9} {:>9} {:>8}  balances",
            "scenario",
            "backend",
            "workers",
            "accounts",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "errors"
        );
        for r in &self.results {
            let balances = match &r.verification {
                Some(v) if v.mismatches == 0 => format!("ok ({})", v.accounts_checked),
                Some(v) => format!("{} WRONG of {}", v.mismatches, v.accounts_checked),
                None => "-".into(),
            };
            let _ = writeln!(
                s,
                "{:<28} {:>8} {:>8} {:>8} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>8}  {}",
                r.name,
                r.backend,
                r.workers,
                r.accounts,
                r.ops_per_s,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.latency.p999_ms,
                r.errors,
                balances
            );
        }
        let details: Vec<&ScenarioResult> = self
            .results
            .iter()
            .filter(|r| {
                !r.errors_by_kind.is_empty()
                    || r.conflicts.is_some()
                    || r.note.is_some()
                    || r.bench_cpu_s.is_some()
            })
            .collect();
        if !details.is_empty() {
            let _ = writeln!(s);
            for r in details {
                let mut parts = Vec::new();
                if !r.errors_by_kind.is_empty() {
                    parts.push(format!("errors {:?}", r.errors_by_kind));
                }
                if let Some(c) = r.conflicts {
                    parts.push(format!("conflicts retried {c}"));
                }
                if let Some(n) = &r.note {
                    parts.push(n.clone());
                }
                let mut cpu = Vec::new();
                if let Some(c) = r.server_cpu_s {
                    cpu.push(format!("server {c:.1} s"));
                }
                if let Some(c) = r.bench_cpu_s {
                    cpu.push(format!("bench {c:.1} s"));
                }
                if let Some(c) = r.postgres_cpu_s {
                    cpu.push(format!("postgres {c:.1} s"));
                }
                if let Some(c) = r.machine_busy_s {
                    cpu.push(format!("machine busy {c:.1} s"));
                }
                if let Some(p) = &r.projector {
                    parts.push(format!(
                        "projector lag p50/p99/max {}/{}/{} events, {}/{}/{} ms ({} samples), caught up {} ms after the load",
                        p.lag_events_p50,
                        p.lag_events_p99,
                        p.lag_events_max,
                        p.lag_ms_p50,
                        p.lag_ms_p99,
                        p.lag_ms_max,
                        p.samples,
                        p.catch_up_ms
                    ));
                }
                if !cpu.is_empty() {
                    parts.push(format!(
                        "CPU {} in {:.1} s on {} cores",
                        cpu.join(", "),
                        r.elapsed_s,
                        self.settings.cpus
                    ));
                }
                let _ = writeln!(s, "{}: {}", r.name, parts.join(", "));
            }
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(s, "\n{:<38} {:>10}  {:<28} met", "ratio", "value", "target");
            for r in &self.ratios {
                let _ = writeln!(
                    s,
                    "{:<38} {:>10.2}  {:<28} {}",
                    r.name,
                    r.value,
                    r.target,
                    if r.met { "yes" } else { "NO" }
                );
            }
        }
        self.render_batch(&mut s);
        if let (Some(rss), Some(hwm)) = (self.server.rss_kib, self.server.peak_rss_kib) {
            let _ = writeln!(
                s,
                "\nserver RSS after the run: {:.1} MiB (peak {:.1} MiB)",
                rss as f64 / 1_024.0,
                hwm as f64 / 1_024.0
            );
        }
        s
    }
}

/// The batch scenario's phase of single deductions (the existing route).
pub const SINGLE_PHASE_NAME: &str = "http single";

/// The batch scenario's phase of `items`-item batches.
pub fn batch_phase_name(items: usize) -> String {
    format!("http batch {items}")
}

impl Report {
    /// The compact table of the phases that carry batch figures: items/s,
    /// requests/s, latency per request, failures, the projector's catch-up.
    fn render_batch(&self, s: &mut String) {
        let phases: Vec<&ScenarioResult> =
            self.results.iter().filter(|r| r.batch.is_some()).collect();
        if phases.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\n{:<22} {:>5} {:>10} {:>10} {:>9} {:>9} {:>8} {:>10}  balances",
            "batch phase", "items", "items/s", "req/s", "p50 ms", "p99 ms", "failed", "catch-up"
        );
        for r in phases {
            let Some(b) = &r.batch else { continue };
            let balances = match &r.verification {
                Some(v) if v.mismatches == 0 => format!("ok ({})", v.accounts_checked),
                Some(v) => format!("{} WRONG of {}", v.mismatches, v.accounts_checked),
                None => "-".into(),
            };
            let catch_up = match &r.projector {
                Some(p) => format!("{} ms", p.catch_up_ms),
                None => "-".into(),
            };
            let _ = writeln!(
                s,
                "{:<22} {:>5} {:>10.0} {:>10.1} {:>9.2} {:>9.2} {:>8} {:>10}  {}",
                r.name,
                b.items_per_request,
                r.ops_per_s,
                b.requests_per_s,
                r.latency.p50_ms,
                r.latency.p99_ms,
                r.errors,
                catch_up,
                balances
            );
        }
        let _ = writeln!(
            s,
            "items/s: deductions applied per second (raw: rows inserted); latency per request \
             (raw: per transaction); catch-up: from the phase's end until the read models \
             reached its last position"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_percentiles() {
        let mut h = histogram();
        for us in 1..=1_000u64 {
            h.record(us * 10).unwrap();
        }
        let l = Latency::of(&h);
        assert!((l.p50_ms - 5.0).abs() < 0.01, "{l:?}");
        assert!((l.p99_ms - 9.9).abs() < 0.01, "{l:?}");
    }

    #[test]
    fn reads_own_cpu_time() {
        let mut x = 0u64;
        for i in 0..10_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds(None).is_some_and(|c| c >= 0.0));
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db".to_owned()
        );
        assert_eq!(redact("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
