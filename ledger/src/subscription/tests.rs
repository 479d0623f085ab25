//! Given/when/then tests of the subscription: creation, payment,
//! proration, downgrade, cancel, renewal, past_due and what is due when.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::{AggregateResultValidator, TestFramework};
use events::{
    AccountId, AccountStatus, BillingCycle, CancelReason, InvoicePurpose, Money, PlanTerms,
    SubscriptionEvent, SubscriptionStatus,
};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use uuid::Uuid;

use cqrs_es::Aggregate;

use super::*;

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, 0, 0, 0).unwrap()
}

fn terms(slug: &str, price: Decimal, credits: i64) -> PlanTerms {
    PlanTerms {
        slug: slug.into(),
        name: slug.into(),
        price: Money::usd(price),
        billing_cycle: BillingCycle::Monthly,
        included_credits: credits,
    }
}

fn starter() -> PlanTerms {
    terms("starter", dec!(29), 1_000)
}
fn professional() -> PlanTerms {
    terms("professional", dec!(99), 5_000)
}
fn free() -> PlanTerms {
    terms("free", dec!(0), 100)
}

const FIRST: Uuid = Uuid::from_u128(10);
const RENEWAL: Uuid = Uuid::from_u128(11);
const PRORATION: Uuid = Uuid::from_u128(12);

fn create(plan: PlanTerms) -> SubscriptionCommand {
    SubscriptionCommand::Create(Box::new(CreateSubscription {
        subscription_id: Uuid::from_u128(1),
        account_id: AccountId::from_uuid(Uuid::from_u128(2)),
        plan,
        method: events::PaymentMethod::BankTransfer,
        first_invoice_id: FIRST,
        first_invoice_due_at: at(1) + Duration::days(14),
        stripe_customer_id: None,
        stripe_subscription_id: None,
        now: at(1),
    }))
}

async fn run(
    given: &[SubscriptionEvent],
    cmd: SubscriptionCommand,
) -> AggregateResultValidator<Subscription> {
    TestFramework::<Subscription>::with(())
        .given(given.to_vec())
        .when_async(cmd)
        .await
}

async fn events_of(
    given: &[SubscriptionEvent],
    cmd: SubscriptionCommand,
) -> Vec<SubscriptionEvent> {
    run(given, cmd).await.inspect_result().expect("accepted")
}

async fn error_of(given: &[SubscriptionEvent], cmd: SubscriptionCommand) -> SubscriptionError {
    run(given, cmd).await.inspect_result().expect_err("refused")
}

fn fold(events: &[SubscriptionEvent]) -> Subscription {
    let mut s = Subscription::default();
    for e in events {
        s.apply(e.clone());
    }
    s
}

fn paid_first(now: DateTime<Utc>) -> SubscriptionCommand {
    SubscriptionCommand::InvoicePaid {
        invoice_id: FIRST,
        now,
    }
}

/// Created on starter (1 Nov, period to 1 Dec) and its first invoice paid.
async fn active_starter() -> Vec<SubscriptionEvent> {
    let mut given = events_of(&[], create(starter())).await;
    given.extend(events_of(&given, paid_first(at(2))).await);
    given
}

#[tokio::test]
async fn a_paid_plan_starts_incomplete_with_its_first_invoice_for_the_calendar_month() {
    let events = events_of(&[], create(starter())).await;
    assert_eq!(events.len(), 1);
    let SubscriptionEvent::SubscriptionCreated(c) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (c.period_start, c.period_end),
        (at(1), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap())
    );
    let first = c.first_invoice.as_ref().unwrap();
    assert_eq!(
        (first.invoice_id, first.purpose, first.credits),
        (FIRST, InvoicePurpose::Initial, 1_000)
    );
    assert_eq!(fold(&events).status(), Some(SubscriptionStatus::Incomplete));
    assert_eq!(fold(&events).account_target(), None);
}

