//! Helpers shared by the store tests.
#![allow(dead_code)]

use chrono::{DateTime, Utc};
use events::{
    AccountId, AccountStatus, CostEntry, CostUnit, CountryCode, GrantSource, IdempotencyKey,
    OperationKey, Usage,
};
use ledger::account::{DeductCredits, GrantCredits, OpenAccount};
use ledger::{AccountCommand, CreditAccount};
use rust_decimal::Decimal;
use store::{request_hash, CommandService, IdempotencyClaim};
use uuid::Uuid;

pub use store::testing::context as ctx;

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

pub fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::parse(k).unwrap()
}

pub fn claim(k: &str, body: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        key: key(k),
        request_hash: request_hash(body.as_bytes()),
    }
}

pub fn clustering() -> CostEntry {
    CostEntry {
        operation: OperationKey::parse("clustering").unwrap(),
        cost: 1,
        unit: CostUnit::PerRequest,
        version: 1,
    }
}

pub fn open(id: AccountId) -> AccountCommand {
    AccountCommand::OpenAccount(OpenAccount {
        account_id: id,
        name: "Acme".into(),
        slug: format!("acme-{}", id.as_uuid().simple()),
        owner_user_id: "user-1".into(),
        plan: "starter".into(),
        status: AccountStatus::Active,
        country: CountryCode::parse("US").unwrap(),
        billing_email: "billing@acme.test".into(),
        credit_limit: 0,
        low_balance_threshold: 100,
        tax_rate: Decimal::ZERO,
        currency: None,
        now: now(),
    })
}

pub fn grant(credits: i64, k: &str) -> AccountCommand {
    AccountCommand::GrantCredits(GrantCredits {
        grant_id: Uuid::now_v7(),
        credits,
        source: GrantSource::Purchase,
        expires_at: None,
        description: None,
        idempotency_key: Some(key(k)),
        now: now(),
    })
}

pub fn deduct(units: u64, k: &str) -> AccountCommand {
    AccountCommand::DeductCredits(DeductCredits {
        deduction_id: Uuid::now_v7(),
        cost: clustering(),
        usage: Usage {
            units,
            ..Usage::default()
        },
        idempotency_key: Some(key(k)),
        now: now(),
    })
}

/// Opens an account holding `credits`.
pub async fn funded_account(service: &CommandService, credits: i64) -> AccountId {
    let id = AccountId::new_v7();
    service
        .execute::<CreditAccount>(&id.to_string(), open(id), &ctx(), None)
        .await
        .expect("open");
    let c = claim("seed-grant", "seed-grant");
    service
        .execute::<CreditAccount>(
            &id.to_string(),
            grant(credits, "seed-grant"),
            &ctx(),
            Some(&c),
        )
        .await
        .expect("grant");
    id
}
