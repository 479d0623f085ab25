//! Subscriptions through the real router over real HTTP, on PostgreSQL and
//! SQLite (docs/adr/0012-subscriptions.md): activation by an approved bank
//! transfer, exact proration, scheduled downgrades, renewal with the old
//! period's credits expiring, past_due and cancel as unpaid, cancel at the
//! period end and now, the free plan, one open subscription per account
//! under concurrency, and idempotent period processing.

mod common;

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use common::{decimal, key, time, Api};
use rust_decimal::{Decimal, RoundingStrategy};
use serde_json::{json, Value};

/// Subscribes `account` (as its owner) to `plan` by bank transfer.
async fn subscribe(api: &Api, account: &str, plan: &str, idem: &str) -> common::Resp {
    api.post(
        "/v1/billing/subscriptions/create",
        &api.owner(account),
        Some(idem),
        json!({ "plan": plan, "method": "bank_transfer" }),
    )
    .await
}

/// The invoice as its owner sees it, once the read models have `p`.
async fn invoice(api: &Api, account: &str, id: &str, p: i64) -> Value {
    api.get(
        &format!("/v1/billing/invoices/{id}?min_position={p}"),
        &api.owner(account),
    )
    .await
    .expect(200)
    .clone()
}

/// The owner pays the invoice by bank transfer and a developer approves
/// it; returns the approval's response.
async fn pay(api: &Api, account: &str, invoice_id: &str) -> common::Resp {
    let head = api.head().await;
    let total = invoice(api, account, invoice_id, head).await["total"].clone();
    let paid = api
        .post(
            "/v1/billing/payments/manual",
            &api.owner(account),
            Some(&key()),
            json!({
                "invoice_id": invoice_id,
                "method": "bank_transfer",
                "reference": "TRANSFER-1",
                "amount": total,
            }),
        )
        .await;
    let payment_id = paid.expect(201)["id"].as_str().unwrap().to_owned();
    approve(api, &payment_id).await
}

async fn approve(api: &Api, payment_id: &str) -> common::Resp {
    api.post_empty(
        &format!("/v1/admin/payments/{payment_id}/approve"),
        &api.developer(),
        None,
    )
    .await
}

async fn run_periods(api: &Api, now: DateTime<Utc>) -> Value {
    api.post(
        "/v1/admin/billing/run-periods",
        &api.developer(),
        None,
        json!({ "now": now.to_rfc3339() }),
    )
    .await
    .expect(200)
    .clone()
}

