//! `GET /v1/admin/billing/stats` through the real router over real HTTP, on
//! PostgreSQL and SQLite (docs/adr/0013-payment-methods-and-stats.md): real
//! flows (a purchase approved by a developer, a subscription made active, a
//! pending invoice, a deduction, an adjustment, an expiry, a suspension),
//! then every figure checked exactly, all time and over ranges; 403 for
//! anyone but a developer, 422 for a bad range.

mod common;

use std::time::Duration;

use chrono::Utc;
use common::{key, Api};
use serde_json::{json, Value};

/// Opens an account on `plan` with `tax_rate`, and any extra fields.
async fn open(api: &Api, plan: &str, mut extra: Value) -> String {
    extra["plan"] = json!(plan);
    api.open_account_on(extra).await
}

async fn purchase(api: &Api, account: &str, package: &str) -> Value {
    api.post(
        "/v1/billing/credits/purchase",
        &api.owner(account),
        Some(&key()),
        json!({ "package": package, "method": "bank_transfer" }),
    )
    .await
    .expect(201)
    .clone()
}

async fn approve(api: &Api, payment_id: &str) {
    api.post_empty(
        &format!("/v1/admin/payments/{payment_id}/approve"),
        &api.developer(),
        None,
    )
    .await
    .expect(200);
}

/// The stats as a developer, once the read models have caught up;
/// `query` is appended.
async fn stats(api: &Api, query: &str) -> Value {
    let p = api.head().await;
    api.get(
        &format!("/v1/admin/billing/stats?min_position={p}{query}"),
        &api.developer(),
    )
    .await
    .expect(200)
    .clone()
}

fn zero_credits(scope: &str) -> Value {
    json!({
        "scope": scope, "issued": 0, "used": 0, "refunded": 0, "expired": 0, "adjusted": 0,
    })
}

