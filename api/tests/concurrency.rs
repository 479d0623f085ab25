//! Concurrency is tested, not assumed: many parallel requests on one
//! account over real HTTP, on PostgreSQL and SQLite, then the invariants.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::{key, Api, Resp};
use serde_json::json;
use tokio::task::JoinSet;

const PARALLEL_DEDUCTIONS: usize = 200;
const STARTING_CREDITS: i64 = 100;

async fn two_hundred_parallel_one_credit_deductions_on_a_balance_of_100_succeed_exactly_100_times(
    api: Arc<Api>,
) {
    let (id, _) = api.funded_account(STARTING_CREDITS).await;
    let bot = api.bot(Some(&id));
    let mut tasks = JoinSet::new();
    for _ in 0..PARALLEL_DEDUCTIONS {
        let (api, id, bot) = (api.clone(), id.clone(), bot.clone());
        tasks.spawn(async move {
            // content_generation costs 1 credit per 100 words: 1 word is 1 credit.
            api.post(
                &format!("/v1/accounts/{id}/deductions"),
                &bot,
                Some(&key()),
                json!({ "operation": "content_generation", "units": 1 }),
            )
            .await
        });
    }
    let mut succeeded: Vec<Resp> = Vec::new();
    let mut refused = 0;
    let mut other = Vec::new();
    while let Some(r) = tasks.join_next().await {
        let r = r.expect("a request task");
        match r.status {
            201 => succeeded.push(r),
            402 => {
                let details = r.expect_error(402, "insufficient_credits");
                assert_eq!(
                    details,
                    &json!({ "balance": 0, "available": 0, "required": 1 }),
                    "a refusal only when nothing is left"
                );
                refused += 1;
            }
            _ => other.push(format!("{} {}", r.status, r.text)),
        }
    }
    assert!(other.is_empty(), "only 201 or 402: {other:#?}");
    assert_eq!(succeeded.len(), 100);
    assert_eq!(refused, PARALLEL_DEDUCTIONS - 100);

    // Each success saw its own balance: 99, 98, ... 0, each once.
    let mut after: Vec<i64> = succeeded
        .iter()
        .map(|r| r.body["balance_after"].as_i64().unwrap())
        .collect();
    after.sort_unstable();
    assert_eq!(after, (0..100).collect::<Vec<_>>());
    let deduction_ids: HashSet<String> = succeeded
        .iter()
        .map(|r| r.body["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deduction_ids.len(), 100);
    let max_position = succeeded.iter().map(Resp::position).max().unwrap();
    let positions: HashSet<i64> = succeeded.iter().map(Resp::position).collect();
    assert_eq!(
        positions.len(),
        100,
        "every deduction has its own log position"
    );

    let balance = api.balance(&id, max_position).await;
    assert_eq!(balance["balance"], 0);
    assert_eq!(balance["held"], 0);
    assert_eq!(balance["available"], 0);
    assert_eq!(balance["current_period"]["granted"], STARTING_CREDITS);
    assert_eq!(balance["current_period"]["used"], 100);

    let path = format!("/v1/accounts/{id}/transactions?min_position={max_position}&limit=500");
    let page = api.get(&path, &api.developer()).await;
    let body = page.expect(200);
    assert!(body["next_cursor"].is_null());
    let entries = body["items"].as_array().unwrap();
    assert_eq!(entries.len(), 101, "100 deductions and the grant");
    let deductions: Vec<_> = entries
        .iter()
        .filter(|t| t["type"] == "deduction")
        .collect();
    assert_eq!(deductions.len(), 100);
    assert!(deductions.iter().all(|t| t["amount"] == -1));
    let entry_ids: HashSet<String> = deductions
        .iter()
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(entry_ids, deduction_ids);
    let sum: i64 = entries.iter().map(|t| t["amount"].as_i64().unwrap()).sum();
    assert_eq!(sum, 0, "the balance is the sum of the signed amounts");
    // Newest first, the running balance climbs back to the grant.
    let running: Vec<i64> = entries
        .iter()
        .map(|t| t["balance_after"].as_i64().unwrap())
        .collect();
    assert_eq!(running, (0..=100).collect::<Vec<_>>());

    let usage = api
        .items(
            &format!("/v1/accounts/{id}/usage"),
            max_position,
            "&limit=500",
        )
        .await;
    assert_eq!(usage.len(), 100);
    assert_eq!(
        usage
            .iter()
            .map(|u| u["credits"].as_i64().unwrap())
            .sum::<i64>(),
        100
    );
    let usage_ids: HashSet<String> = usage
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(usage_ids, deduction_ids);

    let analytics = api
        .get(
            &format!(
                "/v1/accounts/{id}/usage/analytics?min_position={max_position}&group_by=operation"
            ),
            &api.developer(),
        )
        .await;
    let totals = &analytics.expect(200)["totals"];
    assert_eq!(totals["credits"], 100);
    assert_eq!(totals["count"], 100);
}
on_both_backends!(shared two_hundred_parallel_one_credit_deductions_on_a_balance_of_100_succeed_exactly_100_times);

const PARALLEL_RETRIES: usize = 20;

async fn parallel_retries_of_one_key_apply_once_and_all_answer_the_same(api: Arc<Api>) {
    let (id, _) = api.funded_account(STARTING_CREDITS).await;
    let bot = api.bot(Some(&id));
    let k = key();
    let mut tasks = JoinSet::new();
    for _ in 0..PARALLEL_RETRIES {
        let (api, id, bot, k) = (api.clone(), id.clone(), bot.clone(), k.clone());
        tasks.spawn(async move {
            api.post(
                &format!("/v1/accounts/{id}/deductions"),
                &bot,
                Some(&k),
                json!({ "operation": "clustering" }),
            )
            .await
        });
    }
    let mut answers = Vec::new();
    while let Some(r) = tasks.join_next().await {
        answers.push(r.expect("a request task"));
    }
    for r in &answers {
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(
            r.text, answers[0].text,
            "every retry answers the first outcome"
        );
    }
    let fresh = answers
        .iter()
        .filter(|r| r.header("idempotent-replayed").is_none())
        .count();
    assert_eq!(fresh, 1, "exactly one attempt is not a replay");
    let balance = api.balance(&id, answers[0].position()).await;
    assert_eq!(balance["balance"], STARTING_CREDITS - 10, "applied once");
    let usage = api
        .items(
            &format!("/v1/accounts/{id}/usage"),
            answers[0].position(),
            "",
        )
        .await;
    assert_eq!(usage.len(), 1);
}
on_both_backends!(shared parallel_retries_of_one_key_apply_once_and_all_answer_the_same);

async fn parallel_retries_of_one_account_open_create_one_account(api: Arc<Api>) {
    let slug = common::unique_slug();
    let k = key();
    let mut tasks = JoinSet::new();
    for _ in 0..PARALLEL_RETRIES {
        let (api, slug, k) = (api.clone(), slug.clone(), k.clone());
        tasks.spawn(async move {
            api.post(
                "/v1/accounts",
                &api.developer(),
                Some(&k),
                Api::account_body(&slug),
            )
            .await
        });
    }
    let mut answers = Vec::new();
    while let Some(r) = tasks.join_next().await {
        answers.push(r.expect("a request task"));
    }
    for r in &answers {
        assert_eq!(r.status, 201, "{}", r.text);
        assert_eq!(
            r.text, answers[0].text,
            "every retry answers the first outcome"
        );
    }
    let p = answers[0].position();
    let found = api
        .items("/v1/admin/accounts", p, &format!("&q={slug}"))
        .await;
    assert_eq!(found.len(), 1, "one account for one key");
}
on_both_backends!(shared parallel_retries_of_one_account_open_create_one_account);
