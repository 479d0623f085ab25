//! Stripe through the real router over real HTTP, on PostgreSQL and SQLite
//! (docs/adr/0011-payments-gateway.md), against a local stub of Stripe's
//! API that checks every request it receives (bearer key, idempotency key,
//! form fields, amounts in minor units): a Stripe credit purchase paid by
//! `payment_intent.succeeded` delivered twice; a Stripe subscription paid by
//! `invoice.paid` delivered twice; `invoice.payment_failed` → past_due;
//! signature failures; unknown event types; refunds (partial, the rest,
//! over-refund, revoking credits, 402); canceling a Stripe subscription
//! tells Stripe first (at the period end or now; refused → nothing written)
//! and Stripe's echo webhooks change nothing; a plan change of a Stripe
//! subscription is 409; and no key → unavailable.

mod common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::{Json, Router};
use common::{key, Api, Backend, Server};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const STRIPE_KEY: &str = "sk_test_stub_0123456789";
const WEBHOOK_SECRET: &str = "whsec_stub_0123456789";
const PRICE_ID: &str = "price_starter_monthly";

// ---------------------------------------------------------------------------
// The Stripe stub
// ---------------------------------------------------------------------------

/// One request the stub received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    idempotency_key: String,
    form: Vec<(String, String)>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Stub {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// When not 0, the status every change of a subscription
    /// (`/v1/subscriptions/{id}`) is answered with, as an error.
    refuse_subscription_changes: Arc<AtomicU16>,
}

impl Stub {
    fn requests(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }
}

/// A stable id for an idempotency key, as Stripe answers the same object
/// to the same key.
fn id_for(prefix: &str, key: &str) -> String {
    let digest = <Sha256 as sha2::Digest>::digest(key.as_bytes());
    format!("{prefix}_{}", &hex::encode(digest)[..16])
}

/// Stripe's API as far as the ledger uses it. A request without the right
/// bearer key, an idempotency key or a form body is answered like Stripe
/// answers it (401/400), so the ledger cannot pass by accident.
async fn stub_handler(
    State(stub): State<Stub>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if auth != format!("Bearer {STRIPE_KEY}") {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": { "type": "invalid_request_error", "message": "Invalid API Key provided" } })),
        )
            .into_response();
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let idem = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // A DELETE has no body (Stripe takes no parameters we send there).
    let form_expected = method != axum::http::Method::DELETE;
    if (form_expected && content_type != "application/x-www-form-urlencoded") || idem.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": { "type": "invalid_request_error", "message": "form body and Idempotency-Key expected" } })),
        )
            .into_response();
    }
    let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let path = uri.path().to_owned();
    stub.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        idempotency_key: idem.clone(),
        form: form.clone(),
    });
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    if let Some(stripe_id) = path.strip_prefix("/v1/subscriptions/") {
        let refuse = stub.refuse_subscription_changes.load(Ordering::SeqCst);
        if refuse != 0 {
            return (
                StatusCode::from_u16(refuse).unwrap(),
                Json(json!({ "error": { "type": "invalid_request_error", "message": "refused by the stub" } })),
            )
                .into_response();
        }
        let answer = if method == axum::http::Method::DELETE {
            json!({ "id": stripe_id, "object": "subscription", "status": "canceled" })
        } else {
            json!({
                "id": stripe_id,
                "object": "subscription",
                "status": "active",
                "cancel_at_period_end": get("cancel_at_period_end") == "true",
            })
        };
        return Json(answer).into_response();
    }
    let answer = match path.as_str() {
        "/v1/customers" => json!({ "id": id_for("cus", &idem), "object": "customer" }),
        "/v1/payment_intents" => {
            let id = id_for("pi", &idem);
            json!({
                "id": id,
                "object": "payment_intent",
                "amount": get("amount").parse::<i64>().unwrap_or(-1),
                "currency": get("currency"),
                "client_secret": format!("{id}_secret_stub"),
                "status": "requires_payment_method",
            })
        }
        "/v1/subscriptions" => {
            json!({ "id": id_for("sub", &idem), "object": "subscription", "status": "incomplete" })
        }
        "/v1/refunds" => json!({ "id": id_for("re", &idem), "object": "refund", "status": "succeeded" }),
        _ => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": { "type": "invalid_request_error", "message": "Unrecognized request URL" } })),
            )
                .into_response()
        }
    };
    Json(answer).into_response()
}

/// Starts the stub on an ephemeral port; returns it and its base URL.
async fn start_stub() -> (Stub, String) {
    let stub = Stub::default();
    let app = Router::new()
        .route("/v1/{*rest}", post(stub_handler).delete(stub_handler))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (stub, format!("http://{addr}"))
}

/// What a test gets: the API (with Stripe configured against the stub) and
/// the stub.
struct Ctx {
    api: Arc<Api>,
    stub: Stub,
}

/// Runs `body` against a server with Stripe configured (key, webhook
/// secret, API base = the stub) on `backend`.
async fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (stub, base) = start_stub().await;
    let server = Server::start_with(
        backend,
        &[
            "--stripe-secret-key",
            STRIPE_KEY,
            "--stripe-webhook-secret",
            WEBHOOK_SECRET,
            "--stripe-api-base",
            &base,
        ],
    )
    .await;
    let outcome = tokio::spawn(body(Ctx {
        api: server.api.clone(),
        stub,
    }))
    .await;
    server.stop().await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("the test body was cancelled: {e}");
    }
}