async fn every_figure_follows_from_the_flows(api: &Api) {
    let started = Utc::now() - chrono::Duration::minutes(1);

    // A purchase approved by a developer: invoice of 29.00 + 19 % = 34.51,
    // 2,000 credits; then 10 credits used and 5 adjusted away.
    let buyer = open(api, "starter", json!({})).await;
    api.patch(
        &format!("/v1/accounts/{buyer}"),
        &api.developer(),
        json!({ "tax_rate": "19" }),
    )
    .await
    .expect(200);
    let bought = purchase(api, &buyer, "pro").await;
    assert_eq!(bought["invoice"]["total"], "34.51");
    approve(api, bought["payment"]["id"].as_str().unwrap()).await;
    api.deduct(&buyer, json!({ "operation": "clustering" }))
        .await
        .expect(201);
    api.post(
        &format!("/v1/admin/accounts/{buyer}/adjust-credits"),
        &api.developer(),
        Some(&key()),
        json!({ "credits": -5, "reason": "correction" }),
    )
    .await
    .expect(201);

    // A starter subscription made active by paying its first invoice
    // (29.00): 1,000 included credits.
    let subscriber = api.open_account().await;
    let created = api
        .post(
            "/v1/billing/subscriptions/create",
            &api.owner(&subscriber),
            Some(&key()),
            json!({ "plan": "starter", "method": "bank_transfer" }),
        )
        .await;
    let first = created.expect(201)["open_invoices"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let paid = api
        .post(
            "/v1/billing/payments/manual",
            &api.owner(&subscriber),
            Some(&key()),
            json!({
                "invoice_id": first,
                "method": "bank_transfer",
                "reference": "TRANSFER-1",
                "amount": "29.00",
            }),
        )
        .await;
    approve(api, paid.expect(201)["id"].as_str().unwrap()).await;

    // A pending invoice: the starter package, 9.00, never paid.
    let debtor = open(api, "starter", json!({})).await;
    let pending = purchase(api, &debtor, "starter").await;
    assert_eq!(pending["invoice"]["total"], "9.00");

    // A suspended account and a trial account.
    let suspended = api.open_account().await;
    api.post(
        &format!("/v1/admin/accounts/{suspended}/suspend"),
        &api.developer(),
        None,
        json!({ "reason": "fraud review" }),
    )
    .await
    .expect(200);
    open(api, "free", json!({ "status": "trial" })).await;

    // 50 credits that expire in two seconds, expired by the sweeper.
    let expiring = api.open_account().await;
    api.post(
        &format!("/v1/accounts/{expiring}/grants"),
        &api.developer(),
        Some(&key()),
        json!({
            "credits": 50,
            "source": "promotional",
            "expires_at": (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339(),
        }),
    )
    .await
    .expect(201);
    let mut expired = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let p = api.head().await;
        if api.balance(&expiring, p).await["balance"] == 0 {
            expired = true;
            break;
        }
    }
    assert!(expired, "the sweeper expires the grant");

    let all = stats(api, "").await;
    assert_eq!(all["range"], json!({ "from": null, "to": null }));
    assert_eq!(
        all["accounts"],
        json!({
            "total": 6,
            "by_status": {
                "active": 4, "cancelled": 0, "past_due": 0, "suspended": 1, "trial": 1,
            },
        })
    );
    assert_eq!(
        all["subscriptions"],
        json!({ "active": 1, "by_plan": { "starter": 1 } })
    );
    assert_eq!(all["mrr"], json!({ "USD": "29.00" }));
    assert_eq!(
        all["revenue"],
        json!({ "invoices": 2, "by_currency": { "USD": "63.51" } })
    );
    assert_eq!(
        all["outstanding"],
        json!({ "invoices": 1, "by_currency": { "USD": "9.00" } })
    );
    assert_eq!(
        all["credits"],
        json!({
            "scope": "all_time",
            "issued": 2_000 + 1_000 + 50,
            "used": 10,
            "refunded": 0,
            "expired": 50,
            "adjusted": -5,
        })
    );
    common::time(&all["generated_at"]);

    // A range around everything gives the same revenue and credits.
    let later = Utc::now() + chrono::Duration::hours(1);
    let around = stats(
        api,
        &format!(
            "&from={}&to={}",
            started.format("%Y-%m-%dT%H:%M:%SZ"),
            later.format("%Y-%m-%dT%H:%M:%SZ")
        ),
    )
    .await;
    assert_eq!(around["revenue"], all["revenue"]);
    let mut credits = all["credits"].clone();
    credits["scope"] = json!("range");
    assert_eq!(around["credits"], credits);
    assert_eq!(
        common::time(&around["range"]["from"]).timestamp(),
        started.timestamp()
    );

    // Ranges before or after everything: no revenue, no credits; the
    // subscriptions, MRR and outstanding invoices do not depend on it.
    for query in [
        format!("&from={}", later.format("%Y-%m-%dT%H:%M:%SZ")),
        format!("&to={}", started.format("%Y-%m-%dT%H:%M:%SZ")),
    ] {
        let none = stats(api, &query).await;
        assert_eq!(
            none["revenue"],
            json!({ "invoices": 0, "by_currency": {} }),
            "{query}"
        );
        assert_eq!(none["credits"], zero_credits("range"), "{query}");
        assert_eq!(none["outstanding"], all["outstanding"]);
        assert_eq!(none["mrr"], all["mrr"]);
        assert_eq!(none["subscriptions"], all["subscriptions"]);
        assert_eq!(none["accounts"], all["accounts"]);
    }

    // Split at the moment the subscription's invoice was paid: `from` is
    // inclusive, `to` exclusive.
    let paid_at = api.invoice_now(&subscriber, &first).await["paid_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = stats(api, &format!("&to={paid_at}")).await;
    assert_eq!(
        before["revenue"],
        json!({ "invoices": 1, "by_currency": { "USD": "34.51" } })
    );
    let after = stats(api, &format!("&from={paid_at}")).await;
    assert_eq!(
        after["revenue"],
        json!({ "invoices": 1, "by_currency": { "USD": "29.00" } })
    );
    let _ = debtor;
}
on_both_backends!(every_figure_follows_from_the_flows);

async fn an_empty_ledger_has_zero_figures(api: &Api) {
    let s = stats(api, "").await;
    assert_eq!(s["accounts"]["total"], 0);
    assert_eq!(s["accounts"]["by_status"]["active"], 0);
    assert_eq!(s["subscriptions"], json!({ "active": 0, "by_plan": {} }));
    assert_eq!(s["mrr"], json!({}));
    assert_eq!(s["revenue"], json!({ "invoices": 0, "by_currency": {} }));
    assert_eq!(
        s["outstanding"],
        json!({ "invoices": 0, "by_currency": {} })
    );
    assert_eq!(s["credits"], zero_credits("all_time"));
}
on_both_backends!(an_empty_ledger_has_zero_figures);

async fn only_developers_see_stats_and_a_bad_range_is_refused(api: &Api) {
    let account = api.open_account().await;
    for token in [
        api.owner(&account),
        api.admin(&account),
        api.viewer(&account),
        api.bot(None),
    ] {
        api.get("/v1/admin/billing/stats", &token)
            .await
            .expect_error(403, "forbidden");
    }
    for (query, field) in [
        ("from=yesterday", "from"),
        ("to=2026-13-01T00:00:00Z", "to"),
        ("from=2026-03-01", "from"),
        ("from=2026-04-01T00:00:00Z&to=2026-03-01T00:00:00Z", "to"),
        ("from=2026-04-01T00:00:00Z&to=2026-04-01T00:00:00Z", "to"),
        ("month=3", "month"),
    ] {
        let r = api
            .get(
                &format!("/v1/admin/billing/stats?{query}"),
                &api.developer(),
            )
            .await;
        assert_eq!(
            r.expect_error(422, "invalid_request")["field"],
            field,
            "{query}: {}",
            r.text
        );
    }
}
on_both_backends!(only_developers_see_stats_and_a_bad_range_is_refused);

/// Puts an annual plan priced `amount` in `currency`.
async fn annual_plan(api: &Api, slug: &str, amount: &str, currency: &str) {
    api.put(
        &format!("/v1/admin/plans/{slug}"),
        &api.developer(),
        json!({
            "name": format!("Yearly {currency}"),
            "price": { "amount": amount, "currency": currency },
            "billing_cycle": "annual",
            "included_credits": 100,
        }),
    )
    .await
    .expect(200);
}

/// A new account subscribed to `plan`, its first invoice paid by an
/// approved bank transfer; returns the invoice total.
async fn subscribed(api: &Api, plan: &str) -> String {
    let account = api.open_account().await;
    let created = api
        .post(
            "/v1/billing/subscriptions/create",
            &api.owner(&account),
            Some(&key()),
            json!({ "plan": plan, "method": "bank_transfer" }),
        )
        .await;
    let first = &created.expect(201)["open_invoices"][0];
    let invoice_id = first["id"].as_str().unwrap().to_owned();
    // The account has no tax rate, so the total is the amount.
    let total = first["amount"].as_str().unwrap().to_owned();
    let paid = api
        .post(
            "/v1/billing/payments/manual",
            &api.owner(&account),
            Some(&key()),
            json!({
                "invoice_id": invoice_id,
                "method": "bank_transfer",
                "reference": "TRANSFER-Y",
                "amount": total,
            }),
        )
        .await;
    approve(api, paid.expect(201)["id"].as_str().unwrap()).await;
    total
}

async fn annual_plans_count_a_twelfth_per_month_rounded_once_per_currency(api: &Api) {
    annual_plan(api, "yearly", "100.00", "USD").await;
    annual_plan(api, "yearly-eu", "10.00", "EUR").await;
    for _ in 0..3 {
        assert_eq!(subscribed(api, "yearly").await, "100.00");
    }
    assert_eq!(subscribed(api, "yearly-eu").await, "10.00");
    let s = stats(api, "").await;
    assert_eq!(
        s["subscriptions"],
        json!({ "active": 4, "by_plan": { "yearly": 3, "yearly-eu": 1 } })
    );
    // 3 × 100.00 / 12 = 25.00 exactly (not 3 × 8.33 = 24.99);
    // 10.00 / 12 = 0.8333… → 0.83.
    assert_eq!(s["mrr"], json!({ "EUR": "0.83", "USD": "25.00" }));
    assert_eq!(
        s["revenue"],
        json!({ "invoices": 4, "by_currency": { "EUR": "10.00", "USD": "300.00" } })
    );
    assert_eq!(s["credits"]["issued"], 400);
}
on_both_backends!(annual_plans_count_a_twelfth_per_month_rounded_once_per_currency);
