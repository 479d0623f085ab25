//! The read models and the projector on PostgreSQL and SQLite: what each
//! query answers after a scripted history, pagination, rebuilds, checkpoints
//! and racing projectors.

mod common;

use store::on_both_stores;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use events::{
    AccountId, AccountStatus, BillingAddress, CostUnit, CountryCode, GrantSource, Usage,
    EVENT_VERSION_1,
};
use ledger::account::{AccountPatch, Amount};
use ledger::{AccountCommand, CatalogCommand, CreditAccount};
use projections::{
    time_text, AccountFilter, AnalyticsRow, GroupBy, Page, PageRequest, ProjectionError, Projector,
    ReadModels, TransactionFilter, TransactionView, UsageFilter, UsageView,
};
use rust_decimal::Decimal;
use store::{CommandService, NewEvent, Store, StreamAppend};
use uuid::Uuid;

fn first_page(limit: u32) -> PageRequest {
    PageRequest { limit, after: None }
}

fn all() -> PageRequest {
    first_page(500)
}

fn analytics(key: &str, credits: i64, cost_usd: &str, count: i64) -> AnalyticsRow {
    AnalyticsRow {
        key: key.into(),
        credits,
        cost_usd: usd(cost_usd),
        count,
    }
}

/// Checks the read balance of each account against its aggregate.
async fn assert_balances_match_aggregates(store: &Store, ids: &[AccountId]) {
    let models = ReadModels::new(store.clone());
    for id in ids {
        let agg = store
            .load::<CreditAccount>(&id.to_string())
            .await
            .unwrap()
            .aggregate;
        let view = models
            .balance(&id.to_string(), at("2026-03-01T00:00:00Z"))
            .await
            .unwrap()
            .expect("a projected balance");
        assert_eq!(
            (view.balance, view.held, view.available, view.credit_limit),
            (
                agg.balance(),
                agg.held(),
                agg.available(),
                agg.credit_limit()
            ),
            "balance of {id}"
        );
        assert_eq!(view.plan, agg.plan());
        // The ledger entries add up to the balance, entry by entry.
        let entries = models
            .transactions(&id.to_string(), &TransactionFilter::default(), &all())
            .await
            .unwrap()
            .items;
        let mut running = 0;
        for t in entries.iter().rev() {
            running += t.amount;
            assert_eq!(
                running, t.balance_after,
                "running sum at position {}",
                t.position
            );
        }
        assert_eq!(running, agg.balance());
    }
}

