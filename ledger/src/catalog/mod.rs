//! The catalog aggregate: plans, credit packages, the versioned credit cost
//! table and the payment methods offered per country, in one stream. Every
//! change records who made it, when, and the previous value, so the cost
//! table's history is the stream itself.

mod aggregate;
mod defaults;
pub mod payment_methods;
#[cfg(test)]
mod tests;

pub use aggregate::{
    Catalog, CatalogCommand, CatalogError, COST_MAX, COST_TEXT_BYTES_MAX, SEED_VERSION,
};
pub use defaults::{default_costs, default_packages, default_plans};
pub use payment_methods::default_payment_methods;
