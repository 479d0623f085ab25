//! The operational surface (SPEC §3): `/openapi.json`, Swagger UI at `/docs`
//! and `/metrics`, on a server started in-process on SQLite.
//!
//! Besides checking that each is served, the OpenAPI document is held to the
//! server: every route registered in `api/src/http/mod.rs` is documented
//! with its methods, every documented `/v1` route answers (401 without a
//! token, so it is routed), and the request and response bodies of a full
//! scenario are validated against the document's own schemas — which is
//! what keeps the schema mirrors in `openapi.rs` true to the handlers'
//! `json!` bodies.

use std::collections::BTreeSet;
use std::time::Duration;

use api::auth::{Claims, JwtKeys, Role};
use clap::Parser;
use reqwest::Method;
use serde_json::{json, Value};
use store::testing::TestDb;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Explicit, 32+ bytes.
const JWT_SECRET: &str = "operations-tests-secret-0123456789-abcdefghijklmnop";

/// Every route `api/src/http/mod.rs` registers under `/v1`, by hand.
const V1_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/accounts"),
    ("get", "/v1/accounts/{account_id}"),
    ("patch", "/v1/accounts/{account_id}"),
    ("get", "/v1/account/settings"),
    ("patch", "/v1/account/settings"),
    ("get", "/v1/accounts/{account_id}/limits"),
    ("get", "/v1/account/limits"),
    ("post", "/v1/accounts/{account_id}/deductions"),
    ("post", "/v1/accounts/{account_id}/deductions/batch"),
    ("post", "/v1/deductions/batch"),
    ("post", "/v1/accounts/{account_id}/holds"),
    ("post", "/v1/accounts/{account_id}/holds/{hold_id}/capture"),
    ("post", "/v1/accounts/{account_id}/holds/{hold_id}/release"),
    (
        "post",
        "/v1/accounts/{account_id}/deductions/{deduction_id}/refund",
    ),
    ("post", "/v1/accounts/{account_id}/grants"),
    ("post", "/v1/admin/accounts/{account_id}/adjust-credits"),
    ("post", "/v1/admin/tokens/revoke"),
    ("get", "/v1/accounts/{account_id}/balance"),
    ("get", "/v1/billing/account_balance"),
    ("get", "/v1/accounts/{account_id}/transactions"),
    ("get", "/v1/billing/transactions"),
    ("get", "/v1/accounts/{account_id}/usage"),
    ("get", "/v1/billing/usage"),
    ("get", "/v1/accounts/{account_id}/usage/analytics"),
    ("get", "/v1/account/usage/analytics"),
    ("get", "/v1/plans"),
    ("put", "/v1/admin/plans/{slug}"),
    ("get", "/v1/billing/credits/packages"),
    ("put", "/v1/admin/credit-packages/{slug}"),
    ("get", "/v1/admin/credit-costs"),
    ("get", "/v1/admin/credit-costs/history"),
    ("put", "/v1/admin/credit-costs/{operation}"),
    ("get", "/v1/admin/credit-costs/{operation}/history"),
    ("get", "/v1/admin/accounts"),
    ("post", "/v1/admin/accounts/{account_id}/suspend"),
    ("post", "/v1/admin/accounts/{account_id}/activate"),
    ("get", "/v1/billing/invoices"),
    ("get", "/v1/billing/invoices/{invoice_id}"),
    ("get", "/v1/billing/invoices/{invoice_id}/pdf"),
    ("post", "/v1/billing/payments/manual"),
    ("post", "/v1/billing/payments/{payment_id}/cancel"),
    ("post", "/v1/admin/payments/{payment_id}/cancel"),
    ("post", "/v1/billing/credits/purchase"),
    ("get", "/v1/admin/invoices"),
    ("post", "/v1/admin/invoices"),
    ("post", "/v1/admin/invoices/{invoice_id}/finalize"),
    ("post", "/v1/admin/invoices/{invoice_id}/void"),
    ("post", "/v1/admin/invoices/{invoice_id}/mark-uncollectible"),
    ("get", "/v1/admin/payments"),
    ("post", "/v1/admin/payments/{payment_id}/approve"),
    ("post", "/v1/admin/payments/{payment_id}/reject"),
    ("get", "/v1/billing/subscriptions"),
    ("post", "/v1/billing/subscriptions/create"),
    ("post", "/v1/billing/subscriptions/upgrade"),
    ("post", "/v1/billing/subscriptions/cancel"),
    ("post", "/v1/billing/subscriptions/reactivate"),
    ("post", "/v1/admin/billing/run-periods"),
    ("post", "/v1/admin/billing/stripe/sync"),
    ("post", "/v1/admin/payments/{payment_id}/refund"),
    ("post", WEBHOOK),
    ("post", PAYPAL_WEBHOOK),
    ("get", "/v1/billing/payment-methods"),
    ("post", "/v1/billing/payment-methods"),
    (
        "post",
        "/v1/billing/payment-methods/{payment_method_id}/default",
    ),
    ("delete", "/v1/billing/payment-methods/{payment_method_id}"),
    ("get", "/v1/admin/payment-method-configs"),
    ("put", "/v1/admin/payment-method-configs/{country}/{method}"),
    ("get", "/v1/admin/billing/stats"),
    ("get", "/v1/accounts/{account_id}/team"),
    ("post", "/v1/accounts/{account_id}/team"),
    ("get", "/v1/account/team"),
    ("post", "/v1/accounts/{account_id}/team/invite"),
    ("post", "/v1/account/team/invite"),
    ("post", "/v1/team/invitations/accept"),
    (
        "delete",
        "/v1/accounts/{account_id}/team/invitations/{invitation_id}",
    ),
    ("delete", "/v1/account/team/invitations/{invitation_id}"),
    ("patch", "/v1/accounts/{account_id}/team/{user_id}"),
    ("delete", "/v1/accounts/{account_id}/team/{user_id}"),
    ("patch", "/v1/account/team/{user_id}"),
    ("delete", "/v1/account/team/{user_id}"),
    ("post", "/v1/accounts/{account_id}/transfer-ownership"),
    ("get", "/v1/admin/users"),
    ("put", "/v1/accounts/{account_id}/usage-counts"),
    ("put", "/v1/admin/accounts/{account_id}/limits"),
    // Issue 17: budgets, automatic top-up, forecast, webhook endpoints.
    ("get", "/v1/accounts/{account_id}/budget"),
    ("put", "/v1/accounts/{account_id}/budget"),
    ("get", "/v1/account/budget"),
    ("put", "/v1/account/budget"),
    ("get", "/v1/accounts/{account_id}/auto-top-up"),
    ("put", "/v1/accounts/{account_id}/auto-top-up"),
    ("get", "/v1/account/auto-top-up"),
    ("put", "/v1/account/auto-top-up"),
    ("get", "/v1/accounts/{account_id}/forecast"),
    ("get", "/v1/account/forecast"),
    ("post", "/v1/admin/webhook-endpoints"),
    ("get", "/v1/admin/webhook-endpoints"),
    ("get", "/v1/admin/webhook-endpoints/{endpoint_id}"),
    ("delete", "/v1/admin/webhook-endpoints/{endpoint_id}"),
    (
        "get",
        "/v1/admin/webhook-endpoints/{endpoint_id}/deliveries",
    ),
    (
        "post",
        "/v1/admin/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    ),
];

