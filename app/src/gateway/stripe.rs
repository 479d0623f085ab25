//! Stripe over its HTTP API: form-encoded bodies, `Authorization: Bearer
//! <secret key>`, the pinned `Stripe-Version` ([`STRIPE_API_VERSION`]) on
//! every call, an `Idempotency-Key` on every create, bounded timeouts and
//! bounded response bodies. Also the webhook signature check
//! ([`verify_signature`]).

use super::{read_bounded, truncate, without_url};
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::{
    from_minor_units, minor_units, CancelSubscriptionRequest, ChangePriceRequest, CustomerRequest,
    GatewayError, GatewaySubscription, PaymentGateway, PaymentIntent, PaymentIntentRequest, Refund,
    RefundRequest, SavedCard, SetupIntent, SubscriptionRequest, SAVED_CARDS_MAX,
};
use crate::settings::Secret;

/// The Stripe API version this gateway is written against, sent as
/// `Stripe-Version` on every call so that a change of the account's
/// default version at Stripe cannot change the shapes we read. From
/// 2025-03-31 ("basil") on, an invoice's payment is confirmed with
/// `confirmation_secret.client_secret` and `invoice.payment_intent` is
/// gone (docs/adr/0011-payments-gateway.md).
pub const STRIPE_API_VERSION: &str = "2025-03-31.basil";
/// The first API version whose invoices carry `confirmation_secret`.
pub const CONFIRMATION_SECRET_SINCE: &str = "2025-03-31";
/// Time to connect to Stripe.
pub const CONNECT_TIMEOUT_SECONDS: u64 = 5;
/// Time for a whole Stripe call.
pub const REQUEST_TIMEOUT_SECONDS: u64 = 20;
/// Stripe's default tolerance between a webhook's `t` and our clock.
pub const SIGNATURE_TOLERANCE_SECONDS: i64 = 300;
/// Most `v1=` signatures looked at in one header.
pub const SIGNATURES_MAX: usize = 8;
/// Longest `Stripe-Signature` header read.
pub const SIGNATURE_HEADER_BYTES_MAX: usize = 2_048;

/// The Stripe gateway.
pub struct StripeGateway {
    http: reqwest::Client,
    base: String,
    key: Secret,
}

impl StripeGateway {
    /// A client of the Stripe API at `base` (`https://api.stripe.com`).
    pub fn new(base: &str, key: Secret) -> Result<Self, GatewayError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECONDS))
            .timeout(Duration::from_secs(REQUEST_TIMEOUT_SECONDS))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ledger-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GatewayError::Unreachable(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            key,
        })
    }

    /// `POST {base}{path}` with a form body; the JSON object Stripe returns.
    async fn post(
        &self,
        path: &str,
        form: &[(&str, String)],
        idempotency_key: &str,
    ) -> Result<Value, GatewayError> {
        let body = {
            let mut body = form_urlencoded::Serializer::new(String::new());
            for (k, v) in form {
                body.append_pair(k, v);
            }
            body.finish()
        };
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(body);
        self.send(request, Some(idempotency_key)).await
    }

    /// `DELETE {base}{path}` without a body; the JSON object Stripe returns.
    async fn delete(&self, path: &str, idempotency_key: &str) -> Result<Value, GatewayError> {
        let request = self.http.delete(format!("{}{path}", self.base));
        self.send(request, Some(idempotency_key)).await
    }

    /// `GET {base}{path}?{query}`; the JSON object Stripe returns. Reads
    /// create nothing, so they carry no idempotency key.
    async fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, GatewayError> {
        let mut url = format!("{}{path}", self.base);
        if !query.is_empty() {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in query {
                q.append_pair(k, v);
            }
            url.push('?');
            url.push_str(&q.finish());
        }
        self.send(self.http.get(url), None).await
    }

    /// Sends `request` with our key, the pinned [`STRIPE_API_VERSION`] and
    /// `idempotency_key` (if any); Stripe's answer read (bounded) and
    /// mapped: unreachable, 5xx and 429 are [`GatewayError::Unreachable`],
    /// another non-2xx or an answer that is not JSON
    /// [`GatewayError::Refused`].
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        idempotency_key: Option<&str>,
    ) -> Result<Value, GatewayError> {
        let mut request = request
            .bearer_auth(self.key.expose())
            .header("Stripe-Version", STRIPE_API_VERSION);
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| GatewayError::Unreachable(without_url(&e)))?;
        let status = response.status();
        let bytes = read_bounded(response, "stripe").await?;
        let json: Value = serde_json::from_slice(&bytes).map_err(|_| {
            GatewayError::Refused(format!(
                "stripe answered {status} with a body that is not JSON"
            ))
        })?;
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(GatewayError::Unreachable(format!(
                "stripe answered {status}"
            )));
        }
        if !status.is_success() {
            let error = &json["error"];
            let message = error["message"]
                .as_str()
                .or(error["code"].as_str())
                .unwrap_or("no message");
            return Err(GatewayError::Refused(format!(
                "{} ({status}): {}",
                error["type"].as_str().unwrap_or("error"),
                truncate(message, 300)
            )));
        }
        Ok(json)
    }
}

