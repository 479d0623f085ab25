//! The group committer: many accounts per transaction, one account's
//! commands in order, other processes caught by the optimistic check, a full
//! queue refused, idempotency kept.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use cqrs_es::Aggregate;
use events::AccountEvent;
use ledger::CreditAccount;
use store::on_both_stores;
use store::{
    AccountCommitter, BatchCommand, CommandService, CommitterConfig, ServiceError, Store,
    SubmitError,
};

fn committer(store: &Store) -> AccountCommitter {
    AccountCommitter::start(
        CommandService::new(store.clone()),
        CommitterConfig::default(),
    )
}

async fn many_accounts_share_transactions_and_every_balance_is_exact(store: &Store) {
    let service = CommandService::new(store.clone());
    let mut accounts = Vec::new();
    for _ in 0..20 {
        accounts.push(funded_account(&service, 1_000).await);
    }
    let committer = committer(store);
    let mut tasks = Vec::new();
    for i in 0..400usize {
        let committer = committer.clone();
        let id = accounts[i % accounts.len()].to_string();
        tasks.push(tokio::spawn(async move {
            let k = format!("d-{i}");
            committer
                .execute(
                    &id,
                    deduct(1 + (i % 3) as u64, &k),
                    &ctx(),
                    Some(&claim(&k, &k)),
                    &[],
                )
                .await
        }));
    }
    for t in tasks {
        let done = t.await.unwrap().expect("every deduction succeeds");
        assert_eq!(done.events.len(), 1);
        assert!(done.events[0].position > 0);
    }
    let stats = committer.stats();
    let batches = stats.batches.load(Ordering::Relaxed);
    assert_eq!(stats.batched_commands.load(Ordering::Relaxed), 400);
    assert!(
        batches < 400,
        "commands shared commits ({batches} batches for 400)"
    );
    for (n, id) in accounts.iter().enumerate() {
        let spent: i64 = (0..400usize)
            .filter(|i| i % accounts.len() == n)
            .map(|i| 1 + (i % 3) as i64)
            .sum();
        let loaded = store.load::<CreditAccount>(&id.to_string()).await.unwrap();
        assert_eq!(loaded.aggregate.balance(), 1_000 - spent);
        // Each event's balance_after is the running balance: one account's
        // commands were decided in order.
        let mut running = 0;
        for e in store.read_after(0, 10_000).await.unwrap() {
            if e.aggregate_id != id.to_string() {
                continue;
            }
            let event: AccountEvent = serde_json::from_value(e.payload).unwrap();
            running += event.balance_delta();
            if let Some(after) = event.balance_after() {
                assert_eq!(after, running);
            }
        }
    }
}
on_both_stores!(many_accounts_share_transactions_and_every_balance_is_exact);

async fn a_writer_in_another_process_is_caught_and_nothing_is_lost(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 10_000).await;
    let committer = committer(store);
    // `other` stands for a second server process writing the same account.
    let other = CommandService::new(store.clone());
    let mut tasks = Vec::new();
    for i in 0..120usize {
        let id = id.to_string();
        let k = format!("k-{i}");
        if i % 2 == 0 {
            let committer = committer.clone();
            tasks.push(tokio::spawn(async move {
                committer
                    .execute(&id, deduct(1, &k), &ctx(), Some(&claim(&k, &k)), &[])
                    .await
                    .map_err(|e| e.to_string())
                    .map(|d| d.events.len())
            }));
        } else {
            let other = other.clone();
            tasks.push(tokio::spawn(async move {
                other
                    .execute::<CreditAccount>(&id, deduct(1, &k), &ctx(), Some(&claim(&k, &k)))
                    .await
                    .map_err(|e| e.to_string())
                    .map(|d| d.events.len())
            }));
        }
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), Ok(1));
    }
    let loaded = store.load::<CreditAccount>(&id.to_string()).await.unwrap();
    assert_eq!(loaded.aggregate.balance(), 10_000 - 120);
    assert_eq!(loaded.sequence, 2 + 120);
    // And the committer goes on with a fresh view of the account.
    let done = committer
        .execute(
            &id.to_string(),
            deduct(5, "after"),
            &ctx(),
            Some(&claim("after", "after")),
            &[],
        )
        .await
        .unwrap();
    match done.outcome() {
        Some(AccountEvent::CreditsDeducted(d)) => assert_eq!(d.balance_after, 10_000 - 125),
        other => panic!("unexpected {other:?}"),
    }
}
on_both_stores!(a_writer_in_another_process_is_caught_and_nothing_is_lost);

