//! Stripe over its HTTP API: form-encoded bodies, `Authorization: Bearer
//! <secret key>`, an `Idempotency-Key` on every create, bounded timeouts
//! and bounded response bodies. Also the webhook signature check
//! ([`verify_signature`]).

use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::{
    minor_units, CancelSubscriptionRequest, CustomerRequest, GatewayError, GatewaySubscription,
    PaymentGateway, PaymentIntent, PaymentIntentRequest, Refund, RefundRequest,
    SubscriptionRequest,
};
use crate::settings::Secret;

/// Time to connect to Stripe.
pub const CONNECT_TIMEOUT_SECONDS: u64 = 5;
/// Time for a whole Stripe call.
pub const REQUEST_TIMEOUT_SECONDS: u64 = 20;
/// Largest Stripe response read.
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;
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
        self.send(request, idempotency_key).await
    }

    /// `DELETE {base}{path}` without a body; the JSON object Stripe returns.
    async fn delete(&self, path: &str, idempotency_key: &str) -> Result<Value, GatewayError> {
        let request = self.http.delete(format!("{}{path}", self.base));
        self.send(request, idempotency_key).await
    }

    /// Sends `request` with our key and `idempotency_key`; Stripe's answer
    /// read (bounded) and mapped: unreachable, 5xx and 429 are
    /// [`GatewayError::Unreachable`], another non-2xx or an answer that is
    /// not JSON [`GatewayError::Refused`].
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        idempotency_key: &str,
    ) -> Result<Value, GatewayError> {
        let response = request
            .bearer_auth(self.key.expose())
            .header("Idempotency-Key", idempotency_key)
            .send()
            .await
            .map_err(|e| GatewayError::Unreachable(without_url(&e)))?;
        let status = response.status();
        let bytes = read_bounded(response).await?;
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

/// A reqwest error without its URL (which names our stub or Stripe; no
/// secret, but no use either).
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "request failed".into()
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, GatewayError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| GatewayError::Unreachable(without_url(&e)))?
    {
        if bytes.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Err(GatewayError::Refused(
                "stripe's answer is larger than expected".into(),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
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
        let form = vec![
            ("amount", amount.to_string()),
            ("currency", req.currency.as_str().to_ascii_lowercase()),
            ("description", req.description.clone()),
            ("automatic_payment_methods[enabled]", "true".into()),
            ("metadata[invoice_id]", req.invoice_id.clone()),
            ("metadata[payment_id]", req.payment_id.clone()),
            ("metadata[account_id]", req.account_id.clone()),
        ];
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
        let form = vec![
            ("customer", req.customer_id.clone()),
            ("items[0][price]", req.price_id.clone()),
            ("payment_behavior", "default_incomplete".into()),
            ("metadata[subscription_id]", req.subscription_id.clone()),
            ("metadata[account_id]", req.account_id.clone()),
            ("metadata[invoice_id]", req.first_invoice_id.clone()),
        ];
        let json = self
            .post("/v1/subscriptions", &form, &req.idempotency_key)
            .await?;
        Ok(GatewaySubscription {
            id: text(&json, "id")?,
            status: json["status"].as_str().unwrap_or("incomplete").to_owned(),
        })
    }

    async fn cancel_subscription(
        &self,
        req: &CancelSubscriptionRequest,
    ) -> Result<(), GatewayError> {
        let path = format!(
            "/v1/subscriptions/{}",
            form_urlencoded::byte_serialize(req.gateway_subscription_id.as_bytes())
                .collect::<String>()
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
            form_urlencoded::byte_serialize(req.gateway_subscription_id.as_bytes())
                .collect::<String>()
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
