//! Payment gateways (docs/adr/0011-payments-gateway.md): the
//! [`PaymentGateway`] port the billing use cases call, with its own error
//! type ([`GatewayError`]), Stripe's implementation over its HTTP API
//! ([`stripe`]), and [`Gateways`], the configured set on [`crate::App`].
//!
//! A method whose gateway is not configured (Stripe without
//! `STRIPE_SECRET_KEY`) or does not exist yet (PayPal) is reported
//! unavailable (503), never faked. Every call that creates something at the
//! gateway carries an idempotency key derived from our own id, so a retry
//! after a timeout finds the first result instead of charging twice.

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

/// A one-off payment (a Stripe PaymentIntent) for one of our invoices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntentRequest {
    pub amount: Decimal,
    pub currency: Currency,
    pub invoice_id: String,
    pub payment_id: String,
    pub account_id: String,
    pub description: String,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentIntent {
    pub id: String,
    /// What the browser confirms the payment with.
    pub client_secret: Option<String>,
    pub status: String,
}

/// A recurring subscription at the gateway for one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRequest {
    pub customer_id: String,
    /// The gateway's price of the plan (`price_…`).
    pub price_id: String,
    pub subscription_id: String,
    pub account_id: String,
    pub first_invoice_id: String,
    pub idempotency_key: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySubscription {
    pub id: String,
    pub status: String,
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
    /// Cancels a subscription made by [`Self::create_subscription`], at the
    /// period end or now.
    async fn cancel_subscription(
        &self,
        req: &CancelSubscriptionRequest,
    ) -> Result<(), GatewayError>;
}

/// The gateways this server is configured with.
#[derive(Clone, Default)]
pub struct Gateways {
    stripe: Option<Arc<dyn PaymentGateway>>,
    /// PayPal: the trait is ready; there is no implementation yet, so it is
    /// always `None` and reported unavailable.
    paypal: Option<Arc<dyn PaymentGateway>>,
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
    /// `stripe_api_base`; PayPal never (yet).
    pub fn configured(
        stripe_secret_key: Option<&Secret>,
        stripe_api_base: &str,
    ) -> Result<Self, GatewayError> {
        let stripe = match stripe_secret_key {
            Some(key) => Some(
                Arc::new(stripe::StripeGateway::new(stripe_api_base, key.clone())?)
                    as Arc<dyn PaymentGateway>,
            ),
            None => None,
        };
        Ok(Self {
            stripe,
            paypal: None,
        })
    }

    /// A set with the given Stripe gateway (tests, other implementations).
    pub fn with_stripe(stripe: Arc<dyn PaymentGateway>) -> Self {
        Self {
            stripe: Some(stripe),
            paypal: None,
        }
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
            PaymentMethod::Paypal => self.paypal.clone().ok_or_else(|| {
                AppError::Unavailable(
                    "paypal is not available; use bank_transfer or local_wallet".into(),
                )
            }),
            m => Err(AppError::invalid_field(
                "method",
                format!("{} is not a gateway method", m.as_str()),
            )),
        }
    }

    pub fn stripe_configured(&self) -> bool {
        self.stripe.is_some()
    }
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
