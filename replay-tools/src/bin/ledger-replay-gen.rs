//! `ledger-replay-gen`: fills a database with long account histories for
//! measuring `ledger-replay` (docs/benchmarks.md, "ledger-replay"). Not an
//! audit tool: it migrates and writes.
//!
//! Each account runs through the real aggregate (in memory, one command a
//! simulated second): mostly deductions, holds that are captured, released
//! or left to lapse, and grants with and without expiry (so the stream
//! holds expiries and TTL releases). Events get the service's metadata and
//! hash chain and are appended through `Store::append` in large batches.

use std::time::Instant;

use anyhow::{bail, Context};
use chrono::{DateTime, Duration, Utc};
use clap::Parser;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use events::{
    chain_hash, AccountEvent, AccountId, AccountStatus, Actor, CostEntry, CostUnit, CountryCode,
    EventMetadata, GrantSource, OperationKey, Usage, ACCOUNT_AGGREGATE_TYPE, GENESIS_HASH,
};
use ledger::account::{
    Amount, CaptureHold, DeductCredits, GrantCredits, HoldCredits, OpenAccount, ReleaseHold,
};
use ledger::{AccountCommand, CreditAccount};
use rust_decimal::Decimal;
use store::{NewEvent, Store, StreamAppend};
use uuid::Uuid;

/// Events appended per transaction.
const APPEND_BATCH_EVENTS: usize = 5_000;

#[derive(Debug, Parser)]
#[command(
    name = "ledger-replay-gen",
    about = "Write long synthetic account histories for ledger-replay measurements"
)]
struct Args {
    #[arg(long, env = "LEDGER_DATABASE_URL")]
    database_url: String,
    /// Accounts to write.
    #[arg(long, default_value_t = 1)]
    accounts: u32,
    /// Events per account (at least this many; a command may write a few).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
}

struct Stream {
    id: String,
    state: CreditAccount,
    sequence: u64,
    hash: String,
    pending: Vec<NewEvent>,
    written: u64,
}

impl Stream {
    async fn run(
        &mut self,
        command: AccountCommand,
        recorded_at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let sink = EventSink::default();
        if let Err(e) = self.state.handle(command, &(), &sink).await {
            bail!("the generator's command was refused: {e}");
        }
        for event in sink.collect().await {
            self.push(&event, recorded_at)?;
        }
        Ok(())
    }

    fn push(&mut self, event: &AccountEvent, recorded_at: DateTime<Utc>) -> anyhow::Result<()> {
        self.sequence += 1;
        let payload = serde_json::to_value(event)?;
        let hash = chain_hash(
            &self.hash,
            ACCOUNT_AGGREGATE_TYPE,
            &self.id,
            self.sequence,
            &event.event_type(),
            &event.event_version(),
            &payload,
        );
        let payload = payload.to_string();
        let metadata = EventMetadata {
            event_id: Uuid::now_v7(),
            recorded_at,
            actor: Actor::system("ledger-replay-gen"),
            correlation_id: Uuid::now_v7(),
            causation_id: Uuid::now_v7(),
            idempotency_key: None,
            prev_hash: std::mem::replace(&mut self.hash, hash.clone()),
            hash,
        };
        self.pending.push(NewEvent {
            sequence: self.sequence,
            event_type: event.event_type(),
            event_version: event.event_version(),
            payload,
            metadata: metadata.to_json_text(),
        });
        Ok(())
    }

    async fn flush(&mut self, store: &Store) -> anyhow::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let events = std::mem::take(&mut self.pending);
        self.written += events.len() as u64;
        store
            .append(&[StreamAppend {
                aggregate_type: ACCOUNT_AGGREGATE_TYPE,
                aggregate_id: self.id.clone(),
                events,
                claim: None,
                reservations: Vec::new(),
            }])
            .await
            .context("append")?;
        Ok(())
    }
}

fn cost() -> CostEntry {
    CostEntry {
        operation: OperationKey::parse("clustering").unwrap_or_else(|_| unreachable!()),
        cost: 10,
        unit: CostUnit::PerRequest,
        version: 1,
    }
}

