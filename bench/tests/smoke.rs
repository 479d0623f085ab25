//! Runs the real `ledger-bench` for about two seconds against a spawned
//! `ledger-server` on SQLite, without baselines.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The bench's whole run (start-up, setup, two 2 s loads, checks) must fit.
const RUN_TIMEOUT: Duration = Duration::from_secs(300);

/// `ledger-server` next to the bench in the target folder (`cargo test
/// --workspace` builds it); when absent (`cargo test -p ledger-bench` builds
/// only this package's binaries) it is built here, in a target folder of its
/// own: the outer cargo holds the lock of this one while tests run.
fn server_bin() -> PathBuf {
    let name = format!("ledger-server{}", std::env::consts::EXE_SUFFIX);
    let bench = Path::new(env!("CARGO_BIN_EXE_ledger-bench"));
    let server = bench.with_file_name(&name);
    if server.is_file() {
        return server;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the bench crate sits in the workspace");
    // `<target>/<profile>/ledger-bench` → `<target>/ledger-bench-smoke`.
    let own_target = bench
        .parent()
        .and_then(Path::parent)
        .expect("the bench binary sits in <target>/<profile>/")
        .join("ledger-bench-smoke");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--bin", "ledger-server", "--target-dir"])
        .arg(&own_target)
        .current_dir(workspace)
        .status()
        .expect("running cargo build --bin ledger-server");
    assert!(status.success(), "cargo build --bin ledger-server failed");
    let server = own_target.join("debug").join(&name);
    assert!(server.is_file(), "{} is missing", server.display());
    server
}

/// Runs the bench with these arguments (after a 2 s, 10-account, no-baseline
/// set-up on a fresh SQLite file) and returns what it printed.
fn run_bench(extra: &[&str]) -> String {
    let server = server_bin();
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/b.db", dir.path().display());
    let child = Command::new(env!("CARGO_BIN_EXE_ledger-bench"))
        .args(["--database-url", &db, "--baselines", "none"])
        .args(["--duration", "2s", "--workers", "4", "--hot-workers", "4"])
        .args(["--accounts", "10"])
        .args(extra)
        .arg("--server-bin")
        .arg(&server)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("starting ledger-bench");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(RUN_TIMEOUT) {
        Ok(out) => out.expect("waiting for ledger-bench"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("ledger-bench did not finish within {RUN_TIMEOUT:?}");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ledger-bench failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("ops/s"), "{stdout}");
    stdout
}

/// Each scenario ran on SQLite with zero errors and its balances checked.
fn assert_scenarios(stdout: &str, scenarios: &[&str]) {
    for scenario in scenarios {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(scenario))
            .unwrap_or_else(|| panic!("no {scenario} line in:\n{stdout}"));
        assert!(line.contains("sqlite"), "{line}");
        assert!(line.contains("ok ("), "balances not checked: {line}");
    }
}

#[test]
fn short_run_on_sqlite_prints_its_rates_and_checks_balances() {
    let stdout = run_bench(&[]);
    assert_scenarios(&stdout, &["http accounts", "http hot"]);
}

/// A nats-server of this test's own (the SPEC fixes the subjects and the
/// queue group, so a shared one could hand requests to another test's
/// server), killed when dropped.
struct OwnNats {
    child: std::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl OwnNats {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .or_else(|_| {
                Command::new("/usr/sbin/nats-server")
                    .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
                    .arg(dir.path())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
            })
            .expect("starting nats-server (it must be installed: /usr/sbin/nats-server)");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            child,
            url: format!("nats://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn short_run_over_nats_request_reply_checks_balances() {
    let nats = OwnNats::start();
    let stdout = run_bench(&["--transport", "nats", "--nats-url", &nats.url]);
    assert_scenarios(&stdout, &["nats accounts", "nats hot"]);
}

/// `--scenario projection` on SQLite: the three phases ran, and the live
/// catch-up's rows equal the bulk rebuild's.
#[test]
fn projection_scenario_times_the_catch_up_and_compares_it_with_a_rebuild() {
    let stdout = run_bench(&["--scenario", "projection", "--events", "300"]);
    for phase in [
        "projection write",
        "projection catch-up",
        "projection rebuild",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(phase))
            .unwrap_or_else(|| panic!("no {phase} line in:\n{stdout}"));
        assert!(line.contains("sqlite"), "{line}");
    }
    let catch_up = stdout
        .lines()
        .find(|l| l.starts_with("projection catch-up"))
        .unwrap_or_default();
    assert!(catch_up.contains("ok (10)"), "rows compared: {catch_up}");
    assert!(
        stdout.contains("projection catch-up events/s"),
        "the target ratio is reported:\n{stdout}"
    );
}
