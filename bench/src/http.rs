//! The ledger over HTTP: accounts set up through the API, deductions driven
//! by N keep-alive workers, then every balance checked through the API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::stream::{self, StreamExt, TryStreamExt};
use hdrhistogram::Histogram;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Client, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::report::{histogram, micros, CpuMark, ScenarioResult, Verification};
use crate::LoadRun;

/// `POST /v1/accounts/{id}/deductions/batch`: [`HttpBench::load_batch`].
mod batch;
pub use batch::BATCH_ITEMS_MAX;

/// Every request's timeout; a slower answer counts as a transport error and
/// its deduction is settled afterwards with the same idempotency key.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Concurrent requests while opening accounts and reading balances.
const SETUP_CONCURRENCY: usize = 16;
/// Credits granted to each account: far more than any run can spend.
pub const GRANT_CREDITS: i64 = 1_000_000_000;
/// The operation the bench deducts for, priced at one credit per request.
const OPERATION: &str = "clustering";
const COST: i64 = 1;
const DEDUCT_BODY: &str = r#"{"operation":"clustering","units":1}"#;
/// Longest wait for the server to answer on NATS after it started.
const NATS_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The ledger's request/reply subject for deductions (SPEC §4).
const NATS_DEDUCT_SUBJECT: &str = "ledger.commands.deduct";
/// Tries of a setup request or an in-doubt deduction.
const ATTEMPTS_MAX: u32 = 5;
/// Longest wait for the read models to catch up with the load.
const PROJECTION_TIMEOUT: Duration = Duration::from_secs(300);
/// Lifetime of the tokens the bench mints.
const TOKEN_TTL_SECONDS: i64 = 24 * 3600;
/// Mismatches listed in the report.
const EXAMPLES_MAX: usize = 10;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    role: &'a str,
    exp: i64,
    iat: i64,
}

fn token(secret: &str, role: &str) -> anyhow::Result<String> {
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: "ledger-bench",
        role,
        exp: now + TOKEN_TTL_SECONDS,
        iat: now,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// Accounts opened and funded for one scenario.
#[derive(Debug, Clone)]
pub struct AccountSet {
    pub ids: Vec<String>,
    /// Balance of each account before the load.
    pub start: Vec<i64>,
}

/// What the load saw, for the balance check.
pub struct HttpDetail {
    set: AccountSet,
    /// Credits deducted per account by the successful requests.
    deducted: Vec<i64>,
    /// Highest log position any response named.
    max_position: i64,
    /// Requests whose outcome is unknown: (account index, key).
    in_doubt: Vec<(usize, String)>,
}

pub struct HttpBench {
    client: Client,
    base: String,
    developer: String,
    bot: String,
    backend: String,
    /// The spawned server, whose CPU time is charged to each load.
    server_pid: Option<u32>,
    /// With `--transport nats`: deductions go as NATS requests instead.
    nats: Option<async_nats::Client>,
}

#[derive(Deserialize)]
struct Deducted {
    credits: i64,
    position: Option<i64>,
}

/// xorshift64*: a per-worker account picker; no cryptographic need.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        Self((Uuid::new_v4().as_u128() as u64) | 1)
    }
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

fn bump(map: &mut BTreeMap<String, u64>, key: impl Into<String>) {
    *map.entry(key.into()).or_default() += 1;
}

impl HttpBench {
    pub fn new(base: &str, secret: &str, server_pid: Option<u32>) -> anyhow::Result<Self> {
        let client = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .context("building the HTTP client")?;
        Ok(Self {
            client,
            base: base.to_owned(),
            developer: format!("Bearer {}", token(secret, "developer")?),
            bot: format!("Bearer {}", token(secret, "system_bot")?),
            backend: "?".into(),
            server_pid,
            nats: None,
        })
    }

