//! Pins the request hashes idempotency keys are bound to, through the real
//! router over real HTTP, on PostgreSQL and SQLite.
//!
//! A claimed key is stored with `sha256("{route}\n{canonical body}")` in hex,
//! the canonical body being the JSON re-serialized with sorted keys and no
//! spaces (README "Idempotency keys", docs/adr/0004-idempotency.md). Keys
//! are kept forever, so a key claimed by one release must still replay on
//! the next: a change to a route word, to the canonical form or to the
//! stream a claim is kept on would turn every old retry into
//! `409 idempotency_key_reused` (or a second write). Each test sends writes
//! with fixed keys and fixed bodies (keys out of order, with whitespace),
//! reads every row of the claim table back, and compares it with hashes that
//! are both hard-coded and recomputed here from the formula. Routes whose
//! word carries a server-made id (a hold's, a deduction's) or whose body
//! does (an invoice id) cannot have a literal; for them the formula is
//! pinned. Claims the server makes itself (the credits of a paid purchase,
//! of a paid subscription invoice, the credits a refund takes back) are
//! pinned the same way. Every write is then retried, as first spelled and
//! in its canonical spelling, and must answer `Idempotent-Replayed: true`.

mod common;

use common::Api;
use reqwest::Method;
use serde_json::Value;
use sha2::{Digest, Sha256};
use store::Store;

// ---------------------------------------------------------------------------
// The pinned requests: raw body as sent, canonical body, hash where fixed
// ---------------------------------------------------------------------------

const OPEN_RAW: &str = r#"{
    "slug": "pinned-acme",
    "name": "Acme Pinned",
    "plan": "starter",
    "owner_user_id": "user-pinned",
    "country": "US",
    "billing_email": "billing@pinned.example"
}"#;
const OPEN_CANONICAL: &str = r#"{"billing_email":"billing@pinned.example","country":"US","name":"Acme Pinned","owner_user_id":"user-pinned","plan":"starter","slug":"pinned-acme"}"#;
const OPEN_HASH: &str = "b351038b1488d23d2a67c708622d87e52ae0ceb52b3114031f88e42c8b8d958c";

/// `\u00e9` is sent escaped and hashed as the character itself.
const GRANT_RAW: &str =
    r#"{ "source": "purchase",  "description": "Caf\u00e9 top-up", "credits": 1000 }"#;
const GRANT_CANONICAL: &str = r#"{"credits":1000,"description":"Café top-up","source":"purchase"}"#;
const GRANT_HASH: &str = "c692a99c7a341c0e6fa84c7b8cd224a425958561fa7ce7c90a66059707ee770d";

/// Nested keys are sorted too, and `0.50` is hashed as `0.5`.
const DEDUCT_RAW: &str = r#"{
    "units": 250,
    "operation": "content_generation",
    "metadata": { "job": "j-1", "attempt": 2, "ratio": 0.50 },
    "model": "gpt-4o"
}"#;
const DEDUCT_CANONICAL: &str = r#"{"metadata":{"attempt":2,"job":"j-1","ratio":0.5},"model":"gpt-4o","operation":"content_generation","units":250}"#;
const DEDUCT_HASH: &str = "b0c71ba56c3e4edc1d3e55565b63327c35169c84bce26f0046415c440fd0a8d7";

const HOLD_RAW: &str = r#"{ "ttl_seconds": 600, "credits": 40 }"#;
const HOLD_CANONICAL: &str = r#"{"credits":40,"ttl_seconds":600}"#;
const HOLD_HASH: &str = "383a9ece7f6c8c7c279d91d473b96805443ae1fdb579b444184b78b2ad77abe1";

/// Route `holds/{hold_id}/capture`: no literal, the hold id is the server's.
const CAPTURE_RAW: &str = r#"{ "related_object_id": "a-1", "credits": 25 }"#;
const CAPTURE_CANONICAL: &str = r#"{"credits":25,"related_object_id":"a-1"}"#;

/// Route `holds/{hold_id}/release`; an empty object is `{}`.
const RELEASE_RAW: &str = "{ }";
const RELEASE_CANONICAL: &str = "{}";

