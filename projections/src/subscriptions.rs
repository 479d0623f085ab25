//! The subscriptions read model (`rm_subscriptions`, migration 0042): one
//! row per subscription, made by pure functions that the fold (`bulk.rs`,
//! used by the live projector and rebuilds alike) applies, and its queries.

use events::{PlanTerms, SubscriptionEvent, SubscriptionStatus, SUBSCRIPTION_AGGREGATE_TYPE};
use serde::Serialize;
use store::sql::{Arg, SqlRow};

use crate::billing::{FoldedRows, RowChange, RowTable};
use crate::{time_text, Page, PageRequest, ProjectionError, ReadModels};

pub const TABLE: &str = "rm_subscriptions";

pub const SUBSCRIPTION_COLUMNS: [&str; 17] = [
    "subscription_id",
    "account_id",
    "plan",
    "status",
    "billing_cycle",
    "price",
    "currency",
    "current_period_start",
    "current_period_end",
    "cancel_at_period_end",
    "scheduled_plan",
    "stripe_subscription_id",
    "past_due_since",
    "canceled_at",
    "created_at",
    "updated_at",
    "last_position",
];

pub const SUBSCRIPTIONS: RowTable = RowTable {
    name: TABLE,
    columns: &SUBSCRIPTION_COLUMNS,
    key: "subscription_id",
};

/// The event, when `aggregate_type` is the subscription stream's.
pub fn parse(
    aggregate_type: &str,
    payload: &str,
) -> Option<Result<SubscriptionEvent, serde_json::Error>> {
    (aggregate_type == SUBSCRIPTION_AGGREGATE_TYPE).then(|| serde_json::from_str(payload))
}

fn cycle(p: &PlanTerms) -> &'static str {
    match p.billing_cycle {
        events::BillingCycle::Monthly => "monthly",
        events::BillingCycle::Annual => "annual",
    }
}

fn plan_columns(p: &PlanTerms) -> Vec<(&'static str, Arg)> {
    vec![
        ("plan", p.slug.clone().into()),
        ("billing_cycle", cycle(p).into()),
        ("price", p.price.amount.to_string().into()),
        ("currency", p.price.currency.as_str().into()),
    ]
}

fn some(t: chrono::DateTime<chrono::Utc>) -> Arg {
    Some(time_text(t)).into()
}

fn none() -> Arg {
    Option::<String>::None.into()
}

/// What one subscription event does to its row.
pub fn change(event: &SubscriptionEvent, position: i64) -> RowChange {
    let at = time_text(event.occurred_at());
    let mut sets: Vec<(&'static str, Arg)> = match event {
        SubscriptionEvent::SubscriptionCreated(e) => {
            return RowChange::Insert(vec![
                e.subscription_id.to_string().into(),
                e.account_id.to_string().into(),
                e.plan.slug.clone().into(),
                SubscriptionStatus::Incomplete.as_str().into(),
                cycle(&e.plan).into(),
                e.plan.price.amount.to_string().into(),
                e.plan.price.currency.as_str().into(),
                some(e.period_start),
                some(e.period_end),
                0i64.into(),
                none(),
                e.stripe_subscription_id.clone().into(),
                none(),
                none(),
                at.clone().into(),
                at.into(),
                position.into(),
            ])
        }
        SubscriptionEvent::SubscriptionActivated(e) => vec![
            ("status", SubscriptionStatus::Active.as_str().into()),
            ("current_period_start", some(e.period_start)),
            ("current_period_end", some(e.period_end)),
            ("past_due_since", none()),
        ],
        SubscriptionEvent::SubscriptionInvoicePaid(_) => vec![],
        SubscriptionEvent::SubscriptionPlanChanged(e) => {
            let mut v = plan_columns(&e.to);
            v.push(("scheduled_plan", none()));
            v
        }
        SubscriptionEvent::SubscriptionDowngradeScheduled(e) => {
            vec![("scheduled_plan", Some(e.to.slug.clone()).into())]
        }
        SubscriptionEvent::SubscriptionReactivated(_) => {
            vec![("cancel_at_period_end", 0i64.into())]
        }
        SubscriptionEvent::SubscriptionCancelScheduled(_) => {
            vec![("cancel_at_period_end", 1i64.into())]
        }
        SubscriptionEvent::SubscriptionCanceled(e) => vec![
            ("status", SubscriptionStatus::Canceled.as_str().into()),
            ("canceled_at", some(e.canceled_at)),
            ("scheduled_plan", none()),
        ],
        SubscriptionEvent::SubscriptionRenewed(e) => {
            let mut v = plan_columns(&e.plan);
            v.push(("scheduled_plan", none()));
            v.push(("current_period_start", some(e.period_start)));
            v.push(("current_period_end", some(e.period_end)));
            v
        }
        SubscriptionEvent::SubscriptionPastDue(e) => vec![
            ("status", SubscriptionStatus::PastDue.as_str().into()),
            ("past_due_since", some(e.past_due_at)),
        ],
        SubscriptionEvent::SubscriptionRecovered(_) => vec![
            ("status", SubscriptionStatus::Active.as_str().into()),
            ("past_due_since", none()),
        ],
    };
    sets.push(("updated_at", at.into()));
    sets.push(("last_position", position.into()));
    RowChange::Update(sets)
}