    /// Sends the load's deductions over NATS request/reply from now on.
    pub async fn use_nats(&mut self, url: &str) -> anyhow::Result<()> {
        let client = async_nats::ConnectOptions::new()
            .request_timeout(Some(REQUEST_TIMEOUT))
            .connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        // The server subscribes after it starts: wait (bounded) until a
        // request is answered — an empty payload gets a 4xx reply.
        let deadline = Instant::now() + NATS_READY_TIMEOUT;
        loop {
            match client.request(NATS_DEDUCT_SUBJECT, "{}".into()).await {
                Ok(_) => break,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => bail!("no ledger-server answers on {NATS_DEDUCT_SUBJECT}: {e}"),
            }
        }
        self.nats = Some(client);
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Learns the backend and prices the bench's operation at one credit.
    pub async fn prepare(&mut self) -> anyhow::Result<()> {
        let ready: Value = self
            .client
            .get(self.url("/ready"))
            .send()
            .await
            .context("GET /ready")?
            .error_for_status()?
            .json()
            .await?;
        self.backend = ready["store"]["backend"].as_str().unwrap_or("?").to_owned();
        let r = self
            .client
            .put(self.url(&format!("/v1/admin/credit-costs/{OPERATION}")))
            .header(AUTHORIZATION, &self.developer)
            .json(&json!({ "cost": COST, "unit": "per_request" }))
            .send()
            .await
            .context("setting the cost of the bench's operation")?;
        let status = r.status();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status != StatusCode::OK || body["cost"] != json!(COST) {
            bail!("PUT /v1/admin/credit-costs/{OPERATION} answered {status}: {body}");
        }
        Ok(())
    }

    async fn post_json(
        &self,
        path: &str,
        key: Option<&str>,
        body: &Value,
    ) -> anyhow::Result<(StatusCode, Value)> {
        let mut last = None;
        for attempt in 0..ATTEMPTS_MAX {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
            }
            let mut req = self
                .client
                .post(self.url(path))
                .header(AUTHORIZATION, &self.developer)
                .json(body);
            if let Some(k) = key {
                req = req.header("idempotency-key", k);
            }
            match req.send().await {
                Ok(r) if r.status().is_server_error() => {
                    last = Some(anyhow::anyhow!("POST {path} answered {}", r.status()));
                }
                Ok(r) => {
                    let status = r.status();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    return Ok((status, body));
                }
                Err(e) => last = Some(anyhow::Error::new(e).context(format!("POST {path}"))),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("POST {path} failed")))
    }

