//! Billing through the real router over real HTTP, on PostgreSQL and SQLite
//! (docs/adr/0010-billing.md): a credit purchase by bank transfer approved
//! by a second person, the invoice paid and its credits granted exactly
//! once; maker-checker; invoice status rules; gapless numbers under
//! concurrent issuing; and the invoice PDF parsed back.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use api::auth::{Claims, Role};
use chrono::Datelike;
use common::{key, now_unix, time, Api};
use serde_json::{json, Value};

/// A developer token with its own `sub`: a second person for maker-checker.
fn developer_named(api: &Api, sub: &str) -> String {
    let claims = Claims::new(
        sub,
        Role::Developer,
        None,
        now_unix(),
        Duration::from_secs(3600),
    )
    .expect("valid claims");
    api.keys.mint(&claims)
}

/// Opens a starter-plan account (it allows credit top-ups) with a 19 % tax
/// rate and a billing address; returns its id.
async fn starter_account(api: &Api) -> String {
    let id = api.open_account_on(json!({ "plan": "starter" })).await;
    api.patch(
        &format!("/v1/accounts/{id}"),
        &api.developer(),
        json!({
            "tax_rate": "19",
            "billing_address": {
                "line1": "1 Main Street",
                "city": "Springfield",
                "postal_code": "12345",
                "country": "US",
            },
        }),
    )
    .await
    .expect(200);
    id
}

/// Buys the `pro` package (2,000 credits, $29.00) by bank transfer.
async fn purchase(api: &Api, account: &str, idem: &str) -> common::Resp {
    api.post(
        "/v1/billing/credits/purchase",
        &api.owner(account),
        Some(idem),
        json!({ "package": "pro", "method": "bank_transfer" }),
    )
    .await
}

fn year() -> i32 {
    chrono::Utc::now().year()
}

async fn a_bank_transfer_purchase_is_approved_once_and_grants_its_credits_once(api: &Api) {
    let account = starter_account(api).await;
    let idem = key();
    let bought = purchase(api, &account, &idem).await;
    let body = bought.expect(201).clone();
    let invoice = &body["invoice"];
    let number = invoice["number"].as_str().unwrap();
    assert!(
        number.starts_with(&format!("INV-{}-", year())) && number.len() == 15,
        "{number}"
    );
    assert_eq!(invoice["status"], "pending");
    assert_eq!(invoice["subtotal"], "29.00");
    // 29.00 × 19 % = 5.51, total 34.51: decimal strings, never floats.
    assert_eq!(invoice["tax"], "5.51");
    assert_eq!(invoice["total"], "34.51");
    assert_eq!(invoice["currency"], "USD");
    let payment = &body["payment"];
    assert_eq!(payment["status"], "pending");
    assert_eq!(payment["method"], "bank_transfer");
    assert_eq!(payment["amount"], "34.51");
    assert_eq!(payment["submitted_by"], "test-owner");
    assert!(payment["instructions"].as_str().unwrap().contains(number));
    assert_eq!(body["credits"], 2000);

    // The same key and body replays; another body is refused.
    let again = purchase(api, &account, &idem).await;
    assert_eq!(again.expect(201), &body);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    api.post(
        "/v1/billing/credits/purchase",
        &api.owner(&account),
        Some(&idem),
        json!({ "package": "starter", "method": "bank_transfer" }),
    )
    .await
    .expect_error(409, "idempotency_key_reused");

    // The caller sees it, pending, until a developer approves the payment.
    let invoice_id = invoice["id"].as_str().unwrap();
    let payment_id = payment["id"].as_str().unwrap();
    let p = bought.position();
    let seen = api
        .get(
            &format!("/v1/billing/invoices/{invoice_id}?min_position={p}"),
            &api.owner(&account),
        )
        .await;
    let seen = seen.expect(200);
    assert_eq!(seen["status"], "pending");
    assert_eq!(seen["number"], number);
    assert_eq!(seen["lines"][0]["amount"], "29.00");
    assert_eq!(seen["billing_address"]["city"], "Springfield");
    assert_eq!(api.balance(&account, p).await["balance"], 0);

    let approved = api
        .post_empty(
            &format!("/v1/admin/payments/{payment_id}/approve"),
            &api.developer(),
            None,
        )
        .await;
    let a = approved.expect(200);
    assert_eq!(a["status"], "succeeded");
    assert_eq!(a["invoice_status"], "paid");
    assert_eq!(a["credits_granted"], 2000);
    let p = approved.position();
    assert_eq!(api.balance(&account, p).await["balance"], 2000);
    let seen = api
        .get(
            &format!("/v1/billing/invoices/{invoice_id}?min_position={p}"),
            &api.admin(&account),
        )
        .await;
    assert_eq!(seen.expect(200)["status"], "paid");
    assert_eq!(seen.body["payment_id"], payment_id);
    assert_eq!(seen.body["payment_method"], "bank_transfer");

    // Approving again is a conflict, and the credits are still granted once.
    for _ in 0..2 {
        api.post_empty(
            &format!("/v1/admin/payments/{payment_id}/approve"),
            &developer_named(api, "dev-2"),
            None,
        )
        .await
        .expect_error(409, "conflict");
    }
    let head = api.get("/ready", &api.developer()).await.expect(200)["position"]
        .as_i64()
        .unwrap();
    assert_eq!(api.balance(&account, head).await["balance"], 2000);
    let entries = api
        .items(&format!("/v1/accounts/{account}/transactions"), head, "")
        .await;
    assert_eq!(entries.len(), 1, "one grant: {entries:?}");
    assert_eq!(entries[0]["amount"], 2000);

    // The payment as the admin list shows it.
    let listed = api
        .get(
            &format!("/v1/admin/payments?invoice_id={invoice_id}&min_position={head}"),
            &api.developer(),
        )
        .await;
    let items = listed.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "succeeded");
    assert_eq!(items[0]["approved_by"], "test-developer");
    assert_eq!(items[0]["submitted_by"], "test-owner");
}
on_both_backends!(a_bank_transfer_purchase_is_approved_once_and_grants_its_credits_once);

