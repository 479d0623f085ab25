//! A hostile tenant (SPEC §3 "A token for account A asking for account B
//! gets 404", §9 "No tenant ever sees another's data"), on PostgreSQL and
//! SQLite, through the real router over real HTTP.
//!
//! Tenant B has a bit of everything: an active (paid) subscription, a
//! pending purchase invoice with its pending manual payment, a deduction,
//! an open hold. Tenant A, with every role it has (owner, admin, editor,
//! viewer, and a system_bot scoped to A), calls **every operation of the
//! server's own `/openapi.json`**, with B's real ids wherever the operation
//! takes an id (path, `account_id`/`invoice_id` query parameters, body
//! fields). Operations the test does not know how to aim at B (a new path
//! parameter, a new request body) fail the test, so that a new route cannot
//! be forgotten.
//!
//! Checked for every call that names one of B's ids:
//! - the answer is 404 `not_found` or 403 `forbidden`, never 2xx, in the
//!   SPEC's error format;
//! - it reveals nothing of B's existence: the same call with ids that do not
//!   exist answers the same status, code and (ids masked) message. A 403
//!   therefore means "this role may not call this route at all", never
//!   "this is someone else's"; which routes answer which is printed;
//!
//! for every call that does not (A's own aliases, catalog, operations
//! routes without a token): whatever it answers carries none of B's ids,
//! slug, name, e-mail, owner or invoice numbers; `/v1/admin/*` and
//! `POST /v1/accounts` answer 403 to all of A's roles;
//!
//! and afterwards B's account, balance, limits, transactions, usage,
//! invoices, payments and subscriptions read exactly as before, and no event
//! written meanwhile mentions B.
//!
//! Within its own account, no role of a tenant may refund its own usage
//! (SPEC §3: refunds are the developer's alone), or it could mint itself
//! credits.
//!
//! Over NATS (`ledger.commands.*` with a nats-server of the test's own),
//! A's system_bot token asking to deduct from, hold on, capture or release
//! B's account or hold gets a 404 `not_found` reply and changes nothing.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::auth::Role;
use async_nats::HeaderMap;
use common::{key, random_account, random_uuid, Api, Backend, Server};
use reqwest::Method;
use serde_json::{json, Value};

/// One tenant and the ids of what it owns.
#[derive(Debug, Clone)]
struct Tenant {
    account: String,
    slug: String,
    name: String,
    billing_email: String,
    owner_user: String,
    deduction: String,
    hold: String,
    /// The pending purchase invoice and its pending manual payment.
    invoice: String,
    invoice_number: String,
    invoice_total: Value,
    payment: String,
    /// The subscription's first invoice, paid, and its approved payment.
    paid_invoice: String,
    paid_invoice_number: String,
    approved_payment: String,
    subscription: String,
}

impl Tenant {
    /// The same tenant with ids nobody has: what a probe for a missing
    /// tenant looks like.
    fn nobody() -> Self {
        Self {
            account: random_account(),
            slug: "nobody".into(),
            name: "nobody".into(),
            billing_email: "nobody@nobody.example".into(),
            owner_user: "user-nobody".into(),
            deduction: random_uuid(),
            hold: random_uuid(),
            invoice: random_uuid(),
            invoice_number: "INV-0000-000000".into(),
            invoice_total: json!("1.00"),
            payment: random_uuid(),
            paid_invoice: random_uuid(),
            paid_invoice_number: "INV-0000-000000".into(),
            approved_payment: random_uuid(),
            subscription: random_uuid(),
        }
    }

    /// Every id of this tenant, to mask in messages.
    fn ids(&self) -> Vec<&str> {
        vec![
            &self.account,
            &self.deduction,
            &self.hold,
            &self.invoice,
            &self.payment,
            &self.paid_invoice,
            &self.approved_payment,
            &self.subscription,
        ]
    }

    /// What no answer to another tenant may contain.
    fn markers(&self) -> Vec<&str> {
        let mut m = self.ids();
        m.extend([
            self.slug.as_str(),
            self.name.as_str(),
            self.billing_email.as_str(),
            self.owner_user.as_str(),
            self.invoice_number.as_str(),
            self.paid_invoice_number.as_str(),
        ]);
        m
    }
}