    /// Opens `n` accounts with unique slugs and grants each
    /// [`GRANT_CREDITS`], a bounded number at a time.
    pub async fn open_accounts(&self, n: usize) -> anyhow::Result<AccountSet> {
        let tag = &Uuid::new_v4().simple().to_string()[..12];
        let opened: Vec<(usize, String, i64)> = stream::iter(0..n)
            .map(|i| async move {
                let slug = format!("bench-{tag}-{i}");
                // A key makes a retried opening safe.
                let (status, body) = self
                    .post_json(
                        "/v1/accounts",
                        Some(&format!("open-{slug}")),
                        &json!({
                            "name": format!("Bench {i}"),
                            "slug": slug,
                            "country": "US",
                            "billing_email": "bench@example.test",
                            "owner_user_id": "ledger-bench",
                        }),
                    )
                    .await?;
                let Some(id) = body["account_id"].as_str().filter(|_| status.is_success()) else {
                    bail!("opening an account answered {status}: {body}");
                };
                let id = id.to_owned();
                let (status, body) = self
                    .post_json(
                        &format!("/v1/accounts/{id}/grants"),
                        Some(&format!("grant-{slug}")),
                        &json!({ "credits": GRANT_CREDITS, "source": "purchase" }),
                    )
                    .await?;
                let Some(balance) = body["balance_after"]
                    .as_i64()
                    .filter(|_| status.is_success())
                else {
                    bail!("granting credits answered {status}: {body}");
                };
                anyhow::Ok((i, id, balance))
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .try_collect()
            .await?;
        let mut opened = opened;
        opened.sort_by_key(|(i, _, _)| *i);
        Ok(AccountSet {
            ids: opened.iter().map(|(_, id, _)| id.clone()).collect(),
            start: opened.iter().map(|(_, _, b)| *b).collect(),
        })
    }

    /// Drives deductions for `duration` with `workers` keep-alive workers:
    /// closed loop (each worker sends its next request when the last one
    /// answered), or open loop at `rate` ops/s, where latency counts from
    /// the request's scheduled time so that a stalled server is not hidden.
    pub async fn load(
        &self,
        name: &str,
        set: &AccountSet,
        workers: usize,
        duration: Duration,
        rate: Option<f64>,
    ) -> anyhow::Result<LoadRun<HttpDetail>> {
        let urls: Arc<Vec<String>> = Arc::new(
            set.ids
                .iter()
                .map(|id| self.url(&format!("/v1/accounts/{id}/deductions")))
                .collect(),
        );
        let ids: Arc<Vec<String>> = Arc::new(set.ids.clone());
        let prefix = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let cpu = CpuMark::now(self.server_pid);
        let counter = Arc::new(AtomicU64::new(0));
        // Shared rather than per worker: memory stays one counter per account.
        let deducted: Arc<Vec<AtomicI64>> =
            Arc::new(set.ids.iter().map(|_| AtomicI64::new(0)).collect());
        let start = Instant::now();
        let end = start + duration;
        let sampler = tokio::spawn(sample_lag(self.client.clone(), self.url("/ready"), end));
        let mut tasks = Vec::with_capacity(workers);
        for w in 0..workers {
            let client = self.client.clone();
            let nats = self.nats.clone();
            let ids = ids.clone();
            let urls = urls.clone();
            let bot = self.bot.clone();
            let prefix = prefix.clone();
            let counter = counter.clone();
            let deducted = deducted.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = WorkerOut::new(deducted);
                let mut rng = Rng::seeded();
                let mut i = 0u64;
                loop {
                    let scheduled = match rate {
                        Some(rate) => {
                            let n = counter.fetch_add(1, Ordering::Relaxed);
                            let at = start + Duration::from_secs_f64(n as f64 / rate);
                            if at >= end {
                                break;
                            }
                            tokio::time::sleep_until(at.into()).await;
                            at
                        }
                        None => {
                            let now = Instant::now();
                            if now >= end {
                                break;
                            }
                            now
                        }
                    };
                    let idx = if urls.len() == 1 {
                        0
                    } else {
                        rng.below(urls.len())
                    };
                    let key = format!("{prefix}-{w}-{i}");
                    i += 1;
                    if let Some(nats) = &nats {
                        let mut headers = async_nats::HeaderMap::new();
                        headers.insert("Authorization", bot.as_str());
                        let payload = json!({
                            "account_id": ids[idx],
                            "idempotency_key": key,
                            "operation": OPERATION,
                            "units": 1,
                        })
                        .to_string();
                        let sent = nats
                            .request_with_headers(NATS_DEDUCT_SUBJECT, headers, payload.into())
                            .await;
                        out.record_nats(idx, key, scheduled, sent);
                        continue;
                    }
                    let sent = client
                        .post(&urls[idx])
                        .header(AUTHORIZATION, &bot)
                        .header(CONTENT_TYPE, "application/json")
                        .header("idempotency-key", &key)
                        .body(DEDUCT_BODY)
                        .send()
                        .await;
                    out.record(idx, key, scheduled, sent).await;
                }
                out
            }));
        }
        let mut total = WorkerOut::new(deducted.clone());
        for t in tasks {
            total.merge(t.await.context("a load worker panicked")?);
        }
        let elapsed = start.elapsed();
        let samples = sampler.await.unwrap_or_default();
        let kind = if self.nats.is_some() { "nats" } else { "http" };
        let mut result = ScenarioResult::new(name, kind, &self.backend, set.ids.len(), workers);
        // CPU is charged for the load alone, before the catch-up.
        cpu.charge(&mut result);
        let catch_up = self
            .catch_up(total.max_position)
            .await
            .unwrap_or(PROJECTION_TIMEOUT);
        result.target_rate = rate;
        result.set_counts(total.ok, elapsed, &total.hist);
        result.add_errors(&total.errors);
        result.projector = Some(projector_lag(&samples, catch_up));
        Ok(LoadRun {
            result,
            detail: HttpDetail {
                set: set.clone(),
                deducted: deducted.iter().map(|d| d.load(Ordering::Relaxed)).collect(),
                max_position: total.max_position,
                in_doubt: total.in_doubt,
            },
        })
    }

    /// Settles the in-doubt requests, waits for the read models to reach the
    /// last position seen, and compares every balance with its expected
    /// value: the balance before the load less the credits deducted.
    pub async fn verify(&self, run: &mut LoadRun<HttpDetail>) -> anyhow::Result<()> {
        let d = &mut run.detail;
        let mut v = Verification::default();
        for (idx, key) in std::mem::take(&mut d.in_doubt) {
            let path = format!("/v1/accounts/{}/deductions", d.set.ids[idx]);
            let r = self
                .client
                .post(self.url(&path))
                .header(AUTHORIZATION, &self.bot)
                .header(CONTENT_TYPE, "application/json")
                .header("idempotency-key", &key);
            let mut settled = false;
            for attempt in 0..ATTEMPTS_MAX {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
                let Some(req) = r.try_clone() else { break };
                match req.body(DEDUCT_BODY).send().await {
                    Ok(resp) if resp.status() == StatusCode::CREATED => {
                        let body: Deducted = resp.json().await?;
                        d.deducted[idx] += body.credits;
                        d.max_position = d.max_position.max(body.position.unwrap_or(0));
                        settled = true;
                        break;
                    }
                    Ok(resp) if resp.status().is_client_error() => {
                        settled = true;
                        break;
                    }
                    _ => {}
                }
            }
            if settled {
                v.in_doubt_settled += 1;
            } else {
                bail!(
                    "could not settle deduction {key} on account {}",
                    d.set.ids[idx]
                );
            }
        }
        self.wait_projected(d.max_position).await?;
        let checks: Vec<(usize, i64)> = stream::iter(0..d.set.ids.len())
            .map(|idx| {
                let id = d.set.ids[idx].clone();
                let min = d.max_position;
                async move {
                    let url = self.url(&format!("/v1/accounts/{id}/balance?min_position={min}"));
                    for attempt in 0..ATTEMPTS_MAX * 2 {
                        if attempt > 0 {
                            tokio::time::sleep(Duration::from_millis(500)).await;
                        }
                        let Ok(r) = self
                            .client
                            .get(&url)
                            .header(AUTHORIZATION, &self.developer)
                            .send()
                            .await
                        else {
                            continue;
                        };
                        if r.status() == StatusCode::OK {
                            let body: Value = r.json().await?;
                            let balance = body["balance"]
                                .as_i64()
                                .context("the balance response has no integer balance")?;
                            return anyhow::Ok((idx, balance));
                        }
                    }
                    bail!("could not read the balance of account {id}")
                }
            })
            .buffer_unordered(SETUP_CONCURRENCY)
            .try_collect()
            .await?;
        for (idx, found) in checks {
            v.accounts_checked += 1;
            let expected = d.set.start[idx] - d.deducted[idx];
            if found != expected {
                v.mismatches += 1;
                if v.examples.len() < EXAMPLES_MAX {
                    v.examples.push(format!(
                        "{}: expected {expected}, found {found}",
                        d.set.ids[idx]
                    ));
                }
            }
        }
        run.result.verification = Some(v);
        Ok(())
    }

    /// How long the read models take to reach `position` (polled every
    /// 20 ms); `None` when they do not within [`PROJECTION_TIMEOUT`].
    async fn catch_up(&self, position: i64) -> Option<Duration> {
        let started = Instant::now();
        loop {
            if let Ok(r) = self.client.get(self.url("/ready")).send().await {
                if let Ok(body) = r.json::<Value>().await {
                    if body["projector"]["position"].as_i64().unwrap_or(0) >= position {
                        return Some(started.elapsed());
                    }
                }
            }
            if started.elapsed() > PROJECTION_TIMEOUT {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_projected(&self, position: i64) -> anyhow::Result<()> {
        match self.catch_up(position).await {
            Some(_) => Ok(()),
            None => bail!(
                "the read models did not reach position {position} within {PROJECTION_TIMEOUT:?}"
            ),
        }
    }
}

/// One worker's tallies.
struct WorkerOut {
    hist: Histogram<u64>,
    ok: u64,
    errors: BTreeMap<String, u64>,
    deducted: Arc<Vec<AtomicI64>>,
    max_position: i64,
    in_doubt: Vec<(usize, String)>,
}

impl WorkerOut {
    fn new(deducted: Arc<Vec<AtomicI64>>) -> Self {
        Self {
            hist: histogram(),
            ok: 0,
            errors: BTreeMap::new(),
            deducted,
            max_position: 0,
            in_doubt: Vec::new(),
        }
    }

    /// A NATS reply is the HTTP body: the deduction, or the error body with
    /// its `status`.
    fn record_nats(
        &mut self,
        idx: usize,
        key: String,
        scheduled: Instant,
        sent: Result<async_nats::Message, async_nats::RequestError>,
    ) {
        let latency = micros(scheduled.elapsed());
        let msg = match sent {
            Ok(m) => m,
            Err(e) => {
                // No responder: nobody received it, so nothing to settle.
                let kind = match e.kind() {
                    async_nats::RequestErrorKind::TimedOut => "timeout",
                    async_nats::RequestErrorKind::NoResponders => "no_responders",
                    _ => "transport",
                };
                bump(&mut self.errors, kind);
                if kind != "no_responders" {
                    self.in_doubt.push((idx, key));
                }
                return;
            }
        };
        let body: Value = match serde_json::from_slice(&msg.payload) {
            Ok(v) => v,
            Err(_) => {
                bump(&mut self.errors, "bad_body");
                self.in_doubt.push((idx, key));
                return;
            }
        };
        if let Some(status) = body.get("status").and_then(Value::as_u64) {
            bump(&mut self.errors, status.to_string());
            if status >= 500 {
                self.in_doubt.push((idx, key));
            }
            return;
        }
        match serde_json::from_value::<Deducted>(body) {
            Ok(d) => {
                self.ok += 1;
                self.hist.saturating_record(latency);
                self.deducted[idx].fetch_add(d.credits, Ordering::Relaxed);
                self.max_position = self.max_position.max(d.position.unwrap_or(0));
                if d.credits != COST {
                    bump(&mut self.errors, "unexpected_cost");
                }
            }
            Err(_) => {
                bump(&mut self.errors, "bad_body");
                self.in_doubt.push((idx, key));
            }
        }
    }

    async fn record(
        &mut self,
        idx: usize,
        key: String,
        scheduled: Instant,
        sent: reqwest::Result<reqwest::Response>,
    ) {
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                bump(
                    &mut self.errors,
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "transport"
                    },
                );
                self.in_doubt.push((idx, key));
                return;
            }
        };
        let status = resp.status();
        let replayed = resp.headers().contains_key("idempotent-replayed");
        let body = resp.bytes().await;
        let latency = micros(scheduled.elapsed());
        match body {
            Err(_) => {
                bump(&mut self.errors, "transport");
                self.in_doubt.push((idx, key));
            }
            Ok(bytes) if status == StatusCode::CREATED => {
                match serde_json::from_slice::<Deducted>(&bytes) {
                    Ok(d) => {
                        self.ok += 1;
                        self.hist.saturating_record(latency);
                        self.deducted[idx].fetch_add(d.credits, Ordering::Relaxed);
                        self.max_position = self.max_position.max(d.position.unwrap_or(0));
                        if replayed {
                            bump(&mut self.errors, "unexpected_replay");
                        }
                        if d.credits != COST {
                            bump(&mut self.errors, "unexpected_cost");
                        }
                    }
                    Err(_) => {
                        bump(&mut self.errors, "bad_body");
                        self.in_doubt.push((idx, key));
                    }
                }
            }
            Ok(_) => {
                bump(&mut self.errors, status.as_u16().to_string());
                // A 5xx may hide a committed deduction; 4xx (including 429,
                // the command gave up on contention) commit nothing.
                if status.is_server_error() {
                    self.in_doubt.push((idx, key));
                }
            }
        }
    }

    fn merge(&mut self, other: WorkerOut) {
        let _ = self.hist.add(&other.hist);
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.max_position = self.max_position.max(other.max_position);
        self.in_doubt.extend(other.in_doubt);
    }
}

