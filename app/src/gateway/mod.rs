//! Payment gateways (docs/adr/0011-payments-gateway.md,
//! docs/adr/0018-paypal.md): the [`PaymentGateway`] port the billing use
//! cases call, with its own error type ([`GatewayError`]); the
//! [`PaypalCheckout`] port for what only PayPal's checkout needs (capturing
//! an approved order, having PayPal verify a webhook); Stripe's
//! implementation over its HTTP API ([`stripe`]), PayPal's over its REST
//! API ([`paypal`]); and [`Gateways`], the configured set on
//! [`crate::App`].
//!
//! A method whose gateway is not configured (Stripe without
//! `STRIPE_SECRET_KEY`, PayPal without `PAYPAL_CLIENT_ID` and
//! `PAYPAL_CLIENT_SECRET`) is reported unavailable (503), never faked.
//! Every call that creates something at the gateway carries an idempotency
//! key derived from our own id, so a retry after a timeout finds the first
//! result instead of charging twice.

pub mod paypal;
pub mod stripe;

use std::sync::Arc;

use async_trait::async_trait;
use events::{Currency, PaymentMethod};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use tracing::warn;

use crate::error::AppError;
use crate::settings::Secret;

/// A customer to create at the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerRequest {
    pub account_id: String,
    pub name: String,
    pub email: Option<String>,
    /// Sent as the gateway's idempotency key.
    pub idempotency_key: String,
}

/// A one-off payment for one of our invoices (a Stripe PaymentIntent, a
/// PayPal order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntentRequest {
    pub amount: Decimal,
    pub currency: Currency,
    pub invoice_id: String,
    /// The invoice's number (`INV-YYYY-NNNNNN`), which PayPal shows the
    /// payer as the invoice id.
    pub invoice_number: String,
    pub payment_id: String,
    pub account_id: String,
    pub description: String,
    pub idempotency_key: String,
    /// Charge a saved card now, without the payer (an automatic top-up):
    /// Stripe's `off_session=true, confirm=true`.
    pub off_session: Option<OffSession>,
}

/// A saved card to charge without the payer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffSession {
    /// The gateway's customer (`cus_…`).
    pub customer_id: String,
    /// The card (`pm_…`).
    pub payment_method_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntent {
    /// The gateway's id of the payment (`pi_…`, a PayPal order id).
    pub id: String,
    /// What the browser confirms the payment with (Stripe).
    pub client_secret: Option<String>,
    /// Where the payer approves the payment (PayPal's `approve` or
    /// `payer-action` link).
    pub approval_url: Option<String>,
    pub status: String,
}

/// A recurring subscription at the gateway for one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRequest {
    pub customer_id: String,
    /// The gateway's price of the plan (`price_…`).
    pub price_id: String,
    /// The currency to bill in when it is not the price's own (a Stripe
    /// price with `currency_options`); `None`: the price's.
    pub currency: Option<Currency>,
    pub subscription_id: String,
    pub account_id: String,
    pub first_invoice_id: String,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GatewaySubscription {
    pub id: String,
    pub status: String,
    /// What the browser confirms the first payment with (Stripe: the
    /// latest invoice's `confirmation_secret.client_secret`, or its
    /// PaymentIntent's `client_secret` in older API versions).
    pub client_secret: Option<String>,
    /// The gateway's customer (`cus_…`).
    pub customer_id: Option<String>,
    /// The subscription's (first) item (`si_…`), whose price a plan change
    /// replaces.
    pub item_id: Option<String>,
    /// The amount the gateway invoiced for a plan change it prorated at
    /// once (Stripe: the latest invoice, when its `billing_reason` is
    /// `subscription_update`).
    pub proration: Option<events::Money>,
    /// The object as the gateway answered it (what a sync applies).
    pub raw: serde_json::Value,
}

/// Ending one of our subscriptions at the gateway: at the end of the paid
/// period (the gateway charges no further period) or now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelSubscriptionRequest {
    /// The gateway's subscription id (`sub_…`).
    pub gateway_subscription_id: String,
    /// Our subscription's id.
    pub subscription_id: String,
    pub at_period_end: bool,
    pub idempotency_key: String,
}

