//! Test harness of the HTTP API: the real router (`api::prepare` +
//! `api::serve`) on a fresh PostgreSQL database or SQLite file, bound to an
//! ephemeral port and driven over real HTTP with reqwest.
//!
//! [`on_both_backends!`] runs one test body on both stores. PostgreSQL at
//! 127.0.0.1:5432 (or `LEDGER_TEST_POSTGRES_URL`) must be running: without it
//! the PostgreSQL half fails, it never skips.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use api::auth::{Claims, JwtKeys, Role};
use clap::Parser;
use events::AccountId;
use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{json, Value};
use store::testing::TestDb;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A fresh, migrated database of `backend`. PostgreSQL missing is a
/// failure, never a skip.
pub async fn fresh_db(backend: Backend) -> TestDb {
    match backend {
        Backend::Postgres => TestDb::postgres()
            .await
            .expect("PostgreSQL must be running at 127.0.0.1:5432 for the API tests"),
        Backend::Sqlite => TestDb::sqlite().await.expect("a SQLite test database"),
    }
}

/// What `ledger-replay verify` checks (hash chains, and every read model
/// against a fresh fold of the log) finds nothing; returns its report.
pub async fn assert_verify_clean(store: &store::Store) -> replay_tools::verify::VerifyReport {
    let report = replay_tools::verify::verify(store, None)
        .await
        .expect("verify runs");
    assert!(
        report.ok && report.discrepancy_count == 0,
        "verify found discrepancies: {:#?}",
        report.discrepancies
    );
    report
}

/// The HS256 secret the test servers sign with: explicit, 32+ bytes.
pub const JWT_SECRET: &str = "http-api-tests-secret-0123456789-abcdefghijklmnop";

/// Runs `async fn $body(api: &Api)` against a fresh server on PostgreSQL and
/// on SQLite, as `$body::on_postgres` and `$body::on_sqlite`.
#[macro_export]
///
/// `on_both_backends!(shared $body)` passes the `Arc<Api>` itself, for bodies
/// that spawn tasks; `on_both_backends!(store $body)` calls
/// `async fn $body(api: &Api, store: &store::Store)` with the server's own
/// database, for tests that look at what the server stored.
macro_rules! on_both_backends {
    (store $body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                $crate::common::run_with_store(
                    $crate::common::Backend::Postgres,
                    |api, store| async move { super::$body(&api, &store).await },
                )
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                $crate::common::run_with_store(
                    $crate::common::Backend::Sqlite,
                    |api, store| async move { super::$body(&api, &store).await },
                )
                .await;
            }
        }
    };
    (shared $body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                $crate::common::run($crate::common::Backend::Postgres, super::$body).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                $crate::common::run($crate::common::Backend::Sqlite, super::$body).await;
            }
        }
    };
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                $crate::common::run($crate::common::Backend::Postgres, |api| async move {
                    super::$body(&api).await
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                $crate::common::run($crate::common::Backend::Sqlite, |api| async move {
                    super::$body(&api).await
                })
                .await;
            }
        }
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

/// What a test talks to: the server's base URL, its keys and a client.
pub struct Api {
    pub base: String,
    pub backend: Backend,
    pub keys: JwtKeys,
    pub http: reqwest::Client,
}

/// A running server and what it owns; [`Server::stop`] shuts it down and
/// drops the database.
pub struct Server {
    pub api: Arc<Api>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
    db: Option<TestDb>,
    _data_dir: tempfile::TempDir,
}

impl Server {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, &[]).await
    }

    /// A server with extra flags (`--nats-url …`).
    pub async fn start_with(backend: Backend, extra: &[&str]) -> Self {
        api::install_crypto_provider();
        let db = fresh_db(backend).await;
        let data_dir = tempfile::tempdir().expect("a temporary data dir");
        let config = config_with(&db.url, data_dir.path(), extra);
        let prepared = api::prepare(config).await.expect("the server prepares");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            api::serve(prepared, listener, async {
                let _ = rx.await;
            })
            .await
            .expect("the server runs until shut down");
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Self {
            api: Arc::new(Api {
                base: format!("http://{addr}"),
                backend,
                keys: JwtKeys::from_secret(JWT_SECRET.as_bytes()),
                http,
            }),
            shutdown: Some(tx),
            task: Some(task),
            db: Some(db),
            _data_dir: data_dir,
        }
    }

    /// The server's data directory (`mail/` holds its `.eml` files).
    pub fn data_dir(&self) -> &Path {
        self._data_dir.path()
    }

    /// The server's database.
    pub fn db(&self) -> &TestDb {
        self.db.as_ref().expect("the database is held until stop")
    }

    /// Runs `body` on a task of its own, then stops the server and drops
    /// its database whatever became of the body, re-raising its panic
    /// afterwards.
    pub async fn run_and_stop<Fut>(self, body: Fut)
    where
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let outcome = tokio::spawn(body).await;
        self.stop().await;
        if let Err(e) = outcome {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            panic!("the test body was cancelled: {e}");
        }
    }

    /// Shuts the server down (waiting for it), then drops the database.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("the server shuts down cleanly");
        }
        if let Some(db) = self.db.take() {
            db.cleanup().await.expect("drop the test database");
        }
    }
}

