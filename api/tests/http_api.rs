//! The HTTP API (SPEC §3) through the real router over real HTTP, on
//! PostgreSQL and SQLite: every endpoint's success path, every error code,
//! the role × tenant matrix, idempotent replay, read-your-writes, pagination,
//! trailing slashes and hold expiry. The last test starts the real binary.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use api::auth::{Claims, JwtKeys, Role};
use common::{decimal, key, now_unix, time, unique_slug, Api, Resp};
use reqwest::Method;
use serde_json::{json, Value};

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().expect("an item id").to_owned())
        .collect()
}

fn random_account() -> String {
    events::AccountId::new_v7().to_string()
}

fn random_uuid() -> String {
    uuid::Uuid::now_v7().to_string()
}

// ---------------------------------------------------------------------------
// Success paths
// ---------------------------------------------------------------------------

async fn an_account_opens_reads_and_patches_on_its_canonical_and_alias_paths(api: &Api) {
    let dev = api.developer();
    let slug = unique_slug();
    let opened = api
        .post(
            "/v1/accounts",
            &dev,
            Some(&key()),
            json!({
                "name": "Acme GmbH",
                "slug": slug,
                "plan": "starter",
                "country": "de",
                "billing_email": "billing@acme.example",
                "owner_user_id": "user-1",
            }),
        )
        .await;
    let body = opened.expect(201);
    let id = body["account_id"].as_str().unwrap().to_owned();
    assert_eq!(
        uuid::Uuid::parse_str(&id).unwrap().get_version_num(),
        7,
        "account ids are UUIDv7"
    );
    assert_eq!(body["name"], "Acme GmbH");
    assert_eq!(body["slug"], slug.as_str());
    assert_eq!(body["plan"], "starter");
    assert_eq!(body["status"], "active");
    assert_eq!(body["country"], "DE");
    assert_eq!(body["billing_email"], "billing@acme.example");
    assert_eq!(body["owner_user_id"], "user-1");
    assert_eq!(body["credit_limit"], 0);
    assert_eq!(
        body["low_balance_threshold"], 100,
        "10% of the starter plan's 1,000 included credits"
    );
    assert_eq!(decimal(&body["tax_rate"]), 0.into());
    time(&body["created_at"]);
    let p = opened.position();
    assert!(p > 0);

    let owner = api.owner(&id);
    for (path, token) in [
        (format!("/v1/accounts/{id}?min_position={p}"), &dev),
        (
            format!("/v1/accounts/{id}?min_position={p}"),
            &api.viewer(&id),
        ),
        (format!("/v1/account/settings/?min_position={p}"), &owner),
        (
            format!("/v1/account/settings?min_position={p}"),
            &api.editor(&id),
        ),
    ] {
        let r = api.get(&path, token).await;
        let b = r.expect(200);
        assert_eq!(b["account_id"], id.as_str(), "{path}");
        assert_eq!(b["slug"], slug.as_str());
        assert_eq!(b["plan"], "starter");
        assert_eq!(b["status"], "active");
        assert_eq!(b["country"], "DE");
    }

    let patched = api
        .patch(
            &format!("/v1/accounts/{id}"),
            &dev,
            json!({
                "name": "Acme AG",
                "credit_limit": 50,
                "tax_id": "DE123456789",
                "tax_rate": "19",
                "low_balance_threshold": 5,
                "billing_address": { "line1": "Hauptstr. 1", "city": "Berlin", "country": "DE" },
            }),
        )
        .await;
    let b = patched.expect(200);
    assert_eq!(b["name"], "Acme AG");
    assert_eq!(b["credit_limit"], 50);
    assert_eq!(b["tax_id"], "DE123456789");
    assert_eq!(decimal(&b["tax_rate"]), 19.into());
    assert_eq!(b["low_balance_threshold"], 5);
    assert_eq!(b["billing_address"]["city"], "Berlin");
    assert!(patched.position() > p);

    let by_owner = api
        .patch(
            "/v1/account/settings/",
            &owner,
            json!({ "billing_email": "finance@acme.example" }),
        )
        .await;
    assert_eq!(
        by_owner.expect(200)["billing_email"],
        "finance@acme.example"
    );
    assert_eq!(by_owner.body["name"], "Acme AG");
    let p2 = by_owner.position();
    assert!(p2 > patched.position());
    let by_admin = api
        .patch(
            &format!("/v1/accounts/{id}"),
            &api.admin(&id),
            json!({ "name": "Acme SE" }),
        )
        .await;
    assert_eq!(by_admin.expect(200)["name"], "Acme SE");
    let p3 = by_admin.position();

    let settings = api
        .get(
            &format!("/v1/account/settings?min_position={p3}"),
            &api.admin(&id),
        )
        .await;
    let s = settings.expect(200);
    assert_eq!(s["billing_email"], "finance@acme.example");
    assert_eq!(s["name"], "Acme SE");
    assert_eq!(s["credit_limit"], 50);

    for (path, token) in [
        (format!("/v1/accounts/{id}/limits?min_position={p3}"), &dev),
        (
            format!("/v1/account/limits/?min_position={p3}"),
            &api.viewer(&id),
        ),
        (format!("/v1/account/limits?min_position={p3}"), &owner),
    ] {
        let r = api.get(&path, token).await;
        let l = r.expect(200);
        assert_eq!(l["account_id"], id.as_str(), "{path}");
        assert_eq!(l["plan"], "starter");
        assert_eq!(l["limits"]["max_users"], 2);
        assert_eq!(l["limits"]["max_sites"], 3);
        assert!(l["features"]
            .as_array()
            .unwrap()
            .contains(&json!("image_generation")));
        assert_eq!(l["credits"]["included_per_period"], 1000);
        assert_eq!(l["credits"]["balance"], 0);
        assert_eq!(l["credits"]["available"], 0);
    }
}
on_both_backends!(an_account_opens_reads_and_patches_on_its_canonical_and_alias_paths);

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

    // No credits: the rest. An admin of the account may refund.
    let r = api
        .post(
            &path,
            &api.admin(&id),
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

async fn a_suspended_account_refuses_spending_but_still_reads_until_activated(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let dev = api.developer();
    let s = api
        .post(
            &format!("/v1/admin/accounts/{id}/suspend"),
            &dev,
            None,
            json!({ "reason": "fraud review" }),
        )
        .await;
    let sb = s.expect(200);
    assert_eq!(sb["account_id"], id.as_str());
    assert_eq!(sb["status"], "suspended");
    let p = s.position();

    api.deduct(&id, json!({ "operation": "clustering" }))
        .await
        .expect_error(403, "account_suspended");
    api.hold(&id, json!({ "credits": 5 }))
        .await
        .expect_error(403, "account_suspended");

    let owner = api.owner(&id);
    for path in [
        format!("/v1/accounts/{id}?min_position={p}"),
        format!("/v1/accounts/{id}/balance?min_position={p}"),
        format!("/v1/accounts/{id}/transactions?min_position={p}"),
        format!("/v1/accounts/{id}/usage?min_position={p}"),
        format!("/v1/accounts/{id}/usage/analytics?min_position={p}"),
        format!("/v1/accounts/{id}/limits?min_position={p}"),
    ] {
        api.get(&path, &owner).await.expect(200);
    }
    let account = api
        .get(&format!("/v1/accounts/{id}?min_position={p}"), &owner)
        .await;
    assert_eq!(account.body["status"], "suspended");
    assert_eq!(api.balance(&id, p).await["balance"], 100);

    let a = api
        .post_empty(&format!("/v1/admin/accounts/{id}/activate"), &dev, None)
        .await;
    assert_eq!(a.expect(200)["status"], "active");
    a.position();
    let d = api.deduct(&id, json!({ "operation": "clustering" })).await;
    assert_eq!(d.expect(201)["balance_after"], 90);
}
on_both_backends!(a_suspended_account_refuses_spending_but_still_reads_until_activated);

async fn balance_transactions_usage_and_analytics_read_on_canonical_and_alias_paths(api: &Api) {
    let (id, _) = api.funded_account(1000).await;
    let d1 = api
        .deduct(
            &id,
            json!({ "operation": "clustering", "model": "m-a", "cost_usd": "0.10" }),
        )
        .await;
    d1.expect(201);
    let d2 = api
        .deduct(
            &id,
            json!({ "operation": "content_generation", "units": 100, "model": "m-b", "cost_usd": "0.05" }),
        )
        .await;
    d2.expect(201);
    let d3 = api
        .deduct(
            &id,
            json!({ "operation": "clustering", "model": "m-a", "cost_usd": "0.10" }),
        )
        .await;
    let p = d3.position();
    let first_at = d1.body["recorded_at"].as_str().unwrap().to_owned();

    let owner = api.owner(&id);
    for path in [
        format!("/v1/accounts/{id}/balance?min_position={p}"),
        format!("/v1/billing/account_balance/?min_position={p}"),
        format!("/v1/billing/account_balance?min_position={p}"),
    ] {
        let r = api.get(&path, &owner).await;
        let b = r.expect(200);
        assert_eq!(b["account_id"], id.as_str(), "{path}");
        assert_eq!(b["balance"], 979);
        assert_eq!(b["held"], 0);
        assert_eq!(b["available"], 979);
        assert_eq!(b["plan"], "free");
        assert_eq!(b["current_period"]["granted"], 1000);
        assert_eq!(b["current_period"]["used"], 21);
        assert_eq!(
            b["current_period"]["period"],
            chrono::Utc::now().format("%Y-%m").to_string()
        );
        assert!(b["position"].as_i64().unwrap() >= p);
    }

    let editor = api.editor(&id);
    for base in [
        format!("/v1/accounts/{id}/transactions"),
        "/v1/billing/transactions/".to_owned(),
        "/v1/billing/transactions".to_owned(),
    ] {
        let get = |q: String| {
            let path = format!("{base}?min_position={p}{q}");
            let editor = editor.clone();
            async move {
                let r = api.get(&path, &editor).await;
                r.expect(200)["items"].as_array().unwrap().clone()
            }
        };
        let all = get(String::new()).await;
        let types: Vec<&str> = all.iter().map(|t| t["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            vec!["deduction", "deduction", "deduction", "grant"],
            "{base}"
        );
        let balances: Vec<i64> = all
            .iter()
            .map(|t| t["balance_after"].as_i64().unwrap())
            .collect();
        assert_eq!(balances, vec![979, 989, 990, 1000]);
        assert_eq!(all[0]["amount"], -10);
        assert_eq!(all[3]["amount"], 1000);
        time(&all[0]["occurred_at"]);
        assert_eq!(get("&type=deduction".into()).await.len(), 3);
        assert_eq!(get("&type=grant".into()).await.len(), 1);
        assert_eq!(get("&type=refund".into()).await.len(), 0);
        let before = get(format!("&to={first_at}")).await;
        assert_eq!(before.len(), 1, "`to` is exclusive: only the grant");
        assert_eq!(before[0]["type"], "grant");
        assert_eq!(get(format!("&from={first_at}")).await.len(), 3);
        assert_eq!(get(format!("&from={first_at}&type=grant")).await.len(), 0);
    }

    let viewer = api.viewer(&id);
    for base in [
        format!("/v1/accounts/{id}/usage"),
        "/v1/billing/usage/".to_owned(),
        "/v1/billing/usage".to_owned(),
    ] {
        let r = api.get(&format!("{base}?min_position={p}"), &viewer).await;
        let items = r.expect(200)["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), 3, "{base}");
        assert_eq!(items[1]["operation"], "content_generation");
        assert_eq!(items[1]["model"], "m-b");
        let r = api
            .get(
                &format!("{base}?min_position={p}&operation=clustering"),
                &viewer,
            )
            .await;
        assert_eq!(r.expect(200)["items"].as_array().unwrap().len(), 2);
    }

    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    for base in [
        format!("/v1/accounts/{id}/usage/analytics"),
        "/v1/account/usage/analytics/".to_owned(),
        "/v1/account/usage/analytics".to_owned(),
    ] {
        let get = |group_by: &'static str| {
            let path = format!("{base}?min_position={p}&group_by={group_by}");
            let owner = owner.clone();
            async move { api.get(&path, &owner).await.expect(200).clone() }
        };
        let by_op = get("operation").await;
        assert_eq!(by_op["group_by"], "operation", "{base}");
        let items = by_op["items"].as_array().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0]["key"], "clustering");
        assert_eq!(items[0]["credits"], 20);
        assert_eq!(items[0]["count"], 2);
        assert_eq!(decimal(&items[0]["cost_usd"]), "0.2".parse().unwrap());
        assert_eq!(items[1]["key"], "content_generation");
        assert_eq!(items[1]["credits"], 1);
        assert_eq!(by_op["totals"]["credits"], 21);
        assert_eq!(by_op["totals"]["count"], 3);
        assert_eq!(
            decimal(&by_op["totals"]["cost_usd"]),
            "0.25".parse().unwrap()
        );

        let by_model = get("model").await;
        let keys: Vec<&str> = by_model["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, vec!["m-a", "m-b"]);

        let by_day = get("day").await;
        let items = by_day["items"].as_array().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0]["key"], today.as_str());
        assert_eq!(items[0]["credits"], 21);
        assert_eq!(by_day["to"], today.as_str());
    }
    // Outside the range: nothing.
    let r = api
        .get(
            &format!(
                "/v1/accounts/{id}/usage/analytics?min_position={p}&from=2020-01-01&to=2020-01-31"
            ),
            &owner,
        )
        .await;
    assert_eq!(r.expect(200)["items"], json!([]));
}
on_both_backends!(balance_transactions_usage_and_analytics_read_on_canonical_and_alias_paths);

