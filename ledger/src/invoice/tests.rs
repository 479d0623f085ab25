//! Given/when/then tests of the invoice: issuing (tax rounding, totals,
//! validation) and the status transitions.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::test::{AggregateResultValidator, TestFramework};
use cqrs_es::Aggregate;
use events::{AccountId, Currency, InvoiceEvent, InvoiceStatus, PaymentMethod};
use rust_decimal_macros::dec;
use uuid::Uuid;

use super::*;

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, 9, 0, 0).unwrap()
}

fn line(price: rust_decimal::Decimal, quantity: i64) -> LineInput {
    LineInput {
        description: "Pro credit package".into(),
        quantity,
        unit_price: price,
    }
}

fn issue(lines: Vec<LineInput>, tax_rate: rust_decimal::Decimal, currency: &str) -> IssueInvoice {
    IssueInvoice {
        invoice_id: Uuid::from_u128(7),
        number: "INV-2026-000001".into(),
        account_id: AccountId::from_uuid(Uuid::from_u128(1)),
        subscription_id: None,
        buyer_name: "Acme".into(),
        billing_email: None,
        billing_address: None,
        tax_id: None,
        lines,
        tax_rate,
        currency: Currency::parse(currency).unwrap(),
        draft: false,
        purchase: None,
        notes: None,
        now: at(1),
        due_at: at(1) + Duration::days(14),
    }
}

async fn when(given: Vec<InvoiceEvent>, cmd: InvoiceCommand) -> AggregateResultValidator<Invoice> {
    TestFramework::<Invoice>::with(())
        .given(given)
        .when_async(cmd)
        .await
}

async fn issued_events(cmd: IssueInvoice) -> Vec<InvoiceEvent> {
    when(vec![], InvoiceCommand::Issue(Box::new(cmd)))
        .await
        .inspect_result()
        .unwrap()
}

fn issued_of(events: &[InvoiceEvent]) -> &events::InvoiceIssued {
    match &events[0] {
        InvoiceEvent::InvoiceIssued(e) => e,
        other => panic!("not an issue: {other:?}"),
    }
}

fn paid(payment: u128) -> InvoiceCommand {
    InvoiceCommand::MarkPaid {
        payment_id: Some(Uuid::from_u128(payment)),
        method: PaymentMethod::BankTransfer,
        now: at(2),
    }
}

fn void() -> InvoiceCommand {
    InvoiceCommand::Void {
        reason: None,
        actor: "dev".into(),
        now: at(2),
    }
}

fn uncollectible() -> InvoiceCommand {
    InvoiceCommand::MarkUncollectible {
        reason: None,
        actor: "dev".into(),
        now: at(2),
    }
}

#[tokio::test]
async fn issuing_computes_line_amounts_subtotal_tax_and_total() {
    let events = issued_events(issue(
        vec![line(dec!(9.99), 3), line(dec!(29), 1)],
        dec!(19),
        "USD",
    ))
    .await;
    let e = issued_of(&events);
    assert_eq!(e.lines[0].amount, dec!(29.97));
    assert_eq!(e.lines[1].amount.to_string(), "29.00");
    assert_eq!(e.subtotal, dec!(58.97));
    // 58.97 × 19 % = 11.2043 → 11.20
    assert_eq!(e.tax, dec!(11.20));
    assert_eq!(e.total, dec!(70.17));
    assert_eq!(e.status, InvoiceStatus::Pending);
}

#[tokio::test]
async fn tax_rounds_half_away_from_zero_to_the_minor_unit() {
    // 0.10 × 5 % = 0.005 → 0.01 (banker's rounding would give 0.00).
    let e = issued_events(issue(vec![line(dec!(0.10), 1)], dec!(5), "USD")).await;
    assert_eq!(issued_of(&e).tax.to_string(), "0.01");
    // 0.30 × 5 % = 0.015 → 0.02 (banker's rounding would also give 0.02),
    // 0.50 × 5 % = 0.025 → 0.03 (banker's: 0.02).
    let e = issued_events(issue(vec![line(dec!(0.50), 1)], dec!(5), "EUR")).await;
    assert_eq!(issued_of(&e).tax.to_string(), "0.03");
    // JPY has no minor unit: 150 × 5 % = 7.5 → 8.
    let e = issued_events(issue(vec![line(dec!(150), 1)], dec!(5), "JPY")).await;
    assert_eq!(issued_of(&e).tax.to_string(), "8");
    assert_eq!(issued_of(&e).total.to_string(), "158");
}

#[tokio::test]
async fn a_draft_is_issued_as_draft_and_cannot_be_paid() {
    let mut cmd = issue(vec![line(dec!(1), 1)], dec!(0), "USD");
    cmd.draft = true;
    let events = issued_events(cmd).await;
    assert_eq!(issued_of(&events).status, InvoiceStatus::Draft);
    when(events, paid(1))
        .await
        .then_expect_error(InvoiceError::IllegalTransition {
            status: "draft",
            action: "paid",
        });
}

#[tokio::test]
async fn issuing_refuses_bad_numbers_lines_quantities_prices_and_rates() {
    let mut bad = issue(vec![line(dec!(1), 1)], dec!(0), "USD");
    bad.number = "INV-26-1".into();
    when(vec![], InvoiceCommand::Issue(Box::new(bad)))
        .await
        .then_expect_error(InvoiceError::InvalidNumber("INV-26-1".into()));
    when(
        vec![],
        InvoiceCommand::Issue(Box::new(issue(vec![], dec!(0), "USD"))),
    )
    .await
    .then_expect_error(InvoiceError::InvalidLineCount);
    when(
        vec![],
        InvoiceCommand::Issue(Box::new(issue(vec![line(dec!(1), 0)], dec!(0), "USD"))),
    )
    .await
    .then_expect_error(InvoiceError::InvalidQuantity { line: 0 });
    when(
        vec![],
        InvoiceCommand::Issue(Box::new(issue(vec![line(dec!(-1), 1)], dec!(0), "USD"))),
    )
    .await
    .then_expect_error(InvoiceError::NegativePrice { line: 0 });
    when(
        vec![],
        InvoiceCommand::Issue(Box::new(issue(vec![line(dec!(1), 1)], dec!(101), "USD"))),
    )
    .await
    .then_expect_error(InvoiceError::InvalidTaxRate);
}

