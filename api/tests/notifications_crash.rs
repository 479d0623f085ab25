//! Webhook deliveries across a `kill -9` of the real binary (issue 17), on
//! PostgreSQL and SQLite: a server killed while a delivery is in flight
//! loses no event, and after the restart an event reaches the receiver a
//! second time only if it had reached it before the kill (at least once,
//! the same `Ledger-Event-Id`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::{kill, spawn_ledger_server, wait_health, Api, Backend};
use serde_json::json;

#[derive(Clone, Default)]
struct Receiver {
    /// Event ids in the order they arrived.
    seen: Arc<Mutex<Vec<String>>>,
    /// While set, requests hang (the server is killed meanwhile).
    hang: Arc<AtomicBool>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap) -> StatusCode {
    let id = headers
        .get("ledger-event-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    r.seen.lock().unwrap().push(id);
    if r.hang.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    StatusCode::OK
}

async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    let base = common::serve_local(app).await;
    (receiver, format!("{base}/hook"))
}

async fn no_event_is_lost_or_spuriously_repeated_across_a_kill(backend: Backend) {
    api::install_crypto_provider();
    let db = common::fresh_db(backend).await;
    let data = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        backend,
        keys: api::auth::JwtKeys::from_secret(common::JWT_SECRET.as_bytes()),
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
    };
    let envs = [
        // A hung POST times out after 1 s; its lease ends 5 s later.
        ("LEDGER_WEBHOOK_TIMEOUT_MS", "1000"),
        ("LEDGER_NOTIFY_RETRY_BASE_MS", "200"),
        ("LEDGER_ROSTER_CHECK", "off"),
    ];
    let (receiver, url) = start_receiver().await;
    receiver.hang.store(true, Ordering::SeqCst);

    let server = spawn_ledger_server(&db.url, port, data.path(), &envs);
    wait_health(&api.base).await;
    api.post(
        "/v1/admin/webhook-endpoints",
        &api.developer(),
        None,
        json!({ "url": url, "events": ["CreditsGranted"] }),
    )
    .await
    .expect(201);
    let account = api.open_account().await;
    for _ in 0..20 {
        api.grant(&account, 5).await.expect(201);
    }
    // Killed while deliveries hang in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while receiver.seen.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "no delivery started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    kill(server);
    let before_kill: BTreeSet<String> = receiver.seen.lock().unwrap().iter().cloned().collect();
    receiver.hang.store(false, Ordering::SeqCst);

    let server = spawn_ledger_server(&db.url, port, data.path(), &envs);
    wait_health(&api.base).await;
    // Every grant's event id, from the log.
    let mut granted = BTreeSet::new();
    let mut after = 0;
    loop {
        let batch = db.store.read_after(after, 1_000).await.unwrap();
        let Some(last) = batch.last().map(|e| e.position) else {
            break;
        };
        for e in &batch {
            if e.event_type == "CreditsGranted" && e.aggregate_id == account {
                granted.insert(app::notify::event_id(e));
            }
        }
        after = last;
    }
    assert_eq!(granted.len(), 20);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen: BTreeSet<String> = receiver.seen.lock().unwrap().iter().cloned().collect();
        if granted.is_subset(&seen) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of 20 events delivered after the restart",
            granted.intersection(&seen).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Settled: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for id in receiver.seen.lock().unwrap().iter() {
        *counts.entry(id.clone()).or_default() += 1;
    }
    for (id, n) in &counts {
        assert!(granted.contains(id), "only the grants were asked for: {id}");
        if *n > 1 {
            assert!(
                before_kill.contains(id),
                "{id} arrived {n} times though it had not reached the receiver before the kill"
            );
            assert_eq!(*n, 2, "{id}: once before the kill, once after");
        }
    }
    eprintln!(
        "{} deliveries had started before the kill; {} events arrived twice",
        before_kill.len(),
        counts.values().filter(|n| **n > 1).count()
    );
    kill(server);
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_webhook_event_is_lost_across_a_kill_on_postgres() {
    no_event_is_lost_or_spuriously_repeated_across_a_kill(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_webhook_event_is_lost_across_a_kill_on_sqlite() {
    no_event_is_lost_or_spuriously_repeated_across_a_kill(Backend::Sqlite).await;
}
