//! `ledger-server`: configuration, start-up and the transports (HTTP and
//! NATS) in front of the use cases of the `app` crate.
//!
//! Only this crate knows HTTP and NATS; it decides no rule of its own and
//! runs no SQL: a handler extracts, calls `app`, renders. Start-up order:
//! install the one rustls crypto provider, open the store, migrate, seed
//! the catalog once, start the projector, then serve.

pub mod auth;
pub mod config;
pub mod error;
pub mod http;
pub mod nats;
pub mod telemetry;

use std::sync::Arc;

use anyhow::Context;
use app::{App, CatalogCache, Settings};
use axum::extract::FromRef;
use projections::{Projector, ReadModels};
use store::{AccountCommitter, CommandService, CommitterConfig, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{info, warn};

pub use config::{Config, LogFormat};

use crate::auth::JwtKeys;

/// Installs ring as the process's rustls crypto provider. sqlx and
/// async-nats build on ring while other clients (the KurrentDB client) bring
/// aws-lc-rs; with both compiled in, rustls cannot pick one by itself, so the
/// choice is made here, explicitly, before any TLS client exists.
pub fn install_crypto_provider() {
    // An error only means a provider is installed already (tests call this
    // more than once), which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Shared state of the running server: the use cases' [`App`] and what
/// only the transports need (the token keys, the configuration, NATS).
#[derive(Clone)]
pub struct AppState {
    pub app: App,
    pub jwt: Arc<JwtKeys>,
    pub config: Arc<Config>,
    /// The NATS connection, when `LEDGER_NATS_URL` is set.
    pub nats: Option<nats::NatsHandle>,
    /// `/ready`'s store probe, cached briefly.
    pub ready_probe: Arc<ReadyProbe>,
}

/// Group committers on PostgreSQL: two transactions in flight, one
/// deciding and claiming while the other commits (docs/adr/0022).
pub const COMMITTER_SHARDS_POSTGRES: usize = 2;

/// How long `/ready` reuses its store probe: unauthenticated callers
/// polling it cannot turn into database load.
pub const READY_PROBE_CACHE: std::time::Duration = std::time::Duration::from_secs(1);

/// `/ready`'s last store probe (ping and log head) and when it was made.
#[derive(Debug, Default)]
pub struct ReadyProbe {
    last: tokio::sync::Mutex<Option<(std::time::Instant, i64)>>,
}

impl ReadyProbe {
    /// The log head, from a probe at most [`READY_PROBE_CACHE`] old; a
    /// failed probe is never cached.
    pub async fn head(&self, store: &Store) -> Result<i64, store::StoreError> {
        let mut last = self.last.lock().await;
        if let Some((at, head)) = *last {
            if at.elapsed() < READY_PROBE_CACHE {
                return Ok(head);
            }
        }
        store.ping().await?;
        let head = store.head_position().await?;
        *last = Some((std::time::Instant::now(), head));
        Ok(head)
    }
}

impl std::ops::Deref for AppState {
    type Target = App;
    fn deref(&self) -> &App {
        &self.app
    }
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

/// Shortest Stripe webhook signing secret accepted (`whsec_` and at
/// least ten characters of Stripe's).
pub const STRIPE_WEBHOOK_SECRET_BYTES_MIN: usize = 16;

/// A Stripe webhook signing secret looks like one (`whsec_…`): a secret
/// key or a publishable key pasted by mistake would make every webhook
/// fail its signature, which is better said at start-up.
fn check_webhook_secret(secret: &str) -> anyhow::Result<()> {
    if !secret.starts_with("whsec_")
        || secret.len() < STRIPE_WEBHOOK_SECRET_BYTES_MIN
        || !secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        anyhow::bail!(
            "STRIPE_WEBHOOK_SECRET is not a Stripe webhook signing secret: it starts with \
             whsec_ and is at least {STRIPE_WEBHOOK_SECRET_BYTES_MIN} letters, digits or _ \
             (Stripe dashboard, Developers, Webhooks, the endpoint's signing secret)"
        );
    }
    Ok(())
}

/// PayPal's credentials, when both the client id and the secret are given;
/// one without the other is a mistake better said at start-up than as a
/// PayPal that is silently unavailable.
fn paypal_credentials(config: &Config) -> anyhow::Result<Option<app::gateway::PaypalCredentials>> {
    let id = config
        .paypal_client_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let secret = config
        .paypal_client_secret
        .as_ref()
        .filter(|s| !s.expose().trim().is_empty());
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(Some(app::gateway::PaypalCredentials {
            client_id: id.to_owned(),
            client_secret: secret.clone(),
            api_base: config.paypal_api_base.clone(),
        })),
        (None, None) => {
            if config.paypal_webhook_id.is_some() {
                warn!(
                    "PAYPAL_WEBHOOK_ID is set without PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET: \
                     PayPal's webhooks answer 503 until they are"
                );
            }
            Ok(None)
        }
        _ => anyhow::bail!(
            "PAYPAL_CLIENT_ID and PAYPAL_CLIENT_SECRET go together: give both (the PayPal \
             REST app's client id and secret) or neither"
        ),
    }
}

/// Opens the store named by the configuration and applies the migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let store = Store::connect(&config.database_url)
        .await
        .with_context(|| format!("opening the store at {}", config.redacted_database_url()))?;
    store.migrate().await.context("applying migrations")?;
    Ok(store)
}

