//! The real `ledger-replay` binary: answers on stdout, one clear line on
//! stderr and a non-zero exit for every error, never a panic.

mod common;

use std::process::{Command, Output};

use common::*;
use store::testing::TestDb;
use store::CommandService;

fn replay(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ledger-replay"))
        .args(args)
        .env("LEDGER_DATABASE_URL", url)
        .env_remove("LEDGER_LOG")
        .output()
        .expect("run ledger-replay")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exactly one line on stderr, exit code 2, no panic.
fn assert_one_line_error(o: &Output, needle: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    assert!(err.starts_with("ledger-replay: "), "{err}");
    assert!(err.contains(needle), "{needle:?} in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
}

async fn the_binary_answers_and_fails_cleanly(db: &TestDb) {
    let service = CommandService::new(db.store.clone());
    let id = scripted_account(&service, "cli").await.to_string();
    project(&db.store).await;

    let o = replay(
        &db.url,
        &["balance", &id, "--as-of", "2026-03-05T12:00:00Z"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let b: serde_json::Value = serde_json::from_str(&stdout(&o)).expect("JSON");
    assert_eq!(
        (
            b["balance"].as_i64(),
            b["held"].as_i64(),
            b["available"].as_i64()
        ),
        (Some(100), Some(0), Some(100))
    );
    assert_eq!(b["as_of"], "2026-03-05T12:00:00.000000Z");

    let o = replay(
        &db.url,
        &[
            "history",
            &id,
            "--format",
            "csv",
            "--from",
            "2026-03-02",
            "--to",
            "2026-03-04",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = stdout(&o);
    assert!(csv.starts_with("position,sequence,occurred_at,"), "{csv}");
    assert_eq!(
        csv.split("\r\n").filter(|l| !l.is_empty()).count(),
        1 + 5,
        "{csv}"
    );
    let o = replay(&db.url, &["history", &id, "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout(&o)).expect("a JSON array");
    assert_eq!(rows.len(), 12);
    assert_eq!(rows[11]["balance"], 115);
    let o = replay(&db.url, &["history", &id]);
    assert!(stdout(&o)
        .lines()
        .next()
        .unwrap_or_default()
        .contains("balance"));

    let o = replay(&db.url, &["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).starts_with("clean: 1 streams, 12 events"),
        "{}",
        stdout(&o)
    );

    let dir = tempfile::tempdir().unwrap();
    let pack = dir.path().join("pack");
    let pack_arg = pack.to_string_lossy().into_owned();
    let o = replay(&db.url, &["export", &id, "--out", &pack_arg]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = replay(
        "sqlite:///nonexistent/never.db",
        &["verify", "--pack", &pack_arg],
    );
    assert!(o.status.success(), "offline: {}{}", stdout(&o), stderr(&o));

    let o = replay(&db.url, &["rebuild", "--projection", "balances"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("events/s"), "{}", stderr(&o));

    // Errors: one line each.
    assert_one_line_error(
        &replay(&db.url, &["balance", "nobody"]),
        "unknown account nobody",
    );
    assert_one_line_error(
        &replay(&db.url, &["history", "nobody"]),
        "unknown account nobody",
    );
    assert_one_line_error(
        &replay(&db.url, &["verify", "--account", "nobody"]),
        "unknown account nobody",
    );
    assert_one_line_error(
        &replay(&db.url, &["export", "nobody", "--out", &pack_arg]),
        "unknown account nobody",
    );
    assert_one_line_error(
        &replay(&db.url, &["balance", &id, "--as-of", "last tuesday"]),
        "bad time \"last tuesday\"",
    );
    assert_one_line_error(
        &replay(&db.url, &["history", &id, "--from", "2026-02-30"]),
        "bad time",
    );
    assert_one_line_error(
        &replay(&db.url, &["balance", &id, "--as-of", "2026-02-01"]),
        "was not open at",
    );
    assert_one_line_error(
        &replay(&db.url, &["rebuild", "--projection", "nope"]),
        "unknown projection \"nope\"",
    );

    // Tampering: verify exits 1 naming the event on stdout.
    tamper_credits(&db.store, &id, 4, 1).await;
    let o = replay(&db.url, &["verify"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("chain event account/{id} sequence 4 (position 4,"))),
        "{out}"
    );
    assert!(
        out.lines().last().unwrap_or_default().starts_with("FAILED"),
        "{out}"
    );
    assert_one_line_error(&replay(&db.url, &["balance", &id]), "sequence 4");
}
on_both_dbs!(the_binary_answers_and_fails_cleanly);

#[test]
fn an_unreachable_or_missing_database_is_one_line_and_nothing_is_created() {
    let o = replay("postgres://postgres@127.0.0.1:1/ledger", &["balance", "a"]);
    assert_one_line_error(&o, "cannot reach the database");
    let o = replay("postgres://app:hunter2@127.0.0.1:1/ledger", &["verify"]);
    assert_one_line_error(&o, "postgres://app:***@127.0.0.1:1/ledger");
    assert!(!stderr(&o).contains("hunter2"));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data").join("ledger.db");
    let url = format!("sqlite://{}", file.display());
    assert_one_line_error(&replay(&url, &["verify"]), "no SQLite database at");
    assert_one_line_error(&replay(&url, &["rebuild"]), "no SQLite database at");
    assert!(
        !file.exists() && !dir.path().join("data").exists(),
        "nothing is created"
    );

    assert_one_line_error(&replay("mysql://x", &["verify"]), "must start with");
}

#[tokio::test]
async fn a_database_without_the_ledger_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("empty.db");
    std::fs::write(&file, b"").unwrap();
    let o = replay(&format!("sqlite://{}", file.display()), &["balance", "a"]);
    assert_one_line_error(&o, "ledger-server migrate");
}
