//! Black-box tests of `ledger-server token`: run the real binary and verify
//! what it prints with the keys the server would build.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use api::auth::{Claims, JwtKeys, Role, JWT_SECRET_FILE_NAME};
use events::AccountId;

const SECRET: &str = "an-explicit-secret-for-the-cli-tests-0123456789";

/// Runs `ledger-server ARGS` in `cwd` with a clean environment: no data dir
/// or database configured, and `LEDGER_JWT_SECRET` only when given.
fn ledger_server(cwd: &Path, args: &[&str], jwt_secret: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ledger-server"));
    cmd.args(args)
        .current_dir(cwd)
        .env_remove("LEDGER_JWT_SECRET")
        .env_remove("LEDGER_DATA_DIR")
        .env_remove("LEDGER_DATABASE_URL")
        .env("LEDGER_LOG", "info")
        .stdin(Stdio::null());
    if let Some(secret) = jwt_secret {
        cmd.env("LEDGER_JWT_SECRET", secret);
    }
    cmd.output().expect("ledger-server runs")
}

/// The printed token: one line, nothing else on stdout.
fn printed_token(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}, stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    let token = stdout
        .strip_suffix('\n')
        .expect("the token ends with a newline");
    assert!(
        !token.contains('\n'),
        "stdout holds only the token: {stdout:?}"
    );
    assert_eq!(token.split('.').count(), 3, "{token}");
    token.to_owned()
}

fn keys_from_file(data_dir: &Path) -> JwtKeys {
    JwtKeys::from_secret(&std::fs::read(data_dir.join(JWT_SECRET_FILE_NAME)).unwrap())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[test]
fn a_system_bot_token_verifies_with_the_secret_file_the_command_created() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state");
    let out = ledger_server(
        dir.path(),
        &[
            "token",
            "--role",
            "system_bot",
            "--data-dir",
            data.to_str().unwrap(),
        ],
        None,
    );
    let token = printed_token(&out);

    let file = data.join(JWT_SECRET_FILE_NAME);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the secret file is private");

    let claims = keys_from_file(&data).verify(&token).unwrap();
    assert_eq!(claims.role, Role::SystemBot);
    assert_eq!(claims.account_id, None);
    assert_eq!(claims.sub, "cli");
    assert_eq!(claims.exp - claims.iat, 3600, "the default TTL is one hour");
    assert!((claims.iat - now()).abs() < 60);
}

#[test]
fn an_owner_token_carries_its_account_subject_and_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let account = AccountId::new_v7();
    let out = ledger_server(
        dir.path(),
        &[
            "token",
            "--role",
            "owner",
            "--account",
            &account.to_string(),
            "--ttl",
            "7d",
            "--sub",
            "alice",
        ],
        Some(SECRET),
    );
    let token = printed_token(&out);

    let claims = JwtKeys::from_secret(SECRET.as_bytes())
        .verify(&token)
        .unwrap();
    assert_eq!(
        claims,
        Claims {
            sub: "alice".into(),
            role: Role::Owner,
            account_id: Some(account),
            exp: claims.iat + 7 * 24 * 3600,
            iat: claims.iat,
            jti: claims.jti.clone(),
        }
    );
    assert!(
        claims.jti.is_some(),
        "a minted token can be revoked by its id"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "an explicit secret writes no file"
    );
}

#[test]
fn a_token_signed_with_the_generated_secret_fails_with_another_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = ledger_server(
        dir.path(),
        &["token", "--role", "developer", "--data-dir", "."],
        None,
    );
    let token = printed_token(&out);
    let other = JwtKeys::from_secret(SECRET.as_bytes());
    assert!(other.verify(&token).is_err());
    assert!(keys_from_file(dir.path()).verify(&token).is_ok());
}

#[test]
fn later_tokens_reuse_the_secret_generated_by_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["token", "--role", "developer", "--data-dir", "d"];
    let first = printed_token(&ledger_server(dir.path(), &args, None));
    let secret = std::fs::read(dir.path().join("d").join(JWT_SECRET_FILE_NAME)).unwrap();
    let second = printed_token(&ledger_server(dir.path(), &args, None));
    assert_eq!(
        std::fs::read(dir.path().join("d").join(JWT_SECRET_FILE_NAME)).unwrap(),
        secret
    );
    let keys = JwtKeys::from_secret(&secret);
    assert!(keys.verify(&first).is_ok());
    assert!(keys.verify(&second).is_ok());
}

#[test]
fn without_a_data_dir_the_secret_sits_beside_the_default_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = ledger_server(dir.path(), &["token", "--role", "system_bot"], None);
    let token = printed_token(&out);
    assert!(keys_from_file(&dir.path().join("data"))
        .verify(&token)
        .is_ok());
}

#[test]
fn an_owner_token_without_an_account_is_refused_with_a_helpful_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = ledger_server(
        dir.path(),
        &["token", "--role", "owner", "--data-dir", "."],
        None,
    );
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no token is printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--account"), "stderr: {stderr}");
    assert!(stderr.contains("owner"), "stderr: {stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        !dir.path().join(JWT_SECRET_FILE_NAME).exists(),
        "a refused command creates no secret"
    );
}

#[test]
fn a_secret_shorter_than_32_bytes_is_refused_without_being_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let short = "too-short-a-secret";
    let out = ledger_server(dir.path(), &["token", "--role", "developer"], Some(short));
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 32 bytes"), "stderr: {stderr}");
    assert!(!stderr.contains(short), "the secret leaked: {stderr}");
}

#[test]
fn a_zero_or_garbage_ttl_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for ttl in ["0s", "soon", "400d"] {
        let out = ledger_server(
            dir.path(),
            &["token", "--role", "developer", "--ttl", ttl],
            Some(SECRET),
        );
        assert!(!out.status.success(), "{ttl} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--ttl"), "{ttl}: {stderr}");
    }
}
