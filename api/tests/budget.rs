//! Monthly budgets through the real router over real HTTP, on PostgreSQL
//! and SQLite (issue 17): thresholds reached once a month, a hard cap that
//! refuses deductions and holds with 402 `budget_exceeded` and never lets
//! concurrent deductions pass it, roles and tenants.

mod common;

use std::sync::Arc;

use common::{key, Api};
use serde_json::{json, Value};

async fn put_budget(api: &Api, account: &str, body: Value) -> common::Resp {
    api.put(
        &format!("/v1/accounts/{account}/budget"),
        &api.owner(account),
        body,
    )
    .await
}

async fn budget(api: &Api, account: &str) -> Value {
    api.get(
        &format!("/v1/accounts/{account}/budget"),
        &api.owner(account),
    )
    .await
    .expect(200)
    .clone()
}

/// One clustering request: 10 credits.
async fn clustering(api: &Api, account: &str) -> common::Resp {
    api.deduct(account, json!({ "operation": "clustering" }))
        .await
}

async fn thresholds_are_reached_once_and_a_hard_cap_refuses_what_passes_it(api: &Api) {
    let (account, _) = api.funded_account(1_000).await;
    // No budget yet: the defaults and this month's usage.
    let none = budget(api, &account).await;
    assert_eq!(none["monthly_credits"], Value::Null);
    assert_eq!(none["thresholds_percent"], json!([50, 80, 100]));
    assert_eq!(none["hard_cap"], false);
    assert_eq!(none["used"], 0);

    clustering(api, &account).await.expect(201);
    let set = put_budget(
        api,
        &account,
        json!({ "monthly_credits": 100, "hard_cap": true }),
    )
    .await;
    let body = set.expect(200);
    assert_eq!(body["monthly_credits"], 100);
    assert_eq!(body["thresholds_percent"], json!([50, 80, 100]));
    assert_eq!(body["used"], 10, "usage before the budget counts");
    assert_eq!(body["remaining"], 90);
    assert!(body["position"].as_i64().is_some());

    for _ in 0..4 {
        clustering(api, &account).await.expect(201);
    }
    assert_eq!(
        budget(api, &account).await["thresholds_reached"],
        json!([50])
    );
    // A hold of 40 fits (50 used + 40 held = 90); one of 20 would not.
    let hold = api
        .post(
            &format!("/v1/accounts/{account}/holds"),
            &api.bot(Some(&account)),
            Some(&key()),
            json!({ "credits": 40, "ttl_seconds": 3600 }),
        )
        .await;
    let hold_id = hold.expect(201)["hold_id"]
        .as_str()
        .or(hold.body["id"].as_str())
        .unwrap()
        .to_owned();
    let refused = api
        .post(
            &format!("/v1/accounts/{account}/holds"),
            &api.bot(Some(&account)),
            Some(&key()),
            json!({ "credits": 20, "ttl_seconds": 3600 }),
        )
        .await;
    let details = refused.expect_error(402, "budget_exceeded");
    assert_eq!(
        (
            &details["monthly_credits"],
            &details["used"],
            &details["held"],
            &details["required"]
        ),
        (&json!(100), &json!(50), &json!(40), &json!(20)),
        "{details}"
    );
    // The hold is captured (40 used: 90, the 80 % threshold), one more
    // deduction reaches 100 %, the next is refused and changes nothing.
    api.post(
        &format!("/v1/accounts/{account}/holds/{hold_id}/capture"),
        &api.bot(Some(&account)),
        Some(&key()),
        json!({ "credits": 40 }),
    )
    .await
    .expect(200);
    clustering(api, &account).await.expect(201);
    let before = api.balance_now(&account).await;
    clustering(api, &account)
        .await
        .expect_error(402, "budget_exceeded");
    assert_eq!(api.balance_now(&account).await, before);
    let now = budget(api, &account).await;
    assert_eq!(now["used"], 100);
    assert_eq!(now["remaining"], 0);
    assert_eq!(now["thresholds_reached"], json!([50, 80, 100]));

    // Soft budget: nothing refused any more; removing it: none at all.
    put_budget(api, &account, json!({ "monthly_credits": 100 }))
        .await
        .expect(200);
    clustering(api, &account).await.expect(201);
    let removed = put_budget(api, &account, json!({ "monthly_credits": null })).await;
    assert_eq!(removed.expect(200)["monthly_credits"], Value::Null);
    clustering(api, &account).await.expect(201);
}
on_both_backends!(thresholds_are_reached_once_and_a_hard_cap_refuses_what_passes_it);

async fn budgets_are_for_managers_of_their_own_account_and_checked(api: &Api) {
    let (account, _) = api.funded_account(100).await;
    let (other, _) = api.funded_account(100).await;
    let path = format!("/v1/accounts/{account}/budget");
    api.get(&path, &api.viewer(&account))
        .await
        .expect_error(403, "forbidden");
    api.put(
        &path,
        &api.bot(Some(&account)),
        json!({ "monthly_credits": 10 }),
    )
    .await
    .expect_error(403, "forbidden");
    api.get(&path, &api.owner(&other))
        .await
        .expect_error(404, "not_found");
    // The developer and the alias work.
    api.put(
        &path,
        &api.developer(),
        json!({ "monthly_credits": 500, "thresholds_percent": [90, 25, 25] }),
    )
    .await
    .expect(200);
    let own = api.get("/v1/account/budget", &api.owner(&account)).await;
    assert_eq!(own.expect(200)["thresholds_percent"], json!([25, 90]));
    for bad in [
        json!({ "monthly_credits": 0 }),
        json!({ "monthly_credits": 10, "thresholds_percent": [0] }),
        json!({ "monthly_credits": 10, "thresholds_percent": [1001] }),
        json!({ "monthly_credits": 10, "thresholds_percent": [1,2,3,4,5,6,7,8,9,10,11] }),
        json!({ "monthly_credits": 10, "surprise": true }),
        json!({ "monthly_credits": "ten" }),
    ] {
        let r = api.put(&path, &api.owner(&account), bad.clone()).await;
        assert_eq!(r.status, 422, "{bad}: {}", r.text);
    }
}
on_both_backends!(budgets_are_for_managers_of_their_own_account_and_checked);

/// Fifty deductions at once against a hard cap of 200 credits: exactly
/// twenty pass (10 credits each), the rest are 402, and the usage is the
/// cap.
async fn concurrent_deductions_never_pass_a_hard_cap(api: Arc<Api>) {
    let (account, _) = api.funded_account(10_000).await;
    put_budget(
        &api,
        &account,
        json!({ "monthly_credits": 200, "hard_cap": true }),
    )
    .await
    .expect(200);
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let api = api.clone();
            let account = account.clone();
            tokio::spawn(async move { clustering(&api, &account).await.status })
        })
        .collect();
    let mut passed = 0;
    let mut refused = 0;
    for t in tasks {
        match t.await.unwrap() {
            201 => passed += 1,
            402 => refused += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((passed, refused), (20, 30));
    assert_eq!(budget(&api, &account).await["used"], 200);
    assert_eq!(api.balance_now(&account).await, 10_000 - 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deductions_never_pass_a_hard_cap_on_postgres() {
    common::run(
        common::Backend::Postgres,
        concurrent_deductions_never_pass_a_hard_cap,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_deductions_never_pass_a_hard_cap_on_sqlite() {
    common::run(
        common::Backend::Sqlite,
        concurrent_deductions_never_pass_a_hard_cap,
    )
    .await;
}
