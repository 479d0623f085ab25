//! Given/when/then tests of the credit account: every command's success path,
//! each error it can return, and a repeated idempotency key.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::{AggregateResultValidator, TestFramework};
use cqrs_es::Aggregate;
use events::{
    AccountEvent, AccountId, AccountOpened, AccountReactivated, AccountStatus, AccountSuspended,
    AccountUpdated, BillingAddress, CostEntry, CostUnit, CountryCode, CreditsAdjusted,
    CreditsDeducted, CreditsExpired, CreditsGranted, CreditsHeld, CreditsRefunded, GrantSource,
    HoldCaptured, HoldReleased, IdempotencyKey, LotDraw, OperationKey, PlanChanged, ReleaseReason,
    Usage,
};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;
use crate::pricing::{PriceError, UNITS_MAX};

// ---------------------------------------------------------------------------
// Fixed values
// ---------------------------------------------------------------------------

/// A fixed instant in March 2026.
fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 0, 0).unwrap()
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

// Ids by role, so that a test reads which lot or hold it means.
const L1: u128 = 1;
const L2: u128 = 2;
const L3: u128 = 3;
const L4: u128 = 4;
const L5: u128 = 5;
const H1: u128 = 101;
const H2: u128 = 102;
const D1: u128 = 201;
const D2: u128 = 202;
const R1: u128 = 301;
const R2: u128 = 302;
const A1: u128 = 401;

fn key(s: &str) -> IdempotencyKey {
    IdempotencyKey::parse(s).unwrap()
}

fn account_id() -> AccountId {
    AccountId::from_uuid(id(0xacc0))
}

fn clustering() -> OperationKey {
    OperationKey::parse("clustering").unwrap()
}

/// 10 credits per request, cost-table version 1.
fn cost_entry() -> CostEntry {
    CostEntry {
        operation: clustering(),
        cost: 10,
        unit: CostUnit::PerRequest,
        version: 1,
    }
}

/// The usage a deduction of `units` clustering requests records.
fn clustering_usage(units: u64) -> Usage {
    Usage {
        operation: Some(clustering()),
        units,
        cost_version: Some(1),
        ..Usage::default()
    }
}