/// A developer token with its own `sub`, for maker-checker approval.
fn second_developer(api: &Api) -> String {
    let claims = api::auth::Claims::new(
        "approver",
        Role::Developer,
        None,
        common::now_unix(),
        Duration::from_secs(3600),
    )
    .unwrap();
    api.keys.mint(&claims)
}

/// A tenant on an active starter subscription (first invoice paid and
/// approved), 1,000 credits granted, one deduction, one open hold, and a
/// pending `pro` package purchase by bank transfer.
async fn tenant(api: &Api) -> Tenant {
    let slug = common::unique_slug();
    let body = Api::account_body(&slug);
    let account = api.open_account_with(body.clone()).await.expect(201)["account_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let owner = api.owner(&account);
    let created = api
        .post(
            "/v1/billing/subscriptions/create",
            &owner,
            Some(&key()),
            json!({ "plan": "starter", "method": "bank_transfer" }),
        )
        .await;
    let created = created.expect(201).clone();
    let subscription = created["id"].as_str().unwrap().to_owned();
    let paid_invoice = created["open_invoices"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("a first invoice: {created}"))
        .to_owned();
    let first = api.invoice_now(&account, &paid_invoice).await;
    let paid = api
        .post(
            "/v1/billing/payments/manual",
            &owner,
            Some(&key()),
            json!({
                "invoice_id": paid_invoice,
                "method": "bank_transfer",
                "reference": "FIRST-INVOICE",
                "amount": first["total"],
            }),
        )
        .await;
    let approved_payment = paid.expect(201)["id"].as_str().unwrap().to_owned();
    api.post_empty(
        &format!("/v1/admin/payments/{approved_payment}/approve"),
        &second_developer(api),
        None,
    )
    .await
    .expect(200);

    api.grant(&account, 1_000).await;
    let deduction = api
        .deduct(&account, json!({ "operation": "clustering" }))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let hold = api
        .hold(&account, json!({ "credits": 50 }))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let bought = api
        .post(
            "/v1/billing/credits/purchase",
            &owner,
            Some(&key()),
            json!({ "package": "pro", "method": "bank_transfer" }),
        )
        .await;
    let bought = bought.expect(201).clone();
    let paid_invoice_number = api.invoice_now(&account, &paid_invoice).await["number"]
        .as_str()
        .unwrap()
        .to_owned();
    Tenant {
        slug: slug.clone(),
        name: body["name"].as_str().unwrap().to_owned(),
        billing_email: body["billing_email"].as_str().unwrap().to_owned(),
        owner_user: body["owner_user_id"].as_str().unwrap().to_owned(),
        account,
        deduction,
        hold,
        invoice: bought["invoice"]["id"].as_str().unwrap().to_owned(),
        invoice_number: bought["invoice"]["number"].as_str().unwrap().to_owned(),
        invoice_total: bought["invoice"]["total"].clone(),
        payment: bought["payment"]["id"].as_str().unwrap().to_owned(),
        paid_invoice,
        paid_invoice_number,
        approved_payment,
        subscription,
    }
}

/// A's tokens, one per role it has.
fn roles_of(api: &Api, a: &str) -> Vec<(&'static str, String)> {
    vec![
        ("owner", api.owner(a)),
        ("admin", api.admin(a)),
        ("editor", api.editor(a)),
        ("viewer", api.viewer(a)),
        ("system_bot", api.bot(Some(a))),
    ]
}

/// Operations that take no token, so no role of A changes what they say;
/// they are still checked for B's data.
fn is_operations_route(path: &str) -> bool {
    !path.starts_with("/v1/")
}

/// Operations called with no bearer token at all, with why.
const NOT_CALLED: &[(&str, &str)] = &[
    (
        "POST /v1/billing/webhooks/stripe",
        "authenticated by Stripe's signature, not a token: tenant tokens are irrelevant",
    ),
    (
        "POST /v1/billing/webhooks/paypal",
        "authenticated by PayPal verifying the delivery, not a token: tenant tokens are irrelevant",
    ),
    ("GET /docs/{file}", "vendored Swagger UI assets"),
];

/// What a path parameter is set to: one of the tenant's ids, or a fixed
/// value for parameters that name no tenant's data. `None` for a name the
/// test does not know.
fn path_value(name: &str, t: &Tenant) -> Option<(String, bool)> {
    Some(match name {
        "account_id" => (t.account.clone(), true),
        "deduction_id" => (t.deduction.clone(), true),
        "hold_id" => (t.hold.clone(), true),
        "invoice_id" => (t.invoice.clone(), true),
        "payment_id" => (t.payment.clone(), true),
        "subscription_id" => (t.subscription.clone(), true),
        "user_id" => (t.owner_user.clone(), true),
        "invitation_id" => (random_uuid(), true),
        // Not tenant data: the catalog and the payment method table.
        "slug" => ("starter".into(), false),
        "operation" => ("clustering".into(), false),
        "country" => ("US".into(), false),
        "method" => ("bank_transfer".into(), false),
        // A saved card lives at Stripe, which this sweep's server has not
        // configured (503 for everyone); a card id of another tenant is
        // refused in tests/stripe.rs against the Stripe stub.
        "payment_method_id" => ("pm_hostile".into(), false),
        // Staff configuration, not a tenant's.
        "endpoint_id" => (format!("we_{}", uuid::Uuid::new_v4().simple()), false),
        "delivery_id" => (random_uuid(), false),
        _ => return None,
    })
}

/// The request body of an operation, aimed at tenant `t` where the body can
/// name an account or invoice; each is a body the operation accepts (so a
/// missing check would show as a 2xx). `None` for an operation the test
/// does not know.
fn body_for(op: &str, t: &Tenant) -> Option<Value> {
    Some(match op {
        "POST /v1/accounts" => Api::account_body(&common::unique_slug()),
        "PATCH /v1/accounts/{account_id}" | "PATCH /v1/account/settings" => {
            json!({ "billing_email": "hostile@tenant-a.example", "name": "Taken over" })
        }
        "POST /v1/accounts/{account_id}/deductions" => json!({ "operation": "clustering" }),
        "POST /v1/accounts/{account_id}/deductions/batch" => {
            json!({ "items": [{ "idempotency_key": "hostile-1", "operation": "clustering" }] })
        }
        // Items name their accounts: each is scoped on its own.
        "POST /v1/deductions/batch" => json!({ "items": [
            { "idempotency_key": "hostile-1", "operation": "clustering", "account_id": t.account }
        ] }),
        "POST /v1/accounts/{account_id}/holds" => json!({ "credits": 5 }),
        "POST /v1/accounts/{account_id}/holds/{hold_id}/capture" => json!({ "credits": 1 }),
        "POST /v1/accounts/{account_id}/holds/{hold_id}/release" => json!({}),
        "POST /v1/accounts/{account_id}/deductions/{deduction_id}/refund" => {
            json!({ "credits": 1, "reason": "hostile" })
        }
        "POST /v1/accounts/{account_id}/grants" => {
            json!({ "credits": 1_000_000, "source": "promotional" })
        }
        "POST /v1/admin/accounts/{account_id}/adjust-credits" => {
            json!({ "credits": 1_000_000, "reason": "hostile" })
        }
        "POST /v1/admin/accounts/{account_id}/suspend"
        | "POST /v1/admin/accounts/{account_id}/activate"
        | "POST /v1/admin/invoices/{invoice_id}/void"
        | "POST /v1/admin/invoices/{invoice_id}/mark-uncollectible" => {
            json!({ "reason": "hostile" })
        }
        "POST /v1/admin/payments/{payment_id}/approve" => json!({}),
        "POST /v1/admin/payments/{payment_id}/reject" => json!({ "reason": "hostile" }),
        "POST /v1/admin/payments/{payment_id}/refund" => json!({ "reason": "hostile" }),
        "POST /v1/admin/billing/run-periods" => json!({}),
        "POST /v1/admin/billing/stripe/sync" => json!({ "subscription_id": "sub_hostile" }),
        // A tenant revoking tokens would lock workers out: staff only.
        "POST /v1/admin/tokens/revoke" => json!({ "jti": "hostile-jti" }),
        "PUT /v1/admin/credit-costs/{operation}" => json!({ "cost": 0 }),
        "PUT /v1/admin/credit-packages/{slug}" => json!({ "price": "0.01" }),
        "PUT /v1/admin/plans/{slug}" => json!({ "price": "0.01" }),
        "PUT /v1/admin/payment-method-configs/{country}/{method}" => json!({ "enabled": false }),
        "POST /v1/billing/credits/purchase" => {
            json!({ "package": "starter", "method": "bank_transfer" })
        }
        "POST /v1/billing/payments/manual" => json!({
            "invoice_id": t.invoice,
            "method": "bank_transfer",
            "reference": "HOSTILE",
            "amount": t.invoice_total,
            "account_id": t.account,
        }),
        "POST /v1/billing/subscriptions/create" => {
            json!({ "plan": "professional", "method": "bank_transfer", "account_id": t.account })
        }
        "POST /v1/billing/subscriptions/upgrade" => {
            json!({ "plan": "enterprise", "account_id": t.account })
        }
        "POST /v1/billing/subscriptions/cancel" => {
            json!({ "at_period_end": false, "account_id": t.account })
        }
        "POST /v1/accounts/{account_id}/team/invite" | "POST /v1/account/team/invite" => {
            json!({ "email": "hostile@tenant-a.example", "role": "owner" })
        }
        // A token nobody issued: accepting is any signed token's, by design.
        "POST /v1/team/invitations/accept" => json!({ "token": "inv_hostile" }),
        "PATCH /v1/accounts/{account_id}/team/{user_id}" | "PATCH /v1/account/team/{user_id}" => {
            json!({ "role": "viewer" })
        }
        "POST /v1/accounts/{account_id}/team" => {
            json!({ "user_id": "hostile", "email": "hostile@tenant-a.example", "role": "owner" })
        }
        "POST /v1/accounts/{account_id}/transfer-ownership" => json!({ "user_id": t.owner_user }),
        "PUT /v1/accounts/{account_id}/usage-counts" => json!({ "sites": 1_000 }),
        "PUT /v1/admin/accounts/{account_id}/limits" => json!({ "max_users": null }),
        // Staff writing an invoice onto the target tenant's account.
        "POST /v1/admin/invoices" => json!({
            "account_id": t.account,
            "lines": [{ "description": "hostile", "unit_price": "0.01" }],
        }),
        "POST /v1/admin/invoices/{invoice_id}/finalize" => json!({}),
        "POST /v1/billing/payments/{payment_id}/cancel"
        | "POST /v1/admin/payments/{payment_id}/cancel" => json!({ "reason": "hostile" }),
        "POST /v1/billing/subscriptions/reactivate" => json!({ "account_id": t.account }),
        "POST /v1/billing/payment-methods" => json!({ "type": "card" }),
        "PUT /v1/accounts/{account_id}/budget" | "PUT /v1/account/budget" => {
            json!({ "monthly_credits": 1, "hard_cap": true })
        }
        "PUT /v1/accounts/{account_id}/auto-top-up" | "PUT /v1/account/auto-top-up" => {
            json!({ "threshold": 10, "package": "pro", "method": "bank_transfer" })
        }
        "POST /v1/admin/webhook-endpoints" => {
            json!({ "url": "http://127.0.0.1:9/hostile", "account_id": t.account })
        }
        _ => return None,
    })
}

/// Query parameters that can name a tenant's data.
fn query_value(name: &str, t: &Tenant) -> Option<String> {
    match name {
        "account_id" => Some(t.account.clone()),
        "invoice_id" => Some(t.invoice.clone()),
        _ => None,
    }
}

/// One request of the sweep.
#[derive(Debug, Clone)]
struct Call {
    op: String,
    method: Method,
    url: String,
    body: Option<Value>,
    /// Whether it names one of the target tenant's ids.
    aims_at_target: bool,
}

/// Every operation of the document, aimed at tenant `t`; operations in
/// [`NOT_CALLED`] excepted. Panics on what it cannot aim.
fn calls(doc: &Value, t: &Tenant) -> Vec<Call> {
    let mut out = Vec::new();
    let paths = doc["paths"].as_object().expect("the document has paths");
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                continue;
            }
            let name = format!("{m} {path}");
            if NOT_CALLED.iter().any(|(n, _)| *n == name) {
                continue;
            }
            let mut url = path.clone();
            let mut aims = false;
            let mut query = Vec::new();
            for p in op["parameters"].as_array().into_iter().flatten() {
                let pname = p["name"].as_str().unwrap();
                match p["in"].as_str().unwrap() {
                    "path" => {
                        let (value, tenant_data) = path_value(pname, t).unwrap_or_else(|| {
                            panic!(
                                "{name}: unknown path parameter {pname}: teach \
                                 hostile_tenant.rs which of a tenant's ids it takes"
                            )
                        });
                        aims |= tenant_data;
                        url = url.replace(&format!("{{{pname}}}"), &value);
                    }
                    "query" => {
                        if let Some(v) = query_value(pname, t) {
                            aims = true;
                            query.push(format!("{pname}={v}"));
                        }
                    }
                    _ => {}
                }
            }
            assert!(!url.contains('{'), "{name}: a path parameter left in {url}");
            if !query.is_empty() {
                url = format!("{url}?{}", query.join("&"));
            }
            let body = if op.get("requestBody").is_some() {
                let b = body_for(&name, t).unwrap_or_else(|| {
                    panic!(
                        "{name}: a request body the test does not know: teach \
                         hostile_tenant.rs a valid body, aimed at the tenant where it can be"
                    )
                });
                let text = b.to_string();
                aims |= t.ids().iter().any(|id| text.contains(id));
                Some(b)
            } else {
                None
            };
            out.push(Call {
                op: name,
                method: m,
                url,
                body,
                aims_at_target: aims,
            });
        }
    }
    out
}

