//! Batch deductions over NATS (issue 19, `/work/notes/batch-contract.md`),
//! against a real nats-server with JetStream and the real stores:
//! `ledger.commands.deduct_batch` answers what
//! `POST /v1/accounts/{id}/deductions/batch` answers (and its errors with
//! their `"status"`), and `ledger.intake.deduct_batch` applies each item
//! once, publishing each item's outcome on `ledger.outcomes.{account_id}`.
//!
//! As in `nats.rs`, every test starts its own `nats-server` (`NATS_SERVER`
//! or `/usr/sbin/nats-server`) on a free port: the subjects and the queue
//! group are fixed, so servers of tests running in parallel on one NATS
//! would take each other's commands. A missing nats-server fails the tests.

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::HeaderMap;
use common::{key, Api, Backend, Server};
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
    _dir: tempfile::TempDir,
}

impl NatsServer {
    async fn start() -> Self {
        let port = free_port();
        let dir = tempfile::tempdir().expect("a storage folder");
        let binary =
            std::env::var("NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into());
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("nats-server must be installed ({binary}): {e}"));
        let server = Self {
            child: Some(child),
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return server;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("nats-server did not listen on {port} within 20 s");
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
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
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `body` on a fresh in-process server using a fresh nats-server.
async fn with_nats<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Arc<Api>, NatsServer) -> Fut,
    Fut: std::future::Future<Output = NatsServer> + Send + 'static,
{
    let nats = NatsServer::start().await;
    let url = nats.url();
    let server = Server::start_with(backend, &["--nats-url", &url]).await;
    wait_nats_ok(&server.api).await;
    let outcome = tokio::spawn(body(server.api.clone(), nats)).await;
    server.stop().await;
    match outcome {
        Ok(nats) => drop(nats),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => panic!("the test body was cancelled: {e}"),
    }
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

/// `ledger.commands.deduct_batch` with `token` (if any): the reply's JSON.
async fn request(client: &async_nats::Client, token: Option<&str>, payload: Vec<u8>) -> Value {
    let mut headers = HeaderMap::new();
    if let Some(t) = token {
        headers.insert("Authorization", format!("Bearer {t}").as_str());
    }
    let reply = tokio::time::timeout(
        Duration::from_secs(60),
        client.request_with_headers("ledger.commands.deduct_batch", headers, payload.into()),
    )
    .await
    .expect("a reply within 60 s")
    .expect("a reply");
    serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|_| panic!("a JSON reply: {:?}", reply.payload))
}

async fn deduct_batch(client: &async_nats::Client, token: &str, payload: &Value) -> Value {
    request(client, Some(token), payload.to_string().into_bytes()).await
}

/// An error reply: the HTTP error body plus its `"status"`; returns the
/// details.
#[track_caller]
fn expect_error<'a>(reply: &'a Value, status: u16, code: &str) -> &'a Value {
    assert_eq!(reply["status"], status, "status of {reply}");
    assert_eq!(reply["error"]["code"], code, "code of {reply}");
    assert!(
        reply["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{reply}"
    );
    assert!(reply["error"]["details"].is_object(), "details of {reply}");
    assert!(reply.get("items").is_none(), "{reply}");
    &reply["error"]["details"]
}

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

async fn publish_intake(js: &jetstream::Context, token: &str, payload: &Value) {
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    js.publish_with_headers(
        "ledger.intake.deduct_batch",
        headers,
        payload.to_string().into(),
    )
    .await
    .expect("published")
    .await
    .expect("stored by JetStream (LEDGER_INTAKE takes ledger.intake.deduct_batch)");
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

// ---------------------------------------------------------------- helpers

fn item(k: &str, operation: &str, units: u64) -> Value {
    json!({ "idempotency_key": k, "operation": operation, "units": units })
}

/// The items of a batch answer, after checking one result per item sent,
/// in order, and no `"status"` at the top (a success is the HTTP body as
/// is).
#[track_caller]
fn results(reply: &Value, sent: usize) -> Vec<Value> {
    assert!(
        reply.get("status").is_none() && reply.get("error").is_none(),
        "a batch that was read answers 200's body: {reply}"
    );
    let items = reply["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a batch answers its items: {reply}"))
        .clone();
    assert_eq!(items.len(), sent, "{reply}");
    for (i, it) in items.iter().enumerate() {
        assert_eq!(it["index"], i, "{it}");
    }
    items
}

#[track_caller]
fn assert_counts(reply: &Value, applied: u64, replayed: u64, failed: u64) {
    assert_eq!(
        (
            reply["applied"].as_u64(),
            reply["replayed"].as_u64(),
            reply["failed"].as_u64()
        ),
        (Some(applied), Some(replayed), Some(failed)),
        "{reply}"
    );
}

/// A batch answer without what differs between two accounts doing the
/// same: ids, times, positions, the account, and error messages.
fn shape(reply: &Value) -> Value {
    let mut out = reply.clone();
    let o = out.as_object_mut().unwrap();
    o.remove("position");
    for it in o
        .get_mut("items")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        let it = it.as_object_mut().unwrap();
        for k in ["id", "recorded_at", "position", "account_id"] {
            it.remove(k);
        }
        if let Some(e) = it.get_mut("error").and_then(Value::as_object_mut) {
            e.remove("message");
        }
    }
    out
}

