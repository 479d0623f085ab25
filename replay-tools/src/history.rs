//! `history`: every event of an account with its signed amount and the
//! running balance, folded from the start of the stream (so a `--from`
//! window still shows true running balances).

use std::collections::VecDeque;
use std::io::Write;

use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
use events::{AccountEvent, TeamEvent, ACCOUNT_AGGREGATE_TYPE, TEAM_AGGREGATE_TYPE};
use ledger::CreditAccount;
use projections::time_text;
use serde::Serialize;
use store::audit::{RawEvent, AUDIT_PAGE_EVENTS_MAX};
use store::Store;

use crate::chain::{event_subject, Chain};
use crate::ReplayError;

/// One line of an account's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryEntry {
    pub position: i64,
    pub sequence: i64,
    /// When it happened (the instant as-of balances use).
    pub occurred_at: String,
    /// When the log recorded it.
    pub recorded_at: String,
    pub event_type: String,
    pub reference_id: String,
    /// Signed change of the balance.
    pub amount: i64,
    /// Signed change of the held credits.
    pub held_change: i64,
    /// Running figures after the event.
    pub balance: i64,
    pub held: i64,
    pub available: i64,
    pub description: String,
    pub actor: String,
    pub event_id: String,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

fn reference_and_description(e: &AccountEvent) -> (String, String) {
    match e {
        AccountEvent::AccountOpened(x) => (
            x.account_id.to_string(),
            format!("account opened on plan {}", x.plan),
        ),
        AccountEvent::AccountUpdated(_) => (String::new(), "account updated".into()),
        AccountEvent::PlanChanged(x) => (String::new(), format!("plan {} -> {}", x.from, x.to)),
        AccountEvent::AccountSuspended(x) => (String::new(), format!("suspended: {}", x.reason)),
        AccountEvent::AccountReactivated(x) => (
            String::new(),
            format!("reactivated as {}", x.status.as_str()),
        ),
        AccountEvent::AccountStatusChanged(x) => (
            String::new(),
            format!(
                "status {} -> {}: {}",
                x.from.as_str(),
                x.to.as_str(),
                x.reason
            ),
        ),
        AccountEvent::CreditsGranted(x) => (
            x.grant_id.to_string(),
            x.description
                .clone()
                .unwrap_or_else(|| format!("{:?} grant", x.source).to_lowercase()),
        ),
        AccountEvent::CreditsDeducted(x) => (
            x.deduction_id.to_string(),
            x.usage
                .operation
                .as_ref()
                .map(|o| o.to_string())
                .unwrap_or_default(),
        ),
        AccountEvent::CreditsHeld(x) => (
            x.hold_id.to_string(),
            format!("hold until {}", time_text(x.expires_at)),
        ),
        AccountEvent::HoldCaptured(x) => (
            x.deduction_id.to_string(),
            format!("capture of hold {}", x.hold_id),
        ),
        AccountEvent::HoldReleased(x) => (
            x.hold_id.to_string(),
            format!("hold released ({:?})", x.reason).to_lowercase(),
        ),
        AccountEvent::CreditsRefunded(x) => (
            x.refund_id.to_string(),
            format!("refund of {}: {}", x.deduction_id, x.reason),
        ),
        AccountEvent::CreditsAdjusted(x) => (x.adjustment_id.to_string(), x.reason.clone()),
        AccountEvent::CreditsExpired(x) => (x.lot_id.to_string(), "credits expired".into()),
        AccountEvent::BudgetSet(x) => (
            String::new(),
            match &x.budget {
                Some(b) => format!(
                    "budget {} credits a month{}",
                    b.monthly_credits,
                    if b.hard_cap { ", hard cap" } else { "" }
                ),
                None => "budget removed".into(),
            },
        ),
        AccountEvent::AutoTopUpSet(x) => (
            String::new(),
            match &x.config {
                Some(c) => format!(
                    "auto top-up {}: {} by {} below {} credits",
                    if c.enabled { "on" } else { "off" },
                    c.package,
                    c.method.as_str(),
                    c.threshold
                ),
                None => "auto top-up removed".into(),
            },
        ),
        AccountEvent::AutoTopUpTriggered(x) => (
            x.trigger_id.to_string(),
            format!("auto top-up triggered: {} below {}", x.package, x.threshold),
        ),
        AccountEvent::AutoTopUpSucceeded(x) => (
            x.invoice_id.to_string(),
            format!("auto top-up bought {}", x.package),
        ),
        AccountEvent::AutoTopUpFailed(x) => (
            x.trigger_id.to_string(),
            format!("auto top-up failed ({}): {}", x.failures, x.reason),
        ),
        AccountEvent::BudgetThresholdReached(x) => (
            x.period.clone(),
            format!(
                "budget {} % reached: {} of {} credits",
                x.percent, x.used, x.monthly_credits
            ),
        ),
    }
}

