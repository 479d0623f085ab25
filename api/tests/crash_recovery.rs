//! `kill -9` under load (SPEC §9: "`kill -9` under load loses no
//! acknowledged write and applies none twice"), on PostgreSQL and on SQLite,
//! against the real `ledger-server` binary.
//!
//! Three funded accounts take concurrent deductions (several workers, a
//! fresh `Idempotency-Key` each, a few credits each so the balance never
//! runs out) while the process is SIGKILLed at random moments, at least
//! [`KILLS`] times per backend (once while it is still starting). After each
//! restart on the same database every request whose outcome was unknown
//! (a connection error, no response, a 5xx) is retried with the same key and
//! body until it is answered, and a sample of acknowledged keys is sent
//! again: each must replay its first answer byte for byte.
//!
//! At the end: every key is in the event log exactly once, with the
//! deduction id and credits its client was told, and no deduction in the log
//! has a key no client was acknowledged for; the transactions read model has
//! one entry per acknowledged deduction; each balance (read model and log)
//! equals the grant minus the acknowledged deductions; and
//! `replay_tools::verify` (what `ledger-replay verify` runs) is clean.
//!
//! PostgreSQL at 127.0.0.1:5432 (or `LEDGER_TEST_POSTGRES_URL`) must be
//! running: without it the PostgreSQL half fails, it never skips.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{key, Backend};
use serde_json::{json, Value};
use store::Store;

/// SIGKILLs per backend, each in the middle of a burst of load.
const KILLS: usize = 6;
/// Accounts the load is spread over.
const ACCOUNTS: usize = 3;
/// Credits granted to each account before the load: far more than the load
/// can spend, so no deduction is ever refused for want of credits.
const GRANTED: i64 = 10_000_000;
/// Concurrent workers sending deductions.
const WORKERS: usize = 8;
/// The random moment of a kill lies within this window after the load
/// started (milliseconds).
const KILL_AFTER_MILLIS_MIN: u64 = 150;
const KILL_AFTER_MILLIS_MAX: u64 = 1_500;
/// Acknowledged keys sent again after each restart.
const REPLAYS_PER_RESTART: usize = 20;
/// How long a server may take to answer `/ready`.
const STARTUP: Duration = Duration::from_secs(30);
/// A client gives up on one request after this long (an unknown outcome).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole scenario of one backend; beyond it the test fails.
const SCENARIO: Duration = Duration::from_secs(80);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A random number in `[min, max]`, from the OS's randomness (uuid v4), so
/// that no seed is needed; the values used are printed for a rerun's sake.
fn random_between(min: u64, max: u64) -> u64 {
    min + (uuid::Uuid::new_v4().as_u128() % u128::from(max - min + 1)) as u64
}

