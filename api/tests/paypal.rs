//! PayPal through the real router over real HTTP, on PostgreSQL and SQLite
//! (docs/adr/0018-paypal.md), against a local stub of PayPal's REST API
//! that checks every request it receives (the client credentials, the
//! bearer token it issued, `PayPal-Request-Id`s, JSON bodies, amounts) and
//! verifies webhooks only for the signature the test computed as PayPal
//! would: a PayPal credit purchase answers the order's approval link;
//! `CHECKOUT.ORDER.APPROVED` captures it and the capture settles the invoice
//! once, whatever is redelivered; a pending capture waits for
//! `PAYMENT.CAPTURE.COMPLETED`; `PAYMENT.CAPTURE.DENIED` fails the payment;
//! unverified deliveries are 400 and apply nothing; a wrong amount or
//! currency is refused and recorded, never settled; staff refunds go to
//! PayPal's refund endpoint and `PAYMENT.CAPTURE.REFUNDED` records each
//! refund once; the token is fetched once and replaced when PayPal refuses
//! it; and without credentials PayPal is unavailable.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use common::{key, Api, Backend, Server};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const CLIENT_ID: &str = "paypal-stub-client-id";
const CLIENT_SECRET: &str = "paypal-stub-client-secret-0123456789";
const WEBHOOK_ID: &str = "8PT597110X687430LKGECATA";
const AUTH_ALGO: &str = "SHA256withRSA";
const CERT_URL: &str =
    "https://api.sandbox.paypal.com/v1/notifications/certs/CERT-360caa42-fca2a594-a5cafa77";

// ---------------------------------------------------------------------------
// The PayPal stub
// ---------------------------------------------------------------------------

/// One request the stub received (the token requests apart).
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    request_id: Option<String>,
    body: Value,
    raw: String,
}

#[derive(Default)]
struct StubState {
    seen: Vec<Seen>,
    /// Tokens issued, in order; those before `revoked_before` are refused.
    tokens: Vec<String>,
    revoked_before: usize,
    /// First answers by (path, PayPal-Request-Id): PayPal's idempotency.
    answers: HashMap<(String, String), Value>,
    /// Orders by id, as PayPal would show them.
    orders: HashMap<String, Value>,
    /// The status captures get (`COMPLETED` when unset).
    capture_status: Option<String>,
    /// Verification calls answer 500 (PayPal down).
    verify_down: bool,
}

#[derive(Clone, Default)]
struct Stub {
    state: Arc<Mutex<StubState>>,
    base: Arc<Mutex<String>>,
}

impl Stub {
    fn requests(&self, method: &str, path: &str) -> Vec<Seen> {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.method == method && s.path == path)
            .cloned()
            .collect()
    }

    fn token_count(&self) -> usize {
        self.state.lock().unwrap().tokens.len()
    }

    /// PayPal forgets every token issued so far.
    fn revoke_tokens(&self) {
        let mut st = self.state.lock().unwrap();
        st.revoked_before = st.tokens.len();
    }

    fn set_capture_status(&self, status: &str) {
        self.state.lock().unwrap().capture_status = Some(status.to_owned());
    }

    fn set_verify_down(&self, down: bool) {
        self.state.lock().unwrap().verify_down = down;
    }
}

/// A stable PayPal-like id (upper-case letters and digits) for `key`.
fn id_for(prefix: &str, key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    format!("{prefix}{}", hex::encode(digest)[..16].to_uppercase())
}

/// Base64 (standard alphabet, padded), for the HTTP Basic credentials the
/// stub expects.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The signature PayPal's stub vouches for: over the webhook id, the
/// transmission id and the event (as parsed, so key order does not
/// matter). The real PayPal signs with its certificate; what matters here
/// is that only the test's own deliveries verify.
fn sign(transmission_id: &str, event: &Value) -> String {
    hex::encode(Sha256::digest(
        format!("{WEBHOOK_ID}|{transmission_id}|{event}").as_bytes(),
    ))
}

fn error(status: StatusCode, name: &str, issue: Option<&str>) -> Response {
    let mut body = json!({ "name": name, "message": format!("stub: {name}"), "debug_id": "stub" });
    if let Some(issue) = issue {
        body["details"] = json!([{ "issue": issue }]);
    }
    (status, Json(body)).into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// `POST /v1/oauth2/token`: client credentials over HTTP Basic.
fn token(stub: &Stub, headers: &HeaderMap, body: &str) -> Response {
    let expected = format!(
        "Basic {}",
        base64(format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes())
    );
    if header(headers, "authorization") != expected {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_client", "error_description": "Client Authentication failed" })),
        )
            .into_response();
    }
    if header(headers, "content-type") != "application/x-www-form-urlencoded"
        || body != "grant_type=client_credentials"
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "unsupported_grant_type", "error_description": "grant_type is required" })),
        )
            .into_response();
    }
    let mut st = stub.state.lock().unwrap();
    let token = format!("A21AA-stub-token-{}", st.tokens.len() + 1);
    st.tokens.push(token.clone());
    Json(json!({
        "scope": "https://uri.paypal.com/services/payments/payment",
        "access_token": token,
        "token_type": "Bearer",
        "app_id": "APP-80W284485P519543T",
        "expires_in": 32_400,
        "nonce": "2026-03-03T12:00:00Zstub",
    }))
    .into_response()
}