/// An account folded event by event into history entries, its chain
/// checked on the way (a broken chain is an error).
#[derive(Default)]
pub struct HistoryFold {
    state: CreditAccount,
    pub chain: Chain,
}

impl HistoryFold {
    /// Folds the next stored event; returns its instant and entry.
    pub fn step(&mut self, raw: &RawEvent) -> Result<(DateTime<Utc>, HistoryEntry), ReplayError> {
        let (meta, wrong) = self.chain.check(raw);
        if let Some(first) = wrong.first() {
            return Err(ReplayError::Tampered(first.to_string()));
        }
        let event: AccountEvent = serde_json::from_str(&raw.payload).map_err(|e| {
            ReplayError::Tampered(format!("{} does not read: {e}", event_subject(raw, None)))
        })?;
        let meta = meta.ok_or_else(|| {
            ReplayError::Tampered(format!("{} has no metadata", event_subject(raw, None)))
        })?;
        let at = event.occurred_at();
        let (reference_id, description) = reference_and_description(&event);
        let amount = event.balance_delta();
        let held_change = event.held_delta();
        let event_type = event.type_name().to_owned();
        crate::guard::applicable(&self.state, &event).map_err(|why| {
            ReplayError::Tampered(format!(
                "{} does not follow from the events before it: {why}",
                event_subject(raw, Some(&meta.event_id.to_string()))
            ))
        })?;
        self.state.apply(event);
        Ok((
            at,
            HistoryEntry {
                position: raw.position,
                sequence: raw.sequence,
                occurred_at: time_text(at),
                recorded_at: time_text(meta.recorded_at),
                event_type,
                reference_id,
                amount,
                held_change,
                balance: self.state.balance(),
                held: self.state.held(),
                available: self.state.available(),
                description,
                actor: format!("{} ({})", meta.actor.sub, meta.actor.role),
                event_id: meta.event_id.to_string(),
            },
        ))
    }
}

fn team_reference_and_description(e: &TeamEvent) -> (String, String) {
    match e {
        TeamEvent::MemberAdded(x) => (
            x.member_id.to_string(),
            format!("{} ({}) joined as {}", x.user_id, x.email, x.role.as_str()),
        ),
        TeamEvent::MemberInvited(x) => (
            x.member_id.to_string(),
            format!(
                "{} invited as {} until {}",
                x.email,
                x.role.as_str(),
                time_text(x.expires_at)
            ),
        ),
        TeamEvent::InvitationAccepted(x) => (
            x.member_id.to_string(),
            format!("invitation accepted by {}", x.user_id),
        ),
        TeamEvent::InvitationRevoked(x) => (x.member_id.to_string(), "invitation revoked".into()),
        TeamEvent::MemberRoleChanged(x) => (
            x.member_id.to_string(),
            format!("{}: {} -> {}", x.user_id, x.from.as_str(), x.to.as_str()),
        ),
        TeamEvent::MemberRemoved(x) => (x.member_id.to_string(), format!("{} removed", x.user_id)),
        TeamEvent::MemberSeen(x) => (x.member_id.to_string(), "member seen".into()),
        TeamEvent::LimitsOverridden(x) => (
            String::new(),
            format!(
                "limits overridden: {}",
                serde_json::to_string(&x.overrides).unwrap_or_default()
            ),
        ),
        TeamEvent::UsageCountsReported(x) => (
            String::new(),
            format!(
                "counts reported: {}",
                serde_json::to_string(&x.counts).unwrap_or_default()
            ),
        ),
    }
}