/// A prepared server: its state and the background tasks it needs.
pub struct Prepared {
    pub state: AppState,
    pub projector: Projector,
    /// The NATS side, started by [`serve`] when configured.
    pub nats: Option<nats::Nats>,
}

/// Opens, migrates, seeds, catches the read models up and returns the
/// server's state.
pub async fn prepare(config: Config) -> anyhow::Result<Prepared> {
    // A bad secret fails before anything touches the database.
    let revocations = app::caller::Revocations::default();
    let keys = auth::load_keys(&config, revocations.clone()).context("loading the JWT secret")?;
    // Invitation tokens are derived from the signing secret (docs/adr/0017).
    let jwt_secret = auth::load_secret(&config).context("loading the JWT secret")?;
    let gateways = app::gateway::Gateways::configured(
        config.stripe_secret_key.as_ref(),
        &config.stripe_api_base,
        paypal_credentials(&config)?.as_ref(),
    )
    .context("configuring the payment gateways")?;
    if let Some(secret) = &config.stripe_webhook_secret {
        check_webhook_secret(secret.expose())?;
    }
    let store = open_store(&config).await?;
    let commands = CommandService::new(store.clone());
    let (projector, handle) = Projector::new(store.clone())
        .await
        .context("starting the projector")?;
    let catalog = CatalogCache::load(store.clone())
        .await
        .context("loading the catalog")?;
    let app = App {
        revocations,
        written: Arc::default(),
        committer: AccountCommitter::start(
            commands.clone(),
            CommitterConfig {
                // Two transactions in flight on PostgreSQL (docs/adr/0022).
                shards: match (config.committer_shards, store.backend()) {
                    (Some(n), _) => usize::try_from(n).unwrap_or(1),
                    (None, store::Backend::Postgres) => COMMITTER_SHARDS_POSTGRES,
                    (None, _) => 1,
                },
                batch_wait: std::time::Duration::from_micros(config.committer_wait_us),
                ..CommitterConfig::default()
            },
        ),
        read_models: ReadModels::new(store.clone()),
        store,
        commands,
        projector: handle,
        catalog,
        gateways,
        settings: Arc::new(Settings {
            stripe_webhook_secret: config.stripe_webhook_secret.clone(),
            paypal_webhook_id: config
                .paypal_webhook_id
                .as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            allow_clock_override: config.allow_clock_override,
            approvers: config
                .approvers
                .as_deref()
                .unwrap_or_default()
                .split(',')
                .map(app::settings::normalize_subject)
                .filter(|s| !s.is_empty())
                .collect(),
            roster_check: config.roster_check,
            invitation_key: Some(app::Secret::from(hex::encode(&jwt_secret))),
            notify: app::notify::NotifySettings {
                smtp_url: config
                    .notify
                    .smtp_url
                    .as_ref()
                    .map(|s| app::Secret::from(s.expose().to_owned())),
                mail_from: config.notify.mail_from.clone(),
                mail_dir: config.data_dir().join("mail"),
                public_url: config.notify.public_url.clone(),
                staff_email: config
                    .notify
                    .staff_email
                    .as_deref()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned),
                webhook_allow_link_local: config.notify.webhook_allow_link_local,
                webhook_timeout_millis: config.notify.webhook_timeout_ms,
                retry_base_millis: config.notify.notify_retry_base_ms,
            },
        }),
        rosters: Default::default(),
    };
    if app.settings.approvers.is_empty() {
        warn!(
            "LEDGER_APPROVERS is unset: any developer other than the submitter may approve \
             or reject manual payments"
        );
    }
    app::tokens::reload(&app)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("loading the revoked tokens")?;
    let seeded = app::catalog::seed(&app)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("seeding the catalog")?;
    if seeded > 0 {
        info!(events = seeded, "seeded the default catalog");
    }
    let caught_up = projector
        .catch_up()
        .await
        .context("catching the read models up")?;
    if caught_up > 0 {
        info!(events = caught_up, "read models caught up");
    }
    // Never waits for NATS: the client connects (and reconnects) in the
    // background, and HTTP serves meanwhile.
    let nats = match &config.nats_url {
        Some(url) => {
            let nats = nats::connect(url).await.with_context(|| {
                format!(
                    "configuring NATS at {}",
                    config.redacted_nats_url().unwrap_or_default()
                )
            })?;
            info!(url = %config.redacted_nats_url().unwrap_or_default(), "NATS enabled");
            Some(nats)
        }
        None => None,
    };
    Ok(Prepared {
        state: AppState {
            app,
            jwt: Arc::new(keys),
            config: Arc::new(config),
            nats: nats.as_ref().map(|n| n.handle.clone()),
            ready_probe: Arc::default(),
        },
        projector,
        nats,
    })
}