async fn a_key_repeated_in_one_batch_or_long_after_applies_once(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 1_000).await.to_string();
    let committer = committer(store);
    let same = |body: &'static str| {
        let committer = committer.clone();
        let id = id.clone();
        tokio::spawn(async move {
            committer
                .execute(
                    &id,
                    deduct(7, "same"),
                    &ctx(),
                    Some(&claim("same", body)),
                    &[],
                )
                .await
        })
    };
    let (a, b) = (same("body"), same("body"));
    let (a, b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    assert_eq!(a.events.len() + b.events.len(), 1, "one of them wrote");
    assert_eq!(a.outcome(), b.outcome());
    assert_eq!(a.position(), b.position());
    let refused = same("other body").await.unwrap();
    assert!(matches!(
        refused,
        Err(SubmitError::Service(ServiceError::KeyReused { .. }))
    ));
    // Push the key out of the aggregate's window, spend the balance, and
    // retry: the first answer comes back, not a refusal.
    for i in 0..ledger::account::IDEMPOTENCY_WINDOW_KEYS + 1 {
        let k = format!("fill-{i}");
        committer
            .execute(&id, deduct(1, &k), &ctx(), Some(&claim(&k, &k)), &[])
            .await
            .unwrap();
    }
    let left = store
        .load::<CreditAccount>(&id)
        .await
        .unwrap()
        .aggregate
        .balance();
    committer
        .execute(
            &id,
            deduct(left as u64, "drain"),
            &ctx(),
            Some(&claim("drain", "drain")),
            &[],
        )
        .await
        .unwrap();
    let again = same("body").await.unwrap().unwrap();
    assert!(again.events.is_empty());
    assert_eq!(again.outcome(), a.outcome().or(b.outcome()));
    assert_eq!(
        store
            .load::<CreditAccount>(&id)
            .await
            .unwrap()
            .aggregate
            .balance(),
        0
    );
}
on_both_stores!(a_key_repeated_in_one_batch_or_long_after_applies_once);

async fn a_full_queue_is_refused_at_once(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 10_000).await.to_string();
    let committer = AccountCommitter::start(
        CommandService::new(store.clone()),
        CommitterConfig {
            batch_commands_max: 1,
            batch_wait: Duration::from_millis(50),
            queue_commands_max: 1,
            ..CommitterConfig::default()
        },
    );
    let mut tasks = Vec::new();
    for i in 0..50 {
        let committer = committer.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let k = format!("q-{i}");
            committer
                .execute(&id, deduct(1, &k), &ctx(), Some(&claim(&k, &k)), &[])
                .await
        }));
    }
    let mut ok = 0;
    let mut overloaded = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(SubmitError::Overloaded) => overloaded += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(overloaded > 0, "a full queue refuses");
    assert_eq!(ok + overloaded, 50);
    let loaded = store.load::<CreditAccount>(&id).await.unwrap();
    assert_eq!(
        loaded.aggregate.balance(),
        10_000 - ok,
        "refused commands left no trace"
    );
}
on_both_stores!(a_full_queue_is_refused_at_once);

