//! Outgoing webhooks (issue 17): endpoints registered by staff, and the
//! signed POST of each event they asked for.
//!
//! A delivery's body is the event as NATS publishes it
//! ([`super::event_body`]); it carries `Ledger-Event-Id` (the same on
//! every retry) and `Ledger-Signature: t={unix seconds},v1={hex}` where
//! `v1` is HMAC-SHA256 of `{t}.{body}` keyed with the UTF-8 bytes of the
//! endpoint's secret, as Stripe signs its own. Only `http`/`https` URLs;
//! never a link-local or cloud metadata address unless the configuration
//! allows it (checked when the endpoint is created and before each POST);
//! redirects are not followed.

use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;
use store::notifications::{DeliveryRow, EndpointRow, WEBHOOK_ENDPOINTS_MAX};
use uuid::Uuid;

use crate::access;
use crate::caller::Caller;
use crate::error::AppError;
use crate::input::{Input, Query};
use crate::{App, Written};

/// Longest endpoint URL.
pub const URL_BYTES_MAX: usize = 2_048;
/// Most event types one endpoint names.
pub const ENDPOINT_EVENTS_MAX: usize = 64;
const DESCRIPTION_BYTES_MAX: usize = 200;
/// Most deliveries a page lists.
const DELIVERIES_PAGE_MAX: u32 = 200;

/// `POST /admin/webhook-endpoints`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct EndpointRequest {
    /// `http://` or `https://`; not a link-local or metadata address.
    #[cfg_attr(feature = "openapi", schema(max_length = 2048))]
    pub url: String,
    /// Event types (`CreditsDeducted`, `InvoicePaid`, …), or `["*"]` for
    /// all; default `["*"]`.
    pub events: Option<Vec<String>>,
    /// Only this account's events (a UUID); absent: every account's.
    pub account_id: Option<String>,
    #[cfg_attr(feature = "openapi", schema(max_length = 200))]
    pub description: Option<String>,
}

fn endpoint_json(e: &EndpointRow) -> Value {
    json!({
        "id": e.id,
        "url": e.url,
        "events": e.events,
        "account_id": e.account_id,
        "description": e.description,
        "created_by": e.created_by,
        "created_at": millis_text(e.created_ms),
    })
}

fn millis_text(ms: i64) -> Option<String> {
    DateTime::<Utc>::from_timestamp_millis(ms).map(|t| t.to_rfc3339())
}

/// A delivery as listed.
pub fn delivery_json(d: &DeliveryRow) -> Value {
    json!({
        "id": d.id,
        "event_id": d.event_id,
        "event_type": d.event_type,
        "position": d.position,
        "account_id": d.account_id,
        "channel": d.channel,
        "target": d.target,
        "kind": d.kind,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": (d.status == "pending").then(|| millis_text(d.next_attempt_ms)).flatten(),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created_at": millis_text(d.created_ms),
        "delivered_at": d.delivered_ms.and_then(millis_text),
    })
}

/// Link-local addresses (169.254/16, fe80::/10) and the cloud metadata
/// services' addresses, and the unspecified and broadcast ones.
fn forbidden_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets() == [100, 100, 100, 200]
        }
        IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6.is_unspecified()
                || v6.segments() == [0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254]
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| forbidden_ip(IpAddr::V4(v4)))
        }
    }
}

fn forbidden_host(host: &str) -> bool {
    matches!(
        host.trim_end_matches('.').to_ascii_lowercase().as_str(),
        "metadata" | "metadata.google.internal" | "metadata.goog" | "instance-data"
    )
}

