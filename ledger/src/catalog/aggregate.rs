use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{
    CatalogEvent, CatalogSeeded, CostEntry, CostUnit, CreditCostSet, CreditPackage,
    CreditPackageUpserted, OperationKey, Plan, PlanUpserted, CATALOG_AGGREGATE_TYPE,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::defaults::{default_costs, default_packages, default_plans};

/// The version of the default catalog written by `SeedDefaults`.
pub const SEED_VERSION: u32 = 1;
/// Highest cost, in credits per unit, that a cost row may have.
pub const COST_MAX: i64 = 1_000_000;
const SLUG_BYTES_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogCommand {
    /// Write the default plans, packages and costs, once.
    SeedDefaults { actor: String, now: DateTime<Utc> },
    UpsertPlan {
        plan: Plan,
        actor: String,
        now: DateTime<Utc>,
    },
    UpsertPackage {
        package: CreditPackage,
        actor: String,
        now: DateTime<Utc>,
    },
    SetCreditCost {
        operation: OperationKey,
        cost: i64,
        unit: CostUnit,
        actor: String,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("slug must be 1 to {SLUG_BYTES_MAX} characters of a-z, 0-9, - and _")]
    InvalidSlug,
    #[error("{field} must not be negative")]
    Negative { field: &'static str },
    #[error("discount percent must be between 0 and 100")]
    InvalidDiscount,
    #[error("cost must be between 0 and {COST_MAX} credits per unit, got {cost}")]
    InvalidCost { cost: i64 },
}

/// Plans, packages and the cost table, folded from the catalog stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Catalog {
    seeded: bool,
    plans: BTreeMap<String, Plan>,
    packages: BTreeMap<String, CreditPackage>,
    costs: BTreeMap<OperationKey, CostEntry>,
    cost_version: u64,
}

impl Catalog {
    pub fn is_seeded(&self) -> bool {
        self.seeded
    }
    pub fn plan(&self, slug: &str) -> Option<&Plan> {
        self.plans.get(slug)
    }
    pub fn plans(&self) -> impl Iterator<Item = &Plan> {
        self.plans.values()
    }
    pub fn package(&self, slug: &str) -> Option<&CreditPackage> {
        self.packages.get(slug)
    }
    pub fn packages(&self) -> impl Iterator<Item = &CreditPackage> {
        self.packages.values()
    }
    /// The cost row in force for an operation.
    pub fn cost(&self, operation: &OperationKey) -> Option<&CostEntry> {
        self.costs.get(operation)
    }
    pub fn costs(&self) -> impl Iterator<Item = &CostEntry> {
        self.costs.values()
    }
    /// The cost table's current version: bumped by every cost change.
    pub fn cost_version(&self) -> u64 {
        self.cost_version
    }

    fn check_slug(slug: &str) -> Result<(), CatalogError> {
        let ok = !slug.is_empty()
            && slug.len() <= SLUG_BYTES_MAX
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(CatalogError::InvalidSlug)
        }
    }

    fn check_plan(plan: &Plan) -> Result<(), CatalogError> {
        Self::check_slug(&plan.slug)?;
        if plan.price.amount < Decimal::ZERO {
            return Err(CatalogError::Negative { field: "price" });
        }
        if plan.included_credits < 0 {
            return Err(CatalogError::Negative {
                field: "included_credits",
            });
        }
        if plan
            .extra_credit_price
            .as_ref()
            .is_some_and(|p| p.amount < Decimal::ZERO)
        {
            return Err(CatalogError::Negative {
                field: "extra_credit_price",
            });
        }
        Ok(())
    }

    fn check_package(package: &CreditPackage) -> Result<(), CatalogError> {
        Self::check_slug(&package.slug)?;
        if package.credits < 0 {
            return Err(CatalogError::Negative { field: "credits" });
        }
        if package.price.amount < Decimal::ZERO {
            return Err(CatalogError::Negative { field: "price" });
        }
        if package.discount_percent < Decimal::ZERO
            || package.discount_percent > Decimal::ONE_HUNDRED
        {
            return Err(CatalogError::InvalidDiscount);
        }
        Ok(())
    }

    async fn set_cost(
        &mut self,
        operation: OperationKey,
        cost: i64,
        unit: CostUnit,
        actor: &str,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), CatalogError> {
        if !(0..=COST_MAX).contains(&cost) {
            return Err(CatalogError::InvalidCost { cost });
        }
        let previous = self.costs.get(&operation).cloned();
        if previous
            .as_ref()
            .is_some_and(|p| p.cost == cost && p.unit == unit)
        {
            return Ok(());
        }
        sink.write(
            CatalogEvent::CreditCostSet(CreditCostSet {
                entry: CostEntry {
                    operation,
                    cost,
                    unit,
                    version: self.cost_version + 1,
                },
                previous,
                actor: actor.to_owned(),
                at: now,
            }),
            self,
        )
        .await;
        Ok(())
    }
}

