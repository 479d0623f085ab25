//! Payment method configuration per country (issue 6 item 7).
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
