//! Multi-currency billing through the real router over real HTTP, on
//! PostgreSQL and SQLite (issue 16): plans and packages priced per
//! currency, an account billed in its country's currency unless staff
//! choose another, invoices and subscriptions in that currency (never a
//! conversion: a price missing in the account's currency bills the base
//! price in its own), and revenue reported per currency.

mod common;

use common::{key, Api};
use serde_json::{json, Value};

/// A package sold for 10.00 USD, 9.00 EUR and 1500 JPY.
async fn put_priced_package(api: &Api) {
    let put = api
        .put(
            "/v1/admin/credit-packages/globe",
            &api.developer(),
            json!({
                "name": "Globe",
                "credits": 1000,
                "price": { "amount": "10.00", "currency": "USD" },
                "prices": { "EUR": "9.00", "JPY": "1500" },
            }),
        )
        .await;
    let body = put.expect(200);
    assert_eq!(
        body["prices"],
        json!({ "EUR": "9.00", "JPY": "1500", "USD": "10.00" })
    );
}

async fn account_in(api: &Api, country: &str) -> String {
    api.open_account_on(json!({ "plan": "starter", "country": country }))
        .await
}

async fn account(api: &Api, id: &str) -> Value {
    let p = api.head().await;
    api.get(
        &format!("/v1/accounts/{id}?min_position={p}"),
        &api.developer(),
    )
    .await
    .expect(200)
    .clone()
}

/// Buys the `globe` package by bank transfer; answers the invoice.
async fn buy(api: &Api, account: &str) -> Value {
    api.post(
        "/v1/billing/credits/purchase",
        &api.owner(account),
        Some(&key()),
        json!({ "package": "globe", "method": "bank_transfer" }),
    )
    .await
    .expect(201)["invoice"]
        .clone()
}

fn priced(invoice: &Value) -> (String, String) {
    (
        invoice["currency"].as_str().unwrap().to_owned(),
        invoice["total"].as_str().unwrap().to_owned(),
    )
}

async fn an_account_is_billed_in_its_countrys_currency_or_staffs_choice(api: &Api) {
    put_priced_package(api).await;
    // Everyone sees every currency a package is sold in.
    let listed = api
        .get("/v1/billing/credits/packages", &api.developer())
        .await;
    let globe = listed.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slug"] == "globe")
        .cloned()
        .unwrap();
    assert_eq!(globe["prices"]["EUR"], "9.00");
    assert_eq!(globe["prices"]["USD"], "10.00");

    let de = account_in(api, "DE").await;
    let seen = account(api, &de).await;
    assert_eq!(seen["currency"], "EUR");
    assert_eq!(seen["currency_override"], Value::Null);
    assert_eq!(priced(&buy(api, &de).await), ("EUR".into(), "9.00".into()));

    let us = account_in(api, "US").await;
    assert_eq!(account(api, &us).await["currency"], "USD");
    assert_eq!(priced(&buy(api, &us).await), ("USD".into(), "10.00".into()));

    // No GBP price: the base price in its own currency, never converted.
    let gb = account_in(api, "GB").await;
    assert_eq!(account(api, &gb).await["currency"], "GBP");
    assert_eq!(priced(&buy(api, &gb).await), ("USD".into(), "10.00".into()));

    // Only staff choose another currency; a bad code is 422.
    api.patch(
        &format!("/v1/accounts/{de}"),
        &api.owner(&de),
        json!({ "currency": "JPY" }),
    )
    .await
    .expect_error(403, "forbidden");
    api.patch(
        &format!("/v1/accounts/{de}"),
        &api.developer(),
        json!({ "currency": "jpy" }),
    )
    .await
    .expect_error(422, "invalid_request");
    let patched = api
        .patch(
            &format!("/v1/accounts/{de}"),
            &api.developer(),
            json!({ "currency": "JPY" }),
        )
        .await;
    let body = patched.expect(200);
    assert_eq!(body["currency"], "JPY");
    assert_eq!(body["currency_override"], "JPY");
    // The yen has no minor unit.
    assert_eq!(priced(&buy(api, &de).await), ("JPY".into(), "1500".into()));
    // A country change leaves staff's choice alone; null clears it.
    api.patch(
        &format!("/v1/accounts/{de}"),
        &api.developer(),
        json!({ "country": "FR" }),
    )
    .await
    .expect(200);
    assert_eq!(account(api, &de).await["currency"], "JPY");
    let cleared = api
        .patch(
            &format!("/v1/accounts/{de}"),
            &api.developer(),
            json!({ "currency": null }),
        )
        .await;
    let body = cleared.expect(200);
    assert_eq!(body["currency"], "EUR");
    assert_eq!(body["currency_override"], Value::Null);

    // Opened with a currency of staff's choice.
    let chf = api
        .open_account_with({
            let mut b = Api::account_body(&common::unique_slug());
            b["country"] = json!("US");
            b["currency"] = json!("CHF");
            b
        })
        .await;
    let opened = chf.expect(201);
    assert_eq!(opened["currency"], "CHF");
    assert_eq!(opened["currency_override"], "CHF");
}
on_both_backends!(an_account_is_billed_in_its_countrys_currency_or_staffs_choice);