async fn the_submitter_may_not_approve_and_a_rejection_leaves_the_invoice_pending(api: &Api) {
    let account = starter_account(api).await;
    let bought = purchase(api, &account, &key()).await;
    let invoice = bought.expect(201)["invoice"].clone();
    let invoice_id = invoice["id"].as_str().unwrap();
    // A developer records a second, manual payment on the customer's behalf.
    let maker = developer_named(api, "finance-1");
    let recorded = api
        .post(
            "/v1/billing/payments/manual",
            &maker,
            Some(&key()),
            json!({
                "account_id": account,
                "invoice_id": invoice_id,
                "method": "local_wallet",
                "reference": "WALLET-42",
                "amount": "34.51",
            }),
        )
        .await;
    let payment_id = recorded.expect(201)["id"].as_str().unwrap().to_owned();
    assert_eq!(recorded.body["submitted_by"], "finance-1");
    assert_eq!(recorded.body["status"], "pending");
    // Wrong amounts and unknown invoices are refused.
    api.post(
        "/v1/billing/payments/manual",
        &api.owner(&account),
        Some(&key()),
        json!({ "invoice_id": invoice_id, "method": "bank_transfer", "reference": "X", "amount": "34.50" }),
    )
    .await
    .expect_error(422, "invalid_request");
    api.post(
        "/v1/billing/payments/manual",
        &api.owner(&account),
        Some(&key()),
        json!({ "invoice_id": uuid::Uuid::now_v7(), "method": "bank_transfer", "reference": "X", "amount": "34.51" }),
    )
    .await
    .expect_error(404, "not_found");

    // Maker-checker: its submitter may neither approve nor reject it.
    api.post_empty(
        &format!("/v1/admin/payments/{payment_id}/approve"),
        &maker,
        None,
    )
    .await
    .expect_error(403, "forbidden");
    api.post(
        &format!("/v1/admin/payments/{payment_id}/reject"),
        &maker,
        None,
        json!({ "reason": "mine" }),
    )
    .await
    .expect_error(403, "forbidden");
    // Owners are not staff.
    api.post_empty(
        &format!("/v1/admin/payments/{payment_id}/approve"),
        &api.owner(&account),
        None,
    )
    .await
    .expect_error(403, "forbidden");

    let rejected = api
        .post(
            &format!("/v1/admin/payments/{payment_id}/reject"),
            &api.developer(),
            None,
            json!({ "reason": "no such wallet payment" }),
        )
        .await;
    assert_eq!(rejected.expect(200)["status"], "failed");
    let p = rejected.position();
    api.post_empty(
        &format!("/v1/admin/payments/{payment_id}/approve"),
        &api.developer(),
        None,
    )
    .await
    .expect_error(409, "conflict");
    let seen = api
        .get(
            &format!("/v1/billing/invoices/{invoice_id}?min_position={p}"),
            &api.owner(&account),
        )
        .await;
    assert_eq!(seen.expect(200)["status"], "pending");
    let failed = api
        .get(
            &format!("/v1/admin/payments?status=failed&account_id={account}&min_position={p}"),
            &api.developer(),
        )
        .await;
    let items = failed.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["failure_reason"], "no such wallet payment");
    assert_eq!(api.balance(&account, p).await["balance"], 0);
}
on_both_backends!(the_submitter_may_not_approve_and_a_rejection_leaves_the_invoice_pending);

