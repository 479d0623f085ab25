//! The wire format of every stored event. Events are stored forever, so each
//! variant's v1 JSON shape is pinned by a fixture under `tests/fixtures/v1/`,
//! and its `event_type`/`event_version` strings are pinned literally.
//!
//! The fixtures are generated, never hand-written: run
//! `UPDATE_FIXTURES=1 cargo test -p events --test wire_format` once when a new
//! event type is added, and commit the files. A change that alters an
//! existing fixture is a change of the stored format: it needs a new event
//! version and an upcaster, not a regenerated fixture.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::DomainEvent;
use events::{
    AccountEvent, AccountId, AccountOpened, AccountReactivated, AccountStatus, AccountSuspended,
    AccountUpdated, BillingAddress, BillingCycle, CatalogEvent, CatalogSeeded, CostEntry, CostUnit,
    CountryCode, CreditCostSet, CreditPackage, CreditPackageUpserted, CreditPurchase,
    CreditsAdjusted, CreditsDeducted, CreditsExpired, CreditsGranted, CreditsHeld, CreditsRefunded,
    Currency, GrantSource, HoldCaptured, HoldReleased, IdempotencyKey, InvoiceEvent, InvoiceIssued,
    InvoiceLine, InvoiceMarkedUncollectible, InvoicePaid, InvoiceStatus, InvoiceVoided, LotDraw,
    Money, OperationKey, PaymentApproved, PaymentEvent, PaymentMethod, PaymentMethodConfig,
    PaymentMethodConfigured, PaymentRejected, PaymentSubmitted, Plan, PlanChanged, PlanLimits,
    PlanUpserted, ReleaseReason, Usage,
};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Value};
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Samples: one value of every variant, with optional fields filled in so that
// their shape is pinned too.
// ---------------------------------------------------------------------------

/// A fixed instant with microseconds, to pin the timestamp format.
fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, day, hour, 30, 15).unwrap()
        + chrono::Duration::microseconds(123_456)
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn key(s: &str) -> Option<IdempotencyKey> {
    Some(IdempotencyKey::parse(s).unwrap())
}

fn op(s: &str) -> OperationKey {
    OperationKey::parse(s).unwrap()
}

fn usd(cents: i64) -> Money {
    Money::usd(Decimal::new(cents, 2))
}

fn usage() -> Usage {
    Usage {
        operation: Some(op("content_generation")),
        units: 1_250,
        cost_version: Some(3),
        model: Some("gpt-4o".into()),
        tokens_input: Some(1_800),
        tokens_output: Some(2_400),
        cost_usd: Some(Decimal::new(1_234, 5)),
        related_object_type: Some("article".into()),
        related_object_id: Some("art-42".into()),
        metadata: Some(json!({"job_id": "j-7", "attempt": 2})),
    }
}

fn draws() -> Vec<LotDraw> {
    vec![
        LotDraw {
            lot_id: id(0x10),
            credits: 9,
        },
        LotDraw {
            lot_id: id(0x11),
            credits: 4,
        },
    ]
}

fn plan(slug: &str, cents: i64) -> Plan {
    Plan {
        slug: slug.into(),
        name: "Starter".into(),
        price: usd(cents),
        prices: Default::default(),
        billing_cycle: BillingCycle::Monthly,
        included_credits: 1_000,
        extra_credit_price: Some(Money::usd(Decimal::new(30, 3))),
        allow_credit_topup: true,
        limits: PlanLimits {
            max_users: Some(2),
            max_sites: Some(3),
            max_industries: None,
            max_author_profiles: Some(3),
        },
        features: vec!["basic_generation".into(), "image_generation".into()],
        active: true,
        stripe_product_id: Some("prod_123".into()),
        stripe_price_id: Some("price_456".into()),
    }
}

fn package(cents: i64) -> CreditPackage {
    CreditPackage {
        slug: "pro".into(),
        name: "Pro".into(),
        credits: 2_000,
        price: usd(cents),
        prices: Default::default(),
        discount_percent: Decimal::new(100, 1),
        active: true,
        featured: true,
        description: Some("2000 credits".into()),
        features: vec!["priority_queue".into()],
    }
}

fn cost(cost: i64, version: u64) -> CostEntry {
    CostEntry {
        operation: op("clustering"),
        cost,
        unit: CostUnit::PerRequest,
        version,
    }
}

