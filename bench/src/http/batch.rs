//! Batches of deductions over HTTP (`--scenario batch`):
//! `POST /v1/accounts/{id}/deductions/batch`, each request `items`
//! deductions on one account picked at random, each item with its own
//! idempotency key, closed loop. An item is the single route's body plus its
//! key, and the ledger binds an item's key to the same hash as a single
//! deduction with that key and body, so an item whose outcome is unknown is
//! settled by [`HttpBench::verify`] sending the single request again.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::{
    bump, projector_lag, sample_lag, AccountSet, HttpBench, HttpDetail, Rng, COST, OPERATION,
    PROJECTION_TIMEOUT,
};
use crate::report::{histogram, micros, BatchStats, CpuMark, ScenarioResult};
use crate::LoadRun;

/// Most items one batch request carries (the route's own limit).
pub const BATCH_ITEMS_MAX: usize = 1_000;

/// The batch route's answer, as far as the bench reads it.
#[derive(Deserialize)]
struct BatchAnswer {
    items: Vec<ItemAnswer>,
    /// The highest log position any item reached.
    position: Option<i64>,
}

#[derive(Deserialize)]
struct ItemAnswer {
    index: Option<usize>,
    status: u16,
    #[serde(default)]
    idempotent_replayed: bool,
    credits: Option<i64>,
    position: Option<i64>,
    error: Option<ItemError>,
}

#[derive(Deserialize)]
struct ItemError {
    code: Option<String>,
}

