//! Property tests of the credit account over random command sequences: the
//! balance is the sum of the signed amounts, every `balance_after` matches the
//! running sum, nothing goes below the credit limit, a key applies at most
//! once, and replaying the events (twice) rebuilds the live state.

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{
    AccountEvent, AccountId, AccountStatus, CostEntry, CostUnit, CountryCode, GrantSource,
    IdempotencyKey, OperationKey, Usage,
};
use ledger::account::{
    AccountPatch, AdjustCredits, Amount, CaptureHold, DeductCredits, GrantCredits, HoldCredits,
    OpenAccount, RefundDeduction, ReleaseHold,
};
use ledger::{AccountCommand, AccountError, CreditAccount};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rust_decimal::Decimal;
use tokio::runtime::Runtime;
use uuid::Uuid;

/// Which hold or deduction a command refers to: one made earlier in the run
/// (by index, wrapped), or an id nobody made.
#[derive(Debug, Clone, Copy)]
enum Ref {
    /// One of the holds open right now (for deductions: any made earlier).
    Open(usize),
    Earlier(usize),
    Unknown(u128),
}

/// One random command, without ids or clock (the run supplies those).
#[derive(Debug, Clone)]
enum Step {
    Grant {
        credits: i64,
        expires_in_minutes: Option<i64>,
    },
    Deduct {
        units: u64,
    },
    Hold {
        credits: i64,
        ttl_seconds: u64,
    },
    Capture {
        hold: Ref,
        credits: i64,
    },
    Release {
        hold: Ref,
    },
    Refund {
        deduction: Ref,
        credits: Option<i64>,
    },
    Adjust {
        credits: i64,
    },
    SetCreditLimit {
        credit_limit: i64,
    },
    ExpireDue,
}

/// A step, the minutes the clock advances before it, and an optional key
/// drawn from a small pool so that keys repeat.
#[derive(Debug, Clone)]
struct Timed {
    advance_minutes: i64,
    key: Option<u8>,
    step: Step,
}

fn reference() -> impl Strategy<Value = Ref> {
    prop_oneof![
        6 => any::<usize>().prop_map(Ref::Open),
        2 => any::<usize>().prop_map(Ref::Earlier),
        1 => any::<u128>().prop_map(Ref::Unknown),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1i64..=400, proptest::option::of(1i64..=2_880)).prop_map(|(credits, expires_in_minutes)| {
            Step::Grant { credits, expires_in_minutes }
        }),
        3 => (1u64..=15).prop_map(|units| Step::Deduct { units }),
        3 => (1i64..=100, 60u64..=86_400).prop_map(|(credits, ttl_seconds)| Step::Hold { credits, ttl_seconds }),
        3 => (reference(), 0i64..=150).prop_map(|(hold, credits)| Step::Capture { hold, credits }),
        1 => reference().prop_map(|hold| Step::Release { hold }),
        1 => (reference(), proptest::option::of(1i64..=100)).prop_map(|(deduction, credits)| {
            Step::Refund { deduction, credits }
        }),
        1 => (-100i64..=100)
            .prop_filter("an adjustment is never zero", |c| *c != 0)
            .prop_map(|credits| Step::Adjust { credits }),
        1 => (0i64..50).prop_map(|credit_limit| Step::SetCreditLimit { credit_limit }),
        1 => Just(Step::ExpireDue),
    ]
}

fn timed() -> impl Strategy<Value = Timed> {
    // Mostly small steps, so holds are still open when captured, and now and
    // then a long one, so lots and holds expire.
    let advance = prop_oneof![8 => 0i64..=90, 1 => 0i64..=2_880];
    (advance, proptest::option::of(0u8..8), step()).prop_map(|(advance_minutes, key, step)| Timed {
        advance_minutes,
        key,
        step,
    })
}

fn clustering() -> CostEntry {
    CostEntry {
        operation: OperationKey::parse("clustering").unwrap(),
        cost: 10,
        unit: CostUnit::PerRequest,
        version: 1,
    }
}