#[tokio::test]
async fn a_free_plan_is_active_at_once_without_an_invoice() {
    let events = events_of(&[], create(free())).await;
    assert!(
        matches!(&events[0], SubscriptionEvent::SubscriptionCreated(c) if c.first_invoice.is_none())
    );
    assert!(matches!(
        events[1],
        SubscriptionEvent::SubscriptionActivated(_)
    ));
    let s = fold(&events);
    assert_eq!(s.status(), Some(SubscriptionStatus::Active));
    assert_eq!(
        s.account_target(),
        Some(("free".into(), AccountStatus::Active))
    );
}

#[tokio::test]
async fn an_annual_plan_runs_twelve_months_and_month_ends_are_clamped() {
    let jan31 = Utc.with_ymd_and_hms(2027, 1, 31, 0, 0, 0).unwrap();
    assert_eq!(
        add_cycle(jan31, BillingCycle::Monthly),
        Some(Utc.with_ymd_and_hms(2027, 2, 28, 0, 0, 0).unwrap())
    );
    assert_eq!(
        add_cycle(jan31, BillingCycle::Annual),
        Some(Utc.with_ymd_and_hms(2028, 1, 31, 0, 0, 0).unwrap())
    );
}

#[tokio::test]
async fn creating_twice_or_with_a_negative_price_is_refused() {
    let given = events_of(&[], create(starter())).await;
    assert_eq!(
        error_of(&given, create(starter())).await,
        SubscriptionError::AlreadyExists
    );
    assert_eq!(
        error_of(&[], create(terms("x", dec!(-1), 0))).await,
        SubscriptionError::InvalidPlan
    );
}

#[tokio::test]
async fn paying_the_first_invoice_activates_once_and_a_second_payment_is_a_no_op() {
    let given = events_of(&[], create(starter())).await;
    let events = events_of(&given, paid_first(at(2))).await;
    assert!(
        matches!(&events[0], SubscriptionEvent::SubscriptionInvoicePaid(p) if p.credits == 1_000 && p.purpose == InvoicePurpose::Initial)
    );
    assert!(matches!(
        events[1],
        SubscriptionEvent::SubscriptionActivated(_)
    ));
    let mut all = given.clone();
    all.extend(events);
    let s = fold(&all);
    assert_eq!(
        s.account_target(),
        Some(("starter".into(), AccountStatus::Active))
    );
    assert!(s.paid_invoice(FIRST).is_some());
    assert!(events_of(&all, paid_first(at(3))).await.is_empty());
}

#[tokio::test]
async fn paying_an_unknown_invoice_or_a_missing_subscription_is_refused() {
    let given = events_of(&[], create(starter())).await;
    let other = Uuid::from_u128(99);
    assert_eq!(
        error_of(
            &given,
            SubscriptionCommand::InvoicePaid {
                invoice_id: other,
                now: at(2)
            }
        )
        .await,
        SubscriptionError::UnknownInvoice(other)
    );
    assert_eq!(
        error_of(&[], paid_first(at(2))).await,
        SubscriptionError::NotFound
    );
}

#[test]
fn half_a_thirty_day_period_from_starter_to_professional_costs_35_dollars_and_2000_credits() {
    let start = at(1);
    let end = start + Duration::days(30);
    let p = prorate(
        &starter(),
        &professional(),
        start,
        end,
        start + Duration::days(15),
    )
    .unwrap();
    assert_eq!(p.amount.to_string(), "35.00");
    assert_eq!(p.credits, 2_000);
}

#[test]
fn proration_rounds_money_half_away_from_zero_and_floors_credits() {
    let start = at(1);
    let end = start + Duration::seconds(3);
    // 70 × 1/3 = 23.333… → 23.33; 4000 × 1/3 = 1333.3… → 1333.
    let p = prorate(
        &starter(),
        &professional(),
        start,
        end,
        start + Duration::seconds(2),
    )
    .unwrap();
    assert_eq!((p.amount.to_string(), p.credits), ("23.33".into(), 1_333));
    // 0.01 × 1/2 = 0.005 → 0.01.
    let a = terms("a", dec!(1.00), 1);
    let b = terms("b", dec!(1.01), 2);
    let p = prorate(
        &a,
        &b,
        start,
        start + Duration::seconds(2),
        start + Duration::seconds(1),
    )
    .unwrap();
    assert_eq!((p.amount.to_string(), p.credits), ("0.01".into(), 0));
}

