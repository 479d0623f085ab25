//! PostgreSQL adapter: postgres-es reads streams; appends are our own SQL.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, EventEnvelope, EventStore};
use postgres_es::PostgresEventRepository;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use crate::{AppendError, KeyRecord, StoreError, StoredEvent, StreamAppend};

/// Connections the server keeps to PostgreSQL.
pub const PG_POOL_CONNECTIONS_MAX: u32 = 16;
/// Longest a command or read waits for a connection: past it, the answer
/// is 503 at once rather than a request hanging while PostgreSQL is away
/// (healthy waits are milliseconds: the committer needs one connection per
/// batch).
pub const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: PgConnectOptions = url.parse()?;
        let pool = PgPoolOptions::new()
            .max_connections(PG_POOL_CONNECTIONS_MAX)
            .acquire_timeout(PG_ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// A store over a pool opened elsewhere (the audit tools open
    /// existing databases read-only, see `audit`).
    pub(crate) fn from_pool(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrations::POSTGRES.run(&self.pool).await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn load_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<A>>, StoreError> {
        let store: PersistedEventStore<PostgresEventRepository, A> =
            PersistedEventStore::new_event_store(PostgresEventRepository::new(self.pool.clone()));
        store
            .load_events(aggregate_id)
            .await
            .map_err(|e| StoreError::Persistence(e.to_string()))
    }

    /// The stream's events after `after` (the tail behind a snapshot).
    pub async fn load_events_after<A: Aggregate>(
        &self,
        aggregate_id: &str,
        after: u64,
    ) -> Result<Vec<EventEnvelope<A>>, StoreError> {
        crate::events_after(
            &PostgresEventRepository::new(self.pool.clone()),
            aggregate_id,
            after,
        )
        .await
    }

    pub async fn append(&self, appends: &[StreamAppend]) -> Result<Vec<i64>, AppendError> {
        let mut types = Vec::new();
        let mut ids = Vec::new();
        let mut sequences = Vec::new();
        let mut event_types = Vec::new();
        let mut versions = Vec::new();
        let mut payloads = Vec::new();
        let mut metadata = Vec::new();
        for a in appends {
            for e in &a.events {
                types.push(a.aggregate_type);
                ids.push(a.aggregate_id.as_str());
                sequences.push(e.sequence as i64);
                event_types.push(e.event_type.as_str());
                versions.push(e.event_version.as_str());
                // As JSON text: the log keeps `json` (as written), not
                // `jsonb` (migration 0053, docs/benchmarks.md).
                payloads.push(e.payload.as_str());
                metadata.push(e.metadata.as_str());
            }
        }
        // `json` would keep a NUL escape that no text column of the read
        // models can hold (jsonb refused it): refused here, as data, so the
        // committer fails only the command that carried it.
        if payloads
            .iter()
            .chain(&metadata)
            .any(|j| holds_nul_escape(j))
        {
            return Err(AppendError::Store(StoreError::Persistence(
                "a value holds a NUL character (\\u0000), which the store cannot keep".into(),
            )));
        }
        let mut tx = self.pool.begin().await?;
        // Claims first: the events' insert takes the log's position lock,
        // which should be held as briefly as possible.
        // Claims and reservations are taken in one global order, so two
        // processes' batches cannot wait on each other in a cycle.
        let mut reservations: Vec<(&crate::Reservation, &str)> = appends
            .iter()
            .flat_map(|a| {
                a.reservations
                    .iter()
                    .map(move |r| (r, a.aggregate_id.as_str()))
            })
            .collect();
        reservations.sort_by(|x, y| (&x.0.scope, &x.0.value).cmp(&(&y.0.scope, &y.0.value)));
        let mut claims: Vec<(&crate::KeyClaim, &StreamAppend)> = appends
            .iter()
            .filter_map(|a| a.claim.as_ref().map(|c| (c, a)))
            .collect();
        claims.sort_by(|x, y| (&x.1.aggregate_id, &x.0.key).cmp(&(&y.1.aggregate_id, &y.0.key)));
        // One statement each for reservations and claims, whatever the batch
        // size: a round trip per row would dominate a batch's commit time.
        // Rows go in in the sorted order (WITH ORDINALITY … ORDER BY).
        if !reservations.is_empty() {
            let scopes: Vec<&str> = reservations.iter().map(|(r, _)| r.scope.as_str()).collect();
            let values: Vec<&str> = reservations.iter().map(|(r, _)| r.value.as_str()).collect();
            let owners: Vec<&str> = reservations.iter().map(|(_, o)| *o).collect();
            let taken: Vec<(String, String)> = sqlx::query_as(
                "INSERT INTO reservations (scope, value, owner) \
                 SELECT s, v, o FROM UNNEST($1::text[], $2::text[], $3::text[]) \
                   WITH ORDINALITY AS u(s, v, o, n) ORDER BY n \
                 ON CONFLICT DO NOTHING RETURNING scope, value",
            )
            .bind(&scopes)
            .bind(&values)
            .bind(&owners)
            .fetch_all(&mut *tx)
            .await?;
            if taken.len() < reservations.len() {
                // The first row not inserted: taken by another transaction,
                // or a second row of this batch with the same value.
                let mut taken: HashSet<(&str, &str)> = taken
                    .iter()
                    .map(|(s, v)| (s.as_str(), v.as_str()))
                    .collect();
                if let Some((r, _)) = reservations
                    .iter()
                    .find(|(r, _)| !taken.remove(&(r.scope.as_str(), r.value.as_str())))
                {
                    return Err(AppendError::Reserved {
                        scope: r.scope.clone(),
                        value: r.value.clone(),
                    });
                }
            }
        }
        if !claims.is_empty() {
            let accounts: Vec<&str> = claims
                .iter()
                .map(|(_, a)| a.aggregate_id.as_str())
                .collect();
            let keys: Vec<&str> = claims.iter().map(|(c, _)| c.key.as_str()).collect();
            let hashes: Vec<&str> = claims
                .iter()
                .map(|(c, _)| c.request_hash.as_str())
                .collect();
            let types: Vec<&str> = claims.iter().map(|(_, a)| a.aggregate_type).collect();
            let sequences: Vec<i64> = claims.iter().map(|(c, _)| c.sequence as i64).collect();
            let claimed: Vec<(String, String)> = sqlx::query_as(
                "INSERT INTO idempotency_keys \
                   (account_id, idempotency_key, request_hash, aggregate_type, sequence) \
                 SELECT a, k, h, t, s \
                   FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
                   WITH ORDINALITY AS u(a, k, h, t, s, n) ORDER BY n \
                 ON CONFLICT DO NOTHING RETURNING account_id, idempotency_key",
            )
            .bind(&accounts)
            .bind(&keys)
            .bind(&hashes)
            .bind(&types)
            .bind(&sequences)
            .fetch_all(&mut *tx)
            .await?;
            if claimed.len() < claims.len() {
                // The first claim not inserted (see reservations above).
                let mut claimed: HashSet<(&str, &str)> = claimed
                    .iter()
                    .map(|(a, k)| (a.as_str(), k.as_str()))
                    .collect();
                if let Some((c, a)) = claims
                    .iter()
                    .find(|(c, a)| !claimed.remove(&(a.aggregate_id.as_str(), c.key.as_str())))
                {
                    return Err(AppendError::DuplicateKey {
                        account_id: a.aggregate_id.clone(),
                        key: c.key.clone(),
                    });
                }
            }
        }
        let rows = sqlx::query(
            "INSERT INTO events \
               (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
             SELECT t, i, s, et, ev, p::json, m::json \
               FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
                           $6::text[], $7::text[]) AS u(t, i, s, et, ev, p, m) \
             RETURNING aggregate_id, sequence, position",
        )
        .bind(&types)
        .bind(&ids)
        .bind(&sequences)
        .bind(&event_types)
        .bind(&versions)
        .bind(&payloads)
        .bind(&metadata)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| classify(e, appends))?;
        tx.commit().await.map_err(|e| classify(e, appends))?;
        let by_key: HashMap<(String, i64), i64> = rows
            .iter()
            .map(|r| {
                (
                    (r.get("aggregate_id"), r.get("sequence")),
                    r.get("position"),
                )
            })
            .collect();
        Ok(ids
            .iter()
            .zip(&sequences)
            .map(|(id, seq)| by_key.get(&((*id).to_owned(), *seq)).copied().unwrap_or(0))
            .collect())
    }

    pub async fn read_after(&self, after: i64, limit: u32) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, aggregate_type, aggregate_id, sequence, event_type, event_version, \
                    payload, metadata \
               FROM events WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| StoredEvent {
                position: r.get("position"),
                aggregate_type: r.get("aggregate_type"),
                aggregate_id: r.get("aggregate_id"),
                sequence: r.get("sequence"),
                event_type: r.get("event_type"),
                event_version: r.get("event_version"),
                payload: r.get("payload"),
                metadata: r.get("metadata"),
            })
            .collect())
    }

    pub async fn head_position(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(position), 0)::bigint FROM events")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn find_key(
        &self,
        account_id: &str,
        key: &str,
    ) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT k.request_hash, k.sequence, e.position, e.event_type, e.event_version, e.payload \
               FROM idempotency_keys k \
               JOIN events e ON e.aggregate_type = k.aggregate_type \
                            AND e.aggregate_id = k.account_id AND e.sequence = k.sequence \
              WHERE k.account_id = $1 AND k.idempotency_key = $2",
        )
        .bind(account_id)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| KeyRecord {
            request_hash: r.get("request_hash"),
            sequence: r.get("sequence"),
            position: r.get("position"),
            event_type: r.get("event_type"),
            event_version: r.get("event_version"),
            payload: r.get("payload"),
        }))
    }
}

