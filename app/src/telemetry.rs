//! The process's metrics (Prometheus text at `/metrics`, SPEC §3): one
//! registry that every transport and the command runner write to, so that
//! no transport imports another to count.
//!
//! The `prometheus` crate, with its protobuf format off, is used rather than
//! `metrics` + `metrics-exporter-prometheus`: it brings five small crates
//! where the exporter brings its own HTTP stack, a recorder behind a global
//! facade and quantile sketches we do not need, and its typed vectors make
//! the label sets explicit where they are declared.
//!
//! Cardinality is bounded by construction: requests are labelled by their
//! route template (never the raw path, so account ids do not become
//! labels), unmatched requests share one label, methods outside the
//! standard set are `other`, statuses outside the SPEC's table `other`, and
//! commands by their static name.
//!
//! The registry is process-wide ([`metrics`]): counters are monotonic for
//! the process whatever the number of servers built (tests build several).

use std::future::Future;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use store::{Executed, ServiceError};
use tracing::warn;

/// Upper bounds, in seconds, of the latency histograms' buckets: 1 ms to
/// 10 s, which covers a cached read through a contended write on PostgreSQL.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];
/// Longest a scrape waits for the store's head position; past it the store
/// counts as down, so that a hung database cannot hang the scrape.
pub const STORE_PROBE_MILLIS_MAX: u64 = 2_000;
/// The `route` label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    command_seconds: HistogramVec,
    projector_position: IntGauge,
    head_position: IntGauge,
    projector_lag: IntGauge,
    store_up: IntGauge,
    committer: IntGaugeVec,
    nats_commands: IntCounterVec,
    nats_up: IntGauge,
    outbox_position: IntGauge,
    outbox_lag: IntGauge,
    http_panics: IntCounter,
    http_timeouts: IntCounter,
    projector_failed: IntGauge,
    projector_lag_seconds: Gauge,
    projector_failures: IntGauge,
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Self {
        // Names, label sets and buckets are constants, so registration can
        // only fail on a programming mistake (a duplicate or invalid name).
        const BAD: &str = "metric definitions are valid and distinct";
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "ledger_http_requests_total",
                "HTTP requests answered, by method, route and status.",
            ),
            &["method", "route", "status"],
        )
        .expect(BAD);
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ledger_http_request_duration_seconds",
                "Time to answer an HTTP request (until the response head), by method and route.",
            )
            .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            &["method", "route"],
        )
        .expect(BAD);
        let command_seconds = HistogramVec::new(
            HistogramOpts::new(
                "ledger_command_duration_seconds",
                "Time to decide and append a command (load, handle, store), by command and outcome.",
            )
            .buckets(LATENCY_BUCKETS_SECONDS.to_vec()),
            &["command", "outcome"],
        )
        .expect(BAD);
        let projector_position = IntGauge::new(
            "ledger_projector_position",
            "Event-log position the read models have reached.",
        )
        .expect(BAD);
        let head_position = IntGauge::new(
            "ledger_log_head_position",
            "Position of the last event in the log.",
        )
        .expect(BAD);
        let projector_lag = IntGauge::new(
            "ledger_projector_lag_events",
            "Events the read models are behind the log's head.",
        )
        .expect(BAD);
        let store_up = IntGauge::new(
            "ledger_store_up",
            "1 when the event store answered the last scrape, else 0.",
        )
        .expect(BAD);
        let committer = IntGaugeVec::new(
            Opts::new(
                "ledger_committer_count",
                "Group committer totals since start: `batches` committed, commands `batched`, \
                 commands run `alone` (after a conflict with another process), commands refused \
                 as `overloaded`.",
            ),
            &["counter"],
        )
        .expect(BAD);
        let nats_commands = IntCounterVec::new(
            Opts::new(
                "ledger_nats_commands_total",
                "NATS commands answered, by transport (`request` or `intake`), kind and HTTP status.",
            ),
            &["transport", "kind", "status"],
        )
        .expect(BAD);
        let nats_up = IntGauge::new(
            "ledger_nats_up",
            "1 when the NATS client was connected at the last scrape, else 0 (absent without NATS).",
        )
        .expect(BAD);
        let outbox_position = IntGauge::new(
            "ledger_outbox_position",
            "Event-log position JetStream has acknowledged (the NATS outbox's checkpoint).",
        )
        .expect(BAD);
        let outbox_lag = IntGauge::new(
            "ledger_outbox_lag_events",
            "Events the NATS outbox is behind the log's head.",
        )
        .expect(BAD);
        let build_info = IntGaugeVec::new(
            Opts::new(
                "ledger_build_info",
                "Always 1; the version of the running server.",
            ),
            &["version"],
        )
        .expect(BAD);
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let http_panics = IntCounter::new(
            "ledger_http_panics_total",
            "HTTP requests whose handler panicked (answered 500).",
        )
        .expect(BAD);
        let http_timeouts = IntCounter::new(
            "ledger_http_timeouts_total",
            "HTTP requests that ran past the request timeout (answered 503).",
        )
        .expect(BAD);
        let projector_failed = IntGauge::new(
            "ledger_projector_failed",
            "1 while the projector's last batch failed and none has succeeded since, else 0.",
        )
        .expect(BAD);
        let projector_lag_seconds = Gauge::new(
            "ledger_projector_lag_seconds",
            "How far behind the log the read models are in time: 0 at the head, else the time since they last reached it.",
        )
        .expect(BAD);
        let projector_failures = IntGauge::new(
            "ledger_projector_failures",
            "Projector batches that failed since the process started (each is retried with backoff).",
        )
        .expect(BAD);
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(request_seconds.clone()),
            Box::new(command_seconds.clone()),
            Box::new(projector_position.clone()),
            Box::new(head_position.clone()),
            Box::new(projector_lag.clone()),
            Box::new(store_up.clone()),
            Box::new(committer.clone()),
            Box::new(nats_commands.clone()),
            Box::new(nats_up.clone()),
            Box::new(outbox_position.clone()),
            Box::new(outbox_lag.clone()),
            Box::new(build_info),
            Box::new(http_panics.clone()),
            Box::new(http_timeouts.clone()),
            Box::new(projector_failed.clone()),
            Box::new(projector_lag_seconds.clone()),
            Box::new(projector_failures.clone()),
        ] {
            registry.register(collector).expect(BAD);
        }
        Self {
            registry,
            requests,
            request_seconds,
            command_seconds,
            projector_position,
            head_position,
            projector_lag,
            store_up,
            committer,
            nats_commands,
            nats_up,
            outbox_position,
            outbox_lag,
            http_panics,
            http_timeouts,
            projector_failed,
            projector_lag_seconds,
            projector_failures,
        }
    }

    /// Counts a request whose handler panicked.
    pub fn observe_panic(&self) {
        self.http_panics.inc();
    }

    /// Counts a request that ran past the request timeout.
    pub fn observe_timeout(&self) {
        self.http_timeouts.inc();
    }

    /// Whether the projector is failing, at the last scrape.
    pub fn observe_projector_failed(&self, failed: bool) {
        self.projector_failed.set(i64::from(failed));
    }

    /// The projector's lag in time and its failures so far.
    pub fn observe_projector(&self, lag_millis: i64, failures: u64) {
        // A gauge is a float by Prometheus' definition; milliseconds of lag
        // are exact in it.
        #[allow(clippy::cast_precision_loss)]
        self.projector_lag_seconds.set(lag_millis as f64 / 1_000.0);
        self.projector_failures
            .set(i64::try_from(failures).unwrap_or(i64::MAX));
    }

    /// Counts a NATS command by transport, kind and outcome.
    pub fn observe_nats_command(&self, transport: &'static str, kind: &'static str, status: u16) {
        self.nats_commands
            .with_label_values(&[transport, kind, status_label(status)])
            .inc();
    }

    /// Sets the NATS gauges: connection, outbox position and its lag behind
    /// `head` (kept as it was when the store did not answer).
    pub fn observe_nats(&self, connected: bool, outbox: i64, head: Option<i64>) {
        self.nats_up.set(i64::from(connected));
        self.outbox_position.set(outbox);
        if let Some(head) = head {
            self.outbox_lag.set((head - outbox).max(0));
        }
    }

    /// Copies the group committer's counters.
    pub fn observe_committer(&self, stats: &store::CommitterStats) {
        use std::sync::atomic::Ordering::Relaxed;
        for (name, value) in [
            ("batches", stats.batches.load(Relaxed)),
            ("batched", stats.batched_commands.load(Relaxed)),
            ("alone", stats.alone.load(Relaxed)),
            ("overloaded", stats.overloaded.load(Relaxed)),
        ] {
            self.committer
                .with_label_values(&[name])
                .set(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }

    /// Counts a request and records its latency.
    pub fn observe_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = method_label(method);
        self.requests
            .with_label_values(&[method, route, &status.to_string()])
            .inc();
        self.request_seconds
            .with_label_values(&[method, route])
            .observe(elapsed.as_secs_f64());
    }

    /// Records how long a command took and how it ended.
    pub fn observe_command(&self, command: &str, outcome: &str, elapsed: Duration) {
        self.command_seconds
            .with_label_values(&[command, outcome])
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the log and projector gauges: `head` is `None` when the store
    /// did not answer (the last known head and lag are then kept).
    pub fn observe_log(&self, projected: i64, head: Option<i64>) {
        self.projector_position.set(projected);
        match head {
            Some(head) => {
                self.store_up.set(1);
                self.head_position.set(head);
                self.projector_lag.set((head - projected).max(0));
            }
            None => self.store_up.set(0),
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            warn!(error = %e, "could not encode the metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The method as a label: the standard ones by name, any other as `other`
/// (methods are extensible tokens, so a client could otherwise mint labels).
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    }
}

/// A status as a bounded label: the SPEC's statuses by number, any other
/// 5xx as `5xx`, the rest `other`.
pub fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        400 => "400",
        401 => "401",
        402 => "402",
        403 => "403",
        404 => "404",
        409 => "409",
        413 => "413",
        422 => "422",
        429 => "429",
        503 => "503",
        s if s >= 500 => "5xx",
        _ => "other",
    }
}

/// How a command ended, as a bounded label.
fn outcome_label<A: cqrs_es::Aggregate, E: std::error::Error>(
    result: &Result<Executed<A>, ServiceError<E>>,
) -> &'static str {
    match result {
        Ok(done) if done.replayed.is_some() => "replayed",
        Ok(_) => "ok",
        Err(ServiceError::Domain(_)) => "rejected",
        Err(ServiceError::KeyReused { .. }) => "key_reused",
        Err(ServiceError::Reserved { .. }) => "reserved",
        Err(ServiceError::Contention { .. }) => "contention",
        Err(ServiceError::NotApplied { .. }) => "not_applied",
        Err(ServiceError::Store(_)) => "store_error",
    }
}