async fn subscriptions(api: &Api, account: &str) -> Vec<Value> {
    let p = api.head().await;
    api.get(
        &format!("/v1/billing/subscriptions?min_position={p}"),
        &api.owner(account),
    )
    .await
    .expect(200)["items"]
        .as_array()
        .unwrap()
        .clone()
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

/// A new account on a starter subscription whose first invoice is paid.
/// Returns the account and the subscription as created.
async fn active_on(api: &Api, plan: &str) -> (String, Value) {
    let id = api.open_account().await;
    let created = subscribe(api, &id, plan, &key()).await.expect(201).clone();
    let first = created["open_invoices"][0]["id"].as_str().unwrap();
    pay(api, &id, first).await.expect(200);
    (id, created)
}

fn period_end(sub: &Value) -> DateTime<Utc> {
    time(&sub["current_period_end"])
}

async fn a_manual_subscription_activates_when_its_first_invoice_is_approved_and_grants_its_credits_once(
    api: &Api,
) {
    let id = api.open_account().await;
    let idem = key();
    let created = subscribe(api, &id, "starter", &idem).await;
    let body = created.expect(201).clone();
    assert_eq!(body["status"], "incomplete");
    assert_eq!(body["plan"], "starter");
    assert_eq!(body["price"], "29.00");
    let start = time(&body["current_period_start"]);
    assert_eq!(
        period_end(&body),
        start.checked_add_months(chrono::Months::new(1)).unwrap()
    );
    let first = body["open_invoices"][0].clone();
    assert_eq!(first["purpose"], "initial");
    assert_eq!(first["credits"], 1000);

    // A retry replays; another body under the key is refused.
    let again = subscribe(api, &id, "starter", &idem).await;
    assert_eq!(again.expect(201)["id"], body["id"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    subscribe(api, &id, "professional", &idem)
        .await
        .expect_error(409, "idempotency_key_reused");

    let invoice_id = first["id"].as_str().unwrap();
    let issued = invoice(api, &id, invoice_id, created.position()).await;
    assert_eq!(issued["status"], "pending");
    assert_eq!(issued["subscription_id"], body["id"]);
    assert_eq!(issued["total"], "29.00");
    let line = issued["lines"][0]["description"].as_str().unwrap();
    assert_eq!(
        line,
        format!(
            "Starter plan, {} – {}",
            start.format("%Y-%m-%d"),
            period_end(&body).format("%Y-%m-%d")
        )
    );
    assert_eq!(api.balance_now(&id).await, 0);

    let approved = pay(api, &id, invoice_id).await;
    approved.expect(200);
    assert_eq!(api.balance_now(&id).await, 1000);
    let listed = subscriptions(api, &id).await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["status"], "active");
    let holder = account(api, &id).await;
    assert_eq!(holder["plan"], "starter");
    assert_eq!(holder["status"], "active");

    // Approving again is a conflict and grants nothing more.
    let payment_id = api
        .items(
            &format!("/v1/admin/payments?invoice_id={invoice_id}"),
            api.head().await,
            "",
        )
        .await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    approve(api, &payment_id)
        .await
        .expect_error(409, "conflict");
    assert_eq!(api.balance_now(&id).await, 1000);
    let entries = api
        .items(
            &format!("/v1/accounts/{id}/transactions"),
            api.head().await,
            "",
        )
        .await;
    assert_eq!(entries.len(), 1, "one grant: {entries:?}");
}
on_both_backends!(
    a_manual_subscription_activates_when_its_first_invoice_is_approved_and_grants_its_credits_once
);

async fn an_upgrade_bills_the_exact_proration_and_its_payment_grants_the_prorated_credits_once(
    api: &Api,
) {
    let (id, created) = active_on(api, "starter").await;
    let idem = key();
    let upgraded = api
        .post(
            "/v1/billing/subscriptions/upgrade",
            &api.owner(&id),
            Some(&idem),
            json!({ "plan": "professional" }),
        )
        .await;
    let body = upgraded.expect(200).clone();
    // A retry replays the same change.
    let again = api
        .post(
            "/v1/billing/subscriptions/upgrade",
            &api.owner(&id),
            Some(&idem),
            json!({ "plan": "professional" }),
        )
        .await;
    assert_eq!(again.expect(200)["change"], body["change"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let change = &body["change"];
    assert_eq!(change["kind"], "upgrade");
    assert_eq!(
        (&change["from"], &change["to"]),
        (&json!("starter"), &json!("professional"))
    );
    // (99 − 29) × remaining / total seconds, half away from zero to cents;
    // (5000 − 1000) × remaining / total credits, floored.
    let start = time(&created["current_period_start"]);
    let end = period_end(&created);
    let at = time(&change["changed_at"]);
    let total = (end - start).num_seconds();
    let remaining = (end - at).num_seconds();
    let amount = (Decimal::from(70) * Decimal::from(remaining) / Decimal::from(total))
        .round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    let credits = i64::try_from(4000i128 * i128::from(remaining) / i128::from(total)).unwrap();
    assert_eq!(decimal(&change["prorated_amount"]), amount);
    assert_eq!(change["prorated_credits"], credits);
    assert!(credits > 3900, "almost the whole period is left: {credits}");
    let invoice_id = change["invoice"]["id"].as_str().unwrap();
    let issued = invoice(api, &id, invoice_id, upgraded.position()).await;
    assert_eq!(decimal(&issued["total"]), amount);
    assert_eq!(body["subscription"]["plan"], "professional");
    assert_eq!(account(api, &id).await["plan"], "professional");

    // The same plan again is refused.
    api.post(
        "/v1/billing/subscriptions/upgrade",
        &api.owner(&id),
        Some(&key()),
        json!({ "plan": "professional" }),
    )
    .await
    .expect_error(409, "conflict");

    let approved = pay(api, &id, invoice_id).await;
    approved.expect(200);
    assert_eq!(api.balance_now(&id).await, 1000 + credits);
    let payment_id = api
        .items(
            &format!("/v1/admin/payments?invoice_id={invoice_id}"),
            api.head().await,
            "",
        )
        .await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    approve(api, &payment_id)
        .await
        .expect_error(409, "conflict");
    assert_eq!(api.balance_now(&id).await, 1000 + credits);
}
on_both_backends!(
    an_upgrade_bills_the_exact_proration_and_its_payment_grants_the_prorated_credits_once
);

async fn a_downgrade_is_scheduled_and_applied_at_the_period_end_by_run_periods(api: &Api) {
    let (id, created) = active_on(api, "professional").await;
    let scheduled = api
        .post(
            "/v1/billing/subscriptions/upgrade",
            &api.owner(&id),
            Some(&key()),
            json!({ "plan": "starter" }),
        )
        .await;
    let body = scheduled.expect(200).clone();
    assert_eq!(body["change"]["kind"], "downgrade_scheduled");
    assert_eq!(time(&body["change"]["effective_at"]), period_end(&created));
    assert_eq!(body["subscription"]["plan"], "professional");
    assert_eq!(body["subscription"]["scheduled_plan"], "starter");
    assert_eq!(
        subscriptions(api, &id).await[0]["scheduled_plan"],
        "starter"
    );

    let end = period_end(&created);
    let run = run_periods(api, end + Duration::seconds(1)).await;
    assert!(run["changed"].as_u64().unwrap() >= 1, "{run}");
    let listed = subscriptions(api, &id).await;
    assert_eq!(listed[0]["plan"], "starter");
    assert_eq!(listed[0]["price"], "29.00");
    assert_eq!(listed[0]["scheduled_plan"], Value::Null);
    assert_eq!(time(&listed[0]["current_period_start"]), end);
    assert_eq!(account(api, &id).await["plan"], "starter");
    let pending = pending_invoices(api, &id).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(
        pending[0]["total"], "29.00",
        "the renewal bills the lower plan"
    );
}
on_both_backends!(a_downgrade_is_scheduled_and_applied_at_the_period_end_by_run_periods);

/// The account's pending invoices as its owner sees them.
async fn pending_invoices(api: &Api, account: &str) -> Vec<Value> {
    let p = api.head().await;
    api.get(
        &format!("/v1/billing/invoices?status=pending&min_position={p}"),
        &api.owner(account),
    )
    .await
    .expect(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn renewal_bills_the_next_period_expires_the_old_credits_and_grants_the_new_when_paid(
    api: &Api,
) {
    let (id, created) = active_on(api, "starter").await;
    assert_eq!(api.balance_now(&id).await, 1000);
    let end = period_end(&created);
    let now = end + Duration::hours(1);
    let run = run_periods(api, now).await;
    assert!(run["changed"].as_u64().unwrap() >= 1, "{run}");
    // The old period's credits left at its end.
    assert_eq!(api.balance_now(&id).await, 0);
    let listed = subscriptions(api, &id).await;
    assert_eq!(listed[0]["status"], "active");
    assert_eq!(time(&listed[0]["current_period_start"]), end);
    let pending = pending_invoices(api, &id).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["total"], "29.00");
    assert_eq!(pending[0]["subscription_id"], created["id"]);

    // The same instant again changes nothing.
    let before = api.head().await;
    let again = run_periods(api, now).await;
    assert_eq!(again["changed"], 0, "{again}");
    assert_eq!(api.head().await, before, "nothing was written");
    assert_eq!(pending_invoices(api, &id).await.len(), 1);

    pay(api, &id, pending[0]["id"].as_str().unwrap())
        .await
        .expect(200);
    assert_eq!(api.balance_now(&id).await, 1000);
}
on_both_backends!(
    renewal_bills_the_next_period_expires_the_old_credits_and_grants_the_new_when_paid
);

async fn an_unpaid_renewal_makes_it_past_due_and_the_grace_period_cancels_it(api: &Api) {
    let (id, created) = active_on(api, "starter").await;
    let renewed_at = period_end(&created) + Duration::hours(1);
    run_periods(api, renewed_at).await;
    let renewal = pending_invoices(api, &id).await[0].clone();
    let due = time(&renewal["due_date"]);

    run_periods(api, due - Duration::seconds(1)).await;
    assert_eq!(subscriptions(api, &id).await[0]["status"], "active");
    run_periods(api, due + Duration::seconds(1)).await;
    let listed = subscriptions(api, &id).await;
    assert_eq!(listed[0]["status"], "past_due");
    assert!(listed[0]["past_due_since"].is_string());
    assert_eq!(account(api, &id).await["status"], "past_due");

    let grace_end = due + Duration::seconds(1) + Duration::days(14);
    run_periods(api, grace_end - Duration::seconds(1)).await;
    assert_eq!(subscriptions(api, &id).await[0]["status"], "past_due");
    run_periods(api, grace_end).await;
    let listed = subscriptions(api, &id).await;
    assert_eq!(listed[0]["status"], "canceled");
    let holder = account(api, &id).await;
    assert_eq!(holder["plan"], "free");
    assert_eq!(holder["status"], "active");
    let p = api.head().await;
    let voided = invoice(api, &id, renewal["id"].as_str().unwrap(), p).await;
    assert_eq!(voided["status"], "void");
}
on_both_backends!(an_unpaid_renewal_makes_it_past_due_and_the_grace_period_cancels_it);

async fn cancel_at_period_end_waits_for_the_period_end_and_cancel_now_is_immediate(api: &Api) {
    let (id, created) = active_on(api, "starter").await;
    let canceled = api
        .post(
            "/v1/billing/subscriptions/cancel",
            &api.owner(&id),
            None,
            json!({}),
        )
        .await;
    let body = canceled.expect(200).clone();
    assert_eq!(body["status"], "active");
    assert_eq!(body["cancel_at_period_end"], true);
    let end = period_end(&created);
    run_periods(api, end - Duration::seconds(1)).await;
    assert_eq!(subscriptions(api, &id).await[0]["status"], "active");
    run_periods(api, end).await;
    assert_eq!(subscriptions(api, &id).await[0]["status"], "canceled");
    let holder = account(api, &id).await;
    assert_eq!(holder["plan"], "free");
    assert_eq!(pending_invoices(api, &id).await.len(), 0, "no renewal");

    let (other, _) = active_on(api, "starter").await;
    let now = api
        .post(
            "/v1/billing/subscriptions/cancel",
            &api.admin(&other),
            None,
            json!({ "at_period_end": false }),
        )
        .await;
    assert_eq!(now.expect(200)["status"], "canceled");
    assert_eq!(account(api, &other).await["plan"], "free");
    api.post(
        "/v1/billing/subscriptions/cancel",
        &api.owner(&other),
        None,
        json!({ "at_period_end": false }),
    )
    .await
    .expect_error(404, "not_found");
    // A canceled subscription frees the slot for a new one.
    subscribe(api, &other, "professional", &key())
        .await
        .expect(201);
    let listed = subscriptions(api, &other).await;
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["status"], "incomplete", "the open one first");
}
on_both_backends!(cancel_at_period_end_waits_for_the_period_end_and_cancel_now_is_immediate);

async fn a_free_plan_is_active_at_once_and_grants_its_credits_at_the_period_start(api: &Api) {
    let id = api.open_account().await;
    let idem = key();
    let created = api
        .post(
            "/v1/billing/subscriptions/create",
            &api.owner(&id),
            Some(&idem),
            json!({ "plan": "free" }),
        )
        .await;
    let body = created.expect(201).clone();
    assert_eq!(body["status"], "active");
    assert_eq!(body["open_invoices"], json!([]));
    assert_eq!(api.balance_now(&id).await, 100);
    api.post(
        "/v1/billing/subscriptions/create",
        &api.owner(&id),
        Some(&idem),
        json!({ "plan": "free" }),
    )
    .await
    .expect(201);
    assert_eq!(api.balance_now(&id).await, 100, "granted once");
    // At the period end a free plan renews without an invoice.
    run_periods(api, period_end(&body)).await;
    assert_eq!(
        api.balance_now(&id).await,
        100,
        "the old 100 expired, 100 new"
    );
    assert_eq!(pending_invoices(api, &id).await.len(), 0);
}
on_both_backends!(a_free_plan_is_active_at_once_and_grants_its_credits_at_the_period_start);

/// Cancelling the free plan and taking it again, over and over, grants its
/// credits once per account and month, not once per subscription.
async fn the_free_plan_grants_once_per_account_and_month_however_often_it_is_taken(api: &Api) {
    let id = api.open_account().await;
    for round in 0..3 {
        api.post(
            "/v1/billing/subscriptions/create",
            &api.owner(&id),
            Some(&key()),
            json!({ "plan": "free" }),
        )
        .await
        .expect(201);
        assert_eq!(api.balance_now(&id).await, 100, "round {round}");
        api.post(
            "/v1/billing/subscriptions/cancel",
            &api.owner(&id),
            None,
            json!({ "at_period_end": false }),
        )
        .await
        .expect(200);
    }
    let grants = api
        .get(
            &format!(
                "/v1/accounts/{id}/transactions?type=grant&min_position={}",
                api.head().await
            ),
            &api.owner(&id),
        )
        .await;
    assert_eq!(
        grants.expect(200)["items"].as_array().map(Vec::len),
        Some(1),
        "{}",
        grants.text
    );
}
on_both_backends!(the_free_plan_grants_once_per_account_and_month_however_often_it_is_taken);

async fn bad_requests_are_refused_in_the_error_format(api: &Api) {
    let id = api.open_account().await;
    api.post(
        "/v1/billing/subscriptions/create",
        &api.owner(&id),
        Some(&key()),
        json!({ "plan": "starter" }),
    )
    .await
    .expect_error(422, "invalid_request");
    api.post(
        "/v1/billing/subscriptions/create",
        &api.owner(&id),
        Some(&key()),
        json!({ "plan": "starter", "method": "stripe" }),
    )
    .await
    .expect_error(503, "unavailable");
    api.post(
        "/v1/billing/subscriptions/create",
        &api.owner(&id),
        Some(&key()),
        json!({ "plan": "platinum", "method": "bank_transfer" }),
    )
    .await
    .expect_error(404, "not_found");
    api.post(
        "/v1/billing/subscriptions/create",
        &api.viewer(&id),
        Some(&key()),
        json!({ "plan": "starter", "method": "bank_transfer" }),
    )
    .await
    .expect_error(403, "forbidden");
    api.post(
        "/v1/billing/subscriptions/upgrade",
        &api.owner(&id),
        Some(&key()),
        json!({ "plan": "professional" }),
    )
    .await
    .expect_error(404, "not_found");
    api.post(
        "/v1/admin/billing/run-periods",
        &api.owner(&id),
        None,
        json!({ "now": Utc::now().to_rfc3339() }),
    )
    .await
    .expect_error(403, "forbidden");
    api.post(
        "/v1/admin/billing/run-periods",
        &api.developer(),
        None,
        json!({ "now": "yesterday" }),
    )
    .await
    .expect_error(422, "invalid_request");
    api.post(
        "/v1/billing/subscriptions/create",
        &api.developer(),
        Some(&key()),
        json!({
            "plan": "starter",
            "method": "bank_transfer",
            "account_id": "0190c0de-0000-7000-8000-000000000000",
        }),
    )
    .await
    .expect_error(404, "not_found");
    subscribe(api, &id, "starter", &key()).await.expect(201);
    subscribe(api, &id, "professional", &key())
        .await
        .expect_error(409, "conflict");
}
on_both_backends!(bad_requests_are_refused_in_the_error_format);

async fn only_one_of_concurrent_creates_opens_a_subscription(api: Arc<Api>) {
    let id = api.open_account().await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let api = api.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            subscribe(&api, &id, "starter", &key()).await.status
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort_unstable();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    assert_eq!(subscriptions(&api, &id).await.len(), 1);
}
on_both_backends!(shared only_one_of_concurrent_creates_opens_a_subscription);

async fn an_unpaid_first_invoice_ends_an_incomplete_subscription_after_the_grace_period(api: &Api) {
    let id = api.open_account().await;
    let created = subscribe(api, &id, "starter", &key())
        .await
        .expect(201)
        .clone();
    let due = time(&created["open_invoices"][0]["due_date"]);
    run_periods(api, due).await;
    assert_eq!(subscriptions(api, &id).await[0]["status"], "past_due");
    let holder = account(api, &id).await;
    assert_eq!(
        holder["status"], "active",
        "it never started: the account is untouched"
    );
    assert_eq!(holder["plan"], "free");
    run_periods(api, due + Duration::days(14)).await;
    assert_eq!(subscriptions(api, &id).await[0]["status"], "canceled");
    assert_eq!(
        pending_invoices(api, &id).await.len(),
        0,
        "its invoice is void"
    );
    // The account may subscribe again.
    subscribe(api, &id, "starter", &key()).await.expect(201);
}
on_both_backends!(an_unpaid_first_invoice_ends_an_incomplete_subscription_after_the_grace_period);

/// Without the clock override (the default), run-periods refuses a `now`
/// in the future: one call would expire credits early and stamp later real
/// events in the future. Now, the past and no `now` at all are fine.
async fn run_periods_refuses_a_future_now_without_the_clock_override(backend: common::Backend) {
    let server = common::Server::start_with(backend, &["--allow-clock-override=false"]).await;
    let api = server.api.clone();
    let run = |now: Value| {
        let api = api.clone();
        async move {
            api.post("/v1/admin/billing/run-periods", &api.developer(), None, now)
                .await
        }
    };
    let future = (Utc::now() + chrono::Duration::days(40)).to_rfc3339();
    assert_eq!(
        run(json!({ "now": future }))
            .await
            .expect_error(422, "invalid_request")["field"],
        "now"
    );
    run(json!({ "now": Utc::now().to_rfc3339() }))
        .await
        .expect(200);
    run(json!({ "now": (Utc::now() - chrono::Duration::days(1)).to_rfc3339() }))
        .await
        .expect(200);
    run(json!({})).await.expect(200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_periods_refuses_a_future_now_without_the_clock_override_on_postgres() {
    run_periods_refuses_a_future_now_without_the_clock_override(common::Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_periods_refuses_a_future_now_without_the_clock_override_on_sqlite() {
    run_periods_refuses_a_future_now_without_the_clock_override(common::Backend::Sqlite).await;
}

async fn a_scheduled_cancel_is_taken_back_and_the_subscription_renews(api: &Api) {
    let (id, created) = active_on(api, "starter").await;
    let owner = api.owner(&id);
    // Nothing scheduled: reactivating changes nothing.
    let nothing = api
        .post(
            "/v1/billing/subscriptions/reactivate",
            &owner,
            None,
            json!({}),
        )
        .await;
    assert_eq!(nothing.expect(200)["cancel_at_period_end"], false);
    let canceled = api
        .post("/v1/billing/subscriptions/cancel", &owner, None, json!({}))
        .await;
    assert_eq!(canceled.expect(200)["cancel_at_period_end"], true);
    let back = api
        .post_empty("/v1/billing/subscriptions/reactivate/", &owner, None)
        .await;
    let body = back.expect(200);
    assert_eq!(body["status"], "active");
    assert_eq!(body["cancel_at_period_end"], false);
    let listed = api
        .get(
            &format!("/v1/billing/subscriptions?min_position={}", back.position()),
            &owner,
        )
        .await;
    assert_eq!(
        listed.expect(200)["items"][0]["cancel_at_period_end"],
        false
    );

    // At the period end it renews instead of ending.
    run_periods(api, period_end(&created)).await;
    let subs = subscriptions(api, &id).await;
    assert_eq!(subs[0]["status"], "active");
    assert_eq!(account(api, &id).await["plan"], "starter");
    assert_eq!(
        pending_invoices(api, &id).await.len(),
        1,
        "the renewal's invoice"
    );

    // A viewer may not; a canceled subscription cannot come back.
    api.post(
        "/v1/billing/subscriptions/reactivate",
        &api.viewer(&id),
        None,
        json!({}),
    )
    .await
    .expect_error(403, "forbidden");
    api.post(
        "/v1/billing/subscriptions/cancel",
        &owner,
        None,
        json!({ "at_period_end": false }),
    )
    .await
    .expect(200);
    api.post(
        "/v1/billing/subscriptions/reactivate",
        &owner,
        None,
        json!({}),
    )
    .await
    .expect_error(404, "not_found");
}
on_both_backends!(a_scheduled_cancel_is_taken_back_and_the_subscription_renews);
