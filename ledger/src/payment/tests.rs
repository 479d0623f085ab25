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
            notes: None,
            by: "owner-1".into(),
            now: at(2),
        },
    )
    .await
    .then_expect_error(PaymentError::SameApprover);
    when(
        given,
        PaymentCommand::Approve {
            notes: None,
            by: "dev-2".into(),
            now: at(2),
        },
    )
    .await
    .then_expect_events(vec![PaymentEvent::PaymentApproved(PaymentApproved {
        notes: None,
        approved_by: "dev-2".into(),
        approved_at: at(2),
    })]);
}

#[tokio::test]
async fn a_decided_payment_cannot_be_approved_or_rejected_again() {
    let mut given = submitted().await;
    given.push(PaymentEvent::PaymentApproved(PaymentApproved {
        notes: None,
        approved_by: "dev-2".into(),
        approved_at: at(2),
    }));
    when(
        given.clone(),
        PaymentCommand::Approve {
            notes: None,
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
            notes: None,
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
            notes: None,
            by: "dev".into(),
            now: at(1),
        },
    )
    .await
    .then_expect_error(PaymentError::NotFound);
}

// ---------------------------------------------------------------------------
// Gateway payments (Stripe) and refunds
// ---------------------------------------------------------------------------

use cqrs_es::Aggregate;
use events::{PaymentFailed, PaymentInitiated, PaymentRefunded, PaymentStatus, PaymentSucceeded};

fn initiate(method: PaymentMethod, amount: Money, gateway_ref: &str) -> PaymentCommand {
    PaymentCommand::Initiate(Box::new(InitiatePayment {
        payment_id: Uuid::from_u128(6),
        invoice_id: Uuid::from_u128(7),
        account_id: AccountId::from_uuid(Uuid::from_u128(1)),
        amount,
        invoice_total: usd(2_900),
        method,
        gateway: "stripe".into(),
        gateway_ref: gateway_ref.into(),
        submitted_by: "owner-1".into(),
        now: at(1),
    }))
}

fn initiated_event() -> PaymentEvent {
    PaymentEvent::PaymentInitiated(PaymentInitiated {
        payment_id: Uuid::from_u128(6),
        invoice_id: Uuid::from_u128(7),
        account_id: AccountId::from_uuid(Uuid::from_u128(1)),
        amount: usd(2_900),
        method: PaymentMethod::Stripe,
        gateway: "stripe".into(),
        gateway_ref: "pi_1".into(),
        submitted_by: "owner-1".into(),
        initiated_at: at(1),
    })
}

fn succeeded_event() -> PaymentEvent {
    PaymentEvent::PaymentSucceeded(PaymentSucceeded {
        gateway_ref: Some("ch_1".into()),
        succeeded_at: at(2),
    })
}

fn refund(n: u128, cents: i64, gateway_ref: Option<&str>) -> PaymentCommand {
    PaymentCommand::Refund(Box::new(RefundPayment {
        refund_id: Uuid::from_u128(n),
        amount: Decimal::new(cents, 2),
        revoke_credits: true,
        revoked_credits: 10,
        reason: Some("asked".into()),
        by: "dev-2".into(),
        gateway_refund_ref: gateway_ref.map(str::to_owned),
        now: at(3),
    }))
}

fn refunded_event(
    n: u128,
    cents: i64,
    total_cents: i64,
    gateway_ref: Option<&str>,
) -> PaymentEvent {
    PaymentEvent::PaymentRefunded(PaymentRefunded {
        refund_id: Uuid::from_u128(n),
        amount: Decimal::new(cents, 2),
        refunded_total: Decimal::new(total_cents, 2),
        fully_refunded: total_cents >= 2_900,
        revoke_credits: true,
        revoked_credits: 10,
        reason: Some("asked".into()),
        by: "dev-2".into(),
        gateway_refund_ref: gateway_ref.map(str::to_owned),
        refunded_at: at(3),
    })
}

#[tokio::test]
async fn a_gateway_payment_is_initiated_processing_with_its_reference() {
    when(vec![], initiate(PaymentMethod::Stripe, usd(2_900), "pi_1"))
        .await
        .then_expect_events(vec![initiated_event()]);
    let mut payment = Payment::default();
    payment.apply(initiated_event());
    assert_eq!(payment.status(), Some(PaymentStatus::Processing));
    assert_eq!(payment.gateway_ref(), Some("pi_1"));
    assert_eq!(payment.invoice_id(), Some(Uuid::from_u128(7)));
    assert_eq!(payment.refundable(), Decimal::ZERO);
}