/// The `/v1` routes without a bearer token: Stripe signs the one, PayPal
/// verifies the other.
const WEBHOOK: &str = "/v1/billing/webhooks/stripe";
const PAYPAL_WEBHOOK: &str = "/v1/billing/webhooks/paypal";

/// The routes outside `/v1`, which take no token.
const OPERATION_ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("get", "/docs"),
    ("get", "/docs/{file}"),
];

const ASSETS: [(&str, &str); 3] = [
    ("swagger-ui.css", "text/css"),
    ("swagger-ui-bundle.js", "text/javascript"),
    ("swagger-ui-standalone-preset.js", "text/javascript"),
];

struct Server {
    base: String,
    http: reqwest::Client,
    keys: JwtKeys,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _db: TestDb,
    _data_dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Self {
        api::install_crypto_provider();
        let db = TestDb::sqlite().await.expect("a SQLite test database");
        let data_dir = tempfile::tempdir().expect("a data dir");
        let data_dir_arg = data_dir.path().display().to_string();
        // Through the CLI parser so that settings added later keep their
        // defaults; flags win over any LEDGER_* variable in the environment.
        let config = api::config::Cli::try_parse_from([
            "ledger-server",
            "--database-url",
            &db.url,
            "--jwt-secret",
            JWT_SECRET,
            "--data-dir",
            &data_dir_arg,
        ])
        .expect("a valid configuration")
        .config;
        let prepared = api::prepare(config).await.expect("the server prepares");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a port");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(api::serve(prepared, listener, async move {
            let _ = rx.await;
        }));
        Self {
            base,
            http: reqwest::Client::new(),
            keys: JwtKeys::from_secret(JWT_SECRET.as_bytes()),
            shutdown: Some(tx),
            task: Some(task),
            _db: db,
            _data_dir: data_dir,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the server stops within 10 s")
                .expect("the server task does not panic")
                .expect("the server stops cleanly");
        }
    }

    fn token(&self, role: Role, account: Option<&str>) -> String {
        let account = account.map(|a| events::AccountId::parse(a).expect("an account id"));
        // The server runs with its defaults, the roster check on: an
        // owner token is the accounts' owner's (`owner_user_id` below).
        let sub = if role == Role::Owner {
            "user-1"
        } else {
            "operations-test"
        };
        let claims = Claims::new(
            sub,
            role,
            account,
            chrono::Utc::now().timestamp(),
            Duration::from_secs(600),
        )
        .expect("valid claims");
        self.keys.mint(&claims)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .expect("the server answers")
    }

    async fn openapi(&self) -> Value {
        let r = self.get("/openapi.json").await;
        assert_eq!(r.status(), 200);
        assert!(header(&r, "content-type").starts_with("application/json"));
        r.json().await.expect("/openapi.json is JSON")
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().unwrap().keys() {
            routes.insert((method.clone(), path.clone()));
        }
    }
    routes
}

