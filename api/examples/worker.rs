//! An AI worker paying for a job over NATS: a template to copy.
//!
//! 1. Reserve an estimate (`ledger.commands.hold`).
//! 2. Do the work.
//! 3. Capture what was actually used (`ledger.commands.capture`); the rest
//!    of the hold goes back to the account. If the work failed, release it
//!    (`ledger.commands.release`).
//!
//! Every command carries an idempotency key derived from the job, so a
//! retry after a timeout (the ledger may have committed without the reply
//! reaching us) is answered with the first outcome instead of charging
//! twice. A 402 `insufficient_credits` is a refusal, not an error to retry.
//!
//! ```sh
//! export LEDGER_TOKEN=$(ledger-server token --role system_bot --account $ACCOUNT_ID)
//! ACCOUNT_ID=… NATS_URL=nats://127.0.0.1:4222 cargo run -p api --example worker
//! ```

use std::time::Duration;

use serde_json::{json, Value};

/// Attempts at one command when the reply does not come.
const ATTEMPTS_MAX: u32 = 5;
/// How long one attempt waits for its reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a command did not succeed.
#[derive(Debug)]
enum Refusal {
    /// The ledger answered with an error (`status`, `error.code`, …).
    Ledger(Value),
    /// No answer after every attempt: NATS or the ledger is away.
    Unreachable(String),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ledger(body) => write!(f, "refused by the ledger: {body}"),
            Self::Unreachable(why) => write!(f, "no answer from the ledger: {why}"),
        }
    }
}

/// Sends one command, retrying timeouts with the SAME payload (and so the
/// same idempotency key), and returns the success body.
async fn command(
    client: &async_nats::Client,
    token: &str,
    kind: &str,
    payload: Value,
) -> Result<Value, Refusal> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    let subject = format!("ledger.commands.{kind}");
    let mut last_error = String::new();
    for attempt in 1..=ATTEMPTS_MAX {
        let request = client.request_with_headers(
            subject.clone(),
            headers.clone(),
            payload.to_string().into(),
        );
        match tokio::time::timeout(REPLY_TIMEOUT, request).await {
            Ok(Ok(reply)) => {
                let body: Value = serde_json::from_slice(&reply.payload)
                    .map_err(|e| Refusal::Unreachable(format!("unreadable reply: {e}")))?;
                let status = body.get("status").and_then(Value::as_u64);
                return match status {
                    // 503 unavailable / 429 rate_limited: try again later,
                    // with the same key.
                    Some(503 | 429) => {
                        last_error = body.to_string();
                        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                        continue;
                    }
                    Some(_) => Err(Refusal::Ledger(body)),
                    None => Ok(body),
                };
            }
            // No responders (the ledger is restarting) or a timeout: the
            // command may or may not have been applied; the key makes the
            // retry safe.
            Ok(Err(e)) => last_error = e.to_string(),
            Err(_) => last_error = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
    }
    Err(Refusal::Unreachable(last_error))
}

/// The AI operation itself; returns the credits it actually used.
async fn do_the_work(estimate: i64) -> Result<i64, String> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(estimate * 6 / 10)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    let token = std::env::var("LEDGER_TOKEN")?;
    let account = std::env::var("ACCOUNT_ID")?;
    let job = std::env::var("JOB_ID").unwrap_or_else(|_| uuid::Uuid::now_v7().to_string());
    let client = async_nats::connect(url).await?;
    let estimate = 100;

    // 1. Reserve. The key is the job's: a re-run of the same job reuses
    //    its hold instead of reserving again.
    let hold = command(
        &client,
        &token,
        "hold",
        json!({
            "account_id": account,
            "idempotency_key": format!("{job}-hold"),
            "credits": estimate,
            "ttl_seconds": 600,
        }),
    )
    .await;
    let hold = match hold {
        Ok(h) => h,
        Err(Refusal::Ledger(e)) if e["error"]["code"] == "insufficient_credits" => {
            let d = &e["error"]["details"];
            eprintln!(
                "not enough credits for job {job}: {} available, {} required; not starting",
                d["available"], d["required"]
            );
            return Ok(());
        }
        Err(e) => return Err(format!("could not reserve credits: {e}").into()),
    };
    let hold_id = hold["id"].as_str().ok_or("a hold has an id")?.to_owned();

    // 2. Work; 3. capture what was used, or release everything on failure.
    match do_the_work(estimate).await {
        Ok(used) => {
            let captured = command(
                &client,
                &token,
                "capture",
                json!({
                    "account_id": account,
                    "idempotency_key": format!("{job}-capture"),
                    "hold_id": hold_id,
                    "credits": used,
                    "model": "example-model",
                }),
            )
            .await
            .map_err(|e| format!("could not capture: {e}"))?;
            println!(
                "job {job}: used {} credits, {} released, balance {}",
                captured["credits"], captured["released"], captured["balance_after"]
            );
        }
        Err(why) => {
            command(
                &client,
                &token,
                "release",
                json!({
                    "account_id": account,
                    "idempotency_key": format!("{job}-release"),
                    "hold_id": hold_id,
                }),
            )
            .await
            .map_err(|e| format!("could not release: {e}"))?;
            eprintln!("job {job} failed ({why}); its hold was released");
        }
    }
    Ok(())
}
