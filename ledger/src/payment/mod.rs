//! The payment aggregate (one stream per payment). Manual payments (bank
//! transfer, local wallet) are submitted by the customer and approved or
//! rejected by a developer who is not the submitter (maker-checker).
//! Gateway payments (Stripe) are initiated once the gateway holds them and
//! succeed or fail as the gateway reports (docs/adr/0011). A succeeded
//! payment takes refunds whose sum never exceeds its amount.
//! [`StripeEventLog`] records each Stripe webhook event once,
//! [`PaypalEventLog`] each PayPal one (docs/adr/0018-paypal.md).
//! [`StripeCustomer`] keeps an account's Stripe customer, created once.

mod aggregate;
mod paypal_event;
mod stripe_customer;
mod stripe_event;
#[cfg(test)]
mod tests;

pub use aggregate::{
    InitiatePayment, Payment, PaymentCommand, PaymentError, RefundPayment, SubmitManualPayment,
    GATEWAY_TEXT_BYTES_MAX, REFERENCE_BYTES_MAX, REFUNDS_PER_PAYMENT_MAX,
};
pub use paypal_event::{
    paypal_event_stream, PaypalEventCommand, PaypalEventError, PaypalEventLog,
    PAYPAL_EVENT_TEXT_BYTES_MAX, PAYPAL_REFUSAL_BYTES_MAX,
};
pub use stripe_customer::{
    stripe_customer_stream, StripeCustomer, StripeCustomerCommand, StripeCustomerError,
    STRIPE_CUSTOMER_ID_BYTES_MAX,
};
pub use stripe_event::{
    stripe_event_stream, StripeEventCommand, StripeEventError, StripeEventLog,
    STRIPE_EVENT_TEXT_BYTES_MAX,
};
