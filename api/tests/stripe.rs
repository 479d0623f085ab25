//! Stripe through the real router over real HTTP, on PostgreSQL and SQLite
//! (docs/adr/0011-payments-gateway.md), against a local stub of Stripe's
//! API that keeps its objects and checks every request it receives (bearer
//! key, the pinned `Stripe-Version`, idempotency key on writes, form
//! fields, amounts in minor units): a Stripe credit purchase paid by
//! `payment_intent.succeeded` delivered twice; a Stripe subscription
//! answering its first payment's `client_secret` (expanded
//! `latest_invoice.confirmation_secret`) and paid by `invoice.paid`
//! delivered twice; `invoice.payment_failed` → past_due; signature
//! failures; unknown event types; refunds (partial, the rest, over-refund,
//! revoking credits, 402); canceling a Stripe subscription tells Stripe
//! first (at the period end or now; refused → nothing written) and
//! Stripe's echo webhooks change nothing; a plan change updates the Stripe
//! item's price (prorated for an upgrade) and our prorated invoice follows
//! `invoice.paid`; saved cards (SetupIntent, listed, default, detached,
//! another tenant's card refused); a sync after a missed webhook applies
//! once; and no key → unavailable.

mod common;

use std::collections::HashMap;
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
    /// The `Stripe-Version` header.
    stripe_version: String,
    /// The form body (POST) or the query (GET).
    form: Vec<(String, String)>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn fields(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// The objects the stub keeps, as Stripe would.
#[derive(Default)]
struct Objects {
    /// Subscriptions by id, their latest invoice in full (answered as an id
    /// unless expanded).
    subscriptions: HashMap<String, Value>,
    /// Customers by id.
    customers: HashMap<String, Value>,
    /// Payment methods (cards) in the order they were saved.
    payment_methods: Vec<Value>,
    /// PaymentIntents by id.
    payment_intents: HashMap<String, Value>,
}

#[derive(Clone, Default)]
struct Stub {
    seen: Arc<Mutex<Vec<Seen>>>,
    /// When not 0, the status every change of a subscription
    /// (`/v1/subscriptions/{id}`) is answered with, as an error.
    refuse_subscription_changes: Arc<AtomicU16>,
    objects: Arc<Mutex<Objects>>,
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

    fn all_requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// A card saved to `customer`, as the browser confirming a SetupIntent
    /// does; its id.
    fn save_card(&self, customer: &str, brand: &str, last4: &str) -> String {
        let mut objects = self.objects.lock().unwrap();
        let id = format!("pm_stub_{}_{last4}", objects.payment_methods.len() + 1);
        objects.payment_methods.push(json!({
            "id": id,
            "object": "payment_method",
            "type": "card",
            "customer": customer,
            "card": { "brand": brand, "last4": last4, "exp_month": 12, "exp_year": 2030 },
        }));
        id
    }

    /// Stripe collects the latest invoice of subscription `stripe_id`
    /// (what `invoice.paid` would then say); the invoice.
    fn pay_latest_invoice(&self, stripe_id: &str) -> Value {
        let mut objects = self.objects.lock().unwrap();
        let sub = objects
            .subscriptions
            .get_mut(stripe_id)
            .expect("a subscription of the stub");
        sub["status"] = json!("active");
        let invoice = &mut sub["latest_invoice"];
        invoice["status"] = json!("paid");
        invoice["amount_paid"] = invoice["amount_due"].clone();
        invoice.clone()
    }

    /// Stripe's PaymentIntent `id` succeeds (what
    /// `payment_intent.succeeded` would then say).
    fn succeed_intent(&self, id: &str) {
        let mut objects = self.objects.lock().unwrap();
        let pi = objects
            .payment_intents
            .get_mut(id)
            .expect("a PaymentIntent of the stub");
        pi["status"] = json!("succeeded");
        pi["amount_received"] = pi["amount"].clone();
        pi["latest_charge"] = json!(format!("ch_{}", &id[3..]));
    }
}

/// What the stub's Stripe invoices for any upgrade, in cents.
const STRIPE_PRORATION_CENTS: i64 = 1234;

/// A stable id for an idempotency key, as Stripe answers the same object
/// to the same key.
fn id_for(prefix: &str, key: &str) -> String {
    let digest = <Sha256 as sha2::Digest>::digest(key.as_bytes());
    format!("{prefix}_{}", &hex::encode(digest)[..16])
}

fn stripe_error(status: StatusCode, message: &str) -> axum::response::Response {
    (
        status,
        Json(json!({ "error": { "type": "invalid_request_error", "message": message } })),
    )
        .into_response()
}

fn missing(id: &str) -> axum::response::Response {
    stripe_error(StatusCode::NOT_FOUND, &format!("No such object: '{id}'"))
}

/// A subscription as answered: its latest invoice in full only when
/// `expand[]` asks for it (as Stripe does).
fn expanded(sub: &Value, expand: &[String]) -> Value {
    let mut sub = sub.clone();
    if !expand.iter().any(|e| e.starts_with("latest_invoice")) {
        sub["latest_invoice"] = sub["latest_invoice"]["id"].clone();
    }
    sub
}

/// Stripe's API as far as the ledger uses it. A request without the right
/// bearer key, the pinned `Stripe-Version`, an idempotency key on a write
/// or a form body is answered like Stripe answers it (401/400), so the
/// ledger cannot pass by accident.
async fn stub_handler(
    State(stub): State<Stub>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    use axum::http::Method as M;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if header("authorization") != format!("Bearer {STRIPE_KEY}") {
        return stripe_error(StatusCode::UNAUTHORIZED, "Invalid API Key provided");
    }
    let version = header("stripe-version");
    if version != app::gateway::stripe::STRIPE_API_VERSION {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "the stub expects the pinned Stripe-Version",
        );
    }
    let idem = header("idempotency-key");
    // A DELETE has no body (Stripe takes no parameters we send there); a
    // GET takes its parameters in the query and creates nothing.
    let writes = method != M::GET;
    let form_expected = method == M::POST;
    if (form_expected && header("content-type") != "application/x-www-form-urlencoded")
        || (writes && idem.is_empty())
    {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "form body and Idempotency-Key expected",
        );
    }
    let raw = if method == M::GET {
        uri.query().unwrap_or("").to_owned()
    } else {
        body
    };
    let form: Vec<(String, String)> = form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect();
    let path = uri.path().to_owned();
    stub.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        idempotency_key: idem.clone(),
        stripe_version: version,
        form: form.clone(),
    });
    let get = |k: &str| {
        form.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let expand: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "expand[]")
        .map(|(_, v)| v.clone())
        .collect();
    // From 2025-03-31 on an invoice has no `payment_intent` to expand.
    if expand.iter().any(|e| e == "latest_invoice.payment_intent") {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "This property cannot be expanded (latest_invoice.payment_intent).",
        );
    }
    let mut objects = stub.objects.lock().unwrap();
    let segments: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    let answer = match (method.clone(), segments.as_slice()) {
        (M::POST, ["customers"]) => {
            let id = id_for("cus", &idem);
            objects
                .customers
                .entry(id.clone())
                .or_insert_with(|| {
                    json!({
                        "id": id,
                        "object": "customer",
                        "metadata": { "account_id": get("metadata[account_id]") },
                        "invoice_settings": { "default_payment_method": null },
                    })
                })
                .clone()
        }
        (M::POST, ["customers", id]) => {
            let Some(customer) = objects.customers.get_mut(*id) else {
                return missing(id);
            };
            let default = get("invoice_settings[default_payment_method]");
            if !default.is_empty() {
                customer["invoice_settings"]["default_payment_method"] = json!(default);
            }
            customer.clone()
        }
        (M::GET, ["customers", id]) => match objects.customers.get(*id) {
            Some(customer) => customer.clone(),
            None => return missing(id),
        },
        (M::POST, ["setup_intents"]) => {
            let customer = get("customer");
            if !objects.customers.contains_key(&customer) {
                return missing(&customer);
            }
            let id = id_for("seti", &idem);
            json!({
                "id": id,
                "object": "setup_intent",
                "customer": customer,
                "client_secret": format!("{id}_secret_stub"),
                "status": "requires_payment_method",
                "usage": get("usage"),
            })
        }
        (M::GET, ["payment_methods"]) => {
            let customer = get("customer");
            let data: Vec<Value> = objects
                .payment_methods
                .iter()
                .filter(|pm| pm["customer"] == customer.as_str() && pm["type"] == get("type"))
                .cloned()
                .collect();
            json!({ "object": "list", "data": data, "has_more": false })
        }
        (M::GET, ["payment_methods", id]) => {
            match objects.payment_methods.iter().find(|pm| pm["id"] == *id) {
                Some(pm) => pm.clone(),
                None => return missing(id),
            }
        }
        (M::POST, ["payment_methods", id, "detach"]) => {
            match objects
                .payment_methods
                .iter_mut()
                .find(|pm| pm["id"] == *id)
            {
                Some(pm) => {
                    pm["customer"] = Value::Null;
                    pm.clone()
                }
                None => return missing(id),
            }
        }
        (M::POST, ["payment_intents"]) => {
            let id = id_for("pi", &idem);
            // A saved card charged off-session: a card whose last four
            // digits are 0002 is declined, as Stripe's test card is.
            if get("confirm") == "true" && get("payment_method").ends_with("_0002") {
                return (
                    StatusCode::PAYMENT_REQUIRED,
                    Json(json!({ "error": {
                        "type": "card_error",
                        "code": "card_declined",
                        "message": "Your card was declined.",
                    } })),
                )
                    .into_response();
            }
            let confirmed = get("confirm") == "true";
            objects
                .payment_intents
                .entry(id.clone())
                .or_insert_with(|| {
                    json!({
                        "id": id,
                        "object": "payment_intent",
                        "amount": get("amount").parse::<i64>().unwrap_or(-1),
                        "currency": get("currency"),
                        "client_secret": format!("{id}_secret_stub"),
                        "status": if confirmed { "succeeded" } else { "requires_payment_method" },
                        "metadata": {
                            "payment_id": get("metadata[payment_id]"),
                            "invoice_id": get("metadata[invoice_id]"),
                            "account_id": get("metadata[account_id]"),
                        },
                    })
                })
                .clone()
        }
        (M::GET, ["payment_intents", id]) => match objects.payment_intents.get(*id) {
            Some(pi) => pi.clone(),
            None => return missing(id),
        },
        (M::POST, ["subscriptions"]) => {
            let id = id_for("sub", &idem);
            let customer = get("customer");
            let sub = objects
                .subscriptions
                .entry(id.clone())
                .or_insert_with(|| {
                    let invoice = id_for("in", &idem);
                    json!({
                        "id": id,
                        "object": "subscription",
                        "status": "incomplete",
                        "customer": customer,
                        "cancel_at_period_end": false,
                        "metadata": { "subscription_id": get("metadata[subscription_id]") },
                        "items": { "object": "list", "data": [ {
                            "id": id_for("si", &idem),
                            "object": "subscription_item",
                            "price": { "id": get("items[0][price]") },
                        } ] },
                        "latest_invoice": {
                            "id": invoice,
                            "object": "invoice",
                            "status": "open",
                            "amount_due": 2900,
                            "amount_paid": 0,
                            "currency": "usd",
                            "parent": { "subscription_details": { "subscription": id } },
                            "confirmation_secret": {
                                "client_secret": format!("{invoice}_secret_stub"),
                                "type": "payment_intent",
                            },
                        },
                    })
                })
                .clone();
            expanded(&sub, &expand)
        }
        (M::GET, ["subscriptions", id]) => match objects.subscriptions.get(*id) {
            Some(sub) => expanded(sub, &expand),
            None => return missing(id),
        },
        (_, ["subscriptions", stripe_id]) => {
            let refuse = stub.refuse_subscription_changes.load(Ordering::SeqCst);
            if refuse != 0 {
                return stripe_error(StatusCode::from_u16(refuse).unwrap(), "refused by the stub");
            }
            let stored = objects.subscriptions.get_mut(*stripe_id);
            if method == M::DELETE {
                if let Some(sub) = stored {
                    sub["status"] = json!("canceled");
                }
                json!({ "id": stripe_id, "object": "subscription", "status": "canceled" })
            } else {
                let Some(sub) = stored else {
                    return missing(stripe_id);
                };
                if !get("cancel_at_period_end").is_empty() {
                    sub["cancel_at_period_end"] = json!(get("cancel_at_period_end") == "true");
                }
                if !get("items[0][price]").is_empty() {
                    if sub["items"]["data"][0]["id"] != get("items[0][id]").as_str() {
                        return stripe_error(StatusCode::BAD_REQUEST, "No such subscription item");
                    }
                    sub["items"]["data"][0]["price"]["id"] = json!(get("items[0][price]"));
                }
                // An upgrade invoiced at once: Stripe's own proration
                // (12.34 here), the subscription's latest invoice.
                if get("proration_behavior") == "always_invoice" {
                    let invoice = id_for("in", &idem);
                    sub["latest_invoice"] = json!({
                        "id": invoice,
                        "object": "invoice",
                        "status": "open",
                        "billing_reason": "subscription_update",
                        "amount_due": STRIPE_PRORATION_CENTS,
                        "amount_paid": 0,
                        "currency": "usd",
                        "parent": { "subscription_details": { "subscription": stripe_id } },
                    });
                }
                expanded(sub, &expand)
            }
        }
        (M::POST, ["refunds"]) => {
            json!({ "id": id_for("re", &idem), "object": "refund", "status": "succeeded" })
        }
        _ => return stripe_error(StatusCode::NOT_FOUND, "Unrecognized request URL"),
    };
    Json(answer).into_response()
}