async fn a_scripted_history_projects_balance_transactions_usage_and_analytics(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = AccountId::new_v7();
    let acct = id.to_string();
    exec(
        &service,
        id,
        open_cmd(id, &Opening::default(), at("2026-03-01T00:00:00Z")),
    )
    .await;

    let g1 = Uuid::now_v7();
    let expiry = at("2026-03-20T00:00:00Z");
    exec(
        &service,
        id,
        grant_cmd(
            g1,
            100,
            GrantSource::Promotional,
            Some(expiry),
            Some("welcome"),
            at("2026-03-01T10:00:00Z"),
        ),
    )
    .await;
    let g2 = Uuid::now_v7();
    exec(
        &service,
        id,
        grant_cmd(
            g2,
            50,
            GrantSource::Purchase,
            None,
            None,
            at("2026-03-02T09:00:00Z"),
        ),
    )
    .await;

    let clustering = cost("clustering", 10, CostUnit::PerRequest, 1);
    let d1 = Uuid::now_v7();
    let d1_usage = Usage {
        units: 1,
        model: Some("gpt-4o".into()),
        tokens_input: Some(1_200),
        tokens_output: Some(300),
        cost_usd: Some(usd("0.1")),
        ..Usage::default()
    };
    let d1_done = exec(
        &service,
        id,
        deduct_cmd(d1, clustering.clone(), d1_usage, at("2026-03-05T10:00:00Z")),
    )
    .await;
    let d2 = Uuid::now_v7();
    let d2_usage = Usage {
        units: 1,
        model: Some("gpt-4o".into()),
        tokens_input: Some(900),
        tokens_output: Some(150),
        cost_usd: Some(usd("0.2")),
        ..Usage::default()
    };
    let d2_done = exec(
        &service,
        id,
        deduct_cmd(d2, clustering, d2_usage, at("2026-03-05T15:00:00Z")),
    )
    .await;
    let d3 = Uuid::now_v7();
    let d3_usage = Usage {
        units: 450,
        model: Some("claude-3-5-sonnet".into()),
        tokens_input: Some(800),
        tokens_output: Some(1_600),
        cost_usd: Some(usd("0.0456")),
        related_object_type: Some("article".into()),
        related_object_id: Some("art-1".into()),
        metadata: Some(serde_json::json!({ "lang": "en" })),
        ..Usage::default()
    };
    let d3_done = exec(
        &service,
        id,
        deduct_cmd(
            d3,
            cost("content_generation", 1, CostUnit::Per100Words, 3),
            d3_usage,
            at("2026-03-06T08:00:00Z"),
        ),
    )
    .await;

    let images = cost("image_generation", 5, CostUnit::PerImage, 5);
    let h1 = Uuid::now_v7();
    exec(
        &service,
        id,
        hold_cmd(
            h1,
            Amount::Priced {
                cost: images.clone(),
                units: 4,
            },
            3_600,
            at("2026-03-06T09:00:00Z"),
        ),
    )
    .await;
    let c1 = Uuid::now_v7();
    let c1_usage = Usage {
        model: Some("dall-e-3".into()),
        cost_usd: Some(usd("0.08")),
        ..Usage::default()
    };
    let c1_done = exec(
        &service,
        id,
        capture_cmd(
            h1,
            c1,
            Amount::Priced {
                cost: images,
                units: 3,
            },
            c1_usage,
            at("2026-03-06T09:30:00Z"),
        ),
    )
    .await;
    let h2 = Uuid::now_v7();
    exec(
        &service,
        id,
        hold_cmd(h2, Amount::Credits(8), 600, at("2026-03-07T10:00:00Z")),
    )
    .await;
    exec(&service, id, release_cmd(h2, at("2026-03-07T10:05:00Z"))).await;
    let r1 = Uuid::now_v7();
    exec(
        &service,
        id,
        refund_cmd(
            r1,
            d1,
            10,
            Some(4),
            "bad output",
            at("2026-03-08T00:00:00Z"),
        ),
    )
    .await;
    let a1 = Uuid::now_v7();
    exec(
        &service,
        id,
        adjust_cmd(a1, -7, "correction", at("2026-03-09T00:00:00Z")),
    )
    .await;
    let expired = exec(
        &service,
        id,
        AccountCommand::ExpireDue {
            now: at("2026-03-21T00:00:00Z"),
        },
    )
    .await;
    assert_eq!(expired.events.len(), 1, "the first grant's rest expires");
    let h3 = Uuid::now_v7();
    let last = exec(
        &service,
        id,
        hold_cmd(
            h3,
            Amount::Credits(6),
            7 * 24 * 3_600,
            at("2026-03-21T10:00:00Z"),
        ),
    )
    .await;

    let head = store.head_position().await.unwrap();
    assert_eq!(catch_up(store).await as i64, head);
    let models = ReadModels::new(store.clone());

    // Balance: the aggregate's numbers and this month's grants and usage.
    let agg = store.load::<CreditAccount>(&acct).await.unwrap().aggregate;
    assert_eq!((agg.balance(), agg.held(), agg.available()), (54, 6, 48));
    let march = models
        .balance(&acct, at("2026-03-31T23:59:59Z"))
        .await
        .unwrap()
        .expect("balance");
    assert_eq!(march.account_id, acct);
    assert_eq!(
        (march.balance, march.held, march.available),
        (agg.balance(), agg.held(), agg.available())
    );
    assert_eq!(march.credit_limit, 0);
    assert_eq!(march.plan, "starter");
    assert_eq!(march.position, last.position().unwrap());
    assert_eq!(march.current_period.period, "2026-03");
    assert_eq!(march.current_period.granted, 150);
    assert_eq!(march.current_period.used, 10 + 10 + 5 + 15);
    let april = models
        .balance(&acct, at("2026-04-01T00:00:00Z"))
        .await
        .unwrap()
        .expect("balance");
    assert_eq!(april.current_period.period, "2026-04");
    assert_eq!(
        (april.current_period.granted, april.current_period.used),
        (0, 0)
    );
    assert_eq!(april.balance, 54);
    assert!(models
        .balance(&AccountId::new_v7().to_string(), at("2026-03-31T00:00:00Z"))
        .await
        .unwrap()
        .is_none());

    // Transactions: every balance-moving event, newest first.
    let txs = models
        .transactions(&acct, &TransactionFilter::default(), &all())
        .await
        .unwrap();
    assert_eq!(txs.next_cursor, None);
    let rows: Vec<_> = txs
        .items
        .iter()
        .map(|t| {
            (
                t.entry_type.as_str(),
                t.id.clone(),
                t.amount,
                t.balance_after,
                t.description.clone(),
                t.occurred_at.clone(),
            )
        })
        .collect();
    let s = |v: &str| Some(v.to_owned());
    let when = |v: &str| time_text(at(v));
    assert_eq!(
        rows,
        vec![
            (
                "expiry",
                g1.to_string(),
                -53,
                54,
                s("credits expired"),
                when("2026-03-20T00:00:00Z")
            ),
            (
                "adjustment",
                a1.to_string(),
                -7,
                107,
                s("correction"),
                when("2026-03-09T00:00:00Z")
            ),
            (
                "refund",
                r1.to_string(),
                4,
                114,
                s("bad output"),
                when("2026-03-08T00:00:00Z")
            ),
            (
                "capture",
                c1.to_string(),
                -15,
                110,
                s("image_generation"),
                when("2026-03-06T09:30:00Z")
            ),
            (
                "deduction",
                d3.to_string(),
                -5,
                125,
                s("content_generation"),
                when("2026-03-06T08:00:00Z")
            ),
            (
                "deduction",
                d2.to_string(),
                -10,
                130,
                s("clustering"),
                when("2026-03-05T15:00:00Z")
            ),
            (
                "deduction",
                d1.to_string(),
                -10,
                140,
                s("clustering"),
                when("2026-03-05T10:00:00Z")
            ),
            (
                "grant",
                g2.to_string(),
                50,
                150,
                s("purchase grant"),
                when("2026-03-02T09:00:00Z")
            ),
            (
                "grant",
                g1.to_string(),
                100,
                100,
                s("welcome"),
                when("2026-03-01T10:00:00Z")
            ),
        ]
    );
    assert!(txs.items.windows(2).all(|w| w[0].position > w[1].position));
    assert_eq!(txs.items[4].position, d3_done.position().unwrap());
    assert_balances_match_aggregates(store, &[id]).await;

    let ids_of =
        |page: Page<TransactionView>| page.items.into_iter().map(|t| t.id).collect::<Vec<_>>();
    let deductions = models
        .transactions(
            &acct,
            &TransactionFilter {
                entry_type: Some("deduction".into()),
                ..TransactionFilter::default()
            },
            &all(),
        )
        .await
        .unwrap();
    assert_eq!(
        ids_of(deductions),
        vec![d3.to_string(), d2.to_string(), d1.to_string()]
    );
    // `from` is inclusive, `to` exclusive.
    let window = models
        .transactions(
            &acct,
            &TransactionFilter {
                from: Some(at("2026-03-05T15:00:00Z")),
                to: Some(at("2026-03-08T00:00:00Z")),
                ..TransactionFilter::default()
            },
            &all(),
        )
        .await
        .unwrap();
    assert_eq!(
        ids_of(window),
        vec![c1.to_string(), d3.to_string(), d2.to_string()]
    );
    let grants_after_the_first = models
        .transactions(
            &acct,
            &TransactionFilter {
                entry_type: Some("grant".into()),
                from: Some(at("2026-03-01T10:00:00.000001Z")),
                to: None,
            },
            &all(),
        )
        .await
        .unwrap();
    assert_eq!(ids_of(grants_after_the_first), vec![g2.to_string()]);
    let none = models
        .transactions(
            &acct,
            &TransactionFilter {
                entry_type: Some("no_such_type".into()),
                ..TransactionFilter::default()
            },
            &all(),
        )
        .await
        .unwrap();
    assert!(none.items.is_empty());
    assert!(models
        .transactions(
            &AccountId::new_v7().to_string(),
            &TransactionFilter::default(),
            &all()
        )
        .await
        .unwrap()
        .items
        .is_empty());

    // Usage: the deductions and the capture, with what they used.
    let usage = models
        .usage(&acct, &UsageFilter::default(), &all())
        .await
        .unwrap();
    assert_eq!(usage.next_cursor, None);
    assert_eq!(
        usage.items,
        vec![
            UsageView {
                id: c1.to_string(),
                hold_id: Some(h1.to_string()),
                operation: Some("image_generation".into()),
                credits: 15,
                units: 3,
                cost_version: Some(5),
                cost_usd: Some(usd("0.08")),
                model: Some("dall-e-3".into()),
                tokens_input: None,
                tokens_output: None,
                related_object_type: None,
                related_object_id: None,
                metadata: None,
                recorded_at: when("2026-03-06T09:30:00Z"),
                position: c1_done.position().unwrap(),
            },
            UsageView {
                id: d3.to_string(),
                hold_id: None,
                operation: Some("content_generation".into()),
                credits: 5,
                units: 450,
                cost_version: Some(3),
                cost_usd: Some(usd("0.0456")),
                model: Some("claude-3-5-sonnet".into()),
                tokens_input: Some(800),
                tokens_output: Some(1_600),
                related_object_type: Some("article".into()),
                related_object_id: Some("art-1".into()),
                metadata: Some(serde_json::json!({ "lang": "en" })),
                recorded_at: when("2026-03-06T08:00:00Z"),
                position: d3_done.position().unwrap(),
            },
            UsageView {
                id: d2.to_string(),
                hold_id: None,
                operation: Some("clustering".into()),
                credits: 10,
                units: 1,
                cost_version: Some(1),
                cost_usd: Some(usd("0.2")),
                model: Some("gpt-4o".into()),
                tokens_input: Some(900),
                tokens_output: Some(150),
                related_object_type: None,
                related_object_id: None,
                metadata: None,
                recorded_at: when("2026-03-05T15:00:00Z"),
                position: d2_done.position().unwrap(),
            },
            UsageView {
                id: d1.to_string(),
                hold_id: None,
                operation: Some("clustering".into()),
                credits: 10,
                units: 1,
                cost_version: Some(1),
                cost_usd: Some(usd("0.1")),
                model: Some("gpt-4o".into()),
                tokens_input: Some(1_200),
                tokens_output: Some(300),
                related_object_type: None,
                related_object_id: None,
                metadata: None,
                recorded_at: when("2026-03-05T10:00:00Z"),
                position: d1_done.position().unwrap(),
            },
        ]
    );
    let usage_ids = |f: UsageFilter| {
        let models = models.clone();
        let acct = acct.clone();
        async move {
            models
                .usage(&acct, &f, &all())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|u| u.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        usage_ids(UsageFilter {
            operation: Some("clustering".into()),
            ..UsageFilter::default()
        })
        .await,
        vec![d2.to_string(), d1.to_string()]
    );
    assert_eq!(
        usage_ids(UsageFilter {
            model: Some("claude-3-5-sonnet".into()),
            ..UsageFilter::default()
        })
        .await,
        vec![d3.to_string()]
    );
    assert_eq!(
        usage_ids(UsageFilter {
            from: Some(at("2026-03-05T15:00:00Z")),
            to: Some(at("2026-03-06T09:30:00Z")),
            ..UsageFilter::default()
        })
        .await,
        vec![d3.to_string(), d2.to_string()]
    );

    // Analytics: exact credits, Decimal cost sums (0.1 + 0.2 is 0.3) and counts.
    let by_day = models
        .usage_analytics(&acct, GroupBy::Day, "2026-03-01", "2026-03-31")
        .await
        .unwrap();
    assert_eq!(
        by_day,
        vec![
            analytics("2026-03-05", 20, "0.3", 2),
            analytics("2026-03-06", 20, "0.1256", 2),
        ]
    );
    assert_eq!(by_day[0].cost_usd.to_string(), "0.3");
    let by_operation = models
        .usage_analytics(&acct, GroupBy::Operation, "2026-03-01", "2026-03-31")
        .await
        .unwrap();
    assert_eq!(
        by_operation,
        vec![
            analytics("clustering", 20, "0.3", 2),
            analytics("content_generation", 5, "0.0456", 1),
            analytics("image_generation", 15, "0.08", 1),
        ]
    );
    let by_model = models
        .usage_analytics(&acct, GroupBy::Model, "2026-03-01", "2026-03-31")
        .await
        .unwrap();
    assert_eq!(
        by_model,
        vec![
            analytics("claude-3-5-sonnet", 5, "0.0456", 1),
            analytics("dall-e-3", 15, "0.08", 1),
            analytics("gpt-4o", 20, "0.3", 2),
        ]
    );
    // Day bounds are inclusive at both ends.
    assert_eq!(
        models
            .usage_analytics(&acct, GroupBy::Operation, "2026-03-06", "2026-03-06")
            .await
            .unwrap(),
        vec![
            analytics("content_generation", 5, "0.0456", 1),
            analytics("image_generation", 15, "0.08", 1),
        ]
    );
    assert_eq!(
        models
            .usage_analytics(&acct, GroupBy::Day, "2026-03-05", "2026-03-05")
            .await
            .unwrap(),
        vec![analytics("2026-03-05", 20, "0.3", 2)]
    );
    assert!(models
        .usage_analytics(&acct, GroupBy::Day, "2026-04-01", "2026-04-30")
        .await
        .unwrap()
        .is_empty());
}
on_both_stores!(a_scripted_history_projects_balance_transactions_usage_and_analytics);

/// Follows `next_cursor` from the first page to the last.
async fn walk<T, F, Fut>(limit: u32, mut fetch: F) -> Vec<Vec<T>>
where
    F: FnMut(PageRequest) -> Fut,
    Fut: std::future::Future<Output = Result<Page<T>, ProjectionError>>,
{
    let mut pages = Vec::new();
    let mut req = first_page(limit);
    loop {
        let page = fetch(req.clone()).await.expect("a page");
        let next = page.next_cursor.clone();
        pages.push(page.items);
        match next {
            Some(cursor) => req.after = Some(cursor),
            None => return pages,
        }
        assert!(pages.len() < 100, "the cursors never end");
    }
}

async fn lists_page_by_cursor_without_duplicates_or_gaps(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = AccountId::new_v7();
    let acct = id.to_string();
    exec(
        &service,
        id,
        open_cmd(id, &Opening::default(), at("2026-03-01T00:00:00Z")),
    )
    .await;
    exec(
        &service,
        id,
        grant_cmd(
            Uuid::now_v7(),
            1_000,
            GrantSource::Purchase,
            None,
            None,
            at("2026-03-01T01:00:00Z"),
        ),
    )
    .await;
    let mut deductions = Vec::new();
    for i in 0..7 {
        let d = Uuid::now_v7();
        exec(
            &service,
            id,
            deduct_cmd(
                d,
                cost("clustering", 10, CostUnit::PerRequest, 1),
                Usage {
                    units: 1,
                    ..Usage::default()
                },
                at("2026-03-02T00:00:00Z") + chrono::Duration::hours(i),
            ),
        )
        .await;
        deductions.push(d.to_string());
    }
    catch_up(store).await;
    let models = ReadModels::new(store.clone());
    let newest_first: Vec<String> = deductions.iter().rev().cloned().collect();

    let usage_pages = walk(3, |req| {
        let (models, acct) = (models.clone(), acct.clone());
        async move { models.usage(&acct, &UsageFilter::default(), &req).await }
    })
    .await;
    assert_eq!(
        usage_pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    let ids: Vec<String> = usage_pages.into_iter().flatten().map(|u| u.id).collect();
    assert_eq!(ids, newest_first, "every item once, newest first");

    let only_deductions = TransactionFilter {
        entry_type: Some("deduction".into()),
        ..TransactionFilter::default()
    };
    let tx_pages = walk(3, |req| {
        let (models, acct, f) = (models.clone(), acct.clone(), only_deductions.clone());
        async move { models.transactions(&acct, &f, &req).await }
    })
    .await;
    assert_eq!(
        tx_pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![3, 3, 1]
    );
    let ids: Vec<String> = tx_pages.into_iter().flatten().map(|t| t.id).collect();
    assert_eq!(ids, newest_first);

    // Eight entries in pages of four: the second page is the last.
    let even = walk(4, |req| {
        let (models, acct) = (models.clone(), acct.clone());
        async move {
            models
                .transactions(&acct, &TransactionFilter::default(), &req)
                .await
        }
    })
    .await;
    assert_eq!(even.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4]);
    let positions: Vec<i64> = even.into_iter().flatten().map(|t| t.position).collect();
    assert_eq!(positions.iter().collect::<HashSet<_>>().len(), 8);

    // A limit of 0 is clamped to 1.
    let one = models
        .usage(&acct, &UsageFilter::default(), &first_page(0))
        .await
        .unwrap();
    assert_eq!(one.items.len(), 1);
    assert!(one.next_cursor.is_some());

    let garbage = PageRequest {
        limit: 3,
        after: Some("not-a-cursor".into()),
    };
    assert!(matches!(
        models
            .transactions(&acct, &TransactionFilter::default(), &garbage)
            .await,
        Err(ProjectionError::BadCursor)
    ));
    assert!(matches!(
        models.usage(&acct, &UsageFilter::default(), &garbage).await,
        Err(ProjectionError::BadCursor)
    ));
    assert!(matches!(
        models
            .search_accounts(&AccountFilter::default(), &garbage)
            .await,
        Err(ProjectionError::BadCursor)
    ));
}
on_both_stores!(lists_page_by_cursor_without_duplicates_or_gaps);

async fn account_search_pages_and_filters_by_text_status_and_plan(store: &Store) {
    let service = CommandService::new(store.clone());
    let now = at("2026-03-01T00:00:00Z");
    let specs = [
        ("Acme Corp", "acme", "billing@acme.test", "starter"),
        (
            "Acme Labs",
            "acme-labs",
            "labs@acme-labs.test",
            "professional",
        ),
        ("Globex", "globex", "ap@globex.test", "starter"),
        ("Initech", "initech", "finance@hooli.test", "professional"),
        (
            "Vandelay Industries",
            "vi-imports",
            "art@vandelay.test",
            "free",
        ),
    ];
    let mut ids = Vec::new();
    for (name, slug, email, plan) in specs {
        let id = AccountId::new_v7();
        let opening = Opening {
            name,
            slug,
            email,
            plan,
            status: AccountStatus::Active,
        };
        exec(&service, id, open_cmd(id, &opening, now)).await;
        ids.push(id.to_string());
    }
    let by_name = |name: &str| ids[specs.iter().position(|s| s.0 == name).unwrap()].clone();
    exec(
        &service,
        AccountId::parse(&by_name("Globex")).unwrap(),
        AccountCommand::Suspend {
            reason: "unpaid".into(),
            now,
        },
    )
    .await;
    catch_up(store).await;
    let models = ReadModels::new(store.clone());

    let pages = walk(2, |req| {
        let models = models.clone();
        async move {
            models
                .search_accounts(&AccountFilter::default(), &req)
                .await
        }
    })
    .await;
    assert_eq!(
        pages.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1]
    );
    let listed: Vec<String> = pages.into_iter().flatten().map(|a| a.account_id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "every account once, in id order");

    let search = |filter: AccountFilter| {
        let models = models.clone();
        async move {
            let mut names: Vec<String> = models
                .search_accounts(&filter, &all())
                .await
                .unwrap()
                .items
                .into_iter()
                .map(|a| a.name)
                .collect();
            names.sort();
            names
        }
    };
    let q = |q: &str| AccountFilter {
        q: Some(q.into()),
        ..AccountFilter::default()
    };
    assert_eq!(search(q("ACME")).await, vec!["Acme Corp", "Acme Labs"]);
    assert_eq!(
        search(q("hooli")).await,
        vec!["Initech"],
        "matches the email"
    );
    assert_eq!(
        search(q("Imports")).await,
        vec!["Vandelay Industries"],
        "matches the slug"
    );
    assert_eq!(search(q("labs@")).await, vec!["Acme Labs"]);
    assert!(
        search(q("%")).await.is_empty(),
        "LIKE wildcards are literal"
    );
    assert!(
        search(q("_")).await.is_empty(),
        "LIKE wildcards are literal"
    );
    assert!(search(q("nobody")).await.is_empty());
    assert_eq!(
        search(AccountFilter {
            status: Some("suspended".into()),
            ..AccountFilter::default()
        })
        .await,
        vec!["Globex"]
    );
    assert_eq!(
        search(AccountFilter {
            status: Some("active".into()),
            ..AccountFilter::default()
        })
        .await
        .len(),
        4
    );
    assert_eq!(
        search(AccountFilter {
            plan: Some("professional".into()),
            ..AccountFilter::default()
        })
        .await,
        vec!["Acme Labs", "Initech"]
    );
    assert_eq!(
        search(AccountFilter {
            q: Some("acme".into()),
            status: Some("active".into()),
            plan: Some("starter".into()),
        })
        .await,
        vec!["Acme Corp"]
    );
    // A filtered list pages too.
    let pages = walk(1, |req| {
        let models = models.clone();
        async move { models.search_accounts(&q("acme"), &req).await }
    })
    .await;
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 1]);
}
on_both_stores!(account_search_pages_and_filters_by_text_status_and_plan);

