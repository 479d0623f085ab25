//! HTTP's side of the input: extractors that read a request's body, query,
//! `Idempotency-Key` and `?min_position=` into the `app` crate's input
//! types, which parse them (after the use case has checked the caller) and
//! turn bad input into the SPEC's 4xx.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

pub use app::input::{
    account_id, path_id, time, MIN_POSITION_WAIT_MILLIS_MAX, REQUEST_BODY_BYTES_MAX,
};
use app::input::{Input, Key, Query};

use crate::error::ApiError;
use crate::AppState;

/// A request body, read (size-limited) but not yet parsed.
pub struct Body<T>(pub Input<T>);

impl<T> Body<T> {
    /// The body, for a use case to parse.
    pub fn input(self) -> Input<T> {
        self.0
    }
}

impl<T> FromRequest<AppState> for Body<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(read(req, state, REQUEST_BODY_BYTES_MAX).await?))
    }
}

/// A batch's body: like [`Body`], within the batch routes' larger limit
/// ([`app::credits::BATCH_BODY_BYTES_MAX`], set on those routes).
pub struct BatchBody<T>(pub Input<T>);

impl<T> BatchBody<T> {
    pub fn input(self) -> Input<T> {
        self.0
    }
}

impl<T> FromRequest<AppState> for BatchBody<T>
where
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        Ok(Self(
            read(req, state, app::credits::BATCH_BODY_BYTES_MAX).await?,
        ))
    }
}

/// Reads a body whose route allows `limit_bytes`: 413 beyond it.
async fn read<T>(req: Request, state: &AppState, limit_bytes: usize) -> Result<Input<T>, ApiError> {
    let bytes = Bytes::from_request(req, state).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge { limit_bytes }
        } else {
            ApiError::bad_request(format!("could not read the request body: {r}"))
        }
    })?;
    Ok(Input::new(bytes.to_vec()))
}

/// A query string, parsed after the role check like [`Body`].
pub struct Q<T>(pub Query<T>);

impl<T> Q<T> {
    pub fn query(self) -> Query<T> {
        self.0
    }
}

impl<S: Send + Sync, T> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(Query::new(parts.uri.query().unwrap_or_default())))
    }
}

/// The `Idempotency-Key` header, if present and well-formed (400 if not).
pub struct IdemKey(pub Key);

impl IdemKey {
    pub fn key(self) -> Key {
        self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for IdemKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(raw) = parts.headers.get("idempotency-key") else {
            return Ok(Self(Key(None)));
        };
        let text = raw
            .to_str()
            .map_err(|_| ApiError::bad_request("Idempotency-Key must be printable ASCII"))?;
        Ok(Self(Key::from_header(text)?))
    }
}

/// `?min_position=N` (422 when not an integer): use cases wait (bounded)
/// until the read models reach N, after the caller is checked.
pub struct Fresh(pub Option<i64>);

impl<S: Send + Sync> FromRequestParts<S> for Fresh {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(app::input::min_position(parts.uri.query())?))
    }
}
