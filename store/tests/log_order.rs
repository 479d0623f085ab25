//! The global log never lets a tailing reader skip an event whose
//! transaction commits after a higher position became visible.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use store::testing::TestDb;
use store::Store;
use tokio::sync::Mutex;

async fn insert_raw(conn: &mut sqlx::PgConnection, stream: &str) {
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) \
         VALUES ('probe', $1, 1, 'Probed', '1.0', '{}'::json, '{}'::json)",
    )
    .bind(stream)
    .execute(conn)
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tailing_reader_never_skips_a_transaction_that_commits_late() {
    let db = TestDb::postgres()
        .await
        .expect("PostgreSQL must be running for the store tests");
    let Store::Postgres(pg) = &db.store else {
        unreachable!("a postgres test database")
    };
    let pool = pg.pool().clone();

    // A reader that tails the log by position, as a projector does.
    let seen = Arc::new(Mutex::new(Vec::<(i64, String)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, seen, stop) = (db.store.clone(), seen.clone(), stop.clone());
        tokio::spawn(async move {
            let mut checkpoint = 0;
            while !stop.load(Ordering::SeqCst) {
                for e in store.read_after(checkpoint, 100).await.unwrap() {
                    checkpoint = e.position;
                    seen.lock().await.push((e.position, e.aggregate_id));
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };

    // Transaction A takes its position first and commits last.
    let mut a = pool.begin().await.unwrap();
    insert_raw(&mut a, "first").await;

    // Transaction B starts after A took its position and commits at once.
    let b = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut b = pool.begin().await.unwrap();
            insert_raw(&mut b, "second").await;
            b.commit().await.unwrap();
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !b.is_finished(),
        "B must wait for A before it can take a higher position"
    );
    assert!(seen.lock().await.is_empty(), "nothing is committed yet");

    a.commit().await.unwrap();
    b.await.unwrap();
    for _ in 0..500 {
        if seen.lock().await.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::SeqCst);
    reader.await.unwrap();

    let seen = seen.lock().await.clone();
    assert_eq!(
        seen.iter().map(|(_, s)| s.as_str()).collect::<Vec<_>>(),
        vec!["first", "second"],
        "the reader saw both events, in commit order"
    );
    assert!(seen[0].0 < seen[1].0);
    db.cleanup().await.unwrap();
}
