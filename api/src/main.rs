//! `ledger-server`: `serve` (default) and `migrate`.

use anyhow::Context;
use api::config::{Cli, Command};
use api::LogFormat;
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    api::install_crypto_provider();
    init_tracing(&cli.config.log, cli.config.log_format)?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Migrate => {
            api::open_store(&cli.config).await?;
            tracing::info!(database = %cli.config.redacted_database_url(), "migrations applied");
        }
        Command::Serve => {
            let listen = cli.config.listen;
            let state = api::prepare(cli.config).await?;
            let listener = TcpListener::bind(listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            api::serve(state, listener, shutdown_signal()).await?;
            tracing::info!("ledger-server stopped");
        }
    }
    Ok(())
}

fn init_tracing(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).context("LEDGER_LOG is not a valid tracing filter")?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Pretty => builder.init(),
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
