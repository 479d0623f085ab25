//! `ledger-server`: configuration, start-up and the HTTP front of the ledger.
//!
//! Only this crate knows HTTP (and, later, NATS). Start-up order: install the
//! one rustls crypto provider, open the store, migrate, seed the catalog once,
//! then serve.

pub mod config;
pub mod error;
pub mod http;

use std::sync::Arc;

use anyhow::Context;
use events::{Actor, CATALOG_ID};
use ledger::{Catalog, CatalogCommand};
use store::{CommandContext, CommandService, Store};
use tokio::net::TcpListener;
use tracing::info;

pub use config::{Config, LogFormat};

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
    pub config: Arc<Config>,
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

/// Opens, migrates, seeds and returns the server's state.
pub async fn prepare(config: Config) -> anyhow::Result<AppState> {
    let store = open_store(&config).await?;
    let commands = CommandService::new(store.clone());
    seed_catalog(&commands).await?;
    Ok(AppState {
        store,
        commands,
        config: Arc::new(config),
    })
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn serve(
    state: AppState,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, backend = ?state.store.backend(), "ledger-server listening");
    axum::serve(listener, http::router(state))
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving HTTP")
}