async fn the_account_read_model_follows_updates_plan_changes_and_suspensions(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = AccountId::new_v7();
    let acct = id.to_string();
    let opened = at("2026-03-01T00:00:00Z");
    let opening = Opening {
        status: AccountStatus::Trial,
        ..Opening::default()
    };
    exec(&service, id, open_cmd(id, &opening, opened)).await;
    let (p, _) = projector(store).await;
    p.catch_up().await.unwrap();
    let models = ReadModels::new(store.clone());
    let view = models.account(&acct).await.unwrap().expect("account");
    assert_eq!(view.account_id, acct);
    assert_eq!((view.name.as_str(), view.slug.as_str()), ("Acme", "acme"));
    assert_eq!(view.owner_user_id, "user-1");
    assert_eq!(
        (view.plan.as_str(), view.status.as_str()),
        ("starter", "trial")
    );
    assert_eq!(view.country, "US");
    assert_eq!(view.billing_email, "billing@acme.test");
    assert_eq!(
        (view.billing_address.clone(), view.tax_id.clone()),
        (None, None)
    );
    assert_eq!(view.tax_rate, Decimal::ZERO);
    assert_eq!((view.credit_limit, view.low_balance_threshold), (0, 100));
    assert_eq!(view.created_at, time_text(opened));
    assert_eq!(view.updated_at, time_text(opened));
    assert!(models
        .account(&AccountId::new_v7().to_string())
        .await
        .unwrap()
        .is_none());

    let address = BillingAddress {
        line1: Some("1 Main St".into()),
        line2: None,
        city: Some("Springfield".into()),
        region: Some("IL".into()),
        postal_code: Some("62701".into()),
        country: Some(CountryCode::parse("US").unwrap()),
    };
    let updated = at("2026-03-02T12:00:00Z");
    exec(
        &service,
        id,
        update_cmd(
            AccountPatch {
                name: Some("Acme International".into()),
                billing_address: Some(address.clone()),
                tax_id: Some("US-12-3456789".into()),
                credit_limit: Some(500),
                ..AccountPatch::default()
            },
            updated,
        ),
    )
    .await;
    p.catch_up().await.unwrap();
    let view = models.account(&acct).await.unwrap().unwrap();
    assert_eq!(view.name, "Acme International");
    assert_eq!(
        view.billing_address,
        Some(serde_json::to_value(&address).unwrap())
    );
    assert_eq!(view.tax_id.as_deref(), Some("US-12-3456789"));
    assert_eq!(view.credit_limit, 500);
    assert_eq!(
        view.billing_email, "billing@acme.test",
        "absent fields are kept"
    );
    assert_eq!(view.updated_at, time_text(updated));
    assert_eq!(view.created_at, time_text(opened));
    let balance = models.balance(&acct, updated).await.unwrap().unwrap();
    assert_eq!(balance.credit_limit, 500);

    // A second, partial update keeps what the first set.
    exec(
        &service,
        id,
        update_cmd(
            AccountPatch {
                tax_rate: Some(usd("8.25")),
                country: Some(CountryCode::parse("de").unwrap()),
                billing_email: Some("ap@acme.test".into()),
                low_balance_threshold: Some(25),
                ..AccountPatch::default()
            },
            at("2026-03-03T00:00:00Z"),
        ),
    )
    .await;
    exec(
        &service,
        id,
        AccountCommand::ChangePlan {
            plan: "professional".into(),
            now: at("2026-03-04T00:00:00Z"),
        },
    )
    .await;
    p.catch_up().await.unwrap();
    let view = models.account(&acct).await.unwrap().unwrap();
    assert_eq!(view.name, "Acme International");
    assert_eq!(
        view.billing_address,
        Some(serde_json::to_value(&address).unwrap())
    );
    assert_eq!(view.tax_id.as_deref(), Some("US-12-3456789"));
    assert_eq!(view.credit_limit, 500);
    assert_eq!(view.tax_rate, usd("8.25"));
    assert_eq!(view.country, "DE");
    assert_eq!(view.billing_email, "ap@acme.test");
    assert_eq!(view.low_balance_threshold, 25);
    assert_eq!(view.plan, "professional");
    assert_eq!(view.updated_at, time_text(at("2026-03-04T00:00:00Z")));
    let balance = models.balance(&acct, updated).await.unwrap().unwrap();
    assert_eq!(balance.plan, "professional");

    exec(
        &service,
        id,
        AccountCommand::Suspend {
            reason: "fraud check".into(),
            now: at("2026-03-05T00:00:00Z"),
        },
    )
    .await;
    p.catch_up().await.unwrap();
    let view = models.account(&acct).await.unwrap().unwrap();
    assert_eq!(view.status, "suspended");
    assert_eq!(view.updated_at, time_text(at("2026-03-05T00:00:00Z")));

    exec(
        &service,
        id,
        AccountCommand::Reactivate {
            now: at("2026-03-06T00:00:00Z"),
        },
    )
    .await;
    p.catch_up().await.unwrap();
    let view = models.account(&acct).await.unwrap().unwrap();
    assert_eq!(
        view.status, "trial",
        "reactivation restores the status before"
    );
    assert_eq!(view.updated_at, time_text(at("2026-03-06T00:00:00Z")));

    let (live, rebuilt) = live_and_rebuilt(store).await;
    assert_eq!(live, rebuilt);
}
on_both_stores!(the_account_read_model_follows_updates_plan_changes_and_suspensions);

