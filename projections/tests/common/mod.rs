//! Helpers shared by the projection tests: fresh stores, command builders
//! with fixed clocks, and a varied scripted history.
#![allow(dead_code)]

use chrono::{DateTime, Duration, Utc};
use events::{
    AccountEvent, AccountId, AccountStatus, CostEntry, CostUnit, CountryCode, GrantSource,
    OperationKey, Usage, CATALOG_ID,
};
use ledger::account::{
    AccountPatch, AdjustCredits, Amount, CaptureHold, DeductCredits, GrantCredits, HoldCredits,
    OpenAccount, RefundDeduction, ReleaseHold,
};
use ledger::{AccountCommand, Catalog, CatalogCommand, CreditAccount};
use projections::Projector;
use rust_decimal::Decimal;
use store::{CommandService, Executed, Store};
use uuid::Uuid;

pub use store::testing::context as ctx;

/// An RFC 3339 instant, e.g. `at("2026-03-05T10:00:00Z")`.
pub fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("an RFC 3339 instant")
}

pub fn op(s: &str) -> OperationKey {
    OperationKey::parse(s).expect("operation key")
}

pub fn cost(operation: &str, cost: i64, unit: CostUnit, version: u64) -> CostEntry {
    CostEntry {
        operation: op(operation),
        cost,
        unit,
        version,
    }
}

pub fn usd(s: &str) -> Decimal {
    s.parse().expect("decimal")
}

pub struct Opening<'a> {
    pub name: &'a str,
    pub slug: &'a str,
    pub email: &'a str,
    pub plan: &'a str,
    pub status: AccountStatus,
}

impl Default for Opening<'_> {
    fn default() -> Self {
        Self {
            name: "Acme",
            slug: "acme",
            email: "billing@acme.test",
            plan: "starter",
            status: AccountStatus::Active,
        }
    }
}

pub fn open_cmd(id: AccountId, o: &Opening<'_>, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::OpenAccount(OpenAccount {
        account_id: id,
        name: o.name.into(),
        slug: o.slug.into(),
        owner_user_id: "user-1".into(),
        plan: o.plan.into(),
        status: o.status,
        country: CountryCode::parse("US").unwrap(),
        billing_email: o.email.into(),
        credit_limit: 0,
        low_balance_threshold: 100,
        tax_rate: Decimal::ZERO,
        currency: None,
        now,
    })
}

pub fn grant_cmd(
    grant_id: Uuid,
    credits: i64,
    source: GrantSource,
    expires_at: Option<DateTime<Utc>>,
    description: Option<&str>,
    now: DateTime<Utc>,
) -> AccountCommand {
    AccountCommand::GrantCredits(GrantCredits {
        grant_id,
        credits,
        source,
        expires_at,
        description: description.map(str::to_owned),
        idempotency_key: None,
        now,
    })
}

pub fn deduct_cmd(
    deduction_id: Uuid,
    cost: CostEntry,
    usage: Usage,
    now: DateTime<Utc>,
) -> AccountCommand {
    AccountCommand::DeductCredits(DeductCredits {
        deduction_id,
        cost,
        usage,
        idempotency_key: None,
        now,
    })
}

pub fn hold_cmd(
    hold_id: Uuid,
    amount: Amount,
    ttl_seconds: u64,
    now: DateTime<Utc>,
) -> AccountCommand {
    AccountCommand::HoldCredits(HoldCredits {
        hold_id,
        amount,
        ttl_seconds,
        idempotency_key: None,
        now,
    })
}

pub fn capture_cmd(
    hold_id: Uuid,
    deduction_id: Uuid,
    amount: Amount,
    usage: Usage,
    now: DateTime<Utc>,
) -> AccountCommand {
    AccountCommand::CaptureHold(CaptureHold {
        hold_id,
        deduction_id,
        amount,
        usage,
        idempotency_key: None,
        now,
    })
}

pub fn release_cmd(hold_id: Uuid, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::ReleaseHold(ReleaseHold {
        hold_id,
        idempotency_key: None,
        now,
    })
}