async fn plans_and_packages_are_listed_for_all_and_upserted_by_developers(api: &Api) {
    let id = api.open_account().await;
    let viewer = api.viewer(&id);
    let dev = api.developer();

    let plans = api.get("/v1/plans", &viewer).await;
    let items = plans.expect(200)["items"].as_array().unwrap().clone();
    let slugs: Vec<&str> = items.iter().map(|p| p["slug"].as_str().unwrap()).collect();
    for s in ["free", "starter", "professional", "enterprise"] {
        assert!(slugs.contains(&s), "{slugs:?}");
    }
    let starter = items.iter().find(|p| p["slug"] == "starter").unwrap();
    assert_eq!(decimal(&starter["price"]["amount"]), 29.into());
    assert_eq!(starter["price"]["currency"], "USD");
    assert_eq!(starter["included_credits"], 1000);
    assert_eq!(starter["limits"]["max_sites"], 3);

    let put = api
        .put(
            "/v1/admin/plans/team",
            &dev,
            json!({
                "name": "Team",
                "price": { "amount": "49.00", "currency": "USD" },
                "billing_cycle": "monthly",
                "included_credits": 2500,
                "limits": { "max_users": 5, "max_sites": 5 },
                "features": ["api_access"],
            }),
        )
        .await;
    let pb = put.expect(200);
    assert_eq!(pb["slug"], "team");
    assert_eq!(pb["included_credits"], 2500);
    assert_eq!(pb["active"], true);
    put.position();
    let retired = api
        .put(
            "/v1/admin/plans/legacy",
            &dev,
            json!({
                "name": "Legacy",
                "price": { "amount": "5.00", "currency": "USD" },
                "billing_cycle": "annual",
                "included_credits": 10,
                "active": false,
            }),
        )
        .await;
    retired.expect(200);

    let visible = |r: &Resp| -> Vec<String> {
        r.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["slug"].as_str().unwrap().to_owned())
            .collect()
    };
    let for_viewer = visible(&api.get("/v1/plans/", &viewer).await);
    assert!(for_viewer.contains(&"team".to_owned()));
    assert!(
        !for_viewer.contains(&"legacy".to_owned()),
        "inactive plans are hidden"
    );
    let for_dev = visible(&api.get("/v1/plans", &dev).await);
    assert!(
        for_dev.contains(&"legacy".to_owned()),
        "developers see every plan"
    );

    // The new plan is usable at once.
    let mut body = Api::account_body(&unique_slug());
    body["plan"] = json!("team");
    let opened = api.open_account_with(body).await;
    assert_eq!(opened.expect(201)["plan"], "team");
    assert_eq!(opened.body["low_balance_threshold"], 250);

    let packages = api.get("/v1/billing/credits/packages/", &viewer).await;
    let items = packages.expect(200)["items"].as_array().unwrap().clone();
    let pro = items
        .iter()
        .find(|p| p["slug"] == "pro")
        .expect("the pro package");
    assert_eq!(pro["credits"], 2000);
    assert_eq!(decimal(&pro["price"]["amount"]), 29.into());
    assert_eq!(decimal(&pro["discount_percent"]), 10.into());
    assert_eq!(items.len(), 4);

    let put = api
        .put(
            "/v1/admin/credit-packages/mega",
            &dev,
            json!({
                "name": "Mega",
                "credits": 50000,
                "price": { "amount": "499.00", "currency": "USD" },
                "discount_percent": "25",
                "featured": true,
                "description": "for agencies",
            }),
        )
        .await;
    let pb = put.expect(200);
    assert_eq!(pb["slug"], "mega");
    assert_eq!(pb["credits"], 50000);
    assert_eq!(pb["featured"], true);
    put.position();
    let packages = api.get("/v1/billing/credits/packages", &viewer).await;
    let mega = packages.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slug"] == "mega")
        .cloned()
        .expect("the new package is listed");
    assert_eq!(decimal(&mega["discount_percent"]), 25.into());
}
on_both_backends!(plans_and_packages_are_listed_for_all_and_upserted_by_developers);

async fn a_cost_change_is_versioned_audited_and_prices_the_next_deduction(api: &Api) {
    let dev = api.developer();
    let table = api.get("/v1/admin/credit-costs", &dev).await;
    let tb = table.expect(200).clone();
    let items = tb["items"].as_array().unwrap();
    assert_eq!(items.len(), 9);
    let clustering = items
        .iter()
        .find(|c| c["operation"] == "clustering")
        .unwrap();
    assert_eq!(clustering["cost"], 10);
    assert_eq!(clustering["unit"], "per_request");
    assert_eq!(clustering["unit_size"], 1);
    let content = items
        .iter()
        .find(|c| c["operation"] == "content_generation")
        .unwrap();
    assert_eq!(content["cost"], 1);
    assert_eq!(content["unit_size"], 100);
    let old_version = tb["version"].as_i64().unwrap();

    let put = api
        .put(
            "/v1/admin/credit-costs/clustering",
            &dev,
            json!({ "cost": 12, "unit": "per_request" }),
        )
        .await;
    let pb = put.expect(200);
    assert_eq!(pb["operation"], "clustering");
    assert_eq!(pb["cost"], 12);
    assert_eq!(pb["unit"], "per_request");
    let new_version = pb["version"].as_i64().unwrap();
    assert!(new_version > old_version);
    let p = put.position();
    let table = api.get("/v1/admin/credit-costs/", &dev).await;
    assert_eq!(table.expect(200)["version"], new_version);

    let history = api.items("/v1/admin/credit-costs/history", p, "").await;
    let latest = &history[0];
    assert_eq!(latest["operation"], "clustering");
    assert_eq!(latest["version"], new_version);
    assert_eq!(latest["cost"], 12);
    assert_eq!(latest["previous_cost"], 10);
    assert_eq!(latest["previous_unit"], "per_request");
    assert_eq!(latest["actor"], "test-developer");
    time(&latest["changed_at"]);
    assert!(history.len() >= 10, "the seeded rows and the change");
    let of_op = api
        .items("/v1/admin/credit-costs/clustering/history", p, "")
        .await;
    assert_eq!(of_op.len(), 2);
    assert!(of_op.iter().all(|h| h["operation"] == "clustering"));
    assert_eq!(of_op[1]["cost"], 10);

    // A new operation can be priced and used at once.
    let put = api
        .put(
            "/v1/admin/credit-costs/translation",
            &dev,
            json!({ "cost": 3, "unit": "per_item" }),
        )
        .await;
    put.expect(200);

    let (id, _) = api.funded_account(100).await;
    let d = api.deduct(&id, json!({ "operation": "clustering" })).await;
    let db = d.expect(201);
    assert_eq!(db["credits"], 12);
    assert_eq!(db["cost_version"], new_version);
    let d = api
        .deduct(&id, json!({ "operation": "translation", "units": 2 }))
        .await;
    assert_eq!(d.expect(201)["credits"], 6);
    let usage = api
        .items(&format!("/v1/accounts/{id}/usage"), d.position(), "")
        .await;
    assert_eq!(usage[1]["cost_version"], new_version);
}
on_both_backends!(a_cost_change_is_versioned_audited_and_prices_the_next_deduction);

