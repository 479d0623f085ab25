//! Saved payment methods (issue 16; docs/adr/0011-payments-gateway.md):
//! cards the account keeps at Stripe for later payments. Saving one is a
//! SetupIntent the browser confirms with Stripe.js; the cards are listed
//! next to the methods offered for the account's country; one is the
//! default invoices are paid with; any can be detached.
//!
//! The account's Stripe customer is created once and kept as an event
//! (`StripeCustomerLinked` in the stream `stripe-customer-{account_id}`),
//! so subscriptions and saved cards share it. A card is touched only when
//! Stripe says it is attached to that customer: another tenant's card id
//! is 404, as for every other resource of another tenant.

use events::{AccountId, Actor, PaymentMethod};
use ledger::payment::{stripe_customer_stream, StripeCustomer, StripeCustomerCommand};
use serde::{Deserialize, Serialize};
use store::CommandContext;
use tracing::warn;
use uuid::Uuid;

use super::billing_account;
use crate::access;
use crate::caller::Caller;
use crate::error::AppError;
use crate::gateway::{GatewayError, PaymentGateway, SavedCard};
use crate::input::{Input, Key};
use crate::{now, App, Written};

/// Longest card (payment method) id accepted in a path.
pub const CARD_ID_BYTES_MAX: usize = 255;

/// A saved card as the account sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SavedCardView {
    /// Stripe's payment method id (`pm_…`).
    pub id: String,
    /// `visa`, `mastercard`, `amex`, …
    pub brand: String,
    pub last4: String,
    pub exp_month: u32,
    pub exp_year: u32,
    /// Whether invoices are paid with it by default.
    pub default: bool,
}

/// The account's saved cards.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SavedCards {
    pub saved_cards: Vec<SavedCardView>,
}

/// `POST /billing/payment-methods`: `{}` or `{"type": "card"}`.
#[derive(Debug, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AddRequest {
    /// The kind of method to save; only `card` (the default).
    #[serde(rename = "type")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, pattern = "^card$"))]
    pub kind: Option<String>,
}

/// A SetupIntent to confirm in the browser.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CardSetup {
    /// Stripe's SetupIntent id (`seti_…`).
    pub setup_intent_id: String,
    /// What Stripe.js confirms the card with (`stripe.confirmSetup`).
    pub client_secret: Option<String>,
    /// Stripe's status (`requires_payment_method`, …).
    pub status: String,
    /// Always `card`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// A card made the default or detached.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CardChanged {
    /// The card's id (`pm_…`).
    pub id: String,
    /// `default` or `detached`.
    pub change: String,
    /// The account's cards after the change.
    pub saved_cards: Vec<SavedCardView>,
}

/// The account's Stripe customer, if one was created.
pub async fn existing_stripe_customer(
    app: &App,
    account: AccountId,
) -> Result<Option<String>, AppError> {
    Ok(app
        .store
        .load::<StripeCustomer>(&stripe_customer_stream(&account))
        .await?
        .aggregate
        .customer_id()
        .map(str::to_owned))
}

/// The account's Stripe customer, created at Stripe (under the
/// idempotency key `customer-{account_id}`) and recorded the first time it
/// is needed, then reused.
pub async fn stripe_customer(
    app: &App,
    gateway: &dyn PaymentGateway,
    account: AccountId,
) -> Result<String, AppError> {
    if let Some(id) = existing_stripe_customer(app, account).await? {
        return Ok(id);
    }
    let holder = billing_account(app, account).await?;
    let created = gateway
        .create_customer(&crate::gateway::CustomerRequest {
            account_id: account.to_string(),
            name: holder.name.clone(),
            email: Some(holder.billing_email.clone()),
            idempotency_key: format!("customer-{account}"),
        })
        .await?;
    let done = app
        .execute::<StripeCustomer>(
            &stripe_customer_stream(&account),
            StripeCustomerCommand::Link {
                account_id: account,
                customer_id: created.clone(),
                now: now(),
            },
            &CommandContext::new(Actor::system("stripe-customer")),
            None,
            &[],
        )
        .await
        .map_err(|e| {
            crate::error::service_error(e, |e| {
                AppError::BadGateway(format!("stripe answered an unusable customer: {e}"))
            })
        })?;
    // The first link stays: a racing call may have recorded it first.
    Ok(done
        .state
        .as_ref()
        .and_then(|s| s.customer_id())
        .map(str::to_owned)
        .unwrap_or(created))
}

/// The account's saved cards: none without Stripe or before the account
/// has a Stripe customer (listing never creates one).
pub async fn cards(app: &App, account: AccountId) -> Result<Vec<SavedCardView>, AppError> {
    let Ok(gateway) = app.gateways.for_method(PaymentMethod::Stripe) else {
        return Ok(Vec::new());
    };
    let Some(customer) = existing_stripe_customer(app, account).await? else {
        return Ok(Vec::new());
    };
    list(gateway.as_ref(), &customer).await
}

async fn list(
    gateway: &dyn PaymentGateway,
    customer: &str,
) -> Result<Vec<SavedCardView>, AppError> {
    let default = gateway.default_card(customer).await?;
    Ok(gateway
        .list_cards(customer)
        .await?
        .into_iter()
        .map(|c| SavedCardView {
            default: default.as_deref() == Some(c.id.as_str()),
            id: c.id,
            brand: c.brand,
            last4: c.last4,
            exp_month: c.exp_month,
            exp_year: c.exp_year,
        })
        .collect())
}

