//! A projector that meets an event it cannot apply halts visibly: `/ready`
//! answers 503 naming the position and the error, `/metrics` shows it
//! failing and lagging, reads that do not wait for the stuck position are
//! still served, writes still commit, and once the operator fixes the
//! cause (here a damaged read-model row, put right by hand or by
//! `ledger-replay rebuild`) it resumes on its own and catches up.

mod common;

use std::time::{Duration, Instant};

use common::{key, Api};
use serde_json::{json, Value};

async fn ready(api: &Api) -> (u16, Value) {
    let r = api.get("/ready", "").await;
    (r.status, r.body.clone())
}

async fn metric(api: &Api, name: &str) -> Option<f64> {
    let r = api.get("/metrics", "").await;
    r.text.lines().find_map(|l| {
        l.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

async fn a_poison_event_halts_the_projector_visibly_until_it_is_fixed(
    api: &Api,
    store: &store::Store,
) {
    let (account, _) = api.funded_account(1_000).await;
    let first = api
        .deduct(
            &account,
            json!({ "operation": "clustering", "model": "m-1" }),
        )
        .await;
    let p = first.expect(201)["position"].as_i64().unwrap();
    api.balance(&account, p).await;
    // Damage the day's usage row: the next deduction with the same key
    // cannot be added to it.
    store
        .execute(
            "UPDATE rm_usage_daily SET cost_usd = 'not-a-number' WHERE account_id = $1",
            &[account.as_str().into()],
        )
        .await
        .unwrap();
    let poison = api
        .deduct(
            &account,
            json!({ "operation": "clustering", "model": "m-1" }),
        )
        .await;
    let stuck_at = poison.expect(201)["position"].as_i64().unwrap();

    // /ready says so, naming where and why.
    let deadline = Instant::now() + Duration::from_secs(15);
    let body = loop {
        let (status, body) = ready(api).await;
        if status == 503 {
            break body;
        }
        assert!(Instant::now() < deadline, "/ready stayed {status}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        message.contains("projector") && message.contains(&(stuck_at - 1).to_string()),
        "{message}"
    );
    assert!(message.contains("rm_usage_daily"), "{message}");
    assert_eq!(metric(api, "ledger_projector_failed").await, Some(1.0));
    assert!(
        metric(api, "ledger_projector_failures")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    // Reads that do not wait for the stuck position are served; writes
    // still commit.
    api.get(&format!("/v1/accounts/{account}"), &api.developer())
        .await
        .expect(200);
    let (other, _) = api.funded_account(10).await;
    let write = api
        .post(
            &format!("/v1/accounts/{other}/grants"),
            &api.developer(),
            Some(&key()),
            json!({ "credits": 5, "source": "promotional" }),
        )
        .await;
    write.expect(201);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let lag = metric(api, "ledger_projector_lag_seconds")
        .await
        .unwrap_or(0.0);
    assert!(lag >= 1.0, "lag {lag} s while stuck");

    // The operator's fix: the damaged row put right (or the read models
    // rebuilt with `ledger-replay rebuild`). The projector resumes by
    // itself within its backoff and catches up.
    store
        .execute(
            "UPDATE rm_usage_daily SET cost_usd = '0' WHERE account_id = $1",
            &[account.as_str().into()],
        )
        .await
        .unwrap();
    let head = write.position();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (status, body) = ready(api).await;
        if status == 200 && body["projector"]["position"].as_i64() >= Some(head) {
            assert_eq!(body["projector"]["lag_ms"], 0, "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "never resumed: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(metric(api, "ledger_projector_failed").await, Some(0.0));
    assert_eq!(api.balance(&account, stuck_at).await["balance"], 980);
}
on_both_backends!(store a_poison_event_halts_the_projector_visibly_until_it_is_fixed);