/// The single deduction's body within a success item.
fn deduction_body(it: &Value) -> Value {
    let mut body = it.clone();
    let o = body.as_object_mut().unwrap();
    for k in [
        "index",
        "status",
        "idempotency_key",
        "idempotent_replayed",
        "account_id",
    ] {
        o.remove(k);
    }
    body
}

fn position(reply: &Value) -> i64 {
    reply["position"]
        .as_i64()
        .unwrap_or_else(|| panic!("a position: {reply}"))
}

async fn deduction_count(api: &Api, account: &str, p: i64) -> usize {
    api.items(
        &format!("/v1/accounts/{account}/transactions"),
        p,
        "&type=deduction&limit=500",
    )
    .await
    .len()
}

// ---------------------------------------------------------------- request/reply

async fn request_reply_batch_answers_what_http_answers(
    api: Arc<Api>,
    nats: NatsServer,
) -> NatsServer {
    let client = nats.client().await;
    // Two accounts alike: one batched over HTTP, one over NATS, with the
    // same keys (keys are per account).
    let (over_http, _) = api.funded_account(25).await;
    let (over_nats, _) = api.funded_account(25).await;
    let k: Vec<String> = (0..6).map(|_| key()).collect();
    let items = json!([
        item(&k[0], "clustering", 1),
        item(&k[1], "clustering", 1),
        item(&k[2], "clustering", 1),
        item(&k[3], "image_prompt_extraction", 1),
        item(&k[4], "no_such_op", 1),
        item(&k[5], "clustering", 0),
        { "operation": "clustering" },
    ]);
    let http_path = format!("/v1/accounts/{over_http}/deductions/batch");
    let http_bot = api.bot(Some(&over_http));
    let nats_bot = api.bot(Some(&over_nats));
    let nats_payload = json!({ "account_id": over_nats, "items": items });

    let http = api
        .post(&http_path, &http_bot, None, json!({ "items": items }))
        .await;
    let http = http.expect(200).clone();
    let first = deduct_batch(&client, &nats_bot, &nats_payload).await;
    let it = results(&first, 7);
    assert_counts(&first, 3, 0, 4);
    let statuses: Vec<i64> = it.iter().map(|i| i["status"].as_i64().unwrap()).collect();
    assert_eq!(statuses, vec![201, 201, 402, 201, 422, 422, 422], "{first}");
    let after: Vec<Option<i64>> = it.iter().map(|i| i["balance_after"].as_i64()).collect();
    assert_eq!(
        after,
        vec![Some(15), Some(5), None, Some(3), None, None, None],
        "{first}"
    );
    for i in [0, 1, 3] {
        assert_eq!(it[i]["idempotent_replayed"], false, "{}", it[i]);
        assert_eq!(it[i]["account_id"], over_nats.as_str(), "{}", it[i]);
    }
    assert_eq!(it[2]["error"]["code"], "insufficient_credits");
    assert_eq!(it[2]["error"]["details"]["required"], 10);
    assert_eq!(it[2]["error"]["details"]["available"], 5);
    assert_eq!(it[4]["error"]["code"], "unknown_operation");
    assert_eq!(it[5]["error"]["details"]["field"], "units");
    assert_eq!(it[6]["error"]["details"]["field"], "idempotency_key");
    assert_eq!(
        position(&first),
        it[3]["position"].as_i64().unwrap(),
        "{first}"
    );
    assert_eq!(
        shape(&first),
        shape(&http),
        "NATS and HTTP answer the same batch alike"
    );
    for (n, h) in it.iter().zip(http["items"].as_array().unwrap()) {
        if let Some(a) = n.get("account_id") {
            assert_eq!(a, over_nats.as_str());
            assert_eq!(h["account_id"], over_http.as_str());
        }
    }

    // A retry replays every applied item, over either transport alike.
    let again = deduct_batch(&client, &nats_bot, &nats_payload).await;
    let ag = results(&again, 7);
    assert_counts(&again, 0, 3, 4);
    for i in [0, 1, 3] {
        assert_eq!(ag[i]["status"], 201, "{}", ag[i]);
        assert_eq!(ag[i]["idempotent_replayed"], true, "{}", ag[i]);
        assert_eq!(deduction_body(&ag[i]), deduction_body(&it[i]));
    }
    assert_eq!(ag[2]["status"], 402, "{}", ag[2]);
    assert_eq!(ag[2]["error"]["details"]["available"], 3, "{}", ag[2]);
    let http_again = api
        .post(&http_path, &http_bot, None, json!({ "items": items }))
        .await;
    assert_eq!(shape(&again), shape(http_again.expect(200)));

    // The key of a NATS batch item, alone over HTTP: a replay.
    let single = api
        .post(
            &format!("/v1/accounts/{over_nats}/deductions"),
            &nats_bot,
            Some(&k[0]),
            json!({ "operation": "clustering", "units": 1 }),
        )
        .await;
    assert_eq!(single.expect(201), &deduction_body(&it[0]));
    assert_eq!(single.header("idempotent-replayed"), Some("true"));

    let p = position(&first);
    assert_eq!(api.balance(&over_nats, p).await["balance"], 3);
    assert_eq!(deduction_count(&api, &over_nats, p).await, 3);

    // The cross-account form: no `account_id` at the top, one per item.
    let (c, _) = api.funded_account(50).await;
    let (d, _) = api.funded_account(50).await;
    let cross = deduct_batch(
        &client,
        &api.developer(),
        &json!({ "items": [
            { "account_id": c, "idempotency_key": key(), "operation": "clustering" },
            { "account_id": d, "idempotency_key": key(), "operation": "linking" },
        ]}),
    )
    .await;
    let cr = results(&cross, 2);
    assert_counts(&cross, 2, 0, 0);
    assert_eq!(
        (
            cr[0]["account_id"].as_str(),
            cr[0]["balance_after"].as_i64()
        ),
        (Some(c.as_str()), Some(40)),
        "{cross}"
    );
    assert_eq!(
        (
            cr[1]["account_id"].as_str(),
            cr[1]["balance_after"].as_i64()
        ),
        (Some(d.as_str()), Some(42)),
        "{cross}"
    );
    // A bot scoped to c: d's item is 404, c's applies.
    let scoped = deduct_batch(
        &client,
        &api.bot(Some(&c)),
        &json!({ "items": [
            { "account_id": d, "idempotency_key": key(), "operation": "clustering" },
            { "account_id": c, "idempotency_key": key(), "operation": "clustering" },
        ]}),
    )
    .await;
    let sc = results(&scoped, 2);
    assert_counts(&scoped, 1, 0, 1);
    assert_eq!(sc[0]["status"], 404, "{scoped}");
    assert_eq!(sc[0]["error"]["code"], "not_found", "{scoped}");
    assert_eq!(sc[1]["balance_after"], 30, "{scoped}");
    let p = position(&scoped);
    assert_eq!(api.balance(&d, p).await["balance"], 42);
    nats
}
on_both!(request_reply_batch_answers_what_http_answers);