fn owned(routes: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    routes
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_is_3_1_and_documents_every_registered_route() {
    let server = Server::start().await;
    let doc = server.openapi().await;
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["title"], "ledger-server");

    let documented = documented_routes(&doc);
    let mut expected = owned(V1_ROUTES);
    expected.extend(owned(OPERATION_ROUTES));
    let missing: Vec<_> = expected.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&expected).collect();
    assert!(missing.is_empty(), "routes not documented: {missing:?}");
    assert!(
        unknown.is_empty(),
        "documented routes the router lacks: {unknown:?}"
    );

    let scheme = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(scheme["bearerFormat"], "JWT");

    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let wanted: BTreeSet<&str> = [
        "accounts",
        "credits",
        "reads",
        "catalog",
        "billing",
        "team",
        "admin",
        "operations",
    ]
    .into();
    assert_eq!(tags, wanted);

    for (method, path) in &documented {
        let op = &doc["paths"][path][method];
        let tag = op["tags"][0].as_str().unwrap_or_default();
        assert!(wanted.contains(tag), "{method} {path} is tagged {tag:?}");
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{method} {path} documents no success"
        );
        if path == WEBHOOK || path == PAYPAL_WEBHOOK {
            assert_ne!(op["security"], json!([{ "bearer": [] }]), "{method} {path}");
            assert!(responses["400"].is_object(), "{method} {path}");
        } else if path.starts_with("/v1/") {
            assert_eq!(op["security"], json!([{ "bearer": [] }]), "{method} {path}");
            for status in ["401", "500", "503"] {
                let schema = &responses[status]["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(
                    schema, "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
            // Path parameters are declared for every template segment.
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                let declared = op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path"));
                assert!(declared, "{method} {path} does not declare {name}");
            }
        } else {
            assert!(
                op.get("security").is_none(),
                "{method} {path} needs no token"
            );
        }
    }

    // The error format.
    let error = &doc["components"]["schemas"]["ErrorDetail"];
    let required: BTreeSet<&str> = error["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(required, ["code", "message", "details"].into());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_v1_route_is_routed_and_asks_for_a_token() {
    let server = Server::start().await;
    let doc = server.openapi().await;
    let some_id = uuid::Uuid::now_v7().to_string();
    for (method, path) in documented_routes(&doc) {
        if !path.starts_with("/v1/") {
            continue;
        }
        let concrete = path
            .replace("{account_id}", &some_id)
            .replace("{hold_id}", &some_id)
            .replace("{deduction_id}", &some_id)
            .replace("{invoice_id}", &some_id)
            .replace("{payment_id}", &some_id)
            .replace("{slug}", "pro")
            .replace("{operation}", "article_generation")
            .replace("{country}", "DE")
            .replace("{method}", "bank_transfer");
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = server
            .http
            .request(method.clone(), format!("{}{concrete}", server.base))
            .send()
            .await
            .unwrap();
        if path == WEBHOOK || path == PAYPAL_WEBHOOK {
            // Signed by Stripe or verified by PayPal, not a token: without a
            // webhook secret (PayPal's credentials and webhook id) it is
            // unavailable, never open.
            assert_eq!(r.status(), 503, "{method} {concrete}");
            continue;
        }
        // Not 404 `no such route`, not 405: the router has it, behind auth.
        assert_eq!(r.status(), 401, "{method} {concrete}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{method} {concrete}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_is_served_from_the_vendored_assets() {
    let server = Server::start().await;
    for path in ["/docs", "/docs/"] {
        let r = server.get(path).await;
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            header(&r, "content-type").starts_with("text/html"),
            "{path}"
        );
        let html = r.text().await.unwrap();
        for (asset, _) in ASSETS {
            assert!(
                html.contains(&format!("/docs/{asset}")),
                "{path} does not load {asset}"
            );
        }
        assert!(html.contains("/docs/swagger-initializer.js"));
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing is fetched from elsewhere"
        );
    }
    for (asset, content_type) in ASSETS {
        let r = server.get(&format!("/docs/{asset}")).await;
        assert_eq!(r.status(), 200, "{asset}");
        assert!(
            header(&r, "content-type").starts_with(content_type),
            "{asset}: {}",
            header(&r, "content-type")
        );
        let bytes = r.bytes().await.unwrap();
        assert!(
            bytes.len() > 100_000,
            "{asset} is only {} bytes",
            bytes.len()
        );
    }
    let r = server.get("/docs/swagger-initializer.js").await;
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("text/javascript"));
    let script = r.text().await.unwrap();
    assert!(script.contains("\"/openapi.json\""), "{script}");

    let r = server.get("/docs/swagger-ui.js.map").await;
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_route_and_show_the_log_and_projector() {
    let server = Server::start().await;
    assert_eq!(server.get("/health").await.status(), 200);
    assert_eq!(server.get("/v1/plans").await.status(), 401);
    let stranger = uuid::Uuid::now_v7().to_string();
    let dev = server.token(Role::Developer, None);
    let r = server
        .http
        .get(format!("{}/v1/accounts/{stranger}/balance", server.base))
        .bearer_auth(&dev)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(server.get("/no/such/route").await.status(), 404);
    // A write, for the command histogram.
    let r = server
        .http
        .post(format!("{}/v1/accounts", server.base))
        .bearer_auth(&dev)
        .json(&json!({
            "name": "Metrics Co",
            "slug": format!("metrics-{}", uuid::Uuid::new_v4().simple()),
            "country": "US",
            "billing_email": "ops@metrics.example",
            "owner_user_id": "user-1",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let r = server.get("/metrics").await;
    assert_eq!(r.status(), 200);
    assert!(
        header(&r, "content-type").starts_with("text/plain"),
        "{}",
        header(&r, "content-type")
    );
    let text = r.text().await.unwrap();
    for wanted in [
        r#"ledger_http_requests_total{method="GET",route="/health",status="200"}"#,
        r#"ledger_http_requests_total{method="GET",route="/v1/plans",status="401"}"#,
        r#"ledger_http_requests_total{method="GET",route="/v1/accounts/{account_id}/balance",status="404"}"#,
        r#"ledger_http_requests_total{method="GET",route="unmatched",status="404"}"#,
        r#"ledger_http_requests_total{method="POST",route="/v1/accounts",status="201"}"#,
        r#"ledger_http_request_duration_seconds_bucket{method="GET",route="/health",le="0.005"}"#,
        r#"ledger_http_request_duration_seconds_count{method="GET",route="/v1/plans"}"#,
        r#"ledger_command_duration_seconds_count{command="open_account",outcome="ok"}"#,
        "# TYPE ledger_http_request_duration_seconds histogram",
        "# TYPE ledger_projector_lag_events gauge",
        "ledger_projector_lag_events ",
        "ledger_projector_position ",
        "ledger_log_head_position ",
        "ledger_store_up 1",
    ] {
        assert!(text.contains(wanted), "/metrics lacks {wanted}:\n{text}");
    }
    // Route templates, never raw paths: ids do not become labels.
    assert!(
        !text.contains(&stranger),
        "a raw path leaked into the labels"
    );
    assert!(!text.contains("/no/such/route"));
    let head = gauge(&text, "ledger_log_head_position");
    let projected = gauge(&text, "ledger_projector_position");
    let lag = gauge(&text, "ledger_projector_lag_events");
    assert!(head > 0, "the catalog seed and the account are in the log");
    assert_eq!(lag, (head - projected).max(0));
    server.stop().await;
}

fn gauge(text: &str, name: &str) -> i64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name}"))
        .trim()
        .parse::<f64>()
        .unwrap() as i64
}

// ---------------------------------------------------------------------------
// Live bodies against the document's schemas.

/// Validates `value` against `schema` (with `$ref`s into `doc`), strictly:
/// an object key that the schema does not name is an error, unless the
/// schema is a free-form object. Enough of JSON Schema for utoipa's output.
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if let Some(branches) = schema
        .get("oneOf")
        .or_else(|| schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        let fits = branches.iter().any(|b| {
            let mut e = Vec::new();
            validate(doc, b, value, at, &mut e);
            e.is_empty()
        });
        if !fits {
            errors.push(format!(
                "{at}: {value} fits none of {}",
                Value::Array(branches.clone())
            ));
        }
        return;
    }
    if schema.get("allOf").is_some() {
        let merged = merge_all_of(doc, schema);
        return validate(doc, &merged, value, at, errors);
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        if !values.contains(value) {
            errors.push(format!("{at}: {value} is not one of {values:?}"));
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !types.is_empty() && !types.iter().any(|t| is_type(value, t)) {
        errors.push(format!("{at}: {value} is not {types:?}"));
        return;
    }
    if let Some(s) = value.as_str() {
        let ok = match schema["format"].as_str() {
            Some("date-time") => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
            Some("date") => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
            Some("uuid") => uuid::Uuid::parse_str(s).is_ok(),
            _ => true,
        };
        if !ok {
            errors.push(format!("{at}: {s:?} is not a {}", schema["format"]));
        }
    }
    match value {
        Value::Object(map) => {
            let properties = schema["properties"].as_object();
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap();
                if !map.contains_key(name) {
                    errors.push(format!("{at}: required {name} is missing"));
                }
            }
            if let Some(properties) = properties {
                for (k, v) in map {
                    match properties.get(k) {
                        Some(s) => validate(doc, s, v, &format!("{at}.{k}"), errors),
                        None => errors.push(format!("{at}: {k} is not documented")),
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, v) in items.iter().enumerate() {
                    validate(doc, item_schema, v, &format!("{at}[{i}]"), errors);
                }
            }
        }
        _ => {}
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let name = r
                .strip_prefix("#/components/schemas/")
                .expect("a schema ref");
            let target = &doc["components"]["schemas"][name];
            assert!(target.is_object(), "dangling $ref {r}");
            resolve(doc, target)
        }
        None => schema,
    }
}

/// `allOf` (what `#[serde(flatten)]` becomes) as one object schema.
fn merge_all_of(doc: &Value, schema: &Value) -> Value {
    let mut properties = serde_json::Map::new();
    let mut required = Vec::new();
    for branch in schema["allOf"].as_array().unwrap() {
        let branch = resolve(doc, branch);
        let branch = if branch.get("allOf").is_some() {
            merge_all_of(doc, branch)
        } else {
            branch.clone()
        };
        if let Some(p) = branch["properties"].as_object() {
            properties.extend(p.clone());
        }
        required.extend(branch["required"].as_array().cloned().unwrap_or_default());
    }
    json!({ "type": "object", "properties": properties, "required": required })
}

fn is_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    }
}