/// Samples `/ready`'s projector lag (events, ms) every 100 ms until `end`.
async fn sample_lag(client: reqwest::Client, ready: String, end: Instant) -> Vec<(u64, u64)> {
    let mut samples = Vec::new();
    while Instant::now() < end {
        if let Ok(r) = client.get(&ready).send().await {
            if let Ok(body) = r.json::<Value>().await {
                let events = body["projector"]["lag"].as_u64().unwrap_or(0);
                let ms = body["projector"]["lag_ms"].as_u64().unwrap_or(0);
                samples.push((events, ms));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    samples
}

/// Percentiles of the lag samples.
fn projector_lag(samples: &[(u64, u64)], catch_up: Duration) -> crate::report::ProjectorLag {
    let pct = |mut v: Vec<u64>, p: usize| -> u64 {
        if v.is_empty() {
            return 0;
        }
        v.sort_unstable();
        v[((v.len() - 1) * p) / 100]
    };
    let events: Vec<u64> = samples.iter().map(|s| s.0).collect();
    let ms: Vec<u64> = samples.iter().map(|s| s.1).collect();
    crate::report::ProjectorLag {
        samples: samples.len() as u64,
        lag_events_p50: pct(events.clone(), 50),
        lag_events_p99: pct(events.clone(), 99),
        lag_events_max: events.iter().copied().max().unwrap_or(0),
        lag_ms_p50: pct(ms.clone(), 50),
        lag_ms_p99: pct(ms.clone(), 99),
        lag_ms_max: ms.iter().copied().max().unwrap_or(0),
        catch_up_ms: u64::try_from(catch_up.as_millis()).unwrap_or(u64::MAX),
    }
}