async fn cost_history_keeps_every_version_with_the_previous_value_and_actor(store: &Store) {
    let service = CommandService::new(store.clone());
    let seeded_at = at("2026-03-01T00:00:00Z");
    seed_catalog(&service, seeded_at).await;
    catch_up(store).await;
    let models = ReadModels::new(store.clone());
    let seeded = models.cost_history(None).await.unwrap();
    assert_eq!(
        seeded.iter().map(|c| c.version).collect::<Vec<_>>(),
        (1..=9).rev().collect::<Vec<_>>(),
        "nine seeded versions, newest first"
    );
    let mut defaults: Vec<_> = seeded
        .iter()
        .map(|c| (c.operation.as_str(), c.cost, c.unit.as_str()))
        .collect();
    defaults.sort();
    assert_eq!(
        defaults,
        vec![
            ("clustering", 10, "per_request"),
            ("content_generation", 1, "per_100_words"),
            ("idea_generation", 15, "per_request"),
            ("image_generation", 5, "per_image"),
            ("image_prompt_extraction", 2, "per_request"),
            ("linking", 8, "per_request"),
            ("optimization", 1, "per_200_words"),
            ("site_page_generation", 20, "per_item"),
            ("site_structure", 50, "per_request"),
        ]
    );
    for c in &seeded {
        assert_eq!((c.previous_cost, c.previous_unit.clone()), (None, None));
        assert_eq!(c.actor, "seed");
        assert_eq!(c.changed_at, time_text(seeded_at));
    }
    let seeded_clustering = seeded
        .iter()
        .find(|c| c.operation == "clustering")
        .unwrap()
        .clone();

    let changed_at = at("2026-03-10T12:00:00Z");
    exec_catalog(
        &service,
        CatalogCommand::SetCreditCost {
            operation: op("clustering"),
            cost: 12,
            unit: CostUnit::PerRequest,
            actor: "admin@ledger.test".into(),
            now: changed_at,
        },
    )
    .await;
    exec_catalog(
        &service,
        CatalogCommand::SetCreditCost {
            operation: op("content_generation"),
            cost: 2,
            unit: CostUnit::Per200Words,
            actor: "ops@ledger.test".into(),
            now: at("2026-03-11T00:00:00Z"),
        },
    )
    .await;
    catch_up(store).await;
    let history = models.cost_history(None).await.unwrap();
    assert_eq!(history.len(), 11);
    assert_eq!(history[0].version, 11);
    assert_eq!(history[0].operation, "content_generation");
    assert_eq!(
        (
            history[0].previous_cost,
            history[0].previous_unit.as_deref()
        ),
        (Some(1), Some("per_100_words"))
    );
    assert_eq!(history[0].unit, "per_200_words");
    assert_eq!(history[0].actor, "ops@ledger.test");
    let v10 = &history[1];
    assert_eq!(v10.version, 10);
    assert_eq!(
        (v10.operation.as_str(), v10.cost, v10.unit.as_str()),
        ("clustering", 12, "per_request")
    );
    assert_eq!(
        (v10.previous_cost, v10.previous_unit.as_deref()),
        (Some(10), Some("per_request"))
    );
    assert_eq!(v10.actor, "admin@ledger.test");
    assert_eq!(v10.changed_at, time_text(changed_at));

    let clustering = models.cost_history(Some("clustering")).await.unwrap();
    assert_eq!(clustering, vec![v10.clone(), seeded_clustering]);
    assert!(models
        .cost_history(Some("no_such_operation"))
        .await
        .unwrap()
        .is_empty());
}
on_both_stores!(cost_history_keeps_every_version_with_the_previous_value_and_actor);

