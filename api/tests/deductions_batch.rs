//! Batch deductions over real HTTP, on PostgreSQL and SQLite (issue 19,
//! `/work/notes/batch-contract.md`): `POST /v1/accounts/{id}/deductions/batch`
//! and the cross-account `POST /v1/deductions/batch`.
//!
//! Each item is decided like the single `POST /v1/accounts/{id}/deductions`
//! with its `idempotency_key`: applied once, replayed on a retry (in a batch
//! or as a single request, either way round), refused with the single
//! request's error in its own result while the other items go on. Atomic
//! batches apply all items or none. The batch's size is bounded (1..=1,000
//! items, 2 MiB) and its roles are the single deduction's.

mod common;

use std::time::Duration;

use common::{assert_verify_clean, decimal, key, random_account, time, Api, Resp};
use reqwest::Method;
use serde_json::{json, Value};

// ---------------------------------------------------------------- helpers

fn batch_path(account: &str) -> String {
    format!("/v1/accounts/{account}/deductions/batch")
}

const CROSS_ACCOUNT_PATH: &str = "/v1/deductions/batch";

/// A batch on the per-account route (no `Idempotency-Key` header).
async fn batch(api: &Api, account: &str, token: &str, body: Value) -> Resp {
    api.post(&batch_path(account), token, None, body).await
}

/// An item: `operation` for `units`, under key `k`.
fn item(k: &str, operation: &str, units: u64) -> Value {
    json!({ "idempotency_key": k, "operation": operation, "units": units })
}

/// An item of the cross-account form.
fn item_on(account: &str, k: &str, operation: &str) -> Value {
    json!({ "account_id": account, "idempotency_key": k, "operation": operation })
}

/// A 200's items, after checking there is one result per item sent.
#[track_caller]
fn results(r: &Resp, sent: usize) -> Vec<Value> {
    let body = r.expect(200);
    let items = body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a batch answers its items: {}", r.text))
        .clone();
    assert_eq!(items.len(), sent, "one result per item: {}", r.text);
    for (i, it) in items.iter().enumerate() {
        assert_eq!(it["index"], i, "results are in the items' order: {it}");
    }
    items
}

#[track_caller]
fn assert_counts(r: &Resp, applied: u64, replayed: u64, failed: u64) {
    let b = &r.body;
    assert_eq!(
        (
            b["applied"].as_u64(),
            b["replayed"].as_u64(),
            b["failed"].as_u64()
        ),
        (Some(applied), Some(replayed), Some(failed)),
        "applied, replayed, failed of {}",
        r.text
    );
}

/// Asserts a success item written by this batch: its key, account, credits
/// and balance afterwards; returns its deduction id.
#[track_caller]
fn assert_new(it: &Value, k: &str, account: &str, credits: i64, balance_after: i64) -> String {
    assert_eq!(it["status"], 201, "{it}");
    assert_eq!(it["idempotent_replayed"], false, "{it}");
    assert_eq!(it["idempotency_key"], k, "{it}");
    assert_eq!(it["account_id"], account, "{it}");
    assert_eq!(it["credits"], credits, "{it}");
    assert_eq!(it["balance_after"], balance_after, "{it}");
    assert!(it.get("error").is_none(), "{it}");
    let id = it["id"].as_str().unwrap_or_else(|| panic!("an id: {it}"));
    uuid::Uuid::parse_str(id).unwrap();
    assert!(it["position"].as_i64().is_some(), "a position: {it}");
    id.to_owned()
}

/// Asserts a replayed success item: the first outcome's body, marked.
#[track_caller]
fn assert_replay(it: &Value, first: &Value) {
    assert_eq!(it["status"], 201, "{it}");
    assert_eq!(it["idempotent_replayed"], true, "{it}");
    assert_eq!(
        deduction_body(it),
        deduction_body(first),
        "a replay is the first outcome's body"
    );
}

/// Asserts an error item; returns its error's details.
#[track_caller]
fn assert_failed<'a>(it: &'a Value, status: u16, code: &str) -> &'a Value {
    assert_eq!(it["status"], status, "{it}");
    assert_eq!(it["error"]["code"], code, "{it}");
    assert!(
        it["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "an error has a message: {it}"
    );
    assert!(it["error"]["details"].is_object(), "details: {it}");
    assert!(
        it.get("idempotent_replayed").is_none(),
        "an error item has no idempotent_replayed: {it}"
    );
    assert!(
        it.get("id").is_none() && it.get("credits").is_none(),
        "{it}"
    );
    &it["error"]["details"]
}

