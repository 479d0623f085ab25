//! The catalog written on first start (SPEC §2 defaults).

use events::{BillingCycle, CostUnit, CreditPackage, Money, OperationKey, Plan, PlanLimits};
use rust_decimal::Decimal;

fn usd(cents: i64) -> Money {
    Money::usd(Decimal::new(cents, 2))
}

fn limits(
    users: u32,
    sites: Option<u32>,
    industries: Option<u32>,
    authors: Option<u32>,
) -> PlanLimits {
    PlanLimits {
        max_users: Some(users),
        max_sites: sites,
        max_industries: industries,
        max_author_profiles: authors,
    }
}

#[allow(clippy::too_many_arguments)]
fn plan(
    slug: &str,
    name: &str,
    cents: i64,
    credits: i64,
    extra_credit_cents_x1000: Option<i64>,
    limits: PlanLimits,
    features: &[&str],
) -> Plan {
    Plan {
        slug: slug.to_owned(),
        name: name.to_owned(),
        price: usd(cents),
        prices: Default::default(),
        billing_cycle: BillingCycle::Monthly,
        included_credits: credits,
        // Extra credits are priced in tenths of a cent, hence scale 3.
        extra_credit_price: extra_credit_cents_x1000.map(|m| Money::usd(Decimal::new(m, 3))),
        allow_credit_topup: extra_credit_cents_x1000.is_some(),
        limits,
        features: features.iter().map(|f| (*f).to_owned()).collect(),
        active: true,
        stripe_product_id: None,
        stripe_price_id: None,
    }
}

/// free $0/100 credits/1 site/1 user; starter $29/1,000/3/2;
/// professional $99/5,000/10/5; enterprise $299/20,000/unlimited/20.
pub fn default_plans() -> Vec<Plan> {
    vec![
        plan(
            "free",
            "Free",
            0,
            100,
            None,
            limits(1, Some(1), Some(1), Some(1)),
            &["basic_generation"],
        ),
        plan(
            "starter",
            "Starter",
            2_900,
            1_000,
            Some(30),
            limits(2, Some(3), Some(3), Some(3)),
            &["basic_generation", "image_generation"],
        ),
        plan(
            "professional",
            "Professional",
            9_900,
            5_000,
            Some(25),
            limits(5, Some(10), Some(10), Some(10)),
            &[
                "basic_generation",
                "image_generation",
                "linking",
                "optimization",
            ],
        ),
        plan(
            "enterprise",
            "Enterprise",
            29_900,
            20_000,
            Some(20),
            limits(20, None, None, None),
            &[
                "basic_generation",
                "image_generation",
                "linking",
                "optimization",
                "site_builder",
                "priority_support",
            ],
        ),
    ]
}

fn package(
    slug: &str,
    name: &str,
    credits: i64,
    cents: i64,
    discount: i64,
    featured: bool,
) -> CreditPackage {
    CreditPackage {
        slug: slug.to_owned(),
        name: name.to_owned(),
        credits,
        price: usd(cents),
        prices: Default::default(),
        discount_percent: Decimal::from(discount),
        active: true,
        featured,
        description: Some(format!("{credits} credits")),
        features: Vec::new(),
    }
}

/// starter 500/$9; pro 2,000/$29 (10%); business 5,000/$69 (15%);
/// enterprise 20,000/$249 (20%).
pub fn default_packages() -> Vec<CreditPackage> {
    vec![
        package("starter", "Starter", 500, 900, 0, false),
        package("pro", "Pro", 2_000, 2_900, 10, true),
        package("business", "Business", 5_000, 6_900, 15, false),
        package("enterprise", "Enterprise", 20_000, 24_900, 20, false),
    ]
}

/// The cost table's default rows (version filled in when they are set).
pub fn default_costs() -> Vec<(OperationKey, i64, CostUnit)> {
    [
        ("clustering", 10, CostUnit::PerRequest),
        ("idea_generation", 15, CostUnit::PerRequest),
        ("content_generation", 1, CostUnit::Per100Words),
        ("image_prompt_extraction", 2, CostUnit::PerRequest),
        ("image_generation", 5, CostUnit::PerImage),
        ("linking", 8, CostUnit::PerRequest),
        ("optimization", 1, CostUnit::Per200Words),
        ("site_structure", 50, CostUnit::PerRequest),
        ("site_page_generation", 20, CostUnit::PerItem),
    ]
    .into_iter()
    .map(|(op, cost, unit)| {
        (
            OperationKey::parse(op).unwrap_or_else(|e| unreachable!("default key {op}: {e}")),
            cost,
            unit,
        )
    })
    .collect()
}
