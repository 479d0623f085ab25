//! PayPal over its REST API (docs/adr/0018-paypal.md): an OAuth2
//! client-credentials token (HTTP Basic with the REST app's client id and
//! secret) kept until shortly before it expires; Orders v2 (an order with
//! intent `CAPTURE` for one of our invoices, its capture once the payer
//! approved it), refunds of a capture, and webhook verification through
//! PayPal's `verify-webhook-signature`. JSON bodies, a `PayPal-Request-Id`
//! derived from our own ids on every call that creates something, bounded
//! timeouts and bounded answers; an answer we cannot read is an error,
//! never a panic.

use super::{read_bounded, truncate, without_url};
use std::str::FromStr;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use events::Currency;
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{
    from_minor_units, minor_units, CancelSubscriptionRequest, CaptureOrderRequest, CapturedOrder,
    CustomerRequest, GatewayAmount, GatewayCapture, GatewayError, GatewaySubscription,
    PaymentGateway, PaymentIntent, PaymentIntentRequest, PaypalCheckout, PaypalCredentials, Refund,
    RefundRequest, SubscriptionRequest, WebhookVerificationRequest,
};
use crate::settings::Secret;

/// Time to connect to PayPal.
pub const CONNECT_TIMEOUT_SECONDS: u64 = 5;
/// Time for a whole PayPal call.
pub const REQUEST_TIMEOUT_SECONDS: u64 = 20;
/// A token is renewed this long before PayPal says it expires (or half
/// its life, for a token that lives shorter than twice this).
pub const TOKEN_RENEW_MARGIN_SECONDS: u64 = 300;
/// Longest a token is kept, whatever its `expires_in` says (PayPal's
/// live tokens last 9 hours).
pub const TOKEN_LIFETIME_SECONDS_MAX: u64 = 24 * 3600;
/// Longest purchase unit description PayPal takes, in characters.
pub const DESCRIPTION_CHARS_MAX: usize = 127;
/// Most HATEOAS links of an answer looked at.
pub const LINKS_MAX: usize = 32;
/// Longest approval link passed on to the payer.
pub const LINK_BYTES_MAX: usize = 2_048;
/// Longest PayPal id (order, capture, refund) accepted.
pub const ID_BYTES_MAX: usize = 255;
/// Most captures of one order looked at.
pub const CAPTURES_MAX: usize = 16;

/// A token and when to stop using it.
struct Token {
    value: Secret,
    renew_at: Instant,
}

/// The PayPal gateway.
pub struct PaypalGateway {
    http: reqwest::Client,
    base: String,
    client_id: String,
    secret: Secret,
    /// The current token. Held while a new one is fetched, so that many
    /// callers at once fetch one token, not one each.
    token: Mutex<Option<Token>>,
}

