//! The one intake of caller input, whatever the transport: a JSON body
//! parsed into a use case's input type together with its canonical form
//! (what an idempotency key is bound to), query strings, path ids,
//! idempotency keys and times. Bad input becomes the SPEC's 4xx here, so
//! HTTP and NATS refuse the same things with the same words.

use std::marker::PhantomData;

use chrono::Datelike;
use events::{AccountId, IdempotencyKey};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde_json::json;
use uuid::Uuid;

use crate::error::{status, AppError};

/// Largest request body accepted (a command's JSON).
pub const REQUEST_BODY_BYTES_MAX: usize = 64 * 1024;
/// Longest a read waits for `min_position`.
pub const MIN_POSITION_WAIT_MILLIS_MAX: u64 = 5_000;
/// Largest money amount accepted anywhere (a price, a cost, a payment):
/// ten to the twelfth, in the amount's currency or in USD.
pub const MONEY_MAX: Decimal = Decimal::from_parts(3_567_587_328, 232, 0, false, 0);
/// Most decimal places of a money amount.
pub const MONEY_SCALE_MAX: u32 = 12;
/// Largest token count a deduction may report.
pub const TOKENS_MAX: u64 = 1_000_000_000_000;
/// Largest `metadata` object, as compact JSON.
pub const METADATA_BYTES_MAX: usize = 4 * 1024;
/// Deepest nesting of a `metadata` object (the object itself is depth 1).
pub const METADATA_DEPTH_MAX: usize = 8;
/// Earliest and latest day a date or time input may name: what both
/// databases and every date computation handle.
pub const YEAR_MIN: i32 = 1970;
pub const YEAR_MAX: i32 = 9999;

/// The field a deserialization error is about: its path, or for a missing
/// or unknown top-level field the name serde puts in backticks.
fn field_of(path: &str, message: &str) -> String {
    if path != "." && !path.is_empty() {
        return path.to_owned();
    }
    if message.starts_with("missing field") || message.starts_with("unknown field") {
        if let Some(name) = message.split('`').nth(1) {
            return name.to_owned();
        }
    }
    String::new()
}

fn invalid<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> AppError {
    let path = e.path().to_string();
    let message = e.into_inner().to_string();
    let field = field_of(&path, &message);
    AppError::InvalidRequest {
        status: status::UNPROCESSABLE_ENTITY,
        message: if field.is_empty() || message.contains(&format!("`{field}`")) {
            message
        } else {
            format!("{field}: {message}")
        },
        details: json!({ "field": field }),
    }
}

/// A request body, read (size-limited by the transport) but not yet
/// parsed: use cases check the caller's role first, then [`Input::parse`],
/// so a refused caller gets 403 whatever it sent.
pub struct Input<T> {
    bytes: Vec<u8>,
    _t: PhantomData<T>,
}

/// A parsed JSON body and its canonical form (sorted keys, no spaces): what
/// an idempotency key is bound to.
pub struct Parsed<T> {
    pub value: T,
    pub canonical: String,
}

impl<T> Input<T> {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Self {
            bytes: bytes.into(),
            _t: PhantomData,
        }
    }

    /// An input given as JSON already (NATS payloads, tests).
    pub fn json(value: &serde_json::Value) -> Self {
        Self::new(value.to_string())
    }

    /// The same bytes, as the input of another use case.
    pub fn retype<U>(self) -> Input<U> {
        Input::new(self.bytes)
    }
}

impl<T: DeserializeOwned> Input<T> {
    /// Parses the body: malformed JSON is 400, a wrong or missing value 422
    /// naming the field. An empty body reads as `{}`.
    pub fn parse(self) -> Result<Parsed<T>, AppError> {
        Self::parse_value(self.read_json()?)
    }