/// The single deduction's 201 body within a success item: the item
/// without its batch fields.
fn deduction_body(it: &Value) -> Value {
    let mut body = it.clone();
    let o = body.as_object_mut().expect("an item is an object");
    for k in [
        "index",
        "status",
        "idempotency_key",
        "idempotent_replayed",
        "account_id",
    ] {
        o.remove(k);
    }
    body
}

/// The account's deduction entries, once the read models have `p`.
async fn deductions(api: &Api, account: &str, p: i64) -> Vec<Value> {
    api.items(
        &format!("/v1/accounts/{account}/transactions"),
        p,
        "&type=deduction&limit=500",
    )
    .await
}

/// A client for the large batches: they may take longer than the
/// harness's 30 s on a loaded machine.
async fn send_large(api: &Api, path: &str, token: &str, body: String) -> Resp {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(180))
        .build()
        .unwrap();
    let response = client
        .request(Method::POST, api.url(path))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a readable body");
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Resp {
        status,
        headers,
        text,
        body,
    }
}

async fn suspend(api: &Api, account: &str) {
    api.post(
        &format!("/v1/admin/accounts/{account}/suspend"),
        &api.developer(),
        None,
        json!({}),
    )
    .await
    .expect(200);
}

// ---------------------------------------------------------------- applied once

async fn a_batch_applies_each_item_once_in_order(api: &Api, store: &store::Store) {
    let (id, granted_at) = api.funded_account(1_000).await;
    let keys: Vec<String> = (0..5).map(|_| key()).collect();
    let body = json!({ "items": [
        { "idempotency_key": keys[0], "operation": "clustering" },
        item(&keys[1], "content_generation", 250),
        item(&keys[2], "image_generation", 2),
        {
            "idempotency_key": keys[3],
            "operation": "linking",
            "model": "gpt-4o",
            "tokens_input": 1200,
            "tokens_output": 300,
            "cost_usd": "0.0123",
            "related_object_type": "article",
            "related_object_id": "a-1",
            "metadata": { "job": "j-1" },
        },
        item(&keys[4], "image_prompt_extraction", 3),
    ]});
    let r = batch(api, &id, &api.bot(Some(&id)), body).await;
    let items = results(&r, 5);
    assert_counts(&r, 5, 0, 0);

    // clustering 10; 250 words at 1 per 100 are 3; 2 images at 5; linking
    // 8; image_prompt_extraction 2 a request, 3 of them.
    let expected: [(&str, i64, i64, i64); 5] = [
        ("clustering", 1, 10, 990),
        ("content_generation", 250, 3, 987),
        ("image_generation", 2, 10, 977),
        ("linking", 1, 8, 969),
        ("image_prompt_extraction", 3, 6, 963),
    ];
    let mut ids = Vec::new();
    let mut last_position = granted_at;
    for (i, (it, (operation, units, credits, balance_after))) in
        items.iter().zip(expected).enumerate()
    {
        ids.push(assert_new(it, &keys[i], &id, credits, balance_after));
        assert_eq!(it["operation"], operation, "{it}");
        assert_eq!(it["units"], units, "{it}");
        assert_eq!(it["available_after"], balance_after, "{it}");
        assert!(it["cost_version"].as_i64().is_some_and(|v| v >= 1), "{it}");
        time(&it["recorded_at"]);
        let p = it["position"].as_i64().unwrap();
        assert!(
            p > granted_at && p >= last_position,
            "items are decided in order after the grant: {it}"
        );
        last_position = p;
    }
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 5, "one deduction per item");
    let p = r.position();
    assert_eq!(p, last_position, "the batch's position is its highest");

    let balance = api.balance(&id, p).await;
    assert_eq!(balance["balance"], 1_000 - 37, "{balance}");
    assert_eq!(balance["available"], 963, "{balance}");

    // One ledger entry and one usage row per item.
    let tx = deductions(api, &id, p).await;
    assert_eq!(tx.len(), 5, "{tx:?}");
    for (it, d) in items.iter().zip(&ids) {
        let t = tx
            .iter()
            .find(|t| t["id"] == d.as_str())
            .unwrap_or_else(|| panic!("deduction {d} in the transactions: {tx:?}"));
        assert_eq!(t["amount"], -it["credits"].as_i64().unwrap(), "{t}");
        assert_eq!(t["balance_after"], it["balance_after"], "{t}");
    }
    let usage = api.items(&format!("/v1/accounts/{id}/usage"), p, "").await;
    assert_eq!(usage.len(), 5, "{usage:?}");
    let mut usage_ids: Vec<&str> = usage.iter().map(|u| u["id"].as_str().unwrap()).collect();
    usage_ids.sort_unstable();
    let mut sorted_ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    sorted_ids.sort_unstable();
    assert_eq!(usage_ids, sorted_ids);
    let linking = usage.iter().find(|u| u["id"] == ids[3].as_str()).unwrap();
    assert_eq!(linking["operation"], "linking");
    assert_eq!(linking["credits"], 8);
    assert_eq!(linking["model"], "gpt-4o");
    assert_eq!(linking["tokens_input"], 1200);
    assert_eq!(linking["tokens_output"], 300);
    assert_eq!(decimal(&linking["cost_usd"]), "0.0123".parse().unwrap());
    assert_eq!(linking["related_object_type"], "article");
    assert_eq!(linking["related_object_id"], "a-1");
    assert_eq!(linking["metadata"], json!({ "job": "j-1" }));
    let words = usage.iter().find(|u| u["id"] == ids[1].as_str()).unwrap();
    assert_eq!(
        (words["units"].as_i64(), words["credits"].as_i64()),
        (Some(250), Some(3))
    );

    // The read models equal a fresh fold of the log, hash chains intact.
    assert_verify_clean(store).await;
}
on_both_backends!(store a_batch_applies_each_item_once_in_order);

