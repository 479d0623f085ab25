//! What the use cases need of the server's configuration, and nothing of
//! its transports: the binary's `Config` (flags and environment) builds a
//! [`Settings`] at start-up.

use std::fmt;

/// A configured secret. Its `Debug` is redacted so that logging a
/// configuration (or an error holding one) never prints it; read it with
/// [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The use cases' settings.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Signing secret of the Stripe webhook endpoint (`whsec_…`); without
    /// it Stripe's webhooks are refused as unavailable.
    pub stripe_webhook_secret: Option<Secret>,
    /// The id PayPal gave our webhook (`PAYPAL_WEBHOOK_ID`), which its
    /// verify-webhook-signature call needs; without it PayPal's webhooks
    /// are refused as unavailable.
    pub paypal_webhook_id: Option<String>,
    /// `run-periods` may take a `now` in the future (tests and demos).
    pub allow_clock_override: bool,
    /// Who may approve or reject manual payments (normalized subjects);
    /// empty: any developer other than the submitter.
    pub approvers: Vec<String>,
    /// Owner/admin/editor/viewer tokens must belong to active members of
    /// their account, and act with the roster's role (docs/adr/0017).
    pub roster_check: bool,
    /// The key invitation tokens are derived from (the server's JWT
    /// secret); without one they are random, and a retried invite cannot
    /// show its token again.
    pub invitation_key: Option<Secret>,
    /// Emails and outgoing webhooks (docs/adr/0021-notifications.md).
    pub notify: crate::notify::NotifySettings,
}

/// A subject as compared for approvals: trimmed and case-folded, so that
/// `" Alice@Example.com"` and `"alice@example.com"` are one person.
pub fn normalize_subject(sub: &str) -> String {
    sub.trim().to_lowercase()
}

impl Settings {
    /// Whether `sub` is one of the subjects who decide on manual payments
    /// (everyone when `approvers` is empty; the submitter rule is apart).
    pub fn is_approver(&self, sub: &str) -> bool {
        self.approvers.is_empty() || self.approvers.contains(&normalize_subject(sub))
    }
}
