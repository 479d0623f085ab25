//! The billing read models (`rm_invoices`, `rm_payments`) on PostgreSQL and
//! SQLite: projected event by event, rebuilt per event and through the bulk
//! path, they give the same rows; the queries filter and page them.

mod common;

use chrono::Duration;
use common::*;
use events::{AccountId, Currency, Money, PaymentMethod};
use ledger::invoice::{IssueInvoice, LineInput};
use ledger::payment::SubmitManualPayment;
use ledger::{Invoice, InvoiceCommand, Payment, PaymentCommand};
use projections::billing::{InvoiceFilter, PaymentFilter};
use projections::{PageRequest, ReadModels};
use rust_decimal::Decimal;
use store::{on_both_stores, CommandContext, CommandService, Store};
use uuid::Uuid;

fn ctx() -> CommandContext {
    CommandContext::new(events::Actor::system("test"))
}

async fn issue(service: &CommandService, account: AccountId, n: u32, day: &str) -> Uuid {
    let id = Uuid::now_v7();
    let now = at(day);
    service
        .execute::<Invoice>(
            &id.to_string(),
            InvoiceCommand::Issue(Box::new(IssueInvoice {
                invoice_id: id,
                number: format!("INV-2026-{n:06}"),
                account_id: account,
                subscription_id: None,
                buyer_name: "Acme".into(),
                billing_email: None,
                billing_address: None,
                tax_id: None,
                lines: vec![LineInput {
                    description: "Pro".into(),
                    quantity: 1,
                    unit_price: Decimal::new(2_900, 2),
                }],
                tax_rate: Decimal::new(19, 0),
                currency: Currency::usd(),
                draft: false,
                purchase: None,
                notes: None,
                now,
                due_at: now + Duration::days(14),
            })),
            &ctx(),
            None,
        )
        .await
        .expect("issue");
    id
}

async fn invoice(service: &CommandService, id: Uuid, command: InvoiceCommand) {
    service
        .execute::<Invoice>(&id.to_string(), command, &ctx(), None)
        .await
        .expect("invoice command");
}

async fn pay(service: &CommandService, account: AccountId, invoice_id: Uuid) -> Uuid {
    let id = Uuid::now_v7();
    let total = Money::usd(Decimal::new(3_451, 2));
    service
        .execute::<Payment>(
            &id.to_string(),
            PaymentCommand::SubmitManual(Box::new(SubmitManualPayment {
                payment_id: id,
                invoice_id,
                account_id: account,
                amount: total.clone(),
                invoice_total: total,
                method: PaymentMethod::BankTransfer,
                reference: Some("WIRE".into()),
                submitted_by: "owner".into(),
                instructions: None,
                now: at("2026-03-02T10:00:00Z"),
            })),
            &ctx(),
            None,
        )
        .await
        .expect("submit");
    id
}