macro_rules! with_stripe {
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                super::run($crate::common::Backend::Postgres, |ctx| async move {
                    super::$body(&ctx).await
                })
                .await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                super::run($crate::common::Backend::Sqlite, |ctx| async move {
                    super::$body(&ctx).await
                })
                .await;
            }
        }
    };
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Stripe's signature header for `body` at `t` with `secret`, computed here
/// from the scheme (not with the server's code).
fn signature(body: &str, secret: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn event(id: &str, kind: &str, object: Value) -> String {
    json!({
        "id": id,
        "object": "event",
        "type": kind,
        "created": common::now_unix(),
        "data": { "object": object },
    })
    .to_string()
}

/// Posts a webhook with the given `Stripe-Signature` (none when `None`).
async fn post_webhook(api: &Api, body: &str, signature: Option<String>) -> common::Resp {
    post_webhook_to(api, "/v1/billing/webhooks/stripe", body, signature).await
}

async fn post_webhook_to(
    api: &Api,
    path: &str,
    body: &str,
    signature: Option<String>,
) -> common::Resp {
    let mut req = api
        .http
        .post(api.url(path))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(s) = signature {
        req = req.header("stripe-signature", s);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    common::Resp {
        status,
        headers,
        text,
        body,
    }
}

/// Delivers a correctly signed webhook.
async fn deliver(api: &Api, body: &str) -> common::Resp {
    post_webhook(
        api,
        body,
        Some(signature(body, WEBHOOK_SECRET, common::now_unix())),
    )
    .await
}

async fn payment_row(api: &Api, id: &str, account: &str) -> Value {
    let p = api.head().await;
    let items = api
        .items(
            "/v1/admin/payments",
            p,
            &format!("&account_id={account}&limit=500"),
        )
        .await;
    items
        .into_iter()
        .find(|i| i["id"] == id)
        .unwrap_or_else(|| panic!("payment {id} is listed"))
}

async fn subscription(api: &Api, account: &str) -> Value {
    let p = api.head().await;
    api.get(
        &format!("/v1/billing/subscriptions?min_position={p}"),
        &api.owner(account),
    )
    .await
    .expect(200)["items"][0]
        .clone()
}

/// A starter-plan account (credit top-ups allowed) with a 19 % tax rate.
async fn starter_account(api: &Api) -> String {
    let id = api.open_account_on(json!({ "plan": "starter" })).await;
    api.patch(
        &format!("/v1/accounts/{id}"),
        &api.developer(),
        json!({ "tax_rate": "19" }),
    )
    .await
    .expect(200);
    id
}

/// Buys the `pro` package (2,000 credits, 29.00 + 19 % = 34.51 USD) with
/// Stripe.
async fn stripe_purchase(api: &Api, account: &str) -> Value {
    stripe_purchase_with(api, account, &key())
        .await
        .expect(201)
        .clone()
}

async fn stripe_purchase_with(api: &Api, account: &str, idem: &str) -> common::Resp {
    api.post(
        "/v1/billing/credits/purchase",
        &api.owner(account),
        Some(idem),
        json!({ "package": "pro", "method": "stripe" }),
    )
    .await
}

fn intent_succeeded(evt: &str, purchase: &Value) -> String {
    let p = &purchase["payment"];
    event(
        evt,
        "payment_intent.succeeded",
        json!({
            "id": p["gateway_ref"],
            "object": "payment_intent",
            "amount": 3451,
            "amount_received": 3451,
            "currency": "usd",
            "latest_charge": "ch_stub_1",
            "metadata": {
                "payment_id": p["id"],
                "invoice_id": purchase["invoice"]["id"],
                "account_id": p["account_id"],
            },
        }),
    )
}

/// A Stripe purchase paid by its webhook; returns the purchase.
async fn paid_stripe_purchase(ctx: &Ctx, account: &str) -> Value {
    let bought = stripe_purchase(&ctx.api, account).await;
    deliver(
        &ctx.api,
        &intent_succeeded(&format!("evt_{}", uuid::Uuid::new_v4().simple()), &bought),
    )
    .await
    .expect(200);
    bought
}

// ---------------------------------------------------------------------------
// Purchases
// ---------------------------------------------------------------------------

/// Whether `GET /v1/billing/payment-methods` reports Stripe available.
async fn stripe_offered(api: &Api, account: &str) -> bool {
    let list = api
        .get("/v1/billing/payment-methods", &api.owner(account))
        .await
        .expect(200)
        .clone();
    let items = list["items"].as_array().expect("items").clone();
    let stripe = items
        .iter()
        .find(|m| m["method"] == "stripe")
        .unwrap_or_else(|| panic!("stripe is listed: {list}"));
    stripe["available"]
        .as_bool()
        .expect("available is a boolean")
}

async fn a_stripe_purchase_is_paid_by_its_webhook_once_even_when_delivered_twice(ctx: &Ctx) {
    let api = &ctx.api;
    let account = starter_account(api).await;
    assert!(
        stripe_offered(api, &account).await,
        "a key makes stripe available"
    );
    let idem = key();
    let bought = stripe_purchase_with(api, &account, &idem)
        .await
        .expect(201)
        .clone();
    let payment = &bought["payment"];
    let payment_id = payment["id"].as_str().unwrap();
    let invoice_id = bought["invoice"]["id"].as_str().unwrap();
    assert_eq!(bought["invoice"]["total"], "34.51");
    assert_eq!(payment["method"], "stripe");
    assert_eq!(payment["status"], "processing");
    assert_eq!(payment["gateway"], "stripe");
    let intent = payment["gateway_ref"].as_str().unwrap();
    assert!(intent.starts_with("pi_"), "{intent}");
    assert_eq!(bought["client_secret"], format!("{intent}_secret_stub"));

    // The stub saw exactly one PaymentIntent: the right amount in cents,
    // lowercase currency, our ids, and a key derived from the payment.
    let seen = ctx.stub.requests("/v1/payment_intents");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let pi = &seen[0];
    assert_eq!(pi.field("amount"), Some("3451"));
    assert_eq!(pi.field("currency"), Some("usd"));
    assert_eq!(pi.field("metadata[payment_id]"), Some(payment_id));
    assert_eq!(pi.field("metadata[invoice_id]"), Some(invoice_id));
    assert_eq!(pi.field("metadata[account_id]"), Some(account.as_str()));
    assert_eq!(pi.idempotency_key, format!("payment-intent-{payment_id}"));

    // A retry with the same key replays the purchase: the same invoice,
    // payment and PaymentIntent (Stripe answers the same key alike).
    let again = stripe_purchase_with(api, &account, &idem).await;
    assert_eq!(again.expect(201), &bought);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let seen = ctx.stub.requests("/v1/payment_intents");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].idempotency_key, seen[0].idempotency_key);

    // Staff do not approve a Stripe payment, nor refund an unpaid one.
    api.post_empty(
        &format!("/v1/admin/payments/{payment_id}/approve"),
        &api.developer(),
        None,
    )
    .await
    .expect_error(409, "conflict");
    refund(api, payment_id, &key(), json!({ "reason": "x" }))
        .await
        .expect_error(409, "conflict");
    assert!(ctx.stub.requests("/v1/refunds").is_empty());

    // Nothing is granted before Stripe says the payment succeeded.
    assert_eq!(api.balance_now(&account).await, 0);
    assert_eq!(
        api.invoice_now(&account, invoice_id).await["status"],
        "pending"
    );

    let body = intent_succeeded("evt_pi_ok_1", &bought);
    let first = deliver(api, &body).await;
    let first = first.expect(200);
    assert_eq!(first["received"], true);
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["handled"], true);
    let again = deliver(api, &body).await;
    assert_eq!(
        again.expect(200),
        &json!({ "received": true, "duplicate": true })
    );

    assert_eq!(
        api.balance_now(&account).await,
        2_000,
        "granted exactly once"
    );
    let paid = api.invoice_now(&account, invoice_id).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["payment_id"], payment_id);
    assert_eq!(paid["payment_method"], "stripe");
    let row = payment_row(api, payment_id, &account).await;
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["gateway_ref"], intent);
    assert_eq!(row["refunded_amount"], "0.00");

    // Another delivery of the same success under a new event id (Stripe
    // resends) still grants nothing more.
    deliver(api, &intent_succeeded("evt_pi_ok_2", &bought))
        .await
        .expect(200);
    assert_eq!(api.balance_now(&account).await, 2_000);
}
with_stripe!(a_stripe_purchase_is_paid_by_its_webhook_once_even_when_delivered_twice);