/// The fold's path (`bulk.rs`, used by the live batches and rebuilds).
pub(crate) fn fold(
    rows: &mut FoldedRows,
    aggregate_id: &str,
    event: &SubscriptionEvent,
    position: i64,
) {
    change(event, position).fold(rows, SUBSCRIPTIONS, aggregate_id);
}

// ---------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------

/// A subscription as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SubscriptionView {
    pub id: String,
    pub account_id: String,
    pub plan: String,
    pub status: String,
    pub billing_cycle: String,
    pub price: String,
    pub currency: String,
    pub current_period_start: Option<String>,
    pub current_period_end: Option<String>,
    pub cancel_at_period_end: bool,
    pub scheduled_plan: Option<String>,
    pub stripe_subscription_id: Option<String>,
    pub past_due_since: Option<String>,
    pub canceled_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl SubscriptionView {
    fn from_row(r: &SqlRow) -> Result<Self, ProjectionError> {
        Ok(Self {
            id: r.text("subscription_id")?,
            account_id: r.text("account_id")?,
            plan: r.text("plan")?,
            status: r.text("status")?,
            billing_cycle: r.text("billing_cycle")?,
            price: r.text("price")?,
            currency: r.text("currency")?,
            current_period_start: r.opt_text("current_period_start")?,
            current_period_end: r.opt_text("current_period_end")?,
            cancel_at_period_end: r.i64("cancel_at_period_end")? != 0,
            scheduled_plan: r.opt_text("scheduled_plan")?,
            stripe_subscription_id: r.opt_text("stripe_subscription_id")?,
            past_due_since: r.opt_text("past_due_since")?,
            canceled_at: r.opt_text("canceled_at")?,
            created_at: r.text("created_at")?,
            updated_at: r.text("updated_at")?,
        })
    }
}

const SUBSCRIPTIONS_CURSOR: &str = "subscriptions";
/// Orders open subscriptions before ended ones.
const RANK: &str = "(CASE WHEN status = 'canceled' THEN 1 ELSE 0 END)";

impl ReadModels {
    pub async fn subscription(
        &self,
        id: &str,
    ) -> Result<Option<SubscriptionView>, ProjectionError> {
        let row = self
            .store
            .fetch_optional(
                "SELECT * FROM rm_subscriptions WHERE subscription_id = $1",
                &[id.into()],
            )
            .await?;
        row.as_ref().map(SubscriptionView::from_row).transpose()
    }

    /// The account's subscriptions: the open one first, then newest first.
    pub async fn subscriptions(
        &self,
        account_id: &str,
        req: &PageRequest,
    ) -> Result<Page<SubscriptionView>, ProjectionError> {
        let mut sql = String::from("SELECT * FROM rm_subscriptions WHERE account_id = $1");
        let mut args: Vec<Arg> = vec![account_id.into()];
        if let Some(c) = &req.after {
            let key = crate::queries::decode_cursor(SUBSCRIPTIONS_CURSOR, c)?;
            let mut parts = key.splitn(3, '|');
            let (Some(rank), Some(t), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
                return Err(ProjectionError::BadCursor);
            };
            let rank: i64 = rank.parse().map_err(|_| ProjectionError::BadCursor)?;
            args.push(rank.into());
            args.push(t.to_owned().into());
            args.push(id.to_owned().into());
            sql.push_str(&format!(
                " AND ({RANK} > $2 OR ({RANK} = $2 AND (created_at < $3 OR (created_at = $3 AND subscription_id < $4))))"
            ));
        }
        args.push((i64::from(req.limit.clamp(1, crate::PAGE_LIMIT_MAX)) + 1).into());
        sql.push_str(&format!(
            " ORDER BY {RANK}, created_at DESC, subscription_id DESC LIMIT ${}",
            args.len()
        ));
        let rows = self.store.fetch_all(&sql, &args).await?;
        let items = rows
            .iter()
            .map(SubscriptionView::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::queries::page(items, req, |s| {
            let rank = i32::from(s.status == "canceled");
            crate::queries::encode_cursor(
                SUBSCRIPTIONS_CURSOR,
                &format!("{rank}|{}|{}", s.created_at, s.id),
            )
        }))
    }

