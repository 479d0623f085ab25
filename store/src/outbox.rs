//! Checkpoints of outboxes that publish the log elsewhere (the NATS
//! outbox): one row per outbox, moved only by compare-and-set so that two
//! servers publishing the same batch agree on one checkpoint.

use crate::{Store, StoreError};

impl Store {
    /// Creates `name`'s checkpoint at position 0 when it does not exist.
    pub async fn create_outbox_checkpoint(&self, name: &str) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO outbox_checkpoints (name, position) VALUES ($1, 0) \
             ON CONFLICT (name) DO NOTHING",
            &[name.into()],
        )
        .await?;
        Ok(())
    }

    /// `name`'s checkpoint: the last position its destination
    /// acknowledged, 0 when it has none.
    pub async fn outbox_checkpoint(&self, name: &str) -> Result<i64, StoreError> {
        let row = self
            .fetch_optional(
                "SELECT position FROM outbox_checkpoints WHERE name = $1",
                &[name.into()],
            )
            .await?;
        Ok(match row {
            Some(r) => r.i64("position")?,
            None => 0,
        })
    }

    /// Moves `name`'s checkpoint from `from` to `to`; false when another
    /// writer moved it first (its checkpoint wins).
    pub async fn advance_outbox_checkpoint(
        &self,
        name: &str,
        from: i64,
        to: i64,
    ) -> Result<bool, StoreError> {
        let claimed = self
            .execute(
                "UPDATE outbox_checkpoints SET position = $3 WHERE name = $1 AND position = $2",
                &[name.into(), from.into(), to.into()],
            )
            .await?;
        Ok(claimed > 0)
    }
}