async fn a_failed_payment_intent_fails_the_payment_with_its_reason(ctx: &Ctx) {
    let api = &ctx.api;
    let account = starter_account(api).await;
    let bought = stripe_purchase(api, &account).await;
    let p = &bought["payment"];
    let body = event(
        "evt_pi_failed",
        "payment_intent.payment_failed",
        json!({
            "id": p["gateway_ref"],
            "object": "payment_intent",
            "metadata": { "payment_id": p["id"] },
            "last_payment_error": { "code": "card_declined", "message": "Your card was declined." },
        }),
    );
    assert_eq!(deliver(api, &body).await.expect(200)["handled"], true);
    let row = payment_row(api, p["id"].as_str().unwrap(), &account).await;
    assert_eq!(row["status"], "failed");
    assert_eq!(
        row["failure_reason"],
        "card_declined: Your card was declined."
    );
    assert_eq!(api.balance_now(&account).await, 0);
    let invoice_id = bought["invoice"]["id"].as_str().unwrap();
    assert_eq!(
        api.invoice_now(&account, invoice_id).await["status"],
        "pending"
    );
}
with_stripe!(a_failed_payment_intent_fails_the_payment_with_its_reason);

// ---------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------

/// Gives the starter plan a Stripe price.
async fn price_the_starter_plan(api: &Api) {
    let plans = api.get("/v1/plans", &api.developer()).await;
    let starter = plans.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slug"] == "starter")
        .unwrap()
        .clone();
    let mut body = json!({
        "name": starter["name"],
        "price": starter["price"],
        "billing_cycle": starter["billing_cycle"],
        "included_credits": starter["included_credits"],
        "allow_credit_topup": starter["allow_credit_topup"],
        "limits": starter["limits"],
        "features": starter["features"],
        "stripe_price_id": PRICE_ID,
    });
    if !starter["extra_credit_price"].is_null() {
        body["extra_credit_price"] = starter["extra_credit_price"].clone();
    }
    api.put("/v1/admin/plans/starter", &api.developer(), body)
        .await
        .expect(200);
    // The catalog cache follows the change.
    for _ in 0..50 {
        let plans = api.get("/v1/plans", &api.developer()).await;
        if plans.expect(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["slug"] == "starter" && p["stripe_price_id"] == PRICE_ID)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the starter plan never showed its Stripe price");
}

async fn stripe_subscription(ctx: &Ctx, account: &str) -> Value {
    let created = ctx
        .api
        .post(
            "/v1/billing/subscriptions/create",
            &ctx.api.owner(account),
            Some(&key()),
            json!({ "plan": "starter", "method": "stripe" }),
        )
        .await;
    created.expect(201).clone()
}

async fn a_stripe_subscription_is_activated_by_invoice_paid_once(ctx: &Ctx) {
    let api = &ctx.api;
    price_the_starter_plan(api).await;
    let account = api.open_account().await;
    let created = stripe_subscription(ctx, &account).await;
    assert_eq!(created["status"], "incomplete");
    assert_eq!(created["method"], "stripe");
    let stripe_id = created["stripe_subscription_id"].as_str().unwrap();
    assert!(stripe_id.starts_with("sub_"), "{stripe_id}");

    let customers = ctx.stub.requests("/v1/customers");
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].idempotency_key, format!("customer-{account}"));
    assert_eq!(
        customers[0].field("metadata[account_id]"),
        Some(account.as_str())
    );
    let subs = ctx.stub.requests("/v1/subscriptions");
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].field("items[0][price]"), Some(PRICE_ID));
    assert!(subs[0]
        .field("customer")
        .is_some_and(|c| c.starts_with("cus_")));
    let sub_id = created["id"].as_str().unwrap();
    assert_eq!(subs[0].idempotency_key, format!("subscription-{sub_id}"));
    assert_eq!(subs[0].field("metadata[subscription_id]"), Some(sub_id));

    // Stripe's first invoice of the subscription is paid (no metadata of
    // ours on it: found by the subscription), delivered twice.
    let body = event(
        "evt_in_paid_1",
        "invoice.paid",
        json!({ "id": "in_stub_1", "object": "invoice", "subscription": stripe_id, "amount_paid": 2900 }),
    );
    let first = deliver(api, &body).await;
    assert_eq!(first.expect(200)["handled"], true);
    let again = deliver(api, &body).await;
    assert_eq!(again.expect(200)["duplicate"], true);
    // The same Stripe invoice under another event (a resend after a settle
    // that stopped half way): our invoice is no longer open, yet it is
    // found again and its settle finished, granting nothing twice.
    let resent = event(
        "evt_in_paid_1_resent",
        "invoice.paid",
        json!({ "id": "in_stub_1", "object": "invoice", "subscription": stripe_id, "amount_paid": 2900 }),
    );
    assert_eq!(deliver(api, &resent).await.expect(200)["handled"], true);

    let sub = subscription(api, &account).await;
    assert_eq!(sub["status"], "active");
    assert_eq!(
        api.balance_now(&account).await,
        1_000,
        "the included credits, once"
    );
    let invoice_id = created["open_invoices"][0]["id"].as_str().unwrap();
    let paid = api.invoice_now(&account, invoice_id).await;
    assert_eq!(paid["status"], "paid");
    assert_eq!(paid["payment_method"], "stripe");

    // Stripe ends it: canceled now.
    let deleted = event(
        "evt_sub_deleted",
        "customer.subscription.deleted",
        json!({ "id": stripe_id, "object": "subscription", "status": "canceled" }),
    );
    assert_eq!(deliver(api, &deleted).await.expect(200)["handled"], true);
    assert_eq!(subscription(api, &account).await["status"], "canceled");
}
with_stripe!(a_stripe_subscription_is_activated_by_invoice_paid_once);

