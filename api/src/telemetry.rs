//! Telemetry shared by both transports: the request middleware and log
//! span of HTTP, and the `/metrics` scrape. The registry itself is
//! [`app::telemetry`]'s, which the command runner and NATS write to as
//! well, so neither transport imports the other to count.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::{warn, Span};

pub use app::telemetry::{metrics, Metrics, STORE_PROBE_MILLIS_MAX, UNMATCHED_ROUTE};

use crate::AppState;

/// Middleware: counts every request by method, matched route and status and
/// records its latency. Layered on the router, where [`MatchedPath`] is known.
pub async fn track(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    metrics().observe_request(
        method.as_str(),
        route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// The span of a request in the logs: method and matched route, never the
/// raw path or query (which carry ids and cursors).
pub fn request_span<B>(request: &axum::http::Request<B>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str);
    tracing::info_span!("request", method = %request.method(), route = %route)
}

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics",
    description = "Text exposition format 0.0.4: `ledger_http_requests_total` and \
        `ledger_http_request_duration_seconds` by route, `ledger_command_duration_seconds` by \
        command, `ledger_projector_position`, `ledger_log_head_position`, \
        `ledger_projector_lag_events`, `ledger_projector_lag_seconds`, `ledger_projector_failed`, \
        `ledger_projector_failures`, `ledger_store_up`, \
        `ledger_committer_count`, `ledger_http_panics_total` and `ledger_http_timeouts_total`; with \
        NATS, `ledger_nats_commands_total` by transport, kind and status, `ledger_nats_up`, \
        `ledger_outbox_position` and `ledger_outbox_lag_events`.",
    responses((status = 200, description = "The metrics", content_type = "text/plain", body = String)),
)]
pub async fn scrape(State(state): State<AppState>) -> Response {
    let projected = state.projector.position();
    let probe = Duration::from_millis(STORE_PROBE_MILLIS_MAX);
    let head = match tokio::time::timeout(probe, state.store.head_position()).await {
        Ok(Ok(head)) => Some(head),
        Ok(Err(e)) => {
            warn!(error = %e, "metrics: the store did not answer");
            None
        }
        Err(_) => {
            warn!(
                timeout_millis = STORE_PROBE_MILLIS_MAX,
                "metrics: the store did not answer in time"
            );
            None
        }
    };
    let m = metrics();
    m.observe_log(projected, head);
    m.observe_committer(state.committer.stats());
    m.observe_projector_failed(state.projector.error().is_some());
    if let Some(head) = head {
        m.observe_projector(state.projector.lag_millis(head), state.projector.failures());
    }
    if let Some(nats) = &state.nats {
        m.observe_nats(nats.is_connected(), nats.outbox_position(), head);
    }
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        m.render(),
    )
        .into_response()
}