fn account_samples() -> Vec<AccountEvent> {
    vec![
        AccountEvent::AccountOpened(AccountOpened {
            account_id: AccountId::from_uuid(id(0x0193_0000_0000_7000_8000_0000_0000_0001)),
            name: "Acme".into(),
            slug: "acme".into(),
            owner_user_id: "user-1".into(),
            plan: "starter".into(),
            status: AccountStatus::Trial,
            country: CountryCode::parse("DE").unwrap(),
            billing_email: "billing@acme.test".into(),
            credit_limit: 50,
            low_balance_threshold: 100,
            tax_rate: Decimal::new(1900, 2),
            currency: None,
            opened_at: at(1, 0),
        }),
        AccountEvent::AccountUpdated(AccountUpdated {
            name: Some("Acme GmbH".into()),
            billing_email: Some("ap@acme.test".into()),
            billing_address: Some(BillingAddress {
                line1: Some("Hauptstr. 1".into()),
                line2: None,
                city: Some("Berlin".into()),
                region: None,
                postal_code: Some("10115".into()),
                country: Some(CountryCode::parse("DE").unwrap()),
            }),
            tax_id: Some("DE123456789".into()),
            tax_rate: Some(Decimal::new(700, 2)),
            country: Some(CountryCode::parse("AT").unwrap()),
            credit_limit: Some(75),
            low_balance_threshold: None,
            currency: None,
            updated_at: at(1, 1),
        }),
        AccountEvent::PlanChanged(PlanChanged {
            from: "starter".into(),
            to: "professional".into(),
            changed_at: at(1, 2),
        }),
        AccountEvent::AccountSuspended(AccountSuspended {
            reason: "chargeback".into(),
            suspended_at: at(1, 3),
        }),
        AccountEvent::AccountReactivated(AccountReactivated {
            status: AccountStatus::PastDue,
            reactivated_at: at(1, 4),
        }),
        AccountEvent::CreditsGranted(CreditsGranted {
            grant_id: id(0x10),
            credits: 1_000,
            source: GrantSource::Subscription,
            expires_at: Some(at(31, 23)),
            description: Some("March".into()),
            debt_repaid: 20,
            balance_after: 980,
            idempotency_key: key("invoice-INV-2026-000001"),
            granted_at: at(1, 5),
        }),
        AccountEvent::CreditsDeducted(CreditsDeducted {
            deduction_id: id(0x20),
            credits: 13,
            usage: usage(),
            draws: draws(),
            overdraft: 0,
            balance_after: 967,
            available_after: 927,
            idempotency_key: key("job-7:deduct"),
            recorded_at: at(2, 0),
        }),
        AccountEvent::CreditsHeld(CreditsHeld {
            hold_id: id(0x30),
            credits: 40,
            operation: Some(op("clustering")),
            units: Some(4),
            cost_version: Some(1),
            expires_at: at(2, 2),
            available_after: 887,
            idempotency_key: key("job-8:hold"),
            held_at: at(2, 1),
        }),
        AccountEvent::HoldCaptured(HoldCaptured {
            hold_id: id(0x30),
            deduction_id: id(0x21),
            held: 40,
            captured: 13,
            released: 27,
            usage: usage(),
            draws: draws(),
            overdraft: 0,
            balance_after: 954,
            available_after: 954,
            idempotency_key: key("job-8:capture"),
            captured_at: at(2, 1),
        }),
        AccountEvent::HoldReleased(HoldReleased {
            hold_id: id(0x31),
            credits: 15,
            reason: ReleaseReason::Expired,
            available_after: 969,
            idempotency_key: None,
            released_at: at(2, 3),
        }),
        AccountEvent::CreditsRefunded(CreditsRefunded {
            refund_id: id(0x40),
            deduction_id: id(0x20),
            credits: 13,
            reason: "generation failed".into(),
            debt_repaid: 0,
            balance_after: 967,
            idempotency_key: key("job-7:refund"),
            refunded_at: at(2, 4),
            lots: Vec::new(),
        }),
        AccountEvent::CreditsAdjusted(CreditsAdjusted {
            adjustment_id: id(0x50),
            credits: -13,
            reason: "duplicate refund".into(),
            draws: draws(),
            overdraft: 0,
            debt_repaid: 0,
            balance_after: 954,
            idempotency_key: key("ticket-9"),
            adjusted_at: at(2, 5),
        }),
        AccountEvent::CreditsExpired(CreditsExpired {
            lot_id: id(0x10),
            credits: 954,
            balance_after: 0,
            expired_at: at(31, 23),
        }),
        AccountEvent::AccountStatusChanged(events::AccountStatusChanged {
            from: AccountStatus::Active,
            to: AccountStatus::PastDue,
            reason: "subscription past_due".into(),
            changed_at: at(31, 23),
        }),
        AccountEvent::BudgetSet(events::BudgetSet {
            budget: Some(events::Budget {
                monthly_credits: 5_000,
                thresholds_percent: vec![50, 80, 100],
                hard_cap: true,
            }),
            set_at: at(31, 23),
        }),
        AccountEvent::BudgetThresholdReached(events::BudgetThresholdReached {
            period: "2026-03".into(),
            percent: 80,
            monthly_credits: 5_000,
            used: 4_010,
            hard_cap: true,
            reached_at: at(31, 23),
        }),
        AccountEvent::AutoTopUpSet(events::AutoTopUpSet {
            config: Some(events::AutoTopUp {
                enabled: true,
                threshold: 500,
                package: "pro".into(),
                method: PaymentMethod::Stripe,
                daily_limit: 3,
            }),
            set_at: at(31, 23),
        }),
        AccountEvent::AutoTopUpTriggered(events::AutoTopUpTriggered {
            trigger_id: id(0x7001),
            package: "pro".into(),
            method: PaymentMethod::Stripe,
            threshold: 500,
            available_after: 490,
            triggered_at: at(31, 23),
        }),
        AccountEvent::AutoTopUpSucceeded(events::AutoTopUpSucceeded {
            trigger_id: id(0x7001),
            package: "pro".into(),
            invoice_id: id(0x7002),
            payment_id: id(0x7003),
            succeeded_at: at(31, 23),
        }),
        AccountEvent::AutoTopUpFailed(events::AutoTopUpFailed {
            trigger_id: id(0x7004),
            package: "pro".into(),
            reason: "card declined".into(),
            failures: 3,
            disabled: true,
            failed_at: at(31, 23),
        }),
    ]
}

