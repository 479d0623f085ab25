use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{LimitOverrides, MemberRole, TeamEvent, UsageCounts};
use uuid::Uuid;

use super::*;

fn at(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap() + Duration::minutes(minutes)
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn seed() -> Option<Seed> {
    Some(Seed {
        member_id: id(1),
        owner_user_id: "alice".into(),
        email: "alice@acme.example".into(),
    })
}

/// Runs one command on `team`; the events it wrote.
async fn run(
    team: &mut Team,
    action: TeamAction,
    now: DateTime<Utc>,
) -> Result<Vec<TeamEvent>, TeamError> {
    let sink = EventSink::default();
    team.handle(
        TeamCommand {
            seed: seed(),
            action,
            now,
        },
        &(),
        &sink,
    )
    .await?;
    Ok(sink.collect().await)
}

fn invite(n: u128, email: &str, role: MemberRole, seats: Option<i64>) -> TeamAction {
    TeamAction::Invite {
        member_id: id(n),
        email: email.into(),
        role,
        token_hash: format!("hash-{n}"),
        expires_at: at(60),
        by: "alice".into(),
        by_role: Some(MemberRole::Owner),
        seats,
    }
}

fn accept(n: u128, user: &str) -> TeamAction {
    TeamAction::Accept {
        token_hash: format!("hash-{n}"),
        user_id: user.into(),
    }
}

async fn started() -> Team {
    let mut team = Team::default();
    run(&mut team, TeamAction::Start, at(0)).await.unwrap();
    team
}

#[tokio::test]
async fn a_team_begins_with_its_owner_and_refuses_commands_without_a_seed() {
    let mut team = Team::default();
    let sink = EventSink::default();
    let refused = team
        .handle(
            TeamCommand {
                seed: None,
                action: TeamAction::Start,
                now: at(0),
            },
            &(),
            &sink,
        )
        .await;
    assert_eq!(refused, Err(TeamError::NotStarted));
    let events = run(&mut team, TeamAction::Start, at(0)).await.unwrap();
    assert_eq!(events.len(), 1);
    let owner = team.active("alice").expect("the owner is active");
    assert_eq!(owner.role, MemberRole::Owner);
    // Started once: the seed is not written again.
    assert!(run(&mut team, TeamAction::Start, at(1))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(team.active_count(), 1);
}

#[tokio::test]
async fn an_invitation_is_accepted_once_and_a_retry_by_the_same_user_changes_nothing() {
    let mut team = started().await;
    run(
        &mut team,
        invite(2, "bob@acme.example", MemberRole::Editor, Some(2)),
        at(1),
    )
    .await
    .unwrap();
    assert_eq!(team.seats_used(at(1)), 2);
    let events = run(&mut team, accept(2, "bob"), at(2)).await.unwrap();
    assert!(matches!(events[..], [TeamEvent::InvitationAccepted(_)]));
    assert_eq!(team.active("bob").unwrap().role, MemberRole::Editor);
    assert!(run(&mut team, accept(2, "bob"), at(3))
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        run(&mut team, accept(2, "carol"), at(3)).await,
        Err(TeamError::InvitationUsed)
    );
    assert_eq!(
        run(&mut team, accept(9, "carol"), at(3)).await,
        Err(TeamError::UnknownInvitation)
    );
}

#[tokio::test]
async fn seats_count_active_members_and_open_invitations_only() {
    let mut team = started().await;
    assert_eq!(
        run(
            &mut team,
            invite(2, "bob@acme.example", MemberRole::Viewer, Some(1)),
            at(1)
        )
        .await,
        Err(TeamError::PlanLimit { limit: 1, used: 1 })
    );
    run(
        &mut team,
        invite(2, "bob@acme.example", MemberRole::Viewer, Some(2)),
        at(1),
    )
    .await
    .unwrap();
    assert_eq!(
        run(
            &mut team,
            invite(3, "carol@acme.example", MemberRole::Viewer, Some(2)),
            at(2)
        )
        .await,
        Err(TeamError::PlanLimit { limit: 2, used: 2 })
    );
    // Unlimited.
    run(
        &mut team,
        invite(3, "carol@acme.example", MemberRole::Viewer, None),
        at(2),
    )
    .await
    .unwrap();
    // An expired invitation frees its seat and cannot be accepted.
    assert_eq!(team.seats_used(at(61)), 1);
    assert_eq!(
        run(&mut team, accept(2, "bob"), at(61)).await,
        Err(TeamError::InvitationExpired)
    );
    // A revoked one neither.
    run(
        &mut team,
        TeamAction::Revoke {
            member_id: id(3),
            by: "alice".into(),
        },
        at(5),
    )
    .await
    .unwrap();
    assert_eq!(
        run(&mut team, accept(3, "carol"), at(6)).await,
        Err(TeamError::InvitationRevoked)
    );
}

#[tokio::test]
async fn duplicates_are_refused() {
    let mut team = started().await;
    assert_eq!(
        run(
            &mut team,
            invite(2, "ALICE@acme.example", MemberRole::Viewer, None),
            at(1)
        )
        .await,
        Err(TeamError::AlreadyMember("ALICE@acme.example".into()))
    );
    run(
        &mut team,
        invite(2, "bob@acme.example", MemberRole::Viewer, None),
        at(1),
    )
    .await
    .unwrap();
    assert_eq!(
        run(
            &mut team,
            invite(3, "bob@acme.example", MemberRole::Viewer, None),
            at(1)
        )
        .await,
        Err(TeamError::AlreadyInvited("bob@acme.example".into()))
    );
    let add = TeamAction::Add {
        member_id: id(4),
        user_id: "alice".into(),
        email: "other@acme.example".into(),
        role: MemberRole::Viewer,
        by: "platform".into(),
        seats: None,
    };
    assert_eq!(
        run(&mut team, add, at(2)).await,
        Err(TeamError::AlreadyMember("alice".into()))
    );
}

#[tokio::test]
async fn only_owners_touch_the_owner_role_and_the_last_owner_stays() {
    let mut team = started().await;
    let add = |n: u128, user: &str, role| TeamAction::Add {
        member_id: id(n),
        user_id: user.into(),
        email: format!("{user}@acme.example"),
        role,
        by: "platform".into(),
        seats: None,
    };
    run(&mut team, add(2, "bob", MemberRole::Admin), at(1))
        .await
        .unwrap();
    let change = |user: &str, role, by: &str, by_role| TeamAction::ChangeRole {
        user_id: user.into(),
        role,
        by: by.into(),
        by_role,
    };
    let remove = |user: &str, by: &str, by_role| TeamAction::Remove {
        user_id: user.into(),
        by: by.into(),
        by_role,
    };
    assert_eq!(
        run(
            &mut team,
            invite(3, "x@acme.example", MemberRole::Owner, None)
                .with_by_role(Some(MemberRole::Admin)),
            at(2)
        )
        .await,
        Err(TeamError::OwnerOnly)
    );
    assert_eq!(
        run(
            &mut team,
            change("alice", MemberRole::Viewer, "bob", Some(MemberRole::Admin)),
            at(2)
        )
        .await,
        Err(TeamError::OwnerOnly)
    );
    assert_eq!(
        run(
            &mut team,
            remove("alice", "bob", Some(MemberRole::Admin)),
            at(2)
        )
        .await,
        Err(TeamError::OwnerOnly)
    );
    assert_eq!(
        run(
            &mut team,
            change("alice", MemberRole::Admin, "alice", Some(MemberRole::Owner)),
            at(2)
        )
        .await,
        Err(TeamError::LastOwner)
    );
    assert_eq!(
        run(&mut team, remove("alice", "platform", None), at(2)).await,
        Err(TeamError::LastOwner)
    );
    // Demote the admin; the roster says so.
    run(
        &mut team,
        change("bob", MemberRole::Viewer, "alice", Some(MemberRole::Owner)),
        at(3),
    )
    .await
    .unwrap();
    assert_eq!(team.active("bob").unwrap().role, MemberRole::Viewer);
    // Removed: no longer active, and unknown to a second removal.
    run(
        &mut team,
        remove("bob", "alice", Some(MemberRole::Owner)),
        at(4),
    )
    .await
    .unwrap();
    assert!(team.active("bob").is_none());
    assert_eq!(
        run(
            &mut team,
            remove("bob", "alice", Some(MemberRole::Owner)),
            at(5)
        )
        .await,
        Err(TeamError::UnknownMember("bob".into()))
    );
    // Removed members may be added again, as a new record.
    run(&mut team, add(5, "bob", MemberRole::Editor), at(6))
        .await
        .unwrap();
    assert_eq!(team.active("bob").unwrap().id, id(5));
}

#[tokio::test]
async fn ownership_moves_to_an_active_member_and_the_old_owner_becomes_admin() {
    let mut team = started().await;
    run(
        &mut team,
        TeamAction::Add {
            member_id: id(2),
            user_id: "bob".into(),
            email: "bob@acme.example".into(),
            role: MemberRole::Editor,
            by: "platform".into(),
            seats: None,
        },
        at(1),
    )
    .await
    .unwrap();
    let transfer = |to: &str, by: &str, by_role| TeamAction::TransferOwnership {
        to: to.into(),
        by: by.into(),
        by_role,
    };
    assert_eq!(
        run(
            &mut team,
            transfer("bob", "bob", Some(MemberRole::Editor)),
            at(2)
        )
        .await,
        Err(TeamError::OwnerOnly)
    );
    assert_eq!(
        run(
            &mut team,
            transfer("carol", "alice", Some(MemberRole::Owner)),
            at(2)
        )
        .await,
        Err(TeamError::UnknownMember("carol".into()))
    );
    let events = run(
        &mut team,
        transfer("bob", "alice", Some(MemberRole::Owner)),
        at(2),
    )
    .await
    .unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(team.active("bob").unwrap().role, MemberRole::Owner);
    assert_eq!(team.active("alice").unwrap().role, MemberRole::Admin);
    // Staff move it back: every other owner steps down.
    run(&mut team, transfer("alice", "platform", None), at(3))
        .await
        .unwrap();
    assert_eq!(team.active("alice").unwrap().role, MemberRole::Owner);
    assert_eq!(team.active("bob").unwrap().role, MemberRole::Admin);
}

#[tokio::test]
async fn seen_is_recorded_at_most_hourly_and_limits_and_counts_are_kept() {
    let mut team = started().await;
    let seen = || TeamAction::Seen {
        user_id: "alice".into(),
    };
    assert_eq!(run(&mut team, seen(), at(1)).await.unwrap().len(), 1);
    assert!(run(&mut team, seen(), at(30)).await.unwrap().is_empty());
    assert_eq!(run(&mut team, seen(), at(61)).await.unwrap().len(), 1);
    assert_eq!(team.active("alice").unwrap().last_seen_at, Some(at(61)));

    let overrides = LimitOverrides {
        max_users: Some(Some(3)),
        max_sites: Some(None),
        ..LimitOverrides::default()
    };
    let set = TeamAction::OverrideLimits {
        overrides: overrides.clone(),
        by: "platform".into(),
    };
    assert_eq!(run(&mut team, set.clone(), at(2)).await.unwrap().len(), 1);
    assert!(run(&mut team, set, at(3)).await.unwrap().is_empty());
    assert_eq!(team.overrides(), &overrides);

    let report = |counts| TeamAction::ReportCounts {
        counts,
        by: "bot".into(),
    };
    run(
        &mut team,
        report(UsageCounts {
            sites: Some(2),
            industries: Some(1),
            author_profiles: None,
        }),
        at(4),
    )
    .await
    .unwrap();
    run(
        &mut team,
        report(UsageCounts {
            sites: Some(3),
            ..UsageCounts::default()
        }),
        at(5),
    )
    .await
    .unwrap();
    assert_eq!(
        team.counts(),
        &UsageCounts {
            sites: Some(3),
            industries: Some(1),
            author_profiles: None
        }
    );
}

trait WithByRole {
    fn with_by_role(self, role: Option<MemberRole>) -> Self;
}

impl WithByRole for TeamAction {
    fn with_by_role(mut self, role: Option<MemberRole>) -> Self {
        if let TeamAction::Invite { by_role, .. } = &mut self {
            *by_role = role;
        }
        self
    }
}
