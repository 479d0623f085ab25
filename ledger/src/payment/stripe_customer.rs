//! An account's Stripe customer: one stream per account
//! (`stripe-customer-{account_id}`), so the customer is created at Stripe
//! once and every later Stripe call for the account (subscriptions, saved
//! cards) uses the same one. The first link stays: linking again, with the
//! same id or another, writes nothing.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{
    AccountId, StripeCustomerEvent, StripeCustomerLinked, STRIPE_CUSTOMER_AGGREGATE_TYPE,
};
use serde::{Deserialize, Serialize};

/// Longest Stripe customer id accepted.
pub const STRIPE_CUSTOMER_ID_BYTES_MAX: usize = 255;

/// The stream id of an account's Stripe customer.
pub fn stripe_customer_stream(account_id: &AccountId) -> String {
    format!("stripe-customer-{account_id}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StripeCustomerCommand {
    Link {
        account_id: AccountId,
        customer_id: String,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeCustomerError {
    #[error("a Stripe customer id is 1 to {STRIPE_CUSTOMER_ID_BYTES_MAX} printable ASCII bytes")]
    InvalidCustomerId,
}

/// One account's Stripe customer, once linked.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StripeCustomer {
    linked: Option<StripeCustomerLinked>,
}

impl StripeCustomer {
    /// Stripe's customer id, once linked.
    pub fn customer_id(&self) -> Option<&str> {
        self.linked.as_ref().map(|l| l.customer_id.as_str())
    }
}

impl Aggregate for StripeCustomer {
    const TYPE: &'static str = STRIPE_CUSTOMER_AGGREGATE_TYPE;
    type Command = StripeCustomerCommand;
    type Event = StripeCustomerEvent;
    type Error = StripeCustomerError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let StripeCustomerCommand::Link {
            account_id,
            customer_id,
            now,
        } = command;
        if customer_id.is_empty()
            || customer_id.len() > STRIPE_CUSTOMER_ID_BYTES_MAX
            || !customer_id.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(StripeCustomerError::InvalidCustomerId);
        }
        if self.linked.is_some() {
            // The first link stays (two first calls racing created the
            // same customer under one idempotency key anyway).
            return Ok(());
        }
        sink.write(
            StripeCustomerEvent::StripeCustomerLinked(StripeCustomerLinked {
                account_id,
                customer_id,
                linked_at: now,
            }),
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            StripeCustomerEvent::StripeCustomerLinked(e) => self.linked = Some(e),
        }
    }
}
