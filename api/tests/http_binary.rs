//! Black box: the real `ledger-server` binary, started as a process on
//! SQLite, serves the README's walkthrough (and mints its tokens with the
//! `token` subcommand).

mod common;

use std::time::{Duration, Instant};

use common::key;
use reqwest::Method;
use serde_json::{json, Value};

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ledger_server(database_url: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ledger-server"));
    cmd.args(args)
        .env("LEDGER_DATABASE_URL", database_url)
        .env("LEDGER_JWT_SECRET", common::JWT_SECRET)
        .env("LEDGER_LOG", "warn")
        .env_remove("LEDGER_DATA_DIR")
        .stdin(std::process::Stdio::null());
    cmd
}

fn cli_token(database_url: &str, args: &[&str]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let out = ledger_server(database_url, &all).output().unwrap();
    assert!(
        out.status.success(),
        "ledger-server token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn the_real_binary_serves_the_readme_flow_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ledger.db", dir.path().display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Child(
        ledger_server(&url, &[])
            .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
            .spawn()
            .expect("start ledger-server"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no /health within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let developer = cli_token(&url, &["--role", "developer", "--sub", "backend"]);
    let call = |method: Method, path: &str, token: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token)
            .header("Idempotency-Key", key());
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
                text,
            )
        }
    };

    let (status, opened, text) = call(
        Method::POST,
        "/v1/accounts",
        &developer,
        Some(json!({
            "name": "Acme",
            "slug": "acme",
            "plan": "starter",
            "country": "US",
            "billing_email": "billing@acme.example",
            "owner_user_id": "u-1",
        })),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let id = opened["account_id"].as_str().unwrap().to_owned();
    let owner = cli_token(&url, &["--role", "owner", "--account", &id]);
    let worker = cli_token(
        &url,
        &["--role", "system_bot", "--account", &id, "--ttl", "30m"],
    );

    let (status, grant, text) = call(
        Method::POST,
        &format!("/v1/accounts/{id}/grants"),
        &developer,
        Some(json!({ "credits": 1000, "source": "purchase" })),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(grant["balance_after"], 1000);

    let (status, deducted, text) = call(
        Method::POST,
        &format!("/v1/accounts/{id}/deductions"),
        &worker,
        Some(json!({ "operation": "content_generation", "units": 250, "model": "gpt-4o" })),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(deducted["credits"], 3);
    assert_eq!(deducted["balance_after"], 997);
    let p = deducted["position"].as_i64().unwrap();

    let (status, balance, text) = call(
        Method::GET,
        &format!("/v1/billing/account_balance/?min_position={p}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(balance["balance"], 997);
    assert_eq!(balance["available"], 997);
    assert_eq!(balance["plan"], "starter");

    let (status, usage, text) = call(
        Method::GET,
        &format!("/v1/billing/usage/?min_position={p}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let items = usage["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["operation"], "content_generation");
    assert_eq!(items[0]["units"], 250);
    assert_eq!(items[0]["credits"], 3);
    assert_eq!(items[0]["model"], "gpt-4o");

    // The worker's token is no dashboard's: it may not read the usage log.
    let (status, _, _) = call(Method::GET, "/v1/billing/usage/", &worker, None).await;
    assert_eq!(status, 403);

    // The roster check is on by default: the tokens above were minted for
    // the account's owner (`u-1`); one for anybody else is refused. A
    // viewer token minted for the owner acts as a viewer, never more.
    let stranger = cli_token(&url, &["--role", "owner", "--account", &id, "--sub", "u-2"]);
    let (status, body, text) = call(Method::GET, "/v1/billing/usage/", &stranger, None).await;
    assert_eq!(status, 403, "{text}");
    assert_eq!(body["error"]["code"], "forbidden");
    let viewer = cli_token(&url, &["--role", "viewer", "--account", &id]);
    let (status, _, text) = call(Method::GET, "/v1/billing/usage/", &viewer, None).await;
    assert_eq!(status, 200, "{text}");
    let (status, _, text) = call(Method::GET, "/v1/account/team/", &viewer, None).await;
    assert_eq!(status, 403, "a viewer does not manage the team: {text}");
    // An account the store does not know: the token is minted, for `cli`,
    // and refused as every route would.
    let nobody = uuid::Uuid::now_v7().to_string();
    let ghost = cli_token(&url, &["--role", "viewer", "--account", &nobody]);
    let (status, _, text) = call(Method::GET, "/v1/billing/usage/", &ghost, None).await;
    assert_eq!(status, 404, "{text}");
    let (status, team, text) = call(Method::GET, "/v1/account/team/", &owner, None).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(team["members"][0]["user_id"], "u-1");
    assert_eq!(team["members"][0]["role"], "owner");
}
