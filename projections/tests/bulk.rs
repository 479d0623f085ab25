//! The rebuild fast path (`projections::bulk`) on PostgreSQL and SQLite: it
//! must give exactly the rows the projector gives event by event.

mod common;

use common::*;
use events::GrantSource;
use projections::bulk::{copy_text, rebuild_tables, Decoded, ReadModelFold, Streamed, Table};
use projections::ReadModels;
use store::{on_both_stores, CommandService, Store};
use uuid::Uuid;

async fn expiry_schedule(store: &Store) -> Vec<String> {
    store
        .fetch_all(
            "SELECT * FROM expiry_schedule ORDER BY account_id, item_id",
            &[],
        )
        .await
        .expect("read the schedule")
        .iter()
        .map(|r| r.to_json().expect("row").to_string())
        .collect()
}

async fn the_bulk_rebuild_gives_the_rows_of_the_live_projection(store: &Store) {
    let service = CommandService::new(store.clone());
    let (p, handle) = projector(store).await;
    let script = Script {
        service: &service,
        projector: Some(&p),
    };
    varied_history(&script, 3, 16).await;
    let models = ReadModels::new(store.clone());
    let live = models.dump().await.unwrap();
    let live_schedule = expiry_schedule(store).await;
    assert!(live.len() > 100, "the history fills the read models");

    let n = p.rebuild_bulk().await.expect("bulk rebuild");
    assert_eq!(n as i64, store.head_position().await.unwrap());
    assert_eq!(handle.position(), store.head_position().await.unwrap());
    assert_eq!(models.dump().await.unwrap(), live);
    assert_eq!(expiry_schedule(store).await, live_schedule);

    // And again over its own output; then the projector carries on from it.
    p.rebuild_bulk().await.expect("second bulk rebuild");
    assert_eq!(models.dump().await.unwrap(), live);
    let id = events::AccountId::new_v7();
    script
        .run(
            id,
            open_cmd(
                id,
                &Opening {
                    slug: "later",
                    ..Opening::default()
                },
                at("2026-05-01T00:00:00Z"),
            ),
        )
        .await;
    script
        .run(
            id,
            grant_cmd(
                Uuid::now_v7(),
                5,
                GrantSource::Promotional,
                Some(at("2026-06-01T00:00:00Z")),
                None,
                at("2026-05-01T00:01:00Z"),
            ),
        )
        .await;
    let after = models.dump().await.unwrap();
    let schedule = expiry_schedule(store).await;
    assert_eq!(
        schedule.len(),
        1,
        "the promotional grant's expiry is scheduled"
    );
    p.rebuild().await.expect("per-event rebuild");
    assert_eq!(models.dump().await.unwrap(), after);
    p.rebuild_bulk().await.expect("bulk rebuild");
    assert_eq!(models.dump().await.unwrap(), after);
    assert_eq!(expiry_schedule(store).await, schedule);
}
on_both_stores!(the_bulk_rebuild_gives_the_rows_of_the_live_projection);

/// The live projector's batches, of any sizes, give the rows of the one
/// fold over the whole log: rows a batch starts from are seeded from what
/// earlier batches wrote, and an account's events are split anywhere.
async fn live_batches_of_random_sizes_give_the_rows_of_a_bulk_rebuild(store: &Store) {
    let service = CommandService::new(store.clone());
    let script = Script {
        service: &service,
        projector: None,
    };
    varied_history(&script, 4, 24).await;
    let (p, handle) = projector(store).await;
    let models = ReadModels::new(store.clone());
    p.rebuild_bulk().await.expect("bulk rebuild");
    let bulk = models.dump().await.unwrap();
    let bulk_schedule = expiry_schedule(store).await;
    assert!(bulk.len() > 200, "the history fills the read models");
    // Every account's team: its owner, three invitations (accepted,
    // revoked, left to expire) and a member added directly.
    let members: Vec<&String> = bulk
        .iter()
        .filter(|l| l.starts_with("rm_team_members"))
        .collect();
    assert_eq!(members.len(), 4 * 5, "{members:#?}");
    for status in ["\"active\"", "\"revoked\"", "\"invited\""] {
        assert!(
            members.iter().any(|l| l.contains(status)),
            "a {status} row: {members:#?}"
        );
    }
    for _ in 0..3 {
        let seed = reproject_in_random_batches(&p).await;
        assert_eq!(handle.position(), store.head_position().await.unwrap());
        assert_eq!(
            models.dump().await.unwrap(),
            bulk,
            "random batches, seed {seed}"
        );
        assert_eq!(expiry_schedule(store).await, bulk_schedule, "seed {seed}");
    }
}
on_both_stores!(live_batches_of_random_sizes_give_the_rows_of_a_bulk_rebuild);