/// The request body: `keys.len()` items of the single route's body
/// (`{"operation":"clustering","units":1}`) plus each item's key. The keys
/// are the bench's own (hex, digits and `-`), so they need no escaping.
fn batch_body(keys: &[String]) -> String {
    let mut s = String::with_capacity(32 + keys.len() * 72);
    s.push_str(r#"{"atomic":false,"items":["#);
    for (j, key) in keys.iter().enumerate() {
        if j > 0 {
            s.push(',');
        }
        s.push_str(r#"{"idempotency_key":""#);
        s.push_str(key);
        s.push_str(r#"","operation":""#);
        s.push_str(OPERATION);
        s.push_str(r#"","units":1}"#);
    }
    s.push_str("]}");
    s
}

impl HttpBench {
    /// Drives batches of `items` deductions for `duration` with `workers`
    /// closed-loop keep-alive workers over `set`'s accounts. The result
    /// counts items applied as its operations (deductions/s), requests
    /// answered 200 in its [`BatchStats`], and latency per request; any
    /// item not applied (status other than 201) and any answer other than
    /// 200 is an error, and errors make the run fail.
    pub async fn load_batch(
        &self,
        name: &str,
        set: &AccountSet,
        workers: usize,
        duration: Duration,
        items: usize,
    ) -> anyhow::Result<LoadRun<HttpDetail>> {
        if items == 0 || items > BATCH_ITEMS_MAX {
            bail!("a batch carries 1 to {BATCH_ITEMS_MAX} items, not {items}");
        }
        if self.nats.is_some() {
            bail!("batches are sent over HTTP only");
        }
        let urls: Arc<Vec<String>> = Arc::new(
            set.ids
                .iter()
                .map(|id| self.url(&format!("/v1/accounts/{id}/deductions/batch")))
                .collect(),
        );
        let prefix = Uuid::new_v4().simple().to_string()[..12].to_owned();
        let cpu = CpuMark::now(self.server_pid);
        let deducted: Arc<Vec<AtomicI64>> =
            Arc::new(set.ids.iter().map(|_| AtomicI64::new(0)).collect());
        let start = Instant::now();
        let end = start + duration;
        let sampler = tokio::spawn(sample_lag(self.client.clone(), self.url("/ready"), end));
        let mut tasks = Vec::with_capacity(workers);
        for w in 0..workers {
            let client = self.client.clone();
            let urls = urls.clone();
            let bot = self.bot.clone();
            let prefix = prefix.clone();
            let deducted = deducted.clone();
            tasks.push(tokio::spawn(async move {
                let mut out = BatchOut::new(deducted);
                let mut rng = Rng::seeded();
                let mut i = 0u64;
                // Closed loop: the next batch goes when the last one answered
                // (each request times out after the client's 30 s).
                while Instant::now() < end {
                    let idx = if urls.len() == 1 {
                        0
                    } else {
                        rng.below(urls.len())
                    };
                    let keys: Vec<String> = (0..items)
                        .map(|j| format!("{prefix}-{w}-{i}-{j}"))
                        .collect();
                    i += 1;
                    let body = batch_body(&keys);
                    let sent_at = Instant::now();
                    let sent = client
                        .post(&urls[idx])
                        .header(AUTHORIZATION, &bot)
                        .header(CONTENT_TYPE, "application/json")
                        .body(body)
                        .send()
                        .await;
                    out.record(idx, keys, sent_at, sent).await;
                }
                out
            }));
        }
        let mut total = BatchOut::new(deducted.clone());
        for t in tasks {
            total.merge(t.await.context("a batch worker panicked")?);
        }
        let elapsed = start.elapsed();
        let samples = sampler.await.unwrap_or_default();
        let mut result = ScenarioResult::new(name, "http", &self.backend, set.ids.len(), workers);
        // CPU is charged for the load alone, before the catch-up.
        cpu.charge(&mut result);
        let catch_up = self
            .catch_up(total.max_position)
            .await
            .unwrap_or(PROJECTION_TIMEOUT);
        result.set_counts(total.items_ok, elapsed, &total.hist);
        result.add_errors(&total.errors);
        result.projector = Some(projector_lag(&samples, catch_up));
        result.batch = Some(BatchStats::new(
            items,
            total.requests_ok,
            elapsed.as_secs_f64(),
        ));
        result.errors_fail_run = true;
        result.note = Some(format!(
            "POST /v1/accounts/{{id}}/deductions/batch, {items} item(s) per request"
        ));
        Ok(LoadRun {
            result,
            detail: HttpDetail {
                set: set.clone(),
                deducted: deducted.iter().map(|d| d.load(Ordering::Relaxed)).collect(),
                max_position: total.max_position,
                in_doubt: total.in_doubt,
            },
        })
    }
}

/// One batch worker's tallies.
struct BatchOut {
    /// Latency of the requests answered 200, in µs.
    hist: Histogram<u64>,
    requests_ok: u64,
    /// Items answered 201 (deductions applied).
    items_ok: u64,
    errors: BTreeMap<String, u64>,
    deducted: Arc<Vec<AtomicI64>>,
    max_position: i64,
    /// Items whose outcome is unknown: (account index, key).
    in_doubt: Vec<(usize, String)>,
}

impl BatchOut {
    fn new(deducted: Arc<Vec<AtomicI64>>) -> Self {
        Self {
            hist: histogram(),
            requests_ok: 0,
            items_ok: 0,
            errors: BTreeMap::new(),
            deducted,
            max_position: 0,
            in_doubt: Vec::new(),
        }
    }

    fn doubt_all(&mut self, idx: usize, keys: Vec<String>) {
        self.in_doubt.extend(keys.into_iter().map(|k| (idx, k)));
    }

    async fn record(
        &mut self,
        idx: usize,
        keys: Vec<String>,
        sent_at: Instant,
        sent: reqwest::Result<reqwest::Response>,
    ) {
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                bump(
                    &mut self.errors,
                    if e.is_timeout() {
                        "timeout"
                    } else {
                        "transport"
                    },
                );
                self.doubt_all(idx, keys);
                return;
            }
        };
        let status = resp.status();
        let body = resp.bytes().await;
        let latency = micros(sent_at.elapsed());
        match body {
            Ok(bytes) => self.record_answer(idx, keys, status, &bytes, latency),
            Err(_) => {
                bump(&mut self.errors, "transport");
                self.doubt_all(idx, keys);
            }
        }
    }

    /// Tallies an answer read whole: its items when 200, else its status.
    fn record_answer(
        &mut self,
        idx: usize,
        keys: Vec<String>,
        status: StatusCode,
        bytes: &[u8],
        latency: u64,
    ) {
        if status != StatusCode::OK {
            let code = serde_json::from_slice::<Value>(bytes)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            bump(
                &mut self.errors,
                match code {
                    Some(c) => format!("{} {c}", status.as_u16()),
                    None => status.as_u16().to_string(),
                },
            );
            // A 5xx may hide committed items; any other answer than 200
            // means the batch was not read, so nothing was applied.
            if status.is_server_error() {
                self.doubt_all(idx, keys);
            }
            return;
        }
        let answer = match serde_json::from_slice::<BatchAnswer>(bytes) {
            Ok(a) if a.items.len() == keys.len() => a,
            Ok(_) => {
                bump(&mut self.errors, "item_count_mismatch");
                self.doubt_all(idx, keys);
                return;
            }
            Err(_) => {
                bump(&mut self.errors, "bad_body");
                self.doubt_all(idx, keys);
                return;
            }
        };
        self.requests_ok += 1;
        self.hist.saturating_record(latency);
        self.max_position = self.max_position.max(answer.position.unwrap_or(0));
        for (j, (item, key)) in answer.items.into_iter().zip(keys).enumerate() {
            if item.index.is_some_and(|i| i != j) {
                bump(&mut self.errors, "item_out_of_order");
            }
            match (item.status, item.credits) {
                (201, Some(credits)) => {
                    self.items_ok += 1;
                    self.deducted[idx].fetch_add(credits, Ordering::Relaxed);
                    self.max_position = self.max_position.max(item.position.unwrap_or(0));
                    if item.idempotent_replayed {
                        bump(&mut self.errors, "unexpected_replay");
                    }
                    if credits != COST {
                        bump(&mut self.errors, "unexpected_cost");
                    }
                }
                (201, None) => {
                    bump(&mut self.errors, "bad_item");
                    self.in_doubt.push((idx, key));
                }
                (status, _) => {
                    let code = item.error.and_then(|e| e.code).unwrap_or_default();
                    bump(&mut self.errors, format!("item {status} {code}"));
                    if status >= 500 {
                        self.in_doubt.push((idx, key));
                    }
                }
            }
        }
    }

    fn merge(&mut self, other: BatchOut) {
        let _ = self.hist.add(&other.hist);
        self.requests_ok += other.requests_ok;
        self.items_ok += other.items_ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.max_position = self.max_position.max(other.max_position);
        self.in_doubt.extend(other.in_doubt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_carries_one_item_per_key() {
        let keys: Vec<String> = (0..3).map(|j| format!("abc-0-0-{j}")).collect();
        let body: Value = serde_json::from_str(&batch_body(&keys)).unwrap();
        assert_eq!(body["atomic"], Value::Bool(false));
        let items = body["items"].as_array().unwrap();
        assert_eq!(items.len(), 3);
        for (j, item) in items.iter().enumerate() {
            assert_eq!(
                item,
                &serde_json::json!({
                    "idempotency_key": format!("abc-0-0-{j}"),
                    "operation": "clustering",
                    "units": 1,
                })
            );
        }
    }

    #[test]
    fn a_thousand_items_fit_the_route_limit() {
        let keys: Vec<String> = (0..BATCH_ITEMS_MAX)
            .map(|j| format!("0123456789ab-1023-18446744073709551615-{j}"))
            .collect();
        assert!(batch_body(&keys).len() < 2 * 1024 * 1024);
    }

    #[test]
    fn items_are_counted_and_failures_reported() {
        let deducted = Arc::new(vec![AtomicI64::new(0)]);
        let mut out = BatchOut::new(deducted.clone());
        let keys: Vec<String> = (0..3).map(|j| format!("k-{j}")).collect();
        let answer = serde_json::json!({
            "items": [
                {"index": 0, "status": 201, "idempotency_key": "k-0", "idempotent_replayed": false,
                 "credits": 1, "position": 7},
                {"index": 1, "status": 402, "idempotency_key": "k-1",
                 "error": {"code": "insufficient_credits", "message": "no"}},
                {"index": 2, "status": 503, "idempotency_key": "k-2",
                 "error": {"code": "unavailable", "message": "later"}},
            ],
            "applied": 1, "replayed": 0, "failed": 2, "position": 7,
        });
        let body = answer.to_string();
        out.record_answer(0, keys, StatusCode::OK, body.as_bytes(), 1_500);
        assert_eq!(out.requests_ok, 1);
        assert_eq!(out.items_ok, 1);
        assert_eq!(deducted[0].load(Ordering::Relaxed), 1);
        assert_eq!(out.max_position, 7);
        assert_eq!(out.errors["item 402 insufficient_credits"], 1);
        assert_eq!(out.errors["item 503 unavailable"], 1);
        assert_eq!(out.in_doubt, vec![(0, "k-2".to_owned())]);

        let keys: Vec<String> = (0..2).map(|j| format!("m-{j}")).collect();
        let body = serde_json::json!({"error": {"code": "invalid_request", "message": "x"}});
        let body = body.to_string();
        out.record_answer(
            0,
            keys.clone(),
            StatusCode::UNPROCESSABLE_ENTITY,
            body.as_bytes(),
            1,
        );
        assert_eq!(out.errors["422 invalid_request"], 1);
        assert_eq!(out.requests_ok, 1);
        assert_eq!(out.in_doubt.len(), 1, "a 4xx applied nothing");

        out.record_answer(0, keys.clone(), StatusCode::BAD_GATEWAY, b"", 1);
        assert_eq!(out.errors["502"], 1);
        assert_eq!(out.in_doubt.len(), 3, "a 5xx may have applied them");

        // Fewer results than items: nothing is trusted, all settled later.
        let body = serde_json::json!({"items": [], "applied": 0, "replayed": 0, "failed": 0});
        out.record_answer(0, keys, StatusCode::OK, body.to_string().as_bytes(), 1);
        assert_eq!(out.errors["item_count_mismatch"], 1);
        assert_eq!(out.in_doubt.len(), 5);
        assert_eq!(out.items_ok, 1);
    }
}
