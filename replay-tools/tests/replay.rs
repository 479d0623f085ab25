//! The replay tools on PostgreSQL and SQLite: as-of balances of a scripted
//! history, verify on clean and tampered logs, rebuild against the live
//! projection, and the audit pack.

mod common;

use common::*;
use projections::bulk::Table;
use projections::ReadModels;
use replay_tools::asof::balance_as_of;
use replay_tools::export::{export, verify_pack, Verification};
use replay_tools::rebuild::{progress_bar, rebuild, Selection};
use replay_tools::time::{parse_instant, DateEnd};
use replay_tools::verify::verify;
use replay_tools::ReplayError;
use store::{on_both_stores, CommandService, Store};

/// (as of, balance, held, available) — computed by hand from the table in
/// `common::scripted_account`.
const EXPECTED: [(&str, i64, i64, i64); 11] = [
    ("2026-03-01T00:30:00Z", 0, 0, 0),
    ("2026-03-02T12:00:00Z", 140, 0, 140),
    ("2026-03-03T10:30:00Z", 140, 30, 110),
    // H1 lapsed at 11:00; its release was written on 03-04, stamped 11:00.
    ("2026-03-03T11:30:00Z", 140, 0, 140),
    ("2026-03-04T09:15:00Z", 140, 20, 120),
    ("2026-03-04T10:00:00Z", 140, 0, 140),
    // Lot B expired at 03-05 00:00 (40 credits); the event came on 03-06.
    ("2026-03-05T12:00:00Z", 100, 0, 100),
    ("2026-03-06T13:00:00Z", 90, 0, 90),
    ("2026-03-07T10:10:00Z", 115, 15, 100),
    // H3 lapsed at 10:15 and nothing was ever written for it.
    ("2026-03-07T11:00:00Z", 115, 0, 115),
    // A plain date is the end of that day: lot C (25) expired on 03-08.
    ("2026-03-09", 90, 0, 90),
];

async fn check_as_of(store: &Store, id: &str) -> Vec<Option<i64>> {
    let mut checkpoints_used = Vec::new();
    for (when, balance, held, available) in EXPECTED {
        let t = parse_instant(when, DateEnd::End).unwrap();
        let b = balance_as_of(store, id, t)
            .await
            .unwrap_or_else(|e| panic!("as of {when}: {e}"));
        assert_eq!(
            (b.balance, b.held, b.available),
            (balance, held, available),
            "as of {when}"
        );
        checkpoints_used.push(b.checkpoint_sequence);
    }
    checkpoints_used
}

async fn as_of_balances_match_the_hand_computed_history(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = scripted_account(&service, "asof").await.to_string();
    let used = check_as_of(store, &id).await;
    assert!(used.iter().all(Option::is_none), "no checkpoints yet");

    let late = balance_as_of(
        store,
        &id,
        parse_instant("2026-03-09", DateEnd::End).unwrap(),
    )
    .await
    .unwrap();
    let implied: Vec<_> = late
        .implied_expiries
        .iter()
        .map(|e| (e.event_type.as_str(), e.credits, e.at.as_str()))
        .collect();
    assert_eq!(
        implied,
        [
            ("HoldReleased", 15, "2026-03-07T10:15:00.000000Z"),
            ("CreditsExpired", 25, "2026-03-08T00:00:00.000000Z"),
        ]
    );
    assert_eq!(late.lots.len(), 1, "only lot A is left");
    assert_eq!(late.lots[0].remaining, 90);

    // Before the account opened, and an account that does not exist.
    let early = balance_as_of(
        store,
        &id,
        parse_instant("2026-02-28", DateEnd::End).unwrap(),
    )
    .await;
    assert!(
        matches!(early, Err(ReplayError::NotOpenYet { .. })),
        "{early:?}"
    );
    let unknown = balance_as_of(store, "no-such-account", chrono::Utc::now()).await;
    assert!(
        matches!(unknown, Err(ReplayError::UnknownAccount(_))),
        "{unknown:?}"
    );

    // With a checkpoint every 3 events the answers are the same, and the
    // later instants start from one.
    let selection = Selection {
        tables: Vec::new(),
        checkpoints: true,
        checkpoint_every: 3,
    };
    let outcome = rebuild(store, &selection, &progress_bar()).await.unwrap();
    assert_eq!(
        outcome.checkpoints, 4,
        "12 events: checkpoints at 3, 6, 9, 12"
    );
    let used = check_as_of(store, &id).await;
    assert_eq!(used[0], None);
    assert_eq!(used[10], Some(12));
    assert!(used.iter().flatten().count() >= 8, "{used:?}");
    // Nothing has projected the log yet: verify says the read models are
    // stuck behind it, not clean.
    let report = verify(store, None).await.unwrap();
    assert!(!report.ok);
    assert_eq!(report.discrepancies.len(), 1, "{:#?}", report.discrepancies);
    assert_eq!(report.discrepancies[0].kind, "projector");
    // Once they follow it, verify is clean.
    let (projector, _) = projections::Projector::new(store.clone()).await.unwrap();
    projector.catch_up().await.unwrap();
    let report = verify(store, None).await.unwrap();
    assert!(report.ok, "{:#?}", report.discrepancies);
    assert_eq!(report.checkpoints_checked, 4);

    // A checkpoint edited behind the tools' back is reported by verify, and
    // as-of still answers from the events.
    store
        .execute(
            "UPDATE replay_checkpoints SET payload = replace(payload, '\"balance\":140', '\"balance\":1140') \
             WHERE sequence = 6",
            &[],
        )
        .await
        .unwrap();
    store
        .execute(
            "UPDATE replay_checkpoints SET last_hash = 'feed' WHERE sequence = 9",
            &[],
        )
        .await
        .unwrap();
    let report = verify(store, Some(&id)).await.unwrap();
    assert!(!report.ok);
    let lines: Vec<String> = report
        .discrepancies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(
        lines[0].contains("replay_checkpoints account/") && lines[0].contains("sequence 6 state"),
        "{lines:#?}"
    );
    assert!(lines[1].contains("sequence 9 last_hash"), "{lines:#?}");
    let used = check_as_of(store, &id).await;
    assert!(
        !used.contains(&Some(9)),
        "a checkpoint off the chain is not used: {used:?}"
    );
}
on_both_stores!(as_of_balances_match_the_hand_computed_history);