/// A Stripe invoice that collected less than ours (here nothing), or in
/// another currency, pays nothing of ours: acknowledged, not applied.
async fn a_stripe_invoice_paying_another_amount_or_currency_is_not_applied(ctx: &Ctx) {
    let api = &ctx.api;
    price_the_starter_plan(api).await;
    let account = api.open_account().await;
    let created = stripe_subscription(ctx, &account).await;
    let stripe_id = created["stripe_subscription_id"].as_str().unwrap();
    for (n, (amount, currency)) in [(0, "usd"), (2900, "eur"), (290, "usd")]
        .into_iter()
        .enumerate()
    {
        let body = event(
            &format!("evt_wrong_{n}"),
            "invoice.paid",
            json!({
                "id": format!("in_wrong_{n}"), "object": "invoice", "subscription": stripe_id,
                "amount_paid": amount, "currency": currency,
            }),
        );
        let r = deliver(api, &body).await;
        assert_eq!(
            r.expect(200)["handled"],
            false,
            "{amount} {currency}: {}",
            r.text
        );
    }
    assert_eq!(subscription(api, &account).await["status"], "incomplete");
    assert_eq!(api.balance_now(&account).await, 0);
    // The right amount in the right currency does.
    let body = event(
        "evt_right",
        "invoice.paid",
        json!({
            "id": "in_right", "object": "invoice", "subscription": stripe_id,
            "amount_paid": 2900, "currency": "usd",
        }),
    );
    assert_eq!(deliver(api, &body).await.expect(200)["handled"], true);
    assert_eq!(subscription(api, &account).await["status"], "active");
}
with_stripe!(a_stripe_invoice_paying_another_amount_or_currency_is_not_applied);

async fn a_failed_stripe_invoice_makes_the_subscription_past_due(ctx: &Ctx) {
    let api = &ctx.api;
    price_the_starter_plan(api).await;
    let account = api.open_account().await;
    let created = stripe_subscription(ctx, &account).await;
    let stripe_id = created["stripe_subscription_id"].as_str().unwrap();
    let body = event(
        "evt_in_failed_1",
        "invoice.payment_failed",
        json!({ "id": "in_stub_2", "object": "invoice", "subscription": stripe_id }),
    );
    assert_eq!(deliver(api, &body).await.expect(200)["handled"], true);
    let sub = subscription(api, &account).await;
    assert_eq!(sub["status"], "past_due");
    assert!(sub["past_due_since"].is_string());
    assert_eq!(api.balance_now(&account).await, 0);
}
with_stripe!(a_failed_stripe_invoice_makes_the_subscription_past_due);

// ---------------------------------------------------------------------------
// Canceling and changing a Stripe subscription
// ---------------------------------------------------------------------------

