//! `export`: an audit pack for one account, and its offline re-check.
//!
//! The pack holds `events.jsonl` (every stored event of the stream, as
//! stored: payload, metadata with the chain hashes), `history.csv` (the
//! history as `history --format csv` prints it), `verification.json` (chain
//! head, counts, the verify report and the files' SHA-256) and a
//! `README.md`. [`verify_pack`] (`ledger-replay verify --pack DIR`) needs
//! no database: it recomputes the chain from `events.jsonl`, regenerates
//! `history.csv` from it and compares both with `verification.json`.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use chrono::Utc;
use events::ACCOUNT_AGGREGATE_TYPE;
use projections::time_text;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use store::audit::{RawEvent, AUDIT_PAGE_EVENTS_MAX};
use store::Store;

use crate::asof::balance_as_of;
use crate::chain::Discrepancy;
use crate::history::{for_each_entry, Format, HistoryFold, HistoryWriter, Streams};
use crate::verify::{verify, VerifyReport};
use crate::ReplayError;

pub const EVENTS_FILE: &str = "events.jsonl";
pub const HISTORY_FILE: &str = "history.csv";
pub const VERIFICATION_FILE: &str = "verification.json";
pub const README_FILE: &str = "README.md";

/// One line of `events.jsonl`: a stored event as it is in the log.
pub type PackEvent = store::StoredEvent;

/// `verification.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Verification {
    pub account_id: String,
    pub exported_at: String,
    pub tool: String,
    /// Stream `account/<id>`: the hash of its last event, and its length.
    pub chain_head_hash: String,
    pub last_sequence: i64,
    pub last_position: i64,
    pub events: u64,
    pub history_rows: u64,
    pub balance: i64,
    pub held: i64,
    pub available: i64,
    pub files: Vec<PackFile>,
    /// `ledger-replay verify --account <id>` at export time.
    pub verify_ok: bool,
    pub verify: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackFile {
    pub name: String,
    pub sha256: String,
    pub bytes: u64,
}

fn file_digest(path: &Path) -> Result<PackFile, ReplayError> {
    let bytes =
        std::fs::read(path).map_err(ReplayError::io(format!("cannot read {}", path.display())))?;
    Ok(PackFile {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        bytes: bytes.len() as u64,
    })
}

fn create(path: &Path) -> Result<BufWriter<File>, ReplayError> {
    File::create(path)
        .map(BufWriter::new)
        .map_err(ReplayError::io(format!("cannot write {}", path.display())))
}

/// Writes the audit pack of `account` into `dir` (created if missing).
pub async fn export(
    store: &Store,
    account: &str,
    dir: &Path,
) -> Result<(Verification, VerifyReport), ReplayError> {
    let Some((last_sequence, last_position)) =
        store.stream_head(ACCOUNT_AGGREGATE_TYPE, account).await?
    else {
        return Err(ReplayError::UnknownAccount(account.to_owned()));
    };
    std::fs::create_dir_all(dir)
        .map_err(ReplayError::io(format!("cannot create {}", dir.display())))?;
    let exported_at = Utc::now();

    // events.jsonl, up to the head read above (later events wait for the
    // next export).
    let events_path = dir.join(EVENTS_FILE);
    let mut out = create(&events_path)?;
    let mut after = 0;
    let mut events = 0u64;
    let mut head_hash = events::GENESIS_HASH.to_owned();
    'pages: loop {
        let page = store
            .stream_page(
                ACCOUNT_AGGREGATE_TYPE,
                account,
                after,
                AUDIT_PAGE_EVENTS_MAX,
                true,
            )
            .await?;
        if page.is_empty() {
            break;
        }
        for raw in page {
            if raw.sequence > last_sequence {
                break 'pages;
            }
            after = raw.sequence;
            let line = pack_event(&raw)?;
            if let Some(h) = line.metadata.get("hash").and_then(Value::as_str) {
                head_hash = h.to_owned();
            }
            serde_json::to_writer(&mut out, &line)?;
            out.write_all(b"\n")
                .map_err(ReplayError::io("cannot write events.jsonl"))?;
            events += 1;
        }
    }
    out.flush()
        .map_err(ReplayError::io("cannot write events.jsonl"))?;
    drop(out);

    // history.csv over the same events.
    let history_path = dir.join(HISTORY_FILE);
    let mut writer = HistoryWriter::new(Format::Csv, create(&history_path)?);
    let mut history_rows = 0u64;
    for_each_entry(store, account, Streams::Credits, None, None, |e| {
        if e.sequence <= last_sequence {
            history_rows += 1;
            writer.write(&e)?;
        }
        Ok(())
    })
    .await?;
    writer.finish()?;

    let report = verify(store, Some(account)).await?;
    let balance = balance_as_of(store, account, exported_at).await?;
    let verification = Verification {
        account_id: account.to_owned(),
        exported_at: time_text(exported_at),
        tool: format!("ledger-replay {}", env!("CARGO_PKG_VERSION")),
        chain_head_hash: head_hash,
        last_sequence,
        last_position,
        events,
        history_rows,
        balance: balance.balance,
        held: balance.held,
        available: balance.available,
        files: vec![file_digest(&events_path)?, file_digest(&history_path)?],
        verify_ok: report.ok,
        verify: serde_json::to_value(&report)?,
    };
    let mut out = create(&dir.join(VERIFICATION_FILE))?;
    serde_json::to_writer_pretty(&mut out, &verification)?;
    out.write_all(b"\n")
        .map_err(ReplayError::io("cannot write verification.json"))?;
    out.flush()
        .map_err(ReplayError::io("cannot write verification.json"))?;
    std::fs::write(dir.join(README_FILE), readme(&verification))
        .map_err(ReplayError::io("cannot write README.md"))?;
    Ok((verification, report))
}

