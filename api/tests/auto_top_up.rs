//! Automatic top-up by bank transfer over real HTTP, on PostgreSQL and
//! SQLite (issue 17): one purchase per crossing under 50 concurrent
//! deductions, re-armed once the credits are back above the threshold;
//! the configuration's checks and roles. (The Stripe off-session path is
//! in `stripe.rs`.)

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Api, Backend};
use serde_json::{json, Value};

async fn invoices(api: &Api, account: &str) -> Vec<Value> {
    let p = api.head().await;
    api.get(
        &format!("/v1/billing/invoices?min_position={p}"),
        &api.owner(account),
    )
    .await
    .expect(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn wait_invoices(api: &Api, account: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = invoices(api, account).await;
        if got.len() >= n {
            return got;
        }
        assert!(Instant::now() < deadline, "{} of {n} invoices", got.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn one_purchase_per_crossing_under_fifty_concurrent_deductions(api: Arc<Api>) {
    let account = api.open_account_on(json!({ "plan": "starter" })).await;
    api.grant(&account, 1_000).await.expect(201);
    let set = api
        .put(
            &format!("/v1/accounts/{account}/auto-top-up"),
            &api.owner(&account),
            json!({ "threshold": 600, "package": "pro", "method": "bank_transfer" }),
        )
        .await;
    let body = set.expect(200);
    assert_eq!(body["threshold"], 600);
    assert_eq!(body["method"], "bank_transfer");
    // 50 deductions of 10 at once: 1,000 → 500, across 600 once.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let api = api.clone();
            let account = account.clone();
            tokio::spawn(async move {
                api.deduct(&account, json!({ "operation": "clustering" }))
                    .await
                    .status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 201);
    }
    let bought = wait_invoices(&api, &account, 1).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(invoices(&api, &account).await.len(), 1, "one purchase");
    assert_eq!(bought[0]["status"], "pending");
    let state = api
        .get("/v1/account/auto-top-up", &api.owner(&account))
        .await
        .expect(200)
        .clone();
    assert_eq!(state["triggered_today"], 1);
    assert_eq!(state["consecutive_failures"], 0);

    // Still below: more deductions buy nothing more.
    api.deduct(&account, json!({ "operation": "clustering" }))
        .await
        .expect(201);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(invoices(&api, &account).await.len(), 1);

    // Paid: 490 + 2,000 is above again; the next crossing buys again.
    let p = api.head().await;
    let payments = api
        .get(
            &format!("/v1/admin/payments?account_id={account}&min_position={p}"),
            &api.developer(),
        )
        .await
        .expect(200)["items"]
        .as_array()
        .unwrap()
        .clone();
    let payment = payments[0]["id"].as_str().unwrap();
    api.post_empty(
        &format!("/v1/admin/payments/{payment}/approve"),
        &api.developer(),
        None,
    )
    .await
    .expect(200);
    assert_eq!(api.balance_now(&account).await, 2_490);
    api.deduct(
        &account,
        json!({ "operation": "site_structure", "units": 38 }),
    )
    .await
    .expect(201);
    wait_invoices(&api, &account, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_purchase_per_crossing_on_postgres() {
    common::run(
        Backend::Postgres,
        one_purchase_per_crossing_under_fifty_concurrent_deductions,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_purchase_per_crossing_on_sqlite() {
    common::run(
        Backend::Sqlite,
        one_purchase_per_crossing_under_fifty_concurrent_deductions,
    )
    .await;
}

async fn the_configuration_is_checked_and_for_managers(api: &Api) {
    let account = api.open_account_on(json!({ "plan": "starter" })).await;
    let path = format!("/v1/accounts/{account}/auto-top-up");
    let unset = api.get(&path, &api.owner(&account)).await;
    let body = unset.expect(200);
    assert_eq!(body["enabled"], false);
    assert_eq!(body["threshold"], Value::Null);
    for (bad, field) in [
        (
            json!({ "threshold": 10, "package": "nope", "method": "bank_transfer" }),
            "package",
        ),
        (
            json!({ "threshold": 10, "package": "pro", "method": "paypal" }),
            "method",
        ),
        (
            json!({ "threshold": -1, "package": "pro", "method": "bank_transfer" }),
            "auto_top_up",
        ),
        (
            json!({ "threshold": 10, "package": "pro", "method": "bank_transfer", "daily_limit": 0 }),
            "auto_top_up",
        ),
    ] {
        let r = api.put(&path, &api.owner(&account), bad.clone()).await;
        assert_eq!(
            r.expect_error(422, "invalid_request")["field"],
            field,
            "{bad}"
        );
    }
    // Stripe is not configured here: 503.
    api.put(
        &path,
        &api.owner(&account),
        json!({ "threshold": 10, "package": "pro", "method": "stripe" }),
    )
    .await
    .expect_error(503, "unavailable");
    api.put(
        &path,
        &api.viewer(&account),
        json!({ "threshold": 10, "package": "pro", "method": "bank_transfer" }),
    )
    .await
    .expect_error(403, "forbidden");
    let other = api.open_account().await;
    api.get(&path, &api.owner(&other))
        .await
        .expect_error(404, "not_found");
}
on_both_backends!(the_configuration_is_checked_and_for_managers);