/// A client that checks each exchange against the document: the request
/// body against the operation's request schema, the response status among
/// the documented ones and its body against that status's schema.
struct Checked<'a> {
    server: &'a Server,
    doc: Value,
    errors: Vec<String>,
    exchanges: usize,
}

struct Answer {
    status: u16,
    body: Value,
    replayed: bool,
}

impl Checked<'_> {
    async fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let op = self.doc["paths"][template][method].clone();
        assert!(op.is_object(), "{method} {template} is not documented");
        let at = format!("{method} {path}");
        if let Some(body) = &body {
            let schema = &op["requestBody"]["content"]["application/json"]["schema"];
            assert!(schema.is_object(), "{at} documents no request body");
            let mut errors = Vec::new();
            validate(
                &self.doc,
                schema,
                body,
                &format!("{at} request"),
                &mut errors,
            );
            self.errors.extend(errors);
        }
        let mut request = self
            .server
            .http
            .request(
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                format!("{}{path}", self.server.base),
            )
            .bearer_auth(token);
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = &body {
            request = request.json(body);
        }
        let r = request.send().await.unwrap();
        let status = r.status().as_u16();
        let replayed = header(&r, "idempotent-replayed") == "true";
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let documented = &op["responses"][status.to_string()];
        if documented.is_object() {
            let schema = &documented["content"]["application/json"]["schema"];
            let mut errors = Vec::new();
            validate(
                &self.doc,
                schema,
                &body,
                &format!("{at} {status}"),
                &mut errors,
            );
            self.errors.extend(errors);
        } else {
            self.errors
                .push(format!("{at} answered an undocumented {status}: {body}"));
        }
        self.exchanges += 1;
        Answer {
            status,
            body,
            replayed,
        }
    }
}