async fn billing_rows_rebuild_to_the_rows_projected_live(store: &Store) {
    let service = CommandService::new(store.clone());
    let (p, _) = projector(store).await;
    let account = AccountId::new_v7();
    let paid = issue(&service, account, 1, "2026-03-01T09:00:00Z").await;
    p.catch_up().await.unwrap();
    let voided = issue(&service, account, 2, "2026-03-05T09:00:00Z").await;
    let lost = issue(&service, account, 3, "2026-03-09T09:00:00Z").await;
    let payment = pay(&service, account, paid).await;
    p.catch_up().await.unwrap();
    let rejected = pay(&service, account, voided).await;
    service
        .execute::<Payment>(
            &payment.to_string(),
            PaymentCommand::Approve {
                notes: None,
                by: "dev".into(),
                now: at("2026-03-03T10:00:00Z"),
            },
            &ctx(),
            None,
        )
        .await
        .unwrap();
    service
        .execute::<Payment>(
            &rejected.to_string(),
            PaymentCommand::Reject {
                by: "dev".into(),
                reason: "not received".into(),
                now: at("2026-03-06T10:00:00Z"),
            },
            &ctx(),
            None,
        )
        .await
        .unwrap();
    invoice(
        &service,
        paid,
        InvoiceCommand::MarkPaid {
            payment_id: Some(payment),
            method: PaymentMethod::BankTransfer,
            now: at("2026-03-03T10:00:00Z"),
        },
    )
    .await;
    invoice(
        &service,
        voided,
        InvoiceCommand::Void {
            reason: None,
            actor: "dev".into(),
            now: at("2026-03-06T10:00:00Z"),
        },
    )
    .await;
    invoice(
        &service,
        lost,
        InvoiceCommand::MarkUncollectible {
            reason: Some("gone".into()),
            actor: "dev".into(),
            now: at("2026-03-20T10:00:00Z"),
        },
    )
    .await;
    p.catch_up().await.unwrap();

    let models = ReadModels::new(store.clone());
    let live = models.dump().await.unwrap();
    assert_eq!(
        live.iter().filter(|l| l.starts_with("rm_invoices")).count(),
        3
    );
    assert_eq!(
        live.iter().filter(|l| l.starts_with("rm_payments")).count(),
        2
    );
    p.rebuild().await.unwrap();
    assert_eq!(models.dump().await.unwrap(), live);
    p.rebuild_bulk().await.unwrap();
    assert_eq!(models.dump().await.unwrap(), live);
    let seed = reproject_in_random_batches(&p).await;
    assert_eq!(
        models.dump().await.unwrap(),
        live,
        "random batches, seed {seed}"
    );

    let one = models.invoice(&paid.to_string()).await.unwrap().unwrap();
    assert_eq!(one.status, "paid");
    assert_eq!(one.total, "34.51");
    assert_eq!(one.payment_id, Some(payment.to_string()));
    let page = |limit| PageRequest { limit, after: None };
    let void = models
        .invoices(
            &InvoiceFilter {
                status: Some("void".into()),
                ..InvoiceFilter::default()
            },
            &page(50),
        )
        .await
        .unwrap();
    assert_eq!(void.items.len(), 1);
    assert_eq!(void.items[0].id, voided.to_string());
    let march = models
        .invoices(
            &InvoiceFilter {
                account_id: Some(account.to_string()),
                from: Some("2026-03-02T00:00:00.000000Z".into()),
                to: Some("2026-03-09T00:00:00.000000Z".into()),
                ..InvoiceFilter::default()
            },
            &page(50),
        )
        .await
        .unwrap();
    assert_eq!(march.items.len(), 1, "only the invoice of March 5th");
    let first = models
        .invoices(&InvoiceFilter::default(), &page(2))
        .await
        .unwrap();
    assert_eq!(first.items.len(), 2);
    let rest = models
        .invoices(
            &InvoiceFilter::default(),
            &PageRequest {
                limit: 2,
                after: first.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert!(rest.next_cursor.is_none());
    let failed = models
        .payments(
            &PaymentFilter {
                status: Some("failed".into()),
                ..PaymentFilter::default()
            },
            &page(50),
        )
        .await
        .unwrap();
    assert_eq!(failed.items.len(), 1);
    assert_eq!(
        failed.items[0].failure_reason.as_deref(),
        Some("not received")
    );
}
on_both_stores!(billing_rows_rebuild_to_the_rows_projected_live);

async fn payment_command(service: &CommandService, id: Uuid, command: PaymentCommand) {
    service
        .execute::<Payment>(&id.to_string(), command, &ctx(), None)
        .await
        .expect("payment command");
}

fn initiate(id: Uuid, account: AccountId, invoice_id: Uuid, gateway_ref: &str) -> PaymentCommand {
    let total = Money::usd(Decimal::new(3_451, 2));
    PaymentCommand::Initiate(Box::new(ledger::payment::InitiatePayment {
        payment_id: id,
        invoice_id,
        account_id: account,
        amount: total.clone(),
        invoice_total: total,
        method: PaymentMethod::Stripe,
        gateway: "stripe".into(),
        gateway_ref: gateway_ref.into(),
        submitted_by: "owner".into(),
        now: at("2026-03-02T10:00:00Z"),
    }))
}

fn refund(cents: i64, day: &str) -> PaymentCommand {
    PaymentCommand::Refund(Box::new(ledger::payment::RefundPayment {
        refund_id: Uuid::now_v7(),
        amount: Decimal::new(cents, 2),
        revoke_credits: false,
        revoked_credits: 0,
        reason: None,
        by: "dev".into(),
        gateway_refund_ref: None,
        now: at(day),
    }))
}

/// Stripe payments: initiated (processing, with the PaymentIntent id),
/// succeeded, refunded in part then in full; another failed. Live rows and
/// both rebuilds agree.
async fn gateway_payment_rows_rebuild_to_the_rows_projected_live(store: &Store) {
    let service = CommandService::new(store.clone());
    let (p, _) = projector(store).await;
    let account = AccountId::new_v7();
    let paid = issue(&service, account, 1, "2026-03-01T09:00:00Z").await;
    let declined = issue(&service, account, 2, "2026-03-01T09:00:00Z").await;
    let (good, bad) = (Uuid::now_v7(), Uuid::now_v7());
    payment_command(&service, good, initiate(good, account, paid, "pi_good")).await;
    payment_command(&service, bad, initiate(bad, account, declined, "pi_bad")).await;
    p.catch_up().await.unwrap();
    let models = ReadModels::new(store.clone());
    let row = models.payment(&good.to_string()).await.unwrap().unwrap();
    assert_eq!(row.status, "processing");
    assert_eq!(row.gateway.as_deref(), Some("stripe"));
    assert_eq!(row.refunded_amount, "0.00");
    let found = models.payment_by_gateway_ref("pi_good").await.unwrap();
    assert_eq!(found.map(|r| r.id), Some(good.to_string()));

    payment_command(
        &service,
        good,
        PaymentCommand::MarkSucceeded {
            gateway_ref: Some("ch_1".into()),
            now: at("2026-03-02T10:01:00Z"),
        },
    )
    .await;
    payment_command(
        &service,
        bad,
        PaymentCommand::MarkFailed {
            reason: "card_declined".into(),
            now: at("2026-03-02T10:01:00Z"),
        },
    )
    .await;
    payment_command(&service, good, refund(1_000, "2026-03-03T10:00:00Z")).await;
    p.catch_up().await.unwrap();
    let row = models.payment(&good.to_string()).await.unwrap().unwrap();
    assert_eq!(row.status, "succeeded");
    assert_eq!(row.refunded_amount, "10.00");
    payment_command(&service, good, refund(2_451, "2026-03-04T10:00:00Z")).await;
    p.catch_up().await.unwrap();

    let row = models.payment(&good.to_string()).await.unwrap().unwrap();
    assert_eq!(row.status, "refunded");
    assert_eq!(row.refunded_amount, "34.51");
    assert_eq!(row.gateway_ref.as_deref(), Some("pi_good"));
    let row = models.payment(&bad.to_string()).await.unwrap().unwrap();
    assert_eq!(row.status, "failed");
    assert_eq!(row.failure_reason.as_deref(), Some("card_declined"));

    let live = models.dump().await.unwrap();
    assert_eq!(
        live.iter().filter(|l| l.starts_with("rm_payments")).count(),
        2
    );
    p.rebuild().await.unwrap();
    assert_eq!(models.dump().await.unwrap(), live);
    p.rebuild_bulk().await.unwrap();
    assert_eq!(models.dump().await.unwrap(), live);
    let seed = reproject_in_random_batches(&p).await;
    assert_eq!(
        models.dump().await.unwrap(),
        live,
        "random batches, seed {seed}"
    );
}
on_both_stores!(gateway_payment_rows_rebuild_to_the_rows_projected_live);
