//! The read side through the real router over real HTTP, on PostgreSQL and
//! SQLite (SPEC §3): balance, transactions, usage and usage analytics on
//! their canonical and alias paths, read-your-writes with `min_position`,
//! `limit`/`next_cursor` pagination of every list, and every path with and
//! without a trailing slash.

mod common;

use std::collections::HashSet;

use common::{decimal, ids_of, key, time, unique_slug, Api};
use serde_json::{json, Value};

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().expect("an item id").to_owned())
        .collect()
}

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
