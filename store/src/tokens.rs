//! The list of revoked API tokens (their `jti`), shared by every server
//! on the same store.

use crate::{Store, StoreError};

/// Most revoked token ids a server keeps in memory; revoking more is
/// refused (rotate the signing secret instead).
pub const REVOKED_TOKENS_MAX: i64 = 100_000;

impl Store {
    /// Records `jti` as revoked; true when it was not already. `at` is an
    /// RFC 3339 time.
    pub async fn revoke_token(
        &self,
        jti: &str,
        revoked_by: &str,
        reason: &str,
        at: &str,
    ) -> Result<bool, StoreError> {
        let inserted = self
            .execute(
                "INSERT INTO revoked_tokens (jti, revoked_by, reason, revoked_at) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (jti) DO NOTHING",
                &[jti.into(), revoked_by.into(), reason.into(), at.into()],
            )
            .await?;
        Ok(inserted > 0)
    }

    /// Every revoked token id (at most [`REVOKED_TOKENS_MAX`]).
    pub async fn revoked_tokens(&self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT jti FROM revoked_tokens ORDER BY revoked_at LIMIT $1",
                &[REVOKED_TOKENS_MAX.into()],
            )
            .await?;
        rows.iter().map(|r| r.text("jti")).collect()
    }
}