/// A batch read whole answers 200 with each item's outcome: a batch of one
/// item is judged by that item's status and error, like a single request.
fn per_item(mut r: common::Resp) -> common::Resp {
    let item = match r.body["items"].as_array() {
        Some(items) if r.status == 200 && items.len() == 1 && items[0].get("index").is_some() => {
            items[0].clone()
        }
        _ => return r,
    };
    if let Some(status) = item["status"].as_u64() {
        r.status = u16::try_from(status).unwrap_or(0);
    }
    r.body = json!({ "error": item["error"] });
    r
}

async fn send(api: &Api, call: &Call, token: &str) -> common::Resp {
    let token = (!is_operations_route(&call.url)).then_some(token);
    api.send(
        call.method.clone(),
        &call.url,
        token,
        Some(&key()),
        call.body.as_ref().map(Value::to_string),
    )
    .await
}

/// `text` with `ids` replaced by `<id>`.
fn masked(text: &str, ids: &[&str]) -> String {
    ids.iter()
        .fold(text.to_owned(), |acc, id| acc.replace(id, "<id>"))
}

/// What B looks like to a developer, minus the read models' own position.
async fn snapshot(api: &Api, b: &Tenant) -> BTreeMap<String, Value> {
    let head = api.head().await;
    let a = &b.account;
    let mut out = BTreeMap::new();
    let developer = api.developer();
    let owner = api.owner(a);
    for (path, token) in [
        (format!("/v1/accounts/{a}"), &developer),
        (format!("/v1/accounts/{a}/balance"), &developer),
        (format!("/v1/accounts/{a}/limits"), &developer),
        (
            format!("/v1/accounts/{a}/transactions?limit=500"),
            &developer,
        ),
        (format!("/v1/accounts/{a}/usage?limit=500"), &developer),
        (
            format!("/v1/admin/invoices?account_id={a}&limit=500"),
            &developer,
        ),
        (
            format!("/v1/admin/payments?account_id={a}&limit=500"),
            &developer,
        ),
        (
            format!("/v1/billing/subscriptions?account_id={a}"),
            &developer,
        ),
        // Invoices by id are the account's owner's and admin's to read.
        (format!("/v1/billing/invoices/{}", b.invoice), &owner),
        (format!("/v1/billing/invoices/{}", b.paid_invoice), &owner),
        (format!("/v1/accounts/{a}/budget"), &developer),
        (format!("/v1/accounts/{a}/auto-top-up"), &developer),
    ] {
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = api
            .get(&format!("{path}{sep}min_position={head}"), token)
            .await;
        let mut body = r.expect(200).clone();
        if let Some(o) = body.as_object_mut() {
            o.remove("position");
            // A forecast moves with the clock, not with B's data.
            o.remove("runs_out_at");
        }
        out.insert(path, body);
    }
    out
}