fn catalog_samples() -> Vec<CatalogEvent> {
    vec![
        CatalogEvent::CatalogSeeded(CatalogSeeded {
            seed_version: 1,
            at: at(1, 0),
        }),
        CatalogEvent::PlanUpserted(PlanUpserted {
            plan: plan("starter", 3_900),
            previous: Some(plan("starter", 2_900)),
            actor: "admin@acme.test".into(),
            at: at(1, 1),
        }),
        CatalogEvent::CreditPackageUpserted(CreditPackageUpserted {
            package: package(2_500),
            previous: Some(package(2_900)),
            actor: "admin@acme.test".into(),
            at: at(1, 2),
        }),
        CatalogEvent::CreditCostSet(CreditCostSet {
            entry: cost(12, 10),
            previous: Some(cost(10, 1)),
            actor: "admin@acme.test".into(),
            at: at(1, 3),
        }),
        CatalogEvent::PaymentMethodConfigured(PaymentMethodConfigured {
            config: payment_method_config("DE", "SEPA-Überweisung"),
            previous: Some(payment_method_config("DE", "Überweisung")),
            actor: "admin@acme.test".into(),
            at: at(1, 4),
        }),
        CatalogEvent::CreditCostDetailsSet(events::CreditCostDetailsSet {
            operation: op("clustering"),
            details: events::CostDetails {
                display_name: Some("Keyword clustering".into()),
                description: Some("Groups keywords by search intent".into()),
                is_active: false,
            },
            previous: events::CostDetails::default(),
            actor: "admin@acme.test".into(),
            at: at(1, 5),
        }),
    ]
}

fn payment_method_config(country: &str, name: &str) -> PaymentMethodConfig {
    PaymentMethodConfig {
        country: country.into(),
        method: PaymentMethod::BankTransfer,
        enabled: true,
        display_name: name.into(),
        instructions: Some("Transfer {amount} {currency} with reference {reference}".into()),
        bank_name: Some("Acme Bank".into()),
        account_number: Some("DE89370400440532013000".into()),
        routing_number: Some("37040044".into()),
        swift: Some("COBADEFFXXX".into()),
        sort_order: 10,
    }
}

/// Every variant by name. The match has no wildcard, so a new variant does
/// not compile until it is listed here, and then the coverage test below
/// fails until it has a sample (and a fixture).
fn account_variant(e: &AccountEvent) -> &'static str {
    match e {
        AccountEvent::AccountOpened(_) => "AccountOpened",
        AccountEvent::AccountUpdated(_) => "AccountUpdated",
        AccountEvent::PlanChanged(_) => "PlanChanged",
        AccountEvent::AccountSuspended(_) => "AccountSuspended",
        AccountEvent::AccountReactivated(_) => "AccountReactivated",
        AccountEvent::CreditsGranted(_) => "CreditsGranted",
        AccountEvent::CreditsDeducted(_) => "CreditsDeducted",
        AccountEvent::CreditsHeld(_) => "CreditsHeld",
        AccountEvent::HoldCaptured(_) => "HoldCaptured",
        AccountEvent::HoldReleased(_) => "HoldReleased",
        AccountEvent::CreditsRefunded(_) => "CreditsRefunded",
        AccountEvent::CreditsAdjusted(_) => "CreditsAdjusted",
        AccountEvent::CreditsExpired(_) => "CreditsExpired",
        AccountEvent::AccountStatusChanged(_) => "AccountStatusChanged",
        AccountEvent::BudgetSet(_) => "BudgetSet",
        AccountEvent::BudgetThresholdReached(_) => "BudgetThresholdReached",
        AccountEvent::AutoTopUpSet(_) => "AutoTopUpSet",
        AccountEvent::AutoTopUpTriggered(_) => "AutoTopUpTriggered",
        AccountEvent::AutoTopUpSucceeded(_) => "AutoTopUpSucceeded",
        AccountEvent::AutoTopUpFailed(_) => "AutoTopUpFailed",
    }
}

const ACCOUNT_VARIANTS: usize = 20;

fn catalog_variant(e: &CatalogEvent) -> &'static str {
    match e {
        CatalogEvent::CatalogSeeded(_) => "CatalogSeeded",
        CatalogEvent::PlanUpserted(_) => "PlanUpserted",
        CatalogEvent::CreditPackageUpserted(_) => "CreditPackageUpserted",
        CatalogEvent::CreditCostSet(_) => "CreditCostSet",
        CatalogEvent::PaymentMethodConfigured(_) => "PaymentMethodConfigured",
        CatalogEvent::CreditCostDetailsSet(_) => "CreditCostDetailsSet",
    }
}

const CATALOG_VARIANTS: usize = 6;

