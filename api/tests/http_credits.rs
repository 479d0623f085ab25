//! Moving credits through the real router over real HTTP, on PostgreSQL and
//! SQLite (SPEC §3): deductions, holds and their captures and releases,
//! refunds, grants and adjustments; idempotent replay of every write; and
//! time at work (a hold past its TTL, a grant past its expiry).

mod common;

use std::time::{Duration, Instant};

use common::{decimal, key, time, unique_slug, Api, Resp};
use reqwest::Method;
use serde_json::{json, Value};

async fn a_deduction_answers_its_credits_balance_cost_version_and_position(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let r = api
        .deduct(
            &id,
            json!({
                "operation": "clustering",
                "model": "gpt-4o",
                "tokens_input": 1200,
                "tokens_output": 300,
                "cost_usd": "0.0123",
                "related_object_type": "article",
                "related_object_id": "a-1",
                "metadata": { "job": "j-1" },
            }),
        )
        .await;
    let d = r.expect(201);
    let first_id = d["id"].as_str().unwrap().to_owned();
    uuid::Uuid::parse_str(&first_id).unwrap();
    assert_eq!(d["credits"], 10);
    assert_eq!(d["operation"], "clustering");
    assert_eq!(d["units"], 1);
    let first_cost_version = d["cost_version"].as_i64().unwrap();
    assert!(first_cost_version >= 1);
    assert_eq!(d["balance_after"], 90);
    assert_eq!(d["available_after"], 90);
    time(&d["recorded_at"]);
    let p1 = r.position();

    // content_generation costs 1 per 100 words: 250 words are 3 credits.
    let r = api
        .deduct(
            &id,
            json!({ "operation": "content_generation", "units": 250 }),
        )
        .await;
    let d = r.expect(201);
    assert_eq!(d["credits"], 3);
    assert_eq!(d["units"], 250);
    assert_eq!(d["balance_after"], 87);
    let p2 = r.position();
    assert!(p2 > p1);

    let balance = api.balance(&id, p2).await;
    assert_eq!(balance["balance"], 87);
    assert_eq!(balance["available"], 87);

    let usage = api.items(&format!("/v1/accounts/{id}/usage"), p2, "").await;
    assert_eq!(usage.len(), 2);
    assert_eq!(usage[0]["operation"], "content_generation");
    assert_eq!(usage[0]["units"], 250);
    assert_eq!(usage[0]["credits"], 3);
    let u = &usage[1];
    assert_eq!(u["id"], first_id.as_str());
    assert_eq!(u["model"], "gpt-4o");
    assert_eq!(u["tokens_input"], 1200);
    assert_eq!(u["tokens_output"], 300);
    assert_eq!(decimal(&u["cost_usd"]), "0.0123".parse().unwrap());
    assert_eq!(u["related_object_type"], "article");
    assert_eq!(u["related_object_id"], "a-1");
    assert_eq!(u["metadata"], json!({ "job": "j-1" }));
    assert_eq!(u["cost_version"], first_cost_version);
}
on_both_backends!(a_deduction_answers_its_credits_balance_cost_version_and_position);

