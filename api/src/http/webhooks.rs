//! Stripe webhooks `POST /v1/billing/webhooks/stripe/` (issue 6 item 4).
//! Placeholder until the module lands.

use axum::Router;
use utoipa::OpenApi;

use crate::AppState;

#[derive(OpenApi)]
#[openapi(paths())]
pub struct Api;

pub fn routes() -> Router<AppState> {
    Router::new()
}