fn invoice_samples() -> Vec<InvoiceEvent> {
    vec![
        InvoiceEvent::InvoiceIssued(Box::new(InvoiceIssued {
            invoice_id: id(0x40),
            number: "INV-2026-000123".into(),
            account_id: AccountId::from_uuid(id(1)),
            subscription_id: Some(id(0x41)),
            buyer_name: "Acme GmbH".into(),
            billing_email: Some("billing@acme.test".into()),
            billing_address: Some(BillingAddress {
                line1: Some("Hauptstr. 1".into()),
                line2: None,
                city: Some("Berlin".into()),
                region: None,
                postal_code: Some("10115".into()),
                country: Some(CountryCode::parse("DE").unwrap()),
            }),
            tax_id: Some("DE123456789".into()),
            lines: vec![InvoiceLine {
                description: "Pro credit package (2,000 credits)".into(),
                quantity: 1,
                unit_price: Decimal::new(2_900, 2),
                amount: Decimal::new(2_900, 2),
            }],
            subtotal: Decimal::new(2_900, 2),
            tax_rate: Decimal::new(1_900, 2),
            tax: Decimal::new(551, 2),
            total: Decimal::new(3_451, 2),
            currency: Currency::usd(),
            status: InvoiceStatus::Pending,
            purchase: Some(CreditPurchase {
                package_slug: "pro".into(),
                credits: 2_000,
            }),
            notes: Some("thank you".into()),
            issued_at: at(3, 9),
            due_at: at(17, 9),
        })),
        InvoiceEvent::InvoicePaid(InvoicePaid {
            payment_id: Some(id(0x50)),
            method: PaymentMethod::BankTransfer,
            paid_at: at(4, 10),
        }),
        InvoiceEvent::InvoiceVoided(InvoiceVoided {
            reason: Some("issued in error".into()),
            actor: "dev-1".into(),
            voided_at: at(4, 11),
        }),
        InvoiceEvent::InvoiceMarkedUncollectible(InvoiceMarkedUncollectible {
            reason: Some("customer vanished".into()),
            actor: "dev-1".into(),
            marked_at: at(4, 12),
        }),
        InvoiceEvent::InvoiceFinalized(events::InvoiceFinalized {
            actor: "dev-1".into(),
            finalized_at: at(4, 13),
            due_at: at(18, 13),
        }),
    ]
}

fn payment_samples() -> Vec<PaymentEvent> {
    vec![
        PaymentEvent::PaymentSubmitted(PaymentSubmitted {
            payment_id: id(0x50),
            invoice_id: id(0x40),
            account_id: AccountId::from_uuid(id(1)),
            amount: usd(3_451),
            method: PaymentMethod::LocalWallet,
            reference: Some("WIRE-778".into()),
            submitted_by: "owner-1".into(),
            instructions: Some("Pay to IBAN DE00 ...".into()),
            submitted_at: at(3, 10),
        }),
        PaymentEvent::PaymentApproved(PaymentApproved {
            notes: None,
            approved_by: "dev-2".into(),
            approved_at: at(4, 10),
        }),
        PaymentEvent::PaymentRejected(PaymentRejected {
            rejected_by: "dev-2".into(),
            reason: "no such transfer".into(),
            rejected_at: at(4, 10),
        }),
        PaymentEvent::PaymentInitiated(events::PaymentInitiated {
            payment_id: id(0x51),
            invoice_id: id(0x41),
            account_id: AccountId::from_uuid(id(1)),
            amount: usd(3_451),
            method: PaymentMethod::Stripe,
            gateway: "stripe".into(),
            gateway_ref: "pi_3Kx0000000000001".into(),
            submitted_by: "owner-1".into(),
            initiated_at: at(3, 10),
        }),
        PaymentEvent::PaymentSucceeded(events::PaymentSucceeded {
            gateway_ref: Some("ch_3Kx0000000000001".into()),
            succeeded_at: at(3, 11),
        }),
        PaymentEvent::PaymentFailed(events::PaymentFailed {
            reason: "card_declined: Your card was declined.".into(),
            failed_at: at(3, 11),
        }),
        PaymentEvent::PaymentRefunded(events::PaymentRefunded {
            refund_id: id(0x52),
            amount: Decimal::new(1_000, 2),
            refunded_total: Decimal::new(1_000, 2),
            fully_refunded: false,
            revoke_credits: true,
            revoked_credits: 579,
            reason: Some("customer asked".into()),
            by: "dev-2".into(),
            gateway_refund_ref: Some("re_3Kx0000000000001".into()),
            refunded_at: at(5, 10),
        }),
        PaymentEvent::RefundReserved(events::RefundReserved {
            refund_id: id(0x53),
            amount: Decimal::new(500, 2),
            by: "dev-2".into(),
            reserved_at: at(5, 11),
        }),
        PaymentEvent::RefundReleased(events::RefundReleased {
            refund_id: id(0x53),
            reason: "the gateway refused the refund".into(),
            credits_restored: 289,
            released_at: at(5, 12),
        }),
        PaymentEvent::PaymentCancelled(events::PaymentCancelled {
            cancelled_by: "owner-1".into(),
            reason: Some("paid by card instead".into()),
            cancelled_at: at(5, 9),
        }),
    ]
}

fn stripe_samples() -> Vec<events::StripeEvent> {
    vec![events::StripeEvent::StripeEventReceived(
        events::StripeEventReceived {
            id: "evt_1Kx0000000000001".into(),
            event_type: "invoice.paid".into(),
            created: 1_772_533_815,
            handled: true,
            received_at: at(3, 12),
        },
    )]
}

fn stripe_variant(e: &events::StripeEvent) -> &'static str {
    match e {
        events::StripeEvent::StripeEventReceived(_) => "StripeEventReceived",
    }
}

fn stripe_customer_samples() -> Vec<events::StripeCustomerEvent> {
    vec![events::StripeCustomerEvent::StripeCustomerLinked(
        events::StripeCustomerLinked {
            account_id: AccountId::from_uuid(id(0xA1)),
            customer_id: "cus_Nffrfeuf0CJNPb".into(),
            linked_at: at(3, 12),
        },
    )]
}

fn stripe_customer_variant(e: &events::StripeCustomerEvent) -> &'static str {
    match e {
        events::StripeCustomerEvent::StripeCustomerLinked(_) => "StripeCustomerLinked",
    }
}

