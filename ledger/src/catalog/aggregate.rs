use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{
    CatalogEvent, CatalogSeeded, CostDetails, CostEntry, CostUnit, CreditCostDetailsSet,
    CreditCostSet, CreditPackage, CreditPackageUpserted, OperationKey, PaymentMethod,
    PaymentMethodConfig, PaymentMethodConfigured, Plan, PlanUpserted, ANY_COUNTRY,
    CATALOG_AGGREGATE_TYPE,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::defaults::{default_costs, default_packages, default_plans};
use super::payment_methods::{check_config, config_key, default_payment_methods};

/// The version of the default catalog written by `SeedDefaults`. Version 1
/// is the plans, packages and cost table; version 2 adds the payment
/// methods of every country (`*`). A catalog seeded at an older version
/// gets only the steps it lacks, once.
pub const SEED_VERSION: u32 = 2;
/// Highest cost, in credits per unit, that a cost row may have.
pub const COST_MAX: i64 = 1_000_000;
/// Longest display name or description of an operation.
pub const COST_TEXT_BYTES_MAX: usize = 1_024;
const SLUG_BYTES_MAX: usize = 64;
/// Most currencies a plan or package may be priced in besides its own.
pub const PRICES_MAX: usize = 32;

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
    /// Changes any of an operation's price, unit, name, description and
    /// active flag (absent: unchanged); a new operation needs its cost
    /// and unit. The price change is a new version of the table; the
    /// details are not.
    UpdateCreditCost {
        operation: OperationKey,
        cost: Option<i64>,
        unit: Option<CostUnit>,
        display_name: Option<String>,
        description: Option<String>,
        is_active: Option<bool>,
        actor: String,
        now: DateTime<Utc>,
    },
    /// Create or replace the row of one (country, method).
    ConfigurePaymentMethod {
        config: PaymentMethodConfig,
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
    #[error("prices may name at most {PRICES_MAX} currencies, and not the base price's with another amount")]
    InvalidPrices,
    #[error("discount percent must be between 0 and 100")]
    InvalidDiscount,
    #[error("cost must be between 0 and {COST_MAX} credits per unit, got {cost}")]
    InvalidCost { cost: i64 },
    #[error("a new operation needs its cost and unit")]
    NewCostNeedsPrice,
    #[error("country must be an ISO 3166-1 alpha-2 code in upper case, or *")]
    InvalidCountry,
    #[error("{field} must be 1 to {max_bytes} bytes")]
    FieldLength {
        field: &'static str,
        max_bytes: usize,
    },
    #[error("swift must be a BIC of 8 or 11 upper-case letters and digits")]
    InvalidSwift,
    #[error("sort_order must be between 0 and {max}, got {sort_order}", max = super::payment_methods::SORT_ORDER_MAX)]
    InvalidSortOrder { sort_order: i32 },
}

/// Plans, packages and the cost table, folded from the catalog stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Catalog {
    seeded: bool,
    /// The highest `CatalogSeeded::seed_version` applied.
    #[serde(default)]
    seed_version: u32,
    plans: BTreeMap<String, Plan>,
    packages: BTreeMap<String, CreditPackage>,
    costs: BTreeMap<OperationKey, CostEntry>,
    /// Names, descriptions and active flags of operations, where set.
    #[serde(default)]
    cost_details: BTreeMap<OperationKey, CostDetails>,
    cost_version: u64,
    /// Payment method rows by `"{country}/{method}"`.
    #[serde(default)]
    payment_methods: BTreeMap<String, PaymentMethodConfig>,
}