async fn the_cost_table_spells_units_as_the_spec_does(api: &Api) {
    let dev = api.developer();
    let table = api.get("/v1/admin/credit-costs", &dev).await;
    let units: Vec<(String, String)> = table.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["operation"].as_str().unwrap().to_owned(),
                c["unit"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let unit_of = |op: &str| units.iter().find(|(o, _)| o == op).unwrap().1.clone();
    assert_eq!(unit_of("content_generation"), "per_100_words");
    assert_eq!(unit_of("optimization"), "per_200_words");
    let put = api
        .put(
            "/v1/admin/credit-costs/content_generation",
            &dev,
            json!({ "cost": 2, "unit": "per_100_words" }),
        )
        .await;
    assert_eq!(put.expect(200)["unit"], "per_100_words");
}
on_both_backends!(the_cost_table_spells_units_as_the_spec_does);

async fn admin_account_search_filters_by_q_status_and_plan(api: &Api) {
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let open = |name: String, plan: &'static str| async move {
        let mut body = Api::account_body(&unique_slug());
        body["name"] = json!(name);
        body["plan"] = json!(plan);
        let r = api.open_account_with(body).await;
        r.expect(201)["account_id"].as_str().unwrap().to_owned()
    };
    let one = open(format!("Zeta {tag} One"), "starter").await;
    let two = open(format!("Zeta {tag} Two"), "professional").await;
    let other = open(format!("Other {tag}"), "free").await;
    let s = api
        .post(
            &format!("/v1/admin/accounts/{two}/suspend"),
            &api.developer(),
            None,
            json!({}),
        )
        .await;
    let p = s.expect(200)["position"].as_i64().unwrap();

    let search = |q: String| async move {
        let mut found = ids_of(&api.items("/v1/admin/accounts", p, &q).await);
        found.sort();
        found
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        search(format!("&q={tag}")).await,
        sorted(vec![one.clone(), two.clone(), other.clone()])
    );
    assert_eq!(
        search(format!("&q=ZETA%20{tag}")).await,
        sorted(vec![one.clone(), two.clone()]),
        "q matches names case-insensitively"
    );
    assert_eq!(
        search(format!("&q={tag}&status=suspended")).await,
        vec![two.clone()]
    );
    assert_eq!(
        search(format!("&q={tag}&status=active")).await,
        sorted(vec![one.clone(), other.clone()])
    );
    assert_eq!(
        search(format!("&q={tag}&plan=starter")).await,
        vec![one.clone()]
    );
    assert_eq!(
        search(format!("&q={tag}&plan=professional&status=suspended")).await,
        vec![two.clone()]
    );
    assert_eq!(
        search("&plan=enterprise".into()).await,
        Vec::<String>::new()
    );
    let all = api.items("/v1/admin/accounts", p, "").await;
    assert!(all.len() >= 3);
    let row = all
        .iter()
        .find(|a| a["account_id"] == one.as_str())
        .unwrap();
    assert_eq!(row["plan"], "starter");
    assert_eq!(row["status"], "active");
}
on_both_backends!(admin_account_search_filters_by_q_status_and_plan);

fn ids_of(accounts: &[Value]) -> Vec<String> {
    accounts
        .iter()
        .map(|a| a["account_id"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

async fn malformed_json_and_a_missing_idempotency_key_are_400(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&id));
    let dev = api.developer();
    let deductions = format!("/v1/accounts/{id}/deductions");

    for raw in [
        r#"{"operation": "clustering""#,
        "not json",
        "[1, 2]",
        "\"text\"",
    ] {
        let r = api
            .send(
                Method::POST,
                &deductions,
                Some(&bot),
                Some(&key()),
                Some(raw.into()),
            )
            .await;
        r.expect_error(400, "invalid_request");
    }
    let r = api
        .send(
            Method::POST,
            "/v1/accounts",
            Some(&dev),
            None,
            Some("{".into()),
        )
        .await;
    r.expect_error(400, "invalid_request");

    let h = api.hold(&id, json!({ "credits": 5 })).await;
    let hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let d = api.deduct(&id, json!({ "operation": "clustering" })).await;
    let deduction = d.expect(201)["id"].as_str().unwrap().to_owned();
    for (path, token, body) in [
        (
            deductions.clone(),
            &bot,
            json!({ "operation": "clustering" }),
        ),
        (
            format!("/v1/accounts/{id}/holds"),
            &bot,
            json!({ "credits": 1 }),
        ),
        (
            format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &bot,
            json!({ "credits": 1 }),
        ),
        (
            format!("/v1/accounts/{id}/grants"),
            &dev,
            json!({ "credits": 1, "source": "purchase" }),
        ),
        (
            format!("/v1/admin/accounts/{id}/adjust-credits"),
            &dev,
            json!({ "credits": 1, "reason": "x" }),
        ),
        (
            format!("/v1/accounts/{id}/deductions/{deduction}/refund"),
            &dev,
            json!({ "credits": 1 }),
        ),
    ] {
        let r = api.post(&path, token, None, body.clone()).await;
        let details = r.expect_error(400, "invalid_request");
        assert_eq!(details["header"], "Idempotency-Key", "{path}");
        // A key that is not printable ASCII without spaces is 400 too.
        let r = api.post(&path, token, Some("two words"), body).await;
        r.expect_error(400, "invalid_request");
    }
    // Nothing above moved the balance.
    let b = api.balance(&id, d.position()).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(90), Some(5))
    );
}
on_both_backends!(malformed_json_and_a_missing_idempotency_key_are_400);

async fn values_of_the_wrong_type_are_422_naming_the_field(api: &Api) {
    let id = api.open_account().await;
    let dev = api.developer();
    let cases: Vec<(String, Value, &str)> = vec![
        (
            format!("/v1/accounts/{id}/deductions"),
            json!({ "operation": "clustering", "units": "two" }),
            "units",
        ),
        (
            format!("/v1/accounts/{id}/deductions"),
            json!({ "operation": "clustering", "tokens_input": -5 }),
            "tokens_input",
        ),
        (
            format!("/v1/accounts/{id}/deductions"),
            json!({ "operation": 7 }),
            "operation",
        ),
        (
            format!("/v1/accounts/{id}/deductions"),
            json!({ "operation": "clustering", "cost_usd": 0.5 }),
            "cost_usd",
        ),
        (
            format!("/v1/accounts/{id}/deductions"),
            json!({ "operation": "clustering", "metadata": [1] }),
            "metadata",
        ),
        (
            format!("/v1/accounts/{id}/grants"),
            json!({ "credits": 10, "source": "lottery" }),
            "source",
        ),
        (
            format!("/v1/accounts/{id}/grants"),
            json!({ "credits": "ten", "source": "purchase" }),
            "credits",
        ),
        (
            format!("/v1/accounts/{id}/grants"),
            json!({ "credits": 10, "source": "purchase", "expires_at": "tomorrow" }),
            "expires_at",
        ),
        (
            format!("/v1/accounts/{id}/holds"),
            json!({ "credits": 10, "ttl_seconds": "long" }),
            "ttl_seconds",
        ),
    ];
    for (path, body, field) in cases {
        let token = if path.ends_with("grants") {
            dev.clone()
        } else {
            api.bot(Some(&id))
        };
        let r = api.post(&path, &token, Some(&key()), body.clone()).await;
        let details = r.expect_error(422, "invalid_request");
        assert_eq!(details["field"], field, "{path} {body}");
    }
    let r = api
        .patch(
            &format!("/v1/accounts/{id}"),
            &dev,
            json!({ "billing_address": { "city": 5 } }),
        )
        .await;
    assert_eq!(
        r.expect_error(422, "invalid_request")["field"],
        "billing_address.city"
    );
    let r = api
        .patch(
            &format!("/v1/accounts/{id}"),
            &dev,
            json!({ "credit_limit": "lots" }),
        )
        .await;
    assert_eq!(
        r.expect_error(422, "invalid_request")["field"],
        "credit_limit"
    );
}
on_both_backends!(values_of_the_wrong_type_are_422_naming_the_field);

async fn an_unknown_body_field_is_422_naming_that_field(api: &Api) {
    let id = api.open_account().await;
    let r = api
        .post(
            &format!("/v1/accounts/{id}/deductions"),
            &api.bot(Some(&id)),
            Some(&key()),
            json!({ "operation": "clustering", "colour": "red" }),
        )
        .await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "colour");
    let r = api
        .patch(
            &format!("/v1/accounts/{id}"),
            &api.developer(),
            json!({ "nickname": "acme" }),
        )
        .await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "nickname");
}
on_both_backends!(an_unknown_body_field_is_422_naming_that_field);

async fn a_missing_body_field_is_422_naming_that_field(api: &Api) {
    let mut body = Api::account_body(&unique_slug());
    body.as_object_mut().unwrap().remove("slug");
    let r = api.open_account_with(body).await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "slug");
    let id = api.open_account().await;
    let r = api
        .post(
            &format!("/v1/accounts/{id}/deductions"),
            &api.bot(Some(&id)),
            Some(&key()),
            json!({ "units": 3 }),
        )
        .await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "operation");
}
on_both_backends!(a_missing_body_field_is_422_naming_that_field);

async fn a_query_parameter_of_the_wrong_type_is_422_naming_it(api: &Api) {
    let id = api.open_account().await;
    let dev = api.developer();
    for (path, field) in [
        (format!("/v1/accounts/{id}/transactions?limit=ten"), "limit"),
        (
            format!("/v1/accounts/{id}/transactions?from=yesterday"),
            "from",
        ),
        (format!("/v1/accounts/{id}/usage?limit=-1"), "limit"),
        ("/v1/admin/accounts?limit=many".to_owned(), "limit"),
    ] {
        let r = api.get(&path, &dev).await;
        assert_eq!(
            r.expect_error(422, "invalid_request")["field"],
            field,
            "{path}"
        );
    }
}
on_both_backends!(a_query_parameter_of_the_wrong_type_is_422_naming_it);