fn change(to: PlanTerms, now: DateTime<Utc>) -> SubscriptionCommand {
    SubscriptionCommand::ChangePlan {
        to,
        proration_invoice_id: PRORATION,
        invoice_due_at: now + Duration::days(14),
        gateway_proration: None,
        now,
    }
}

#[tokio::test]
async fn an_upgrade_changes_the_plan_now_with_a_prorated_invoice_whose_payment_grants_the_credits()
{
    let given = active_starter().await;
    // 1 Nov – 1 Dec is 30 days; on 16 Nov half is left.
    let events = events_of(&given, change(professional(), at(16))).await;
    let SubscriptionEvent::SubscriptionPlanChanged(c) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (c.prorated_amount.to_string(), c.prorated_credits),
        ("35.00".into(), 2_000)
    );
    let invoice = c.proration_invoice.as_ref().unwrap();
    assert_eq!((invoice.invoice_id, invoice.credits), (PRORATION, 2_000));
    let mut all = given.clone();
    all.extend(events);
    assert_eq!(fold(&all).plan().unwrap().slug, "professional");
    let paid = events_of(
        &all,
        SubscriptionCommand::InvoicePaid {
            invoice_id: PRORATION,
            now: at(17),
        },
    )
    .await;
    assert_eq!(paid.len(), 1, "no status change: {paid:?}");
    assert!(
        matches!(&paid[0], SubscriptionEvent::SubscriptionInvoicePaid(p) if p.credits == 2_000 && p.purpose == InvoicePurpose::Proration)
    );
}

#[tokio::test]
async fn an_upgrade_takes_the_gateways_proration_in_its_currency_and_ours_otherwise() {
    let given = active_starter().await;
    let with = |m: events::Money| match change(professional(), at(16)) {
        SubscriptionCommand::ChangePlan {
            to,
            proration_invoice_id,
            invoice_due_at,
            now,
            ..
        } => SubscriptionCommand::ChangePlan {
            to,
            proration_invoice_id,
            invoice_due_at,
            gateway_proration: Some(m),
            now,
        },
        _ => unreachable!(),
    };
    let amount_of = |events: Vec<SubscriptionEvent>| match &events[0] {
        SubscriptionEvent::SubscriptionPlanChanged(c) => (
            c.prorated_amount.to_string(),
            c.prorated_credits,
            c.proration_invoice
                .as_ref()
                .map(|i| i.amount.amount.to_string()),
        ),
        e => panic!("{e:?}"),
    };
    // Stripe's 34.99 instead of our 35.00; the credits stay ours.
    let theirs = events_of(&given, with(events::Money::usd(dec!(34.99)))).await;
    assert_eq!(
        amount_of(theirs),
        ("34.99".into(), 2_000, Some("34.99".into()))
    );
    // Another currency than the plan's: ours.
    let eur = events::Money::new(dec!(1), events::Currency::parse("EUR").unwrap());
    let ours = events_of(&given, with(eur)).await;
    assert_eq!(
        amount_of(ours),
        ("35.00".into(), 2_000, Some("35.00".into()))
    );
}

#[tokio::test]
async fn a_lower_plan_is_a_downgrade_scheduled_at_the_period_end() {
    let mut given = events_of(&[], create(professional())).await;
    given.extend(events_of(&given, paid_first(at(2))).await);
    let events = events_of(&given, change(starter(), at(10))).await;
    assert!(
        matches!(&events[0], SubscriptionEvent::SubscriptionDowngradeScheduled(d) if d.effective_at == Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap())
    );
    given.extend(events);
    assert_eq!(
        error_of(&given, change(starter(), at(11))).await,
        SubscriptionError::AlreadyScheduled("starter".into())
    );
    let s = fold(&given);
    assert_eq!(
        s.next_step(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()),
        Some(Step::Renew {
            plan: "starter".into()
        })
    );
}

