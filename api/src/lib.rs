//! `ledger-server`: configuration, start-up and the HTTP front of the ledger.
//!
//! Only this crate knows HTTP and NATS. Start-up order: install the
//! one rustls crypto provider, open the store, migrate, seed the catalog once,
//! start the projector, then serve.

pub mod auth;
pub mod catalog_cache;
pub mod config;
pub mod error;
pub mod gateway;
pub mod http;
pub mod nats;

use std::sync::Arc;

use anyhow::Context;
use axum::extract::FromRef;
use events::{Actor, CATALOG_ID};
use ledger::{Catalog, CatalogCommand};
use projections::{Projector, ProjectorHandle, ReadModels};
use store::{AccountCommitter, CommandContext, CommandService, CommitterConfig, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::info;

pub use catalog_cache::CatalogCache;
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

/// Shared state of the running server.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub commands: CommandService,
    /// The one writer of account streams in this process (group commit).
    pub committer: AccountCommitter,
    pub read_models: ReadModels,
    pub projector: ProjectorHandle,
    pub catalog: CatalogCache,
    pub jwt: Arc<JwtKeys>,
    pub config: Arc<Config>,
    /// The NATS connection, when `LEDGER_NATS_URL` is set.
    pub nats: Option<nats::NatsHandle>,
    /// The payment gateways configured (Stripe with `STRIPE_SECRET_KEY`).
    pub gateways: gateway::Gateways,
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

/// Writes the default plans, packages and cost table once per database.
pub async fn seed_catalog(commands: &CommandService) -> anyhow::Result<()> {
    let done = commands
        .execute::<Catalog>(
            CATALOG_ID,
            CatalogCommand::SeedDefaults {
                actor: "ledger-server".into(),
                now: chrono::Utc::now(),
            },
            &CommandContext::new(Actor::system("ledger-server")),
            None,
        )
        .await
        .context("seeding the catalog")?;
    if !done.events.is_empty() {
        info!(events = done.events.len(), "seeded the default catalog");
    }
    Ok(())
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
    let gateways =
        gateway::Gateways::from_config(&config).context("configuring the payment gateways")?;
    let store = open_store(&config).await?;
    let commands = CommandService::new(store.clone());
    seed_catalog(&commands).await?;
    let (projector, handle) = Projector::new(store.clone())
        .await
        .context("starting the projector")?;
    let caught_up = projector
        .catch_up()
        .await
        .context("catching the read models up")?;
    if caught_up > 0 {
        info!(events = caught_up, "read models caught up");
    }
    let catalog = CatalogCache::load(store.clone())
        .await
        .context("loading the catalog")?;
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
            committer: AccountCommitter::start(commands.clone(), CommitterConfig::default()),
            read_models: ReadModels::new(store.clone()),
            store,
            commands,
            projector: handle,
            catalog,
            jwt: Arc::new(JwtKeys::from_secret(&secret)),
            config: Arc::new(config),
            nats: nats.as_ref().map(|n| n.handle.clone()),
            gateways,
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
    let sweeper_task = tokio::spawn(http::sweeper::run(state.clone(), stopped(stop_rx.clone())));
    let periods_task = tokio::spawn(http::subscriptions::run(
        state.clone(),
        stopped(stop_rx.clone()),
    ));
    // NATS commands take the same router as HTTP (in process), so both
    // transports share one implementation (docs/adr/0009-nats.md).
    let nats_task = nats.map(|nats| {
        tokio::spawn(nats::run(
            nats,
            http::router(state.clone()),
            state.store.clone(),
            state.projector.clone(),
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