/// One account driven by commands the way a command service drives it: each
/// command runs on a clone, and the clone replaces the state only on success.
struct Run {
    rt: Runtime,
    account: CreditAccount,
    events: Vec<AccountEvent>,
    now: DateTime<Utc>,
    next_id: u128,
    holds: Vec<Uuid>,
    /// Every deduction made, with the credits it took (what a caller looks
    /// up in the log before a refund).
    deductions: Vec<(Uuid, i64)>,
}

impl Run {
    fn open(credit_limit: i64) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let now = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let mut run = Self {
            rt,
            account: CreditAccount::default(),
            events: Vec::new(),
            now,
            next_id: 1,
            holds: Vec::new(),
            deductions: Vec::new(),
        };
        let opened = run.execute(AccountCommand::OpenAccount(OpenAccount {
            account_id: AccountId::from_uuid(Uuid::from_u128(0xacc0)),
            name: "Acme".into(),
            slug: "acme".into(),
            owner_user_id: "user-1".into(),
            plan: "starter".into(),
            status: AccountStatus::Active,
            country: CountryCode::parse("US").unwrap(),
            billing_email: "billing@acme.test".into(),
            credit_limit,
            low_balance_threshold: 0,
            tax_rate: Decimal::ZERO,
            currency: None,
            now,
        }));
        assert!(opened.is_ok(), "opening failed: {opened:?}");
        run
    }

    /// Handles one command against a clone of the state; keeps the clone and
    /// the events only when the command succeeds.
    fn execute(&mut self, command: AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        let mut next = self.account.clone();
        let sink = EventSink::<CreditAccount>::default();
        self.rt.block_on(next.handle(command, &(), &sink))?;
        let events = self.rt.block_on(sink.collect());
        self.account = next;
        self.events.extend(events.clone());
        Ok(events)
    }

    fn fresh_id(&mut self) -> Uuid {
        self.next_id += 1;
        Uuid::from_u128(self.next_id)
    }

    /// The id a reference means. `open` are the ids `Ref::Open` picks from
    /// (the open holds; for deductions, every one made).
    fn resolve(r: Ref, open: &[Uuid], made: &[Uuid]) -> Uuid {
        match r {
            Ref::Open(i) if !open.is_empty() => open[i % open.len()],
            Ref::Open(i) | Ref::Earlier(i) if !made.is_empty() => made[i % made.len()],
            Ref::Open(i) | Ref::Earlier(i) => Uuid::from_u128(u128::MAX - i as u128),
            Ref::Unknown(n) => Uuid::from_u128(n | (1 << 127)),
        }
    }

    fn hold_id(&self, r: Ref) -> Uuid {
        let open: Vec<Uuid> = self.account.open_holds().keys().copied().collect();
        Self::resolve(r, &open, &self.holds)
    }

    fn deduction_id(&self, r: Ref) -> Uuid {
        let made: Vec<Uuid> = self.deductions.iter().map(|(id, _)| *id).collect();
        Self::resolve(r, &made, &made)
    }

    /// The credits a deduction took, as the log says; `None` for an unknown id.
    fn deducted(&self, id: Uuid) -> Option<i64> {
        self.deductions
            .iter()
            .find(|(d, _)| *d == id)
            .map(|(_, credits)| *credits)
    }

    /// The command a step stands for, at the run's current clock.
    fn command(&mut self, step: &Step, key: Option<IdempotencyKey>) -> AccountCommand {
        let now = self.now;
        match *step {
            Step::Grant {
                credits,
                expires_in_minutes,
            } => AccountCommand::GrantCredits(GrantCredits {
                grant_id: self.fresh_id(),
                credits,
                source: GrantSource::Purchase,
                expires_at: expires_in_minutes.map(|m| now + Duration::minutes(m)),
                description: None,
                idempotency_key: key,
                now,
            }),
            Step::Deduct { units } => AccountCommand::DeductCredits(DeductCredits {
                deduction_id: self.fresh_id(),
                cost: clustering(),
                usage: Usage {
                    units,
                    ..Usage::default()
                },
                idempotency_key: key,
                now,
            }),
            Step::Hold {
                credits,
                ttl_seconds,
            } => AccountCommand::HoldCredits(HoldCredits {
                hold_id: self.fresh_id(),
                amount: Amount::Credits(credits),
                ttl_seconds,
                idempotency_key: key,
                now,
            }),
            Step::Capture { hold, credits } => AccountCommand::CaptureHold(CaptureHold {
                hold_id: self.hold_id(hold),
                deduction_id: self.fresh_id(),
                amount: Amount::Credits(credits),
                usage: Usage::default(),
                idempotency_key: key,
                now,
            }),
            Step::Release { hold } => AccountCommand::ReleaseHold(ReleaseHold {
                hold_id: self.hold_id(hold),
                idempotency_key: key,
                now,
            }),
            Step::Refund { deduction, credits } => {
                let deduction_id = self.deduction_id(deduction);
                AccountCommand::RefundDeduction(RefundDeduction {
                    refund_id: self.fresh_id(),
                    deduction_id,
                    deducted: self.deducted(deduction_id),
                    draws: Vec::new(),
                    credits,
                    reason: "property".into(),
                    idempotency_key: key,
                    now,
                })
            }
            Step::Adjust { credits } => AccountCommand::AdjustCredits(AdjustCredits {
                adjustment_id: self.fresh_id(),
                credits,
                reason: "property".into(),
                idempotency_key: key,
                now,
            }),
            Step::SetCreditLimit { credit_limit } => AccountCommand::UpdateAccount {
                patch: AccountPatch {
                    credit_limit: Some(credit_limit),
                    ..AccountPatch::default()
                },
                now,
            },
            Step::ExpireDue => AccountCommand::ExpireDue { now },
        }
    }

    /// Advances the clock and runs one step; remembers the holds and
    /// deductions it made so later steps can refer to them.
    fn step(&mut self, t: &Timed) -> Result<Vec<AccountEvent>, AccountError> {
        self.now += Duration::minutes(t.advance_minutes);
        let key = t
            .key
            .map(|k| IdempotencyKey::parse(&format!("key-{k}")).unwrap());
        let command = self.command(&t.step, key);
        let events = self.execute(command)?;
        for e in &events {
            match e {
                AccountEvent::CreditsHeld(h) => self.holds.push(h.hold_id),
                AccountEvent::CreditsDeducted(d) => {
                    self.deductions.push((d.deduction_id, d.credits))
                }
                AccountEvent::HoldCaptured(c) => self.deductions.push((c.deduction_id, c.captured)),
                _ => {}
            }
        }
        Ok(events)
    }

    /// Every invariant of SPEC §2 that one stream can show.
    fn check(&self) -> Result<(), TestCaseError> {
        let limit = self.account.credit_limit();
        let mut balance = 0i64;
        let mut held = 0i64;
        let mut limit_then = 0i64;
        for e in &self.events {
            balance += e.balance_delta();
            held += e.held_delta();
            match e {
                AccountEvent::AccountOpened(o) => limit_then = o.credit_limit,
                AccountEvent::AccountUpdated(u) => {
                    limit_then = u.credit_limit.unwrap_or(limit_then)
                }
                _ => {}
            }
            if let Some(after) = e.balance_after() {
                prop_assert_eq!(after, balance, "balance_after of {:?}", e);
            }
            // Not only between commands: no single event may break the limit.
            prop_assert!(
                balance - held >= -limit_then,
                "available {} below -{} after {:?}",
                balance - held,
                limit_then,
                e
            );
        }
        prop_assert_eq!(limit, limit_then);
        prop_assert_eq!(self.account.balance(), balance);
        prop_assert_eq!(self.account.held(), held);
        prop_assert!(held >= 0, "held {} is negative", held);
        prop_assert!(
            self.account.balance() >= -limit,
            "balance {} below -{}",
            self.account.balance(),
            limit
        );
        prop_assert!(
            self.account.available() >= -limit,
            "available {} below -{}",
            self.account.available(),
            limit
        );

        let mut uses: HashMap<&IdempotencyKey, usize> = HashMap::new();
        for k in self.events.iter().filter_map(AccountEvent::idempotency_key) {
            *uses.entry(k).or_default() += 1;
        }
        for (k, n) in uses {
            prop_assert_eq!(n, 1, "key {} applied {} times", k, n);
        }

        let replayed = fold(&self.events);
        prop_assert_eq!(&replayed, &self.account);
        prop_assert_eq!(&fold(&self.events), &replayed);
        Ok(())
    }
}