async fn bad_limits_cursors_plans_slugs_and_values_are_422(api: &Api) {
    let (id, p) = api.funded_account(100).await;
    let dev = api.developer();
    let field_of = |r: Resp| -> String {
        r.expect_error(422, "invalid_request")["field"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };

    for list in [
        format!("/v1/accounts/{id}/transactions"),
        format!("/v1/accounts/{id}/usage"),
        "/v1/admin/accounts".to_owned(),
        "/v1/billing/transactions".to_owned(),
    ] {
        let token = if list.starts_with("/v1/billing") {
            api.owner(&id)
        } else {
            dev.clone()
        };
        for limit in [0, 501] {
            let r = api
                .get(&format!("{list}?min_position={p}&limit={limit}"), &token)
                .await;
            assert_eq!(field_of(r), "limit", "{list} limit={limit}");
        }
        for limit in [1, 500] {
            api.get(&format!("{list}?min_position={p}&limit={limit}"), &token)
                .await
                .expect(200);
        }
    }
    for list in [
        format!("/v1/accounts/{id}/transactions"),
        format!("/v1/accounts/{id}/usage"),
    ] {
        let r = api
            .get(
                &format!("{list}?min_position={p}&cursor=not-a-cursor"),
                &dev,
            )
            .await;
        assert_eq!(field_of(r), "cursor", "{list}");
    }

    // Opening: unknown plan, bad slug, country, email, status.
    let open = |change: Value| async move {
        let mut body = Api::account_body(&unique_slug());
        for (k, v) in change.as_object().unwrap() {
            body[k] = v.clone();
        }
        api.open_account_with(body).await
    };
    assert_eq!(field_of(open(json!({ "plan": "platinum" })).await), "plan");
    for slug in ["Bad Slug", "-leading", "trailing-", "", "ünïcode"] {
        assert_eq!(
            field_of(open(json!({ "slug": slug })).await),
            "slug",
            "{slug:?}"
        );
    }
    assert_eq!(
        field_of(open(json!({ "slug": "a".repeat(65) })).await),
        "slug"
    );
    assert_eq!(field_of(open(json!({ "country": "USA" })).await), "country");
    assert_eq!(
        field_of(open(json!({ "billing_email": "nope" })).await),
        "billing_email"
    );
    assert_eq!(field_of(open(json!({ "name": "  " })).await), "name");
    assert_eq!(
        field_of(open(json!({ "status": "suspended" })).await),
        "status"
    );
    assert_eq!(
        field_of(open(json!({ "tax_rate": "101" })).await),
        "tax_rate"
    );
    assert_eq!(
        field_of(open(json!({ "credit_limit": -1 })).await),
        "credit_limit"
    );
    assert_eq!(
        field_of(open(json!({ "low_balance_threshold": -1 })).await),
        "low_balance_threshold"
    );

    // Catalog slugs and values.
    let plan = json!({
        "name": "X",
        "price": { "amount": "1.00", "currency": "USD" },
        "billing_cycle": "monthly",
        "included_credits": 1,
    });
    assert_eq!(
        field_of(api.put("/v1/admin/plans/BAD", &dev, plan.clone()).await),
        "slug"
    );
    let mut negative = plan.clone();
    negative["included_credits"] = json!(-1);
    assert_eq!(
        field_of(api.put("/v1/admin/plans/neg", &dev, negative).await),
        "included_credits"
    );
    let package = json!({
        "name": "X",
        "credits": 10,
        "price": { "amount": "1.00", "currency": "USD" },
        "discount_percent": "150",
    });
    assert_eq!(
        field_of(api.put("/v1/admin/credit-packages/x", &dev, package).await),
        "discount_percent"
    );
    assert_eq!(
        field_of(
            api.put(
                "/v1/admin/credit-costs/Not-An-Op",
                &dev,
                json!({ "cost": 1, "unit": "per_request" })
            )
            .await
        ),
        "operation"
    );
    assert_eq!(
        field_of(
            api.put(
                "/v1/admin/credit-costs/clustering",
                &dev,
                json!({ "cost": -1, "unit": "per_request" })
            )
            .await
        ),
        "cost"
    );

    // Credit commands.
    assert_eq!(
        field_of(
            api.hold(&id, json!({ "credits": 5, "ttl_seconds": 0 }))
                .await
        ),
        "ttl_seconds"
    );
    assert_eq!(field_of(api.hold(&id, json!({})).await), "credits");
    assert_eq!(
        field_of(
            api.hold(&id, json!({ "credits": 5, "operation": "clustering" }))
                .await
        ),
        "credits"
    );
    assert_eq!(
        field_of(api.hold(&id, json!({ "credits": 0 })).await),
        "credits"
    );
    assert_eq!(
        field_of(
            api.deduct(&id, json!({ "operation": "clustering", "units": 0 }))
                .await
        ),
        "units"
    );
    assert_eq!(
        field_of(
            api.deduct(&id, json!({ "operation": "clustering", "units": u64::MAX }))
                .await
        ),
        "units"
    );
    assert_eq!(
        field_of(api.hold(&id, json!({ "credits": i64::MAX })).await),
        "credits"
    );
    assert_eq!(
        field_of(
            api.deduct(&id, json!({ "operation": "clustering", "cost_usd": "-1" }))
                .await
        ),
        "cost_usd"
    );
    let grant = |body: Value| {
        let path = format!("/v1/accounts/{id}/grants");
        let dev = dev.clone();
        async move { api.post(&path, &dev, Some(&key()), body).await }
    };
    assert_eq!(
        field_of(grant(json!({ "credits": 0, "source": "purchase" })).await),
        "credits"
    );
    assert_eq!(
        field_of(
            grant(
                json!({ "credits": 5, "source": "purchase", "expires_at": "2020-01-01T00:00:00Z" })
            )
            .await
        ),
        "expires_at"
    );
    let adjust = |body: Value| {
        let path = format!("/v1/admin/accounts/{id}/adjust-credits");
        let dev = dev.clone();
        async move { api.post(&path, &dev, Some(&key()), body).await }
    };
    assert_eq!(
        field_of(adjust(json!({ "credits": 0, "reason": "x" })).await),
        "credits"
    );
    assert_eq!(
        field_of(adjust(json!({ "credits": 5, "reason": " " })).await),
        "reason"
    );

    // Reads.
    let owner = api.owner(&id);
    let r = api
        .get(
            &format!("/v1/accounts/{id}/usage/analytics?group_by=week"),
            &owner,
        )
        .await;
    assert_eq!(field_of(r), "group_by");
    let r = api
        .get(
            &format!("/v1/accounts/{id}/usage/analytics?from=2026-02-01&to=2026-01-01"),
            &owner,
        )
        .await;
    assert_eq!(field_of(r), "from");
    let r = api
        .get(
            &format!("/v1/accounts/{id}/usage/analytics?from=someday"),
            &owner,
        )
        .await;
    assert_eq!(field_of(r), "from");
    let r = api
        .get(
            &format!("/v1/accounts/{id}/transactions?type=bogus"),
            &owner,
        )
        .await;
    assert_eq!(field_of(r), "type");
    let r = api
        .get(
            &format!("/v1/accounts/{id}/balance?min_position=soon"),
            &owner,
        )
        .await;
    assert_eq!(field_of(r), "min_position");
    // Alias routes need a token that names an account.
    for path in [
        "/v1/billing/account_balance",
        "/v1/account/settings",
        "/v1/billing/usage",
    ] {
        assert_eq!(field_of(api.get(path, &dev).await), "account_id", "{path}");
    }
    // Nothing moved.
    let b = api.balance(&id, p).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(100), Some(0))
    );
}
on_both_backends!(bad_limits_cursors_plans_slugs_and_values_are_422);

async fn a_cursor_that_no_page_gave_is_422_on_every_list(api: &Api) {
    let (id, p) = api.funded_account(10).await;
    let dev = api.developer();
    for list in [
        format!("/v1/accounts/{id}/transactions"),
        format!("/v1/accounts/{id}/usage"),
        "/v1/admin/accounts".to_owned(),
    ] {
        let r = api
            .get(
                &format!("{list}?min_position={p}&cursor=not-a-cursor"),
                &dev,
            )
            .await;
        assert_eq!(
            r.expect_error(422, "invalid_request")["field"],
            "cursor",
            "{list}"
        );
    }
}
on_both_backends!(a_cursor_that_no_page_gave_is_422_on_every_list);

async fn missing_garbage_foreign_and_expired_tokens_are_401(api: &Api) {
    let (id, p) = api.funded_account(10).await;
    let paths = [
        (Method::GET, format!("/v1/accounts/{id}/balance"), None),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions"),
            Some(json!({ "operation": "clustering" }).to_string()),
        ),
        (Method::GET, "/v1/plans".to_owned(), None),
        (Method::GET, "/v1/admin/accounts".to_owned(), None),
        (Method::GET, "/v1/billing/account_balance/".to_owned(), None),
    ];
    let expired = api.keys.mint(&Claims {
        sub: "late".into(),
        role: Role::Developer,
        account_id: None,
        exp: now_unix() - 3600,
        iat: now_unix() - 7200,
    });
    let other_secret = JwtKeys::from_secret(b"another-secret-another-secret-0123456789").mint(
        &Claims::new(
            "x",
            Role::Developer,
            None,
            now_unix(),
            Duration::from_secs(600),
        )
        .unwrap(),
    );
    let owner_without_account = api.keys.mint(&Claims {
        sub: "o".into(),
        role: Role::Owner,
        account_id: None,
        exp: now_unix() + 600,
        iat: now_unix(),
    });
    for (method, path, body) in paths {
        let r = api
            .send(method.clone(), &path, None, Some(&key()), body.clone())
            .await;
        r.expect_error(401, "unauthorized");
        for auth in [
            "Bearer garbage".to_owned(),
            "Bearer ".to_owned(),
            "Basic dXNlcjpwYXNz".to_owned(),
            api.developer(),
            format!("Bearer {expired}"),
            format!("Bearer {other_secret}"),
            format!("Bearer {owner_without_account}"),
        ] {
            let mut req = api
                .http
                .request(method.clone(), api.url(&path))
                .header("Idempotency-Key", key());
            req = req.header("Authorization", auth.clone());
            if let Some(b) = &body {
                req = req
                    .header("content-type", "application/json")
                    .body(b.clone());
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            assert_eq!(status, 401, "{method} {path} with {auth:.20}: {body}");
            assert_eq!(body["error"]["code"], "unauthorized");
        }
    }
    // None of the refused deductions went through.
    assert_eq!(api.balance(&id, p).await["balance"], 10);
}
on_both_backends!(missing_garbage_foreign_and_expired_tokens_are_401);

