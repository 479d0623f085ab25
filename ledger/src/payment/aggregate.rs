use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{
    AccountId, Money, PaymentApproved, PaymentEvent, PaymentFailed, PaymentInitiated,
    PaymentMethod, PaymentRefunded, PaymentRejected, PaymentStatus, PaymentSubmitted,
    PaymentSucceeded, RefundReleased, RefundReserved, PAYMENT_AGGREGATE_TYPE,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest manual reference (a wire transfer id, a wallet receipt).
pub const REFERENCE_BYTES_MAX: usize = 255;
/// Longest gateway reference (`pi_…`, `ch_…`, `re_…`) or failure reason.
pub const GATEWAY_TEXT_BYTES_MAX: usize = 1_024;
/// Most refunds one payment takes (the folded state keeps their ids).
pub const REFUNDS_PER_PAYMENT_MAX: usize = 100;

/// A payment through a gateway (Stripe): the caller has created it at the
/// gateway (the PaymentIntent) and records it here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitiatePayment {
    pub payment_id: Uuid,
    pub invoice_id: Uuid,
    pub account_id: AccountId,
    pub amount: Money,
    /// What the invoice asks for, looked up by the caller.
    pub invoice_total: Money,
    pub method: PaymentMethod,
    pub gateway: String,
    pub gateway_ref: String,
    pub submitted_by: String,
    pub now: DateTime<Utc>,
}