async fn a_long_history_loads_from_the_ledgers_own_snapshot_and_equals_a_full_fold(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 100_000).await.to_string();
    let committer = AccountCommitter::start(
        CommandService::new(store.clone()),
        CommitterConfig {
            snapshot_every_events: 100,
            ..CommitterConfig::default()
        },
    );
    let mut tasks = Vec::new();
    for i in 0..260 {
        let committer = committer.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            let k = format!("s-{i}");
            committer
                .execute(&id, deduct(1, &k), &ctx(), Some(&claim(&k, &k)), &[])
                .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // Snapshots are written after a batch's answers; the committer works in
    // order, so once a later command is answered they are there.
    committer
        .execute(
            &id,
            deduct(1, "sync"),
            &ctx(),
            Some(&claim("sync", "sync")),
            &[],
        )
        .await
        .unwrap();
    let warm = store.load::<CreditAccount>(&id).await.unwrap();
    let full = store.load_full::<CreditAccount>(&id).await.unwrap();
    let from = warm.snapshot_sequence.expect("a snapshot was written");
    // Written at the end of the first batch that took the account 100
    // events past its last snapshot: where exactly depends on how the
    // commands fell into batches, so only its bounds are fixed.
    assert!(from >= 100 && from <= warm.sequence, "snapshot at {from}");
    assert!(
        warm.sequence - from < 100 + 512,
        "the tail is at most one interval and one batch: snapshot at {from}, head {}",
        warm.sequence
    );
    assert_eq!(
        warm.aggregate, full.aggregate,
        "snapshot + tail = full fold"
    );
    assert_eq!(warm.sequence, full.sequence);
    assert_eq!(warm.last_hash, full.last_hash);
    assert_eq!(full.aggregate.balance(), 100_000 - 261);

    // A snapshot that does not read, or of another format, is ignored.
    store
        .execute(
            "UPDATE snapshots SET payload = '{' WHERE aggregate_id = $1",
            &[id.as_str().into()],
        )
        .await
        .unwrap();
    let fallback = store.load::<CreditAccount>(&id).await.unwrap();
    assert_eq!(fallback.snapshot_sequence, None);
    assert_eq!(fallback.aggregate, full.aggregate);
    store
        .save_snapshot(&id, full.sequence, &full.last_hash, &full.aggregate)
        .await
        .unwrap();
    store
        .execute(
            "UPDATE snapshots SET format = 0, sequence = sequence + 1 WHERE aggregate_id = $1",
            &[id.as_str().into()],
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .load::<CreditAccount>(&id)
            .await
            .unwrap()
            .snapshot_sequence,
        None
    );
}
on_both_stores!(a_long_history_loads_from_the_ledgers_own_snapshot_and_equals_a_full_fold);

/// Two accounts opened with the same slug land in one batch (one append):
/// exactly one gets the slug, the other is refused, and the refused one
/// leaves no trace.
async fn one_value_reserved_twice_in_one_batch_goes_to_one_account(store: &Store) {
    let committer = AccountCommitter::start(
        CommandService::new(store.clone()),
        CommitterConfig {
            batch_wait: Duration::from_millis(50),
            ..CommitterConfig::default()
        },
    );
    let slug = store::Reservation {
        scope: "account_slug".into(),
        value: format!("shared-{}", uuid::Uuid::now_v7().simple()),
    };
    let ids: Vec<events::AccountId> = (0..4)
        .map(|_| events::AccountId::from_uuid(uuid::Uuid::now_v7()))
        .collect();
    let tasks: Vec<_> = ids
        .iter()
        .map(|id| {
            let (committer, slug, id) = (committer.clone(), slug.clone(), id.to_string());
            tokio::spawn(async move {
                let command = open(id.parse().unwrap());
                committer
                    .execute(&id, command, &ctx(), None, std::slice::from_ref(&slug))
                    .await
            })
        })
        .collect();
    let mut opened = Vec::new();
    for (id, t) in ids.iter().zip(tasks) {
        match t.await.unwrap() {
            Ok(done) => {
                assert_eq!(done.events.len(), 1);
                opened.push(id.to_string());
            }
            Err(SubmitError::Service(ServiceError::Reserved { value, .. })) => {
                assert_eq!(value, slug.value)
            }
            Err(other) => panic!("unexpected answer: {other:?}"),
        }
    }
    assert_eq!(opened.len(), 1, "exactly one account gets the slug");
    assert_eq!(
        store
            .reservation_owner(&slug.scope, &slug.value)
            .await
            .unwrap(),
        Some(opened[0].clone())
    );
    for id in &ids {
        let events = store
            .stream_sequence(CreditAccount::TYPE, &id.to_string())
            .await
            .unwrap();
        assert_eq!(events, u64::from(opened.contains(&id.to_string())));
    }
}

on_both_stores!(one_value_reserved_twice_in_one_batch_goes_to_one_account);

