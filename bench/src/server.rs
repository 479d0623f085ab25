//! A `ledger-server` child process on a free loopback port, killed when
//! its guard drops.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// Longest wait for a spawned server to answer `/ready` (migrations, seed).
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a graceful stop before the server is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of the server's log a failure shows.
const LOG_TAIL_BYTES: u64 = 4_096;

pub struct Server {
    child: Option<Child>,
    pid: u32,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A random 64-hex-character secret.
pub fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no random source: {e}"))?;
    Ok(hex::encode(bytes))
}

pub fn backend_of(database_url: &str) -> &'static str {
    if database_url.starts_with("sqlite:") {
        "sqlite"
    } else {
        "postgres"
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("finding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

impl Server {
    pub async fn spawn(
        bin: &Path,
        database_url: &str,
        secret: &str,
        nats_url: Option<&str>,
    ) -> anyhow::Result<Self> {
        if !bin.is_file() {
            bail!(
                "the server binary {} does not exist: build it first (cargo build --release \
                 --bin ledger-server) or pass --server-bin PATH",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("ledger-bench-")
            .tempdir()
            .context("creating a temporary folder")?;
        let log = dir.path().join("server.log");
        let out = File::create(&log).context("creating the server's log file")?;
        let port = free_port()?;
        let mut command = Command::new(bin);
        if let Some(url) = nats_url {
            command.env("LEDGER_NATS_URL", url);
        }
        let child = command
            .env("LEDGER_DATABASE_URL", database_url)
            .env("LEDGER_JWT_SECRET", secret)
            .env("LEDGER_LOG", "warn")
            .env("LEDGER_LOG_FORMAT", "pretty")
            .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
            .env("LEDGER_DATA_DIR", dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut server = Self {
            pid: child.id(),
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        server.wait_ready().await?;
        Ok(server)
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        let url = format!("{}/ready", self.base);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "ledger-server exited during start-up ({status}); its log:\n{}",
                        self.log_tail()
                    );
                }
            }
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "ledger-server did not become ready within {:?}; its log:\n{}",
                    READY_TIMEOUT,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Resident and peak resident memory (VmRSS, VmHWM) in KiB, from /proc.
    pub fn memory_kib(&self) -> (Option<u64>, Option<u64>) {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{}/status", self.pid)) else {
            return (None, None);
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM (graceful shutdown), then SIGKILL after [`STOP_TIMEOUT`].
    pub async fn stop(mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.pid.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn log_tail(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