impl PaypalGateway {
    /// A client of PayPal's REST API at `credentials.api_base`
    /// (`https://api-m.paypal.com`).
    pub fn new(credentials: &PaypalCredentials) -> Result<Self, GatewayError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(CONNECT_TIMEOUT_SECONDS))
            .timeout(Duration::from_secs(REQUEST_TIMEOUT_SECONDS))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("ledger-server/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GatewayError::Unreachable(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            base: credentials.api_base.trim_end_matches('/').to_owned(),
            client_id: credentials.client_id.clone(),
            secret: credentials.client_secret.clone(),
            token: Mutex::new(None),
        })
    }

    /// A token that is still good: the kept one, or a new one.
    async fn token(&self) -> Result<Secret, GatewayError> {
        let mut kept = self.token.lock().await;
        if let Some(token) = kept.as_ref() {
            if Instant::now() < token.renew_at {
                return Ok(token.value.clone());
            }
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *kept = Some(fresh);
        Ok(value)
    }

    /// Drops `used` if it is still the kept token (PayPal refused it).
    async fn forget(&self, used: &Secret) {
        let mut kept = self.token.lock().await;
        if kept.as_ref().is_some_and(|t| &t.value == used) {
            *kept = None;
        }
    }

    /// `POST {base}/v1/oauth2/token`: client credentials, HTTP Basic.
    async fn fetch_token(&self) -> Result<Token, GatewayError> {
        let response = self
            .http
            .post(format!("{}/v1/oauth2/token", self.base))
            .basic_auth(&self.client_id, Some(self.secret.expose()))
            .header(ACCEPT, "application/json")
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials")
            .send()
            .await
            .map_err(|e| GatewayError::Unreachable(without_url(&e)))?;
        let status = response.status();
        let bytes = read_bounded(response, "paypal").await?;
        if status == StatusCode::UNAUTHORIZED {
            return Err(GatewayError::Refused(
                "paypal refused the client credentials (PAYPAL_CLIENT_ID, PAYPAL_CLIENT_SECRET)"
                    .into(),
            ));
        }
        let json = answer(status, &bytes)?;
        let value = json["access_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                GatewayError::Refused("paypal's token answer has no access_token".into())
            })?;
        let keep = token_keep_seconds(json["expires_in"].as_u64().unwrap_or(0));
        Ok(Token {
            value: Secret::from(value.to_owned()),
            renew_at: Instant::now() + Duration::from_secs(keep),
        })
    }

    /// `{method} {base}{path}` with a JSON `body` and, for a call that
    /// creates something, its `PayPal-Request-Id`; the JSON object PayPal
    /// answers. A token PayPal refuses (revoked, or expired early) is
    /// replaced once; that retry is safe because every call that creates
    /// something carries its request id.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<Value, GatewayError> {
        let url = format!("{}{path}", self.base);
        let mut renewed = false;
        loop {
            let token = self.token().await?;
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(token.expose())
                .header(ACCEPT, "application/json")
                // The whole resource, not the minimal answer: captures and
                // links are read from it.
                .header("Prefer", "return=representation");
            if let Some(body) = body {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_owned());
            }
            if let Some(id) = request_id {
                request = request.header("PayPal-Request-Id", id);
            }
            let response = request
                .send()
                .await
                .map_err(|e| GatewayError::Unreachable(without_url(&e)))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !renewed {
                drop(response);
                self.forget(&token).await;
                renewed = true;
                continue;
            }
            let bytes = read_bounded(response, "paypal").await?;
            return answer(status, &bytes);
        }
    }
}

/// How long a token with `expires_in` seconds is used: until
/// [`TOKEN_RENEW_MARGIN_SECONDS`] before it expires (half its life for a
/// short one), never beyond [`TOKEN_LIFETIME_SECONDS_MAX`].
fn token_keep_seconds(expires_in: u64) -> u64 {
    let life = expires_in.min(TOKEN_LIFETIME_SECONDS_MAX);
    life - TOKEN_RENEW_MARGIN_SECONDS.min(life / 2)
}

/// PayPal's answer mapped: 5xx and 429 are [`GatewayError::Unreachable`]
/// (retry later); another non-2xx, or a body that is not a JSON object,
/// [`GatewayError::Refused`] with PayPal's name, message and first issue.
fn answer(status: StatusCode, bytes: &[u8]) -> Result<Value, GatewayError> {
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        return Err(GatewayError::Unreachable(format!(
            "paypal answered {status}"
        )));
    }
    let json: Option<Value> = serde_json::from_slice(bytes).ok();
    if !status.is_success() {
        return Err(GatewayError::Refused(describe(status, json.as_ref())));
    }
    json.filter(Value::is_object).ok_or_else(|| {
        GatewayError::Refused(format!(
            "paypal answered {status} with a body that is not a JSON object"
        ))
    })
}

/// PayPal's error, as one line: REST errors (`name`, `message`,
/// `details[].issue`) and OAuth errors (`error`, `error_description`).
fn describe(status: StatusCode, json: Option<&Value>) -> String {
    let Some(json) = json else {
        return format!("paypal answered {status}");
    };
    let name = json["name"]
        .as_str()
        .or(json["error"].as_str())
        .unwrap_or("error");
    let message = json["message"]
        .as_str()
        .or(json["error_description"].as_str())
        .unwrap_or("no message");
    let mut line = format!(
        "{} ({status}): {}",
        truncate(name, 100),
        truncate(message, 300)
    );
    if let Some(issue) = json["details"][0]["issue"].as_str() {
        line.push_str("; ");
        line.push_str(truncate(issue, 100));
    }
    line
}

