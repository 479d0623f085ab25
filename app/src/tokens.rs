//! Revoking API tokens by id (`jti`): a developer or system_bot token that
//! leaked is refused everywhere from then on, without rotating the signing
//! secret for everyone (SECURITY.md).

use serde::{Deserialize, Serialize};

use crate::access;
use crate::caller::Caller;
use crate::error::AppError;
use crate::input::Input;
use crate::App;

/// Longest token id accepted.
pub const JTI_BYTES_MAX: usize = 128;

/// `POST /v1/admin/tokens/revoke`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// The `jti` claim of the token to refuse from now on.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 128, pattern = r"^[!-~]+$")
    )]
    pub jti: String,
    #[cfg_attr(feature = "openapi", schema(max_length = 1024))]
    pub reason: Option<String>,
}

/// A revoked token id.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Revoked {
    pub jti: String,
    pub revoked: bool,
    /// False when the id had been revoked already (the call is idempotent).
    pub newly_revoked: bool,
    pub revoked_at: chrono::DateTime<chrono::Utc>,
}

/// Revokes a token id: every server refuses it within
/// [`crate::jobs::REVOCATIONS_RELOAD_MILLIS`], this one at once.
pub async fn revoke(
    app: &App,
    caller: &Caller,
    input: Input<RevokeRequest>,
) -> Result<Revoked, AppError> {
    caller.require(access::REVOKE_TOKENS)?;
    let req = input.parse()?.value;
    if req.jti.is_empty()
        || req.jti.len() > JTI_BYTES_MAX
        || !req.jti.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(AppError::invalid_field(
            "jti",
            format!("jti must be 1 to {JTI_BYTES_MAX} printable ASCII characters"),
        ));
    }
    let reason = crate::credits::text("reason", req.reason)?.unwrap_or_default();
    let at = crate::now();
    let newly = app
        .store
        .revoke_token(&req.jti, caller.sub(), &reason, &projections::time_text(at))
        .await?;
    app.revocations.insert(req.jti.clone());
    Ok(Revoked {
        jti: req.jti,
        revoked: true,
        newly_revoked: newly,
        revoked_at: at,
    })
}

/// Loads the revoked-token list from the store.
pub async fn reload(app: &App) -> Result<usize, AppError> {
    let all = app.store.revoked_tokens().await?;
    let n = all.len();
    app.revocations.replace(all);
    Ok(n)
}
