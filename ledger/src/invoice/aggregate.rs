use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{
    AccountId, BillingAddress, CreditPurchase, Currency, InvoiceEvent, InvoiceFinalized,
    InvoiceIssued, InvoiceLine, InvoiceMarkedUncollectible, InvoicePaid, InvoiceStatus,
    InvoiceVoided, PaymentMethod, INVOICE_AGGREGATE_TYPE,
};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most line items on one invoice.
pub const INVOICE_LINES_MAX: usize = 100;
/// Largest quantity on one line.
pub const INVOICE_QUANTITY_MAX: i64 = 1_000_000;
/// Highest tax rate accepted, in percent.
const TAX_RATE_PERCENT_MAX: Decimal = Decimal::ONE_HUNDRED;

/// Rounds half away from zero to the currency's minor unit (2 digits for
/// USD and EUR, 0 for JPY).
pub fn round_money(amount: Decimal, currency: &Currency) -> Decimal {
    let mut r = amount.round_dp_with_strategy(
        currency.minor_unit_digits(),
        RoundingStrategy::MidpointAwayFromZero,
    );
    // Always show the minor unit: 29 USD is "29.00".
    r.rescale(currency.minor_unit_digits());
    r
}

/// `INV-YYYY-NNNNNN`.
pub fn is_invoice_number(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 15
        && s.starts_with("INV-")
        && b[4..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'-'
        && b[9..].iter().all(u8::is_ascii_digit)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineInput {
    pub description: String,
    pub quantity: i64,
    pub unit_price: Decimal,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IssueInvoice {
    pub invoice_id: Uuid,
    pub number: String,
    pub account_id: AccountId,
    pub subscription_id: Option<Uuid>,
    pub buyer_name: String,
    pub billing_email: Option<String>,
    pub billing_address: Option<BillingAddress>,
    pub tax_id: Option<String>,
    pub lines: Vec<LineInput>,
    /// The account's tax rate in percent, looked up by the caller.
    pub tax_rate: Decimal,
    pub currency: Currency,
    /// Issue as a draft instead of pending.
    pub draft: bool,
    pub purchase: Option<CreditPurchase>,
    pub notes: Option<String>,
    pub now: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InvoiceCommand {
    Issue(Box<IssueInvoice>),
    /// Paying twice with the same payment is a no-op; with another payment
    /// it is refused.
    MarkPaid {
        payment_id: Option<Uuid>,
        method: PaymentMethod,
        now: DateTime<Utc>,
    },
    Void {
        reason: Option<String>,
        actor: String,
        now: DateTime<Utc>,
    },
    /// A draft becomes pending (open for payment), due at `due_at`.
    Finalize {
        actor: String,
        due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    MarkUncollectible {
        reason: Option<String>,
        actor: String,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    #[error("invoice not found")]
    NotFound,
    #[error("the invoice is already issued")]
    AlreadyIssued,
    #[error("invoice number {0:?} is not of the form INV-YYYY-NNNNNN")]
    InvalidNumber(String),
    #[error("an invoice needs 1 to {INVOICE_LINES_MAX} lines")]
    InvalidLineCount,
    #[error("line {line}: quantity must be between 1 and {INVOICE_QUANTITY_MAX}")]
    InvalidQuantity { line: usize },
    #[error("line {line}: unit price must not be negative")]
    NegativePrice { line: usize },
    #[error("tax rate must be between 0 and 100 percent")]
    InvalidTaxRate,
    #[error("the due date is before the invoice date")]
    DueBeforeIssue,
    #[error("the amounts overflow")]
    Overflow,
    #[error("the invoice is {status}, it cannot be {action}")]
    IllegalTransition {
        status: &'static str,
        action: &'static str,
    },
    #[error("the invoice was already paid by another payment")]
    PaidByAnotherPayment,
}

/// An invoice, folded from its stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Invoice {
    issued: Option<Box<InvoiceIssued>>,
    status: Option<InvoiceStatus>,
    paid_by: Option<Uuid>,
    paid_at: Option<DateTime<Utc>>,
    /// How it was paid: a Stripe invoice pays ours without a payment of
    /// ours, and its redelivery must read as the same payment.
    #[serde(default)]
    paid_method: Option<PaymentMethod>,
}

impl Invoice {
    pub fn issued(&self) -> Option<&InvoiceIssued> {
        self.issued.as_deref()
    }
    pub fn status(&self) -> Option<InvoiceStatus> {
        self.status
    }
    pub fn paid_by(&self) -> Option<Uuid> {
        self.paid_by
    }
    pub fn paid_at(&self) -> Option<DateTime<Utc>> {
        self.paid_at
    }

    fn current(&self) -> Result<InvoiceStatus, InvoiceError> {
        self.status.ok_or(InvoiceError::NotFound)
    }

    fn issue(cmd: IssueInvoice) -> Result<InvoiceIssued, InvoiceError> {
        if !is_invoice_number(&cmd.number) {
            return Err(InvoiceError::InvalidNumber(cmd.number));
        }
        if cmd.lines.is_empty() || cmd.lines.len() > INVOICE_LINES_MAX {
            return Err(InvoiceError::InvalidLineCount);
        }
        if cmd.tax_rate < Decimal::ZERO || cmd.tax_rate > TAX_RATE_PERCENT_MAX {
            return Err(InvoiceError::InvalidTaxRate);
        }
        if cmd.due_at < cmd.now {
            return Err(InvoiceError::DueBeforeIssue);
        }
        let currency = cmd.currency;
        let mut subtotal = Decimal::ZERO;
        let mut lines = Vec::with_capacity(cmd.lines.len());
        for (i, l) in cmd.lines.into_iter().enumerate() {
            if !(1..=INVOICE_QUANTITY_MAX).contains(&l.quantity) {
                return Err(InvoiceError::InvalidQuantity { line: i });
            }
            if l.unit_price < Decimal::ZERO {
                return Err(InvoiceError::NegativePrice { line: i });
            }
            let amount = l
                .unit_price
                .checked_mul(Decimal::from(l.quantity))
                .ok_or(InvoiceError::Overflow)?;
            let amount = round_money(amount, &currency);
            subtotal = subtotal.checked_add(amount).ok_or(InvoiceError::Overflow)?;
            lines.push(InvoiceLine {
                description: l.description,
                quantity: l.quantity,
                unit_price: l.unit_price,
                amount,
            });
        }
        let subtotal = round_money(subtotal, &currency);
        let tax = subtotal
            .checked_mul(cmd.tax_rate)
            .and_then(|t| t.checked_div(Decimal::ONE_HUNDRED))
            .ok_or(InvoiceError::Overflow)?;
        let tax = round_money(tax, &currency);
        let total = subtotal.checked_add(tax).ok_or(InvoiceError::Overflow)?;
        Ok(InvoiceIssued {
            invoice_id: cmd.invoice_id,
            number: cmd.number,
            account_id: cmd.account_id,
            subscription_id: cmd.subscription_id,
            buyer_name: cmd.buyer_name,
            billing_email: cmd.billing_email,
            billing_address: cmd.billing_address,
            tax_id: cmd.tax_id,
            lines,
            subtotal,
            tax_rate: cmd.tax_rate,
            tax,
            total,
            currency,
            status: if cmd.draft {
                InvoiceStatus::Draft
            } else {
                InvoiceStatus::Pending
            },
            purchase: cmd.purchase,
            notes: cmd.notes,
            issued_at: cmd.now,
            due_at: cmd.due_at,
        })
    }
}

impl Aggregate for Invoice {
    const TYPE: &'static str = INVOICE_AGGREGATE_TYPE;
    type Command = InvoiceCommand;
    type Event = InvoiceEvent;
    type Error = InvoiceError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let event = match command {
            InvoiceCommand::Issue(cmd) => {
                if self.status.is_some() {
                    return Err(InvoiceError::AlreadyIssued);
                }
                InvoiceEvent::InvoiceIssued(Box::new(Self::issue(*cmd)?))
            }
            InvoiceCommand::MarkPaid {
                payment_id,
                method,
                now,
            } => match self.current()? {
                InvoiceStatus::Pending => InvoiceEvent::InvoicePaid(InvoicePaid {
                    payment_id,
                    method,
                    paid_at: now,
                }),
                // The same payment again (or, without a payment of ours, the
                // same method): nothing to do.
                InvoiceStatus::Paid
                    if self.paid_by == payment_id
                        && (payment_id.is_some() || self.paid_method == Some(method)) =>
                {
                    return Ok(());
                }
                InvoiceStatus::Paid => return Err(InvoiceError::PaidByAnotherPayment),
                s => {
                    return Err(InvoiceError::IllegalTransition {
                        status: s.as_str(),
                        action: "paid",
                    })
                }
            },
            InvoiceCommand::Void { reason, actor, now } => match self.current()? {
                InvoiceStatus::Draft | InvoiceStatus::Pending => {
                    InvoiceEvent::InvoiceVoided(InvoiceVoided {
                        reason,
                        actor,
                        voided_at: now,
                    })
                }
                s => {
                    return Err(InvoiceError::IllegalTransition {
                        status: s.as_str(),
                        action: "voided",
                    })
                }
            },
            InvoiceCommand::Finalize { actor, due_at, now } => match self.current()? {
                InvoiceStatus::Draft => {
                    if due_at < now {
                        return Err(InvoiceError::DueBeforeIssue);
                    }
                    InvoiceEvent::InvoiceFinalized(InvoiceFinalized {
                        actor,
                        finalized_at: now,
                        due_at,
                    })
                }
                // Finalizing again changes nothing.
                InvoiceStatus::Pending => return Ok(()),
                s => {
                    return Err(InvoiceError::IllegalTransition {
                        status: s.as_str(),
                        action: "finalized",
                    })
                }
            },
            InvoiceCommand::MarkUncollectible { reason, actor, now } => match self.current()? {
                InvoiceStatus::Pending => {
                    InvoiceEvent::InvoiceMarkedUncollectible(InvoiceMarkedUncollectible {
                        reason,
                        actor,
                        marked_at: now,
                    })
                }
                s => {
                    return Err(InvoiceError::IllegalTransition {
                        status: s.as_str(),
                        action: "marked uncollectible",
                    })
                }
            },
        };
        sink.write(event, self).await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            InvoiceEvent::InvoiceIssued(e) => {
                self.status = Some(e.status);
                self.issued = Some(e);
            }
            InvoiceEvent::InvoicePaid(e) => {
                self.status = Some(InvoiceStatus::Paid);
                self.paid_by = e.payment_id;
                self.paid_at = Some(e.paid_at);
                self.paid_method = Some(e.method);
            }
            InvoiceEvent::InvoiceVoided(_) => self.status = Some(InvoiceStatus::Void),
            InvoiceEvent::InvoiceFinalized(e) => {
                self.status = Some(InvoiceStatus::Pending);
                if let Some(issued) = self.issued.as_mut() {
                    issued.due_at = e.due_at;
                }
            }
            InvoiceEvent::InvoiceMarkedUncollectible(_) => {
                self.status = Some(InvoiceStatus::Uncollectible)
            }
        }
    }
}
