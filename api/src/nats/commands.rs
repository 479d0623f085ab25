//! NATS commands: a payload is decoded into the use case's input and the
//! caller's token, then `app::credits` runs it — the same functions the
//! HTTP routes call, so both transports share authentication, validation,
//! idempotency (the same route words and canonical body go into a key's
//! hash), the group commit and the error table (docs/adr/0014-app-layer.md,
//! which supersedes the translator of docs/adr/0009-nats.md).
//!
//! A command's payload is the HTTP body plus `account_id`,
//! `idempotency_key` and, for capture and release, `hold_id`; the caller's
//! token travels in the message's `Authorization` header. The reply is the
//! HTTP body as is on success, and the HTTP error body with `"status"`
//! added on failure.

use std::time::Duration;

use app::caller::{Caller, JwtKeys};
use app::error::status;
use app::input::{Input, Key, REQUEST_BODY_BYTES_MAX};
use app::{App, AppError, Written};
use bytes::Bytes;
use events::{AccountId, IdempotencyKey};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tracing::warn;
use uuid::Uuid;

/// Longest a command may take before the caller is told `unavailable`
/// (the command may still commit; a retry with the same key replays it).
pub const COMMAND_TIMEOUT_MILLIS: u64 = 10_000;

/// The account commands NATS carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Deduct,
    /// A batch of deductions (`app::credits::deduct_batch`): the payload is
    /// the HTTP batch body plus `account_id` (absent: each item names its
    /// own), the reply the HTTP 200 body.
    DeductBatch,
    Hold,
    Capture,
    Release,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Deduct,
        Kind::DeductBatch,
        Kind::Hold,
        Kind::Capture,
        Kind::Release,
    ];

    /// The kind named by the last token of a subject
    /// (`ledger.commands.deduct`, `ledger.intake.hold`, …).
    pub fn from_subject(subject: &str) -> Option<Self> {
        match subject.rsplit('.').next()? {
            "deduct" => Some(Self::Deduct),
            "deduct_batch" => Some(Self::DeductBatch),
            "hold" => Some(Self::Hold),
            "capture" => Some(Self::Capture),
            "release" => Some(Self::Release),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deduct => "deduct",
            Self::DeductBatch => "deduct_batch",
            Self::Hold => "hold",
            Self::Capture => "capture",
            Self::Release => "release",
        }
    }

    fn needs_hold(self) -> bool {
        matches!(self, Self::Capture | Self::Release)
    }

    /// HTTP makes the key optional on release only; NATS follows (a
    /// batch's keys are in its items).
    fn needs_key(self) -> bool {
        !matches!(self, Self::Release | Self::DeductBatch)
    }

    /// The largest payload of this kind.
    fn payload_bytes_max(self) -> usize {
        match self {
            Self::DeductBatch => app::credits::BATCH_BODY_BYTES_MAX,
            _ => REQUEST_BODY_BYTES_MAX,
        }
    }
}

/// What a command came to: the status (the HTTP one, as the SPEC's table
/// gives it) and the reply body.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub status: u16,
    /// The reply: the success body as HTTP sends it, or the error body with
    /// `"status"` added.
    pub body: Bytes,
    /// True when the command replayed an earlier one with the same key.
    pub replayed: bool,
    /// The account, when the payload named a valid one.
    pub account_id: Option<AccountId>,
    /// The idempotency key, when the payload carried a valid one.
    pub idempotency_key: Option<String>,
    /// A batch's answer, item by item (the intake publishes each item's
    /// outcome to its account's subject).
    pub batch: Option<app::credits::DeductionBatch>,
}

impl Outcome {
    pub fn error(e: &AppError, account_id: Option<AccountId>, key: Option<String>) -> Self {
        Self {
            status: e.status(),
            body: Bytes::from(with_status(e.body(), e.status()).to_string()),
            replayed: false,
            account_id,
            idempotency_key: key,
            batch: None,
        }
    }

