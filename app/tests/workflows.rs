//! Billing workflows run in-process against `app`, no transport: an `App`
//! on a fresh PostgreSQL database and on a SQLite file, with a stub
//! payment gateway that can be told to fail. Each workflow runs on both
//! stores; PostgreSQL at 127.0.0.1:5432 (or `LEDGER_TEST_POSTGRES_URL`)
//! must be running: without it the PostgreSQL half fails, it never skips.
//!
//! - a settle that stopped half way is finished by a retry, and the
//!   credits are granted exactly once;
//! - a refund the gateway refuses records nothing on the payment, and its
//!   retry with the same key refunds and takes the credits back once;
//! - a subscription renews across periods with explicit instants: each
//!   period's invoice issued once, its included credits granted once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use app::billing::{payments, purchases, refunds, settle};
use app::caller::{Claims, JwtKeys, Role};
use app::gateway::{
    CancelSubscriptionRequest, CustomerRequest, GatewayError, GatewaySubscription, Gateways,
    PaymentGateway, PaymentIntent, PaymentIntentRequest, Refund, RefundRequest,
    SubscriptionRequest,
};
use app::subscriptions::{lifecycle, periods};
use app::{App, AppError, Caller, CatalogCache, Input, Key, Settings};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use events::{AccountId, Actor, Currency, GrantSource, IdempotencyKey, PaymentMethod};
use ledger::account::GrantCredits;
use ledger::{AccountCommand, CreditAccount, Invoice, InvoiceCommand, Payment, Subscription};
use projections::{Projector, ReadModels};
use rust_decimal::Decimal;
use serde_json::{json, Value};
use store::testing::TestDb;
use store::{
    request_hash, AccountCommitter, CommandContext, CommandService, CommitterConfig,
    IdempotencyClaim,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

const SECRET: &[u8] = b"workflow-tests-secret-0123456789-abcdefghij";

/// Runs `async fn $body(h: &Harness)` on PostgreSQL and on SQLite.
macro_rules! on_both_stores {
    ($body:ident) => {
        mod $body {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_postgres() {
                let h = super::Harness::start(super::Backend::Postgres).await;
                super::$body(&h).await;
                h.stop().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn on_sqlite() {
                let h = super::Harness::start(super::Backend::Sqlite).await;
                super::$body(&h).await;
                h.stop().await;
            }
        }
    };
}

#[derive(Debug, Clone, Copy)]
enum Backend {
    Postgres,
    Sqlite,
}

/// A payment gateway in memory: PaymentIntents named after our payment
/// ids, refunds that fail while `fail_refunds` is set.
#[derive(Default)]
struct StubGateway {
    fail_refunds: AtomicBool,
    refund_calls: AtomicUsize,
}

#[async_trait]
impl PaymentGateway for StubGateway {
    fn name(&self) -> &'static str {
        "stripe"
    }

    async fn create_customer(&self, req: &CustomerRequest) -> Result<String, GatewayError> {
        Ok(format!("cus_{}", req.account_id.replace('-', "")))
    }

    async fn create_payment_intent(
        &self,
        req: &PaymentIntentRequest,
    ) -> Result<PaymentIntent, GatewayError> {
        Ok(PaymentIntent {
            id: format!("pi_{}", req.payment_id.replace('-', "")),
            client_secret: Some(format!("pi_{}_secret", req.payment_id.replace('-', ""))),
            approval_url: None,
            status: "requires_payment_method".into(),
        })
    }

    async fn create_subscription(
        &self,
        req: &SubscriptionRequest,
    ) -> Result<GatewaySubscription, GatewayError> {
        Ok(GatewaySubscription {
            id: format!("sub_{}", req.subscription_id.replace('-', "")),
            status: "incomplete".into(),
            client_secret: Some(format!(
                "pi_{}_secret",
                req.subscription_id.replace('-', "")
            )),
            ..GatewaySubscription::default()
        })
    }

    async fn refund(&self, req: &RefundRequest) -> Result<Refund, GatewayError> {
        let n = self.refund_calls.fetch_add(1, Ordering::SeqCst);
        if self.fail_refunds.load(Ordering::SeqCst) {
            return Err(GatewayError::Refused("charge_disputed".into()));
        }
        Ok(Refund {
            id: format!("re_{n}_{}", req.refund_id.replace('-', "")),
            status: "succeeded".into(),
        })
    }

    async fn cancel_subscription(
        &self,
        _req: &CancelSubscriptionRequest,
    ) -> Result<(), GatewayError> {
        Ok(())
    }
}

/// An `App` on a fresh database with its projector running.
struct Harness {
    app: App,
    gateway: Arc<StubGateway>,
    keys: JwtKeys,
    db: TestDb,
    stop: oneshot::Sender<()>,
    projector: JoinHandle<()>,
}

impl Harness {
    async fn start(backend: Backend) -> Self {
        let db = match backend {
            Backend::Postgres => TestDb::postgres()
                .await
                .expect("PostgreSQL must be running at 127.0.0.1:5432 for the workflow tests"),
            Backend::Sqlite => TestDb::sqlite().await.expect("a SQLite test database"),
        };
        let store = db.store.clone();
        let commands = CommandService::new(store.clone());
        let (projector, handle) = Projector::new(store.clone())
            .await
            .expect("the projector starts");
        let catalog = CatalogCache::load(store.clone())
            .await
            .expect("the catalog loads");
        let gateway = Arc::new(StubGateway::default());
        let app = App {
            committer: AccountCommitter::start(commands.clone(), CommitterConfig::default()),
            read_models: ReadModels::new(store.clone()),
            store,
            commands,
            projector: handle,
            catalog,
            gateways: Gateways::with_stripe(gateway.clone()),
            // The workflows move time forward with explicit `now`s.
            settings: Arc::new(Settings {
                allow_clock_override: true,
                ..Settings::default()
            }),
            revocations: Default::default(),
            written: Default::default(),
            rosters: Default::default(),
        };
        app::catalog::seed(&app).await.expect("the catalog seeds");
        let (stop, stopped) = oneshot::channel::<()>();
        let projector = tokio::spawn(projector.run(async {
            let _ = stopped.await;
        }));
        Self {
            app,
            gateway,
            keys: JwtKeys::from_secret(SECRET),
            db,
            stop,
            projector,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.projector.await.expect("the projector stops");
        self.db.cleanup().await.expect("drop the test database");
    }

    fn caller(&self, sub: &str, role: Role, account: Option<AccountId>) -> Caller {
        let claims = Claims::new(
            sub,
            role,
            account,
            Utc::now().timestamp(),
            Duration::from_secs(3600),
        )
        .expect("valid claims");
        Caller::from_token(&self.keys, &self.keys.mint(&claims)).expect("a valid token")
    }

    /// The developer who opens accounts and decides payments (not the
    /// submitter of any of them).
    fn finance(&self) -> Caller {
        self.caller("finance", Role::Developer, None)
    }

    fn owner(&self, account: AccountId) -> Caller {
        self.caller("owner", Role::Owner, Some(account))
    }

    /// A starter-plan account (it allows credit top-ups) in the US.
    async fn open_account(&self) -> AccountId {
        let slug = format!("acme-{}", Uuid::new_v4().simple());
        let opened = app::accounts::open(
            &self.app,
            &self.finance(),
            key(),
            Input::json(&json!({
                "name": "Acme",
                "slug": slug,
                "plan": "starter",
                "country": "US",
                "billing_email": "billing@acme.example",
                "owner_user_id": "owner",
            })),
        )
        .await
        .expect("the account opens");
        opened.value.account_id
    }

    async fn balance(&self, account: AccountId) -> i64 {
        self.app
            .store
            .load::<CreditAccount>(&account.to_string())
            .await
            .expect("the account loads")
            .aggregate
            .balance()
    }

    async fn invoice(&self, id: Uuid) -> Invoice {
        self.app
            .store
            .load::<Invoice>(&id.to_string())
            .await
            .expect("the invoice loads")
            .aggregate
    }

    async fn payment(&self, id: Uuid) -> Payment {
        self.app
            .store
            .load::<Payment>(&id.to_string())
            .await
            .expect("the payment loads")
            .aggregate
    }

    /// Buys the `pro` package (2,000 credits) by `method`; answers the
    /// invoice's and the payment's ids.
    async fn buy(&self, account: AccountId, method: &str) -> (Uuid, Uuid) {
        let bought = purchases::buy_package(
            &self.app,
            &self.owner(account),
            key(),
            Input::json(&json!({ "package": "pro", "method": method })),
        )
        .await
        .expect("the purchase is made");
        assert!(bought.created && !bought.replayed);
        (
            uuid(&bought.value["invoice"]["id"]),
            uuid(&bought.value["payment"]["id"]),
        )
    }

    /// Pays `invoice` by bank transfer as the owner; answers the payment.
    async fn pay_manually(&self, account: AccountId, invoice: Uuid) -> Uuid {
        let issued = self.invoice(invoice).await;
        let total = issued.issued().expect("an issued invoice").total;
        let paid = payments::pay_manually(
            &self.app,
            &self.owner(account),
            key(),
            Input::json(&json!({
                "invoice_id": invoice.to_string(),
                "method": "bank_transfer",
                "reference": "TRANSFER-1",
                "amount": total.to_string(),
            })),
        )
        .await
        .expect("the payment is recorded");
        uuid(&paid.value["id"])
    }

    async fn approve(&self, payment: Uuid) -> Result<payments::Approval, AppError> {
        payments::approve(
            &self.app,
            &self.finance(),
            &payment.to_string(),
            Input::json(&json!({})),
        )
        .await
    }
}

fn key() -> Key {
    Key::from(IdempotencyKey::parse(&Uuid::new_v4().to_string()).expect("a key"))
}

fn uuid(v: &Value) -> Uuid {
    Uuid::parse_str(v.as_str().unwrap_or_else(|| panic!("{v} is not a string")))
        .unwrap_or_else(|_| panic!("{v} is not a UUID"))
}

const PRO_CREDITS: i64 = 2_000;
const STARTER_INCLUDED_CREDITS: i64 = 1_000;

// ---------------------------------------------------------------------------
// 1. Settle half done, then retried.

async fn a_settle_stopped_half_way_is_finished_by_a_retry_and_grants_once(h: &Harness) {
    let account = h.open_account().await;
    let finance = Actor::system("finance");

    // Half done one way: the credits were granted (under the purchase's
    // key), the invoice was never marked paid.
    let (invoice, payment) = h.buy(account, "bank_transfer").await;
    let key = settle::purchase_grant_key(Some(payment), invoice);
    let claim = IdempotencyClaim {
        request_hash: request_hash(format!("purchase-grant\n{}", key.as_str()).as_bytes()),
        key: key.clone(),
    };
    h.app
        .run_account(
            &account.to_string(),
            AccountCommand::GrantCredits(GrantCredits {
                grant_id: Uuid::now_v7(),
                credits: PRO_CREDITS,
                source: GrantSource::Purchase,
                expires_at: None,
                description: Some("granted before the crash".into()),
                idempotency_key: Some(key),
                now: app::now(),
            }),
            &CommandContext::new(finance.clone()),
            Some(&claim),
            &[],
        )
        .await
        .expect("the grant runs");
    assert_eq!(h.balance(account).await, PRO_CREDITS);
    assert_eq!(
        h.invoice(invoice).await.status(),
        Some(events::InvoiceStatus::Pending)
    );
    let approved = h.approve(payment).await.expect("the approval finishes it");
    assert_eq!(approved.credits_granted, Some(PRO_CREDITS));
    assert_eq!(
        h.invoice(invoice).await.status(),
        Some(events::InvoiceStatus::Paid)
    );
    assert_eq!(h.balance(account).await, PRO_CREDITS, "granted once");

    // Half done the other way: the invoice was marked paid by this
    // payment, the credits never granted.
    let (invoice2, payment2) = h.buy(account, "bank_transfer").await;
    h.app
        .execute::<Invoice>(
            &invoice2.to_string(),
            InvoiceCommand::MarkPaid {
                payment_id: Some(payment2),
                method: PaymentMethod::BankTransfer,
                now: app::now(),
            },
            &CommandContext::new(finance.clone()),
            None,
            &[],
        )
        .await
        .expect("the invoice is marked paid");
    assert_eq!(h.balance(account).await, PRO_CREDITS);
    let approved = h.approve(payment2).await.expect("the approval finishes it");
    assert_eq!(approved.credits_granted, Some(PRO_CREDITS));
    assert_eq!(h.balance(account).await, 2 * PRO_CREDITS);

    // Every retry after that changes nothing: a second approval finishes
    // nothing more and says so; settling again grants nothing more.
    for (invoice, payment) in [(invoice, payment), (invoice2, payment2)] {
        let again = h.approve(payment).await;
        assert!(matches!(again, Err(AppError::Conflict(_))), "{again:?}");
        let settled = settle::invoice_paid(
            &h.app,
            &finance,
            invoice,
            Some(payment),
            PaymentMethod::BankTransfer,
        )
        .await
        .expect("settling again is harmless");
        assert_eq!(settled.credits_granted, Some(PRO_CREDITS));
    }
    assert_eq!(
        h.balance(account).await,
        2 * PRO_CREDITS,
        "granted once each"
    );
}
on_both_stores!(a_settle_stopped_half_way_is_finished_by_a_retry_and_grants_once);

// ---------------------------------------------------------------------------
// 2. A refund the gateway refuses.

async fn a_refund_the_gateway_refuses_records_nothing_and_its_retry_takes_the_credits_once(
    h: &Harness,
) {
    let account = h.open_account().await;
    let (invoice, payment) = h.buy(account, "stripe").await;
    let paid = h.payment(payment).await;
    let intent = paid.gateway_ref().expect("a PaymentIntent").to_owned();
    let total = paid.amount().expect("an amount").clone();
    let minor = app::gateway::minor_units(total.amount, &Currency::usd()).expect("cents");
    let handled = app::stripe_events::handle(
        &h.app,
        &Actor::system("stripe-webhook"),
        "payment_intent.succeeded",
        &json!({
            "id": intent,
            "amount_received": minor,
            "currency": "usd",
            "latest_charge": "ch_1",
            "metadata": { "payment_id": payment.to_string() },
        }),
        app::now(),
    )
    .await
    .expect("the succeeded PaymentIntent applies");
    assert!(handled);
    assert_eq!(
        h.invoice(invoice).await.status(),
        Some(events::InvoiceStatus::Paid)
    );
    assert_eq!(h.balance(account).await, PRO_CREDITS);

    let finance = h.finance();
    let payment_path = payment.to_string();
    let refund = |key: &str, revoke: bool| {
        refunds::refund_payment(
            &h.app,
            &finance,
            &payment_path,
            Key::from(IdempotencyKey::parse(key).expect("a key")),
            Input::json(&json!({ "reason": "the customer asked", "revoke_credits": revoke })),
        )
    };
    h.gateway.fail_refunds.store(true, Ordering::SeqCst);

    // Without credits to take back, a refused refund changes nothing.
    let refused = refund("refund-money-only", false).await;
    assert!(
        matches!(refused, Err(AppError::BadGateway(_))),
        "{refused:?}"
    );
    assert_eq!(h.payment(payment).await.refunded(), Decimal::ZERO);
    assert_eq!(h.balance(account).await, PRO_CREDITS);

    // With credits to take back: refused by the gateway, nothing is
    // recorded on the payment, and the credits taken before the gateway
    // answered are given back.
    let refused = refund("refund-all", true).await;
    assert!(
        matches!(refused, Err(AppError::BadGateway(_))),
        "{refused:?}"
    );
    let after = h.payment(payment).await;
    assert_eq!(after.refunded(), Decimal::ZERO);
    assert_eq!(after.status(), Some(events::PaymentStatus::Succeeded));
    assert_eq!(after.refundable(), total.amount, "the hold is released");
    assert_eq!(
        h.balance(account).await,
        PRO_CREDITS,
        "credits given back after the refusal"
    );

    // The retry with the same key refunds, and takes the credits back once.
    h.gateway.fail_refunds.store(false, Ordering::SeqCst);
    let done = refund("refund-all", true).await.expect("the retry refunds");
    assert!(!done.replayed);
    assert_eq!(done.value.amount, total.amount);
    assert_eq!(done.value.refunded_amount, total.amount);
    assert_eq!(done.value.status, Some("refunded"));
    assert_eq!(done.value.revoked_credits, PRO_CREDITS);
    assert!(done.value.gateway_refund_ref.is_some());
    assert_eq!(h.balance(account).await, 0, "taken back once, not twice");

    // Another retry replays without calling the gateway again.
    let replay = refund("refund-all", true).await.expect("the replay");
    assert!(replay.replayed);
    assert_eq!(replay.value.refund_id, done.value.refund_id);
    assert_eq!(h.balance(account).await, 0);
    assert_eq!(h.gateway.refund_calls.load(Ordering::SeqCst), 3);
    assert_eq!(h.payment(payment).await.refunded(), total.amount);
}
on_both_stores!(a_refund_the_gateway_refuses_records_nothing_and_its_retry_takes_the_credits_once);

/// Two refunds of the whole payment at once, with different keys: the
/// payment's hold lets one through; the credits are taken back once and
/// the money refunded once.
async fn two_refunds_at_once_refund_and_revoke_once(h: &Harness) {
    let account = h.open_account().await;
    let (_, payment) = h.buy(account, "bank_transfer").await;
    h.approve(payment).await.expect("finance approves");
    assert_eq!(h.balance(account).await, PRO_CREDITS);
    let finance = h.finance();
    let payment_path = payment.to_string();
    let refund = |key: &'static str| {
        refunds::refund_payment(
            &h.app,
            &finance,
            &payment_path,
            Key::from(IdempotencyKey::parse(key).expect("a key")),
            Input::json(&json!({ "reason": "twice", "revoke_credits": true })),
        )
    };
    let (a, b) = tokio::join!(refund("refund-a"), refund("refund-b"));
    let ok = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(ok, 1, "one refund passes: {a:?} / {b:?}");
    let refused = if a.is_err() { &a } else { &b };
    assert!(
        matches!(
            refused,
            Err(AppError::Conflict(_) | AppError::InvalidRequest { .. })
        ),
        "{refused:?}"
    );
    assert_eq!(h.balance(account).await, 0, "credits taken back once");
    let paid = h.payment(payment).await;
    assert_eq!(Some(&paid.refunded()), paid.amount().map(|m| &m.amount));
}
on_both_stores!(two_refunds_at_once_refund_and_revoke_once);

// ---------------------------------------------------------------------------
// 3. Subscription periods.

async fn period_end(h: &Harness, subscription: Uuid) -> DateTime<Utc> {
    h.app
        .store
        .load::<Subscription>(&subscription.to_string())
        .await
        .expect("the subscription loads")
        .aggregate
        .period()
        .expect("a current period")
        .1
}

async fn open_invoices(h: &Harness, subscription: Uuid) -> Vec<Uuid> {
    h.app
        .store
        .load::<Subscription>(&subscription.to_string())
        .await
        .expect("the subscription loads")
        .aggregate
        .open_invoices()
        .iter()
        .map(|i| i.invoice_id)
        .collect()
}

async fn a_subscription_renews_across_periods_granting_each_periods_credits_once(h: &Harness) {
    let account = h.open_account().await;
    let created = lifecycle::create(
        &h.app,
        &h.owner(account),
        key(),
        Input::json(&json!({ "plan": "starter", "method": "bank_transfer" })),
    )
    .await
    .expect("the subscription is created");
    assert!(created.created);
    assert_eq!(created.value["status"], "incomplete");
    let subscription = uuid(&created.value["id"]);
    let first = uuid(&created.value["open_invoices"][0]["id"]);
    assert!(
        h.invoice(first).await.issued().is_some(),
        "first invoice issued"
    );
    assert_eq!(h.balance(account).await, 0, "nothing before it is paid");

    // The first invoice paid: active, the first period's credits granted.
    let payment = h.pay_manually(account, first).await;
    h.approve(payment).await.expect("approved");
    assert_eq!(h.balance(account).await, STARTER_INCLUDED_CREDITS);
    let finance = Actor::system("finance");
    settle::invoice_paid(
        &h.app,
        &finance,
        first,
        Some(payment),
        PaymentMethod::BankTransfer,
    )
    .await
    .expect("settling again is harmless");
    assert_eq!(h.balance(account).await, STARTER_INCLUDED_CREDITS);

    // Within the period nothing is due.
    let end = period_end(h, subscription).await;
    let run = periods::process_due(&h.app, &finance, end - chrono::Duration::days(1))
        .await
        .expect("the periods run");
    assert_eq!(run.changed, 0, "{run:?}");
    assert!(open_invoices(h, subscription).await.is_empty());

    // Past the period end: renewed, its invoice issued, the first period's
    // credits expired; the same instant again changes nothing.
    let after = end + chrono::Duration::seconds(1);
    let run = periods::process_due(&h.app, &finance, after)
        .await
        .expect("the periods run");
    assert_eq!((run.changed, run.failed), (1, 0), "{run:?}");
    let renewal = open_invoices(h, subscription).await;
    assert_eq!(renewal.len(), 1, "one renewal invoice");
    let renewal = renewal[0];
    let issued = h.invoice(renewal).await;
    let number = issued
        .issued()
        .expect("the renewal invoice is issued")
        .number
        .clone();
    assert!(number.starts_with("INV-"), "{number}");
    assert_eq!(
        h.balance(account).await,
        0,
        "the first period's credits expired"
    );
    let again = periods::process_due(&h.app, &finance, after)
        .await
        .expect("the periods run");
    assert_eq!((again.changed, again.failed), (0, 0), "{again:?}");
    assert_eq!(open_invoices(h, subscription).await, vec![renewal]);
    let end2 = period_end(h, subscription).await;
    assert!(end2 > end, "the next period runs from {end} to {end2}");

    // The renewal paid: the second period's credits, once.
    let payment = h.pay_manually(account, renewal).await;
    h.approve(payment).await.expect("approved");
    assert_eq!(h.balance(account).await, STARTER_INCLUDED_CREDITS);
    settle::invoice_paid(
        &h.app,
        &finance,
        renewal,
        Some(payment),
        PaymentMethod::BankTransfer,
    )
    .await
    .expect("settling again is harmless");
    let again = periods::process_due(&h.app, &finance, after)
        .await
        .expect("the periods run");
    assert_eq!(again.changed, 0, "{again:?}");
    assert_eq!(h.balance(account).await, STARTER_INCLUDED_CREDITS);
    assert!(open_invoices(h, subscription).await.is_empty());

    // And the period after: a new invoice of its own.
    let run = periods::process_due(&h.app, &finance, end2 + chrono::Duration::seconds(1))
        .await
        .expect("the periods run");
    assert_eq!((run.changed, run.failed), (1, 0), "{run:?}");
    let third = open_invoices(h, subscription).await;
    assert_eq!(third.len(), 1);
    assert_ne!(third[0], renewal);
    assert_ne!(
        h.invoice(third[0]).await.issued().expect("issued").number,
        number
    );
    assert_eq!(
        h.balance(account).await,
        0,
        "the second period's credits expired"
    );
}
on_both_stores!(a_subscription_renews_across_periods_granting_each_periods_credits_once);

async fn a_subscription_that_renews_soon_gets_one_notice_per_period(h: &Harness) {
    let account = h.open_account().await;
    let created = lifecycle::create(
        &h.app,
        &h.owner(account),
        key(),
        Input::json(&json!({ "plan": "starter", "method": "bank_transfer" })),
    )
    .await
    .expect("the subscription is created");
    let subscription = uuid(&created.value["id"]);
    let first = uuid(&created.value["open_invoices"][0]["id"]);
    let payment = h.pay_manually(account, first).await;
    h.approve(payment).await.expect("approved");
    h.app
        .fresh_read_models()
        .await
        .expect("the read models catch up");
    let end = period_end(h, subscription).await;
    let scan = |at: DateTime<Utc>| app::notify::plan::plan_renewal_notices(&h.app, at);
    // A week before: too early; two days before: one notice, once.
    assert_eq!(scan(end - chrono::Duration::days(7)).await.unwrap(), 0);
    assert_eq!(scan(end - chrono::Duration::days(2)).await.unwrap(), 1);
    assert_eq!(scan(end - chrono::Duration::days(1)).await.unwrap(), 0);
    let queued = h.app.store.notifications_of("email", 50).await.unwrap();
    let notice = queued
        .iter()
        .find(|d| d.kind == "subscription_renewing")
        .expect("the renewal notice is queued");
    assert_eq!(
        notice.account_id.as_deref(),
        Some(account.to_string().as_str())
    );
    let message = app::notify::mail::build(&h.app, notice)
        .await
        .expect("the notice renders");
    let text = String::from_utf8(message.formatted()).unwrap();
    assert!(
        text.contains("Subject: Your starter subscription renews on"),
        "{text}"
    );
}
on_both_stores!(a_subscription_that_renews_soon_gets_one_notice_per_period);
