//! Billing statistics `GET /v1/admin/billing/stats` (issue 6 item 8).
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