// ---------------------------------------------------------------- replay

async fn retried_batches_and_single_requests_replay_by_key(api: &Api) {
    let (id, _) = api.funded_account(200).await;
    let bot = api.bot(Some(&id));
    let k: Vec<String> = (0..5).map(|_| key()).collect();

    // Three new items.
    let first_body = json!({ "items": [
        { "idempotency_key": k[0], "operation": "clustering" },
        { "idempotency_key": k[1], "operation": "clustering" },
        { "idempotency_key": k[2], "operation": "clustering" },
    ]});
    let first = batch(api, &id, &bot, first_body.clone()).await;
    let firsts = results(&first, 3);
    assert_counts(&first, 3, 0, 0);
    for (i, balance_after) in [190, 180, 170].into_iter().enumerate() {
        assert_new(&firsts[i], &k[i], &id, 10, balance_after);
    }

    // The same batch again: every item replays, nothing moves.
    let again = batch(api, &id, &bot, first_body).await;
    let agains = results(&again, 3);
    assert_counts(&again, 0, 3, 0);
    for (a, f) in agains.iter().zip(&firsts) {
        assert_replay(a, f);
        assert_eq!(a["idempotency_key"], f["idempotency_key"]);
        assert_eq!(a["account_id"], id.as_str());
    }
    let p = api.head().await;
    assert_eq!(api.balance(&id, p).await["balance"], 170);
    assert_eq!(deductions(api, &id, p).await.len(), 3);

    // Seen and new keys mixed: only the new ones apply.
    let mixed = batch(
        api,
        &id,
        &bot,
        json!({ "items": [
            { "idempotency_key": k[1], "operation": "clustering" },
            { "idempotency_key": k[3], "operation": "clustering" },
            { "idempotency_key": k[2], "operation": "clustering" },
            { "idempotency_key": k[4], "operation": "clustering" },
        ]}),
    )
    .await;
    let m = results(&mixed, 4);
    assert_counts(&mixed, 2, 2, 0);
    assert_replay(&m[0], &firsts[1]);
    assert_new(&m[1], &k[3], &id, 10, 160);
    assert_replay(&m[2], &firsts[2]);
    assert_new(&m[3], &k[4], &id, 10, 150);
    assert_eq!(mixed.position(), m[3]["position"].as_i64().unwrap());

    // A batch item's key, sent alone with the same body, replays it.
    let deductions_path = format!("/v1/accounts/{id}/deductions");
    let single = api
        .post(
            &deductions_path,
            &bot,
            Some(&k[0]),
            json!({ "operation": "clustering" }),
        )
        .await;
    assert_eq!(
        single.expect(201),
        &deduction_body(&firsts[0]),
        "the single request replays the batch item's outcome"
    );
    assert_eq!(single.header("idempotent-replayed"), Some("true"));

    // And the reverse: a single request's key as a batch item replays it.
    let s = key();
    let single = api
        .post(
            &deductions_path,
            &bot,
            Some(&s),
            json!({ "operation": "linking", "units": 1 }),
        )
        .await;
    assert_eq!(single.expect(201)["balance_after"], 142);
    let reverse = batch(
        api,
        &id,
        &bot,
        json!({ "items": [ { "idempotency_key": s, "operation": "linking", "units": 1 } ] }),
    )
    .await;
    let rv = results(&reverse, 1);
    assert_counts(&reverse, 0, 1, 0);
    assert_eq!(rv[0]["status"], 201, "{}", reverse.text);
    assert_eq!(rv[0]["idempotent_replayed"], true, "{}", reverse.text);
    assert_eq!(rv[0]["idempotency_key"], s.as_str());
    assert_eq!(deduction_body(&rv[0]), single.body);

    // The same key with another body: the item is 409, in a batch or alone.
    let reused = batch(
        api,
        &id,
        &bot,
        json!({ "items": [
            { "idempotency_key": k[0], "operation": "linking" },
            { "idempotency_key": s, "operation": "clustering" },
        ]}),
    )
    .await;
    let ru = results(&reused, 2);
    assert_counts(&reused, 0, 0, 2);
    assert_failed(&ru[0], 409, "idempotency_key_reused");
    assert_eq!(ru[0]["idempotency_key"], k[0].as_str());
    assert_failed(&ru[1], 409, "idempotency_key_reused");
    api.post(
        &deductions_path,
        &bot,
        Some(&k[3]),
        json!({ "operation": "linking" }),
    )
    .await
    .expect_error(409, "idempotency_key_reused");

    // One key twice within a batch: the same body replays the first, another
    // body is 409.
    let (d, e) = (key(), key());
    let dup = batch(
        api,
        &id,
        &bot,
        json!({ "items": [
            { "idempotency_key": d, "operation": "clustering" },
            { "idempotency_key": d, "operation": "clustering" },
            { "idempotency_key": e, "operation": "clustering" },
            { "idempotency_key": e, "operation": "linking" },
        ]}),
    )
    .await;
    let du = results(&dup, 4);
    assert_counts(&dup, 2, 1, 1);
    assert_new(&du[0], &d, &id, 10, 132);
    assert_replay(&du[1], &du[0]);
    assert_new(&du[2], &e, &id, 10, 122);
    assert_failed(&du[3], 409, "idempotency_key_reused");
    assert_eq!(du[3]["idempotency_key"], e.as_str());

    // 200 - 7 clusterings - 1 linking; one entry per key.
    let p = dup.position();
    assert_eq!(api.balance(&id, p).await["balance"], 122);
    let tx = deductions(api, &id, p).await;
    let mut amounts: Vec<i64> = tx.iter().map(|t| t["amount"].as_i64().unwrap()).collect();
    amounts.sort_unstable();
    assert_eq!(amounts, vec![-10, -10, -10, -10, -10, -10, -10, -8]);
}
on_both_backends!(retried_batches_and_single_requests_replay_by_key);

