//! Given/when/then tests of the catalog: seeding the defaults once, the
//! versioned cost table, and plan and package upserts with their history.

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::{AggregateResultValidator, TestFramework};
use cqrs_es::Aggregate;
use events::{
    BillingCycle, CatalogEvent, CatalogSeeded, CostEntry, CostUnit, CreditCostSet, CreditPackage,
    CreditPackageUpserted, Money, OperationKey, PaymentMethod, PaymentMethodConfig,
    PaymentMethodConfigured, Plan, PlanLimits, PlanUpserted,
};
use rust_decimal::Decimal;

use super::*;

fn at(day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, 9, 0, 0).unwrap()
}

fn op(key: &str) -> OperationKey {
    OperationKey::parse(key).unwrap()
}

fn usd(cents: i64) -> Money {
    Money::usd(Decimal::new(cents, 2))
}

async fn when(
    given: Vec<CatalogEvent>,
    command: CatalogCommand,
) -> AggregateResultValidator<Catalog> {
    TestFramework::<Catalog>::with(())
        .given(given)
        .when_async(command)
        .await
}

fn fold(events: &[CatalogEvent]) -> Catalog {
    let mut catalog = Catalog::default();
    for e in events {
        catalog.apply(e.clone());
    }
    catalog
}

fn seed(day: u32) -> CatalogCommand {
    CatalogCommand::SeedDefaults {
        actor: "system".into(),
        now: at(day),
    }
}

/// The events of a first seeding on March 1st.
async fn seeded() -> Vec<CatalogEvent> {
    when(vec![], seed(1)).await.inspect_result().unwrap()
}

fn set_cost(operation: &str, cost: i64, unit: CostUnit) -> CatalogCommand {
    CatalogCommand::SetCreditCost {
        operation: op(operation),
        cost,
        unit,
        actor: "admin@acme.test".into(),
        now: at(2),
    }
}

fn cost_set(entry: CostEntry, previous: Option<CostEntry>) -> CatalogEvent {
    CatalogEvent::CreditCostSet(CreditCostSet {
        entry,
        previous,
        actor: "admin@acme.test".into(),
        at: at(2),
    })
}

fn entry(operation: &str, cost: i64, unit: CostUnit, version: u64) -> CostEntry {
    CostEntry {
        operation: op(operation),
        cost,
        unit,
        version,
    }
}

fn custom_plan() -> Plan {
    Plan {
        slug: "agency".into(),
        name: "Agency".into(),
        price: usd(49_900),
        prices: Default::default(),
        billing_cycle: BillingCycle::Annual,
        included_credits: 50_000,
        extra_credit_price: Some(Money::usd(Decimal::new(15, 3))),
        allow_credit_topup: true,
        limits: PlanLimits {
            max_users: Some(50),
            max_sites: None,
            max_industries: None,
            max_author_profiles: Some(50),
        },
        features: vec!["site_builder".into()],
        active: true,
        stripe_product_id: Some("prod_1".into()),
        stripe_price_id: Some("price_1".into()),
    }
}

fn custom_package() -> CreditPackage {
    CreditPackage {
        slug: "mega".into(),
        name: "Mega".into(),
        credits: 100_000,
        price: usd(99_900),
        prices: Default::default(),
        discount_percent: Decimal::new(255, 1),
        active: true,
        featured: false,
        description: None,
        features: vec![],
    }
}

fn upsert_plan(plan: Plan) -> CatalogCommand {
    CatalogCommand::UpsertPlan {
        plan,
        actor: "admin@acme.test".into(),
        now: at(3),
    }
}

fn upsert_package(package: CreditPackage) -> CatalogCommand {
    CatalogCommand::UpsertPackage {
        package,
        actor: "admin@acme.test".into(),
        now: at(3),
    }
}

fn plan_upserted(plan: Plan, previous: Option<Plan>) -> CatalogEvent {
    CatalogEvent::PlanUpserted(PlanUpserted {
        plan,
        previous,
        actor: "admin@acme.test".into(),
        at: at(3),
    })
}

fn package_upserted(package: CreditPackage, previous: Option<CreditPackage>) -> CatalogEvent {
    CatalogEvent::CreditPackageUpserted(CreditPackageUpserted {
        package,
        previous,
        actor: "admin@acme.test".into(),
        at: at(3),
    })
}

