//! Shared by the replay-tools tests: a scripted account history with fixed
//! instants, fresh databases on both stores, and tampering helpers.
#![allow(dead_code)]

use chrono::{DateTime, Duration, Utc};
use events::{
    AccountId, AccountStatus, CostEntry, CostUnit, CountryCode, GrantSource, OperationKey, Usage,
};
use ledger::account::{Amount, DeductCredits, GrantCredits, HoldCredits, OpenAccount, ReleaseHold};
use ledger::{AccountCommand, CreditAccount};
use rust_decimal::Decimal;
use store::{Backend, CommandService, Store};
use uuid::Uuid;

pub fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("an RFC 3339 instant")
}

pub async fn exec(service: &CommandService, id: AccountId, command: AccountCommand) {
    let name = command.name();
    service
        .execute::<CreditAccount>(&id.to_string(), command, &store::testing::context(), None)
        .await
        .unwrap_or_else(|e| panic!("{name} on {id}: {e}"));
}

pub fn open(id: AccountId, slug: &str, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::OpenAccount(OpenAccount {
        account_id: id,
        name: format!("Tenant {slug}"),
        slug: slug.into(),
        owner_user_id: "user-1".into(),
        plan: "starter".into(),
        status: AccountStatus::Active,
        country: CountryCode::parse("US").expect("country"),
        billing_email: format!("billing@{slug}.test"),
        credit_limit: 0,
        low_balance_threshold: 10,
        tax_rate: Decimal::ZERO,
        currency: None,
        now,
    })
}

pub fn grant(
    credits: i64,
    source: GrantSource,
    expires_at: Option<DateTime<Utc>>,
    description: Option<&str>,
    now: DateTime<Utc>,
) -> AccountCommand {
    AccountCommand::GrantCredits(GrantCredits {
        grant_id: Uuid::now_v7(),
        credits,
        source,
        expires_at,
        description: description.map(str::to_owned),
        idempotency_key: None,
        now,
    })
}

/// `clustering` at 10 credits per request, one request: 10 credits.
pub fn deduct10(now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::DeductCredits(DeductCredits {
        deduction_id: Uuid::now_v7(),
        cost: CostEntry {
            operation: OperationKey::parse("clustering").expect("operation"),
            cost: 10,
            unit: CostUnit::PerRequest,
            version: 1,
        },
        usage: Usage {
            units: 1,
            model: Some("gpt-4o".into()),
            cost_usd: Some("0.0125".parse().expect("decimal")),
            ..Usage::default()
        },
        idempotency_key: None,
        now,
    })
}

pub fn hold(hold_id: Uuid, credits: i64, ttl_seconds: u64, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::HoldCredits(HoldCredits {
        hold_id,
        amount: Amount::Credits(credits),
        ttl_seconds,
        idempotency_key: None,
        now,
    })
}

pub fn release(hold_id: Uuid, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::ReleaseHold(ReleaseHold {
        hold_id,
        idempotency_key: None,
        now,
    })
}

/// The scripted history the as-of tests compute by hand (times UTC, 2026):
///
/// | when | command | balance | held | available |
/// |---|---|---|---|---|
/// | 03-01 00:00 | open | 0 | 0 | 0 |
/// | 03-01 01:00 | grant A 100, no expiry | 100 | 0 | 100 |
/// | 03-01 02:00 | grant B 50, expires 03-05 00:00 | 150 | 0 | 150 |
/// | 03-02 10:00 | deduct 10 (from B: soonest expiry) | 140 | 0 | 140 |
/// | 03-03 10:00 | hold H1 30, TTL 1 h (lapses 11:00) | 140 | 30 | 110 |
/// | 03-04 09:00 | hold H2 20 (first writes H1's release, stamped 03-03 11:00) | 140 | 20 | 120 |
/// | 03-04 09:30 | release H2 | 140 | 0 | 140 |
/// | 03-06 12:00 | deduct 10 (first writes B's expiry of 40, stamped 03-05 00:00) | 90 | 0 | 90 |
/// | 03-07 10:00 | grant C 25 "Promo "spring", 2026", expires 03-08 00:00 | 115 | 0 | 115 |
/// | 03-07 10:05 | hold H3 15, TTL 10 min (lapses 10:15; no event ever written) | 115 | 15 | 100 |
pub async fn scripted_account(service: &CommandService, slug: &str) -> AccountId {
    let id = AccountId::new_v7();
    let run = |c| exec(service, id, c);
    run(open(id, slug, at("2026-03-01T00:00:00Z"))).await;
    run(grant(
        100,
        GrantSource::Purchase,
        None,
        None,
        at("2026-03-01T01:00:00Z"),
    ))
    .await;
    run(grant(
        50,
        GrantSource::Promotional,
        Some(at("2026-03-05T00:00:00Z")),
        None,
        at("2026-03-01T02:00:00Z"),
    ))
    .await;
    run(deduct10(at("2026-03-02T10:00:00Z"))).await;
    run(hold(Uuid::now_v7(), 30, 3_600, at("2026-03-03T10:00:00Z"))).await;
    let h2 = Uuid::now_v7();
    run(hold(h2, 20, 7_200, at("2026-03-04T09:00:00Z"))).await;
    run(release(h2, at("2026-03-04T09:30:00Z"))).await;
    run(deduct10(at("2026-03-06T12:00:00Z"))).await;
    run(grant(
        25,
        GrantSource::Promotional,
        Some(at("2026-03-08T00:00:00Z")),
        Some("Promo \"spring\", 2026"),
        at("2026-03-07T10:00:00Z"),
    ))
    .await;
    run(hold(Uuid::now_v7(), 15, 600, at("2026-03-07T10:05:00Z"))).await;
    id
}

