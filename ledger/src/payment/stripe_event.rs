//! The Stripe webhook log: one stream per Stripe event id
//! (`stripe-{evt_id}`), so each event is applied once. Recording an id a
//! second time writes nothing; the caller reads that as a redelivery.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{StripeEvent, StripeEventReceived, STRIPE_EVENT_AGGREGATE_TYPE};
use serde::{Deserialize, Serialize};

/// Longest Stripe event id or type accepted.
pub const STRIPE_EVENT_TEXT_BYTES_MAX: usize = 255;

/// The stream id of a Stripe event.
pub fn stripe_event_stream(event_id: &str) -> String {
    format!("stripe-{event_id}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StripeEventCommand {
    Record {
        id: String,
        event_type: String,
        created: i64,
        handled: bool,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeEventError {
    #[error("a Stripe event id and type are 1 to {STRIPE_EVENT_TEXT_BYTES_MAX} bytes")]
    InvalidText,
}

/// One Stripe event, once received.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StripeEventLog {
    received: Option<StripeEventReceived>,
}

impl StripeEventLog {
    pub fn received(&self) -> Option<&StripeEventReceived> {
        self.received.as_ref()
    }
}

impl Aggregate for StripeEventLog {
    const TYPE: &'static str = STRIPE_EVENT_AGGREGATE_TYPE;
    type Command = StripeEventCommand;
    type Event = StripeEvent;
    type Error = StripeEventError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let StripeEventCommand::Record {
            id,
            event_type,
            created,
            handled,
            now,
        } = command;
        let bad = |s: &str| s.is_empty() || s.len() > STRIPE_EVENT_TEXT_BYTES_MAX;
        if bad(&id) || bad(&event_type) {
            return Err(StripeEventError::InvalidText);
        }
        if self.received.is_some() {
            // A redelivery: recorded once already.
            return Ok(());
        }
        sink.write(
            StripeEvent::StripeEventReceived(StripeEventReceived {
                id,
                event_type,
                created,
                handled,
                received_at: now,
            }),
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            StripeEvent::StripeEventReceived(e) => self.received = Some(e),
        }
    }
}
