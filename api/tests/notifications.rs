//! Notifications over real sockets (issue 17), on PostgreSQL and SQLite:
//! a local webhook receiver (signatures verified with the endpoint's
//! secret, a 500 retried with the same event id, the delivery log, a
//! manual redelivery) and a local SMTP sink (every message kind once, the
//! invoice PDF attached), and `.eml` files when no SMTP is configured.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use base64::Engine as _;
use common::{key, Api, Backend, Server};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

// ---------------------------------------------------------------------------
// A webhook receiver.

#[derive(Debug, Clone)]
struct Received {
    headers: HeaderMap,
    body: String,
}

#[derive(Clone, Default)]
struct Receiver {
    seen: Arc<Mutex<Vec<Received>>>,
    /// Answer 500 to this many requests first.
    fail_first: Arc<AtomicU32>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: String) -> StatusCode {
    r.seen.lock().unwrap().push(Received { headers, body });
    let failing = r
        .fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    if failing {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

async fn start_receiver() -> (Receiver, String) {
    let receiver = Receiver::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(receiver.clone());
    let base = common::serve_local(app).await;
    (receiver, format!("{base}/hook"))
}

impl Receiver {
    fn seen(&self) -> Vec<Received> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.seen();
            if seen.len() >= n {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "the receiver got {} of {n} requests: {seen:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("a {name} header: {r:?}"))
}

/// Checks `Ledger-Signature` as a receiver would: `t` and `v1`, HMAC-SHA256
/// of `{t}.{body}` keyed with the secret.
fn verify(r: &Received, secret: &str) {
    let sig = header(r, "ledger-signature");
    let parts: BTreeMap<&str, &str> = sig.split(',').filter_map(|p| p.split_once('=')).collect();
    let t = parts["t"];
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{}", r.body).as_bytes());
    assert_eq!(
        parts["v1"],
        hex::encode(mac.finalize().into_bytes()),
        "{sig}"
    );
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "a fresh timestamp: {t}");
}

async fn webhook_server(backend: Backend) -> Server {
    Server::start_with(backend, &["--notify-retry-base-ms", "200"]).await
}

async fn webhooks_are_signed_retried_after_a_failure_logged_and_redelivered(api: Arc<Api>) {
    let api = &*api;
    let (receiver, url) = start_receiver().await;
    receiver.fail_first.store(1, Ordering::SeqCst);
    let account = api.open_account().await;
    let other = api.open_account().await;

    // Only staff manage endpoints; bad URLs are refused.
    let path = "/v1/admin/webhook-endpoints";
    api.post(path, &api.owner(&account), None, json!({ "url": url }))
        .await
        .expect_error(403, "forbidden");
    for bad in [
        "ftp://example.com/hook",
        "http://169.254.169.254/latest",
        "http://metadata.google.internal/x",
        "not a url",
    ] {
        let r = api
            .post(path, &api.developer(), None, json!({ "url": bad }))
            .await;
        assert_eq!(
            r.expect_error(422, "invalid_request")["field"],
            "url",
            "{bad}"
        );
    }
    let created = api
        .post(
            path,
            &api.developer(),
            None,
            json!({ "url": url, "events": ["CreditsGranted"], "account_id": account }),
        )
        .await;
    let body = created.expect(201).clone();
    let endpoint = body["id"].as_str().unwrap().to_owned();
    let secret = body["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    // The secret is shown once.
    let listed = api.get(path, &api.developer()).await;
    let items = listed.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert!(items[0].get("secret").is_none(), "{}", items[0]);

    // A grant on the account: delivered after one 500, twice in all, with
    // the same event id; the other account's grant and the deduction are
    // not asked for.
    let granted = api.grant(&account, 25).await.position();
    api.grant(&other, 25).await.expect(201);
    let seen = receiver.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let seen_after = receiver.seen();
    assert_eq!(
        seen_after.len(),
        2,
        "nothing more after a 200: {seen_after:?}"
    );
    let first: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(first["event_type"], "CreditsGranted");
    assert_eq!(first["aggregate_id"], account);
    assert_eq!(first["position"], granted);
    assert_eq!(first["payload"]["CreditsGranted"]["credits"], 25);
    assert_eq!(seen[0].body, seen[1].body);
    assert_eq!(
        header(&seen[0], "ledger-event-id"),
        header(&seen[1], "ledger-event-id")
    );
    assert_eq!(header(&seen[0], "ledger-event-type"), "CreditsGranted");
    for r in &seen {
        verify(r, &secret);
    }

    // The delivery log says so; a redelivery sends it once more.
    let log = api
        .get(&format!("{path}/{endpoint}/deliveries"), &api.developer())
        .await;
    let items = log.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{items:?}");
    let d = &items[0];
    assert_eq!(
        (&d["status"], &d["attempts"], &d["last_status"]),
        (&json!("delivered"), &json!(2), &json!(200)),
        "{d}"
    );
    assert_eq!(d["event_id"], header(&seen[0], "ledger-event-id"));
    let delivery = d["id"].as_str().unwrap();
    api.post_empty(
        &format!("{path}/{endpoint}/deliveries/{delivery}/redeliver"),
        &api.developer(),
        None,
    )
    .await
    .expect(202);
    let again = receiver.wait_for(3).await;
    assert_eq!(
        header(&again[2], "ledger-event-id"),
        header(&seen[0], "ledger-event-id")
    );
    verify(&again[2], &secret);

    // Deleting the endpoint: it is gone, its log answers 404.
    api.send(
        reqwest::Method::DELETE,
        &format!("{path}/{endpoint}"),
        Some(&api.developer()),
        None,
        None,
    )
    .await
    .expect(200);
    api.get(&format!("{path}/{endpoint}"), &api.developer())
        .await
        .expect_error(404, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_on_postgres() {
    let server = webhook_server(Backend::Postgres).await;
    let api = server.api.clone();
    server
        .run_and_stop(webhooks_are_signed_retried_after_a_failure_logged_and_redelivered(api))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_on_sqlite() {
    let server = webhook_server(Backend::Sqlite).await;
    let api = server.api.clone();
    server
        .run_and_stop(webhooks_are_signed_retried_after_a_failure_logged_and_redelivered(api))
        .await;
}

// ---------------------------------------------------------------------------
// An SMTP sink: enough of RFC 5321 for a client that sends mail.

#[derive(Clone, Default)]
struct Sink {
    messages: Arc<Mutex<Vec<String>>>,
}

async fn smtp_session(stream: tokio::net::TcpStream, sink: Sink) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 sink ESMTP\r\n").await?;
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let verb = line.trim_end().to_ascii_uppercase();
        if verb.starts_with("DATA") {
            write.write_all(b"354 go on\r\n").await?;
            let mut data = String::new();
            loop {
                line.clear();
                if lines.read_line(&mut line).await? == 0 {
                    return Ok(());
                }
                if line == ".\r\n" || line == ".\n" {
                    break;
                }
                data.push_str(line.strip_prefix('.').unwrap_or(&line));
            }
            sink.messages.lock().unwrap().push(data);
            write.write_all(b"250 queued\r\n").await?;
        } else if verb.starts_with("QUIT") {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else if verb.starts_with("EHLO") || verb.starts_with("HELO") {
            write.write_all(b"250 sink\r\n").await?;
        } else {
            write.write_all(b"250 ok\r\n").await?;
        }
    }
}

async fn start_sink() -> (Sink, SocketAddr) {
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = sink.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let s = s.clone();
            tokio::spawn(async move {
                let _ = smtp_session(stream, s).await;
            });
        }
    });
    (sink, addr)
}

/// A header of a raw message (unfolded).
fn mail_header(message: &str, name: &str) -> String {
    let head = message.split("\r\n\r\n").next().unwrap_or("");
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .lines()
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// The decoded subject (`=?utf-8?b?…?=` words joined).
fn subject(message: &str) -> String {
    let raw = mail_header(message, "Subject");
    raw.split_whitespace()
        .map(|w| {
            let lower = w.to_ascii_lowercase();
            if lower.starts_with("=?utf-8?b?") && w.ends_with("?=") {
                let b64 = &w[10..w.len() - 2];
                String::from_utf8(
                    base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap(),
                )
                .unwrap()
            } else {
                format!("{w} ")
            }
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The bytes of the `application/pdf` part, base64-decoded.
fn pdf_attachment(message: &str) -> Option<Vec<u8>> {
    let at = message.find("Content-Type: application/pdf")?;
    let rest = &message[at..];
    let body_start = rest.find("\r\n\r\n")? + 4;
    let body: String = rest[body_start..]
        .lines()
        .take_while(|l| !l.starts_with("--"))
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .ok()
}

async fn wait_messages(sink: &Sink, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = sink.messages.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "the sink got {} of {n} messages: {:?}",
            got.len(),
            got.iter().map(|m| subject(m)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The owner buys the `pro` package by bank transfer; the payment's id.
async fn buy_pro(api: &Api, account: &str) -> String {
    let bought = api
        .post(
            "/v1/billing/credits/purchase",
            &api.owner(account),
            Some(&key()),
            json!({ "package": "pro", "method": "bank_transfer" }),
        )
        .await;
    bought.expect(201)["payment"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Drives a purchase approved by staff, a budget threshold and a team
/// invitation; answers the account and its billing email.
async fn billing_story(api: &Api) -> (String, String) {
    let account = api.open_account_on(json!({ "plan": "starter" })).await;
    let p = api.head().await;
    let email = api
        .get(
            &format!("/v1/accounts/{account}?min_position={p}"),
            &api.developer(),
        )
        .await
        .expect(200)["billing_email"]
        .as_str()
        .unwrap()
        .to_owned();
    // No low-balance alerts in this story.
    api.patch(
        &format!("/v1/accounts/{account}"),
        &api.developer(),
        json!({ "low_balance_threshold": 0 }),
    )
    .await
    .expect(200);
    // An admin of the team gets the messages about credits too.
    api.put(
        &format!("/v1/admin/accounts/{account}/limits"),
        &api.developer(),
        json!({ "max_users": null }),
    )
    .await
    .expect(200);
    api.post(
        &format!("/v1/accounts/{account}/team"),
        &api.developer(),
        Some(&key()),
        json!({ "user_id": "carol", "email": "carol@team.example", "role": "admin" }),
    )
    .await
    .expect(201);
    let payment = buy_pro(api, &account).await;
    api.post_empty(
        &format!("/v1/admin/payments/{payment}/approve"),
        &api.developer(),
        None,
    )
    .await
    .expect(200);
    api.put(
        &format!("/v1/accounts/{account}/budget"),
        &api.owner(&account),
        json!({ "monthly_credits": 10, "thresholds_percent": [100] }),
    )
    .await
    .expect(200);
    api.deduct(&account, json!({ "operation": "clustering" }))
        .await
        .expect(201);
    api.post(
        &format!("/v1/accounts/{account}/team/invite"),
        &api.owner(&account),
        Some(&key()),
        json!({ "email": "bob@invited.example", "role": "editor" }),
    )
    .await
    .expect(201);
    (account, email)
}

async fn every_message_reaches_the_smtp_sink_once(backend: Backend) {
    let (sink, addr) = start_sink().await;
    let smtp = format!("smtp://{addr}");
    let server = Server::start_with(
        backend,
        &[
            "--smtp-url",
            &smtp,
            "--mail-from",
            "Ledger <ledger@ledger.example>",
            "--staff-email",
            "finance@ledger.example",
        ],
    )
    .await;
    let api = server.api.clone();
    server
        .run_and_stop(async move {
            let (_, email) = billing_story(&api).await;
            // invoice issued, payment awaiting approval, payment received,
            // budget threshold (to the billing email and the admin), team
            // invitation.
            let messages = wait_messages(&sink, 6).await;
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let messages_after = sink.messages.lock().unwrap().clone();
            assert_eq!(messages_after.len(), 6, "each message once");
            let all_by_subject = |prefix: &str| -> Vec<String> {
                messages
                    .iter()
                    .filter(|m| subject(m).starts_with(prefix))
                    .cloned()
                    .collect()
            };
            let by_subject = |prefix: &str| {
                let found = all_by_subject(prefix);
                assert_eq!(
                    found.len(),
                    1,
                    "one {prefix:?} message: {:?}",
                    messages.iter().map(|m| subject(m)).collect::<Vec<_>>()
                );
                found[0].clone()
            };
            let invoice = by_subject("Invoice INV-");
            assert!(mail_header(&invoice, "To").contains(&email), "{invoice}");
            assert!(mail_header(&invoice, "From").contains("ledger@ledger.example"));
            assert!(invoice.contains("text/plain") && invoice.contains("text/html"));
            let pdf = pdf_attachment(&invoice).expect("the invoice PDF is attached");
            assert!(pdf.starts_with(b"%PDF-"), "a PDF");
            lopdf::Document::load_mem(&pdf).expect("the attachment is a valid PDF");
            let staff = by_subject("Payment awaiting approval");
            assert!(mail_header(&staff, "To").contains("finance@ledger.example"));
            let paid = by_subject("Payment received");
            assert!(mail_header(&paid, "To").contains(&email));
            let budget: Vec<String> = all_by_subject("Budget 100 % reached")
                .iter()
                .map(|m| mail_header(m, "To"))
                .collect();
            assert_eq!(budget.len(), 2, "{budget:?}");
            assert!(budget.iter().any(|to| to.contains(&email)), "{budget:?}");
            assert!(
                budget.iter().any(|to| to.contains("carol@team.example")),
                "{budget:?}"
            );
            let invite = by_subject("You are invited to join");
            assert!(mail_header(&invite, "To").contains("bob@invited.example"));
            assert!(invite.contains("inv_"), "the invitation carries its token");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_reaches_the_smtp_sink_once_on_postgres() {
    every_message_reaches_the_smtp_sink_once(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_message_reaches_the_smtp_sink_once_on_sqlite() {
    every_message_reaches_the_smtp_sink_once(Backend::Sqlite).await;
}

/// A low balance, a rejected payment and an automatic top-up: their
/// messages reach the sink once each.
async fn credit_messages_reach_the_smtp_sink_once(backend: Backend) {
    let (sink, addr) = start_sink().await;
    let smtp = format!("smtp://{addr}");
    let server = Server::start_with(backend, &["--smtp-url", &smtp]).await;
    let api = server.api.clone();
    server
        .run_and_stop(async move {
            let account = api.open_account_on(json!({ "plan": "starter" })).await;
            api.patch(
                &format!("/v1/accounts/{account}"),
                &api.developer(),
                json!({ "low_balance_threshold": 500 }),
            )
            .await
            .expect(200);
            api.grant(&account, 600).await.expect(201);
            // 600 → 490: below 500 once.
            for _ in 0..11 {
                api.deduct(&account, json!({ "operation": "clustering" }))
                    .await
                    .expect(201);
            }
            // A purchase whose transfer staff reject.
            let payment = buy_pro(&api, &account).await;
            api.post(
                &format!("/v1/admin/payments/{payment}/reject"),
                &api.developer(),
                None,
                json!({ "reason": "no transfer arrived" }),
            )
            .await
            .expect(200);
            // An automatic top-up crossing 400: a second invoice and the
            // top-up's own message.
            api.put(
                &format!("/v1/accounts/{account}/auto-top-up"),
                &api.owner(&account),
                json!({ "threshold": 400, "package": "pro", "method": "bank_transfer" }),
            )
            .await
            .expect(200);
            for _ in 0..10 {
                api.deduct(&account, json!({ "operation": "clustering" }))
                    .await
                    .expect(201);
            }
            let messages = wait_messages(&sink, 5).await;
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let subjects: Vec<String> = sink
                .messages
                .lock()
                .unwrap()
                .iter()
                .map(|m| subject(m))
                .collect();
            assert_eq!(subjects.len(), 5, "{subjects:?}");
            let count = |prefix: &str| subjects.iter().filter(|s| s.starts_with(prefix)).count();
            assert_eq!(count("Low credit balance"), 1, "{subjects:?}");
            assert_eq!(count("Invoice INV-"), 2, "{subjects:?}");
            assert_eq!(count("Payment failed"), 1, "{subjects:?}");
            assert_eq!(
                count("Auto top-up: the pro package was bought"),
                1,
                "{subjects:?}"
            );
            let failed = messages
                .iter()
                .find(|m| subject(m).starts_with("Payment failed"))
                .unwrap();
            let unfolded = failed.replace("=\r\n", "");
            assert!(unfolded.contains("no transfer arrived"), "{failed}");
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credit_messages_reach_the_smtp_sink_once_on_postgres() {
    credit_messages_reach_the_smtp_sink_once(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn credit_messages_reach_the_smtp_sink_once_on_sqlite() {
    credit_messages_reach_the_smtp_sink_once(Backend::Sqlite).await;
}

async fn without_smtp_messages_are_eml_files_in_the_data_dir(backend: Backend) {
    let server = Server::start(backend).await;
    let api = server.api.clone();
    let mail = server.data_dir().join("mail");
    server
        .run_and_stop(async move {
            billing_story(&api).await;
            // No staff email configured: five messages (the budget's twice).
            let deadline = Instant::now() + Duration::from_secs(30);
            let files = loop {
                let files: Vec<_> = std::fs::read_dir(&mail)
                    .map(|d| {
                        d.filter_map(Result::ok)
                            .map(|e| e.path())
                            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
                            .collect()
                    })
                    .unwrap_or_default();
                if files.len() >= 5 {
                    break files;
                }
                assert!(Instant::now() < deadline, "{} .eml files", files.len());
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            assert_eq!(files.len(), 5, "{files:?}");
            let invoice = files
                .iter()
                .find(|p| p.to_string_lossy().ends_with("invoice_issued.eml"))
                .expect("the invoice's message");
            let text = std::fs::read_to_string(invoice).unwrap();
            assert!(subject(&text).starts_with("Invoice INV-"), "{text}");
            assert!(pdf_attachment(&text).is_some_and(|p| p.starts_with(b"%PDF-")));
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_smtp_messages_are_eml_files_on_postgres() {
    without_smtp_messages_are_eml_files_in_the_data_dir(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_smtp_messages_are_eml_files_on_sqlite() {
    without_smtp_messages_are_eml_files_in_the_data_dir(Backend::Sqlite).await;
}