    /// The body as JSON (an empty body reads as `{}`): 400 when it is not
    /// JSON.
    fn read_json(&self) -> Result<serde_json::Value, AppError> {
        let text: &[u8] = if self.bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &self.bytes
        };
        serde_json::from_slice(text)
            .map_err(|e| AppError::bad_request(format!("the request body is not valid JSON: {e}")))
    }

    /// [`Input::parse`] of a body read as JSON already (a batch's item).
    pub fn parse_value(raw: serde_json::Value) -> Result<Parsed<T>, AppError> {
        require_object(&raw)?;
        check_values(&raw, &mut String::new())?;
        let canonical = raw.to_string();
        let value = serde_path_to_error::deserialize(raw).map_err(invalid)?;
        Ok(Parsed { value, canonical })
    }

    /// [`Input::parse`] without the check of every nested text value and
    /// without the canonical form: for a body whose parts are parsed (and
    /// checked) one by one later, such as a batch's items.
    pub fn parse_outer(self) -> Result<T, AppError> {
        let raw = self.read_json()?;
        require_object(&raw)?;
        serde_path_to_error::deserialize(raw).map_err(invalid)
    }
}

/// 400 unless a body is a JSON object.
fn require_object(raw: &serde_json::Value) -> Result<(), AppError> {
    if raw.is_object() {
        Ok(())
    } else {
        Err(AppError::bad_request(
            "the request body must be a JSON object",
        ))
    }
}

/// A query string, parsed after the role check like [`Input`], with the
/// failing parameter named.
pub struct Query<T> {
    raw: String,
    _t: PhantomData<T>,
}