    /// How many subscriptions the account ever had, and its open one.
    pub async fn subscription_count(
        &self,
        account_id: &str,
    ) -> Result<(i64, Option<SubscriptionView>), ProjectionError> {
        let rows = self
            .store
            .fetch_all(
                "SELECT * FROM rm_subscriptions WHERE account_id = $1",
                &[account_id.into()],
            )
            .await?;
        let open = rows
            .iter()
            .map(SubscriptionView::from_row)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .find(|s| s.status != "canceled");
        Ok((i64::try_from(rows.len()).unwrap_or(i64::MAX), open))
    }

    pub async fn subscription_by_stripe_id(
        &self,
        stripe_subscription_id: &str,
    ) -> Result<Option<String>, ProjectionError> {
        let row = self
            .store
            .fetch_optional(
                "SELECT subscription_id FROM rm_subscriptions WHERE stripe_subscription_id = $1 \
                 ORDER BY created_at LIMIT 1",
                &[stripe_subscription_id.into()],
            )
            .await?;
        row.map(|r| r.text("subscription_id"))
            .transpose()
            .map_err(Into::into)
    }

    /// Running subscriptions that renew (their period ends, no cancel
    /// scheduled) after `from` and at or before `to` (RFC 3339 text), after
    /// `after` in id order, at most `limit`.
    pub async fn subscriptions_renewing(
        &self,
        from: &str,
        to: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<SubscriptionView>, ProjectionError> {
        let rows = self
            .store
            .fetch_all(
                "SELECT * FROM rm_subscriptions \
                 WHERE subscription_id > $3 AND status IN ('active', 'trialing') \
                   AND cancel_at_period_end = 0 \
                   AND current_period_end > $1 AND current_period_end <= $2 \
                 ORDER BY subscription_id LIMIT $4",
                &[from.into(), to.into(), after.into(), limit.into()],
            )
            .await?;
        rows.iter().map(SubscriptionView::from_row).collect()
    }

    /// Subscriptions with something due at `now` (RFC 3339 text), after
    /// `after` in id order, at most `limit`: running ones whose period
    /// ended, past_due ones since `grace_start` or earlier, and running or
    /// incomplete ones with an overdue pending invoice of their own. The
    /// aggregate decides exactly what is due.
    pub async fn subscriptions_maybe_due(
        &self,
        now: &str,
        grace_start: &str,
        after: &str,
        limit: i64,
    ) -> Result<Vec<String>, ProjectionError> {
        let rows = self
            .store
            .fetch_all(
                "SELECT s.subscription_id FROM rm_subscriptions s \
                 WHERE s.subscription_id > $3 AND ( \
                   (s.status IN ('active', 'trialing') AND s.current_period_end <= $1) \
                   OR (s.status = 'past_due' AND s.past_due_since <= $2) \
                   OR (s.status IN ('active', 'trialing', 'incomplete') AND EXISTS ( \
                        SELECT 1 FROM rm_invoices i WHERE i.account_id = s.account_id \
                           AND i.status = 'pending' AND i.due_at <= $1 \
                           AND i.document LIKE ('%\"subscription_id\":\"' || s.subscription_id || '\"%')))) \
                 ORDER BY s.subscription_id LIMIT $4",
                &[now.into(), grace_start.into(), after.into(), limit.into()],
            )
            .await?;
        rows.iter()
            .map(|r| r.text("subscription_id").map_err(Into::into))
            .collect()
    }
}
