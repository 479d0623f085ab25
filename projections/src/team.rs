//! The team read model (`rm_team_members`, migration 0051): one row per
//! member record of an account's team stream, made by pure functions that
//! the fold (`bulk.rs`, used by the live batches and rebuilds alike)
//! applies, and the staff's cross-account user list. The roster check
//! reads the team stream itself (docs/adr/0017), not this table.

use events::{TeamEvent, TEAM_AGGREGATE_TYPE};
use serde::Serialize;
use store::sql::{Arg, SqlRow};

use crate::billing::{FoldedRows, RowChange, RowTable};
use crate::{time_text, Page, PageRequest, ProjectionError, ReadModels};

pub const TABLE: &str = "rm_team_members";

pub const MEMBER_COLUMNS: [&str; 14] = [
    "member_id",
    "account_id",
    "user_id",
    "email",
    "role",
    "status",
    "invited_by",
    "created_at",
    "expires_at",
    "joined_at",
    "removed_at",
    "last_seen_at",
    "updated_at",
    "last_position",
];

pub const MEMBERS: RowTable = RowTable {
    name: TABLE,
    columns: &MEMBER_COLUMNS,
    key: "member_id",
};

/// The event, when `aggregate_type` is the team stream's.
pub fn parse(aggregate_type: &str, payload: &str) -> Option<Result<TeamEvent, serde_json::Error>> {
    (aggregate_type == TEAM_AGGREGATE_TYPE).then(|| serde_json::from_str(payload))
}

fn some(t: chrono::DateTime<chrono::Utc>) -> Arg {
    Some(time_text(t)).into()
}

fn none() -> Arg {
    Option::<String>::None.into()
}

/// What one team event does to its member's row, if it has one.
pub fn change(account_id: &str, event: &TeamEvent, position: i64) -> Option<RowChange> {
    let at = time_text(event.occurred_at());
    let mut sets: Vec<(&'static str, Arg)> = match event {
        TeamEvent::MemberAdded(e) => {
            return Some(RowChange::Insert(vec![
                e.member_id.to_string().into(),
                account_id.into(),
                Some(e.user_id.clone()).into(),
                e.email.clone().into(),
                e.role.as_str().into(),
                "active".into(),
                e.added_by.clone().into(),
                at.clone().into(),
                none(),
                at.clone().into(),
                none(),
                none(),
                at.into(),
                position.into(),
            ]))
        }
        TeamEvent::MemberInvited(e) => {
            return Some(RowChange::Insert(vec![
                e.member_id.to_string().into(),
                account_id.into(),
                none(),
                e.email.clone().into(),
                e.role.as_str().into(),
                "invited".into(),
                Some(e.invited_by.clone()).into(),
                at.clone().into(),
                some(e.expires_at),
                none(),
                none(),
                none(),
                at.into(),
                position.into(),
            ]))
        }
        TeamEvent::InvitationAccepted(e) => vec![
            ("user_id", Some(e.user_id.clone()).into()),
            ("status", "active".into()),
            ("joined_at", some(e.accepted_at)),
        ],
        TeamEvent::InvitationRevoked(e) => vec![
            ("status", "revoked".into()),
            ("removed_at", some(e.revoked_at)),
        ],
        TeamEvent::MemberRoleChanged(e) => vec![("role", e.to.as_str().into())],
        TeamEvent::MemberRemoved(e) => vec![
            ("status", "removed".into()),
            ("removed_at", some(e.removed_at)),
        ],
        TeamEvent::MemberSeen(e) => vec![("last_seen_at", some(e.seen_at))],
        TeamEvent::LimitsOverridden(_) | TeamEvent::UsageCountsReported(_) => return None,
    };
    sets.push(("updated_at", at.into()));
    sets.push(("last_position", position.into()));
    Some(RowChange::Update(sets))
}