async fn a_rebuild_reproduces_read_models_projected_in_one_pass(store: &Store) {
    let service = CommandService::new(store.clone());
    let script = Script {
        service: &service,
        projector: None,
    };
    let ids = varied_history(&script, 3, 16).await;
    let head = store.head_position().await.unwrap();
    assert_eq!(catch_up(store).await as i64, head);
    let (live, rebuilt) = live_and_rebuilt(store).await;
    assert!(live.len() > 100, "the history fills the read models");
    for table in [
        "rm_accounts",
        "rm_balances",
        "rm_transactions",
        "rm_usage",
        "rm_usage_daily",
        "rm_cost_history",
    ] {
        assert!(
            live.iter().any(|l| l.starts_with(&format!("{table}:"))),
            "{table} has rows"
        );
    }
    assert_eq!(live, rebuilt);
    assert_balances_match_aggregates(store, &ids).await;
}
on_both_stores!(a_rebuild_reproduces_read_models_projected_in_one_pass);

async fn a_rebuild_reproduces_read_models_projected_one_command_at_a_time(store: &Store) {
    let service = CommandService::new(store.clone());
    let (p, handle) = projector(store).await;
    let script = Script {
        service: &service,
        projector: Some(&p),
    };
    let ids = varied_history(&script, 2, 16).await;
    assert_eq!(handle.position(), store.head_position().await.unwrap());
    let (live, rebuilt) = live_and_rebuilt(store).await;
    assert_eq!(live, rebuilt);
    // A second rebuild changes nothing either.
    let (again, rebuilt_again) = live_and_rebuilt(store).await;
    assert_eq!(again, live);
    assert_eq!(rebuilt_again, live);
    assert_balances_match_aggregates(store, &ids).await;
}
on_both_stores!(a_rebuild_reproduces_read_models_projected_one_command_at_a_time);