impl<T> Query<T> {
    pub fn new(raw: impl Into<String>) -> Self {
        Self {
            raw: raw.into(),
            _t: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Query<T> {
    pub fn parse(&self) -> Result<T, AppError> {
        for (k, v) in form_urlencoded::parse(self.raw.as_bytes()) {
            if has_control(&k) || has_control(&v) {
                return Err(control_error(&k));
            }
        }
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(self.raw.as_bytes()));
        serde_path_to_error::deserialize(de).map_err(invalid)
    }
}

/// An idempotency key as the transport found it (a valid one, or none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Key(pub Option<IdempotencyKey>);

impl Key {
    /// The key, or 400 when this use case needs one and it is missing.
    pub fn required(self) -> Result<IdempotencyKey, AppError> {
        self.0.ok_or_else(|| AppError::InvalidRequest {
            status: status::BAD_REQUEST,
            message: "this endpoint requires an Idempotency-Key header".into(),
            details: json!({ "header": "Idempotency-Key" }),
        })
    }

    /// An `Idempotency-Key` header's text: 400 when it is not a key.
    pub fn from_header(text: &str) -> Result<Self, AppError> {
        IdempotencyKey::parse(text)
            .map(|k| Self(Some(k)))
            .map_err(|e| AppError::InvalidRequest {
                status: status::BAD_REQUEST,
                message: format!("Idempotency-Key {}", e.reason),
                details: json!({ "header": "Idempotency-Key" }),
            })
    }
}

impl From<IdempotencyKey> for Key {
    fn from(k: IdempotencyKey) -> Self {
        Self(Some(k))
    }
}

/// A C0 control character other than tab, line feed and carriage return:
/// text that no field may carry (PostgreSQL's jsonb refuses NUL outright).
fn has_control(text: &str) -> bool {
    text.chars()
        .any(|c| c < ' ' && !matches!(c, '\t' | '\n' | '\r'))
}

fn control_error(field: &str) -> AppError {
    AppError::invalid_field(
        field,
        format!(
            "{} must not contain control characters (only tab, line feed and carriage return)",
            if field.is_empty() { "the body" } else { field }
        ),
    )
}

/// Refuses control characters in every string and key of a JSON body,
/// and numbers with a fraction or an exponent outside `metadata` (money is
/// a decimal string, credits and units whole numbers: a float is always a
/// mistake), naming the field (`path` is the dotted path so far).
fn check_values(value: &serde_json::Value, path: &mut String) -> Result<(), AppError> {
    match value {
        serde_json::Value::String(s) if has_control(s) => Err(control_error(path)),
        serde_json::Value::Number(n) if n.is_f64() && !in_metadata(path) => {
            Err(AppError::invalid_field(
                path,
                format!(
                    "{path} must be a whole number, or for money a decimal string such as \"29.00\", never a JSON float"
                ),
            ))
        }
        serde_json::Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                check_values(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(k);
                if has_control(k) {
                    return Err(control_error(path));
                }
                check_values(v, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Whether a body path is inside a deduction's free-form `metadata`,
/// where a worker's own numbers (a temperature, a score) may be floats.
fn in_metadata(path: &str) -> bool {
    path == "metadata" || path.starts_with("metadata.") || path.starts_with("metadata[")
}

/// A money amount within [`MONEY_MAX`] with at most [`MONEY_SCALE_MAX`]
/// decimals (negative only where `negative` allows), else 422 naming
/// `field`.
pub fn money(field: &str, amount: Decimal, negative: bool) -> Result<Decimal, AppError> {
    if amount.is_sign_negative() && !amount.is_zero() && !negative {
        return Err(AppError::invalid_field(
            field,
            format!("{field} must not be negative"),
        ));
    }
    if amount.abs() > MONEY_MAX {
        return Err(AppError::invalid_field(
            field,
            format!("{field} must be at most {MONEY_MAX}"),
        ));
    }
    if amount.normalize().scale() > MONEY_SCALE_MAX {
        return Err(AppError::invalid_field(
            field,
            format!("{field} may have at most {MONEY_SCALE_MAX} decimals"),
        ));
    }
    Ok(amount)
}

/// A JSON `metadata` object within [`METADATA_BYTES_MAX`] and
/// [`METADATA_DEPTH_MAX`], else 422.
pub fn metadata(value: &serde_json::Map<String, serde_json::Value>) -> Result<(), AppError> {
    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }
    let bytes = serde_json::to_vec(value).map_or(usize::MAX, |b| b.len());
    if bytes > METADATA_BYTES_MAX {
        return Err(AppError::invalid_field(
            "metadata",
            format!("metadata must be at most {METADATA_BYTES_MAX} bytes as JSON"),
        ));
    }
    if 1 + value.values().map(depth).max().unwrap_or(0) > METADATA_DEPTH_MAX {
        return Err(AppError::invalid_field(
            "metadata",
            format!("metadata may nest at most {METADATA_DEPTH_MAX} levels"),
        ));
    }
    Ok(())
}

/// A day within [`YEAR_MIN`]..=[`YEAR_MAX`], else 422 naming `field`.
pub fn check_year(field: &str, year: i32) -> Result<(), AppError> {
    if (YEAR_MIN..=YEAR_MAX).contains(&year) {
        Ok(())
    } else {
        Err(AppError::invalid_field(
            field,
            format!("{field} must be between the years {YEAR_MIN} and {YEAR_MAX}"),
        ))
    }
}

/// An RFC 3339 time in a body or query field, as UTC, between the years
/// [`YEAR_MIN`] and [`YEAR_MAX`]; else 422 naming `field`.
pub fn time(field: &str, raw: &str) -> Result<chrono::DateTime<chrono::Utc>, AppError> {
    let t = chrono::DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|_| {
            AppError::invalid_field(
                field,
                format!("{field} must be an RFC 3339 time such as 2026-03-01T00:00:00Z"),
            )
        })?;
    check_year(field, t.year())?;
    Ok(t)
}

/// An account id from a path segment: anything else is simply not found.
pub fn account_id(raw: &str) -> Result<AccountId, AppError> {
    AccountId::parse(raw).map_err(|_| AppError::NotFound("account not found".into()))
}

/// Another resource's id from a path segment (`what`: "hold", "invoice",
/// …): anything else is simply not found.
pub fn path_id(raw: &str, what: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(raw).map_err(|_| AppError::NotFound(format!("{what} not found")))
}

/// `?min_position=N` of a read, as found in its query string; 422 when it
/// is not an integer.
pub fn min_position(query: Option<&str>) -> Result<Option<i64>, AppError> {
    let Some(query) = query else { return Ok(None) };
    let mut min = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k == "min_position" {
            min = Some(v.parse::<i64>().map_err(|_| {
                AppError::invalid_field("min_position", "min_position must be an integer")
            })?);
        }
    }
    Ok(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field_from_the_path_or_the_message() {
        assert_eq!(field_of("units", "invalid type"), "units");
        assert_eq!(field_of(".", "missing field `slug`"), "slug");
        assert_eq!(
            field_of(".", "unknown field `foo`, expected one of `a`"),
            "foo"
        );
        assert_eq!(field_of(".", "invalid type: map"), "");
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        a: u32,
        b: Option<String>,
    }

    #[test]
    fn the_canonical_form_sorts_keys_and_drops_spaces() {
        let parsed = Input::<Body>::new(r#"{ "b" : "x",  "a": 1 }"#)
            .parse()
            .unwrap();
        assert_eq!(parsed.canonical, r#"{"a":1,"b":"x"}"#);
    }

    #[test]
    fn bad_json_is_400_and_a_bad_value_422_naming_it() {
        let e = Input::<Body>::new("{").parse().err().unwrap();
        assert_eq!(e.status(), status::BAD_REQUEST);
        let e = Input::<Body>::new("[1]").parse().err().unwrap();
        assert_eq!(e.status(), status::BAD_REQUEST);
        let e = Input::<Body>::new(r#"{"a":"x"}"#).parse().err().unwrap();
        assert_eq!(e.status(), status::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body()["error"]["details"]["field"], "a");
        let e = Input::<Body>::new(r#"{"a":1,"c":2}"#)
            .parse()
            .err()
            .unwrap();
        assert_eq!(e.body()["error"]["details"]["field"], "c");
    }

    #[test]
    fn control_characters_are_refused_naming_the_field_but_line_breaks_pass() {
        let e = Input::<Body>::new("{\"a\":1,\"b\":\"x\\u0000y\"}")
            .parse()
            .err()
            .unwrap();
        assert_eq!(e.status(), status::UNPROCESSABLE_ENTITY);
        assert_eq!(e.body()["error"]["details"]["field"], "b");
        let e = Input::<serde_json::Value>::new("{\"m\":{\"k\":[\"\\u001b\"]}}")
            .parse()
            .err()
            .unwrap();
        assert_eq!(e.body()["error"]["details"]["field"], "m.k[0]");
        let ok = Input::<Body>::new("{\"a\":1,\"b\":\"line 1\\nline 2\\r\\n\\tend\"}").parse();
        assert!(ok.is_ok());
        let e = Query::<serde_json::Value>::new("b=%00")
            .parse()
            .err()
            .unwrap();
        assert_eq!(e.body()["error"]["details"]["field"], "b");
    }

    #[test]
    fn json_floats_are_refused_except_in_metadata() {
        let e = Input::<serde_json::Value>::new(r#"{"price":{"amount":9.99}}"#)
            .parse()
            .err()
            .unwrap();
        assert_eq!(e.body()["error"]["details"]["field"], "price.amount");
        assert!(
            Input::<serde_json::Value>::new(r#"{"credits":5,"metadata":{"t":0.7}}"#)
                .parse()
                .is_ok()
        );
    }

    #[test]
    fn money_is_bounded_in_size_and_decimals() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(MONEY_MAX, d("1000000000000"));
        assert!(money("x", d("1000000000000"), false).is_ok());
        assert!(money("x", d("1000000000000.000000000001"), false).is_err());
        assert!(money("x", d("0.000000000001"), false).is_ok());
        assert!(money("x", d("0.0000000000001"), false).is_err());
        assert!(money("x", d("0.10000000000000000"), false).is_ok());
        assert!(money("x", d("-1"), false).is_err());
        assert!(money("x", d("-1"), true).is_ok());
        assert!(money("x", Decimal::MAX, true).is_err());
    }

    #[test]
    fn metadata_is_bounded_in_bytes_and_depth() {
        let obj = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert!(metadata(&obj(json!({"a": {"b": [1, 2]}}))).is_ok());
        assert!(metadata(&obj(json!({"a": "x".repeat(METADATA_BYTES_MAX)}))).is_err());
        let mut deep = json!(1);
        for _ in 0..METADATA_DEPTH_MAX {
            deep = json!({ "d": deep });
        }
        assert!(metadata(&obj(deep.clone())).is_ok());
        assert!(metadata(&obj(json!({ "d": deep }))).is_err());
    }

    #[test]
    fn times_outside_the_years_handled_are_refused() {
        assert!(time("from", "2026-03-01T00:00:00Z").is_ok());
        assert!(time("from", "0001-01-01T00:00:00Z").is_err());
    }
}