async fn purchases_refuse_plans_without_top_ups_stripe_and_unknown_packages(api: &Api) {
    // The free plan does not allow credit top-ups.
    let free = api.open_account().await;
    let r = purchase(api, &free, &key()).await;
    let message = r.expect_error(403, "forbidden");
    assert!(message.is_object());
    assert!(r.text.contains("top-up"), "{}", r.text);

    let account = starter_account(api).await;
    let stripe = api
        .post(
            "/v1/billing/credits/purchase",
            &api.owner(&account),
            Some(&key()),
            json!({ "package": "pro", "method": "stripe" }),
        )
        .await;
    stripe.expect_error(503, "unavailable");
    assert!(
        stripe.text.contains("stripe is not configured"),
        "{}",
        stripe.text
    );
    api.post(
        "/v1/billing/credits/purchase",
        &api.owner(&account),
        Some(&key()),
        json!({ "package": "no-such-package", "method": "bank_transfer" }),
    )
    .await
    .expect_error(404, "not_found");
    api.post(
        "/v1/billing/credits/purchase",
        &api.owner(&account),
        None,
        json!({ "package": "pro", "method": "bank_transfer" }),
    )
    .await
    .expect_error(400, "invalid_request");
    api.post(
        "/v1/billing/credits/purchase",
        &api.owner(&account),
        Some(&key()),
        json!({ "package": "pro", "method": "cash" }),
    )
    .await
    .expect_error(422, "invalid_request");
    // Editors and viewers do not buy; a developer token names no account.
    api.post(
        "/v1/billing/credits/purchase",
        &api.editor(&account),
        Some(&key()),
        json!({ "package": "pro", "method": "bank_transfer" }),
    )
    .await
    .expect_error(403, "forbidden");
}
on_both_backends!(purchases_refuse_plans_without_top_ups_stripe_and_unknown_packages);

