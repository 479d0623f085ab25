//! Two real `ledger-server` processes on one PostgreSQL database, hammering
//! the same account at once. Within a process, commands for one account are
//! serialized (and decided against state kept in memory); across processes
//! only the store keeps the ledger straight, so this is where optimistic
//! concurrency, idempotency claims and the freshness of what each process
//! decides on are tested for real.
//!
//! The scenario: one account granted 10,000 credits on A; a cost set on A
//! that B must pick up; 2 × 100 one-credit deductions, 20 of their keys sent
//! to both instances at once; holds taken on one instance and captured on
//! the other; then B, after A tops the account up, deducts more than the
//! balance B last saw. Checked: each key applied once (the other answer a
//! byte-identical replay), the balance on both instances, the transactions
//! list (paged) against every answer, the log itself (one event per key,
//! contiguous sequences, hash chain, one catalog seed), projector lag 0 on
//! both, no 5xx, both processes alive.
//!
//! PostgreSQL at 127.0.0.1:5432 (or `LEDGER_TEST_POSTGRES_URL`) must be
//! running: without it the test fails, it never skips.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use api::auth::JwtKeys;
use common::{key, unique_slug, Api, Backend, Resp};
use reqwest::Method;
use serde_json::{json, Value};
use store::testing::TestDb;
use store::Store;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Credits granted before the hammering starts.
const GRANTED: i64 = 10_000;
/// Deduction keys each instance gets (every one a 1-credit deduction).
const KEYS_PER_INSTANCE: usize = 100;
/// Every `SHARED_EVERY`-th key is sent to both instances at once.
const SHARED_EVERY: usize = 10;
/// Requests in flight per instance.
const IN_FLIGHT_PER_INSTANCE: usize = 32;
/// Holds taken on one instance and captured on the other, per direction.
const HOLDS_PER_DIRECTION: usize = 3;
const HOLD_CREDITS: i64 = 5;
/// What the partial captures take of a hold.
const PARTIAL_CAPTURE: i64 = 3;
/// Credits granted on A after the hammer, before B deducts more than it had.
const TOP_UP: i64 = 1_000;
/// The operation the deductions are priced by, set to 1 credit per request.
const OPERATION: &str = "clustering";
/// How long a server may take to report ready.
const STARTUP: Duration = Duration::from_secs(30);
/// The whole scenario, servers included; beyond it the test fails.
const SCENARIO: Duration = Duration::from_secs(120);
/// A 429 (`rate_limited`, the ledger's answer to contention it gave up on)
/// is retried with the same key, as a client would, this many times.
const RATE_LIMITED_RETRIES: u32 = 10;
/// Lines of each server's log printed when the test fails.
const LOG_TAIL_LINES: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_database_apply_every_request_once_and_agree() {
    let db = TestDb::postgres()
        .await
        .expect("PostgreSQL must be running at 127.0.0.1:5432 for the two-instance test");
    let dirs = [
        tempfile::tempdir().expect("a temporary data dir"),
        tempfile::tempdir().expect("a temporary data dir"),
    ];
    let setup = Setup {
        database_url: db.url.clone(),
        store: db.store.clone(),
        // Explicit, shared by both servers and the test, 32+ bytes.
        secret: format!("two-instances-{}", uuid::Uuid::new_v4().simple()),
        data_dirs: [dirs[0].path().to_owned(), dirs[1].path().to_owned()],
    };
    // The scenario owns the processes: they are killed when it ends, panics
    // or is aborted, before the database is dropped.
    let mut scenario = tokio::spawn(scenario(setup));
    let failure = match tokio::time::timeout(SCENARIO, &mut scenario).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(Err(e)),
        Err(_) => {
            scenario.abort();
            let _ = (&mut scenario).await;
            Some(Ok(format!(
                "the scenario did not finish within {} s",
                SCENARIO.as_secs()
            )))
        }
    };
    if failure.is_some() {
        for (name, dir) in ["A", "B"].iter().zip(&dirs) {
            eprintln!(
                "---- ledger-server {name}: last {LOG_TAIL_LINES} log lines ----\n{}",
                log_tail(&dir.path().join(LOG_FILE))
            );
        }
    }
    db.cleanup().await.expect("drop the test database");
    match failure {
        None => {}
        Some(Ok(message)) => panic!("{message}"),
        Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Some(Err(e)) => panic!("the scenario was cancelled: {e}"),
    }
}