/// Whether `id` looks like a PayPal id (letters, digits, `-`, `_`): only
/// such an id goes into a path, so nothing in it can change the path.
pub fn is_paypal_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= ID_BYTES_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn segment(id: &str) -> Result<&str, GatewayError> {
    if is_paypal_id(id) {
        Ok(id)
    } else {
        Err(GatewayError::Refused(format!(
            "{:?} is not a PayPal id",
            truncate(id, 64)
        )))
    }
}

/// The id PayPal answered in `field`, checked.
fn id_of(json: &Value, field: &str) -> Result<String, GatewayError> {
    json[field]
        .as_str()
        .filter(|id| is_paypal_id(id))
        .map(str::to_owned)
        .ok_or_else(|| GatewayError::Refused(format!("paypal's answer has no valid {field}")))
}

/// `amount` as PayPal's `value`: exactly the currency's minor unit
/// (`34.51`, `29.00`, `500` for JPY); more decimals are refused, never
/// rounded.
pub fn amount_value(amount: Decimal, currency: &Currency) -> Result<String, GatewayError> {
    let minor = minor_units(amount, currency)?;
    Ok(from_minor_units(minor, currency).to_string())
}

/// An `{currency_code, value}` object of PayPal's, if it is one: a
/// three-letter code and a plain decimal string.
pub fn parse_amount(v: &Value) -> Option<GatewayAmount> {
    let currency = v["currency_code"]
        .as_str()
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))?;
    let value = v["value"]
        .as_str()
        .filter(|s| s.len() <= 32 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.'))?;
    Some(GatewayAmount {
        value: Decimal::from_str(value).ok()?,
        currency: currency.to_ascii_uppercase(),
    })
}

/// Where the payer approves the order: the link PayPal calls `approve`
/// (or `payer-action` for orders with a payment source), if it is an
/// http(s) URL of a sane length.
pub fn approval_link(order: &Value) -> Option<String> {
    order["links"]
        .as_array()?
        .iter()
        .take(LINKS_MAX)
        .find(|l| matches!(l["rel"].as_str(), Some("approve" | "payer-action")))
        .and_then(|l| l["href"].as_str())
        .filter(|h| {
            h.len() <= LINK_BYTES_MAX && (h.starts_with("https://") || h.starts_with("http://"))
        })
        .map(str::to_owned)
}