/// The server's configuration, parsed from flags exactly as the binary
/// parses them (so new settings take their defaults), with an explicit
/// secret, a temporary data dir and an ephemeral listen address.
pub fn config(database_url: &str, data_dir: &Path) -> api::Config {
    config_with(database_url, data_dir, &[])
}

/// [`config`] with extra flags.
pub fn config_with(database_url: &str, data_dir: &Path, extra: &[&str]) -> api::Config {
    let mut argv = vec![
        "ledger-server",
        "--database-url",
        database_url,
        "--listen",
        "127.0.0.1:0",
        "--log",
        "warn",
        "--log-format",
        "pretty",
        "--jwt-secret",
        JWT_SECRET,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ];
    // The subscription tests move time with run-periods; a test of the
    // refusal starts its server with `--allow-clock-override=false`.
    if !extra
        .iter()
        .any(|a| a.starts_with("--allow-clock-override"))
    {
        argv.push("--allow-clock-override=true");
    }
    // The tests mint tokens with made-up subjects (`test-owner`); the
    // roster check (on by default) is the team tests' subject, and they
    // start their servers with `--roster-check on`.
    if !extra.iter().any(|a| a.starts_with("--roster-check")) {
        argv.push("--roster-check=off");
    }
    argv.extend_from_slice(extra);
    api::config::Cli::try_parse_from(argv)
        .expect("test flags parse")
        .config
}

/// Starts a server on `backend`, runs `body` against it, then stops the
/// server and drops its database even when the body panicked (re-raising
/// the panic afterwards).
pub async fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Arc<Api>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    run_with_store(backend, |api, _store| body(api)).await;
}

/// [`run`] with the server's database as well (a handle on the same store
/// the server writes to).
pub async fn run_with_store<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Arc<Api>, store::Store) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let server = Server::start(backend).await;
    let body = body(server.api.clone(), server.db().store.clone());
    server.run_and_stop(body).await;
}

/// A response, read whole.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    /// The body as JSON, or `Null` when it is not JSON.
    pub body: Value,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts the status and returns the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(
            self.status, status,
            "expected HTTP {status}, got {} with body {}",
            self.status, self.text
        );
        &self.body
    }

    /// Asserts the status, the SPEC's error shape
    /// `{"error":{"code","message","details"}}` and the code; returns the
    /// details.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Value {
        self.expect(status);
        let error = &self.body["error"];
        assert_eq!(error["code"], code, "error code of {}", self.text);
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "an error has a message: {}",
            self.text
        );
        assert!(
            error["details"].is_object(),
            "an error has a details object: {}",
            self.text
        );
        assert_eq!(
            self.body.as_object().map(|o| o.len()),
            Some(1),
            "the error is the only top-level member: {}",
            self.text
        );
        &error["details"]
    }

    /// A write's `position`.
    #[track_caller]
    pub fn position(&self) -> i64 {
        self.body["position"]
            .as_i64()
            .unwrap_or_else(|| panic!("a write response carries its position: {}", self.text))
    }
}

/// A fresh idempotency key.
pub fn key() -> String {
    format!("k-{}", uuid::Uuid::new_v4().simple())
}

