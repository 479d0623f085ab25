//! Error mappings for the billing routes that still run their own use
//! cases in this crate: each is the `app` crate's mapping (the SPEC's table
//! lives there alone), turned into the HTTP error. They go as those use
//! cases move into `app`.

use ledger::AccountError;
use projections::ProjectionError;
use store::{ServiceError, StoreError};

pub use app::runner::claim;
use app::AppError;

use crate::error::ApiError;

/// A store failure is the store being away: 503, details in the log only.
pub fn store_error(e: StoreError) -> ApiError {
    AppError::from(e).into()
}

pub fn projection_error(e: ProjectionError) -> ApiError {
    AppError::from(e).into()
}

pub fn account_error(e: AccountError) -> ApiError {
    AppError::from(e).into()
}

pub fn service_error<E: std::error::Error>(
    e: ServiceError<E>,
    domain: impl FnOnce(E) -> ApiError,
) -> ApiError {
    app::error::service_error(e, |d| domain(d).into()).into()
}
