//! The PayPal webhook log (docs/adr/0018-paypal.md): one stream per PayPal
//! event id (`paypal-{id}`), so each event is applied once. Recording an id
//! a second time writes nothing; the caller reads that as a redelivery.

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use events::{PaypalEvent, PaypalEventReceived, PAYPAL_EVENT_AGGREGATE_TYPE};
use serde::{Deserialize, Serialize};

/// Longest PayPal event id, event type or resource id accepted.
pub const PAYPAL_EVENT_TEXT_BYTES_MAX: usize = 255;
/// Longest reason kept for a refused event.
pub const PAYPAL_REFUSAL_BYTES_MAX: usize = 1_024;

/// The stream id of a PayPal event.
pub fn paypal_event_stream(event_id: &str) -> String {
    format!("paypal-{event_id}")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaypalEventCommand {
    Record {
        id: String,
        event_type: String,
        resource_id: Option<String>,
        created_at: Option<DateTime<Utc>>,
        handled: bool,
        refused: Option<String>,
        now: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaypalEventError {
    #[error(
        "a PayPal event id, type and resource id are 1 to {PAYPAL_EVENT_TEXT_BYTES_MAX} bytes"
    )]
    InvalidText,
    #[error("the reason of a refusal is 1 to {PAYPAL_REFUSAL_BYTES_MAX} bytes")]
    InvalidRefusal,
}

/// One PayPal event, once received.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PaypalEventLog {
    received: Option<PaypalEventReceived>,
}

impl PaypalEventLog {
    pub fn received(&self) -> Option<&PaypalEventReceived> {
        self.received.as_ref()
    }
}

impl Aggregate for PaypalEventLog {
    const TYPE: &'static str = PAYPAL_EVENT_AGGREGATE_TYPE;
    type Command = PaypalEventCommand;
    type Event = PaypalEvent;
    type Error = PaypalEventError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let PaypalEventCommand::Record {
            id,
            event_type,
            resource_id,
            created_at,
            handled,
            refused,
            now,
        } = command;
        let bad = |s: &str| s.is_empty() || s.len() > PAYPAL_EVENT_TEXT_BYTES_MAX;
        if bad(&id) || bad(&event_type) || resource_id.as_deref().is_some_and(bad) {
            return Err(PaypalEventError::InvalidText);
        }
        if refused
            .as_deref()
            .is_some_and(|r| r.is_empty() || r.len() > PAYPAL_REFUSAL_BYTES_MAX)
        {
            return Err(PaypalEventError::InvalidRefusal);
        }
        if self.received.is_some() {
            // A redelivery: recorded once already.
            return Ok(());
        }
        sink.write(
            PaypalEvent::PaypalEventReceived(PaypalEventReceived {
                id,
                event_type,
                resource_id,
                created_at,
                handled,
                refused,
                received_at: now,
            }),
            self,
        )
        .await;
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            PaypalEvent::PaypalEventReceived(e) => self.received = Some(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    use super::*;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 3, 12, 0, 0).unwrap()
    }

    fn record(id: &str, refused: Option<&str>) -> PaypalEventCommand {
        PaypalEventCommand::Record {
            id: id.into(),
            event_type: "PAYMENT.CAPTURE.COMPLETED".into(),
            resource_id: Some("42311647XV020574X".into()),
            created_at: None,
            handled: refused.is_none(),
            refused: refused.map(str::to_owned),
            now: now(),
        }
    }

    fn received(id: &str) -> PaypalEvent {
        PaypalEvent::PaypalEventReceived(PaypalEventReceived {
            id: id.into(),
            event_type: "PAYMENT.CAPTURE.COMPLETED".into(),
            resource_id: Some("42311647XV020574X".into()),
            created_at: None,
            handled: true,
            refused: None,
            received_at: now(),
        })
    }

    #[tokio::test]
    async fn a_paypal_event_is_recorded_once() {
        TestFramework::<PaypalEventLog>::with(())
            .given_no_previous_events()
            .when_async(record("WH-1", None))
            .await
            .then_expect_events(vec![received("WH-1")]);
    }

    #[tokio::test]
    async fn a_redelivered_paypal_event_records_nothing() {
        TestFramework::<PaypalEventLog>::with(())
            .given(vec![received("WH-1")])
            .when_async(record("WH-1", None))
            .await
            .then_expect_events(vec![]);
    }

    #[tokio::test]
    async fn a_refused_event_keeps_its_reason() {
        let mut expected = received("WH-2");
        let PaypalEvent::PaypalEventReceived(e) = &mut expected;
        e.handled = false;
        e.refused = Some("the currency is EUR; the invoice's is USD".into());
        TestFramework::<PaypalEventLog>::with(())
            .given_no_previous_events()
            .when_async(record(
                "WH-2",
                Some("the currency is EUR; the invoice's is USD"),
            ))
            .await
            .then_expect_events(vec![expected]);
    }

    #[tokio::test]
    async fn empty_or_oversized_texts_are_refused() {
        TestFramework::<PaypalEventLog>::with(())
            .given_no_previous_events()
            .when_async(record("", None))
            .await
            .then_expect_error(PaypalEventError::InvalidText);
        TestFramework::<PaypalEventLog>::with(())
            .given_no_previous_events()
            .when_async(record(&"W".repeat(PAYPAL_EVENT_TEXT_BYTES_MAX + 1), None))
            .await
            .then_expect_error(PaypalEventError::InvalidText);
        TestFramework::<PaypalEventLog>::with(())
            .given_no_previous_events()
            .when_async(record("WH-3", Some("")))
            .await
            .then_expect_error(PaypalEventError::InvalidRefusal);
        TestFramework::<PaypalEventLog>::with(())
            .given_no_previous_events()
            .when_async(record(
                "WH-3",
                Some(&"x".repeat(PAYPAL_REFUSAL_BYTES_MAX + 1)),
            ))
            .await
            .then_expect_error(PaypalEventError::InvalidRefusal);
        assert_eq!(paypal_event_stream("WH-1"), "paypal-WH-1");
    }
}
