//! PostgreSQL going away under load and coming back (SPEC §9: "The store
//! … going away gives 503s and recovery when it returns, not a crash"),
//! against the real `ledger-server` binary.
//!
//! The test runs its own PostgreSQL 15 cluster (`initdb` into a temporary
//! folder, `pg_ctl start` on a free port with its socket in that folder; as
//! the `postgres` user through `runuser` when the test runs as root), never
//! the shared server on 5432, and stops it when dropped, panics included.
//!
//! Scenario: workers deduct from one funded account; the cluster is stopped
//! (`pg_ctl stop -m fast`) in the middle of it and kept down for a while,
//! then started again. Checked:
//! - every request is answered within [`ANSWER_WITHIN`] (no hang), before,
//!   during and after the outage;
//! - while the store is down, deductions, reads and `/ready` answer 503 in
//!   the SPEC's error format (`{"error":{"code":"unavailable",…}}`), and
//!   `/health` stays 200; nothing else (no 500, no dropped connection);
//! - the process survives, `/ready` turns 200 again and deductions succeed
//!   again within [`RECOVERY`] of the cluster's return;
//! - every request whose outcome was unknown is retried with the same key
//!   and body until answered; then every acknowledged deduction is in the
//!   log exactly once, the balance equals the grant minus them, and
//!   `replay_tools::verify` is clean.

mod common;

use std::collections::HashMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::key;
use serde_json::{json, Value};

