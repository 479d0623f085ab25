//! Pure aggregates of the credit ledger.
//!
//! [`account::CreditAccount`] keeps one tenant's credits: balance, holds, lots
//! with expiry, credit limit, status and recent idempotency keys.
//! [`catalog::Catalog`] keeps plans, credit packages and the versioned cost
//! table. [`invoice::Invoice`] and [`payment::Payment`] are the billing
//! aggregates (docs/adr/0010-billing.md). All implement cqrs-es 0.5's `Aggregate`: `handle` decides and
//! writes events to the `EventSink`, `apply` folds them. Neither reads a clock,
//! a random source or a database: time, ids and looked-up facts (the price
//! version) come inside the command. This crate does no I/O.

pub mod account;
pub mod catalog;
pub mod invoice;
pub mod payment;
pub mod pricing;
pub mod subscription;
pub mod team;

pub use account::{AccountCommand, AccountError, CreditAccount};
pub use catalog::{Catalog, CatalogCommand, CatalogError};
pub use invoice::{Invoice, InvoiceCommand, InvoiceError};
pub use payment::{Payment, PaymentCommand, PaymentError};
pub use pricing::{price, PriceError};
pub use subscription::{Subscription, SubscriptionCommand, SubscriptionError};
pub use team::{Team, TeamAction, TeamCommand, TeamError};