#[tokio::test]
async fn initiation_refuses_manual_methods_wrong_amounts_a_missing_reference_and_twice() {
    when(
        vec![],
        initiate(PaymentMethod::BankTransfer, usd(2_900), "pi_1"),
    )
    .await
    .then_expect_error(PaymentError::NotGateway {
        method: "bank_transfer",
    });
    when(vec![], initiate(PaymentMethod::Stripe, usd(0), "pi_1"))
        .await
        .then_expect_error(PaymentError::NonPositiveAmount);
    when(vec![], initiate(PaymentMethod::Stripe, usd(2_901), "pi_1"))
        .await
        .then_expect_error(PaymentError::AmountMismatch {
            amount: Decimal::new(2_901, 2),
            currency: "USD".into(),
            total: Decimal::new(2_900, 2),
            total_currency: "USD".into(),
        });
    when(vec![], initiate(PaymentMethod::Stripe, usd(2_900), ""))
        .await
        .then_expect_error(PaymentError::InvalidGatewayRef);
    when(
        vec![initiated_event()],
        initiate(PaymentMethod::Stripe, usd(2_900), "pi_1"),
    )
    .await
    .then_expect_error(PaymentError::AlreadySubmitted);
}

#[tokio::test]
async fn the_gateway_marks_it_succeeded_once() {
    when(
        vec![initiated_event()],
        PaymentCommand::MarkSucceeded {
            gateway_ref: Some("ch_1".into()),
            now: at(2),
        },
    )
    .await
    .then_expect_events(vec![succeeded_event()]);
    when(
        vec![initiated_event(), succeeded_event()],
        PaymentCommand::MarkSucceeded {
            gateway_ref: Some("ch_1".into()),
            now: at(4),
        },
    )
    .await
    .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_failed_gateway_payment_records_its_reason_and_may_still_succeed() {
    let failed = PaymentEvent::PaymentFailed(PaymentFailed {
        reason: "card_declined".into(),
        failed_at: at(2),
    });
    when(
        vec![initiated_event()],
        PaymentCommand::MarkFailed {
            reason: "card_declined".into(),
            now: at(2),
        },
    )
    .await
    .then_expect_events(vec![failed.clone()]);
    when(
        vec![initiated_event(), failed.clone()],
        PaymentCommand::MarkFailed {
            reason: "again".into(),
            now: at(3),
        },
    )
    .await
    .then_expect_events(vec![]);
    when(
        vec![initiated_event(), failed],
        PaymentCommand::MarkSucceeded {
            gateway_ref: Some("ch_1".into()),
            now: at(2),
        },
    )
    .await
    .then_expect_events(vec![succeeded_event()]);
}

#[tokio::test]
async fn a_succeeded_payment_cannot_fail_and_manual_payments_take_no_gateway_word() {
    when(
        vec![initiated_event(), succeeded_event()],
        PaymentCommand::MarkFailed {
            reason: "late".into(),
            now: at(3),
        },
    )
    .await
    .then_expect_error(PaymentError::AlreadySucceeded);
    let manual = submitted().await;
    when(
        manual.clone(),
        PaymentCommand::MarkSucceeded {
            gateway_ref: None,
            now: at(2),
        },
    )
    .await
    .then_expect_error(PaymentError::NotGateway {
        method: "bank_transfer",
    });
    when(
        vec![],
        PaymentCommand::MarkSucceeded {
            gateway_ref: None,
            now: at(2),
        },
    )
    .await
    .then_expect_error(PaymentError::NotFound);
    when(
        vec![initiated_event()],
        PaymentCommand::Approve {
            notes: None,
            by: "dev-2".into(),
            now: at(2),
        },
    )
    .await
    .then_expect_error(PaymentError::NotManual { method: "stripe" });
}

#[tokio::test]
async fn refunds_add_up_to_the_paid_amount_and_then_the_payment_is_refunded() {
    let given = vec![initiated_event(), succeeded_event()];
    when(given.clone(), refund(20, 1_000, Some("re_1")))
        .await
        .then_expect_events(vec![refunded_event(20, 1_000, 1_000, Some("re_1"))]);
    let mut after_one = given.clone();
    after_one.push(refunded_event(20, 1_000, 1_000, Some("re_1")));
    when(after_one.clone(), refund(21, 1_900, Some("re_2")))
        .await
        .then_expect_events(vec![refunded_event(21, 1_900, 2_900, Some("re_2"))]);
    let mut payment = Payment::default();
    for e in after_one.iter().cloned() {
        payment.apply(e);
    }
    assert_eq!(payment.status(), Some(PaymentStatus::Succeeded));
    assert_eq!(payment.refundable(), Decimal::new(1_900, 2));
    payment.apply(refunded_event(21, 1_900, 2_900, Some("re_2")));
    assert_eq!(payment.status(), Some(PaymentStatus::Refunded));
    assert_eq!(payment.refunded(), Decimal::new(2_900, 2));
    assert_eq!(payment.revoked_credits(), 20);
}

#[tokio::test]
async fn a_refund_over_what_is_left_is_refused() {
    let mut given = vec![initiated_event(), succeeded_event()];
    when(given.clone(), refund(20, 2_901, None))
        .await
        .then_expect_error(PaymentError::RefundExceedsPaid {
            requested: Decimal::new(2_901, 2),
            refundable: Decimal::new(2_900, 2),
        });
    given.push(refunded_event(20, 2_000, 2_000, None));
    when(given.clone(), refund(21, 1_000, None))
        .await
        .then_expect_error(PaymentError::RefundExceedsPaid {
            requested: Decimal::new(1_000, 2),
            refundable: Decimal::new(900, 2),
        });
    given.push(refunded_event(22, 900, 2_900, None));
    when(given, refund(23, 1, None))
        .await
        .then_expect_error(PaymentError::NotRefundable { status: "refunded" });
}

#[tokio::test]
async fn a_refund_needs_a_succeeded_payment_a_positive_amount_and_the_currency_precision() {
    when(vec![initiated_event()], refund(20, 100, None))
        .await
        .then_expect_error(PaymentError::NotRefundable {
            status: "processing",
        });
    let given = vec![initiated_event(), succeeded_event()];
    when(given.clone(), refund(20, 0, None))
        .await
        .then_expect_error(PaymentError::NonPositiveAmount);
    when(
        given,
        PaymentCommand::Refund(Box::new(RefundPayment {
            refund_id: Uuid::from_u128(20),
            amount: Decimal::new(1_001, 3),
            revoke_credits: false,
            revoked_credits: 0,
            reason: None,
            by: "dev-2".into(),
            gateway_refund_ref: None,
            now: at(3),
        })),
    )
    .await
    .then_expect_error(PaymentError::AmountPrecision { digits: 2 });
    when(vec![], refund(20, 100, None))
        .await
        .then_expect_error(PaymentError::NotFound);
}

#[tokio::test]
async fn the_same_refund_or_gateway_refund_again_writes_nothing() {
    let given = vec![
        initiated_event(),
        succeeded_event(),
        refunded_event(20, 1_000, 1_000, Some("re_1")),
    ];
    when(given.clone(), refund(20, 1_000, Some("re_1")))
        .await
        .then_expect_events(vec![]);
    // The gateway's refund seen again under another id (its webhook).
    when(given, refund(99, 1_000, Some("re_1")))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_payment_takes_a_bounded_number_of_refunds() {
    let mut given = vec![initiated_event(), succeeded_event()];
    for n in 0..REFUNDS_PER_PAYMENT_MAX {
        let cents = i64::try_from(n).unwrap() + 1;
        given.push(refunded_event(1_000 + n as u128, 1, cents, None));
    }
    when(given, refund(5_000, 1, None))
        .await
        .then_expect_error(PaymentError::TooManyRefunds);
}

#[tokio::test]
async fn a_very_long_failure_reason_is_cut_at_a_character_boundary() {
    let events = when(
        vec![initiated_event()],
        PaymentCommand::MarkFailed {
            reason: "é".repeat(GATEWAY_TEXT_BYTES_MAX),
            now: at(2),
        },
    )
    .await
    .inspect_result()
    .unwrap();
    match &events[0] {
        PaymentEvent::PaymentFailed(e) => {
            assert!(e.reason.len() <= GATEWAY_TEXT_BYTES_MAX);
            assert!(e.reason.chars().all(|c| c == 'é'));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_manual_payment_approved_can_be_refunded_too() {
    let mut given = submitted().await;
    given.push(PaymentEvent::PaymentApproved(PaymentApproved {
        notes: None,
        approved_by: "dev-2".into(),
        approved_at: at(2),
    }));
    when(given, refund(20, 2_900, None))
        .await
        .then_expect_events(vec![refunded_event(20, 2_900, 2_900, None)]);
}

mod stripe_events {
    use super::super::*;
    use super::at;
    use cqrs_es::test::TestFramework;
    use events::{StripeEvent, StripeEventReceived};

    fn record(id: &str) -> StripeEventCommand {
        StripeEventCommand::Record {
            id: id.into(),
            event_type: "invoice.paid".into(),
            created: 1_700_000_000,
            handled: true,
            now: at(1),
        }
    }

    fn received() -> StripeEvent {
        StripeEvent::StripeEventReceived(StripeEventReceived {
            id: "evt_1".into(),
            event_type: "invoice.paid".into(),
            created: 1_700_000_000,
            handled: true,
            received_at: at(1),
        })
    }

    #[tokio::test]
    async fn a_stripe_event_is_recorded_once() {
        TestFramework::<StripeEventLog>::with(())
            .given_no_previous_events()
            .when_async(record("evt_1"))
            .await
            .then_expect_events(vec![received()]);
        TestFramework::<StripeEventLog>::with(())
            .given(vec![received()])
            .when_async(record("evt_1"))
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn an_empty_or_huge_stripe_event_id_is_refused() {
        TestFramework::<StripeEventLog>::with(())
            .given_no_previous_events()
            .when_async(record(""))
            .await
            .then_expect_error(StripeEventError::InvalidText);
        TestFramework::<StripeEventLog>::with(())
            .given_no_previous_events()
            .when_async(record(&"x".repeat(STRIPE_EVENT_TEXT_BYTES_MAX + 1)))
            .await
            .then_expect_error(StripeEventError::InvalidText);
        assert_eq!(stripe_event_stream("evt_1"), "stripe-evt_1");
    }
}

mod stripe_customers {
    use super::super::*;
    use super::at;
    use cqrs_es::test::TestFramework;
    use events::{AccountId, StripeCustomerEvent, StripeCustomerLinked};
    use uuid::Uuid;

    fn account() -> AccountId {
        AccountId::from_uuid(Uuid::from_u128(7))
    }

    fn link(customer: &str) -> StripeCustomerCommand {
        StripeCustomerCommand::Link {
            account_id: account(),
            customer_id: customer.into(),
            now: at(1),
        }
    }

    fn linked(customer: &str) -> StripeCustomerEvent {
        StripeCustomerEvent::StripeCustomerLinked(StripeCustomerLinked {
            account_id: account(),
            customer_id: customer.into(),
            linked_at: at(1),
        })
    }

    #[tokio::test]
    async fn a_customer_is_linked_once_and_the_first_link_stays() {
        TestFramework::<StripeCustomer>::with(())
            .given_no_previous_events()
            .when_async(link("cus_1"))
            .await
            .then_expect_events(vec![linked("cus_1")]);
        TestFramework::<StripeCustomer>::with(())
            .given(vec![linked("cus_1")])
            .when_async(link("cus_1"))
            .await
            .then_expect_events(vec![]);
        TestFramework::<StripeCustomer>::with(())
            .given(vec![linked("cus_1")])
            .when_async(link("cus_2"))
            .await
            .then_expect_events(vec![]);
        let mut state = StripeCustomer::default();
        cqrs_es::Aggregate::apply(&mut state, linked("cus_1"));
        assert_eq!(state.customer_id(), Some("cus_1"));
    }

    #[tokio::test]
    async fn an_empty_huge_or_spaced_customer_id_is_refused() {
        for bad in [
            String::new(),
            "c".repeat(STRIPE_CUSTOMER_ID_BYTES_MAX + 1),
            "cus 1".to_owned(),
        ] {
            TestFramework::<StripeCustomer>::with(())
                .given_no_previous_events()
                .when_async(link(&bad))
                .await
                .then_expect_error(StripeCustomerError::InvalidCustomerId);
        }
        assert_eq!(
            stripe_customer_stream(&account()),
            "stripe-customer-00000000-0000-0000-0000-000000000007"
        );
    }
}