fn fold(events: &[AccountEvent]) -> CreditAccount {
    let mut account = CreditAccount::default();
    for e in events {
        account.apply(e.clone());
    }
    account
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // Failures are reported with their shrunk input; no files are written.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn invariants_hold_after_every_command_of_a_random_sequence(
        credit_limit in 0i64..50,
        steps in proptest::collection::vec(timed(), 1..60),
    ) {
        let mut run = Run::open(credit_limit);
        run.check()?;
        for t in &steps {
            // Refusals are part of the exercise: a refused command must
            // leave no trace.
            let _ = run.step(t);
            run.check()?;
        }
    }

    /// Expiries are stamped at the instant they happened, which may lie
    /// before the command's clock, but never before an event already in the
    /// stream: an as-of fold must see the events in time order.
    #[test]
    fn event_times_never_run_backwards(
        credit_limit in 0i64..50,
        steps in proptest::collection::vec(timed(), 1..60),
    ) {
        let mut run = Run::open(credit_limit);
        for t in &steps {
            let _ = run.step(t);
        }
        for pair in run.events.windows(2) {
            prop_assert!(
                pair[0].occurred_at() <= pair[1].occurred_at(),
                "{:?} is stamped before the event it follows, {:?}",
                pair[1],
                pair[0]
            );
        }
    }

    #[test]
    fn a_refused_command_leaves_the_state_unchanged(
        credit_limit in 0i64..50,
        steps in proptest::collection::vec(timed(), 1..60),
    ) {
        let mut run = Run::open(credit_limit);
        for t in &steps {
            let before = (run.account.clone(), run.events.len());
            if run.step(t).is_err() {
                prop_assert_eq!(&run.account, &before.0);
                prop_assert_eq!(run.events.len(), before.1);
            }
        }
    }

    #[test]
    fn the_same_idempotency_key_used_twice_applies_at_most_once(
        credit_limit in 0i64..50,
        prefix in proptest::collection::vec(timed(), 0..40),
        repeated in step().prop_filter("carries a key", |s| {
            !matches!(s, Step::SetCreditLimit { .. } | Step::ExpireDue)
        }),
        later_minutes in 0i64..=720,
    ) {
        let mut run = Run::open(credit_limit);
        for t in &prefix {
            let _ = run.step(t);
        }
        // The prefix draws its keys from key-0..key-7, so this one is fresh.
        let key = IdempotencyKey::parse("repeated").unwrap();
        let command = run.command(&repeated, Some(key.clone()));
        if let Ok(first) = run.execute(command.clone()) {
            let outcome = first
                .iter()
                .find(|e| e.idempotency_key() == Some(&key))
                .cloned();
            prop_assert!(outcome.is_some(), "no event carries the key: {:?}", first);
            prop_assert_eq!(run.account.outcome_for(&key), outcome.as_ref());
            let state = run.account.clone();
            // The same command again, later, must add nothing at all.
            run.now += Duration::minutes(later_minutes);
            let again = match command {
                AccountCommand::GrantCredits(mut c) => { c.now = run.now; AccountCommand::GrantCredits(c) }
                AccountCommand::DeductCredits(mut c) => { c.now = run.now; AccountCommand::DeductCredits(c) }
                AccountCommand::HoldCredits(mut c) => { c.now = run.now; AccountCommand::HoldCredits(c) }
                AccountCommand::CaptureHold(mut c) => { c.now = run.now; AccountCommand::CaptureHold(c) }
                AccountCommand::ReleaseHold(mut c) => { c.now = run.now; AccountCommand::ReleaseHold(c) }
                AccountCommand::RefundDeduction(mut c) => { c.now = run.now; AccountCommand::RefundDeduction(c) }
                AccountCommand::AdjustCredits(mut c) => { c.now = run.now; AccountCommand::AdjustCredits(c) }
                other => other,
            };
            prop_assert_eq!(run.execute(again), Ok(vec![]));
            prop_assert_eq!(&run.account, &state);
            let applied = run
                .events
                .iter()
                .filter(|e| e.idempotency_key() == Some(&key))
                .count();
            prop_assert!(applied <= 1, "the key applied {} times", applied);
            run.check()?;
        }
    }
}