#[tokio::test]
async fn a_plan_change_is_told_apart_before_it_runs_with_the_same_refusals() {
    let given = active_starter().await;
    let s = fold(&given);
    assert_eq!(s.plan_change_is_upgrade(&professional(), at(10)), Ok(true));
    assert_eq!(s.plan_change_is_upgrade(&free(), at(10)), Ok(false));
    assert_eq!(
        s.plan_change_is_upgrade(&starter(), at(10)),
        Err(SubscriptionError::SamePlan("starter".into()))
    );
    assert_eq!(
        s.plan_change_is_upgrade(&professional(), at(30) + Duration::days(2)),
        Err(SubscriptionError::PeriodEnded)
    );
    let mut scheduled = given.clone();
    scheduled.extend(events_of(&given, change(free(), at(10))).await);
    assert_eq!(
        fold(&scheduled).plan_change_is_upgrade(&free(), at(11)),
        Err(SubscriptionError::AlreadyScheduled("free".into()))
    );
}

#[tokio::test]
async fn changing_to_the_same_plan_another_currency_an_incomplete_or_an_ended_period_is_refused() {
    let given = active_starter().await;
    assert_eq!(
        error_of(&given, change(starter(), at(10))).await,
        SubscriptionError::SamePlan("starter".into())
    );
    let mut eur = professional();
    eur.price = Money::new(dec!(99), events::Currency::parse("EUR").unwrap());
    assert!(matches!(
        error_of(&given, change(eur, at(10))).await,
        SubscriptionError::IncompatiblePlan(_)
    ));
    assert_eq!(
        error_of(&given, change(professional(), at(30) + Duration::days(2))).await,
        SubscriptionError::PeriodEnded
    );
    let incomplete = events_of(&[], create(starter())).await;
    assert!(matches!(
        error_of(&incomplete, change(professional(), at(10))).await,
        SubscriptionError::IllegalTransition {
            status: "incomplete",
            ..
        }
    ));
}

fn cancel(at_period_end: bool, now: DateTime<Utc>) -> SubscriptionCommand {
    SubscriptionCommand::Cancel {
        at_period_end,
        reason: CancelReason::Customer,
        now,
    }
}

#[tokio::test]
async fn cancel_at_period_end_is_scheduled_once_and_then_due_at_the_period_end() {
    let mut given = active_starter().await;
    let events = events_of(&given, cancel(true, at(10))).await;
    assert!(matches!(
        events[0],
        SubscriptionEvent::SubscriptionCancelScheduled(_)
    ));
    given.extend(events);
    assert!(events_of(&given, cancel(true, at(11))).await.is_empty());
    let s = fold(&given);
    assert!(s.cancel_at_period_end());
    assert_eq!(s.next_step(at(30)), None);
    assert_eq!(
        s.next_step(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()),
        Some(Step::CancelAtPeriodEnd)
    );
}

#[tokio::test]
async fn cancel_now_ends_it_lists_its_open_invoices_and_cannot_be_repeated() {
    let mut given = events_of(&[], create(starter())).await;
    // An incomplete subscription has no paid period: it ends now.
    let events = events_of(&given, cancel(true, at(3))).await;
    assert!(
        matches!(&events[0], SubscriptionEvent::SubscriptionCanceled(c) if c.open_invoices == vec![FIRST])
    );
    given.extend(events);
    let s = fold(&given);
    assert_eq!(s.status(), Some(SubscriptionStatus::Canceled));
    assert_eq!(
        s.account_target(),
        None,
        "never started: the account is left alone"
    );
    assert!(matches!(
        error_of(&given, cancel(false, at(4))).await,
        SubscriptionError::IllegalTransition {
            status: "canceled",
            ..
        }
    ));
    let mut active = active_starter().await;
    active.extend(events_of(&active, cancel(false, at(5))).await);
    assert_eq!(
        fold(&active).account_target(),
        Some(("free".into(), AccountStatus::Active))
    );
}