/// Starts the stub on an ephemeral port; returns it and its base URL.
async fn start_stub() -> (Stub, String) {
    let stub = Stub::default();
    let app = Router::new()
        .route(
            "/v1/{*rest}",
            post(stub_handler).delete(stub_handler).get(stub_handler),
        )
        .with_state(stub.clone());
    (stub, common::serve_local(app).await)
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
    let body = body(Ctx {
        api: server.api.clone(),
        stub,
    });
    server.run_and_stop(body).await;
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
    price_plan(api, "starter", PRICE_ID).await;
}

/// Gives plan `slug` the Stripe price `price_id`.
async fn price_plan(api: &Api, slug: &str, price_id: &str) {
    let plans = api.get("/v1/plans", &api.developer()).await;
    let plan = plans.expect(200)["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["slug"] == slug)
        .unwrap()
        .clone();
    let mut body = json!({
        "name": plan["name"],
        "price": plan["price"],
        "billing_cycle": plan["billing_cycle"],
        "included_credits": plan["included_credits"],
        "allow_credit_topup": plan["allow_credit_topup"],
        "limits": plan["limits"],
        "features": plan["features"],
        "stripe_price_id": price_id,
    });
    if !plan["extra_credit_price"].is_null() {
        body["extra_credit_price"] = plan["extra_credit_price"].clone();
    }
    api.put(&format!("/v1/admin/plans/{slug}"), &api.developer(), body)
        .await
        .expect(200);
    // The catalog cache follows the change.
    for _ in 0..50 {
        let plans = api.get("/v1/plans", &api.developer()).await;
        if plans.expect(200)["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["slug"] == slug && p["stripe_price_id"] == price_id)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the {slug} plan never showed its Stripe price");
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
    let idem = key();
    let body = json!({ "plan": "starter", "method": "stripe" });
    let create = |body: Value| {
        let idem = idem.clone();
        let account = account.clone();
        async move {
            api.post(
                "/v1/billing/subscriptions/create",
                &api.owner(&account),
                Some(&idem),
                body,
            )
            .await
        }
    };
    let created = create(body.clone()).await.expect(201).clone();
    assert_eq!(created["status"], "incomplete");
    assert_eq!(created["method"], "stripe");
    let stripe_id = created["stripe_subscription_id"].as_str().unwrap();
    assert!(stripe_id.starts_with("sub_"), "{stripe_id}");

    // The first payment's secret is the latest invoice's confirmation
    // secret, asked for with `expand[]` on a `default_incomplete` create.
    let secret = created["client_secret"].as_str().unwrap();
    assert!(
        secret.starts_with("in_") && secret.ends_with("_secret_stub"),
        "{secret}"
    );
    let subs = ctx.stub.requests("/v1/subscriptions");
    assert_eq!(subs.len(), 1);
    assert_eq!(
        subs[0].field("payment_behavior"),
        Some("default_incomplete")
    );
    assert_eq!(
        subs[0].fields("expand[]"),
        ["latest_invoice.confirmation_secret"]
    );
    // A replay answers the same secret (read again from Stripe, never
    // stored) and creates nothing more.
    let again = create(body).await;
    let mut replayed = again.expect(201).clone();
    // The position answered is the log's at the time, not the first's.
    replayed["position"] = created["position"].clone();
    assert_eq!(replayed, created);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(ctx.stub.requests("/v1/subscriptions").len(), 1);
    let read = ctx.stub.requests(&format!("/v1/subscriptions/{stripe_id}"));
    assert_eq!(read.len(), 1, "{read:?}");
    assert_eq!(read[0].method, "GET");
    assert_eq!(
        read[0].fields("expand[]"),
        ["latest_invoice.confirmation_secret"]
    );
    // Every call to Stripe carried the pinned version (the stub refuses
    // any other).
    assert!(ctx
        .stub
        .all_requests()
        .iter()
        .all(|s| s.stripe_version == app::gateway::stripe::STRIPE_API_VERSION));

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
async fn a_stripe_subscription_in_another_currency_asks_stripe_for_it(ctx: &Ctx) {
    let api = &ctx.api;
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
            "stripe_price_id": PRICE_ID,
        }),
    )
    .await
    .expect(200);
    let de = api
        .open_account_on(json!({ "plan": "free", "country": "DE" }))
        .await;
    let created = stripe_subscription(ctx, &de).await;
    assert_eq!(
        (created["currency"].as_str(), created["price"].as_str()),
        (Some("EUR"), Some("27.00"))
    );
    let us = api.open_account().await;
    let created_us = stripe_subscription(ctx, &us).await;
    assert_eq!(created_us["currency"], "USD");
    let subs = ctx.stub.requests("/v1/subscriptions");
    let currencies: Vec<Option<&str>> = subs.iter().map(|s| s.field("currency")).collect();
    assert_eq!(
        currencies,
        [Some("eur"), None],
        "the price's currency option, else its own"
    );
}
with_stripe!(a_stripe_subscription_in_another_currency_asks_stripe_for_it);

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