/// A refund of `deduction_id`, which took `deducted` credits.
pub fn refund_cmd(
    refund_id: Uuid,
    deduction_id: Uuid,
    deducted: i64,
    credits: Option<i64>,
    reason: &str,
    now: DateTime<Utc>,
) -> AccountCommand {
    AccountCommand::RefundDeduction(RefundDeduction {
        refund_id,
        deduction_id,
        deducted: Some(deducted),
        draws: Vec::new(),
        credits,
        reason: reason.into(),
        idempotency_key: None,
        now,
    })
}

pub fn adjust_cmd(
    adjustment_id: Uuid,
    credits: i64,
    reason: &str,
    now: DateTime<Utc>,
) -> AccountCommand {
    AccountCommand::AdjustCredits(AdjustCredits {
        adjustment_id,
        credits,
        reason: reason.into(),
        idempotency_key: None,
        now,
    })
}

pub fn update_cmd(patch: AccountPatch, now: DateTime<Utc>) -> AccountCommand {
    AccountCommand::UpdateAccount { patch, now }
}

/// Runs an account command that must succeed.
pub async fn exec(
    service: &CommandService,
    id: AccountId,
    command: AccountCommand,
) -> Executed<CreditAccount> {
    let name = command.name();
    service
        .execute::<CreditAccount>(&id.to_string(), command, &ctx(), None)
        .await
        .unwrap_or_else(|e| panic!("{name} on {id}: {e}"))
}

/// Runs a catalog command that must succeed.
pub async fn exec_catalog(service: &CommandService, command: CatalogCommand) -> Executed<Catalog> {
    service
        .execute::<Catalog>(CATALOG_ID, command, &ctx(), None)
        .await
        .expect("catalog command")
}

pub async fn seed_catalog(service: &CommandService, now: DateTime<Utc>) -> Executed<Catalog> {
    exec_catalog(
        service,
        CatalogCommand::SeedDefaults {
            actor: "seed".into(),
            now,
        },
    )
    .await
}

pub async fn projector(store: &Store) -> (Projector, projections::ProjectorHandle) {
    Projector::new(store.clone()).await.expect("projector")
}

/// Projects everything written so far with a fresh projector.
pub async fn catch_up(store: &Store) -> usize {
    projector(store).await.0.catch_up().await.expect("catch up")
}

/// The live dump, then the dump after a rebuild: they must be equal.
pub async fn live_and_rebuilt(store: &Store) -> (Vec<String>, Vec<String>) {
    let models = projections::ReadModels::new(store.clone());
    let live = models.dump().await.expect("dump live");
    let (p, _) = projector(store).await;
    p.rebuild().await.expect("rebuild");
    let rebuilt = models.dump().await.expect("dump rebuilt");
    (live, rebuilt)
}

/// Runs commands, projecting one batch after each when a projector is
/// given (so the read models are built in many small increments).
pub struct Script<'a> {
    pub service: &'a CommandService,
    pub projector: Option<&'a Projector>,
}

impl Script<'_> {
    pub async fn run(&self, id: AccountId, command: AccountCommand) -> Executed<CreditAccount> {
        let done = exec(self.service, id, command).await;
        self.step().await;
        done
    }

    /// Runs a team action on the account's team stream (seeded with its
    /// owner on the first).
    pub async fn team(&self, id: AccountId, action: ledger::TeamAction, now: DateTime<Utc>) {
        let command = ledger::TeamCommand {
            seed: Some(ledger::team::Seed {
                member_id: Uuid::now_v7(),
                owner_user_id: format!("owner-{id}"),
                email: "owner@tenant.test".into(),
            }),
            action,
            now,
        };
        self.service
            .execute::<ledger::Team>(&id.to_string(), command, &ctx(), None)
            .await
            .unwrap_or_else(|e| panic!("team command on {id}: {e}"));
        self.step().await;
    }

    pub async fn catalog(&self, command: CatalogCommand) {
        exec_catalog(self.service, command).await;
        self.step().await;
    }

    async fn step(&self) {
        if let Some(p) = self.projector {
            p.run_once().await.expect("run once");
        }
    }
}

