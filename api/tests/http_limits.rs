//! What one caller or connection may take of the server (SECURITY.md):
//! per-token rate limits for interactive roles (429 `rate_limited` with
//! `Retry-After`), none by default for developer and system_bot tokens,
//! none on `/health` and `/ready`; and a client that never finishes its
//! headers is disconnected after the header-read timeout.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn rate_limits_apply_per_token_to_interactive_roles_only(backend: Backend) {
    let server = Server::start_with(
        backend,
        &["--rate-limit-per-second", "1", "--rate-limit-burst", "5"],
    )
    .await;
    let api = server.api.clone();
    let (account, position) = api.funded_account(100).await;
    let path = format!("/v1/accounts/{account}/limits");
    // Read-your-writes is what `?min_position=` is for (SPEC): the first
    // read waits for the projector, the burst below then reads freely.
    api.get(&format!("{path}?min_position={position}"), &api.developer())
        .await
        .expect(200);

    // An owner's token: its burst, then 429 with Retry-After.
    let owner = api.owner(&account);
    let mut limited = None;
    for _ in 0..20 {
        let r = api.get(&path, &owner).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        r.expect(200);
    }
    let limited = limited.expect("the owner's token was limited within 20 requests");
    limited.expect_error(429, "rate_limited");
    let retry: u64 = limited
        .header("retry-after")
        .expect("a Retry-After header")
        .parse()
        .expect("whole seconds");
    assert!((1..=5).contains(&retry), "Retry-After {retry}");

    // Another interactive token has its own bucket.
    api.get(&path, &api.viewer(&account)).await.expect(200);

    // Developer and system_bot tokens are not limited by default.
    for _ in 0..30 {
        api.get(&path, &api.developer()).await.expect(200);
        api.get(
            &format!("/v1/accounts/{account}/balance"),
            &api.bot(Some(&account)),
        )
        .await
        .expect(200);
    }
    // Health checks never are.
    for _ in 0..30 {
        api.get("/health", "").await.expect(200);
        api.get("/ready", "").await.expect(200);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_apply_per_token_to_interactive_roles_only_on_postgres() {
    rate_limits_apply_per_token_to_interactive_roles_only(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_apply_per_token_to_interactive_roles_only_on_sqlite() {
    rate_limits_apply_per_token_to_interactive_roles_only(Backend::Sqlite).await;
}

/// A client that sends half a request line and stops is disconnected once
/// the header-read timeout passes, instead of holding a connection forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_half_sent_header_is_disconnected_after_the_header_read_timeout() {
    let server = Server::start_with(Backend::Sqlite, &["--header-read-timeout-secs", "1"]).await;
    let addr = server
        .api
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("a connection");
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: ledger\r\n")
        .await
        .expect("half a request");
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    let waited = started.elapsed();
    assert!(read.is_ok(), "still connected after {waited:?}");
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(5),
        "disconnected after {waited:?}"
    );
    // A complete request on a new connection is served as usual.
    server.api.get("/health", "").await.expect(200);
    server.stop().await;
}