/// Whether `url` may be called: `http`/`https` with a host that is not,
/// and does not resolve to, a forbidden address. `resolve_strictly`: a
/// name that does not resolve is an error (before a POST), else it passes
/// (at creation, the name may not exist yet).
pub async fn check_destination(
    url: &str,
    allow_link_local: bool,
    resolve_strictly: bool,
) -> Result<reqwest::Url, String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("only http and https URLs are allowed".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("a URL with credentials is not allowed".into());
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| "the URL has no host".to_string())?
        .to_owned();
    if allow_link_local {
        return Ok(parsed);
    }
    if forbidden_host(&host) {
        return Err(format!("{host} is a metadata service"));
    }
    let port = parsed.port_or_known_default().unwrap_or(443);
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    if let Ok(ip) = bare.parse::<IpAddr>() {
        if forbidden_ip(ip) {
            return Err(format!("{ip} is a link-local or metadata address"));
        }
        return Ok(parsed);
    }
    let resolved = tokio::net::lookup_host((bare.as_str(), port)).await;
    match resolved {
        Ok(addrs) => {
            for a in addrs {
                if forbidden_ip(a.ip()) {
                    return Err(format!(
                        "{host} resolves to {}, a link-local or metadata address",
                        a.ip()
                    ));
                }
            }
            Ok(parsed)
        }
        Err(e) if resolve_strictly => Err(format!("{host} does not resolve: {e}")),
        Err(_) => Ok(parsed),
    }
}

/// `v1` of `Ledger-Signature`: lowercase hex HMAC-SHA256 of `{t}.{body}`.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    hmac_hex(secret, &format!("{t}.{body}"))
}

/// Lowercase hex HMAC-SHA256 of `message` keyed with `key`'s UTF-8 bytes.
fn hmac_hex(key: &str, message: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(message.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("ledger-webhooks/1")
            .build()
            .unwrap_or_else(|_| reqwest::Client::new())
    })
}

/// One POST of a delivery: `Ok(status)` on a 2xx, else the status (if
/// any) and why.
pub async fn deliver(app: &App, d: &DeliveryRow) -> Result<Option<i64>, (Option<i64>, String)> {
    let endpoint = app
        .store
        .webhook_endpoint(&d.target)
        .await
        .map_err(|e| (None, e.to_string()))?
        .ok_or_else(|| (None, "the endpoint was deleted".to_string()))?;
    let settings = &app.settings.notify;
    let url = check_destination(&endpoint.url, settings.webhook_allow_link_local, true)
        .await
        .map_err(|e| (None, e))?;
    let t = Utc::now().timestamp();
    let v1 = signature(&endpoint.secret, t, &d.payload);
    let response = client()
        .post(url)
        .timeout(Duration::from_millis(settings.webhook_timeout_millis))
        .header("content-type", "application/json")
        .header("ledger-signature", format!("t={t},v1={v1}"))
        .header("ledger-event-id", &d.event_id)
        .header("ledger-event-type", &d.event_type)
        .header("ledger-delivery-id", &d.id)
        .body(d.payload.clone())
        .send()
        .await
        .map_err(|e| (None, crate::gateway::without_url(&e)))?;
    let status = i64::from(response.status().as_u16());
    if response.status().is_success() {
        Ok(Some(status))
    } else {
        Err((Some(status), format!("the endpoint answered HTTP {status}")))
    }
}

fn new_secret() -> String {
    format!(
        "whsec_{}{}",
        Uuid::new_v4().simple(),
        Uuid::new_v4().simple()
    )
}

fn check_events(events: Option<Vec<String>>) -> Result<Vec<String>, AppError> {
    let mut events = events.unwrap_or_else(|| vec!["*".into()]);
    events.sort();
    events.dedup();
    let valid = |e: &String| {
        e == "*" || (!e.is_empty() && e.len() <= 64 && e.bytes().all(|b| b.is_ascii_alphanumeric()))
    };
    if events.is_empty() || events.len() > ENDPOINT_EVENTS_MAX || !events.iter().all(valid) {
        return Err(AppError::invalid_field(
            "events",
            format!("events lists 1 to {ENDPOINT_EVENTS_MAX} event types (letters and digits), or [\"*\"]"),
        ));
    }
    Ok(events)
}