// ---------------------------------------------------------------- per-item errors

async fn a_bad_item_fails_alone_and_the_others_apply(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let (other, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&id));
    let k: Vec<String> = (0..7).map(|_| key()).collect();
    let r = batch(
        api,
        &id,
        &bot,
        json!({ "items": [
            { "idempotency_key": k[0], "operation": "clustering" },
            { "idempotency_key": k[1], "operation": "no_such_op" },
            { "idempotency_key": k[2], "operation": "clustering", "units": 0 },
            { "operation": "clustering" },
            { "idempotency_key": k[4], "operation": "clustering", "bogus": 1 },
            { "idempotency_key": k[5], "operation": "clustering", "account_id": other },
            { "idempotency_key": k[6], "operation": "linking" },
        ]}),
    )
    .await;
    let it = results(&r, 7);
    assert_counts(&r, 2, 0, 5);
    assert_new(&it[0], &k[0], &id, 10, 90);
    assert_failed(&it[1], 422, "unknown_operation");
    assert_eq!(it[1]["idempotency_key"], k[1].as_str());
    assert_eq!(it[1]["account_id"], id.as_str());
    assert_eq!(
        assert_failed(&it[2], 422, "invalid_request")["field"],
        "units"
    );
    assert_eq!(
        assert_failed(&it[3], 422, "invalid_request")["field"],
        "idempotency_key"
    );
    assert_eq!(
        assert_failed(&it[4], 422, "invalid_request")["field"],
        "bogus"
    );
    assert_eq!(
        assert_failed(&it[5], 422, "invalid_request")["field"],
        "account_id"
    );
    assert_new(&it[6], &k[6], &id, 8, 82);
    let p = r.position();
    assert_eq!(p, it[6]["position"].as_i64().unwrap());
    assert_eq!(api.balance(&id, p).await["balance"], 82);
    assert_eq!(deductions(api, &id, p).await.len(), 2);
    assert_eq!(
        api.balance(&other, p).await["balance"],
        100,
        "the item naming another account did not touch it"
    );

    // The path's own account in an item is accepted.
    let own = batch(
        api,
        &id,
        &bot,
        json!({ "items": [ { "idempotency_key": key(), "operation": "clustering", "account_id": id } ] }),
    )
    .await;
    assert_counts(&own, 1, 0, 0);
    assert_eq!(results(&own, 1)[0]["balance_after"], 72);

    // A suspended account refuses every item, as it refuses a single one.
    suspend(api, &id).await;
    let r = batch(
        api,
        &id,
        &bot,
        json!({ "items": [ item(&key(), "clustering", 1), item(&key(), "linking", 1) ] }),
    )
    .await;
    let it = results(&r, 2);
    assert_counts(&r, 0, 0, 2);
    assert_failed(&it[0], 403, "account_suspended");
    assert_failed(&it[1], 403, "account_suspended");
    assert!(
        r.body.get("position").is_none_or(Value::is_null),
        "no item reached a position: {}",
        r.text
    );
    let p = api.head().await;
    assert_eq!(api.balance(&id, p).await["balance"], 72);
}
on_both_backends!(a_bad_item_fails_alone_and_the_others_apply);