/// A slug no other test uses.
pub fn unique_slug() -> String {
    format!("acct-{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// An account id no account has.
pub fn random_account() -> String {
    events::AccountId::new_v7().to_string()
}

/// A UUID no hold, deduction or payment has.
pub fn random_uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The `account_id`s of a list of accounts, in order.
pub fn ids_of(accounts: &[Value]) -> Vec<String> {
    accounts
        .iter()
        .map(|a| a["account_id"].as_str().unwrap().to_owned())
        .collect()
}

impl Api {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A valid token of `role`, scoped to `account` when given.
    pub fn token(&self, role: Role, account: Option<&str>) -> String {
        self.token_as(&format!("test-{role}"), role, account)
    }

    /// A valid token of `role` for the user `sub`, scoped to `account`
    /// when given.
    pub fn token_as(&self, sub: &str, role: Role, account: Option<&str>) -> String {
        let account = account.map(|a| AccountId::parse(a).expect("an account id"));
        let claims = Claims::new(sub, role, account, now_unix(), Duration::from_secs(3600))
            .expect("valid claims");
        self.keys.mint(&claims)
    }

    pub fn developer(&self) -> String {
        self.token(Role::Developer, None)
    }
    pub fn owner(&self, account: &str) -> String {
        self.token(Role::Owner, Some(account))
    }
    pub fn admin(&self, account: &str) -> String {
        self.token(Role::Admin, Some(account))
    }
    pub fn editor(&self, account: &str) -> String {
        self.token(Role::Editor, Some(account))
    }
    pub fn viewer(&self, account: &str) -> String {
        self.token(Role::Viewer, Some(account))
    }
    /// A system_bot token, scoped to `account` when given.
    pub fn bot(&self, account: Option<&str>) -> String {
        self.token(Role::SystemBot, account)
    }

    /// Any request; `body` is sent as is, with `Content-Type: application/json`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        idempotency_key: Option<&str>,
        body: Option<String>,
    ) -> Resp {
        let mut request = self.http.request(method, self.url(path));
        if let Some(t) = token {
            request = request.bearer_auth(t);
        }
        if let Some(k) = idempotency_key {
            request = request.header("Idempotency-Key", k);
        }
        if let Some(b) = body {
            request = request.header("content-type", "application/json").body(b);
        }
        let response = request.send().await.expect("the server answers");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a readable body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.send(Method::GET, path, Some(token), None, None).await
    }

    pub async fn post(&self, path: &str, token: &str, key: Option<&str>, body: Value) -> Resp {
        self.send(Method::POST, path, Some(token), key, Some(body.to_string()))
            .await
    }

    /// A POST without a body.
    pub async fn post_empty(&self, path: &str, token: &str, key: Option<&str>) -> Resp {
        self.send(Method::POST, path, Some(token), key, None).await
    }

    pub async fn put(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(Method::PUT, path, Some(token), None, Some(body.to_string()))
            .await
    }

    pub async fn patch(&self, path: &str, token: &str, body: Value) -> Resp {
        self.send(
            Method::PATCH,
            path,
            Some(token),
            None,
            Some(body.to_string()),
        )
        .await
    }

    /// The body of `POST /v1/accounts` for a new account with `slug`.
    pub fn account_body(slug: &str) -> Value {
        json!({
            "name": format!("Acme {slug}"),
            "slug": slug,
            "country": "US",
            "billing_email": format!("billing@{slug}.example"),
            "owner_user_id": format!("user-{slug}"),
        })
    }

    /// Opens an account as a developer; returns the 201 response.
    pub async fn open_account_with(&self, body: Value) -> Resp {
        self.post("/v1/accounts", &self.developer(), Some(&key()), body)
            .await
    }

    /// Opens a fresh free-plan account; returns its id.
    pub async fn open_account(&self) -> String {
        let r = self
            .open_account_with(Self::account_body(&unique_slug()))
            .await;
        r.expect(201)["account_id"]
            .as_str()
            .expect("an account_id")
            .to_owned()
    }

    /// Grants `credits` (source purchase) as a developer; returns the 201
    /// response.
    pub async fn grant(&self, account: &str, credits: i64) -> Resp {
        let r = self
            .post(
                &format!("/v1/accounts/{account}/grants"),
                &self.developer(),
                Some(&key()),
                json!({ "credits": credits, "source": "purchase" }),
            )
            .await;
        r.expect(201);
        r
    }

    /// Opens an account and grants it `credits`; returns its id and the
    /// grant's position.
    pub async fn funded_account(&self, credits: i64) -> (String, i64) {
        let id = self.open_account().await;
        let position = self.grant(&id, credits).await.position();
        (id, position)
    }

    /// Deducts with a fresh key as an account-scoped system_bot.
    pub async fn deduct(&self, account: &str, body: Value) -> Resp {
        self.post(
            &format!("/v1/accounts/{account}/deductions"),
            &self.bot(Some(account)),
            Some(&key()),
            body,
        )
        .await
    }

    /// Holds with a fresh key as an account-scoped system_bot.
    pub async fn hold(&self, account: &str, body: Value) -> Resp {
        self.post(
            &format!("/v1/accounts/{account}/holds"),
            &self.bot(Some(account)),
            Some(&key()),
            body,
        )
        .await
    }

    /// The log head (`/ready`'s `position`): a read with it as
    /// `min_position` sees every write made so far.
    pub async fn head(&self) -> i64 {
        self.get("/ready", &self.developer()).await.expect(200)["position"]
            .as_i64()
            .expect("a position")
    }

    /// The account's balance once the read models have every write so far.
    pub async fn balance_now(&self, account: &str) -> i64 {
        let p = self.head().await;
        self.balance(account, p).await["balance"]
            .as_i64()
            .expect("a balance")
    }

    /// An invoice as its account's owner sees it, once the read models have
    /// every write so far.
    pub async fn invoice_now(&self, account: &str, id: &str) -> Value {
        let p = self.head().await;
        self.get(
            &format!("/v1/billing/invoices/{id}?min_position={p}"),
            &self.owner(account),
        )
        .await
        .expect(200)
        .clone()
    }

    /// Opens a fresh account: [`Self::account_body`] with `fields` set;
    /// returns its id.
    pub async fn open_account_on(&self, fields: Value) -> String {
        let mut body = Self::account_body(&unique_slug());
        for (k, v) in fields.as_object().expect("fields are an object") {
            body[k] = v.clone();
        }
        self.open_account_with(body).await.expect(201)["account_id"]
            .as_str()
            .expect("an account_id")
            .to_owned()
    }

    /// The balance read model as a developer, once it has `min_position`.
    pub async fn balance(&self, account: &str, min_position: i64) -> Value {
        self.get(
            &format!("/v1/accounts/{account}/balance?min_position={min_position}"),
            &self.developer(),
        )
        .await
        .expect(200)
        .clone()
    }

    /// A list's items as a developer, once the read models have
    /// `min_position`; `query` is appended after it.
    pub async fn items(&self, path: &str, min_position: i64, query: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = self
            .get(
                &format!("{path}{sep}min_position={min_position}{query}"),
                &self.developer(),
            )
            .await;
        r.expect(200)["items"]
            .as_array()
            .unwrap_or_else(|| panic!("a list has items: {}", r.text))
            .clone()
    }
}

/// A decimal string of a response, compared as a number (`"0.20"` ==
/// `"0.2"`).
#[track_caller]
pub fn decimal(v: &Value) -> rust_decimal::Decimal {
    v.as_str()
        .unwrap_or_else(|| panic!("a decimal string, got {v}"))
        .parse()
        .unwrap_or_else(|_| panic!("a decimal string, got {v}"))
}

/// An RFC 3339 time of a response.
#[track_caller]
pub fn time(v: &Value) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(
        v.as_str()
            .unwrap_or_else(|| panic!("an RFC 3339 string, got {v}")),
    )
    .unwrap_or_else(|e| panic!("an RFC 3339 string, got {v}: {e}"))
    .with_timezone(&chrono::Utc)
}

/// Serves `app` (a stub or receiver) on an ephemeral loopback port for the
/// rest of the test; answers its base URL, `http://127.0.0.1:PORT`.
pub async fn serve_local(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    base
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `ledger-server` process, killed (SIGKILL) when dropped, so that a
/// failing test leaves nothing running.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIGKILL: no graceful shutdown, no last checkpoint.
pub fn kill(server: Running) {
    drop(server);
}

/// Starts the real `ledger-server` binary on `port` with the test secret
/// and `envs` (each `(name, value)`; NATS off unless named).
pub fn spawn_ledger_server(
    database_url: &str,
    port: u16,
    data_dir: &Path,
    envs: &[(&str, &str)],
) -> Running {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ledger-server"));
    cmd.env("LEDGER_DATABASE_URL", database_url)
        .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEDGER_DATA_DIR", data_dir)
        .env("LEDGER_JWT_SECRET", JWT_SECRET)
        .env("LEDGER_LOG", "warn")
        .env_remove("LEDGER_NATS_URL")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Running(cmd.spawn().expect("start ledger-server"))
}

/// Waits (at most 60 s) until the server at `base` answers `/health`.
pub async fn wait_health(base: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{base}/health")).await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ledger-server did not answer /health within 60 s");
}