impl Aggregate for Catalog {
    const TYPE: &'static str = CATALOG_AGGREGATE_TYPE;
    type Command = CatalogCommand;
    type Event = CatalogEvent;
    type Error = CatalogError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            CatalogCommand::SeedDefaults { actor, now } => {
                if self.seeded {
                    return Ok(());
                }
                for plan in default_plans() {
                    if self.plans.contains_key(&plan.slug) {
                        continue;
                    }
                    sink.write(
                        CatalogEvent::PlanUpserted(PlanUpserted {
                            plan,
                            previous: None,
                            actor: actor.clone(),
                            at: now,
                        }),
                        self,
                    )
                    .await;
                }
                for package in default_packages() {
                    if self.packages.contains_key(&package.slug) {
                        continue;
                    }
                    sink.write(
                        CatalogEvent::CreditPackageUpserted(CreditPackageUpserted {
                            package,
                            previous: None,
                            actor: actor.clone(),
                            at: now,
                        }),
                        self,
                    )
                    .await;
                }
                for (operation, cost, unit) in default_costs() {
                    if !self.costs.contains_key(&operation) {
                        self.set_cost(operation, cost, unit, &actor, now, sink)
                            .await?;
                    }
                }
                sink.write(
                    CatalogEvent::CatalogSeeded(CatalogSeeded {
                        seed_version: SEED_VERSION,
                        at: now,
                    }),
                    self,
                )
                .await;
            }
            CatalogCommand::UpsertPlan { plan, actor, now } => {
                Self::check_plan(&plan)?;
                let previous = self.plans.get(&plan.slug).cloned();
                if previous.as_ref() != Some(&plan) {
                    sink.write(
                        CatalogEvent::PlanUpserted(PlanUpserted {
                            plan,
                            previous,
                            actor,
                            at: now,
                        }),
                        self,
                    )
                    .await;
                }
            }
            CatalogCommand::UpsertPackage {
                package,
                actor,
                now,
            } => {
                Self::check_package(&package)?;
                let previous = self.packages.get(&package.slug).cloned();
                if previous.as_ref() != Some(&package) {
                    sink.write(
                        CatalogEvent::CreditPackageUpserted(CreditPackageUpserted {
                            package,
                            previous,
                            actor,
                            at: now,
                        }),
                        self,
                    )
                    .await;
                }
            }
            CatalogCommand::SetCreditCost {
                operation,
                cost,
                unit,
                actor,
                now,
            } => {
                self.set_cost(operation, cost, unit, &actor, now, sink)
                    .await?;
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CatalogEvent::CatalogSeeded(_) => self.seeded = true,
            CatalogEvent::PlanUpserted(e) => {
                self.plans.insert(e.plan.slug.clone(), e.plan);
            }
            CatalogEvent::CreditPackageUpserted(e) => {
                self.packages.insert(e.package.slug.clone(), e.package);
            }
            CatalogEvent::CreditCostSet(e) => {
                self.cost_version = self.cost_version.max(e.entry.version);
                self.costs.insert(e.entry.operation.clone(), e.entry);
            }
        }
    }
}
