//! The event store on PostgreSQL and SQLite: appends, loads, the global log,
//! idempotency claims and optimistic concurrency.

mod common;

use store::on_both_stores;

use std::collections::HashSet;

use common::*;
use events::{AccountEvent, EventMetadata, ACCOUNT_AGGREGATE_TYPE};
use ledger::catalog::SEED_VERSION;
use ledger::{AccountError, Catalog, CatalogCommand, CreditAccount};
use store::{CommandService, ServiceError, Store};

async fn appended_events_load_back_with_an_unbroken_hash_chain(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 100).await;
    let c = claim("d1", "d1");
    service
        .execute::<CreditAccount>(&id.to_string(), deduct(7, "d1"), &ctx(), Some(&c))
        .await
        .unwrap();
    let loaded = store.load::<CreditAccount>(&id.to_string()).await.unwrap();
    assert_eq!(loaded.sequence, 3);
    assert_eq!(loaded.aggregate.balance(), 93);

    let log = store.read_after(0, 100).await.unwrap();
    let stream: Vec<_> = log
        .iter()
        .filter(|e| e.aggregate_id == id.to_string())
        .collect();
    assert_eq!(stream.len(), 3);
    let mut prev = events::GENESIS_HASH.to_owned();
    for e in &stream {
        let map = serde_json::from_value(e.metadata.clone()).unwrap();
        let meta = EventMetadata::from_map(&map).unwrap();
        assert_eq!(meta.prev_hash, prev);
        let expected = events::chain_hash(
            &prev,
            &e.aggregate_type,
            &e.aggregate_id,
            e.sequence as u64,
            &e.event_type,
            &e.event_version,
            &e.payload,
        );
        assert_eq!(meta.hash, expected, "hash of event {}", e.sequence);
        prev = meta.hash;
    }
    assert_eq!(loaded.last_hash, prev);
}
on_both_stores!(appended_events_load_back_with_an_unbroken_hash_chain);

async fn the_global_log_reads_in_position_order_in_bounded_pages(store: &Store) {
    let service = CommandService::new(store.clone());
    let a = funded_account(&service, 10).await;
    let b = funded_account(&service, 20).await;
    let head = store.head_position().await.unwrap();
    let all = store.read_after(0, 100).await.unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all.last().unwrap().position, head);
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert_eq!(all[0].aggregate_id, a.to_string());
    assert_eq!(all[3].aggregate_id, b.to_string());
    let page = store.read_after(all[0].position, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![all[1].position, all[2].position]
    );
    assert!(store.read_after(head, 100).await.unwrap().is_empty());
}
on_both_stores!(the_global_log_reads_in_position_order_in_bounded_pages);

async fn fifty_concurrent_deductions_on_one_account_leave_the_exact_balance(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 1_000).await;
    // Five services stand for five server processes: within one, commands
    // for an account take turns; across them, they race and retry.
    let processes: Vec<CommandService> =
        (0..5).map(|_| CommandService::new(store.clone())).collect();
    let mut tasks = Vec::new();
    for i in 0..50u64 {
        let service = processes[(i % 5) as usize].clone();
        let id = id.to_string();
        tasks.push(tokio::spawn(async move {
            let k = format!("deduct-{i}");
            let c = claim(&k, &k);
            service
                .execute::<CreditAccount>(&id, deduct(i % 5 + 1, &k), &ctx(), Some(&c))
                .await
        }));
    }
    for t in tasks {
        let done = t.await.unwrap().expect("every deduction succeeds");
        assert_eq!(done.events.len(), 1);
    }
    let conflicts: u64 = processes.iter().map(CommandService::conflicts).sum();
    assert!(conflicts > 0, "the writers really raced");
    let expected: i64 = (0..50).map(|i| i % 5 + 1).sum();
    let loaded = store.load::<CreditAccount>(&id.to_string()).await.unwrap();
    assert_eq!(loaded.aggregate.balance(), 1_000 - expected);
    assert_eq!(loaded.sequence, 52);
    let deductions = store
        .read_after(0, 1_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "CreditsDeducted")
        .count();
    assert_eq!(deductions, 50);
}
on_both_stores!(fifty_concurrent_deductions_on_one_account_leave_the_exact_balance);