async fn request_reply_batch_errors_carry_their_status(
    api: Arc<Api>,
    nats: NatsServer,
) -> NatsServer {
    let client = nats.client().await;
    let (account, _) = api.funded_account(50).await;
    let (other, _) = api.funded_account(50).await;
    let bot = api.bot(Some(&account));
    let payload = || json!({ "account_id": account, "items": [ item(&key(), "clustering", 1) ] });

    let r = request(&client, None, payload().to_string().into_bytes()).await;
    expect_error(&r, 401, "unauthorized");
    let r = request(
        &client,
        Some("not-a-jwt"),
        payload().to_string().into_bytes(),
    )
    .await;
    expect_error(&r, 401, "unauthorized");
    let r = deduct_batch(&client, &api.viewer(&account), &payload()).await;
    expect_error(&r, 403, "forbidden");
    let r = deduct_batch(&client, &api.owner(&account), &payload()).await;
    expect_error(&r, 403, "forbidden");
    let r = deduct_batch(&client, &api.bot(Some(&other)), &payload()).await;
    expect_error(&r, 404, "not_found");
    let r = deduct_batch(
        &client,
        &bot,
        &json!({ "account_id": account, "items": [] }),
    )
    .await;
    assert_eq!(expect_error(&r, 422, "invalid_request")["field"], "items");
    let r = request(&client, Some(&bot), b"not json {".to_vec()).await;
    expect_error(&r, 400, "invalid_request");

    // An atomic batch that does not fit: the failing item's 402, with its
    // index, and nothing applied.
    let (k0, k1) = (key(), key());
    let r = deduct_batch(
        &client,
        &bot,
        &json!({ "account_id": account, "atomic": true, "items": [
            item(&k0, "clustering", 4),
            item(&k1, "clustering", 2),
        ]}),
    )
    .await;
    let d = expect_error(&r, 402, "insufficient_credits");
    assert_eq!(d["index"], 1, "{r}");
    assert_eq!(d["idempotency_key"], k1.as_str(), "{r}");
    assert_eq!(d["required"], 20, "{r}");
    assert_eq!(d["available"], 10, "{r}");

    let p = api.head().await;
    assert_eq!(api.balance(&account, p).await["balance"], 50);
    assert_eq!(api.balance(&other, p).await["balance"], 50);
    assert_eq!(deduction_count(&api, &account, p).await, 0);

    // The same keys, corrected, apply.
    let ok = deduct_batch(
        &client,
        &bot,
        &json!({ "account_id": account, "atomic": true, "items": [
            item(&k0, "clustering", 4),
            item(&k1, "clustering", 1),
        ]}),
    )
    .await;
    let it = results(&ok, 2);
    assert_counts(&ok, 2, 0, 0);
    assert_eq!(it[1]["balance_after"], 0, "{ok}");
    nats
}
on_both!(request_reply_batch_errors_carry_their_status);

