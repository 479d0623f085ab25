//! The subscriptions read model (`rm_subscriptions`) and the account's
//! billing status on PostgreSQL and SQLite: projected event by event,
//! rebuilt per event and through the bulk path, they give the same rows;
//! the queries order, page and find them.

mod common;

use chrono::Duration;
use common::*;
use events::{AccountId, AccountStatus, BillingCycle, CancelReason, Money, PlanTerms};
use ledger::subscription::CreateSubscription;
use ledger::{AccountCommand, Subscription, SubscriptionCommand};
use projections::{PageRequest, ReadModels};
use rust_decimal::Decimal;
use store::{on_both_stores, CommandContext, CommandService, Store};
use uuid::Uuid;

fn ctx() -> CommandContext {
    CommandContext::new(events::Actor::system("test"))
}

fn terms(slug: &str, cents: i64, credits: i64) -> PlanTerms {
    PlanTerms {
        slug: slug.into(),
        name: slug.into(),
        price: Money::usd(Decimal::new(cents, 2)),
        billing_cycle: BillingCycle::Monthly,
        included_credits: credits,
    }
}

async fn sub(service: &CommandService, id: Uuid, command: SubscriptionCommand) {
    service
        .execute::<Subscription>(&id.to_string(), command, &ctx(), None)
        .await
        .expect("subscription command");
}

async fn create(service: &CommandService, account: AccountId, plan: PlanTerms, day: &str) -> Uuid {
    let id = Uuid::now_v7();
    let now = at(day);
    sub(
        service,
        id,
        SubscriptionCommand::Create(Box::new(CreateSubscription {
            subscription_id: id,
            account_id: account,
            plan,
            method: events::PaymentMethod::BankTransfer,
            first_invoice_id: Uuid::now_v7(),
            first_invoice_due_at: now + Duration::days(14),
            stripe_customer_id: None,
            stripe_subscription_id: Some(format!("sub_{id}")),
            now,
        })),
    )
    .await;
    id
}

async fn subscription_rows_rebuild_to_the_rows_projected_live(store: &Store) {
    let service = CommandService::new(store.clone());
    let (p, _) = projector(store).await;
    let account = AccountId::new_v7();
    exec(
        &service,
        account,
        open_cmd(account, &Opening::default(), at("2026-03-01T00:00:00Z")),
    )
    .await;

    // One ended (canceled now), one renewed on a scheduled downgrade and
    // then past due.
    let ended = create(
        &service,
        account,
        terms("starter", 2_900, 1_000),
        "2026-03-01T00:00:00Z",
    )
    .await;
    p.catch_up().await.unwrap();
    sub(
        &service,
        ended,
        SubscriptionCommand::Cancel {
            at_period_end: true,
            reason: CancelReason::Customer,
            now: at("2026-03-02T00:00:00Z"),
        },
    )
    .await;
    let open = create(
        &service,
        account,
        terms("professional", 9_900, 5_000),
        "2026-03-03T00:00:00Z",
    )
    .await;
    let first = service
        .store()
        .load::<Subscription>(&open.to_string())
        .await
        .unwrap()
        .aggregate
        .open_invoices()[0]
        .invoice_id;
    sub(
        &service,
        open,
        SubscriptionCommand::InvoicePaid {
            invoice_id: first,
            now: at("2026-03-04T00:00:00Z"),
        },
    )
    .await;
    sub(
        &service,
        open,
        SubscriptionCommand::ChangePlan {
            to: terms("starter", 2_900, 1_000),
            proration_invoice_id: Uuid::now_v7(),
            invoice_due_at: at("2026-03-20T00:00:00Z"),
            gateway_proration: None,
            now: at("2026-03-05T00:00:00Z"),
        },
    )
    .await;
    p.catch_up().await.unwrap();
    let renewal = Uuid::now_v7();
    sub(
        &service,
        open,
        SubscriptionCommand::Renew {
            plan: terms("starter", 2_900, 1_000),
            invoice_id: renewal,
            invoice_due_at: at("2026-04-17T00:00:00Z"),
            now: at("2026-04-03T00:00:00Z"),
        },
    )
    .await;
    sub(
        &service,
        open,
        SubscriptionCommand::MarkPastDue {
            invoice_id: renewal,
            payment_failed: false,
            now: at("2026-04-18T00:00:00Z"),
        },
    )
    .await;
    // The account follows: past_due, recorded but not shown while suspended.
    exec(
        &service,
        account,
        AccountCommand::SetBillingStatus {
            status: AccountStatus::PastDue,
            reason: "past due".into(),
            now: at("2026-04-18T00:00:00Z"),
        },
    )
    .await;
    exec(
        &service,
        account,
        AccountCommand::Suspend {
            reason: "fraud check".into(),
            now: at("2026-04-19T00:00:00Z"),
        },
    )
    .await;
    exec(
        &service,
        account,
        AccountCommand::SetBillingStatus {
            status: AccountStatus::Active,
            reason: "recovered".into(),
            now: at("2026-04-20T00:00:00Z"),
        },
    )
    .await;
    p.catch_up().await.unwrap();

    let models = ReadModels::new(store.clone());
    let live = models.dump().await.unwrap();
    assert_eq!(
        live.iter()
            .filter(|l| l.starts_with("rm_subscriptions"))
            .count(),
        2
    );
    assert_eq!(
        models
            .account(&account.to_string())
            .await
            .unwrap()
            .unwrap()
            .status,
        "suspended"
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

    let row = models
        .subscription(&open.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (row.plan.as_str(), row.status.as_str(), row.price.as_str()),
        ("starter", "past_due", "29.00")
    );
    assert_eq!(row.scheduled_plan, None);
    assert_eq!(
        row.current_period_start.as_deref(),
        Some("2026-04-03T00:00:00.000000Z")
    );
    assert_eq!(
        row.past_due_since.as_deref(),
        Some("2026-04-18T00:00:00.000000Z")
    );
    let gone = models
        .subscription(&ended.to_string())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(gone.status, "canceled");

    // The open one first, then newest first, one per page.
    let first_page = models
        .subscriptions(
            &account.to_string(),
            &PageRequest {
                limit: 1,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(first_page.items[0].id, open.to_string());
    let second = models
        .subscriptions(
            &account.to_string(),
            &PageRequest {
                limit: 1,
                after: first_page.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(second.items[0].id, ended.to_string());
    assert!(second.next_cursor.is_none());
    assert_eq!(
        models
            .subscription_by_stripe_id(&format!("sub_{open}"))
            .await
            .unwrap(),
        Some(open.to_string())
    );
    let (count, current) = models
        .subscription_count(&account.to_string())
        .await
        .unwrap();
    assert_eq!((count, current.map(|c| c.id)), (2, Some(open.to_string())));
    let nothing = models
        .subscriptions_maybe_due(
            "2026-04-18T00:00:00.000000Z",
            "2026-04-04T00:00:00.000000Z",
            "",
            10,
        )
        .await
        .unwrap();
    assert!(
        nothing.is_empty(),
        "past_due within its grace period: {nothing:?}"
    );
    let due = models
        .subscriptions_maybe_due(
            "2026-05-02T00:00:00.000000Z",
            "2026-04-18T00:00:00.000000Z",
            "",
            10,
        )
        .await
        .unwrap();
    assert_eq!(
        due,
        vec![open.to_string()],
        "past_due at the grace end is due; canceled never"
    );
}
on_both_stores!(subscription_rows_rebuild_to_the_rows_projected_live);