/// The fold's path (`bulk.rs`).
pub(crate) fn fold(rows: &mut FoldedRows, account_id: &str, event: &TeamEvent, position: i64) {
    if let (Some(member), Some(change)) = (event.member_id(), change(account_id, event, position)) {
        change.fold(rows, MEMBERS, &member.to_string());
    }
}

// ---------------------------------------------------------------------------
// Queries
// ---------------------------------------------------------------------------

/// A member record as the staff's user list shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemberRowView {
    pub id: String,
    pub account_id: String,
    pub user_id: Option<String>,
    pub email: String,
    pub role: String,
    pub status: String,
    pub invited_by: Option<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub joined_at: Option<String>,
    pub removed_at: Option<String>,
    pub last_seen_at: Option<String>,
}

impl MemberRowView {
    fn from_row(r: &SqlRow) -> Result<Self, ProjectionError> {
        Ok(Self {
            id: r.text("member_id")?,
            account_id: r.text("account_id")?,
            user_id: r.opt_text("user_id")?,
            email: r.text("email")?,
            role: r.text("role")?,
            status: r.text("status")?,
            invited_by: r.opt_text("invited_by")?,
            created_at: r.text("created_at")?,
            expires_at: r.opt_text("expires_at")?,
            joined_at: r.opt_text("joined_at")?,
            removed_at: r.opt_text("removed_at")?,
            last_seen_at: r.opt_text("last_seen_at")?,
        })
    }
}

/// Filters of the staff's user list; all optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserFilter {
    /// A piece of the email or the user id (case-insensitive).
    pub q: Option<String>,
    pub role: Option<String>,
    pub status: Option<String>,
    pub account_id: Option<String>,
}

const USERS_CURSOR: &str = "users";

/// `%`, `_` and `\` taken literally in a LIKE pattern (escape `\`).
fn like_literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl ReadModels {
    /// Every member record across accounts, newest first, filtered.
    pub async fn users(
        &self,
        filter: &UserFilter,
        req: &PageRequest,
    ) -> Result<Page<MemberRowView>, ProjectionError> {
        let mut sql = String::from("SELECT * FROM rm_team_members WHERE 1 = 1");
        let mut args: Vec<Arg> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, v: Arg| {
            args.push(v);
            sql.push_str(&clause.replace('?', &format!("${}", args.len())));
        };
        if let Some(q) = &filter.q {
            let pattern = format!("%{}%", like_literal(&q.to_lowercase()));
            push(
                &mut sql,
                " AND (LOWER(email) LIKE ? ESCAPE '\\' OR LOWER(COALESCE(user_id, '')) LIKE ? ESCAPE '\\')",
                pattern.into(),
            );
        }
        if let Some(role) = &filter.role {
            push(&mut sql, " AND role = ?", role.clone().into());
        }
        if let Some(status) = &filter.status {
            push(&mut sql, " AND status = ?", status.clone().into());
        }
        if let Some(account) = &filter.account_id {
            push(&mut sql, " AND account_id = ?", account.clone().into());
        }
        if let Some(c) = &req.after {
            let key = crate::queries::decode_cursor(USERS_CURSOR, c)?;
            let (t, id) = key.split_once('|').ok_or(ProjectionError::BadCursor)?;
            args.push(t.to_owned().into());
            let tn = args.len();
            args.push(id.to_owned().into());
            let idn = args.len();
            sql.push_str(&format!(
                " AND (created_at < ${tn} OR (created_at = ${tn} AND member_id < ${idn}))"
            ));
        }
        args.push((i64::from(req.limit.clamp(1, crate::PAGE_LIMIT_MAX)) + 1).into());
        sql.push_str(&format!(
            " ORDER BY created_at DESC, member_id DESC LIMIT ${}",
            args.len()
        ));
        let rows = self.store.fetch_all(&sql, &args).await?;
        let items = rows
            .iter()
            .map(MemberRowView::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::queries::page(items, req, |m| {
            crate::queries::encode_cursor(USERS_CURSOR, &format!("{}|{}", m.created_at, m.id))
        }))
    }
}