async fn credits_running_out_mid_batch_refuse_only_what_does_not_fit(api: &Api) {
    let (id, _) = api.funded_account(25).await;
    let k: Vec<String> = (0..5).map(|_| key()).collect();
    let r = batch(
        api,
        &id,
        &api.developer(),
        json!({ "items": [
            item(&k[0], "clustering", 1),
            item(&k[1], "clustering", 1),
            item(&k[2], "clustering", 1),
            item(&k[3], "image_prompt_extraction", 1),
            item(&k[4], "image_generation", 1),
        ]}),
    )
    .await;
    let it = results(&r, 5);
    assert_counts(&r, 3, 0, 2);
    assert_new(&it[0], &k[0], &id, 10, 15);
    assert_new(&it[1], &k[1], &id, 10, 5);
    let d = assert_failed(&it[2], 402, "insufficient_credits");
    assert_eq!(
        (
            d["balance"].as_i64(),
            d["available"].as_i64(),
            d["required"].as_i64()
        ),
        (Some(5), Some(5), Some(10)),
        "{d}"
    );
    assert_eq!(it[2]["idempotency_key"], k[2].as_str());
    // A later, smaller item still fits.
    assert_new(&it[3], &k[3], &id, 2, 3);
    let d = assert_failed(&it[4], 402, "insufficient_credits");
    assert_eq!(
        (
            d["balance"].as_i64(),
            d["available"].as_i64(),
            d["required"].as_i64()
        ),
        (Some(3), Some(3), Some(5)),
        "{d}"
    );
    let p = r.position();
    assert_eq!(p, it[3]["position"].as_i64().unwrap());
    let b = api.balance(&id, p).await;
    assert_eq!(
        (b["balance"].as_i64(), b["available"].as_i64()),
        (Some(3), Some(3))
    );
    assert_eq!(deductions(api, &id, p).await.len(), 3);
}
on_both_backends!(credits_running_out_mid_batch_refuse_only_what_does_not_fit);

// ---------------------------------------------------------------- atomic