/// Every event of the log, as text, from `after` on.
async fn log_text_after(store: &store::Store, mut after: i64) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    loop {
        let batch = store.read_after(after, 1_000).await.expect("read the log");
        let Some(last) = batch.last() else {
            return out;
        };
        after = last.position;
        out.extend(batch.iter().map(|e| {
            (
                e.position,
                format!(
                    "{} {} {} {}",
                    e.aggregate_id, e.event_type, e.payload, e.metadata
                ),
            )
        }));
    }
}

async fn a_tenant_reaches_nothing_of_another_through_any_route(api: &Api, store: &store::Store) {
    let a = tenant(api).await;
    let b = tenant(api).await;
    let before = snapshot(api, &b).await;
    let head_before = store.head_position().await.unwrap();

    let doc = api
        .send(Method::GET, "/openapi.json", None, None, None)
        .await
        .expect(200)
        .clone();
    let nobody = Tenant::nobody();
    let at_b = calls(&doc, &b);
    let at_nobody = calls(&doc, &nobody);
    assert_eq!(at_b.len(), at_nobody.len());
    // The sweep reaches each family the SPEC names.
    let ops: BTreeSet<&str> = at_b.iter().map(|c| c.op.as_str()).collect();
    for must in [
        "GET /v1/accounts/{account_id}",
        "PATCH /v1/accounts/{account_id}",
        "GET /v1/accounts/{account_id}/balance",
        "GET /v1/accounts/{account_id}/transactions",
        "GET /v1/accounts/{account_id}/usage",
        "GET /v1/accounts/{account_id}/usage/analytics",
        "GET /v1/accounts/{account_id}/limits",
        "POST /v1/accounts/{account_id}/deductions",
        "POST /v1/accounts/{account_id}/holds",
        "POST /v1/accounts/{account_id}/holds/{hold_id}/capture",
        "POST /v1/accounts/{account_id}/holds/{hold_id}/release",
        "POST /v1/accounts/{account_id}/deductions/{deduction_id}/refund",
        "POST /v1/accounts/{account_id}/grants",
        "POST /v1/admin/accounts/{account_id}/adjust-credits",
        "GET /v1/billing/invoices/{invoice_id}",
        "GET /v1/billing/invoices/{invoice_id}/pdf",
        "POST /v1/billing/payments/manual",
        "POST /v1/admin/payments/{payment_id}/approve",
        "POST /v1/billing/subscriptions/create",
        "GET /v1/billing/subscriptions",
        "POST /v1/billing/credits/purchase",
    ] {
        assert!(ops.contains(must), "/openapi.json lacks {must}");
    }

    let mut failures = Vec::new();
    // (operation, role) → status, for the calls aimed at B.
    let mut answers: BTreeMap<String, BTreeMap<&str, u16>> = BTreeMap::new();
    let b_ids = b.ids();
    let nobody_ids = nobody.ids();
    let mut aimed = 0;
    for (role, token) in roles_of(api, &a.account) {
        for (call, probe) in at_b.iter().zip(&at_nobody) {
            let r = per_item(send(api, call, &token).await);
            // What the caller sent may come back (a batch item's
            // `account_id`); anything else of B's is a leak.
            let sent = call.body.as_ref().map(Value::to_string).unwrap_or_default();
            let leaked: Vec<&str> = b
                .markers()
                .into_iter()
                .filter(|m| !call.url.contains(m) && !sent.contains(m) && r.text.contains(m))
                .collect();
            if !leaked.is_empty() {
                failures.push(format!(
                    "{role} {} {}: the answer carries B's {leaked:?}: HTTP {} {}",
                    call.method,
                    call.url,
                    r.status,
                    r.text.chars().take(300).collect::<String>()
                ));
            }
            let admin_only = call.op.contains(" /v1/admin/") || call.op == "POST /v1/accounts";
            if admin_only && r.status != 403 {
                failures.push(format!(
                    "{role} {}: a developer-only route must be 403 forbidden, got HTTP {}: {}",
                    call.op, r.status, r.text
                ));
            }
            if !call.aims_at_target {
                continue;
            }
            aimed += 1;
            answers
                .entry(call.op.clone())
                .or_default()
                .insert(role, r.status);
            let code = r.body["error"]["code"].as_str().unwrap_or("");
            let well_formed = r.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
                && r.body["error"]["details"].is_object();
            match (r.status, code) {
                (404, "not_found") | (403, "forbidden") if well_formed => {}
                _ => failures.push(format!(
                    "{role} {} {} (body {:?}): expected 404 not_found or 403 forbidden, got HTTP {}: {}",
                    call.method,
                    call.url,
                    call.body.as_ref().map(Value::to_string),
                    r.status,
                    r.text
                )),
            }
            // The same call for a tenant that does not exist answers alike.
            let p = per_item(send(api, probe, &token).await);
            let said = |r: &common::Resp, ids: &[&str]| {
                (
                    r.status,
                    r.body["error"]["code"].clone(),
                    masked(r.body["error"]["message"].as_str().unwrap_or(""), ids),
                )
            };
            if said(&r, &b_ids) != said(&p, &nobody_ids) {
                failures.push(format!(
                    "{role} {}: B's ids and missing ids answer differently, so B's existence \
                     shows: HTTP {} {} vs HTTP {} {}",
                    call.op, r.status, r.text, p.status, p.text
                ));
            }
        }
    }
    eprintln!("{aimed} calls aimed at B; answers by operation and role:");
    for (op, by_role) in &answers {
        eprintln!("  {op}: {by_role:?}");
    }
    assert!(aimed >= 5 * 25, "the sweep aimed at B: {aimed} calls");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // B is untouched: what it reads, and the log.
    let after = snapshot(api, &b).await;
    for (path, was) in &before {
        assert_eq!(&after[path], was, "{path} changed under A's calls");
    }
    let written = log_text_after(store, head_before).await;
    let touching: Vec<String> = written
        .iter()
        .filter(|(_, text)| b.ids().iter().any(|id| text.contains(id)))
        .map(|(p, text)| format!("{p}: {}", text.chars().take(300).collect::<String>()))
        .collect();
    assert!(
        touching.is_empty(),
        "events written during A's calls mention B:\n{}",
        touching.join("\n")
    );
}
on_both_backends!(store a_tenant_reaches_nothing_of_another_through_any_route);