async fn invoices_follow_their_status_rules_and_list_with_filters_and_cursors(api: &Api) {
    let account = starter_account(api).await;
    let first = purchase(api, &account, &key()).await;
    let first = first.expect(201).clone();
    let second = purchase(api, &account, &key()).await;
    let second = second.expect(201).clone();
    let first_id = first["invoice"]["id"].as_str().unwrap();
    let second_id = second["invoice"]["id"].as_str().unwrap();
    let dev = api.developer();

    let voided = api
        .post(
            &format!("/v1/admin/invoices/{first_id}/void"),
            &dev,
            None,
            json!({ "reason": "duplicate" }),
        )
        .await;
    assert_eq!(voided.expect(200)["status"], "void");
    api.post_empty(&format!("/v1/admin/invoices/{first_id}/void"), &dev, None)
        .await
        .expect_error(409, "conflict");
    api.post_empty(
        &format!("/v1/admin/invoices/{first_id}/mark-uncollectible"),
        &dev,
        None,
    )
    .await
    .expect_error(409, "conflict");
    // Its payment can no longer be approved.
    let payment = first["payment"]["id"].as_str().unwrap();
    api.post_empty(&format!("/v1/admin/payments/{payment}/approve"), &dev, None)
        .await
        .expect_error(409, "conflict");
    let marked = api
        .post_empty(
            &format!("/v1/admin/invoices/{second_id}/mark-uncollectible"),
            &dev,
            None,
        )
        .await;
    assert_eq!(marked.expect(200)["status"], "uncollectible");
    api.post_empty(
        &format!("/v1/admin/invoices/{second_id}/void"),
        &api.owner(&account),
        None,
    )
    .await
    .expect_error(403, "forbidden");
    api.post_empty(
        &format!("/v1/admin/invoices/{}/void", uuid::Uuid::now_v7()),
        &dev,
        None,
    )
    .await
    .expect_error(404, "not_found");
    let p = marked.position();

    let list = |query: String| {
        let dev = dev.clone();
        async move {
            let r = api
                .get(
                    &format!("/v1/admin/invoices?min_position={p}&{query}"),
                    &dev,
                )
                .await;
            r.expect(200).clone()
        }
    };
    let void = list(format!("status=void&account_id={account}")).await;
    assert_eq!(void["items"].as_array().unwrap().len(), 1);
    assert_eq!(void["items"][0]["id"], first_id);
    let all = list(format!("account_id={account}")).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 2);
    assert_eq!(all["items"][0]["id"], second_id, "newest first");
    let later = list(format!("account_id={account}&from=2999-01-01T00:00:00Z")).await;
    assert!(later["items"].as_array().unwrap().is_empty());
    let earlier = list(format!("account_id={account}&to=2000-01-01T00:00:00Z")).await;
    assert!(earlier["items"].as_array().unwrap().is_empty());
    let page1 = list(format!("account_id={account}&limit=1")).await;
    assert_eq!(page1["items"][0]["id"], second_id);
    let cursor = page1["next_cursor"].as_str().unwrap().to_owned();
    let page2 = list(format!("account_id={account}&limit=1&cursor={cursor}")).await;
    assert_eq!(page2["items"][0]["id"], first_id);
    assert!(page2["next_cursor"].is_null());
    api.get("/v1/admin/invoices?status=lost", &dev)
        .await
        .expect_error(422, "invalid_request");

    // The caller's own list; another tenant sees none of them.
    let own = api
        .get(
            &format!("/v1/billing/invoices?min_position={p}"),
            &api.owner(&account),
        )
        .await;
    assert_eq!(own.expect(200)["items"].as_array().unwrap().len(), 2);
    // An unknown status is refused on the caller's list as on the staff's.
    api.get("/v1/billing/invoices?status=lost", &api.owner(&account))
        .await
        .expect_error(422, "invalid_request");
    let other = starter_account(api).await;
    let theirs = api
        .get(
            &format!("/v1/billing/invoices?min_position={p}"),
            &api.owner(&other),
        )
        .await;
    assert!(theirs.expect(200)["items"].as_array().unwrap().is_empty());
    api.get(
        &format!("/v1/billing/invoices/{first_id}"),
        &api.owner(&other),
    )
    .await
    .expect_error(404, "not_found");
    api.get(
        &format!("/v1/billing/invoices/{first_id}"),
        &api.viewer(&account),
    )
    .await
    .expect_error(403, "forbidden");
}
on_both_backends!(invoices_follow_their_status_rules_and_list_with_filters_and_cursors);