fn renew(plan: PlanTerms, now: DateTime<Utc>) -> SubscriptionCommand {
    SubscriptionCommand::Renew {
        plan,
        invoice_id: RENEWAL,
        invoice_due_at: now + Duration::days(14),
        now,
    }
}

fn dec1() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
}

#[tokio::test]
async fn renewal_starts_the_next_period_at_the_old_end_with_a_renewal_invoice() {
    let mut given = active_starter().await;
    assert_eq!(
        error_of(&given, renew(starter(), at(20))).await,
        SubscriptionError::NotDue(dec1())
    );
    let s = fold(&given);
    assert_eq!(
        s.next_step(dec1()),
        Some(Step::Renew {
            plan: "starter".into()
        })
    );
    let events = events_of(&given, renew(starter(), dec1() + Duration::hours(1))).await;
    let SubscriptionEvent::SubscriptionRenewed(r) = &events[0] else {
        panic!("{events:?}")
    };
    assert_eq!(
        (r.period_start, r.period_end),
        (dec1(), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap())
    );
    let invoice = r.invoice.as_ref().unwrap();
    assert_eq!(
        (invoice.purpose, invoice.credits, invoice.credits_expire_at),
        (InvoicePurpose::Renewal, 1_000, r.period_end)
    );
    given.extend(events);
    assert_eq!(
        fold(&given).next_step(dec1() + Duration::hours(1)),
        None,
        "the same instant again: nothing due"
    );
}

#[tokio::test]
async fn renewing_a_canceled_or_cancel_scheduled_subscription_is_refused() {
    let mut given = active_starter().await;
    given.extend(events_of(&given, cancel(true, at(10))).await);
    assert!(matches!(
        error_of(&given, renew(starter(), dec1())).await,
        SubscriptionError::IllegalTransition { .. }
    ));
}

#[tokio::test]
async fn an_overdue_renewal_makes_it_past_due_then_paying_recovers_and_the_grace_period_cancels() {
    let mut given = active_starter().await;
    given.extend(events_of(&given, renew(starter(), dec1())).await);
    let due = dec1() + Duration::days(14);
    assert_eq!(
        error_of(
            &given,
            SubscriptionCommand::MarkPastDue {
                invoice_id: RENEWAL,
                payment_failed: false,
                now: dec1()
            }
        )
        .await,
        SubscriptionError::InvoiceNotOverdue(RENEWAL)
    );
    assert_eq!(
        fold(&given).next_step(due),
        Some(Step::PastDue {
            invoice_id: RENEWAL
        })
    );
    let events = events_of(
        &given,
        SubscriptionCommand::MarkPastDue {
            invoice_id: RENEWAL,
            payment_failed: false,
            now: due,
        },
    )
    .await;
    assert!(matches!(
        events[0],
        SubscriptionEvent::SubscriptionPastDue(_)
    ));
    given.extend(events);
    let s = fold(&given);
    assert_eq!(
        s.account_target(),
        Some(("starter".into(), AccountStatus::PastDue))
    );
    assert!(events_of(
        &given,
        SubscriptionCommand::MarkPastDue {
            invoice_id: RENEWAL,
            payment_failed: false,
            now: due
        }
    )
    .await
    .is_empty());
    assert_eq!(
        s.next_step(due + Duration::days(PAST_DUE_GRACE_DAYS) - Duration::seconds(1)),
        None
    );
    assert_eq!(
        s.next_step(due + Duration::days(PAST_DUE_GRACE_DAYS)),
        Some(Step::CancelUnpaid)
    );

    let recovered = events_of(
        &given,
        SubscriptionCommand::InvoicePaid {
            invoice_id: RENEWAL,
            now: due + Duration::days(1),
        },
    )
    .await;
    assert!(matches!(
        recovered[1],
        SubscriptionEvent::SubscriptionRecovered(_)
    ));
    let mut back = given.clone();
    back.extend(recovered);
    assert_eq!(
        fold(&back).account_target(),
        Some(("starter".into(), AccountStatus::Active))
    );

    let canceled = events_of(
        &given,
        SubscriptionCommand::Cancel {
            at_period_end: true,
            reason: CancelReason::Unpaid,
            now: due + Duration::days(14),
        },
    )
    .await;
    assert!(
        matches!(&canceled[0], SubscriptionEvent::SubscriptionCanceled(c) if c.reason == CancelReason::Unpaid && c.open_invoices == vec![RENEWAL])
    );
}

