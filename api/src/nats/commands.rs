//! The translator: a NATS command becomes an in-process HTTP request to the
//! same router the HTTP API serves, so both transports share one
//! implementation of authentication, validation, idempotency, the group
//! commit and the error table (docs/adr/0009-nats.md).
//!
//! A command's payload is the HTTP body plus `account_id`,
//! `idempotency_key` and, for capture and release, `hold_id`; the caller's
//! token travels in the message's `Authorization` header. The reply is the
//! HTTP body as is on success, and the HTTP error body with `"status"`
//! added on failure.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use events::{AccountId, IdempotencyKey};
use serde_json::{json, Map, Value};
use tower::ServiceExt;
use tracing::warn;
use uuid::Uuid;

use crate::error::ApiError;
use crate::http::extract::REQUEST_BODY_BYTES_MAX;

/// Longest a command may take before the caller is told `unavailable`
/// (the command may still commit; a retry with the same key replays it).
pub const COMMAND_TIMEOUT_MILLIS: u64 = 10_000;
/// Largest response body read back from the router.
const RESPONSE_BODY_BYTES_MAX: usize = 256 * 1024;

/// The four account commands NATS carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deduct,
    Hold,
    Capture,
    Release,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Deduct, Kind::Hold, Kind::Capture, Kind::Release];

    /// The kind named by the last token of a subject
    /// (`ledger.commands.deduct`, `ledger.intake.hold`, …).
    pub fn from_subject(subject: &str) -> Option<Self> {
        match subject.rsplit('.').next()? {
            "deduct" => Some(Self::Deduct),
            "hold" => Some(Self::Hold),
            "capture" => Some(Self::Capture),
            "release" => Some(Self::Release),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deduct => "deduct",
            Self::Hold => "hold",
            Self::Capture => "capture",
            Self::Release => "release",
        }
    }

    fn needs_hold(self) -> bool {
        matches!(self, Self::Capture | Self::Release)
    }

    /// HTTP makes the key optional on release only; NATS follows.
    fn needs_key(self) -> bool {
        !matches!(self, Self::Release)
    }
}

/// What a command came to: the HTTP status and the reply body.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: StatusCode,
    /// The reply: the HTTP success body as is, or the error body with
    /// `"status"` added.
    pub body: Bytes,
    /// True when the router replayed an earlier command with the same key.
    pub replayed: bool,
    /// The account, when the payload named a valid one.
    pub account_id: Option<AccountId>,
    /// The idempotency key, when the payload carried a valid one.
    pub idempotency_key: Option<String>,
}

impl Outcome {
    fn error(e: &ApiError, account_id: Option<AccountId>, key: Option<String>) -> Self {
        Self {
            status: e.status(),
            body: Bytes::from(with_status(e.body(), e.status()).to_string()),
            replayed: false,
            account_id,
            idempotency_key: key,
        }
    }

    /// A 5xx or 429: the command did not happen and may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.status.is_server_error() || self.status == StatusCode::TOO_MANY_REQUESTS
    }

    /// The bounded label of this outcome in the metrics: the status code.
    pub fn status_label(&self) -> &'static str {
        status_label(self.status)
    }
}

fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
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

fn with_status(mut body: Value, status: StatusCode) -> Value {
    if let Value::Object(map) = &mut body {
        map.insert("status".into(), json!(status.as_u16()));
    }
    body
}

fn field(name: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_field(name, message)
}

/// The request a command payload stands for: the path's parts, the key and
/// the HTTP body.
struct Parsed {
    account_id: AccountId,
    key: Option<IdempotencyKey>,
    path: String,
    body: Map<String, Value>,
}

fn take_string(body: &mut Map<String, Value>, name: &str) -> Result<Option<String>, ApiError> {
    match body.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field(name, format!("{name} must be a string"))),
    }
}

