//! Burn rates and the forecast (issue 17) over real HTTP, on PostgreSQL
//! and SQLite: figures computed from a known history.

mod common;

use common::Api;
use serde_json::{json, Value};

async fn read(api: &Api, path: &str, account: &str) -> Value {
    let p = api.head().await;
    let sep = if path.contains('?') { '&' } else { '?' };
    api.get(&format!("{path}{sep}min_position={p}"), &api.owner(account))
        .await
        .expect(200)
        .clone()
}

async fn burn_rates_and_the_forecast_follow_the_usage(api: &Api) {
    let (account, _) = api.funded_account(1_000).await;
    // Not burning: no rate, never runs out.
    let idle = read(api, &format!("/v1/accounts/{account}/balance"), &account).await;
    assert_eq!(idle["burn_rate_7d"], json!(0));
    assert_eq!(idle["burn_rate_30d"], json!(0));
    assert_eq!(idle["runs_out_at"], Value::Null);
    assert_eq!(idle["days_left"], Value::Null);

    // 7 clustering requests today: 70 credits.
    for _ in 0..7 {
        api.deduct(&account, json!({ "operation": "clustering" }))
            .await
            .expect(201);
    }
    let balance = read(api, &format!("/v1/accounts/{account}/balance"), &account).await;
    assert_eq!(balance["available"], 930);
    assert_eq!(balance["credits_used_7d"], 70);
    assert_eq!(balance["credits_used_30d"], 70);
    assert_eq!(balance["burn_rate_7d"], json!(10));
    assert_eq!(balance["burn_rate_30d"], json!(2.33));
    // 930 credits at 10 a day: 93 days.
    assert_eq!(balance["days_left"], 93);
    let runs_out = chrono::DateTime::parse_from_rfc3339(balance["runs_out_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let expected = chrono::Utc::now() + chrono::Duration::days(93);
    assert!(
        (runs_out - expected).num_minutes().abs() < 5,
        "{runs_out} vs {expected}"
    );

    // The alias and the analytics carry the same figures.
    let own = read(api, "/v1/account/forecast", &account).await;
    assert_eq!(own["basis"], "7d");
    assert_eq!(own["days_left"], 93);
    let days = own["days"].as_array().unwrap();
    assert_eq!(days.len(), 30);
    assert_eq!(days[0]["available"], 920);
    assert_eq!(days[29]["available"], 630);
    let analytics = read(
        api,
        &format!("/v1/accounts/{account}/usage/analytics?group_by=operation"),
        &account,
    )
    .await;
    assert_eq!(analytics["burn_rate_7d"], json!(10));
    assert_eq!(analytics["totals"]["credits"], 70);

    // With a credit limit the overdraft counts, and the days never go
    // below it.
    api.patch(
        &format!("/v1/accounts/{account}"),
        &api.developer(),
        json!({ "credit_limit": 70 }),
    )
    .await
    .expect(200);
    let f = read(api, &format!("/v1/accounts/{account}/forecast"), &account).await;
    assert_eq!(f["days_left"], 100);
    assert_eq!(f["days"][29]["available"], 630);

    // Another tenant's forecast is 404.
    let other = api.open_account().await;
    api.get(
        &format!("/v1/accounts/{account}/forecast"),
        &api.owner(&other),
    )
    .await
    .expect_error(404, "not_found");
}
on_both_backends!(burn_rates_and_the_forecast_follow_the_usage);