/// A Stripe subscription of a new account, made active by Stripe's
/// `invoice.paid`; returns the account, our subscription id and Stripe's.
async fn active_stripe_subscription(ctx: &Ctx) -> (String, String, String) {
    let api = &ctx.api;
    price_the_starter_plan(api).await;
    let account = api.open_account().await;
    let created = stripe_subscription(ctx, &account).await;
    let id = created["id"].as_str().unwrap().to_owned();
    let stripe_id = created["stripe_subscription_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let paid = event(
        &format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "invoice.paid",
        json!({ "id": format!("in_{}", uuid::Uuid::new_v4().simple()), "object": "invoice", "subscription": stripe_id, "amount_paid": 2900 }),
    );
    assert_eq!(deliver(api, &paid).await.expect(200)["handled"], true);
    assert_eq!(subscription(api, &account).await["status"], "active");
    (account, id, stripe_id)
}

/// What the stub saw for Stripe's subscription `stripe_id`.
fn changes_seen(ctx: &Ctx, stripe_id: &str) -> Vec<Seen> {
    ctx.stub.requests(&format!("/v1/subscriptions/{stripe_id}"))
}

async fn cancel(api: &Api, account: &str, at_period_end: bool) -> common::Resp {
    api.post(
        "/v1/billing/subscriptions/cancel",
        &api.owner(account),
        None,
        json!({ "at_period_end": at_period_end }),
    )
    .await
}

/// The account's invoices, as listed.
async fn invoices(api: &Api, account: &str) -> Vec<Value> {
    let p = api.head().await;
    api.get(
        &format!("/v1/billing/invoices?min_position={p}"),
        &api.owner(account),
    )
    .await
    .expect(200)["items"]
        .as_array()
        .unwrap()
        .clone()
}

async fn canceling_a_stripe_subscription_tells_stripe_first_and_its_webhooks_change_nothing(
    ctx: &Ctx,
) {
    let api = &ctx.api;
    let (account, id, stripe_id) = active_stripe_subscription(ctx).await;
    assert!(changes_seen(ctx, &stripe_id).is_empty());

    // At the period end: Stripe is told not to charge another period.
    let canceled = cancel(api, &account, true).await;
    let body = canceled.expect(200);
    assert_eq!(body["cancel_at_period_end"], true);
    assert_eq!(body["status"], "active");
    let seen = changes_seen(ctx, &stripe_id);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].field("cancel_at_period_end"), Some("true"));
    assert_eq!(
        seen[0].idempotency_key,
        format!("cancel-{id}-at_period_end")
    );
    let scheduled = subscription(api, &account).await;
    assert_eq!(scheduled["cancel_at_period_end"], true);
    assert_eq!(scheduled["status"], "active");

    // Asking again changes nothing and does not call Stripe again.
    assert_eq!(
        cancel(api, &account, true).await.expect(200)["cancel_at_period_end"],
        true
    );
    assert_eq!(changes_seen(ctx, &stripe_id).len(), 1);

    // Stripe's echo of the change is applied as a no-op.
    let updated = event(
        &format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "customer.subscription.updated",
        json!({ "id": stripe_id, "object": "subscription", "status": "active", "cancel_at_period_end": true }),
    );
    assert_eq!(deliver(api, &updated).await.expect(200)["duplicate"], false);
    assert_eq!(subscription(api, &account).await, scheduled);

    // Now: Stripe's subscription is deleted, ours canceled.
    let now = cancel(api, &account, false).await;
    assert_eq!(now.expect(200)["status"], "canceled");
    let seen = changes_seen(ctx, &stripe_id);
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].method, "DELETE");
    assert_eq!(seen[1].idempotency_key, format!("cancel-{id}-now"));
    assert!(seen[1].form.is_empty(), "{seen:?}");
    let ended = subscription(api, &account).await;
    assert_eq!(ended["status"], "canceled");

    // Stripe's echoes change nothing and call nothing.
    for (kind, status) in [
        ("customer.subscription.deleted", "canceled"),
        ("customer.subscription.updated", "canceled"),
    ] {
        let echo = event(
            &format!("evt_{}", uuid::Uuid::new_v4().simple()),
            kind,
            json!({ "id": stripe_id, "object": "subscription", "status": status, "cancel_at_period_end": false }),
        );
        assert_eq!(deliver(api, &echo).await.expect(200)["duplicate"], false);
        assert_eq!(subscription(api, &account).await, ended, "{kind}");
    }
    assert_eq!(changes_seen(ctx, &stripe_id).len(), 2);

    // Nothing is left open to cancel.
    cancel(api, &account, false)
        .await
        .expect_error(404, "not_found");
    assert_eq!(changes_seen(ctx, &stripe_id).len(), 2);
}
with_stripe!(canceling_a_stripe_subscription_tells_stripe_first_and_its_webhooks_change_nothing);

async fn a_cancel_stripe_refuses_writes_nothing(ctx: &Ctx) {
    let api = &ctx.api;
    let (account, id, stripe_id) = active_stripe_subscription(ctx).await;
    let before = subscription(api, &account).await;
    let invoices_before = invoices(api, &account).await;

    // Refused (4xx) is 502; Stripe failing (5xx) is 503; both change nothing.
    for (stub_status, status) in [(400, 502), (500, 503)] {
        ctx.stub
            .refuse_subscription_changes
            .store(stub_status, Ordering::SeqCst);
        for at_period_end in [true, false] {
            let r = cancel(api, &account, at_period_end).await;
            r.expect_error(status, "unavailable");
            assert_eq!(subscription(api, &account).await, before);
        }
    }
    assert_eq!(invoices(api, &account).await, invoices_before);
    let seen = changes_seen(ctx, &stripe_id);
    assert_eq!(
        seen.iter().map(|s| s.method.as_str()).collect::<Vec<_>>(),
        ["POST", "DELETE", "POST", "DELETE"]
    );

    // Once Stripe accepts, the same request goes through (same key).
    ctx.stub
        .refuse_subscription_changes
        .store(0, Ordering::SeqCst);
    assert_eq!(
        cancel(api, &account, false).await.expect(200)["status"],
        "canceled"
    );
    let seen = changes_seen(ctx, &stripe_id);
    assert_eq!(seen.len(), 5);
    assert_eq!(seen[4].idempotency_key, format!("cancel-{id}-now"));
}
with_stripe!(a_cancel_stripe_refuses_writes_nothing);