/// Submits deductions of 1 credit with keys `keys` to `id` at once, so the
/// committer takes them in as few batches as it can.
async fn deduct_at_once(
    committer: &AccountCommitter,
    id: &str,
    keys: Vec<String>,
) -> Vec<Result<store::Executed<CreditAccount>, SubmitError>> {
    let tasks: Vec<_> = keys
        .into_iter()
        .map(|k| {
            let committer = committer.clone();
            let id = id.to_owned();
            tokio::spawn(async move {
                committer
                    .execute(&id, deduct(1, &k), &ctx(), Some(&claim(&k, &k)), &[])
                    .await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

async fn an_old_key_in_a_batch_replays_alone_and_the_rest_stays_batched(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 10_000).await.to_string();
    let committer = committer(store);
    // More keys than the warm window remembers: "old-0" leaves it.
    for i in 0..=ledger::account::IDEMPOTENCY_WINDOW_KEYS {
        let k = format!("old-{i}");
        committer
            .execute(&id, deduct(1, &k), &ctx(), Some(&claim(&k, &k)), &[])
            .await
            .unwrap();
    }
    let before = store.read_after(0, 10_000).await.unwrap().len();
    let alone_before = committer.stats().alone.load(Ordering::Relaxed);
    let mut keys = vec!["old-0".to_owned()];
    keys.extend((0..100).map(|i| format!("new-{i}")));
    let results = deduct_at_once(&committer, &id, keys).await;
    let old = results[0].as_ref().expect("the old key replays");
    assert!(old.events.is_empty(), "a replay writes nothing");
    for r in &results[1..] {
        assert_eq!(r.as_ref().expect("new keys succeed").events.len(), 1);
    }
    assert_eq!(
        store.read_after(0, 10_000).await.unwrap().len(),
        before + 100
    );
    // The 100 new commands were not pushed through one at a time.
    let alone = committer.stats().alone.load(Ordering::Relaxed) - alone_before;
    assert!(alone < 10, "{alone} commands ran alone");
}
on_both_stores!(an_old_key_in_a_batch_replays_alone_and_the_rest_stays_batched);

async fn a_value_the_database_refuses_fails_only_its_own_command(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 10_000).await.to_string();
    let committer = committer(store);
    // What the app layer refuses (a NUL in text), sent straight to the
    // committer with 50 good neighbours on another account.
    let other = funded_account(&service, 10_000).await.to_string();
    let bad = {
        let committer = committer.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let mut command = deduct(1, "nul");
            if let ledger::AccountCommand::DeductCredits(d) = &mut command {
                d.usage.model = Some("gpt\u{0}4".into());
            }
            committer
                .execute(&id, command, &ctx(), Some(&claim("nul", "nul")), &[])
                .await
        })
    };
    let good = deduct_at_once(
        &committer,
        &other,
        (0..50).map(|i| format!("g-{i}")).collect(),
    );
    let (bad, good) = tokio::join!(bad, good);
    for r in good {
        assert_eq!(r.expect("neighbours succeed").events.len(), 1);
    }
    match store.backend() {
        store::Backend::Postgres => {
            assert!(bad.unwrap().is_err(), "the PostgreSQL store refuses NUL")
        }
        store::Backend::Sqlite => assert!(bad.unwrap().is_ok(), "SQLite keeps NUL"),
    }
}
on_both_stores!(a_value_the_database_refuses_fails_only_its_own_command);

// Batches: a caller's commands queued and committed as one unit.

fn batch_of(id: &str, keys: &[(&str, u64)]) -> Vec<BatchCommand> {
    keys.iter()
        .map(|(k, units)| BatchCommand {
            account_id: id.to_owned(),
            command: deduct(*units, k),
            ctx: ctx(),
            // The same key with other units is another request.
            claim: Some(claim(k, &format!("{k}/{units}"))),
        })
        .collect()
}

fn small_batches(store: &Store) -> AccountCommitter {
    AccountCommitter::start(
        CommandService::new(store.clone()),
        CommitterConfig {
            batch_commands_max: 8,
            queue_commands_max: 40,
            ..CommitterConfig::default()
        },
    )
}

async fn a_batch_is_decided_in_order_in_one_transaction_and_answered_per_command(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 10).await.to_string();
    // Larger than a batch of the committer: still taken whole.
    let committer = small_batches(store);
    let keys: Vec<String> = (0..12).map(|i| format!("b-{i}")).collect();
    let items: Vec<(&str, u64)> = keys.iter().map(|k| (k.as_str(), 1)).collect();
    let results = committer
        .execute_batch(batch_of(&id, &items), false)
        .await
        .unwrap();
    assert_eq!(results.len(), 12);
    for (i, r) in results.iter().enumerate() {
        match (i < 10, r) {
            (true, Ok(done)) => match done.outcome() {
                Some(AccountEvent::CreditsDeducted(d)) => {
                    assert_eq!(d.balance_after, 10 - 1 - i as i64)
                }
                other => panic!("item {i}: {other:?}"),
            },
            (
                false,
                Err(ServiceError::Domain(ledger::AccountError::InsufficientCredits { .. })),
            ) => {}
            (_, other) => panic!("item {i}: {other:?}"),
        }
    }
    assert_eq!(committer.stats().batches.load(Ordering::Relaxed), 1);
    assert_eq!(
        committer.stats().batched_commands.load(Ordering::Relaxed),
        10
    );
    let loaded = store.load::<CreditAccount>(&id).await.unwrap();
    assert_eq!(loaded.aggregate.balance(), 0);
    // The same batch again replays the ten and refuses the two again.
    let again = committer
        .execute_batch(batch_of(&id, &items), false)
        .await
        .unwrap();
    assert!(again[..10].iter().all(|r| r
        .as_ref()
        .is_ok_and(|d| d.events.is_empty() && d.replayed.is_some())));
    assert!(again[10..].iter().all(|r| r.is_err()));
    assert_eq!(
        store.load::<CreditAccount>(&id).await.unwrap().sequence,
        loaded.sequence
    );
}
on_both_stores!(a_batch_is_decided_in_order_in_one_transaction_and_answered_per_command);

