//! The subscription aggregate (one stream per subscription,
//! docs/adr/0012-subscriptions.md): created incomplete (or active at once
//! on a free plan), activated when its first invoice is paid, upgraded now
//! with a prorated invoice or downgraded at the period end, renewed,
//! past_due when a period's invoice is overdue, canceled. Pure: time, ids
//! and plan facts come inside the commands; [`Subscription::next_step`]
//! tells the period processor what is due at an instant.

mod aggregate;
#[cfg(test)]
mod tests;

pub use aggregate::{
    add_cycle, period_line, prorate, CreateSubscription, Proration, Step, Subscription,
    SubscriptionCommand, SubscriptionError, OPEN_INVOICES_MAX, PAID_INVOICES_KEPT,
    PAST_DUE_GRACE_DAYS,
};
