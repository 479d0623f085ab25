//! Events of the PayPal webhook log (docs/adr/0018-paypal.md): one stream
//! per PayPal event id (`paypal-{id}`), so each delivery is applied once,
//! and what was done with it is kept in the log next to the payments it
//! touched.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::EVENT_VERSION_1;

/// The aggregate type of the PayPal webhook log: one stream per PayPal
/// event id (`paypal-{id}`).
pub const PAYPAL_EVENT_AGGREGATE_TYPE: &str = "paypal_event";

/// A PayPal webhook event was received, verified by PayPal and handled
/// (or, for a type we do not act on, only recorded). Its stream is
/// `paypal-{id}`: a redelivery finds it and changes nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaypalEventReceived {
    /// PayPal's event id (`WH-…`).
    pub id: String,
    /// PayPal's event type (`PAYMENT.CAPTURE.COMPLETED`, …).
    pub event_type: String,
    /// The id of the resource the event is about (an order, a capture or
    /// a refund at PayPal), when it has one.
    pub resource_id: Option<String>,
    /// PayPal's `create_time`, when it sent a readable one.
    pub created_at: Option<DateTime<Utc>>,
    /// Whether the ledger acted on it (false: recorded and acknowledged).
    pub handled: bool,
    /// Why an event about one of our payments was refused (an amount or a
    /// currency that is not the invoice's, a capture PayPal refused): kept
    /// for staff, never applied.
    pub refused: Option<String>,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum PaypalEvent {
    PaypalEventReceived(PaypalEventReceived),
}

impl PaypalEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::PaypalEventReceived(_) => "PaypalEventReceived",
        }
    }
}

impl DomainEvent for PaypalEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }
    fn event_version(&self) -> String {
        EVENT_VERSION_1.to_owned()
    }
}