async fn an_atomic_batch_writes_all_or_nothing(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 10).await.to_string();
    let committer = committer(store);
    let before = store.load::<CreditAccount>(&id).await.unwrap().sequence;
    // 3 + 3 + 5 = 11 > 10: the third does not fit, so none is written.
    let refused = committer
        .execute_batch(batch_of(&id, &[("a-1", 3), ("a-2", 3), ("a-3", 5)]), true)
        .await
        .unwrap();
    assert!(matches!(
        refused[0],
        Err(ServiceError::NotApplied { index: 2 })
    ));
    assert!(matches!(
        refused[1],
        Err(ServiceError::NotApplied { index: 2 })
    ));
    assert!(matches!(
        refused[2],
        Err(ServiceError::Domain(
            ledger::AccountError::InsufficientCredits { .. }
        ))
    ));
    let loaded = store.load::<CreditAccount>(&id).await.unwrap();
    assert_eq!(loaded.sequence, before);
    assert_eq!(loaded.aggregate.balance(), 10);
    // The committer's warm state did not keep the refused unit's effects.
    let fits = committer
        .execute_batch(batch_of(&id, &[("a-1", 3), ("a-2", 3), ("a-3", 4)]), true)
        .await
        .unwrap();
    assert!(fits
        .iter()
        .all(|r| r.as_ref().is_ok_and(|d| d.events.len() == 1)));
    assert_eq!(
        store
            .load::<CreditAccount>(&id)
            .await
            .unwrap()
            .aggregate
            .balance(),
        0
    );
    // A retry replays every command.
    let replayed = committer
        .execute_batch(batch_of(&id, &[("a-1", 3), ("a-2", 3), ("a-3", 4)]), true)
        .await
        .unwrap();
    assert!(replayed
        .iter()
        .all(|r| r.as_ref().is_ok_and(|d| d.replayed.is_some())));
    // A key used with another request refuses the unit like a domain refusal.
    let reused = committer
        .execute_batch(batch_of(&id, &[("a-1", 9)]), true)
        .await
        .unwrap();
    assert!(matches!(reused[0], Err(ServiceError::KeyReused { .. })));
    // Atomic units must stay on one account.
    let other = funded_account(&service, 10).await.to_string();
    let mut mixed = batch_of(&id, &[("m-1", 1)]);
    mixed.extend(batch_of(&other, &[("m-2", 1)]));
    assert!(matches!(
        committer.execute_batch(mixed, true).await,
        Err(SubmitError::AtomicAcrossAccounts)
    ));
}
on_both_stores!(an_atomic_batch_writes_all_or_nothing);