// ---------------------------------------------------------------------------
// SeedDefaults
// ---------------------------------------------------------------------------

#[tokio::test]
async fn seeding_writes_four_plans_four_packages_nine_costs_four_payment_methods_and_catalog_seeded(
) {
    let mut expected = Vec::new();
    for plan in default_plans() {
        expected.push(CatalogEvent::PlanUpserted(PlanUpserted {
            plan,
            previous: None,
            actor: "system".into(),
            at: at(1),
        }));
    }
    for package in default_packages() {
        expected.push(CatalogEvent::CreditPackageUpserted(CreditPackageUpserted {
            package,
            previous: None,
            actor: "system".into(),
            at: at(1),
        }));
    }
    for (version, (operation, cost, unit)) in (1u64..).zip(default_costs()) {
        expected.push(CatalogEvent::CreditCostSet(CreditCostSet {
            entry: CostEntry {
                operation,
                cost,
                unit,
                version,
            },
            previous: None,
            actor: "system".into(),
            at: at(1),
        }));
    }
    for config in default_payment_methods() {
        expected.push(CatalogEvent::PaymentMethodConfigured(
            PaymentMethodConfigured {
                config,
                previous: None,
                actor: "system".into(),
                at: at(1),
            },
        ));
    }
    expected.push(CatalogEvent::CatalogSeeded(CatalogSeeded {
        seed_version: SEED_VERSION,
        at: at(1),
    }));
    assert_eq!(expected.len(), 4 + 4 + 9 + 4 + 1);
    when(vec![], seed(1)).await.then_expect_events(expected);
}

#[tokio::test]
async fn the_seeded_cost_table_has_versions_one_to_nine_in_spec_order() {
    let versions: Vec<(String, i64, CostUnit, u64)> = seeded()
        .await
        .into_iter()
        .filter_map(|e| match e {
            CatalogEvent::CreditCostSet(c) => Some((
                c.entry.operation.as_str().to_owned(),
                c.entry.cost,
                c.entry.unit,
                c.entry.version,
            )),
            _ => None,
        })
        .collect();
    let expected = [
        ("clustering", 10, CostUnit::PerRequest),
        ("idea_generation", 15, CostUnit::PerRequest),
        ("content_generation", 1, CostUnit::Per100Words),
        ("image_prompt_extraction", 2, CostUnit::PerRequest),
        ("image_generation", 5, CostUnit::PerImage),
        ("linking", 8, CostUnit::PerRequest),
        ("optimization", 1, CostUnit::Per200Words),
        ("site_structure", 50, CostUnit::PerRequest),
        ("site_page_generation", 20, CostUnit::PerItem),
    ];
    let expected: Vec<_> = (1u64..)
        .zip(expected)
        .map(|(v, (o, c, u))| (o.to_owned(), c, u, v))
        .collect();
    assert_eq!(versions, expected);
}

#[tokio::test]
async fn the_seeded_plans_and_packages_follow_the_spec() {
    let catalog = fold(&seeded().await);
    assert!(catalog.is_seeded());
    assert_eq!(catalog.cost_version(), 9);

    // (slug, price, included credits, max sites, max users)
    type PlanRow<'a> = (&'a str, Money, i64, Option<u32>, Option<u32>);
    let plans: Vec<PlanRow> = ["free", "starter", "professional", "enterprise"]
        .iter()
        .map(|slug| {
            let p = catalog.plan(slug).unwrap();
            (
                p.slug.as_str(),
                p.price.clone(),
                p.included_credits,
                p.limits.max_sites,
                p.limits.max_users,
            )
        })
        .collect();
    assert_eq!(
        plans,
        vec![
            ("free", usd(0), 100, Some(1), Some(1)),
            ("starter", usd(2_900), 1_000, Some(3), Some(2)),
            ("professional", usd(9_900), 5_000, Some(10), Some(5)),
            ("enterprise", usd(29_900), 20_000, None, Some(20)),
        ]
    );
    assert_eq!(catalog.plans().count(), 4);

    let packages: Vec<(&str, i64, Money, Decimal)> = ["starter", "pro", "business", "enterprise"]
        .iter()
        .map(|slug| {
            let p = catalog.package(slug).unwrap();
            (
                p.slug.as_str(),
                p.credits,
                p.price.clone(),
                p.discount_percent,
            )
        })
        .collect();
    assert_eq!(
        packages,
        vec![
            ("starter", 500, usd(900), Decimal::ZERO),
            ("pro", 2_000, usd(2_900), Decimal::from(10)),
            ("business", 5_000, usd(6_900), Decimal::from(15)),
            ("enterprise", 20_000, usd(24_900), Decimal::from(20)),
        ]
    );
    assert_eq!(catalog.packages().count(), 4);
    assert_eq!(
        catalog.cost(&op("site_structure")),
        Some(&entry("site_structure", 50, CostUnit::PerRequest, 8))
    );
}