/// Registers an endpoint; its secret is answered here only. 201.
pub async fn create(
    app: &App,
    caller: &Caller,
    input: Input<EndpointRequest>,
) -> Result<Written<Value>, AppError> {
    caller.require(access::MANAGE_WEBHOOKS)?;
    let req = input.parse()?.value;
    if req.url.len() > URL_BYTES_MAX {
        return Err(AppError::invalid_field(
            "url",
            format!("url is at most {URL_BYTES_MAX} bytes"),
        ));
    }
    check_destination(
        &req.url,
        app.settings.notify.webhook_allow_link_local,
        false,
    )
    .await
    .map_err(|e| AppError::invalid_field("url", e))?;
    let events = check_events(req.events)?;
    let account_id = req
        .account_id
        .as_deref()
        .map(|a| {
            Uuid::parse_str(a)
                .map(|u| u.to_string())
                .map_err(|_| AppError::invalid_field("account_id", "account_id must be a UUID"))
        })
        .transpose()?;
    let description = crate::credits::text("description", req.description)?;
    if description
        .as_ref()
        .is_some_and(|d| d.len() > DESCRIPTION_BYTES_MAX)
    {
        return Err(AppError::invalid_field(
            "description",
            format!("description is at most {DESCRIPTION_BYTES_MAX} bytes"),
        ));
    }
    if app.store.webhook_endpoints().await?.len()
        >= usize::try_from(WEBHOOK_ENDPOINTS_MAX).unwrap_or(100)
    {
        return Err(AppError::Conflict(format!(
            "at most {WEBHOOK_ENDPOINTS_MAX} webhook endpoints; delete one first"
        )));
    }
    let row = EndpointRow {
        id: format!("we_{}", Uuid::now_v7().simple()),
        url: req.url,
        events,
        account_id,
        secret: new_secret(),
        description,
        created_by: caller.sub().to_owned(),
        created_ms: Utc::now().timestamp_millis(),
    };
    app.store.create_webhook_endpoint(&row).await?;
    let mut body = endpoint_json(&row);
    body["secret"] = json!(row.secret);
    Ok(Written {
        value: body,
        replayed: false,
        created: true,
    })
}

/// Every endpoint (without secrets).
pub async fn list(app: &App, caller: &Caller) -> Result<Value, AppError> {
    caller.require(access::MANAGE_WEBHOOKS)?;
    let items: Vec<Value> = app
        .store
        .webhook_endpoints()
        .await?
        .iter()
        .map(endpoint_json)
        .collect();
    Ok(json!({ "items": items, "next_cursor": null }))
}