fn key() -> String {
    format!("ops-{}", uuid::Uuid::now_v7())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_requests_and_responses_match_the_documented_schemas() {
    let server = Server::start().await;
    let dev = server.token(Role::Developer, None);
    let mut api = Checked {
        doc: server.openapi().await,
        server: &server,
        errors: Vec::new(),
        exchanges: 0,
    };

    // Operations, without a token.
    for (path, status) in [("/health", 200), ("/ready", 200)] {
        let r = server.get(path).await;
        assert_eq!(r.status(), status);
        let body: Value = r.json().await.unwrap();
        let schema = api.doc["paths"][path]["get"]["responses"]["200"]["content"]
            ["application/json"]["schema"]
            .clone();
        validate(&api.doc, &schema, &body, path, &mut api.errors);
    }

    // Catalog.
    let plans = api
        .call("get", "/v1/plans", "/v1/plans", &dev, None, None)
        .await;
    assert_eq!(plans.status, 200);
    let mut plan = plans.body["items"][0].clone();
    let plan_slug = plan["slug"].as_str().unwrap().to_owned();
    plan.as_object_mut().unwrap().remove("slug");
    let path = format!("/v1/admin/plans/{plan_slug}");
    assert_eq!(
        api.call(
            "put",
            "/v1/admin/plans/{slug}",
            &path,
            &dev,
            None,
            Some(plan)
        )
        .await
        .status,
        200
    );

    let packages = api
        .call(
            "get",
            "/v1/billing/credits/packages",
            "/v1/billing/credits/packages",
            &dev,
            None,
            None,
        )
        .await;
    assert_eq!(packages.status, 200);
    let mut package = packages.body["items"][0].clone();
    let package_slug = package["slug"].as_str().unwrap().to_owned();
    package.as_object_mut().unwrap().remove("slug");
    let path = format!("/v1/admin/credit-packages/{package_slug}");
    assert_eq!(
        api.call(
            "put",
            "/v1/admin/credit-packages/{slug}",
            &path,
            &dev,
            None,
            Some(package)
        )
        .await
        .status,
        200
    );

    let costs = api
        .call(
            "get",
            "/v1/admin/credit-costs",
            "/v1/admin/credit-costs",
            &dev,
            None,
            None,
        )
        .await;
    assert_eq!(costs.status, 200);
    let cost = costs.body["items"][0].clone();
    let operation = cost["operation"].as_str().unwrap().to_owned();
    let path = format!("/v1/admin/credit-costs/{operation}");
    let body = json!({ "cost": cost["cost"], "unit": cost["unit"] });
    assert_eq!(
        api.call(
            "put",
            "/v1/admin/credit-costs/{operation}",
            &path,
            &dev,
            None,
            Some(body)
        )
        .await
        .status,
        200
    );
    let history = "/v1/admin/credit-costs/history";
    assert_eq!(
        api.call(
            "get",
            history,
            &format!("{history}?operation={operation}"),
            &dev,
            None,
            None
        )
        .await
        .status,
        200
    );
    let path = format!("/v1/admin/credit-costs/{operation}/history");
    assert_eq!(
        api.call(
            "get",
            "/v1/admin/credit-costs/{operation}/history",
            &path,
            &dev,
            None,
            None
        )
        .await
        .status,
        200
    );

    // Accounts.
    let opened = api
        .call(
            "post",
            "/v1/accounts",
            "/v1/accounts",
            &dev,
            Some(&key()),
            Some(json!({
                "name": "Schema Co",
                "slug": format!("schema-{}", uuid::Uuid::new_v4().simple()),
                "plan": plan_slug,
                "country": "DE",
                "billing_email": "billing@schema.example",
                "owner_user_id": "user-1",
                "credit_limit": 0,
                "tax_rate": "19",
            })),
        )
        .await;
    assert_eq!(opened.status, 201, "{}", opened.body);
    let id = opened.body["account_id"].as_str().unwrap().to_owned();
    let acc = |suffix: &str| format!("/v1/accounts/{id}{suffix}");
    let owner = server.token(Role::Owner, Some(&id));
    let position = opened.body["position"].as_i64().unwrap();

    let path = format!("{}?min_position={position}", acc(""));
    assert_eq!(
        api.call("get", "/v1/accounts/{account_id}", &path, &dev, None, None)
            .await
            .status,
        200
    );
    let patch = json!({
        "billing_address": { "line1": "Hauptstr. 1", "city": "Berlin", "postal_code": "10115", "country": "DE" },
        "tax_id": "DE123456789",
        "low_balance_threshold": 5,
    });
    assert_eq!(
        api.call(
            "patch",
            "/v1/accounts/{account_id}",
            &acc(""),
            &dev,
            None,
            Some(patch.clone())
        )
        .await
        .status,
        200
    );
    assert_eq!(
        api.call(
            "patch",
            "/v1/account/settings",
            "/v1/account/settings",
            &owner,
            None,
            Some(patch)
        )
        .await
        .status,
        200
    );
    assert_eq!(
        api.call(
            "get",
            "/v1/account/settings",
            "/v1/account/settings",
            &owner,
            None,
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        api.call(
            "get",
            "/v1/accounts/{account_id}/limits",
            &acc("/limits"),
            &dev,
            None,
            None
        )
        .await
        .status,
        200
    );
    assert_eq!(
        api.call(
            "get",
            "/v1/account/limits",
            "/v1/account/limits",
            &owner,
            None,
            None
        )
        .await
        .status,
        200
    );
    let search = "/v1/admin/accounts?q=schema&limit=10";
    assert_eq!(
        api.call("get", "/v1/admin/accounts", search, &dev, None, None)
            .await
            .status,
        200
    );

    // Credits.
    let grant = json!({
        "credits": 1000,
        "source": "promotional",
        "expires_at": (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339(),
        "description": "welcome",
    });
    let r = api
        .call(
            "post",
            "/v1/accounts/{account_id}/grants",
            &acc("/grants"),
            &dev,
            Some(&key()),
            Some(grant),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    let deduct_key = key();
    let deduction = json!({
        "operation": operation,
        "units": 1,
        "model": "gpt-test",
        "tokens_input": 10,
        "tokens_output": 20,
        "cost_usd": "0.0123",
        "related_object_type": "article",
        "related_object_id": "a-1",
        "metadata": { "run": 1 },
    });
    let deducted = api
        .call(
            "post",
            "/v1/accounts/{account_id}/deductions",
            &acc("/deductions"),
            &dev,
            Some(&deduct_key),
            Some(deduction.clone()),
        )
        .await;
    assert_eq!(deducted.status, 201, "{}", deducted.body);
    let replay = api
        .call(
            "post",
            "/v1/accounts/{account_id}/deductions",
            &acc("/deductions"),
            &dev,
            Some(&deduct_key),
            Some(deduction),
        )
        .await;
    assert_eq!(replay.status, 201);
    assert!(replay.replayed, "a replay says so");
    let deduction_id = deducted.body["id"].as_str().unwrap().to_owned();
    let too_much = json!({ "operation": operation, "units": 1_000_000 });
    let refused = api
        .call(
            "post",
            "/v1/accounts/{account_id}/deductions",
            &acc("/deductions"),
            &dev,
            Some(&key()),
            Some(too_much),
        )
        .await;
    assert_eq!(refused.status, 402, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "insufficient_credits");

    let held = api
        .call(
            "post",
            "/v1/accounts/{account_id}/holds",
            &acc("/holds"),
            &dev,
            Some(&key()),
            Some(json!({ "credits": 5, "ttl_seconds": 600 })),
        )
        .await;
    assert_eq!(held.status, 201, "{}", held.body);
    let hold = held.body["id"].as_str().unwrap().to_owned();
    let path = acc(&format!("/holds/{hold}/capture"));
    let captured = api
        .call(
            "post",
            "/v1/accounts/{account_id}/holds/{hold_id}/capture",
            &path,
            &dev,
            Some(&key()),
            Some(json!({ "credits": 3 })),
        )
        .await;
    assert_eq!(captured.status, 200, "{}", captured.body);
    let held = api
        .call(
            "post",
            "/v1/accounts/{account_id}/holds",
            &acc("/holds"),
            &dev,
            Some(&key()),
            Some(json!({ "operation": operation, "units": 1 })),
        )
        .await;
    assert_eq!(held.status, 201, "{}", held.body);
    let hold = held.body["id"].as_str().unwrap().to_owned();
    let path = acc(&format!("/holds/{hold}/release"));
    let released = api
        .call(
            "post",
            "/v1/accounts/{account_id}/holds/{hold_id}/release",
            &path,
            &dev,
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(released.status, 200, "{}", released.body);
    let path = acc(&format!("/deductions/{deduction_id}/refund"));
    let refunded = api
        .call(
            "post",
            "/v1/accounts/{account_id}/deductions/{deduction_id}/refund",
            &path,
            &dev,
            Some(&key()),
            Some(json!({ "reason": "bad output" })),
        )
        .await;
    assert_eq!(refunded.status, 201, "{}", refunded.body);
    let path = format!("/v1/admin/accounts/{id}/adjust-credits");
    let adjusted = api
        .call(
            "post",
            "/v1/admin/accounts/{account_id}/adjust-credits",
            &path,
            &dev,
            Some(&key()),
            Some(json!({ "credits": -2, "reason": "correction" })),
        )
        .await;
    assert_eq!(adjusted.status, 201, "{}", adjusted.body);
    let last = adjusted.body["position"].as_i64().unwrap();

    // Reads, once the read models have every write.
    let fresh = format!("?min_position={last}");
    let reads = [
        ("/v1/accounts/{account_id}/balance", acc("/balance"), &dev),
        (
            "/v1/billing/account_balance",
            "/v1/billing/account_balance".to_owned(),
            &owner,
        ),
        (
            "/v1/accounts/{account_id}/transactions",
            acc("/transactions"),
            &dev,
        ),
        (
            "/v1/billing/transactions",
            "/v1/billing/transactions".to_owned(),
            &owner,
        ),
        ("/v1/accounts/{account_id}/usage", acc("/usage"), &dev),
        ("/v1/billing/usage", "/v1/billing/usage".to_owned(), &owner),
        (
            "/v1/accounts/{account_id}/usage/analytics",
            acc("/usage/analytics"),
            &dev,
        ),
        (
            "/v1/account/usage/analytics",
            "/v1/account/usage/analytics".to_owned(),
            &owner,
        ),
    ];
    for (template, path, token) in reads {
        let r = api
            .call(
                "get",
                template,
                &format!("{path}{fresh}"),
                token,
                None,
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    let transactions = api
        .call(
            "get",
            "/v1/accounts/{account_id}/transactions",
            &acc("/transactions?limit=2"),
            &dev,
            None,
            None,
        )
        .await;
    assert!(
        transactions.body["next_cursor"].is_string(),
        "a page of 2 of 6 entries has a next one"
    );
    for group_by in ["operation", "model"] {
        let path = acc(&format!("/usage/analytics?group_by={group_by}"));
        assert_eq!(
            api.call(
                "get",
                "/v1/accounts/{account_id}/usage/analytics",
                &path,
                &dev,
                None,
                None
            )
            .await
            .status,
            200
        );
    }

    // Suspension: a documented 403 `account_suspended`, then reactivation.
    let path = format!("/v1/admin/accounts/{id}/suspend");
    let r = api
        .call(
            "post",
            "/v1/admin/accounts/{account_id}/suspend",
            &path,
            &dev,
            None,
            Some(json!({ "reason": "audit" })),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api
        .call(
            "post",
            "/v1/accounts/{account_id}/deductions",
            &acc("/deductions"),
            &dev,
            Some(&key()),
            Some(json!({ "operation": operation })),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(r.body["error"]["code"], "account_suspended");
    let path = format!("/v1/admin/accounts/{id}/activate");
    let r = api
        .call(
            "post",
            "/v1/admin/accounts/{account_id}/activate",
            &path,
            &dev,
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Payment methods and billing stats (docs/adr/0013).
    let saved = api
        .call(
            "put",
            "/v1/admin/payment-method-configs/{country}/{method}",
            "/v1/admin/payment-method-configs/DE/bank_transfer",
            &dev,
            None,
            Some(json!({
                "display_name": "SEPA",
                "instructions": "Pay {amount} {currency}, reference {reference}",
                "bank_name": "Acme Bank",
                "account_number": "DE89370400440532013000",
                "swift": "COBADEFFXXX",
                "sort_order": 1,
            })),
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    for (template, path, token) in [
        (
            "/v1/billing/payment-methods",
            "/v1/billing/payment-methods",
            &owner,
        ),
        (
            "/v1/admin/payment-method-configs",
            "/v1/admin/payment-method-configs?country=DE",
            &dev,
        ),
        (
            "/v1/admin/billing/stats",
            "/v1/admin/billing/stats?from=2020-01-01T00:00:00Z",
            &dev,
        ),
    ] {
        let r = api.call("get", template, path, token, None, None).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }

    // Errors are documented where they happen.
    let r = api
        .call("get", "/v1/plans", "/v1/plans", "not-a-token", None, None)
        .await;
    assert_eq!(r.status, 401);
    let r = api
        .call(
            "get",
            "/v1/accounts/{account_id}/balance",
            &acc("/balance?min_position=x"),
            &dev,
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 422);
    let stranger = format!("/v1/accounts/{}", uuid::Uuid::now_v7());
    let r = api
        .call(
            "get",
            "/v1/accounts/{account_id}",
            &stranger,
            &owner,
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 404);

    assert!(
        api.exchanges >= 40,
        "only {} exchanges checked",
        api.exchanges
    );
    assert!(
        api.errors.is_empty(),
        "the document and the server disagree:\n{}",
        api.errors.join("\n")
    );
    server.stop().await;
}

#[test]
fn the_schema_check_catches_extra_missing_and_mistyped_fields() {
    let doc = serde_json::to_value(api::http::openapi::document()).unwrap();
    let schema = json!({ "$ref": "#/components/schemas/Deduction" });
    let good = json!({
        "id": "0191e5a0-0000-7000-8000-000000000001",
        "credits": 3,
        "operation": null,
        "units": 1,
        "cost_version": 2,
        "balance_after": 7,
        "available_after": 7,
        "recorded_at": "2026-03-01T12:00:00.000000Z",
        "position": 9,
    });
    let check = |value: &Value| {
        let mut errors = Vec::new();
        validate(&doc, &schema, value, "body", &mut errors);
        errors
    };
    assert_eq!(check(&good), Vec::<String>::new());
    let mut extra = good.clone();
    extra["surprise"] = json!(1);
    assert_eq!(check(&extra), ["body: surprise is not documented"]);
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("position");
    assert_eq!(check(&missing), ["body: required position is missing"]);
    let mut mistyped = good.clone();
    mistyped["credits"] = json!("3");
    assert_eq!(check(&mistyped).len(), 1);
    let mut bad_time = good;
    bad_time["recorded_at"] = json!("yesterday");
    assert_eq!(check(&bad_time).len(), 1);

    // Flattened schemas (allOf) are checked as one object.
    let saved = json!({ "$ref": "#/components/schemas/SavedCost" });
    let mut errors = Vec::new();
    let cost = json!({
        "operation": "x", "display_name": "X", "description": null, "is_active": true,
        "cost": 1, "credits_cost": 1, "unit": "per_request", "unit_size": 1, "version": 1,
        "position": 4,
    });
    validate(&doc, &saved, &cost, "cost", &mut errors);
    assert_eq!(errors, Vec::<String>::new());
    let mut wrong_unit = cost;
    wrong_unit["unit"] = json!("per_word");
    validate(&doc, &saved, &wrong_unit, "cost", &mut errors);
    assert_eq!(errors.len(), 1, "{errors:?}");
}