fn pack_event(raw: &RawEvent) -> Result<PackEvent, ReplayError> {
    Ok(PackEvent {
        position: raw.position,
        aggregate_type: raw.aggregate_type.clone(),
        aggregate_id: raw.aggregate_id.clone(),
        sequence: raw.sequence,
        event_type: raw.event_type.clone(),
        event_version: raw.event_version.clone(),
        payload: serde_json::from_str(&raw.payload)?,
        metadata: serde_json::from_str(&raw.metadata)?,
    })
}

fn readme(v: &Verification) -> String {
    format!(
        "# Audit pack: account {account}\n\n\
         Exported {at} by {tool}: {events} events (sequence 1 to {seq}, log position {pos}),\n\
         chain head hash `{head}`, verify {result}.\n\n\
         - `events.jsonl`: every stored event of the account's stream, one JSON object a line,\n  \
           as stored (payload, and metadata with `prev_hash` and `hash`).\n\
         - `history.csv`: every event with its signed amount and running balance (RFC 4180).\n\
         - `verification.json`: chain head, counts, balances at export, the files' SHA-256 and\n  \
           the verify report.\n\n\
         ## Re-verify offline\n\n\
         Without any database, recompute the hash chain from `events.jsonl` (canonical form in\n\
         docs/adr/0003-hash-chain.md), regenerate `history.csv` and compare both with\n\
         `verification.json`:\n\n\
         ```\nledger-replay verify --pack <this folder>\n```\n\n\
         It exits 0 when the pack is intact and 1 listing each difference. Against the live\n\
         database, `ledger-replay verify --account {account}` re-checks the stream and the read\n\
         models; the chain head hash above must still be the hash of sequence {seq}.\n",
        account = v.account_id,
        at = v.exported_at,
        tool = v.tool,
        events = v.events,
        seq = v.last_sequence,
        pos = v.last_position,
        head = v.chain_head_hash,
        result = if v.verify_ok {
            "clean"
        } else {
            "found discrepancies (see verification.json)"
        },
    )
}

/// Re-checks a pack without a database; returns what differs.
pub fn verify_pack(dir: &Path) -> Result<Vec<Discrepancy>, ReplayError> {
    let bad = |e: String| ReplayError::BadPack(e);
    let text = std::fs::read_to_string(dir.join(VERIFICATION_FILE))
        .map_err(|e| bad(format!("{}: {e}", dir.join(VERIFICATION_FILE).display())))?;
    let v: Verification =
        serde_json::from_str(&text).map_err(|e| bad(format!("{VERIFICATION_FILE}: {e}")))?;
    let mut found = Vec::new();
    let file = File::open(dir.join(EVENTS_FILE))
        .map_err(|e| bad(format!("{}: {e}", dir.join(EVENTS_FILE).display())))?;
    let mut fold = HistoryFold::default();
    let mut csv = Vec::new();
    let mut writer = HistoryWriter::new(Format::Csv, &mut csv);
    let mut events = 0u64;
    let mut last_position = 0;
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| bad(format!("{EVENTS_FILE}: {e}")))?;
        let e: PackEvent = serde_json::from_str(&line)
            .map_err(|e| bad(format!("{EVENTS_FILE} line {}: {e}", n + 1)))?;
        if e.aggregate_type != ACCOUNT_AGGREGATE_TYPE || e.aggregate_id != v.account_id {
            found.push(Discrepancy::new(
                "pack",
                format!("{EVENTS_FILE} line {}", n + 1),
                format!("an event of account/{}", v.account_id),
                format!("{}/{}", e.aggregate_type, e.aggregate_id),
            ));
            continue;
        }
        let raw = RawEvent {
            position: e.position,
            aggregate_type: e.aggregate_type,
            aggregate_id: e.aggregate_id,
            sequence: e.sequence,
            event_type: e.event_type,
            event_version: e.event_version,
            payload: e.payload.to_string(),
            metadata: e.metadata.to_string(),
        };
        match fold.step(&raw) {
            Ok((_, entry)) => writer.write(&entry)?,
            Err(ReplayError::Tampered(what)) => {
                found.push(Discrepancy::new("pack", what, "an intact chain", "a break"));
                return Ok(found);
            }
            Err(other) => return Err(other),
        }
        events += 1;
        last_position = raw.position;
    }
    writer.finish()?;
    let history = std::fs::read(dir.join(HISTORY_FILE))
        .map_err(|e| bad(format!("{}: {e}", dir.join(HISTORY_FILE).display())))?;
    if history != csv {
        found.push(Discrepancy::new(
            "pack",
            HISTORY_FILE,
            "the history regenerated from events.jsonl",
            "different content",
        ));
    }
    let mut check = |what: &str, expected: String, got: String| {
        if expected != got {
            found.push(Discrepancy::new("pack", what.to_owned(), expected, got));
        }
    };
    check(
        "chain head hash",
        v.chain_head_hash.clone(),
        fold.chain.hash.clone(),
    );
    check("event count", v.events.to_string(), events.to_string());
    check(
        "last sequence",
        v.last_sequence.to_string(),
        fold.chain.sequence.to_string(),
    );
    check(
        "last position",
        v.last_position.to_string(),
        last_position.to_string(),
    );
    for f in &v.files {
        match file_digest(&dir.join(&f.name)) {
            Ok(d) => check(&format!("sha256 of {}", f.name), f.sha256.clone(), d.sha256),
            Err(_) => check(
                &format!("file {}", f.name),
                "present".into(),
                "missing".into(),
            ),
        }
    }
    Ok(found)
}
