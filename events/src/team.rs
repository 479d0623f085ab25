//! Events of an account's team stream (aggregate type `team`, one stream
//! per account, its id the account's): members, invitations, the limits
//! staff override for the account and the counts the SaaS reports
//! (docs/adr/0017). Kept off the account's credit stream so that the hot
//! path (the group committer, its snapshots) never carries them.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::EVENT_VERSION_1;

/// The aggregate type under which team streams are stored.
pub const TEAM_AGGREGATE_TYPE: &str = "team";

/// A member's role on the roster, strongest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberRole {
    Owner,
    Admin,
    Editor,
    Viewer,
}

impl MemberRole {
    pub const ALL: [MemberRole; 4] = [Self::Owner, Self::Admin, Self::Editor, Self::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Owner => "owner",
            Self::Admin => "admin",
            Self::Editor => "editor",
            Self::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Why a member joined without an invitation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JoinSource {
    /// The account's `owner_user_id` when it was opened (or, for an account
    /// opened before teams existed, when its team stream began).
    AccountOpened,
    /// Added directly by the platform (`POST /accounts/{id}/team`).
    Direct,
}

/// Per-account overrides of the plan's limits: `Some(None)` is unlimited,
/// `None` leaves the plan's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitOverrides {
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_users: Option<Option<i64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_sites: Option<Option<i64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_industries: Option<Option<i64>>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_author_profiles: Option<Option<i64>>,
}

/// A field that is present reads as `Some`, even when it is `null`
/// (unlimited), so that "absent" and "null" stay apart.
fn present<'de, D>(d: D) -> Result<Option<Option<i64>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Option::<i64>::deserialize(d).map(Some)
}

/// Counts the SaaS keeps and reports (`PUT /accounts/{id}/usage-counts`);
/// `None` is "not reported".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCounts {
    pub sites: Option<i64>,
    pub industries: Option<i64>,
    pub author_profiles: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberAdded {
    pub member_id: Uuid,
    pub user_id: String,
    pub email: String,
    pub role: MemberRole,
    pub source: JoinSource,
    /// Who added the member (a `sub`), none for the opening owner.
    pub added_by: Option<String>,
    pub added_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberInvited {
    /// The invitation's id; the member's id once accepted.
    pub member_id: Uuid,
    pub email: String,
    pub role: MemberRole,
    /// SHA-256 (hex) of the secret token; the token itself is never stored.
    pub token_hash: String,
    pub invited_by: String,
    pub invited_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvitationAccepted {
    pub member_id: Uuid,
    pub user_id: String,
    pub accepted_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvitationRevoked {
    pub member_id: Uuid,
    pub revoked_by: String,
    pub revoked_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRoleChanged {
    pub member_id: Uuid,
    pub user_id: String,
    pub from: MemberRole,
    pub to: MemberRole,
    pub changed_by: String,
    pub changed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberRemoved {
    pub member_id: Uuid,
    pub user_id: String,
    pub removed_by: String,
    pub removed_at: DateTime<Utc>,
}

/// A member used the API (recorded at most once an hour per member).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberSeen {
    pub member_id: Uuid,
    pub seen_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitsOverridden {
    /// The overrides from now on (they replace the previous ones).
    pub overrides: LimitOverrides,
    pub changed_by: String,
    pub changed_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UsageCountsReported {
    /// The counts from now on (a count not sent keeps its last value).
    pub counts: UsageCounts,
    pub reported_by: String,
    pub reported_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum TeamEvent {
    MemberAdded(MemberAdded),
    MemberInvited(MemberInvited),
    InvitationAccepted(InvitationAccepted),
    InvitationRevoked(InvitationRevoked),
    MemberRoleChanged(MemberRoleChanged),
    MemberRemoved(MemberRemoved),
    MemberSeen(MemberSeen),
    LimitsOverridden(LimitsOverridden),
    UsageCountsReported(UsageCountsReported),
}

impl TeamEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::MemberAdded(_) => "MemberAdded",
            Self::MemberInvited(_) => "MemberInvited",
            Self::InvitationAccepted(_) => "InvitationAccepted",
            Self::InvitationRevoked(_) => "InvitationRevoked",
            Self::MemberRoleChanged(_) => "MemberRoleChanged",
            Self::MemberRemoved(_) => "MemberRemoved",
            Self::MemberSeen(_) => "MemberSeen",
            Self::LimitsOverridden(_) => "LimitsOverridden",
            Self::UsageCountsReported(_) => "UsageCountsReported",
        }
    }

    /// When the fact happened.
    pub fn occurred_at(&self) -> DateTime<Utc> {
        match self {
            Self::MemberAdded(e) => e.added_at,
            Self::MemberInvited(e) => e.invited_at,
            Self::InvitationAccepted(e) => e.accepted_at,
            Self::InvitationRevoked(e) => e.revoked_at,
            Self::MemberRoleChanged(e) => e.changed_at,
            Self::MemberRemoved(e) => e.removed_at,
            Self::MemberSeen(e) => e.seen_at,
            Self::LimitsOverridden(e) => e.changed_at,
            Self::UsageCountsReported(e) => e.reported_at,
        }
    }

    /// The member (or invitation) the event is about, if any.
    pub fn member_id(&self) -> Option<Uuid> {
        match self {
            Self::MemberAdded(e) => Some(e.member_id),
            Self::MemberInvited(e) => Some(e.member_id),
            Self::InvitationAccepted(e) => Some(e.member_id),
            Self::InvitationRevoked(e) => Some(e.member_id),
            Self::MemberRoleChanged(e) => Some(e.member_id),
            Self::MemberRemoved(e) => Some(e.member_id),
            Self::MemberSeen(e) => Some(e.member_id),
            Self::LimitsOverridden(_) | Self::UsageCountsReported(_) => None,
        }
    }
}

impl DomainEvent for TeamEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_null_override_stays_unlimited_and_an_absent_one_stays_the_plans() {
        let o = LimitOverrides {
            max_users: Some(Some(3)),
            max_sites: Some(None),
            ..LimitOverrides::default()
        };
        let text = serde_json::to_string(&o).unwrap();
        assert_eq!(text, r#"{"max_users":3,"max_sites":null}"#);
        assert_eq!(serde_json::from_str::<LimitOverrides>(&text).unwrap(), o);
        assert_eq!(
            serde_json::from_str::<LimitOverrides>("{}").unwrap(),
            LimitOverrides::default()
        );
    }

    #[test]
    fn roles_parse_by_their_wire_names() {
        for r in MemberRole::ALL {
            assert_eq!(MemberRole::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
        }
        assert_eq!(MemberRole::parse("developer"), None);
    }
}