async fn verify_is_clean_then_names_the_tampered_event_and_row(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = scripted_account(&service, "verify").await.to_string();
    let other = busy_account(&service, "busy", 30).await.to_string();
    project(store).await;

    let report = verify(store, None).await.unwrap();
    assert!(report.ok, "{:#?}", report.discrepancies);
    assert_eq!(report.accounts, 2);
    assert_eq!(report.events, store.head_position().await.unwrap() as u64);
    assert!(report.read_model_rows_checked > 40);
    assert!(verify(store, Some(&id)).await.unwrap().ok);

    // The first deduction (sequence 4) said 10 credits; make it 1.
    let stored = store.event_at("account", &id, 4).await.unwrap().unwrap();
    let meta = replay_tools::chain::metadata(&stored).unwrap();
    tamper_credits(store, &id, 4, 1).await;
    let report = verify(store, None).await.unwrap();
    assert!(!report.ok);
    let lines: Vec<String> = report
        .discrepancies
        .iter()
        .map(ToString::to_string)
        .collect();
    let chain = lines
        .iter()
        .find(|l| l.starts_with("chain "))
        .unwrap_or_else(|| panic!("a chain discrepancy in {lines:#?}"));
    assert!(
        chain.contains(&format!(
            "event account/{id} sequence 4 (position {}, event id {}",
            stored.position, meta.event_id
        )),
        "{chain}"
    );
    assert!(
        chain.contains(&format!("found hash {}", meta.hash)),
        "{chain}"
    );
    // The fold sees the balance_after that no longer adds up, and the
    // transaction row the projector wrote from the original event.
    assert!(
        lines.iter().any(|l| l.starts_with("fold ")
            && l.contains("sequence 4")
            && l.contains("balance_after 140")),
        "{lines:#?}"
    );
    assert!(
        lines.iter().any(|l| l.contains(&format!(
            "row rm_transactions/{} column amount",
            stored.position
        ))),
        "{lines:#?}"
    );
    // Only this account is affected.
    assert!(lines.iter().all(|l| !l.contains(&other)), "{lines:#?}");
    assert!(verify(store, Some(&other)).await.unwrap().ok);

    // As-of and history refuse to answer from a broken chain.
    let asof = balance_as_of(store, &id, chrono::Utc::now()).await;
    assert!(matches!(asof, Err(ReplayError::Tampered(_))), "{asof:?}");
}
on_both_stores!(verify_is_clean_then_names_the_tampered_event_and_row);