fn paypal_samples() -> Vec<events::PaypalEvent> {
    vec![events::PaypalEvent::PaypalEventReceived(
        events::PaypalEventReceived {
            id: "WH-2WR32451HC0233532-67976317FL4543714".into(),
            event_type: "PAYMENT.CAPTURE.COMPLETED".into(),
            resource_id: Some("42311647XV020574X".into()),
            created_at: Some(at(3, 11)),
            handled: false,
            refused: Some("the capture is 30.00 USD; invoice INV-2026-000001 is 34.51 USD".into()),
            received_at: at(3, 12),
        },
    )]
}

fn paypal_variant(e: &events::PaypalEvent) -> &'static str {
    match e {
        events::PaypalEvent::PaypalEventReceived(_) => "PaypalEventReceived",
    }
}

fn invoice_variant(e: &InvoiceEvent) -> &'static str {
    match e {
        InvoiceEvent::InvoiceIssued(_) => "InvoiceIssued",
        InvoiceEvent::InvoicePaid(_) => "InvoicePaid",
        InvoiceEvent::InvoiceVoided(_) => "InvoiceVoided",
        InvoiceEvent::InvoiceMarkedUncollectible(_) => "InvoiceMarkedUncollectible",
        InvoiceEvent::InvoiceFinalized(_) => "InvoiceFinalized",
    }
}

fn payment_variant(e: &PaymentEvent) -> &'static str {
    match e {
        PaymentEvent::PaymentSubmitted(_) => "PaymentSubmitted",
        PaymentEvent::PaymentApproved(_) => "PaymentApproved",
        PaymentEvent::PaymentRejected(_) => "PaymentRejected",
        PaymentEvent::PaymentInitiated(_) => "PaymentInitiated",
        PaymentEvent::PaymentSucceeded(_) => "PaymentSucceeded",
        PaymentEvent::PaymentFailed(_) => "PaymentFailed",
        PaymentEvent::PaymentRefunded(_) => "PaymentRefunded",
        PaymentEvent::RefundReserved(_) => "RefundReserved",
        PaymentEvent::RefundReleased(_) => "RefundReleased",
        PaymentEvent::PaymentCancelled(_) => "PaymentCancelled",
    }
}

#[test]
fn every_billing_event_survives_a_serde_round_trip_with_its_literal_type() {
    let invoice = [
        "InvoiceIssued",
        "InvoicePaid",
        "InvoiceVoided",
        "InvoiceMarkedUncollectible",
        "InvoiceFinalized",
    ];
    assert_eq!(invoice_samples().len(), invoice.len());
    for (sample, name) in invoice_samples().iter().zip(invoice) {
        assert_round_trips(sample, name);
        assert_eq!(invoice_variant(sample), name);
        assert_eq!(sample.event_type(), name);
        assert_eq!(sample.event_version(), "1.0");
    }
    let payment = [
        "PaymentSubmitted",
        "PaymentApproved",
        "PaymentRejected",
        "PaymentInitiated",
        "PaymentSucceeded",
        "PaymentFailed",
        "PaymentRefunded",
        "RefundReserved",
        "RefundReleased",
        "PaymentCancelled",
    ];
    assert_eq!(payment_samples().len(), payment.len());
    for (sample, name) in payment_samples().iter().zip(payment) {
        assert_round_trips(sample, name);
        assert_eq!(payment_variant(sample), name);
        assert_eq!(sample.event_type(), name);
        assert_eq!(sample.event_version(), "1.0");
    }
    let issued = serde_json::to_value(&invoice_samples()[0]).unwrap();
    assert_eq!(issued["InvoiceIssued"]["total"], json!("34.51"));
    assert_eq!(issued["InvoiceIssued"]["status"], json!("pending"));
    for sample in stripe_samples() {
        let name = stripe_variant(&sample);
        assert_round_trips(&sample, name);
        assert_eq!(sample.event_type(), name);
        assert_eq!(sample.event_version(), "1.0");
    }
    for sample in stripe_customer_samples() {
        let name = stripe_customer_variant(&sample);
        assert_round_trips(&sample, name);
        assert_eq!(sample.event_type(), name);
        assert_eq!(sample.event_version(), "1.0");
    }
    for sample in paypal_samples() {
        let name = paypal_variant(&sample);
        assert_round_trips(&sample, name);
        assert_eq!(sample.event_type(), name);
        assert_eq!(sample.event_version(), "1.0");
    }
    let refunded = serde_json::to_value(&payment_samples()[6]).unwrap();
    assert_eq!(refunded["PaymentRefunded"]["amount"], json!("10.00"));
    let submitted = serde_json::to_value(&payment_samples()[0]).unwrap();
    assert_eq!(
        submitted["PaymentSubmitted"]["method"],
        json!("local_wallet")
    );
}

// ---------------------------------------------------------------------------
// Round trips and type strings
// ---------------------------------------------------------------------------

fn assert_round_trips<E>(sample: &E, name: &str)
where
    E: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let text = serde_json::to_string(sample).unwrap();
    let back: E = serde_json::from_str(&text).unwrap();
    assert_eq!(&back, sample, "{name} does not survive a JSON round trip");
    let value = serde_json::to_value(sample).unwrap();
    let back: E = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(&back, sample, "{name} does not survive a Value round trip");
    assert_eq!(serde_json::to_value(&back).unwrap(), value);
}

#[test]
fn there_is_one_sample_of_every_variant() {
    let account: BTreeSet<_> = account_samples().iter().map(account_variant).collect();
    assert_eq!(account.len(), ACCOUNT_VARIANTS);
    assert_eq!(account_samples().len(), ACCOUNT_VARIANTS);
    let catalog: BTreeSet<_> = catalog_samples().iter().map(catalog_variant).collect();
    assert_eq!(catalog.len(), CATALOG_VARIANTS);
    assert_eq!(catalog_samples().len(), CATALOG_VARIANTS);
}