async fn a_new_projector_resumes_from_the_checkpoint_and_applies_nothing_twice(store: &Store) {
    let service = CommandService::new(store.clone());
    let script = Script {
        service: &service,
        projector: None,
    };
    let first = varied_account(&script, 0, 6).await;
    let head = store.head_position().await.unwrap();
    let (p1, h1) = projector(store).await;
    assert_eq!(h1.position(), 0);
    assert_eq!(p1.catch_up().await.unwrap() as i64, head);
    assert_eq!(h1.position(), head);
    assert_eq!(p1.catch_up().await.unwrap(), 0, "nothing is left");
    let models = ReadModels::new(store.clone());
    let dump = models.dump().await.unwrap();

    // A second projector starts at the stored checkpoint.
    let (p2, h2) = projector(store).await;
    assert_eq!(h2.position(), head);
    assert_eq!(p2.catch_up().await.unwrap(), 0);
    assert_eq!(models.dump().await.unwrap(), dump);

    // New events: the new projector applies exactly those.
    let second = varied_account(&script, 1, 4).await;
    let new_head = store.head_position().await.unwrap();
    assert_eq!(p2.catch_up().await.unwrap() as i64, new_head - head);
    assert_eq!(h2.position(), new_head);
    assert_eq!(
        p1.catch_up().await.unwrap(),
        0,
        "the first one finds nothing to do"
    );
    assert_eq!(h1.position(), new_head);
    let (live, rebuilt) = live_and_rebuilt(store).await;
    assert_eq!(live, rebuilt);
    assert_balances_match_aggregates(store, &[first, second]).await;

    let (_idle, handle) = projector(store).await;
    assert_eq!(handle.position(), store.head_position().await.unwrap());
    assert!(handle.wait_for(new_head, Duration::from_secs(1)).await);
    let started = std::time::Instant::now();
    assert!(
        !handle
            .wait_for(new_head + 1_000, Duration::from_millis(200))
            .await
    );
    assert!(started.elapsed() >= Duration::from_millis(200));
}
on_both_stores!(a_new_projector_resumes_from_the_checkpoint_and_applies_nothing_twice);

