//! Notifications' tables (migration 0055, docs/adr/0021-notifications.md):
//! outgoing webhook endpoints and the durable queue of deliveries. The
//! notifier plans deliveries from the log and moves its checkpoint in the
//! same transaction; senders claim a due delivery by compare-and-set on its
//! next attempt time (a lease), so that two servers never send one at once.

use crate::sql::{Arg, SqlRow};
use crate::{Store, StoreError};

/// Most webhook endpoints; creating more is refused.
pub const WEBHOOK_ENDPOINTS_MAX: i64 = 100;

/// A webhook endpoint as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointRow {
    pub id: String,
    pub url: String,
    /// Event types, or `["*"]`.
    pub events: Vec<String>,
    /// `None`: every account's events.
    pub account_id: Option<String>,
    pub secret: String,
    pub description: Option<String>,
    pub created_by: String,
    pub created_ms: i64,
}

impl EndpointRow {
    fn from_row(r: &SqlRow) -> Result<Self, StoreError> {
        let events = r.text("events")?;
        Ok(Self {
            id: r.text("id")?,
            url: r.text("url")?,
            events: serde_json::from_str(&events)
                .map_err(|e| StoreError::Persistence(format!("webhook endpoint events: {e}")))?,
            account_id: r.opt_text("account_id")?,
            secret: r.text("secret")?,
            description: r.opt_text("description")?,
            created_by: r.text("created_by")?,
            created_ms: r.i64("created_ms")?,
        })
    }

    /// Whether an event of `event_type` of `account` goes to this endpoint.
    pub fn wants(&self, event_type: &str, account: Option<&str>) -> bool {
        let typed = self.events.iter().any(|e| e == "*" || e == event_type);
        let scoped = match &self.account_id {
            None => true,
            Some(a) => account == Some(a.as_str()),
        };
        typed && scoped
    }
}

/// A delivery to plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub id: String,
    pub position: i64,
    pub event_id: String,
    pub event_type: String,
    pub account_id: Option<String>,
    pub channel: String,
    pub target: String,
    pub kind: String,
    pub payload: String,
    pub created_ms: i64,
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub id: String,
    pub position: i64,
    pub event_id: String,
    pub event_type: String,
    pub account_id: Option<String>,
    pub channel: String,
    pub target: String,
    pub kind: String,
    pub payload: String,
    pub status: String,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_error: Option<String>,
    pub last_status: Option<i64>,
    pub created_ms: i64,
    pub delivered_ms: Option<i64>,
}

const DELIVERY_COLUMNS: &str = "id, position, event_id, event_type, account_id, channel, target, \
    kind, payload, status, attempts, next_attempt_ms, last_error, last_status, created_ms, \
    delivered_ms";

impl DeliveryRow {
    fn from_row(r: &SqlRow) -> Result<Self, StoreError> {
        Ok(Self {
            id: r.text("id")?,
            position: r.i64("position")?,
            event_id: r.text("event_id")?,
            event_type: r.text("event_type")?,
            account_id: r.opt_text("account_id")?,
            channel: r.text("channel")?,
            target: r.text("target")?,
            kind: r.text("kind")?,
            payload: r.text("payload")?,
            status: r.text("status")?,
            attempts: r.i64("attempts")?,
            next_attempt_ms: r.i64("next_attempt_ms")?,
            last_error: r.opt_text("last_error")?,
            last_status: r.opt_i64("last_status")?,
            created_ms: r.i64("created_ms")?,
            delivered_ms: r.opt_i64("delivered_ms")?,
        })
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Delivered {
        status: Option<i64>,
        at_ms: i64,
    },
    /// Try again at `next_ms`.
    Retry {
        status: Option<i64>,
        error: String,
        next_ms: i64,
    },
    /// No more tries (dead letter).
    Failed {
        status: Option<i64>,
        error: String,
    },
}

/// Queues one delivery, unless its (event, channel, target, kind) is queued
/// already: [`delivery_args`] are its parameters.
const INSERT_DELIVERY: &str = "INSERT INTO notification_deliveries \
     (id, position, event_id, event_type, account_id, channel, target, kind, payload, \
      status, attempts, next_attempt_ms, created_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $10, $10) \
     ON CONFLICT (event_id, channel, target, kind) DO NOTHING";

fn delivery_args(d: &NewDelivery) -> [Arg; 10] {
    [
        d.id.clone().into(),
        d.position.into(),
        d.event_id.clone().into(),
        d.event_type.clone().into(),
        d.account_id.clone().into(),
        d.channel.clone().into(),
        d.target.clone().into(),
        d.kind.clone().into(),
        d.payload.clone().into(),
        d.created_ms.into(),
    ]
}

impl Store {
    pub async fn create_webhook_endpoint(&self, e: &EndpointRow) -> Result<(), StoreError> {
        let events = serde_json::to_string(&e.events)
            .map_err(|err| StoreError::Persistence(err.to_string()))?;
        self.execute(
            "INSERT INTO webhook_endpoints \
             (id, url, events, account_id, secret, description, created_by, created_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                e.id.clone().into(),
                e.url.clone().into(),
                events.into(),
                e.account_id.clone().into(),
                e.secret.clone().into(),
                e.description.clone().into(),
                e.created_by.clone().into(),
                e.created_ms.into(),
            ],
        )
        .await?;
        Ok(())
    }