async fn an_atomic_batch_applies_all_or_nothing(api: &Api) {
    let (id, _) = api.funded_account(50).await;
    let bot = api.bot(Some(&id));
    let (a0, a1) = (key(), key());

    // Everything fits: applied, as a plain batch would be.
    let r = batch(
        api,
        &id,
        &bot,
        json!({ "atomic": true, "items": [ item(&a0, "clustering", 1), item(&a1, "clustering", 1) ] }),
    )
    .await;
    let it = results(&r, 2);
    assert_counts(&r, 2, 0, 0);
    assert_new(&it[0], &a0, &id, 10, 40);
    let a1_first = it[1].clone();
    assert_new(&a1_first, &a1, &id, 10, 30);
    let p = r.position();
    assert_eq!(api.balance(&id, p).await["balance"], 30);

    // The fourth item does not fit after the first three: nothing applies.
    let b: Vec<String> = (0..4).map(|_| key()).collect();
    let refused = batch(
        api,
        &id,
        &bot,
        json!({ "atomic": true, "items": [
            item(&b[0], "clustering", 1),
            item(&b[1], "linking", 1),
            item(&b[2], "clustering", 1),
            item(&b[3], "image_generation", 1),
        ]}),
    )
    .await;
    let d = refused.expect_error(402, "insufficient_credits");
    assert_eq!(d["index"], 3, "{}", refused.text);
    assert_eq!(d["idempotency_key"], b[3].as_str(), "{}", refused.text);
    assert_eq!(
        (
            d["balance"].as_i64(),
            d["available"].as_i64(),
            d["required"].as_i64()
        ),
        (Some(2), Some(2), Some(5)),
        "the item's own details, after the items before it: {}",
        refused.text
    );
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("item 3") && message.contains("no item was applied"),
        "{message}"
    );
    let p = api.head().await;
    let balance = api.balance(&id, p).await;
    assert_eq!(
        (balance["balance"].as_i64(), balance["available"].as_i64()),
        (Some(30), Some(30)),
        "nothing was applied: {balance}"
    );
    assert_eq!(deductions(api, &id, p).await.len(), 2);

    // No key was claimed: the same keys, corrected (the last one with
    // another body), all apply.
    let corrected = batch(
        api,
        &id,
        &bot,
        json!({ "atomic": true, "items": [
            item(&b[0], "clustering", 1),
            item(&b[1], "linking", 1),
            item(&b[2], "clustering", 1),
            item(&b[3], "image_prompt_extraction", 1),
        ]}),
    )
    .await;
    let it = results(&corrected, 4);
    assert_counts(&corrected, 4, 0, 0);
    for (i, (credits, after)) in [(10, 20), (8, 12), (10, 2), (2, 0)].into_iter().enumerate() {
        assert_new(&it[i], &b[i], &id, credits, after);
    }
    assert_eq!(api.balance(&id, corrected.position()).await["balance"], 0);

    // An invalid item refuses the atomic batch with 422 naming it.
    api.grant(&id, 100).await;
    let c: Vec<String> = (0..3).map(|_| key()).collect();
    let bad = batch(
        api,
        &id,
        &bot,
        json!({ "atomic": true, "items": [
            item(&c[0], "clustering", 1),
            item(&c[1], "clustering", 0),
            item(&c[2], "no_such_op", 1),
        ]}),
    )
    .await;
    let d = bad.expect_error(422, "invalid_request");
    assert_eq!(d["index"], 1, "{}", bad.text);
    assert_eq!(d["idempotency_key"], c[1].as_str(), "{}", bad.text);
    assert_eq!(d["field"], "units", "{}", bad.text);
    let unknown = batch(
        api,
        &id,
        &bot,
        json!({ "atomic": true, "items": [ item(&c[0], "clustering", 1), item(&c[2], "no_such_op", 1) ] }),
    )
    .await;
    let d = unknown.expect_error(422, "unknown_operation");
    assert_eq!(d["index"], 1, "{}", unknown.text);
    let missing_key = batch(
        api,
        &id,
        &bot,
        json!({ "atomic": true, "items": [ item(&c[0], "clustering", 1), { "operation": "clustering" } ] }),
    )
    .await;
    let d = missing_key.expect_error(422, "invalid_request");
    assert_eq!(d["index"], 1, "{}", missing_key.text);
    assert_eq!(d["field"], "idempotency_key", "{}", missing_key.text);
    let p = api.head().await;
    assert_eq!(api.balance(&id, p).await["balance"], 100);
    assert_eq!(deductions(api, &id, p).await.len(), 6);

    // A key already used replays inside an atomic batch.
    let mixed = batch(
        api,
        &id,
        &bot,
        json!({ "atomic": true, "items": [ item(&a1, "clustering", 1), item(&c[0], "clustering", 1) ] }),
    )
    .await;
    let it = results(&mixed, 2);
    assert_counts(&mixed, 1, 1, 0);
    assert_replay(&it[0], &a1_first);
    assert_new(&it[1], &c[0], &id, 10, 90);
    assert_eq!(api.balance(&id, mixed.position()).await["balance"], 90);
}
on_both_backends!(an_atomic_batch_applies_all_or_nothing);

// ---------------------------------------------------------------- limits

/// A batch of `n` items of one credit each, `pad` characters of metadata
/// apiece.
fn sized_batch(n: usize, pad: usize) -> String {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "idempotency_key": key(),
                "operation": "content_generation",
                "units": 1,
                "related_object_type": "article",
                "related_object_id": format!("article-{i:06}"),
                "metadata": { "n": i, "pad": "x".repeat(pad) },
            })
        })
        .collect();
    json!({ "items": items }).to_string()
}

