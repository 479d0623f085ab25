//! Accounts through the real router over real HTTP, on PostgreSQL and
//! SQLite (SPEC §3): opening, reading and patching an account on its
//! canonical and alias paths, its limits, suspending and activating it, and
//! the admin account search.

mod common;

use common::{decimal, ids_of, key, time, unique_slug, Api};
use serde_json::json;

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
    // Tax rate and country are the seller's: the owner may not set them.
    for field in [json!({ "tax_rate": "0" }), json!({ "country": "US" })] {
        api.patch("/v1/account/settings/", &owner, field)
            .await
            .expect_error(403, "forbidden");
    }
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
