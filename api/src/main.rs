//! `ledger-server`: `serve` (default), `migrate` and `token`.

use anyhow::Context;
use api::auth::{load_secret, Claims, JwtKeys, Role};
use api::config::{Cli, Command, TokenArgs};
use api::{Config, LogFormat};
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::EnvFilter;

/// glibc's allocator spent about a third of the server's time under batch
/// load (many short-lived JSON values across threads); mimalloc does the
/// same work in a fraction of it (docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Stack of each runtime thread: debug builds keep every await point's
/// locals on the stack, and a deep request (a capture that loads the
/// account, through the committer and the store) came close to tokio's
/// 2 MiB default under load (a stack overflow seen once in the
/// two-instance test). Release builds need far less.
const THREAD_STACK_BYTES: usize = 8 * 1024 * 1024;

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(THREAD_STACK_BYTES)
        .build()
        .context("starting the runtime")?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    api::install_crypto_provider();
    let command = cli.command.unwrap_or(Command::Serve);
    // `token` prints the token alone on stdout, so its logs go to stderr.
    let log_to_stderr = matches!(command, Command::Token(_));
    init_tracing(&cli.config.log, cli.config.log_format, log_to_stderr)?;
    match command {
        Command::Token(args) => match mint_token(&cli.config, &args).await {
            Ok(token) => println!("{token}"),
            Err(e) => {
                // A usage or configuration mistake, not a crash: one line on
                // stderr like clap's own errors, without anyhow's backtrace
                // (which RUST_BACKTRACE would add).
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
        },
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

/// `ledger-server token`: a JWT signed with the secret `serve` uses.
async fn mint_token(config: &Config, args: &TokenArgs) -> anyhow::Result<String> {
    // Checked before the secret is resolved, so that a mistake creates no file.
    if args.role.requires_account() && args.account.is_none() {
        anyhow::bail!(
            "--role {role} needs --account <ACCOUNT_ID>: {role} tokens are scoped to one \
             account (only developer and system_bot tokens may omit it)",
            role = args.role
        );
    }
    let sub = match (&args.sub, args.role, args.account) {
        (Some(sub), _, _) => sub.clone(),
        // The account's current owner, so that the roster check accepts
        // the token (which acts with the role it claims, never more). An
        // account that cannot be looked up gets `cli`, which the roster
        // check refuses.
        (None, Role::Owner | Role::Admin | Role::Editor | Role::Viewer, Some(account)) => {
            let owner = match api::open_store(config).await {
                Ok(store) => app::team::current_owner(&store, account)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}")),
                Err(e) => Err(e),
            };
            match owner {
                Ok(Some(owner)) => owner,
                Ok(None) => {
                    eprintln!("warning: no account {account} in the store; the token's sub is cli");
                    "cli".to_owned()
                }
                Err(e) => {
                    eprintln!(
                        "warning: the account's owner could not be looked up ({e:#}); the token's sub is cli"
                    );
                    "cli".to_owned()
                }
            }
        }
        (None, _, _) => "cli".to_owned(),
    };
    let claims = Claims::new(
        sub,
        args.role,
        args.account,
        chrono::Utc::now().timestamp(),
        args.ttl,
    )?;
    let keys = JwtKeys::from_secret(&load_secret(config)?);
    Ok(keys.mint(&claims))
}

fn init_tracing(filter: &str, format: LogFormat, to_stderr: bool) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).context("LEDGER_LOG is not a valid tracing filter")?;
    let writer = if to_stderr {
        BoxMakeWriter::new(std::io::stderr)
    } else {
        BoxMakeWriter::new(std::io::stdout)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
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