struct Setup {
    database_url: String,
    store: Store,
    secret: String,
    data_dirs: [PathBuf; 2],
}

async fn scenario(setup: Setup) {
    let t0 = Instant::now();
    let keys = || JwtKeys::from_secret(setup.secret.as_bytes());
    // Both start at once: concurrent migrations and catalog seeding too.
    let (a, b) = tokio::join!(
        Instance::start(
            "A",
            &setup.database_url,
            &setup.secret,
            &setup.data_dirs[0],
            keys()
        ),
        Instance::start(
            "B",
            &setup.database_url,
            &setup.secret,
            &setup.data_dirs[1],
            keys()
        ),
    );
    let (a, b) = (Arc::new(a), Arc::new(b));
    let started = t0.elapsed();
    let dev = a.api.developer();

    // One account, 10,000 credits.
    let opened = a
        .send(
            Method::POST,
            "/v1/accounts",
            &dev,
            Some(&key()),
            Some(Api::account_body(&unique_slug())),
        )
        .await;
    let account = opened.expect(201)["account_id"]
        .as_str()
        .expect("an account_id")
        .to_owned();
    let granted = a
        .send(
            Method::POST,
            &format!("/v1/accounts/{account}/grants"),
            &dev,
            Some(&key()),
            Some(json!({ "credits": GRANTED, "source": "purchase" })),
        )
        .await;
    assert_eq!(granted.expect(201)["balance_after"], GRANTED);
    let grant_position = granted.position();

    // The operation costs 1 credit, set on A; B must see it before it prices.
    let cost = a
        .send(
            Method::PUT,
            &format!("/v1/admin/credit-costs/{OPERATION}"),
            &dev,
            None,
            Some(json!({ "cost": 1, "unit": "per_request" })),
        )
        .await;
    let cost_version = cost.expect(200)["version"]
        .as_i64()
        .expect("the cost row's version");
    assert_eq!(cost.body["cost"], 1, "{}", cost.text);
    wait_for_cost(&b, &dev, cost_version).await;
    let catalog_synced = t0.elapsed();

    // The hammer: 2 × 100 keys, every 10th sent to both instances at once,
    // and holds taken on one instance and captured on the other, all at once.
    let bot = a.api.bot(Some(&account));
    let hammer_started = Instant::now();
    let mut deductions: JoinSet<KeyOutcome> = JoinSet::new();
    for i in 0..2 * KEYS_PER_INSTANCE {
        let (home, other) = if i < KEYS_PER_INSTANCE {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        };
        let (account, bot) = (account.clone(), bot.clone());
        let shared = i % SHARED_EVERY == 0;
        deductions.spawn(async move {
            let key = format!("deduct-{i}-{}", uuid::Uuid::new_v4().simple());
            let path = format!("/v1/accounts/{account}/deductions");
            let body = deduction_body(1);
            let answers = if shared {
                let (x, y) = tokio::join!(
                    home.send_keyed(&path, &bot, &key, &body),
                    other.send_keyed(&path, &bot, &key, &body),
                );
                vec![(home.name, x), (other.name, y)]
            } else {
                vec![(home.name, home.send_keyed(&path, &bot, &key, &body).await)]
            };
            KeyOutcome { key, answers }
        });
    }
    let mut holds: JoinSet<HoldOutcome> = JoinSet::new();
    for i in 0..2 * HOLDS_PER_DIRECTION {
        let (holder, capturer) = if i < HOLDS_PER_DIRECTION {
            (a.clone(), b.clone())
        } else {
            (b.clone(), a.clone())
        };
        let (account, bot) = (account.clone(), bot.clone());
        holds.spawn(hold_and_capture(holder, capturer, account, bot, i));
    }
    let (deductions, holds) = tokio::join!(deductions.join_all(), holds.join_all());
    let hammer = hammer_started.elapsed();

    // ---- What the clients were told ----
    let applied = check_deduction_answers(&deductions, cost_version);
    let unique_keys = applied.len();
    // The holds' failures are reported at the end; the other invariants are
    // checked against what did happen.
    let mut late_problems: Vec<String> = holds.iter().flat_map(|h| h.problems.clone()).collect();
    let captures: Vec<&Resp> = holds.iter().filter_map(|h| h.capture.as_ref()).collect();
    let holds_taken = holds.iter().filter(|h| h.hold_position.is_some()).count();
    let captured: i64 = holds.iter().map(|h| h.captured).sum();
    let held: i64 = holds.iter().map(|h| h.held_open).sum();
    let expected_balance = GRANTED - unique_keys as i64 - captured;
    let max_position = deductions
        .iter()
        .flat_map(|o| o.answers.iter().map(|(_, r)| r.position()))
        .chain(holds.iter().filter_map(|h| h.hold_position))
        .chain(captures.iter().map(|r| r.position()))
        .chain([grant_position])
        .max()
        .unwrap();

    // ---- The balance, read from both instances ----
    for instance in [&a, &b] {
        check_balance(
            instance,
            &dev,
            &account,
            max_position,
            expected_balance,
            held,
        )
        .await;
    }

    // ---- The transactions list, paged through on both instances ----
    let on_a = transactions(&a, &dev, &account, max_position, 50).await;
    let on_b = transactions(&b, &dev, &account, max_position, 200).await;
    assert_eq!(on_a, on_b, "both instances list the same entries");
    check_entries(on_a, &applied, &captures, expected_balance);

    // ---- The log itself: each key applied once ----
    check_log(
        &setup.store,
        &account,
        &applied,
        holds_taken,
        captures.len(),
    )
    .await;

    // ---- A refusal on one instance reflects the other's writes ----
    late_problems.extend(
        refusal_after_a_top_up_elsewhere(&a, &b, &dev, &bot, &account, expected_balance, held)
            .await,
    );

    // ---- Both projectors catch up ----
    let head = wait_for_no_lag(&a, &b).await;

    // ---- Nothing crashed, nothing answered 5xx ----
    for instance in [&a, &b] {
        if let Some(status) = instance.exited() {
            late_problems.push(format!(
                "ledger-server {} exited during the test: {status}",
                instance.name
            ));
        }
        late_problems.extend(
            instance
                .server_errors
                .lock()
                .unwrap()
                .iter()
                .map(|e| format!("{} answered 5xx: {e}", instance.name)),
        );
    }
    let rate_limited =
        a.rate_limited.load(Ordering::Relaxed) + b.rate_limited.load(Ordering::Relaxed);
    eprintln!(
        "two instances: ready in {started:.2?}, catalog synced at {catalog_synced:.2?}, \
         hammer ({} requests, {unique_keys} keys, {} holds) in {hammer:.2?}, \
         {rate_limited} 429 retries, balance {expected_balance} at log head {head}, \
         total {:.2?}",
        deductions.iter().map(|o| o.answers.len()).sum::<usize>(),
        holds.len(),
        t0.elapsed()
    );
    assert!(
        late_problems.is_empty(),
        "{} problem(s):\n{}",
        late_problems.len(),
        late_problems.join("\n")
    );
}