/// PayPal's REST API as far as the ledger uses it. A request without a
/// token the stub issued, without a `PayPal-Request-Id` where PayPal's
/// idempotency matters, or with a body PayPal would refuse is answered as
/// PayPal answers it, so the ledger cannot pass by accident.
async fn stub_handler(
    State(stub): State<Stub>,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    raw: String,
) -> Response {
    let path = uri.path().to_owned();
    if method == Method::POST && path == "/v1/oauth2/token" {
        return token(&stub, &headers, &raw);
    }
    let base = stub.base.lock().unwrap().clone();
    let mut st = stub.state.lock().unwrap();
    let valid_token = header(&headers, "authorization")
        .strip_prefix("Bearer ")
        .and_then(|t| st.tokens.iter().position(|x| x == t))
        .is_some_and(|i| i >= st.revoked_before);
    if !valid_token {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "invalid_token", "error_description": "Access Token not found in cache" })),
        )
            .into_response();
    }
    let request_id = headers
        .get("paypal-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = serde_json::from_str(&raw).unwrap_or(Value::Null);
    st.seen.push(Seen {
        method: method.to_string(),
        path: path.clone(),
        request_id: request_id.clone(),
        body: body.clone(),
        raw: raw.clone(),
    });
    if method == Method::POST && header(&headers, "content-type") != "application/json" {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UNSUPPORTED_MEDIA_TYPE",
            None,
        );
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let creates = method == Method::POST && path != "/v1/notifications/verify-webhook-signature";
    if creates {
        let Some(rid) = &request_id else {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST",
                Some("PAYPAL_REQUEST_ID_REQUIRED"),
            );
        };
        if let Some(first) = st.answers.get(&(path.clone(), rid.clone())) {
            return (StatusCode::OK, Json(first.clone())).into_response();
        }
    }
    let answer = match (method.as_str(), segments.as_slice()) {
        ("POST", ["v2", "checkout", "orders"]) => {
            let unit = &body["purchase_units"][0];
            let well_formed = body["intent"] == "CAPTURE"
                && body["purchase_units"].as_array().map(Vec::len) == Some(1)
                && unit["custom_id"].is_string()
                && unit["invoice_id"].is_string()
                && unit["amount"]["currency_code"].is_string()
                && unit["amount"]["value"].is_string();
            if !well_formed {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    Some("MISSING_REQUIRED_PARAMETER"),
                );
            }
            let id = id_for("O", request_id.as_deref().unwrap_or_default());
            let order = json!({
                "id": id,
                "intent": "CAPTURE",
                "status": "CREATED",
                "purchase_units": body["purchase_units"],
                "links": [
                    { "href": format!("{base}/v2/checkout/orders/{id}"), "rel": "self", "method": "GET" },
                    { "href": format!("https://www.sandbox.paypal.com/checkoutnow?token={id}"), "rel": "approve", "method": "GET" },
                    { "href": format!("{base}/v2/checkout/orders/{id}/capture"), "rel": "capture", "method": "POST" },
                ],
            });
            st.orders.insert(id, order.clone());
            order
        }
        ("GET", ["v2", "checkout", "orders", id]) => match st.orders.get(*id) {
            Some(order) => return Json(order.clone()).into_response(),
            None => {
                return error(
                    StatusCode::NOT_FOUND,
                    "RESOURCE_NOT_FOUND",
                    Some("INVALID_RESOURCE_ID"),
                )
            }
        },
        ("POST", ["v2", "checkout", "orders", id, "capture"]) => {
            let capture_status = st
                .capture_status
                .clone()
                .unwrap_or_else(|| "COMPLETED".into());
            let Some(order) = st.orders.get_mut(*id) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "RESOURCE_NOT_FOUND",
                    Some("INVALID_RESOURCE_ID"),
                );
            };
            if order["purchase_units"][0]["payments"].is_object() {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "UNPROCESSABLE_ENTITY",
                    Some("ORDER_ALREADY_CAPTURED"),
                );
            }
            let unit = order["purchase_units"][0].clone();
            let capture_id = id_for("C", id);
            order["status"] = json!("COMPLETED");
            order["purchase_units"][0]["payments"] = json!({ "captures": [{
                "id": capture_id,
                "status": capture_status,
                "amount": unit["amount"],
                "custom_id": unit["custom_id"],
                "invoice_id": unit["invoice_id"],
                "final_capture": true,
            }]});
            order.clone()
        }
        ("POST", ["v2", "payments", "captures", capture, "refund"]) => {
            let known = st
                .orders
                .values()
                .any(|o| o["purchase_units"][0]["payments"]["captures"][0]["id"] == json!(capture));
            if !known {
                return error(
                    StatusCode::NOT_FOUND,
                    "RESOURCE_NOT_FOUND",
                    Some("INVALID_RESOURCE_ID"),
                );
            }
            if !body["amount"]["value"].is_string() || !body["amount"]["currency_code"].is_string()
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    Some("MISSING_REQUIRED_PARAMETER"),
                );
            }
            let id = id_for("R", request_id.as_deref().unwrap_or_default());
            json!({
                "id": id,
                "status": "COMPLETED",
                "amount": body["amount"],
                "custom_id": body["custom_id"],
                "links": [
                    { "href": format!("{base}/v2/payments/refunds/{id}"), "rel": "self", "method": "GET" },
                    { "href": format!("{base}/v2/payments/captures/{capture}"), "rel": "up", "method": "GET" },
                ],
            })
        }
        ("POST", ["v1", "notifications", "verify-webhook-signature"]) => {
            if st.verify_down {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_SERVICE_ERROR",
                    None,
                );
            }
            let text = |f: &str| body[f].as_str().unwrap_or("").to_owned();
            let verified = text("webhook_id") == WEBHOOK_ID
                && text("auth_algo") == AUTH_ALGO
                && text("cert_url") == CERT_URL
                && !text("transmission_time").is_empty()
                && body["webhook_event"].is_object()
                && text("transmission_sig")
                    == sign(&text("transmission_id"), &body["webhook_event"]);
            return Json(json!({
                "verification_status": if verified { "SUCCESS" } else { "FAILURE" }
            }))
            .into_response();
        }
        _ => return error(StatusCode::NOT_FOUND, "RESOURCE_NOT_FOUND", None),
    };
    if let Some(rid) = request_id {
        st.answers.insert((path, rid), answer.clone());
    }
    (StatusCode::CREATED, Json(answer)).into_response()
}