async fn verify_names_a_read_model_row_edited_behind_the_projector(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = scripted_account(&service, "rows").await.to_string();
    project(store).await;
    store
        .execute(
            "UPDATE rm_balances SET balance = balance + 7 WHERE account_id = $1",
            &[id.clone().into()],
        )
        .await
        .unwrap();
    store
        .execute(
            "DELETE FROM rm_usage WHERE account_id = $1",
            &[id.clone().into()],
        )
        .await
        .unwrap();
    let report = verify(store, Some(&id)).await.unwrap();
    let lines: Vec<String> = report
        .discrepancies
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        lines.contains(&format!(
            "read_model row rm_balances/{id} column balance: expected 115, found 122"
        )),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!(
            "read_model row rm_balances/{id} column balance (against the account's fold): expected 115, found 122"
        )),
        "{lines:#?}"
    );
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("read_model row rm_usage/") && l.ends_with("found no row"))
            .count(),
        2,
        "{lines:#?}"
    );
}
on_both_stores!(verify_names_a_read_model_row_edited_behind_the_projector);

async fn rebuild_gives_the_live_read_models_and_verifiable_checkpoints(store: &Store) {
    let service = CommandService::new(store.clone());
    scripted_account(&service, "one").await;
    busy_account(&service, "two", 25).await;
    project(store).await;
    let models = ReadModels::new(store.clone());
    let live = models.dump().await.unwrap();
    assert!(live.len() > 30);

    let mut all = Selection::parse(None).unwrap();
    all.checkpoint_every = 10;
    let outcome = rebuild(store, &all, &progress_bar()).await.unwrap();
    assert_eq!(outcome.events as i64, store.head_position().await.unwrap());
    assert_eq!(
        outcome.checkpoints, 3,
        "the busy account's 27 events: 10, 20; the scripted 12: 10"
    );
    assert_eq!(models.dump().await.unwrap(), live);
    let report = verify(store, None).await.unwrap();
    assert!(report.ok, "{:#?}", report.discrepancies);
    assert_eq!(report.checkpoints_checked, 3);

    // One table on its own.
    let one = Selection::parse(Some("usage_daily")).unwrap();
    assert_eq!(one.tables, [Table::UsageDaily]);
    rebuild(store, &one, &progress_bar()).await.unwrap();
    assert_eq!(models.dump().await.unwrap(), live);
    assert!(matches!(
        Selection::parse(Some("nope")),
        Err(ReplayError::UnknownProjection(..))
    ));
}
on_both_stores!(rebuild_gives_the_live_read_models_and_verifiable_checkpoints);

async fn export_writes_a_pack_that_verifies_offline(store: &Store) {
    let service = CommandService::new(store.clone());
    let id = scripted_account(&service, "pack").await.to_string();
    project(store).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pack");
    let (v, report) = export(store, &id, &out).await.unwrap();
    assert!(report.ok, "{:#?}", report.discrepancies);

    for f in [
        "events.jsonl",
        "history.csv",
        "verification.json",
        "README.md",
    ] {
        assert!(out.join(f).is_file(), "{f} is in the pack");
    }
    let jsonl = std::fs::read_to_string(out.join("events.jsonl")).unwrap();
    assert_eq!(jsonl.lines().count(), 12);
    assert_eq!(v.events, 12);
    for line in jsonl.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(e["metadata"]["hash"].is_string() && e["payload"].is_object());
    }

    let csv = std::fs::read_to_string(out.join("history.csv")).unwrap();
    let rows: Vec<&str> = csv.split("\r\n").collect();
    assert_eq!(
        rows[0],
        "position,sequence,occurred_at,recorded_at,event_type,reference_id,amount,held_change,\
         balance,held,available,description,actor,event_id"
    );
    assert_eq!(
        rows.len(),
        12 + 2,
        "header, 12 rows, and the empty rest after the last CRLF"
    );
    assert!(
        csv.contains(",25,0,115,0,115,\"Promo \"\"spring\"\", 2026\",test (developer),"),
        "RFC 4180 quoting: {csv}"
    );

    let text = std::fs::read_to_string(out.join("verification.json")).unwrap();
    let parsed: Verification = serde_json::from_str(&text).unwrap();
    let last = store.event_at("account", &id, 12).await.unwrap().unwrap();
    let meta = replay_tools::chain::metadata(&last).unwrap();
    assert_eq!(parsed.chain_head_hash, meta.hash);
    assert_eq!(
        (parsed.last_sequence, parsed.last_position),
        (12, last.position)
    );
    assert_eq!(parsed.history_rows, 12);
    assert!(parsed.verify_ok);
    assert_eq!(parsed.verify["discrepancy_count"], 0);
    assert_eq!(parsed.files.len(), 2);
    // Lot C and hold H3 lapsed long ago: the balance now is lot A's 90.
    assert_eq!((parsed.balance, parsed.held, parsed.available), (90, 0, 90));
    let readme = std::fs::read_to_string(out.join("README.md")).unwrap();
    assert!(readme.contains("ledger-replay verify --pack"), "{readme}");
    assert!(readme.contains(&meta.hash));

    assert_eq!(verify_pack(&out).unwrap(), []);
    // An edited line in the pack is found without any database.
    let edited = jsonl.replacen(
        "\"credits\":10,\"deduction_id\"",
        "\"credits\":1,\"deduction_id\"",
        1,
    );
    assert_ne!(edited, jsonl);
    std::fs::write(out.join("events.jsonl"), edited).unwrap();
    let found = verify_pack(&out).unwrap();
    assert!(!found.is_empty());
    assert!(found[0].to_string().contains("sequence 4"), "{found:#?}");
}
on_both_stores!(export_writes_a_pack_that_verifies_offline);

