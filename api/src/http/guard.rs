//! What stands between a caller and the routes: per-token rate limits
//! (429 `rate_limited` with `Retry-After`), the request timeout (503), and
//! the answer to a handler that panicked (500 in the SPEC's format, counted
//! in `ledger_http_panics_total`). Limits are listed in SECURITY.md.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use app::caller::{Caller, JwtKeys};
use app::{AppError, Role};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use tracing::error;

use crate::auth::Verified;
use crate::config::Limits;
use crate::error::ApiError;

/// Most callers tracked at once; past it, idle ones are forgotten first.
pub const RATE_LIMIT_CALLERS_MAX: usize = 100_000;
/// Routes never limited: health checks and scrapes, which are cheap
/// (`/ready` caches its store probe) and which load balancers and load
/// tools poll.
const UNLIMITED_PATHS: [&str; 3] = ["/health", "/ready", "/metrics"];

/// Who a request counts against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Bucket {
    /// A valid token, by a digest of its text.
    Token([u8; 16]),
    /// No valid token: the client's address.
    Address(IpAddr),
}

/// Micro-requests: a bucket counts in millionths of a request, so that
/// refills are exact integer arithmetic.
const MICRO: u64 = 1_000_000;

/// A token bucket: `micros` (millionths of a request) left as of `at`.
#[derive(Debug, Clone, Copy)]
struct Level {
    micros: u64,
    at: Instant,
}

/// A limit: requests per second and the burst above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rate {
    per_second: u64,
    burst: u64,
}

impl Rate {
    /// The bucket's level at `now`: refilled at `per_second`, capped at
    /// the burst.
    fn refill(self, level: Level, now: Instant) -> u64 {
        let elapsed = u64::try_from(now.duration_since(level.at).as_micros()).unwrap_or(u64::MAX);
        level
            .micros
            .saturating_add(elapsed.saturating_mul(self.per_second))
            .min(self.burst * MICRO)
    }
}

/// The rate limits of one server.
#[derive(Debug)]
pub struct RateLimiter {
    /// Interactive roles and anonymous callers; `None`: off.
    interactive: Option<Rate>,
    /// Developer and system_bot tokens; `None`: off.
    workers: Option<Rate>,
    levels: Mutex<HashMap<Bucket, Level>>,
}