async fn a_plan_change_of_a_stripe_subscription_is_refused_and_writes_nothing(ctx: &Ctx) {
    let api = &ctx.api;
    let (account, _, stripe_id) = active_stripe_subscription(ctx).await;
    let before = subscription(api, &account).await;
    let invoices_before = invoices(api, &account).await;
    let balance_before = api.balance_now(&account).await;
    for plan in ["professional", "free"] {
        let r = api
            .post(
                "/v1/billing/subscriptions/upgrade",
                &api.owner(&account),
                Some(&key()),
                json!({ "plan": plan }),
            )
            .await;
        r.expect_error(409, "conflict");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("plan changes of a Stripe subscription are not supported yet"),
            "{}",
            r.text
        );
    }
    assert_eq!(subscription(api, &account).await, before);
    assert_eq!(invoices(api, &account).await, invoices_before);
    assert_eq!(api.balance_now(&account).await, balance_before);
    assert!(changes_seen(ctx, &stripe_id).is_empty());
}
with_stripe!(a_plan_change_of_a_stripe_subscription_is_refused_and_writes_nothing);

// ---------------------------------------------------------------------------
// Signatures and event types
// ---------------------------------------------------------------------------

async fn bad_signatures_are_refused_and_change_nothing(ctx: &Ctx) {
    let api = &ctx.api;
    let account = starter_account(api).await;
    let bought = stripe_purchase(api, &account).await;
    let body = intent_succeeded("evt_sig_1", &bought);
    let now = common::now_unix();
    let valid = signature(&body, WEBHOOK_SECRET, now);
    let valid_v1 = valid.split_once(",v1=").unwrap().1.to_owned();
    let refused = [
        ("wrong secret", Some(signature(&body, "whsec_wrong", now))),
        ("stale", Some(signature(&body, WEBHOOK_SECRET, now - 301))),
        ("future", Some(signature(&body, WEBHOOK_SECRET, now + 301))),
        ("missing", None),
        ("malformed", Some("v1=zz,garbage".to_owned())),
        ("no timestamp", Some(format!("v1={valid_v1}"))),
        (
            "another body",
            Some(signature(&format!("{body} "), WEBHOOK_SECRET, now)),
        ),
    ];
    for (why, sig) in refused {
        let r = post_webhook(api, &body, sig).await;
        let details = r.expect_error(400, "invalid_request");
        assert_eq!(details["reason"], "invalid_signature", "{why}");
    }
    assert_eq!(api.balance_now(&account).await, 0, "nothing changed");
    let invoice_id = bought["invoice"]["id"].as_str().unwrap();
    assert_eq!(
        api.invoice_now(&account, invoice_id).await["status"],
        "pending"
    );

    // Several v1 values: one matching is enough. The event was never
    // recorded by the refused attempts, so it applies now.
    let several = format!("t={now},v1={},v1={valid_v1}", "ab".repeat(32));
    let ok = post_webhook(api, &body, Some(several)).await;
    assert_eq!(ok.expect(200)["duplicate"], false);
    assert_eq!(api.balance_now(&account).await, 2_000);

    // Too large: 413 before anything is read as JSON.
    let huge = format!(
        "{{\"id\":\"evt_big\",\"pad\":\"{}\"}}",
        "x".repeat(300 * 1024)
    );
    post_webhook(api, &huge, Some(signature(&huge, WEBHOOK_SECRET, now)))
        .await
        .expect_error(413, "payload_too_large");
    // Signed but not an event: 400.
    let junk = "[1,2,3]";
    post_webhook(api, junk, Some(signature(junk, WEBHOOK_SECRET, now)))
        .await
        .expect_error(400, "invalid_request");
}
with_stripe!(bad_signatures_are_refused_and_change_nothing);

async fn an_unknown_event_type_is_recorded_and_acknowledged_once(ctx: &Ctx) {
    let api = &ctx.api;
    let body = event(
        "evt_unknown_1",
        "customer.created",
        json!({ "id": "cus_x", "object": "customer" }),
    );
    // The trailing-slash form is the same route.
    let first = post_webhook_to(
        api,
        "/v1/billing/webhooks/stripe/",
        &body,
        Some(signature(&body, WEBHOOK_SECRET, common::now_unix())),
    )
    .await;
    let first = first.expect(200);
    assert_eq!(first["received"], true);
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["handled"], false);
    assert!(first["position"].as_i64().unwrap() > 0, "it was recorded");
    let again = deliver(api, &body).await;
    assert_eq!(again.expect(200)["duplicate"], true);
    // A handled type about nothing of ours is acknowledged too.
    let stranger = event(
        "evt_unknown_2",
        "invoice.paid",
        json!({ "id": "in_x", "object": "invoice", "subscription": "sub_not_ours" }),
    );
    let r = deliver(api, &stranger).await;
    assert_eq!(r.expect(200)["handled"], false);
}
with_stripe!(an_unknown_event_type_is_recorded_and_acknowledged_once);

// ---------------------------------------------------------------------------
// Refunds
// ---------------------------------------------------------------------------

async fn refund(api: &Api, payment_id: &str, idem: &str, body: Value) -> common::Resp {
    api.post(
        &format!("/v1/admin/payments/{payment_id}/refund"),
        &api.developer(),
        Some(idem),
        body,
    )
    .await
}