// ---------------------------------------------------------------- intake

async fn intake_batch_applies_each_item_once_and_publishes_its_outcome(
    api: Arc<Api>,
    nats: NatsServer,
) -> NatsServer {
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    wait_stream(&js, "LEDGER_INTAKE").await;
    let (account, _) = api.funded_account(25).await;
    let bot = api.bot(Some(&account));
    let mut outcomes = client
        .subscribe(format!("ledger.outcomes.{account}"))
        .await
        .unwrap();
    client.flush().await.unwrap();

    // The same batch published twice (a worker retrying).
    let k: Vec<String> = (0..4).map(|_| key()).collect();
    let payload = json!({ "account_id": account, "items": [
        item(&k[0], "clustering", 1),
        item(&k[1], "clustering", 1),
        item(&k[2], "clustering", 1),
        item(&k[3], "image_prompt_extraction", 1),
    ]});
    publish_intake(&js, &bot, &payload).await;
    publish_intake(&js, &bot, &payload).await;

    // (status, replayed, body) of each outcome, by the item's key.
    let mut by_key: BTreeMap<String, Vec<(String, bool, Value)>> = BTreeMap::new();
    for n in 0..8 {
        let m = next_message(&mut outcomes, &format!("outcome {}", n + 1)).await;
        let item_key = header(&m, "Ledger-Idempotency-Key")
            .unwrap_or_else(|| panic!("an outcome names its item's key: {:?}", m.headers))
            .to_owned();
        let status = header(&m, "Ledger-Status")
            .unwrap_or_else(|| panic!("an outcome has its status: {:?}", m.headers))
            .to_owned();
        let replayed = header(&m, "Idempotent-Replayed") == Some("true");
        let body: Value = serde_json::from_slice(&m.payload).unwrap();
        by_key
            .entry(item_key)
            .or_default()
            .push((status, replayed, body));
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(1_000), outcomes.next())
            .await
            .is_err(),
        "one outcome per item and delivery, no more"
    );
    assert_eq!(by_key.len(), 4, "{by_key:?}");

    let mut last = 0;
    for (i, credits, balance_after) in [(0, 10, 15), (1, 10, 5), (3, 2, 3)] {
        let seen = &by_key[&k[i]];
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(seen.iter().all(|(s, _, _)| s == "201"), "{seen:?}");
        assert_eq!(
            seen.iter().filter(|(_, r, _)| *r).count(),
            1,
            "item {i} applied once, replayed once: {seen:?}"
        );
        for (_, _, body) in seen {
            assert_eq!(body["credits"], credits, "{body}");
            assert_eq!(body["balance_after"], balance_after, "{body}");
            assert_eq!(
                body["id"], seen[0].2["id"],
                "the replay is the first outcome"
            );
            last = last.max(body["position"].as_i64().unwrap());
        }
    }
    let refused = &by_key[&k[2]];
    assert_eq!(refused.len(), 2, "{refused:?}");
    for (status, replayed, body) in refused {
        assert_eq!(status, "402", "{body}");
        assert!(!replayed);
        assert_eq!(body["status"], 402, "{body}");
        assert_eq!(body["error"]["code"], "insufficient_credits", "{body}");
        assert_eq!(body["error"]["details"]["required"], 10, "{body}");
    }

    // Applied exactly once: 25 - 10 - 10 - 2.
    let balance = api.balance(&account, last).await;
    assert_eq!(balance["balance"], 3, "{balance}");
    assert_eq!(deduction_count(&api, &account, last).await, 3);

    // Both messages acknowledged, so the work queue is empty.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut stream = js.get_stream("LEDGER_INTAKE").await.unwrap();
        let messages = stream.info().await.unwrap().state.messages;
        if messages == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{messages} intake messages never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nats
}
on_both!(intake_batch_applies_each_item_once_and_publishes_its_outcome);
