//! The credit account aggregate: one stream per tenant.
//!
//! Credits live in *lots* (grants, positive adjustments, refunds), each with
//! an optional expiry. Spending draws lots soonest-expiry first, then oldest
//! first; what no lot covers is *debt* (an overdraft within the credit
//! limit), which the next credits repay first. So balance = Σ lots − debt and
//! at most one of the two is non-zero. Holds reserve credits:
//! available = balance − held, and available never goes below −credit limit.

mod aggregate;
mod commands;
mod errors;
#[cfg(test)]
mod tests;

pub use aggregate::{
    CreditAccount, Lot, OpenHold, CLOSED_HOLDS_WINDOW, IDEMPOTENCY_WINDOW_KEYS, OPEN_HOLDS_MAX,
};
pub use commands::*;
pub use errors::{AccountError, HoldState};