/// Checks every deduction answer: each key applied by exactly one answer
/// (the others replays of it, byte for byte), every one 1 credit at the new
/// cost version, distinct ids and balances. Returns key -> applying answer.
fn check_deduction_answers(deductions: &[KeyOutcome], cost_version: i64) -> HashMap<String, Resp> {
    let mut problems: Vec<String> = Vec::new();
    let mut applied: HashMap<String, Resp> = HashMap::new();
    let mut replays = 0;
    for outcome in deductions {
        for (instance, r) in &outcome.answers {
            if r.status != 201 {
                problems.push(format!(
                    "deduction {} on {instance}: HTTP {} {}",
                    outcome.key, r.status, r.text
                ));
            }
        }
        let firsts: Vec<&(&str, Resp)> = outcome
            .answers
            .iter()
            .filter(|(_, r)| r.status == 201 && !replayed(r))
            .collect();
        if firsts.len() != 1 {
            problems.push(format!(
                "key {} sent {} time(s) has {} answer(s) not marked Idempotent-Replayed \
                 (exactly one must apply it): {:?}",
                outcome.key,
                outcome.answers.len(),
                firsts.len(),
                outcome
                    .answers
                    .iter()
                    .map(|(i, r)| format!("{i}: {} {:?} {}", r.status, replayed(r), r.text))
                    .collect::<Vec<_>>()
            ));
        }
        if let [(ia, ra), (ib, rb)] = outcome.answers.as_slice() {
            if ra.status != rb.status || ra.text != rb.text {
                problems.push(format!(
                    "key {} sent to both instances got different answers:\n  \
                     {ia}: {} {}\n  {ib}: {} {}",
                    outcome.key, ra.status, ra.text, rb.status, rb.text
                ));
            }
            replays += outcome
                .answers
                .iter()
                .filter(|(_, r)| r.status == 201 && replayed(r))
                .count();
        }
        if let Some((_, first)) = firsts.first() {
            applied.insert(outcome.key.clone(), first.clone());
        }
    }
    for (key, r) in &applied {
        if r.body["credits"] != 1 || r.body["cost_version"] != cost_version {
            problems.push(format!(
                "deduction {key} was priced at {} credits (cost version {}), \
                 expected 1 credit at version {cost_version}: {}",
                r.body["credits"], r.body["cost_version"], r.text
            ));
        }
    }
    let ids: HashSet<&str> = applied
        .values()
        .filter_map(|r| r.body["id"].as_str())
        .collect();
    if ids.len() != applied.len() {
        problems.push(format!(
            "{} applied deductions carry {} distinct ids",
            applied.len(),
            ids.len()
        ));
    }
    let told_after: HashSet<i64> = applied
        .values()
        .filter_map(|r| r.body["balance_after"].as_i64())
        .collect();
    if told_after.len() != applied.len() {
        problems.push(format!(
            "{} applied 1-credit deductions were told {} distinct balance_after values",
            applied.len(),
            told_after.len()
        ));
    }
    assert!(
        problems.is_empty(),
        "{} problem(s) in the deduction answers:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(
        applied.len(),
        2 * KEYS_PER_INSTANCE,
        "every key applied once"
    );
    assert_eq!(
        replays,
        (2 * KEYS_PER_INSTANCE).div_ceil(SHARED_EVERY),
        "one replay per key sent to both instances"
    );
    applied
}