    fn batch(
        done: Result<app::credits::DeductionBatch, AppError>,
        account_id: Option<AccountId>,
    ) -> Self {
        let done = match done {
            Ok(done) => done,
            Err(e) => return Self::error(&e, account_id, None),
        };
        match serde_json::to_value(&done) {
            Ok(body) => Self {
                status: status::OK,
                body: Bytes::from(body.to_string()),
                replayed: false,
                account_id,
                idempotency_key: None,
                batch: Some(done),
            },
            Err(e) => {
                warn!(error = %e, "a batch's answer could not be serialized");
                Self::error(&AppError::Internal, account_id, None)
            }
        }
    }

    fn written<T: Serialize>(
        done: Result<Written<T>, AppError>,
        account_id: AccountId,
        key: Option<String>,
    ) -> Self {
        let done = match done {
            Ok(done) => done,
            Err(e) => return Self::error(&e, Some(account_id), key),
        };
        // Through `Value`, as HTTP renders it: the same keys in the same
        // (sorted) order, byte for byte.
        match serde_json::to_value(&done.value) {
            Ok(body) => Self {
                status: if done.created {
                    status::CREATED
                } else {
                    status::OK
                },
                body: Bytes::from(body.to_string()),
                replayed: done.replayed,
                account_id: Some(account_id),
                idempotency_key: key,
                batch: None,
            },
            Err(e) => {
                warn!(error = %e, "a command's answer could not be serialized");
                Self::error(&AppError::Internal, Some(account_id), key)
            }
        }
    }

    /// A 5xx or 429: the command did not happen and may succeed later.
    pub fn is_retryable(&self) -> bool {
        self.status >= 500 || self.status == status::TOO_MANY_REQUESTS
    }
}

fn with_status(mut body: Value, status: u16) -> Value {
    if let Value::Object(map) = &mut body {
        map.insert("status".into(), json!(status));
    }
    body
}

fn field(name: &str, message: impl Into<String>) -> AppError {
    AppError::invalid_field(name, message)
}

/// A decoded command: the account, hold and key it names and the body of
/// the use case.
struct Parsed {
    /// Always present but for a batch whose items name their accounts.
    account_id: Option<AccountId>,
    key: Option<IdempotencyKey>,
    hold: Option<Uuid>,
    body: Map<String, Value>,
}

fn take_string(body: &mut Map<String, Value>, name: &str) -> Result<Option<String>, AppError> {
    match body.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field(name, format!("{name} must be a string"))),
    }
}

fn parse(kind: Kind, payload: &[u8]) -> Result<Parsed, (AppError, Option<AccountId>)> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| {
        (
            AppError::bad_request(format!("the payload is not valid JSON: {e}")),
            None,
        )
    })?;
    let Value::Object(mut body) = value else {
        return Err((
            AppError::bad_request("the payload must be a JSON object"),
            None,
        ));
    };
    let account_id = match take_string(&mut body, "account_id").map_err(|e| (e, None))? {
        Some(text) => Some(AccountId::parse(&text).map_err(|_| {
            (
                field("account_id", "account_id must be an account's id (a UUID)"),
                None,
            )
        })?),
        // A batch's items may name their accounts instead.
        None if kind == Kind::DeductBatch => None,
        None => return Err((field("account_id", "account_id is required"), None)),
    };
    let fail = |e: AppError| (e, account_id);
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
    Ok(Parsed {
        account_id,
        key,
        hold,
        body,
    })
}