async fn twenty_concurrent_issues_take_gapless_numbers(api: Arc<Api>) {
    let account = starter_account(&api).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let api = api.clone();
            let account = account.clone();
            tokio::spawn(async move {
                let r = purchase(&api, &account, &key()).await;
                let body = r.expect(201);
                (
                    body["invoice"]["number"].as_str().unwrap().to_owned(),
                    r.position(),
                )
            })
        })
        .collect();
    let mut numbers = BTreeSet::new();
    let mut head = 0;
    for t in tasks {
        let (number, position) = t.await.unwrap();
        numbers.insert(number);
        head = head.max(position);
    }
    let expected: BTreeSet<String> = (1..=20).map(|n| format!("INV-{}-{n:06}", year())).collect();
    assert_eq!(numbers, expected);
    let listed = api
        .get(
            &format!("/v1/admin/invoices?account_id={account}&min_position={head}&limit=500"),
            &api.developer(),
        )
        .await;
    let listed: BTreeSet<String> = listed.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i: &Value| i["number"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, expected);
}
on_both_backends!(shared twenty_concurrent_issues_take_gapless_numbers);

/// The strings a PDF's pages show (`Tj` operands), in order.
fn pdf_strings(bytes: &[u8]) -> Vec<String> {
    let doc = lopdf::Document::load_mem(bytes).expect("a well-formed PDF");
    let mut out = Vec::new();
    for (_, page) in doc.get_pages() {
        let content = doc.get_page_content(page);
        let content = lopdf::content::Content::decode(&content).expect("a content stream");
        for op in content.operations {
            if op.operator == "Tj" {
                for operand in op.operands {
                    if let lopdf::Object::String(s, _) = operand {
                        out.push(s.iter().map(|&b| char::from(b)).collect());
                    }
                }
            }
        }
    }
    out
}

async fn the_invoice_pdf_is_a_real_pdf_that_shows_the_invoice(api: &Api) {
    let account = starter_account(api).await;
    let bought = purchase(api, &account, &key()).await;
    let invoice = bought.expect(201)["invoice"].clone();
    let id = invoice["id"].as_str().unwrap();
    let number = invoice["number"].as_str().unwrap();
    let p = bought.position();
    let response = api
        .http
        .get(api.url(&format!("/v1/billing/invoices/{id}/pdf?min_position={p}")))
        .bearer_auth(api.owner(&account))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/pdf"
    );
    let bytes = response.bytes().await.unwrap();
    assert!(bytes.starts_with(b"%PDF-"));
    let text = pdf_strings(&bytes);
    let shows = |needle: &str| {
        assert!(
            text.iter().any(|t| t.contains(needle)),
            "the PDF shows {needle:?}: {text:?}"
        )
    };
    shows(&format!("Invoice {number}"));
    shows("Status: pending");
    shows("Invoice date: ");
    shows("Due date: ");
    shows("Seller");
    shows("Ledger Billing");
    shows("Bill to");
    shows("Acme acct-");
    shows("1 Main Street");
    shows("Springfield");
    shows("Pro credit package (2000 credits)");
    shows("29.00");
    shows("Subtotal");
    shows("Tax (19%)");
    shows("5.51 USD");
    shows("34.51 USD");
    shows("Currency: USD");

    let other = starter_account(api).await;
    let theirs = api
        .get(
            &format!("/v1/billing/invoices/{id}/pdf"),
            &api.owner(&other),
        )
        .await;
    theirs.expect_error(404, "not_found");
}
on_both_backends!(the_invoice_pdf_is_a_real_pdf_that_shows_the_invoice);