async fn change_plan(api: &Api, account: &str, idem: &str, plan: &str) -> common::Resp {
    api.post(
        "/v1/billing/subscriptions/upgrade",
        &api.owner(account),
        Some(idem),
        json!({ "plan": plan }),
    )
    .await
}

/// The POSTs the stub saw that change Stripe's subscription `stripe_id`.
fn posts_seen(ctx: &Ctx, stripe_id: &str) -> Vec<Seen> {
    changes_seen(ctx, stripe_id)
        .into_iter()
        .filter(|s| s.method == "POST")
        .collect()
}

async fn a_stripe_plan_change_updates_the_item_with_proration_and_the_webhook_pays_ours(ctx: &Ctx) {
    let api = &ctx.api;
    let (account, id, stripe_id) = active_stripe_subscription(ctx).await;
    price_plan(api, "professional", "price_professional_monthly").await;
    let item = ctx.stub.objects.lock().unwrap().subscriptions[&stripe_id]["items"]["data"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(api.balance_now(&account).await, 1_000);

    // A plan without a Stripe price: 503 before anything is sent or written.
    let before = subscription(api, &account).await;
    change_plan(api, &account, &key(), "enterprise")
        .await
        .expect_error(503, "unavailable");
    assert_eq!(subscription(api, &account).await, before);
    assert!(posts_seen(ctx, &stripe_id).is_empty());

    // Upgrade: the item gets the professional price, prorated by Stripe.
    let idem = key();
    let up = change_plan(api, &account, &idem, "professional").await;
    let up = up.expect(200).clone();
    assert_eq!(up["change"]["kind"], "upgrade");
    assert_eq!(up["subscription"]["plan"], "professional");
    let seen = changes_seen(ctx, &stripe_id);
    assert_eq!(
        seen.iter().map(|s| s.method.as_str()).collect::<Vec<_>>(),
        ["GET", "POST"],
        "the item is looked up, then changed: {seen:?}"
    );
    let post = &seen[1];
    assert_eq!(post.field("items[0][id]"), Some(item.as_str()));
    assert_eq!(
        post.field("items[0][price]"),
        Some("price_professional_monthly")
    );
    assert_eq!(post.field("proration_behavior"), Some("always_invoice"));
    assert_eq!(post.idempotency_key, format!("plan-change-{id}-{idem}"));
    assert_eq!(
        ctx.stub.objects.lock().unwrap().subscriptions[&stripe_id]["items"]["data"][0]["price"]
            ["id"],
        "price_professional_monthly"
    );
    // A retry replays without changing Stripe again.
    let again = change_plan(api, &account, &idem, "professional").await;
    assert_eq!(again.expect(200)["change"], up["change"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(posts_seen(ctx, &stripe_id).len(), 1);

    // Our prorated invoice and its credits follow Stripe's invoice.paid.
    let invoice = &up["change"]["invoice"];
    let invoice_id = invoice["id"].as_str().unwrap();
    let prorated = up["change"]["prorated_credits"].as_i64().unwrap();
    assert!(prorated > 0, "{up}");
    assert_eq!(
        api.balance_now(&account).await,
        1_000,
        "not before it is paid"
    );
    // Ours takes the amount Stripe invoiced for the change, so that
    // Stripe's payment pays it exactly.
    let ours = api.invoice_now(&account, invoice_id).await;
    assert_eq!(ours["status"], "pending");
    assert_eq!(ours["total"], "12.34");
    let stripe_invoice = ctx.stub.pay_latest_invoice(&stripe_id);
    assert_eq!(stripe_invoice["amount_paid"], STRIPE_PRORATION_CENTS);
    let paid = event(
        &format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "invoice.paid",
        stripe_invoice,
    );
    assert_eq!(deliver(api, &paid).await.expect(200)["handled"], true);
    assert_eq!(
        api.invoice_now(&account, invoice_id).await["status"],
        "paid"
    );
    assert_eq!(api.balance_now(&account).await, 1_000 + prorated);

    // Downgrade: scheduled at the period end here, the new price from the
    // next period at Stripe (no proration).
    price_the_starter_plan(api).await;
    let down = change_plan(api, &account, &key(), "starter").await;
    assert_eq!(down.expect(200)["change"]["kind"], "downgrade_scheduled");
    let posts = posts_seen(ctx, &stripe_id);
    assert_eq!(posts.len(), 2);
    assert_eq!(posts[1].field("items[0][price]"), Some(PRICE_ID));
    assert_eq!(posts[1].field("proration_behavior"), Some("none"));
    // A change the subscription refuses (the same downgrade again) is not
    // sent to Stripe.
    change_plan(api, &account, &key(), "starter")
        .await
        .expect_error(409, "conflict");
    assert_eq!(posts_seen(ctx, &stripe_id).len(), 2);

    // Stripe refusing: nothing written.
    price_plan(api, "enterprise", "price_enterprise_monthly").await;
    let before = subscription(api, &account).await;
    ctx.stub
        .refuse_subscription_changes
        .store(400, Ordering::SeqCst);
    change_plan(api, &account, &key(), "enterprise")
        .await
        .expect_error(502, "unavailable");
    ctx.stub
        .refuse_subscription_changes
        .store(0, Ordering::SeqCst);
    assert_eq!(subscription(api, &account).await, before);
}
with_stripe!(a_stripe_plan_change_updates_the_item_with_proration_and_the_webhook_pays_ours);

// ---------------------------------------------------------------------------
// Saved cards
// ---------------------------------------------------------------------------

async fn payment_methods(api: &Api, account: &str) -> Value {
    api.get("/v1/billing/payment-methods", &api.owner(account))
        .await
        .expect(200)
        .clone()
}

async fn add_card(api: &Api, account: &str, body: Value) -> common::Resp {
    api.post(
        "/v1/billing/payment-methods",
        &api.owner(account),
        None,
        body,
    )
    .await
}

async fn make_default(api: &Api, account: &str, card: &str) -> common::Resp {
    api.post_empty(
        &format!("/v1/billing/payment-methods/{card}/default"),
        &api.owner(account),
        None,
    )
    .await
}

async fn detach(api: &Api, account: &str, card: &str) -> common::Resp {
    api.send(
        reqwest::Method::DELETE,
        &format!("/v1/billing/payment-methods/{card}"),
        Some(&api.owner(account)),
        None,
        None,
    )
    .await
}

/// The Stripe customer the stub saw a SetupIntent made for, for `account`.
fn customer_of(ctx: &Ctx, account: &str) -> String {
    ctx.stub
        .requests("/v1/setup_intents")
        .iter()
        .find(|s| s.field("metadata[account_id]") == Some(account))
        .and_then(|s| s.field("customer"))
        .expect("a SetupIntent for the account")
        .to_owned()
}

fn card_ids(list: &Value) -> Vec<(String, bool)> {
    list["saved_cards"]
        .as_array()
        .expect("saved_cards is a list")
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["default"].as_bool().unwrap(),
            )
        })
        .collect()
}