#[tokio::test]
async fn seeding_again_writes_nothing() {
    when(seeded().await, seed(5))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn seeding_keeps_rows_an_admin_wrote_before_it() {
    let mut own_free = default_plans().remove(0);
    own_free.included_credits = 250;
    let given = vec![
        plan_upserted(own_free.clone(), None),
        cost_set(entry("clustering", 12, CostUnit::PerRequest, 1), None),
    ];
    let events = when(given.clone(), seed(4)).await.inspect_result().unwrap();
    let plans = events
        .iter()
        .filter(|e| matches!(e, CatalogEvent::PlanUpserted(_)))
        .count();
    let costs: Vec<u64> = events
        .iter()
        .filter_map(|e| match e {
            CatalogEvent::CreditCostSet(c) => Some(c.entry.version),
            _ => None,
        })
        .collect();
    assert_eq!(plans, 3);
    assert_eq!(costs, (2..=9).collect::<Vec<_>>());
    let mut all = given;
    all.extend(events);
    let catalog = fold(&all);
    assert_eq!(catalog.plan("free"), Some(&own_free));
    assert_eq!(
        catalog.cost(&op("clustering")),
        Some(&entry("clustering", 12, CostUnit::PerRequest, 1))
    );
    assert!(catalog.is_seeded());
}

// ---------------------------------------------------------------------------
// SetCreditCost
// ---------------------------------------------------------------------------

#[tokio::test]
async fn setting_a_cost_bumps_the_table_version_and_records_the_previous_row() {
    let given = seeded().await;
    let expected = cost_set(
        entry("clustering", 12, CostUnit::PerRequest, 10),
        Some(entry("clustering", 10, CostUnit::PerRequest, 1)),
    );
    when(
        given.clone(),
        set_cost("clustering", 12, CostUnit::PerRequest),
    )
    .await
    .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    let catalog = fold(&all);
    assert_eq!(catalog.cost_version(), 10);
    assert_eq!(
        catalog.cost(&op("clustering")),
        Some(&entry("clustering", 12, CostUnit::PerRequest, 10))
    );
    // The other rows keep the version they were set at.
    assert_eq!(
        catalog.cost(&op("linking")),
        Some(&entry("linking", 8, CostUnit::PerRequest, 6))
    );
}

#[tokio::test]
async fn changing_only_the_unit_of_a_cost_is_a_new_version() {
    when(
        seeded().await,
        set_cost("clustering", 10, CostUnit::PerItem),
    )
    .await
    .then_expect_events(vec![cost_set(
        entry("clustering", 10, CostUnit::PerItem, 10),
        Some(entry("clustering", 10, CostUnit::PerRequest, 1)),
    )]);
}

#[tokio::test]
async fn setting_a_cost_for_a_new_operation_has_no_previous_row() {
    when(
        seeded().await,
        set_cost("translation", 3, CostUnit::Per100Words),
    )
    .await
    .then_expect_events(vec![cost_set(
        entry("translation", 3, CostUnit::Per100Words, 10),
        None,
    )]);
}

#[tokio::test]
async fn setting_a_cost_on_an_empty_table_starts_at_version_one() {
    when(vec![], set_cost("clustering", 10, CostUnit::PerRequest))
        .await
        .then_expect_events(vec![cost_set(
            entry("clustering", 10, CostUnit::PerRequest, 1),
            None,
        )]);
}

#[tokio::test]
async fn setting_the_same_cost_again_writes_nothing() {
    when(
        seeded().await,
        set_cost("clustering", 10, CostUnit::PerRequest),
    )
    .await
    .then_expect_events(vec![]);
}

#[tokio::test]
async fn free_operations_may_cost_zero_and_the_maximum_is_allowed() {
    for cost in [0, COST_MAX] {
        when(
            seeded().await,
            set_cost("linking", cost, CostUnit::PerRequest),
        )
        .await
        .then_expect_events(vec![cost_set(
            entry("linking", cost, CostUnit::PerRequest, 10),
            Some(entry("linking", 8, CostUnit::PerRequest, 6)),
        )]);
    }
}

#[tokio::test]
async fn a_negative_or_too_large_cost_is_refused() {
    for cost in [-1, COST_MAX + 1] {
        when(
            seeded().await,
            set_cost("clustering", cost, CostUnit::PerRequest),
        )
        .await
        .then_expect_error(CatalogError::InvalidCost { cost });
    }
}

// ---------------------------------------------------------------------------
// UpsertPlan
// ---------------------------------------------------------------------------

#[tokio::test]
async fn upserting_a_new_plan_has_no_previous_value() {
    let expected = plan_upserted(custom_plan(), None);
    when(seeded().await, upsert_plan(custom_plan()))
        .await
        .then_expect_events(vec![expected.clone()]);
    assert_eq!(fold(&[expected]).plan("agency"), Some(&custom_plan()));
}

#[tokio::test]
async fn upserting_an_existing_plan_records_its_previous_value() {
    let given = seeded().await;
    let old = fold(&given).plan("starter").cloned().unwrap();
    let mut new = old.clone();
    new.price = usd(3_900);
    new.features.push("linking".into());
    let expected = plan_upserted(new.clone(), Some(old));
    when(given.clone(), upsert_plan(new.clone()))
        .await
        .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    assert_eq!(fold(&all).plan("starter"), Some(&new));
}

#[tokio::test]
async fn upserting_a_plan_unchanged_writes_nothing() {
    let starter = default_plans().remove(1);
    when(seeded().await, upsert_plan(starter))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_plan_with_an_invalid_slug_is_refused() {
    for slug in ["", "Agency", "agency plan", "agency/1", &"a".repeat(65)] {
        let plan = Plan {
            slug: slug.to_owned(),
            ..custom_plan()
        };
        when(vec![], upsert_plan(plan))
            .await
            .then_expect_error(CatalogError::InvalidSlug);
    }
}

#[tokio::test]
async fn a_plan_slug_of_sixty_four_characters_with_dashes_and_underscores_is_accepted() {
    let slug = format!("a-b_{}", "c".repeat(60));
    let plan = Plan {
        slug,
        ..custom_plan()
    };
    when(vec![], upsert_plan(plan.clone()))
        .await
        .then_expect_events(vec![plan_upserted(plan, None)]);
}

#[tokio::test]
async fn a_plan_with_a_negative_price_is_refused() {
    let plan = Plan {
        price: usd(-1),
        prices: Default::default(),
        ..custom_plan()
    };
    when(vec![], upsert_plan(plan))
        .await
        .then_expect_error(CatalogError::Negative { field: "price" });
}

fn eur() -> events::Currency {
    events::Currency::parse("EUR").unwrap()
}

#[tokio::test]
async fn a_plan_priced_in_other_currencies_answers_each_and_falls_back_to_its_own() {
    let plan = Plan {
        prices: [(eur(), Decimal::new(45_900, 2))].into_iter().collect(),
        ..custom_plan()
    };
    when(vec![], upsert_plan(plan.clone()))
        .await
        .then_expect_events(vec![plan_upserted(plan.clone(), None)]);
    assert_eq!(
        plan.price_for(&eur()),
        Money::new(Decimal::new(45_900, 2), eur())
    );
    assert_eq!(plan.price_for(&events::Currency::usd()), usd(49_900));
    let gbp = events::Currency::parse("GBP").unwrap();
    assert_eq!(plan.price_in(&gbp), None);
    assert_eq!(
        plan.price_for(&gbp),
        usd(49_900),
        "never converted: the base price"
    );
    assert_eq!(plan.all_prices().len(), 2);
}

#[tokio::test]
async fn other_currency_prices_that_are_negative_too_many_or_contradict_the_base_are_refused() {
    let negative = Plan {
        prices: [(eur(), Decimal::new(-1, 0))].into_iter().collect(),
        ..custom_plan()
    };
    when(vec![], upsert_plan(negative))
        .await
        .then_expect_error(CatalogError::Negative { field: "prices" });
    let contradicting = Plan {
        prices: [(events::Currency::usd(), Decimal::new(1, 0))]
            .into_iter()
            .collect(),
        ..custom_plan()
    };
    when(vec![], upsert_plan(contradicting))
        .await
        .then_expect_error(CatalogError::InvalidPrices);
    let many = CreditPackage {
        prices: (0..=super::aggregate::PRICES_MAX)
            .map(|i| {
                let code = format!(
                    "X{}{}",
                    (b'A' + (i / 26) as u8) as char,
                    (b'A' + (i % 26) as u8) as char
                );
                (events::Currency::parse(&code).unwrap(), Decimal::ONE)
            })
            .collect(),
        ..custom_package()
    };
    when(vec![], upsert_package(many))
        .await
        .then_expect_error(CatalogError::InvalidPrices);
}

#[tokio::test]
async fn a_plan_with_negative_included_credits_is_refused() {
    let plan = Plan {
        included_credits: -1,
        ..custom_plan()
    };
    when(vec![], upsert_plan(plan))
        .await
        .then_expect_error(CatalogError::Negative {
            field: "included_credits",
        });
}

#[tokio::test]
async fn a_plan_with_a_negative_extra_credit_price_is_refused() {
    let plan = Plan {
        extra_credit_price: Some(usd(-1)),
        ..custom_plan()
    };
    when(vec![], upsert_plan(plan))
        .await
        .then_expect_error(CatalogError::Negative {
            field: "extra_credit_price",
        });
}

// ---------------------------------------------------------------------------
// UpsertPackage
// ---------------------------------------------------------------------------

#[tokio::test]
async fn upserting_a_new_package_has_no_previous_value() {
    let expected = package_upserted(custom_package(), None);
    when(seeded().await, upsert_package(custom_package()))
        .await
        .then_expect_events(vec![expected.clone()]);
    assert_eq!(fold(&[expected]).package("mega"), Some(&custom_package()));
}

#[tokio::test]
async fn upserting_an_existing_package_records_its_previous_value() {
    let given = seeded().await;
    let old = fold(&given).package("pro").cloned().unwrap();
    let new = CreditPackage {
        discount_percent: Decimal::new(125, 1),
        featured: false,
        ..old.clone()
    };
    let expected = package_upserted(new.clone(), Some(old));
    when(given.clone(), upsert_package(new.clone()))
        .await
        .then_expect_events(vec![expected.clone()]);
    let mut all = given;
    all.push(expected);
    assert_eq!(fold(&all).package("pro"), Some(&new));
}

#[tokio::test]
async fn upserting_a_package_unchanged_writes_nothing() {
    let pro = default_packages().remove(1);
    when(seeded().await, upsert_package(pro))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_package_discount_outside_zero_to_one_hundred_is_refused() {
    for discount in [Decimal::new(-1, 2), Decimal::new(10_001, 2)] {
        let package = CreditPackage {
            discount_percent: discount,
            ..custom_package()
        };
        when(vec![], upsert_package(package))
            .await
            .then_expect_error(CatalogError::InvalidDiscount);
    }
}

#[tokio::test]
async fn a_package_discount_of_zero_or_one_hundred_is_accepted() {
    for discount in [Decimal::ZERO, Decimal::ONE_HUNDRED] {
        let package = CreditPackage {
            discount_percent: discount,
            ..custom_package()
        };
        when(vec![], upsert_package(package.clone()))
            .await
            .then_expect_events(vec![package_upserted(package, None)]);
    }
}

#[tokio::test]
async fn a_package_with_an_invalid_slug_is_refused() {
    let package = CreditPackage {
        slug: "Mega Pack".into(),
        ..custom_package()
    };
    when(vec![], upsert_package(package))
        .await
        .then_expect_error(CatalogError::InvalidSlug);
}

#[tokio::test]
async fn a_package_with_negative_credits_is_refused() {
    let package = CreditPackage {
        credits: -1,
        ..custom_package()
    };
    when(vec![], upsert_package(package))
        .await
        .then_expect_error(CatalogError::Negative { field: "credits" });
}

#[tokio::test]
async fn a_package_with_a_negative_price_is_refused() {
    let package = CreditPackage {
        price: usd(-100),
        prices: Default::default(),
        ..custom_package()
    };
    when(vec![], upsert_package(package))
        .await
        .then_expect_error(CatalogError::Negative { field: "price" });
}

#[tokio::test]
async fn replaying_the_catalog_twice_gives_the_same_state() {
    let mut events = seeded().await;
    events.push(cost_set(
        entry("clustering", 12, CostUnit::PerRequest, 10),
        Some(entry("clustering", 10, CostUnit::PerRequest, 1)),
    ));
    events.push(plan_upserted(custom_plan(), None));
    assert_eq!(fold(&events), fold(&events));
    assert_eq!(fold(&events).cost_version(), 10);
}

// ---------------------------------------------------------------------------
// Seed versions and payment methods
// ---------------------------------------------------------------------------

/// The events of a catalog seeded by version 1 (before payment methods).
async fn seeded_v1() -> Vec<CatalogEvent> {
    seeded()
        .await
        .into_iter()
        .filter(|e| !matches!(e, CatalogEvent::PaymentMethodConfigured(_)))
        .map(|e| match e {
            CatalogEvent::CatalogSeeded(s) => CatalogEvent::CatalogSeeded(CatalogSeeded {
                seed_version: 1,
                ..s
            }),
            e => e,
        })
        .collect()
}

fn bank(country: &str, enabled: bool, sort_order: i32) -> PaymentMethodConfig {
    PaymentMethodConfig {
        country: country.into(),
        method: PaymentMethod::BankTransfer,
        enabled,
        display_name: format!("Bank transfer ({country})"),
        instructions: Some("Pay {amount} {currency}, reference {reference}".into()),
        bank_name: Some("Acme Bank".into()),
        account_number: Some("DE89370400440532013000".into()),
        routing_number: Some("37040044".into()),
        swift: Some("COBADEFFXXX".into()),
        sort_order,
    }
}

fn configure(config: PaymentMethodConfig) -> CatalogCommand {
    CatalogCommand::ConfigurePaymentMethod {
        config,
        actor: "admin@acme.test".into(),
        now: at(6),
    }
}

fn configured(config: PaymentMethodConfig, previous: Option<PaymentMethodConfig>) -> CatalogEvent {
    CatalogEvent::PaymentMethodConfigured(PaymentMethodConfigured {
        config,
        previous,
        actor: "admin@acme.test".into(),
        at: at(6),
    })
}

#[tokio::test]
async fn a_catalog_seeded_at_version_one_gets_only_the_payment_methods_once() {
    let mut expected: Vec<CatalogEvent> = default_payment_methods()
        .into_iter()
        .map(|config| {
            CatalogEvent::PaymentMethodConfigured(PaymentMethodConfigured {
                config,
                previous: None,
                actor: "system".into(),
                at: at(7),
            })
        })
        .collect();
    expected.push(CatalogEvent::CatalogSeeded(CatalogSeeded {
        seed_version: 2,
        at: at(7),
    }));
    let given = seeded_v1().await;
    assert_eq!(fold(&given).seed_version(), 1);
    when(given.clone(), seed(7))
        .await
        .then_expect_events(expected.clone());
    let mut all = given;
    all.extend(expected);
    let catalog = fold(&all);
    assert_eq!(catalog.seed_version(), SEED_VERSION);
    assert_eq!(catalog.payment_methods().count(), 4);
    when(all, seed(8)).await.then_expect_events(vec![]);
}

#[tokio::test]
async fn the_payment_method_seed_keeps_a_row_an_operator_wrote_before_it() {
    let mut given = seeded_v1().await;
    let own = PaymentMethodConfig {
        country: "*".into(),
        ..bank("*", false, 5)
    };
    given.push(configured(own.clone(), None));
    let events = when(given.clone(), seed(7)).await.inspect_result().unwrap();
    let methods: Vec<PaymentMethod> = events
        .iter()
        .filter_map(|e| match e {
            CatalogEvent::PaymentMethodConfigured(c) => Some(c.config.method),
            _ => None,
        })
        .collect();
    assert_eq!(
        methods,
        vec![
            PaymentMethod::Stripe,
            PaymentMethod::LocalWallet,
            PaymentMethod::Paypal
        ]
    );
    given.extend(events);
    assert_eq!(
        fold(&given).payment_method("*", PaymentMethod::BankTransfer),
        Some(&own)
    );
}

#[tokio::test]
async fn the_seeded_methods_offer_stripe_bank_transfer_and_local_wallet_but_not_paypal() {
    let catalog = fold(&seeded().await);
    let rows: Vec<(PaymentMethod, bool)> = catalog
        .payment_methods_for("BR")
        .into_iter()
        .map(|c| (c.method, c.enabled))
        .collect();
    assert_eq!(
        rows,
        vec![
            (PaymentMethod::Stripe, true),
            (PaymentMethod::BankTransfer, true),
            (PaymentMethod::LocalWallet, true),
            (PaymentMethod::Paypal, false),
        ]
    );
    let bank = catalog
        .payment_method_for("BR", PaymentMethod::BankTransfer)
        .unwrap();
    assert!(bank
        .instructions
        .as_deref()
        .unwrap()
        .contains("{reference}"));
}

#[tokio::test]
async fn configuring_a_payment_method_records_the_previous_row() {
    let given = seeded().await;
    when(given.clone(), configure(bank("DE", true, 1)))
        .await
        .then_expect_events(vec![configured(bank("DE", true, 1), None)]);
    let mut all = given.clone();
    all.push(configured(bank("DE", true, 1), None));
    when(all, configure(bank("DE", false, 1)))
        .await
        .then_expect_events(vec![configured(
            bank("DE", false, 1),
            Some(bank("DE", true, 1)),
        )]);
    let previous = fold(&given)
        .payment_method("*", PaymentMethod::BankTransfer)
        .cloned();
    when(given, configure(bank("*", true, 20)))
        .await
        .then_expect_events(vec![configured(bank("*", true, 20), previous)]);
}

#[tokio::test]
async fn configuring_the_same_row_again_writes_nothing() {
    let mut given = seeded().await;
    given.push(configured(bank("DE", true, 1), None));
    when(given, configure(bank("DE", true, 1)))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn a_country_row_overrides_the_any_country_row_and_lists_sort_by_order() {
    let mut events = seeded().await;
    events.push(configured(bank("DE", false, 1), None));
    let catalog = fold(&events);
    let de: Vec<(PaymentMethod, &str, bool)> = catalog
        .payment_methods_for("DE")
        .into_iter()
        .map(|c| (c.method, c.country.as_str(), c.enabled))
        .collect();
    assert_eq!(
        de,
        vec![
            (PaymentMethod::BankTransfer, "DE", false),
            (PaymentMethod::Stripe, "*", true),
            (PaymentMethod::LocalWallet, "*", true),
            (PaymentMethod::Paypal, "*", false),
        ]
    );
    assert_eq!(
        catalog
            .payment_method_for("FR", PaymentMethod::BankTransfer)
            .map(|c| c.country.as_str()),
        Some("*")
    );
    assert_eq!(
        catalog.payment_method_for("FR", PaymentMethod::Manual),
        None
    );
}

#[tokio::test]
async fn a_payment_method_row_is_refused_for_each_bad_field() {
    let long = |n: usize| Some("x".repeat(n));
    let cases: Vec<(PaymentMethodConfig, CatalogError)> = vec![
        (
            PaymentMethodConfig {
                country: "de".into(),
                ..bank("DE", true, 1)
            },
            CatalogError::InvalidCountry,
        ),
        (bank("XX", true, 1), CatalogError::InvalidCountry),
        (bank("DEU", true, 1), CatalogError::InvalidCountry),
        (
            PaymentMethodConfig {
                display_name: " ".into(),
                ..bank("DE", true, 1)
            },
            CatalogError::FieldLength {
                field: "display_name",
                max_bytes: 64,
            },
        ),
        (
            PaymentMethodConfig {
                instructions: long(2_001),
                ..bank("DE", true, 1)
            },
            CatalogError::FieldLength {
                field: "instructions",
                max_bytes: 2_000,
            },
        ),
        (
            PaymentMethodConfig {
                bank_name: long(129),
                ..bank("DE", true, 1)
            },
            CatalogError::FieldLength {
                field: "bank_name",
                max_bytes: 128,
            },
        ),
        (
            PaymentMethodConfig {
                account_number: Some(String::new()),
                ..bank("DE", true, 1)
            },
            CatalogError::FieldLength {
                field: "account_number",
                max_bytes: 64,
            },
        ),
        (
            PaymentMethodConfig {
                routing_number: long(65),
                ..bank("DE", true, 1)
            },
            CatalogError::FieldLength {
                field: "routing_number",
                max_bytes: 64,
            },
        ),
        (
            PaymentMethodConfig {
                swift: Some("cobadeff".into()),
                ..bank("DE", true, 1)
            },
            CatalogError::InvalidSwift,
        ),
        (
            bank("DE", true, -1),
            CatalogError::InvalidSortOrder { sort_order: -1 },
        ),
        (
            bank("DE", true, 10_001),
            CatalogError::InvalidSortOrder { sort_order: 10_001 },
        ),
    ];
    for (config, error) in cases {
        when(seeded().await, configure(config))
            .await
            .then_expect_error(error);
    }
}

fn update_cost(
    operation: &str,
    cost: Option<i64>,
    unit: Option<CostUnit>,
    name: Option<&str>,
    is_active: Option<bool>,
) -> CatalogCommand {
    CatalogCommand::UpdateCreditCost {
        operation: op(operation),
        cost,
        unit,
        display_name: name.map(str::to_owned),
        description: None,
        is_active,
        actor: "admin@acme.test".into(),
        now: at(3),
    }
}

#[tokio::test]
async fn an_operation_is_named_and_turned_off_without_a_new_price_version() {
    let history = seeded().await;
    let before = fold(&history);
    let version = before.cost_version();
    assert!(before.cost_details(&op("clustering")).is_active);

    let events = when(
        history.clone(),
        update_cost(
            "clustering",
            None,
            None,
            Some("Keyword clustering"),
            Some(false),
        ),
    )
    .await
    .inspect_result()
    .unwrap();
    assert_eq!(events.len(), 1, "details only: {events:?}");
    let mut all = history.clone();
    all.extend(events);
    let after = fold(&all);
    assert_eq!(after.cost_version(), version, "the price did not change");
    let details = after.cost_details(&op("clustering"));
    assert_eq!(details.display_name.as_deref(), Some("Keyword clustering"));
    assert!(!details.is_active);
    assert_eq!(
        after.cost(&op("clustering")).map(|c| c.cost),
        before.cost(&op("clustering")).map(|c| c.cost)
    );

    // A price and a detail at once: two events, one new version.
    let events = when(
        all.clone(),
        update_cost("clustering", Some(12), None, None, Some(true)),
    )
    .await
    .inspect_result()
    .unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    all.extend(events);
    let after = fold(&all);
    assert_eq!(after.cost_version(), version + 1);
    assert_eq!(after.cost(&op("clustering")).unwrap().cost, 12);
    assert!(after.cost_details(&op("clustering")).is_active);
    assert_eq!(
        after
            .cost_details(&op("clustering"))
            .display_name
            .as_deref(),
        Some("Keyword clustering"),
        "an absent field keeps its value"
    );

    // The same again changes nothing.
    let events = when(
        all.clone(),
        update_cost("clustering", Some(12), None, None, Some(true)),
    )
    .await
    .inspect_result()
    .unwrap();
    assert!(events.is_empty());
}

#[tokio::test]
async fn a_new_operation_needs_its_price_and_bad_values_write_nothing() {
    let history = seeded().await;
    assert_eq!(
        when(
            history.clone(),
            update_cost("translation", Some(3), None, None, None)
        )
        .await
        .inspect_result(),
        Err(CatalogError::NewCostNeedsPrice)
    );
    assert_eq!(
        when(
            history.clone(),
            update_cost("clustering", Some(-1), None, Some("x"), Some(false))
        )
        .await
        .inspect_result(),
        Err(CatalogError::InvalidCost { cost: -1 })
    );
    let long = "x".repeat(COST_TEXT_BYTES_MAX + 1);
    assert!(matches!(
        when(
            history,
            update_cost("clustering", None, None, Some(&long), None)
        )
        .await
        .inspect_result(),
        Err(CatalogError::FieldLength { .. })
    ));
}