impl Catalog {
    pub fn is_seeded(&self) -> bool {
        self.seeded
    }
    /// The version of the defaults written so far (0 before any seed).
    pub fn seed_version(&self) -> u32 {
        self.seed_version
    }
    /// Every payment method row, by country then method.
    pub fn payment_methods(&self) -> impl Iterator<Item = &PaymentMethodConfig> {
        self.payment_methods.values()
    }
    /// The row of exactly this (country, method), `*` not consulted.
    pub fn payment_method(
        &self,
        country: &str,
        method: PaymentMethod,
    ) -> Option<&PaymentMethodConfig> {
        self.payment_methods.get(&config_key(country, method))
    }
    /// The row that applies to `method` in `country`: the country's own,
    /// else the `*` row.
    pub fn payment_method_for(
        &self,
        country: &str,
        method: PaymentMethod,
    ) -> Option<&PaymentMethodConfig> {
        self.payment_method(country, method)
            .or_else(|| self.payment_method(ANY_COUNTRY, method))
    }
    /// The rows that apply in `country` (enabled or not), one per method,
    /// the country's own overriding `*`, by sort order then method name.
    pub fn payment_methods_for(&self, country: &str) -> Vec<&PaymentMethodConfig> {
        let mut by_method: BTreeMap<&'static str, &PaymentMethodConfig> = BTreeMap::new();
        for c in self.payment_methods.values() {
            if c.country == ANY_COUNTRY {
                by_method.entry(c.method.as_str()).or_insert(c);
            } else if c.country == country {
                by_method.insert(c.method.as_str(), c);
            }
        }
        let mut rows: Vec<&PaymentMethodConfig> = by_method.into_values().collect();
        rows.sort_by(|a, b| {
            (a.sort_order, a.method.as_str()).cmp(&(b.sort_order, b.method.as_str()))
        });
        rows
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
    /// An operation's details (the defaults when none were set: no name,
    /// no description, active).
    pub fn cost_details(&self, operation: &OperationKey) -> CostDetails {
        self.cost_details
            .get(operation)
            .cloned()
            .unwrap_or_default()
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

    /// Other-currency prices: none negative, at most [`PRICES_MAX`], and
    /// the base currency's (if listed) equal to the base price.
    fn check_prices(
        base: &events::Money,
        prices: &BTreeMap<events::Currency, Decimal>,
    ) -> Result<(), CatalogError> {
        if prices.values().any(|p| *p < Decimal::ZERO) {
            return Err(CatalogError::Negative { field: "prices" });
        }
        let conflict = prices
            .get(&base.currency)
            .is_some_and(|p| *p != base.amount);
        if prices.len() > PRICES_MAX || conflict {
            return Err(CatalogError::InvalidPrices);
        }
        Ok(())
    }

    fn check_plan(plan: &Plan) -> Result<(), CatalogError> {
        Self::check_slug(&plan.slug)?;
        if plan.price.amount < Decimal::ZERO {
            return Err(CatalogError::Negative { field: "price" });
        }
        Self::check_prices(&plan.price, &plan.prices)?;
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
        Self::check_prices(&package.price, &package.prices)?;
        if package.discount_percent < Decimal::ZERO
            || package.discount_percent > Decimal::ONE_HUNDRED
        {
            return Err(CatalogError::InvalidDiscount);
        }
        Ok(())
    }

    /// Seed version 1: the plans, packages and cost table, skipping any
    /// entry that already exists.
    async fn seed_v1(
        &mut self,
        actor: &str,
        now: DateTime<Utc>,
        sink: &EventSink<Self>,
    ) -> Result<(), CatalogError> {
        for plan in default_plans() {
            if self.plans.contains_key(&plan.slug) {
                continue;
            }
            sink.write(
                CatalogEvent::PlanUpserted(PlanUpserted {
                    plan,
                    previous: None,
                    actor: actor.to_owned(),
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
                    actor: actor.to_owned(),
                    at: now,
                }),
                self,
            )
            .await;
        }
        for (operation, cost, unit) in default_costs() {
            if !self.costs.contains_key(&operation) {
                self.set_cost(operation, cost, unit, actor, now, sink)
                    .await?;
            }
        }
        Ok(())
    }

    /// Seed version 2: the payment methods of every country (`*`), skipping
    /// any row an operator already wrote.
    async fn seed_v2(&mut self, actor: &str, now: DateTime<Utc>, sink: &EventSink<Self>) {
        for config in default_payment_methods() {
            if self
                .payment_methods
                .contains_key(&config_key(&config.country, config.method))
            {
                continue;
            }
            sink.write(
                CatalogEvent::PaymentMethodConfigured(PaymentMethodConfigured {
                    config,
                    previous: None,
                    actor: actor.to_owned(),
                    at: now,
                }),
                self,
            )
            .await;
        }
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
                // A catalog seeded before versions were counted is at 1.
                let from = if self.seeded {
                    self.seed_version.max(1)
                } else {
                    0
                };
                if from >= SEED_VERSION {
                    return Ok(());
                }
                if from < 1 {
                    self.seed_v1(&actor, now, sink).await?;
                }
                if from < 2 {
                    self.seed_v2(&actor, now, sink).await;
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
            CatalogCommand::ConfigurePaymentMethod { config, actor, now } => {
                check_config(&config)?;
                let previous = self
                    .payment_methods
                    .get(&config_key(&config.country, config.method))
                    .cloned();
                if previous.as_ref() != Some(&config) {
                    sink.write(
                        CatalogEvent::PaymentMethodConfigured(PaymentMethodConfigured {
                            config,
                            previous,
                            actor,
                            at: now,
                        }),
                        self,
                    )
                    .await;
                }
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
            CatalogCommand::UpdateCreditCost {
                operation,
                cost,
                unit,
                display_name,
                description,
                is_active,
                actor,
                now,
            } => {
                let current = self.costs.get(&operation).cloned();
                let (cost, unit) = match (cost, unit, &current) {
                    (Some(c), Some(u), _) => (c, u),
                    (c, u, Some(row)) => (c.unwrap_or(row.cost), u.unwrap_or(row.unit)),
                    (_, _, None) => return Err(CatalogError::NewCostNeedsPrice),
                };
                let previous = self.cost_details(&operation);
                let details = CostDetails {
                    display_name: display_name.or_else(|| previous.display_name.clone()),
                    description: description.or_else(|| previous.description.clone()),
                    is_active: is_active.unwrap_or(previous.is_active),
                };
                for (field, text) in [
                    ("display_name", &details.display_name),
                    ("description", &details.description),
                ] {
                    if text.as_ref().is_some_and(|t| t.len() > COST_TEXT_BYTES_MAX) {
                        return Err(CatalogError::FieldLength {
                            field,
                            max_bytes: COST_TEXT_BYTES_MAX,
                        });
                    }
                }
                // Checked before anything is written: both or neither.
                if !(0..=COST_MAX).contains(&cost) {
                    return Err(CatalogError::InvalidCost { cost });
                }
                self.set_cost(operation.clone(), cost, unit, &actor, now, sink)
                    .await?;
                if details != previous {
                    sink.write(
                        CatalogEvent::CreditCostDetailsSet(CreditCostDetailsSet {
                            operation,
                            details,
                            previous,
                            actor,
                            at: now,
                        }),
                        self,
                    )
                    .await;
                }
            }
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            CatalogEvent::CatalogSeeded(e) => {
                self.seeded = true;
                self.seed_version = self.seed_version.max(e.seed_version);
            }
            CatalogEvent::CreditCostDetailsSet(e) => {
                self.cost_details.insert(e.operation, e.details);
            }
            CatalogEvent::PaymentMethodConfigured(e) => {
                self.payment_methods
                    .insert(config_key(&e.config.country, e.config.method), e.config);
            }
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
