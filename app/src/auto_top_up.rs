//! Automatic top-up (issue 17): `PUT|GET /accounts/{id}/auto-top-up`, and
//! the job that buys the package when the account's stream says so.
//!
//! The account aggregate decides the crossing: the deduction, hold or
//! capture that takes available credits from at or above the threshold to
//! below it writes `AutoTopUpTriggered` (once per crossing, within the
//! day's limit, however many deductions run at once). The notifier's
//! planner queues each trigger as a delivery of channel `top_up` (the one
//! reader of the log for both, docs/adr/0021); its sender calls
//! [`execute`], which buys the package under the idempotency key
//! `auto-top-up-{trigger_id}` (a retry after a crash finds the same
//! invoice and payment) and records the outcome on the account
//! (`AutoTopUpSucceeded`/`AutoTopUpFailed`, once per trigger; three
//! failures in a row turn the top-up off). The notifier emails both.

use events::{AccountId, AutoTopUp, PaymentMethod};
use ledger::AccountCommand;
use serde::Deserialize;
use serde_json::{json, Value};
use tracing::debug;
use uuid::Uuid;

use crate::access;
use crate::caller::{Caller, Target};
use crate::error::AppError;
use crate::input::{Input, Key};
use crate::{now, App};

/// Top-ups a day when the configuration names no limit.
pub const DAILY_LIMIT_DEFAULT: u32 = 3;

/// `PUT /accounts/{id}/auto-top-up`.
#[derive(Debug, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AutoTopUpRequest {
    /// Default true.
    pub enabled: Option<bool>,
    /// Buy when available credits fall below this.
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 1_000_000_000_000_i64)
    )]
    pub threshold: i64,
    /// A credit package's slug.
    pub package: String,
    /// `stripe` (the account's saved card, charged off-session) or
    /// `bank_transfer` (an invoice to pay).
    pub method: String,
    /// Top-ups a day at most (1 to 24, default 3).
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 24))]
    pub daily_limit: Option<u32>,
}

fn config_json(account: &ledger::CreditAccount, id: AccountId) -> Value {
    let c = account.auto_top_up();
    json!({
        "account_id": id,
        "enabled": c.is_some_and(|c| c.enabled),
        "threshold": c.map(|c| c.threshold),
        "package": c.map(|c| c.package.clone()),
        "method": c.map(|c| c.method.as_str()),
        "daily_limit": c.map(|c| c.daily_limit),
        "triggered_today": account.top_ups_on(chrono::Utc::now()),
        "consecutive_failures": account.top_up_failures(),
    })
}

/// The account's automatic top-up, read from its stream.
pub async fn get(app: &App, caller: &Caller, target: Target) -> Result<Value, AppError> {
    let account = caller.target(access::MANAGE_AUTO_TOP_UP, target)?;
    let loaded = crate::budget::open_account(app, account).await?;
    Ok(config_json(&loaded, account))
}

/// Sets the automatic top-up.
pub async fn put(
    app: &App,
    caller: &Caller,
    target: Target,
    input: Input<AutoTopUpRequest>,
) -> Result<Value, AppError> {
    let (account, req) = caller.target_with_body(access::MANAGE_AUTO_TOP_UP, target, input)?;
    let method = match PaymentMethod::parse(&req.method) {
        Some(m @ (PaymentMethod::Stripe | PaymentMethod::BankTransfer)) => m,
        _ => {
            return Err(AppError::invalid_field(
                "method",
                "method must be stripe or bank_transfer",
            ))
        }
    };
    if method == PaymentMethod::Stripe {
        // 503 while Stripe is not configured, as a purchase would be.
        app.gateways.for_method(PaymentMethod::Stripe)?;
    }
    let catalog = app.catalog.get().await;
    if !catalog.package(&req.package).is_some_and(|p| p.active) {
        return Err(AppError::invalid_field(
            "package",
            format!("no active credit package {:?}", req.package),
        ));
    }
    let config = AutoTopUp {
        enabled: req.enabled.unwrap_or(true),
        threshold: req.threshold,
        package: req.package,
        method,
        daily_limit: req.daily_limit.unwrap_or(DAILY_LIMIT_DEFAULT),
    };
    let done = app
        .run(
            caller,
            account,
            AccountCommand::SetAutoTopUp {
                config: Some(config),
                now: now(),
            },
            None,
            &[],
        )
        .await?;
    let position = app.position_of(&done).await?;
    let state = done.state.as_ref().ok_or(AppError::Internal)?;
    let mut body = config_json(state, account);
    body["position"] = json!(position);
    Ok(body)
}