/// Clears a subscription's cancel at the period end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeSubscriptionRequest {
    /// The gateway's subscription id (`sub_…`).
    pub gateway_subscription_id: String,
    /// Our subscription's id.
    pub subscription_id: String,
    pub idempotency_key: String,
}

/// A card saved at the gateway for a customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCard {
    /// The gateway's payment method id (`pm_…`).
    pub id: String,
    /// The customer it is attached to (none once detached).
    pub customer_id: Option<String>,
    /// `visa`, `mastercard`, …
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: u32,
}

/// A SetupIntent: what the browser confirms to save a card for later
/// payments without paying now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupIntent {
    pub id: String,
    pub client_secret: Option<String>,
    pub status: String,
}

/// Changing the price of a gateway subscription's item (a plan change),
/// with the gateway's own proration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangePriceRequest {
    /// The gateway's subscription id (`sub_…`).
    pub gateway_subscription_id: String,
    /// The item whose price changes (`si_…`).
    pub item_id: String,
    /// The new plan's price at the gateway (`price_…`).
    pub price_id: String,
    /// Bill the difference for the rest of the period (an upgrade), or
    /// charge the new price from the next period on (a downgrade, which
    /// takes effect at the period end).
    pub prorate: bool,
    pub idempotency_key: String,
}

/// A refund of (part of) a gateway payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The gateway's payment id (`pi_…`).
    pub payment_ref: String,
    pub amount: Decimal,
    pub currency: Currency,
    pub refund_id: String,
    pub payment_id: String,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    pub id: String,
    pub status: String,
}

/// What went wrong at a gateway.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The gateway could not be reached or timed out: retry later (503).
    #[error("the payment gateway is unreachable: {0}")]
    Unreachable(String),
    /// The gateway refused the request (a 4xx: a declined card, a missing
    /// price) or answered something we cannot read (502).
    #[error("the payment gateway refused the request: {0}")]
    Refused(String),
    /// The amount cannot be expressed in the currency's minor unit.
    #[error("{0} cannot be expressed in the currency's minor unit")]
    Amount(Decimal),
}

impl From<GatewayError> for AppError {
    fn from(e: GatewayError) -> Self {
        warn!(error = %e, "payment gateway call failed");
        match e {
            GatewayError::Unreachable(_) => {
                AppError::Unavailable("the payment gateway is unreachable; retry shortly".into())
            }
            GatewayError::Refused(m) => {
                AppError::BadGateway(format!("the payment gateway refused the request: {m}"))
            }
            GatewayError::Amount(a) => AppError::invalid_field(
                "amount",
                format!("{a} cannot be expressed in the currency's minor unit"),
            ),
        }
    }
}