async fn an_atomic_batch_repeating_a_key_or_meeting_an_old_one_replays_it(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 10_000).await.to_string();
    let committer = committer(store);
    // More keys than the warm window remembers: "old-0" leaves it.
    for i in 0..=ledger::account::IDEMPOTENCY_WINDOW_KEYS {
        let k = format!("old-{i}");
        committer
            .execute_batch(batch_of(&id, &[(&k, 1)]), false)
            .await
            .unwrap()
            .remove(0)
            .unwrap();
    }
    let balance = store
        .load::<CreditAccount>(&id)
        .await
        .unwrap()
        .aggregate
        .balance();
    let results = committer
        .execute_batch(
            batch_of(&id, &[("x-1", 2), ("old-0", 1), ("x-1", 2), ("x-2", 3)]),
            true,
        )
        .await
        .unwrap();
    let events: Vec<usize> = results
        .iter()
        .map(|r| r.as_ref().map(|d| d.events.len()).unwrap_or(99))
        .collect();
    assert_eq!(events, vec![1, 0, 0, 1], "{results:?}");
    assert!(results[1].as_ref().unwrap().replayed.is_some());
    assert!(results[2].as_ref().unwrap().replayed.is_some());
    assert_eq!(
        store
            .load::<CreditAccount>(&id)
            .await
            .unwrap()
            .aggregate
            .balance(),
        balance - 5
    );
    // The same key twice with different requests: nothing is written.
    let results = committer
        .execute_batch(batch_of(&id, &[("y-1", 2), ("y-1", 3)]), true)
        .await
        .unwrap();
    assert!(matches!(
        results[0],
        Err(ServiceError::NotApplied { index: 1 })
    ));
    assert!(matches!(results[1], Err(ServiceError::KeyReused { .. })));
    assert_eq!(
        store
            .load::<CreditAccount>(&id)
            .await
            .unwrap()
            .aggregate
            .balance(),
        balance - 5
    );
}
on_both_stores!(an_atomic_batch_repeating_a_key_or_meeting_an_old_one_replays_it);

async fn atomic_batches_racing_another_process_stay_all_or_nothing(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 1_000).await.to_string();
    let committer = committer(store);
    let other = CommandService::new(store.clone());
    let mut tasks = Vec::new();
    for i in 0..30usize {
        let id = id.clone();
        if i % 3 == 0 {
            let other = other.clone();
            tasks.push(tokio::spawn(async move {
                let k = format!("o-{i}");
                other
                    .execute::<CreditAccount>(&id, deduct(7, &k), &ctx(), Some(&claim(&k, &k)))
                    .await
                    .map(|d| d.events.len() as i64 * 7)
                    .unwrap_or(0)
            }));
        } else {
            let committer = committer.clone();
            tasks.push(tokio::spawn(async move {
                let keys: Vec<String> = (0..5).map(|j| format!("u-{i}-{j}")).collect();
                let items: Vec<(&str, u64)> = keys.iter().map(|k| (k.as_str(), 10)).collect();
                let results = committer
                    .execute_batch(batch_of(&id, &items), true)
                    .await
                    .unwrap();
                let written = results.iter().filter(|r| r.is_ok()).count();
                assert!(written == 0 || written == 5, "{results:?}");
                written as i64 * 10
            }));
        }
    }
    let mut spent = 0;
    for t in tasks {
        spent += t.await.unwrap();
    }
    let loaded = store.load::<CreditAccount>(&id).await.unwrap();
    assert_eq!(loaded.aggregate.balance(), 1_000 - spent);
    assert!(loaded.aggregate.balance() >= 0);
}
on_both_stores!(atomic_batches_racing_another_process_stay_all_or_nothing);