/// Route `deductions/{deduction_id}/refund`.
const REFUND_RAW: &str = r#"{ "reason": "duplicate job", "credits": 1 }"#;
const REFUND_CANONICAL: &str = r#"{"credits":1,"reason":"duplicate job"}"#;

const ADJUST_RAW: &str = r#"{ "reason": "goodwill", "credits": -5 }"#;
const ADJUST_CANONICAL: &str = r#"{"credits":-5,"reason":"goodwill"}"#;
const ADJUST_HASH: &str = "22c6fbd2577b8ca256832c22de521552a574548852705b793db10bc386b1e09c";

const PURCHASE_RAW: &str = r#"{ "package": "pro", "method": "bank_transfer" }"#;
const PURCHASE_CANONICAL: &str = r#"{"method":"bank_transfer","package":"pro"}"#;
const PURCHASE_HASH: &str = "9ec385020347ff7daef35d7ae16c2138e652e1f10d037aa33f679e53c9da2d5f";

const PAYMENT_REFUND_RAW: &str =
    r#"{ "revoke_credits": true, "reason": "customer request", "amount": "10.00" }"#;
const PAYMENT_REFUND_CANONICAL: &str =
    r#"{"amount":"10.00","reason":"customer request","revoke_credits":true}"#;
const PAYMENT_REFUND_HASH: &str =
    "28672e158c70d8b29bb22f836765a05cbe43a0f4654899d03f960efc3a4d438a";

const SUBSCRIBE_RAW: &str = r#"{ "plan": "professional", "method": "bank_transfer" }"#;
const SUBSCRIBE_CANONICAL: &str = r#"{"method":"bank_transfer","plan":"professional"}"#;
const SUBSCRIBE_HASH: &str = "fdb5ddbeb2f0f8ee8ba039bfa599f5c9c0b63324844d2b55eb647b3bc1d8ffef";

const UPGRADE_RAW: &str = r#"{ "plan" : "enterprise" }"#;
const UPGRADE_CANONICAL: &str = r#"{"plan":"enterprise"}"#;
const UPGRADE_HASH: &str = "769310b51f01fc96a1fdb43e9df813d271d5db2a27b61c8974e74be802256fba";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `sha256("{route}\n{canonical}")` in lowercase hex, written out here
/// rather than taken from the server; `store::request_hash` must agree.
fn hash_of(route: &str, canonical: &str) -> String {
    let bound = format!("{route}\n{canonical}");
    let hex = hex::encode(Sha256::digest(bound.as_bytes()));
    assert_eq!(
        store::request_hash(bound.as_bytes()),
        hex,
        "store::request_hash is the hex sha256 of its bytes"
    );
    hex
}

/// A hash pinned as a literal, checked against the formula.
#[track_caller]
fn pinned(route: &str, canonical: &str, literal: &str) -> String {
    assert_eq!(
        hash_of(route, canonical),
        literal,
        "the pinned hash of route {route:?} with body {canonical} no longer follows the formula"
    );
    literal.to_owned()
}

/// One row of the claim table: the key, the stream it is claimed on (an
/// account's, invoice's, payment's or subscription's id) with that stream's
/// aggregate type, and the request hash it is bound to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Claim {
    key: String,
    aggregate_type: String,
    stream: String,
    request_hash: String,
}

fn claim(key: &str, aggregate_type: &str, stream: &str, request_hash: String) -> Claim {
    Claim {
        key: key.to_owned(),
        aggregate_type: aggregate_type.to_owned(),
        stream: stream.to_owned(),
        request_hash,
    }
}

/// Every claimed key, sorted (here, not in SQL: the two databases collate
/// differently).
async fn claims(store: &Store) -> Vec<Claim> {
    let rows = store
        .fetch_all(
            "SELECT idempotency_key, aggregate_type, account_id, request_hash \
               FROM idempotency_keys",
            &[],
        )
        .await
        .expect("the claim table reads");
    let mut claims: Vec<Claim> = rows
        .iter()
        .map(|r| Claim {
            key: r.text("idempotency_key").unwrap(),
            aggregate_type: r.text("aggregate_type").unwrap(),
            stream: r.text("account_id").unwrap(),
            request_hash: r.text("request_hash").unwrap(),
        })
        .collect();
    claims.sort();
    claims
}

