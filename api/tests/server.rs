//! Black-box tests: start the real `ledger-server` binary and talk HTTP.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use store::testing::TestDb;

struct Server {
    child: Child,
    base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ledger_server(database_url: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger-server"));
    cmd.args(args)
        .env("LEDGER_DATABASE_URL", database_url)
        // The secret file goes to a temporary folder, not the source tree.
        .env(
            "LEDGER_DATA_DIR",
            std::env::temp_dir().join("ledger-server-tests"),
        )
        .env("LEDGER_LOG", "warn")
        .stdin(Stdio::null());
    cmd
}

async fn start(database_url: &str, cwd: Option<&std::path::Path>) -> Server {
    let port = free_port();
    let mut cmd = ledger_server(database_url, &[]);
    cmd.env("LEDGER_LISTEN", format!("127.0.0.1:{port}"));
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    let child = cmd.spawn().expect("start ledger-server");
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = reqwest::get(format!("{}/health", server.base)).await {
            if r.status().is_success() {
                return server;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ledger-server did not answer /health within 30 s");
}

async fn get_json(url: String) -> (u16, serde_json::Value) {
    let r = reqwest::get(url).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn catalog_seed_count(store: &store::Store) -> usize {
    store
        .read_after(0, 1_000)
        .await
        .unwrap()
        .iter()
        .filter(|e| e.event_type == "CatalogSeeded")
        .count()
}

#[tokio::test]
async fn with_no_configuration_it_serves_health_on_the_sqlite_default() {
    let dir = tempfile::tempdir().unwrap();
    // The default URL is relative: ./data/ledger.db under the working folder.
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_ledger-server"))
        .current_dir(dir.path())
        .env_remove("LEDGER_DATABASE_URL")
        .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .env("LEDGER_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server {
        child,
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut health = None;
    while Instant::now() < deadline && health.is_none() {
        if let Ok(r) = reqwest::get(format!("{}/health", server.base)).await {
            health = Some(r.json::<serde_json::Value>().await.unwrap());
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    assert_eq!(health.expect("health answered")["status"], "ok");
    let (status, ready) = get_json(format!("{}/ready", server.base)).await;
    assert_eq!(status, 200);
    assert_eq!(ready["store"]["backend"], "sqlite");
    assert!(
        ready["position"].as_i64().unwrap() > 0,
        "the seeded catalog is in the log"
    );
    assert!(dir.path().join("data/ledger.db").exists());
}

#[tokio::test]
async fn on_postgres_it_migrates_seeds_once_and_reports_ready() {
    let db = TestDb::postgres()
        .await
        .expect("PostgreSQL must be running for the server tests");
    {
        let server = start(&db.url, None).await;
        let (status, ready) = get_json(format!("{}/ready", server.base)).await;
        assert_eq!(status, 200);
        assert_eq!(ready["status"], "ready");
        assert_eq!(ready["store"]["backend"], "postgres");
    }
    // A restart finds the catalog seeded and leaves it alone.
    {
        let _server = start(&db.url, None).await;
    }
    assert_eq!(catalog_seed_count(&db.store).await, 1);
    db.cleanup().await.unwrap();
}

#[tokio::test]
async fn migrate_applies_the_schema_and_exits() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/m.db", dir.path().display());
    let status = ledger_server(&url, &["migrate"]).status().unwrap();
    assert!(status.success());
    let store = store::Store::connect(&url).await.unwrap();
    assert_eq!(
        store.head_position().await.unwrap(),
        0,
        "migrate writes no events"
    );
    // Running it again is harmless.
    assert!(ledger_server(&url, &["migrate"])
        .status()
        .unwrap()
        .success());
}

#[tokio::test]
async fn a_bad_database_url_fails_with_one_clear_line() {
    let out = ledger_server("mysql://nope", &["migrate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("postgres:// or sqlite:"),
        "stderr was: {stderr}"
    );
}

#[tokio::test]
async fn ready_turns_unavailable_when_the_store_goes_away() {
    let db = TestDb::postgres()
        .await
        .expect("PostgreSQL must be running");
    let server = start(&db.url, None).await;
    let (status, _) = get_json(format!("{}/ready", server.base)).await;
    assert_eq!(status, 200);
    // Drop the database under the running server.
    let url = db.url.clone();
    db.cleanup().await.unwrap();
    // `/ready` reuses its store probe for a second (api::READY_PROBE_CACHE),
    // so the outage shows within about that, never later.
    let started = std::time::Instant::now();
    let (status, body) = loop {
        let (status, body) = get_json(format!("{}/ready", server.base)).await;
        if status != 200 || started.elapsed() > std::time::Duration::from_secs(10) {
            break (status, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "unavailable");
    assert!(
        started.elapsed() < api::READY_PROBE_CACHE + std::time::Duration::from_secs(3),
        "noticed after {:?}",
        started.elapsed()
    );
    let (status, _) = get_json(format!("{}/health", server.base)).await;
    assert_eq!(status, 200, "liveness does not depend on the store");
    assert!(url.contains("ledger_test_"));
}