const OPERATIONS: [(&str, i64, CostUnit); 4] = [
    ("clustering", 10, CostUnit::PerRequest),
    ("content_generation", 1, CostUnit::Per100Words),
    ("image_generation", 5, CostUnit::PerImage),
    ("optimization", 1, CostUnit::Per200Words),
];
const MODELS: [&str; 3] = ["gpt-4o", "claude-3-5-sonnet", "dall-e-3"];

/// One account's varied history over `rounds` half-days from late March
/// into April 2026 (so period counters roll over): grants with and without
/// expiry, deductions of several operations and models with Decimal costs,
/// captured and released holds, refunds, adjustments both ways, profile,
/// plan and status changes, and a final expiry. `index` varies the mix;
/// account 0 also changes the cost table.
pub async fn varied_account(script: &Script<'_>, index: usize, rounds: u32) -> AccountId {
    let id = AccountId::new_v7();
    let base = at("2026-03-25T08:00:00Z") + Duration::minutes(index as i64);
    let t =
        |r: u32, minute: i64| base + Duration::hours(12 * i64::from(r)) + Duration::minutes(minute);
    let name = format!("Tenant {index}");
    let slug = format!("tenant-{index}");
    let email = format!("billing@tenant{index}.test");
    let plans = ["free", "starter", "professional", "enterprise"];
    let opening = Opening {
        name: &name,
        slug: &slug,
        email: &email,
        plan: plans[index % plans.len()],
        status: if index % 2 == 0 {
            AccountStatus::Active
        } else {
            AccountStatus::Trial
        },
    };
    script.run(id, open_cmd(id, &opening, base)).await;
    let expires = base + Duration::days(30);
    script
        .run(
            id,
            grant_cmd(
                Uuid::now_v7(),
                600,
                GrantSource::Subscription,
                Some(expires),
                None,
                t(0, 1),
            ),
        )
        .await;
    script
        .run(
            id,
            grant_cmd(
                Uuid::now_v7(),
                200,
                GrantSource::Purchase,
                None,
                Some("top-up"),
                t(0, 2),
            ),
        )
        .await;
    let mut last_deduction = None;
    for r in 0..rounds {
        let k = r as usize + index;
        let (operation, c, unit) = OPERATIONS[k % OPERATIONS.len()];
        let deduction_id = Uuid::now_v7();
        let usage = Usage {
            units: match unit {
                CostUnit::PerRequest => 1,
                CostUnit::PerImage | CostUnit::PerItem => 1 + k as u64 % 2,
                _ => 1 + (k as u64 * 37) % 300,
            },
            model: Some(MODELS[k % MODELS.len()].into()),
            tokens_input: Some(100 * k as u64),
            tokens_output: (k % 2 == 0).then_some(50 * k as u64),
            cost_usd: Some(Decimal::new(k as i64 * 7 + 1, 4)),
            related_object_type: (k % 3 == 0).then(|| "article".to_owned()),
            related_object_id: (k % 3 == 0).then(|| format!("art-{k}")),
            // A JSON text with backslashes, tabs and newlines escaped in
            // it: the COPY text of the rows must escape the backslashes.
            metadata: (k % 4 == 0).then(|| {
                serde_json::json!({ "round": r, "tags": ["a", "b"], "note": "tab\there\nline \\ end" })
            }),
            ..Usage::default()
        };
        let deducted = script
            .run(
                id,
                deduct_cmd(
                    deduction_id,
                    cost(operation, c, unit, 1 + k as u64 % 9),
                    usage,
                    t(r, 10),
                ),
            )
            .await
            .events
            .iter()
            .find_map(|e| match &e.event {
                AccountEvent::CreditsDeducted(d) => Some(d.credits),
                _ => None,
            })
            .expect("the deduction went through");
        if r % 3 == 0 {
            let hold = Uuid::now_v7();
            script
                .run(id, hold_cmd(hold, Amount::Credits(12), 3_600, t(r, 20)))
                .await;
            let usage = Usage {
                model: Some("dall-e-3".into()),
                cost_usd: Some(usd("0.04")),
                ..Usage::default()
            };
            let amount = Amount::Priced {
                cost: cost("image_generation", 5, CostUnit::PerImage, 5),
                units: 1 + u64::from(r % 2),
            };
            let captured = Uuid::now_v7();
            script
                .run(id, capture_cmd(hold, captured, amount, usage, t(r, 30)))
                .await;
        }
        if r % 4 == 1 {
            let hold = Uuid::now_v7();
            script
                .run(id, hold_cmd(hold, Amount::Credits(7), 600, t(r, 40)))
                .await;
            script.run(id, release_cmd(hold, t(r, 45))).await;
        }
        if r % 5 == 2 {
            if let Some((d, deducted)) = last_deduction {
                script
                    .run(
                        id,
                        refund_cmd(
                            Uuid::now_v7(),
                            d,
                            deducted,
                            Some(1),
                            "partial refund",
                            t(r, 50),
                        ),
                    )
                    .await;
            }
        }
        if r % 6 == 3 {
            let credits = if r % 12 == 3 { -4 } else { 9 };
            script
                .run(
                    id,
                    adjust_cmd(
                        Uuid::now_v7(),
                        credits,
                        // Raw tab, newline, carriage return and backslash.
                        "staff correction\tticket 7\r\nsee C:\\notes",
                        t(r, 55),
                    ),
                )
                .await;
        }
        if r == 2 {
            let patch = AccountPatch {
                name: Some(format!("{name} GmbH")),
                tax_id: Some(format!("DE{index:09}")),
                credit_limit: Some(50),
                // Every other account gets staff's currency, one of them
                // cleared again: the three forms of the field.
                currency: match index % 3 {
                    0 => Some(Some(events::Currency::parse("EUR").unwrap())),
                    1 => Some(None),
                    _ => None,
                },
                ..AccountPatch::default()
            };
            script.run(id, update_cmd(patch, t(r, 58))).await;
        }
        if r == 4 {
            script
                .run(
                    id,
                    AccountCommand::ChangePlan {
                        plan: "enterprise-plus".into(),
                        now: t(r, 58),
                    },
                )
                .await;
        }
        if r == 5 {
            script
                .run(
                    id,
                    AccountCommand::Suspend {
                        reason: "audit".into(),
                        now: t(r, 58),
                    },
                )
                .await;
            script
                .run(id, AccountCommand::Reactivate { now: t(r, 59) })
                .await;
        }
        if index == 0 && r % 7 == 6 {
            script
                .catalog(CatalogCommand::SetCreditCost {
                    operation: op("clustering"),
                    cost: 10 + i64::from(r),
                    unit: CostUnit::PerRequest,
                    actor: "admin@ledger.test".into(),
                    now: t(r, 59),
                })
                .await;
        }
        last_deduction = Some((deduction_id, deducted));
    }
    team_history(script, id, index, base + Duration::minutes(30)).await;
    // Past the first grant's expiry: its unused credits leave.
    script
        .run(
            id,
            AccountCommand::ExpireDue {
                now: expires + Duration::hours(1),
            },
        )
        .await;
    id
}