/// Part or all of a succeeded payment goes back. The caller computed the
/// credits to take back (if any) and, for a gateway payment, made the
/// refund there first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundPayment {
    pub refund_id: Uuid,
    pub amount: Decimal,
    pub revoke_credits: bool,
    pub revoked_credits: i64,
    pub reason: Option<String>,
    pub by: String,
    pub gateway_refund_ref: Option<String>,
    pub now: DateTime<Utc>,
}

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
        notes: Option<String>,
        now: DateTime<Utc>,
    },
    Reject {
        by: String,
        reason: String,
        now: DateTime<Utc>,
    },
    /// Withdraws a pending manual payment (anyone may; the caller checks
    /// who); cancelling it again is a no-op.
    Cancel {
        by: String,
        reason: Option<String>,
        now: DateTime<Utc>,
    },
    Initiate(Box<InitiatePayment>),
    /// The gateway reports the payment paid; again is a no-op.
    MarkSucceeded {
        gateway_ref: Option<String>,
        now: DateTime<Utc>,
    },
    /// The gateway reports the payment failed; again is a no-op.
    MarkFailed {
        reason: String,
        now: DateTime<Utc>,
    },
    /// A refund; the same `refund_id` or gateway refund again is a no-op.
    Refund(Box<RefundPayment>),
    /// Holds `amount` for refund `refund_id` before anything moves (credits,
    /// the gateway); a no-op when it is held or recorded already.
    ReserveRefund {
        refund_id: Uuid,
        amount: Decimal,
        by: String,
        now: DateTime<Utc>,
    },
    /// Gives a held refund's amount back (its gateway refused it); a no-op
    /// when it is not held.
    ReleaseRefund {
        refund_id: Uuid,
        reason: String,
        credits_restored: i64,
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
    #[error("{method} is not a gateway payment method")]
    NotGateway { method: &'static str },
    #[error("the gateway reference must be 1 to {GATEWAY_TEXT_BYTES_MAX} bytes")]
    InvalidGatewayRef,
    #[error("the payment is {status}; only a succeeded payment can be refunded")]
    NotRefundable { status: &'static str },
    #[error("the refund {requested} exceeds what is left to refund, {refundable}")]
    RefundExceedsPaid {
        requested: Decimal,
        refundable: Decimal,
    },
    #[error("the amount has more decimals than the currency's minor unit ({digits})")]
    AmountPrecision { digits: u32 },
    #[error("a payment takes at most {REFUNDS_PER_PAYMENT_MAX} refunds")]
    TooManyRefunds,
    #[error("the payment already succeeded; it cannot fail")]
    AlreadySucceeded,
}

/// A payment, folded from its stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Payment {
    submitted: Option<PaymentSubmitted>,
    #[serde(default)]
    initiated: Option<PaymentInitiated>,
    status: Option<PaymentStatus>,
    #[serde(default)]
    refunded: Decimal,
    #[serde(default)]
    revoked_credits: i64,
    /// Refund ids and gateway refund refs seen (bounded by
    /// [`REFUNDS_PER_PAYMENT_MAX`]).
    #[serde(default)]
    refunds: Vec<(Uuid, Option<String>)>,
    /// Refunds in progress and the amounts they hold.
    #[serde(default)]
    pending_refunds: Vec<(Uuid, Decimal)>,
    /// How many attempts of each refund were released (a gateway refused
    /// them): a retry's steps are keyed by the attempt.
    #[serde(default)]
    released_attempts: Vec<(Uuid, u32)>,
}

impl Payment {
    /// A manual payment's submission.
    pub fn submitted(&self) -> Option<&PaymentSubmitted> {
        self.submitted.as_ref()
    }
    /// A gateway payment's start.
    pub fn initiated(&self) -> Option<&PaymentInitiated> {
        self.initiated.as_ref()
    }
    pub fn status(&self) -> Option<PaymentStatus> {
        self.status
    }
    pub fn exists(&self) -> bool {
        self.status.is_some()
    }
    pub fn invoice_id(&self) -> Option<Uuid> {
        self.submitted
            .as_ref()
            .map(|s| s.invoice_id)
            .or(self.initiated.as_ref().map(|i| i.invoice_id))
    }
    pub fn account_id(&self) -> Option<AccountId> {
        self.submitted
            .as_ref()
            .map(|s| s.account_id)
            .or(self.initiated.as_ref().map(|i| i.account_id))
    }
    pub fn amount(&self) -> Option<&Money> {
        self.submitted
            .as_ref()
            .map(|s| &s.amount)
            .or(self.initiated.as_ref().map(|i| &i.amount))
    }
    pub fn method(&self) -> Option<PaymentMethod> {
        self.submitted
            .as_ref()
            .map(|s| s.method)
            .or(self.initiated.as_ref().map(|i| i.method))
    }
    /// The gateway's id of the payment (`pi_…`), for gateway payments.
    pub fn gateway_ref(&self) -> Option<&str> {
        self.initiated.as_ref().map(|i| i.gateway_ref.as_str())
    }
    /// The sum of the refunds so far.
    pub fn refunded(&self) -> Decimal {
        self.refunded
    }
    /// Credits taken back by refunds so far.
    pub fn revoked_credits(&self) -> i64 {
        self.revoked_credits
    }
    /// What is left to refund (zero unless the payment succeeded), less
    /// what refunds in progress hold.
    pub fn refundable(&self) -> Decimal {
        match (self.status, self.amount()) {
            (Some(PaymentStatus::Succeeded), Some(m)) => {
                m.amount
                    - self.refunded
                    - self
                        .pending_refunds
                        .iter()
                        .map(|(_, a)| *a)
                        .sum::<Decimal>()
            }
            _ => Decimal::ZERO,
        }
    }

    /// The amount refund `id` holds while in progress.
    pub fn pending_refund(&self, id: Uuid) -> Option<Decimal> {
        self.pending_refunds
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, a)| *a)
    }

    /// How many attempts of refund `id` were released so far.
    pub fn refund_attempt(&self, id: Uuid) -> u32 {
        self.released_attempts
            .iter()
            .find(|(i, _)| *i == id)
            .map_or(0, |(_, n)| *n)
    }
    /// Whether a refund of `amount` would be taken now: the payment
    /// succeeded, the amount is positive, in the currency's minor unit and
    /// at most what is left to refund.
    pub fn refund_check(&self, amount: Decimal) -> Result<(), PaymentError> {
        let status = self.status.ok_or(PaymentError::NotFound)?;
        if status != PaymentStatus::Succeeded {
            return Err(PaymentError::NotRefundable {
                status: status.as_str(),
            });
        }
        if self.refunds.len() + self.pending_refunds.len() >= REFUNDS_PER_PAYMENT_MAX {
            return Err(PaymentError::TooManyRefunds);
        }
        let paid = self.amount().ok_or(PaymentError::NotFound)?;
        if amount <= Decimal::ZERO {
            return Err(PaymentError::NonPositiveAmount);
        }
        let digits = paid.currency.minor_unit_digits();
        if amount.normalize().scale() > digits {
            return Err(PaymentError::AmountPrecision { digits });
        }
        let refundable = self.refundable();
        if amount > refundable {
            return Err(PaymentError::RefundExceedsPaid {
                requested: amount,
                refundable,
            });
        }
        Ok(())
    }

    /// Whether the refund `id` is recorded.
    pub fn has_refund(&self, id: Uuid) -> bool {
        self.refunds.iter().any(|(i, _)| *i == id)
    }

    fn knows_refund(&self, id: Uuid, gateway_ref: Option<&str>) -> bool {
        self.refunds
            .iter()
            .any(|(i, g)| *i == id || (gateway_ref.is_some() && g.as_deref() == gateway_ref))
    }

    fn initiate(&self, cmd: InitiatePayment) -> Result<PaymentEvent, PaymentError> {
        if self.exists() {
            return Err(PaymentError::AlreadySubmitted);
        }
        if cmd.method.is_manual() {
            return Err(PaymentError::NotGateway {
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
        if cmd.gateway_ref.is_empty() || cmd.gateway_ref.len() > GATEWAY_TEXT_BYTES_MAX {
            return Err(PaymentError::InvalidGatewayRef);
        }
        Ok(PaymentEvent::PaymentInitiated(PaymentInitiated {
            payment_id: cmd.payment_id,
            invoice_id: cmd.invoice_id,
            account_id: cmd.account_id,
            amount: cmd.amount,
            method: cmd.method,
            gateway: cmd.gateway,
            gateway_ref: cmd.gateway_ref,
            submitted_by: cmd.submitted_by,
            initiated_at: cmd.now,
        }))
    }

    /// A gateway's word on the payment: only for gateway payments.
    fn gateway_status(&self) -> Result<PaymentStatus, PaymentError> {
        let status = self.status.ok_or(PaymentError::NotFound)?;
        if self.initiated.is_none() {
            return Err(PaymentError::NotGateway {
                method: self.method().map(|m| m.as_str()).unwrap_or("manual"),
            });
        }
        Ok(status)
    }

    fn refund(&self, cmd: RefundPayment) -> Result<Option<PaymentEvent>, PaymentError> {
        if self.status.is_none() {
            return Err(PaymentError::NotFound);
        }
        if self.knows_refund(cmd.refund_id, cmd.gateway_refund_ref.as_deref()) {
            return Ok(None);
        }
        // A reserved refund is checked without its own hold.
        if self.pending_refund(cmd.refund_id).is_some() {
            let mut without = self.clone();
            without.pending_refunds.retain(|(i, _)| *i != cmd.refund_id);
            without.refund_check(cmd.amount)?;
        } else {
            self.refund_check(cmd.amount)?;
        }
        let paid = self.amount().ok_or(PaymentError::NotFound)?;
        let digits = paid.currency.minor_unit_digits();
        if cmd
            .gateway_refund_ref
            .as_ref()
            .is_some_and(|r| r.is_empty() || r.len() > GATEWAY_TEXT_BYTES_MAX)
        {
            return Err(PaymentError::InvalidGatewayRef);
        }
        let mut amount = cmd.amount;
        amount.rescale(digits);
        let mut refunded_total = self.refunded + cmd.amount;
        refunded_total.rescale(digits);
        Ok(Some(PaymentEvent::PaymentRefunded(PaymentRefunded {
            refund_id: cmd.refund_id,
            amount,
            fully_refunded: refunded_total >= paid.amount,
            refunded_total,
            revoke_credits: cmd.revoke_credits,
            revoked_credits: if cmd.revoke_credits {
                cmd.revoked_credits
            } else {
                0
            },
            reason: cmd.reason,
            by: cmd.by,
            gateway_refund_ref: cmd.gateway_refund_ref,
            refunded_at: cmd.now,
        })))
    }

    fn decide(&self, by: &str) -> Result<(), PaymentError> {
        let (Some(submitted), Some(status)) = (&self.submitted, self.status) else {
            if self.initiated.is_some() {
                return Err(PaymentError::NotManual {
                    method: self.method().map(|m| m.as_str()).unwrap_or("stripe"),
                });
            }
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
                if self.exists() {
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
            PaymentCommand::Approve { by, notes, now } => {
                self.decide(&by)?;
                PaymentEvent::PaymentApproved(PaymentApproved {
                    notes,
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
            PaymentCommand::Cancel { by, reason, now } => {
                if self.submitted.is_none() {
                    return Err(match self.initiated {
                        Some(_) => PaymentError::NotManual {
                            method: self.method().map(|m| m.as_str()).unwrap_or("stripe"),
                        },
                        None => PaymentError::NotFound,
                    });
                }
                match self.status {
                    Some(PaymentStatus::Pending) => {
                        PaymentEvent::PaymentCancelled(events::PaymentCancelled {
                            cancelled_by: by,
                            reason,
                            cancelled_at: now,
                        })
                    }
                    Some(PaymentStatus::Cancelled) => return Ok(()),
                    status => {
                        return Err(PaymentError::NotPending {
                            status: status.map_or("unknown", |s| s.as_str()),
                        })
                    }
                }
            }
            PaymentCommand::Initiate(cmd) => self.initiate(*cmd)?,
            PaymentCommand::MarkSucceeded { gateway_ref, now } => {
                match self.gateway_status()? {
                    // A PaymentIntent may succeed after a failed attempt.
                    PaymentStatus::Pending | PaymentStatus::Processing | PaymentStatus::Failed => {}
                    PaymentStatus::Succeeded | PaymentStatus::Refunded => return Ok(()),
                    status @ PaymentStatus::Cancelled => {
                        return Err(PaymentError::NotPending {
                            status: status.as_str(),
                        })
                    }
                }
                if gateway_ref
                    .as_ref()
                    .is_some_and(|r| r.len() > GATEWAY_TEXT_BYTES_MAX)
                {
                    return Err(PaymentError::InvalidGatewayRef);
                }
                PaymentEvent::PaymentSucceeded(PaymentSucceeded {
                    gateway_ref,
                    succeeded_at: now,
                })
            }
            PaymentCommand::MarkFailed { reason, now } => {
                match self.gateway_status()? {
                    PaymentStatus::Pending | PaymentStatus::Processing => {}
                    PaymentStatus::Failed => return Ok(()),
                    PaymentStatus::Succeeded | PaymentStatus::Refunded => {
                        return Err(PaymentError::AlreadySucceeded)
                    }
                    status @ PaymentStatus::Cancelled => {
                        return Err(PaymentError::NotPending {
                            status: status.as_str(),
                        })
                    }
                }
                let mut reason = reason;
                if reason.len() > GATEWAY_TEXT_BYTES_MAX {
                    let mut end = GATEWAY_TEXT_BYTES_MAX;
                    while !reason.is_char_boundary(end) {
                        end -= 1;
                    }
                    reason.truncate(end);
                }
                PaymentEvent::PaymentFailed(PaymentFailed {
                    reason,
                    failed_at: now,
                })
            }
            PaymentCommand::Refund(cmd) => match self.refund(*cmd)? {
                Some(event) => event,
                None => return Ok(()),
            },
            PaymentCommand::ReserveRefund {
                refund_id,
                amount,
                by,
                now,
            } => {
                if self.has_refund(refund_id) || self.pending_refund(refund_id).is_some() {
                    return Ok(());
                }
                self.refund_check(amount)?;
                PaymentEvent::RefundReserved(RefundReserved {
                    refund_id,
                    amount,
                    by,
                    reserved_at: now,
                })
            }
            PaymentCommand::ReleaseRefund {
                refund_id,
                reason,
                credits_restored,
                now,
            } => {
                if self.pending_refund(refund_id).is_none() {
                    return Ok(());
                }
                PaymentEvent::RefundReleased(RefundReleased {
                    refund_id,
                    reason,
                    credits_restored,
                    released_at: now,
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
            PaymentEvent::PaymentCancelled(_) => self.status = Some(PaymentStatus::Cancelled),
            PaymentEvent::PaymentInitiated(e) => {
                self.status = Some(PaymentStatus::Processing);
                self.initiated = Some(e);
            }
            PaymentEvent::PaymentSucceeded(_) => self.status = Some(PaymentStatus::Succeeded),
            PaymentEvent::PaymentFailed(_) => self.status = Some(PaymentStatus::Failed),
            PaymentEvent::PaymentRefunded(e) => {
                self.refunded = e.refunded_total;
                self.revoked_credits = self.revoked_credits.saturating_add(e.revoked_credits);
                if e.fully_refunded {
                    self.status = Some(PaymentStatus::Refunded);
                }
                self.pending_refunds.retain(|(i, _)| *i != e.refund_id);
                self.refunds.push((e.refund_id, e.gateway_refund_ref));
            }
            PaymentEvent::RefundReserved(e) => {
                self.pending_refunds.push((e.refund_id, e.amount));
            }
            PaymentEvent::RefundReleased(e) => {
                self.pending_refunds.retain(|(i, _)| *i != e.refund_id);
                match self
                    .released_attempts
                    .iter_mut()
                    .find(|(i, _)| *i == e.refund_id)
                {
                    Some((_, n)) => *n += 1,
                    None => self.released_attempts.push((e.refund_id, 1)),
                }
            }
        }
    }
}