/// The saved card to charge off-session: the Stripe customer's default
/// card, else its first.
async fn saved_card(app: &App, account: AccountId) -> Result<crate::gateway::OffSession, String> {
    let gateway = app
        .gateways
        .for_method(PaymentMethod::Stripe)
        .map_err(|e| e.to_string())?;
    let customer = crate::billing::saved_cards::existing_stripe_customer(app, account)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the account has no saved card".to_string())?;
    let card = match gateway
        .default_card(&customer)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(card) => card,
        None => gateway
            .list_cards(&customer)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .next()
            .map(|c| c.id)
            .ok_or_else(|| "the account has no saved card".to_string())?,
    };
    Ok(crate::gateway::OffSession {
        customer_id: customer,
        payment_method_id: card,
    })
}

/// An error worth trying the trigger again for (the store), rather than
/// recording it as the top-up's failure.
fn retryable(e: &AppError) -> bool {
    match e {
        AppError::Internal => true,
        AppError::Unavailable(m) => m.contains("store"),
        _ => false,
    }
}

/// Buys the trigger's package: the invoice and payment ids, or why not.
async fn buy(
    app: &App,
    account: AccountId,
    trigger: &events::AutoTopUpTriggered,
) -> Result<Result<(Uuid, Uuid), String>, AppError> {
    let off_session = match trigger.method {
        PaymentMethod::Stripe => match saved_card(app, account).await {
            Ok(card) => Some(card),
            Err(reason) => return Ok(Err(reason)),
        },
        _ => None,
    };
    let key = events::IdempotencyKey::parse(&format!("auto-top-up-{}", trigger.trigger_id))
        .map_err(|_| AppError::Internal)?;
    let body = json!({ "package": trigger.package, "method": trigger.method.as_str() });
    let caller = Caller::system("auto-top-up");
    let bought = crate::billing::purchases::purchase_for(
        app,
        &caller,
        account,
        Key(Some(key)),
        Input::new(body.to_string()),
        off_session,
    )
    .await;
    match bought {
        Ok(w) => {
            let id = |v: &Value| v.as_str().and_then(|s| Uuid::parse_str(s).ok());
            match (id(&w.value["invoice"]["id"]), id(&w.value["payment"]["id"])) {
                (Some(i), Some(p)) => Ok(Ok((i, p))),
                _ => Err(AppError::Internal),
            }
        }
        Err(e) if retryable(&e) => Err(e),
        Err(e) => Ok(Err(e.to_string())),
    }
}

/// Carries out a queued top-up (a delivery of channel `top_up`, planned
/// by the notifier from `AutoTopUpTriggered`): buys the package and
/// records the outcome on the account. `Ok` once the outcome is recorded
/// (a failed purchase included); `Err` to be tried again (the store).
pub async fn execute(
    app: &App,
    d: &store::notifications::DeliveryRow,
) -> Result<Option<i64>, (Option<i64>, String)> {
    let trigger: events::AutoTopUpTriggered =
        serde_json::from_str(&d.payload).map_err(|e| (None, format!("bad trigger: {e}")))?;
    let account = AccountId::parse(&d.target).map_err(|_| (None, "bad account".to_string()))?;
    let outcome = buy(app, account, &trigger)
        .await
        .map_err(|e| (None, e.to_string()))?;
    if let Err(reason) = &outcome {
        debug!(%account, %reason, "an automatic top-up failed");
    }
    app.run(
        &Caller::system("auto-top-up"),
        account,
        AccountCommand::RecordAutoTopUp {
            trigger_id: trigger.trigger_id,
            outcome,
            now: now(),
        },
        None,
        &[],
    )
    .await
    .map_err(|e| (None, e.to_string()))?;
    Ok(None)
}