/// A catalog and `accounts` varied accounts, one after the other.
pub async fn varied_history(script: &Script<'_>, accounts: usize, rounds: u32) -> Vec<AccountId> {
    script
        .catalog(CatalogCommand::SeedDefaults {
            actor: "seed".into(),
            now: at("2026-03-01T00:00:00Z"),
        })
        .await;
    let mut ids = Vec::new();
    for i in 0..accounts {
        ids.push(varied_account(script, i, rounds).await);
    }
    ids
}

/// Empties the read models and projects the whole log again in batches of
/// random sizes (1…5,000; half of them under 50, so batches often end
/// mid-stream and rows are seeded from the previous batch's writes);
/// returns the random seed, for failure messages.
pub async fn reproject_in_random_batches(p: &Projector) -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut state = seed;
    let mut next = move || {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    p.reset().await.expect("reset the read models");
    loop {
        let size = if next() % 2 == 0 {
            1 + next() % 50
        } else {
            1 + next() % 5_000
        };
        let n = p
            .run_batch(size as u32)
            .await
            .unwrap_or_else(|e| panic!("batch of {size} (seed {seed}): {e}"));
        if n == 0 {
            return seed;
        }
    }
}

/// A team's history: invitations accepted, revoked and left to expire, a
/// member added directly, role changes, a removal, "seen" marks, limit
/// overrides and reported counts (every team event kind).
pub async fn team_history(script: &Script<'_>, id: AccountId, index: usize, t0: DateTime<Utc>) {
    use events::{LimitOverrides, MemberRole, UsageCounts};
    use ledger::TeamAction;
    let t = |m: i64| t0 + Duration::minutes(m);
    let invite = |n: u128, role| TeamAction::Invite {
        member_id: Uuid::from_u128((index as u128) << 8 | n),
        email: format!("member{n}@tenant{index}.test"),
        role,
        token_hash: format!("hash-{index}-{n}"),
        expires_at: t(60),
        by: format!("owner-{id}"),
        by_role: Some(MemberRole::Owner),
        seats: None,
    };
    script.team(id, TeamAction::Start, t(0)).await;
    script.team(id, invite(1, MemberRole::Editor), t(1)).await;
    script.team(id, invite(2, MemberRole::Viewer), t(2)).await;
    script.team(id, invite(3, MemberRole::Admin), t(3)).await;
    script
        .team(
            id,
            TeamAction::Accept {
                token_hash: format!("hash-{index}-1"),
                user_id: format!("user-{index}-1"),
            },
            t(4),
        )
        .await;
    script
        .team(
            id,
            TeamAction::Revoke {
                member_id: Uuid::from_u128((index as u128) << 8 | 2),
                by: format!("owner-{id}"),
            },
            t(5),
        )
        .await;
    script
        .team(
            id,
            TeamAction::Add {
                member_id: Uuid::from_u128((index as u128) << 8 | 9),
                user_id: format!("user-{index}-9"),
                email: format!("direct@tenant{index}.test"),
                role: MemberRole::Viewer,
                by: "platform".into(),
                seats: None,
            },
            t(6),
        )
        .await;
    script
        .team(
            id,
            TeamAction::ChangeRole {
                user_id: format!("user-{index}-1"),
                role: MemberRole::Admin,
                by: format!("owner-{id}"),
                by_role: Some(MemberRole::Owner),
            },
            t(7),
        )
        .await;
    script
        .team(
            id,
            TeamAction::Seen {
                user_id: format!("user-{index}-1"),
            },
            t(8),
        )
        .await;
    if index % 2 == 0 {
        script
            .team(
                id,
                TeamAction::Remove {
                    user_id: format!("user-{index}-9"),
                    by: format!("owner-{id}"),
                    by_role: Some(MemberRole::Owner),
                },
                t(9),
            )
            .await;
    } else {
        script
            .team(
                id,
                TeamAction::TransferOwnership {
                    to: format!("user-{index}-1"),
                    by: format!("owner-{id}"),
                    by_role: Some(MemberRole::Owner),
                },
                t(9),
            )
            .await;
    }
    script
        .team(
            id,
            TeamAction::OverrideLimits {
                overrides: LimitOverrides {
                    max_users: Some(Some(7)),
                    max_sites: Some(None),
                    ..LimitOverrides::default()
                },
                by: "platform".into(),
            },
            t(10),
        )
        .await;
    script
        .team(
            id,
            TeamAction::ReportCounts {
                counts: UsageCounts {
                    sites: Some(index as i64),
                    industries: Some(1),
                    author_profiles: None,
                },
                by: "bot".into(),
            },
            t(11),
        )
        .await;
}
