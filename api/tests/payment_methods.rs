//! Payment method configuration per country through the real router over
//! real HTTP, on PostgreSQL and SQLite
//! (docs/adr/0013-payment-methods-and-stats.md): the seeded `*` defaults, a
//! country's row overriding `*`, a disabled method refused on purchase and
//! on manual payment and gone from the list, the configured instructions
//! and bank details in the purchase's payment, and the admin validation.

mod common;

use common::{key, Api};
use serde_json::{json, Value};

/// Opens a starter-plan account (it allows credit top-ups, tax 0) in
/// `country`; returns its id.
async fn account_in(api: &Api, country: &str) -> String {
    api.open_account_on(json!({ "plan": "starter", "country": country }))
        .await
}

/// The methods the account's owner is offered.
async fn offered(api: &Api, account: &str) -> Value {
    let p = api.head().await;
    api.get(
        &format!("/v1/billing/payment-methods?min_position={p}"),
        &api.owner(account),
    )
    .await
    .expect(200)
    .clone()
}

fn methods(offered: &Value) -> Vec<String> {
    offered["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap().to_owned())
        .collect()
}

async fn put_config(api: &Api, country: &str, method: &str, body: Value) -> common::Resp {
    api.put(
        &format!("/v1/admin/payment-method-configs/{country}/{method}"),
        &api.developer(),
        body,
    )
    .await
}

async fn purchase(api: &Api, account: &str, package: &str, method: &str) -> common::Resp {
    api.post(
        "/v1/billing/credits/purchase",
        &api.owner(account),
        Some(&key()),
        json!({ "package": package, "method": method }),
    )
    .await
}

/// The German bank-transfer row the tests write.
fn sepa() -> Value {
    json!({
        "display_name": "SEPA-Überweisung",
        "instructions": "Überweisen Sie {amount} {currency} mit dem Verwendungszweck {reference}.",
        "bank_name": "Acme Bank AG",
        "account_number": "DE89370400440532013000",
        "routing_number": "37040044",
        "swift": "COBADEFFXXX",
        "sort_order": 1,
    })
}

async fn the_seeded_defaults_are_offered_to_any_country(api: &Api) {
    let account = account_in(api, "BR").await;
    let list = offered(api, &account).await;
    assert_eq!(list["country"], "BR");
    // PayPal is seeded disabled; Stripe is enabled but has no key here.
    assert_eq!(
        methods(&list),
        ["stripe", "bank_transfer", "local_wallet"],
        "{list}"
    );
    let items = list["items"].as_array().unwrap();
    let stripe = &items[0];
    assert_eq!(stripe["display_name"], "Card (Stripe)");
    assert_eq!(stripe["available"], false);
    assert_eq!(stripe["manual"], false);
    assert_eq!(stripe["configured_for"], "*");
    let bank = &items[1];
    assert_eq!(bank["display_name"], "Bank transfer");
    assert_eq!(bank["available"], true);
    assert_eq!(bank["manual"], true);
    assert_eq!(bank["sort_order"], 20);
    assert!(bank["instructions"]
        .as_str()
        .unwrap()
        .contains("{reference}"));
    assert_eq!(bank["bank_name"], Value::Null);
    assert_eq!(items[2]["display_name"], "Local wallet");
    assert_eq!(items[2]["available"], true);

    // Admins and owners see it; editors and developers without an account
    // do not (the list is per account).
    api.get("/v1/billing/payment-methods", &api.admin(&account))
        .await
        .expect(200);
    api.get("/v1/billing/payment-methods", &api.editor(&account))
        .await
        .expect_error(403, "forbidden");

    // The admin list holds the four `*` rows, PayPal disabled.
    let rows = api
        .get("/v1/admin/payment-method-configs", &api.developer())
        .await;
    let rows = rows.expect(200)["items"].as_array().unwrap().clone();
    let summary: Vec<(String, String, bool)> = rows
        .iter()
        .map(|r| {
            (
                r["country"].as_str().unwrap().to_owned(),
                r["method"].as_str().unwrap().to_owned(),
                r["enabled"].as_bool().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, String, bool)> = [
        ("stripe", true),
        ("bank_transfer", true),
        ("local_wallet", true),
        ("paypal", false),
    ]
    .iter()
    .map(|(m, e)| ("*".to_owned(), (*m).to_owned(), *e))
    .collect();
    assert_eq!(summary, want);
    api.get("/v1/admin/payment-method-configs", &api.owner(&account))
        .await
        .expect_error(403, "forbidden");
}
on_both_backends!(the_seeded_defaults_are_offered_to_any_country);

async fn a_country_row_overrides_the_any_country_row_and_its_instructions_reach_the_purchase(
    api: &Api,
) {
    let saved = put_config(api, "DE", "bank_transfer", sepa()).await;
    let body = saved.expect(200).clone();
    assert_eq!(body["country"], "DE");
    assert_eq!(body["method"], "bank_transfer");
    assert_eq!(body["enabled"], true, "enabled defaults to true");
    assert_eq!(body["swift"], "COBADEFFXXX");
    assert!(saved.position() > 0);

    let german = account_in(api, "DE").await;
    let list = offered(api, &german).await;
    assert_eq!(
        methods(&list),
        ["bank_transfer", "stripe", "local_wallet"],
        "sort order 1 comes first: {list}"
    );
    let bank = &list["items"][0];
    assert_eq!(bank["configured_for"], "DE");
    assert_eq!(bank["display_name"], "SEPA-Überweisung");
    assert_eq!(bank["bank_name"], "Acme Bank AG");
    assert_eq!(bank["account_number"], "DE89370400440532013000");
    assert_eq!(bank["routing_number"], "37040044");
    assert_eq!(bank["swift"], "COBADEFFXXX");
    assert_eq!(list["items"][1]["configured_for"], "*");

    // Another country still gets the `*` row.
    let american = account_in(api, "US").await;
    let us = offered(api, &american).await;
    assert_eq!(us["items"][1]["method"], "bank_transfer");
    assert_eq!(us["items"][1]["configured_for"], "*");

    // The purchase's payment carries the German text, filled in, and the
    // bank details.
    let bought = purchase(api, &german, "pro", "bank_transfer").await;
    let body = bought.expect(201).clone();
    let number = body["invoice"]["number"].as_str().unwrap();
    assert_eq!(body["invoice"]["total"], "29.00");
    let instructions = body["payment"]["instructions"].as_str().unwrap();
    assert_eq!(
        instructions,
        format!(
            "Überweisen Sie 29.00 USD mit dem Verwendungszweck {number}.\n\
             Bank: Acme Bank AG\nAccount number: DE89370400440532013000\n\
             Routing number: 37040044\nSWIFT/BIC: COBADEFFXXX"
        )
    );
    // The American purchase keeps the generic text.
    let bought = purchase(api, &american, "pro", "bank_transfer").await;
    let body = bought.expect(201).clone();
    let number = body["invoice"]["number"].as_str().unwrap();
    assert_eq!(
        body["payment"]["instructions"],
        format!(
            "Transfer 29.00 USD to the seller's bank account with reference {number}; \
             it is credited once staff approve it."
        )
    );

    // The manual payment of an invoice also shows the configured text.
    let invoice = purchase(api, &german, "starter", "local_wallet").await;
    let invoice_id = invoice.expect(201)["invoice"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let number = invoice.body["invoice"]["number"].as_str().unwrap();
    let paid = api
        .post(
            "/v1/billing/payments/manual",
            &api.owner(&german),
            Some(&key()),
            json!({
                "invoice_id": invoice_id,
                "method": "bank_transfer",
                "reference": "SEPA-4711",
                "amount": "9.00",
            }),
        )
        .await;
    let instructions = paid.expect(201)["instructions"].as_str().unwrap();
    assert!(
        instructions.starts_with(&format!(
            "Überweisen Sie 9.00 USD mit dem Verwendungszweck {number}."
        )),
        "{instructions}"
    );

    // The admin list filtered by country.
    let rows = api
        .get(
            "/v1/admin/payment-method-configs?country=DE",
            &api.developer(),
        )
        .await;
    let rows = rows.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["display_name"], "SEPA-Überweisung");
    let rows = api
        .get(
            "/v1/admin/payment-method-configs?country=*",
            &api.developer(),
        )
        .await;
    assert_eq!(rows.expect(200)["items"].as_array().unwrap().len(), 4);
}
on_both_backends!(
    a_country_row_overrides_the_any_country_row_and_its_instructions_reach_the_purchase
);

async fn a_disabled_method_is_refused_and_leaves_the_list(api: &Api) {
    let french = account_in(api, "FR").await;
    // An invoice to pay later, bought while local_wallet is still offered.
    let bought = purchase(api, &french, "starter", "bank_transfer").await;
    let invoice_id = bought.expect(201)["invoice"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A purchase and a manual payment by local wallet made before it is
    // withdrawn, to be retried after.
    let early_key = key();
    let early_body = json!({ "package": "pro", "method": "local_wallet" });
    let early = api
        .post(
            "/v1/billing/credits/purchase",
            &api.owner(&french),
            Some(&early_key),
            early_body.clone(),
        )
        .await;
    let early = early.expect(201).clone();
    let wallet_key = key();
    let wallet_body = json!({
        "invoice_id": invoice_id,
        "method": "local_wallet",
        "reference": "W-0",
        "amount": "9.00",
    });
    let wallet = api
        .post(
            "/v1/billing/payments/manual",
            &api.owner(&french),
            Some(&wallet_key),
            wallet_body.clone(),
        )
        .await;
    let wallet = wallet.expect(201).clone();

    let off = put_config(
        api,
        "FR",
        "local_wallet",
        json!({ "enabled": false, "display_name": "Portefeuille local" }),
    )
    .await;
    assert_eq!(off.expect(200)["enabled"], false);

    let list = offered(api, &french).await;
    assert_eq!(methods(&list), ["stripe", "bank_transfer"], "{list}");

    let refused = purchase(api, &french, "pro", "local_wallet").await;
    let details = refused.expect_error(422, "invalid_request");
    assert_eq!(details["field"], "method");
    assert!(refused.text.contains("FR"), "{}", refused.text);
    let refused = api
        .post(
            "/v1/billing/payments/manual",
            &api.owner(&french),
            Some(&key()),
            json!({
                "invoice_id": invoice_id,
                "method": "local_wallet",
                "reference": "W-1",
                "amount": "9.00",
            }),
        )
        .await;
    assert_eq!(
        refused.expect_error(422, "invalid_request")["field"],
        "method"
    );
    // Nothing was issued for the refused purchase.
    let p = api.head().await;
    let invoices = api
        .get(
            &format!("/v1/billing/invoices?min_position={p}"),
            &api.owner(&french),
        )
        .await;
    assert_eq!(invoices.expect(200)["items"].as_array().unwrap().len(), 2);

    // Retries of what was accepted before replay their first responses.
    let again = api
        .post(
            "/v1/billing/credits/purchase",
            &api.owner(&french),
            Some(&early_key),
            early_body,
        )
        .await;
    assert_eq!(again.expect(201), &early);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let again = api
        .post(
            "/v1/billing/payments/manual",
            &api.owner(&french),
            Some(&wallet_key),
            wallet_body,
        )
        .await;
    let mut replayed = again.expect(201).clone();
    let mut first = wallet.clone();
    // `position` is where the read models stood; the payment is the same.
    replayed.as_object_mut().unwrap().remove("position");
    first.as_object_mut().unwrap().remove("position");
    assert_eq!(replayed, first);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    // Other countries keep it; the bank transfer still works in France.
    let spanish = account_in(api, "ES").await;
    assert_eq!(
        methods(&offered(api, &spanish).await),
        ["stripe", "bank_transfer", "local_wallet"]
    );
    purchase(api, &spanish, "pro", "local_wallet")
        .await
        .expect(201);
    purchase(api, &french, "pro", "bank_transfer")
        .await
        .expect(201);

    // Disabling the `*` row turns it off wherever no country row exists.
    put_config(
        api,
        "*",
        "bank_transfer",
        json!({ "enabled": false, "display_name": "Bank transfer" }),
    )
    .await
    .expect(200);
    assert_eq!(
        methods(&offered(api, &spanish).await),
        ["stripe", "local_wallet"]
    );
    assert_eq!(
        purchase(api, &spanish, "pro", "bank_transfer")
            .await
            .expect_error(422, "invalid_request")["field"],
        "method"
    );

    // PayPal, once enabled, is listed but not available, and refused as
    // unavailable (503), never faked.
    put_config(
        api,
        "*",
        "paypal",
        json!({ "enabled": true, "display_name": "PayPal", "sort_order": 40 }),
    )
    .await
    .expect(200);
    let list = offered(api, &spanish).await;
    assert_eq!(methods(&list), ["stripe", "local_wallet", "paypal"]);
    assert_eq!(list["items"][2]["available"], false);
    purchase(api, &spanish, "pro", "paypal")
        .await
        .expect_error(503, "unavailable");
}
on_both_backends!(a_disabled_method_is_refused_and_leaves_the_list);

async fn bad_configs_are_refused_naming_the_field(api: &Api) {
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("de", "bank_transfer", sepa(), "country"),
        ("XX", "bank_transfer", sepa(), "country"),
        ("DEU", "bank_transfer", sepa(), "country"),
        ("DE", "cash", sepa(), "method"),
        (
            "DE",
            "bank_transfer",
            json!({ "display_name": "x".repeat(65) }),
            "display_name",
        ),
        (
            "DE",
            "bank_transfer",
            json!({ "display_name": "" }),
            "display_name",
        ),
        ("DE", "bank_transfer", json!({}), "display_name"),
        (
            "DE",
            "bank_transfer",
            json!({ "display_name": "SEPA", "instructions": "x".repeat(2_001) }),
            "instructions",
        ),
        (
            "DE",
            "bank_transfer",
            json!({ "display_name": "SEPA", "bank_name": "x".repeat(129) }),
            "bank_name",
        ),
        (
            "DE",
            "bank_transfer",
            json!({ "display_name": "SEPA", "account_number": "x".repeat(65) }),
            "account_number",
        ),
        (
            "DE",
            "bank_transfer",
            json!({ "display_name": "SEPA", "swift": "not-a-bic" }),
            "swift",
        ),
        (
            "DE",
            "bank_transfer",
            json!({ "display_name": "SEPA", "sort_order": 10_001 }),
            "sort_order",
        ),
        (
            "DE",
            "bank_transfer",
            json!({ "display_name": "SEPA", "sort_order": -1 }),
            "sort_order",
        ),
        (
            "DE",
            "bank_transfer",
            json!({ "display_name": "SEPA", "iban": "DE89" }),
            "iban",
        ),
    ];
    for (country, method, body, field) in cases {
        let r = put_config(api, country, method, body).await;
        let details = r.expect_error(422, "invalid_request");
        assert_eq!(details["field"], field, "{country}/{method}: {}", r.text);
    }
    let r = api
        .get(
            "/v1/admin/payment-method-configs?country=de",
            &api.developer(),
        )
        .await;
    assert_eq!(r.expect_error(422, "invalid_request")["field"], "country");

    // Only developers may write, whatever the body.
    let account = account_in(api, "DE").await;
    for token in [api.owner(&account), api.admin(&account), api.bot(None)] {
        api.put(
            "/v1/admin/payment-method-configs/DE/bank_transfer",
            &token,
            sepa(),
        )
        .await
        .expect_error(403, "forbidden");
    }

    // Nothing was written by any of it: the German account still sees `*`.
    let list = offered(api, &account).await;
    assert_eq!(list["items"][1]["configured_for"], "*");
    let rows = api
        .get(
            "/v1/admin/payment-method-configs?country=DE",
            &api.developer(),
        )
        .await;
    assert!(rows.expect(200)["items"].as_array().unwrap().is_empty());
}
on_both_backends!(bad_configs_are_refused_naming_the_field);

async fn putting_the_same_row_twice_changes_nothing_the_second_time(api: &Api) {
    let first = put_config(
        api,
        "*",
        "local_wallet",
        json!({ "display_name": "Wallet" }),
    )
    .await;
    let p1 = first.expect(200).clone()["position"].as_i64().unwrap();
    let again = put_config(
        api,
        "*",
        "local_wallet",
        json!({ "display_name": "Wallet" }),
    )
    .await;
    let body = again.expect(200).clone();
    assert_eq!(body["display_name"], "Wallet");
    assert_eq!(
        body["position"].as_i64().unwrap(),
        p1,
        "no new event, so the head is where the first PUT left it"
    );
    // A changed body is a new event.
    let changed = put_config(
        api,
        "*",
        "local_wallet",
        json!({ "display_name": "E-wallet" }),
    )
    .await;
    assert!(changed.expect(200)["position"].as_i64().unwrap() > p1);
}
on_both_backends!(putting_the_same_row_twice_changes_nothing_the_second_time);