fn draws(d: &[(u128, i64)]) -> Vec<LotDraw> {
    d.iter()
        .map(|&(lot, credits)| LotDraw {
            lot_id: id(lot),
            credits,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------

fn opened_event(status: AccountStatus, credit_limit: i64) -> AccountEvent {
    AccountEvent::AccountOpened(AccountOpened {
        account_id: account_id(),
        name: "Acme".into(),
        slug: "acme".into(),
        owner_user_id: "user-1".into(),
        plan: "starter".into(),
        status,
        country: CountryCode::parse("US").unwrap(),
        billing_email: "billing@acme.test".into(),
        credit_limit,
        low_balance_threshold: 100,
        tax_rate: Decimal::ZERO,
        currency: None,
        opened_at: at(1, 0),
    })
}

/// An active account opened on March 1st with this credit limit.
fn opened(credit_limit: i64) -> AccountEvent {
    opened_event(AccountStatus::Active, credit_limit)
}

fn granted(
    lot: u128,
    credits: i64,
    expires_at: Option<DateTime<Utc>>,
    balance_after: i64,
    when: DateTime<Utc>,
) -> AccountEvent {
    AccountEvent::CreditsGranted(CreditsGranted {
        grant_id: id(lot),
        credits,
        source: GrantSource::Purchase,
        expires_at,
        description: None,
        debt_repaid: 0,
        balance_after,
        idempotency_key: None,
        granted_at: when,
    })
}

/// A deduction of `units` clustering requests (10 credits each).
fn deducted(
    deduction: u128,
    units: u64,
    lot_draws: &[(u128, i64)],
    overdraft: i64,
    balance_after: i64,
    available_after: i64,
    when: DateTime<Utc>,
) -> AccountEvent {
    AccountEvent::CreditsDeducted(CreditsDeducted {
        deduction_id: id(deduction),
        credits: 10 * i64::try_from(units).unwrap(),
        usage: clustering_usage(units),
        draws: draws(lot_draws),
        overdraft,
        balance_after,
        available_after,
        idempotency_key: None,
        recorded_at: when,
    })
}

fn held(
    hold: u128,
    credits: i64,
    expires_at: DateTime<Utc>,
    available_after: i64,
    when: DateTime<Utc>,
) -> AccountEvent {
    AccountEvent::CreditsHeld(CreditsHeld {
        hold_id: id(hold),
        credits,
        operation: None,
        units: None,
        cost_version: None,
        expires_at,
        available_after,
        idempotency_key: None,
        held_at: when,
    })
}

fn released(
    hold: u128,
    credits: i64,
    reason: ReleaseReason,
    available_after: i64,
    when: DateTime<Utc>,
) -> AccountEvent {
    AccountEvent::HoldReleased(HoldReleased {
        hold_id: id(hold),
        credits,
        reason,
        available_after,
        idempotency_key: None,
        released_at: when,
    })
}

fn expired(lot: u128, credits: i64, balance_after: i64, when: DateTime<Utc>) -> AccountEvent {
    AccountEvent::CreditsExpired(CreditsExpired {
        lot_id: id(lot),
        credits,
        balance_after,
        expired_at: when,
    })
}

fn suspended(when: DateTime<Utc>) -> AccountEvent {
    AccountEvent::AccountSuspended(AccountSuspended {
        reason: "chargeback".into(),
        suspended_at: when,
    })
}

// ---------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------

fn open_command(credit_limit: i64, low_balance_threshold: i64) -> AccountCommand {
    AccountCommand::OpenAccount(OpenAccount {
        account_id: account_id(),
        name: "Acme".into(),
        slug: "acme".into(),
        owner_user_id: "user-1".into(),
        plan: "starter".into(),
        status: AccountStatus::Active,
        country: CountryCode::parse("US").unwrap(),
        billing_email: "billing@acme.test".into(),
        credit_limit,
        low_balance_threshold,
        tax_rate: Decimal::ZERO,
        currency: None,
        now: at(1, 0),
    })
}

fn grant(
    lot: u128,
    credits: i64,
    expires_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> AccountCommand {
    AccountCommand::GrantCredits(GrantCredits {
        grant_id: id(lot),
        credits,
        source: GrantSource::Purchase,
        expires_at,
        description: None,
        idempotency_key: None,
        now,
    })
}

/// Deduct `units` clustering requests (10 credits each).
fn deduct(deduction: u128, units: u64, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::DeductCredits(DeductCredits {
        deduction_id: id(deduction),
        cost: cost_entry(),
        usage: Usage {
            units,
            ..Usage::default()
        },
        idempotency_key: None,
        now,
    })
}

fn hold(hold: u128, credits: i64, ttl_seconds: u64, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::HoldCredits(HoldCredits {
        hold_id: id(hold),
        amount: Amount::Credits(credits),
        ttl_seconds,
        idempotency_key: None,
        now,
    })
}

fn capture(hold: u128, deduction: u128, credits: i64, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::CaptureHold(CaptureHold {
        hold_id: id(hold),
        deduction_id: id(deduction),
        amount: Amount::Credits(credits),
        usage: Usage::default(),
        idempotency_key: None,
        now,
    })
}

fn release(hold: u128, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::ReleaseHold(ReleaseHold {
        hold_id: id(hold),
        idempotency_key: None,
        now,
    })
}

/// A refund of deduction `deduction`, which took `deducted` credits (`None`:
/// the caller found no such deduction in the account's log).
fn refund_of(
    deducted: Option<i64>,
    refund: u128,
    deduction: u128,
    credits: Option<i64>,
    now: DateTime<Utc>,
) -> AccountCommand {
    AccountCommand::RefundDeduction(RefundDeduction {
        refund_id: id(refund),
        deduction_id: id(deduction),
        deducted,
        draws: Vec::new(),
        credits,
        reason: "failed job".into(),
        idempotency_key: None,
        now,
    })
}

fn adjust(adjustment: u128, credits: i64, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::AdjustCredits(AdjustCredits {
        adjustment_id: id(adjustment),
        credits,
        reason: "support ticket 7".into(),
        idempotency_key: None,
        now,
    })
}

fn update(patch: AccountPatch, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::UpdateAccount { patch, now }
}

fn credit_limit_patch(credit_limit: i64) -> AccountPatch {
    AccountPatch {
        credit_limit: Some(credit_limit),
        ..AccountPatch::default()
    }
}

/// The same command carrying an idempotency key.
fn keyed(command: AccountCommand, k: &str) -> AccountCommand {
    let k = Some(key(k));
    match command {
        AccountCommand::GrantCredits(mut c) => {
            c.idempotency_key = k;
            AccountCommand::GrantCredits(c)
        }
        AccountCommand::DeductCredits(mut c) => {
            c.idempotency_key = k;
            AccountCommand::DeductCredits(c)
        }
        AccountCommand::HoldCredits(mut c) => {
            c.idempotency_key = k;
            AccountCommand::HoldCredits(c)
        }
        AccountCommand::CaptureHold(mut c) => {
            c.idempotency_key = k;
            AccountCommand::CaptureHold(c)
        }
        AccountCommand::ReleaseHold(mut c) => {
            c.idempotency_key = k;
            AccountCommand::ReleaseHold(c)
        }
        AccountCommand::RefundDeduction(mut c) => {
            c.idempotency_key = k;
            AccountCommand::RefundDeduction(c)
        }
        AccountCommand::AdjustCredits(mut c) => {
            c.idempotency_key = k;
            AccountCommand::AdjustCredits(c)
        }
        other => panic!("{} carries no idempotency key", other.name()),
    }
}

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

async fn when(
    given: Vec<AccountEvent>,
    command: AccountCommand,
) -> AggregateResultValidator<CreditAccount> {
    TestFramework::<CreditAccount>::with(())
        .given(given)
        .when_async(command)
        .await
}

fn fold(events: &[AccountEvent]) -> CreditAccount {
    let mut account = CreditAccount::default();
    for e in events {
        account.apply(e.clone());
    }
    account
}

/// Runs `command` once on `history`, then again on the history plus its
/// events: the repeat must write nothing, and the aggregate must remember the
/// first outcome under the key. Returns the first run's events.
async fn assert_repeated_key_applies_once(
    history: Vec<AccountEvent>,
    command: AccountCommand,
) -> Vec<AccountEvent> {
    let first = when(history.clone(), command.clone())
        .await
        .inspect_result()
        .expect("the first command succeeds");
    let outcome = first
        .iter()
        .find(|e| e.idempotency_key().is_some())
        .cloned()
        .expect("the first outcome carries the key");
    let mut all = history;
    all.extend(first.clone());
    when(all.clone(), command.clone())
        .await
        .then_expect_events(vec![]);
    let k = command.idempotency_key().expect("the command is keyed");
    assert_eq!(fold(&all).outcome_for(k), Some(&outcome));
    first
}

// ---------------------------------------------------------------------------
// OpenAccount
// ---------------------------------------------------------------------------

#[tokio::test]
async fn opening_an_account_records_account_opened() {
    when(vec![], open_command(50, 100))
        .await
        .then_expect_events(vec![opened(50)]);
}

#[tokio::test]
async fn an_opened_account_starts_empty_with_its_limit_and_status() {
    let account = fold(&[opened(50)]);
    assert!(account.is_open());
    assert_eq!(account.id(), Some(account_id()));
    assert_eq!(account.status(), AccountStatus::Active);
    assert_eq!(account.plan(), "starter");
    assert_eq!(account.credit_limit(), 50);
    assert_eq!(account.low_balance_threshold(), 100);
    assert_eq!(
        (account.balance(), account.held(), account.debt()),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn opening_an_account_twice_is_refused() {
    when(vec![opened(0)], open_command(0, 100))
        .await
        .then_expect_error(AccountError::AccountAlreadyOpen);
}

#[tokio::test]
async fn opening_with_a_negative_credit_limit_is_refused() {
    when(vec![], open_command(-1, 100)).await.then_expect_error(
        AccountError::CreditLimitOutOfRange {
            credit_limit: -1,
            max: CREDIT_LIMIT_MAX,
        },
    );
}

#[tokio::test]
async fn opening_with_a_credit_limit_above_the_maximum_is_refused() {
    when(vec![], open_command(CREDIT_LIMIT_MAX + 1, 100))
        .await
        .then_expect_error(AccountError::CreditLimitOutOfRange {
            credit_limit: CREDIT_LIMIT_MAX + 1,
            max: CREDIT_LIMIT_MAX,
        });
}

#[tokio::test]
async fn opening_with_a_negative_low_balance_threshold_is_refused() {
    when(vec![], open_command(0, -5))
        .await
        .then_expect_error(AccountError::InvalidThreshold { threshold: -5 });
}

#[tokio::test]
async fn commands_to_an_account_that_was_never_opened_are_refused() {
    for command in [
        grant(L1, 100, None, at(1, 1)),
        deduct(D1, 1, at(1, 1)),
        hold(H1, 10, 60, at(1, 1)),
        release(H1, at(1, 1)),
        update(credit_limit_patch(5), at(1, 1)),
        AccountCommand::ExpireDue { now: at(1, 1) },
    ] {
        when(vec![], command)
            .await
            .then_expect_error(AccountError::AccountNotFound);
    }
}

// ---------------------------------------------------------------------------
// UpdateAccount
// ---------------------------------------------------------------------------

#[tokio::test]
async fn updating_an_account_records_only_the_given_fields() {
    let address = BillingAddress {
        line1: Some("1 Main St".into()),
        city: Some("Springfield".into()),
        ..BillingAddress::default()
    };
    let patch = AccountPatch {
        name: Some("Acme Inc".into()),
        billing_address: Some(address.clone()),
        tax_rate: Some(Decimal::new(1900, 2)),
        low_balance_threshold: Some(25),
        ..AccountPatch::default()
    };
    when(vec![opened(0)], update(patch, at(2, 0)))
        .await
        .then_expect_events(vec![AccountEvent::AccountUpdated(AccountUpdated {
            name: Some("Acme Inc".into()),
            billing_email: None,
            billing_address: Some(address),
            tax_id: None,
            tax_rate: Some(Decimal::new(1900, 2)),
            country: None,
            credit_limit: None,
            low_balance_threshold: Some(25),
            currency: None,
            updated_at: at(2, 0),
        })]);
}

#[test]
fn the_billing_currency_follows_the_country_until_staff_choose_one() {
    let mut events = vec![opened(0)];
    assert_eq!(fold(&events).currency().as_str(), "USD");
    let country = |c: &str| {
        AccountEvent::AccountUpdated(AccountUpdated {
            country: Some(CountryCode::parse(c).unwrap()),
            ..updated_at(at(2, 0))
        })
    };
    let currency = |c: Option<&str>| {
        AccountEvent::AccountUpdated(AccountUpdated {
            currency: Some(c.map(|c| events::Currency::parse(c).unwrap())),
            ..updated_at(at(3, 0))
        })
    };
    events.push(country("DE"));
    assert_eq!(fold(&events).currency().as_str(), "EUR");
    events.push(currency(Some("GBP")));
    assert_eq!(fold(&events).currency().as_str(), "GBP");
    // A later country change leaves staff's choice alone.
    events.push(country("JP"));
    assert_eq!(fold(&events).currency().as_str(), "GBP");
    // Back to the country's.
    events.push(currency(None));
    assert_eq!(fold(&events).currency().as_str(), "JPY");
}

#[test]
fn a_currency_patch_keeps_absent_and_null_apart_on_the_wire() {
    let set = AccountUpdated {
        currency: Some(Some(events::Currency::parse("EUR").unwrap())),
        ..updated_at(at(2, 0))
    };
    let back = AccountUpdated {
        currency: Some(None),
        ..updated_at(at(2, 0))
    };
    let none = updated_at(at(2, 0));
    for e in [set, back, none] {
        let json = serde_json::to_value(&e).unwrap();
        let again: AccountUpdated = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(again, e, "{json}");
    }
}

#[tokio::test]
async fn raising_the_credit_limit_is_recorded_and_folded() {
    let events = when(vec![opened(0)], update(credit_limit_patch(500), at(2, 0)))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(
        events,
        vec![AccountEvent::AccountUpdated(AccountUpdated {
            credit_limit: Some(500),
            ..updated_at(at(2, 0))
        })]
    );
    let mut all = vec![opened(0)];
    all.extend(events);
    let account = fold(&all);
    assert_eq!(account.credit_limit(), 500);
    assert_eq!(account.low_balance_threshold(), 100);
}

/// An `AccountUpdated` at `when` that changes nothing yet.
fn updated_at(when: DateTime<Utc>) -> AccountUpdated {
    AccountUpdated {
        updated_at: when,
        ..AccountUpdated::default()
    }
}

#[tokio::test]
async fn lowering_the_credit_limit_below_current_usage_is_refused() {
    // 20 credits, 50 held: available is -30, so the limit must stay >= 30.
    let given = vec![
        opened(50),
        granted(L1, 20, None, 20, at(1, 1)),
        held(H1, 50, at(2, 1), -30, at(2, 0)),
    ];
    when(given, update(credit_limit_patch(29), at(2, 0)))
        .await
        .then_expect_error(AccountError::CreditLimitBelowUsage {
            credit_limit: 29,
            minimum: 30,
        });
}

#[tokio::test]
async fn lowering_the_credit_limit_to_exactly_current_usage_is_allowed() {
    let given = vec![
        opened(50),
        granted(L1, 20, None, 20, at(1, 1)),
        deducted(D1, 6, &[(L1, 20)], 40, -40, -40, at(1, 2)),
    ];
    when(given, update(credit_limit_patch(40), at(2, 0)))
        .await
        .then_expect_events(vec![AccountEvent::AccountUpdated(AccountUpdated {
            credit_limit: Some(40),
            ..updated_at(at(2, 0))
        })]);
}

#[tokio::test]
async fn lowering_the_credit_limit_below_a_debt_is_refused() {
    let given = vec![
        opened(50),
        granted(L1, 20, None, 20, at(1, 1)),
        deducted(D1, 6, &[(L1, 20)], 40, -40, -40, at(1, 2)),
    ];
    when(given, update(credit_limit_patch(0), at(2, 0)))
        .await
        .then_expect_error(AccountError::CreditLimitBelowUsage {
            credit_limit: 0,
            minimum: 40,
        });
}

#[tokio::test]
async fn updating_with_a_credit_limit_out_of_range_is_refused() {
    when(vec![opened(0)], update(credit_limit_patch(-1), at(2, 0)))
        .await
        .then_expect_error(AccountError::CreditLimitOutOfRange {
            credit_limit: -1,
            max: CREDIT_LIMIT_MAX,
        });
}

#[tokio::test]
async fn updating_with_a_negative_low_balance_threshold_is_refused() {
    let patch = AccountPatch {
        low_balance_threshold: Some(-1),
        ..AccountPatch::default()
    };
    when(vec![opened(0)], update(patch, at(2, 0)))
        .await
        .then_expect_error(AccountError::InvalidThreshold { threshold: -1 });
}

#[tokio::test]
async fn a_command_clock_behind_the_stream_is_clamped_to_the_latest_event() {
    let given = vec![opened(0), granted(L1, 100, None, 100, at(5, 0))];
    when(given, update(credit_limit_patch(10), at(3, 0)))
        .await
        .then_expect_events(vec![AccountEvent::AccountUpdated(AccountUpdated {
            credit_limit: Some(10),
            ..updated_at(at(5, 0))
        })]);
}

// ---------------------------------------------------------------------------
// ChangePlan, Suspend, Reactivate
// ---------------------------------------------------------------------------

#[tokio::test]
async fn changing_the_plan_records_where_it_came_from() {
    let command = AccountCommand::ChangePlan {
        plan: "professional".into(),
        now: at(2, 0),
    };
    let events = when(vec![opened(0)], command)
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(
        events,
        vec![AccountEvent::PlanChanged(PlanChanged {
            from: "starter".into(),
            to: "professional".into(),
            changed_at: at(2, 0),
        })]
    );
    let mut all = vec![opened(0)];
    all.extend(events);
    assert_eq!(fold(&all).plan(), "professional");
}

#[tokio::test]
async fn changing_to_the_current_plan_writes_nothing() {
    let command = AccountCommand::ChangePlan {
        plan: "starter".into(),
        now: at(2, 0),
    };
    when(vec![opened(0)], command)
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn suspending_an_account_records_the_reason() {
    let command = AccountCommand::Suspend {
        reason: "chargeback".into(),
        now: at(2, 0),
    };
    when(vec![opened(0)], command)
        .await
        .then_expect_events(vec![suspended(at(2, 0))]);
}

#[tokio::test]
async fn suspending_a_suspended_account_writes_nothing() {
    let command = AccountCommand::Suspend {
        reason: "again".into(),
        now: at(3, 0),
    };
    when(vec![opened(0), suspended(at(2, 0))], command)
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn suspending_a_cancelled_account_is_refused() {
    let command = AccountCommand::Suspend {
        reason: "chargeback".into(),
        now: at(2, 0),
    };
    when(vec![opened_event(AccountStatus::Cancelled, 0)], command)
        .await
        .then_expect_error(AccountError::AccountCancelled);
}

fn set_billing_status(status: AccountStatus, day: u32) -> AccountCommand {
    AccountCommand::SetBillingStatus {
        status,
        reason: "subscription past_due".into(),
        now: at(day, 0),
    }
}

fn status_changed(from: AccountStatus, to: AccountStatus, day: u32) -> AccountEvent {
    AccountEvent::AccountStatusChanged(events::AccountStatusChanged {
        from,
        to,
        reason: "subscription past_due".into(),
        changed_at: at(day, 0),
    })
}

#[tokio::test]
async fn setting_the_billing_status_records_the_change() {
    when(
        vec![opened(0)],
        set_billing_status(AccountStatus::PastDue, 2),
    )
    .await
    .then_expect_events(vec![status_changed(
        AccountStatus::Active,
        AccountStatus::PastDue,
        2,
    )]);
    let all = vec![
        opened(0),
        status_changed(AccountStatus::Active, AccountStatus::PastDue, 2),
    ];
    assert_eq!(fold(&all).status(), AccountStatus::PastDue);
}

#[tokio::test]
async fn setting_the_billing_status_it_already_has_writes_nothing() {
    when(
        vec![opened(0)],
        set_billing_status(AccountStatus::Active, 2),
    )
    .await
    .then_expect_events(vec![]);
}

#[tokio::test]
async fn suspended_is_not_a_billing_status() {
    when(
        vec![opened(0)],
        set_billing_status(AccountStatus::Suspended, 2),
    )
    .await
    .then_expect_error(AccountError::InvalidBillingStatus {
        status: "suspended",
    });
}

#[tokio::test]
async fn a_cancelled_account_keeps_its_status() {
    when(
        vec![opened_event(AccountStatus::Cancelled, 0)],
        set_billing_status(AccountStatus::PastDue, 2),
    )
    .await
    .then_expect_error(AccountError::AccountCancelled);
}

#[tokio::test]
async fn a_billing_status_set_while_suspended_is_the_status_reactivation_returns_to() {
    let given = vec![opened(0), suspended(at(2, 0))];
    let events = when(given.clone(), set_billing_status(AccountStatus::PastDue, 3))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(
        events,
        vec![status_changed(
            AccountStatus::Active,
            AccountStatus::PastDue,
            3
        )]
    );
    let mut all = given;
    all.extend(events);
    assert_eq!(fold(&all).status(), AccountStatus::Suspended);
    let reactivated = when(all.clone(), AccountCommand::Reactivate { now: at(4, 0) })
        .await
        .inspect_result()
        .unwrap();
    all.extend(reactivated);
    assert_eq!(fold(&all).status(), AccountStatus::PastDue);
}

#[tokio::test]
async fn reactivating_restores_the_status_held_before_the_suspension() {
    let given = vec![opened_event(AccountStatus::Trial, 0), suspended(at(2, 0))];
    let events = when(given.clone(), AccountCommand::Reactivate { now: at(3, 0) })
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(
        events,
        vec![AccountEvent::AccountReactivated(AccountReactivated {
            status: AccountStatus::Trial,
            reactivated_at: at(3, 0),
        })]
    );
    let mut all = given;
    all.extend(events);
    assert_eq!(fold(&all).status(), AccountStatus::Trial);
}

#[tokio::test]
async fn reactivating_an_account_that_is_not_suspended_writes_nothing() {
    when(
        vec![opened(0)],
        AccountCommand::Reactivate { now: at(3, 0) },
    )
    .await
    .then_expect_events(vec![]);
}

// ---------------------------------------------------------------------------
// GrantCredits
// ---------------------------------------------------------------------------

#[tokio::test]
async fn granting_credits_adds_a_lot_and_raises_the_balance() {
    let command = AccountCommand::GrantCredits(GrantCredits {
        grant_id: id(L1),
        credits: 1_000,
        source: GrantSource::Subscription,
        expires_at: Some(at(31, 0)),
        description: Some("March".into()),
        idempotency_key: None,
        now: at(1, 1),
    });
    let expected = AccountEvent::CreditsGranted(CreditsGranted {
        grant_id: id(L1),
        credits: 1_000,
        source: GrantSource::Subscription,
        expires_at: Some(at(31, 0)),
        description: Some("March".into()),
        debt_repaid: 0,
        balance_after: 1_000,
        idempotency_key: None,
        granted_at: at(1, 1),
    });
    when(vec![opened(0)], command)
        .await
        .then_expect_events(vec![expected.clone()]);
    let account = fold(&[opened(0), expected]);
    assert_eq!(account.balance(), 1_000);
    assert_eq!(
        account.lots(),
        &[Lot {
            id: id(L1),
            remaining: 1_000,
            expires_at: Some(at(31, 0)),
            seq: 1,
        }]
    );
}

#[tokio::test]
async fn a_grant_first_repays_the_overdraft() {
    let given = vec![
        opened(50),
        granted(L1, 20, None, 20, at(1, 1)),
        deducted(D1, 6, &[(L1, 20)], 40, -40, -40, at(1, 2)),
    ];
    let expected = AccountEvent::CreditsGranted(CreditsGranted {
        debt_repaid: 40,
        balance_after: 60,
        ..granted_fields(L2, 100, at(2, 0))
    });
    when(given.clone(), grant(L2, 100, None, at(2, 0)))
        .await
        .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    let account = fold(&all);
    assert_eq!(account.debt(), 0);
    assert_eq!(account.balance(), 60);
    assert_eq!(
        account.lots(),
        &[Lot {
            id: id(L2),
            remaining: 60,
            expires_at: None,
            seq: 2,
        }]
    );
}

#[tokio::test]
async fn a_grant_smaller_than_the_debt_repays_part_of_it_and_adds_no_lot() {
    let given = vec![opened(50), deducted(D1, 4, &[], 40, -40, -40, at(1, 2))];
    let expected = AccountEvent::CreditsGranted(CreditsGranted {
        debt_repaid: 15,
        balance_after: -25,
        ..granted_fields(L1, 15, at(2, 0))
    });
    when(given.clone(), grant(L1, 15, None, at(2, 0)))
        .await
        .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    let account = fold(&all);
    assert_eq!(account.debt(), 25);
    assert!(account.lots().is_empty());
}

/// The fields of a plain purchase grant with no debt to repay.
fn granted_fields(lot: u128, credits: i64, when: DateTime<Utc>) -> CreditsGranted {
    CreditsGranted {
        grant_id: id(lot),
        credits,
        source: GrantSource::Purchase,
        expires_at: None,
        description: None,
        debt_repaid: 0,
        balance_after: credits,
        idempotency_key: None,
        granted_at: when,
    }
}

#[tokio::test]
async fn a_grant_of_zero_negative_or_too_many_credits_is_refused() {
    for credits in [0, -5, CREDITS_PER_COMMAND_MAX + 1] {
        when(vec![opened(0)], grant(L1, credits, None, at(2, 0)))
            .await
            .then_expect_error(AccountError::InvalidCredits {
                credits,
                max: CREDITS_PER_COMMAND_MAX,
            });
    }
}

#[tokio::test]
async fn a_grant_expiring_at_or_before_now_is_refused() {
    for expires_at in [at(2, 0), at(1, 12)] {
        when(vec![opened(0)], grant(L1, 100, Some(expires_at), at(2, 0)))
            .await
            .then_expect_error(AccountError::ExpiryNotInFuture { expires_at });
    }
}

#[tokio::test]
async fn a_grant_expiry_is_judged_against_the_clamped_clock() {
    // The stream is already at March 5th, so an expiry on the 4th is past
    // even though the command's own clock says the 3rd.
    let given = vec![opened(0), granted(L1, 10, None, 10, at(5, 0))];
    when(given, grant(L2, 100, Some(at(4, 0)), at(3, 0)))
        .await
        .then_expect_error(AccountError::ExpiryNotInFuture {
            expires_at: at(4, 0),
        });
}

#[tokio::test]
async fn a_grant_to_a_cancelled_account_is_refused() {
    when(
        vec![opened_event(AccountStatus::Cancelled, 0)],
        grant(L1, 100, None, at(2, 0)),
    )
    .await
    .then_expect_error(AccountError::AccountCancelled);
}

#[tokio::test]
async fn a_grant_to_a_suspended_account_is_accepted() {
    when(
        vec![opened(0), suspended(at(1, 1))],
        grant(L1, 100, None, at(2, 0)),
    )
    .await
    .then_expect_events(vec![granted(L1, 100, None, 100, at(2, 0))]);
}

#[tokio::test]
async fn a_grant_that_would_overflow_the_balance_is_refused() {
    let given = vec![
        opened(0),
        granted(L1, i64::MAX - 5, None, i64::MAX - 5, at(1, 1)),
    ];
    when(given, grant(L2, 10, None, at(2, 0)))
        .await
        .then_expect_error(AccountError::Overflow);
}

#[tokio::test]
async fn a_grant_first_expires_the_lots_that_are_due() {
    let given = vec![opened(0), granted(L1, 50, Some(at(5, 0)), 50, at(1, 1))];
    when(given, grant(L2, 100, None, at(6, 0)))
        .await
        .then_expect_events(vec![
            expired(L1, 50, 0, at(5, 0)),
            granted(L2, 100, None, 100, at(6, 0)),
        ]);
}

#[tokio::test]
async fn a_repeated_grant_key_writes_nothing_and_keeps_the_first_outcome() {
    let first = assert_repeated_key_applies_once(
        vec![opened(0)],
        keyed(grant(L1, 100, None, at(2, 0)), "grant-1"),
    )
    .await;
    assert_eq!(
        first,
        vec![AccountEvent::CreditsGranted(CreditsGranted {
            idempotency_key: Some(key("grant-1")),
            ..granted_fields(L1, 100, at(2, 0))
        })]
    );
}

#[tokio::test]
async fn a_repeated_key_writes_nothing_even_when_the_payload_differs() {
    let first = AccountEvent::CreditsGranted(CreditsGranted {
        idempotency_key: Some(key("grant-1")),
        ..granted_fields(L1, 100, at(2, 0))
    });
    let given = vec![opened(0), first.clone()];
    when(
        given.clone(),
        keyed(grant(L2, 999, None, at(3, 0)), "grant-1"),
    )
    .await
    .then_expect_events(vec![]);
    // A key is per account, not per command kind.
    when(given.clone(), keyed(deduct(D1, 1, at(3, 0)), "grant-1"))
        .await
        .then_expect_events(vec![]);
    assert_eq!(fold(&given).outcome_for(&key("grant-1")), Some(&first));
    assert_eq!(fold(&given).outcome_for(&key("other")), None);
}

// ---------------------------------------------------------------------------
// DeductCredits
// ---------------------------------------------------------------------------

#[tokio::test]
async fn deducting_records_the_price_cost_version_and_draws() {
    let given = vec![opened(0), granted(L1, 100, None, 100, at(1, 1))];
    // The operation and cost version come from the cost row, not the caller.
    let command = AccountCommand::DeductCredits(DeductCredits {
        deduction_id: id(D1),
        cost: cost_entry(),
        usage: Usage {
            operation: Some(OperationKey::parse("linking").unwrap()),
            units: 3,
            cost_version: Some(99),
            model: Some("gpt-4o".into()),
            tokens_input: Some(1_200),
            tokens_output: Some(300),
            cost_usd: Some(Decimal::new(42, 4)),
            related_object_type: Some("article".into()),
            related_object_id: Some("a-1".into()),
            metadata: Some(serde_json::json!({"job": 7})),
        },
        idempotency_key: None,
        now: at(2, 0),
    });
    when(given, command)
        .await
        .then_expect_events(vec![AccountEvent::CreditsDeducted(CreditsDeducted {
            deduction_id: id(D1),
            credits: 30,
            usage: Usage {
                operation: Some(clustering()),
                units: 3,
                cost_version: Some(1),
                model: Some("gpt-4o".into()),
                tokens_input: Some(1_200),
                tokens_output: Some(300),
                cost_usd: Some(Decimal::new(42, 4)),
                related_object_type: Some("article".into()),
                related_object_id: Some("a-1".into()),
                metadata: Some(serde_json::json!({"job": 7})),
            },
            draws: draws(&[(L1, 30)]),
            overdraft: 0,
            balance_after: 70,
            available_after: 70,
            idempotency_key: None,
            recorded_at: at(2, 0),
        })]);
}

#[tokio::test]
async fn deducting_per_100_words_rounds_partial_hundreds_up() {
    let given = vec![opened(0), granted(L1, 100, None, 100, at(1, 1))];
    let words = CostEntry {
        operation: OperationKey::parse("content_generation").unwrap(),
        cost: 1,
        unit: CostUnit::Per100Words,
        version: 4,
    };
    let command = AccountCommand::DeductCredits(DeductCredits {
        deduction_id: id(D1),
        cost: words.clone(),
        usage: Usage {
            units: 250,
            ..Usage::default()
        },
        idempotency_key: None,
        now: at(2, 0),
    });
    when(given, command)
        .await
        .then_expect_events(vec![AccountEvent::CreditsDeducted(CreditsDeducted {
            deduction_id: id(D1),
            credits: 3,
            usage: Usage {
                operation: Some(words.operation),
                units: 250,
                cost_version: Some(4),
                ..Usage::default()
            },
            draws: draws(&[(L1, 3)]),
            overdraft: 0,
            balance_after: 97,
            available_after: 97,
            idempotency_key: None,
            recorded_at: at(2, 0),
        })]);
}

#[tokio::test]
async fn deduct_burns_the_soonest_expiry_first_never_expiring_last_and_oldest_first_among_equals() {
    let given = vec![
        opened(0),
        granted(L1, 100, None, 100, at(1, 1)),
        granted(L2, 100, Some(at(20, 0)), 200, at(1, 2)),
        granted(L3, 100, Some(at(10, 0)), 300, at(1, 3)),
        granted(L4, 100, Some(at(10, 0)), 400, at(1, 4)),
        granted(L5, 100, None, 500, at(1, 5)),
    ];
    when(given, deduct(D1, 45, at(2, 0)))
        .await
        .then_expect_events(vec![deducted(
            D1,
            45,
            &[(L3, 100), (L4, 100), (L2, 100), (L1, 100), (L5, 50)],
            0,
            50,
            50,
            at(2, 0),
        )]);
}

#[tokio::test]
async fn deduct_within_the_credit_limit_overdraws() {
    let given = vec![opened(50), granted(L1, 20, None, 20, at(1, 1))];
    let expected = deducted(D1, 6, &[(L1, 20)], 40, -40, -40, at(2, 0));
    when(given.clone(), deduct(D1, 6, at(2, 0)))
        .await
        .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    let account = fold(&all);
    assert_eq!(account.debt(), 40);
    assert_eq!(account.balance(), -40);
    assert!(account.lots().is_empty());
}

#[tokio::test]
async fn deduct_is_refused_when_available_is_below_cost() {
    let given = vec![opened(0), granted(L1, 20, None, 20, at(1, 1))];
    when(given, deduct(D1, 3, at(2, 0)))
        .await
        .then_expect_error(AccountError::InsufficientCredits {
            balance: 20,
            available: 20,
            required: 30,
        });
}

#[tokio::test]
async fn deduct_is_refused_when_it_would_pass_the_credit_limit() {
    let given = vec![opened(50), granted(L1, 20, None, 20, at(1, 1))];
    when(given, deduct(D1, 8, at(2, 0)))
        .await
        .then_expect_error(AccountError::InsufficientCredits {
            balance: 20,
            available: 20,
            required: 80,
        });
}

#[tokio::test]
async fn deduct_may_not_spend_credits_reserved_by_a_hold() {
    let given = vec![
        opened(0),
        granted(L1, 100, None, 100, at(1, 1)),
        held(H1, 80, at(2, 1), 20, at(2, 0)),
    ];
    when(given.clone(), deduct(D1, 3, at(2, 0)))
        .await
        .then_expect_error(AccountError::InsufficientCredits {
            balance: 100,
            available: 20,
            required: 30,
        });
    when(given, deduct(D1, 2, at(2, 0)))
        .await
        .then_expect_events(vec![deducted(D1, 2, &[(L1, 20)], 0, 80, 0, at(2, 0))]);
}

#[tokio::test]
async fn deduct_on_a_suspended_account_is_refused() {
    let given = vec![
        opened(0),
        granted(L1, 100, None, 100, at(1, 1)),
        suspended(at(1, 2)),
    ];
    when(given, deduct(D1, 1, at(2, 0)))
        .await
        .then_expect_error(AccountError::AccountSuspended);
}

#[tokio::test]
async fn deduct_on_a_cancelled_account_is_refused() {
    when(
        vec![opened_event(AccountStatus::Cancelled, 0)],
        deduct(D1, 1, at(2, 0)),
    )
    .await
    .then_expect_error(AccountError::AccountCancelled);
}

#[tokio::test]
async fn deduct_of_zero_units_is_refused_by_pricing() {
    let given = vec![opened(0), granted(L1, 100, None, 100, at(1, 1))];
    when(given, deduct(D1, 0, at(2, 0)))
        .await
        .then_expect_error(AccountError::Pricing(PriceError::UnitsOutOfRange {
            units: 0,
            max: UNITS_MAX,
        }));
}

#[tokio::test]
async fn deduct_first_expires_due_lots_stamped_at_their_expiry_instant() {
    let given = vec![
        opened(0),
        granted(L1, 50, Some(at(5, 0)), 50, at(1, 1)),
        granted(L2, 100, None, 150, at(1, 2)),
    ];
    when(given, deduct(D1, 3, at(6, 0)))
        .await
        .then_expect_events(vec![
            expired(L1, 50, 100, at(5, 0)),
            deducted(D1, 3, &[(L2, 30)], 0, 70, 70, at(6, 0)),
        ]);
}

#[tokio::test]
async fn deduct_first_releases_holds_past_their_ttl() {
    let given = vec![
        opened(0),
        granted(L1, 100, None, 100, at(1, 1)),
        held(H1, 40, at(2, 1), 60, at(2, 0)),
    ];
    when(given, deduct(D1, 10, at(3, 0)))
        .await
        .then_expect_events(vec![
            released(H1, 40, ReleaseReason::Expired, 100, at(2, 1)),
            deducted(D1, 10, &[(L1, 100)], 0, 0, 0, at(3, 0)),
        ]);
}

#[tokio::test]
async fn a_repeated_deduct_key_writes_nothing_and_keeps_the_first_outcome() {
    let given = vec![opened(0), granted(L1, 100, None, 100, at(1, 1))];
    let first =
        assert_repeated_key_applies_once(given, keyed(deduct(D1, 3, at(2, 0)), "job-1")).await;
    let AccountEvent::CreditsDeducted(e) = &first[0] else {
        panic!("expected a deduction, got {first:?}");
    };
    assert_eq!(e.credits, 30);
    assert_eq!(e.idempotency_key, Some(key("job-1")));
}

// ---------------------------------------------------------------------------
// HoldCredits
// ---------------------------------------------------------------------------

#[tokio::test]
async fn holding_reserves_credits_until_the_ttl() {
    let given = vec![opened(0), granted(L1, 100, None, 100, at(1, 1))];
    let expected = held(H1, 40, at(2, 1), 60, at(2, 0));
    when(given.clone(), hold(H1, 40, 3_600, at(2, 0)))
        .await
        .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    let account = fold(&all);
    assert_eq!(account.balance(), 100);
    assert_eq!(account.held(), 40);
    assert_eq!(account.available(), 60);
    assert_eq!(
        account.open_holds().get(&id(H1)),
        Some(&OpenHold {
            credits: 40,
            operation: None,
            expires_at: at(2, 1),
        })
    );
}

#[tokio::test]
async fn a_priced_hold_records_operation_units_and_cost_version() {
    let given = vec![opened(0), granted(L1, 100, None, 100, at(1, 1))];
    let command = AccountCommand::HoldCredits(HoldCredits {
        hold_id: id(H1),
        amount: Amount::Priced {
            cost: cost_entry(),
            units: 4,
        },
        ttl_seconds: 60,
        idempotency_key: None,
        now: at(2, 0),
    });
    when(given, command)
        .await
        .then_expect_events(vec![AccountEvent::CreditsHeld(CreditsHeld {
            hold_id: id(H1),
            credits: 40,
            operation: Some(clustering()),
            units: Some(4),
            cost_version: Some(1),
            expires_at: at(2, 0) + Duration::seconds(60),
            available_after: 60,
            idempotency_key: None,
            held_at: at(2, 0),
        })]);
}

#[tokio::test]
async fn a_hold_may_use_the_credit_limit() {
    let given = vec![opened(50), granted(L1, 20, None, 20, at(1, 1))];
    when(given, hold(H1, 70, 60, at(2, 0)))
        .await
        .then_expect_events(vec![held(
            H1,
            70,
            at(2, 0) + Duration::seconds(60),
            -50,
            at(2, 0),
        )]);
}

#[tokio::test]
async fn a_hold_beyond_available_is_refused() {
    let given = vec![
        opened(0),
        granted(L1, 100, None, 100, at(1, 1)),
        held(H1, 60, at(2, 1), 40, at(2, 0)),
    ];
    when(given, hold(H2, 41, 60, at(2, 0)))
        .await
        .then_expect_error(AccountError::InsufficientCredits {
            balance: 100,
            available: 40,
            required: 41,
        });
}

#[tokio::test]
async fn a_hold_with_a_ttl_of_zero_or_above_the_maximum_is_refused() {
    for ttl_seconds in [0, HOLD_TTL_SECONDS_MAX + 1] {
        let given = vec![opened(0), granted(L1, 100, None, 100, at(1, 1))];
        when(given, hold(H1, 10, ttl_seconds, at(2, 0)))
            .await
            .then_expect_error(AccountError::HoldTtlOutOfRange {
                ttl_seconds,
                max: HOLD_TTL_SECONDS_MAX,
            });
    }
}

#[tokio::test]
async fn a_hold_of_the_longest_ttl_is_accepted() {
    let given = vec![opened(0), granted(L1, 100, None, 100, at(1, 1))];
    when(given, hold(H1, 10, HOLD_TTL_SECONDS_MAX, at(2, 0)))
        .await
        .then_expect_events(vec![held(H1, 10, at(9, 0), 90, at(2, 0))]);
}

#[tokio::test]
async fn a_hold_of_zero_or_negative_credits_is_refused() {
    for credits in [0, -10] {
        let given = vec![opened(0), granted(L1, 100, None, 100, at(1, 1))];
        when(given, hold(H1, credits, 60, at(2, 0)))
            .await
            .then_expect_error(AccountError::InvalidCredits {
                credits,
                max: CREDITS_PER_COMMAND_MAX,
            });
    }
}

#[tokio::test]
async fn a_priced_hold_of_zero_units_is_refused_by_pricing() {
    let given = vec![opened(0), granted(L1, 100, None, 100, at(1, 1))];
    let command = AccountCommand::HoldCredits(HoldCredits {
        hold_id: id(H1),
        amount: Amount::Priced {
            cost: cost_entry(),
            units: 0,
        },
        ttl_seconds: 60,
        idempotency_key: None,
        now: at(2, 0),
    });
    when(given, command)
        .await
        .then_expect_error(AccountError::Pricing(PriceError::UnitsOutOfRange {
            units: 0,
            max: UNITS_MAX,
        }));
}

#[tokio::test]
async fn a_hold_on_a_suspended_account_is_refused() {
    let given = vec![
        opened(0),
        granted(L1, 100, None, 100, at(1, 1)),
        suspended(at(1, 2)),
    ];
    when(given, hold(H1, 10, 60, at(2, 0)))
        .await
        .then_expect_error(AccountError::AccountSuspended);
}

#[tokio::test]
async fn a_hold_on_a_cancelled_account_is_refused() {
    when(
        vec![opened_event(AccountStatus::Cancelled, 0)],
        hold(H1, 10, 60, at(2, 0)),
    )
    .await
    .then_expect_error(AccountError::AccountCancelled);
}

#[tokio::test]
async fn a_hold_beyond_the_most_open_holds_is_refused() {
    let open_holds = i64::try_from(OPEN_HOLDS_MAX).unwrap();
    let mut given = vec![opened(0), granted(L1, 1_000_000, None, 1_000_000, at(1, 1))];
    for n in 0..open_holds {
        given.push(held(
            10_000 + u128::try_from(n).unwrap(),
            1,
            at(8, 0),
            1_000_000 - n - 1,
            at(1, 2),
        ));
    }
    assert_eq!(fold(&given).open_holds().len(), OPEN_HOLDS_MAX);
    when(given, hold(H1, 1, 60, at(2, 0)))
        .await
        .then_expect_error(AccountError::TooManyOpenHolds {
            max: OPEN_HOLDS_MAX,
        });
}

#[tokio::test]
async fn a_repeated_hold_key_writes_nothing_and_keeps_the_first_outcome() {
    let given = vec![opened(0), granted(L1, 100, None, 100, at(1, 1))];
    let first =
        assert_repeated_key_applies_once(given, keyed(hold(H1, 40, 60, at(2, 0)), "hold-1")).await;
    assert!(matches!(&first[..], [AccountEvent::CreditsHeld(e)] if e.credits == 40));
}

// ---------------------------------------------------------------------------
// CaptureHold
// ---------------------------------------------------------------------------

/// 100 credits in one lot that never expires, 40 of them held until 01:00 on
/// March 2nd.
fn with_a_hold_of_40() -> Vec<AccountEvent> {
    vec![
        opened(0),
        granted(L1, 100, None, 100, at(1, 1)),
        held(H1, 40, at(2, 1), 60, at(2, 0)),
    ]
}

fn captured(
    hold_credits: i64,
    captured: i64,
    lot_draws: &[(u128, i64)],
    overdraft: i64,
    balance_after: i64,
    available_after: i64,
    when: DateTime<Utc>,
) -> AccountEvent {
    AccountEvent::HoldCaptured(HoldCaptured {
        hold_id: id(H1),
        deduction_id: id(D1),
        held: hold_credits,
        captured,
        released: (hold_credits - captured).max(0),
        usage: Usage::default(),
        draws: draws(lot_draws),
        overdraft,
        balance_after,
        available_after,
        idempotency_key: None,
        captured_at: when,
    })
}

#[tokio::test]
async fn capturing_less_than_held_releases_the_rest() {
    let given = with_a_hold_of_40();
    let expected = captured(40, 25, &[(L1, 25)], 0, 75, 75, at(2, 0));
    when(given.clone(), capture(H1, D1, 25, at(2, 0)))
        .await
        .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    let account = fold(&all);
    assert_eq!((account.balance(), account.held()), (75, 0));
    assert!(account.open_holds().is_empty());
}

#[tokio::test]
async fn capturing_more_than_held_takes_the_extra_from_available() {
    when(with_a_hold_of_40(), capture(H1, D1, 100, at(2, 0)))
        .await
        .then_expect_events(vec![captured(40, 100, &[(L1, 100)], 0, 0, 0, at(2, 0))]);
}

#[tokio::test]
async fn capturing_more_than_available_allows_is_refused() {
    when(with_a_hold_of_40(), capture(H1, D1, 101, at(2, 0)))
        .await
        .then_expect_error(AccountError::InsufficientCredits {
            balance: 100,
            available: 100,
            required: 101,
        });
}

#[tokio::test]
async fn capturing_more_than_held_may_use_the_credit_limit() {
    let given = vec![
        opened(30),
        granted(L1, 100, None, 100, at(1, 1)),
        held(H1, 40, at(2, 1), 60, at(2, 0)),
    ];
    when(given, capture(H1, D1, 130, at(2, 0)))
        .await
        .then_expect_events(vec![captured(
            40,
            130,
            &[(L1, 100)],
            30,
            -30,
            -30,
            at(2, 0),
        )]);
}

#[tokio::test]
async fn capturing_nothing_releases_the_whole_hold() {
    when(with_a_hold_of_40(), capture(H1, D1, 0, at(2, 0)))
        .await
        .then_expect_events(vec![captured(40, 0, &[], 0, 100, 100, at(2, 0))]);
}

#[tokio::test]
async fn capturing_a_negative_or_too_large_amount_is_refused() {
    for credits in [-1, CREDITS_PER_COMMAND_MAX + 1] {
        when(with_a_hold_of_40(), capture(H1, D1, credits, at(2, 0)))
            .await
            .then_expect_error(AccountError::InvalidCredits {
                credits,
                max: CREDITS_PER_COMMAND_MAX,
            });
    }
}

#[tokio::test]
async fn a_priced_capture_records_the_operation_units_and_cost_version() {
    let command = AccountCommand::CaptureHold(CaptureHold {
        hold_id: id(H1),
        deduction_id: id(D1),
        amount: Amount::Priced {
            cost: cost_entry(),
            units: 2,
        },
        usage: Usage {
            model: Some("gpt-4o".into()),
            ..Usage::default()
        },
        idempotency_key: None,
        now: at(2, 0),
    });
    when(with_a_hold_of_40(), command)
        .await
        .then_expect_events(vec![AccountEvent::HoldCaptured(HoldCaptured {
            usage: Usage {
                model: Some("gpt-4o".into()),
                ..clustering_usage(2)
            },
            ..hold_captured_fields(captured(40, 20, &[(L1, 20)], 0, 80, 80, at(2, 0)))
        })]);
}

fn hold_captured_fields(event: AccountEvent) -> HoldCaptured {
    match event {
        AccountEvent::HoldCaptured(e) => e,
        other => panic!("expected HoldCaptured, got {other:?}"),
    }
}

#[tokio::test]
async fn a_capture_without_an_operation_takes_the_one_the_hold_was_priced_for() {
    let priced_hold = AccountEvent::CreditsHeld(CreditsHeld {
        hold_id: id(H1),
        credits: 40,
        operation: Some(clustering()),
        units: Some(4),
        cost_version: Some(1),
        expires_at: at(2, 1),
        available_after: 60,
        idempotency_key: None,
        held_at: at(2, 0),
    });
    let given = vec![
        opened(0),
        granted(L1, 100, None, 100, at(1, 1)),
        priced_hold,
    ];
    when(given, capture(H1, D1, 30, at(2, 0)))
        .await
        .then_expect_events(vec![AccountEvent::HoldCaptured(HoldCaptured {
            usage: Usage {
                operation: Some(clustering()),
                ..Usage::default()
            },
            ..hold_captured_fields(captured(40, 30, &[(L1, 30)], 0, 70, 70, at(2, 0)))
        })]);
}

#[tokio::test]
async fn capturing_an_unknown_hold_is_refused() {
    when(with_a_hold_of_40(), capture(H2, D1, 10, at(2, 0)))
        .await
        .then_expect_error(AccountError::HoldNotFound { hold_id: id(H2) });
}

#[tokio::test]
async fn capturing_a_captured_hold_is_refused() {
    let mut given = with_a_hold_of_40();
    given.push(captured(40, 25, &[(L1, 25)], 0, 75, 75, at(2, 0)));
    when(given, capture(H1, D2, 10, at(2, 0)))
        .await
        .then_expect_error(AccountError::HoldNotOpen {
            hold_id: id(H1),
            state: HoldState::Captured,
        });
}

#[tokio::test]
async fn capturing_a_released_hold_is_refused() {
    let mut given = with_a_hold_of_40();
    given.push(released(H1, 40, ReleaseReason::Caller, 100, at(2, 0)));
    when(given, capture(H1, D1, 10, at(2, 0)))
        .await
        .then_expect_error(AccountError::HoldNotOpen {
            hold_id: id(H1),
            state: HoldState::Released,
        });
}

#[tokio::test]
async fn capturing_a_hold_past_its_ttl_is_refused_as_expired() {
    when(with_a_hold_of_40(), capture(H1, D1, 10, at(2, 2)))
        .await
        .then_expect_error(AccountError::HoldNotOpen {
            hold_id: id(H1),
            state: HoldState::Expired,
        });
}

#[tokio::test]
async fn capturing_on_a_suspended_account_finishes_the_started_work() {
    let mut given = with_a_hold_of_40();
    given.push(suspended(at(2, 0)));
    when(given, capture(H1, D1, 25, at(2, 0)))
        .await
        .then_expect_events(vec![captured(40, 25, &[(L1, 25)], 0, 75, 75, at(2, 0))]);
}

#[tokio::test]
async fn a_repeated_capture_key_writes_nothing_and_keeps_the_first_outcome() {
    let first = assert_repeated_key_applies_once(
        with_a_hold_of_40(),
        keyed(capture(H1, D1, 25, at(2, 0)), "cap-1"),
    )
    .await;
    assert!(matches!(&first[..], [AccountEvent::HoldCaptured(e)] if e.captured == 25));
}

// ---------------------------------------------------------------------------
// ReleaseHold
// ---------------------------------------------------------------------------

#[tokio::test]
async fn releasing_a_hold_returns_its_credits_to_available() {
    let given = with_a_hold_of_40();
    let expected = released(H1, 40, ReleaseReason::Caller, 100, at(2, 0));
    when(given.clone(), release(H1, at(2, 0)))
        .await
        .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    let account = fold(&all);
    assert_eq!(
        (account.balance(), account.held(), account.available()),
        (100, 0, 100)
    );
}

#[tokio::test]
async fn releasing_an_unknown_hold_is_refused() {
    when(with_a_hold_of_40(), release(H2, at(2, 0)))
        .await
        .then_expect_error(AccountError::HoldNotFound { hold_id: id(H2) });
}

#[tokio::test]
async fn releasing_a_released_hold_is_refused() {
    let mut given = with_a_hold_of_40();
    given.push(released(H1, 40, ReleaseReason::Caller, 100, at(2, 0)));
    when(given, release(H1, at(2, 0)))
        .await
        .then_expect_error(AccountError::HoldNotOpen {
            hold_id: id(H1),
            state: HoldState::Released,
        });
}

#[tokio::test]
async fn releasing_a_captured_hold_is_refused() {
    let mut given = with_a_hold_of_40();
    given.push(captured(40, 25, &[(L1, 25)], 0, 75, 75, at(2, 0)));
    when(given, release(H1, at(2, 0)))
        .await
        .then_expect_error(AccountError::HoldNotOpen {
            hold_id: id(H1),
            state: HoldState::Captured,
        });
}

#[tokio::test]
async fn releasing_a_hold_the_ledger_expired_is_refused_as_expired() {
    let mut given = with_a_hold_of_40();
    given.push(released(H1, 40, ReleaseReason::Expired, 100, at(2, 1)));
    when(given, release(H1, at(3, 0)))
        .await
        .then_expect_error(AccountError::HoldNotOpen {
            hold_id: id(H1),
            state: HoldState::Expired,
        });
}

#[tokio::test]
async fn releasing_on_a_suspended_account_finishes_the_started_work() {
    let mut given = with_a_hold_of_40();
    given.push(suspended(at(2, 0)));
    when(given, release(H1, at(2, 0)))
        .await
        .then_expect_events(vec![released(H1, 40, ReleaseReason::Caller, 100, at(2, 0))]);
}

#[tokio::test]
async fn a_repeated_release_key_writes_nothing_and_keeps_the_first_outcome() {
    let first = assert_repeated_key_applies_once(
        with_a_hold_of_40(),
        keyed(release(H1, at(2, 0)), "rel-1"),
    )
    .await;
    assert!(matches!(&first[..], [AccountEvent::HoldReleased(e)] if e.credits == 40));
}

// ---------------------------------------------------------------------------
// RefundDeduction
// ---------------------------------------------------------------------------

/// 100 credits granted, 50 of them deducted (D1).
fn with_a_deduction_of_50() -> Vec<AccountEvent> {
    vec![
        opened(0),
        granted(L1, 100, None, 100, at(1, 1)),
        deducted(D1, 5, &[(L1, 50)], 0, 50, 50, at(1, 2)),
    ]
}

fn refunded(refund: u128, credits: i64, debt_repaid: i64, balance_after: i64) -> AccountEvent {
    AccountEvent::CreditsRefunded(CreditsRefunded {
        refund_id: id(refund),
        deduction_id: id(D1),
        credits,
        reason: "failed job".into(),
        debt_repaid,
        balance_after,
        idempotency_key: None,
        refunded_at: at(2, 0),
        lots: Vec::new(),
    })
}

#[tokio::test]
async fn refunding_part_of_a_deduction_adds_a_lot_that_never_expires() {
    let given = with_a_deduction_of_50();
    let expected = refunded(R1, 20, 0, 70);
    when(
        given.clone(),
        refund_of(Some(50), R1, D1, Some(20), at(2, 0)),
    )
    .await
    .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    let account = fold(&all);
    assert_eq!(account.balance(), 70);
    assert_eq!(
        account.lots(),
        &[
            Lot {
                id: id(L1),
                remaining: 50,
                expires_at: None,
                seq: 1,
            },
            Lot {
                id: id(R1),
                remaining: 20,
                expires_at: None,
                seq: 2,
            },
        ]
    );
}

/// A refund of `credits` of D1 that knows the lots D1 drew from.
fn refund_with_draws(refund: u128, credits: i64, draws: &[(u128, i64)]) -> AccountCommand {
    AccountCommand::RefundDeduction(RefundDeduction {
        refund_id: id(refund),
        deduction_id: id(D1),
        deducted: Some(draws.iter().map(|(_, c)| c).sum()),
        draws: draws
            .iter()
            .map(|(lot, credits)| LotDraw {
                lot_id: id(*lot),
                credits: *credits,
            })
            .collect(),
        credits: Some(credits),
        reason: "failed job".into(),
        idempotency_key: None,
        now: at(2, 0),
    })
}

#[tokio::test]
async fn refunded_credits_keep_the_expiry_of_the_lots_they_came_from() {
    // 100 expiring credits (L1) and 20 that never expire (L2); a deduction
    // of 110 burns all of L1 and 10 of L2.
    let expiry = at(5, 0);
    let given = vec![
        opened(0),
        granted(L1, 100, Some(expiry), 100, at(1, 1)),
        granted(L2, 20, None, 120, at(1, 2)),
        deducted(D1, 11, &[(L1, 100), (L2, 10)], 0, 10, 10, at(1, 3)),
    ];
    let draws = [(L1, 100), (L2, 10)];
    // 30 back, last taken first: the 10 of L2 (never expire), then 20 of L1
    // with L1's expiry.
    let events = when(given.clone(), refund_with_draws(R1, 30, &draws))
        .await
        .inspect_result()
        .expect("the refund is accepted");
    let AccountEvent::CreditsRefunded(r) = &events[0] else {
        panic!("expected a refund, got {events:?}");
    };
    assert_eq!(r.credits, 30);
    assert_eq!(r.balance_after, 40);
    let lots: Vec<_> = r.lots.iter().map(|l| (l.credits, l.expires_at)).collect();
    assert_eq!(lots, vec![(20, Some(expiry)), (10, None)]);
    let mut all = given.clone();
    all.extend(events);
    let account = fold(&all);
    assert_eq!(account.balance(), 40);
    let kept: Vec<_> = account
        .lots()
        .iter()
        .map(|l| (l.remaining, l.expires_at))
        .collect();
    assert_eq!(kept, vec![(20, Some(expiry)), (10, None), (10, None)]);

    // The rest of the refund (80) comes from L1 alone: all of it expires.
    let second = when(all.clone(), refund_with_draws(R2, 80, &draws))
        .await
        .inspect_result()
        .expect("the rest is accepted");
    let AccountEvent::CreditsRefunded(r) = &second[0] else {
        panic!("expected a refund");
    };
    let lots: Vec<_> = r.lots.iter().map(|l| (l.credits, l.expires_at)).collect();
    assert_eq!(lots, vec![(80, Some(expiry))]);
}

#[tokio::test]
async fn a_refund_after_the_lot_expired_expires_at_once() {
    let expiry = at(1, 5);
    let given = vec![
        opened(0),
        granted(L1, 100, Some(expiry), 100, at(1, 1)),
        deducted(D1, 5, &[(L1, 50)], 0, 50, 50, at(1, 2)),
    ];
    // At day 2 the lot's remaining 50 expire first, then the refunded 20
    // come back already expired and go at once: the balance stays 0.
    let events = when(given, refund_with_draws(R1, 20, &[(L1, 50)]))
        .await
        .inspect_result()
        .expect("the refund is accepted");
    let refund = events
        .iter()
        .find_map(|e| match e {
            AccountEvent::CreditsRefunded(r) => Some(r),
            _ => None,
        })
        .expect("a refund");
    assert_eq!(refund.lots[0].expires_at, Some(expiry));
    let expired: i64 = events
        .iter()
        .filter_map(|e| match e {
            AccountEvent::CreditsExpired(x) => Some(x.credits),
            _ => None,
        })
        .sum();
    assert_eq!(expired, 70);
}

#[tokio::test]
async fn refunding_without_an_amount_refunds_the_rest() {
    let mut given = with_a_deduction_of_50();
    given.push(refunded(R1, 20, 0, 70));
    when(given, refund_of(Some(50), R2, D1, None, at(2, 0)))
        .await
        .then_expect_events(vec![refunded(R2, 30, 0, 100)]);
}

#[tokio::test]
async fn refunding_the_rest_exactly_is_accepted() {
    let mut given = with_a_deduction_of_50();
    given.push(refunded(R1, 20, 0, 70));
    when(given, refund_of(Some(50), R2, D1, Some(30), at(2, 0)))
        .await
        .then_expect_events(vec![refunded(R2, 30, 0, 100)]);
}

#[tokio::test]
async fn refunding_more_than_is_left_of_the_deduction_is_refused() {
    let mut given = with_a_deduction_of_50();
    given.push(refunded(R1, 20, 0, 70));
    when(given, refund_of(Some(50), R2, D1, Some(31), at(2, 0)))
        .await
        .then_expect_error(AccountError::RefundExceedsDeduction {
            deduction_id: id(D1),
            refundable: 30,
            requested: 31,
        });
}

#[tokio::test]
async fn refunding_a_fully_refunded_deduction_again_is_refused() {
    let mut given = with_a_deduction_of_50();
    given.push(refunded(R1, 50, 0, 100));
    when(given.clone(), refund_of(Some(50), R2, D1, None, at(2, 0)))
        .await
        .then_expect_error(AccountError::RefundExceedsDeduction {
            deduction_id: id(D1),
            refundable: 0,
            requested: 0,
        });
    when(given, refund_of(Some(50), R2, D1, Some(1), at(2, 0)))
        .await
        .then_expect_error(AccountError::RefundExceedsDeduction {
            deduction_id: id(D1),
            refundable: 0,
            requested: 1,
        });
}

#[tokio::test]
async fn refunding_zero_or_negative_credits_is_refused() {
    for credits in [0, -5] {
        when(
            with_a_deduction_of_50(),
            refund_of(Some(50), R1, D1, Some(credits), at(2, 0)),
        )
        .await
        .then_expect_error(AccountError::InvalidCredits {
            credits,
            max: CREDITS_PER_COMMAND_MAX,
        });
    }
}

#[tokio::test]
async fn refunding_an_unknown_deduction_is_refused() {
    when(
        with_a_deduction_of_50(),
        refund_of(None, R1, D2, Some(5), at(2, 0)),
    )
    .await
    .then_expect_error(AccountError::DeductionNotFound {
        deduction_id: id(D2),
    });
}

#[tokio::test]
async fn refunding_a_capture_is_accepted() {
    let mut given = with_a_hold_of_40();
    given.push(captured(40, 25, &[(L1, 25)], 0, 75, 75, at(2, 0)));
    when(given, refund_of(Some(25), R1, D1, None, at(2, 0)))
        .await
        .then_expect_events(vec![refunded(R1, 25, 0, 100)]);
}

#[tokio::test]
async fn a_refund_first_repays_the_overdraft() {
    let given = vec![
        opened(50),
        granted(L1, 20, None, 20, at(1, 1)),
        deducted(D1, 6, &[(L1, 20)], 40, -40, -40, at(1, 2)),
    ];
    let expected = refunded(R1, 60, 40, 20);
    when(given.clone(), refund_of(Some(60), R1, D1, None, at(2, 0)))
        .await
        .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    let account = fold(&all);
    assert_eq!(account.debt(), 0);
    assert_eq!(account.balance(), 20);
}

#[tokio::test]
async fn a_repeated_refund_key_writes_nothing_and_keeps_the_first_outcome() {
    let first = assert_repeated_key_applies_once(
        with_a_deduction_of_50(),
        keyed(refund_of(Some(50), R1, D1, Some(20), at(2, 0)), "refund-1"),
    )
    .await;
    assert!(matches!(&first[..], [AccountEvent::CreditsRefunded(e)] if e.credits == 20));
}

#[test]
fn the_state_does_not_grow_with_the_deductions_it_made() {
    // A hot account makes millions of deductions; its warm state and its
    // snapshots must stay the same size (refunds look the deducted credits
    // up in the log instead).
    let state_bytes = |deductions: u128| {
        let mut events = vec![opened(0), granted(L1, 1_000_000, None, 1_000_000, at(1, 1))];
        for n in 0..deductions {
            let left = 1_000_000 - 10 * (n as i64 + 1);
            events.push(deducted(1_000 + n, 1, &[(L1, 10)], 0, left, left, at(1, 2)));
        }
        serde_json::to_vec(&fold(&events)).unwrap().len()
    };
    let (few, many) = (state_bytes(10), state_bytes(5_000));
    assert!(
        many <= few + 8,
        "{few} bytes after 10 deductions, {many} after 5,000"
    );
}

// ---------------------------------------------------------------------------
// AdjustCredits
// ---------------------------------------------------------------------------

fn adjusted(
    credits: i64,
    lot_draws: &[(u128, i64)],
    overdraft: i64,
    debt_repaid: i64,
    balance_after: i64,
) -> AccountEvent {
    AccountEvent::CreditsAdjusted(CreditsAdjusted {
        adjustment_id: id(A1),
        credits,
        reason: "support ticket 7".into(),
        draws: draws(lot_draws),
        overdraft,
        debt_repaid,
        balance_after,
        idempotency_key: None,
        adjusted_at: at(2, 0),
    })
}

#[tokio::test]
async fn a_positive_adjustment_adds_a_lot_that_never_expires() {
    let given = vec![opened(0), granted(L1, 100, Some(at(20, 0)), 100, at(1, 1))];
    let expected = adjusted(25, &[], 0, 0, 125);
    when(given.clone(), adjust(A1, 25, at(2, 0)))
        .await
        .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    let lots = fold(&all).lots().to_vec();
    assert_eq!(lots.len(), 2);
    assert_eq!(
        (lots[1].id, lots[1].remaining, lots[1].expires_at),
        (id(A1), 25, None)
    );
}

#[tokio::test]
async fn a_positive_adjustment_first_repays_the_overdraft() {
    let given = vec![opened(50), deducted(D1, 3, &[], 30, -30, -30, at(1, 2))];
    when(given, adjust(A1, 45, at(2, 0)))
        .await
        .then_expect_events(vec![adjusted(45, &[], 0, 30, 15)]);
}

#[tokio::test]
async fn a_negative_adjustment_draws_from_lots_like_a_deduction() {
    let given = vec![
        opened(10),
        granted(L1, 20, None, 20, at(1, 1)),
        granted(L2, 20, Some(at(20, 0)), 40, at(1, 2)),
    ];
    when(given, adjust(A1, -45, at(2, 0)))
        .await
        .then_expect_events(vec![adjusted(-45, &[(L2, 20), (L1, 20)], 5, 0, -5)]);
}

#[tokio::test]
async fn a_negative_adjustment_beyond_the_credit_limit_is_refused() {
    let given = vec![opened(10), granted(L1, 20, None, 20, at(1, 1))];
    when(given, adjust(A1, -31, at(2, 0)))
        .await
        .then_expect_error(AccountError::InsufficientCredits {
            balance: 20,
            available: 20,
            required: 31,
        });
}

#[tokio::test]
async fn a_zero_adjustment_is_refused() {
    when(vec![opened(0)], adjust(A1, 0, at(2, 0)))
        .await
        .then_expect_error(AccountError::ZeroAdjustment);
}

#[tokio::test]
async fn an_adjustment_above_the_per_command_maximum_is_refused() {
    for credits in [CREDITS_PER_COMMAND_MAX + 1, -(CREDITS_PER_COMMAND_MAX + 1)] {
        when(vec![opened(0)], adjust(A1, credits, at(2, 0)))
            .await
            .then_expect_error(AccountError::InvalidCredits {
                credits: credits.abs(),
                max: CREDITS_PER_COMMAND_MAX,
            });
    }
}

#[tokio::test]
async fn an_adjustment_of_the_smallest_i64_is_refused_as_overflow() {
    when(vec![opened(0)], adjust(A1, i64::MIN, at(2, 0)))
        .await
        .then_expect_error(AccountError::Overflow);
}

#[tokio::test]
async fn a_repeated_adjustment_key_writes_nothing_and_keeps_the_first_outcome() {
    let first = assert_repeated_key_applies_once(
        vec![opened(0), granted(L1, 100, None, 100, at(1, 1))],
        keyed(adjust(A1, -10, at(2, 0)), "adj-1"),
    )
    .await;
    assert!(matches!(&first[..], [AccountEvent::CreditsAdjusted(e)] if e.credits == -10));
}

// ---------------------------------------------------------------------------
// ExpireDue: lots and holds
// ---------------------------------------------------------------------------

#[tokio::test]
async fn expire_due_writes_nothing_when_nothing_is_due() {
    let given = vec![
        opened(0),
        granted(L1, 100, Some(at(5, 0)), 100, at(1, 1)),
        held(H1, 10, at(4, 0), 90, at(3, 0)),
    ];
    when(given, AccountCommand::ExpireDue { now: at(3, 12) })
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn lots_expire_in_expiry_order_stamped_at_their_own_expiry_instants() {
    let given = vec![
        opened(0),
        granted(L1, 100, Some(at(7, 0)), 100, at(1, 1)),
        granted(L2, 50, Some(at(5, 0)), 150, at(1, 2)),
        granted(L3, 10, None, 160, at(1, 3)),
        granted(L4, 20, Some(at(9, 0)), 180, at(1, 4)),
    ];
    when(given, AccountCommand::ExpireDue { now: at(8, 0) })
        .await
        .then_expect_events(vec![
            expired(L2, 50, 130, at(5, 0)),
            expired(L1, 100, 30, at(7, 0)),
        ]);
}

#[tokio::test]
async fn only_the_unused_part_of_a_lot_expires() {
    let given = vec![
        opened(0),
        granted(L1, 100, Some(at(5, 0)), 100, at(1, 1)),
        deducted(D1, 3, &[(L1, 30)], 0, 70, 70, at(2, 0)),
    ];
    when(given, AccountCommand::ExpireDue { now: at(6, 0) })
        .await
        .then_expect_events(vec![expired(L1, 70, 0, at(5, 0))]);
}

#[tokio::test]
async fn a_hold_past_its_ttl_is_released_as_expired_stamped_at_its_expiry() {
    let given = with_a_hold_of_40();
    let expected = released(H1, 40, ReleaseReason::Expired, 100, at(2, 1));
    when(given.clone(), AccountCommand::ExpireDue { now: at(3, 0) })
        .await
        .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    let account = fold(&all);
    assert_eq!(account.held(), 0);
    assert!(account.open_holds().is_empty());
}

#[tokio::test]
async fn a_hold_expires_exactly_at_its_ttl() {
    when(
        with_a_hold_of_40(),
        AccountCommand::ExpireDue { now: at(2, 1) },
    )
    .await
    .then_expect_events(vec![released(
        H1,
        40,
        ReleaseReason::Expired,
        100,
        at(2, 1),
    )]);
}

#[tokio::test]
async fn a_clock_behind_the_stream_expires_nothing_new() {
    let given = vec![
        opened(0),
        granted(L1, 100, Some(at(5, 0)), 100, at(1, 1)),
        granted(L2, 10, None, 110, at(4, 0)),
    ];
    // The clamped clock is March 4th: the lot is not due yet.
    when(given, AccountCommand::ExpireDue { now: at(2, 0) })
        .await
        .then_expect_events(vec![]);
}

/// 100 credits expiring on March 5th, all of them held from the 3rd until the
/// 8th.
fn expiring_credits_fully_held(credit_limit: i64) -> Vec<AccountEvent> {
    vec![
        opened(credit_limit),
        granted(L1, 100, Some(at(5, 0)), 100, at(1, 1)),
        held(H1, 100, at(8, 0), 0, at(3, 0)),
    ]
}

#[tokio::test]
async fn credits_backing_an_open_hold_do_not_expire_while_it_is_open() {
    when(
        expiring_credits_fully_held(0),
        AccountCommand::ExpireDue { now: at(6, 0) },
    )
    .await
    .then_expect_events(vec![]);
}

#[tokio::test]
async fn credits_backing_an_open_hold_do_not_expire_into_the_credit_limit() {
    // The credit limit is room to overdraw, not permission for expiry to eat
    // the credits a hold reserved.
    when(
        expiring_credits_fully_held(50),
        AccountCommand::ExpireDue { now: at(6, 0) },
    )
    .await
    .then_expect_events(vec![]);
}

#[tokio::test]
async fn credits_backing_a_hold_expire_when_the_hold_expires_stamped_at_that_instant() {
    when(
        expiring_credits_fully_held(0),
        AccountCommand::ExpireDue { now: at(9, 0) },
    )
    .await
    .then_expect_events(vec![
        released(H1, 100, ReleaseReason::Expired, 100, at(8, 0)),
        expired(L1, 100, 0, at(8, 0)),
    ]);
}

#[tokio::test]
async fn credits_backing_a_hold_expire_when_it_is_released_stamped_at_the_release() {
    when(expiring_credits_fully_held(0), release(H1, at(7, 0)))
        .await
        .then_expect_events(vec![
            released(H1, 100, ReleaseReason::Caller, 100, at(7, 0)),
            expired(L1, 100, 0, at(7, 0)),
        ]);
}

#[tokio::test]
async fn credits_left_after_a_capture_expire_stamped_at_the_capture() {
    let expected_capture = AccountEvent::HoldCaptured(HoldCaptured {
        hold_id: id(H1),
        deduction_id: id(D1),
        held: 100,
        captured: 60,
        released: 40,
        usage: Usage::default(),
        draws: draws(&[(L1, 60)]),
        overdraft: 0,
        balance_after: 40,
        available_after: 40,
        idempotency_key: None,
        captured_at: at(7, 0),
    });
    when(
        expiring_credits_fully_held(0),
        capture(H1, D1, 60, at(7, 0)),
    )
    .await
    .then_expect_events(vec![expected_capture, expired(L1, 40, 0, at(7, 0))]);
}

#[tokio::test]
async fn the_part_of_a_lot_not_backing_a_hold_expires_on_time_and_the_rest_with_the_hold() {
    let given = vec![
        opened(0),
        granted(L1, 100, Some(at(5, 0)), 100, at(1, 1)),
        held(H1, 30, at(8, 0), 70, at(3, 0)),
    ];
    let first = expired(L1, 70, 30, at(5, 0));
    when(given.clone(), AccountCommand::ExpireDue { now: at(6, 0) })
        .await
        .then_expect_events(vec![first.clone()]);
    let mut all = given;
    all.push(first);
    when(all, AccountCommand::ExpireDue { now: at(9, 0) })
        .await
        .then_expect_events(vec![
            released(H1, 30, ReleaseReason::Expired, 30, at(8, 0)),
            expired(L1, 30, 0, at(8, 0)),
        ]);
}

#[tokio::test]
async fn credits_a_grant_frees_from_backing_a_hold_expire_no_earlier_than_the_grant() {
    // The hold keeps the expired lot alive until a non-expiring grant on the
    // 6th can back the hold instead; only then may the lot's credits leave,
    // and the stream's time must not run backwards.
    let events = when(
        expiring_credits_fully_held(0),
        grant(L2, 100, None, at(6, 0)),
    )
    .await
    .inspect_result()
    .unwrap();
    assert_eq!(
        events,
        vec![
            granted(L2, 100, None, 200, at(6, 0)),
            expired(L1, 100, 100, at(6, 0)),
        ]
    );
}

#[tokio::test]
async fn the_stream_time_never_runs_backwards_across_a_command() {
    let mut all = expiring_credits_fully_held(0);
    for command in [
        grant(L2, 100, None, at(6, 0)),
        release(H1, at(7, 0)),
        AccountCommand::ExpireDue { now: at(9, 0) },
    ] {
        let events = when(all.clone(), command).await.inspect_result().unwrap();
        all.extend(events);
    }
    let times: Vec<_> = all.iter().map(AccountEvent::occurred_at).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted, "events: {all:#?}");
}

// ---------------------------------------------------------------------------
// Budgets (issue 17)
// ---------------------------------------------------------------------------

fn set_budget(
    monthly: i64,
    thresholds: &[u32],
    hard_cap: bool,
    now: DateTime<Utc>,
) -> AccountCommand {
    AccountCommand::SetBudget {
        budget: Some(events::Budget {
            monthly_credits: monthly,
            thresholds_percent: thresholds.to_vec(),
            hard_cap,
        }),
        now,
    }
}

/// Runs `command` on `history` and appends what it wrote.
async fn run(history: &mut Vec<AccountEvent>, command: AccountCommand) -> Vec<AccountEvent> {
    let events = when(history.clone(), command)
        .await
        .inspect_result()
        .expect("the command succeeds");
    history.extend(events.clone());
    events
}

fn reached(events: &[AccountEvent]) -> Vec<u32> {
    events
        .iter()
        .filter_map(|e| match e {
            AccountEvent::BudgetThresholdReached(r) => Some(r.percent),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn each_budget_threshold_is_reached_once_a_month_with_the_command_that_reaches_it() {
    let mut h = vec![opened(0)];
    run(&mut h, grant(L1, 10_000, None, at(1, 1))).await;
    run(&mut h, set_budget(100, &[50, 80, 100], false, at(1, 2))).await;
    // 40 used: nothing; 60: 50 %; 90: 80 %; 130 (soft): 100 %.
    assert_eq!(
        reached(&run(&mut h, deduct(D1, 4, at(2, 0))).await),
        [0_u32; 0]
    );
    assert_eq!(reached(&run(&mut h, deduct(D2, 2, at(2, 1))).await), [50]);
    let e = run(&mut h, deduct(203, 3, at(2, 2))).await;
    assert_eq!(reached(&e), [80]);
    match e.last().unwrap() {
        AccountEvent::BudgetThresholdReached(r) => {
            assert_eq!(
                (r.period.as_str(), r.used, r.monthly_credits),
                ("2026-03", 90, 100)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(reached(&run(&mut h, deduct(204, 4, at(2, 3))).await), [100]);
    // Nothing more this month, even far beyond.
    assert_eq!(
        reached(&run(&mut h, deduct(205, 10, at(3, 0))).await),
        [0_u32; 0]
    );
    assert_eq!(fold(&h).used_in_month(at(3, 0)), 230);
    // A new month counts afresh.
    let april = Utc.with_ymd_and_hms(2026, 4, 2, 0, 0, 0).unwrap();
    assert_eq!(fold(&h).used_in_month(april), 0);
    assert_eq!(reached(&run(&mut h, deduct(206, 6, april)).await), [50]);
}

#[tokio::test]
async fn a_hard_cap_refuses_deductions_holds_and_extra_captures_beyond_the_month() {
    let mut h = vec![opened(0)];
    run(&mut h, grant(L1, 10_000, None, at(1, 1))).await;
    run(&mut h, set_budget(100, &[100], true, at(1, 2))).await;
    run(&mut h, deduct(D1, 5, at(2, 0))).await; // 50 used
    run(&mut h, hold(H1, 30, 86_400, at(2, 1))).await; // 30 held
    let refused = when(h.clone(), deduct(D2, 3, at(2, 2)))
        .await
        .inspect_result();
    assert_eq!(
        refused.unwrap_err(),
        AccountError::BudgetExceeded {
            monthly_credits: 100,
            used: 50,
            held: 30,
            required: 30,
        }
    );
    assert!(matches!(
        when(h.clone(), hold(H2, 21, 86_400, at(2, 2)))
            .await
            .inspect_result(),
        Err(AccountError::BudgetExceeded { .. })
    ));
    // Capturing 40 of the 30 held needs 10 more: 50 + 30 + 10 = 90 fits.
    let e = run(&mut h, capture(H1, D2, 40, at(2, 3))).await;
    assert_eq!(fold(&h).used_in_month(at(2, 3)), 90);
    assert!(reached(&e).is_empty());
    // The last 10 fit exactly and reach 100 %; one more credit does not.
    assert_eq!(reached(&run(&mut h, deduct(203, 1, at(2, 4))).await), [100]);
    assert!(matches!(
        when(h.clone(), deduct(204, 1, at(2, 5)))
            .await
            .inspect_result(),
        Err(AccountError::BudgetExceeded { .. })
    ));
    // A refund gives room back; removing the budget lifts the cap.
    run(&mut h, refund_of(Some(10), R1, 203, None, at(2, 6))).await;
    run(&mut h, deduct(205, 1, at(2, 7))).await;
    run(
        &mut h,
        AccountCommand::SetBudget {
            budget: None,
            now: at(2, 8),
        },
    )
    .await;
    run(&mut h, deduct(206, 50, at(2, 9))).await;
    assert_eq!(fold(&h).budget(), None);
}

#[tokio::test]
async fn a_budget_set_below_the_months_usage_is_reached_at_once_and_bad_budgets_are_refused() {
    let mut h = vec![opened(0)];
    run(&mut h, grant(L1, 10_000, None, at(1, 1))).await;
    run(&mut h, deduct(D1, 7, at(2, 0))).await;
    let e = run(&mut h, set_budget(100, &[50, 80], false, at(2, 1))).await;
    assert_eq!(reached(&e), [50]);
    // The same budget again writes nothing.
    assert!(run(&mut h, set_budget(100, &[50, 80], false, at(2, 2)))
        .await
        .is_empty());
    for (monthly, thresholds) in [
        (0, vec![50]),
        (100, vec![80, 50]),
        (100, vec![50, 50]),
        (100, vec![0]),
        (100, vec![1001]),
    ] {
        assert!(matches!(
            when(h.clone(), set_budget(monthly, &thresholds, false, at(2, 3)))
                .await
                .inspect_result(),
            Err(AccountError::InvalidBudget { .. })
        ));
    }
}

// ---------------------------------------------------------------------------
// Automatic top-up (issue 17)
// ---------------------------------------------------------------------------

fn set_top_up(threshold: i64, daily_limit: u32, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::SetAutoTopUp {
        config: Some(events::AutoTopUp {
            enabled: true,
            threshold,
            package: "pro".into(),
            method: events::PaymentMethod::BankTransfer,
            daily_limit,
        }),
        now,
    }
}

fn triggers(events: &[AccountEvent]) -> Vec<Uuid> {
    events
        .iter()
        .filter_map(|e| match e {
            AccountEvent::AutoTopUpTriggered(t) => Some(t.trigger_id),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn a_top_up_triggers_once_per_crossing_below_its_threshold_within_the_daily_limit() {
    let mut h = vec![opened(0)];
    run(&mut h, grant(L1, 100, None, at(1, 1))).await;
    run(&mut h, set_top_up(50, 2, at(1, 2))).await;
    // 100 → 60: above; 60 → 40: the crossing, by this deduction.
    assert!(triggers(&run(&mut h, deduct(D1, 4, at(2, 0))).await).is_empty());
    assert_eq!(
        triggers(&run(&mut h, deduct(D2, 2, at(2, 1))).await),
        [id(D2)]
    );
    // Still below: no new crossing.
    assert!(triggers(&run(&mut h, deduct(203, 1, at(2, 2))).await).is_empty());
    // Back above (a purchase), then a hold crosses again.
    run(&mut h, grant(L2, 100, None, at(2, 3))).await;
    assert_eq!(
        triggers(&run(&mut h, hold(H1, 90, 86_400, at(2, 4))).await),
        [id(H1)]
    );
    assert_eq!(fold(&h).top_ups_on(at(2, 5)), 2);
    // The day's limit is reached: the next crossing waits for tomorrow.
    run(&mut h, release(H1, at(2, 5))).await;
    assert!(triggers(&run(&mut h, deduct(204, 9, at(2, 6))).await).is_empty());
    run(&mut h, grant(L3, 100, None, at(3, 0))).await;
    assert_eq!(
        triggers(&run(&mut h, deduct(205, 10, at(3, 1))).await),
        [id(205)]
    );
}

#[tokio::test]
async fn top_up_outcomes_are_recorded_once_and_three_failures_turn_it_off() {
    let mut h = vec![opened(0)];
    run(&mut h, set_top_up(50, 5, at(1, 2))).await;
    let record =
        |trigger: u128, outcome: Result<(Uuid, Uuid), String>| AccountCommand::RecordAutoTopUp {
            trigger_id: id(trigger),
            outcome,
            now: at(2, 0),
        };
    let ok = run(&mut h, record(1, Ok((id(10), id(11))))).await;
    assert!(matches!(&ok[..], [AccountEvent::AutoTopUpSucceeded(s)] if s.invoice_id == id(10)));
    // The same trigger again: nothing.
    assert!(run(&mut h, record(1, Err("late".into()))).await.is_empty());
    for (n, trigger) in [(1, 2), (2, 3)] {
        let failed = run(&mut h, record(trigger, Err("card declined".into()))).await;
        assert!(
            matches!(&failed[..], [AccountEvent::AutoTopUpFailed(f)] if f.failures == n && !f.disabled),
            "{failed:?}"
        );
    }
    let third = run(&mut h, record(4, Err("card declined".into()))).await;
    assert!(
        matches!(&third[..], [AccountEvent::AutoTopUpFailed(f)] if f.failures == 3 && f.disabled)
    );
    assert!(!fold(&h).auto_top_up().unwrap().enabled);
    // Turned off: a crossing triggers nothing.
    run(&mut h, grant(L1, 100, None, at(2, 1))).await;
    assert!(triggers(&run(&mut h, deduct(D1, 6, at(2, 2))).await).is_empty());
}