/// Asserts the claim table holds exactly `expected`: the same keys on the
/// same streams, then each one's hash.
#[track_caller]
fn assert_claims(actual: Vec<Claim>, mut expected: Vec<Claim>) {
    expected.sort();
    let place = |c: &Claim| (c.key.clone(), c.aggregate_type.clone(), c.stream.clone());
    assert_eq!(
        actual.iter().map(place).collect::<Vec<_>>(),
        expected.iter().map(place).collect::<Vec<_>>(),
        "the claimed keys and the streams they are claimed on"
    );
    for (a, e) in actual.iter().zip(&expected) {
        assert_eq!(
            a.request_hash, e.request_hash,
            "the request hash key {:?} is bound to on {} {}",
            e.key, e.aggregate_type, e.stream
        );
    }
}

/// A write with a fixed idempotency key, its body as sent (keys out of
/// order, whitespace) and in canonical form.
#[derive(Clone)]
struct Write {
    path: String,
    token: String,
    key: &'static str,
    raw: String,
    canonical: String,
    status: u16,
}

impl Write {
    async fn post(&self, api: &Api, body: &str) -> common::Resp {
        api.send(
            Method::POST,
            &self.path,
            Some(&self.token),
            Some(self.key),
            Some(body.to_owned()),
        )
        .await
    }

    /// The first request: answers `status`, not as a replay.
    async fn send(&self, api: &Api) -> Value {
        let r = self.post(api, &self.raw).await;
        let body = r.expect(self.status).clone();
        assert_eq!(
            r.header("idempotent-replayed"),
            None,
            "the first request with key {} is not a replay",
            self.key
        );
        body
    }

    /// Retries with the same key, with the body as first sent and in its
    /// canonical spelling: both are the same request, so both replay.
    async fn replays(&self, api: &Api) {
        for body in [&self.raw, &self.canonical] {
            let r = self.post(api, body).await;
            assert_eq!(
                r.status, self.status,
                "a retry of {} with {body}: {}",
                self.key, r.text
            );
            assert_eq!(
                r.header("idempotent-replayed"),
                Some("true"),
                "a retry of {} with {body} replays",
                self.key
            );
        }
    }
}

/// Opens the pinned starter-plan account as a developer; returns the write
/// and the account id.
async fn open_pinned(api: &Api) -> (Write, String) {
    let open = Write {
        path: "/v1/accounts".into(),
        token: api.developer(),
        key: "pin-open",
        raw: OPEN_RAW.into(),
        canonical: OPEN_CANONICAL.into(),
        status: 201,
    };
    let account = open.send(api).await["account_id"]
        .as_str()
        .expect("an account_id")
        .to_owned();
    (open, account)
}

fn id(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("an id, got {v}"))
        .to_owned()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