async fn a_raced_idempotency_key_applies_once_and_replays_the_first_outcome(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 100).await;
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let service = service.clone();
        let id = id.to_string();
        tasks.push(tokio::spawn(async move {
            let c = claim("same-key", "same-body");
            service
                .execute::<CreditAccount>(&id, deduct(3, "same-key"), &ctx(), Some(&c))
                .await
        }));
    }
    let mut written = 0;
    let mut outcomes = HashSet::new();
    for t in tasks {
        let done = t.await.unwrap().expect("a replay is not an error");
        written += done.events.len();
        match done.outcome() {
            Some(AccountEvent::CreditsDeducted(d)) => {
                outcomes.insert((d.deduction_id, d.balance_after, done.position()));
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(written, 1, "exactly one command wrote events");
    assert_eq!(outcomes.len(), 1, "every caller saw the first outcome");
    let loaded = store.load::<CreditAccount>(&id.to_string()).await.unwrap();
    assert_eq!(loaded.aggregate.balance(), 97);

    // The same key with another request is refused.
    let other = claim("same-key", "another-body");
    let refused = service
        .execute::<CreditAccount>(&id.to_string(), deduct(4, "same-key"), &ctx(), Some(&other))
        .await;
    assert!(matches!(refused, Err(ServiceError::KeyReused { .. })));
}
on_both_stores!(a_raced_idempotency_key_applies_once_and_replays_the_first_outcome);

async fn an_old_key_beyond_the_aggregate_window_is_still_caught_by_the_store(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 10_000).await;
    let first = claim("k-0", "k-0");
    let original = service
        .execute::<CreditAccount>(&id.to_string(), deduct(1, "k-0"), &ctx(), Some(&first))
        .await
        .unwrap();
    for i in 1..=ledger::account::IDEMPOTENCY_WINDOW_KEYS + 1 {
        let k = format!("k-{i}");
        let c = claim(&k, &k);
        service
            .execute::<CreditAccount>(&id.to_string(), deduct(1, &k), &ctx(), Some(&c))
            .await
            .unwrap();
    }
    let before = store.load::<CreditAccount>(&id.to_string()).await.unwrap();
    assert!(before.aggregate.outcome_for(&key("k-0")).is_none());
    let again = service
        .execute::<CreditAccount>(&id.to_string(), deduct(1, "k-0"), &ctx(), Some(&first))
        .await
        .unwrap();
    assert!(again.events.is_empty());
    assert_eq!(again.outcome(), original.outcome());
    assert_eq!(again.position(), original.position());
    let after = store.load::<CreditAccount>(&id.to_string()).await.unwrap();
    assert_eq!(after.aggregate.balance(), before.aggregate.balance());
}
on_both_stores!(an_old_key_beyond_the_aggregate_window_is_still_caught_by_the_store);

async fn domain_refusals_write_nothing(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 5).await;
    let head = store.head_position().await.unwrap();
    let c = claim("too-much", "too-much");
    let refused = service
        .execute::<CreditAccount>(&id.to_string(), deduct(6, "too-much"), &ctx(), Some(&c))
        .await;
    match refused {
        Err(ServiceError::Domain(AccountError::InsufficientCredits {
            balance,
            available,
            required,
        })) => assert_eq!((balance, available, required), (5, 5, 6)),
        other => panic!("expected insufficient credits, got {other:?}"),
    }
    assert_eq!(store.head_position().await.unwrap(), head);
    assert!(store
        .find_key(&id.to_string(), "too-much")
        .await
        .unwrap()
        .is_none());
}
on_both_stores!(domain_refusals_write_nothing);

async fn the_catalog_is_seeded_once_even_by_racing_starts(store: &Store) {
    let service = CommandService::new(store.clone());
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let service = service.clone();
        tasks.push(tokio::spawn(async move {
            service
                .execute::<Catalog>(
                    events::CATALOG_ID,
                    CatalogCommand::SeedDefaults {
                        actor: "test".into(),
                        now: now(),
                    },
                    &ctx(),
                    None,
                )
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().expect("seed");
    }
    let catalog = store.load::<Catalog>(events::CATALOG_ID).await.unwrap();
    assert!(catalog.aggregate.is_seeded());
    assert_eq!(catalog.aggregate.plans().count(), 4);
    assert_eq!(catalog.aggregate.packages().count(), 4);
    assert_eq!(catalog.aggregate.cost_version(), 9);
    let seeded = store
        .read_after(0, 1_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.event_type == "CatalogSeeded")
        .count();
    assert_eq!(seeded, 1);
    assert_eq!(SEED_VERSION, 2);
    assert_eq!(catalog.aggregate.seed_version(), SEED_VERSION);
    assert_eq!(catalog.aggregate.payment_methods().count(), 4);
}
on_both_stores!(the_catalog_is_seeded_once_even_by_racing_starts);

async fn stored_events_cannot_be_updated_or_deleted(store: &Store) {
    let service = CommandService::new(store.clone());
    funded_account(&service, 5).await;
    let (update, delete) = match store {
        Store::Postgres(s) => (
            sqlx::query("UPDATE events SET payload = '{}'::json")
                .execute(s.pool())
                .await
                .map(|_| ()),
            sqlx::query("DELETE FROM events")
                .execute(s.pool())
                .await
                .map(|_| ()),
        ),
        Store::Sqlite(s) => (
            sqlx::query("UPDATE events SET payload = '{}'")
                .execute(s.pool())
                .await
                .map(|_| ()),
            sqlx::query("DELETE FROM events")
                .execute(s.pool())
                .await
                .map(|_| ()),
        ),
    };
    assert!(update.unwrap_err().to_string().contains("append-only"));
    assert!(delete.unwrap_err().to_string().contains("append-only"));
    assert_eq!(store.read_after(0, 10).await.unwrap().len(), 2);
    assert_eq!(ACCOUNT_AGGREGATE_TYPE, "account");
}
on_both_stores!(stored_events_cannot_be_updated_or_deleted);