/// A unique violation on the events' key means another writer appended to
/// the stream first: an optimistic-concurrency conflict.
/// Whether JSON text holds the escape `\u0000` (a NUL character), and not
/// an escaped backslash followed by the letters `u0000`.
fn holds_nul_escape(json: &str) -> bool {
    let bytes = json.as_bytes();
    json.match_indices("u0000").any(|(i, _)| {
        let slashes = bytes[..i].iter().rev().take_while(|b| **b == b'\\').count();
        slashes % 2 == 1
    })
}

fn classify(e: sqlx::Error, appends: &[StreamAppend]) -> AppendError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() && db.constraint() == Some("events_pkey") {
            let aggregate_id = appends
                .iter()
                .map(|a| a.aggregate_id.clone())
                .next()
                .unwrap_or_default();
            return AppendError::Conflict { aggregate_id };
        }
    }
    AppendError::from(e)
}

#[cfg(test)]
mod tests {
    use super::holds_nul_escape;

    #[test]
    fn only_a_real_nul_escape_is_found() {
        assert!(holds_nul_escape(r#"{"a":"x\u0000y"}"#));
        assert!(
            holds_nul_escape(r#"{"a":"\\\u0000"}"#),
            "an escaped backslash, then the escape"
        );
        assert!(
            !holds_nul_escape(r#"{"a":"\\u0000"}"#),
            "a backslash and the letters"
        );
        assert!(!holds_nul_escape(r#"{"a":"u0000"}"#));
        assert!(holds_nul_escape(r#"{"a":"\u00001"}"#), "NUL, then a digit");
    }
}