fn usage(i: u64) -> Usage {
    Usage {
        units: 1,
        model: Some(["gpt-4o", "claude-3-5-sonnet"][(i % 2) as usize].into()),
        tokens_input: Some(100 + i % 900),
        tokens_output: Some(50 + i % 400),
        cost_usd: Some(Decimal::new(125 + (i % 50) as i64, 4)),
        related_object_type: Some("article".into()),
        related_object_id: Some(format!("art-{}", i % 10_000)),
        ..Usage::default()
    }
}

async fn account(store: &Store, index: u32, events: u64) -> anyhow::Result<u64> {
    let id = AccountId::new_v7();
    let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse()?;
    let mut s = Stream {
        id: id.to_string(),
        state: CreditAccount::default(),
        sequence: 0,
        hash: GENESIS_HASH.to_owned(),
        pending: Vec::new(),
        written: 0,
    };
    let slug = format!("gen-{index}-{}", id.simple_prefix());
    s.run(
        AccountCommand::OpenAccount(OpenAccount {
            account_id: id,
            name: format!("Generated {index}"),
            slug: slug.clone(),
            owner_user_id: "gen".into(),
            plan: "enterprise".into(),
            status: AccountStatus::Active,
            country: CountryCode::parse("US")?,
            billing_email: format!("{slug}@gen.test"),
            credit_limit: 0,
            low_balance_threshold: 0,
            tax_rate: Decimal::ZERO,
            currency: None,
            now: t0,
        }),
        t0,
    )
    .await?;
    let mut i: u64 = 0;
    while s.sequence < events {
        i += 1;
        let now = t0 + Duration::seconds(i as i64);
        let command = if i % 1_000 == 1 {
            // Plenty of credits that never expire, and a small lot that
            // expires an hour later (its remainder leaves as an expiry).
            s.run(grant(10 * 2_000, None, now), now).await?;
            grant(50, Some(now + Duration::hours(1)), now)
        } else if i % 50 == 0 {
            let hold = Uuid::now_v7();
            s.run(hold_cmd(hold, now), now).await?;
            if i % 200 == 0 {
                AccountCommand::ReleaseHold(ReleaseHold {
                    hold_id: hold,
                    idempotency_key: None,
                    now,
                })
            } else if i % 150 == 0 {
                // Left to lapse: the next command releases it at its TTL.
                continue;
            } else {
                AccountCommand::CaptureHold(CaptureHold {
                    hold_id: hold,
                    deduction_id: Uuid::now_v7(),
                    amount: Amount::Credits(10),
                    usage: usage(i),
                    idempotency_key: None,
                    now,
                })
            }
        } else {
            AccountCommand::DeductCredits(DeductCredits {
                deduction_id: Uuid::now_v7(),
                cost: cost(),
                usage: usage(i),
                idempotency_key: None,
                now,
            })
        };
        s.run(command, now).await?;
        if s.pending.len() >= APPEND_BATCH_EVENTS {
            s.flush(store).await?;
        }
    }
    s.flush(store).await?;
    eprintln!("account {id}: {} events", s.written);
    Ok(s.written)
}

fn grant(credits: i64, expires_at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::GrantCredits(GrantCredits {
        grant_id: Uuid::now_v7(),
        credits,
        source: if expires_at.is_some() {
            GrantSource::Promotional
        } else {
            GrantSource::Subscription
        },
        expires_at,
        description: None,
        idempotency_key: None,
        now,
    })
}

fn hold_cmd(hold_id: Uuid, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::HoldCredits(HoldCredits {
        hold_id,
        amount: Amount::Credits(12),
        ttl_seconds: 30,
        idempotency_key: None,
        now,
    })
}

trait SimplePrefix {
    fn simple_prefix(&self) -> String;
}

impl SimplePrefix for AccountId {
    fn simple_prefix(&self) -> String {
        self.to_string().chars().rev().take(8).collect()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let store = Store::connect(&args.database_url)
        .await
        .context("connect")?;
    store.migrate().await.context("migrate")?;
    let started = Instant::now();
    let mut total = 0;
    for index in 0..args.accounts {
        total += account(&store, index, args.events).await?;
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "wrote {total} events in {secs:.1} s ({:.0} events/s)",
        total as f64 / secs.max(1e-9)
    );
    Ok(())
}