/// Records each command of a batch under `command`, with the batch's
/// latency (what each of them waited).
pub fn observe_batch<A, E>(
    command: &'static str,
    results: &[Result<Executed<A>, ServiceError<E>>],
    elapsed: std::time::Duration,
) where
    A: cqrs_es::Aggregate,
    E: std::error::Error,
{
    for result in results {
        metrics().observe_command(command, outcome_label(result), elapsed);
    }
}

/// Runs a command and records its latency under `command`.
pub async fn time_command<A, E>(
    command: &'static str,
    run: impl Future<Output = Result<Executed<A>, ServiceError<E>>>,
) -> Result<Executed<A>, ServiceError<E>>
where
    A: cqrs_es::Aggregate,
    E: std::error::Error,
{
    let started = Instant::now();
    let result = run.await;
    metrics().observe_command(command, outcome_label(&result), started.elapsed());
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_counted_by_route_template_and_status() {
        let m = metrics();
        m.observe_request(
            "GET",
            "/v1/accounts/{account_id}/balance",
            404,
            Duration::from_millis(3),
        );
        let text = m.render();
        assert!(
            text.contains(
                r#"ledger_http_requests_total{method="GET",route="/v1/accounts/{account_id}/balance",status="404"}"#
            ),
            "{text}"
        );
        assert!(
            text.contains("ledger_http_request_duration_seconds_bucket{"),
            "{text}"
        );
    }

    #[test]
    fn unusual_methods_and_statuses_share_one_label() {
        assert_eq!(method_label("BREW"), "other");
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(status_label(418), "other");
        assert_eq!(status_label(504), "5xx");
    }

    #[test]
    fn lag_never_goes_negative_and_a_silent_store_is_down() {
        let m = Metrics::new();
        m.observe_log(10, Some(7));
        assert_eq!(m.projector_lag.get(), 0);
        m.observe_log(3, Some(7));
        assert_eq!(m.projector_lag.get(), 4);
        assert_eq!(m.store_up.get(), 1);
        m.observe_log(3, None);
        assert_eq!(m.store_up.get(), 0);
        assert_eq!(m.head_position.get(), 7);
    }
}