/// A payment gateway. Implementations must send `idempotency_key` to the
/// gateway so that a repeated call creates nothing new.
#[async_trait]
pub trait PaymentGateway: Send + Sync {
    /// The gateway's name as recorded on payments (`stripe`).
    fn name(&self) -> &'static str;
    async fn create_customer(&self, req: &CustomerRequest) -> Result<String, GatewayError>;
    async fn create_payment_intent(
        &self,
        req: &PaymentIntentRequest,
    ) -> Result<PaymentIntent, GatewayError>;
    async fn create_subscription(
        &self,
        req: &SubscriptionRequest,
    ) -> Result<GatewaySubscription, GatewayError>;
    async fn refund(&self, req: &RefundRequest) -> Result<Refund, GatewayError>;
    /// The subscription `gateway_subscription_id` as the gateway has it now,
    /// with its latest invoice. Gateways without subscriptions refuse it.
    async fn get_subscription(
        &self,
        gateway_subscription_id: &str,
    ) -> Result<GatewaySubscription, GatewayError> {
        Err(GatewayError::Refused(format!(
            "{} has no subscription {gateway_subscription_id}",
            self.name()
        )))
    }
    /// Changes the price of a subscription's item, prorated by the
    /// gateway. Gateways without subscriptions refuse it.
    async fn change_subscription_price(
        &self,
        _req: &ChangePriceRequest,
    ) -> Result<GatewaySubscription, GatewayError> {
        Err(GatewayError::Refused(format!(
            "{} has no subscriptions to change",
            self.name()
        )))
    }
    /// A one-off payment (`pi_…`) as the gateway has it now, as it answered.
    async fn get_payment_intent(&self, id: &str) -> Result<serde_json::Value, GatewayError> {
        Err(GatewayError::Refused(format!(
            "{} has no payment intent {id}",
            self.name()
        )))
    }
    /// A SetupIntent for `customer_id` to save a card with.
    async fn create_setup_intent(
        &self,
        _customer_id: &str,
        _account_id: &str,
        _idempotency_key: &str,
    ) -> Result<SetupIntent, GatewayError> {
        Err(no_saved_cards(self.name()))
    }
    /// The cards saved for `customer_id` (at most [`SAVED_CARDS_MAX`]).
    async fn list_cards(&self, _customer_id: &str) -> Result<Vec<SavedCard>, GatewayError> {
        Err(no_saved_cards(self.name()))
    }
    /// One saved card, with the customer it is attached to.
    async fn get_card(&self, _card_id: &str) -> Result<SavedCard, GatewayError> {
        Err(no_saved_cards(self.name()))
    }
    /// The card `customer_id` pays invoices with by default, if any.
    async fn default_card(&self, _customer_id: &str) -> Result<Option<String>, GatewayError> {
        Err(no_saved_cards(self.name()))
    }
    /// Makes `card_id` the card `customer_id` pays invoices with.
    async fn set_default_card(
        &self,
        _customer_id: &str,
        _card_id: &str,
        _idempotency_key: &str,
    ) -> Result<(), GatewayError> {
        Err(no_saved_cards(self.name()))
    }
    /// Detaches `card_id` from its customer: it can no longer be charged.
    async fn detach_card(
        &self,
        _card_id: &str,
        _idempotency_key: &str,
    ) -> Result<(), GatewayError> {
        Err(no_saved_cards(self.name()))
    }
    /// Cancels a subscription made by [`Self::create_subscription`], at the
    /// period end or now.
    async fn cancel_subscription(
        &self,
        req: &CancelSubscriptionRequest,
    ) -> Result<(), GatewayError>;
    /// Takes back a cancel scheduled for the period end. Gateways without
    /// subscriptions refuse it.
    async fn resume_subscription(
        &self,
        _req: &ResumeSubscriptionRequest,
    ) -> Result<(), GatewayError> {
        Err(GatewayError::Refused(format!(
            "{} has no subscriptions to resume",
            self.name()
        )))
    }
}

/// Most saved cards listed for one customer (Stripe's page limit).
pub const SAVED_CARDS_MAX: usize = 100;

fn no_saved_cards(gateway: &str) -> GatewayError {
    GatewayError::Refused(format!("{gateway} keeps no saved cards"))
}

/// Capturing an approved PayPal order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOrderRequest {
    /// PayPal's order id.
    pub order_id: String,
    /// Sent as the gateway's idempotency key (`PayPal-Request-Id`).
    pub idempotency_key: String,
}

/// An amount as a gateway states it: the value exactly as a decimal, and
/// the currency code as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayAmount {
    pub value: Decimal,
    pub currency: String,
}

/// A capture of a PayPal order: the money moving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayCapture {
    /// PayPal's capture id (what a refund is made against).
    pub id: String,
    /// `COMPLETED`, `PENDING`, `DECLINED`, `FAILED`, …
    pub status: String,
    pub amount: Option<GatewayAmount>,
}

/// What capturing an order gave: the order's status and its capture (none
/// when PayPal answered without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapturedOrder {
    pub order_id: String,
    pub status: String,
    pub capture: Option<GatewayCapture>,
}

/// A webhook delivery for PayPal to verify: its `PAYPAL-*` transmission
/// headers, the webhook's id at PayPal and the body exactly as received.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookVerificationRequest {
    pub auth_algo: String,
    pub cert_url: String,
    pub transmission_id: String,
    pub transmission_sig: String,
    pub transmission_time: String,
    pub webhook_id: String,
    /// The delivery's body as received: a JSON object, sent on unchanged
    /// (a re-serialized event may not be the one PayPal signed).
    pub event: Vec<u8>,
}