/// A `ledger-server` process; SIGKILLed (`Child::kill` on unix) when
/// dropped, so that a failing test leaves nothing running.
struct Running {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Running {
    fn spawn(database_url: &str, data_dir: &Path, generation: usize) -> Self {
        let port = free_port();
        let log = data_dir.join(format!("server-{generation}.log"));
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

    /// Waits until `/ready` answers 200.
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

    /// SIGKILL: no graceful shutdown, nothing flushed.
    fn kill9(&mut self) {
        self.child.kill().expect("SIGKILL the server");
        self.child.wait().expect("reap the server");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One deduction request: always sent with the same key and body.
#[derive(Debug, Clone)]
struct Deduction {
    key: String,
    account: String,
    body: Value,
}

/// What one attempt at a request came to.
enum Outcome {
    /// 201: the deduction's body, and whether it was a replay.
    Acknowledged(Value, bool),
    /// No answer, or a 5xx: applied or not, nobody knows yet.
    Unknown(String),
    /// Any other answer: a bug.
    Refused(u16, String),
}

async fn send(http: &reqwest::Client, base: &str, d: &Deduction, token: &str) -> Outcome {
    let sent = http
        .post(format!("{base}/v1/accounts/{}/deductions", d.account))
        .bearer_auth(token)
        .header("Idempotency-Key", &d.key)
        .header("content-type", "application/json")
        .body(d.body.to_string())
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return Outcome::Unknown(format!("no response: {e}")),
    };
    let status = response.status().as_u16();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v == "true");
    let text = match response.text().await {
        Ok(t) => t,
        Err(e) => return Outcome::Unknown(format!("HTTP {status}, body lost: {e}")),
    };
    match status {
        201 => Outcome::Acknowledged(
            serde_json::from_str(&text)
                .unwrap_or_else(|_| panic!("a 201 carries a JSON body: {text}")),
            replayed,
        ),
        s if s >= 500 => Outcome::Unknown(format!("HTTP {s}: {text}")),
        s => Outcome::Refused(s, text),
    }
}

/// What the clients know, shared by the workers.
#[derive(Default)]
struct Book {
    /// Keys with their first 201 body.
    acknowledged: HashMap<String, (Deduction, Value)>,
    /// Requests sent whose outcome is unknown, to be retried as they were.
    pending: Vec<Deduction>,
    /// Answers that were neither 201 nor unknown.
    refused: Vec<String>,
    sent: usize,
    replays: usize,
    unknown: usize,
}

impl Book {
    fn record(&mut self, d: Deduction, outcome: Outcome) {
        self.sent += 1;
        match outcome {
            Outcome::Acknowledged(body, replayed) => {
                if replayed {
                    self.replays += 1;
                }
                let previous = self.acknowledged.insert(d.key.clone(), (d, body));
                assert!(
                    previous.is_none(),
                    "a key acknowledged earlier was sent as unknown"
                );
            }
            Outcome::Unknown(_) => {
                self.unknown += 1;
                self.pending.push(d);
            }
            Outcome::Refused(status, text) => {
                self.refused
                    .push(format!("key {} → HTTP {status}: {text}", d.key));
            }
        }
    }
}

struct Load {
    http: reqwest::Client,
    tokens: HashMap<String, String>,
    accounts: Vec<String>,
    book: Mutex<Book>,
}

impl Load {
    /// A new deduction of 1 to 5 credits (content generation, 1 credit per
    /// 100 words) on one of the accounts.
    fn fresh(&self) -> Deduction {
        let account = self.accounts[random_between(0, ACCOUNTS as u64 - 1) as usize].clone();
        Deduction {
            key: key(),
            account,
            body: json!({
                "operation": "content_generation",
                "units": random_between(1, 500),
                "model": "crash-test",
            }),
        }
    }

