//! Given/when/then tests of manual payments: submission checks and the
//! maker-checker rule on approval and rejection.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::{AggregateResultValidator, TestFramework};
use events::{AccountId, Money, PaymentApproved, PaymentEvent, PaymentMethod, PaymentRejected};
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, 9, 0, 0).unwrap()
}

fn usd(cents: i64) -> Money {
    Money::usd(Decimal::new(cents, 2))
}

fn submit(method: PaymentMethod, amount: Money) -> PaymentCommand {
    PaymentCommand::SubmitManual(Box::new(SubmitManualPayment {
        payment_id: Uuid::from_u128(5),
        invoice_id: Uuid::from_u128(7),
        account_id: AccountId::from_uuid(Uuid::from_u128(1)),
        amount,
        invoice_total: usd(2_900),
        method,
        reference: Some("WIRE-1".into()),
        submitted_by: "owner-1".into(),
        instructions: None,
        now: at(1),
    }))
}

async fn when(given: Vec<PaymentEvent>, cmd: PaymentCommand) -> AggregateResultValidator<Payment> {
    TestFramework::<Payment>::with(())
        .given(given)
        .when_async(cmd)
        .await
}

async fn submitted() -> Vec<PaymentEvent> {
    when(vec![], submit(PaymentMethod::BankTransfer, usd(2_900)))
        .await
        .inspect_result()
        .unwrap()
}

#[tokio::test]
async fn a_manual_payment_is_submitted_pending_with_its_submitter() {
    let events = submitted().await;
    match &events[0] {
        PaymentEvent::PaymentSubmitted(e) => {
            assert_eq!(e.submitted_by, "owner-1");
            assert_eq!(e.amount, usd(2_900));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn submission_refuses_gateway_methods_and_wrong_amounts() {
    when(vec![], submit(PaymentMethod::Stripe, usd(2_900)))
        .await
        .then_expect_error(PaymentError::NotManual { method: "stripe" });
    when(vec![], submit(PaymentMethod::BankTransfer, usd(0)))
        .await
        .then_expect_error(PaymentError::NonPositiveAmount);
    when(vec![], submit(PaymentMethod::LocalWallet, usd(2_800)))
        .await
        .then_expect_error(PaymentError::AmountMismatch {
            amount: Decimal::new(2_800, 2),
            currency: "USD".into(),
            total: Decimal::new(2_900, 2),
            total_currency: "USD".into(),
        });
}

#[tokio::test]
async fn another_developer_approves_and_the_submitter_may_not() {
    let given = submitted().await;
    when(
        given.clone(),
        PaymentCommand::Approve {
            by: "owner-1".into(),
            now: at(2),
        },
    )
    .await
    .then_expect_error(PaymentError::SameApprover);
    when(
        given,
        PaymentCommand::Approve {
            by: "dev-2".into(),
            now: at(2),
        },
    )
    .await
    .then_expect_events(vec![PaymentEvent::PaymentApproved(PaymentApproved {
        approved_by: "dev-2".into(),
        approved_at: at(2),
    })]);
}

#[tokio::test]
async fn a_decided_payment_cannot_be_approved_or_rejected_again() {
    let mut given = submitted().await;
    given.push(PaymentEvent::PaymentApproved(PaymentApproved {
        approved_by: "dev-2".into(),
        approved_at: at(2),
    }));
    when(
        given.clone(),
        PaymentCommand::Approve {
            by: "dev-3".into(),
            now: at(3),
        },
    )
    .await
    .then_expect_error(PaymentError::NotPending {
        status: "succeeded",
    });
    when(
        given,
        PaymentCommand::Reject {
            by: "dev-3".into(),
            reason: "x".into(),
            now: at(3),
        },
    )
    .await
    .then_expect_error(PaymentError::NotPending {
        status: "succeeded",
    });
}

#[tokio::test]
async fn a_rejected_payment_is_failed() {
    let mut given = submitted().await;
    let rejected = PaymentEvent::PaymentRejected(PaymentRejected {
        rejected_by: "dev-2".into(),
        reason: "no transfer found".into(),
        rejected_at: at(2),
    });
    when(
        given.clone(),
        PaymentCommand::Reject {
            by: "dev-2".into(),
            reason: "no transfer found".into(),
            now: at(2),
        },
    )
    .await
    .then_expect_events(vec![rejected.clone()]);
    given.push(rejected);
    when(
        given,
        PaymentCommand::Approve {
            by: "dev-3".into(),
            now: at(3),
        },
    )
    .await
    .then_expect_error(PaymentError::NotPending { status: "failed" });
}

#[tokio::test]
async fn approving_an_unknown_payment_is_not_found() {
    when(
        vec![],
        PaymentCommand::Approve {
            by: "dev".into(),
            now: at(1),
        },
    )
    .await
    .then_expect_error(PaymentError::NotFound);
}