#[test]
fn every_account_event_survives_a_serde_round_trip() {
    for sample in account_samples() {
        assert_round_trips(&sample, account_variant(&sample));
    }
}

#[test]
fn every_catalog_event_survives_a_serde_round_trip() {
    for sample in catalog_samples() {
        assert_round_trips(&sample, catalog_variant(&sample));
    }
}

#[test]
fn account_event_types_and_versions_are_the_literal_stored_strings() {
    let expected = [
        "AccountOpened",
        "AccountUpdated",
        "PlanChanged",
        "AccountSuspended",
        "AccountReactivated",
        "CreditsGranted",
        "CreditsDeducted",
        "CreditsHeld",
        "HoldCaptured",
        "HoldReleased",
        "CreditsRefunded",
        "CreditsAdjusted",
        "CreditsExpired",
        "AccountStatusChanged",
        "BudgetSet",
        "BudgetThresholdReached",
        "AutoTopUpSet",
        "AutoTopUpTriggered",
        "AutoTopUpSucceeded",
        "AutoTopUpFailed",
    ];
    let samples = account_samples();
    assert_eq!(samples.len(), expected.len());
    for (sample, name) in samples.iter().zip(expected) {
        assert_eq!(sample.event_type(), name);
        assert_eq!(sample.type_name(), name);
        assert_eq!(sample.event_version(), "1.0");
    }
}

#[test]
fn catalog_event_types_and_versions_are_the_literal_stored_strings() {
    let expected = [
        "CatalogSeeded",
        "PlanUpserted",
        "CreditPackageUpserted",
        "CreditCostSet",
        "PaymentMethodConfigured",
        "CreditCostDetailsSet",
    ];
    let samples = catalog_samples();
    assert_eq!(samples.len(), expected.len());
    for (sample, name) in samples.iter().zip(expected) {
        assert_eq!(sample.event_type(), name);
        assert_eq!(sample.type_name(), name);
        assert_eq!(sample.event_version(), "1.0");
    }
}

#[test]
fn money_and_decimals_are_strings_on_the_wire_never_numbers() {
    let deducted = serde_json::to_value(&account_samples()[6]).unwrap();
    assert_eq!(
        deducted["CreditsDeducted"]["usage"]["cost_usd"],
        json!("0.01234")
    );
    let opened = serde_json::to_value(&account_samples()[0]).unwrap();
    assert_eq!(opened["AccountOpened"]["tax_rate"], json!("19.00"));
    let plan = serde_json::to_value(&catalog_samples()[1]).unwrap();
    assert_eq!(
        plan["PlanUpserted"]["plan"]["price"],
        json!({"amount": "39.00", "currency": "USD"})
    );
}

#[test]
fn enums_and_timestamps_have_their_documented_spelling() {
    let granted = serde_json::to_value(&account_samples()[5]).unwrap();
    assert_eq!(granted["CreditsGranted"]["source"], json!("subscription"));
    assert_eq!(
        granted["CreditsGranted"]["granted_at"],
        json!("2026-03-01T05:30:15.123456Z")
    );
    let reactivated = serde_json::to_value(&account_samples()[4]).unwrap();
    assert_eq!(
        reactivated["AccountReactivated"]["status"],
        json!("past_due")
    );
    let released = serde_json::to_value(&account_samples()[9]).unwrap();
    assert_eq!(released["HoldReleased"]["reason"], json!("expired"));
}

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1")
}

fn updating() -> bool {
    std::env::var("UPDATE_FIXTURES").is_ok_and(|v| v == "1")
}

/// Writes the fixture when updating; then checks that the stored file
/// deserializes into `E` under its variant and re-serializes to the very same
/// JSON value.
fn check_fixture<E>(name: &str, sample: &E, variant_of: fn(&E) -> &'static str)
where
    E: Serialize + DeserializeOwned + std::fmt::Debug,
{
    let path = fixtures_dir().join(format!("{name}.json"));
    if updating() {
        fs::create_dir_all(fixtures_dir()).unwrap();
        let text = serde_json::to_string_pretty(sample).unwrap() + "\n";
        fs::write(&path, text).unwrap();
    }
    let text = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "fixture {} is missing ({e}); generate it with UPDATE_FIXTURES=1 and commit it",
            path.display()
        )
    });
    let stored: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("fixture {} is not JSON: {e}", path.display()));
    let event: E = serde_json::from_value(stored.clone()).unwrap_or_else(|e| {
        panic!(
            "fixture {} no longer deserializes: the v1 shape changed: {e}",
            path.display()
        )
    });
    assert_eq!(
        variant_of(&event),
        name,
        "fixture {} holds another variant",
        path.display()
    );
    assert_eq!(
        serde_json::to_value(&event).unwrap(),
        stored,
        "fixture {} does not re-serialize to the stored JSON: the v1 shape changed",
        path.display()
    );
}