async fn a_role_outside_the_endpoints_column_is_403(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let d = api.deduct(&id, json!({ "operation": "clustering" })).await;
    let deduction = d.expect(201)["id"].as_str().unwrap().to_owned();
    let cases: Vec<(Method, String, String, Option<Value>)> = vec![
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions"),
            api.viewer(&id),
            Some(json!({ "operation": "clustering" })),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions"),
            api.owner(&id),
            Some(json!({ "operation": "clustering" })),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/holds"),
            api.admin(&id),
            Some(json!({ "credits": 1 })),
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{id}"),
            api.owner(&id),
            Some(json!({ "credit_limit": 1000 })),
        ),
        (
            Method::PATCH,
            "/v1/account/settings/".to_owned(),
            api.admin(&id),
            Some(json!({ "credit_limit": 1000 })),
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{id}"),
            api.editor(&id),
            Some(json!({ "name": "x" })),
        ),
        (
            Method::PATCH,
            format!("/v1/accounts/{id}"),
            api.bot(Some(&id)),
            Some(json!({ "name": "x" })),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions/{deduction}/refund"),
            api.owner(&id),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions/{deduction}/refund"),
            api.bot(Some(&id)),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/grants"),
            api.owner(&id),
            Some(json!({ "credits": 5, "source": "purchase" })),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/grants"),
            api.bot(None),
            Some(json!({ "credits": 5, "source": "purchase" })),
        ),
        (
            Method::POST,
            format!("/v1/admin/accounts/{id}/adjust-credits"),
            api.admin(&id),
            Some(json!({ "credits": 5, "reason": "x" })),
        ),
        (
            Method::POST,
            format!("/v1/admin/accounts/{id}/suspend"),
            api.admin(&id),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/accounts".to_owned(),
            api.owner(&id),
            Some(Api::account_body(&unique_slug())),
        ),
        (
            Method::GET,
            "/v1/admin/accounts".to_owned(),
            api.owner(&id),
            None,
        ),
        (
            Method::GET,
            "/v1/admin/credit-costs".to_owned(),
            api.bot(None),
            None,
        ),
        (
            Method::GET,
            "/v1/admin/credit-costs/history".to_owned(),
            api.admin(&id),
            None,
        ),
        (
            Method::PUT,
            "/v1/admin/plans/free".to_owned(),
            api.admin(&id),
            Some(json!({
                "name": "Free for all",
                "price": { "amount": "0.00", "currency": "USD" },
                "billing_cycle": "monthly",
                "included_credits": 1000000,
            })),
        ),
        (
            Method::PUT,
            "/v1/admin/credit-packages/pro".to_owned(),
            api.viewer(&id),
            Some(json!({
                "name": "Pro",
                "credits": 1000000,
                "price": { "amount": "0.01", "currency": "USD" },
            })),
        ),
        (
            Method::PUT,
            "/v1/admin/credit-costs/clustering".to_owned(),
            api.bot(None),
            Some(json!({ "cost": 1, "unit": "per_request" })),
        ),
        (
            Method::GET,
            format!("/v1/accounts/{id}/transactions"),
            api.bot(Some(&id)),
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{id}/usage"),
            api.bot(None),
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{id}"),
            api.bot(Some(&id)),
            None,
        ),
    ];
    for (method, path, token, body) in cases {
        let r = api
            .send(
                method.clone(),
                &path,
                Some(&token),
                Some(&key()),
                body.map(|b| b.to_string()),
            )
            .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text);
        r.expect_error(403, "forbidden");
    }
    let b = api.balance(&id, d.position()).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(90), Some(0))
    );
    let a = api
        .get(
            &format!("/v1/accounts/{id}?min_position={}", d.position()),
            &api.developer(),
        )
        .await;
    assert_eq!(a.expect(200)["credit_limit"], 0);
    assert_eq!(a.body["status"], "active");
}
on_both_backends!(a_role_outside_the_endpoints_column_is_403);

async fn a_role_outside_the_endpoints_column_is_403_whatever_the_body(api: &Api) {
    let id = api.open_account().await;
    // A caller that may not call an endpoint learns nothing of its schema.
    for (method, path, token) in [
        (
            Method::PUT,
            "/v1/admin/plans/free".to_owned(),
            api.admin(&id),
        ),
        (
            Method::PUT,
            "/v1/admin/credit-packages/pro".to_owned(),
            api.viewer(&id),
        ),
        (
            Method::PUT,
            "/v1/admin/credit-costs/clustering".to_owned(),
            api.owner(&id),
        ),
        (Method::POST, "/v1/accounts".to_owned(), api.owner(&id)),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions"),
            api.viewer(&id),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/grants"),
            api.bot(Some(&id)),
        ),
    ] {
        let r = api
            .send(
                method.clone(),
                &path,
                Some(&token),
                Some(&key()),
                Some("{}".into()),
            )
            .await;
        assert_eq!(r.status, 403, "{method} {path}: {}", r.text);
        r.expect_error(403, "forbidden");
    }
}
on_both_backends!(a_role_outside_the_endpoints_column_is_403_whatever_the_body);

async fn another_tenants_account_is_404_on_every_account_scoped_route(api: &Api) {
    let (mine, _) = api.funded_account(100).await;
    let (theirs, _) = api.funded_account(100).await;
    let h = api.hold(&theirs, json!({ "credits": 5 })).await;
    let their_hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let d = api
        .deduct(&theirs, json!({ "operation": "clustering" }))
        .await;
    let their_deduction = d.expect(201)["id"].as_str().unwrap().to_owned();
    let p = d.position();

    // Each route with a role it allows, scoped to `mine`.
    let routes = |account: &str| -> Vec<(Method, String, String, Option<Value>)> {
        vec![
            (
                Method::GET,
                format!("/v1/accounts/{account}"),
                api.owner(&mine),
                None,
            ),
            (
                Method::PATCH,
                format!("/v1/accounts/{account}"),
                api.owner(&mine),
                Some(json!({ "name": "taken over" })),
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/limits"),
                api.viewer(&mine),
                None,
            ),
            (
                Method::POST,
                format!("/v1/accounts/{account}/deductions"),
                api.bot(Some(&mine)),
                Some(json!({ "operation": "clustering" })),
            ),
            (
                Method::POST,
                format!("/v1/accounts/{account}/holds"),
                api.bot(Some(&mine)),
                Some(json!({ "credits": 1 })),
            ),
            (
                Method::POST,
                format!("/v1/accounts/{account}/holds/{their_hold}/capture"),
                api.bot(Some(&mine)),
                Some(json!({})),
            ),
            (
                Method::POST,
                format!("/v1/accounts/{account}/holds/{their_hold}/release"),
                api.bot(Some(&mine)),
                Some(json!({})),
            ),
            (
                Method::POST,
                format!("/v1/accounts/{account}/deductions/{their_deduction}/refund"),
                api.admin(&mine),
                Some(json!({})),
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/balance"),
                api.viewer(&mine),
                None,
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/balance"),
                api.bot(Some(&mine)),
                None,
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/transactions"),
                api.editor(&mine),
                None,
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/usage"),
                api.viewer(&mine),
                None,
            ),
            (
                Method::GET,
                format!("/v1/accounts/{account}/usage/analytics"),
                api.owner(&mine),
                None,
            ),
        ]
    };
    let missing = random_account();
    for ((method, path, token, body), (_, missing_path, _, _)) in
        routes(&theirs).into_iter().zip(routes(&missing))
    {
        let send = |path: String| {
            let (method, token, body) = (method.clone(), token.clone(), body.clone());
            async move {
                api.send(
                    method,
                    &path,
                    Some(&token),
                    Some(&key()),
                    body.map(|b| b.to_string()),
                )
                .await
            }
        };
        let theirs_r = send(path.clone()).await;
        assert_eq!(theirs_r.status, 404, "{method} {path}: {}", theirs_r.text);
        theirs_r.expect_error(404, "not_found");
        // Exactly as a missing account: existence does not leak.
        let missing_r = send(missing_path).await;
        assert_eq!(
            theirs_r.text, missing_r.text,
            "{method} {path}: another tenant's account answers like a missing one"
        );
    }
    // Their account is untouched.
    let b = api.balance(&theirs, p).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(90), Some(5))
    );
    let a = api
        .get(
            &format!("/v1/accounts/{theirs}?min_position={p}"),
            &api.developer(),
        )
        .await;
    assert_ne!(a.expect(200)["name"], "taken over");
    let b = api.balance(&mine, p).await;
    assert_eq!(b["balance"], 100);
}
on_both_backends!(another_tenants_account_is_404_on_every_account_scoped_route);