async fn a_batch_counts_its_commands_against_the_queue(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = funded_account(&service, 1_000).await.to_string();
    let committer = small_batches(store);
    let keys: Vec<String> = (0..41).map(|i| format!("q-{i}")).collect();
    let items: Vec<(&str, u64)> = keys.iter().map(|k| (k.as_str(), 1)).collect();
    assert!(matches!(
        committer.execute_batch(batch_of(&id, &items), false).await,
        Err(SubmitError::Overloaded)
    ));
    // Within the bound it goes through, and the count is given back.
    for _ in 0..3 {
        let results = committer
            .execute_batch(batch_of(&id, &items[..40]), false)
            .await
            .unwrap();
        assert!(results.iter().all(|r| r.is_ok()));
    }
    assert_eq!(
        store
            .load::<CreditAccount>(&id)
            .await
            .unwrap()
            .aggregate
            .balance(),
        1_000 - 40
    );
    // Units that do not fit the committer's batch wait for the next one
    // (carried over): counted out of the queue once, never twice.
    let mut tasks = Vec::new();
    for t in 0..8 {
        let committer = committer.clone();
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..5 {
                let keys: Vec<String> = (0..5).map(|i| format!("c-{t}-{round}-{i}")).collect();
                let items: Vec<(&str, u64)> = keys.iter().map(|k| (k.as_str(), 1)).collect();
                let results = committer
                    .execute_batch(batch_of(&id, &items), false)
                    .await
                    .expect("within the queue's bound");
                assert!(results.iter().all(|r| r.is_ok()));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let keys: Vec<String> = (0..40).map(|i| format!("z-{i}")).collect();
    let items: Vec<(&str, u64)> = keys.iter().map(|k| (k.as_str(), 1)).collect();
    let results = committer
        .execute_batch(batch_of(&id, &items), false)
        .await
        .expect("the queue is empty again: a full unit fits");
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(
        store
            .load::<CreditAccount>(&id)
            .await
            .unwrap()
            .aggregate
            .balance(),
        1_000 - 40 - 200 - 40
    );
}
on_both_stores!(a_batch_counts_its_commands_against_the_queue);

async fn sharded_committers_keep_each_accounts_order_and_every_balance(store: &Store) {
    let service = CommandService::new(store.clone());
    let mut accounts = Vec::new();
    for _ in 0..12 {
        accounts.push(funded_account(&service, 10_000).await.to_string());
    }
    let committer = AccountCommitter::start(
        CommandService::new(store.clone()),
        CommitterConfig {
            shards: 2,
            ..CommitterConfig::default()
        },
    );
    let mut tasks = Vec::new();
    for t in 0..24usize {
        let committer = committer.clone();
        let accounts = accounts.clone();
        tasks.push(tokio::spawn(async move {
            let mut spent = vec![0i64; accounts.len()];
            for round in 0..5usize {
                // A cross-account batch: split by shard, each item answered.
                let keys: Vec<String> = (0..6).map(|i| format!("s-{t}-{round}-{i}")).collect();
                let batch: Vec<BatchCommand> = keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        let a = (t + round + i) % accounts.len();
                        spent[a] += 1 + i as i64;
                        BatchCommand {
                            account_id: accounts[a].clone(),
                            command: deduct(1 + i as u64, k),
                            ctx: ctx(),
                            claim: Some(claim(k, k)),
                        }
                    })
                    .collect();
                let results = committer.execute_batch(batch, false).await.unwrap();
                assert!(results
                    .iter()
                    .all(|r| r.as_ref().is_ok_and(|d| d.events.len() == 1)));
            }
            spent
        }));
    }
    let mut spent = vec![0i64; accounts.len()];
    for t in tasks {
        for (a, s) in t.await.unwrap().into_iter().enumerate() {
            spent[a] += s;
        }
    }
    for (a, id) in accounts.iter().enumerate() {
        let loaded = store.load::<CreditAccount>(id).await.unwrap();
        assert_eq!(loaded.aggregate.balance(), 10_000 - spent[a]);
    }
    // Each account's events carry its running balance: decided in order.
    let mut running: std::collections::HashMap<String, i64> = Default::default();
    for e in store.read_after(0, 100_000).await.unwrap() {
        let event: AccountEvent = serde_json::from_value(e.payload).unwrap();
        let r = running.entry(e.aggregate_id.clone()).or_default();
        *r += event.balance_delta();
        if let Some(after) = event.balance_after() {
            assert_eq!(after, *r);
        }
    }
    assert!(committer.stats().batches.load(Ordering::Relaxed) > 1);
}
on_both_stores!(sharded_committers_keep_each_accounts_order_and_every_balance);