/// One test for all fixtures, so that writing them (when updating) and
/// listing the directory never race with each other.
#[test]
fn every_stored_fixture_reads_and_writes_back_unchanged_and_none_is_missing() {
    for sample in account_samples() {
        check_fixture(account_variant(&sample), &sample, account_variant);
    }
    for sample in catalog_samples() {
        check_fixture(catalog_variant(&sample), &sample, catalog_variant);
    }
    for sample in invoice_samples() {
        check_fixture(invoice_variant(&sample), &sample, invoice_variant);
    }
    for sample in payment_samples() {
        check_fixture(payment_variant(&sample), &sample, payment_variant);
    }
    for sample in subscription_samples() {
        check_fixture(subscription_variant(&sample), &sample, subscription_variant);
    }
    for sample in stripe_samples() {
        check_fixture(stripe_variant(&sample), &sample, stripe_variant);
    }
    for sample in stripe_customer_samples() {
        check_fixture(
            stripe_customer_variant(&sample),
            &sample,
            stripe_customer_variant,
        );
    }
    for sample in paypal_samples() {
        check_fixture(paypal_variant(&sample), &sample, paypal_variant);
    }
    for sample in team_samples() {
        check_fixture(team_variant(&sample), &sample, team_variant);
    }
    let known: BTreeSet<String> = account_samples()
        .iter()
        .map(account_variant)
        .chain(catalog_samples().iter().map(catalog_variant))
        .chain(invoice_samples().iter().map(invoice_variant))
        .chain(payment_samples().iter().map(payment_variant))
        .chain(subscription_samples().iter().map(subscription_variant))
        .chain(stripe_samples().iter().map(stripe_variant))
        .chain(
            stripe_customer_samples()
                .iter()
                .map(stripe_customer_variant),
        )
        .chain(paypal_samples().iter().map(paypal_variant))
        .chain(team_samples().iter().map(team_variant))
        .map(|n| format!("{n}.json"))
        .collect();
    let stored: BTreeSet<String> = fs::read_dir(fixtures_dir())
        .expect("the fixtures directory exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(stored, known, "every fixture file is one known event type");
}

// ---------------------------------------------------------------------------
// Subscriptions
// ---------------------------------------------------------------------------

fn terms(slug: &str, cents: i64, credits: i64) -> events::PlanTerms {
    events::PlanTerms {
        slug: slug.into(),
        name: slug.into(),
        price: usd(cents),
        billing_cycle: BillingCycle::Monthly,
        included_credits: credits,
    }
}

fn sub_invoice(n: u128, purpose: events::InvoicePurpose) -> events::SubscriptionInvoice {
    events::SubscriptionInvoice {
        invoice_id: id(n),
        purpose,
        description: "Starter plan, 2026-03-01 – 2026-04-01".into(),
        amount: usd(2_900),
        due_at: at(15, 0),
        credits: 1_000,
        credits_expire_at: at(30, 0),
    }
}

fn subscription_samples() -> Vec<events::SubscriptionEvent> {
    use events::{InvoicePurpose, SubscriptionEvent as E};
    vec![
        E::SubscriptionCreated(Box::new(events::SubscriptionCreated {
            subscription_id: id(0x70),
            account_id: AccountId::from_uuid(id(1)),
            plan: terms("starter", 2_900, 1_000),
            method: PaymentMethod::BankTransfer,
            period_start: at(1, 0),
            period_end: at(30, 0),
            first_invoice: Some(sub_invoice(0x71, InvoicePurpose::Initial)),
            stripe_customer_id: Some("cus_123".into()),
            stripe_subscription_id: Some("sub_123".into()),
            created_at: at(1, 0),
        })),
        E::SubscriptionActivated(events::SubscriptionActivated {
            period_start: at(1, 0),
            period_end: at(30, 0),
            activated_at: at(2, 0),
        }),
        E::SubscriptionInvoicePaid(events::SubscriptionInvoicePaid {
            invoice_id: id(0x71),
            purpose: InvoicePurpose::Initial,
            credits: 1_000,
            credits_expire_at: at(30, 0),
            paid_at: at(2, 0),
        }),
        E::SubscriptionPlanChanged(Box::new(events::SubscriptionPlanChanged {
            from: terms("starter", 2_900, 1_000),
            to: terms("professional", 9_900, 5_000),
            prorated_amount: Decimal::new(3500, 2),
            prorated_credits: 2_000,
            proration_invoice: Some(sub_invoice(0x72, InvoicePurpose::Proration)),
            changed_at: at(15, 0),
        })),
        E::SubscriptionDowngradeScheduled(events::SubscriptionDowngradeScheduled {
            from: "professional".into(),
            to: terms("starter", 2_900, 1_000),
            effective_at: at(30, 0),
            scheduled_at: at(16, 0),
        }),
        E::SubscriptionCancelScheduled(events::SubscriptionCancelScheduled {
            cancel_at: at(30, 0),
            scheduled_at: at(17, 0),
        }),
        E::SubscriptionCanceled(events::SubscriptionCanceled {
            reason: events::CancelReason::Unpaid,
            open_invoices: vec![id(0x73)],
            canceled_at: at(30, 0),
        }),
        E::SubscriptionRenewed(Box::new(events::SubscriptionRenewed {
            plan: terms("starter", 2_900, 1_000),
            period_start: at(30, 0),
            period_end: at(31, 0),
            invoice: Some(sub_invoice(0x73, InvoicePurpose::Renewal)),
            renewed_at: at(30, 0),
        })),
        E::SubscriptionPastDue(events::SubscriptionPastDue {
            invoice_id: id(0x73),
            past_due_at: at(31, 0),
        }),
        E::SubscriptionRecovered(events::SubscriptionRecovered {
            invoice_id: id(0x73),
            recovered_at: at(31, 1),
        }),
        E::SubscriptionReactivated(events::SubscriptionReactivated {
            reactivated_at: at(31, 2),
        }),
    ]
}

fn subscription_variant(e: &events::SubscriptionEvent) -> &'static str {
    use events::SubscriptionEvent as E;
    match e {
        E::SubscriptionCreated(_) => "SubscriptionCreated",
        E::SubscriptionActivated(_) => "SubscriptionActivated",
        E::SubscriptionInvoicePaid(_) => "SubscriptionInvoicePaid",
        E::SubscriptionPlanChanged(_) => "SubscriptionPlanChanged",
        E::SubscriptionDowngradeScheduled(_) => "SubscriptionDowngradeScheduled",
        E::SubscriptionCancelScheduled(_) => "SubscriptionCancelScheduled",
        E::SubscriptionCanceled(_) => "SubscriptionCanceled",
        E::SubscriptionRenewed(_) => "SubscriptionRenewed",
        E::SubscriptionPastDue(_) => "SubscriptionPastDue",
        E::SubscriptionRecovered(_) => "SubscriptionRecovered",
        E::SubscriptionReactivated(_) => "SubscriptionReactivated",
    }
}