/// `id` as one path segment of Stripe's API (Stripe's ids are letters,
/// digits and `_`; anything else is escaped, never a path of its own).
fn segment(id: &str) -> String {
    form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

/// What a subscription is expanded with so that its first payment's
/// secret comes back in the same answer: `latest_invoice.confirmation_secret`
/// from [`CONFIRMATION_SECRET_SINCE`] on, `latest_invoice.payment_intent`
/// before (a version that has one does not accept the other).
pub fn subscription_expansions(api_version: &str) -> [&'static str; 1] {
    let date = api_version.get(..10).unwrap_or(api_version);
    if date < CONFIRMATION_SECRET_SINCE {
        ["latest_invoice.payment_intent"]
    } else {
        ["latest_invoice.confirmation_secret"]
    }
}

/// The first payment's secret of a subscription answered with its latest
/// invoice expanded: `latest_invoice.confirmation_secret.client_secret`,
/// else (older API versions) `latest_invoice.payment_intent.client_secret`.
pub fn first_payment_secret(subscription: &Value) -> Option<String> {
    let invoice = &subscription["latest_invoice"];
    invoice["confirmation_secret"]["client_secret"]
        .as_str()
        .filter(|s| !s.is_empty())
        .or(invoice["payment_intent"]["client_secret"]
            .as_str()
            .filter(|s| !s.is_empty()))
        .map(str::to_owned)
}

/// A Stripe subscription object read into the port's shape.
fn subscription_from(json: Value) -> Result<GatewaySubscription, GatewayError> {
    let first_item = &json["items"]["data"][0];
    Ok(GatewaySubscription {
        id: text(&json, "id")?,
        status: json["status"].as_str().unwrap_or("incomplete").to_owned(),
        client_secret: first_payment_secret(&json),
        customer_id: json["customer"]
            .as_str()
            .or(json["customer"]["id"].as_str())
            .map(str::to_owned),
        item_id: first_item["id"].as_str().map(str::to_owned),
        proration: proration_invoiced(&json["latest_invoice"]),
        raw: json,
    })
}

/// What Stripe invoiced for a plan change (`proration_behavior=
/// always_invoice`): the latest invoice's `amount_due` in its currency,
/// when that invoice is the change's (`billing_reason` `subscription_update`).
fn proration_invoiced(invoice: &Value) -> Option<events::Money> {
    if invoice["billing_reason"].as_str() != Some("subscription_update") {
        return None;
    }
    let currency =
        events::Currency::parse(&invoice["currency"].as_str()?.to_ascii_uppercase()).ok()?;
    let minor = invoice["amount_due"].as_i64()?;
    Some(events::Money::new(
        from_minor_units(minor, &currency),
        currency,
    ))
}

/// A Stripe card payment method read into the port's shape.
fn card_from(json: &Value) -> Result<SavedCard, GatewayError> {
    let card = &json["card"];
    let number = |field: &str| {
        card[field]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    Ok(SavedCard {
        id: text(json, "id")?,
        customer_id: json["customer"]
            .as_str()
            .or(json["customer"]["id"].as_str())
            .map(str::to_owned),
        brand: truncate(card["brand"].as_str().unwrap_or("unknown"), 32).to_owned(),
        last4: truncate(card["last4"].as_str().unwrap_or(""), 4).to_owned(),
        exp_month: number("exp_month"),
        exp_year: number("exp_year"),
    })
}

fn text(json: &Value, field: &str) -> Result<String, GatewayError> {
    json[field]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| GatewayError::Refused(format!("stripe's answer has no {field}")))
}

#[async_trait]
impl PaymentGateway for StripeGateway {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_customer(&self, req: &CustomerRequest) -> Result<String, GatewayError> {
        let mut form = vec![
            ("name", req.name.clone()),
            ("metadata[account_id]", req.account_id.clone()),
        ];
        if let Some(email) = &req.email {
            form.push(("email", email.clone()));
        }
        let json = self
            .post("/v1/customers", &form, &req.idempotency_key)
            .await?;
        text(&json, "id")
    }

    async fn create_payment_intent(
        &self,
        req: &PaymentIntentRequest,
    ) -> Result<PaymentIntent, GatewayError> {
        let amount = minor_units(req.amount, &req.currency)?;
        let mut form = vec![
            ("amount", amount.to_string()),
            ("currency", req.currency.as_str().to_ascii_lowercase()),
            ("description", req.description.clone()),
            ("metadata[invoice_id]", req.invoice_id.clone()),
            ("metadata[payment_id]", req.payment_id.clone()),
            ("metadata[account_id]", req.account_id.clone()),
        ];
        match &req.off_session {
            // A saved card charged now, without the payer: confirmed in
            // this call; a card that needs the payer fails (402).
            Some(o) => {
                form.push(("customer", o.customer_id.clone()));
                form.push(("payment_method", o.payment_method_id.clone()));
                form.push(("payment_method_types[]", "card".into()));
                form.push(("off_session", "true".into()));
                form.push(("confirm", "true".into()));
            }
            None => form.push(("automatic_payment_methods[enabled]", "true".into())),
        }
        let json = self
            .post("/v1/payment_intents", &form, &req.idempotency_key)
            .await?;
        Ok(PaymentIntent {
            id: text(&json, "id")?,
            client_secret: json["client_secret"].as_str().map(str::to_owned),
            approval_url: None,
            status: json["status"].as_str().unwrap_or("processing").to_owned(),
        })
    }

    async fn create_subscription(
        &self,
        req: &SubscriptionRequest,
    ) -> Result<GatewaySubscription, GatewayError> {
        let mut form = vec![
            ("customer", req.customer_id.clone()),
            ("items[0][price]", req.price_id.clone()),
            ("payment_behavior", "default_incomplete".into()),
            (
                "payment_settings[save_default_payment_method]",
                "on_subscription".into(),
            ),
            ("metadata[subscription_id]", req.subscription_id.clone()),
            ("metadata[account_id]", req.account_id.clone()),
            ("metadata[invoice_id]", req.first_invoice_id.clone()),
        ];
        if let Some(currency) = &req.currency {
            form.push(("currency", currency.as_str().to_ascii_lowercase()));
        }
        for expand in subscription_expansions(STRIPE_API_VERSION) {
            form.push(("expand[]", expand.to_owned()));
        }
        let json = self
            .post("/v1/subscriptions", &form, &req.idempotency_key)
            .await?;
        subscription_from(json)
    }

    async fn get_subscription(
        &self,
        gateway_subscription_id: &str,
    ) -> Result<GatewaySubscription, GatewayError> {
        let query: Vec<(&str, String)> = subscription_expansions(STRIPE_API_VERSION)
            .into_iter()
            .map(|e| ("expand[]", e.to_owned()))
            .collect();
        let json = self
            .get(
                &format!("/v1/subscriptions/{}", segment(gateway_subscription_id)),
                &query,
            )
            .await?;
        subscription_from(json)
    }

    async fn change_subscription_price(
        &self,
        req: &ChangePriceRequest,
    ) -> Result<GatewaySubscription, GatewayError> {
        let mut form = vec![
            ("items[0][id]", req.item_id.clone()),
            ("items[0][price]", req.price_id.clone()),
            (
                "proration_behavior",
                // An upgrade is invoiced (and charged) at once, alone: its
                // invoice.paid pays our proration invoice, of the same
                // amount (docs/adr/0011).
                if req.prorate {
                    "always_invoice"
                } else {
                    "none"
                }
                .into(),
            ),
        ];
        for expand in subscription_expansions(STRIPE_API_VERSION) {
            form.push(("expand[]", expand.to_owned()));
        }
        let json = self
            .post(
                &format!(
                    "/v1/subscriptions/{}",
                    segment(&req.gateway_subscription_id)
                ),
                &form,
                &req.idempotency_key,
            )
            .await?;
        subscription_from(json)
    }

    async fn get_payment_intent(&self, id: &str) -> Result<Value, GatewayError> {
        self.get(&format!("/v1/payment_intents/{}", segment(id)), &[])
            .await
    }

    async fn create_setup_intent(
        &self,
        customer_id: &str,
        account_id: &str,
        idempotency_key: &str,
    ) -> Result<SetupIntent, GatewayError> {
        let form = vec![
            ("customer", customer_id.to_owned()),
            ("payment_method_types[]", "card".into()),
            ("usage", "off_session".into()),
            ("metadata[account_id]", account_id.to_owned()),
        ];
        let json = self
            .post("/v1/setup_intents", &form, idempotency_key)
            .await?;
        Ok(SetupIntent {
            id: text(&json, "id")?,
            client_secret: json["client_secret"].as_str().map(str::to_owned),
            status: truncate(
                json["status"].as_str().unwrap_or("requires_payment_method"),
                64,
            )
            .to_owned(),
        })
    }

    async fn list_cards(&self, customer_id: &str) -> Result<Vec<SavedCard>, GatewayError> {
        let json = self
            .get(
                "/v1/payment_methods",
                &[
                    ("customer", customer_id.to_owned()),
                    ("type", "card".into()),
                    ("limit", SAVED_CARDS_MAX.to_string()),
                ],
            )
            .await?;
        json["data"]
            .as_array()
            .ok_or_else(|| GatewayError::Refused("stripe's answer has no data".into()))?
            .iter()
            .take(SAVED_CARDS_MAX)
            .map(card_from)
            .collect()
    }

    async fn get_card(&self, card_id: &str) -> Result<SavedCard, GatewayError> {
        let json = self
            .get(&format!("/v1/payment_methods/{}", segment(card_id)), &[])
            .await?;
        card_from(&json)
    }

    async fn default_card(&self, customer_id: &str) -> Result<Option<String>, GatewayError> {
        let json = self
            .get(&format!("/v1/customers/{}", segment(customer_id)), &[])
            .await?;
        let default = &json["invoice_settings"]["default_payment_method"];
        Ok(default
            .as_str()
            .or(default["id"].as_str())
            .map(str::to_owned))
    }

    async fn set_default_card(
        &self,
        customer_id: &str,
        card_id: &str,
        idempotency_key: &str,
    ) -> Result<(), GatewayError> {
        self.post(
            &format!("/v1/customers/{}", segment(customer_id)),
            &[(
                "invoice_settings[default_payment_method]",
                card_id.to_owned(),
            )],
            idempotency_key,
        )
        .await?;
        Ok(())
    }

    async fn detach_card(&self, card_id: &str, idempotency_key: &str) -> Result<(), GatewayError> {
        self.post(
            &format!("/v1/payment_methods/{}/detach", segment(card_id)),
            &[],
            idempotency_key,
        )
        .await?;
        Ok(())
    }

    async fn cancel_subscription(
        &self,
        req: &CancelSubscriptionRequest,
    ) -> Result<(), GatewayError> {
        let path = format!(
            "/v1/subscriptions/{}",
            segment(&req.gateway_subscription_id)
        );
        if req.at_period_end {
            self.post(
                &path,
                &[("cancel_at_period_end", "true".into())],
                &req.idempotency_key,
            )
            .await?;
        } else {
            self.delete(&path, &req.idempotency_key).await?;
        }
        Ok(())
    }

    async fn resume_subscription(
        &self,
        req: &super::ResumeSubscriptionRequest,
    ) -> Result<(), GatewayError> {
        let path = format!(
            "/v1/subscriptions/{}",
            segment(&req.gateway_subscription_id)
        );
        self.post(
            &path,
            &[("cancel_at_period_end", "false".into())],
            &req.idempotency_key,
        )
        .await?;
        Ok(())
    }

    async fn refund(&self, req: &RefundRequest) -> Result<Refund, GatewayError> {
        let amount = minor_units(req.amount, &req.currency)?;
        let form = vec![
            ("payment_intent", req.payment_ref.clone()),
            ("amount", amount.to_string()),
            ("reason", "requested_by_customer".into()),
            ("metadata[refund_id]", req.refund_id.clone()),
            ("metadata[payment_id]", req.payment_id.clone()),
        ];
        let json = self
            .post("/v1/refunds", &form, &req.idempotency_key)
            .await?;
        Ok(Refund {
            id: text(&json, "id")?,
            status: json["status"].as_str().unwrap_or("pending").to_owned(),
        })
    }
}

// ---------------------------------------------------------------------------
// Webhook signatures
// ---------------------------------------------------------------------------

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed")]
    Malformed,
    #[error("the Stripe-Signature timestamp is outside the tolerance")]
    Stale,
    #[error("no Stripe-Signature v1 signature matches")]
    Mismatch,
}

