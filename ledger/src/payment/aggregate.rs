use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{
    AccountId, Money, PaymentApproved, PaymentEvent, PaymentMethod, PaymentRejected, PaymentStatus,
    PaymentSubmitted, PAYMENT_AGGREGATE_TYPE,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest manual reference (a wire transfer id, a wallet receipt).
pub const REFERENCE_BYTES_MAX: usize = 255;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitManualPayment {
    pub payment_id: Uuid,
    pub invoice_id: Uuid,
    pub account_id: AccountId,
    pub amount: Money,
    /// What the invoice asks for, looked up by the caller: a manual payment
    /// settles the whole invoice, so the amounts must match.
    pub invoice_total: Money,
    pub method: PaymentMethod,
    pub reference: Option<String>,
    pub submitted_by: String,
    pub instructions: Option<String>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaymentCommand {
    SubmitManual(Box<SubmitManualPayment>),
    Approve {
        by: String,
        now: DateTime<Utc>,
    },
    Reject {
        by: String,
        reason: String,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    #[error("payment not found")]
    NotFound,
    #[error("the payment is already submitted")]
    AlreadySubmitted,
    #[error("{method} is not a manual payment method")]
    NotManual { method: &'static str },
    #[error("the amount must be positive")]
    NonPositiveAmount,
    #[error(
        "the amount {amount} {currency} does not match the invoice total {total} {total_currency}"
    )]
    AmountMismatch {
        amount: Decimal,
        currency: String,
        total: Decimal,
        total_currency: String,
    },
    #[error("the reference must be at most {REFERENCE_BYTES_MAX} bytes")]
    ReferenceTooLong,
    #[error("the submitter of a payment may not also approve or reject it")]
    SameApprover,
    #[error("the payment is {status}, not pending approval")]
    NotPending { status: &'static str },
}

/// A payment, folded from its stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Payment {
    submitted: Option<PaymentSubmitted>,
    status: Option<PaymentStatus>,
}

impl Payment {
    pub fn submitted(&self) -> Option<&PaymentSubmitted> {
        self.submitted.as_ref()
    }
    pub fn status(&self) -> Option<PaymentStatus> {
        self.status
    }

    fn decide(&self, by: &str) -> Result<(), PaymentError> {
        let (Some(submitted), Some(status)) = (&self.submitted, self.status) else {
            return Err(PaymentError::NotFound);
        };
        if status != PaymentStatus::Pending {
            return Err(PaymentError::NotPending {
                status: status.as_str(),
            });
        }
        if submitted.submitted_by == by {
            return Err(PaymentError::SameApprover);
        }
        Ok(())
    }
}

impl Aggregate for Payment {
    const TYPE: &'static str = PAYMENT_AGGREGATE_TYPE;
    type Command = PaymentCommand;
    type Event = PaymentEvent;
    type Error = PaymentError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            PaymentCommand::SubmitManual(cmd) => {
                if self.submitted.is_some() {
                    return Err(PaymentError::AlreadySubmitted);
                }
                if !cmd.method.is_manual() {
                    return Err(PaymentError::NotManual {
                        method: cmd.method.as_str(),
                    });
                }
                if cmd.amount.amount <= Decimal::ZERO {
                    return Err(PaymentError::NonPositiveAmount);
                }
                if cmd.amount != cmd.invoice_total {
                    return Err(PaymentError::AmountMismatch {
                        amount: cmd.amount.amount,
                        currency: cmd.amount.currency.as_str().to_owned(),
                        total: cmd.invoice_total.amount,
                        total_currency: cmd.invoice_total.currency.as_str().to_owned(),
                    });
                }
                if cmd
                    .reference
                    .as_ref()
                    .is_some_and(|r| r.len() > REFERENCE_BYTES_MAX)
                {
                    return Err(PaymentError::ReferenceTooLong);
                }
                let cmd = *cmd;
                PaymentEvent::PaymentSubmitted(PaymentSubmitted {
                    payment_id: cmd.payment_id,
                    invoice_id: cmd.invoice_id,
                    account_id: cmd.account_id,
                    amount: cmd.amount,
                    method: cmd.method,
                    reference: cmd.reference,
                    submitted_by: cmd.submitted_by,
                    instructions: cmd.instructions,
                    submitted_at: cmd.now,
                })
            }
            PaymentCommand::Approve { by, now } => {
                self.decide(&by)?;
                PaymentEvent::PaymentApproved(PaymentApproved {
                    approved_by: by,
                    approved_at: now,
                })
            }
            PaymentCommand::Reject { by, reason, now } => {
                self.decide(&by)?;
                PaymentEvent::PaymentRejected(PaymentRejected {
                    rejected_by: by,
                    reason,
                    rejected_at: now,
                })
            }
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PaymentEvent::PaymentSubmitted(e) => {
                self.status = Some(PaymentStatus::Pending);
                self.submitted = Some(e);
            }
            PaymentEvent::PaymentApproved(_) => self.status = Some(PaymentStatus::Succeeded),
            PaymentEvent::PaymentRejected(_) => self.status = Some(PaymentStatus::Failed),
        }
    }
}