#[tokio::test]
async fn an_invoice_is_issued_once() {
    let events = issued_events(issue(vec![line(dec!(1), 1)], dec!(0), "USD")).await;
    when(
        events,
        InvoiceCommand::Issue(Box::new(issue(vec![line(dec!(1), 1)], dec!(0), "USD"))),
    )
    .await
    .then_expect_error(InvoiceError::AlreadyIssued);
}

#[tokio::test]
async fn a_pending_invoice_is_paid_once_and_the_same_payment_again_is_a_no_op() {
    let mut events = issued_events(issue(vec![line(dec!(1), 1)], dec!(0), "USD")).await;
    let paid_events = when(events.clone(), paid(5))
        .await
        .inspect_result()
        .unwrap();
    assert!(matches!(paid_events[0], InvoiceEvent::InvoicePaid(_)));
    events.extend(paid_events);
    when(events.clone(), paid(5))
        .await
        .then_expect_events(vec![]);
    when(events.clone(), paid(6))
        .await
        .then_expect_error(InvoiceError::PaidByAnotherPayment);
    when(events.clone(), void())
        .await
        .then_expect_error(InvoiceError::IllegalTransition {
            status: "paid",
            action: "voided",
        });
    when(events, uncollectible())
        .await
        .then_expect_error(InvoiceError::IllegalTransition {
            status: "paid",
            action: "marked uncollectible",
        });
}

#[tokio::test]
async fn a_void_invoice_cannot_be_paid_or_voided_again() {
    let mut events = issued_events(issue(vec![line(dec!(1), 1)], dec!(0), "USD")).await;
    events.extend(when(events.clone(), void()).await.inspect_result().unwrap());
    when(events.clone(), paid(1))
        .await
        .then_expect_error(InvoiceError::IllegalTransition {
            status: "void",
            action: "paid",
        });
    when(events, void())
        .await
        .then_expect_error(InvoiceError::IllegalTransition {
            status: "void",
            action: "voided",
        });
}

#[tokio::test]
async fn only_a_pending_invoice_becomes_uncollectible_and_then_cannot_be_paid() {
    let mut events = issued_events(issue(vec![line(dec!(1), 1)], dec!(0), "USD")).await;
    events.extend(
        when(events.clone(), uncollectible())
            .await
            .inspect_result()
            .unwrap(),
    );
    when(events, paid(1))
        .await
        .then_expect_error(InvoiceError::IllegalTransition {
            status: "uncollectible",
            action: "paid",
        });
}

#[tokio::test]
async fn commands_on_an_invoice_never_issued_are_not_found() {
    when(vec![], paid(1))
        .await
        .then_expect_error(InvoiceError::NotFound);
    when(vec![], void())
        .await
        .then_expect_error(InvoiceError::NotFound);
}

#[test]
fn invoice_numbers_have_the_documented_shape() {
    assert!(is_invoice_number("INV-2026-000123"));
    assert!(!is_invoice_number("INV-2026-00123"));
    assert!(!is_invoice_number("INV-2026X000123"));
    assert!(!is_invoice_number("inv-2026-000123"));
}

fn finalize(due_day: u32) -> InvoiceCommand {
    InvoiceCommand::Finalize {
        actor: "dev-1".into(),
        due_at: at(due_day),
        now: at(3),
    }
}

#[tokio::test]
async fn a_draft_is_finalized_once_into_a_pending_invoice_that_can_be_paid() {
    let mut cmd = issue(vec![line(dec!(10.00), 2)], dec!(0), "USD");
    cmd.draft = true;
    let mut given = issued_events(cmd).await;
    let events = when(given.clone(), finalize(17))
        .await
        .inspect_result()
        .unwrap();
    assert_eq!(
        events,
        vec![InvoiceEvent::InvoiceFinalized(events::InvoiceFinalized {
            actor: "dev-1".into(),
            finalized_at: at(3),
            due_at: at(17),
        })]
    );
    given.extend(events);
    // Again: nothing; then it takes a payment.
    when(given.clone(), finalize(17))
        .await
        .then_expect_events(vec![]);
    when(given.clone(), paid(7)).await.inspect_result().unwrap();
    let mut state = Invoice::default();
    for e in given {
        state.apply(e);
    }
    assert_eq!(state.status(), Some(InvoiceStatus::Pending));
    assert_eq!(state.issued().unwrap().due_at, at(17));
}

#[tokio::test]
async fn only_a_draft_is_finalized_and_never_due_in_the_past() {
    let mut cmd = issue(vec![line(dec!(10.00), 1)], dec!(0), "USD");
    cmd.draft = true;
    let draft = issued_events(cmd).await;
    when(draft.clone(), finalize(2))
        .await
        .then_expect_error(InvoiceError::DueBeforeIssue);
    let mut voided = draft.clone();
    voided.extend(when(draft, void()).await.inspect_result().unwrap());
    assert!(matches!(
        when(voided, finalize(17)).await.inspect_result(),
        Err(InvoiceError::IllegalTransition { .. })
    ));
}