#[test]
fn every_subscription_event_survives_a_serde_round_trip_with_its_literal_type() {
    let samples = subscription_samples();
    let names: BTreeSet<_> = samples.iter().map(subscription_variant).collect();
    assert_eq!(names.len(), 11);
    assert_eq!(samples.len(), 11);
    for sample in &samples {
        let name = subscription_variant(sample);
        assert_round_trips(sample, name);
        assert_eq!(sample.event_type(), name);
        assert_eq!(sample.type_name(), name);
        assert_eq!(sample.event_version(), "1.0");
    }
    let changed = serde_json::to_value(&samples[3]).unwrap();
    assert_eq!(
        changed["SubscriptionPlanChanged"]["prorated_amount"],
        json!("35.00")
    );
    assert_eq!(
        changed["SubscriptionPlanChanged"]["proration_invoice"]["purpose"],
        json!("proration")
    );
}

// ---------------------------------------------------------------------------
// Teams
// ---------------------------------------------------------------------------

fn team_samples() -> Vec<events::TeamEvent> {
    use events::{JoinSource, LimitOverrides, MemberRole, TeamEvent as E, UsageCounts};
    vec![
        E::MemberAdded(events::MemberAdded {
            member_id: id(60),
            user_id: "user-1".into(),
            email: "owner@acme.example".into(),
            role: MemberRole::Owner,
            source: JoinSource::AccountOpened,
            added_by: None,
            added_at: at(1, 9),
        }),
        E::MemberInvited(events::MemberInvited {
            member_id: id(61),
            email: "bob@acme.example".into(),
            role: MemberRole::Editor,
            token_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            invited_by: "user-1".into(),
            invited_at: at(2, 9),
            expires_at: at(9, 9),
        }),
        E::InvitationAccepted(events::InvitationAccepted {
            member_id: id(61),
            user_id: "user-2".into(),
            accepted_at: at(2, 10),
        }),
        E::InvitationRevoked(events::InvitationRevoked {
            member_id: id(62),
            revoked_by: "user-1".into(),
            revoked_at: at(2, 11),
        }),
        E::MemberRoleChanged(events::MemberRoleChanged {
            member_id: id(61),
            user_id: "user-2".into(),
            from: MemberRole::Editor,
            to: MemberRole::Admin,
            changed_by: "user-1".into(),
            changed_at: at(3, 9),
        }),
        E::MemberRemoved(events::MemberRemoved {
            member_id: id(61),
            user_id: "user-2".into(),
            removed_by: "user-1".into(),
            removed_at: at(4, 9),
        }),
        E::MemberSeen(events::MemberSeen {
            member_id: id(60),
            seen_at: at(4, 10),
        }),
        E::LimitsOverridden(events::LimitsOverridden {
            overrides: LimitOverrides {
                max_users: Some(Some(3)),
                max_sites: Some(None),
                max_industries: None,
                max_author_profiles: None,
            },
            changed_by: "backend".into(),
            changed_at: at(5, 9),
        }),
        E::UsageCountsReported(events::UsageCountsReported {
            counts: UsageCounts {
                sites: Some(2),
                industries: Some(1),
                author_profiles: None,
            },
            reported_by: "bot".into(),
            reported_at: at(5, 10),
        }),
    ]
}

fn team_variant(e: &events::TeamEvent) -> &'static str {
    e.type_name()
}

#[test]
fn every_team_event_survives_a_serde_round_trip_with_its_literal_type() {
    let expected = [
        "MemberAdded",
        "MemberInvited",
        "InvitationAccepted",
        "InvitationRevoked",
        "MemberRoleChanged",
        "MemberRemoved",
        "MemberSeen",
        "LimitsOverridden",
        "UsageCountsReported",
    ];
    let samples = team_samples();
    assert_eq!(samples.len(), expected.len());
    for (sample, name) in samples.iter().zip(expected) {
        assert_round_trips(sample, name);
        assert_eq!(sample.event_type(), name);
        assert_eq!(sample.event_version(), "1.0");
    }
    let overridden = serde_json::to_value(&samples[7]).unwrap();
    assert_eq!(
        overridden["LimitsOverridden"]["overrides"],
        json!({"max_users": 3, "max_sites": null}),
        "null (unlimited) and absent (the plan's) stay apart"
    );
    let invited = serde_json::to_value(&samples[1]).unwrap();
    assert_eq!(invited["MemberInvited"]["role"], json!("editor"));
}