#[tokio::test]
async fn an_overdue_proration_makes_it_past_due_and_paying_it_recovers_while_an_unknown_invoice_is_refused(
) {
    let mut given = active_starter().await;
    given.extend(events_of(&given, change(professional(), at(16))).await);
    let unknown = Uuid::from_u128(77);
    assert_eq!(
        error_of(
            &given,
            SubscriptionCommand::MarkPastDue {
                invoice_id: unknown,
                payment_failed: false,
                now: at(30)
            }
        )
        .await,
        SubscriptionError::UnknownInvoice(unknown)
    );
    let due = at(16) + Duration::days(14);
    assert_eq!(
        fold(&given).next_step(due),
        Some(Step::PastDue {
            invoice_id: PRORATION
        })
    );
    given.extend(
        events_of(
            &given,
            SubscriptionCommand::MarkPastDue {
                invoice_id: PRORATION,
                payment_failed: false,
                now: due,
            },
        )
        .await,
    );
    let paid = events_of(
        &given,
        SubscriptionCommand::InvoicePaid {
            invoice_id: PRORATION,
            now: due,
        },
    )
    .await;
    assert!(
        matches!(paid[1], SubscriptionEvent::SubscriptionRecovered(_)),
        "{paid:?}"
    );
}

#[tokio::test]
async fn an_unpaid_first_invoice_makes_an_incomplete_subscription_past_due_and_paying_activates_it()
{
    let mut given = events_of(&[], create(starter())).await;
    let due = at(15);
    assert_eq!(
        fold(&given).next_step(due),
        Some(Step::PastDue { invoice_id: FIRST })
    );
    given.extend(
        events_of(
            &given,
            SubscriptionCommand::MarkPastDue {
                invoice_id: FIRST,
                payment_failed: false,
                now: due,
            },
        )
        .await,
    );
    assert_eq!(
        fold(&given).account_target(),
        None,
        "never active: the account keeps its status"
    );
    let events = events_of(&given, paid_first(at(16))).await;
    assert!(matches!(
        events[1],
        SubscriptionEvent::SubscriptionActivated(_)
    ));
}

#[tokio::test]
async fn a_free_renewal_has_no_invoice() {
    let given = events_of(&[], create(free())).await;
    let events = events_of(&given, renew(free(), dec1())).await;
    assert!(matches!(&events[0], SubscriptionEvent::SubscriptionRenewed(r) if r.invoice.is_none()));
}

#[tokio::test]
async fn open_invoices_are_bounded() {
    let mut given = active_starter().await;
    let plans = [
        professional(),
        terms("p2", dec!(199), 6_000),
        terms("p3", dec!(299), 7_000),
        terms("p4", dec!(399), 8_000),
    ];
    for (i, p) in plans.iter().enumerate() {
        let cmd = SubscriptionCommand::ChangePlan {
            to: p.clone(),
            proration_invoice_id: Uuid::from_u128(100 + i as u128),
            invoice_due_at: at(20),
            gateway_proration: None,
            now: at(5),
        };
        given.extend(events_of(&given, cmd).await);
    }
    assert_eq!(fold(&given).open_invoices().len(), OPEN_INVOICES_MAX);
    assert_eq!(
        error_of(&given, change(terms("p5", dec!(499), 9_000), at(6))).await,
        SubscriptionError::TooManyOpenInvoices
    );
}