async fn unknown_accounts_holds_deductions_and_routes_are_404(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&id));
    let dev = api.developer();
    let hold = random_uuid();
    let deduction = random_uuid();
    let missing = random_account();
    let cases: Vec<(Method, String, &str, Option<Value>)> = vec![
        (
            Method::POST,
            format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &bot,
            Some(json!({ "credits": 1 })),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &bot,
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/holds/{hold}/release"),
            &bot,
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/holds/not-a-uuid/release"),
            &bot,
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions/{deduction}/refund"),
            &dev,
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{id}/deductions/not-a-uuid/refund"),
            &dev,
            Some(json!({})),
        ),
        (Method::GET, format!("/v1/accounts/{missing}"), &dev, None),
        (Method::GET, "/v1/accounts/not-an-id".to_owned(), &dev, None),
        (
            Method::GET,
            format!("/v1/accounts/{missing}/balance"),
            &dev,
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{missing}/transactions"),
            &dev,
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{missing}/usage"),
            &dev,
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{missing}/usage/analytics"),
            &dev,
            None,
        ),
        (
            Method::GET,
            format!("/v1/accounts/{missing}/limits"),
            &dev,
            None,
        ),
        (
            Method::POST,
            format!("/v1/accounts/{missing}/deductions"),
            &dev,
            Some(json!({ "operation": "clustering" })),
        ),
        (
            Method::POST,
            format!("/v1/accounts/{missing}/grants"),
            &dev,
            Some(json!({ "credits": 5, "source": "purchase" })),
        ),
        (
            Method::POST,
            format!("/v1/admin/accounts/{missing}/suspend"),
            &dev,
            None,
        ),
        (Method::GET, "/v1/no-such-route".to_owned(), &dev, None),
        (Method::GET, "/nothing-here".to_owned(), &dev, None),
    ];
    for (method, path, token, body) in cases {
        let r = api
            .send(
                method.clone(),
                &path,
                Some(token),
                Some(&key()),
                body.map(|b| b.to_string()),
            )
            .await;
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text);
        r.expect_error(404, "not_found");
    }
}
on_both_backends!(unknown_accounts_holds_deductions_and_routes_are_404);

async fn a_taken_slug_and_a_closed_hold_are_409(api: &Api) {
    let slug = unique_slug();
    api.open_account_with(Api::account_body(&slug))
        .await
        .expect(201);
    // Another key, or none: the slug is taken.
    api.open_account_with(Api::account_body(&slug))
        .await
        .expect_error(409, "conflict");
    let r = api
        .post(
            "/v1/accounts",
            &api.developer(),
            None,
            Api::account_body(&slug),
        )
        .await;
    r.expect_error(409, "conflict");

    let (id, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&id));
    let h = api.hold(&id, json!({ "credits": 10 })).await;
    let hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let capture = format!("/v1/accounts/{id}/holds/{hold}/capture");
    let release = format!("/v1/accounts/{id}/holds/{hold}/release");
    api.post(&capture, &bot, Some(&key()), json!({ "credits": 4 }))
        .await
        .expect(200);
    api.post(&capture, &bot, Some(&key()), json!({ "credits": 4 }))
        .await
        .expect_error(409, "conflict");
    api.post_empty(&capture, &bot, Some(&key()))
        .await
        .expect_error(409, "conflict");
    api.post_empty(&release, &bot, Some(&key()))
        .await
        .expect_error(409, "conflict");

    let h = api.hold(&id, json!({ "credits": 10 })).await;
    let released = h.expect(201)["id"].as_str().unwrap().to_owned();
    let rel = api
        .post_empty(
            &format!("/v1/accounts/{id}/holds/{released}/release"),
            &bot,
            None,
        )
        .await;
    rel.expect(200);
    let r = api
        .post(
            &format!("/v1/accounts/{id}/holds/{released}/capture"),
            &bot,
            Some(&key()),
            json!({ "credits": 1 }),
        )
        .await;
    r.expect_error(409, "conflict");
    let b = api.balance(&id, rel.position()).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(96), Some(0))
    );
}
on_both_backends!(a_taken_slug_and_a_closed_hold_are_409);

async fn a_reused_idempotency_key_with_another_body_is_409(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let bot = api.bot(Some(&id));
    let dev = api.developer();
    let deductions = format!("/v1/accounts/{id}/deductions");
    let k = key();
    api.post(
        &deductions,
        &bot,
        Some(&k),
        json!({ "operation": "clustering" }),
    )
    .await
    .expect(201);
    for other in [
        json!({ "operation": "content_generation" }),
        json!({ "operation": "clustering", "units": 2 }),
        json!({ "operation": "clustering", "model": "m" }),
    ] {
        api.post(&deductions, &bot, Some(&k), other)
            .await
            .expect_error(409, "idempotency_key_reused");
    }
    // The same key on another route is another request.
    api.post(
        &format!("/v1/accounts/{id}/holds"),
        &bot,
        Some(&k),
        json!({ "credits": 1 }),
    )
    .await
    .expect_error(409, "idempotency_key_reused");

    let grants = format!("/v1/accounts/{id}/grants");
    let k = key();
    api.post(
        &grants,
        &dev,
        Some(&k),
        json!({ "credits": 5, "source": "purchase" }),
    )
    .await
    .expect(201);
    api.post(
        &grants,
        &dev,
        Some(&k),
        json!({ "credits": 6, "source": "purchase" }),
    )
    .await
    .expect_error(409, "idempotency_key_reused");

    let k = key();
    let h = api
        .post(
            &format!("/v1/accounts/{id}/holds"),
            &bot,
            Some(&k),
            json!({ "credits": 3 }),
        )
        .await;
    let p = h.position();
    api.post(
        &format!("/v1/accounts/{id}/holds"),
        &bot,
        Some(&k),
        json!({ "credits": 4 }),
    )
    .await
    .expect_error(409, "idempotency_key_reused");

    let slug = unique_slug();
    let k = key();
    api.post("/v1/accounts", &dev, Some(&k), Api::account_body(&slug))
        .await
        .expect(201);
    let mut renamed = Api::account_body(&slug);
    renamed["name"] = json!("Another name");
    api.post("/v1/accounts", &dev, Some(&k), renamed)
        .await
        .expect_error(409, "idempotency_key_reused");

    let b = api.balance(&id, p).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(95), Some(3)),
        "each request moved the balance once"
    );
}
on_both_backends!(a_reused_idempotency_key_with_another_body_is_409);

async fn a_key_reused_to_open_another_slug_is_409(api: &Api) {
    let dev = api.developer();
    let k = key();
    api.post(
        "/v1/accounts",
        &dev,
        Some(&k),
        Api::account_body(&unique_slug()),
    )
    .await
    .expect(201);
    let second = unique_slug();
    api.post("/v1/accounts", &dev, Some(&k), Api::account_body(&second))
        .await
        .expect_error(409, "idempotency_key_reused");
}
on_both_backends!(a_key_reused_to_open_another_slug_is_409);

async fn spending_beyond_the_available_credits_is_402_with_the_numbers(api: &Api) {
    let (id, _) = api.funded_account(5).await;
    let bot = api.bot(Some(&id));
    let details = api
        .deduct(&id, json!({ "operation": "clustering" }))
        .await
        .expect_error(402, "insufficient_credits")
        .clone();
    assert_eq!(
        details,
        json!({ "balance": 5, "available": 5, "required": 10 })
    );

    let h = api.hold(&id, json!({ "credits": 4 })).await;
    let hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let details = api
        .deduct(&id, json!({ "operation": "image_generation" }))
        .await
        .expect_error(402, "insufficient_credits")
        .clone();
    assert_eq!(
        details,
        json!({ "balance": 5, "available": 1, "required": 5 })
    );
    let details = api
        .hold(&id, json!({ "credits": 2 }))
        .await
        .expect_error(402, "insufficient_credits")
        .clone();
    assert_eq!(
        details,
        json!({ "balance": 5, "available": 1, "required": 2 })
    );
    let details = api
        .post(
            &format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &bot,
            Some(&key()),
            json!({ "credits": 6 }),
        )
        .await
        .expect_error(402, "insufficient_credits")
        .clone();
    assert_eq!(
        details,
        json!({ "balance": 5, "available": 5, "required": 6 })
    );
    api.post(
        &format!("/v1/admin/accounts/{id}/adjust-credits"),
        &api.developer(),
        Some(&key()),
        json!({ "credits": -2, "reason": "too much" }),
    )
    .await
    .expect_error(402, "insufficient_credits");

    // A credit limit allows an overdraft down to minus the limit.
    let patched = api
        .patch(
            &format!("/v1/accounts/{id}"),
            &api.developer(),
            json!({ "credit_limit": 20 }),
        )
        .await;
    patched.expect(200);
    let d = api.deduct(&id, json!({ "operation": "clustering" })).await;
    assert_eq!(d.expect(201)["balance_after"], -5);
    assert_eq!(d.body["available_after"], -9);
    // available -19 is still above -20.
    let d = api.deduct(&id, json!({ "operation": "clustering" })).await;
    assert_eq!(d.expect(201)["available_after"], -19);
    let details = api
        .deduct(&id, json!({ "operation": "image_prompt_extraction" }))
        .await
        .expect_error(402, "insufficient_credits")
        .clone();
    assert_eq!(
        details,
        json!({ "balance": -15, "available": -19, "required": 2 })
    );
    let b = api.balance(&id, d.position()).await;
    assert_eq!(
        (
            b["balance"].as_i64(),
            b["held"].as_i64(),
            b["available"].as_i64()
        ),
        (Some(-15), Some(4), Some(-19))
    );
}
on_both_backends!(spending_beyond_the_available_credits_is_402_with_the_numbers);

async fn an_operation_missing_from_the_cost_table_is_422_unknown_operation(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let d = api
        .deduct(&id, json!({ "operation": "teleportation" }))
        .await;
    assert_eq!(
        d.expect_error(422, "unknown_operation")["operation"],
        "teleportation"
    );
    let h = api
        .hold(&id, json!({ "operation": "teleportation", "units": 2 }))
        .await;
    assert_eq!(
        h.expect_error(422, "unknown_operation")["operation"],
        "teleportation"
    );
    let h = api.hold(&id, json!({ "credits": 5 })).await;
    let hold = h.expect(201)["id"].as_str().unwrap().to_owned();
    let c = api
        .post(
            &format!("/v1/accounts/{id}/holds/{hold}/capture"),
            &api.bot(Some(&id)),
            Some(&key()),
            json!({ "operation": "teleportation" }),
        )
        .await;
    c.expect_error(422, "unknown_operation");
    // A key that is not even well-formed is a plain invalid request.
    let d = api.deduct(&id, json!({ "operation": "Not Valid" })).await;
    assert_eq!(d.expect_error(422, "invalid_request")["field"], "operation");
    let b = api.balance(&id, h.position()).await;
    assert_eq!(
        (b["balance"].as_i64(), b["held"].as_i64()),
        (Some(100), Some(5))
    );
}
on_both_backends!(an_operation_missing_from_the_cost_table_is_422_unknown_operation);