impl std::fmt::Debug for WebhookVerificationRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookVerificationRequest")
            .field("transmission_id", &self.transmission_id)
            .field("webhook_id", &self.webhook_id)
            .field("event_bytes", &self.event.len())
            .finish_non_exhaustive()
    }
}

/// What only PayPal's checkout needs beyond [`PaymentGateway`]: the payer
/// approves an order at PayPal, then we capture it; and PayPal's webhooks
/// are verified by asking PayPal, not with a shared secret.
#[async_trait]
pub trait PaypalCheckout: Send + Sync {
    /// Captures an approved order; the same `idempotency_key` again answers
    /// the first capture.
    async fn capture_order(&self, req: &CaptureOrderRequest)
        -> Result<CapturedOrder, GatewayError>;
    /// Whether PayPal vouches for a webhook delivery (its
    /// verify-webhook-signature answers `SUCCESS`).
    async fn verify_webhook(&self, req: &WebhookVerificationRequest) -> Result<bool, GatewayError>;
}

/// How to reach PayPal: the REST app's client id and secret, and the API's
/// base URL (`https://api-m.paypal.com`; the sandbox or a local stub in
/// tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaypalCredentials {
    pub client_id: String,
    pub client_secret: Secret,
    pub api_base: String,
}

/// The gateways this server is configured with.
#[derive(Clone, Default)]
pub struct Gateways {
    stripe: Option<Arc<dyn PaymentGateway>>,
    /// PayPal, when configured: one gateway seen through both of its ports
    /// (a trait object cannot be turned into its supertrait's on this
    /// crate's minimum Rust, so each port keeps its own handle).
    paypal: Option<Arc<dyn PaymentGateway>>,
    paypal_checkout: Option<Arc<dyn PaypalCheckout>>,
}

impl std::fmt::Debug for Gateways {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateways")
            .field("stripe", &self.stripe.is_some())
            .field("paypal", &self.paypal.is_some())
            .finish()
    }
}

impl Gateways {
    /// Stripe when its secret key is given (`STRIPE_SECRET_KEY`), at
    /// `stripe_api_base`; PayPal when its credentials are
    /// (`PAYPAL_CLIENT_ID`, `PAYPAL_CLIENT_SECRET`, `PAYPAL_API_BASE`).
    pub fn configured(
        stripe_secret_key: Option<&Secret>,
        stripe_api_base: &str,
        paypal: Option<&PaypalCredentials>,
    ) -> Result<Self, GatewayError> {
        let stripe = match stripe_secret_key {
            Some(key) => Some(
                Arc::new(stripe::StripeGateway::new(stripe_api_base, key.clone())?)
                    as Arc<dyn PaymentGateway>,
            ),
            None => None,
        };
        let gateways = Self {
            stripe,
            paypal: None,
            paypal_checkout: None,
        };
        Ok(match paypal {
            Some(credentials) => {
                gateways.with_paypal(Arc::new(paypal::PaypalGateway::new(credentials)?))
            }
            None => gateways,
        })
    }

    /// A set with the given Stripe gateway (tests, other implementations).
    pub fn with_stripe(stripe: Arc<dyn PaymentGateway>) -> Self {
        Self {
            stripe: Some(stripe),
            paypal: None,
            paypal_checkout: None,
        }
    }

    /// This set with `paypal` as the PayPal gateway (both of its ports).
    pub fn with_paypal<G>(mut self, paypal: Arc<G>) -> Self
    where
        G: PaymentGateway + PaypalCheckout + 'static,
    {
        self.paypal = Some(paypal.clone() as Arc<dyn PaymentGateway>);
        self.paypal_checkout = Some(paypal as Arc<dyn PaypalCheckout>);
        self
    }

    /// The gateway of `method`, or 503 `unavailable` saying why.
    pub fn for_method(&self, method: PaymentMethod) -> Result<Arc<dyn PaymentGateway>, AppError> {
        match method {
            PaymentMethod::Stripe => self.stripe.clone().ok_or_else(|| {
                AppError::Unavailable(
                    "stripe is not configured on this server; use bank_transfer or local_wallet"
                        .into(),
                )
            }),
            PaymentMethod::Paypal => self.paypal.clone().ok_or_else(paypal_unavailable),
            m => Err(AppError::invalid_field(
                "method",
                format!("{} is not a gateway method", m.as_str()),
            )),
        }
    }