/// Checks `Stripe-Signature: t=…,v1=…[,v1=…]`: some `v1` must be the
/// HMAC-SHA256 of `{t}.{body}` under `secret` (compared in constant time)
/// and `t` within [`SIGNATURE_TOLERANCE_SECONDS`] of `now` (Unix seconds).
/// Other schemes (`v0`) are ignored, as Stripe's libraries do.
pub fn verify_signature(
    header: Option<&str>,
    body: &[u8],
    secret: &str,
    now: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    if header.len() > SIGNATURE_HEADER_BYTES_MAX {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (k, v) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match k {
            "t" => {
                if timestamp.is_some() {
                    return Err(SignatureError::Malformed);
                }
                timestamp = Some(v.parse::<i64>().map_err(|_| SignatureError::Malformed)?);
            }
            "v1" => {
                // A value that is not hex cannot match; skip it like a
                // wrong one rather than failing the others.
                if let Ok(sig) = hex::decode(v) {
                    signatures.push(sig);
                }
                if signatures.len() > SIGNATURES_MAX {
                    return Err(SignatureError::Malformed);
                }
            }
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(t) > SIGNATURE_TOLERANCE_SECONDS.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    for sig in &signatures {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .map_err(|_| SignatureError::Mismatch)?;
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        // `verify_slice` compares in constant time.
        if mac.verify_slice(sig).is_ok() {
            return Ok(t);
        }
    }
    Err(SignatureError::Mismatch)
}

/// The `Stripe-Signature` header Stripe would send for `body` at `t`
/// (tests and tools).
pub fn sign(body: &[u8], secret: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test";

    #[test]
    fn the_pinned_version_expands_the_confirmation_secret_and_older_ones_the_payment_intent() {
        assert!(STRIPE_API_VERSION.get(..10).unwrap() >= CONFIRMATION_SECRET_SINCE);
        assert_eq!(
            subscription_expansions(STRIPE_API_VERSION),
            ["latest_invoice.confirmation_secret"]
        );
        assert_eq!(
            subscription_expansions("2025-03-31.basil"),
            ["latest_invoice.confirmation_secret"]
        );
        assert_eq!(
            subscription_expansions("2024-06-20"),
            ["latest_invoice.payment_intent"]
        );
        assert_eq!(
            subscription_expansions("2025-02-24.acacia"),
            ["latest_invoice.payment_intent"]
        );
    }

    #[test]
    fn the_first_payment_secret_comes_from_the_confirmation_secret_else_the_payment_intent() {
        let both = serde_json::json!({ "latest_invoice": {
            "confirmation_secret": { "client_secret": "pi_1_secret_new" },
            "payment_intent": { "client_secret": "pi_1_secret_old" },
        }});
        assert_eq!(
            first_payment_secret(&both).as_deref(),
            Some("pi_1_secret_new")
        );
        let old = serde_json::json!({ "latest_invoice": {
            "payment_intent": { "id": "pi_2", "client_secret": "pi_2_secret_old" },
        }});
        assert_eq!(
            first_payment_secret(&old).as_deref(),
            Some("pi_2_secret_old")
        );
        // Not expanded (a string id), or no invoice: no secret.
        let unexpanded = serde_json::json!({ "latest_invoice": "in_1" });
        assert_eq!(first_payment_secret(&unexpanded), None);
        assert_eq!(first_payment_secret(&serde_json::json!({})), None);
    }

    #[test]
    fn a_subscription_answer_gives_its_customer_item_and_secret() {
        let sub = subscription_from(serde_json::json!({
            "id": "sub_1", "status": "incomplete", "customer": "cus_1",
            "items": { "data": [ { "id": "si_1", "price": { "id": "price_1" } } ] },
            "latest_invoice": { "confirmation_secret": { "client_secret": "s_1" } },
        }))
        .unwrap();
        assert_eq!(sub.id, "sub_1");
        assert_eq!(sub.customer_id.as_deref(), Some("cus_1"));
        assert_eq!(sub.item_id.as_deref(), Some("si_1"));
        assert_eq!(sub.client_secret.as_deref(), Some("s_1"));
        assert!(subscription_from(serde_json::json!({ "status": "active" })).is_err());
    }

    #[test]
    fn a_signature_of_the_body_within_the_tolerance_verifies() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(body, SECRET, 1_000);
        assert_eq!(
            verify_signature(Some(&header), body, SECRET, 1_000 + 300),
            Ok(1_000)
        );
        assert_eq!(
            verify_signature(Some(&header), body, SECRET, 1_000 - 300),
            Ok(1_000)
        );
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let body = b"{}";
        let good = sign(body, SECRET, 1_000);
        let good_v1 = good.split_once(",v1=").unwrap().1;
        let header = format!("t=1000,v0=abc,v1={},v1={good_v1}", "00".repeat(32));
        assert_eq!(
            verify_signature(Some(&header), body, SECRET, 1_000),
            Ok(1_000)
        );
    }

    #[test]
    fn wrong_secret_body_stale_missing_and_malformed_are_refused() {
        let body = b"{}";
        let header = sign(body, SECRET, 1_000);
        assert_eq!(
            verify_signature(Some(&header), body, "whsec_other", 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&header), b"{ }", SECRET, 1_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(Some(&header), body, SECRET, 1_301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify_signature(None, body, SECRET, 1_000),
            Err(SignatureError::Missing)
        );
        for bad in [
            "",
            "t=1000",
            "v1=00",
            "t=x,v1=00",
            "garbage",
            "t=1,t=2,v1=00",
        ] {
            assert_eq!(
                verify_signature(Some(bad), body, SECRET, 1_000),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
    }
}