/// Runs one command and returns its outcome. Never fails: every problem is
/// an error outcome in the SPEC's format.
pub async fn execute(
    app: &App,
    keys: &JwtKeys,
    kind: Kind,
    authorization: Option<&str>,
    payload: &[u8],
) -> Outcome {
    if payload.len() > kind.payload_bytes_max() {
        return Outcome::error(
            &AppError::PayloadTooLarge {
                limit_bytes: kind.payload_bytes_max(),
            },
            None,
            None,
        );
    }
    let parsed = match parse(kind, payload) {
        Ok(p) => p,
        Err((e, account)) => return Outcome::error(&e, account, None),
    };
    let key_text = parsed.key.as_ref().map(|k| k.as_str().to_owned());
    let caller = match Caller::from_authorization(keys, authorization) {
        Ok(c) => c,
        Err(e) => return Outcome::error(&e, parsed.account_id, key_text),
    };
    let account = parsed.account_id;
    let key = Key(parsed.key);
    // The body the use case reads is the HTTP body the payload carries.
    let input = Value::Object(parsed.body);
    let hold = parsed.hold.map(|h| h.to_string()).unwrap_or_default();
    let run = async {
        let account = match (kind, account) {
            // A batch's items may name their accounts.
            (Kind::DeductBatch, account) => {
                return Outcome::batch(
                    app::credits::deduct_batch(app, &caller, account, Input::json(&input)).await,
                    account,
                )
            }
            (_, Some(account)) => account,
            (_, None) => {
                return Outcome::error(
                    &field("account_id", "account_id is required"),
                    None,
                    key_text.clone(),
                )
            }
        };
        match kind {
            // (A batch was answered above.)
            Kind::Deduct | Kind::DeductBatch => Outcome::written(
                app::credits::deduct(app, &caller, account, key, Input::json(&input)).await,
                account,
                key_text.clone(),
            ),
            Kind::Hold => Outcome::written(
                app::credits::hold(app, &caller, account, key, Input::json(&input)).await,
                account,
                key_text.clone(),
            ),
            Kind::Capture => Outcome::written(
                app::credits::capture(app, &caller, account, &hold, key, Input::json(&input)).await,
                account,
                key_text.clone(),
            ),
            Kind::Release => Outcome::written(
                app::credits::release(app, &caller, account, &hold, key, Input::json(&input)).await,
                account,
                key_text.clone(),
            ),
        }
    };
    let timeout = Duration::from_millis(COMMAND_TIMEOUT_MILLIS);
    match tokio::time::timeout(timeout, run).await {
        Ok(outcome) => outcome,
        Err(_) => {
            warn!(
                kind = kind.as_str(),
                "a NATS command took longer than its timeout"
            );
            let retry = if kind == Kind::DeductBatch {
                "the batch took too long; retry it with the same items' keys"
            } else {
                "the command took too long; retry with the same idempotency_key"
            };
            Outcome::error(&AppError::Unavailable(retry.into()), account, key_text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "0191e5a0-0000-7000-8000-000000000001";
    const HOLD: &str = "0191e5a0-0000-7000-8000-0000000000aa";

    fn err(kind: Kind, payload: &str) -> (AppError, Option<AccountId>) {
        match parse(kind, payload.as_bytes()) {
            Ok(p) => panic!("expected an error, got a command on {:?}", p.account_id),
            Err(e) => e,
        }
    }

    #[test]
    fn a_payload_gives_the_account_hold_key_and_the_http_body() {
        let p = parse(
            Kind::Capture,
            format!(
                r#"{{"account_id":"{ACCOUNT}","idempotency_key":"k1","hold_id":"{HOLD}","credits":5}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        assert_eq!(
            p.account_id.map(|a| a.to_string()).as_deref(),
            Some(ACCOUNT)
        );
        assert_eq!(p.hold.unwrap().to_string(), HOLD);
        assert_eq!(Value::Object(p.body), json!({ "credits": 5 }));
        assert_eq!(p.key.unwrap().as_str(), "k1");
    }

    #[test]
    fn malformed_payloads_are_refused_with_the_field_named() {
        assert_eq!(
            err(Kind::Deduct, "not json").0.status(),
            status::BAD_REQUEST
        );
        assert_eq!(err(Kind::Deduct, "[1]").0.status(), status::BAD_REQUEST);
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
        assert_eq!(e.status(), status::UNPROCESSABLE_ENTITY);
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
        let e = Outcome::error(&AppError::IdempotencyKeyReused, None, None);
        let v: Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(v["status"], 409);
        assert_eq!(v["error"]["code"], "idempotency_key_reused");
    }
}