async fn credit_writes_stay_bound_to_their_pinned_request_hashes(api: &Api, store: &Store) {
    let (open, account) = open_pinned(api).await;
    let dev = api.developer();
    let bot = api.bot(Some(&account));
    let on = |path: &str| format!("/v1/accounts/{account}{path}");

    let grant = Write {
        path: on("/grants"),
        token: dev.clone(),
        key: "pin-grant",
        raw: GRANT_RAW.into(),
        canonical: GRANT_CANONICAL.into(),
        status: 201,
    };
    grant.send(api).await;
    let deduct = Write {
        path: on("/deductions"),
        token: bot.clone(),
        key: "pin-deduct",
        raw: DEDUCT_RAW.into(),
        canonical: DEDUCT_CANONICAL.into(),
        status: 201,
    };
    let deduction = id(&deduct.send(api).await["id"]);
    let hold = Write {
        path: on("/holds"),
        token: bot.clone(),
        key: "pin-hold",
        raw: HOLD_RAW.into(),
        canonical: HOLD_CANONICAL.into(),
        status: 201,
    };
    let captured_hold = id(&hold.send(api).await["id"]);
    let capture = Write {
        path: on(&format!("/holds/{captured_hold}/capture")),
        token: bot.clone(),
        key: "pin-capture",
        raw: CAPTURE_RAW.into(),
        canonical: CAPTURE_CANONICAL.into(),
        status: 200,
    };
    capture.send(api).await;
    let hold_again = Write {
        key: "pin-hold-2",
        ..hold.clone()
    };
    let released_hold = id(&hold_again.send(api).await["id"]);
    let release = Write {
        path: on(&format!("/holds/{released_hold}/release")),
        token: bot.clone(),
        key: "pin-release",
        raw: RELEASE_RAW.into(),
        canonical: RELEASE_CANONICAL.into(),
        status: 200,
    };
    release.send(api).await;
    let refund = Write {
        path: on(&format!("/deductions/{deduction}/refund")),
        token: dev.clone(),
        key: "pin-refund",
        raw: REFUND_RAW.into(),
        canonical: REFUND_CANONICAL.into(),
        status: 201,
    };
    refund.send(api).await;
    let adjust = Write {
        path: format!("/v1/admin/accounts/{account}/adjust-credits"),
        token: dev.clone(),
        key: "pin-adjust",
        raw: ADJUST_RAW.into(),
        canonical: ADJUST_CANONICAL.into(),
        status: 201,
    };
    adjust.send(api).await;

    let on_account = |key: &str, hash: String| claim(key, "account", &account, hash);
    assert_claims(
        claims(store).await,
        vec![
            on_account("pin-open", pinned("accounts", OPEN_CANONICAL, OPEN_HASH)),
            on_account("pin-grant", pinned("grants", GRANT_CANONICAL, GRANT_HASH)),
            on_account(
                "pin-deduct",
                pinned("deductions", DEDUCT_CANONICAL, DEDUCT_HASH),
            ),
            on_account("pin-hold", pinned("holds", HOLD_CANONICAL, HOLD_HASH)),
            on_account("pin-hold-2", pinned("holds", HOLD_CANONICAL, HOLD_HASH)),
            on_account(
                "pin-capture",
                hash_of(&format!("holds/{captured_hold}/capture"), CAPTURE_CANONICAL),
            ),
            on_account(
                "pin-release",
                hash_of(&format!("holds/{released_hold}/release"), RELEASE_CANONICAL),
            ),
            on_account(
                "pin-refund",
                hash_of(&format!("deductions/{deduction}/refund"), REFUND_CANONICAL),
            ),
            on_account(
                "pin-adjust",
                pinned("adjust-credits", ADJUST_CANONICAL, ADJUST_HASH),
            ),
        ],
    );

    for write in [
        &open,
        &grant,
        &deduct,
        &hold,
        &capture,
        &hold_again,
        &release,
        &refund,
        &adjust,
    ] {
        write.replays(api).await;
    }
}
on_both_backends!(store credit_writes_stay_bound_to_their_pinned_request_hashes);

async fn a_purchase_its_credits_and_its_refund_stay_bound_to_their_pinned_request_hashes(
    api: &Api,
    store: &Store,
) {
    let (open, account) = open_pinned(api).await;
    let purchase = Write {
        path: "/v1/billing/credits/purchase".into(),
        token: api.owner(&account),
        key: "pin-purchase",
        raw: PURCHASE_RAW.into(),
        canonical: PURCHASE_CANONICAL.into(),
        status: 201,
    };
    let bought = purchase.send(api).await;
    let invoice = id(&bought["invoice"]["id"]);
    let payment = id(&bought["payment"]["id"]);
    // Approved by a developer (not the submitting owner): the invoice is
    // paid and the package's credits granted under a key of the server's.
    api.post_empty(
        &format!("/v1/admin/payments/{payment}/approve"),
        &api.developer(),
        None,
    )
    .await
    .expect(200);
    let refund = Write {
        path: format!("/v1/admin/payments/{payment}/refund"),
        token: api.developer(),
        key: "pin-payment-refund",
        raw: PAYMENT_REFUND_RAW.into(),
        canonical: PAYMENT_REFUND_CANONICAL.into(),
        status: 200,
    };
    let refunded = refund.send(api).await;
    let refund_id = id(&refunded["refund_id"]);
    assert!(
        refunded["revoked_credits"].as_i64().unwrap() > 0,
        "the refund takes credits back: {refunded}"
    );

    let grant_key = format!("purchase-{payment}");
    let revoke_key = format!("refund-{refund_id}");
    let purchase_hash = pinned("credits/purchase", PURCHASE_CANONICAL, PURCHASE_HASH);
    assert_claims(
        claims(store).await,
        vec![
            claim(
                "pin-open",
                "account",
                &account,
                pinned("accounts", OPEN_CANONICAL, OPEN_HASH),
            ),
            // A purchase claims its key on the invoice it issues and on the
            // payment it submits, with the same hash.
            claim("pin-purchase", "invoice", &invoice, purchase_hash.clone()),
            claim("pin-purchase", "payment", &payment, purchase_hash),
            claim(
                &grant_key,
                "account",
                &account,
                hash_of("purchase-grant", &grant_key),
            ),
            claim(
                "pin-payment-refund",
                "payment",
                &payment,
                pinned(
                    "payments/refund",
                    PAYMENT_REFUND_CANONICAL,
                    PAYMENT_REFUND_HASH,
                ),
            ),
            claim(
                &revoke_key,
                "account",
                &account,
                hash_of("refund-revoke", &revoke_key),
            ),
        ],
    );

    for write in [&open, &purchase, &refund] {
        write.replays(api).await;
    }
}
on_both_backends!(
    store a_purchase_its_credits_and_its_refund_stay_bound_to_their_pinned_request_hashes
);