impl HistoryFold {
    /// An event of the account's team stream (docs/adr/0017), its own
    /// chain checked: an entry that moves no credits, with the running
    /// figures as they stand.
    fn team_step(
        &self,
        chain: &mut Chain,
        raw: &RawEvent,
    ) -> Result<(DateTime<Utc>, HistoryEntry), ReplayError> {
        let (meta, wrong) = chain.check(raw);
        if let Some(first) = wrong.first() {
            return Err(ReplayError::Tampered(first.to_string()));
        }
        let event: TeamEvent = serde_json::from_str(&raw.payload).map_err(|e| {
            ReplayError::Tampered(format!("{} does not read: {e}", event_subject(raw, None)))
        })?;
        let meta = meta.ok_or_else(|| {
            ReplayError::Tampered(format!("{} has no metadata", event_subject(raw, None)))
        })?;
        let at = event.occurred_at();
        let (reference_id, description) = team_reference_and_description(&event);
        Ok((
            at,
            HistoryEntry {
                position: raw.position,
                sequence: raw.sequence,
                occurred_at: time_text(at),
                recorded_at: time_text(meta.recorded_at),
                event_type: event.type_name().to_owned(),
                reference_id,
                amount: 0,
                held_change: 0,
                balance: self.state.balance(),
                held: self.state.held(),
                available: self.state.available(),
                description,
                actor: format!("{} ({})", meta.actor.sub, meta.actor.role),
                event_id: meta.event_id.to_string(),
            },
        ))
    }
}

/// The account's team stream, whole (a few events per member).
async fn team_events(store: &Store, account: &str) -> Result<VecDeque<RawEvent>, ReplayError> {
    let mut out = VecDeque::new();
    let mut after = 0;
    loop {
        let page = store
            .stream_page(
                TEAM_AGGREGATE_TYPE,
                account,
                after,
                AUDIT_PAGE_EVENTS_MAX,
                true,
            )
            .await?;
        let Some(last) = page.last() else {
            return Ok(out);
        };
        after = last.sequence;
        out.extend(page);
    }
}

/// Which streams a history covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streams {
    /// The account's credit stream alone (what an audit pack holds).
    Credits,
    /// The credit stream and the team stream's membership changes,
    /// interleaved by log position (`ledger-replay history`).
    CreditsAndTeam,
}

/// Calls `each` with every entry whose instant is within `[from, to]`, in
/// log order, of the `streams` asked for. The chains are checked on the
/// way; a broken one is an error.
pub async fn for_each_entry(
    store: &Store,
    account: &str,
    streams: Streams,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
    mut each: impl FnMut(HistoryEntry) -> Result<(), ReplayError>,
) -> Result<u64, ReplayError> {
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(ReplayError::EmptyRange {
                from: time_text(f),
                to: time_text(t),
            });
        }
    }
    if store
        .stream_head(ACCOUNT_AGGREGATE_TYPE, account)
        .await?
        .is_none()
    {
        return Err(ReplayError::UnknownAccount(account.to_owned()));
    }
    let mut fold = HistoryFold::default();
    let mut team = match streams {
        Streams::Credits => VecDeque::new(),
        Streams::CreditsAndTeam => team_events(store, account).await?,
    };
    let mut team_chain = Chain::genesis();
    let mut written = 0;
    // Emits the team entries before `position` (all of them at the end).
    let mut team_before = |fold: &HistoryFold,
                           position: i64,
                           each: &mut dyn FnMut(HistoryEntry) -> Result<(), ReplayError>,
                           written: &mut u64|
     -> Result<bool, ReplayError> {
        while team.front().is_some_and(|t| t.position < position) {
            let Some(raw) = team.pop_front() else { break };
            let (at, entry) = fold.team_step(&mut team_chain, &raw)?;
            if to.is_some_and(|t| at > t) {
                return Ok(false);
            }
            if from.is_some_and(|f| at < f) {
                continue;
            }
            each(entry)?;
            *written += 1;
        }
        Ok(true)
    };
    'pages: loop {
        let page = store
            .stream_page(
                ACCOUNT_AGGREGATE_TYPE,
                account,
                fold.chain.sequence,
                AUDIT_PAGE_EVENTS_MAX,
                true,
            )
            .await?;
        if page.is_empty() {
            break;
        }
        for raw in page {
            if !team_before(&fold, raw.position, &mut each, &mut written)? {
                return Ok(written);
            }
            let (at, entry) = fold.step(&raw)?;
            if to.is_some_and(|t| at > t) {
                break 'pages;
            }
            if from.is_some_and(|f| at < f) {
                continue;
            }
            each(entry)?;
            written += 1;
        }
    }
    team_before(&fold, i64::MAX, &mut each, &mut written)?;
    Ok(written)
}