/// Two manual payments of one invoice (the owner's transfer and one staff
/// recorded): the first approved pays the invoice; the second is refused
/// before it is approved, so the money is never recorded twice.
async fn only_one_of_two_payments_of_an_invoice_is_approved(api: &Api) {
    let account = starter_account(api).await;
    let bought = purchase(api, &account, &key()).await;
    let body = bought.expect(201).clone();
    let invoice_id = body["invoice"]["id"].as_str().unwrap().to_owned();
    let first = body["payment"]["id"].as_str().unwrap().to_owned();
    let second = api
        .post(
            "/v1/billing/payments/manual",
            &developer_named(api, "finance-1"),
            Some(&key()),
            json!({
                "account_id": account,
                "invoice_id": invoice_id,
                "method": "local_wallet",
                "reference": "WALLET-7",
                "amount": "34.51",
            }),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let checker = developer_named(api, "finance-2");
    let approve = |payment: String| {
        let checker = checker.clone();
        async move {
            api.post_empty(
                &format!("/v1/admin/payments/{payment}/approve"),
                &checker,
                None,
            )
            .await
        }
    };
    let (a, b) = tokio::join!(approve(first.clone()), approve(second.clone()));
    let statuses = [a.status, b.status];
    assert!(
        statuses.contains(&200) && statuses.contains(&409),
        "{statuses:?}: {} / {}",
        a.text,
        b.text
    );
    assert_eq!(api.balance_now(&account).await, 2_000, "granted once");
    let p = api.head().await;
    let payments = api
        .get(
            &format!("/v1/admin/payments?invoice_id={invoice_id}&min_position={p}"),
            &api.developer(),
        )
        .await;
    let items = payments.expect(200)["items"].as_array().unwrap().clone();
    let succeeded = items.iter().filter(|i| i["status"] == "succeeded").count();
    assert_eq!(succeeded, 1, "{items:?}");
}
on_both_backends!(only_one_of_two_payments_of_an_invoice_is_approved);

/// `LEDGER_APPROVERS`: only the listed subjects decide (compared trimmed
/// and case-folded), and never on their own payment.
async fn only_listed_approvers_decide(backend: common::Backend) {
    let server =
        common::Server::start_with(backend, &["--approvers", " Alice@Example.com ,bob"]).await;
    let api = &*server.api;
    let account = starter_account(api).await;
    let bought = purchase(api, &account, &key()).await;
    let payment = bought.expect(201)["payment"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v1/admin/payments/{payment}/approve");
    api.post_empty(&path, &developer_named(api, "mallory"), None)
        .await
        .expect_error(403, "forbidden");
    api.post(
        &format!("/v1/admin/payments/{payment}/reject"),
        &developer_named(api, "mallory"),
        None,
        json!({ "reason": "no" }),
    )
    .await
    .expect_error(403, "forbidden");
    api.post_empty(&path, &developer_named(api, "alice@example.com"), None)
        .await
        .expect(200);
    // A listed approver's own submission is still not theirs to approve.
    let again = purchase(api, &account, &key()).await;
    let invoice_id = again.expect(201)["invoice"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let own = api
        .post(
            "/v1/billing/payments/manual",
            &developer_named(api, "BOB"),
            Some(&key()),
            json!({
                "account_id": account,
                "invoice_id": invoice_id,
                "method": "local_wallet",
                "reference": "WALLET-8",
                "amount": "34.51",
            }),
        )
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    api.post_empty(
        &format!("/v1/admin/payments/{own}/approve"),
        &developer_named(api, " bob"),
        None,
    )
    .await
    .expect_error(403, "forbidden");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_listed_approvers_decide_on_postgres() {
    only_listed_approvers_decide(common::Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_listed_approvers_decide_on_sqlite() {
    only_listed_approvers_decide(common::Backend::Sqlite).await;
}

async fn staff_write_a_draft_invoice_finalize_it_and_approve_its_payment_with_notes(api: &Api) {
    let account = starter_account(api).await;
    let dev = api.developer();
    let body = json!({
        "account_id": account,
        "lines": [
            { "description": "Onboarding workshop", "quantity": 2, "unit_price": "150.00" },
            { "description": "Custom model setup", "unit_price": "99.99" },
        ],
        "notes": "PO 4711",
    });
    let idem = key();
    let created = api
        .post("/v1/admin/invoices", &dev, Some(&idem), body.clone())
        .await;
    let draft = created.expect(201).clone();
    assert_eq!(draft["status"], "draft");
    assert_eq!(draft["account_id"], account.as_str());
    assert_eq!(draft["subtotal"], "399.99");
    assert_eq!(draft["tax"], "76.00", "19 % of 399.99, half away from zero");
    assert_eq!(draft["total"], "475.99");
    assert_eq!(draft["lines"][1]["quantity"], 1, "quantity defaults to 1");
    assert_eq!(draft["notes"], "PO 4711");
    assert_eq!(draft["billing_address"]["city"], "Springfield");
    let number = draft["number"].as_str().unwrap().to_owned();
    assert!(number.starts_with(&format!("INV-{}-", year())), "{number}");
    let id = draft["id"].as_str().unwrap().to_owned();
    // A retry answers the same draft.
    let again = api
        .post("/v1/admin/invoices", &dev, Some(&idem), body)
        .await;
    assert_eq!(again.expect(201)["id"], id.as_str());
    assert_eq!(again.header("idempotent-replayed"), Some("true"));

    // A draft is not payable.
    let manual = json!({
        "invoice_id": id, "method": "bank_transfer", "reference": "WIRE-1", "amount": "475.99",
    });
    api.post(
        "/v1/billing/payments/manual",
        &api.owner(&account),
        Some(&key()),
        manual.clone(),
    )
    .await
    .expect_error(409, "conflict");

    let finalized = api
        .post(
            &format!("/v1/admin/invoices/{id}/finalize"),
            &dev,
            None,
            json!({ "due_in_days": 30 }),
        )
        .await;
    let pending = finalized.expect(200);
    assert_eq!(pending["status"], "pending");
    assert_eq!(pending["number"], number.as_str(), "the number stays");
    let due = time(&pending["due_date"]);
    assert!(due > chrono::Utc::now() + chrono::Duration::days(29));
    // Finalizing again changes nothing; a paid one cannot be.
    api.post_empty(&format!("/v1/admin/invoices/{id}/finalize"), &dev, None)
        .await
        .expect(200);

    let paid = api
        .post(
            "/v1/billing/payments/manual",
            &api.owner(&account),
            Some(&key()),
            manual,
        )
        .await;
    let payment = paid.expect(201)["id"].as_str().unwrap().to_owned();
    let approved = api
        .post(
            &format!("/v1/admin/payments/{payment}/approve"),
            &dev,
            None,
            json!({ "notes": "Seen on the statement of 2026-12-07" }),
        )
        .await;
    let a = approved.expect(200);
    assert_eq!(a["notes"], "Seen on the statement of 2026-12-07");
    assert_eq!(a["invoice_status"], "paid");
    assert_eq!(a["credits_granted"], Value::Null, "it buys no credits");
    let p = approved.position();
    let listed = api
        .get(
            &format!("/v1/admin/payments?invoice_id={id}&min_position={p}"),
            &dev,
        )
        .await;
    let items = listed.expect(200)["items"].as_array().unwrap().clone();
    assert_eq!(items[0]["notes"], "Seen on the statement of 2026-12-07");
    api.post_empty(&format!("/v1/admin/invoices/{id}/finalize"), &dev, None)
        .await
        .expect_error(409, "conflict");

    // The owner's list filters by date.
    let owner = api.owner(&account);
    let today = api
        .get(
            &format!("/v1/billing/invoices?from=2000-01-01T00:00:00Z&min_position={p}"),
            &owner,
        )
        .await;
    assert_eq!(today.expect(200)["items"].as_array().unwrap().len(), 1);
    let before = api
        .get("/v1/billing/invoices?to=2000-01-01T00:00:00Z", &owner)
        .await;
    assert!(before.expect(200)["items"].as_array().unwrap().is_empty());
    api.get("/v1/billing/invoices?from=yesterday", &owner)
        .await
        .expect_error(422, "invalid_request");

    // Bad input writes nothing.
    for (bad, field) in [
        (json!({ "account_id": account, "lines": [] }), "lines"),
        (
            json!({ "account_id": account, "lines": [{ "description": "x", "unit_price": "-1" }] }),
            "lines[0].unit_price",
        ),
        (
            json!({ "account_id": account, "lines": [{ "description": "x", "unit_price": "1" }], "due_in_days": 400 }),
            "due_in_days",
        ),
        (
            json!({ "account_id": "nope", "lines": [{ "description": "x", "unit_price": "1" }] }),
            "account_id",
        ),
    ] {
        let refused = api.post("/v1/admin/invoices", &dev, None, bad).await;
        assert_eq!(
            refused.expect_error(422, "invalid_request")["field"],
            field,
            "{}",
            refused.text
        );
    }
    api.post(
        "/v1/admin/invoices",
        &api.owner(&account),
        None,
        json!({ "account_id": account, "lines": [{ "description": "x", "unit_price": "1" }] }),
    )
    .await
    .expect_error(403, "forbidden");
}
on_both_backends!(staff_write_a_draft_invoice_finalize_it_and_approve_its_payment_with_notes);

async fn a_pending_payment_is_cancelled_and_staff_record_a_manual_payment(api: &Api) {
    let account = starter_account(api).await;
    let bought = purchase(api, &account, &key()).await;
    let b = bought.expect(201).clone();
    let invoice_id = b["invoice"]["id"].as_str().unwrap().to_owned();
    let total = b["invoice"]["total"].as_str().unwrap().to_owned();
    let payment = b["payment"]["id"].as_str().unwrap().to_owned();
    let owner = api.owner(&account);

    // Another tenant cannot see it; a viewer may not; the owner may.
    let other = api.open_account().await;
    api.post_empty(
        &format!("/v1/billing/payments/{payment}/cancel"),
        &api.owner(&other),
        None,
    )
    .await
    .expect_error(404, "not_found");
    api.post_empty(
        &format!("/v1/billing/payments/{payment}/cancel"),
        &api.viewer(&account),
        None,
    )
    .await
    .expect_error(403, "forbidden");
    let cancelled = api
        .post(
            &format!("/v1/billing/payments/{payment}/cancel"),
            &owner,
            None,
            json!({ "reason": "wrong reference" }),
        )
        .await;
    assert_eq!(cancelled.expect(200)["status"], "cancelled");
    let p = cancelled.position();
    // Again: the same; it can no longer be approved.
    api.post_empty(
        &format!("/v1/billing/payments/{payment}/cancel"),
        &owner,
        None,
    )
    .await
    .expect(200);
    api.post_empty(
        &format!("/v1/admin/payments/{payment}/approve"),
        &api.developer(),
        None,
    )
    .await
    .expect_error(409, "conflict");
    let listed = api
        .get(
            &format!("/v1/admin/payments?invoice_id={invoice_id}&min_position={p}"),
            &api.developer(),
        )
        .await;
    assert_eq!(listed.expect(200)["items"][0]["status"], "cancelled");
    let seen = api
        .get(
            &format!("/v1/billing/invoices/{invoice_id}?min_position={p}"),
            &owner,
        )
        .await;
    assert_eq!(
        seen.expect(200)["status"],
        "pending",
        "the invoice stays open"
    );

    // Staff record the money received by other means; only staff may use
    // `manual`, and another developer approves it.
    let manual = json!({
        "invoice_id": invoice_id, "method": "manual", "reference": "CHEQUE 0042",
        "amount": total, "account_id": account,
    });
    api.post(
        "/v1/billing/payments/manual",
        &owner,
        Some(&key()),
        manual.clone(),
    )
    .await
    .expect_error(403, "forbidden");
    let recorded = api
        .post(
            "/v1/billing/payments/manual",
            &developer_named(api, "clerk"),
            Some(&key()),
            manual,
        )
        .await;
    let r = recorded.expect(201);
    assert_eq!(r["method"], "manual");
    assert_eq!(r["status"], "pending");
    let manual_payment = r["id"].as_str().unwrap().to_owned();
    let approved = api
        .post_empty(
            &format!("/v1/admin/payments/{manual_payment}/approve"),
            &api.developer(),
            None,
        )
        .await;
    assert_eq!(approved.expect(200)["credits_granted"], 2000);
    // A decided payment cannot be cancelled, by anyone.
    api.post_empty(
        &format!("/v1/admin/payments/{manual_payment}/cancel"),
        &api.developer(),
        None,
    )
    .await
    .expect_error(409, "conflict");
    api.post_empty(
        &format!("/v1/admin/payments/{manual_payment}/cancel"),
        &owner,
        None,
    )
    .await
    .expect_error(403, "forbidden");
}
on_both_backends!(a_pending_payment_is_cancelled_and_staff_record_a_manual_payment);