/// Runs a team command (seeded with the account's owner) that must succeed.
async fn team(
    service: &CommandService,
    id: events::AccountId,
    action: ledger::TeamAction,
    now: &str,
) {
    let command = ledger::TeamCommand {
        seed: Some(ledger::team::Seed {
            member_id: uuid::Uuid::from_u128(1),
            owner_user_id: "owner-1".into(),
            email: "owner@acme.test".into(),
        }),
        action,
        now: at(now),
    };
    service
        .execute::<ledger::Team>(&id.to_string(), command, &store::testing::context(), None)
        .await
        .expect("team command");
}

async fn history_lists_membership_changes_between_credit_entries_and_packs_stay_verifiable(
    store: &Store,
) {
    use events::MemberRole;
    use ledger::TeamAction;
    use replay_tools::history::{for_each_entry, Streams};
    let service = CommandService::new(store.clone());
    let id = scripted_account(&service, "teams").await;
    team(&service, id, TeamAction::Start, "2026-03-09T10:00:00Z").await;
    team(
        &service,
        id,
        TeamAction::Invite {
            member_id: uuid::Uuid::from_u128(2),
            email: "bob@acme.test".into(),
            role: MemberRole::Editor,
            token_hash: "h".into(),
            expires_at: at("2026-03-16T10:00:00Z"),
            by: "owner-1".into(),
            by_role: Some(MemberRole::Owner),
            seats: None,
        },
        "2026-03-09T10:01:00Z",
    )
    .await;
    exec(&service, id, deduct10(at("2026-03-09T10:02:00Z"))).await;
    team(
        &service,
        id,
        TeamAction::Accept {
            token_hash: "h".into(),
            user_id: "bob".into(),
        },
        "2026-03-09T10:03:00Z",
    )
    .await;
    let account = id.to_string();
    let mut all = Vec::new();
    for_each_entry(store, &account, Streams::CreditsAndTeam, None, None, |e| {
        all.push(e);
        Ok(())
    })
    .await
    .unwrap();
    let types: Vec<&str> = all.iter().map(|e| e.event_type.as_str()).collect();
    let added = types.iter().position(|t| *t == "MemberAdded").unwrap();
    // The deduction also released a lapsed hold and expired a lot: the
    // team's entries sit between credit entries, in log order.
    assert_eq!(
        types[added..],
        [
            "MemberAdded",
            "MemberInvited",
            "HoldReleased",
            "CreditsExpired",
            "CreditsDeducted",
            "InvitationAccepted"
        ],
        "{types:?}"
    );
    for (i, e) in all.iter().enumerate().skip(added) {
        if e.event_type.starts_with("Member") || e.event_type.starts_with("Invitation") {
            assert_eq!(e.amount, 0);
            assert_eq!(
                e.balance,
                all[i - 1].balance,
                "{} keeps the balance",
                e.event_type
            );
        }
    }
    assert!(all.windows(2).all(|w| w[0].position < w[1].position));
    assert!(all[all.len() - 1].description.contains("bob"));
    // An audit pack holds the credit stream alone, and still verifies.
    let mut credits = Vec::new();
    for_each_entry(store, &account, Streams::Credits, None, None, |e| {
        credits.push(e);
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(credits.len(), all.len() - 3);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pack");
    export(store, &account, &out).await.unwrap();
    assert_eq!(verify_pack(&out).unwrap(), Vec::new());
}
on_both_stores!(history_lists_membership_changes_between_credit_entries_and_packs_stay_verifiable);
