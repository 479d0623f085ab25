//! Emails (issue 17): which messages an event asks for, and sending one
//! through SMTP (`LEDGER_SMTP_URL`) or, without SMTP, writing it as an
//! `.eml` file to `<data dir>/mail/` (one file per delivery; a retry
//! rewrites the same file).

use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;
use serde_json::{json, Value};
use store::notifications::DeliveryRow;
use store::StoredEvent;

use super::templates;
use crate::error::AppError;
use crate::App;

/// The kinds of message, as stored on a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvoiceIssued,
    PaymentReceived,
    PaymentFailed,
    PaymentAwaitingApproval,
    SubscriptionPastDue,
    SubscriptionCanceled,
    SubscriptionRenewing,
    LowBalance,
    BudgetThreshold,
    AutoTopUpDone,
    AutoTopUpFailed,
    TeamInvitation,
}

impl Kind {
    pub const ALL: [Kind; 12] = [
        Kind::InvoiceIssued,
        Kind::PaymentReceived,
        Kind::PaymentFailed,
        Kind::PaymentAwaitingApproval,
        Kind::SubscriptionPastDue,
        Kind::SubscriptionCanceled,
        Kind::SubscriptionRenewing,
        Kind::LowBalance,
        Kind::BudgetThreshold,
        Kind::AutoTopUpDone,
        Kind::AutoTopUpFailed,
        Kind::TeamInvitation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::InvoiceIssued => "invoice_issued",
            Kind::PaymentReceived => "payment_received",
            Kind::PaymentFailed => "payment_failed",
            Kind::PaymentAwaitingApproval => "payment_awaiting_approval",
            Kind::SubscriptionPastDue => "subscription_past_due",
            Kind::SubscriptionCanceled => "subscription_canceled",
            Kind::SubscriptionRenewing => "subscription_renewing",
            Kind::LowBalance => "low_balance",
            Kind::BudgetThreshold => "budget_threshold",
            Kind::AutoTopUpDone => "auto_top_up_done",
            Kind::AutoTopUpFailed => "auto_top_up_failed",
            Kind::TeamInvitation => "team_invitation",
        }
    }

    /// Messages about the account's credits and plan, which its owners
    /// and admins get besides the billing email.
    pub fn goes_to_managers(self) -> bool {
        matches!(
            self,
            Kind::SubscriptionPastDue
                | Kind::SubscriptionCanceled
                | Kind::LowBalance
                | Kind::BudgetThreshold
                | Kind::AutoTopUpDone
                | Kind::AutoTopUpFailed
        )
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A message to plan: its kind, recipient and what the template needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Planned {
    pub kind: Kind,
    pub to: String,
    pub params: Value,
}

/// What a deduction, hold or capture did to available credits, read from
/// its stored fields without decoding the whole event (the planner sees
/// every deduction of the log).
#[derive(Debug, serde::Deserialize)]
struct AvailableMove {
    available_after: i64,
    credits: Option<i64>,
    held: Option<i64>,
    captured: Option<i64>,
}

impl AvailableMove {
    /// Available before the event: a deduction and a hold take `credits`;
    /// a capture takes `captured` and gives back the `held` it settles.
    fn before(&self, event_type: &str) -> Option<i64> {
        let delta = match event_type {
            "CreditsDeducted" | "CreditsHeld" => self.credits?.checked_neg()?,
            "HoldCaptured" => self.held?.checked_sub(self.captured?)?,
            _ => return None,
        };
        self.available_after.checked_sub(delta)
    }
}

struct Move {
    before: i64,
    after: i64,
}

impl Move {
    fn crossing(&self, threshold: i64) -> Option<events::LowBalanceCrossing> {
        (self.before >= threshold && self.after < threshold).then_some(events::LowBalanceCrossing {
            threshold,
            available_before: self.before,
            available_after: self.after,
        })
    }
}

fn available_move(e: &StoredEvent) -> Option<Move> {
    let m = AvailableMove::deserialize(super::event_fields(e)).ok()?;
    Some(Move {
        before: m.before(&e.event_type)?,
        after: m.available_after,
    })
}

/// The low-balance thresholds of the accounts a planning round met, read
/// once per account and round (a round of deductions asks once, not once
/// per deduction).
#[derive(Debug, Default)]
pub struct Thresholds(std::collections::HashMap<String, Option<i64>>);

impl Thresholds {
    async fn of(&mut self, app: &App, account: &str) -> Result<Option<i64>, AppError> {
        if let Some(t) = self.0.get(account) {
            return Ok(*t);
        }
        let t = app.read_models.low_balance_threshold(account).await?;
        self.0.insert(account.to_owned(), t);
        Ok(t)
    }
}

/// The emails of the account's active owners and admins.
async fn managers(app: &App, account: &str) -> Result<Vec<String>, AppError> {
    let page = app
        .read_models
        .users(
            &projections::team::UserFilter {
                q: None,
                role: None,
                status: Some("active".into()),
                account_id: Some(account.to_owned()),
            },
            &projections::PageRequest {
                limit: projections::PAGE_LIMIT_MAX,
                after: None,
            },
        )
        .await?;
    Ok(page
        .items
        .into_iter()
        .filter(|m| matches!(m.role.as_str(), "owner" | "admin"))
        .map(|m| m.email)
        .collect())
}

/// The billing email of `account`, from the read models.
pub(crate) async fn billing_email(
    app: &App,
    account: Option<&str>,
) -> Result<Option<String>, AppError> {
    let Some(account) = account else {
        return Ok(None);
    };
    Ok(app
        .read_models
        .account(account)
        .await?
        .map(|a| a.billing_email))
}

/// The messages event `e` asks for.
pub async fn messages_for(
    app: &App,
    e: &StoredEvent,
    account: Option<&str>,
    thresholds: &mut Thresholds,
) -> Result<Vec<Planned>, AppError> {
    let params = |extra: Value| {
        let mut p = json!({
            "account_id": account,
            "aggregate_id": e.aggregate_id,
            "event_type": e.event_type,
            "position": e.position,
            "event": super::event_fields(e),
        });
        if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
        p
    };
    // The billing email; for the messages about the account's credits
    // and plan, its active owners and admins too (each address once).
    let to_billing = |kind: Kind, extra: Value| async move {
        let mut to: Vec<String> = billing_email(app, account).await?.into_iter().collect();
        if kind.goes_to_managers() {
            if let Some(account) = account {
                for m in managers(app, account).await? {
                    if !to.iter().any(|t| t.eq_ignore_ascii_case(&m)) {
                        to.push(m);
                    }
                }
            }
        }
        Ok::<_, AppError>(
            to.into_iter()
                .map(|to| Planned {
                    kind,
                    to,
                    params: params(extra.clone()),
                })
                .collect::<Vec<_>>(),
        )
    };
    let kind = match e.event_type.as_str() {
        "InvoiceIssued" if super::event_fields(e)["status"] == "pending" => {
            Some(Kind::InvoiceIssued)
        }
        "InvoiceFinalized" => Some(Kind::InvoiceIssued),
        "PaymentSucceeded" | "PaymentApproved" => Some(Kind::PaymentReceived),
        "PaymentFailed" | "PaymentRejected" => Some(Kind::PaymentFailed),
        "SubscriptionPastDue" => Some(Kind::SubscriptionPastDue),
        "SubscriptionCanceled" => Some(Kind::SubscriptionCanceled),
        "BudgetThresholdReached" => Some(Kind::BudgetThreshold),
        _ => None,
    };
    if let Some(kind) = kind {
        return to_billing(kind, json!({})).await;
    }
    match e.event_type.as_str() {
        "PaymentSubmitted" => Ok(app
            .settings
            .notify
            .staff_email
            .clone()
            .map(|to| Planned {
                kind: Kind::PaymentAwaitingApproval,
                to,
                params: params(json!({})),
            })
            .into_iter()
            .collect()),
        "MemberInvited" => Ok(super::event_fields(e)["email"]
            .as_str()
            .map(|to| Planned {
                kind: Kind::TeamInvitation,
                to: to.to_owned(),
                params: params(json!({})),
            })
            .into_iter()
            .collect()),
        "AutoTopUpSucceeded" => to_billing(Kind::AutoTopUpDone, json!({})).await,
        "AutoTopUpFailed" => to_billing(Kind::AutoTopUpFailed, json!({})).await,
        "CreditsDeducted" | "CreditsHeld" | "HoldCaptured" => {
            let Some(account) = account else {
                return Ok(vec![]);
            };
            let Some(threshold) = thresholds.of(app, account).await? else {
                return Ok(vec![]);
            };
            match available_move(e).and_then(|m| m.crossing(threshold)) {
                Some(c) => {
                    to_billing(
                        Kind::LowBalance,
                        json!({
                            "threshold": c.threshold,
                            "available_before": c.available_before,
                            "available_after": c.available_after,
                        }),
                    )
                    .await
                }
                None => Ok(vec![]),
            }
        }
        _ => Ok(vec![]),
    }
}

fn mailbox(raw: &str, what: &str) -> Result<Mailbox, (Option<i64>, String)> {
    raw.parse::<Mailbox>()
        .map_err(|e| (None, format!("{what} {raw:?} is not an address: {e}")))
}

/// Builds the message of a delivery.
pub async fn build(app: &App, d: &DeliveryRow) -> Result<Message, (Option<i64>, String)> {
    let kind = Kind::parse(&d.kind).ok_or_else(|| (None, format!("unknown message {}", d.kind)))?;
    let params: Value =
        serde_json::from_str(&d.payload).map_err(|e| (None, format!("bad parameters: {e}")))?;
    let rendered = templates::render(app, kind, &params)
        .await
        .map_err(|e| (None, format!("rendering: {e}")))?;
    let settings = &app.settings.notify;
    let body = MultiPart::alternative_plain_html(rendered.text, rendered.html);
    let body = if rendered.attachments.is_empty() {
        body
    } else {
        let mut mixed = MultiPart::mixed().multipart(body);
        for a in rendered.attachments {
            let content_type = ContentType::parse(&a.content_type)
                .map_err(|e| (None, format!("attachment type: {e}")))?;
            let part: SinglePart = Attachment::new(a.file_name).body(a.bytes, content_type);
            mixed = mixed.singlepart(part);
        }
        mixed
    };
    Message::builder()
        .from(mailbox(&settings.mail_from, "LEDGER_MAIL_FROM")?)
        .to(mailbox(&d.target, "the recipient")?)
        .subject(rendered.subject)
        .message_id(Some(format!("<{}@ledger>", d.id)))
        .multipart(body)
        .map_err(|e| (None, format!("building the message: {e}")))
}

/// Sends (or files) one delivery's message.
pub async fn deliver(app: &App, d: &DeliveryRow) -> Result<Option<i64>, (Option<i64>, String)> {
    let message = build(app, d).await?;
    let settings = &app.settings.notify;
    match &settings.smtp_url {
        Some(url) => {
            let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
                .map_err(|e| (None, format!("LEDGER_SMTP_URL: {e}")))?
                .timeout(Some(Duration::from_secs(20)))
                .build();
            let response = transport
                .send(message)
                .await
                .map_err(|e| (e.status().map(|c| i64::from(u16::from(c))), e.to_string()))?;
            Ok(Some(i64::from(u16::from(response.code()))))
        }
        None => {
            let dir = &settings.mail_dir;
            let write = async {
                tokio::fs::create_dir_all(dir).await?;
                let name = format!("{}-{}.eml", d.id, d.kind);
                let tmp = dir.join(format!(".{name}.tmp"));
                tokio::fs::write(&tmp, message.formatted()).await?;
                tokio::fs::rename(&tmp, dir.join(&name)).await
            };
            write
                .await
                .map_err(|e| (None, format!("writing to {}: {e}", dir.display())))?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::AccountEvent;

    fn stored(event: &AccountEvent) -> StoredEvent {
        StoredEvent {
            position: 1,
            aggregate_type: "account".into(),
            aggregate_id: "a".into(),
            sequence: 1,
            event_type: event.type_name().into(),
            event_version: "1.0".into(),
            payload: serde_json::to_value(event).unwrap(),
            metadata: json!({}),
        }
    }

    #[test]
    fn the_light_read_of_a_move_agrees_with_the_event_s_own_crossing() {
        let at = chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let deducted = |credits, after| {
            AccountEvent::CreditsDeducted(events::CreditsDeducted {
                deduction_id: uuid::Uuid::nil(),
                credits,
                usage: events::Usage::default(),
                draws: vec![],
                overdraft: 0,
                balance_after: after,
                available_after: after,
                idempotency_key: None,
                recorded_at: at,
            })
        };
        let held = |credits, after| {
            AccountEvent::CreditsHeld(events::CreditsHeld {
                hold_id: uuid::Uuid::nil(),
                credits,
                operation: None,
                units: None,
                cost_version: None,
                expires_at: at,
                available_after: after,
                idempotency_key: None,
                held_at: at,
            })
        };
        let captured = |held, captured, after| {
            AccountEvent::HoldCaptured(events::HoldCaptured {
                hold_id: uuid::Uuid::nil(),
                deduction_id: uuid::Uuid::nil(),
                held,
                captured,
                released: 0,
                usage: events::Usage::default(),
                draws: vec![],
                overdraft: 0,
                balance_after: after,
                available_after: after,
                idempotency_key: None,
                captured_at: at,
            })
        };
        for event in [
            deducted(30, 80),
            deducted(10, 100),
            deducted(1, 99),
            held(40, 90),
            captured(50, 30, 120),
            captured(10, 40, 95),
        ] {
            for threshold in [0, 90, 99, 100, 110] {
                let light = available_move(&stored(&event)).and_then(|m| m.crossing(threshold));
                assert_eq!(
                    light,
                    event.low_balance_crossing(threshold),
                    "{event:?} at {threshold}"
                );
            }
        }
    }
}