    /// Every endpoint, oldest first (at most [`WEBHOOK_ENDPOINTS_MAX`]).
    pub async fn webhook_endpoints(&self) -> Result<Vec<EndpointRow>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT id, url, events, account_id, secret, description, created_by, created_ms \
                 FROM webhook_endpoints ORDER BY created_ms, id LIMIT $1",
                &[WEBHOOK_ENDPOINTS_MAX.into()],
            )
            .await?;
        rows.iter().map(EndpointRow::from_row).collect()
    }

    pub async fn webhook_endpoint(&self, id: &str) -> Result<Option<EndpointRow>, StoreError> {
        let row = self
            .fetch_optional(
                "SELECT id, url, events, account_id, secret, description, created_by, created_ms \
                 FROM webhook_endpoints WHERE id = $1",
                &[id.into()],
            )
            .await?;
        row.as_ref().map(EndpointRow::from_row).transpose()
    }

    /// Deletes an endpoint; its pending deliveries fail. True when it existed.
    pub async fn delete_webhook_endpoint(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let deleted = tx
            .execute("DELETE FROM webhook_endpoints WHERE id = $1", &[id.into()])
            .await?;
        tx.execute(
            "UPDATE notification_deliveries SET status = 'failed', \
             last_error = 'the endpoint was deleted' \
             WHERE channel = 'webhook' AND target = $1 AND status = 'pending'",
            &[id.into()],
        )
        .await?;
        tx.commit().await?;
        Ok(deleted > 0)
    }

    /// Queues `deliveries` (each at most once: a repeat of an (event,
    /// channel, target, kind) is skipped) and moves `name`'s checkpoint
    /// from `from` to `to`, in one transaction. False, with nothing
    /// written, when another planner moved the checkpoint first.
    pub async fn plan_notifications(
        &self,
        name: &str,
        from: i64,
        to: i64,
        deliveries: &[NewDelivery],
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin().await?;
        let claimed = tx
            .execute(
                "UPDATE outbox_checkpoints SET position = $3 WHERE name = $1 AND position = $2",
                &[name.into(), from.into(), to.into()],
            )
            .await?;
        if claimed == 0 {
            return Ok(false);
        }
        for d in deliveries {
            tx.execute(INSERT_DELIVERY, &delivery_args(d)).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Queues deliveries that no log batch plans (clock-driven notices),
    /// each at most once. Returns how many were new.
    pub async fn queue_notifications(&self, deliveries: &[NewDelivery]) -> Result<u64, StoreError> {
        let mut new = 0;
        for d in deliveries {
            new += self.execute(INSERT_DELIVERY, &delivery_args(d)).await?;
        }
        Ok(new)
    }

    /// Pending deliveries due by `now_ms`, oldest due first.
    pub async fn due_notifications(
        &self,
        now_ms: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = self
            .fetch_all(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM notification_deliveries \
                     WHERE status = 'pending' AND next_attempt_ms <= $1 \
                     ORDER BY next_attempt_ms, position, id LIMIT $2"
                ),
                &[now_ms.into(), limit.into()],
            )
            .await?;
        rows.iter().map(DeliveryRow::from_row).collect()
    }

    /// Claims a due delivery for one attempt: its next attempt moves to
    /// `lease_until_ms` (a retry after a crash mid-attempt) only if it is
    /// still pending at `expected_next_ms`. False: another sender has it.
    pub async fn claim_notification(
        &self,
        id: &str,
        expected_next_ms: i64,
        lease_until_ms: i64,
    ) -> Result<bool, StoreError> {
        let claimed = self
            .execute(
                "UPDATE notification_deliveries SET next_attempt_ms = $3 \
                 WHERE id = $1 AND status = 'pending' AND next_attempt_ms = $2",
                &[id.into(), expected_next_ms.into(), lease_until_ms.into()],
            )
            .await?;
        Ok(claimed > 0)
    }

    /// Records how an attempt ended.
    pub async fn finish_notification(&self, id: &str, attempt: &Attempt) -> Result<(), StoreError> {
        match attempt {
            Attempt::Delivered { status, at_ms } => {
                self.execute(
                    "UPDATE notification_deliveries SET status = 'delivered', \
                     attempts = attempts + 1, last_status = $2, last_error = NULL, \
                     delivered_ms = $3 WHERE id = $1",
                    &[id.into(), (*status).into(), (*at_ms).into()],
                )
                .await?;
            }
            Attempt::Retry {
                status,
                error,
                next_ms,
            } => {
                self.execute(
                    "UPDATE notification_deliveries SET attempts = attempts + 1, \
                     last_status = $2, last_error = $3, next_attempt_ms = $4 WHERE id = $1",
                    &[
                        id.into(),
                        (*status).into(),
                        error.clone().into(),
                        (*next_ms).into(),
                    ],
                )
                .await?;
            }
            Attempt::Failed { status, error } => {
                self.execute(
                    "UPDATE notification_deliveries SET status = 'failed', \
                     attempts = attempts + 1, last_status = $2, last_error = $3 WHERE id = $1",
                    &[id.into(), (*status).into(), error.clone().into()],
                )
                .await?;
            }
        }
        Ok(())
    }

    pub async fn notification(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
        let row = self
            .fetch_optional(
                &format!("SELECT {DELIVERY_COLUMNS} FROM notification_deliveries WHERE id = $1"),
                &[id.into()],
            )
            .await?;
        row.as_ref().map(DeliveryRow::from_row).transpose()
    }

    /// The deliveries to `target` (an endpoint id or an email address),
    /// newest first: `limit` after the cursor `(position, id)`.
    pub async fn notifications_to(
        &self,
        target: &str,
        status: Option<&str>,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let (position, id) = before.unzip();
        let rows = self
            .fetch_all(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM notification_deliveries \
                     WHERE target = $1 AND (CAST($2 AS TEXT) IS NULL OR status = $2) \
                       AND (CAST($3 AS BIGINT) IS NULL OR position < $3 \
                            OR (position = $3 AND id < $4)) \
                     ORDER BY position DESC, id DESC LIMIT $5"
                ),
                &[
                    target.into(),
                    status.map(str::to_owned).into(),
                    position.into(),
                    id.into(),
                    limit.into(),
                ],
            )
            .await?;
        rows.iter().map(DeliveryRow::from_row).collect()
    }

    /// The deliveries of one channel, newest first (tests and operators).
    pub async fn notifications_of(
        &self,
        channel: &str,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let rows = self
            .fetch_all(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM notification_deliveries \
                     WHERE channel = $1 ORDER BY position DESC, id DESC LIMIT $2"
                ),
                &[channel.into(), limit.into()],
            )
            .await?;
        rows.iter().map(DeliveryRow::from_row).collect()
    }

    /// Queues a delivery again, due at `now_ms` (a manual redelivery, also
    /// of a delivered or failed one). False when there is no such delivery.
    pub async fn redeliver_notification(&self, id: &str, now_ms: i64) -> Result<bool, StoreError> {
        let n = self
            .execute(
                "UPDATE notification_deliveries SET status = 'pending', next_attempt_ms = $2 \
                 WHERE id = $1",
                &[id.into(), now_ms.into()],
            )
            .await?;
        Ok(n > 0)
    }

    /// Counts of deliveries by status (metrics, `/ready`).
    pub async fn notification_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = self
            .fetch_all(
                "SELECT status, COUNT(*) AS n FROM notification_deliveries GROUP BY status \
                 ORDER BY status",
                &[],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.text("status")?, r.i64("n")?)))
            .collect()
    }
}