/// A second, busier account: `rounds` deductions and grants, so pages and
/// checkpoints have something to span.
pub async fn busy_account(service: &CommandService, slug: &str, rounds: i64) -> AccountId {
    let id = AccountId::new_v7();
    let t0 = at("2026-04-01T00:00:00Z");
    exec(service, id, open(id, slug, t0)).await;
    exec(
        service,
        id,
        grant(
            10 * rounds,
            GrantSource::Subscription,
            None,
            None,
            t0 + Duration::minutes(1),
        ),
    )
    .await;
    for r in 0..rounds {
        exec(service, id, deduct10(t0 + Duration::minutes(2 + r))).await;
    }
    id
}

/// Projects everything written so far (the live read models).
pub async fn project(store: &Store) {
    let (p, _) = projections::Projector::new(store.clone())
        .await
        .expect("projector");
    p.catch_up().await.expect("catch up");
}

/// Edits a stored event behind the service's back: the append-only trigger
/// is dropped in this test database first.
pub async fn tamper_credits(store: &Store, account: &str, sequence: i64, credits: i64) {
    let event_type = store
        .event_at("account", account, sequence)
        .await
        .expect("read the event")
        .expect("the event exists")
        .event_type;
    // Built here: the SQL layer turns every `$` into SQLite's `?`.
    let path = format!("$.{event_type}.credits");
    match store.backend() {
        Backend::Postgres => {
            store
                .execute("ALTER TABLE events DISABLE TRIGGER events_append_only", &[])
                .await
                .expect("disable the trigger");
            store
                .execute(
                    "UPDATE events SET payload = jsonb_set(payload::jsonb, \
                       ARRAY[event_type, 'credits'], to_jsonb($3::bigint))::json \
                     WHERE aggregate_type = 'account' AND aggregate_id = $1 AND sequence = $2",
                    &[account.into(), sequence.into(), credits.into()],
                )
                .await
                .expect("tamper");
        }
        Backend::Sqlite => {
            store
                .execute("DROP TRIGGER events_no_update", &[])
                .await
                .expect("drop the trigger");
            store
                .execute(
                    "UPDATE events SET payload = json_set(payload, $4, $3) \
                     WHERE aggregate_type = 'account' AND aggregate_id = $1 AND sequence = $2",
                    &[account.into(), sequence.into(), credits.into(), path.into()],
                )
                .await
                .expect("tamper");
        }
    }
}

/// Runs `body(&TestDb)` on a fresh PostgreSQL database and a fresh SQLite
/// file (the binary tests need the URL, not only the store).
#[macro_export]
macro_rules! on_both_dbs {
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_postgres() {
                let db = store::testing::TestDb::postgres()
                    .await
                    .expect("PostgreSQL must be running for these tests");
                super::$body(&db).await;
                db.cleanup().await.expect("drop the test database");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn on_sqlite() {
                let db = store::testing::TestDb::sqlite()
                    .await
                    .expect("an SQLite file");
                super::$body(&db).await;
                db.cleanup().await.expect("cleanup");
            }
        }
    };
}