async fn a_thousand_items_are_one_batch(api: &Api) {
    let (id, _) = api.funded_account(1_500).await;
    let body = sized_batch(1_000, 60);
    assert!(body.len() > 128 * 1024, "well above 64 KiB: {}", body.len());
    let r = send_large(api, &batch_path(&id), &api.bot(Some(&id)), body).await;
    let it = results(&r, 1_000);
    assert_counts(&r, 1_000, 0, 0);
    for (i, item) in it.iter().enumerate() {
        assert_eq!(item["status"], 201, "{item}");
        assert_eq!(item["credits"], 1, "{item}");
        assert_eq!(item["balance_after"], 1_500 - 1 - i as i64, "{item}");
    }
    let p = r.position();
    assert_eq!(api.balance(&id, p).await["balance"], 500);
    let usage = api
        .items(&format!("/v1/accounts/{id}/usage"), p, "&limit=500")
        .await;
    assert_eq!(usage.len(), 500, "a full page of the 1,000 rows");
}
on_both_backends!(a_thousand_items_are_one_batch);

async fn a_batch_out_of_bounds_is_refused_whole(api: &Api) {
    let (id, _) = api.funded_account(5_000).await;
    let bot = api.bot(Some(&id));
    let path = batch_path(&id);

    let r = send_large(api, &path, &bot, sized_batch(1_001, 0)).await;
    assert_eq!(
        r.expect_error(422, "invalid_request")["field"],
        "items",
        "{}",
        r.text
    );
    let r = batch(api, &id, &bot, json!({ "items": [] })).await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "items");
    let r = batch(api, &id, &bot, json!({ "items": [], "atomic": true })).await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "items");

    // Over the route's 2 MiB (each item's metadata within its own 4 KiB).
    let big = sized_batch(1_000, 2_200);
    assert!(big.len() > 2 * 1024 * 1024, "{}", big.len());
    let r = send_large(api, &path, &bot, big).await;
    assert_eq!(
        r.expect_error(413, "payload_too_large")["limit_bytes"],
        2 * 1024 * 1024,
        "{}",
        r.text
    );

    // Malformed bodies.
    let r = api
        .send(
            Method::POST,
            &path,
            Some(&bot),
            None,
            Some("not json {".into()),
        )
        .await;
    r.expect_error(400, "invalid_request");
    for body in [
        json!([item(&key(), "clustering", 1)]),
        json!({ "atomic": false }),
        json!({ "items": "clustering" }),
    ] {
        let r = batch(api, &id, &bot, body.clone()).await;
        assert!(
            r.status == 400 || r.status == 422,
            "{body}: {} {}",
            r.status,
            r.text
        );
        r.expect_error(r.status, "invalid_request");
    }
    let r = batch(
        api,
        &id,
        &bot,
        json!({ "items": [item(&key(), "clustering", 1)], "bogus": true }),
    )
    .await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "bogus");

    let p = api.head().await;
    assert_eq!(
        api.balance(&id, p).await["balance"],
        5_000,
        "no refused batch applied anything"
    );
    assert!(deductions(api, &id, p).await.is_empty());
}
on_both_backends!(a_batch_out_of_bounds_is_refused_whole);

// ---------------------------------------------------------------- roles

async fn only_developers_and_the_accounts_bots_may_batch(api: &Api) {
    let (a, _) = api.funded_account(100).await;
    let (b, _) = api.funded_account(100).await;
    let body = || json!({ "items": [ item(&key(), "clustering", 1) ] });

    for token in [api.viewer(&a), api.owner(&a), api.admin(&a), api.editor(&a)] {
        batch(api, &a, &token, body())
            .await
            .expect_error(403, "forbidden");
        api.post(
            CROSS_ACCOUNT_PATH,
            &token,
            None,
            json!({ "items": [ item_on(&a, &key(), "clustering") ] }),
        )
        .await
        .expect_error(403, "forbidden");
    }
    api.send(
        Method::POST,
        &batch_path(&a),
        None,
        None,
        Some(body().to_string()),
    )
    .await
    .expect_error(401, "unauthorized");
    // A's bot on B's account, or on one that does not exist: 404.
    batch(api, &b, &api.bot(Some(&a)), body())
        .await
        .expect_error(404, "not_found");
    batch(api, &random_account(), &api.bot(Some(&a)), body())
        .await
        .expect_error(404, "not_found");
    // A developer naming an account that does not exist: the batch was read,
    // so its item carries the single request's 404 (the contract lists
    // not_found among the per-item errors); a 404 for the whole request
    // would do as well. Either way nothing is applied.
    let r = batch(api, &random_account(), &api.developer(), body()).await;
    if r.status == 404 {
        r.expect_error(404, "not_found");
    } else {
        assert_counts(&r, 0, 0, 1);
        assert_failed(&results(&r, 1)[0], 404, "not_found");
    }
    let p = api.head().await;
    assert_eq!(api.balance(&a, p).await["balance"], 100);
    assert_eq!(api.balance(&b, p).await["balance"], 100);

    let r = batch(api, &a, &api.developer(), body()).await;
    assert_counts(&r, 1, 0, 0);
    assert_eq!(results(&r, 1)[0]["balance_after"], 90);
    let r = batch(api, &b, &api.bot(Some(&b)), body()).await;
    assert_eq!(results(&r, 1)[0]["balance_after"], 90);
}
on_both_backends!(only_developers_and_the_accounts_bots_may_batch);

