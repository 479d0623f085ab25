//! Configuration: flags with environment fallbacks (SPEC §7).

use std::net::SocketAddr;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Settings shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Event store: `sqlite://PATH` (created when missing) or `postgres://…`.
    #[arg(long, env = "LEDGER_DATABASE_URL", default_value = store::DEFAULT_DATABASE_URL, global = true)]
    pub database_url: String,

    /// Address the HTTP API listens on.
    #[arg(
        long,
        env = "LEDGER_LISTEN",
        default_value = "127.0.0.1:8080",
        global = true
    )]
    pub listen: SocketAddr,

    /// tracing filter, e.g. `info` or `store=debug,info`.
    #[arg(long, env = "LEDGER_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Log format.
    #[arg(
        long,
        env = "LEDGER_LOG_FORMAT",
        value_enum,
        default_value = "pretty",
        global = true
    )]
    pub log_format: LogFormat,
}

impl Config {
    /// The database URL without its password, for logs and errors.
    pub fn redacted_database_url(&self) -> String {
        redact(&self.database_url)
    }
}

fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "ledger-server",
    version,
    about = "Event-sourced credit and billing ledger"
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the HTTP API (the default).
    Serve,
    /// Apply the database migrations and exit.
    Migrate,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact("postgres://ledger:s3cret@db:5432/ledger"),
            "postgres://ledger:***@db:5432/ledger"
        );
        assert_eq!(
            redact("sqlite://./data/ledger.db"),
            "sqlite://./data/ledger.db"
        );
    }

    #[test]
    fn defaults_need_no_configuration() {
        let cli = Cli::try_parse_from(["ledger-server"]).unwrap();
        assert_eq!(cli.config.database_url, "sqlite://./data/ledger.db");
        assert_eq!(cli.config.listen.to_string(), "127.0.0.1:8080");
        assert!(cli.command.is_none());
    }

    #[test]
    fn flags_override_and_subcommands_parse() {
        let cli = Cli::try_parse_from([
            "ledger-server",
            "migrate",
            "--database-url",
            "postgres://postgres@127.0.0.1/x",
        ])
        .unwrap();
        assert!(matches!(cli.command, Some(Command::Migrate)));
        assert_eq!(cli.config.database_url, "postgres://postgres@127.0.0.1/x");
    }
}