/// The starter plan, also sold for 27.00 EUR.
async fn starter_in_euros(api: &Api) {
    api.put(
        "/v1/admin/plans/starter",
        &api.developer(),
        json!({
            "name": "Starter",
            "price": { "amount": "29.00", "currency": "USD" },
            "prices": { "EUR": "27.00" },
            "billing_cycle": "monthly",
            "included_credits": 1000,
            "allow_credit_topup": true,
            "limits": { "max_users": 2, "max_sites": 3 },
        }),
    )
    .await
    .expect(200);
}

async fn subscribe(api: &Api, account: &str) -> Value {
    api.post(
        "/v1/billing/subscriptions/create",
        &api.owner(account),
        Some(&key()),
        json!({ "plan": "starter", "method": "bank_transfer" }),
    )
    .await
    .expect(201)
    .clone()
}

async fn pay_and_approve(api: &Api, account: &str, invoice: &Value) {
    let paid = api
        .post(
            "/v1/billing/payments/manual",
            &api.owner(account),
            Some(&key()),
            json!({
                "invoice_id": invoice["id"],
                "method": "bank_transfer",
                "reference": "TRANSFER-1",
                "amount": invoice["total"],
            }),
        )
        .await;
    let payment = paid.expect(201)["id"].as_str().unwrap().to_owned();
    api.post_empty(
        &format!("/v1/admin/payments/{payment}/approve"),
        &api.developer(),
        None,
    )
    .await
    .expect(200);
}

async fn subscriptions_keep_their_currency_and_revenue_stays_per_currency(api: &Api) {
    starter_in_euros(api).await;
    put_priced_package(api).await;
    let de = account_in(api, "AT").await;
    let sub = subscribe(api, &de).await;
    assert_eq!(sub["currency"], "EUR");
    assert_eq!(sub["price"], "27.00");
    let first = &sub["open_invoices"][0];
    assert_eq!(first["currency"], "EUR");
    assert_eq!(first["amount"], "27.00");

    let us = account_in(api, "US").await;
    let sub_us = subscribe(api, &us).await;
    assert_eq!(sub_us["currency"], "USD");
    assert_eq!(sub_us["price"], "29.00");

    // Pay both first invoices and one EUR package: revenue and MRR by
    // currency, never summed across currencies.
    let p = api.head().await;
    for (account, sub) in [(&de, &sub), (&us, &sub_us)] {
        let id = sub["open_invoices"][0]["id"].as_str().unwrap();
        let invoice = api
            .get(
                &format!("/v1/billing/invoices/{id}?min_position={p}"),
                &api.owner(account),
            )
            .await
            .expect(200)
            .clone();
        pay_and_approve(api, account, &invoice).await;
    }
    let package = buy(api, &de).await;
    pay_and_approve(api, &de, &package).await;
    let p = api.head().await;
    let stats = api
        .get(
            &format!("/v1/admin/billing/stats?min_position={p}"),
            &api.developer(),
        )
        .await
        .expect(200)
        .clone();
    assert_eq!(stats["mrr"], json!({ "EUR": "27.00", "USD": "29.00" }));
    assert_eq!(
        stats["revenue"],
        json!({ "invoices": 3, "by_currency": { "EUR": "36.00", "USD": "29.00" } })
    );

    // The professional plan has no EUR price: a EUR subscription cannot
    // move to it (that would change its currency).
    api.post(
        "/v1/billing/subscriptions/upgrade",
        &api.owner(&de),
        Some(&key()),
        json!({ "plan": "professional" }),
    )
    .await
    .expect_error(422, "invalid_request");
}
on_both_backends!(subscriptions_keep_their_currency_and_revenue_stays_per_currency);

async fn prices_are_checked(api: &Api) {
    let package = |prices: Value| {
        json!({
            "name": "Bad",
            "credits": 10,
            "price": { "amount": "1.00", "currency": "USD" },
            "prices": prices,
        })
    };
    for (prices, field) in [
        (json!({ "EUR": "-1.00" }), "prices.EUR"),
        (json!({ "USD": "2.00" }), "prices"),
        (json!({ "eur": "1.00" }), ""),
    ] {
        let r = api
            .put(
                "/v1/admin/credit-packages/bad",
                &api.developer(),
                package(prices.clone()),
            )
            .await;
        let body = r.expect_error(422, "invalid_request");
        if !field.is_empty() {
            assert_eq!(body["field"], field, "{prices}");
        }
    }
}
on_both_backends!(prices_are_checked);