fn parse(kind: Kind, payload: &[u8]) -> Result<Parsed, (ApiError, Option<AccountId>)> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| {
        (
            ApiError::bad_request(format!("the payload is not valid JSON: {e}")),
            None,
        )
    })?;
    let Value::Object(mut body) = value else {
        return Err((
            ApiError::bad_request("the payload must be a JSON object"),
            None,
        ));
    };
    let account_id = take_string(&mut body, "account_id")
        .map_err(|e| (e, None))?
        .ok_or_else(|| (field("account_id", "account_id is required"), None))?;
    let account_id = AccountId::parse(&account_id).map_err(|_| {
        (
            field("account_id", "account_id must be an account's id (a UUID)"),
            None,
        )
    })?;
    let fail = |e: ApiError| (e, Some(account_id));
    let key = take_string(&mut body, "idempotency_key")
        .map_err(fail)?
        .map(|k| {
            IdempotencyKey::parse(&k)
                .map_err(|e| field("idempotency_key", format!("idempotency_key {}", e.reason)))
        })
        .transpose()
        .map_err(fail)?;
    if key.is_none() && kind.needs_key() {
        return Err(fail(field(
            "idempotency_key",
            "idempotency_key is required",
        )));
    }
    let hold = if kind.needs_hold() {
        let raw = take_string(&mut body, "hold_id")
            .map_err(fail)?
            .ok_or_else(|| fail(field("hold_id", "hold_id is required")))?;
        Some(
            Uuid::parse_str(&raw)
                .map_err(|_| fail(field("hold_id", "hold_id must be a hold's id (a UUID)")))?,
        )
    } else {
        None
    };
    // Built from parsed values only, so a payload cannot steer the request
    // to another route.
    let path = match (kind, hold) {
        (Kind::Deduct, _) => format!("/v1/accounts/{account_id}/deductions"),
        (Kind::Hold, _) => format!("/v1/accounts/{account_id}/holds"),
        (Kind::Capture, Some(h)) => format!("/v1/accounts/{account_id}/holds/{h}/capture"),
        (Kind::Release, Some(h)) => format!("/v1/accounts/{account_id}/holds/{h}/release"),
        (Kind::Capture | Kind::Release, None) => {
            return Err(fail(field("hold_id", "hold_id is required")))
        }
    };
    Ok(Parsed {
        account_id,
        key,
        path,
        body,
    })
}