/// Starts the stub on an ephemeral port; returns it and its base URL.
async fn start_stub() -> (Stub, String) {
    let stub = Stub::default();
    let app = Router::new()
        .fallback(stub_handler)
        .with_state(stub.clone());
    let base = common::serve_local(app).await;
    *stub.base.lock().unwrap() = base.clone();
    (stub, base)
}

/// What a test gets: the API (with PayPal configured against the stub),
/// the stub and the server's store.
struct Ctx {
    api: Arc<Api>,
    stub: Stub,
    store: store::Store,
}

/// Runs `body` against a server with PayPal configured (client id and
/// secret, webhook id, API base = the stub) on `backend`.
async fn run<F, Fut>(backend: Backend, body: F)
where
    F: FnOnce(Ctx) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (stub, base) = start_stub().await;
    let server = Server::start_with(
        backend,
        &[
            "--paypal-client-id",
            CLIENT_ID,
            "--paypal-client-secret",
            CLIENT_SECRET,
            "--paypal-webhook-id",
            WEBHOOK_ID,
            "--paypal-api-base",
            &base,
        ],
    )
    .await;
    let body = body(Ctx {
        api: server.api.clone(),
        stub,
        store: server.db().store.clone(),
    });
    server.run_and_stop(body).await;
}

macro_rules! with_paypal {
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

fn evt() -> String {
    format!("WH-{}", uuid::Uuid::new_v4().simple()).to_uppercase()
}

fn event(id: &str, kind: &str, resource_type: &str, resource: Value) -> String {
    json!({
        "id": id,
        "event_version": "1.0",
        "create_time": chrono::Utc::now().to_rfc3339(),
        "resource_type": resource_type,
        "event_type": kind,
        "summary": format!("stub {kind}"),
        "resource": resource,
    })
    .to_string()
}

/// Posts `body` to the PayPal webhook with the given headers.
async fn post_webhook(api: &Api, body: &str, headers: &[(&str, String)]) -> common::Resp {
    let mut req = api
        .http
        .post(api.url("/v1/billing/webhooks/paypal"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (name, value) in headers {
        req = req.header(*name, value);
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

/// The transmission headers of a delivery of `signed` (the event PayPal
/// signed, which may differ from what is sent) with `sig`.
fn transmission(signed: &str, forged: bool) -> Vec<(&'static str, String)> {
    let id = uuid::Uuid::new_v4().to_string();
    let event: Value = serde_json::from_str(signed).unwrap();
    let sig = if forged {
        "forged-signature".to_owned()
    } else {
        sign(&id, &event)
    };
    vec![
        ("paypal-auth-algo", AUTH_ALGO.to_owned()),
        ("paypal-cert-url", CERT_URL.to_owned()),
        ("paypal-transmission-id", id),
        ("paypal-transmission-sig", sig),
        ("paypal-transmission-time", chrono::Utc::now().to_rfc3339()),
    ]
}

/// Delivers `body` as PayPal would: verified.
async fn deliver(api: &Api, body: &str) -> common::Resp {
    post_webhook(api, body, &transmission(body, false)).await
}

/// A starter-plan account (credit top-ups allowed) with a 19 % tax rate, and
/// PayPal enabled for every country.
async fn paypal_account(api: &Api) -> String {
    let id = api.open_account_on(json!({ "plan": "starter" })).await;
    api.patch(
        &format!("/v1/accounts/{id}"),
        &api.developer(),
        json!({ "tax_rate": "19" }),
    )
    .await
    .expect(200);
    api.put(
        "/v1/admin/payment-method-configs/*/paypal",
        &api.developer(),
        json!({ "enabled": true, "display_name": "PayPal", "sort_order": 40 }),
    )
    .await
    .expect(200);
    id
}

/// Whether `GET /v1/billing/payment-methods` reports PayPal available.
async fn paypal_offered(api: &Api, account: &str) -> bool {
    let list = api
        .get("/v1/billing/payment-methods", &api.owner(account))
        .await
        .expect(200)
        .clone();
    let items = list["items"].as_array().expect("items").clone();
    let paypal = items
        .iter()
        .find(|m| m["method"] == "paypal")
        .unwrap_or_else(|| panic!("paypal is listed: {list}"));
    paypal["available"]
        .as_bool()
        .expect("available is a boolean")
}

async fn purchase_with(api: &Api, account: &str, idem: &str) -> common::Resp {
    api.post(
        "/v1/billing/credits/purchase",
        &api.owner(account),
        Some(idem),
        json!({ "package": "pro", "method": "paypal" }),
    )
    .await
}

/// Buys the `pro` package (2,000 credits, 29.00 + 19 % = 34.51 USD) with
/// PayPal.
async fn purchase(api: &Api, account: &str) -> Value {
    purchase_with(api, account, &key())
        .await
        .expect(201)
        .clone()
}

/// The order of a purchase as PayPal's `CHECKOUT.ORDER.APPROVED` shows it,
/// with the given amount.
fn approved(purchase: &Value, value: &str, currency: &str) -> String {
    event(
        &evt(),
        "CHECKOUT.ORDER.APPROVED",
        "checkout-order",
        json!({
            "id": purchase["order_id"],
            "intent": "CAPTURE",
            "status": "APPROVED",
            "purchase_units": [{
                "reference_id": purchase["payment"]["id"],
                "custom_id": purchase["invoice"]["id"],
                "invoice_id": purchase["invoice"]["number"],
                "amount": { "currency_code": currency, "value": value },
            }],
            "payer": { "email_address": "buyer@example.com", "payer_id": "QYR5Z8XDVJNXQ" },
        }),
    )
}

/// The capture PayPal makes of a purchase's order.
fn capture_id(purchase: &Value) -> String {
    id_for("C", purchase["order_id"].as_str().unwrap())
}

/// A `PAYMENT.CAPTURE.*` event of a purchase's capture.
fn capture_event(
    kind: &str,
    purchase: &Value,
    status: &str,
    value: &str,
    currency: &str,
) -> String {
    event(
        &evt(),
        kind,
        "capture",
        json!({
            "id": capture_id(purchase),
            "status": status,
            "amount": { "currency_code": currency, "value": value },
            "custom_id": purchase["invoice"]["id"],
            "invoice_id": purchase["invoice"]["number"],
            "final_capture": true,
            "supplementary_data": { "related_ids": { "order_id": purchase["order_id"] } },
        }),
    )
}

/// A `PAYMENT.CAPTURE.REFUNDED` event: refund `refund` of `value` USD of
/// the purchase's capture, with `custom_id`.
fn refunded_event(purchase: &Value, refund: &str, value: &str, custom_id: &Value) -> String {
    let capture = capture_id(purchase);
    event(
        &evt(),
        "PAYMENT.CAPTURE.REFUNDED",
        "refund",
        json!({
            "id": refund,
            "status": "COMPLETED",
            "amount": { "currency_code": "USD", "value": value },
            "custom_id": custom_id,
            "links": [
                { "href": format!("https://api.sandbox.paypal.com/v2/payments/refunds/{refund}"), "rel": "self", "method": "GET" },
                { "href": format!("https://api.sandbox.paypal.com/v2/payments/captures/{capture}"), "rel": "up", "method": "GET" },
            ],
        }),
    )
}

async fn payment_row(api: &Api, id: &str, account: &str) -> Value {
    let p = api.head().await;
    api.items(
        "/v1/admin/payments",
        p,
        &format!("&account_id={account}&limit=500"),
    )
    .await
    .into_iter()
    .find(|i| i["id"] == id)
    .unwrap_or_else(|| panic!("payment {id} is listed"))
}

async fn refund(api: &Api, payment_id: &str, idem: &str, body: Value) -> common::Resp {
    api.post(
        &format!("/v1/admin/payments/{payment_id}/refund"),
        &api.developer(),
        Some(idem),
        body,
    )
    .await
}

/// A PayPal purchase approved and captured (PayPal completes the capture at
/// once); returns the purchase.
async fn paid_purchase(api: &Api, account: &str) -> Value {
    let bought = purchase(api, account).await;
    let done = deliver(api, &approved(&bought, "34.51", "USD")).await;
    assert_eq!(done.expect(200)["handled"], true, "{}", done.text);
    assert_eq!(api.balance_now(account).await, 2_000);
    bought
}

// ---------------------------------------------------------------------------
// Purchase, approval, capture, settlement
// ---------------------------------------------------------------------------

async fn a_paypal_purchase_is_approved_captured_and_credited_once(ctx: &Ctx) {
    let api = &ctx.api;
    let account = paypal_account(api).await;
    assert!(
        paypal_offered(api, &account).await,
        "credentials make paypal available"
    );
    let idem = key();
    let bought = purchase_with(api, &account, &idem)
        .await
        .expect(201)
        .clone();
    let payment = &bought["payment"];
    let payment_id = payment["id"].as_str().unwrap();
    let invoice_id = bought["invoice"]["id"].as_str().unwrap();
    let number = bought["invoice"]["number"].as_str().unwrap();
    let order_id = bought["order_id"].as_str().unwrap();
    assert_eq!(bought["invoice"]["total"], "34.51");
    assert_eq!(payment["method"], "paypal");
    assert_eq!(payment["gateway"], "paypal");
    assert_eq!(payment["status"], "processing");
    assert_eq!(payment["gateway_ref"], order_id);
    assert_eq!(
        bought["approval_url"],
        format!("https://www.sandbox.paypal.com/checkoutnow?token={order_id}")
    );
    assert!(bought.get("client_secret").is_none(), "{bought}");

    // PayPal saw one order: intent CAPTURE, our invoice as custom_id and
    // invoice_id, the exact amount, a request id derived from the payment.
    let orders = ctx.stub.requests("POST", "/v2/checkout/orders");
    assert_eq!(orders.len(), 1, "{orders:?}");
    let order = &orders[0];
    assert_eq!(
        order.request_id.as_deref(),
        Some(format!("order-{payment_id}").as_str())
    );
    assert_eq!(order.body["intent"], "CAPTURE");
    let unit = &order.body["purchase_units"][0];
    assert_eq!(unit["custom_id"], invoice_id);
    assert_eq!(unit["invoice_id"], number);
    assert_eq!(unit["reference_id"], payment_id);
    assert_eq!(
        unit["amount"],
        json!({ "currency_code": "USD", "value": "34.51" })
    );

    // A retry with the same key replays: the same invoice, payment, order
    // and link (PayPal answers the same request id alike).
    let again = purchase_with(api, &account, &idem).await;
    assert_eq!(again.expect(201), &bought);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    let orders = ctx.stub.requests("POST", "/v2/checkout/orders");
    assert_eq!(orders.len(), 2);
    assert_eq!(orders[1].request_id, orders[0].request_id);

    // Nothing is granted, and staff neither approve nor refund it, before
    // PayPal says the money moved.
    assert_eq!(api.balance_now(&account).await, 0);
    assert_eq!(
        api.invoice_now(&account, invoice_id).await["status"],
        "pending"
    );
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

    // The payer approves at PayPal: the order is captured, and PayPal
    // completing the capture at once settles the invoice.
    let body = approved(&bought, "34.51", "USD");
    let first = deliver(api, &body).await;
    let first = first.expect(200);
    assert_eq!(first["received"], true);
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["handled"], true);
    assert!(first["refused"].is_null(), "{first}");
    let captures = ctx
        .stub
        .requests("POST", &format!("/v2/checkout/orders/{order_id}/capture"));
    assert_eq!(captures.len(), 1, "{captures:?}");
    assert_eq!(
        captures[0].request_id.as_deref(),
        Some(format!("capture-{payment_id}").as_str())
    );
    // PayPal was asked to verify the delivery with our webhook id and the
    // event exactly as it came in.
    let verifications = ctx
        .stub
        .requests("POST", "/v1/notifications/verify-webhook-signature");
    assert_eq!(verifications.len(), 1);
    assert_eq!(verifications[0].body["webhook_id"], WEBHOOK_ID);
    assert!(
        verifications[0]
            .raw
            .contains(&format!("\"webhook_event\":{body}")),
        "{}",
        verifications[0].raw
    );

    assert_eq!(api.balance_now(&account).await, 2_000, "granted once");
    let invoice = api.invoice_now(&account, invoice_id).await;
    assert_eq!(invoice["status"], "paid");
    let row = payment_row(api, payment_id, &account).await;
    assert_eq!(row["status"], "succeeded");
    assert_eq!(row["method"], "paypal");

    // The same delivery again: a no-op, PayPal not asked to capture again.
    assert_eq!(
        deliver(api, &body).await.expect(200),
        &json!({ "received": true, "duplicate": true })
    );
    assert_eq!(
        ctx.stub
            .requests("POST", &format!("/v2/checkout/orders/{order_id}/capture"))
            .len(),
        1
    );

    // PAYMENT.CAPTURE.COMPLETED follows: already settled, nothing more;
    // delivered again, a duplicate.
    let completed = capture_event(
        "PAYMENT.CAPTURE.COMPLETED",
        &bought,
        "COMPLETED",
        "34.51",
        "USD",
    );
    let r = deliver(api, &completed).await;
    assert_eq!(r.expect(200)["handled"], true);
    assert_eq!(r.body["duplicate"], false);
    assert_eq!(
        deliver(api, &completed).await.expect(200),
        &json!({ "received": true, "duplicate": true })
    );
    assert_eq!(api.balance_now(&account).await, 2_000, "still granted once");

    // One token served every call.
    assert_eq!(ctx.stub.token_count(), 1);
    common::assert_verify_clean(&ctx.store).await;
}
with_paypal!(a_paypal_purchase_is_approved_captured_and_credited_once);

async fn a_pending_capture_is_settled_by_capture_completed_once(ctx: &Ctx) {
    let api = &ctx.api;
    ctx.stub.set_capture_status("PENDING");
    let account = paypal_account(api).await;
    let bought = purchase(api, &account).await;
    let payment_id = bought["payment"]["id"].as_str().unwrap();
    let invoice_id = bought["invoice"]["id"].as_str().unwrap();

    let r = deliver(api, &approved(&bought, "34.51", "USD")).await;
    assert_eq!(r.expect(200)["handled"], true);
    assert_eq!(api.balance_now(&account).await, 0, "the capture is pending");
    assert_eq!(
        payment_row(api, payment_id, &account).await["status"],
        "processing"
    );

    // This capture names its order by its `up` link only (no
    // supplementary_data): found all the same.
    let mut completed: Value = serde_json::from_str(&capture_event(
        "PAYMENT.CAPTURE.COMPLETED",
        &bought,
        "COMPLETED",
        "34.51",
        "USD",
    ))
    .unwrap();
    let resource = completed["resource"].as_object_mut().unwrap();
    resource.remove("supplementary_data");
    resource.insert(
        "links".into(),
        json!([{
            "href": format!("https://api.sandbox.paypal.com/v2/checkout/orders/{}", bought["order_id"].as_str().unwrap()),
            "rel": "up",
            "method": "GET",
        }]),
    );
    let completed = completed.to_string();
    let r = deliver(api, &completed).await;
    let r = r.expect(200);
    assert_eq!(r["handled"], true);
    assert_eq!(r["duplicate"], false);
    assert_eq!(api.balance_now(&account).await, 2_000);
    assert_eq!(
        api.invoice_now(&account, invoice_id).await["status"],
        "paid"
    );
    assert_eq!(
        payment_row(api, payment_id, &account).await["status"],
        "succeeded"
    );

    // Redelivered: a duplicate. Another event about the same capture:
    // handled, nothing granted again.
    assert_eq!(
        deliver(api, &completed).await.expect(200)["duplicate"],
        true
    );
    let other = capture_event(
        "PAYMENT.CAPTURE.COMPLETED",
        &bought,
        "COMPLETED",
        "34.51",
        "USD",
    );
    assert_eq!(deliver(api, &other).await.expect(200)["handled"], true);
    assert_eq!(
        api.balance_now(&account).await,
        2_000,
        "granted exactly once"
    );
}
with_paypal!(a_pending_capture_is_settled_by_capture_completed_once);

async fn a_denied_capture_fails_the_payment_and_grants_nothing(ctx: &Ctx) {
    let api = &ctx.api;
    ctx.stub.set_capture_status("PENDING");
    let account = paypal_account(api).await;
    let bought = purchase(api, &account).await;
    let payment_id = bought["payment"]["id"].as_str().unwrap();
    deliver(api, &approved(&bought, "34.51", "USD"))
        .await
        .expect(200);
    let denied = capture_event(
        "PAYMENT.CAPTURE.DENIED",
        &bought,
        "DECLINED",
        "34.51",
        "USD",
    );
    assert_eq!(deliver(api, &denied).await.expect(200)["handled"], true);
    let row = payment_row(api, payment_id, &account).await;
    assert_eq!(row["status"], "failed");
    assert_eq!(api.balance_now(&account).await, 0);
    assert_eq!(
        api.invoice_now(&account, bought["invoice"]["id"].as_str().unwrap())
            .await["status"],
        "pending"
    );
}
with_paypal!(a_denied_capture_fails_the_payment_and_grants_nothing);

// ---------------------------------------------------------------------------
// Verification
// ---------------------------------------------------------------------------

async fn an_unverified_webhook_is_refused_and_applies_nothing(ctx: &Ctx) {
    let api = &ctx.api;
    let account = paypal_account(api).await;
    let bought = purchase(api, &account).await;
    let invoice_id = bought["invoice"]["id"].as_str().unwrap();
    let completed = capture_event(
        "PAYMENT.CAPTURE.COMPLETED",
        &bought,
        "COMPLETED",
        "34.51",
        "USD",
    );

    // A signature PayPal does not vouch for.
    let forged = post_webhook(api, &completed, &transmission(&completed, true)).await;
    let details = forged.expect_error(400, "invalid_request");
    assert_eq!(details["reason"], "invalid_signature");
    // A body changed after PayPal signed it.
    let tampered = completed.replace("34.51", "0.01");
    let r = post_webhook(api, &tampered, &transmission(&completed, false)).await;
    assert_eq!(
        r.expect_error(400, "invalid_request")["reason"],
        "invalid_signature"
    );
    // A transmission header missing: refused before PayPal is asked.
    let asked = ctx
        .stub
        .requests("POST", "/v1/notifications/verify-webhook-signature")
        .len();
    for missing in [
        "paypal-auth-algo",
        "paypal-cert-url",
        "paypal-transmission-id",
        "paypal-transmission-sig",
        "paypal-transmission-time",
    ] {
        let headers: Vec<(&str, String)> = transmission(&completed, false)
            .into_iter()
            .filter(|(n, _)| *n != missing)
            .collect();
        let r = post_webhook(api, &completed, &headers).await;
        let details = r.expect_error(400, "invalid_request");
        assert_eq!(details["field"], missing.to_uppercase(), "{missing}");
        assert_eq!(details["reason"], "invalid_signature");
    }
    assert_eq!(
        ctx.stub
            .requests("POST", "/v1/notifications/verify-webhook-signature")
            .len(),
        asked
    );
    // Not a PayPal event at all.
    for bad in ["not json", "[]", "{}", r#"{"id":"WH-1","event_type":"X"}"#] {
        post_webhook(api, bad, &transmission(r#"{"x":1}"#, false))
            .await
            .expect_error(400, "invalid_request");
    }
    // Over the body limit.
    let huge = format!(r#"{{"pad":"{}"}}"#, "x".repeat(300 * 1024));
    post_webhook(api, &huge, &transmission(r#"{"x":1}"#, false))
        .await
        .expect_error(413, "payload_too_large");
    // PayPal unreachable for the verification: 503, so PayPal retries.
    ctx.stub.set_verify_down(true);
    deliver(api, &completed)
        .await
        .expect_error(503, "unavailable");
    ctx.stub.set_verify_down(false);

    // Nothing was applied or recorded: the genuine delivery of the same
    // event is the first one.
    assert_eq!(api.balance_now(&account).await, 0);
    assert_eq!(
        api.invoice_now(&account, invoice_id).await["status"],
        "pending"
    );
    let r = deliver(api, &completed).await;
    let r = r.expect(200);
    assert_eq!(r["duplicate"], false);
    assert_eq!(r["handled"], true);
    assert_eq!(api.balance_now(&account).await, 2_000);
}
with_paypal!(an_unverified_webhook_is_refused_and_applies_nothing);

async fn a_wrong_amount_or_currency_is_refused_recorded_and_never_settled(ctx: &Ctx) {
    let api = &ctx.api;
    let account = paypal_account(api).await;
    let bought = purchase(api, &account).await;
    let invoice_id = bought["invoice"]["id"].as_str().unwrap();
    let order_id = bought["order_id"].as_str().unwrap();

    // An approved order for less: refused, and not captured.
    let less = approved(&bought, "30.00", "USD");
    let r = deliver(api, &less).await;
    let r = r.expect(200);
    assert_eq!(r["handled"], false);
    let why = r["refused"].as_str().unwrap();
    assert!(why.contains("30.00") && why.contains("34.51"), "{why}");
    // The refusal is in the log, with its reason.
    let less: Value = serde_json::from_str(&less).unwrap();
    let stream = ledger::payment::paypal_event_stream(less["id"].as_str().unwrap());
    let logged = ctx
        .store
        .load::<ledger::payment::PaypalEventLog>(&stream)
        .await
        .unwrap()
        .aggregate;
    let logged = logged.received().expect("the event is recorded");
    assert_eq!(logged.event_type, "CHECKOUT.ORDER.APPROVED");
    assert!(!logged.handled);
    assert_eq!(logged.refused.as_deref(), Some(why));
    assert_eq!(logged.resource_id.as_deref(), Some(order_id));
    assert!(ctx
        .stub
        .requests("POST", &format!("/v2/checkout/orders/{order_id}/capture"))
        .is_empty());

    // A capture of another amount, or in another currency: refused.
    for (value, currency) in [("30.00", "USD"), ("34.51", "EUR"), ("34.510001", "USD")] {
        let r = deliver(
            api,
            &capture_event(
                "PAYMENT.CAPTURE.COMPLETED",
                &bought,
                "COMPLETED",
                value,
                currency,
            ),
        )
        .await;
        let r = r.expect(200);
        assert_eq!(r["handled"], false, "{value} {currency}");
        assert!(
            r["refused"].as_str().is_some_and(|w| w.contains(currency)),
            "{r}"
        );
    }
    // A capture naming another invoice as its custom_id: refused.
    let mut other: Value = serde_json::from_str(&capture_event(
        "PAYMENT.CAPTURE.COMPLETED",
        &bought,
        "COMPLETED",
        "34.51",
        "USD",
    ))
    .unwrap();
    other["resource"]["custom_id"] = json!(uuid::Uuid::now_v7().to_string());
    let r = deliver(api, &other.to_string()).await;
    assert!(r.expect(200)["refused"]
        .as_str()
        .is_some_and(|w| w.contains("custom_id")));

    assert_eq!(api.balance_now(&account).await, 0, "nothing granted");
    assert_eq!(
        api.invoice_now(&account, invoice_id).await["status"],
        "pending"
    );
    assert_eq!(
        payment_row(api, bought["payment"]["id"].as_str().unwrap(), &account).await["status"],
        "processing"
    );

    // The right amount still settles it.
    let r = deliver(
        api,
        &capture_event(
            "PAYMENT.CAPTURE.COMPLETED",
            &bought,
            "COMPLETED",
            "34.51",
            "USD",
        ),
    )
    .await;
    assert_eq!(r.expect(200)["handled"], true);
    assert_eq!(api.balance_now(&account).await, 2_000);

    // Events about nothing of ours, and other types, are acknowledged and
    // recorded.
    let stranger = event(
        &evt(),
        "PAYMENT.CAPTURE.COMPLETED",
        "capture",
        json!({ "id": "9XX00000000000000", "status": "COMPLETED", "amount": { "currency_code": "USD", "value": "1.00" } }),
    );
    let r = deliver(api, &stranger).await;
    assert_eq!(r.expect(200)["handled"], false);
    assert!(r.body["refused"].is_null());
    let other_type = event(
        &evt(),
        "CUSTOMER.DISPUTE.CREATED",
        "dispute",
        json!({ "id": "PP-D-1" }),
    );
    let r = deliver(api, &other_type).await;
    assert_eq!(r.expect(200)["handled"], false);
    assert_eq!(
        deliver(api, &other_type).await.expect(200)["duplicate"],
        true
    );
    common::assert_verify_clean(&ctx.store).await;
}
with_paypal!(a_wrong_amount_or_currency_is_refused_recorded_and_never_settled);

// ---------------------------------------------------------------------------
// Refunds
// ---------------------------------------------------------------------------

async fn staff_refunds_of_a_paypal_payment_go_to_paypal_and_its_webhook_records_each_once(
    ctx: &Ctx,
) {
    let api = &ctx.api;
    let account = paypal_account(api).await;
    let bought = paid_purchase(api, &account).await;
    let payment_id = bought["payment"]["id"].as_str().unwrap();
    let capture = capture_id(&bought);
    let refund_path = format!("/v2/payments/captures/{capture}/refund");

    let idem = key();
    let part = refund(
        api,
        payment_id,
        &idem,
        json!({ "amount": "10.00", "reason": "partial goodwill" }),
    )
    .await;
    let part = part.expect(200).clone();
    assert_eq!(part["amount"], "10.00");
    assert_eq!(part["refunded_amount"], "10.00");
    assert_eq!(part["status"], "succeeded");
    let refund_id = part["refund_id"].as_str().unwrap();
    let seen = ctx.stub.requests("POST", &refund_path);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(
        seen[0].request_id.as_deref(),
        Some(format!("refund-{refund_id}").as_str())
    );
    assert_eq!(
        seen[0].body["amount"],
        json!({ "currency_code": "USD", "value": "10.00" })
    );
    assert_eq!(seen[0].body["custom_id"], refund_id);
    let paypal_refund = part["gateway_refund_ref"].as_str().unwrap();
    assert_eq!(paypal_refund, id_for("R", &format!("refund-{refund_id}")));
    // The capture was found on the order.
    assert_eq!(
        ctx.stub
            .requests(
                "GET",
                &format!(
                    "/v2/checkout/orders/{}",
                    bought["order_id"].as_str().unwrap()
                )
            )
            .len(),
        1
    );
    // A retry replays; PayPal is not asked again.
    let replay = refund(
        api,
        payment_id,
        &idem,
        json!({ "amount": "10.00", "reason": "partial goodwill" }),
    )
    .await;
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(ctx.stub.requests("POST", &refund_path).len(), 1);

    // PayPal's webhook about that refund records nothing more.
    let echo = refunded_event(&bought, paypal_refund, "10.00", &json!(refund_id));
    assert_eq!(deliver(api, &echo).await.expect(200)["handled"], true);
    assert_eq!(
        payment_row(api, payment_id, &account).await["refunded_amount"],
        "10.00"
    );

    // A refund made in PayPal's dashboard (its custom_id is the capture's,
    // our invoice id) is recorded once, without taking credits back.
    let dashboard = refunded_event(
        &bought,
        "7NW96161RR8734541",
        "5.00",
        &bought["invoice"]["id"],
    );
    assert_eq!(deliver(api, &dashboard).await.expect(200)["handled"], true);
    assert_eq!(
        deliver(api, &dashboard).await.expect(200)["duplicate"],
        true
    );
    let again = refunded_event(
        &bought,
        "7NW96161RR8734541",
        "5.00",
        &bought["invoice"]["id"],
    );
    deliver(api, &again).await.expect(200);
    let row = payment_row(api, payment_id, &account).await;
    assert_eq!(row["refunded_amount"], "15.00");
    assert_eq!(row["status"], "succeeded");
    assert_eq!(api.balance_now(&account).await, 2_000, "credits kept");

    // The rest by default; then nothing is left, and PayPal is not asked.
    let rest = refund(api, payment_id, &key(), json!({ "reason": "the rest" })).await;
    let rest = rest.expect(200);
    assert_eq!(rest["amount"], "19.51");
    assert_eq!(rest["refunded_amount"], "34.51");
    assert_eq!(rest["status"], "refunded");
    let seen = ctx.stub.requests("POST", &refund_path);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].body["amount"]["value"], "19.51");
    refund(
        api,
        payment_id,
        &key(),
        json!({ "amount": "0.01", "reason": "too much" }),
    )
    .await
    .expect_error(409, "conflict");
    assert_eq!(ctx.stub.requests("POST", &refund_path).len(), 2);
    // A refund PayPal reports beyond what was paid is refused, recorded.
    let beyond = refunded_event(&bought, "8MC585209K746392H", "1.00", &Value::Null);
    let r = deliver(api, &beyond).await;
    assert!(r.expect(200)["refused"].as_str().is_some(), "{}", r.text);
    assert_eq!(
        payment_row(api, payment_id, &account).await["refunded_amount"],
        "34.51"
    );
    common::assert_verify_clean(&ctx.store).await;
}
with_paypal!(staff_refunds_of_a_paypal_payment_go_to_paypal_and_its_webhook_records_each_once);

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

async fn a_token_paypal_refuses_is_replaced_once(ctx: &Ctx) {
    let api = &ctx.api;
    let account = paypal_account(api).await;
    purchase(api, &account).await;
    purchase(api, &account).await;
    assert_eq!(ctx.stub.token_count(), 1, "the token is kept");
    ctx.stub.revoke_tokens();
    let bought = purchase(api, &account).await;
    assert!(bought["approval_url"].is_string());
    assert_eq!(ctx.stub.token_count(), 2, "a new token after a 401");
}
with_paypal!(a_token_paypal_refuses_is_replaced_once);

// ---------------------------------------------------------------------------
// Without PayPal
// ---------------------------------------------------------------------------

async fn without_credentials_paypal_is_unavailable_and_nothing_is_written(api: &Api) {
    let account = paypal_account(api).await;
    assert!(
        !paypal_offered(api, &account).await,
        "without credentials paypal is listed but not available"
    );
    purchase_with(api, &account, &key())
        .await
        .expect_error(503, "unavailable");
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
    // Subscriptions take no PayPal (refused, in the SPEC's error format).
    let sub = api
        .post(
            "/v1/billing/subscriptions/create",
            &api.owner(&account),
            Some(&key()),
            json!({ "plan": "professional", "method": "paypal" }),
        )
        .await;
    assert!(sub.status >= 400, "{}", sub.text);
    assert!(sub.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("paypal")));
    // The webhook is unavailable, never open.
    let body = event(
        &evt(),
        "PAYMENT.CAPTURE.COMPLETED",
        "capture",
        json!({ "id": "1" }),
    );
    post_webhook(api, &body, &transmission(&body, false))
        .await
        .expect_error(503, "unavailable");
}
on_both_backends!(without_credentials_paypal_is_unavailable_and_nothing_is_written);

/// With credentials but no webhook id, purchases work and the webhook is
/// unavailable; a wrong secret is 502 at purchase time; one of the two
/// credentials alone stops the server at start-up.
async fn partial_configuration_is_said_clearly(backend: Backend) {
    let (stub, base) = start_stub().await;
    let server = Server::start_with(
        backend,
        &[
            "--paypal-client-id",
            CLIENT_ID,
            "--paypal-client-secret",
            CLIENT_SECRET,
            "--paypal-api-base",
            &base,
        ],
    )
    .await;
    let api = server.api.clone();
    let outcome = tokio::spawn(async move {
        let account = paypal_account(&api).await;
        purchase(&api, &account).await;
        let body = event(
            &evt(),
            "PAYMENT.CAPTURE.COMPLETED",
            "capture",
            json!({ "id": "1" }),
        );
        post_webhook(&api, &body, &transmission(&body, false))
            .await
            .expect_error(503, "unavailable");
    })
    .await;
    server.stop().await;
    outcome.expect("the body ran");
    assert_eq!(stub.requests("POST", "/v2/checkout/orders").len(), 1);

    let server = Server::start_with(
        backend,
        &[
            "--paypal-client-id",
            CLIENT_ID,
            "--paypal-client-secret",
            "wrong-secret",
            "--paypal-webhook-id",
            WEBHOOK_ID,
            "--paypal-api-base",
            &base,
        ],
    )
    .await;
    let api = server.api.clone();
    let outcome = tokio::spawn(async move {
        let account = paypal_account(&api).await;
        let refused = purchase_with(&api, &account, &key()).await;
        refused.expect(502);
        assert_eq!(refused.body["error"]["code"], "unavailable");
        let p = api.head().await;
        let payments = api
            .items("/v1/admin/payments", p, &format!("&account_id={account}"))
            .await;
        assert!(payments.is_empty(), "no payment recorded: {payments:?}");
    })
    .await;
    server.stop().await;
    outcome.expect("the body ran");

    let db = common::fresh_db(backend).await;
    let dir = tempfile::tempdir().unwrap();
    let config = common::config_with(&db.url, dir.path(), &["--paypal-client-id", CLIENT_ID]);
    let refused = api::prepare(config).await;
    let message = format!(
        "{:#}",
        refused.err().expect("one credential alone is refused")
    );
    assert!(message.contains("PAYPAL_CLIENT_SECRET"), "{message}");
    db.cleanup().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_configuration_on_postgres() {
    partial_configuration_is_said_clearly(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partial_configuration_on_sqlite() {
    partial_configuration_is_said_clearly(Backend::Sqlite).await;
}

#[test]
fn the_stub_s_base64_is_the_standard_one() {
    assert_eq!(base64(b""), "");
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"client:secret"), "Y2xpZW50OnNlY3JldA==");
}