async fn a_running_projector_follows_new_events_until_shut_down(store: &Store) {
    let service = CommandService::new(store.clone());
    let (p, handle) = projector(store).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(p.run(async {
        let _ = stopped.await;
    }));
    let id = AccountId::new_v7();
    let opened = exec(
        &service,
        id,
        open_cmd(id, &Opening::default(), at("2026-03-01T00:00:00Z")),
    )
    .await;
    handle.wake();
    assert!(
        handle
            .wait_for(opened.position().unwrap(), Duration::from_secs(5))
            .await
    );
    let granted = exec(
        &service,
        id,
        grant_cmd(
            Uuid::now_v7(),
            30,
            GrantSource::Trial,
            None,
            None,
            at("2026-03-01T01:00:00Z"),
        ),
    )
    .await;
    // Without a wake the idle poll finds it.
    assert!(
        handle
            .wait_for(granted.position().unwrap(), Duration::from_secs(5))
            .await
    );
    let models = ReadModels::new(store.clone());
    let balance = models
        .balance(&id.to_string(), at("2026-03-02T00:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (balance.balance, balance.position),
        (30, granted.position().unwrap())
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the projector stops on shutdown")
        .unwrap();
}
on_both_stores!(a_running_projector_follows_new_events_until_shut_down);

async fn racing_projectors_never_apply_an_event_twice(store: &Store) {
    let service = CommandService::new(store.clone());
    let (a, ha) = projector(store).await;
    let (b, hb) = projector(store).await;
    // Writers and both projectors run at once; then both finish racing.
    let done = AtomicBool::new(false);
    let writers = async {
        let mut tasks = Vec::new();
        for i in 0..4 {
            let service = service.clone();
            tasks.push(tokio::spawn(async move {
                let script = Script {
                    service: &service,
                    projector: None,
                };
                if i == 0 {
                    seed_catalog(&service, at("2026-03-01T00:00:00Z")).await;
                }
                varied_account(&script, i, 20).await
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.expect("writer"));
        }
        done.store(true, Ordering::SeqCst);
        ids
    };
    let (ids, applied_a, applied_b) = tokio::join!(writers, tail(&a, &done), tail(&b, &done));
    let (more_a, more_b) = tokio::join!(a.catch_up(), b.catch_up());
    let head = store.head_position().await.unwrap();
    assert!(head >= 200, "about 200 events, got {head}");
    assert_eq!(
        (applied_a + applied_b + more_a.unwrap() + more_b.unwrap()) as i64,
        head,
        "every event applied by exactly one projector"
    );
    assert_eq!(ha.position(), head);
    assert_eq!(hb.position(), head);

    let (live, rebuilt) = live_and_rebuilt(store).await;
    assert_eq!(live, rebuilt);
    assert_balances_match_aggregates(store, &ids).await;

    // Racing over the whole log again, from zero, after a reset.
    store
        .execute(
            "UPDATE projection_checkpoints SET position = 0 WHERE name = $1",
            &[projections::PROJECTION_NAME.into()],
        )
        .await
        .unwrap();
    let models = ReadModels::new(store.clone());
    for table in [
        "rm_accounts",
        "rm_balances",
        "rm_transactions",
        "rm_usage",
        "rm_usage_daily",
        "rm_cost_history",
    ] {
        store
            .execute(&format!("DELETE FROM {table}"), &[])
            .await
            .unwrap();
    }
    let (a, ha) = projector(store).await;
    let (b, hb) = projector(store).await;
    let (ra, rb) = tokio::join!(a.catch_up(), b.catch_up());
    assert_eq!((ra.unwrap() + rb.unwrap()) as i64, head);
    assert_eq!((ha.position(), hb.position()), (head, head));
    assert_eq!(models.dump().await.unwrap(), live);
}
on_both_stores!(racing_projectors_never_apply_an_event_twice);

/// Projects batch after batch until `done` is set.
async fn tail(p: &Projector, done: &AtomicBool) -> usize {
    let mut applied = 0;
    while !done.load(Ordering::SeqCst) {
        applied += p.run_once().await.expect("run once");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    applied
}

fn probe_event(sequence: u64) -> NewEvent {
    NewEvent {
        sequence,
        event_type: "ProbeHappened".into(),
        event_version: EVENT_VERSION_1.into(),
        payload: serde_json::json!({ "ProbeHappened": { "value": sequence } }).to_string(),
        metadata: "{}".into(),
    }
}

async fn events_of_unknown_aggregate_types_are_skipped(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = AccountId::new_v7();
    exec(
        &service,
        id,
        open_cmd(id, &Opening::default(), at("2026-03-01T00:00:00Z")),
    )
    .await;
    store
        .append(&[StreamAppend {
            aggregate_type: "probe",
            aggregate_id: "probe-1".into(),
            events: vec![probe_event(1), probe_event(2)],
            claim: None,
            reservations: Vec::new(),
        }])
        .await
        .expect("append probe events");
    exec(
        &service,
        id,
        grant_cmd(
            Uuid::now_v7(),
            40,
            GrantSource::Purchase,
            None,
            None,
            at("2026-03-02T00:00:00Z"),
        ),
    )
    .await;
    let head = store.head_position().await.unwrap();
    let (p, handle) = projector(store).await;
    assert_eq!(
        p.catch_up().await.unwrap() as i64,
        head,
        "skipped events are passed"
    );
    assert_eq!(handle.position(), head);
    let models = ReadModels::new(store.clone());
    let balance = models
        .balance(&id.to_string(), at("2026-03-02T00:00:00Z"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(balance.balance, 40);
    let dump = models.dump().await.unwrap();
    assert!(
        dump.iter().all(|l| !l.contains("probe")),
        "no row comes from a probe event"
    );
    let (live, rebuilt) = live_and_rebuilt(store).await;
    assert_eq!(live, rebuilt);
}
on_both_stores!(events_of_unknown_aggregate_types_are_skipped);

/// A batch ends before an event that cannot be read: the events before it
/// are applied (the grant), the checkpoint stops just before it, and the
/// next batch starts with it alone, so its error names it and nothing after
/// it is applied.
async fn a_malformed_event_stops_the_projector_without_moving_its_checkpoint(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = AccountId::new_v7();
    exec(
        &service,
        id,
        open_cmd(id, &Opening::default(), at("2026-03-01T00:00:00Z")),
    )
    .await;
    let (p, handle) = projector(store).await;
    p.catch_up().await.unwrap();
    let checkpoint = handle.position();
    let models = ReadModels::new(store.clone());
    let before = models.dump().await.unwrap();

    exec(
        &service,
        id,
        grant_cmd(
            Uuid::now_v7(),
            40,
            GrantSource::Purchase,
            None,
            None,
            at("2026-03-02T00:00:00Z"),
        ),
    )
    .await;
    let positions = store
        .append(&[StreamAppend {
            aggregate_type: events::ACCOUNT_AGGREGATE_TYPE,
            aggregate_id: "not-an-account".into(),
            events: vec![probe_event(1)],
            claim: None,
            reservations: Vec::new(),
        }])
        .await
        .unwrap();
    match p.catch_up().await {
        Err(ProjectionError::BadEvent {
            position,
            event_type,
            ..
        }) => assert_eq!(
            (position, event_type.as_str()),
            (positions[0], "ProbeHappened")
        ),
        other => panic!("expected a bad event, got {other:?}"),
    }
    // The grant before it is applied, whole; the checkpoint stops at it.
    let after = models.dump().await.unwrap();
    assert_ne!(after, before, "the grant is projected");
    assert_eq!(handle.position(), positions[0] - 1);
    assert!(positions[0] - 1 > checkpoint);
    let (_, fresh) = projector(store).await;
    assert_eq!(fresh.position(), positions[0] - 1);
    // Trying again fails again, at once, and changes nothing.
    assert!(matches!(
        p.catch_up().await,
        Err(ProjectionError::BadEvent { position, .. }) if position == positions[0]
    ));
    assert_eq!(models.dump().await.unwrap(), after);
    assert_eq!(fresh.position(), positions[0] - 1);
}
on_both_stores!(a_malformed_event_stops_the_projector_without_moving_its_checkpoint);

async fn rebuilds_racing_each_other_and_a_live_projector_end_in_the_same_read_models(
    store: &Store,
) {
    let service = CommandService::new(store.clone());
    let script = Script {
        service: &service,
        projector: None,
    };
    let ids = varied_history(&script, 3, 12).await;
    catch_up(store).await;
    let models = ReadModels::new(store.clone());
    let expected = models.dump().await.unwrap();
    let (live, handle) = projector(store).await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(live.run(async {
        let _ = stopped.await;
    }));
    let (a, _) = projector(store).await;
    let (b, _) = projector(store).await;
    for round in 0..5 {
        let (ra, rb) = tokio::join!(a.rebuild(), b.rebuild());
        ra.unwrap_or_else(|e| panic!("rebuild a, round {round}: {e}"));
        rb.unwrap_or_else(|e| panic!("rebuild b, round {round}: {e}"));
        handle.wake();
        let head = store.head_position().await.unwrap();
        assert!(handle.wait_for(head, Duration::from_secs(5)).await);
        assert_eq!(models.dump().await.unwrap(), expected, "round {round}");
    }
    stop.send(()).unwrap();
    running.await.unwrap();
    assert_balances_match_aggregates(store, &ids).await;
}
on_both_stores!(rebuilds_racing_each_other_and_a_live_projector_end_in_the_same_read_models);