async fn a_partial_rebuild_refills_its_tables_up_to_the_projector_checkpoint(store: &Store) {
    let service = CommandService::new(store.clone());
    let script = Script {
        service: &service,
        projector: None,
    };
    varied_history(&script, 2, 12).await;
    catch_up(store).await;
    let models = ReadModels::new(store.clone());
    let live = models.dump().await.unwrap();
    // Events the projector has not reached yet must stay out of a partial
    // rebuild, or its tables would run ahead of the others.
    varied_account(&script, 7, 3).await;
    let mut pages = 0;
    rebuild_tables(
        store,
        &[Table::Balances, Table::Transactions, Table::UsageDaily],
        |_, _| pages += 1,
    )
    .await
    .expect("partial rebuild");
    assert!(pages > 0);
    assert_eq!(models.dump().await.unwrap(), live);
    assert!(Table::parse("usage_daily") == Some(Table::UsageDaily));
    assert!(Table::parse("rm_balances") == Some(Table::Balances));
    assert!(Table::parse("nope").is_none());
}
on_both_stores!(a_partial_rebuild_refills_its_tables_up_to_the_projector_checkpoint);

/// The fold's two ways of making the insert-only rows (rows for SQLite and
/// diffs, COPY text for PostgreSQL) give the same rows: the text made while
/// folding is the COPY text of the rows, tabs, newlines and backslashes in
/// reasons and metadata included.
async fn rows_and_copy_text_of_the_fold_agree(store: &Store) {
    let service = CommandService::new(store.clone());
    let script = Script {
        service: &service,
        projector: None,
    };
    varied_history(&script, 3, 24).await;
    let head = store.head_position().await.unwrap();
    let log = store.log_page(0, head, 10_000, false).await.unwrap();
    assert_eq!(log.len() as i64, head, "one page holds the history");
    let (mut rows, mut text) = (ReadModelFold::new(), ReadModelFold::new());
    text.stream_copy_text();
    for e in &log {
        let decoded = Decoded::parse(e).unwrap();
        rows.apply(e, &decoded).unwrap();
        text.apply(e, &decoded).unwrap();
    }
    let mut made = Vec::new();
    for table in [Table::Transactions, Table::Usage, Table::CostHistory] {
        let rows = rows.take_streamed(table);
        assert!(!rows.is_empty(), "{table:?} has rows");
        let Streamed::Copy(text) = text.take_streamed_text(table) else {
            panic!("{table:?}: rows, not COPY text");
        };
        let text = String::from_utf8(text).unwrap();
        assert_eq!(
            text,
            String::from_utf8(copy_text(&rows)).unwrap(),
            "{table:?}"
        );
        made.push(text);
    }
    // A reason's raw tab, CR, LF and backslash, and the backslashes of a
    // JSON text's escapes, are escaped once each.
    assert!(
        made[0].contains("staff correction\\tticket 7\\r\\nsee C:\\\\notes"),
        "{}",
        made[0]
    );
    assert!(
        made[1].contains(r#"tab\\there\\nline \\\\ end"#),
        "{}",
        made[1]
    );
}
on_both_stores!(rows_and_copy_text_of_the_fold_agree);