async fn stripe_refunds_add_up_to_what_was_paid_and_never_more(ctx: &Ctx) {
    let api = &ctx.api;
    let account = starter_account(api).await;
    let bought = paid_stripe_purchase(ctx, &account).await;
    let payment_id = bought["payment"]["id"].as_str().unwrap();
    let intent = bought["payment"]["gateway_ref"].as_str().unwrap();

    // Only developers refund.
    api.post(
        &format!("/v1/admin/payments/{payment_id}/refund"),
        &api.owner(&account),
        Some(&key()),
        json!({ "amount": "10.00", "reason": "x" }),
    )
    .await
    .expect_error(403, "forbidden");

    let idem = key();
    let part = refund(
        api,
        payment_id,
        &idem,
        json!({ "amount": "10.00", "reason": "partial goodwill" }),
    )
    .await;
    let part_body = part.expect(200).clone();
    assert_eq!(part_body["amount"], "10.00");
    assert_eq!(part_body["refunded_amount"], "10.00");
    assert_eq!(part_body["status"], "succeeded");
    let re = part_body["gateway_refund_ref"].as_str().unwrap();
    assert!(re.starts_with("re_"), "{re}");
    // A retry with the same key replays and refunds nothing more.
    let replay = refund(
        api,
        payment_id,
        &idem,
        json!({ "amount": "10.00", "reason": "partial goodwill" }),
    )
    .await;
    assert_eq!(replay.expect(200)["refunded_amount"], "10.00");
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    // The same key with another body is refused, and moves nothing.
    refund(
        api,
        payment_id,
        &idem,
        json!({ "amount": "11.00", "reason": "partial goodwill" }),
    )
    .await
    .expect_error(409, "idempotency_key_reused");

    // The rest by default.
    let rest = refund(api, payment_id, &key(), json!({ "reason": "the rest" })).await;
    let rest = rest.expect(200);
    assert_eq!(rest["amount"], "24.51");
    assert_eq!(rest["refunded_amount"], "34.51");
    assert_eq!(rest["status"], "refunded");

    // Nothing is left: refused, and Stripe is not asked.
    refund(
        api,
        payment_id,
        &key(),
        json!({ "amount": "0.01", "reason": "too much" }),
    )
    .await
    .expect_error(409, "conflict");

    let seen = ctx.stub.requests("/v1/refunds");
    assert_eq!(
        seen.len(),
        2,
        "two refunds; the replay asks Stripe nothing: {seen:?}"
    );
    assert_eq!(seen[0].field("payment_intent"), Some(intent));
    assert_eq!(seen[0].field("amount"), Some("1000"));
    assert_eq!(
        seen[0].idempotency_key,
        format!("refund-{}", part_body["refund_id"].as_str().unwrap())
    );
    assert_eq!(seen[1].field("amount"), Some("2451"));
    assert_ne!(seen[1].idempotency_key, seen[0].idempotency_key);

    let row = payment_row(api, payment_id, &account).await;
    assert_eq!(row["status"], "refunded");
    assert_eq!(row["refunded_amount"], "34.51");
    assert_eq!(
        api.balance_now(&account).await,
        2_000,
        "credits kept: not revoked"
    );

    // Stripe's charge.refunded for what we already recorded adds nothing.
    let charge = event(
        "evt_charge_refunded_1",
        "charge.refunded",
        json!({ "id": "ch_stub_1", "object": "charge", "payment_intent": intent, "amount_refunded": 3451 }),
    );
    deliver(api, &charge).await.expect(200);
    let row = payment_row(api, payment_id, &account).await;
    assert_eq!(row["refunded_amount"], "34.51");
}
with_stripe!(stripe_refunds_add_up_to_what_was_paid_and_never_more);

async fn a_refund_made_at_stripe_is_recorded_without_revoking_credits(ctx: &Ctx) {
    let api = &ctx.api;
    let account = starter_account(api).await;
    let bought = paid_stripe_purchase(ctx, &account).await;
    let payment_id = bought["payment"]["id"].as_str().unwrap();
    let intent = bought["payment"]["gateway_ref"].as_str().unwrap();
    let charge = event(
        "evt_charge_refunded_2",
        "charge.refunded",
        json!({
            "id": "ch_stub_2",
            "object": "charge",
            "payment_intent": intent,
            "amount_refunded": 1000,
            "refunds": { "data": [ { "id": "re_dashboard_1", "amount": 1000 } ] },
        }),
    );
    assert_eq!(deliver(api, &charge).await.expect(200)["handled"], true);
    let row = payment_row(api, payment_id, &account).await;
    assert_eq!(row["refunded_amount"], "10.00");
    assert_eq!(row["status"], "succeeded");
    assert_eq!(api.balance_now(&account).await, 2_000);
}
with_stripe!(a_refund_made_at_stripe_is_recorded_without_revoking_credits);