/// Runs one command through `router` and returns its outcome. Never fails:
/// every problem is an error outcome in the SPEC's format.
pub async fn execute(
    router: &Router,
    kind: Kind,
    authorization: Option<&str>,
    payload: &[u8],
) -> Outcome {
    if payload.len() > REQUEST_BODY_BYTES_MAX {
        return Outcome::error(
            &ApiError::PayloadTooLarge {
                limit_bytes: REQUEST_BODY_BYTES_MAX,
            },
            None,
            None,
        );
    }
    let parsed = match parse(kind, payload) {
        Ok(p) => p,
        Err((e, account)) => return Outcome::error(&e, account, None),
    };
    let account_id = parsed.account_id;
    let key = parsed.key.as_ref().map(|k| k.as_str().to_owned());
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(&parsed.path)
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(auth) = authorization {
        request = request.header(header::AUTHORIZATION, auth);
    }
    if let Some(k) = &parsed.key {
        request = request.header("idempotency-key", k.as_str());
    }
    let request = match request.body(Body::from(Value::Object(parsed.body).to_string())) {
        Ok(r) => r,
        // Only a header value the HTTP types refuse (a control character in
        // the Authorization header) gets here.
        Err(_) => {
            return Outcome::error(
                &ApiError::Unauthorized("the Authorization header is not a valid header".into()),
                Some(account_id),
                key,
            )
        }
    };
    let timeout = Duration::from_millis(COMMAND_TIMEOUT_MILLIS);
    let response = match tokio::time::timeout(timeout, router.clone().oneshot(request)).await {
        Ok(Ok(r)) => r,
        Ok(Err(never)) => match never {},
        Err(_) => {
            warn!(
                kind = kind.as_str(),
                "a NATS command took longer than its timeout"
            );
            return Outcome::error(
                &ApiError::Unavailable(
                    "the command took too long; retry with the same idempotency_key".into(),
                ),
                Some(account_id),
                key,
            );
        }
    };
    let status = response.status();
    let replayed = response
        .headers()
        .get("idempotent-replayed")
        .is_some_and(|v| v.as_bytes() == b"true");
    let bytes = match axum::body::to_bytes(response.into_body(), RESPONSE_BODY_BYTES_MAX).await {
        Ok(b) => b,
        Err(e) => {
            warn!(error = %e, "could not read a command's response");
            return Outcome::error(&ApiError::Internal, Some(account_id), key);
        }
    };
    let body = if status.is_success() {
        bytes
    } else {
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => Bytes::from(with_status(v, status).to_string()),
            Err(_) => Bytes::from(with_status(ApiError::Internal.body(), status).to_string()),
        }
    };
    Outcome {
        status,
        body,
        replayed,
        account_id: Some(account_id),
        idempotency_key: key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "0191e5a0-0000-7000-8000-000000000001";
    const HOLD: &str = "0191e5a0-0000-7000-8000-0000000000aa";

    fn err(kind: Kind, payload: &str) -> (ApiError, Option<AccountId>) {
        match parse(kind, payload.as_bytes()) {
            Ok(p) => panic!("expected an error, got a request to {}", p.path),
            Err(e) => e,
        }
    }

    #[test]
    fn a_payload_maps_to_the_http_route_and_body() {
        let p = parse(
            Kind::Capture,
            format!(
                r#"{{"account_id":"{ACCOUNT}","idempotency_key":"k1","hold_id":"{HOLD}","credits":5}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            p.path,
            format!("/v1/accounts/{ACCOUNT}/holds/{HOLD}/capture")
        );
        assert_eq!(Value::Object(p.body), json!({ "credits": 5 }));
        assert_eq!(p.key.unwrap().as_str(), "k1");
    }

    #[test]
    fn malformed_payloads_are_refused_with_the_field_named() {
        assert_eq!(
            err(Kind::Deduct, "not json").0.status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(err(Kind::Deduct, "[1]").0.status(), StatusCode::BAD_REQUEST);
        let (e, _) = err(Kind::Deduct, r#"{"idempotency_key":"k"}"#);
        assert_eq!(e.body()["error"]["details"]["field"], "account_id");
        let (e, _) = err(
            Kind::Deduct,
            r#"{"account_id":"../../admin","idempotency_key":"k"}"#,
        );
        assert_eq!(e.body()["error"]["details"]["field"], "account_id");
        let (e, account) = err(Kind::Deduct, &format!(r#"{{"account_id":"{ACCOUNT}"}}"#));
        assert_eq!(e.body()["error"]["details"]["field"], "idempotency_key");
        assert!(
            account.is_some(),
            "the account is known for the outcome subject"
        );
        let (e, _) = err(
            Kind::Release,
            &format!(r#"{{"account_id":"{ACCOUNT}","hold_id":"x/y"}}"#),
        );
        assert_eq!(e.body()["error"]["details"]["field"], "hold_id");
        let (e, _) = err(
            Kind::Hold,
            &format!(r#"{{"account_id":"{ACCOUNT}","idempotency_key":7}}"#),
        );
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn a_release_needs_no_key_like_its_http_route() {
        let p = parse(
            Kind::Release,
            format!(r#"{{"account_id":"{ACCOUNT}","hold_id":"{HOLD}"}}"#).as_bytes(),
        )
        .unwrap();
        assert!(p.key.is_none());
    }

    #[test]
    fn kinds_come_from_the_last_token_of_the_subject() {
        assert_eq!(
            Kind::from_subject("ledger.commands.deduct"),
            Some(Kind::Deduct)
        );
        assert_eq!(
            Kind::from_subject("ledger.intake.release"),
            Some(Kind::Release)
        );
        assert_eq!(Kind::from_subject("ledger.commands.refund"), None);
    }

    #[test]
    fn error_bodies_gain_the_status() {
        let e = Outcome::error(&ApiError::IdempotencyKeyReused, None, None);
        let v: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(v["status"], 409);
        assert_eq!(v["error"]["code"], "idempotency_key_reused");
    }
}