impl RateLimiter {
    pub fn new(limits: &Limits) -> Self {
        let burst = u64::from(limits.rate_limit_burst.max(1));
        let rate = |per_second: u32| {
            (per_second > 0).then_some(Rate {
                per_second: u64::from(per_second),
                burst,
            })
        };
        Self {
            interactive: rate(limits.rate_limit_per_second),
            workers: limits.worker_rate_limit_per_second.and_then(rate),
            levels: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `bucket`; `Err(seconds)` to wait when empty.
    fn take(&self, bucket: Bucket, rate: Rate, now: Instant) -> Result<(), u64> {
        let mut levels = self.levels.lock().unwrap_or_else(|p| p.into_inner());
        if levels.len() >= RATE_LIMIT_CALLERS_MAX && !levels.contains_key(&bucket) {
            // Forget callers whose bucket has refilled: they lose nothing.
            levels.retain(|_, l| rate.refill(*l, now) < rate.burst * MICRO);
            if levels.len() >= RATE_LIMIT_CALLERS_MAX {
                levels.clear();
            }
        }
        let level = levels.entry(bucket).or_insert(Level {
            micros: rate.burst * MICRO,
            at: now,
        });
        let micros = rate.refill(*level, now);
        if micros >= MICRO {
            *level = Level {
                micros: micros - MICRO,
                at: now,
            };
            Ok(())
        } else {
            *level = Level { micros, at: now };
            // Whole seconds until one request's worth is back, at least 1.
            let per_second_micros = rate.per_second * MICRO;
            Err((MICRO - micros).div_ceil(per_second_micros).max(1))
        }
    }
}

/// The state the guard layers need.
#[derive(Clone)]
pub struct Guard {
    pub limiter: Arc<RateLimiter>,
    pub keys: Arc<JwtKeys>,
    pub request_timeout: Duration,
}

/// Middleware: the rate limit of the caller (by token, or by address
/// without a valid one).
pub async fn rate_limit(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    if UNLIMITED_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let header = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let caller = header
        .as_deref()
        .and_then(|h| Caller::from_authorization(&guard.keys, Some(h)).ok());
    // The token is verified once per request: the `Principal` extractor
    // takes this answer instead of checking the signature again.
    if let (Some(authorization), Some(caller)) = (&header, &caller) {
        request.extensions_mut().insert(Verified {
            authorization: authorization.clone(),
            caller: caller.clone(),
        });
    }
    let limit = match &caller {
        Some(c) if matches!(c.role(), Role::Developer | Role::SystemBot) => guard.limiter.workers,
        _ => guard.limiter.interactive,
    };
    let Some(limit) = limit else {
        return next.run(request).await;
    };
    let bucket = match (caller, header.as_deref()) {
        (Some(_), Some(token)) => {
            let digest = Sha256::digest(token.as_bytes());
            let mut id = [0_u8; 16];
            id.copy_from_slice(&digest[..16]);
            Bucket::Token(id)
        }
        _ => Bucket::Address(
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip()),
        ),
    };
    match guard.limiter.take(bucket, limit, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(retry_after_seconds) => ApiError::from(AppError::RateLimited {
            retry_after_seconds,
        })
        .into_response(),
    }
}

/// Whether a URI path, once its `%XX` escapes are decoded, is UTF-8 (what
/// every path parameter must be).
fn decodes_to_utf8(path: &str) -> bool {
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .is_ok()
}

/// Middleware: a path whose escapes do not decode to UTF-8 names nothing;
/// it is refused with 400 in the SPEC's format (the router's own refusal
/// would be plain text).
pub async fn utf8_path(request: Request, next: Next) -> Response {
    if decodes_to_utf8(request.uri().path()) {
        next.run(request).await
    } else {
        ApiError::from(AppError::bad_request(
            "the path is not valid UTF-8 once its %-escapes are decoded",
        ))
        .into_response()
    }
}

/// Middleware: a request that takes longer than the configured timeout is
/// answered 503 (its work, if a write, finishes or not as the committer
/// decides; the idempotency key makes a retry safe).
pub async fn timeout(State(guard): State<Guard>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(guard.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            app::telemetry::metrics().observe_timeout();
            ApiError::Unavailable(format!(
                "the request took longer than {} s; retry (with the same Idempotency-Key for a write)",
                guard.request_timeout.as_secs()
            ))
            .into_response()
        }
    }
}

/// The answer to a handler that panicked: 500 in the SPEC's format, the
/// panic in the log, `ledger_http_panics_total` counted.
pub fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    error!(panic = %message, "a request handler panicked");
    app::telemetry::metrics().observe_panic();
    ApiError::Internal.into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(&Limits {
            header_read_timeout_secs: 10,
            request_timeout_secs: 30,
            max_connections: 1024,
            rate_limit_per_second: per_second,
            rate_limit_burst: burst,
            worker_rate_limit_per_second: None,
        })
    }

    #[test]
    fn a_bucket_allows_its_burst_then_asks_to_wait_and_refills() {
        let l = limiter(2, 3);
        let limit = l.interactive.unwrap();
        let t0 = Instant::now();
        let b = Bucket::Address(IpAddr::from([127, 0, 0, 1]));
        for _ in 0..3 {
            assert!(l.take(b.clone(), limit, t0).is_ok());
        }
        assert_eq!(l.take(b.clone(), limit, t0), Err(1));
        // Another caller has its own bucket.
        assert!(l
            .take(Bucket::Address(IpAddr::from([10, 0, 0, 1])), limit, t0)
            .is_ok());
        // Half a second later one request's worth has come back.
        assert!(l
            .take(b.clone(), limit, t0 + Duration::from_millis(500))
            .is_ok());
        assert!(l.take(b, limit, t0 + Duration::from_millis(500)).is_err());
    }

    #[test]
    fn paths_must_decode_to_utf8() {
        assert!(decodes_to_utf8("/v1/accounts/abc"));
        assert!(decodes_to_utf8("/v1/plans/%C3%A9t%C3%A9"));
        assert!(decodes_to_utf8("/v1/x/100%"));
        assert!(!decodes_to_utf8("/v1/billing/invoices/%FF%FE"));
    }

    #[test]
    fn workers_are_not_limited_unless_configured() {
        assert!(limiter(50, 200).workers.is_none());
        assert!(limiter(0, 200).interactive.is_none());
    }
}