async fn a_body_over_64_kib_is_413_payload_too_large(api: &Api) {
    let (id, _) = api.funded_account(100).await;
    let big = json!({ "operation": "clustering", "metadata": { "blob": "x".repeat(70 * 1024) } });
    let r = api.deduct(&id, big).await;
    assert_eq!(
        r.expect_error(413, "payload_too_large")["limit_bytes"],
        64 * 1024
    );
    let mut body = Api::account_body(&unique_slug());
    body["name"] = json!("n".repeat(65 * 1024));
    api.open_account_with(body)
        .await
        .expect_error(413, "payload_too_large");
    // Just under the limit is read (and accepted).
    let under = json!({ "operation": "clustering", "metadata": { "blob": "x".repeat(60 * 1024) } });
    let d = api.deduct(&id, under).await;
    assert_eq!(d.expect(201)["balance_after"], 90);
}
on_both_backends!(a_body_over_64_kib_is_413_payload_too_large);

async fn a_min_position_that_never_arrives_is_503_after_the_bounded_wait(api: &Api) {
    let id = api.open_account().await;
    let started = Instant::now();
    let r = api
        .get(
            &format!("/v1/accounts/{id}/balance?min_position=1000000000"),
            &api.owner(&id),
        )
        .await;
    let waited = started.elapsed();
    r.expect_error(503, "unavailable");
    assert!(
        waited >= Duration::from_millis(4_500) && waited < Duration::from_secs(10),
        "waited {waited:?}"
    );
}
on_both_backends!(a_min_position_that_never_arrives_is_503_after_the_bounded_wait);

// ---------------------------------------------------------------------------
// The role × tenant matrix
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Developer,
    Owner,
    Admin,
    Editor,
    Viewer,
    BotScoped,
    BotUnscoped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Read,
    Balance,
    Deduct,
    Hold,
    Refund,
    Grant,
    Adjust,
    Admin,
}

impl Class {
    const ALL: [Class; 8] = [
        Class::Read,
        Class::Balance,
        Class::Deduct,
        Class::Hold,
        Class::Refund,
        Class::Grant,
        Class::Adjust,
        Class::Admin,
    ];

    /// SPEC §3's role column.
    fn allows(self, who: Who) -> bool {
        use Who::*;
        match self {
            Class::Read => matches!(who, Developer | Owner | Admin | Editor | Viewer),
            Class::Balance => true,
            Class::Deduct | Class::Hold => matches!(who, Developer | BotScoped | BotUnscoped),
            Class::Refund => matches!(who, Developer | Admin),
            Class::Grant | Class::Adjust | Class::Admin => who == Developer,
        }
    }

    fn success(self) -> u16 {
        match self {
            Class::Read | Class::Balance | Class::Admin => 200,
            _ => 201,
        }
    }
}

fn expected(who: Who, class: Class, own: bool) -> u16 {
    if !class.allows(who) {
        403
    } else if own || matches!(who, Who::Developer | Who::BotUnscoped) {
        class.success()
    } else {
        404
    }
}

async fn every_role_gets_the_spec_status_on_its_own_and_another_tenants_account(api: &Api) {
    let (mine, _) = api.funded_account(10_000).await;
    let (theirs, _) = api.funded_account(10_000).await;
    let mut deduction_of = std::collections::HashMap::new();
    for account in [&mine, &theirs] {
        let d = api
            .deduct(account, json!({ "operation": "site_structure" }))
            .await;
        deduction_of.insert(
            account.clone(),
            d.expect(201)["id"].as_str().unwrap().to_owned(),
        );
        // The reads below need the account in the read models.
        api.balance(account, d.position()).await;
    }
    let token = |who: Who| match who {
        Who::Developer => api.developer(),
        Who::Owner => api.owner(&mine),
        Who::Admin => api.admin(&mine),
        Who::Editor => api.editor(&mine),
        Who::Viewer => api.viewer(&mine),
        Who::BotScoped => api.bot(Some(&mine)),
        Who::BotUnscoped => api.bot(None),
    };
    let mut mismatches = Vec::new();
    let mut checked = 0;
    for who in [
        Who::Developer,
        Who::Owner,
        Who::Admin,
        Who::Editor,
        Who::Viewer,
        Who::BotScoped,
        Who::BotUnscoped,
    ] {
        for class in Class::ALL {
            for own in [true, false] {
                let account = if own { &mine } else { &theirs };
                let (method, path, body) = match class {
                    Class::Read => (
                        Method::GET,
                        format!("/v1/accounts/{account}/transactions"),
                        None,
                    ),
                    Class::Balance => {
                        (Method::GET, format!("/v1/accounts/{account}/balance"), None)
                    }
                    Class::Deduct => (
                        Method::POST,
                        format!("/v1/accounts/{account}/deductions"),
                        Some(json!({ "operation": "content_generation", "units": 1 })),
                    ),
                    Class::Hold => (
                        Method::POST,
                        format!("/v1/accounts/{account}/holds"),
                        Some(json!({ "credits": 1 })),
                    ),
                    Class::Refund => (
                        Method::POST,
                        format!(
                            "/v1/accounts/{account}/deductions/{}/refund",
                            deduction_of[account]
                        ),
                        Some(json!({ "credits": 1 })),
                    ),
                    Class::Grant => (
                        Method::POST,
                        format!("/v1/accounts/{account}/grants"),
                        Some(json!({ "credits": 1, "source": "promotional" })),
                    ),
                    Class::Adjust => (
                        Method::POST,
                        format!("/v1/admin/accounts/{account}/adjust-credits"),
                        Some(json!({ "credits": 1, "reason": "matrix" })),
                    ),
                    Class::Admin => (
                        Method::POST,
                        format!("/v1/admin/accounts/{account}/activate"),
                        Some(json!({})),
                    ),
                };
                let r = api
                    .send(
                        method,
                        &path,
                        Some(&token(who)),
                        Some(&key()),
                        body.map(|b| b.to_string()),
                    )
                    .await;
                let want = expected(who, class, own);
                checked += 1;
                if r.status != want {
                    mismatches.push(format!(
                        "{who:?} {class:?} {}: expected {want}, got {} {}",
                        if own { "own" } else { "other" },
                        r.status,
                        r.text
                    ));
                } else if want >= 400 {
                    let code = if want == 403 {
                        "forbidden"
                    } else {
                        "not_found"
                    };
                    if r.body["error"]["code"] != code {
                        mismatches.push(format!("{who:?} {class:?}: code {}", r.text));
                    }
                }
            }
        }
    }
    assert_eq!(checked, 7 * 8 * 2);
    assert!(
        mismatches.is_empty(),
        "role × tenant mismatches:\n{}",
        mismatches.join("\n")
    );
    // The admin-only list, which names no account.
    for who in [
        Who::Owner,
        Who::Admin,
        Who::Editor,
        Who::Viewer,
        Who::BotScoped,
        Who::BotUnscoped,
    ] {
        api.get("/v1/admin/accounts", &token(who))
            .await
            .expect_error(403, "forbidden");
    }
    api.get("/v1/admin/accounts", &token(Who::Developer))
        .await
        .expect(200);
}
on_both_backends!(every_role_gets_the_spec_status_on_its_own_and_another_tenants_account);

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
// Read-your-writes, pagination, trailing slashes, hold expiry
// ---------------------------------------------------------------------------

async fn a_writes_position_as_min_position_makes_the_next_read_include_it(api: &Api) {
    let id = api.open_account().await;
    let owner = api.owner(&id);
    let g = api.grant(&id, 500).await;
    let b = api
        .get(
            &format!("/v1/billing/account_balance?min_position={}", g.position()),
            &owner,
        )
        .await;
    assert_eq!(b.expect(200)["balance"], 500);
    for i in 0..10 {
        let d = api
            .deduct(&id, json!({ "operation": "image_generation", "units": 1 }))
            .await;
        let db = d.expect(201).clone();
        let p = d.position();
        let b = api
            .get(
                &format!("/v1/accounts/{id}/balance?min_position={p}"),
                &owner,
            )
            .await;
        assert_eq!(b.expect(200)["balance"], db["balance_after"], "round {i}");
        assert!(b.body["position"].as_i64().unwrap() >= p);
        let u = api
            .get(
                &format!("/v1/billing/usage?min_position={p}&limit=1"),
                &owner,
            )
            .await;
        assert_eq!(u.expect(200)["items"][0]["id"], db["id"], "round {i}");
        let t = api
            .get(
                &format!("/v1/accounts/{id}/transactions?min_position={p}&limit=1"),
                &owner,
            )
            .await;
        assert_eq!(t.expect(200)["items"][0]["id"], db["id"], "round {i}");
    }
    let h = api.hold(&id, json!({ "credits": 25 })).await;
    let b = api
        .get(
            &format!("/v1/accounts/{id}/balance?min_position={}", h.position()),
            &owner,
        )
        .await;
    assert_eq!(b.expect(200)["held"], 25);
    let patched = api
        .patch(
            "/v1/account/settings",
            &owner,
            json!({ "name": "Renamed Inc" }),
        )
        .await;
    let a = api
        .get(
            &format!("/v1/accounts/{id}?min_position={}", patched.position()),
            &api.viewer(&id),
        )
        .await;
    assert_eq!(a.expect(200)["name"], "Renamed Inc");
    let put = api
        .put(
            "/v1/admin/credit-costs/linking",
            &api.developer(),
            json!({ "cost": 9, "unit": "per_request" }),
        )
        .await;
    let history = api
        .items("/v1/admin/credit-costs/linking/history", put.position(), "")
        .await;
    assert_eq!(history[0]["cost"], 9);
}
on_both_backends!(a_writes_position_as_min_position_makes_the_next_read_include_it);

/// Walks a list page by page; checks each page's size and returns every item.
async fn walk(api: &Api, path: &str, token: &str, limit: usize) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..100 {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let r = api.get(&url, token).await;
        let body = r.expect(200);
        let items = body["items"].as_array().unwrap();
        assert!(
            items.len() <= limit,
            "{url}: a page holds at most limit items"
        );
        all.extend(items.iter().cloned());
        match body["next_cursor"].as_str() {
            Some(c) => {
                assert_eq!(items.len(), limit, "{url}: only the last page is short");
                cursor = Some(c.to_owned());
            }
            None => {
                assert!(body["next_cursor"].is_null());
                return all;
            }
        }
    }
    panic!("{path}: more than 100 pages");
}

