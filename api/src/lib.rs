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
use tracing::info;

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
    let secret = auth::load_secret(&config).context("loading the JWT secret")?;
    let gateways = app::gateway::Gateways::configured(
        config.stripe_secret_key.as_ref(),
        &config.stripe_api_base,
    )
    .context("configuring the payment gateways")?;
    let store = open_store(&config).await?;
    let commands = CommandService::new(store.clone());
    let (projector, handle) = Projector::new(store.clone())
        .await
        .context("starting the projector")?;
    let catalog = CatalogCache::load(store.clone())
        .await
        .context("loading the catalog")?;
    let app = App {
        committer: AccountCommitter::start(commands.clone(), CommitterConfig::default()),
        read_models: ReadModels::new(store.clone()),
        store,
        commands,
        projector: handle,
        catalog,
        gateways,
        settings: Arc::new(Settings {
            stripe_webhook_secret: config.stripe_webhook_secret.clone(),
        }),
    };
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
            jwt: Arc::new(JwtKeys::from_secret(&secret)),
            config: Arc::new(config),
            nats: nats.as_ref().map(|n| n.handle.clone()),
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
    let periods_task = tokio::spawn(app::jobs::run_period_ticker(
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
    let served = axum::serve(listener, http::app(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP");
    let _ = stop_tx.send(true);
    if let Some(task) = nats_task {
        let _ = task.await;
    }
    let _ = tokio::join!(projector_task, catalog_task, sweeper_task, periods_task);
    served
}