async fn a_saved_card_is_set_up_listed_made_default_and_detached(ctx: &Ctx) {
    let api = &ctx.api;
    let account = starter_account(api).await;

    // No customer yet: nothing saved, and listing creates none.
    let before = payment_methods(api, &account).await;
    assert_eq!(before["saved_cards"], json!([]));
    assert!(before["items"].as_array().is_some_and(|i| !i.is_empty()));
    assert!(ctx.stub.requests("/v1/customers").is_empty());

    // A SetupIntent for a customer created once.
    let setup = add_card(api, &account, json!({})).await;
    let setup = setup.expect(201).clone();
    let seti = setup["setup_intent_id"].as_str().unwrap();
    assert!(seti.starts_with("seti_"), "{seti}");
    assert_eq!(setup["client_secret"], format!("{seti}_secret_stub"));
    assert_eq!(setup["type"], "card");
    let customers = ctx.stub.requests("/v1/customers");
    assert_eq!(customers.len(), 1);
    assert_eq!(customers[0].idempotency_key, format!("customer-{account}"));
    let customer = customer_of(ctx, &account);
    assert!(customer.starts_with("cus_"), "{customer}");
    let intents = ctx.stub.requests("/v1/setup_intents");
    assert_eq!(intents[0].field("payment_method_types[]"), Some("card"));
    assert_eq!(intents[0].field("usage"), Some("off_session"));
    // Again (`type: card`): the same customer, not created again.
    add_card(api, &account, json!({ "type": "card" }))
        .await
        .expect(201);
    assert_eq!(ctx.stub.requests("/v1/customers").len(), 1);
    let intents = ctx.stub.requests("/v1/setup_intents");
    assert_eq!(intents.len(), 2);
    assert_eq!(intents[1].field("customer"), Some(customer.as_str()));
    assert_ne!(intents[1].idempotency_key, intents[0].idempotency_key);
    // Another kind of method, or another field: 422, nothing asked of Stripe.
    for bad in [json!({ "type": "sepa_debit" }), json!({ "kind": "card" })] {
        add_card(api, &account, bad)
            .await
            .expect_error(422, "invalid_request");
    }
    assert_eq!(ctx.stub.requests("/v1/setup_intents").len(), 2);
    // Viewers and editors do not manage cards.
    api.post(
        "/v1/billing/payment-methods",
        &api.editor(&account),
        None,
        json!({}),
    )
    .await
    .expect_error(403, "forbidden");

    // The browser confirms the SetupIntents: two cards are saved.
    let visa = ctx.stub.save_card(&customer, "visa", "4242");
    let mastercard = ctx.stub.save_card(&customer, "mastercard", "4444");
    let listed = payment_methods(api, &account).await;
    assert_eq!(
        card_ids(&listed),
        [(visa.clone(), false), (mastercard.clone(), false)]
    );
    assert_eq!(
        listed["saved_cards"][0],
        json!({ "id": visa, "brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030, "default": false })
    );
    assert_eq!(listed["items"], before["items"], "the methods stay listed");

    // The mastercard becomes the default.
    let changed = make_default(api, &account, &mastercard).await;
    let changed = changed.expect(200).clone();
    assert_eq!(changed["change"], "default");
    assert_eq!(
        card_ids(&changed),
        [(visa.clone(), false), (mastercard.clone(), true)]
    );
    let updates = ctx.stub.requests(&format!("/v1/customers/{customer}"));
    let update = updates.iter().find(|s| s.method == "POST").unwrap();
    assert_eq!(
        update.field("invoice_settings[default_payment_method]"),
        Some(mastercard.as_str())
    );
    assert_eq!(
        card_ids(&payment_methods(api, &account).await),
        [(visa.clone(), false), (mastercard.clone(), true)]
    );

    // Another tenant's card cannot be touched: 404, and Stripe is asked
    // to change nothing.
    let other = starter_account(api).await;
    add_card(api, &other, json!({})).await.expect(201);
    let theirs = ctx
        .stub
        .save_card(&customer_of(ctx, &other), "amex", "0005");
    let changes_before = ctx
        .stub
        .all_requests()
        .iter()
        .filter(|s| s.method != "GET")
        .count();
    make_default(api, &account, &theirs)
        .await
        .expect_error(404, "not_found");
    detach(api, &account, &theirs)
        .await
        .expect_error(404, "not_found");
    // Nor one Stripe does not know, nor one of an account without a
    // customer; an id that is not Stripe's is 422.
    make_default(api, &account, "pm_unknown")
        .await
        .expect_error(404, "not_found");
    let stranger = starter_account(api).await;
    detach(api, &stranger, &visa)
        .await
        .expect_error(404, "not_found");
    detach(api, &account, "pm%20x")
        .await
        .expect_error(422, "invalid_request");
    let changes_after = ctx
        .stub
        .all_requests()
        .iter()
        .filter(|s| s.method != "GET")
        .count();
    assert_eq!(
        changes_after, changes_before,
        "no change was sent to Stripe"
    );
    assert_eq!(
        card_ids(&payment_methods(api, &other).await),
        [(theirs.clone(), false)]
    );

    // Detaching the visa leaves the default.
    let left = detach(api, &account, &visa).await;
    let left = left.expect(200).clone();
    assert_eq!(left["change"], "detached");
    assert_eq!(card_ids(&left), [(mastercard.clone(), true)]);
    assert_eq!(
        ctx.stub
            .requests(&format!("/v1/payment_methods/{visa}/detach"))
            .len(),
        1
    );
    assert_eq!(
        card_ids(&payment_methods(api, &account).await),
        [(mastercard.clone(), true)]
    );

    // A Stripe subscription of the account uses the same customer.
    price_the_starter_plan(api).await;
    let created = api
        .post(
            "/v1/billing/subscriptions/create",
            &api.owner(&account),
            Some(&key()),
            json!({ "plan": "starter", "method": "stripe" }),
        )
        .await;
    created.expect(201);
    let subs = ctx.stub.requests("/v1/subscriptions");
    assert_eq!(subs.len(), 1);
    assert_eq!(subs[0].field("customer"), Some(customer.as_str()));
    assert_eq!(
        ctx.stub
            .requests("/v1/customers")
            .iter()
            .filter(|s| s.idempotency_key == format!("customer-{account}"))
            .count(),
        1,
        "the customer was created once"
    );
}
with_stripe!(a_saved_card_is_set_up_listed_made_default_and_detached);

/// A purchase-shaped view of an off-session charge the stub saw (what
/// `intent_succeeded` reads).
fn charge_intent(charge: &Seen) -> Value {
    json!({
        "payment": {
            "gateway_ref": id_for("pi", &charge.idempotency_key),
            "id": charge.field("metadata[payment_id]"),
            "account_id": charge.field("metadata[account_id]"),
        },
        "invoice": { "id": charge.field("metadata[invoice_id]") },
    })
}

/// Waits until the account's automatic top-up shows `check`.
async fn top_up_until(api: &Api, account: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let got = api
            .get(
                &format!("/v1/accounts/{account}/auto-top-up"),
                &api.owner(account),
            )
            .await
            .expect(200)
            .clone();
        if check(&got) {
            return got;
        }
        assert!(std::time::Instant::now() < deadline, "auto top-up: {got}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn an_automatic_top_up_charges_the_saved_card_off_session_and_turns_off_after_three_failures(
    ctx: &Ctx,
) {
    let api = &ctx.api;
    let account = starter_account(api).await;
    add_card(api, &account, json!({})).await.expect(201);
    let customer = customer_of(ctx, &account);
    let card = ctx.stub.save_card(&customer, "visa", "4242");
    api.grant(&account, 100).await.expect(201);
    let set = api
        .put(
            &format!("/v1/accounts/{account}/auto-top-up"),
            &api.owner(&account),
            json!({ "threshold": 50, "package": "pro", "method": "stripe" }),
        )
        .await;
    let body = set.expect(200);
    assert_eq!(
        (body["enabled"].as_bool(), body["daily_limit"].as_i64()),
        (Some(true), Some(3))
    );
    // 100 → 40: the crossing; the card is charged off-session.
    for _ in 0..6 {
        api.deduct(&account, json!({ "operation": "clustering" }))
            .await
            .expect(201);
    }
    top_up_until(api, &account, |t| t["triggered_today"] == 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let charge = loop {
        let charges: Vec<Seen> = ctx
            .stub
            .requests("/v1/payment_intents")
            .into_iter()
            .filter(|s| s.field("off_session") == Some("true"))
            .collect();
        if let Some(c) = charges.first() {
            assert_eq!(charges.len(), 1, "one charge per crossing");
            break c.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no off-session charge"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(charge.field("confirm"), Some("true"));
    assert_eq!(charge.field("customer"), Some(customer.as_str()));
    assert_eq!(charge.field("payment_method"), Some(card.as_str()));
    // 29.00 + 19 % tax.
    assert_eq!(charge.field("amount"), Some("3451"));
    // Stripe's webhook settles it: the package's credits arrive.
    let intent = charge_intent(&charge);
    let paid = intent_succeeded(&format!("evt_{}", uuid::Uuid::new_v4().simple()), &intent);
    assert_eq!(deliver(api, &paid).await.expect(200)["handled"], true);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while api.balance_now(&account).await != 40 + 2_000 {
        assert!(std::time::Instant::now() < deadline, "the top-up's credits");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A declined card: each crossing fails; the third turns it off.
    let declined = ctx.stub.save_card(&customer, "visa", "0002");
    api.post_empty(
        &format!("/v1/billing/payment-methods/{declined}/default"),
        &api.owner(&account),
        None,
    )
    .await
    .expect(200);
    api.put(
        &format!("/v1/accounts/{account}/auto-top-up"),
        &api.owner(&account),
        json!({ "threshold": 2_000, "package": "pro", "method": "stripe", "daily_limit": 10 }),
    )
    .await
    .expect(200);
    for failures in 1..=3 {
        // Down across the threshold (2,040 → 1,990), then back above.
        for _ in 0..5 {
            api.deduct(&account, json!({ "operation": "clustering" }))
                .await
                .expect(201);
        }
        top_up_until(api, &account, |t| t["consecutive_failures"] == failures).await;
        api.grant(&account, 50).await.expect(201);
    }
    let off = top_up_until(api, &account, |t| t["enabled"] == false).await;
    assert_eq!(off["consecutive_failures"], 3);
}
with_stripe!(
    an_automatic_top_up_charges_the_saved_card_off_session_and_turns_off_after_three_failures
);

// ---------------------------------------------------------------------------
// Sync after a missed webhook
// ---------------------------------------------------------------------------

async fn sync(api: &Api, body: Value) -> common::Resp {
    api.post(
        "/v1/admin/billing/stripe/sync",
        &api.developer(),
        None,
        body,
    )
    .await
}

async fn a_sync_applies_a_missed_subscription_webhook_once(ctx: &Ctx) {
    let api = &ctx.api;
    price_the_starter_plan(api).await;
    let account = api.open_account().await;
    let created = stripe_subscription(ctx, &account).await;
    let stripe_id = created["stripe_subscription_id"].as_str().unwrap();

    // Nothing is missing yet: Stripe's invoice is open.
    let nothing = sync(api, json!({ "subscription_id": stripe_id })).await;
    let nothing = nothing.expect(200).clone();
    assert_eq!(nothing["object"], "subscription");
    assert_eq!(nothing["status"], "incomplete");
    assert_eq!(nothing["applied"], json!([]));

    // Stripe collects the first invoice; its invoice.paid never arrives.
    let stripe_invoice = ctx.stub.pay_latest_invoice(stripe_id);
    let synced = sync(api, json!({ "subscription_id": stripe_id })).await;
    let synced = synced.expect(200).clone();
    assert_eq!(synced["applied"], json!(["invoice.paid"]), "{synced}");
    assert_eq!(synced["status"], "active");
    assert_eq!(subscription(api, &account).await["status"], "active");
    assert_eq!(api.balance_now(&account).await, 1_000);
    let invoice_id = created["open_invoices"][0]["id"].as_str().unwrap();
    assert_eq!(
        api.invoice_now(&account, invoice_id).await["status"],
        "paid"
    );
    let read = changes_seen(ctx, stripe_id);
    assert!(read.iter().all(|s| s.method == "GET"), "{read:?}");
    assert_eq!(
        read.last().unwrap().fields("expand[]"),
        ["latest_invoice.confirmation_secret"]
    );

    // Twice: nothing more.
    let head = api.head().await;
    let again = sync(api, json!({ "subscription_id": stripe_id })).await;
    assert_eq!(again.expect(200)["applied"], json!([]));
    assert_eq!(api.head().await, head, "nothing was written");
    assert_eq!(api.balance_now(&account).await, 1_000);

    // The webhook arriving late changes nothing either.
    let late = event(
        "evt_late_invoice_paid",
        "invoice.paid",
        stripe_invoice.clone(),
    );
    deliver(api, &late).await.expect(200);
    assert_eq!(api.balance_now(&account).await, 1_000);

    // A cancel made in Stripe's dashboard, its webhook missed.
    ctx.stub
        .objects
        .lock()
        .unwrap()
        .subscriptions
        .get_mut(stripe_id)
        .unwrap()["cancel_at_period_end"] = json!(true);
    let canceled = sync(api, json!({ "subscription_id": stripe_id })).await;
    assert_eq!(
        canceled.expect(200)["applied"],
        json!(["customer.subscription.updated"])
    );
    assert_eq!(
        subscription(api, &account).await["cancel_at_period_end"],
        true
    );
    let again = sync(api, json!({ "subscription_id": stripe_id })).await;
    assert_eq!(again.expect(200)["applied"], json!([]));

    // Only staff sync; exactly one id; a Stripe id; Stripe's 404 is 502;
    // a Stripe object that is not ours is 404.
    api.post(
        "/v1/admin/billing/stripe/sync",
        &api.owner(&account),
        None,
        json!({ "subscription_id": stripe_id }),
    )
    .await
    .expect_error(403, "forbidden");
    for bad in [
        json!({}),
        json!({ "subscription_id": stripe_id, "payment_intent_id": "pi_1" }),
        json!({ "subscription_id": "sub/../x" }),
        json!({ "invoice_id": "in_1" }),
    ] {
        sync(api, bad).await.expect_error(422, "invalid_request");
    }
    sync(api, json!({ "subscription_id": "sub_unknown" }))
        .await
        .expect(502);
    let theirs = ctx
        .stub
        .objects
        .lock()
        .unwrap()
        .subscriptions
        .get(stripe_id)
        .cloned()
        .unwrap();
    let mut stranger = theirs;
    stranger["id"] = json!("sub_not_ours");
    ctx.stub
        .objects
        .lock()
        .unwrap()
        .subscriptions
        .insert("sub_not_ours".into(), stranger);
    sync(api, json!({ "subscription_id": "sub_not_ours" }))
        .await
        .expect_error(404, "not_found");
}
with_stripe!(a_sync_applies_a_missed_subscription_webhook_once);

async fn a_sync_applies_a_missed_payment_intent_webhook_once(ctx: &Ctx) {
    let api = &ctx.api;
    let account = starter_account(api).await;
    let bought = stripe_purchase(api, &account).await;
    let intent = bought["payment"]["gateway_ref"].as_str().unwrap();
    let invoice_id = bought["invoice"]["id"].as_str().unwrap();

    let pending = sync(api, json!({ "payment_intent_id": intent })).await;
    let pending = pending.expect(200).clone();
    assert_eq!(pending["object"], "payment_intent");
    assert_eq!(pending["status"], "requires_payment_method");
    assert_eq!(pending["applied"], json!([]));
    assert_eq!(api.balance_now(&account).await, 0);

    // The payment succeeds at Stripe; its webhook never arrives.
    ctx.stub.succeed_intent(intent);
    let synced = sync(api, json!({ "payment_intent_id": intent })).await;
    assert_eq!(
        synced.expect(200)["applied"],
        json!(["payment_intent.succeeded"]),
        "{}",
        synced.text
    );
    assert_eq!(api.balance_now(&account).await, 2_000);
    assert_eq!(
        api.invoice_now(&account, invoice_id).await["status"],
        "paid"
    );
    let row = payment_row(api, bought["payment"]["id"].as_str().unwrap(), &account).await;
    assert_eq!(row["status"], "succeeded");

    // Twice: nothing more; nor the webhook arriving late.
    let head = api.head().await;
    let again = sync(api, json!({ "payment_intent_id": intent })).await;
    assert_eq!(again.expect(200)["applied"], json!([]));
    assert_eq!(api.head().await, head, "nothing was written");
    deliver(api, &intent_succeeded("evt_late_pi", &bought))
        .await
        .expect(200);
    assert_eq!(api.balance_now(&account).await, 2_000, "granted once");
}
with_stripe!(a_sync_applies_a_missed_payment_intent_webhook_once);

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
        // Well past the 300 s tolerance either way: the server's clock may
        // tick between the test's `now` and its check.
        ("stale", Some(signature(&body, WEBHOOK_SECRET, now - 360))),
        ("future", Some(signature(&body, WEBHOOK_SECRET, now + 360))),
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
    // No saved cards without Stripe, and none can be saved.
    assert_eq!(
        payment_methods(api, &account).await["saved_cards"],
        json!([])
    );
    add_card(api, &account, json!({}))
        .await
        .expect_error(503, "unavailable");
    detach(api, &account, "pm_1")
        .await
        .expect_error(503, "unavailable");
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