async fn a_refund_revoking_credits_takes_them_back_or_refunds_nothing(ctx: &Ctx) {
    let api = &ctx.api;
    let account = starter_account(api).await;
    // A bank transfer purchase approved by a developer (maker-checker).
    let bought = api
        .post(
            "/v1/billing/credits/purchase",
            &api.owner(&account),
            Some(&key()),
            json!({ "package": "pro", "method": "bank_transfer" }),
        )
        .await
        .expect(201)
        .clone();
    let payment_id = bought["payment"]["id"].as_str().unwrap();
    api.post_empty(
        &format!("/v1/admin/payments/{payment_id}/approve"),
        &api.developer(),
        None,
    )
    .await
    .expect(200);
    assert_eq!(api.balance_now(&account).await, 2_000);

    // Half the money back (17.25 of 34.51): floor(2000 × 17.25 / 34.51) =
    // 999 credits back.
    let half = refund(
        api,
        payment_id,
        &key(),
        json!({ "amount": "17.25", "reason": "half", "revoke_credits": true }),
    )
    .await;
    let half = half.expect(200);
    assert_eq!(half["revoked_credits"], 999);
    assert!(half["gateway_refund_ref"].is_null(), "a manual payment");
    assert_eq!(api.balance_now(&account).await, 1_001);

    // The customer spends most of what is left; the rest of the refund
    // would take back 1,001 credits they no longer have: 402, nothing
    // refunded.
    api.post(
        &format!("/v1/admin/accounts/{account}/adjust-credits"),
        &api.developer(),
        Some(&key()),
        json!({ "credits": -900, "reason": "usage" }),
    )
    .await
    .expect(201);
    refund(
        api,
        payment_id,
        &key(),
        json!({ "reason": "the rest", "revoke_credits": true }),
    )
    .await
    .expect_error(402, "insufficient_credits");
    let row = payment_row(api, payment_id, &account).await;
    assert_eq!(row["refunded_amount"], "17.25", "nothing more refunded");
    assert_eq!(api.balance_now(&account).await, 101);
    assert!(ctx.stub.requests("/v1/refunds").is_empty());

    // Without revoking, the rest goes back.
    let rest = refund(api, payment_id, &key(), json!({ "reason": "the rest" })).await;
    assert_eq!(rest.expect(200)["status"], "refunded");
    assert_eq!(api.balance_now(&account).await, 101);

    // Bad input: 422 naming the field; an unknown payment 404.
    refund(
        api,
        payment_id,
        &key(),
        json!({ "amount": "ten", "reason": "x" }),
    )
    .await
    .expect_error(422, "invalid_request");
    refund(
        api,
        &uuid::Uuid::now_v7().to_string(),
        &key(),
        json!({ "reason": "x" }),
    )
    .await
    .expect_error(404, "not_found");
}
with_stripe!(a_refund_revoking_credits_takes_them_back_or_refunds_nothing);

// ---------------------------------------------------------------------------
// Without Stripe configured
// ---------------------------------------------------------------------------

async fn without_a_key_stripe_is_unavailable_and_nothing_is_written(api: &Api) {
    let account = starter_account(api).await;
    assert!(
        !stripe_offered(api, &account).await,
        "without a key stripe is listed but not available"
    );
    let r = api
        .post(
            "/v1/billing/credits/purchase",
            &api.owner(&account),
            Some(&key()),
            json!({ "package": "pro", "method": "stripe" }),
        )
        .await;
    r.expect_error(503, "unavailable");
    let p = api.head().await;
    let invoices = api
        .get(
            &format!("/v1/billing/invoices?min_position={p}"),
            &api.owner(&account),
        )
        .await;
    assert_eq!(
        invoices.expect(200)["items"].as_array().unwrap().len(),
        0,
        "no invoice was issued"
    );
    api.post(
        "/v1/billing/subscriptions/create",
        &api.owner(&account),
        Some(&key()),
        json!({ "plan": "professional", "method": "stripe" }),
    )
    .await
    .expect_error(503, "unavailable");
    api.post(
        "/v1/billing/credits/purchase",
        &api.owner(&account),
        Some(&key()),
        json!({ "package": "pro", "method": "paypal" }),
    )
    .await
    .expect_error(503, "unavailable");
    // No webhook secret: the webhook is unavailable, never open.
    let body = event("evt_nokey", "customer.created", json!({}));
    post_webhook(
        api,
        &body,
        Some(signature(&body, WEBHOOK_SECRET, common::now_unix())),
    )
    .await
    .expect_error(503, "unavailable");
}
on_both_backends!(without_a_key_stripe_is_unavailable_and_nothing_is_written);

// ---------------------------------------------------------------------------
// Gateway failures
// ---------------------------------------------------------------------------

/// Buys with Stripe on a server whose Stripe is `base` with `secret_key`.
async fn purchase_against(backend: Backend, base: &str, secret_key: &str) -> common::Resp {
    let server = Server::start_with(
        backend,
        &["--stripe-secret-key", secret_key, "--stripe-api-base", base],
    )
    .await;
    let api = server.api.clone();
    let outcome = tokio::spawn(async move {
        let account = starter_account(&api).await;
        let r = stripe_purchase_with(&api, &account, &key()).await;
        let p = api.head().await;
        let payments = api
            .items("/v1/admin/payments", p, &format!("&account_id={account}"))
            .await;
        assert!(payments.is_empty(), "no payment recorded: {payments:?}");
        r
    })
    .await;
    server.stop().await;
    outcome.expect("the purchase ran")
}

/// Stripe unreachable is 503 (retry later); Stripe refusing the request
/// (here: a wrong key, 401 at the stub) is 502; neither records a payment.
async fn gateway_failures_are_unavailable_or_bad_gateway(backend: Backend) {
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    purchase_against(backend, &closed, STRIPE_KEY)
        .await
        .expect_error(503, "unavailable");
    let (stub, base) = start_stub().await;
    let refused = purchase_against(backend, &base, "sk_test_wrong").await;
    refused.expect(502);
    assert_eq!(refused.body["error"]["code"], "unavailable");
    assert!(
        stub.requests("/v1/payment_intents").is_empty(),
        "the stub refused before recording"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_failures_on_postgres() {
    gateway_failures_are_unavailable_or_bad_gateway(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gateway_failures_on_sqlite() {
    gateway_failures_are_unavailable_or_bad_gateway(Backend::Sqlite).await;
}