/// The balance read model on `instance`, once it has `min_position`.
async fn check_balance(
    instance: &Instance,
    dev: &str,
    account: &str,
    min_position: i64,
    balance: i64,
    held: i64,
) {
    let r = instance
        .send(
            Method::GET,
            &format!("/v1/accounts/{account}/balance?min_position={min_position}"),
            dev,
            None,
            None,
        )
        .await;
    let body = r.expect(200);
    assert_eq!(
        (&body["balance"], &body["held"], &body["available"]),
        (&json!(balance), &json!(held), &json!(balance - held)),
        "balance, held and available on {}: {}",
        instance.name,
        r.text
    );
    assert!(
        body["position"].as_i64().unwrap_or(0) >= min_position,
        "the read models on {} have position {min_position}: {}",
        instance.name,
        r.text
    );
}

/// The transactions list against the answers: one entry per applied
/// deduction and capture, each at the position and balance its client was
/// told, balances chaining down from the grant.
fn check_entries(
    mut entries: Vec<Value>,
    applied: &HashMap<String, Resp>,
    captures: &[&Resp],
    balance: i64,
) {
    let listed: Vec<i64> = entries
        .iter()
        .map(|e| e["position"].as_i64().unwrap())
        .collect();
    assert!(
        listed.windows(2).all(|w| w[0] > w[1]),
        "entries are listed newest first, each position once: {listed:?}"
    );
    entries.sort_by_key(|e| e["position"].as_i64().unwrap());
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    for e in &entries {
        *by_type
            .entry(e["type"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(
        by_type,
        counts([
            ("capture".to_owned(), captures.len()),
            ("deduction".to_owned(), applied.len()),
            ("grant".to_owned(), 1),
        ]),
        "the entries by type"
    );
    assert_eq!(
        (
            &entries[0]["type"],
            &entries[0]["amount"],
            &entries[0]["balance_after"]
        ),
        (&json!("grant"), &json!(GRANTED), &json!(GRANTED)),
        "the first entry is the grant: {}",
        entries[0]
    );
    for w in entries.windows(2) {
        let (prev, e) = (&w[0], &w[1]);
        let amount = e["amount"].as_i64().unwrap();
        assert!(amount < 0, "a deduction or capture takes credits: {e}");
        assert_eq!(
            e["balance_after"].as_i64().unwrap(),
            prev["balance_after"].as_i64().unwrap() + amount,
            "each entry's balance_after is the previous one's plus its amount:\n  {prev}\n  {e}"
        );
    }
    let spent_after: HashSet<i64> = entries[1..]
        .iter()
        .map(|e| e["balance_after"].as_i64().unwrap())
        .collect();
    assert_eq!(
        spent_after.len(),
        entries.len() - 1,
        "distinct balance_after values"
    );
    assert_eq!(
        entries.last().unwrap()["balance_after"],
        balance,
        "the last entry leaves the balance"
    );
    let answers: HashMap<&str, &Resp> = applied
        .values()
        .chain(captures.iter().copied())
        .map(|r| (r.body["id"].as_str().unwrap(), r))
        .collect();
    for e in &entries[1..] {
        let r = answers
            .get(e["id"].as_str().unwrap())
            .unwrap_or_else(|| panic!("the listed entry {e} was answered to no client"));
        assert_eq!(
            (&e["amount"], &e["position"], &e["balance_after"]),
            (
                &json!(-r.body["credits"].as_i64().unwrap()),
                &r.body["position"],
                &r.body["balance_after"]
            ),
            "the entry matches what its client was told: {}",
            r.text
        );
    }
}

/// B deducts twice (its committer then has the account warm and current),
/// A grants more, then B deducts more than the balance before the grant but
/// less than after it: that must succeed. Returns what went wrong.
async fn refusal_after_a_top_up_elsewhere(
    a: &Instance,
    b: &Instance,
    dev: &str,
    bot: &str,
    account: &str,
    balance: i64,
    held: i64,
) -> Vec<String> {
    let deductions = format!("/v1/accounts/{account}/deductions");
    let mut position = 0;
    for _ in 0..2 {
        let r = b
            .send_keyed(&deductions, bot, &key(), &deduction_body(1))
            .await;
        assert_eq!(r.expect(201)["credits"], 1, "{}", r.text);
        position = position.max(r.position());
    }
    let before = balance - 2;
    let top_up = a
        .send_keyed(
            &format!("/v1/accounts/{account}/grants"),
            dev,
            &key(),
            &json!({ "credits": TOP_UP, "source": "purchase" }),
        )
        .await;
    assert_eq!(
        top_up.expect(201)["balance_after"],
        before + TOP_UP,
        "{}",
        top_up.text
    );
    position = position.max(top_up.position());
    let large = before - held + 1;
    let r = b
        .send_keyed(&deductions, bot, &key(), &deduction_body(large))
        .await;
    let mut problems = Vec::new();
    let after = if r.status == 201 {
        position = position.max(r.position());
        before + TOP_UP - large
    } else {
        problems.push(format!(
            "A granted {TOP_UP} credits (201, balance_after {}, position {}); then B refused a \
             deduction of {large} credits that the new balance covers: {} {}",
            before + TOP_UP,
            top_up.position(),
            r.status,
            r.text
        ));
        before + TOP_UP
    };
    for instance in [a, b] {
        check_balance(instance, dev, account, position, after, held).await;
    }
    problems
}

/// A deduction of `credits` (the operation costs 1 credit per request unit).
fn deduction_body(credits: i64) -> Value {
    json!({ "operation": OPERATION, "units": credits })
}

/// A histogram without its empty buckets.
fn counts<K: Ord, const N: usize>(buckets: [(K, usize); N]) -> BTreeMap<K, usize> {
    buckets.into_iter().filter(|(_, n)| *n > 0).collect()
}

fn replayed(r: &Resp) -> bool {
    r.header("idempotent-replayed") == Some("true")
}

/// A deduction key and every answer it got, by instance.
struct KeyOutcome {
    key: String,
    answers: Vec<(&'static str, Resp)>,
}

struct HoldOutcome {
    hold_position: Option<i64>,
    /// Credits the hold still holds (its capture failed).
    held_open: i64,
    /// The first capture's answer, when it succeeded.
    capture: Option<Resp>,
    captured: i64,
    problems: Vec<String>,
}

/// Holds `HOLD_CREDITS` on `holder`, captures it (whole or in part) on
/// `capturer`, then retries the capture on `holder`: a replay. What went
/// wrong is recorded, not raised, so that the other invariants are still
/// checked (against what did happen) before the test fails.
async fn hold_and_capture(
    holder: Arc<Instance>,
    capturer: Arc<Instance>,
    account: String,
    bot: String,
    i: usize,
) -> HoldOutcome {
    let mut outcome = HoldOutcome {
        hold_position: None,
        held_open: 0,
        capture: None,
        captured: 0,
        problems: Vec::new(),
    };
    let (h, c) = (holder.name, capturer.name);
    let hold = holder
        .send_keyed(
            &format!("/v1/accounts/{account}/holds"),
            &bot,
            &key(),
            &json!({ "credits": HOLD_CREDITS }),
        )
        .await;
    let Some(hold_id) = hold.body["id"].as_str().filter(|_| hold.status == 201) else {
        outcome.problems.push(format!(
            "hold {i} on {h}: expected 201, got {} {}",
            hold.status, hold.text
        ));
        return outcome;
    };
    outcome.hold_position = Some(hold.position());
    outcome.held_open = HOLD_CREDITS;
    // Even holds are captured whole (no amount), odd ones in part.
    let (body, captured) = if i % 2 == 0 {
        (json!({}), HOLD_CREDITS)
    } else {
        (json!({ "credits": PARTIAL_CAPTURE }), PARTIAL_CAPTURE)
    };
    let path = format!("/v1/accounts/{account}/holds/{hold_id}/capture");
    let capture_key = key();
    let capture = capturer.send_keyed(&path, &bot, &capture_key, &body).await;
    if capture.status != 200 {
        outcome.problems.push(format!(
            "hold {hold_id} was answered 201 by {h} (position {}); its capture {body} on {c} \
             answered {} {} (expected 200)",
            hold.position(),
            capture.status,
            capture.text
        ));
        return outcome;
    }
    let b = &capture.body;
    if (&b["hold_id"], &b["held"], &b["credits"], &b["released"])
        != (
            &json!(hold_id),
            &json!(HOLD_CREDITS),
            &json!(captured),
            &json!(HOLD_CREDITS - captured),
        )
        || replayed(&capture)
    {
        outcome.problems.push(format!(
            "hold {hold_id} held on {h}, captured ({body}) on {c}: expected a first capture of \
             {captured} of {HOLD_CREDITS} credits, got replayed={} {}",
            replayed(&capture),
            capture.text
        ));
    }
    let retry = holder.send_keyed(&path, &bot, &capture_key, &body).await;
    if (retry.status, replayed(&retry), retry.text.as_str()) != (200, true, capture.text.as_str()) {
        outcome.problems.push(format!(
            "the capture of hold {hold_id} retried on {h} must replay {c}'s answer \
             (200, Idempotent-Replayed: true, same body):\n  {c}: {}\n  {h}: {} replayed={} {}",
            capture.text,
            retry.status,
            replayed(&retry),
            retry.text
        ));
    }
    outcome.held_open = 0;
    outcome.captured = b["credits"].as_i64().unwrap_or(0);
    outcome.capture = Some(capture);
    outcome
}

/// Polls B's cost table (which reloads the catalog) until the new cost is in.
async fn wait_for_cost(b: &Instance, dev: &str, version: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = b
            .send(Method::GET, "/v1/admin/credit-costs", dev, None, None)
            .await;
        let row = r.expect(200)["items"]
            .as_array()
            .and_then(|items| items.iter().find(|c| c["operation"] == OPERATION))
            .cloned()
            .unwrap_or(Value::Null);
        if row["cost"] == 1 {
            assert_eq!(row["version"], version, "B has A's cost row: {row}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "B's catalog never got {OPERATION} at 1 credit: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every entry of the account's transactions list, page by page.
async fn transactions(
    instance: &Instance,
    dev: &str,
    account: &str,
    min_position: i64,
    limit: usize,
) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    for _page in 0..1_000 {
        let mut path = format!(
            "/v1/accounts/{account}/transactions?limit={limit}&min_position={min_position}"
        );
        if let Some(c) = &cursor {
            path.push_str("&cursor=");
            path.extend(form_urlencoded::byte_serialize(c.as_bytes()));
        }
        let r = instance.send(Method::GET, &path, dev, None, None).await;
        let page = r.expect(200)["items"]
            .as_array()
            .unwrap_or_else(|| panic!("a page has items: {}", r.text));
        assert!(
            page.len() <= limit,
            "a page holds at most {limit}: {}",
            r.text
        );
        items.extend(page.iter().cloned());
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return items,
        }
    }
    panic!("the transactions list of {account} never ended");
}

/// Reads the log: the catalog seeded once; in the account's stream one
/// `CreditsDeducted` per key, the one its client was told about, contiguous
/// sequences and an unbroken hash chain.
async fn check_log(
    store: &Store,
    account: &str,
    applied: &HashMap<String, Resp>,
    holds: usize,
    captures: usize,
) {
    let mut events = Vec::new();
    let mut seeds = 0;
    let mut after = 0;
    loop {
        let batch = store.read_after(after, 1_000).await.expect("read the log");
        let Some(last) = batch.last() else { break };
        after = last.position;
        seeds += batch
            .iter()
            .filter(|e| e.event_type == "CatalogSeeded")
            .count();
        // The account's credit stream (its team stream shares its id).
        events.extend(batch.into_iter().filter(|e| {
            e.aggregate_id == account && e.aggregate_type == events::ACCOUNT_AGGREGATE_TYPE
        }));
    }
    assert_eq!(
        seeds, 1,
        "two servers starting at once seed the catalog once"
    );
    let mut by_type: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        *by_type.entry(e.event_type.as_str()).or_default() += 1;
    }
    assert_eq!(
        by_type,
        counts([
            ("AccountOpened", 1),
            ("CreditsDeducted", applied.len()),
            ("CreditsGranted", 1),
            ("CreditsHeld", holds),
            ("HoldCaptured", captures),
        ]),
        "the account's events by type"
    );
    for w in events.windows(2) {
        assert!(
            w[0].metadata["hash"]
                .as_str()
                .is_some_and(|h| !h.is_empty()),
            "event {} has a hash: {}",
            w[0].sequence,
            w[0].metadata
        );
        assert_eq!(
            w[1].sequence,
            w[0].sequence + 1,
            "the stream's sequences are contiguous in log order"
        );
        assert_eq!(
            w[1].metadata["prev_hash"], w[0].metadata["hash"],
            "the hash chain links event {} to {}",
            w[1].sequence, w[0].sequence
        );
    }
    let mut seen_keys: HashMap<&str, i64> = HashMap::new();
    for e in events.iter().filter(|e| e.event_type == "CreditsDeducted") {
        let d = &e.payload["CreditsDeducted"];
        let key = d["idempotency_key"]
            .as_str()
            .unwrap_or_else(|| panic!("a deduction with its key: {}", e.payload));
        if let Some(earlier) = seen_keys.insert(key, e.position) {
            panic!(
                "key {key} was applied twice: positions {earlier} and {}",
                e.position
            );
        }
        let r = applied
            .get(key)
            .unwrap_or_else(|| panic!("a deduction with key {key} no client sent"));
        assert_eq!(
            (
                &d["deduction_id"],
                &d["credits"],
                &d["balance_after"],
                e.position
            ),
            (
                &r.body["id"],
                &r.body["credits"],
                &r.body["balance_after"],
                r.position()
            ),
            "the logged deduction of key {key} is the one its client was told: {}",
            r.text
        );
    }
    assert_eq!(seen_keys.len(), applied.len(), "every key is in the log");
}

/// Waits until both instances' projectors have read the whole log; returns
/// the log head.
async fn wait_for_no_lag(a: &Instance, b: &Instance) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ra = a.ready().await;
        let rb = b.ready().await;
        let done = [&ra, &rb].iter().all(|r| {
            r.status == 200
                && r.body["projector"]["lag"] == 0
                && r.body["position"] == rb.body["position"]
        });
        if done {
            return ra.body["position"].as_i64().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the projectors never caught up:\n  A: {} {}\n  B: {} {}",
            ra.status,
            ra.text,
            rb.status,
            rb.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

const LOG_FILE: &str = "ledger-server.log";

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("(no log: {e})"));
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

/// A running `ledger-server` process, killed on drop (also while a failing
/// test unwinds).
struct Process {
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server instance: its process and a client for it.
struct Instance {
    name: &'static str,
    process: Mutex<Process>,
    api: Api,
    in_flight: Semaphore,
    server_errors: Mutex<Vec<String>>,
    rate_limited: AtomicUsize,
}

impl Instance {
    /// Starts `ledger-server` on a free loopback port and waits for
    /// `/ready`. A start that lost its port to another process is retried
    /// on a new one; any other early exit fails the test.
    async fn start(
        name: &'static str,
        database_url: &str,
        secret: &str,
        data_dir: &Path,
        keys: JwtKeys,
    ) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let log = data_dir.join(LOG_FILE);
        for attempt in 1..=3 {
            let port = free_port();
            let out = File::create(&log).expect("a log file");
            let err = out.try_clone().unwrap();
            let child = Command::new(env!("CARGO_BIN_EXE_ledger-server"))
                .current_dir(data_dir)
                .env("LEDGER_DATABASE_URL", database_url)
                .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
                .env("LEDGER_JWT_SECRET", secret)
                .env("LEDGER_DATA_DIR", data_dir)
                .env("LEDGER_LOG", "warn")
                .env("LEDGER_LOG_FORMAT", "pretty")
                .stdin(Stdio::null())
                .stdout(out)
                .stderr(err)
                .spawn()
                .expect("start ledger-server");
            let mut process = Process { child };
            let base = format!("http://127.0.0.1:{port}");
            let deadline = Instant::now() + STARTUP;
            let exited = loop {
                if let Some(status) = process.child.try_wait().expect("the child's status") {
                    break status;
                }
                if let Ok(r) = http.get(format!("{base}/ready")).send().await {
                    if r.status().is_success() {
                        let body: Value = r.json().await.unwrap_or(Value::Null);
                        assert_eq!(body["store"]["backend"], "postgres", "{name}: {body}");
                        return Self {
                            name,
                            process: Mutex::new(process),
                            api: Api {
                                base,
                                backend: Backend::Postgres,
                                keys,
                                http,
                            },
                            in_flight: Semaphore::new(IN_FLIGHT_PER_INSTANCE),
                            server_errors: Mutex::new(Vec::new()),
                            rate_limited: AtomicUsize::new(0),
                        };
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "ledger-server {name} was not ready within {} s:\n{}",
                    STARTUP.as_secs(),
                    log_tail(&log)
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            };
            let tail = log_tail(&log);
            let lost_port = tail.contains("binding") && tail.contains("in use");
            assert!(
                lost_port && attempt < 3,
                "ledger-server {name} exited during start-up ({exited}):\n{tail}"
            );
        }
        unreachable!("the loop returns or fails")
    }

    /// How the process ended, if it has.
    fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut process = self.process.lock().unwrap();
        process.child.try_wait().expect("the child's status")
    }

    async fn ready(&self) -> Resp {
        let r = self.api.send(Method::GET, "/ready", None, None, None).await;
        self.note(&Method::GET, "/ready", &r);
        r
    }

    /// One request, at most `IN_FLIGHT_PER_INSTANCE` at a time; 5xx answers
    /// are noted for the final check.
    async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let _turn = self.in_flight.acquire().await.expect("the gate is open");
        let r = self
            .api
            .send(
                method.clone(),
                path,
                Some(token),
                key,
                body.map(|b| b.to_string()),
            )
            .await;
        self.note(&method, path, &r);
        r
    }

    /// A keyed POST; a 429 is retried with the same key after its
    /// Retry-After.
    async fn send_keyed(&self, path: &str, token: &str, key: &str, body: &Value) -> Resp {
        let mut attempt = 0;
        loop {
            let r = self
                .send(Method::POST, path, token, Some(key), Some(body.clone()))
                .await;
            if r.status != 429 || attempt == RATE_LIMITED_RETRIES {
                return r;
            }
            attempt += 1;
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
            let wait = r
                .header("retry-after")
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        }
    }

    fn note(&self, method: &Method, path: &str, r: &Resp) {
        if r.status >= 500 {
            self.server_errors
                .lock()
                .unwrap()
                .push(format!("{method} {path} -> {} {}", r.status, r.text));
        }
    }
}
