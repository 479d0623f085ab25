//! The payment aggregate (one stream per payment). Manual payments (bank
//! transfer, local wallet) are submitted by the customer and approved or
//! rejected by a developer who is not the submitter (maker-checker).

mod aggregate;
#[cfg(test)]
mod tests;

pub use aggregate::{
    Payment, PaymentCommand, PaymentError, SubmitManualPayment, REFERENCE_BYTES_MAX,
};