async fn limit_and_next_cursor_walk_every_list_without_duplicates_or_gaps(api: &Api) {
    let (id, _) = api.funded_account(1_000).await;
    let mut last = 0;
    for _ in 0..25 {
        last = api
            .deduct(
                &id,
                json!({ "operation": "content_generation", "units": 1 }),
            )
            .await
            .position();
    }
    let dev = api.developer();

    let tx_path = format!("/v1/accounts/{id}/transactions?min_position={last}");
    let walked = walk(api, &tx_path, &dev, 7).await;
    assert_eq!(walked.len(), 26);
    let one_page = api
        .items(
            &format!("/v1/accounts/{id}/transactions"),
            last,
            "&limit=500",
        )
        .await;
    assert_eq!(
        ids(&walked),
        ids(&one_page),
        "the walk is the whole list, in order"
    );
    let positions: Vec<i64> = walked
        .iter()
        .map(|t| t["position"].as_i64().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );
    assert_eq!(ids(&walked).into_iter().collect::<HashSet<_>>().len(), 26);
    let deductions = walk(
        api,
        &format!("/v1/accounts/{id}/transactions?min_position={last}&type=deduction"),
        &dev,
        10,
    )
    .await;
    assert_eq!(deductions.len(), 25);
    // The alias walks the same list.
    let via_alias = walk(
        api,
        &format!("/v1/billing/transactions?min_position={last}"),
        &api.viewer(&id),
        5,
    )
    .await;
    assert_eq!(ids(&via_alias), ids(&one_page));

    let usage = walk(
        api,
        &format!("/v1/accounts/{id}/usage?min_position={last}"),
        &dev,
        10,
    )
    .await;
    assert_eq!(usage.len(), 25);
    assert_eq!(ids(&usage).into_iter().collect::<HashSet<_>>().len(), 25);
    let usage_page = api
        .items(&format!("/v1/accounts/{id}/usage"), last, "&limit=500")
        .await;
    assert_eq!(ids(&usage), ids(&usage_page));
    // Exactly one page.
    let exact = walk(
        api,
        &format!("/v1/accounts/{id}/usage?min_position={last}"),
        &dev,
        25,
    )
    .await;
    assert_eq!(exact.len(), 25);

    let mut opened = vec![id.clone()];
    for _ in 0..11 {
        opened.push(api.open_account().await);
    }
    let p = api.grant(&opened[11], 1).await.position();
    let accounts = walk(
        api,
        &format!("/v1/admin/accounts?min_position={p}"),
        &dev,
        5,
    )
    .await;
    let walked_ids = ids_of(&accounts);
    assert_eq!(
        walked_ids.iter().collect::<HashSet<_>>().len(),
        walked_ids.len(),
        "no account twice"
    );
    let all = ids_of(&api.items("/v1/admin/accounts", p, "&limit=500").await);
    assert_eq!(walked_ids, all);
    for o in &opened {
        assert!(walked_ids.contains(o));
    }

    for list in [
        format!("/v1/accounts/{id}/transactions"),
        format!("/v1/accounts/{id}/usage"),
        "/v1/admin/accounts".to_owned(),
    ] {
        for limit in ["0", "501"] {
            api.get(&format!("{list}?limit={limit}"), &dev)
                .await
                .expect_error(422, "invalid_request");
        }
    }
}
on_both_backends!(limit_and_next_cursor_walk_every_list_without_duplicates_or_gaps);

async fn every_path_works_with_and_without_a_trailing_slash(api: &Api) {
    let (id, p) = api.funded_account(100).await;
    let owner = api.owner(&id);
    let dev = api.developer();
    let gets: Vec<(String, &str)> = vec![
        ("/v1/account/settings".into(), &owner),
        ("/v1/account/limits".into(), &owner),
        ("/v1/billing/account_balance".into(), &owner),
        ("/v1/billing/transactions".into(), &owner),
        ("/v1/billing/usage".into(), &owner),
        ("/v1/account/usage/analytics".into(), &owner),
        ("/v1/billing/credits/packages".into(), &owner),
        ("/v1/plans".into(), &owner),
        (format!("/v1/accounts/{id}"), &owner),
        (format!("/v1/accounts/{id}/limits"), &owner),
        (format!("/v1/accounts/{id}/balance"), &owner),
        (format!("/v1/accounts/{id}/transactions"), &owner),
        (format!("/v1/accounts/{id}/usage"), &owner),
        (format!("/v1/accounts/{id}/usage/analytics"), &owner),
        ("/v1/admin/accounts".into(), &dev),
        ("/v1/admin/credit-costs".into(), &dev),
        ("/v1/admin/credit-costs/history".into(), &dev),
        ("/v1/admin/credit-costs/clustering/history".into(), &dev),
        ("/health".into(), &dev),
        ("/ready".into(), &dev),
    ];
    for (path, token) in gets {
        for variant in [path.clone(), format!("{path}/")] {
            let r = api.get(&format!("{variant}?min_position={p}"), token).await;
            assert_eq!(r.status, 200, "GET {variant}: {}", r.text);
        }
    }
    let bot = api.bot(Some(&id));
    for path in [
        format!("/v1/accounts/{id}/deductions"),
        format!("/v1/accounts/{id}/deductions/"),
    ] {
        let r = api
            .post(
                &path,
                &bot,
                Some(&key()),
                json!({ "operation": "clustering" }),
            )
            .await;
        assert_eq!(r.status, 201, "POST {path}: {}", r.text);
    }
    for path in ["/v1/accounts", "/v1/accounts/"] {
        let r = api
            .post(path, &dev, Some(&key()), Api::account_body(&unique_slug()))
            .await;
        assert_eq!(r.status, 201, "POST {path}: {}", r.text);
    }
    for (i, path) in ["/v1/account/settings", "/v1/account/settings/"]
        .into_iter()
        .enumerate()
    {
        let r = api
            .patch(path, &owner, json!({ "name": format!("Name {i}") }))
            .await;
        assert_eq!(r.status, 200, "PATCH {path}: {}", r.text);
    }
    for path in ["/v1/admin/plans/slashy", "/v1/admin/plans/slashy/"] {
        let r = api
            .put(
                path,
                &dev,
                json!({
                    "name": "Slashy",
                    "price": { "amount": "1.00", "currency": "USD" },
                    "billing_cycle": "monthly",
                    "included_credits": 1,
                }),
            )
            .await;
        assert_eq!(r.status, 200, "PUT {path}: {}", r.text);
        assert_eq!(r.body["slug"], "slashy");
    }
}
on_both_backends!(every_path_works_with_and_without_a_trailing_slash);

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

// ---------------------------------------------------------------------------
// Black box: the real binary
// ---------------------------------------------------------------------------

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ledger_server(database_url: &str, args: &[&str]) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ledger-server"));
    cmd.args(args)
        .env("LEDGER_DATABASE_URL", database_url)
        .env("LEDGER_JWT_SECRET", common::JWT_SECRET)
        .env("LEDGER_LOG", "warn")
        .env_remove("LEDGER_DATA_DIR")
        .stdin(std::process::Stdio::null());
    cmd
}

fn cli_token(database_url: &str, args: &[&str]) -> String {
    let mut all = vec!["token"];
    all.extend_from_slice(args);
    let out = ledger_server(database_url, &all).output().unwrap();
    assert!(
        out.status.success(),
        "ledger-server token {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn the_real_binary_serves_the_readme_flow_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/ledger.db", dir.path().display());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _server = Child(
        ledger_server(&url, &[])
            .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
            .spawn()
            .expect("start ledger-server"),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = http.get(format!("{base}/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no /health within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let developer = cli_token(&url, &["--role", "developer", "--sub", "backend"]);
    let call = |method: Method, path: &str, token: &str, body: Option<Value>| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token)
            .header("Idempotency-Key", key());
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap();
            (
                status,
                serde_json::from_str::<Value>(&text).unwrap_or(Value::Null),
                text,
            )
        }
    };

    let (status, opened, text) = call(
        Method::POST,
        "/v1/accounts",
        &developer,
        Some(json!({
            "name": "Acme",
            "slug": "acme",
            "plan": "starter",
            "country": "US",
            "billing_email": "billing@acme.example",
            "owner_user_id": "u-1",
        })),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    let id = opened["account_id"].as_str().unwrap().to_owned();
    let owner = cli_token(&url, &["--role", "owner", "--account", &id]);
    let worker = cli_token(
        &url,
        &["--role", "system_bot", "--account", &id, "--ttl", "30m"],
    );

    let (status, grant, text) = call(
        Method::POST,
        &format!("/v1/accounts/{id}/grants"),
        &developer,
        Some(json!({ "credits": 1000, "source": "purchase" })),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(grant["balance_after"], 1000);

    let (status, deducted, text) = call(
        Method::POST,
        &format!("/v1/accounts/{id}/deductions"),
        &worker,
        Some(json!({ "operation": "content_generation", "units": 250, "model": "gpt-4o" })),
    )
    .await;
    assert_eq!(status, 201, "{text}");
    assert_eq!(deducted["credits"], 3);
    assert_eq!(deducted["balance_after"], 997);
    let p = deducted["position"].as_i64().unwrap();

    let (status, balance, text) = call(
        Method::GET,
        &format!("/v1/billing/account_balance/?min_position={p}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(balance["balance"], 997);
    assert_eq!(balance["available"], 997);
    assert_eq!(balance["plan"], "starter");

    let (status, usage, text) = call(
        Method::GET,
        &format!("/v1/billing/usage/?min_position={p}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let items = usage["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["operation"], "content_generation");
    assert_eq!(items[0]["units"], 250);
    assert_eq!(items[0]["credits"], 3);
    assert_eq!(items[0]["model"], "gpt-4o");

    // The worker's token is no dashboard's: it may not read the usage log.
    let (status, _, _) = call(Method::GET, "/v1/billing/usage/", &worker, None).await;
    assert_eq!(status, 403);
}
