use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Duration, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{
    AccountEvent, AccountId, AccountOpened, AccountReactivated, AccountStatus,
    AccountStatusChanged, AccountSuspended, AccountUpdated, AutoTopUp, AutoTopUpFailed,
    AutoTopUpSet, AutoTopUpSucceeded, AutoTopUpTriggered, BillingAddress, Budget, BudgetSet,
    BudgetThresholdReached, CountryCode, CreditsAdjusted, CreditsDeducted, CreditsExpired,
    CreditsGranted, CreditsHeld, CreditsRefunded, Currency, HoldCaptured, HoldReleased,
    IdempotencyKey, LotDraw, OperationKey, PlanChanged, RefundedLot, ReleaseReason, Usage,
    ACCOUNT_AGGREGATE_TYPE,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::commands::*;
use super::errors::{AccountError, HoldState};
use crate::pricing::price;

/// Most holds one account may have open at once.
pub const OPEN_HOLDS_MAX: usize = 10_000;
/// How many recent idempotency keys the aggregate remembers with their first
/// outcome. Older keys are caught by the store's unique index.
pub const IDEMPOTENCY_WINDOW_KEYS: usize = 128;
/// How many closed holds are remembered, to say why a hold is not open.
pub const CLOSED_HOLDS_WINDOW: usize = 1_024;

/// Credits from one grant, positive adjustment or refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lot {
    pub id: Uuid,
    pub remaining: i64,
    pub expires_at: Option<DateTime<Utc>>,
    /// Creation order, to break ties oldest first.
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenHold {
    pub credits: i64,
    pub operation: Option<OperationKey>,
    pub expires_at: DateTime<Utc>,
}

/// What a priced amount was priced from.
struct Priced {
    operation: OperationKey,
    units: u64,
    cost_version: u64,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
struct Profile {
    id: Option<AccountId>,
    name: String,
    slug: String,
    owner_user_id: String,
    plan: String,
    country: Option<CountryCode>,
    billing_email: String,
    billing_address: Option<BillingAddress>,
    tax_id: Option<String>,
    tax_rate: Decimal,
    low_balance_threshold: i64,
    /// Staff's choice of billing currency, if any.
    #[serde(default)]
    currency: Option<Currency>,
}

/// One tenant's credits. Built only by folding its events.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CreditAccount {
    opened: bool,
    profile: Profile,
    status: AccountStatus,
    status_before_suspension: Option<AccountStatus>,
    credit_limit: i64,
    balance: i64,
    held: i64,
    debt: i64,
    lots: Vec<Lot>,
    lot_seq: u64,
    holds: BTreeMap<Uuid, OpenHold>,
    closed_holds: VecDeque<(Uuid, HoldState)>,
    /// Credits refunded so far, only of deductions refunded at least once.
    refunded: BTreeMap<Uuid, i64>,
    /// The expiry of every lot that had one (grants and refunds with an
    /// expiry; a few per period), so a refund can restore it after the lot
    /// is spent and gone from `lots`.
    #[serde(default)]
    lot_expiry: BTreeMap<Uuid, DateTime<Utc>>,
    /// Boxed: an event is a few hundred bytes inline, and a deque reserves
    /// room for several at its first push; most accounts hold one or two.
    recent_keys: VecDeque<(IdempotencyKey, Box<AccountEvent>)>,
    /// The latest instant any event carried; command clocks are clamped to it
    /// so that the stream's time never runs backwards.
    last_at: Option<DateTime<Utc>>,
    /// The monthly budget, if any (issue 17).
    #[serde(default)]
    budget: Option<Budget>,
    /// Credits used in the latest month that saw usage, and the budget
    /// thresholds reached in it: counted whether or not a budget is set,
    /// so a budget set mid-month knows the month's usage.
    #[serde(default)]
    budget_usage: BudgetUsage,
    /// The automatic top-up and its counts (issue 17).
    #[serde(default)]
    auto_top_up: Option<AutoTopUp>,
    #[serde(default)]
    top_ups: TopUpCounts,
}

/// Failures in a row after which an automatic top-up turns itself off.
pub const AUTO_TOP_UP_FAILURES_MAX: u32 = 3;
/// Most automatic top-ups a day the configuration may allow.
pub const AUTO_TOP_UP_DAILY_LIMIT_MAX: u32 = 24;
/// Recorded triggers remembered, so that a repeated record is a no-op.
const TOP_UP_RECORDS_KEPT: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct TopUpCounts {
    /// `year * 10000 + month * 100 + day` (UTC) of `today`.
    day: u32,
    /// Triggers on `day`.
    today: u32,
    /// Failures in a row.
    failures: u32,
    /// The latest triggers whose outcome was recorded.
    recorded: VecDeque<Uuid>,
}

/// The calendar day (UTC) of `at`, as `year * 10000 + month * 100 + day`.
fn day_of(at: DateTime<Utc>) -> u32 {
    use chrono::Datelike;
    u32::try_from(at.year()).unwrap_or(0) * 10_000 + at.month() * 100 + at.day()
}

/// Most thresholds a budget may have.
pub const BUDGET_THRESHOLDS_MAX: usize = 10;
/// Highest threshold, in percent of the monthly credits.
pub const BUDGET_THRESHOLD_PERCENT_MAX: u32 = 1_000;

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct BudgetUsage {
    /// `year * 100 + month` (UTC) of the counts; 0 before any usage.
    period: u32,
    used: i64,
    reached: Vec<u32>,
}

/// The calendar month (UTC) of `at`, as `year * 100 + month`.
fn period_of(at: DateTime<Utc>) -> u32 {
    use chrono::Datelike;
    u32::try_from(at.year()).unwrap_or(0) * 100 + at.month()
}

/// `YYYY-MM` of a [`period_of`].
fn period_text(period: u32) -> String {
    format!("{:04}-{:02}", period / 100, period % 100)
}

impl CreditAccount {
    pub fn is_open(&self) -> bool {
        self.opened
    }
    pub fn id(&self) -> Option<AccountId> {
        self.profile.id
    }
    pub fn status(&self) -> AccountStatus {
        self.status
    }
    pub fn plan(&self) -> &str {
        &self.profile.plan
    }
    /// The currency the account is billed in: staff's choice, else its
    /// country's.
    pub fn currency(&self) -> Currency {
        match (&self.profile.currency, &self.profile.country) {
            (Some(c), _) => c.clone(),
            (None, Some(country)) => Currency::for_country(country),
            (None, None) => Currency::usd(),
        }
    }
    pub fn balance(&self) -> i64 {
        self.balance
    }
    pub fn held(&self) -> i64 {
        self.held
    }
    pub fn available(&self) -> i64 {
        self.balance - self.held
    }
    pub fn debt(&self) -> i64 {
        self.debt
    }
    pub fn credit_limit(&self) -> i64 {
        self.credit_limit
    }
    /// The automatic top-up, if any.
    pub fn auto_top_up(&self) -> Option<&AutoTopUp> {
        self.auto_top_up.as_ref()
    }
    /// Automatic top-ups triggered on the day (UTC) of `now`.
    pub fn top_ups_on(&self, now: DateTime<Utc>) -> u32 {
        if self.top_ups.day == day_of(now) {
            self.top_ups.today
        } else {
            0
        }
    }
    /// Failed automatic top-ups in a row.
    pub fn top_up_failures(&self) -> u32 {
        self.top_ups.failures
    }
    /// The monthly budget, if any.
    pub fn budget(&self) -> Option<&Budget> {
        self.budget.as_ref()
    }
    /// Credits used in the month (UTC) of `now`: deductions and captures,
    /// less the refunds made in it.
    pub fn used_in_month(&self, now: DateTime<Utc>) -> i64 {
        if self.budget_usage.period == period_of(now) {
            self.budget_usage.used
        } else {
            0
        }
    }
    /// The budget thresholds reached in the month (UTC) of `now`.
    pub fn thresholds_reached(&self, now: DateTime<Utc>) -> &[u32] {
        if self.budget_usage.period == period_of(now) {
            &self.budget_usage.reached
        } else {
            &[]
        }
    }
    pub fn low_balance_threshold(&self) -> i64 {
        self.profile.low_balance_threshold
    }
    pub fn lots(&self) -> &[Lot] {
        &self.lots
    }
    pub fn open_holds(&self) -> &BTreeMap<Uuid, OpenHold> {
        &self.holds
    }

    /// The latest instant any folded event carried.
    pub fn last_at(&self) -> Option<DateTime<Utc>> {
        self.last_at
    }

    /// The first outcome of a command with this key, if the key is recent.
    pub fn outcome_for(&self, key: &IdempotencyKey) -> Option<&AccountEvent> {
        self.recent_keys
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, e)| &**e)
    }

    fn ensure_open(&self) -> Result<(), AccountError> {
        if self.opened {
            Ok(())
        } else {
            Err(AccountError::AccountNotFound)
        }
    }

    /// Spending (deductions, holds) is refused on suspended and cancelled
    /// accounts; captures and releases still finish work already started.
    fn ensure_may_spend(&self) -> Result<(), AccountError> {
        match self.status {
            AccountStatus::Suspended => Err(AccountError::AccountSuspended),
            AccountStatus::Cancelled => Err(AccountError::AccountCancelled),
            _ => Ok(()),
        }
    }

    /// Counts `credits` (negative: a refund) as used in the month of `at`,
    /// starting the month's counts afresh when it is a new one.
    fn count_usage(&mut self, at: DateTime<Utc>, credits: i64) {
        let period = period_of(at);
        if self.budget_usage.period != period {
            if credits <= 0 {
                // A refund in a month without usage changes nothing.
                return;
            }
            self.budget_usage = BudgetUsage {
                period,
                used: 0,
                reached: Vec::new(),
            };
        }
        let used = self.budget_usage.used.saturating_add(credits);
        self.budget_usage.used = used.max(0);
    }

    /// A hard cap refuses what would take the month's usage and the open
    /// holds past the monthly credits.
    fn ensure_within_budget(&self, credits: i64, now: DateTime<Utc>) -> Result<(), AccountError> {
        let Some(budget) = self.budget.as_ref().filter(|b| b.hard_cap) else {
            return Ok(());
        };
        let used = self.used_in_month(now);
        let total = i128::from(used) + i128::from(self.held) + i128::from(credits);
        if total > i128::from(budget.monthly_credits) {
            return Err(AccountError::BudgetExceeded {
                monthly_credits: budget.monthly_credits,
                used,
                held: self.held,
                required: credits,
            });
        }
        Ok(())
    }

    /// Writes one `BudgetThresholdReached` for each threshold the month's
    /// usage has reached and no event of this month has named yet.
    async fn budget_crossings(&mut self, now: DateTime<Utc>, sink: &EventSink<Self>) {
        let Some(budget) = self.budget.clone() else {
            return;
        };
        let used = self.used_in_month(now);
        for percent in budget.thresholds_percent {
            let reached =
                i128::from(used) * 100 >= i128::from(budget.monthly_credits) * i128::from(percent);
            if reached && !self.thresholds_reached(now).contains(&percent) {
                sink.write(
                    AccountEvent::BudgetThresholdReached(BudgetThresholdReached {
                        period: period_text(period_of(now)),
                        percent,
                        monthly_credits: budget.monthly_credits,
                        used,
                        hard_cap: budget.hard_cap,
                        reached_at: now,
                    }),
                    self,
                )
                .await;
            }
        }
    }

    /// Writes `AutoTopUpTriggered` when this command took available credits
    /// from at or above the top-up threshold to below it, within the day's
    /// limit: once per crossing.
    async fn top_up_crossing(
        &mut self,
        available_before: i64,
        trigger_id: Uuid,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) {
        let Some(c) = self.auto_top_up.as_ref().filter(|c| c.enabled) else {
            return;
        };
        let crossed = available_before >= c.threshold && self.available() < c.threshold;
        if !crossed || self.top_ups_on(now) >= c.daily_limit {
            return;
        }
        let event = AutoTopUpTriggered {
            trigger_id,
            package: c.package.clone(),
            method: c.method,
            threshold: c.threshold,
            available_after: self.available(),
            triggered_at: now,
        };
        sink.write(AccountEvent::AutoTopUpTriggered(event), self)
            .await;
    }

    fn check_auto_top_up(c: &AutoTopUp) -> Result<(), AccountError> {
        if !(0..=CREDITS_PER_COMMAND_MAX).contains(&c.threshold) {
            return Err(AccountError::InvalidAutoTopUp {
                reason: "threshold must be between 0 and 1000000000000",
            });
        }
        if !(1..=AUTO_TOP_UP_DAILY_LIMIT_MAX).contains(&c.daily_limit) {
            return Err(AccountError::InvalidAutoTopUp {
                reason: "daily_limit must be between 1 and 24",
            });
        }
        if !matches!(
            c.method,
            events::PaymentMethod::Stripe | events::PaymentMethod::BankTransfer
        ) {
            return Err(AccountError::InvalidAutoTopUp {
                reason: "method must be stripe or bank_transfer",
            });
        }
        Ok(())
    }

    fn check_budget(budget: &Budget) -> Result<(), AccountError> {
        if !(1..=CREDITS_PER_COMMAND_MAX).contains(&budget.monthly_credits) {
            return Err(AccountError::InvalidBudget {
                reason: "monthly_credits must be between 1 and 1000000000000",
            });
        }
        let t = &budget.thresholds_percent;
        if t.len() > BUDGET_THRESHOLDS_MAX
            || t.iter()
                .any(|p| !(1..=BUDGET_THRESHOLD_PERCENT_MAX).contains(p))
            || t.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(AccountError::InvalidBudget {
                reason: "thresholds_percent takes at most 10 distinct percents between 1 and 1000",
            });
        }
        Ok(())
    }

    fn remember_top_up(&mut self, trigger: Uuid) {
        if self.top_ups.recorded.len() >= TOP_UP_RECORDS_KEPT {
            self.top_ups.recorded.pop_front();
        }
        self.top_ups.recorded.push_back(trigger);
    }

    fn clamp(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        self.last_at.map_or(now, |last| now.max(last))
    }

    /// Credits that may still leave without breaking available ≥ −limit.
    fn headroom(&self) -> i64 {
        self.balance - self.held + self.credit_limit
    }

    fn ensure_can_spend(&self, credits: i64) -> Result<(), AccountError> {
        if credits > self.headroom() {
            return Err(AccountError::InsufficientCredits {
                balance: self.balance,
                available: self.available(),
                required: credits,
            });
        }
        Ok(())
    }

    /// Which lots pay for `credits`, in burn order, and the overdraft left.
    fn plan_draws(&self, credits: i64) -> (Vec<LotDraw>, i64) {
        let mut left = credits;
        let mut draws = Vec::new();
        for lot in &self.lots {
            if left == 0 {
                break;
            }
            let take = lot.remaining.min(left);
            if take > 0 {
                draws.push(LotDraw {
                    lot_id: lot.id,
                    credits: take,
                });
                left -= take;
            }
        }
        (draws, left)
    }

    fn spend(&self, credits: i64) -> Result<(Vec<LotDraw>, i64, i64), AccountError> {
        let balance_after = self
            .balance
            .checked_sub(credits)
            .ok_or(AccountError::Overflow)?;
        let (draws, overdraft) = self.plan_draws(credits);
        Ok((draws, overdraft, balance_after))
    }

    fn credit(&self, credits: i64) -> Result<(i64, i64), AccountError> {
        let balance_after = self
            .balance
            .checked_add(credits)
            .ok_or(AccountError::Overflow)?;
        Ok((self.debt.min(credits), balance_after))
    }

    fn resolve(amount: &Amount) -> Result<(i64, Option<Priced>), AccountError> {
        match amount {
            Amount::Credits(c) => Ok((*c, None)),
            Amount::Priced { cost, units } => Ok((
                price(cost, *units)?,
                Some(Priced {
                    operation: cost.operation.clone(),
                    units: *units,
                    cost_version: cost.version,
                }),
            )),
        }
    }

    /// Writes the expiries that are due at `now`: holds past their TTL, and
    /// lots past their expiry as far as they do not back an open hold. Each
    /// event is stamped at the instant it happened.
    async fn expire_due(&mut self, now: DateTime<Utc>, sink: &EventSink<Self>) {
        // Nothing is stamped before the stream's latest instant: credits that
        // were kept to back a hold expire when they were freed, not earlier.
        let mut cursor: Option<DateTime<Utc>> = self.last_at;
        loop {
            let next_hold = self
                .holds
                .iter()
                .filter(|(_, h)| h.expires_at <= now)
                .min_by_key(|(id, h)| (h.expires_at, **id))
                .map(|(id, h)| (*id, h.expires_at, h.credits));
            let next_lot = self
                .lots
                .iter()
                .filter(|l| l.remaining > 0 && l.expires_at.is_some_and(|t| t <= now))
                .min_by_key(|l| (l.expires_at, l.seq))
                .map(|l| (l.id, l.expires_at.unwrap_or(now), l.remaining));
            let lot_first = match (&next_lot, &next_hold) {
                (Some((_, lt, _)), Some((_, ht, _))) => lt <= ht,
                (Some(_), None) => true,
                _ => false,
            };
            if lot_first {
                let Some((lot_id, lot_at, remaining)) = next_lot else {
                    break;
                };
                // Credits backing open holds stay; the credit limit is not
                // a reason to let them go.
                let credits = remaining.min((self.balance - self.held).max(0));
                let at = cursor.map_or(lot_at, |c| c.max(lot_at));
                if credits > 0 {
                    let balance_after = self.balance - credits;
                    sink.write(
                        AccountEvent::CreditsExpired(CreditsExpired {
                            lot_id,
                            credits,
                            balance_after,
                            expired_at: at,
                        }),
                        self,
                    )
                    .await;
                    cursor = Some(at);
                }
                if credits < remaining {
                    // The rest backs open holds: release a due one, if any,
                    // and try again; otherwise it waits for a later release.
                    match next_hold {
                        Some(h) => {
                            self.release_expired(h, &mut cursor, sink).await;
                        }
                        None => break,
                    }
                }
            } else if let Some(h) = next_hold {
                self.release_expired(h, &mut cursor, sink).await;
            } else {
                break;
            }
        }
    }

    async fn release_expired(
        &mut self,
        (hold_id, expires_at, credits): (Uuid, DateTime<Utc>, i64),
        cursor: &mut Option<DateTime<Utc>>,
        sink: &EventSink<Self>,
    ) {
        let at = cursor.map_or(expires_at, |c| c.max(expires_at));
        let available_after = self.available() + credits;
        sink.write(
            AccountEvent::HoldReleased(HoldReleased {
                hold_id,
                credits,
                reason: ReleaseReason::Expired,
                available_after,
                idempotency_key: None,
                released_at: at,
            }),
            self,
        )
        .await;
        *cursor = Some(at);
    }

    fn check_credits(credits: i64) -> Result<(), AccountError> {
        if credits <= 0 || credits > CREDITS_PER_COMMAND_MAX {
            return Err(AccountError::InvalidCredits {
                credits,
                max: CREDITS_PER_COMMAND_MAX,
            });
        }
        Ok(())
    }

    fn check_credit_limit(credit_limit: i64) -> Result<(), AccountError> {
        if !(0..=CREDIT_LIMIT_MAX).contains(&credit_limit) {
            return Err(AccountError::CreditLimitOutOfRange {
                credit_limit,
                max: CREDIT_LIMIT_MAX,
            });
        }
        Ok(())
    }

    fn hold_state(&self, hold_id: Uuid) -> AccountError {
        match self.closed_holds.iter().find(|(id, _)| *id == hold_id) {
            Some((_, state)) => AccountError::HoldNotOpen {
                hold_id,
                state: *state,
            },
            None => AccountError::HoldNotFound { hold_id },
        }
    }

    async fn handle_credit_command(
        &mut self,
        command: AccountCommand,
        sink: &EventSink<Self>,
    ) -> Result<(), AccountError> {
        match command {
            AccountCommand::GrantCredits(c) => {
                let now = self.clamp(c.now);
                Self::check_credits(c.credits)?;
                if self.status == AccountStatus::Cancelled {
                    return Err(AccountError::AccountCancelled);
                }
                if let Some(expires_at) = c.expires_at {
                    if expires_at <= now {
                        return Err(AccountError::ExpiryNotInFuture { expires_at });
                    }
                }
                let (debt_repaid, balance_after) = self.credit(c.credits)?;
                sink.write(
                    AccountEvent::CreditsGranted(CreditsGranted {
                        grant_id: c.grant_id,
                        credits: c.credits,
                        source: c.source,
                        expires_at: c.expires_at,
                        description: c.description,
                        debt_repaid,
                        balance_after,
                        idempotency_key: c.idempotency_key,
                        granted_at: now,
                    }),
                    self,
                )
                .await;
                self.expire_due(now, sink).await;
            }
            AccountCommand::DeductCredits(c) => {
                let now = self.clamp(c.now);
                self.ensure_may_spend()?;
                let credits = price(&c.cost, c.usage.units)?;
                self.ensure_within_budget(credits, now)?;
                self.ensure_can_spend(credits)?;
                let available_before = self.available();
                let (draws, overdraft, balance_after) = self.spend(credits)?;
                let usage = Usage {
                    operation: Some(c.cost.operation.clone()),
                    cost_version: Some(c.cost.version),
                    ..c.usage
                };
                sink.write(
                    AccountEvent::CreditsDeducted(CreditsDeducted {
                        deduction_id: c.deduction_id,
                        credits,
                        usage,
                        draws,
                        overdraft,
                        balance_after,
                        available_after: balance_after - self.held,
                        idempotency_key: c.idempotency_key,
                        recorded_at: now,
                    }),
                    self,
                )
                .await;
                self.budget_crossings(now, sink).await;
                self.top_up_crossing(available_before, c.deduction_id, now, sink)
                    .await;
            }
            AccountCommand::HoldCredits(c) => {
                let now = self.clamp(c.now);
                self.ensure_may_spend()?;
                let (credits, priced) = Self::resolve(&c.amount)?;
                Self::check_credits(credits)?;
                if c.ttl_seconds == 0 || c.ttl_seconds > HOLD_TTL_SECONDS_MAX {
                    return Err(AccountError::HoldTtlOutOfRange {
                        ttl_seconds: c.ttl_seconds,
                        max: HOLD_TTL_SECONDS_MAX,
                    });
                }
                if self.holds.len() >= OPEN_HOLDS_MAX {
                    return Err(AccountError::TooManyOpenHolds {
                        max: OPEN_HOLDS_MAX,
                    });
                }
                self.ensure_within_budget(credits, now)?;
                self.ensure_can_spend(credits)?;
                let available_before = self.available();
                let ttl = i64::try_from(c.ttl_seconds).map_err(|_| AccountError::Overflow)?;
                let (operation, units, cost_version) = match priced {
                    Some(p) => (Some(p.operation), Some(p.units), Some(p.cost_version)),
                    None => (None, None, None),
                };
                sink.write(
                    AccountEvent::CreditsHeld(CreditsHeld {
                        hold_id: c.hold_id,
                        credits,
                        operation,
                        units,
                        cost_version,
                        expires_at: now + Duration::seconds(ttl),
                        available_after: self.available() - credits,
                        idempotency_key: c.idempotency_key,
                        held_at: now,
                    }),
                    self,
                )
                .await;
                self.top_up_crossing(available_before, c.hold_id, now, sink)
                    .await;
            }
            AccountCommand::CaptureHold(c) => {
                let now = self.clamp(c.now);
                let (captured, priced) = Self::resolve(&c.amount)?;
                if !(0..=CREDITS_PER_COMMAND_MAX).contains(&captured) {
                    return Err(AccountError::InvalidCredits {
                        credits: captured,
                        max: CREDITS_PER_COMMAND_MAX,
                    });
                }
                let hold = self
                    .holds
                    .get(&c.hold_id)
                    .cloned()
                    .ok_or_else(|| self.hold_state(c.hold_id))?;
                // Capturing more than was held needs the extra to be
                // available, and within a hard budget.
                let extra = (captured - hold.credits).max(0);
                if extra > 0 {
                    self.ensure_within_budget(extra, now)?;
                }
                if extra > self.headroom() {
                    return Err(AccountError::InsufficientCredits {
                        balance: self.balance,
                        available: self.available() + hold.credits,
                        required: captured,
                    });
                }
                let available_before = self.available();
                let (draws, overdraft, balance_after) = self.spend(captured)?;
                let mut usage = c.usage;
                match priced {
                    Some(p) => {
                        usage.operation = Some(p.operation);
                        usage.units = p.units;
                        usage.cost_version = Some(p.cost_version);
                    }
                    None => {
                        if usage.operation.is_none() {
                            usage.operation = hold.operation.clone();
                        }
                    }
                }
                sink.write(
                    AccountEvent::HoldCaptured(HoldCaptured {
                        hold_id: c.hold_id,
                        deduction_id: c.deduction_id,
                        held: hold.credits,
                        captured,
                        released: (hold.credits - captured).max(0),
                        usage,
                        draws,
                        overdraft,
                        balance_after,
                        available_after: balance_after - (self.held - hold.credits),
                        idempotency_key: c.idempotency_key,
                        captured_at: now,
                    }),
                    self,
                )
                .await;
                self.budget_crossings(now, sink).await;
                self.top_up_crossing(available_before, c.deduction_id, now, sink)
                    .await;
                self.expire_due(now, sink).await;
            }
            AccountCommand::ReleaseHold(c) => {
                let now = self.clamp(c.now);
                let hold = self
                    .holds
                    .get(&c.hold_id)
                    .cloned()
                    .ok_or_else(|| self.hold_state(c.hold_id))?;
                sink.write(
                    AccountEvent::HoldReleased(HoldReleased {
                        hold_id: c.hold_id,
                        credits: hold.credits,
                        reason: ReleaseReason::Caller,
                        available_after: self.available() + hold.credits,
                        idempotency_key: c.idempotency_key,
                        released_at: now,
                    }),
                    self,
                )
                .await;
                self.expire_due(now, sink).await;
            }
            AccountCommand::RefundDeduction(c) => {
                let now = self.clamp(c.now);
                let deducted = c.deducted.ok_or(AccountError::DeductionNotFound {
                    deduction_id: c.deduction_id,
                })?;
                let refunded = self.refunded.get(&c.deduction_id).copied().unwrap_or(0);
                let refundable = deducted.saturating_sub(refunded).max(0);
                let credits = c.credits.unwrap_or(refundable);
                if credits > refundable || (c.credits.is_none() && refundable == 0) {
                    return Err(AccountError::RefundExceedsDeduction {
                        deduction_id: c.deduction_id,
                        refundable,
                        requested: credits,
                    });
                }
                Self::check_credits(credits)?;
                let (debt_repaid, balance_after) = self.credit(credits)?;
                let lots = self.refunded_lots(
                    c.refund_id,
                    (deducted, refunded, credits, debt_repaid),
                    &c.draws,
                );
                sink.write(
                    AccountEvent::CreditsRefunded(CreditsRefunded {
                        refund_id: c.refund_id,
                        deduction_id: c.deduction_id,
                        credits,
                        reason: c.reason,
                        debt_repaid,
                        balance_after,
                        idempotency_key: c.idempotency_key,
                        refunded_at: now,
                        lots,
                    }),
                    self,
                )
                .await;
                self.expire_due(now, sink).await;
            }
            AccountCommand::AdjustCredits(c) => {
                let now = self.clamp(c.now);
                if c.credits == 0 {
                    return Err(AccountError::ZeroAdjustment);
                }
                Self::check_credits(c.credits.checked_abs().ok_or(AccountError::Overflow)?)?;
                let (draws, overdraft, debt_repaid, balance_after) = if c.credits > 0 {
                    let (debt_repaid, balance_after) = self.credit(c.credits)?;
                    (Vec::new(), 0, debt_repaid, balance_after)
                } else {
                    let credits = -c.credits;
                    self.ensure_can_spend(credits)?;
                    let (draws, overdraft, balance_after) = self.spend(credits)?;
                    (draws, overdraft, 0, balance_after)
                };
                sink.write(
                    AccountEvent::CreditsAdjusted(CreditsAdjusted {
                        adjustment_id: c.adjustment_id,
                        credits: c.credits,
                        reason: c.reason,
                        draws,
                        overdraft,
                        debt_repaid,
                        balance_after,
                        idempotency_key: c.idempotency_key,
                        adjusted_at: now,
                    }),
                    self,
                )
                .await;
                self.expire_due(now, sink).await;
            }
            // The common prelude in `handle` already expired what is due.
            AccountCommand::ExpireDue { .. } => {}
            _ => unreachable!("only credit commands are routed here"),
        }
        Ok(())
    }

    /// The lots a refund restores. The deduction took its credits from
    /// `draws` (burn order) and the rest as overdraft; a refund gives them
    /// back last-taken first, past what earlier refunds gave back, each
    /// with the expiry its lot had. The debt it repays comes out of the
    /// soonest-expiring part. Empty when nothing expires: one plain lot,
    /// as before expiries were restored.
    fn refunded_lots(
        &self,
        refund_id: Uuid,
        (deducted, refunded_before, credits, debt_repaid): (i64, i64, i64, i64),
        draws: &[LotDraw],
    ) -> Vec<RefundedLot> {
        let drawn: i64 = draws.iter().map(|d| d.credits.max(0)).sum();
        // Last taken first: the overdraft, then the draws in reverse.
        let mut taken: Vec<(i64, Option<DateTime<Utc>>)> =
            vec![(deducted.saturating_sub(drawn).max(0), None)];
        taken.extend(
            draws
                .iter()
                .rev()
                .map(|d| (d.credits.max(0), self.lot_expiry.get(&d.lot_id).copied())),
        );
        let (mut skip, mut want) = (refunded_before.max(0), credits);
        let mut back: Vec<(i64, Option<DateTime<Utc>>)> = Vec::new();
        for (amount, expires_at) in taken {
            let skipped = amount.min(skip);
            skip -= skipped;
            let take = (amount - skipped).min(want);
            want -= take;
            if take > 0 {
                back.push((take, expires_at));
            }
        }
        // Whatever the draws do not explain never expires.
        if want > 0 {
            back.push((want, None));
        }
        if back.iter().all(|(_, e)| e.is_none()) {
            return Vec::new();
        }
        // Debt is repaid from the soonest-expiring credits first.
        back.sort_by_key(|(_, e)| (e.is_none(), *e));
        let mut repay = debt_repaid;
        let mut merged: Vec<(i64, Option<DateTime<Utc>>)> = Vec::new();
        for (amount, expires_at) in back {
            let repaid = amount.min(repay);
            repay -= repaid;
            let left = amount - repaid;
            match merged.last_mut() {
                Some((m, e)) if *e == expires_at => *m += left,
                _ if left > 0 => merged.push((left, expires_at)),
                _ => {}
            }
        }
        merged
            .into_iter()
            .filter(|(amount, _)| *amount > 0)
            .enumerate()
            .map(|(i, (credits, expires_at))| RefundedLot {
                lot_id: Uuid::from_u128(refund_id.as_u128().wrapping_add(i as u128)),
                credits,
                expires_at,
            })
            .collect()
    }

    fn add_lot(&mut self, id: Uuid, remaining: i64, expires_at: Option<DateTime<Utc>>) {
        if let Some(t) = expires_at {
            self.lot_expiry.insert(id, t);
        }
        self.lot_seq += 1;
        if remaining <= 0 {
            return;
        }
        let lot = Lot {
            id,
            remaining,
            expires_at,
            seq: self.lot_seq,
        };
        // Burn order: soonest expiry first, lots that never expire last,
        // oldest first among equals.
        let key = |l: &Lot| (l.expires_at.is_none(), l.expires_at, l.seq);
        let at = self.lots.partition_point(|l| key(l) <= key(&lot));
        self.lots.insert(at, lot);
    }

    fn take_from_lots(&mut self, draws: &[LotDraw], overdraft: i64) {
        for d in draws {
            if let Some(lot) = self.lots.iter_mut().find(|l| l.id == d.lot_id) {
                lot.remaining -= d.credits;
            }
        }
        self.lots.retain(|l| l.remaining > 0);
        self.debt += overdraft;
    }

    fn remember_key(&mut self, event: &AccountEvent) {
        if let Some(key) = event.idempotency_key() {
            if self.outcome_for(key).is_none() {
                self.recent_keys
                    .push_back((key.clone(), Box::new(replay_only(event))));
                if self.recent_keys.len() > IDEMPOTENCY_WINDOW_KEYS {
                    self.recent_keys.pop_front();
                }
            }
        }
    }

    fn close_hold(&mut self, hold_id: Uuid, state: HoldState) {
        self.holds.remove(&hold_id);
        self.closed_holds.push_back((hold_id, state));
        if self.closed_holds.len() > CLOSED_HOLDS_WINDOW {
            self.closed_holds.pop_front();
        }
    }
}