async fn the_cross_account_form_decides_each_item_on_its_account(api: &Api) {
    let (a, _) = api.funded_account(100).await;
    let (b, _) = api.funded_account(100).await;
    let dev = api.developer();

    let ka: Vec<String> = (0..3).map(|_| key()).collect();
    let r = api
        .post(
            CROSS_ACCOUNT_PATH,
            &dev,
            None,
            json!({ "items": [
                item_on(&a, &ka[0], "clustering"),
                item_on(&b, &ka[1], "linking"),
                item_on(&a, &ka[2], "clustering"),
            ]}),
        )
        .await;
    let it = results(&r, 3);
    assert_counts(&r, 3, 0, 0);
    assert_new(&it[0], &ka[0], &a, 10, 90);
    assert_new(&it[1], &ka[1], &b, 8, 92);
    assert_new(&it[2], &ka[2], &a, 10, 80);
    let p = r.position();
    assert_eq!(
        p,
        it.iter()
            .map(|i| i["position"].as_i64().unwrap())
            .max()
            .unwrap()
    );
    assert_eq!(api.balance(&a, p).await["balance"], 80);
    assert_eq!(api.balance(&b, p).await["balance"], 92);
    // Keys are per account: a key of A's on the per-account route replays.
    let again = batch(
        api,
        &a,
        &dev,
        json!({ "items": [ { "idempotency_key": ka[0], "operation": "clustering" } ] }),
    )
    .await;
    assert_counts(&again, 0, 1, 0);
    assert_replay(&results(&again, 1)[0], &it[0]);

    // A bot scoped to A: B's item is 404, the others apply.
    let kb: Vec<String> = (0..4).map(|_| key()).collect();
    let r = api
        .post(
            CROSS_ACCOUNT_PATH,
            &api.bot(Some(&a)),
            None,
            json!({ "items": [
                item_on(&a, &kb[0], "clustering"),
                item_on(&b, &kb[1], "clustering"),
                item_on(&a, &kb[2], "image_generation"),
                { "idempotency_key": kb[3], "operation": "clustering" },
            ]}),
        )
        .await;
    let it = results(&r, 4);
    assert_counts(&r, 2, 0, 2);
    assert_new(&it[0], &kb[0], &a, 10, 70);
    assert_failed(&it[1], 404, "not_found");
    assert_eq!(it[1]["idempotency_key"], kb[1].as_str());
    assert_new(&it[2], &kb[2], &a, 5, 65);
    assert_eq!(
        assert_failed(&it[3], 422, "invalid_request")["field"],
        "account_id",
        "the cross-account form needs each item's account"
    );
    let p = r.position();
    assert_eq!(api.balance(&a, p).await["balance"], 65);
    assert_eq!(api.balance(&b, p).await["balance"], 92, "B untouched");
    assert_eq!(deductions(api, &b, p).await.len(), 1);

    // Atomic across two accounts: 422, nothing applied; on one account: fine.
    let r = api
        .post(
            CROSS_ACCOUNT_PATH,
            &dev,
            None,
            json!({ "atomic": true, "items": [
                item_on(&a, &key(), "clustering"),
                item_on(&b, &key(), "clustering"),
            ]}),
        )
        .await;
    r.expect_error(422, "invalid_request");
    let p = api.head().await;
    assert_eq!(api.balance(&a, p).await["balance"], 65);
    assert_eq!(api.balance(&b, p).await["balance"], 92);
    let r = api
        .post(
            CROSS_ACCOUNT_PATH,
            &dev,
            None,
            json!({ "atomic": true, "items": [
                item_on(&b, &key(), "clustering"),
                item_on(&b, &key(), "clustering"),
            ]}),
        )
        .await;
    let it = results(&r, 2);
    assert_counts(&r, 2, 0, 0);
    assert_eq!(it[1]["balance_after"], 72);
    assert_eq!(api.balance(&b, r.position()).await["balance"], 72);
}
on_both_backends!(the_cross_account_form_decides_each_item_on_its_account);
