//! NATS (SPEC §4) against a real nats-server with JetStream and the real
//! stores: request/reply commands and their errors, the durable intake
//! (redelivery, outcomes, dead letters), the outbox (every event once, in
//! log order, across a kill of the real binary), low-balance alerts, and a
//! NATS outage during which HTTP keeps serving.
//!
//! Every test starts its own `nats-server` (`NATS_SERVER` or
//! `/usr/sbin/nats-server`) on a free port with its own storage folder, so
//! that tests in parallel never take each other's commands (the subjects
//! and the queue group are fixed by the SPEC) and a test may stop and
//! restart its server. A missing nats-server fails the tests.

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::auth::Role;
use async_nats::jetstream::{self, consumer};
use async_nats::HeaderMap;
use common::{key, kill, wait_health, Api, Backend, Running, Server};
use futures::StreamExt;
use serde_json::{json, Value};

// ---------------------------------------------------------------- harness

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A nats-server owned by one test.
struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl NatsServer {
    async fn start() -> Self {
        let mut server = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("a storage folder"),
        };
        server.spawn().await;
        server
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn spawn(&mut self) {
        let binary =
            std::env::var("NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into());
        let child = Command::new(&binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("nats-server must be installed ({binary}): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("nats-server did not listen on {} within 20 s", self.port);
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port and storage (JetStream keeps its
    /// streams).
    async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    async fn client(&self) -> async_nats::Client {
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(self.url())
            .await
            .expect("a NATS client")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `body` on a fresh in-process server using a fresh nats-server.
async fn with_nats<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Arc<Api>, NatsServer, Arc<TestDbRef>) -> Fut,
    Fut: std::future::Future<Output = NatsServer> + Send + 'static,
{
    if let Ok(filter) = std::env::var("LEDGER_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .try_init();
    }
    let nats = NatsServer::start().await;
    let url = nats.url();
    let server = Server::start_with(backend, &["--nats-url", &url]).await;
    let db = Arc::new(TestDbRef {
        store: server.db().store.clone(),
    });
    wait_nats_ok(&server.api).await;
    let outcome = tokio::spawn(body(server.api.clone(), nats, db)).await;
    server.stop().await;
    match outcome {
        Ok(nats) => drop(nats),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the test body was cancelled: {e}"),
    }
}

/// The store of the server under test, for checks against the log.
struct TestDbRef {
    store: store::Store,
}

macro_rules! on_both {
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                super::with_nats($crate::common::Backend::Postgres, super::$body).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                super::with_nats($crate::common::Backend::Sqlite, super::$body).await;
            }
        }
    };
}

/// A command over request/reply: the reply's JSON and headers.
async fn request(
    client: &async_nats::Client,
    kind: &str,
    token: Option<&str>,
    payload: Vec<u8>,
) -> (Value, HeaderMap) {
    let mut headers = HeaderMap::new();
    if let Some(t) = token {
        headers.insert("Authorization", format!("Bearer {t}").as_str());
    }
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        client.request_with_headers(format!("ledger.commands.{kind}"), headers, payload.into()),
    )
    .await
    .expect("a reply within 30 s")
    .expect("a reply");
    let body = serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|_| panic!("a JSON reply: {:?}", reply.payload));
    (body, reply.headers.unwrap_or_default())
}

async fn command(client: &async_nats::Client, kind: &str, token: &str, payload: Value) -> Value {
    request(client, kind, Some(token), payload.to_string().into_bytes())
        .await
        .0
}

#[track_caller]
fn expect_error(reply: &Value, status: u16, code: &str) {
    assert_eq!(reply["status"], status, "status of {reply}");
    assert_eq!(reply["error"]["code"], code, "code of {reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(reply["error"]["details"].is_object(), "details of {reply}");
}

/// Waits until `/ready` says the server's NATS client is connected.
async fn wait_nats_ok(api: &Api) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api
            .send(reqwest::Method::GET, "/ready", None, None, None)
            .await;
        if r.body["nats"] == "ok" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "NATS never connected: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the outbox has published `position` (checked with `/ready`).
async fn wait_outbox(api: &Api, position: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = api
            .send(reqwest::Method::GET, "/ready", None, None, None)
            .await;
        if r.body["outbox"]["position"].as_i64().unwrap_or(0) >= position {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox did not reach {position}: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every message on `subject` in LEDGER_EVENTS / LEDGER_ALERTS, read by an
/// ephemeral consumer until `expected` arrived and then a quiet second
/// (so that a duplicate would show).
async fn read_stream(
    client: &async_nats::Client,
    stream: &str,
    subject: &str,
    expected: usize,
) -> Vec<async_nats::jetstream::Message> {
    let js = jetstream::new(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let stream = loop {
        match js.get_stream(stream).await {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "stream {stream}: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: subject.to_owned(),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            ..Default::default()
        })
        .await
        .expect("an ephemeral consumer");
    let mut seen = Vec::new();
    let mut quiet_since: Option<Instant> = None;
    loop {
        let mut batch = consumer
            .fetch()
            .max_messages(500)
            .expires(Duration::from_millis(300))
            .messages()
            .await
            .expect("a fetch");
        let before = seen.len();
        while let Some(m) = batch.next().await {
            seen.push(m.expect("a message"));
        }
        if seen.len() >= expected {
            if seen.len() == before {
                let since = *quiet_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_secs(1) {
                    return seen;
                }
            } else {
                quiet_since = None;
            }
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {expected} messages on {subject}",
            seen.len()
        );
    }
}

/// The account's events in the log: (position, event id).
async fn logged(store: &store::Store, account: &str) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let page = store.read_after(from, 1_000).await.unwrap();
        let Some(last) = page.last().map(|e| e.position) else {
            return out;
        };
        for e in page {
            if e.aggregate_id == account {
                out.push((
                    e.position,
                    e.metadata["event_id"].as_str().unwrap().to_owned(),
                ));
            }
        }
        from = last;
    }
}

/// Asserts the messages are exactly the account's events, once each, in
/// log order, each with its event id as `Nats-Msg-Id`.
#[track_caller]
fn assert_exactly_the_log(messages: &[async_nats::jetstream::Message], log: &[(i64, String)]) {
    let got: Vec<(i64, String)> = messages
        .iter()
        .map(|m| {
            let body: Value = serde_json::from_slice(&m.payload).unwrap();
            let id = m
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_else(|| panic!("a Nats-Msg-Id in {:?}", m.headers));
            assert_eq!(body["metadata"]["event_id"], id.as_str());
            assert!(
                m.subject
                    .as_str()
                    .ends_with(body["event_type"].as_str().unwrap()),
                "subject {} names the event type",
                m.subject
            );
            (body["position"].as_i64().unwrap(), id)
        })
        .collect();
    assert_eq!(got.len(), log.len(), "one message per event, no duplicate");
    assert_eq!(got, log, "every event, in log order");
}

// ---------------------------------------------------------------- request/reply

async fn request_reply_commands_succeed_and_replay(
    api: Arc<Api>,
    nats: NatsServer,
    _db: Arc<TestDbRef>,
) -> NatsServer {
    let client = nats.client().await;
    let (account, _) = api.funded_account(1_000).await;
    let bot = api.bot(Some(&account));

    let k = key();
    let deduct = json!({ "account_id": account, "idempotency_key": k, "operation": "clustering" });
    let (first, headers) = request(
        &client,
        "deduct",
        Some(&bot),
        deduct.to_string().into_bytes(),
    )
    .await;
    assert_eq!(first["credits"], 10, "{first}");
    assert_eq!(first["balance_after"], 990);
    assert!(
        first.get("status").is_none(),
        "success bodies are the HTTP body as is"
    );
    assert_eq!(headers.get("Ledger-Status").unwrap().as_str(), "201");
    assert!(headers.get("Idempotent-Replayed").is_none());
    // A retry with the same key replays the first answer, byte for byte.
    let (again, headers) = request(
        &client,
        "deduct",
        Some(&bot),
        deduct.to_string().into_bytes(),
    )
    .await;
    assert_eq!(again, first);
    assert_eq!(headers.get("Idempotent-Replayed").unwrap().as_str(), "true");

    let hold = command(
        &client,
        "hold",
        &bot,
        json!({ "account_id": account, "idempotency_key": key(), "credits": 100 }),
    )
    .await;
    assert_eq!(hold["credits"], 100, "{hold}");
    assert_eq!(hold["available_after"], 890);
    let hold_id = hold["id"].as_str().unwrap();
    let capture = command(
        &client,
        "capture",
        &bot,
        json!({ "account_id": account, "idempotency_key": key(), "hold_id": hold_id, "credits": 60 }),
    )
    .await;
    assert_eq!(capture["credits"], 60, "{capture}");
    assert_eq!(capture["released"], 40);
    assert_eq!(capture["balance_after"], 930);

    let other = command(
        &client,
        "hold",
        &bot,
        json!({ "account_id": account, "idempotency_key": key(), "operation": "linking", "units": 2 }),
    )
    .await;
    assert_eq!(other["credits"], 16, "{other}");
    let release = command(
        &client,
        "release",
        &bot,
        json!({ "account_id": account, "idempotency_key": key(), "hold_id": other["id"] }),
    )
    .await;
    assert_eq!(release["credits"], 16, "{release}");
    assert_eq!(release["available_after"], 930);

    // HTTP sees the same ledger.
    let position = release["position"]
        .as_i64()
        .unwrap_or(0)
        .max(capture["position"].as_i64().unwrap_or(0));
    let balance = api.balance(&account, position).await;
    assert_eq!(balance["balance"], 930, "{balance}");
    nats
}
on_both!(request_reply_commands_succeed_and_replay);

async fn request_reply_errors_match_http(
    api: Arc<Api>,
    nats: NatsServer,
    _db: Arc<TestDbRef>,
) -> NatsServer {
    let client = nats.client().await;
    let (account, _) = api.funded_account(50).await;
    let (other_account, _) = api.funded_account(50).await;
    let bot = api.bot(Some(&account));
    let body =
        |k: &str| json!({ "account_id": account, "idempotency_key": k, "operation": "clustering" });

    // 401: no token, a bad token.
    let (r, _) = request(
        &client,
        "deduct",
        None,
        body(&key()).to_string().into_bytes(),
    )
    .await;
    expect_error(&r, 401, "unauthorized");
    let (r, _) = request(
        &client,
        "deduct",
        Some("not-a-jwt"),
        body(&key()).to_string().into_bytes(),
    )
    .await;
    expect_error(&r, 401, "unauthorized");
    // 403: a role that may not deduct.
    let r = command(&client, "deduct", &api.viewer(&account), body(&key())).await;
    expect_error(&r, 403, "forbidden");
    // Another tenant's account is 404, as over HTTP.
    let r = command(
        &client,
        "deduct",
        &api.bot(Some(&other_account)),
        body(&key()),
    )
    .await;
    expect_error(&r, 404, "not_found");
    // 402 with the numbers.
    let r = command(
        &client,
        "hold",
        &bot,
        json!({ "account_id": account, "idempotency_key": key(), "credits": 500 }),
    )
    .await;
    expect_error(&r, 402, "insufficient_credits");
    assert_eq!(r["error"]["details"]["available"], 50);
    assert_eq!(r["error"]["details"]["required"], 500);
    // 404: an unknown hold.
    let r = command(
        &client,
        "capture",
        &bot,
        json!({ "account_id": account, "idempotency_key": key(), "hold_id": uuid::Uuid::now_v7(), "credits": 1 }),
    )
    .await;
    expect_error(&r, 404, "not_found");
    // 409: a key reused with another body.
    let k = key();
    let ok = command(&client, "deduct", &bot, body(&k)).await;
    assert_eq!(ok["credits"], 10, "{ok}");
    let r = command(
        &client,
        "deduct",
        &bot,
        json!({ "account_id": account, "idempotency_key": k, "operation": "linking" }),
    )
    .await;
    expect_error(&r, 409, "idempotency_key_reused");
    // 422: unknown field, missing operation, missing key, missing or bad
    // account, unknown operation.
    let r = command(
        &client,
        "deduct",
        &bot,
        json!({ "account_id": account, "idempotency_key": key(), "operation": "clustering", "bogus": 1 }),
    )
    .await;
    expect_error(&r, 422, "invalid_request");
    assert_eq!(r["error"]["details"]["field"], "bogus");
    let r = command(
        &client,
        "deduct",
        &bot,
        json!({ "account_id": account, "idempotency_key": key() }),
    )
    .await;
    expect_error(&r, 422, "invalid_request");
    assert_eq!(r["error"]["details"]["field"], "operation");
    let r = command(
        &client,
        "deduct",
        &bot,
        json!({ "account_id": account, "operation": "clustering" }),
    )
    .await;
    expect_error(&r, 422, "invalid_request");
    assert_eq!(r["error"]["details"]["field"], "idempotency_key");
    let r = command(
        &client,
        "deduct",
        &bot,
        json!({ "idempotency_key": key(), "operation": "clustering" }),
    )
    .await;
    expect_error(&r, 422, "invalid_request");
    assert_eq!(r["error"]["details"]["field"], "account_id");
    let r = command(
        &client,
        "deduct",
        &bot,
        json!({ "account_id": "../admin", "idempotency_key": key(), "operation": "clustering" }),
    )
    .await;
    expect_error(&r, 422, "invalid_request");
    let r = command(
        &client,
        "capture",
        &bot,
        json!({ "account_id": account, "idempotency_key": key() }),
    )
    .await;
    expect_error(&r, 422, "invalid_request");
    assert_eq!(r["error"]["details"]["field"], "hold_id");
    let r = command(
        &client,
        "deduct",
        &bot,
        json!({ "account_id": account, "idempotency_key": key(), "operation": "no_such_op" }),
    )
    .await;
    expect_error(&r, 422, "unknown_operation");
    // 400: not JSON, not an object.
    let (r, _) = request(&client, "deduct", Some(&bot), b"not json {".to_vec()).await;
    expect_error(&r, 400, "invalid_request");
    let (r, _) = request(&client, "hold", Some(&bot), b"[1,2]".to_vec()).await;
    expect_error(&r, 400, "invalid_request");
    // An unknown command still gets an answer.
    let (r, _) = request(
        &client,
        "refund",
        Some(&bot),
        body(&key()).to_string().into_bytes(),
    )
    .await;
    expect_error(&r, 404, "not_found");
    // Nothing of the refusals was applied: one deduction of 10.
    let balance = api
        .balance(&account, ok["position"].as_i64().unwrap())
        .await;
    assert_eq!(balance["balance"], 40, "{balance}");
    let _ = Role::SystemBot;
    nats
}
on_both!(request_reply_errors_match_http);

// ---------------------------------------------------------------- intake

async fn wait_stream(js: &jetstream::Context, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while js.get_stream(name).await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the server did not create {name}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn publish_intake(js: &jetstream::Context, kind: &str, token: &str, payload: &Value) {
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    js.publish_with_headers(
        format!("ledger.intake.{kind}"),
        headers,
        payload.to_string().into(),
    )
    .await
    .expect("published")
    .await
    .expect("stored by JetStream");
}

async fn next_message(sub: &mut async_nats::Subscriber, what: &str) -> async_nats::Message {
    tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .unwrap_or_else(|_| panic!("no {what} within 30 s"))
        .expect("the subscription is open")
}

fn header<'a>(m: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    m.headers.as_ref()?.get(name).map(|v| v.as_str())
}

async fn intake_applies_a_command_once_and_publishes_its_outcome(
    api: Arc<Api>,
    nats: NatsServer,
    _db: Arc<TestDbRef>,
) -> NatsServer {
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    wait_stream(&js, "LEDGER_INTAKE").await;
    let (account, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&account));
    let mut outcomes = client
        .subscribe(format!("ledger.outcomes.{account}"))
        .await
        .unwrap();
    client.flush().await.unwrap();

    // The same command published twice (a worker retrying) applies once.
    let deduct =
        json!({ "account_id": account, "idempotency_key": key(), "operation": "clustering" });
    publish_intake(&js, "deduct", &bot, &deduct).await;
    publish_intake(&js, "deduct", &bot, &deduct).await;
    let first = next_message(&mut outcomes, "an outcome").await;
    let second = next_message(&mut outcomes, "a second outcome").await;
    assert_eq!(header(&first, "Ledger-Status"), Some("201"));
    assert_eq!(header(&second, "Ledger-Status"), Some("201"));
    assert_eq!(
        first.payload, second.payload,
        "a replay is the first answer"
    );
    let replays = [&first, &second]
        .iter()
        .filter(|m| header(m, "Idempotent-Replayed") == Some("true"))
        .count();
    assert_eq!(replays, 1, "exactly one of the two is a replay");
    let body: Value = serde_json::from_slice(&first.payload).unwrap();
    assert_eq!(body["balance_after"], 90, "{body}");

    // A refusal is an outcome too, and final.
    let too_much = json!({ "account_id": account, "idempotency_key": key(), "credits": 5_000 });
    publish_intake(&js, "hold", &bot, &too_much).await;
    let refused = next_message(&mut outcomes, "the refusal").await;
    let refused: Value = serde_json::from_slice(&refused.payload).unwrap();
    expect_error(&refused, 402, "insufficient_credits");
    let balance = api
        .balance(&account, body["position"].as_i64().unwrap())
        .await;
    assert_eq!(balance["balance"], 90, "{balance}");
    assert_eq!(balance["held"], 0, "{balance}");

    // Another tenant's token naming this account: its 404 is not put in
    // this account's outcomes (a spoof, under a key of its choosing) but
    // kept as a dead letter.
    let mut letters = client
        .subscribe("ledger.deadletter.intake.deduct")
        .await
        .unwrap();
    client.flush().await.unwrap();
    let (other, _) = api.funded_account(10).await;
    let spoof =
        json!({ "account_id": account, "idempotency_key": key(), "operation": "clustering" });
    publish_intake(&js, "deduct", &api.bot(Some(&other)), &spoof).await;
    let letter = next_message(&mut letters, "the spoof's dead letter").await;
    let letter: Value = serde_json::from_slice(&letter.payload).unwrap();
    assert_eq!(letter["last_error"]["status"], 404, "{letter}");
    assert!(
        tokio::time::timeout(Duration::from_millis(500), outcomes.next())
            .await
            .is_err(),
        "nothing reached the account's outcomes"
    );
    nats
}
on_both!(intake_applies_a_command_once_and_publishes_its_outcome);

/// Counts of intake commands answered `status`, from `/metrics`.
async fn intake_count(api: &Api, status: &str) -> u64 {
    let r = api
        .send(reqwest::Method::GET, "/metrics", None, None, None)
        .await;
    let needle = format!(
        "ledger_nats_commands_total{{kind=\"deduct\",status=\"{status}\",transport=\"intake\"}} "
    );
    r.text
        .lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map_or(0, |v| v.trim().parse().unwrap_or(0))
}

async fn intake_retries_a_failing_command_then_dead_letters_it(
    api: Arc<Api>,
    nats: NatsServer,
    db: Arc<TestDbRef>,
) -> NatsServer {
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    wait_stream(&js, "LEDGER_INTAKE").await;
    wait_stream(&js, "LEDGER_DEADLETTER").await;
    let (account, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&account));
    let mut outcomes = client
        .subscribe(format!("ledger.outcomes.{account}"))
        .await
        .unwrap();
    let mut letters = client
        .subscribe("ledger.deadletter.intake.deduct")
        .await
        .unwrap();
    client.flush().await.unwrap();

    // The store loses its event log: every command fails with a 5xx.
    db.store
        .execute("ALTER TABLE events RENAME TO events_away", &[])
        .await
        .unwrap();
    let poison =
        json!({ "account_id": account, "idempotency_key": key(), "operation": "clustering" });
    publish_intake(&js, "deduct", &bot, &poison).await;
    let letter = next_message(&mut letters, "a dead letter").await;
    let letter: Value = serde_json::from_slice(&letter.payload).unwrap();
    // Dead-lettered at the fifth delivery; one more if storing the dead
    // letter itself failed once (it is then offered again), never past the
    // consumer's own cap of 8.
    let deliveries = letter["deliveries"].as_i64().unwrap();
    assert!(
        (api::nats::intake::INTAKE_DELIVERIES_MAX..=8).contains(&deliveries),
        "{letter}"
    );
    assert_eq!(letter["subject"], "ledger.intake.deduct");
    assert_eq!(letter["last_error"]["status"], 503, "{letter}");
    let original: Value = serde_json::from_str(letter["payload"].as_str().unwrap()).unwrap();
    assert_eq!(original, poison);
    assert!(
        !letter.to_string().contains(&bot),
        "the token is never dead-lettered"
    );

    // A command that fails while the store is away is offered again (nak)
    // and applies once when it returns.
    let failed_before = intake_count(&api, "503").await;
    let later = json!({ "account_id": account, "idempotency_key": key(), "operation": "linking" });
    publish_intake(&js, "deduct", &bot, &later).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while intake_count(&api, "503").await <= failed_before {
        assert!(Instant::now() < deadline, "the command never failed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    db.store
        .execute("ALTER TABLE events_away RENAME TO events", &[])
        .await
        .unwrap();
    let outcome = next_message(&mut outcomes, "the outcome after redelivery").await;
    assert_eq!(header(&outcome, "Ledger-Status"), Some("201"));
    let body: Value = serde_json::from_slice(&outcome.payload).unwrap();
    assert_eq!(body["credits"], 8, "{body}");
    let balance = api
        .balance(&account, body["position"].as_i64().unwrap())
        .await;
    assert_eq!(
        balance["balance"], 92,
        "the dead-lettered command never applied, the redelivered one once: {balance}"
    );
    nats
}
on_both!(intake_retries_a_failing_command_then_dead_letters_it);

// ---------------------------------------------------------------- outbox

async fn events_reach_jetstream_once_in_log_order_with_low_balance_alerts(
    api: Arc<Api>,
    nats: NatsServer,
    db: Arc<TestDbRef>,
) -> NatsServer {
    let client = nats.client().await;
    let (account, _) = api.funded_account(100).await;
    let r = api
        .patch(
            &format!("/v1/accounts/{account}"),
            &api.developer(),
            json!({ "low_balance_threshold": 50 }),
        )
        .await;
    r.expect(200);
    let mut last = 0;
    // 100 → 40 in steps of 10: one crossing (50 → 40).
    for _ in 0..6 {
        last = api
            .deduct(&account, json!({ "operation": "clustering" }))
            .await
            .position();
    }
    // Back above, then down again: a second crossing; 40 → 30 is none.
    api.grant(&account, 20).await;
    for _ in 0..3 {
        last = api
            .deduct(&account, json!({ "operation": "clustering" }))
            .await
            .position();
    }
    wait_outbox(&api, last).await;
    let log = logged(&db.store, &account).await;
    let messages = read_stream(
        &client,
        "LEDGER_EVENTS",
        &format!("ledger.events.{account}.>"),
        log.len(),
    )
    .await;
    assert_exactly_the_log(&messages, &log);
    // The account's team stream shares its id: its events are published
    // like all others (the owner became the first member at the open).
    assert!(
        messages
            .iter()
            .any(|m| m.subject.as_str() == format!("ledger.events.{account}.MemberAdded")),
        "the team's first member is published"
    );
    let alerts = read_stream(
        &client,
        "LEDGER_ALERTS",
        &format!("ledger.alerts.{account}.low_balance"),
        2,
    )
    .await;
    let alerts: Vec<Value> = alerts
        .iter()
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
        .collect();
    assert_eq!(alerts.len(), 2, "one alert per crossing: {alerts:?}");
    for a in &alerts {
        assert_eq!(a["threshold"], 50);
        assert_eq!(a["available_before"], 50, "{a}");
        assert_eq!(a["available_after"], 40, "{a}");
    }
    nats
}
on_both!(events_reach_jetstream_once_in_log_order_with_low_balance_alerts);

async fn a_budget_threshold_reaches_nats_once_as_an_alert(
    api: Arc<Api>,
    nats: NatsServer,
    _db: Arc<TestDbRef>,
) -> NatsServer {
    let client = nats.client().await;
    let (account, _) = api.funded_account(1_000).await;
    api.put(
        &format!("/v1/accounts/{account}/budget"),
        &api.owner(&account),
        json!({ "monthly_credits": 100, "thresholds_percent": [50, 100] }),
    )
    .await
    .expect(200);
    let mut last = 0;
    // 10 a deduction: 50 % at the fifth, nothing more until 100 %.
    for _ in 0..7 {
        last = api
            .deduct(&account, json!({ "operation": "clustering" }))
            .await
            .position();
    }
    wait_outbox(&api, last).await;
    let alerts = read_stream(
        &client,
        "LEDGER_ALERTS",
        &format!("ledger.alerts.{account}.budget"),
        1,
    )
    .await;
    assert_eq!(alerts.len(), 1);
    let alert: Value = serde_json::from_slice(&alerts[0].payload).unwrap();
    assert_eq!(alert["percent"], 50, "{alert}");
    assert_eq!(alert["used"], 50, "{alert}");
    assert_eq!(alert["monthly_credits"], 100, "{alert}");
    assert_eq!(alert["event_type"], "BudgetThresholdReached");
    nats
}
on_both!(a_budget_threshold_reaches_nats_once_as_an_alert);

async fn http_keeps_serving_through_a_nats_outage_and_the_outbox_catches_up(
    api: Arc<Api>,
    mut nats: NatsServer,
    db: Arc<TestDbRef>,
) -> NatsServer {
    let (account, position) = api.funded_account(10_000).await;
    wait_outbox(&api, position).await;
    let ready = api
        .send(reqwest::Method::GET, "/ready", None, None, None)
        .await;
    assert_eq!(ready.expect(200)["nats"], "ok", "{}", ready.text);

    nats.stop();
    let mut last = 0;
    for _ in 0..20 {
        last = api
            .deduct(&account, json!({ "operation": "clustering" }))
            .await
            .position();
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = api
            .send(reqwest::Method::GET, "/ready", None, None, None)
            .await;
        ready.expect(200);
        // Degraded, and the outbox says why it is behind (its publish
        // acknowledgements time out while the server is away).
        if ready.body["nats"] == "degraded" && ready.body["outbox"]["error"].is_string() {
            assert!(
                ready.body["outbox"]["lag"].as_i64().unwrap() > 0,
                "{}",
                ready.text
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready never said degraded with the outbox's error: {}",
            ready.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = api
        .send(reqwest::Method::GET, "/metrics", None, None, None)
        .await;
    assert!(
        metrics.text.contains("ledger_nats_up 0"),
        "{}",
        metrics.text
    );
    assert!(metrics.text.contains("ledger_outbox_lag_events"));

    nats.restart().await;
    for _ in 0..5 {
        last = api
            .deduct(&account, json!({ "operation": "clustering" }))
            .await
            .position();
    }
    wait_outbox(&api, last).await;
    let ready = api
        .send(reqwest::Method::GET, "/ready", None, None, None)
        .await;
    assert_eq!(ready.expect(200)["nats"], "ok", "{}", ready.text);
    assert!(
        ready.body["outbox"].get("error").is_none(),
        "a caught-up outbox reports no error: {}",
        ready.text
    );
    let client = nats.client().await;
    let log = logged(&db.store, &account).await;
    let messages = read_stream(
        &client,
        "LEDGER_EVENTS",
        &format!("ledger.events.{account}.>"),
        log.len(),
    )
    .await;
    assert_exactly_the_log(&messages, &log);
    nats
}
on_both!(http_keeps_serving_through_a_nats_outage_and_the_outbox_catches_up);

// ------------------------------------------------- the real binary, killed

fn spawn_server(
    database_url: &str,
    port: u16,
    data_dir: &std::path::Path,
    nats: Option<&str>,
) -> Running {
    let envs: Vec<(&str, &str)> = nats
        .map(|url| ("LEDGER_NATS_URL", url))
        .into_iter()
        .collect();
    common::spawn_ledger_server(database_url, port, data_dir, &envs)
}

async fn every_event_once_in_order_across_a_kill(backend: Backend) {
    api::install_crypto_provider();
    let nats = NatsServer::start().await;
    let db = common::fresh_db(backend).await;
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        backend,
        keys: api::auth::JwtKeys::from_secret(common::JWT_SECRET.as_bytes()),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    };

    // Events written with NATS off: the outbox will have a backlog.
    let server = spawn_server(&db.url, port, data.path(), None);
    wait_health(&api.base).await;
    let (account, _) = api.funded_account(1_000_000).await;
    for _ in 0..30 {
        let batch: Vec<_> = (0..20)
            .map(|_| api.deduct(&account, json!({ "operation": "clustering" })))
            .collect();
        for r in futures::future::join_all(batch).await {
            r.expect(201);
        }
    }
    kill(server);

    // NATS on: killed as soon as the account's first events are published.
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    let mut server = Some(spawn_server(&db.url, port, data.path(), Some(&nats.url())));
    let deadline = Instant::now() + Duration::from_secs(60);
    let published_at_kill = loop {
        if let Ok(mut stream) = js.get_stream("LEDGER_EVENTS").await {
            if let Ok(info) = stream.info().await {
                if info.state.messages > 2 {
                    if let Some(s) = server.take() {
                        kill(s);
                    }
                    break info.state.messages;
                }
            }
        }
        assert!(Instant::now() < deadline, "the outbox never published");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    // As if it had died between JetStream's acknowledgements and the
    // checkpoint: the next run publishes up to 100 events a second time.
    db.store
        .execute(
            "UPDATE outbox_checkpoints SET position = \
             CASE WHEN position > 100 THEN position - 100 ELSE 0 END WHERE name = $1",
            &["events".into()],
        )
        .await
        .unwrap();

    let server = spawn_server(&db.url, port, data.path(), Some(&nats.url()));
    wait_health(&api.base).await;
    let mut last = 0;
    for _ in 0..10 {
        last = api
            .deduct(&account, json!({ "operation": "clustering" }))
            .await
            .position();
    }
    wait_outbox(&api, last).await;
    let log = logged(&db.store, &account).await;
    eprintln!(
        "{} events of the account; {published_at_kill} messages in LEDGER_EVENTS when the server was killed",
        log.len()
    );
    let messages = read_stream(
        &client,
        "LEDGER_EVENTS",
        &format!("ledger.events.{account}.>"),
        log.len(),
    )
    .await;
    assert_exactly_the_log(&messages, &log);
    kill(server);
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_reaches_jetstream_once_in_order_across_a_kill_on_postgres() {
    every_event_once_in_order_across_a_kill(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_reaches_jetstream_once_in_order_across_a_kill_on_sqlite() {
    every_event_once_in_order_across_a_kill(Backend::Sqlite).await;
}