impl Aggregate for CreditAccount {
    const TYPE: &'static str = ACCOUNT_AGGREGATE_TYPE;
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        if let AccountCommand::OpenAccount(c) = command {
            if self.opened {
                return Err(AccountError::AccountAlreadyOpen);
            }
            Self::check_credit_limit(c.credit_limit)?;
            if c.low_balance_threshold < 0 {
                return Err(AccountError::InvalidThreshold {
                    threshold: c.low_balance_threshold,
                });
            }
            sink.write(
                AccountEvent::AccountOpened(AccountOpened {
                    account_id: c.account_id,
                    name: c.name,
                    slug: c.slug,
                    owner_user_id: c.owner_user_id,
                    plan: c.plan,
                    status: c.status,
                    country: c.country,
                    billing_email: c.billing_email,
                    credit_limit: c.credit_limit,
                    low_balance_threshold: c.low_balance_threshold,
                    tax_rate: c.tax_rate,
                    currency: c.currency,
                    opened_at: c.now,
                }),
                self,
            )
            .await;
            return Ok(());
        }
        self.ensure_open()?;
        // A repeated key returns the first outcome: nothing new happens.
        if let Some(key) = command.idempotency_key() {
            if self.outcome_for(key).is_some() {
                return Ok(());
            }
        }
        // Every command first writes the expiries due by its instant, so the
        // stream's order is also its time order.
        let now = self.clamp(command.now());
        self.expire_due(now, sink).await;
        match command {
            AccountCommand::UpdateAccount { patch, now } => {
                let now = self.clamp(now);
                if let Some(limit) = patch.credit_limit {
                    Self::check_credit_limit(limit)?;
                    let minimum = (self.held - self.balance).max(0);
                    if limit < minimum {
                        return Err(AccountError::CreditLimitBelowUsage {
                            credit_limit: limit,
                            minimum,
                        });
                    }
                }
                if let Some(threshold) = patch.low_balance_threshold {
                    if threshold < 0 {
                        return Err(AccountError::InvalidThreshold { threshold });
                    }
                }
                sink.write(
                    AccountEvent::AccountUpdated(AccountUpdated {
                        name: patch.name,
                        billing_email: patch.billing_email,
                        billing_address: patch.billing_address,
                        tax_id: patch.tax_id,
                        tax_rate: patch.tax_rate,
                        country: patch.country,
                        credit_limit: patch.credit_limit,
                        low_balance_threshold: patch.low_balance_threshold,
                        currency: patch.currency,
                        updated_at: now,
                    }),
                    self,
                )
                .await;
            }
            AccountCommand::ChangePlan { plan, now } => {
                if plan != self.profile.plan {
                    let now = self.clamp(now);
                    sink.write(
                        AccountEvent::PlanChanged(PlanChanged {
                            from: self.profile.plan.clone(),
                            to: plan,
                            changed_at: now,
                        }),
                        self,
                    )
                    .await;
                }
            }
            AccountCommand::Suspend { reason, now } => match self.status {
                AccountStatus::Suspended => {}
                AccountStatus::Cancelled => return Err(AccountError::AccountCancelled),
                _ => {
                    let now = self.clamp(now);
                    sink.write(
                        AccountEvent::AccountSuspended(AccountSuspended {
                            reason,
                            suspended_at: now,
                        }),
                        self,
                    )
                    .await;
                }
            },
            AccountCommand::Reactivate { now } => {
                if self.status == AccountStatus::Suspended {
                    let now = self.clamp(now);
                    let status = self
                        .status_before_suspension
                        .unwrap_or(AccountStatus::Active);
                    sink.write(
                        AccountEvent::AccountReactivated(AccountReactivated {
                            status,
                            reactivated_at: now,
                        }),
                        self,
                    )
                    .await;
                }
            }
            AccountCommand::SetBillingStatus {
                status,
                reason,
                now,
            } => {
                if status == AccountStatus::Suspended {
                    return Err(AccountError::InvalidBillingStatus {
                        status: status.as_str(),
                    });
                }
                let current = match self.status {
                    AccountStatus::Cancelled => return Err(AccountError::AccountCancelled),
                    AccountStatus::Suspended => self
                        .status_before_suspension
                        .unwrap_or(AccountStatus::Active),
                    s => s,
                };
                if current != status {
                    let now = self.clamp(now);
                    sink.write(
                        AccountEvent::AccountStatusChanged(AccountStatusChanged {
                            from: current,
                            to: status,
                            reason,
                            changed_at: now,
                        }),
                        self,
                    )
                    .await;
                }
            }
            AccountCommand::SetBudget { budget, now } => {
                if let Some(b) = &budget {
                    Self::check_budget(b)?;
                }
                if budget != self.budget {
                    let now = self.clamp(now);
                    sink.write(
                        AccountEvent::BudgetSet(BudgetSet {
                            budget,
                            set_at: now,
                        }),
                        self,
                    )
                    .await;
                    // A budget below this month's usage is reached at once.
                    self.budget_crossings(now, sink).await;
                }
            }
            AccountCommand::SetAutoTopUp { config, now } => {
                if let Some(c) = &config {
                    Self::check_auto_top_up(c)?;
                }
                if config != self.auto_top_up {
                    let now = self.clamp(now);
                    sink.write(
                        AccountEvent::AutoTopUpSet(AutoTopUpSet {
                            config,
                            set_at: now,
                        }),
                        self,
                    )
                    .await;
                }
            }
            AccountCommand::RecordAutoTopUp {
                trigger_id,
                outcome,
                now,
            } => {
                if self.top_ups.recorded.contains(&trigger_id) {
                    return Ok(());
                }
                let now = self.clamp(now);
                let package = self
                    .auto_top_up
                    .as_ref()
                    .map(|c| c.package.clone())
                    .unwrap_or_default();
                let event = match outcome {
                    Ok((invoice_id, payment_id)) => {
                        AccountEvent::AutoTopUpSucceeded(AutoTopUpSucceeded {
                            trigger_id,
                            package,
                            invoice_id,
                            payment_id,
                            succeeded_at: now,
                        })
                    }
                    Err(reason) => {
                        let failures = self.top_ups.failures.saturating_add(1);
                        AccountEvent::AutoTopUpFailed(AutoTopUpFailed {
                            trigger_id,
                            package,
                            reason,
                            failures,
                            disabled: failures >= AUTO_TOP_UP_FAILURES_MAX
                                && self.auto_top_up.as_ref().is_some_and(|c| c.enabled),
                            failed_at: now,
                        })
                    }
                };
                sink.write(event, self).await;
            }
            credit => self.handle_credit_command(credit, sink).await?,
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let at = event.occurred_at();
        self.last_at = Some(self.last_at.map_or(at, |last| last.max(at)));
        self.remember_key(&event);
        self.balance += event.balance_delta();
        self.held += event.held_delta();
        match event {
            AccountEvent::AccountOpened(e) => {
                self.opened = true;
                self.status = e.status;
                self.credit_limit = e.credit_limit;
                self.profile = Profile {
                    id: Some(e.account_id),
                    name: e.name,
                    slug: e.slug,
                    owner_user_id: e.owner_user_id,
                    plan: e.plan,
                    country: Some(e.country),
                    billing_email: e.billing_email,
                    billing_address: None,
                    tax_id: None,
                    tax_rate: e.tax_rate,
                    low_balance_threshold: e.low_balance_threshold,
                    currency: e.currency,
                };
            }
            AccountEvent::AccountUpdated(e) => {
                let p = &mut self.profile;
                if let Some(v) = e.name {
                    p.name = v;
                }
                if let Some(v) = e.billing_email {
                    p.billing_email = v;
                }
                if let Some(v) = e.billing_address {
                    p.billing_address = Some(v);
                }
                if let Some(v) = e.tax_id {
                    p.tax_id = Some(v);
                }
                if let Some(v) = e.tax_rate {
                    p.tax_rate = v;
                }
                if let Some(v) = e.country {
                    p.country = Some(v);
                }
                if let Some(v) = e.currency {
                    p.currency = v;
                }
                if let Some(v) = e.low_balance_threshold {
                    p.low_balance_threshold = v;
                }
                if let Some(v) = e.credit_limit {
                    self.credit_limit = v;
                }
            }
            AccountEvent::PlanChanged(e) => self.profile.plan = e.to,
            AccountEvent::AccountSuspended(_) => {
                self.status_before_suspension = Some(self.status);
                self.status = AccountStatus::Suspended;
            }
            AccountEvent::AccountReactivated(e) => {
                self.status = e.status;
                self.status_before_suspension = None;
            }
            AccountEvent::AccountStatusChanged(e) => {
                if self.status == AccountStatus::Suspended {
                    self.status_before_suspension = Some(e.to);
                } else {
                    self.status = e.to;
                }
            }
            AccountEvent::CreditsGranted(e) => {
                self.debt -= e.debt_repaid;
                self.add_lot(e.grant_id, e.credits - e.debt_repaid, e.expires_at);
            }
            AccountEvent::CreditsDeducted(e) => {
                self.take_from_lots(&e.draws, e.overdraft);
                self.count_usage(e.recorded_at, e.credits);
            }
            AccountEvent::CreditsHeld(e) => {
                self.holds.insert(
                    e.hold_id,
                    OpenHold {
                        credits: e.credits,
                        operation: e.operation,
                        expires_at: e.expires_at,
                    },
                );
            }
            AccountEvent::HoldCaptured(e) => {
                self.take_from_lots(&e.draws, e.overdraft);
                self.close_hold(e.hold_id, HoldState::Captured);
                self.count_usage(e.captured_at, e.captured);
            }
            AccountEvent::HoldReleased(e) => {
                let state = match e.reason {
                    ReleaseReason::Caller => HoldState::Released,
                    ReleaseReason::Expired => HoldState::Expired,
                };
                self.close_hold(e.hold_id, state);
            }
            AccountEvent::CreditsRefunded(e) => {
                self.count_usage(e.refunded_at, -e.credits);
                *self.refunded.entry(e.deduction_id).or_default() += e.credits;
                self.debt -= e.debt_repaid;
                if e.lots.is_empty() {
                    self.add_lot(e.refund_id, e.credits - e.debt_repaid, None);
                }
                for lot in &e.lots {
                    self.add_lot(lot.lot_id, lot.credits, lot.expires_at);
                }
            }
            AccountEvent::CreditsAdjusted(e) => {
                if e.credits > 0 {
                    self.debt -= e.debt_repaid;
                    self.add_lot(e.adjustment_id, e.credits - e.debt_repaid, None);
                } else {
                    self.take_from_lots(&e.draws, e.overdraft);
                }
            }
            AccountEvent::CreditsExpired(e) => {
                self.take_from_lots(
                    &[LotDraw {
                        lot_id: e.lot_id,
                        credits: e.credits,
                    }],
                    0,
                );
            }
            AccountEvent::BudgetSet(e) => self.budget = e.budget,
            AccountEvent::AutoTopUpSet(e) => {
                self.auto_top_up = e.config;
                self.top_ups.failures = 0;
            }
            AccountEvent::AutoTopUpTriggered(e) => {
                let day = day_of(e.triggered_at);
                if self.top_ups.day != day {
                    self.top_ups.day = day;
                    self.top_ups.today = 0;
                }
                self.top_ups.today = self.top_ups.today.saturating_add(1);
            }
            AccountEvent::AutoTopUpSucceeded(e) => {
                self.top_ups.failures = 0;
                self.remember_top_up(e.trigger_id);
            }
            AccountEvent::AutoTopUpFailed(e) => {
                self.top_ups.failures = e.failures;
                if e.disabled {
                    if let Some(c) = self.auto_top_up.as_mut() {
                        c.enabled = false;
                    }
                }
                self.remember_top_up(e.trigger_id);
            }
            AccountEvent::BudgetThresholdReached(e) => {
                let period = period_of(e.reached_at);
                if self.budget_usage.period != period {
                    self.budget_usage = BudgetUsage {
                        period,
                        used: 0,
                        reached: Vec::new(),
                    };
                }
                self.budget_usage.reached.push(e.percent);
            }
        }
        debug_assert_eq!(
            self.balance,
            self.lots.iter().map(|l| l.remaining).sum::<i64>() - self.debt,
            "balance must equal the lots less the debt"
        );
    }
}

/// What a replay needs of an event: its answer, without the worker's free
/// text (model, related object, metadata), which can be kilobytes per
/// event and is never part of an answer. Keeps the warm window of a busy
/// account small (SECURITY.md, limits).
fn replay_only(event: &AccountEvent) -> AccountEvent {
    let strip = |usage: &Usage| Usage {
        model: None,
        related_object_type: None,
        related_object_id: None,
        metadata: None,
        ..usage.clone()
    };
    match event {
        AccountEvent::CreditsDeducted(d) => AccountEvent::CreditsDeducted(CreditsDeducted {
            usage: strip(&d.usage),
            ..d.clone()
        }),
        AccountEvent::HoldCaptured(c) => AccountEvent::HoldCaptured(HoldCaptured {
            usage: strip(&c.usage),
            ..c.clone()
        }),
        other => other.clone(),
    }
}