    /// PayPal's checkout port (capture, webhook verification), or 503
    /// `unavailable` while PayPal is not configured.
    pub fn paypal_checkout(&self) -> Result<Arc<dyn PaypalCheckout>, AppError> {
        self.paypal_checkout.clone().ok_or_else(paypal_unavailable)
    }

    pub fn stripe_configured(&self) -> bool {
        self.stripe.is_some()
    }

    pub fn paypal_configured(&self) -> bool {
        self.paypal.is_some()
    }
}

fn paypal_unavailable() -> AppError {
    AppError::Unavailable(
        "paypal is not configured on this server; use bank_transfer or local_wallet".into(),
    )
}

/// `amount` in the currency's minor unit (`34.51` USD → 3451, `500` JPY →
/// 500), exactly: an amount with more decimals than the currency has, a
/// negative one or one beyond i64 is refused.
pub fn minor_units(amount: Decimal, currency: &Currency) -> Result<i64, GatewayError> {
    let digits = currency.minor_unit_digits();
    let factor = Decimal::from(10_i64.pow(digits));
    let scaled = amount
        .checked_mul(factor)
        .ok_or(GatewayError::Amount(amount))?;
    if scaled.is_sign_negative() || !scaled.fract().is_zero() {
        return Err(GatewayError::Amount(amount));
    }
    scaled.to_i64().ok_or(GatewayError::Amount(amount))
}

/// The inverse of [`minor_units`].
pub fn from_minor_units(minor: i64, currency: &Currency) -> Decimal {
    Decimal::new(minor, currency.minor_unit_digits())
}

/// Most bytes read of a gateway's answer.
pub const RESPONSE_BYTES_MAX: usize = 1024 * 1024;

/// A reqwest error without its URL (which names the gateway or a test
/// stub; no secret, but no use either).
pub(crate) fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "request failed".into()
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A gateway's answer, read whole up to [`RESPONSE_BYTES_MAX`].
pub(crate) async fn read_bounded(
    mut response: reqwest::Response,
    gateway: &str,
) -> Result<Vec<u8>, GatewayError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| GatewayError::Unreachable(without_url(&e)))?
    {
        if bytes.len() + chunk.len() > RESPONSE_BYTES_MAX {
            return Err(GatewayError::Refused(format!(
                "{gateway}'s answer is larger than expected"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minor_units_are_exact_per_currency() {
        let usd = Currency::usd();
        assert_eq!(minor_units(Decimal::new(3_451, 2), &usd), Ok(3_451));
        assert_eq!(minor_units(Decimal::new(29, 0), &usd), Ok(2_900));
        assert_eq!(
            minor_units(Decimal::new(1, 3), &usd),
            Err(GatewayError::Amount(Decimal::new(1, 3)))
        );
        assert!(minor_units(Decimal::new(-1, 0), &usd).is_err());
        let jpy = Currency::parse("JPY").unwrap();
        assert_eq!(minor_units(Decimal::new(500, 0), &jpy), Ok(500));
        assert!(minor_units(Decimal::new(5001, 1), &jpy).is_err());
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(minor_units(Decimal::new(1_234, 3), &kwd), Ok(1_234));
        assert!(minor_units(Decimal::MAX, &usd).is_err());
        assert_eq!(from_minor_units(3_451, &usd).to_string(), "34.51");
        assert_eq!(from_minor_units(500, &jpy).to_string(), "500");
    }

    #[test]
    fn without_a_key_stripe_and_paypal_are_unavailable() {
        let g = Gateways::default();
        assert!(matches!(
            g.for_method(PaymentMethod::Stripe),
            Err(AppError::Unavailable(_))
        ));
        assert!(matches!(
            g.for_method(PaymentMethod::Paypal),
            Err(AppError::Unavailable(_))
        ));
        assert!(matches!(
            g.for_method(PaymentMethod::BankTransfer),
            Err(AppError::InvalidRequest { .. })
        ));
    }
}