/// Serves until `shutdown` resolves, then finishes in-flight requests and
/// stops the background tasks.
pub async fn serve(
    prepared: Prepared,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Prepared {
        state,
        projector,
        nats,
    } = prepared;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let projector_task = tokio::spawn(projector.run(stopped(stop_rx.clone())));
    let catalog_task = tokio::spawn(state.catalog.clone().run(stopped(stop_rx.clone())));
    let sweeper_task = tokio::spawn(app::jobs::run_sweeper(
        state.app.clone(),
        stopped(stop_rx.clone()),
    ));
    let revocations_task = tokio::spawn(app::jobs::run_revocations(
        state.app.clone(),
        stopped(stop_rx.clone()),
    ));
    let periods_task = tokio::spawn(app::jobs::run_period_ticker(
        state.app.clone(),
        stopped(stop_rx.clone()),
    ));
    let notifier_task = tokio::spawn(app::notify::run_notifier(
        state.app.clone(),
        stopped(stop_rx.clone()),
    ));
    // NATS commands call the same use cases as HTTP (app::credits), so both
    // transports share one implementation (docs/adr/0014-app-layer.md).
    let nats_task = nats.map(|nats| {
        tokio::spawn(nats::run(
            nats,
            state.app.clone(),
            state.jwt.clone(),
            stopped(stop_rx),
        ))
    });
    info!(%addr, backend = ?state.store.backend(), "ledger-server listening");
    let limits = state.config.limits.clone();
    let served = http::listener::serve(listener, http::service(state), &limits, shutdown)
        .await
        .context("serving HTTP");
    let _ = stop_tx.send(true);
    if let Some(task) = nats_task {
        let _ = task.await;
    }
    let _ = tokio::join!(
        projector_task,
        catalog_task,
        sweeper_task,
        periods_task,
        revocations_task,
        notifier_task
    );
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paypal_needs_both_its_client_id_and_secret() {
        let config = |args: &[&str]| {
            let mut argv = vec!["ledger-server"];
            argv.extend_from_slice(args);
            <config::Cli as clap::Parser>::try_parse_from(argv)
                .unwrap()
                .config
        };
        assert!(paypal_credentials(&config(&[])).unwrap().is_none());
        let both = paypal_credentials(&config(&[
            "--paypal-client-id",
            "client",
            "--paypal-client-secret",
            "secret",
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(both.client_id, "client");
        assert_eq!(both.client_secret.expose(), "secret");
        assert_eq!(both.api_base, "https://api-m.paypal.com");
        assert!(paypal_credentials(&config(&["--paypal-client-id", "client"])).is_err());
        assert!(paypal_credentials(&config(&["--paypal-client-secret", "secret"])).is_err());
    }

    #[test]
    fn only_a_webhook_signing_secret_is_taken_for_one() {
        assert!(check_webhook_secret("whsec_0123456789abcdef").is_ok());
        for wrong in [
            "sk_live_0123456789abcdef",
            "whsec_short",
            "whsec_0123456789 abc",
            "",
        ] {
            assert!(check_webhook_secret(wrong).is_err(), "{wrong:?}");
        }
    }
}
