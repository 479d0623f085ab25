//! Every email's words, in one place: a subject, a plain-text part and an
//! HTML part (the same paragraphs, escaped), and the attachments.

use std::fmt::Write as _;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::mail::Kind;
use crate::App;

pub struct AttachmentFile {
    pub file_name: String,
    pub content_type: String,
    pub bytes: Vec<u8>,
}

pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    pub attachments: Vec<AttachmentFile>,
}

/// `&`, `<`, `>`, `"` and `'` as entities.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A message of a greeting, paragraphs and a sign-off, in both parts.
fn message(subject: String, greeting: &str, paragraphs: &[String]) -> Rendered {
    let mut text = format!("{greeting}\n\n");
    let mut html = format!(
        "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{}</title></head>\
         <body style=\"font-family:sans-serif;line-height:1.5\"><p>{}</p>",
        escape(&subject),
        escape(greeting)
    );
    for p in paragraphs {
        let _ = write!(text, "{p}\n\n");
        let _ = write!(html, "<p>{}</p>", escape(p).replace('\n', "<br>"));
    }
    text.push_str("— Ledger\n");
    html.push_str("<p>— Ledger</p></body></html>");
    Rendered {
        subject,
        text,
        html,
        attachments: Vec::new(),
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// The message of `kind` with `params` (the planner's), reading what it
/// names from the read models.
pub async fn render(app: &App, kind: Kind, params: &Value) -> Result<Rendered, String> {
    let event = params.get("event").cloned().unwrap_or(Value::Null);
    let aggregate = str_of(params, "aggregate_id");
    let account_id = str_of(params, "account_id");
    let account = if account_id.is_empty() {
        None
    } else {
        app.read_models
            .account(account_id)
            .await
            .map_err(|e| e.to_string())?
    };
    let name = account.as_ref().map_or("your account", |a| a.name.as_str());
    let greeting = format!("Hello {name},");
    let rm = &app.read_models;
    Ok(match kind {
        Kind::InvoiceIssued => {
            let invoice = rm
                .invoice(aggregate)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("invoice {aggregate} is not in the read models"))?;
            let due = invoice.due_at.get(..10).unwrap_or(&invoice.due_at);
            let mut m = message(
                format!(
                    "Invoice {} — {} {} due {due}",
                    invoice.number, invoice.total, invoice.currency
                ),
                &greeting,
                &[
                    format!(
                        "Invoice {} for {} {} is issued and due on {due}. The PDF is attached.",
                        invoice.number, invoice.total, invoice.currency
                    ),
                    format!(
                        "Pay it from the billing page, or by bank transfer with the reference {}.",
                        invoice.number
                    ),
                ],
            );
            m.attachments.push(AttachmentFile {
                file_name: format!("{}.pdf", invoice.number),
                content_type: "application/pdf".into(),
                bytes: crate::billing::pdf::render(&invoice),
            });
            m
        }
        Kind::PaymentReceived | Kind::PaymentFailed | Kind::PaymentAwaitingApproval => {
            let payment = rm
                .payment(aggregate)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("payment {aggregate} is not in the read models"))?;
            let number = rm
                .invoice(&payment.invoice_id)
                .await
                .map_err(|e| e.to_string())?
                .map_or_else(|| payment.invoice_id.clone(), |i| i.number);
            let amount = format!("{} {}", payment.amount, payment.currency);
            match kind {
                Kind::PaymentReceived => message(
                    format!("Payment received — {amount} for {number}"),
                    &greeting,
                    &[format!(
                        "We received your payment of {amount} ({}) for invoice {number}. Thank you.",
                        payment.method
                    )],
                ),
                Kind::PaymentFailed => {
                    let reason = str_of(&event, "reason");
                    message(
                        format!("Payment failed — {amount} for {number}"),
                        &greeting,
                        &[
                            format!(
                                "Your payment of {amount} ({}) for invoice {number} did not go through{}.",
                                payment.method,
                                if reason.is_empty() { String::new() } else { format!(": {reason}") }
                            ),
                            "The invoice stays open: please pay it again or choose another method."
                                .into(),
                        ],
                    )
                }
                _ => message(
                    format!("Payment awaiting approval — {amount} ({})", payment.method),
                    "Hello,",
                    &[
                        format!(
                            "A {} payment of {amount} for invoice {number} (account {}) was submitted by {} with the reference {}.",
                            payment.method,
                            payment.account_id,
                            payment.submitted_by,
                            payment.reference.as_deref().unwrap_or("(none)")
                        ),
                        format!(
                            "Approve it once the money is there: POST {}/v1/admin/payments/{}/approve (or reject it).",
                            app.settings.notify.public_url.trim_end_matches('/'),
                            payment.id
                        ),
                    ],
                ),
            }
        }
        Kind::SubscriptionPastDue | Kind::SubscriptionCanceled => {
            let plan = rm
                .subscription(aggregate)
                .await
                .map_err(|e| e.to_string())?
                .map_or_else(|| "your".to_owned(), |s| s.plan);
            if kind == Kind::SubscriptionPastDue {
                message(
                    format!("Your {plan} subscription is past due"),
                    &greeting,
                    &[
                        format!("The invoice of your {plan} subscription is past its due date."),
                        "Please pay it to keep your plan; it is canceled if it stays unpaid."
                            .into(),
                    ],
                )
            } else {
                message(
                    format!("Your {plan} subscription is canceled"),
                    &greeting,
                    &[format!(
                        "Your {plan} subscription has ended. Your account is on the free plan from now on."
                    )],
                )
            }
        }
        Kind::SubscriptionRenewing => {
            let end = str_of(&event, "current_period_end");
            let date = end.get(..10).unwrap_or(end);
            let plan = str_of(&event, "plan");
            message(
                format!("Your {plan} subscription renews on {date}"),
                &greeting,
                &[
                    format!(
                        "Your {plan} subscription renews on {date} for {} {}; its invoice follows then.",
                        str_of(&event, "price"),
                        str_of(&event, "currency")
                    ),
                    "To change or cancel it, use the billing page before that date.".into(),
                ],
            )
        }
        Kind::LowBalance => message(
            format!(
                "Low credit balance — {} credits available",
                params["available_after"]
            ),
            &greeting,
            &[
                format!(
                    "Your available credits fell below {} (now {}).",
                    params["threshold"], params["available_after"]
                ),
                "Buy a credit package or upgrade your plan to keep your AI operations running."
                    .into(),
            ],
        ),
        Kind::BudgetThreshold => {
            let cap = if event["hard_cap"] == true {
                " Beyond it, operations are refused until next month."
            } else {
                ""
            };
            message(
                format!(
                    "Budget {} % reached — {} of {} credits in {}",
                    event["percent"], event["used"], event["monthly_credits"], str_of(&event, "period")
                ),
                &greeting,
                &[format!(
                    "Your team has used {} of its {} monthly credits in {} ({} % of the budget).{cap}",
                    event["used"], event["monthly_credits"], str_of(&event, "period"), event["percent"]
                )],
            )
        }
        Kind::AutoTopUpDone | Kind::AutoTopUpFailed => {
            let package = str_of(&event, "package");
            if kind == Kind::AutoTopUpDone {
                message(
                    format!("Auto top-up: the {package} package was bought"),
                    &greeting,
                    &[format!(
                        "Your available credits fell below your threshold, so the {package} package was bought for you."
                    )],
                )
            } else {
                let mut paragraphs = vec![format!(
                    "Buying the {package} package automatically failed: {}. Check your payment method.",
                    str_of(&event, "reason")
                )];
                if event["disabled"] == true {
                    paragraphs.push(format!(
                        "After {} failures in a row, automatic top-up is now off; turn it on again once the payment method works.",
                        event["failures"]
                    ));
                }
                message(
                    format!("Auto top-up failed: the {package} package"),
                    &greeting,
                    &paragraphs,
                )
            }
        }
        Kind::TeamInvitation => {
            let member = str_of(&event, "member_id");
            let token = match (
                account_id.parse::<uuid::Uuid>(),
                member.parse::<uuid::Uuid>(),
            ) {
                (Ok(a), Ok(m)) => {
                    let token =
                        crate::team::invitation_token(app, events::AccountId::from_uuid(a), m);
                    let hash = hex::encode(Sha256::digest(token.as_bytes()));
                    (hash == str_of(&event, "token_hash")).then_some(token)
                }
                _ => None,
            };
            let accept = match token {
                Some(t) => format!(
                    "To accept, sign in to the product and send your invitation token {t} to {}/v1/team/invitations/accept.",
                    app.settings.notify.public_url.trim_end_matches('/')
                ),
                None => "Ask the person who invited you for your invitation token.".into(),
            };
            let expires = str_of(&event, "expires_at");
            message(
                format!("You are invited to join {name}"),
                "Hello,",
                &[
                    format!(
                        "{} invited you to join {name} as {}.",
                        str_of(&event, "invited_by"),
                        str_of(&event, "role")
                    ),
                    accept,
                    format!(
                        "The invitation expires on {}.",
                        expires.get(..10).unwrap_or(expires)
                    ),
                ],
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_parts_escape_what_they_quote() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let m = message("S <b>".into(), "Hi <i>", &["1 < 2".into()]);
        assert!(m.html.contains("S &lt;b&gt;") && m.html.contains("1 &lt; 2"));
        assert!(m.text.contains("1 < 2") && m.text.starts_with("Hi <i>"));
    }
}
