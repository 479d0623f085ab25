//! Events of the catalog aggregate: plans, credit packages and the versioned
//! credit cost table, and the payment methods offered per country (one
//! stream, id [`CATALOG_ID`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::billing::PaymentMethod;
use crate::types::{CostUnit, Currency, Money, OperationKey};
use crate::EVENT_VERSION_1;

/// The aggregate type under which the catalog stream is stored.
pub const CATALOG_AGGREGATE_TYPE: &str = "catalog";
/// The one catalog stream's id.
pub const CATALOG_ID: &str = "catalog";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BillingCycle {
    Monthly,
    Annual,
}

/// Plan limits; `None` means unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PlanLimits {
    pub max_users: Option<u32>,
    pub max_sites: Option<u32>,
    pub max_industries: Option<u32>,
    pub max_author_profiles: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub slug: String,
    pub name: String,
    pub price: Money,
    /// The plan's price in other currencies than `price`'s: an account
    /// billed in one of them pays this price (never a conversion).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<Currency, Decimal>,
    pub billing_cycle: BillingCycle,
    pub included_credits: i64,
    /// Price of one credit beyond the included ones, if top-ups are sold.
    pub extra_credit_price: Option<Money>,
    pub allow_credit_topup: bool,
    pub limits: PlanLimits,
    pub features: Vec<String>,
    pub active: bool,
    pub stripe_product_id: Option<String>,
    pub stripe_price_id: Option<String>,
}

/// The price in `currency` out of a base price and its other currencies:
/// the base price if it is in `currency`, else the listed one, else none.
fn price_in(
    base: &Money,
    others: &BTreeMap<Currency, Decimal>,
    currency: &Currency,
) -> Option<Money> {
    if &base.currency == currency {
        return Some(base.clone());
    }
    others
        .get(currency)
        .map(|amount| Money::new(*amount, currency.clone()))
}

impl Plan {
    /// The plan's price in `currency`, if it is sold in it.
    pub fn price_in(&self, currency: &Currency) -> Option<Money> {
        price_in(&self.price, &self.prices, currency)
    }
    /// What an account billed in `currency` pays: the price in its
    /// currency, else the base price in the base currency.
    pub fn price_for(&self, currency: &Currency) -> Money {
        self.price_in(currency)
            .unwrap_or_else(|| self.price.clone())
    }
    /// Every currency the plan is sold in and its price there, the base
    /// currency included.
    pub fn all_prices(&self) -> BTreeMap<Currency, Decimal> {
        let mut all = self.prices.clone();
        all.insert(self.price.currency.clone(), self.price.amount);
        all
    }
}

impl CreditPackage {
    /// The package's price in `currency`, if it is sold in it.
    pub fn price_in(&self, currency: &Currency) -> Option<Money> {
        price_in(&self.price, &self.prices, currency)
    }
    /// What an account billed in `currency` pays (see [`Plan::price_for`]).
    pub fn price_for(&self, currency: &Currency) -> Money {
        self.price_in(currency)
            .unwrap_or_else(|| self.price.clone())
    }
    /// Every currency the package is sold in and its price there.
    pub fn all_prices(&self) -> BTreeMap<Currency, Decimal> {
        let mut all = self.prices.clone();
        all.insert(self.price.currency.clone(), self.price.amount);
        all
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditPackage {
    pub slug: String,
    pub name: String,
    pub credits: i64,
    pub price: Money,
    /// The package's price in other currencies than `price`'s.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub prices: BTreeMap<Currency, Decimal>,
    pub discount_percent: Decimal,
    pub active: bool,
    pub featured: bool,
    pub description: Option<String>,
    pub features: Vec<String>,
}

/// One row of the cost table: `cost` credits per `unit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostEntry {
    pub operation: OperationKey,
    pub cost: i64,
    pub unit: CostUnit,
    /// The cost-table version at which this row took this value.
    pub version: u64,
}

/// What a cost row says about its operation besides its price: the name
/// and text shown to people, and whether the operation may be used now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CostDetails {
    pub display_name: Option<String>,
    pub description: Option<String>,
    /// An inactive operation is refused (422 `operation_inactive`); its
    /// price stays, so a later reactivation needs no new version.
    pub is_active: bool,
}

impl Default for CostDetails {
    fn default() -> Self {
        Self {
            display_name: None,
            description: None,
            is_active: true,
        }
    }
}

/// An operation's details changed (not its price: the cost table's
/// version stays).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditCostDetailsSet {
    pub operation: OperationKey,
    pub details: CostDetails,
    pub previous: CostDetails,
    pub actor: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanUpserted {
    pub plan: Plan,
    pub previous: Option<Plan>,
    pub actor: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditPackageUpserted {
    pub package: CreditPackage,
    pub previous: Option<CreditPackage>,
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// A cost-table row was set; `entry.version` is the new table version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreditCostSet {
    pub entry: CostEntry,
    pub previous: Option<CostEntry>,
    pub actor: String,
    pub at: DateTime<Utc>,
}

/// The defaults were written once; later starts leave the catalog alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogSeeded {
    pub seed_version: u32,
    pub at: DateTime<Utc>,
}

/// The country of a payment method row that applies to every country
/// without a row of its own.
pub const ANY_COUNTRY: &str = "*";

/// How one payment method is offered in one country (SPEC §2): `country`
/// is an ISO 3166-1 alpha-2 code or [`ANY_COUNTRY`]. The bank fields are
/// shown with the instructions of manual methods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethodConfig {
    pub country: String,
    pub method: PaymentMethod,
    pub enabled: bool,
    pub display_name: String,
    /// May contain `{amount}`, `{currency}` and `{reference}`, filled in
    /// when a payment is submitted.
    pub instructions: Option<String>,
    pub bank_name: Option<String>,
    pub account_number: Option<String>,
    pub routing_number: Option<String>,
    pub swift: Option<String>,
    pub sort_order: i32,
}

/// A payment method row was created or replaced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentMethodConfigured {
    pub config: PaymentMethodConfig,
    pub previous: Option<PaymentMethodConfig>,
    pub actor: String,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogEvent {
    CatalogSeeded(CatalogSeeded),
    PlanUpserted(PlanUpserted),
    CreditPackageUpserted(CreditPackageUpserted),
    CreditCostSet(CreditCostSet),
    PaymentMethodConfigured(PaymentMethodConfigured),
    CreditCostDetailsSet(CreditCostDetailsSet),
}

impl CatalogEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::CatalogSeeded(_) => "CatalogSeeded",
            Self::PlanUpserted(_) => "PlanUpserted",
            Self::CreditPackageUpserted(_) => "CreditPackageUpserted",
            Self::CreditCostSet(_) => "CreditCostSet",
            Self::PaymentMethodConfigured(_) => "PaymentMethodConfigured",
            Self::CreditCostDetailsSet(_) => "CreditCostDetailsSet",
        }
    }
}

impl DomainEvent for CatalogEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}
