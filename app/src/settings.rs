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
}
