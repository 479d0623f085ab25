use std::collections::VecDeque;

use chrono::{DateTime, Duration, Months, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{
    AccountId, AccountStatus, BillingCycle, CancelReason, InvoicePurpose, PlanTerms,
    SubscriptionActivated, SubscriptionCancelScheduled, SubscriptionCanceled, SubscriptionCreated,
    SubscriptionDowngradeScheduled, SubscriptionEvent, SubscriptionInvoice,
    SubscriptionInvoicePaid, SubscriptionPastDue, SubscriptionPlanChanged, SubscriptionRecovered,
    SubscriptionRenewed, SubscriptionStatus, SUBSCRIPTION_AGGREGATE_TYPE,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::invoice::round_money;

/// Most pending invoices one subscription has at once (its period's and a
/// proration or two).
pub const OPEN_INVOICES_MAX: usize = 4;
/// Paid invoices remembered, so a repeated "paid" finds what it granted.
pub const PAID_INVOICES_KEPT: usize = 8;
/// How long a subscription stays past_due before it is canceled as unpaid.
pub const PAST_DUE_GRACE_DAYS: i64 = 14;

/// The end of a period that starts at `start`: +1 calendar month or +12.
pub fn add_cycle(start: DateTime<Utc>, cycle: BillingCycle) -> Option<DateTime<Utc>> {
    let months = match cycle {
        BillingCycle::Monthly => 1,
        BillingCycle::Annual => 12,
    };
    start.checked_add_months(Months::new(months))
}

/// An invoice line such as "Professional plan, 2026-11-01 – 2026-12-01".
pub fn period_line(plan: &PlanTerms, start: DateTime<Utc>, end: DateTime<Utc>) -> String {
    format!(
        "{} plan, {} – {}",
        plan.name,
        start.format("%Y-%m-%d"),
        end.format("%Y-%m-%d")
    )
}

/// The price and credits of the rest of a period on a higher plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proration {
    pub amount: Decimal,
    pub credits: i64,
}

/// Exact proration: (new − old) × remaining / total seconds; the amount
/// rounded half away from zero to the minor unit, the credits floored
/// (never below zero: an upgrade takes no credits back).
pub fn prorate(
    from: &PlanTerms,
    to: &PlanTerms,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Proration> {
    let total = (period_end - period_start).num_seconds();
    let remaining = (period_end - now).num_seconds().clamp(0, total.max(0));
    if total <= 0 {
        return None;
    }
    let diff = to.price.amount.checked_sub(from.price.amount)?;
    let amount = diff
        .checked_mul(Decimal::from(remaining))?
        .checked_div(Decimal::from(total))?;
    let amount = round_money(amount.max(Decimal::ZERO), &to.price.currency);
    let credit_diff = i128::from(to.included_credits) - i128::from(from.included_credits);
    let credits = (credit_diff * i128::from(remaining)).div_euclid(i128::from(total));
    let credits = i64::try_from(credits.max(0)).ok()?;
    Some(Proration { amount, credits })
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateSubscription {
    pub subscription_id: Uuid,
    pub account_id: AccountId,
    pub plan: PlanTerms,
    pub method: events::PaymentMethod,
    /// The first invoice's id and due date (unused for a free plan).
    pub first_invoice_id: Uuid,
    pub first_invoice_due_at: DateTime<Utc>,
    pub stripe_customer_id: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SubscriptionCommand {
    Create(Box<CreateSubscription>),
    /// One of its invoices was paid; paying it again is a no-op.
    InvoicePaid {
        invoice_id: Uuid,
        now: DateTime<Utc>,
    },
    /// Upgrade now (a prorated invoice) or, to a lower plan, schedule a
    /// downgrade at the period end.
    ChangePlan {
        to: PlanTerms,
        proration_invoice_id: Uuid,
        invoice_due_at: DateTime<Utc>,
        /// The gateway's own proration of this upgrade (Stripe's proration
        /// invoice), taken instead of ours so that its payment pays ours
        /// exactly; ignored unless in the new price's currency.
        gateway_proration: Option<events::Money>,
        now: DateTime<Utc>,
    },
    /// Cancel now, or (active subscriptions) at the period end.
    Cancel {
        at_period_end: bool,
        reason: CancelReason,
        now: DateTime<Utc>,
    },
    /// Take back a cancel scheduled for the period end (nothing to do
    /// when none is scheduled).
    Reactivate {
        now: DateTime<Utc>,
    },
    /// Start the next period on `plan` (the scheduled downgrade's or the
    /// current plan's terms, looked up by the caller).
    Renew {
        plan: PlanTerms,
        invoice_id: Uuid,
        invoice_due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    /// The invoice is overdue: the subscription becomes past_due.
    /// (`payment_failed`: Stripe reported its payment failed, before the
    /// due date.)
    MarkPastDue {
        invoice_id: Uuid,
        payment_failed: bool,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscriptionError {
    #[error("subscription not found")]
    NotFound,
    #[error("the subscription already exists")]
    AlreadyExists,
    #[error("the plan's price must not be negative nor its included credits")]
    InvalidPlan,
    #[error("the period end cannot be computed")]
    PeriodOverflow,
    #[error("the subscription is {status}; it cannot be {action}")]
    IllegalTransition {
        status: &'static str,
        action: &'static str,
    },
    #[error("the subscription is already on the {0} plan")]
    SamePlan(String),
    #[error("a downgrade to {0} is already scheduled")]
    AlreadyScheduled(String),
    #[error("plans of different currencies or billing cycles cannot be swapped: {0}")]
    IncompatiblePlan(String),
    #[error("the current period has ended; it must be renewed first")]
    PeriodEnded,
    #[error("the period ends at {0}; it cannot be renewed before")]
    NotDue(DateTime<Utc>),
    #[error("invoice {0} is not an open invoice of this subscription")]
    UnknownInvoice(Uuid),
    #[error("invoice {0} is not overdue")]
    InvoiceNotOverdue(Uuid),
    #[error("the subscription has {OPEN_INVOICES_MAX} unpaid invoices")]
    TooManyOpenInvoices,
    #[error("the amounts overflow")]
    Overflow,
}

/// What the period processor must do next (at `Subscription::next_step`'s
/// instant or before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The period ended with `cancel_at_period_end`.
    CancelAtPeriodEnd,
    /// The period ended: renew on this plan slug (a scheduled downgrade's,
    /// or the current one).
    Renew { plan: String },
    /// This invoice is overdue.
    PastDue { invoice_id: Uuid },
    /// past_due longer than the grace period.
    CancelUnpaid,
}

/// A subscription, folded from its stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Subscription {
    id: Option<Uuid>,
    account_id: Option<AccountId>,
    status: Option<SubscriptionStatus>,
    plan: Option<PlanTerms>,
    method: Option<events::PaymentMethod>,
    period_start: Option<DateTime<Utc>>,
    period_end: Option<DateTime<Utc>>,
    cancel_at_period_end: bool,
    scheduled: Option<PlanTerms>,
    stripe_subscription_id: Option<String>,
    activated: bool,
    open_invoices: Vec<SubscriptionInvoice>,
    paid: VecDeque<SubscriptionInvoicePaid>,
    past_due_since: Option<DateTime<Utc>>,
    past_due_invoice: Option<Uuid>,
    canceled_at: Option<DateTime<Utc>>,
}

impl Subscription {
    pub fn id(&self) -> Option<Uuid> {
        self.id
    }
    pub fn account_id(&self) -> Option<AccountId> {
        self.account_id
    }
    pub fn status(&self) -> Option<SubscriptionStatus> {
        self.status
    }
    pub fn plan(&self) -> Option<&PlanTerms> {
        self.plan.as_ref()
    }
    pub fn method(&self) -> Option<events::PaymentMethod> {
        self.method
    }
    pub fn period(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.period_start.zip(self.period_end)
    }
    pub fn cancel_at_period_end(&self) -> bool {
        self.cancel_at_period_end
    }
    pub fn scheduled_plan(&self) -> Option<&PlanTerms> {
        self.scheduled.as_ref()
    }
    pub fn stripe_subscription_id(&self) -> Option<&str> {
        self.stripe_subscription_id.as_deref()
    }
    pub fn open_invoices(&self) -> &[SubscriptionInvoice] {
        &self.open_invoices
    }
    pub fn paid_invoice(&self, invoice_id: Uuid) -> Option<&SubscriptionInvoicePaid> {
        self.paid.iter().find(|p| p.invoice_id == invoice_id)
    }
    pub fn past_due_since(&self) -> Option<DateTime<Utc>> {
        self.past_due_since
    }

    /// The plan and status the account should have because of this
    /// subscription: its plan while it runs (`past_due` while past due), back
    /// to `free` and `active` once canceled; nothing before it first starts.
    pub fn account_target(&self) -> Option<(String, AccountStatus)> {
        let plan = self.plan.as_ref()?.slug.clone();
        match self.status? {
            SubscriptionStatus::Incomplete => None,
            SubscriptionStatus::Trialing => Some((plan, AccountStatus::Trial)),
            SubscriptionStatus::Active => Some((plan, AccountStatus::Active)),
            SubscriptionStatus::PastDue if self.activated => Some((plan, AccountStatus::PastDue)),
            SubscriptionStatus::PastDue => None,
            SubscriptionStatus::Canceled if self.activated => {
                Some(("free".to_owned(), AccountStatus::Active))
            }
            SubscriptionStatus::Canceled => None,
        }
    }

    /// What is due at `now`, earliest first: the period end (cancel or
    /// renew), an overdue invoice (past_due), the end of
    /// the grace period (cancel as unpaid).
    pub fn next_step(&self, now: DateTime<Utc>) -> Option<Step> {
        let status = self.status?;
        let mut due: Vec<(DateTime<Utc>, Step)> = Vec::new();
        if matches!(
            status,
            SubscriptionStatus::Active | SubscriptionStatus::Trialing
        ) {
            if let Some(end) = self.period_end {
                let step = if self.cancel_at_period_end {
                    Step::CancelAtPeriodEnd
                } else {
                    Step::Renew {
                        plan: self
                            .scheduled
                            .as_ref()
                            .or(self.plan.as_ref())
                            .map(|p| p.slug.clone())
                            .unwrap_or_default(),
                    }
                };
                due.push((end, step));
            }
        }
        if matches!(
            status,
            SubscriptionStatus::Active | SubscriptionStatus::Incomplete
        ) {
            for i in &self.open_invoices {
                due.push((
                    i.due_at,
                    Step::PastDue {
                        invoice_id: i.invoice_id,
                    },
                ));
            }
        }
        if let (SubscriptionStatus::PastDue, Some(since)) = (status, self.past_due_since) {
            due.push((
                since + Duration::days(PAST_DUE_GRACE_DAYS),
                Step::CancelUnpaid,
            ));
        }
        due.into_iter()
            .filter(|(at, _)| *at <= now)
            .min_by_key(|(at, _)| *at)
            .map(|(_, s)| s)
    }

    fn current(&self) -> Result<SubscriptionStatus, SubscriptionError> {
        self.status.ok_or(SubscriptionError::NotFound)
    }

    fn illegal(status: SubscriptionStatus, action: &'static str) -> SubscriptionError {
        SubscriptionError::IllegalTransition {
            status: status.as_str(),
            action,
        }
    }

    fn check_plan(plan: &PlanTerms) -> Result<(), SubscriptionError> {
        if plan.price.amount < Decimal::ZERO || plan.included_credits < 0 {
            return Err(SubscriptionError::InvalidPlan);
        }
        Ok(())
    }

    fn create(c: CreateSubscription) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        Self::check_plan(&c.plan)?;
        let end =
            add_cycle(c.now, c.plan.billing_cycle).ok_or(SubscriptionError::PeriodOverflow)?;
        let free = c.plan.price.amount.is_zero();
        let first_invoice = (!free).then(|| SubscriptionInvoice {
            invoice_id: c.first_invoice_id,
            purpose: InvoicePurpose::Initial,
            description: period_line(&c.plan, c.now, end),
            amount: c.plan.price.clone(),
            due_at: c.first_invoice_due_at,
            credits: c.plan.included_credits,
            credits_expire_at: end,
        });
        let mut events = vec![SubscriptionEvent::SubscriptionCreated(Box::new(
            SubscriptionCreated {
                subscription_id: c.subscription_id,
                account_id: c.account_id,
                plan: c.plan,
                method: c.method,
                period_start: c.now,
                period_end: end,
                first_invoice,
                stripe_customer_id: c.stripe_customer_id,
                stripe_subscription_id: c.stripe_subscription_id,
                created_at: c.now,
            },
        ))];
        if free {
            events.push(SubscriptionEvent::SubscriptionActivated(
                SubscriptionActivated {
                    period_start: c.now,
                    period_end: end,
                    activated_at: c.now,
                },
            ));
        }
        Ok(events)
    }

    fn invoice_paid(
        &self,
        invoice_id: Uuid,
        now: DateTime<Utc>,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        let status = self.current()?;
        if self.paid_invoice(invoice_id).is_some() {
            return Ok(Vec::new());
        }
        let invoice = self
            .open_invoices
            .iter()
            .find(|i| i.invoice_id == invoice_id)
            .ok_or(SubscriptionError::UnknownInvoice(invoice_id))?;
        if status == SubscriptionStatus::Canceled {
            return Err(Self::illegal(status, "paid"));
        }
        let mut events = vec![SubscriptionEvent::SubscriptionInvoicePaid(
            SubscriptionInvoicePaid {
                invoice_id,
                purpose: invoice.purpose,
                credits: invoice.credits,
                credits_expire_at: invoice.credits_expire_at,
                paid_at: now,
            },
        )];
        let (start, end) = self.period().ok_or(SubscriptionError::NotFound)?;
        // Paying the invoice that made it past_due ends that: a subscription
        // that never started is activated, a started one recovers.
        let clears =
            status == SubscriptionStatus::PastDue && self.past_due_invoice == Some(invoice_id);
        let first =
            status == SubscriptionStatus::Incomplete && invoice.purpose == InvoicePurpose::Initial;
        match (first || (clears && !self.activated), clears) {
            (true, _) => events.push(SubscriptionEvent::SubscriptionActivated(
                SubscriptionActivated {
                    period_start: start,
                    period_end: end,
                    activated_at: now,
                },
            )),
            (false, true) => events.push(SubscriptionEvent::SubscriptionRecovered(
                SubscriptionRecovered {
                    invoice_id,
                    recovered_at: now,
                },
            )),
            _ => {}
        }
        Ok(events)
    }

    /// What a change to `to` at `now` would be, with the same refusals as
    /// `ChangePlan`: `Ok(true)` an upgrade now, `Ok(false)` a downgrade
    /// scheduled at the period end. Lets a caller tell a gateway first
    /// only about a change this subscription will accept.
    pub fn plan_change_is_upgrade(
        &self,
        to: &PlanTerms,
        now: DateTime<Utc>,
    ) -> Result<bool, SubscriptionError> {
        let status = self.current()?;
        if !matches!(
            status,
            SubscriptionStatus::Active | SubscriptionStatus::Trialing
        ) {
            return Err(Self::illegal(status, "changed to another plan"));
        }
        Self::check_plan(to)?;
        let from = self.plan.as_ref().ok_or(SubscriptionError::NotFound)?;
        if to.slug == from.slug {
            return Err(SubscriptionError::SamePlan(to.slug.clone()));
        }
        if to.price.currency != from.price.currency || to.billing_cycle != from.billing_cycle {
            return Err(SubscriptionError::IncompatiblePlan(to.slug.clone()));
        }
        let (_, end) = self.period().ok_or(SubscriptionError::NotFound)?;
        if now >= end {
            return Err(SubscriptionError::PeriodEnded);
        }
        let upgrade = to.price.amount > from.price.amount
            || (to.price.amount == from.price.amount
                && to.included_credits > from.included_credits);
        if !upgrade && self.scheduled.as_ref().is_some_and(|s| s.slug == to.slug) {
            return Err(SubscriptionError::AlreadyScheduled(to.slug.clone()));
        }
        Ok(upgrade)
    }

    fn change_plan(
        &self,
        to: PlanTerms,
        proration_invoice_id: Uuid,
        invoice_due_at: DateTime<Utc>,
        gateway_proration: Option<events::Money>,
        now: DateTime<Utc>,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        let upgrade = self.plan_change_is_upgrade(&to, now)?;
        let from = self.plan.clone().ok_or(SubscriptionError::NotFound)?;
        let (start, end) = self.period().ok_or(SubscriptionError::NotFound)?;
        if !upgrade {
            return Ok(vec![SubscriptionEvent::SubscriptionDowngradeScheduled(
                SubscriptionDowngradeScheduled {
                    from: from.slug,
                    to,
                    effective_at: end,
                    scheduled_at: now,
                },
            )]);
        }
        let mut p = prorate(&from, &to, start, end, now).ok_or(SubscriptionError::Overflow)?;
        if let Some(theirs) = gateway_proration
            .filter(|m| m.currency == to.price.currency && m.amount >= Decimal::ZERO)
        {
            p.amount = theirs.amount;
        }
        let proration_invoice = if p.amount > Decimal::ZERO {
            if self.open_invoices.len() >= OPEN_INVOICES_MAX {
                return Err(SubscriptionError::TooManyOpenInvoices);
            }
            Some(SubscriptionInvoice {
                invoice_id: proration_invoice_id,
                purpose: InvoicePurpose::Proration,
                description: format!(
                    "Upgrade from {} to {} plan, {} – {}",
                    from.name,
                    to.name,
                    now.format("%Y-%m-%d"),
                    end.format("%Y-%m-%d")
                ),
                amount: events::Money::new(p.amount, to.price.currency.clone()),
                due_at: invoice_due_at,
                credits: p.credits,
                credits_expire_at: end,
            })
        } else {
            None
        };
        Ok(vec![SubscriptionEvent::SubscriptionPlanChanged(Box::new(
            SubscriptionPlanChanged {
                from,
                to,
                prorated_amount: p.amount,
                prorated_credits: p.credits,
                proration_invoice,
                changed_at: now,
            },
        ))])
    }

    fn cancel(
        &self,
        at_period_end: bool,
        reason: CancelReason,
        now: DateTime<Utc>,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        let status = self.current()?;
        if status == SubscriptionStatus::Canceled {
            return Err(Self::illegal(status, "canceled"));
        }
        let running = matches!(
            status,
            SubscriptionStatus::Active | SubscriptionStatus::Trialing
        );
        match self.period_end {
            Some(end) if at_period_end && running && now < end => {
                if self.cancel_at_period_end {
                    return Ok(Vec::new());
                }
                Ok(vec![SubscriptionEvent::SubscriptionCancelScheduled(
                    SubscriptionCancelScheduled {
                        cancel_at: end,
                        scheduled_at: now,
                    },
                )])
            }
            _ => Ok(vec![SubscriptionEvent::SubscriptionCanceled(
                SubscriptionCanceled {
                    reason,
                    open_invoices: self.open_invoices.iter().map(|i| i.invoice_id).collect(),
                    canceled_at: now,
                },
            )]),
        }
    }

    fn renew(
        &self,
        plan: PlanTerms,
        invoice_id: Uuid,
        invoice_due_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        let status = self.current()?;
        if !matches!(
            status,
            SubscriptionStatus::Active | SubscriptionStatus::Trialing
        ) || self.cancel_at_period_end
        {
            return Err(Self::illegal(status, "renewed"));
        }
        Self::check_plan(&plan)?;
        let end = self.period_end.ok_or(SubscriptionError::NotFound)?;
        if now < end {
            return Err(SubscriptionError::NotDue(end));
        }
        let next_end =
            add_cycle(end, plan.billing_cycle).ok_or(SubscriptionError::PeriodOverflow)?;
        let invoice = if plan.price.amount.is_zero() {
            None
        } else {
            if self.open_invoices.len() >= OPEN_INVOICES_MAX {
                return Err(SubscriptionError::TooManyOpenInvoices);
            }
            Some(SubscriptionInvoice {
                invoice_id,
                purpose: InvoicePurpose::Renewal,
                description: period_line(&plan, end, next_end),
                amount: plan.price.clone(),
                due_at: invoice_due_at,
                credits: plan.included_credits,
                credits_expire_at: next_end,
            })
        };
        Ok(vec![SubscriptionEvent::SubscriptionRenewed(Box::new(
            SubscriptionRenewed {
                plan,
                period_start: end,
                period_end: next_end,
                invoice,
                renewed_at: now,
            },
        ))])
    }

    fn mark_past_due(
        &self,
        invoice_id: Uuid,
        payment_failed: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<SubscriptionEvent>, SubscriptionError> {
        let status = self.current()?;
        let invoice = self
            .open_invoices
            .iter()
            .find(|i| i.invoice_id == invoice_id)
            .ok_or(SubscriptionError::UnknownInvoice(invoice_id))?;
        match status {
            SubscriptionStatus::PastDue => Ok(Vec::new()),
            SubscriptionStatus::Active | SubscriptionStatus::Incomplete => {
                if invoice.due_at > now && !payment_failed {
                    return Err(SubscriptionError::InvoiceNotOverdue(invoice_id));
                }
                Ok(vec![SubscriptionEvent::SubscriptionPastDue(
                    SubscriptionPastDue {
                        invoice_id,
                        past_due_at: now,
                    },
                )])
            }
            s => Err(Self::illegal(s, "past due")),
        }
    }
}

impl Aggregate for Subscription {
    const TYPE: &'static str = SUBSCRIPTION_AGGREGATE_TYPE;
    type Command = SubscriptionCommand;
    type Event = SubscriptionEvent;
    type Error = SubscriptionError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = match command {
            SubscriptionCommand::Create(c) => {
                if self.status.is_some() {
                    return Err(SubscriptionError::AlreadyExists);
                }
                Self::create(*c)?
            }
            SubscriptionCommand::InvoicePaid { invoice_id, now } => {
                self.invoice_paid(invoice_id, now)?
            }
            SubscriptionCommand::ChangePlan {
                to,
                proration_invoice_id,
                invoice_due_at,
                gateway_proration,
                now,
            } => self.change_plan(
                to,
                proration_invoice_id,
                invoice_due_at,
                gateway_proration,
                now,
            )?,
            SubscriptionCommand::Cancel {
                at_period_end,
                reason,
                now,
            } => self.cancel(at_period_end, reason, now)?,
            SubscriptionCommand::Reactivate { now } => {
                let status = self.current()?;
                if status == SubscriptionStatus::Canceled {
                    return Err(Self::illegal(status, "reactivated"));
                }
                if self.cancel_at_period_end {
                    vec![SubscriptionEvent::SubscriptionReactivated(
                        events::SubscriptionReactivated {
                            reactivated_at: now,
                        },
                    )]
                } else {
                    Vec::new()
                }
            }
            SubscriptionCommand::Renew {
                plan,
                invoice_id,
                invoice_due_at,
                now,
            } => self.renew(plan, invoice_id, invoice_due_at, now)?,
            SubscriptionCommand::MarkPastDue {
                invoice_id,
                payment_failed,
                now,
            } => self.mark_past_due(invoice_id, payment_failed, now)?,
        };
        for e in events {
            sink.write(e, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            SubscriptionEvent::SubscriptionCreated(e) => {
                self.id = Some(e.subscription_id);
                self.account_id = Some(e.account_id);
                self.status = Some(SubscriptionStatus::Incomplete);
                self.plan = Some(e.plan);
                self.method = Some(e.method);
                self.period_start = Some(e.period_start);
                self.period_end = Some(e.period_end);
                self.stripe_subscription_id = e.stripe_subscription_id;
                self.open_invoices.extend(e.first_invoice);
            }
            SubscriptionEvent::SubscriptionActivated(e) => {
                self.status = Some(SubscriptionStatus::Active);
                self.activated = true;
                self.period_start = Some(e.period_start);
                self.period_end = Some(e.period_end);
                self.past_due_since = None;
                self.past_due_invoice = None;
            }
            SubscriptionEvent::SubscriptionInvoicePaid(e) => {
                self.open_invoices.retain(|i| i.invoice_id != e.invoice_id);
                self.paid.push_back(e);
                while self.paid.len() > PAID_INVOICES_KEPT {
                    self.paid.pop_front();
                }
            }
            SubscriptionEvent::SubscriptionPlanChanged(e) => {
                self.plan = Some(e.to);
                self.scheduled = None;
                self.open_invoices.extend(e.proration_invoice);
            }
            SubscriptionEvent::SubscriptionDowngradeScheduled(e) => self.scheduled = Some(e.to),
            SubscriptionEvent::SubscriptionCancelScheduled(_) => self.cancel_at_period_end = true,
            SubscriptionEvent::SubscriptionReactivated(_) => self.cancel_at_period_end = false,
            SubscriptionEvent::SubscriptionCanceled(e) => {
                self.status = Some(SubscriptionStatus::Canceled);
                self.canceled_at = Some(e.canceled_at);
                self.open_invoices.clear();
                self.scheduled = None;
            }
            SubscriptionEvent::SubscriptionRenewed(e) => {
                self.plan = Some(e.plan);
                self.scheduled = None;
                self.period_start = Some(e.period_start);
                self.period_end = Some(e.period_end);
                self.open_invoices.extend(e.invoice);
            }
            SubscriptionEvent::SubscriptionPastDue(e) => {
                self.status = Some(SubscriptionStatus::PastDue);
                self.past_due_since = Some(e.past_due_at);
                self.past_due_invoice = Some(e.invoice_id);
            }
            SubscriptionEvent::SubscriptionRecovered(_) => {
                self.status = Some(SubscriptionStatus::Active);
                self.past_due_since = None;
                self.past_due_invoice = None;
            }
        }
    }
}