async fn a_hold_is_captured_for_less_more_or_all_of_it_or_released(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&id));
    let capture = |hold: &str| format!("/v1/accounts/{id}/holds/{hold}/capture");

    let h = api
        .hold(
            &id,
            json!({ "operation": "clustering", "units": 2, "ttl_seconds": 600 }),
        )
        .await;
    let hb = h.expect(201);
    let hold_a = hb["id"].as_str().unwrap().to_owned();
    assert_eq!(hb["credits"], 20);
    assert_eq!(hb["operation"], "clustering");
    assert_eq!(hb["units"], 2);
    assert_eq!(hb["available_after"], 80);
    let held_at = time(&hb["held_at"]);
    assert_eq!(
        time(&hb["expires_at"]) - held_at,
        chrono::Duration::seconds(600)
    );
    let b = api.balance(&id, h.position()).await;
    assert_eq!(
        (
            b["balance"].as_i64(),
            b["held"].as_i64(),
            b["available"].as_i64()
        ),
        (Some(100), Some(20), Some(80))
    );

    // Less than held: the rest is released.
    let c = api
        .post(
            &capture(&hold_a),
            &bot,
            Some(&key()),
            json!({ "credits": 15 }),
        )
        .await;
    let cb = c.expect(200);
    assert_eq!(cb["hold_id"], hold_a.as_str());
    assert_eq!(cb["held"], 20);
    assert_eq!(cb["credits"], 15);
    assert_eq!(cb["released"], 5);
    assert_eq!(cb["balance_after"], 85);
    assert_eq!(cb["available_after"], 85);
    assert_eq!(cb["operation"], "clustering");
    c.position();

    // More than held, which the balance allows.
    let h = api.hold(&id, json!({ "credits": 10 })).await;
    let hold_b = h.expect(201)["id"].as_str().unwrap().to_owned();
    let c = api
        .post(
            &capture(&hold_b),
            &bot,
            Some(&key()),
            json!({ "credits": 12 }),
        )
        .await;
    let cb = c.expect(200);
    assert_eq!(cb["held"], 10);
    assert_eq!(cb["credits"], 12);
    assert_eq!(cb["released"], 0);
    assert_eq!(cb["balance_after"], 73);

    // The whole hold, with an empty body.
    let h = api.hold(&id, json!({ "credits": 7 })).await;
    let hold_c = h.expect(201)["id"].as_str().unwrap().to_owned();
    let c = api.post_empty(&capture(&hold_c), &bot, Some(&key())).await;
    let cb = c.expect(200);
    assert_eq!(cb["credits"], 7);
    assert_eq!(cb["released"], 0);
    assert_eq!(cb["balance_after"], 66);

    // Released: nothing is spent.
    let h = api.hold(&id, json!({ "operation": "clustering" })).await;
    let hold_d = h.expect(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(h.body["credits"], 10);
    assert_eq!(h.body["available_after"], 56);
    let r = api
        .post_empty(
            &format!("/v1/accounts/{id}/holds/{hold_d}/release"),
            &bot,
            Some(&key()),
        )
        .await;
    let rb = r.expect(200);
    assert_eq!(rb["hold_id"], hold_d.as_str());
    assert_eq!(rb["credits"], 10);
    assert_eq!(rb["reason"], "caller");
    assert_eq!(rb["available_after"], 66);
    let p = r.position();

    let b = api.balance(&id, p).await;
    assert_eq!(b["balance"], 66);
    assert_eq!(b["held"], 0);
    assert_eq!(b["available"], 66);
    let captures = api
        .items(
            &format!("/v1/accounts/{id}/transactions"),
            p,
            "&type=capture",
        )
        .await;
    let amounts: Vec<i64> = captures
        .iter()
        .map(|t| t["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![-7, -12, -15]);
    let usage = api.items(&format!("/v1/accounts/{id}/usage"), p, "").await;
    assert_eq!(usage.len(), 3);
    assert_eq!(usage[2]["hold_id"], hold_a.as_str());
}
on_both_backends!(a_hold_is_captured_for_less_more_or_all_of_it_or_released);

async fn a_deduction_is_refunded_in_part_then_the_rest(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let d = api.deduct(&id, json!({ "operation": "clustering" })).await;
    let deduction = d.expect(201)["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/accounts/{id}/deductions/{deduction}/refund");

    let r = api
        .post(
            &path,
            &api.developer(),
            Some(&key()),
            json!({ "credits": 4, "reason": "partial failure" }),
        )
        .await;
    let rb = r.expect(201);
    uuid::Uuid::parse_str(rb["id"].as_str().unwrap()).unwrap();
    assert_eq!(rb["deduction_id"], deduction.as_str());
    assert_eq!(rb["credits"], 4);
    assert_eq!(rb["reason"], "partial failure");
    assert_eq!(rb["balance_after"], 94);
    time(&rb["refunded_at"]);
    r.position();

    // Refunds are the platform's: the account's own admin may not.
    api.post(
        &path,
        &api.admin(&id),
        Some(&key()),
        json!({ "reason": "the job failed" }),
    )
    .await
    .expect_error(403, "forbidden");

    // No credits: the rest.
    let r = api
        .post(
            &path,
            &api.developer(),
            Some(&key()),
            json!({ "reason": "the job failed" }),
        )
        .await;
    let rb = r.expect(201);
    assert_eq!(rb["credits"], 6);
    assert_eq!(rb["balance_after"], 100);
    let p = r.position();

    let refunds = api
        .items(
            &format!("/v1/accounts/{id}/transactions"),
            p,
            "&type=refund",
        )
        .await;
    let amounts: Vec<i64> = refunds
        .iter()
        .map(|t| t["amount"].as_i64().unwrap())
        .collect();
    assert_eq!(amounts, vec![6, 4]);
    assert_eq!(api.balance(&id, p).await["balance"], 100);

    // Nothing is left to refund.
    let r = api
        .post(
            &path,
            &api.developer(),
            Some(&key()),
            json!({ "credits": 1 }),
        )
        .await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "credits");

    // A captured hold is a deduction too: its id refunds it.
    let h = api.hold(&id, json!({ "credits": 8 })).await;
    let hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let c = api
        .post_empty(
            &format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &api.bot(Some(&id)),
            Some(&key()),
        )
        .await;
    let captured = c.expect(200)["id"].as_str().unwrap().to_owned();
    let r = api
        .post(
            &format!("/v1/accounts/{id}/deductions/{captured}/refund"),
            &api.developer(),
            Some(&key()),
            json!({ "reason": "job failed" }),
        )
        .await;
    assert_eq!(r.expect(201)["credits"], 8);
    assert_eq!(r.body["balance_after"], 100);
}
on_both_backends!(a_deduction_is_refunded_in_part_then_the_rest);

async fn grants_with_an_expiry_and_signed_adjustments_move_the_balance(api: &Api) {
    let id = api.open_account().await;
    let dev = api.developer();
    let expires_at = (chrono::Utc::now() + chrono::Duration::days(30))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let g = api
        .post(
            &format!("/v1/accounts/{id}/grants"),
            &dev,
            Some(&key()),
            json!({
                "credits": 50,
                "source": "promotional",
                "expires_at": expires_at,
                "description": "spring promotion",
            }),
        )
        .await;
    let gb = g.expect(201);
    uuid::Uuid::parse_str(gb["id"].as_str().unwrap()).unwrap();
    assert_eq!(gb["credits"], 50);
    assert_eq!(gb["source"], "promotional");
    assert_eq!(time(&gb["expires_at"]), time(&json!(expires_at)));
    assert_eq!(gb["description"], "spring promotion");
    assert_eq!(gb["balance_after"], 50);
    time(&gb["granted_at"]);
    g.position();

    let a = api
        .post(
            &format!("/v1/admin/accounts/{id}/adjust-credits"),
            &dev,
            Some(&key()),
            json!({ "credits": -20, "reason": "goodwill correction" }),
        )
        .await;
    let ab = a.expect(201);
    assert_eq!(ab["credits"], -20);
    assert_eq!(ab["reason"], "goodwill correction");
    assert_eq!(ab["balance_after"], 30);
    time(&ab["adjusted_at"]);
    a.position();

    let a = api
        .post(
            &format!("/v1/admin/accounts/{id}/adjust-credits/"),
            &dev,
            Some(&key()),
            json!({ "credits": 5, "reason": "trailing slash" }),
        )
        .await;
    assert_eq!(a.expect(201)["balance_after"], 35);
    let p = a.position();

    let b = api.balance(&id, p).await;
    assert_eq!(b["balance"], 35);
    assert_eq!(b["current_period"]["granted"], 50);
    let tx = api
        .items(&format!("/v1/accounts/{id}/transactions"), p, "")
        .await;
    let kinds: Vec<(&str, i64)> = tx
        .iter()
        .map(|t| (t["type"].as_str().unwrap(), t["amount"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        vec![("adjustment", 5), ("adjustment", -20), ("grant", 50)]
    );
}
on_both_backends!(grants_with_an_expiry_and_signed_adjustments_move_the_balance);

// ---------------------------------------------------------------------------
// Idempotent replay
// ---------------------------------------------------------------------------

/// Sends the same request twice with one key: the second answer is the
/// first, byte for byte, marked `Idempotent-Replayed: true`.
#[track_caller]
fn assert_replayed(first: &Resp, second: &Resp, what: &str) {
    assert!(
        (200..300).contains(&first.status),
        "{what}: the first attempt succeeds: {} {}",
        first.status,
        first.text
    );
    assert_eq!(
        first.header("idempotent-replayed"),
        None,
        "{what}: a first answer is no replay"
    );
    assert_eq!(second.status, first.status, "{what}: {}", second.text);
    assert_eq!(
        second.text, first.text,
        "{what}: a replay is byte-identical"
    );
    assert_eq!(
        second.header("idempotent-replayed"),
        Some("true"),
        "{what}: a replay says so"
    );
}

async fn twice(api: &Api, path: &str, token: &str, body: Option<Value>) -> (Resp, Resp) {
    let k = key();
    let send = || {
        api.send(
            Method::POST,
            path,
            Some(token),
            Some(&k),
            body.as_ref().map(|b| b.to_string()),
        )
    };
    let first = send().await;
    let second = send().await;
    (first, second)
}

async fn a_retry_with_the_same_key_and_body_replays_the_first_response(api: &Api) {
    let dev = api.developer();
    let slug = unique_slug();
    let (a, b) = twice(api, "/v1/accounts", &dev, Some(Api::account_body(&slug))).await;
    assert_replayed(&a, &b, "open");
    let id = a.body["account_id"].as_str().unwrap().to_owned();
    let bot = api.bot(Some(&id));

    let (a, b) = twice(
        api,
        &format!("/v1/accounts/{id}/grants"),
        &dev,
        Some(json!({ "credits": 100, "source": "purchase" })),
    )
    .await;
    assert_replayed(&a, &b, "grant");

    let deductions = format!("/v1/accounts/{id}/deductions");
    let (a, b) = twice(
        api,
        &deductions,
        &bot,
        Some(json!({ "operation": "clustering" })),
    )
    .await;
    assert_replayed(&a, &b, "deduction");
    let deduction = a.body["id"].as_str().unwrap().to_owned();
    // The same JSON, spelled differently, is the same request.
    let k = key();
    let first = api
        .send(
            Method::POST,
            &deductions,
            Some(&bot),
            Some(&k),
            Some(r#"{"operation":"image_generation","units":1}"#.into()),
        )
        .await;
    let second = api
        .send(
            Method::POST,
            &deductions,
            Some(&bot),
            Some(&k),
            Some("{ \"units\" : 1,\n  \"operation\" : \"image_generation\" }".into()),
        )
        .await;
    assert_replayed(&first, &second, "reformatted deduction");

    let (a, b) = twice(
        api,
        &format!("/v1/accounts/{id}/holds"),
        &bot,
        Some(json!({ "credits": 10 })),
    )
    .await;
    assert_replayed(&a, &b, "hold");
    let hold = a.body["id"].as_str().unwrap().to_owned();
    let (a, b) = twice(
        api,
        &format!("/v1/accounts/{id}/holds/{hold}/capture"),
        &bot,
        Some(json!({ "credits": 4 })),
    )
    .await;
    assert_replayed(&a, &b, "capture");

    let h = api.hold(&id, json!({ "credits": 7 })).await;
    let hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let (a, b) = twice(
        api,
        &format!("/v1/accounts/{id}/holds/{hold}/capture"),
        &bot,
        None,
    )
    .await;
    assert_replayed(&a, &b, "whole-hold capture");

    let h = api.hold(&id, json!({ "credits": 6 })).await;
    let hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let (a, b) = twice(
        api,
        &format!("/v1/accounts/{id}/holds/{hold}/release"),
        &bot,
        None,
    )
    .await;
    assert_replayed(&a, &b, "release");

    let (a, b) = twice(
        api,
        &format!("/v1/accounts/{id}/deductions/{deduction}/refund"),
        &dev,
        Some(json!({ "credits": 3, "reason": "retry" })),
    )
    .await;
    assert_replayed(&a, &b, "refund");

    let (a, b) = twice(
        api,
        &format!("/v1/admin/accounts/{id}/adjust-credits"),
        &dev,
        Some(json!({ "credits": -9, "reason": "retry" })),
    )
    .await;
    assert_replayed(&a, &b, "adjustment");
    let p = a.position();

    // 100 - 10 - 5 - 4 - 7 + 3 - 9: every write applied once.
    let balance = api.balance(&id, p).await;
    assert_eq!(
        (balance["balance"].as_i64(), balance["held"].as_i64()),
        (Some(68), Some(0))
    );
    let types: Vec<String> = api
        .items(&format!("/v1/accounts/{id}/transactions"), p, "")
        .await
        .iter()
        .map(|t| t["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        vec![
            "adjustment",
            "refund",
            "capture",
            "capture",
            "deduction",
            "deduction",
            "grant"
        ]
    );
    let same_slug = api
        .items("/v1/admin/accounts", p, &format!("&q={slug}"))
        .await;
    assert_eq!(same_slug.len(), 1, "the open was applied once");
}
on_both_backends!(a_retry_with_the_same_key_and_body_replays_the_first_response);

/// More keys than the aggregate remembers, so the first one is only in the
/// store's key table.
const KEYS_BEYOND_THE_AGGREGATES_WINDOW: usize = 130;

async fn deduct_then_push_the_key_out_of_the_aggregates_window(
    api: &Api,
) -> (String, String, Value, Resp) {
    let (id, _) = api.funded_account(1_000).await;
    let path = format!("/v1/accounts/{id}/deductions");
    let body = json!({ "operation": "content_generation", "units": 1 });
    let k = key();
    let first = api
        .post(&path, &api.bot(Some(&id)), Some(&k), body.clone())
        .await;
    first.expect(201);
    for _ in 0..KEYS_BEYOND_THE_AGGREGATES_WINDOW {
        api.deduct(&id, body.clone()).await.expect(201);
    }
    (id, k, body, first)
}

async fn an_old_key_replays_its_first_response_after_the_account_is_suspended(api: &Api) {
    let (id, k, body, first) = deduct_then_push_the_key_out_of_the_aggregates_window(api).await;
    api.post(
        &format!("/v1/admin/accounts/{id}/suspend"),
        &api.developer(),
        None,
        json!({}),
    )
    .await
    .expect(200);
    let retry = api
        .post(
            &format!("/v1/accounts/{id}/deductions"),
            &api.bot(Some(&id)),
            Some(&k),
            body,
        )
        .await;
    assert_replayed(
        &first,
        &retry,
        "an old deduction retried on a suspended account",
    );
}
on_both_backends!(an_old_key_replays_its_first_response_after_the_account_is_suspended);

async fn an_old_key_replays_its_first_response_after_the_credits_ran_out(api: &Api) {
    let (id, k, body, first) = deduct_then_push_the_key_out_of_the_aggregates_window(api).await;
    let left = 1_000 - 1 - KEYS_BEYOND_THE_AGGREGATES_WINDOW as i64;
    api.post(
        &format!("/v1/admin/accounts/{id}/adjust-credits"),
        &api.developer(),
        Some(&key()),
        json!({ "credits": -left, "reason": "drain" }),
    )
    .await
    .expect(201);
    let retry = api
        .post(
            &format!("/v1/accounts/{id}/deductions"),
            &api.bot(Some(&id)),
            Some(&k),
            body,
        )
        .await;
    assert_replayed(
        &first,
        &retry,
        "an old deduction retried on an empty account",
    );
}
on_both_backends!(an_old_key_replays_its_first_response_after_the_credits_ran_out);

// ---------------------------------------------------------------------------
// Expiry
// ---------------------------------------------------------------------------

async fn a_hold_past_its_ttl_is_released_by_the_sweeper(api: &Api) {
    let (id, _) = api.funded_account(50).await;
    let h = api
        .hold(&id, json!({ "credits": 20, "ttl_seconds": 1 }))
        .await;
    let hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let b = api.balance(&id, h.position()).await;
    assert_eq!(b["held"], 20);

    let deadline = Instant::now() + Duration::from_secs(10);
    let released = loop {
        let b = api.balance(&id, 0).await;
        if b["held"] == 0 {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "the hold was not released within 10 s: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(released["balance"], 50);
    assert_eq!(released["available"], 50);
    let p = released["position"].as_i64().unwrap();
    let tx = api
        .items(&format!("/v1/accounts/{id}/transactions"), p, "")
        .await;
    assert_eq!(
        tx.len(),
        1,
        "an expired hold leaves no ledger entry: {tx:?}"
    );
    assert_eq!(tx[0]["type"], "grant");
    assert!(api
        .items(&format!("/v1/accounts/{id}/usage"), p, "")
        .await
        .is_empty());

    let c = api
        .post(
            &format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &api.bot(Some(&id)),
            Some(&key()),
            json!({ "credits": 5 }),
        )
        .await;
    c.expect_error(409, "conflict");
    let b = api.balance(&id, 0).await;
    assert_eq!(b["balance"], 50);
}
on_both_backends!(a_hold_past_its_ttl_is_released_by_the_sweeper);

async fn an_expired_grant_leaves_the_balance_at_its_expiry_instant(api: &Api) {
    let id = api.open_account().await;
    let dev = api.developer();
    let expires_at = (chrono::Utc::now() + chrono::Duration::seconds(2))
        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    api.post(
        &format!("/v1/accounts/{id}/grants"),
        &dev,
        Some(&key()),
        json!({ "credits": 10, "source": "promotional", "expires_at": expires_at }),
    )
    .await
    .expect(201);
    api.grant(&id, 5).await;
    // The soonest-expiring grant is burnt first: 7 of its 10 are left.
    let d = api
        .deduct(
            &id,
            json!({ "operation": "content_generation", "units": 250 }),
        )
        .await;
    assert_eq!(d.expect(201)["balance_after"], 12);

    let deadline = Instant::now() + Duration::from_secs(10);
    let expired = loop {
        let b = api.balance(&id, d.position()).await;
        if b["balance"] != 12 {
            break b;
        }
        assert!(
            Instant::now() < deadline,
            "the grant did not expire within 10 s: {b}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(expired["balance"], 5);
    assert_eq!(expired["available"], 5);
    let p = expired["position"].as_i64().unwrap();
    let tx = api
        .items(&format!("/v1/accounts/{id}/transactions"), p, "")
        .await;
    let kinds: Vec<(&str, i64, i64)> = tx
        .iter()
        .map(|t| {
            (
                t["type"].as_str().unwrap(),
                t["amount"].as_i64().unwrap(),
                t["balance_after"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("expiry", -7, 5),
            ("deduction", -3, 12),
            ("grant", 5, 15),
            ("grant", 10, 10)
        ]
    );
    assert_eq!(
        time(&tx[0]["occurred_at"]),
        time(&json!(expires_at)),
        "the expiry is stamped at the expiry instant"
    );
}
on_both_backends!(an_expired_grant_leaves_the_balance_at_its_expiry_instant);

async fn a_capture_in_units_is_priced_with_the_holds_operation(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&id));
    // 1,000 words of content generation: 10 credits held.
    let held = api
        .hold(
            &id,
            json!({ "operation": "content_generation", "units": 1000 }),
        )
        .await;
    let hold = held.expect(201)["id"].as_str().unwrap().to_owned();
    let captured = api
        .post(
            &format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &bot,
            Some(&key()),
            json!({ "units": 450, "model": "gpt-4o" }),
        )
        .await;
    let c = captured.expect(200);
    assert_eq!(c["credits"], 5, "450 words are 5 units of 100: {c}");
    assert_eq!(c["released"], 5);
    assert_eq!(c["operation"], "content_generation");
    assert_eq!(c["balance_after"], 95);

    // A hold of plain credits has no operation to price units with.
    let held = api.hold(&id, json!({ "credits": 20 })).await;
    let hold = held.expect(201)["id"].as_str().unwrap().to_owned();
    let refused = api
        .post(
            &format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &bot,
            Some(&key()),
            json!({ "units": 3 }),
        )
        .await;
    assert_eq!(
        refused.expect_error(422, "invalid_request")["field"],
        "operation"
    );
}
on_both_backends!(a_capture_in_units_is_priced_with_the_holds_operation);