/// Whether `id` has an endpoint id's shape (`we_` and 32 hex digits):
/// anything else is no endpoint, without asking the store.
fn endpoint_shaped(id: &str) -> bool {
    id.strip_prefix("we_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

async fn endpoint(app: &App, id: &str) -> Result<EndpointRow, AppError> {
    if !endpoint_shaped(id) {
        return Err(AppError::NotFound("webhook endpoint not found".into()));
    }
    app.store
        .webhook_endpoint(id)
        .await?
        .ok_or_else(|| AppError::NotFound("webhook endpoint not found".into()))
}

/// One endpoint (without its secret).
pub async fn get(app: &App, caller: &Caller, id: &str) -> Result<Value, AppError> {
    caller.require(access::MANAGE_WEBHOOKS)?;
    Ok(endpoint_json(&endpoint(app, id).await?))
}

/// Deletes an endpoint; its pending deliveries fail.
pub async fn delete(app: &App, caller: &Caller, id: &str) -> Result<Value, AppError> {
    caller.require(access::MANAGE_WEBHOOKS)?;
    if !endpoint_shaped(id) || !app.store.delete_webhook_endpoint(id).await? {
        return Err(AppError::NotFound("webhook endpoint not found".into()));
    }
    Ok(json!({ "id": id, "deleted": true }))
}

/// `?status=&limit=&cursor=` of an endpoint's deliveries.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::IntoParams))]
#[cfg_attr(feature = "openapi", into_params(parameter_in = Query))]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    /// `pending|delivered|failed`
    pub status: Option<String>,
    #[cfg_attr(feature = "openapi", param(minimum = 1, maximum = 200, default = 50))]
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// An endpoint's deliveries, newest first.
pub async fn deliveries(
    app: &App,
    caller: &Caller,
    id: &str,
    query: Query<DeliveriesQuery>,
) -> Result<Value, AppError> {
    caller.require(access::MANAGE_WEBHOOKS)?;
    let q = query.parse()?;
    endpoint(app, id).await?;
    if let Some(s) = &q.status {
        if !matches!(s.as_str(), "pending" | "delivered" | "failed") {
            return Err(AppError::invalid_field(
                "status",
                "status is pending, delivered or failed",
            ));
        }
    }
    let limit = q.limit.unwrap_or(50);
    if !(1..=DELIVERIES_PAGE_MAX).contains(&limit) {
        return Err(AppError::invalid_field(
            "limit",
            format!("limit is 1 to {DELIVERIES_PAGE_MAX}"),
        ));
    }
    let before = match &q.cursor {
        None => None,
        Some(c) => {
            let (p, id) = c
                .split_once(':')
                .and_then(|(p, id)| {
                    let id = Uuid::parse_str(id).ok()?.to_string();
                    p.parse::<i64>().ok().map(|p| (p, id))
                })
                .ok_or_else(|| AppError::invalid_field("cursor", "not a cursor of this list"))?;
            Some((p, id))
        }
    };
    let rows = app
        .store
        .notifications_to(id, q.status.as_deref(), before, i64::from(limit))
        .await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|d| format!("{}:{}", d.position, d.id)))
        .flatten();
    let items: Vec<Value> = rows.iter().map(delivery_json).collect();
    Ok(json!({ "items": items, "next_cursor": next }))
}

/// Queues one of an endpoint's deliveries again, due now. 202.
pub async fn redeliver(
    app: &App,
    caller: &Caller,
    endpoint_id: &str,
    delivery_id: &str,
) -> Result<Value, AppError> {
    caller.require(access::MANAGE_WEBHOOKS)?;
    endpoint(app, endpoint_id).await?;
    let delivery_id = Uuid::parse_str(delivery_id)
        .map_err(|_| AppError::NotFound("delivery not found".into()))?
        .to_string();
    let found = app
        .store
        .notification(&delivery_id)
        .await?
        .filter(|d| d.channel == "webhook" && d.target == endpoint_id)
        .ok_or_else(|| AppError::NotFound("delivery not found".into()))?;
    app.store
        .redeliver_notification(&found.id, Utc::now().timestamp_millis())
        .await?;
    let again = app
        .store
        .notification(&found.id)
        .await?
        .ok_or(AppError::Internal)?;
    Ok(delivery_json(&again))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hex_hmac_of_t_dot_body() {
        // The well-known HMAC-SHA256 test vector.
        assert_eq!(
            hmac_hex("key", "The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        assert_eq!(signature("key", 1, "{}"), hmac_hex("key", "1.{}"));
        let s = signature("key", 1, "{}");
        assert_eq!(s.len(), 64);
        assert_eq!(s, signature("key", 1, "{}"));
        assert_ne!(s, signature("key", 2, "{}"));
        assert_ne!(s, signature("other", 1, "{}"));
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    }

    #[tokio::test]
    async fn link_local_and_metadata_destinations_are_refused_unless_allowed() {
        for url in [
            "http://169.254.169.254/latest/meta-data",
            "http://[fe80::1]/x",
            "http://metadata.google.internal/computeMetadata/v1",
            "http://100.100.100.200/",
            "http://[::ffff:169.254.1.1]/",
            "ftp://example.com/",
            "http://user:pw@example.com/",
            "not a url",
        ] {
            assert!(check_destination(url, false, false).await.is_err(), "{url}");
        }
        for url in ["http://127.0.0.1:9/hook", "https://10.0.0.1/hook"] {
            assert!(check_destination(url, false, false).await.is_ok(), "{url}");
        }
        assert!(check_destination("http://169.254.169.254/", true, false)
            .await
            .is_ok());
    }
}
