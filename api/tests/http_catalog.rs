//! The catalog through the real router over real HTTP, on PostgreSQL and
//! SQLite (SPEC §3): plans and credit packages, listed for all and upserted
//! by developers, and the credit-cost table (versioned, audited, pricing the
//! next deduction, its units spelled as the SPEC does).

mod common;

use common::{decimal, time, unique_slug, Api, Resp};
use serde_json::json;

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

async fn an_inactive_operation_is_refused_and_cost_rows_carry_names_and_the_plans_field(api: &Api) {
    let dev = api.developer();
    let row = api
        .put(
            "/v1/admin/credit-costs/idea_generation",
            &dev,
            json!({
                "credits_cost": 16,
                "display_name": "Idea generation (GPT)",
                "description": "Blog post ideas for a keyword cluster",
                "is_active": false,
            }),
        )
        .await;
    let body = row.expect(200);
    assert_eq!(body["cost"], 16, "credits_cost is cost: {body}");
    assert_eq!(body["credits_cost"], 16);
    assert_eq!(body["unit"], "per_request", "an absent unit is unchanged");
    assert_eq!(body["display_name"], "Idea generation (GPT)");
    assert_eq!(body["description"], "Blog post ideas for a keyword cluster");
    assert_eq!(body["is_active"], false);

    let (id, _) = api.funded_account(100).await;
    for path in ["deductions", "holds"] {
        let refused = api
            .post(
                &format!("/v1/accounts/{id}/{path}"),
                &api.bot(Some(&id)),
                Some(&common::key()),
                json!({ "operation": "idea_generation" }),
            )
            .await;
        let details = refused.expect_error(422, "operation_inactive");
        assert_eq!(details["operation"], "idea_generation");
    }
    assert_eq!(api.balance_now(&id).await, 100, "nothing was taken");

    // Back on: the same price, no new version for the flag alone.
    let table = api.get("/v1/admin/credit-costs", &dev).await;
    let version = table.expect(200)["version"].clone();
    let on = api
        .put(
            "/v1/admin/credit-costs/idea_generation",
            &dev,
            json!({ "is_active": true }),
        )
        .await;
    assert_eq!(on.expect(200)["version"], version);
    let d = api
        .deduct(&id, json!({ "operation": "idea_generation" }))
        .await;
    assert_eq!(d.expect(201)["credits"], 16);

    // Unnamed rows read with a name made from the key.
    let table = api.get("/v1/admin/credit-costs", &dev).await;
    let items = table.expect(200)["items"].as_array().unwrap().clone();
    let clustering = items
        .iter()
        .find(|c| c["operation"] == "clustering")
        .unwrap();
    assert_eq!(clustering["display_name"], "Clustering");
    assert_eq!(clustering["is_active"], true);

    // Both names for the cost must agree; a new operation needs its price.
    api.put(
        "/v1/admin/credit-costs/clustering",
        &dev,
        json!({ "cost": 1, "credits_cost": 2 }),
    )
    .await
    .expect_error(422, "invalid_request");
    api.put(
        "/v1/admin/credit-costs/brand_new",
        &dev,
        json!({ "display_name": "Brand new" }),
    )
    .await
    .expect_error(422, "invalid_request");
}
on_both_backends!(an_inactive_operation_is_refused_and_cost_rows_carry_names_and_the_plans_field);