/// Writes entries in one of the formats, streaming.
pub struct HistoryWriter<W: Write> {
    format: Format,
    out: Option<W>,
    csv: Option<csv::Writer<W>>,
    count: u64,
}

/// RFC 4180: CRLF line ends, fields with commas, quotes or line breaks
/// quoted, quotes doubled; a header row.
pub fn csv_writer<W: Write>(out: W) -> csv::Writer<W> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .quote_style(csv::QuoteStyle::Necessary)
        .has_headers(true)
        .from_writer(out)
}

impl<W: Write> HistoryWriter<W> {
    pub fn new(format: Format, out: W) -> Self {
        match format {
            Format::Csv => Self {
                format,
                out: None,
                csv: Some(csv_writer(out)),
                count: 0,
            },
            _ => Self {
                format,
                out: Some(out),
                csv: None,
                count: 0,
            },
        }
    }

    pub fn write(&mut self, e: &HistoryEntry) -> Result<(), ReplayError> {
        let io = ReplayError::io("cannot write the history");
        match (self.format, self.out.as_mut(), self.csv.as_mut()) {
            (Format::Csv, _, Some(w)) => w.serialize(e)?,
            (Format::Json, Some(w), _) => {
                let sep = if self.count == 0 { "[\n  " } else { ",\n  " };
                w.write_all(sep.as_bytes()).map_err(&io)?;
                serde_json::to_writer(&mut *w, e)?;
            }
            (Format::Table, Some(w), _) => {
                if self.count == 0 {
                    writeln!(
                        w,
                        "{:>9} {:>6}  {:<27}  {:<18} {:>10} {:>10} {:>8} {:>10}  {:<36}  description",
                        "position", "seq", "occurred_at", "event", "amount", "balance", "held", "available", "reference"
                    )
                    .map_err(&io)?;
                }
                writeln!(
                    w,
                    "{:>9} {:>6}  {:<27}  {:<18} {:>10} {:>10} {:>8} {:>10}  {:<36}  {}",
                    e.position,
                    e.sequence,
                    e.occurred_at,
                    e.event_type,
                    e.amount,
                    e.balance,
                    e.held,
                    e.available,
                    e.reference_id,
                    e.description
                )
                .map_err(&io)?;
            }
            _ => {}
        }
        self.count += 1;
        Ok(())
    }

    pub fn finish(mut self) -> Result<(), ReplayError> {
        let io = ReplayError::io("cannot write the history");
        if let Some(mut w) = self.csv.take() {
            if self.count == 0 {
                // The header row even for an empty window.
                w.write_record([
                    "position",
                    "sequence",
                    "occurred_at",
                    "recorded_at",
                    "event_type",
                    "reference_id",
                    "amount",
                    "held_change",
                    "balance",
                    "held",
                    "available",
                    "description",
                    "actor",
                    "event_id",
                ])?;
            }
            w.flush().map_err(&io)?;
            return Ok(());
        }
        if let Some(mut w) = self.out.take() {
            if self.format == Format::Json {
                let end = if self.count == 0 { "[]\n" } else { "\n]\n" };
                w.write_all(end.as_bytes()).map_err(&io)?;
            }
            w.flush().map_err(&io)?;
        }
        Ok(())
    }
}