async fn a_subscription_its_payment_and_its_upgrade_stay_bound_to_their_pinned_request_hashes(
    api: &Api,
    store: &Store,
) {
    let (open, account) = open_pinned(api).await;
    let owner = api.owner(&account);
    let subscribe = Write {
        path: "/v1/billing/subscriptions/create".into(),
        token: owner.clone(),
        key: "pin-subscribe",
        raw: SUBSCRIBE_RAW.into(),
        canonical: SUBSCRIBE_CANONICAL.into(),
        status: 201,
    };
    let created = subscribe.send(api).await;
    let subscription = id(&created["id"]);
    let first = id(&created["open_invoices"][0]["id"]);
    let total = id(&api.invoice_now(&account, &first).await["total"]);
    // The body names the invoice, whose id is the server's: no literal.
    let pay = Write {
        path: "/v1/billing/payments/manual".into(),
        token: owner.clone(),
        key: "pin-pay",
        raw: format!(
            r#"{{ "reference": "wire-77", "method": "bank_transfer", "invoice_id": "{first}", "amount": "{total}" }}"#
        ),
        canonical: format!(
            r#"{{"amount":"{total}","invoice_id":"{first}","method":"bank_transfer","reference":"wire-77"}}"#
        ),
        status: 201,
    };
    let payment = id(&pay.send(api).await["id"]);
    // Approved: the subscription is active and its period's credits are
    // granted under a key of the server's.
    api.post_empty(
        &format!("/v1/admin/payments/{payment}/approve"),
        &api.developer(),
        None,
    )
    .await
    .expect(200);
    let upgrade = Write {
        path: "/v1/billing/subscriptions/upgrade".into(),
        token: owner.clone(),
        key: "pin-upgrade",
        raw: UPGRADE_RAW.into(),
        canonical: UPGRADE_CANONICAL.into(),
        status: 200,
    };
    upgrade.send(api).await;

    let grant_key = format!("subscription-invoice-{first}");
    assert_claims(
        claims(store).await,
        vec![
            claim(
                "pin-open",
                "account",
                &account,
                pinned("accounts", OPEN_CANONICAL, OPEN_HASH),
            ),
            claim(
                "pin-subscribe",
                "subscription",
                &subscription,
                pinned("subscriptions/create", SUBSCRIBE_CANONICAL, SUBSCRIBE_HASH),
            ),
            claim(
                "pin-pay",
                "payment",
                &payment,
                hash_of("payments/manual", &pay.canonical),
            ),
            claim(
                &grant_key,
                "account",
                &account,
                hash_of("subscription-grant", &grant_key),
            ),
            claim(
                "pin-upgrade",
                "subscription",
                &subscription,
                pinned("subscriptions/upgrade", UPGRADE_CANONICAL, UPGRADE_HASH),
            ),
        ],
    );

    for write in [&open, &subscribe, &pay, &upgrade] {
        write.replays(api).await;
    }
}
on_both_backends!(
    store a_subscription_its_payment_and_its_upgrade_stay_bound_to_their_pinned_request_hashes
);