/// SPEC §3's role table: refunds of usage are the developer's alone
/// (`POST /accounts/{id}/deductions/{deduction}/refund | D`). A tenant's own
/// staff refunding its own usage would hand the tenant free credits.
async fn a_tenant_may_not_refund_its_own_usage_with_any_of_its_roles(api: &Api) {
    let (a, _) = api.funded_account(100).await;
    let deduction = api
        .deduct(&a, json!({ "operation": "clustering" }))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = api.balance_now(&a).await;
    assert_eq!(before, 90);
    let mut refused = Vec::new();
    for (role, token) in roles_of(api, &a) {
        let r = api
            .post(
                &format!("/v1/accounts/{a}/deductions/{deduction}/refund"),
                &token,
                Some(&key()),
                json!({ "credits": 10, "reason": "we liked it less than expected" }),
            )
            .await;
        if r.status != 403 || r.body["error"]["code"] != "forbidden" {
            refused.push(format!(
                "A's {role} refunding A's own deduction: HTTP {} {}",
                r.status, r.text
            ));
        }
    }
    let after = api.balance_now(&a).await;
    assert!(
        refused.is_empty() && after == before,
        "only a developer may refund usage (SPEC §3); balance {before} → {after}:\n{}",
        refused.join("\n")
    );
}
on_both_backends!(a_tenant_may_not_refund_its_own_usage_with_any_of_its_roles);