#[tokio::test]
async fn a_failed_payment_makes_it_past_due_before_the_due_date() {
    let mut given = active_starter().await;
    given.extend(events_of(&given, renew(starter(), dec1())).await);
    let events = events_of(
        &given,
        SubscriptionCommand::MarkPastDue {
            invoice_id: RENEWAL,
            payment_failed: true,
            now: dec1(),
        },
    )
    .await;
    assert!(matches!(
        events[0],
        SubscriptionEvent::SubscriptionPastDue(_)
    ));
}

#[tokio::test]
async fn invoices_carry_their_line_and_price() {
    let events = events_of(&[], create(professional())).await;
    let SubscriptionEvent::SubscriptionCreated(c) = &events[0] else {
        panic!("{events:?}")
    };
    let first = c.first_invoice.as_ref().unwrap();
    assert_eq!(
        first.description,
        "professional plan, 2026-11-01 – 2026-12-01"
    );
    assert_eq!(first.amount, Money::usd(dec!(99)));
}

#[tokio::test]
async fn every_command_but_create_on_a_missing_subscription_is_not_found() {
    for cmd in [
        paid_first(at(2)),
        change(professional(), at(2)),
        cancel(false, at(2)),
        renew(starter(), at(2)),
        SubscriptionCommand::MarkPastDue {
            invoice_id: FIRST,
            payment_failed: false,
            now: at(2),
        },
    ] {
        let e = error_of(&[], cmd.clone()).await;
        assert!(
            matches!(
                e,
                SubscriptionError::NotFound | SubscriptionError::UnknownInvoice(_)
            ),
            "{cmd:?}: {e:?}"
        );
    }
}

#[tokio::test]
async fn a_period_past_the_calendar_end_or_an_overflowing_proration_is_refused() {
    let mut late = CreateSubscription {
        subscription_id: Uuid::from_u128(1),
        account_id: AccountId::from_uuid(Uuid::from_u128(2)),
        plan: starter(),
        method: events::PaymentMethod::BankTransfer,
        first_invoice_id: FIRST,
        first_invoice_due_at: DateTime::<Utc>::MAX_UTC,
        stripe_customer_id: None,
        stripe_subscription_id: None,
        now: DateTime::<Utc>::MAX_UTC - Duration::days(3),
    };
    assert_eq!(
        error_of(&[], SubscriptionCommand::Create(Box::new(late.clone()))).await,
        SubscriptionError::PeriodOverflow
    );
    late.now = at(1);
    let mut given = events_of(&[], SubscriptionCommand::Create(Box::new(late))).await;
    given.extend(events_of(&given, paid_first(at(2))).await);
    let huge = terms("huge", Decimal::MAX, 1_000);
    assert_eq!(
        error_of(&given, change(huge, at(3))).await,
        SubscriptionError::Overflow
    );
}

#[tokio::test]
async fn a_scheduled_cancel_is_taken_back_once_and_a_canceled_one_cannot_be() {
    let mut given = active_starter().await;
    let reactivate = |now| SubscriptionCommand::Reactivate { now };
    assert!(
        events_of(&given, reactivate(at(9))).await.is_empty(),
        "nothing scheduled, nothing to take back"
    );
    given.extend(events_of(&given, cancel(true, at(10))).await);
    let events = events_of(&given, reactivate(at(11))).await;
    assert!(matches!(
        events[..],
        [SubscriptionEvent::SubscriptionReactivated(_)]
    ));
    given.extend(events);
    let s = fold(&given);
    assert!(!s.cancel_at_period_end());
    assert_ne!(
        s.next_step(Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()),
        Some(Step::CancelAtPeriodEnd),
        "the period end renews it"
    );
    assert!(events_of(&given, reactivate(at(12))).await.is_empty());
    given.extend(events_of(&given, cancel(false, at(13))).await);
    assert_eq!(
        error_of(&given, reactivate(at(14))).await,
        SubscriptionError::IllegalTransition {
            status: "canceled",
            action: "reactivated",
        }
    );
}