/// PostgreSQL 15's binaries (`PG_BIN` overrides).
const PG_BIN_DEFAULT: &str = "/usr/lib/postgresql/15/bin";
/// Credits granted before the load: far more than it can spend.
const GRANTED: i64 = 10_000_000;
/// Concurrent workers sending deductions.
const WORKERS: usize = 6;
/// Load before the cluster is stopped.
const LOAD_BEFORE_STOP: Duration = Duration::from_millis(1_500);
/// How long the cluster stays down.
const OUTAGE: Duration = Duration::from_secs(12);
/// Answers later than this after the cluster stopped cannot be of a commit
/// made before.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// Deductions answered while the cluster is down, at least.
const OUTAGE_DEDUCTIONS_MIN: usize = 3;
/// Load after deductions succeed again.
const LOAD_AFTER_RECOVERY: Duration = Duration::from_millis(1_500);
/// Every request, whatever the store does, is answered within this.
const ANSWER_WITHIN: Duration = Duration::from_secs(35);
/// The client's own limit, above [`ANSWER_WITHIN`], so a hang is measured
/// rather than cut short at the bound.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);
/// Deductions succeed again within this after the cluster is back.
const RECOVERY: Duration = Duration::from_secs(30);
/// How long a server may take to answer `/ready`.
const STARTUP: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn id(args: &[&str]) -> String {
    let out = Command::new("id").args(args).output().expect("run id(1)");
    assert!(out.status.success(), "id {args:?} failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

// ------------------------------------------------------- private cluster

/// A PostgreSQL cluster owned by the test, stopped when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    /// initdb refuses to run as root: then every command runs as `postgres`.
    as_postgres: bool,
    bin: PathBuf,
}

impl Cluster {
    fn init() -> Self {
        let bin = PathBuf::from(std::env::var("PG_BIN").unwrap_or_else(|_| PG_BIN_DEFAULT.into()));
        let dir = tempfile::tempdir().expect("a folder for the cluster");
        let as_postgres = id(&["-u"]) == "0";
        if as_postgres {
            let uid: u32 = id(&["-u", "postgres"]).parse().unwrap();
            let gid: u32 = id(&["-g", "postgres"]).parse().unwrap();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("hand the cluster's folder to postgres");
        }
        let cluster = Self {
            dir,
            port: free_port(),
            as_postgres,
            bin,
        };
        let data = cluster.data();
        let out = cluster
            .command("initdb")
            .args(["-D", &data, "-U", "postgres", "-A", "trust", "-E", "UTF8"])
            .arg("--no-sync")
            .output()
            .unwrap_or_else(|e| panic!("initdb must be installed in {}: {e}", PG_BIN_DEFAULT));
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// One of PostgreSQL's programs, run as `postgres` when we are root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.stdin(Stdio::null());
        cmd
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn start(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let out = self
            .command("pg_ctl")
            .args(["-D", &self.data(), "-l"])
            .arg(self.log())
            .args(["-o", &options, "-w", "-t", "60", "start"])
            .output()
            .expect("run pg_ctl start");
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    fn stop(&self, mode: &str) -> bool {
        self.command("pg_ctl")
            .args(["-D", &self.data(), "-m", mode, "-w", "-t", "60", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Also on a panic: no postmaster outlives the test.
        let _ = self.stop("immediate");
    }
}

// ------------------------------------------------------------ the server

/// A `ledger-server` process, SIGKILLed when dropped.
struct Running {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Running {
    fn spawn(database_url: &str, data_dir: &Path) -> Self {
        let port = free_port();
        let log = data_dir.join("server.log");
        let out = File::create(&log).expect("a log file");
        let child = Command::new(env!("CARGO_BIN_EXE_ledger-server"))
            .env("LEDGER_DATABASE_URL", database_url)
            .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
            .env("LEDGER_JWT_SECRET", common::JWT_SECRET)
            .env("LEDGER_DATA_DIR", data_dir)
            .env("LEDGER_LOG", "warn")
            .env_remove("LEDGER_NATS_URL")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("start ledger-server");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    async fn wait_ready(&mut self, http: &reqwest::Client) {
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(r) = http.get(format!("{}/ready", self.base)).send().await {
                if r.status().as_u16() == 200 {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "ledger-server exited while starting ({status}); its log:\n{}",
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ledger-server was not ready within {STARTUP:?}; its log:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "ledger-server died ({status}); its log:\n{}",
                self.log_tail()
            );
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// -------------------------------------------------------------- requests

/// One answered (or unanswered) request.
#[derive(Debug, Clone)]
struct Attempt {
    what: String,
    started: Instant,
    took: Duration,
    /// The HTTP status, or `None` when no response came.
    status: Option<u16>,
    text: String,
    replayed: bool,
}

impl Attempt {
    fn body(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }

    /// The SPEC's error shape with code `unavailable`.
    fn is_unavailable_in_spec_format(&self) -> bool {
        let b = self.body();
        self.status == Some(503)
            && b["error"]["code"] == "unavailable"
            && b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
            && b["error"]["details"].is_object()
            && b.as_object().map(|o| o.len()) == Some(1)
    }

    fn line(&self) -> String {
        format!(
            "{} → {} in {:?}: {}",
            self.what,
            self.status
                .map_or_else(|| "no response".to_owned(), |s| s.to_string()),
            self.took,
            self.text.chars().take(300).collect::<String>()
        )
    }
}

async fn attempt(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    key: Option<&str>,
    body: Option<&Value>,
) -> Attempt {
    let started = Instant::now();
    let mut request = http.request(method.clone(), &url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    if let Some(k) = key {
        request = request.header("Idempotency-Key", k);
    }
    if let Some(b) = body {
        request = request
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let what = format!("{method} {url}");
    match request.send().await {
        Err(e) => Attempt {
            what,
            started,
            took: started.elapsed(),
            status: None,
            text: e.to_string(),
            replayed: false,
        },
        Ok(r) => {
            let status = r.status().as_u16();
            let replayed = r
                .headers()
                .get("idempotent-replayed")
                .is_some_and(|v| v == "true");
            let (status, text) = match r.text().await {
                Ok(t) => (Some(status), t),
                Err(e) => (None, format!("HTTP {status}, body lost: {e}")),
            };
            Attempt {
                what,
                started,
                took: started.elapsed(),
                status,
                text,
                replayed,
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Deduction {
    key: String,
    body: Value,
}

#[derive(Default)]
struct Book {
    attempts: Vec<Attempt>,
    acknowledged: HashMap<String, Value>,
    /// Sent, outcome unknown (no response or a 5xx): retried as they were.
    pending: Vec<Deduction>,
}

struct Load {
    http: reqwest::Client,
    base: String,
    account: String,
    bot: String,
    book: Mutex<Book>,
}

impl Load {
    fn url(&self) -> String {
        format!("{}/v1/accounts/{}/deductions", self.base, self.account)
    }

    async fn deduct(&self, d: Deduction) -> Attempt {
        let a = attempt(
            &self.http,
            reqwest::Method::POST,
            self.url(),
            Some(&self.bot),
            Some(&d.key),
            Some(&d.body),
        )
        .await;
        let mut book = self.book.lock().unwrap();
        book.attempts.push(a.clone());
        match a.status {
            Some(201) => {
                book.acknowledged.insert(d.key, a.body());
            }
            Some(s) if s < 500 => {}
            _ => book.pending.push(d),
        }
        a
    }

    async fn work(self: Arc<Self>, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::SeqCst) {
            let d = Deduction {
                key: key(),
                body: json!({
                    "operation": "content_generation",
                    "units": 1 + (uuid::Uuid::new_v4().as_u128() % 500) as u64,
                }),
            };
            let a = self.deduct(d).await;
            if a.status != Some(201) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn whole_log(store: &store::Store) -> Vec<store::StoredEvent> {
    let mut events = Vec::new();
    let mut after = 0;
    loop {
        let batch = store.read_after(after, 1_000).await.expect("read the log");
        let Some(last) = batch.last() else {
            return events;
        };
        after = last.position;
        events.extend(batch);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_under_load_answers_503_fast_then_recovers_losing_nothing() {
    api::install_crypto_provider();
    let cluster = Cluster::init();
    cluster.start();
    let data = tempfile::tempdir().expect("a data dir");
    let mut server = Running::spawn(&cluster.url(), data.path());
    let http = reqwest::Client::builder()
        .timeout(CLIENT_TIMEOUT)
        .build()
        .unwrap();
    server.wait_ready(&http).await;

    let keys = api::auth::JwtKeys::from_secret(common::JWT_SECRET.as_bytes());
    let mint = |role, account: Option<&str>| {
        let claims = api::auth::Claims::new(
            "restart-test",
            role,
            account.map(|a| events::AccountId::parse(a).unwrap()),
            common::now_unix(),
            Duration::from_secs(3600),
        )
        .unwrap();
        keys.mint(&claims)
    };
    let developer = mint(api::auth::Role::Developer, None);
    let opened = attempt(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/accounts", server.base),
        Some(&developer),
        Some(&key()),
        Some(&common::Api::account_body(&common::unique_slug())),
    )
    .await;
    assert_eq!(opened.status, Some(201), "{}", opened.line());
    let account = opened.body()["account_id"].as_str().unwrap().to_owned();
    let granted = attempt(
        &http,
        reqwest::Method::POST,
        format!("{}/v1/accounts/{account}/grants", server.base),
        Some(&developer),
        Some(&key()),
        Some(&json!({ "credits": GRANTED, "source": "purchase" })),
    )
    .await;
    assert_eq!(granted.status, Some(201), "{}", granted.line());
    let load = Arc::new(Load {
        http: http.clone(),
        base: server.base.clone(),
        account: account.clone(),
        bot: mint(api::auth::Role::SystemBot, Some(&account)),
        book: Mutex::new(Book::default()),
    });

    // Load, then the store goes away under it.
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| tokio::spawn(load.clone().work(stop.clone())))
        .collect();
    tokio::time::sleep(LOAD_BEFORE_STOP).await;
    let acknowledged_before = load.book.lock().unwrap().acknowledged.len();
    assert!(
        acknowledged_before > 0,
        "deductions succeed before the outage"
    );
    assert!(cluster.stop("fast"), "pg_ctl stop -m fast");
    let down_since = Instant::now();

    // While it is down: probes besides the load, for exactly OUTAGE.
    let balance_url = format!("{}/v1/accounts/{account}/balance", server.base);
    let probing = {
        let http = http.clone();
        let base = server.base.clone();
        let balance_url = balance_url.clone();
        let developer = developer.clone();
        let load = load.clone();
        tokio::spawn(async move {
            let mut probes = Vec::new();
            while down_since.elapsed() < OUTAGE {
                let get = |url: String, token: Option<String>| {
                    let http = http.clone();
                    async move {
                        attempt(
                            &http,
                            reqwest::Method::GET,
                            url,
                            token.as_deref(),
                            None,
                            None,
                        )
                        .await
                    }
                };
                let (ready, health, balance, _) = tokio::join!(
                    get(format!("{base}/ready"), None),
                    get(format!("{base}/health"), None),
                    get(balance_url.clone(), Some(developer.clone())),
                    load.deduct(Deduction {
                        key: key(),
                        body: json!({ "operation": "clustering" }),
                    }),
                );
                probes.extend([ready, health, balance]);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            probes
        })
    };
    tokio::time::sleep(OUTAGE.saturating_sub(down_since.elapsed())).await;
    server.assert_alive();
    let restart_at = Instant::now();
    cluster.start();

    // Recovery: a deduction of our own succeeds within RECOVERY.
    let recovered_at = loop {
        let a = load
            .deduct(Deduction {
                key: key(),
                body: json!({ "operation": "content_generation", "units": 100 }),
            })
            .await;
        if a.status == Some(201) {
            break Instant::now();
        }
        assert!(
            restart_at.elapsed() < RECOVERY,
            "deductions did not succeed again within {RECOVERY:?} of PostgreSQL's return; \
             last answer: {}\nserver log:\n{}",
            a.line(),
            server.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(LOAD_AFTER_RECOVERY).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("a worker");
    }
    server.assert_alive();
    let probes = probing.await.expect("the probes");

    // Unknown outcomes are retried with the same key and body.
    let deadline = Instant::now() + RECOVERY;
    loop {
        let pending = std::mem::take(&mut load.book.lock().unwrap().pending);
        if pending.is_empty() {
            break;
        }
        for d in pending {
            let a = load.deduct(d).await;
            assert!(
                a.status.is_some_and(|s| s < 500) || Instant::now() < deadline,
                "a retry still fails after recovery: {}",
                a.line()
            );
        }
    }

    let book = std::mem::take(&mut *load.book.lock().unwrap());
    let stopped_at = down_since;
    eprintln!(
        "{} answers were replays (a retried key already applied)",
        book.attempts.iter().filter(|a| a.replayed).count()
    );
    // Answered while the cluster was down: after it had stopped (with a
    // second's grace for answers already on their way) and before it was
    // started again.
    let in_outage = |a: &Attempt| {
        let answered = a.started + a.took;
        answered >= stopped_at + STOP_GRACE && answered <= restart_at
    };
    eprintln!(
        "{} deduction attempts ({} acknowledged, {} before the stop); PostgreSQL down {:?}; \
         deductions again {:?} after its return",
        book.attempts.len(),
        book.acknowledged.len(),
        acknowledged_before,
        restart_at - stopped_at,
        recovered_at - restart_at
    );

    for a in book
        .attempts
        .iter()
        .filter(|a| a.started + a.took >= stopped_at && a.started <= restart_at)
    {
        eprintln!(
            "  across the outage: started {:?} after the stop: {}",
            a.started.saturating_duration_since(stopped_at),
            a.line()
        );
    }
    for a in &probes {
        eprintln!(
            "  probe at {:?}: {}",
            a.started.saturating_duration_since(stopped_at),
            a.line()
        );
    }

    // No hang, ever.
    let slow: Vec<String> = book
        .attempts
        .iter()
        .chain(&probes)
        .filter(|a| a.took > ANSWER_WITHIN)
        .map(Attempt::line)
        .collect();
    assert!(
        slow.is_empty(),
        "requests not answered within {ANSWER_WITHIN:?}:\n{}",
        slow.join("\n")
    );

    // During the outage: 503 `unavailable` in the SPEC's format, nothing else.
    let outage: Vec<&Attempt> = book.attempts.iter().filter(|a| in_outage(a)).collect();
    assert!(
        outage.len() >= OUTAGE_DEDUCTIONS_MIN,
        "the load went on during the outage: {} deductions answered in it",
        outage.len()
    );
    let wrong: Vec<String> = outage
        .iter()
        .filter(|a| !a.is_unavailable_in_spec_format())
        .map(|a| a.line())
        .collect();
    assert!(
        wrong.is_empty(),
        "deductions while PostgreSQL was down must answer 503 unavailable:\n{}",
        wrong.join("\n")
    );
    let slowest = outage.iter().map(|a| a.took).max().unwrap();
    eprintln!(
        "{} deductions during the outage, all 503 unavailable, slowest {slowest:?}",
        outage.len()
    );
    // `/health` is liveness: 200 throughout. `/ready` and reads answered
    // before the cluster's return: 503 `unavailable`.
    for probe in &probes {
        if probe.what.ends_with("/health") {
            assert_eq!(probe.status, Some(200), "{}", probe.line());
        } else if in_outage(probe) {
            assert!(
                probe.is_unavailable_in_spec_format(),
                "while PostgreSQL was down: {}",
                probe.line()
            );
        }
    }
    assert!(
        probes
            .iter()
            .filter(|p| !p.what.ends_with("/health") && in_outage(p))
            .count()
            >= 2,
        "the probes ran during the outage"
    );
    // Outside the outage only 201s and 503s: never another status.
    let odd: Vec<String> = book
        .attempts
        .iter()
        .filter(|a| a.status != Some(201) && !a.is_unavailable_in_spec_format())
        .map(Attempt::line)
        .collect();
    assert!(
        odd.is_empty(),
        "answers other than 201 or 503 unavailable:\n{}",
        odd.join("\n")
    );

    // Nothing acknowledged was lost, nothing applied twice.
    let store = store::Store::connect(&cluster.url())
        .await
        .expect("connect to the private cluster");
    let log = whole_log(&store).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for e in log.iter().filter(|e| e.event_type == "CreditsDeducted") {
        let d = &e.payload["CreditsDeducted"];
        let k = d["idempotency_key"].as_str().unwrap_or("");
        assert!(
            book.acknowledged.contains_key(k),
            "a deduction in the log no client was acknowledged for: {}",
            e.payload
        );
        *counts.entry(k).or_default() += 1;
    }
    let mut spent = 0;
    for (k, body) in &book.acknowledged {
        assert_eq!(
            counts.get(k.as_str()).copied(),
            Some(1),
            "acknowledged key {k} is in the log exactly once: {body}"
        );
        spent += body["credits"].as_i64().unwrap();
    }
    let head = store.head_position().await.unwrap();
    let balance = attempt(
        &http,
        reqwest::Method::GET,
        format!("{balance_url}?min_position={head}"),
        Some(&developer),
        None,
        None,
    )
    .await;
    assert_eq!(balance.status, Some(200), "{}", balance.line());
    assert_eq!(
        balance.body()["balance"],
        GRANTED - spent,
        "{}",
        balance.line()
    );
    let ready = attempt(
        &http,
        reqwest::Method::GET,
        format!("{}/ready", server.base),
        None,
        None,
        None,
    )
    .await;
    assert_eq!(ready.status, Some(200), "{}", ready.line());
    common::assert_verify_clean(&store).await;
    drop(book);
    drop(server);
    match store {
        store::Store::Postgres(s) => s.pool().close().await,
        store::Store::Sqlite(s) => s.pool().close().await,
    }
    assert!(cluster.stop("fast"), "the cluster stops cleanly");
}