// ------------------------------------------------------------------ NATS

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A nats-server of the test's own (`NATS_SERVER` or
/// `/usr/sbin/nats-server`): the subjects and queue group are fixed by the
/// SPEC, so a shared server would hand our commands to other tests'
/// servers.
struct NatsServer {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl NatsServer {
    async fn start() -> Self {
        let binary =
            std::env::var("NATS_SERVER").unwrap_or_else(|_| "/usr/sbin/nats-server".into());
        let dir = tempfile::tempdir().expect("a storage folder");
        let port = free_port();
        let child = Command::new(&binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("nats-server must be installed ({binary}): {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
        {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port} within 20 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Self {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn nats_command(
    client: &async_nats::Client,
    kind: &str,
    token: &str,
    payload: Value,
) -> Value {
    let mut headers = HeaderMap::new();
    headers.insert("Authorization", format!("Bearer {token}").as_str());
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        client.request_with_headers(
            format!("ledger.commands.{kind}"),
            headers,
            payload.to_string().into(),
        ),
    )
    .await
    .expect("a reply within 30 s")
    .expect("a reply");
    serde_json::from_slice(&reply.payload)
        .unwrap_or_else(|_| panic!("a JSON reply: {:?}", reply.payload))
}

async fn over_nats_a_tenant_reaches_nothing_of_another(backend: Backend) {
    let nats = NatsServer::start().await;
    let server = Server::start_with(backend, &["--nats-url", &nats.url()]).await;
    let api: Arc<Api> = server.api.clone();
    let nats_url = nats.url();
    let body = async move {
        // The server's NATS client is connected before commands are sent.
        let deadline = Instant::now() + Duration::from_secs(30);
        while api.send(Method::GET, "/ready", None, None, None).await.body["nats"] != "ok" {
            assert!(Instant::now() < deadline, "NATS never connected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let client = async_nats::connect(nats_url).await.expect("a NATS client");
        let (a, _) = api.funded_account(100).await;
        let (b, _) = api.funded_account(100).await;
        let b_hold = api.hold(&b, json!({ "credits": 10 })).await.expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let a_hold = api.hold(&a, json!({ "credits": 10 })).await.expect(201)["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let head = api.head().await;
        let b_before = api.balance(&b, head).await;
        let a_bot = api.bot(Some(&a));
        let attempts = [
            (
                "deduct",
                json!({ "account_id": b, "idempotency_key": key(), "operation": "clustering" }),
            ),
            (
                "hold",
                json!({ "account_id": b, "idempotency_key": key(), "credits": 5 }),
            ),
            (
                "capture",
                json!({ "account_id": b, "idempotency_key": key(), "hold_id": b_hold, "credits": 1 }),
            ),
            (
                "release",
                json!({ "account_id": b, "idempotency_key": key(), "hold_id": b_hold }),
            ),
            // A's own account, B's hold: the hold is not A's either.
            (
                "capture",
                json!({ "account_id": a, "idempotency_key": key(), "hold_id": b_hold, "credits": 1 }),
            ),
            (
                "release",
                json!({ "account_id": a, "idempotency_key": key(), "hold_id": b_hold }),
            ),
        ];
        for (kind, payload) in attempts {
            let reply = nats_command(&client, kind, &a_bot, payload.clone()).await;
            assert_eq!(
                (reply["status"].as_u64(), reply["error"]["code"].as_str()),
                (Some(404), Some("not_found")),
                "A's system_bot on ledger.commands.{kind} with {payload}: {reply}"
            );
            assert!(
                !reply.to_string().contains(&b_hold) || payload.to_string().contains(&b_hold),
                "{reply}"
            );
        }
        // B's hold is still open and B's balance unchanged; A's own hold
        // answers (the commands work at all).
        let released = nats_command(
            &client,
            "release",
            &a_bot,
            json!({ "account_id": a, "idempotency_key": key(), "hold_id": a_hold }),
        )
        .await;
        assert_eq!(released["hold_id"], a_hold.as_str(), "{released}");
        let head = api.head().await;
        let b_after = api.balance(&b, head).await;
        assert_eq!(
            (&b_after["balance"], &b_after["held"], &b_after["available"]),
            (
                &b_before["balance"],
                &b_before["held"],
                &b_before["available"]
            ),
            "B's balance after A's NATS commands"
        );
        assert_eq!(b_after["held"], 10, "B's hold is still open: {b_after}");
    };
    let outcome = tokio::spawn(body).await;
    server.stop().await;
    drop(nats);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_nats_a_tenant_reaches_nothing_of_another_on_postgres() {
    over_nats_a_tenant_reaches_nothing_of_another(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn over_nats_a_tenant_reaches_nothing_of_another_on_sqlite() {
    over_nats_a_tenant_reaches_nothing_of_another(Backend::Sqlite).await;
}