    /// A worker: retries pending requests first, then sends new ones, until
    /// `stop`.
    async fn work(self: Arc<Self>, base: String, stop: Arc<AtomicBool>) {
        while !stop.load(Ordering::SeqCst) {
            let next = self.book.lock().unwrap().pending.pop();
            let d = next.unwrap_or_else(|| self.fresh());
            let outcome = send(&self.http, &base, &d, &self.tokens[&d.account]).await;
            let unknown = matches!(outcome, Outcome::Unknown(_));
            self.book.lock().unwrap().record(d, outcome);
            if unknown {
                // The server is gone or failing: do not spin.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Retries every pending request (against a running server) until each
    /// is answered.
    async fn drain(&self, base: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let batch = std::mem::take(&mut self.book.lock().unwrap().pending);
            if batch.is_empty() {
                return;
            }
            let sends = batch.into_iter().map(|d| async move {
                let outcome = send(&self.http, base, &d, &self.tokens[&d.account]).await;
                (d, outcome)
            });
            for (d, outcome) in futures::future::join_all(sends).await {
                if let Outcome::Unknown(why) = &outcome {
                    assert!(
                        Instant::now() < deadline,
                        "key {} still has no answer from a running server: {why}",
                        d.key
                    );
                }
                self.book.lock().unwrap().record(d, outcome);
            }
        }
    }

    /// Sends a sample of acknowledged keys again: each must replay its first
    /// answer, byte for byte, with `Idempotent-Replayed: true`.
    async fn check_replays(&self, base: &str) {
        let sample: Vec<(Deduction, Value)> = {
            let book = self.book.lock().unwrap();
            book.acknowledged
                .values()
                .take(REPLAYS_PER_RESTART)
                .cloned()
                .collect()
        };
        for (d, first) in sample {
            match send(&self.http, base, &d, &self.tokens[&d.account]).await {
                Outcome::Acknowledged(body, replayed) => {
                    assert!(replayed, "key {} was not answered as a replay", d.key);
                    assert_eq!(
                        body, first,
                        "key {} replays its first answer after a restart",
                        d.key
                    );
                }
                Outcome::Unknown(why) => panic!("a replay of {} got no answer: {why}", d.key),
                Outcome::Refused(s, t) => panic!("a replay of {} got HTTP {s}: {t}", d.key),
            }
        }
    }
}

/// Every event of the log, in order.
async fn whole_log(store: &Store) -> Vec<store::StoredEvent> {
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

async fn get_json(http: &reqwest::Client, url: String, token: &str) -> Value {
    let r = http
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "GET {url}: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn kill_nine_under_load(backend: Backend) {
    api::install_crypto_provider();
    let started = Instant::now();
    let db = common::fresh_db(backend).await;
    let data = tempfile::tempdir().expect("a data dir");
    let keys = api::auth::JwtKeys::from_secret(common::JWT_SECRET.as_bytes());
    let mint = |role, account: Option<&str>| {
        let claims = api::auth::Claims::new(
            "crash-test",
            role,
            account.map(|a| events::AccountId::parse(a).unwrap()),
            common::now_unix(),
            Duration::from_secs(3600),
        )
        .unwrap();
        keys.mint(&claims)
    };
    let developer = mint(api::auth::Role::Developer, None);
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();

    let mut server = Running::spawn(&db.url, data.path(), 0);
    server.wait_ready(&http).await;
    let mut accounts = Vec::new();
    for _ in 0..ACCOUNTS {
        let r = http
            .post(format!("{}/v1/accounts", server.base))
            .bearer_auth(&developer)
            .header("Idempotency-Key", key())
            .json(&common::Api::account_body(&common::unique_slug()))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let id = r.json::<Value>().await.unwrap()["account_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = http
            .post(format!("{}/v1/accounts/{id}/grants", server.base))
            .bearer_auth(&developer)
            .header("Idempotency-Key", key())
            .json(&json!({ "credits": GRANTED, "source": "purchase" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        accounts.push(id);
    }
    let load = Arc::new(Load {
        http: http.clone(),
        tokens: accounts
            .iter()
            .map(|a| (a.clone(), mint(api::auth::Role::SystemBot, Some(a))))
            .collect(),
        accounts: accounts.clone(),
        book: Mutex::new(Book::default()),
    });

    let generations = AtomicUsize::new(1);
    for kill in 0..KILLS {
        if kill > 0 {
            server = Running::spawn(
                &db.url,
                data.path(),
                generations.fetch_add(1, Ordering::SeqCst),
            );
            if kill == 1 {
                // Once while it starts (migrations, catalog, projector
                // catch-up), before it ever answers.
                let after = random_between(20, 300);
                tokio::time::sleep(Duration::from_millis(after)).await;
                eprintln!("[{backend:?}] kill during start-up, {after} ms after spawn");
                server.kill9();
                server = Running::spawn(
                    &db.url,
                    data.path(),
                    generations.fetch_add(1, Ordering::SeqCst),
                );
            }
            server.wait_ready(&http).await;
            load.check_replays(&server.base).await;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| tokio::spawn(load.clone().work(server.base.clone(), stop.clone())))
            .collect();
        let after = random_between(KILL_AFTER_MILLIS_MIN, KILL_AFTER_MILLIS_MAX);
        tokio::time::sleep(Duration::from_millis(after)).await;
        server.kill9();
        stop.store(true, Ordering::SeqCst);
        for w in workers {
            w.await.expect("a worker");
        }
        let book = load.book.lock().unwrap();
        eprintln!(
            "[{backend:?}] kill {} after {after} ms: {} sent, {} acknowledged, {} pending",
            kill + 1,
            book.sent,
            book.acknowledged.len(),
            book.pending.len()
        );
        assert!(
            started.elapsed() < SCENARIO,
            "the scenario took longer than {SCENARIO:?}"
        );
    }

    // The last restart: every unknown outcome is settled by a retry.
    server = Running::spawn(&db.url, data.path(), generations.load(Ordering::SeqCst));
    server.wait_ready(&http).await;
    load.drain(&server.base).await;
    load.check_replays(&server.base).await;

    let book = std::mem::take(&mut *load.book.lock().unwrap());
    eprintln!(
        "[{backend:?}] {} requests, {} keys acknowledged, {} unknown outcomes retried, \
         {} answered as replays",
        book.sent,
        book.acknowledged.len(),
        book.unknown,
        book.replays
    );
    assert!(
        book.refused.is_empty(),
        "requests were refused:\n{}",
        book.refused.join("\n")
    );
    assert!(book.pending.is_empty());
    assert!(
        book.unknown >= KILLS,
        "every kill left requests in flight (unknown outcomes: {})",
        book.unknown
    );
    assert!(
        book.acknowledged.len() >= 10 * KILLS,
        "the load got going between kills: {} acknowledged",
        book.acknowledged.len()
    );

    // The event log: each key exactly once, as its client was told.
    let log = whole_log(&db.store).await;
    let mut logged: HashMap<String, Vec<&store::StoredEvent>> = HashMap::new();
    let mut strangers = Vec::new();
    for e in log.iter().filter(|e| e.event_type == "CreditsDeducted") {
        let d = &e.payload["CreditsDeducted"];
        let k = d["idempotency_key"].as_str().unwrap_or("").to_owned();
        if !book.acknowledged.contains_key(&k) {
            strangers.push(format!("position {}: {}", e.position, e.payload));
        }
        logged.entry(k).or_default().push(e);
    }
    assert!(
        strangers.is_empty(),
        "deductions in the log that no client was acknowledged for:\n{}",
        strangers.join("\n")
    );
    let twice: Vec<String> = logged
        .iter()
        .filter(|(_, es)| es.len() > 1)
        .map(|(k, es)| {
            format!(
                "{k} at positions {:?}",
                es.iter().map(|e| e.position).collect::<Vec<_>>()
            )
        })
        .collect();
    assert!(
        twice.is_empty(),
        "keys applied more than once:\n{}",
        twice.join("\n")
    );
    let mut spent: BTreeMap<&str, i64> = BTreeMap::new();
    let mut count: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, (d, body)) in &book.acknowledged {
        let es = logged
            .get(k)
            .unwrap_or_else(|| panic!("acknowledged key {k} is not in the log: {body}"));
        let logged = &es[0].payload["CreditsDeducted"];
        assert_eq!(es[0].aggregate_id, d.account, "key {k}'s account");
        assert_eq!(
            (&logged["deduction_id"], &logged["credits"]),
            (&body["id"], &body["credits"]),
            "the logged deduction of key {k} is the one its client was told"
        );
        *spent.entry(d.account.as_str()).or_default() += body["credits"].as_i64().unwrap();
        *count.entry(d.account.as_str()).or_default() += 1;
    }

    // Balances, from the log and from the read models; the transactions
    // read model has one entry per acknowledged deduction.
    let head = store_head(&db.store).await;
    for account in &accounts {
        let expected = GRANTED - spent.get(account.as_str()).copied().unwrap_or(0);
        let from_log: i64 = log
            .iter()
            .filter(|e| {
                &e.aggregate_id == account && e.aggregate_type == events::ACCOUNT_AGGREGATE_TYPE
            })
            .map(|e| {
                serde_json::from_value::<events::AccountEvent>(e.payload.clone())
                    .unwrap_or_else(|err| panic!("an account event: {err}: {}", e.payload))
                    .balance_delta()
            })
            .sum();
        assert_eq!(from_log, expected, "{account}: the log's balance");
        let balance = get_json(
            &http,
            format!(
                "{}/v1/accounts/{account}/balance?min_position={head}",
                server.base
            ),
            &developer,
        )
        .await;
        assert_eq!(balance["balance"], expected, "{account}: {balance}");
        assert_eq!(balance["held"], 0, "{account}: {balance}");
        let mut entries = 0;
        let mut cursor: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/v1/accounts/{account}/transactions?type=deduction&limit=500&min_position={head}",
                server.base
            );
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={c}"));
            }
            let page = get_json(&http, url, &developer).await;
            entries += page["items"].as_array().unwrap().len();
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(
            entries,
            count.get(account.as_str()).copied().unwrap_or(0),
            "{account}: deduction entries in the transactions read model"
        );
    }

    // What `ledger-replay verify` checks: hash chains, and every read model
    // against a fresh fold of the log.
    let report = common::assert_verify_clean(&db.store).await;
    assert!(report.events as usize >= log.len());
    drop(book);
    drop(server);
    drop(load);
    db.cleanup().await.expect("drop the test database");
    eprintln!("[{backend:?}] done in {:?}", started.elapsed());
}

async fn store_head(store: &Store) -> i64 {
    store.head_position().await.expect("the log head")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_under_load_loses_no_acknowledged_deduction_on_postgres() {
    kill_nine_under_load(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_nine_under_load_loses_no_acknowledged_deduction_on_sqlite() {
    kill_nine_under_load(Backend::Sqlite).await;
}

// ---------------------------------------------------------------------------
// The projector killed mid-batch (issue 14)
// ---------------------------------------------------------------------------

/// Accounts of the projector's backlog.
const BACKLOG_ACCOUNTS: usize = 40;
/// Rounds per account; each writes a deduction, and every fifth also a
/// hold and its capture.
const BACKLOG_ROUNDS: usize = 200;
/// Kills of the server while its projector works through the backlog.
const PROJECTOR_KILLS: usize = 3;

/// A backlog written in process with no projector running: account
/// openings, grants that expire (the expiry schedule), deductions with
/// usage records (daily usage rows), holds with TTLs and their captures.
async fn write_backlog(store: &Store) {
    use events::{AccountId, AccountStatus, CostEntry, CostUnit, CountryCode, GrantSource};
    use ledger::account::{
        Amount, CaptureHold, DeductCredits, GrantCredits, HoldCredits, OpenAccount,
    };
    use ledger::AccountCommand;

    let committer = store::AccountCommitter::start(
        store::CommandService::new(store.clone()),
        store::CommitterConfig::default(),
    );
    let ctx = store::testing::context();
    let cost = CostEntry {
        operation: events::OperationKey::parse("clustering").unwrap(),
        cost: 2,
        unit: CostUnit::PerRequest,
        version: 1,
    };
    let usage = |n: usize| events::Usage {
        operation: Some(cost.operation.clone()),
        units: 1,
        model: Some(["gpt-4o", "claude-3-5-sonnet"][n % 2].into()),
        cost_usd: Some(rust_decimal::Decimal::new(21 + (n % 5) as i64, 4)),
        ..events::Usage::default()
    };
    let tasks = (0..BACKLOG_ACCOUNTS).map(|i| {
        let (committer, ctx, cost) = (committer.clone(), ctx.clone(), cost.clone());
        let usage = &usage;
        async move {
            let id = AccountId::new_v7();
            let sid = id.to_string();
            let now = chrono::Utc::now;
            let run = |command| {
                let (committer, ctx, sid) = (committer.clone(), ctx.clone(), sid.clone());
                async move {
                    committer
                        .execute(&sid, command, &ctx, None, &[])
                        .await
                        .unwrap_or_else(|e| panic!("backlog command on {sid}: {e}"));
                }
            };
            run(AccountCommand::OpenAccount(OpenAccount {
                account_id: id,
                name: format!("Backlog {i}"),
                slug: format!("backlog-{}", common::unique_slug()),
                owner_user_id: "user-1".into(),
                plan: "starter".into(),
                status: AccountStatus::Active,
                country: CountryCode::parse("US").unwrap(),
                billing_email: "billing@backlog.test".into(),
                credit_limit: 0,
                low_balance_threshold: 10,
                tax_rate: rust_decimal::Decimal::ZERO,
                currency: None,
                now: now(),
            }))
            .await;
            run(AccountCommand::GrantCredits(GrantCredits {
                grant_id: uuid::Uuid::now_v7(),
                credits: GRANTED,
                source: GrantSource::Promotional,
                expires_at: Some(now() + chrono::Duration::days(365)),
                description: None,
                idempotency_key: None,
                now: now(),
            }))
            .await;
            for r in 0..BACKLOG_ROUNDS {
                run(AccountCommand::DeductCredits(DeductCredits {
                    deduction_id: uuid::Uuid::now_v7(),
                    cost: cost.clone(),
                    usage: usage(r),
                    idempotency_key: None,
                    now: now(),
                }))
                .await;
                if r % 5 == 0 {
                    let hold_id = uuid::Uuid::now_v7();
                    run(AccountCommand::HoldCredits(HoldCredits {
                        hold_id,
                        amount: Amount::Credits(10),
                        ttl_seconds: 3_600,
                        idempotency_key: None,
                        now: now(),
                    }))
                    .await;
                    run(AccountCommand::CaptureHold(CaptureHold {
                        hold_id,
                        deduction_id: uuid::Uuid::now_v7(),
                        amount: Amount::Credits(4),
                        usage: usage(r + 1),
                        idempotency_key: None,
                        now: now(),
                    }))
                    .await;
                }
            }
        }
    });
    futures::future::join_all(tasks).await;
}

async fn projected(store: &Store) -> i64 {
    store
        .fetch_optional(
            "SELECT position FROM projection_checkpoints WHERE name = $1",
            &[projections::PROJECTION_NAME.into()],
        )
        .await
        .expect("read the checkpoint")
        .map_or(0, |r| r.i64("position").expect("position"))
}

/// The server's projector works through a backlog of tens of thousands of
/// events in batches; it is SIGKILLed at random moments while it does
/// (most land inside a batch's transaction), restarted on the same
/// database each time, and at the end the read models must be exactly what
/// a rebuild from the log gives: no row lost, none doubled, no balance
/// counted twice. The checkpoint never moves back.
async fn projector_killed_mid_batch(backend: Backend) {
    api::install_crypto_provider();
    let db = common::fresh_db(backend).await;
    let data = tempfile::tempdir().expect("a data dir");
    write_backlog(&db.store).await;
    let head = store_head(&db.store).await;
    assert_eq!(projected(&db.store).await, 0, "nothing projected yet");

    let http = reqwest::Client::new();
    let mut last = 0;
    let mut kills = 0;
    for generation in 0..PROJECTOR_KILLS {
        let mut server = Running::spawn(&db.url, data.path(), generation);
        // The server catches up at startup, before it serves: wait until
        // the checkpoint has moved (a batch committed), then kill it a
        // random moment later, while the next batches are being written.
        let deadline = Instant::now() + STARTUP;
        loop {
            let p = projected(&db.store).await;
            if p > last || p == head {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the projector made no progress from {last}; server log:\n{}",
                server.log_tail()
            );
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("ledger-server exited ({status}):\n{}", server.log_tail());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let pause = random_between(0, 40);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        server.kill9();
        let at = projected(&db.store).await;
        eprintln!(
            "[{backend:?}] kill {generation}: {pause} ms after progress, checkpoint {at} of {head}"
        );
        assert!(at >= last, "the checkpoint moved back from {last} to {at}");
        if at < head {
            kills += 1;
        }
        last = at;
    }
    assert!(
        kills > 0,
        "every kill came after the projector had finished: the backlog is too small"
    );

    // The last start finishes the job.
    let mut server = Running::spawn(&db.url, data.path(), PROJECTOR_KILLS);
    server.wait_ready(&http).await;
    // The server seeded its catalog at its first start: the head moved on.
    let head = store_head(&db.store).await;
    assert_eq!(projected(&db.store).await, head);
    drop(server);

    let models = projections::ReadModels::new(db.store.clone());
    let live = models.dump().await.expect("dump the live read models");
    let (p, _) = projections::Projector::new(db.store.clone())
        .await
        .expect("a projector");
    p.rebuild_bulk().await.expect("bulk rebuild");
    let rebuilt = models.dump().await.expect("dump the rebuilt read models");
    assert_eq!(live.len(), rebuilt.len(), "as many rows live as rebuilt");
    assert!(
        live == rebuilt,
        "the live rows differ from the rebuilt ones"
    );
    common::assert_verify_clean(&db.store).await;
    db.cleanup().await.expect("drop the test database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_killed_mid_batch_resumes_without_a_lost_or_doubled_row_on_postgres() {
    projector_killed_mid_batch(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_projector_killed_mid_batch_resumes_without_a_lost_or_doubled_row_on_sqlite() {
    projector_killed_mid_batch(Backend::Sqlite).await;
}