/// Saves a card: a SetupIntent for the account's Stripe customer (created
/// the first time), whose `client_secret` the browser confirms. 201. With
/// an `Idempotency-Key`, a retry answers the same SetupIntent.
pub async fn add(
    app: &App,
    caller: &Caller,
    key: Key,
    input: Input<AddRequest>,
) -> Result<Written<CardSetup>, AppError> {
    caller.require(access::MANAGE_SAVED_CARDS)?;
    let req = input.parse()?.value;
    if req.kind.as_deref().is_some_and(|k| k != "card") {
        return Err(AppError::invalid_field("type", "type must be card"));
    }
    let account = caller.own_account()?;
    let gateway = app.gateways.for_method(PaymentMethod::Stripe)?;
    let customer = stripe_customer(app, gateway.as_ref(), account).await?;
    let stripe_key = format!("setup-intent-{account}-{}", request_part(&key));
    let setup = gateway
        .create_setup_intent(&customer, &account.to_string(), &stripe_key)
        .await?;
    Ok(Written {
        value: CardSetup {
            setup_intent_id: setup.id,
            client_secret: setup.client_secret,
            status: setup.status,
            kind: "card".into(),
        },
        replayed: false,
        created: true,
    })
}

/// The part of a Stripe idempotency key that names this request: the
/// caller's `Idempotency-Key`, else a fresh id (each call is then a new
/// request; a Stripe key reused for a later change would replay the
/// earlier answer instead of changing anything).
fn request_part(key: &Key) -> String {
    match &key.0 {
        Some(k) => k.as_str().to_owned(),
        None => Uuid::now_v7().to_string(),
    }
}

/// A card id from a path: Stripe's ids are letters, digits and `_`.
fn card_id(raw: &str) -> Result<&str, AppError> {
    if raw.is_empty()
        || raw.len() > CARD_ID_BYTES_MAX
        || !raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(AppError::invalid_field(
            "id",
            "a payment method id is Stripe's (pm_…): letters, digits and _",
        ));
    }
    Ok(raw)
}

/// The account's card `id`, checked with Stripe to be attached to the
/// account's customer; another customer's card, or one Stripe does not
/// know, is 404.
async fn own_card(
    app: &App,
    caller: &Caller,
    raw_id: &str,
) -> Result<(std::sync::Arc<dyn PaymentGateway>, String, SavedCard), AppError> {
    caller.require(access::MANAGE_SAVED_CARDS)?;
    let id = card_id(raw_id)?;
    let account = caller.own_account()?;
    let gateway = app.gateways.for_method(PaymentMethod::Stripe)?;
    let not_found = || AppError::NotFound(format!("no saved card {id}"));
    let Some(customer) = existing_stripe_customer(app, account).await? else {
        return Err(not_found());
    };
    let card = match gateway.get_card(id).await {
        Ok(card) => card,
        // Stripe's 404 (`resource_missing`) is ours; another refusal (a
        // wrong key) stays a gateway error.
        Err(GatewayError::Refused(why)) if why.contains("(404 ") => {
            warn!(card = id, reason = %why, "a saved card Stripe does not know");
            return Err(not_found());
        }
        Err(e) => return Err(e.into()),
    };
    if card.customer_id.as_deref() != Some(customer.as_str()) {
        warn!(card = id, %account, "a card of another customer was asked for");
        return Err(not_found());
    }
    Ok((gateway, customer, card))
}

/// Makes a saved card the one invoices are paid with. 200 with the cards.
pub async fn set_default(
    app: &App,
    caller: &Caller,
    key: Key,
    raw_id: &str,
) -> Result<CardChanged, AppError> {
    let (gateway, customer, card) = own_card(app, caller, raw_id).await?;
    gateway
        .set_default_card(
            &customer,
            &card.id,
            &format!("default-card-{}-{}", card.id, request_part(&key)),
        )
        .await?;
    Ok(CardChanged {
        saved_cards: list(gateway.as_ref(), &customer).await?,
        id: card.id,
        change: "default".into(),
    })
}

/// Detaches a saved card: it can no longer be charged. 200 with the cards
/// left.
pub async fn detach(
    app: &App,
    caller: &Caller,
    key: Key,
    raw_id: &str,
) -> Result<CardChanged, AppError> {
    let (gateway, customer, card) = own_card(app, caller, raw_id).await?;
    gateway
        .detach_card(
            &card.id,
            &format!("detach-card-{}-{}", card.id, request_part(&key)),
        )
        .await?;
    Ok(CardChanged {
        saved_cards: list(gateway.as_ref(), &customer).await?,
        id: card.id,
        change: "detached".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn card_ids_are_stripe_ids() {
        assert_eq!(card_id("pm_1Nabc"), Ok("pm_1Nabc"));
        for bad in ["", "pm/../x", "pm 1", "pm%2F"] {
            assert!(card_id(bad).is_err(), "{bad}");
        }
        assert!(card_id(&"p".repeat(CARD_ID_BYTES_MAX + 1)).is_err());
    }

    #[test]
    fn a_request_without_a_key_gets_its_own_stripe_key() {
        assert_ne!(request_part(&Key(None)), request_part(&Key(None)));
        let key = events::IdempotencyKey::parse("k-1").unwrap();
        assert_eq!(request_part(&Key(Some(key))), "k-1");
    }
}