/// The captures of an order's purchase units (bounded).
fn captures(order: &Value) -> impl Iterator<Item = GatewayCapture> + '_ {
    order["purchase_units"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|unit| {
            unit["payments"]["captures"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .take(CAPTURES_MAX)
        .filter_map(parse_capture)
}

/// A capture object (in an order's answer, or a webhook's resource).
pub fn parse_capture(v: &Value) -> Option<GatewayCapture> {
    let id = v["id"].as_str().filter(|id| is_paypal_id(id))?;
    Some(GatewayCapture {
        id: id.to_owned(),
        status: truncate(v["status"].as_str().unwrap_or("UNKNOWN"), 64).to_owned(),
        amount: parse_amount(&v["amount"]),
    })
}

fn cut_chars(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// PayPal takes no customers or subscriptions through this gateway (yet).
fn not_supported(what: &str) -> GatewayError {
    GatewayError::Refused(format!("{what} through paypal is not supported"))
}

#[async_trait]
impl PaymentGateway for PaypalGateway {
    fn name(&self) -> &'static str {
        "paypal"
    }

    async fn create_customer(&self, _req: &CustomerRequest) -> Result<String, GatewayError> {
        Err(not_supported("a customer"))
    }

    /// `POST /v2/checkout/orders`: an order with intent `CAPTURE` and one
    /// purchase unit for our invoice (`custom_id` = its id, `invoice_id` =
    /// its number, `reference_id` = our payment id).
    async fn create_payment_intent(
        &self,
        req: &PaymentIntentRequest,
    ) -> Result<PaymentIntent, GatewayError> {
        let value = amount_value(req.amount, &req.currency)?;
        let body = json!({
            "intent": "CAPTURE",
            "purchase_units": [{
                "reference_id": req.payment_id,
                "custom_id": req.invoice_id,
                "invoice_id": req.invoice_number,
                "description": cut_chars(&req.description, DESCRIPTION_CHARS_MAX),
                "amount": {
                    "currency_code": req.currency.as_str(),
                    "value": value,
                },
            }],
        });
        let json = self
            .call(
                Method::POST,
                "/v2/checkout/orders",
                Some(&body.to_string()),
                Some(&req.idempotency_key),
            )
            .await?;
        Ok(PaymentIntent {
            id: id_of(&json, "id")?,
            client_secret: None,
            approval_url: approval_link(&json),
            status: truncate(json["status"].as_str().unwrap_or("CREATED"), 64).to_owned(),
        })
    }

    async fn create_subscription(
        &self,
        _req: &SubscriptionRequest,
    ) -> Result<GatewaySubscription, GatewayError> {
        Err(not_supported("a subscription"))
    }

    /// A refund of the order `payment_ref`: its completed capture is looked
    /// up on the order (`GET /v2/checkout/orders/{id}`), then refunded
    /// (`POST /v2/payments/captures/{capture}/refund`) with our refund id
    /// as `custom_id`, so the `PAYMENT.CAPTURE.REFUNDED` webhook names it.
    async fn refund(&self, req: &RefundRequest) -> Result<Refund, GatewayError> {
        let value = amount_value(req.amount, &req.currency)?;
        let order = self
            .call(
                Method::GET,
                &format!("/v2/checkout/orders/{}", segment(&req.payment_ref)?),
                None,
                None,
            )
            .await?;
        let capture = captures(&order)
            .find(|c| matches!(c.status.as_str(), "COMPLETED" | "PARTIALLY_REFUNDED"))
            .ok_or_else(|| {
                GatewayError::Refused("the PayPal order has no completed capture to refund".into())
            })?;
        let body = json!({
            "amount": { "currency_code": req.currency.as_str(), "value": value },
            "custom_id": req.refund_id,
        });
        let json = self
            .call(
                Method::POST,
                &format!("/v2/payments/captures/{}/refund", capture.id),
                Some(&body.to_string()),
                Some(&req.idempotency_key),
            )
            .await?;
        Ok(Refund {
            id: id_of(&json, "id")?,
            status: truncate(json["status"].as_str().unwrap_or("PENDING"), 64).to_owned(),
        })
    }

    async fn cancel_subscription(
        &self,
        _req: &CancelSubscriptionRequest,
    ) -> Result<(), GatewayError> {
        Err(not_supported("a subscription"))
    }
}

#[async_trait]
impl PaypalCheckout for PaypalGateway {
    /// `POST /v2/checkout/orders/{id}/capture`.
    async fn capture_order(
        &self,
        req: &CaptureOrderRequest,
    ) -> Result<CapturedOrder, GatewayError> {
        let json = self
            .call(
                Method::POST,
                &format!("/v2/checkout/orders/{}/capture", segment(&req.order_id)?),
                Some("{}"),
                Some(&req.idempotency_key),
            )
            .await?;
        let capture = captures(&json).next();
        Ok(CapturedOrder {
            order_id: id_of(&json, "id")?,
            status: truncate(json["status"].as_str().unwrap_or("UNKNOWN"), 64).to_owned(),
            capture,
        })
    }

    /// `POST /v1/notifications/verify-webhook-signature`. The event goes
    /// out as the bytes that came in: PayPal checks its signature over the
    /// event it sent, which a re-serialization (key order, number
    /// formatting) could change.
    async fn verify_webhook(&self, req: &WebhookVerificationRequest) -> Result<bool, GatewayError> {
        let event = std::str::from_utf8(&req.event)
            .ok()
            .filter(|text| serde_json::from_str::<serde_json::Map<String, Value>>(text).is_ok())
            .ok_or_else(|| {
                GatewayError::Refused("the webhook event is not a JSON object".into())
            })?;
        let body = verification_body(req, event);
        let json = self
            .call(
                Method::POST,
                "/v1/notifications/verify-webhook-signature",
                Some(&body),
                None,
            )
            .await?;
        Ok(json["verification_status"].as_str() == Some("SUCCESS"))
    }
}

/// The verify-webhook-signature request: the transmission headers and the
/// webhook id as JSON strings, and `event` (a JSON object's text) as it is.
fn verification_body(req: &WebhookVerificationRequest, event: &str) -> String {
    let s = |v: &str| Value::String(v.to_owned()).to_string();
    format!(
        "{{\"auth_algo\":{},\"cert_url\":{},\"transmission_id\":{},\"transmission_sig\":{},\
         \"transmission_time\":{},\"webhook_id\":{},\"webhook_event\":{event}}}",
        s(&req.auth_algo),
        s(&req.cert_url),
        s(&req.transmission_id),
        s(&req.transmission_sig),
        s(&req.transmission_time),
        s(&req.webhook_id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_renewed_before_they_expire() {
        assert_eq!(token_keep_seconds(32_400), 32_100);
        assert_eq!(token_keep_seconds(600), 300);
        assert_eq!(token_keep_seconds(60), 30);
        assert_eq!(token_keep_seconds(1), 1);
        assert_eq!(token_keep_seconds(0), 0);
        assert_eq!(
            token_keep_seconds(u64::MAX),
            TOKEN_LIFETIME_SECONDS_MAX - TOKEN_RENEW_MARGIN_SECONDS
        );
    }

    #[test]
    fn amounts_go_out_in_the_currency_s_minor_unit_exactly() {
        let usd = Currency::usd();
        assert_eq!(amount_value(Decimal::new(3_451, 2), &usd).unwrap(), "34.51");
        assert_eq!(amount_value(Decimal::new(29, 0), &usd).unwrap(), "29.00");
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(amount_value(Decimal::new(500, 0), &jpy).unwrap(), "500");
        assert!(amount_value(Decimal::new(1, 3), &usd).is_err());
    }

    #[test]
    fn amounts_come_in_as_exact_decimals_or_not_at_all() {
        let a = parse_amount(&json!({ "currency_code": "USD", "value": "34.51" })).unwrap();
        assert_eq!(a.value, Decimal::new(3_451, 2));
        assert_eq!(a.currency, "USD");
        for bad in [
            json!({ "currency_code": "USD", "value": 34.51 }),
            json!({ "currency_code": "USD", "value": "1e3" }),
            json!({ "currency_code": "USD", "value": "-1.00" }),
            json!({ "currency_code": "US", "value": "1.00" }),
            json!({ "value": "1.00" }),
            json!("34.51"),
            Value::Null,
        ] {
            assert_eq!(parse_amount(&bad), None, "{bad}");
        }
    }

    #[test]
    fn the_approval_link_is_approve_or_payer_action_and_a_web_address() {
        let order = |rel: &str, href: &str| {
            json!({ "links": [
                { "rel": "self", "href": "https://api-m.paypal.com/v2/checkout/orders/5O1" },
                { "rel": rel, "href": href },
            ]})
        };
        assert_eq!(
            approval_link(&order(
                "approve",
                "https://www.paypal.com/checkoutnow?token=5O1"
            )),
            Some("https://www.paypal.com/checkoutnow?token=5O1".into())
        );
        assert_eq!(
            approval_link(&order(
                "payer-action",
                "https://www.paypal.com/checkoutnow?token=5O1"
            )),
            Some("https://www.paypal.com/checkoutnow?token=5O1".into())
        );
        assert_eq!(
            approval_link(&order("approve", "javascript:alert(1)")),
            None
        );
        assert_eq!(approval_link(&order("capture", "https://x")), None);
        assert_eq!(approval_link(&json!({ "links": "nope" })), None);
        assert_eq!(approval_link(&json!({})), None);
    }

    #[test]
    fn captures_are_read_from_the_order_s_purchase_units() {
        let order = json!({
            "id": "5O190127TN364715T",
            "status": "COMPLETED",
            "purchase_units": [{
                "payments": { "captures": [{
                    "id": "3C679366HH908993F",
                    "status": "COMPLETED",
                    "amount": { "currency_code": "USD", "value": "34.51" },
                }]},
            }],
        });
        let all: Vec<GatewayCapture> = captures(&order).collect();
        assert_eq!(
            all,
            vec![GatewayCapture {
                id: "3C679366HH908993F".into(),
                status: "COMPLETED".into(),
                amount: Some(GatewayAmount {
                    value: Decimal::new(3_451, 2),
                    currency: "USD".into()
                }),
            }]
        );
        assert_eq!(captures(&json!({ "purchase_units": 7 })).count(), 0);
        assert_eq!(
            parse_capture(&json!({ "id": "../../v1/x", "status": "COMPLETED" })),
            None
        );
    }

    #[test]
    fn only_paypal_shaped_ids_go_into_a_path() {
        assert!(is_paypal_id("5O190127TN364715T"));
        assert!(is_paypal_id("WH-2WR32451HC0233532-67976317FL4543714"));
        for bad in ["", "a/b", "..", "a?b", "a b", &"x".repeat(ID_BYTES_MAX + 1)] {
            assert!(!is_paypal_id(bad), "{bad}");
            assert!(segment(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn paypal_errors_are_one_readable_line_and_5xx_is_retryable() {
        let body = json!({
            "name": "UNPROCESSABLE_ENTITY",
            "message": "The requested action could not be performed.",
            "details": [{ "issue": "ORDER_ALREADY_CAPTURED" }],
        });
        assert_eq!(
            answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                body.to_string().as_bytes()
            ),
            Err(GatewayError::Refused(
                "UNPROCESSABLE_ENTITY (422 Unprocessable Entity): The requested action could \
                 not be performed.; ORDER_ALREADY_CAPTURED"
                    .into()
            ))
        );
        let oauth = json!({ "error": "invalid_client", "error_description": "Client Authentication failed" });
        assert_eq!(
            describe(StatusCode::BAD_REQUEST, Some(&oauth)),
            "invalid_client (400 Bad Request): Client Authentication failed"
        );
        assert!(matches!(
            answer(StatusCode::SERVICE_UNAVAILABLE, b"{}"),
            Err(GatewayError::Unreachable(_))
        ));
        assert!(matches!(
            answer(StatusCode::TOO_MANY_REQUESTS, b""),
            Err(GatewayError::Unreachable(_))
        ));
        assert!(matches!(
            answer(StatusCode::OK, b"not json"),
            Err(GatewayError::Refused(_))
        ));
        assert!(matches!(
            answer(StatusCode::OK, b"[1]"),
            Err(GatewayError::Refused(_))
        ));
        assert_eq!(answer(StatusCode::OK, b"{\"a\":1}"), Ok(json!({ "a": 1 })));
    }

    #[test]
    fn the_verification_request_carries_the_event_as_received() {
        let req = WebhookVerificationRequest {
            auth_algo: "SHA256withRSA".into(),
            cert_url: "https://api.paypal.com/v1/notifications/certs/CERT-1".into(),
            transmission_id: "69cd13f0-d67a-11e5-baa3-778b53f4ae55".into(),
            transmission_sig: "a\"b".into(),
            transmission_time: "2016-02-18T20:01:35Z".into(),
            webhook_id: "1JE4291016473214C".into(),
            event: Vec::new(),
        };
        // Key order and number formatting kept as sent.
        let event = r#"{"z":1.50,"id":"WH-1","a":{}}"#;
        let body = verification_body(&req, event);
        assert!(
            body.ends_with(r#""webhook_event":{"z":1.50,"id":"WH-1","a":{}}}"#),
            "{body}"
        );
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["transmission_sig"], "a\"b");
        assert_eq!(parsed["webhook_id"], "1JE4291016473214C");
        assert_eq!(parsed["auth_algo"], "SHA256withRSA");
        assert!(format!("{req:?}").contains("event_bytes: 0"));
    }
}
