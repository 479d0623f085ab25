//! Configuration: flags with environment fallbacks (SPEC §7).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use events::AccountId;

use crate::auth::{parse_ttl, Role};

/// Where local state (the generated JWT secret) lives when neither
/// `--data-dir` nor a SQLite database URL says otherwise.
pub const DEFAULT_DATA_DIR: &str = "./data";

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

    /// Longest the group committer waits, once a command is queued, for
    /// more to share its transaction, in microseconds: 0 commits what is
    /// queued at once (lowest latency at low load), more trades latency for
    /// fuller transactions.
    #[arg(long, env = "LEDGER_COMMITTER_WAIT_US", default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(0..=100_000), global = true)]
    pub committer_wait_us: u64,

    /// Group committers sharing the accounts (each account always on the
    /// same one): transactions in flight at once. Default: 2 on PostgreSQL,
    /// 1 on SQLite (docs/adr/0022-batch-deductions.md).
    #[arg(long, env = "LEDGER_COMMITTER_SHARDS", value_parser = clap::value_parser!(u64).range(1..=16), global = true)]
    pub committer_shards: Option<u64>,

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

    /// HS256 secret of the API's JWTs, at least 32 bytes. When unset, a random
    /// one is generated once and kept in `<data dir>/jwt-secret` (mode 0600).
    /// Prefer the environment variable: a flag is visible to other users in `ps`.
    #[arg(long, env = "LEDGER_JWT_SECRET", hide_env_values = true, global = true)]
    pub jwt_secret: Option<Secret>,

    /// NATS server for command intake and event fan-out (SPEC §4), e.g.
    /// `nats://127.0.0.1:4222`. Off when unset: the server is HTTP only.
    #[arg(long, env = "LEDGER_NATS_URL", global = true)]
    pub nats_url: Option<String>,

    /// Folder for local state such as the generated JWT secret. Defaults to the
    /// folder of a `sqlite://PATH` database, else `./data`. Created when missing.
    #[arg(long, env = "LEDGER_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// Stripe secret API key (`sk_…`). Without it the `stripe` payment
    /// method answers 503 `unavailable`; it is never faked.
    #[arg(long, env = "STRIPE_SECRET_KEY", hide_env_values = true, global = true)]
    pub stripe_secret_key: Option<Secret>,

    /// Signing secret of the Stripe webhook endpoint (`whsec_…`). Without it
    /// `POST /v1/billing/webhooks/stripe` answers 503.
    #[arg(
        long,
        env = "STRIPE_WEBHOOK_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub stripe_webhook_secret: Option<Secret>,

    /// Base URL of Stripe's API (tests point it at a local stub).
    #[arg(
        long,
        env = "STRIPE_API_BASE",
        default_value = "https://api.stripe.com",
        global = true
    )]
    pub stripe_api_base: String,

    /// Client id of the PayPal REST app. With `PAYPAL_CLIENT_SECRET` it
    /// makes the `paypal` payment method available; without both it answers
    /// 503 `unavailable`, never faked.
    #[arg(long, env = "PAYPAL_CLIENT_ID", global = true)]
    pub paypal_client_id: Option<String>,

    /// Secret of the PayPal REST app.
    #[arg(
        long,
        env = "PAYPAL_CLIENT_SECRET",
        hide_env_values = true,
        global = true
    )]
    pub paypal_client_secret: Option<Secret>,

    /// Id PayPal gave the webhook pointing at
    /// `POST /v1/billing/webhooks/paypal`; PayPal's signature verification
    /// needs it. Without it (or without the credentials) that route answers
    /// 503.
    #[arg(long, env = "PAYPAL_WEBHOOK_ID", global = true)]
    pub paypal_webhook_id: Option<String>,

    /// Base URL of PayPal's REST API (`https://api-m.sandbox.paypal.com`
    /// for the sandbox; tests point it at a local stub).
    #[arg(
        long,
        env = "PAYPAL_API_BASE",
        default_value = "https://api-m.paypal.com",
        global = true
    )]
    pub paypal_api_base: String,

    #[command(flatten)]
    pub limits: Limits,

    /// Lets `run-periods` take a `now` in the future (tests and demos that
    /// move time). Off: a `now` past the clock is refused with 422.
    #[arg(
        long,
        env = "LEDGER_ALLOW_CLOCK_OVERRIDE",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        global = true
    )]
    pub allow_clock_override: bool,

    /// The roster check: owner/admin/editor/viewer tokens are accepted only
    /// for active members of their account, with the roster's role. `off`
    /// for integrators who manage users elsewhere (docs/adr/0017).
    #[arg(
        long,
        env = "LEDGER_ROSTER_CHECK",
        default_value = "on",
        value_parser = on_off,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "on",
        global = true
    )]
    pub roster_check: bool,

    /// Subjects (JWT `sub`) who may approve or reject manual payments,
    /// comma-separated. Unset: any developer other than the submitter.
    #[arg(long, env = "LEDGER_APPROVERS", global = true)]
    pub approvers: Option<String>,

    /// More verification secrets, `kid=secret` pairs separated by commas:
    /// a token whose header names a `kid` is checked with that secret, so
    /// the signing secret can be rotated without downtime.
    #[arg(long, env = "LEDGER_JWT_KEYS", hide_env_values = true, global = true)]
    pub jwt_keys: Option<Secret>,

    #[command(flatten)]
    pub notify: Notify,
}

/// Emails and outgoing webhooks (docs/adr/0021-notifications.md).
#[derive(Debug, Clone, Args)]
pub struct Notify {
    /// SMTP server for notification emails: `smtp://host:port` (plain,
    /// or STARTTLS when offered), `smtps://user:pass@host` (TLS). Unset:
    /// messages are written as `.eml` files to `<data dir>/mail/`.
    #[arg(long, env = "LEDGER_SMTP_URL", hide_env_values = true, global = true)]
    pub smtp_url: Option<Secret>,

    /// The sender of notification emails.
    #[arg(
        long,
        env = "LEDGER_MAIL_FROM",
        default_value = "Ledger <ledger@localhost>",
        global = true
    )]
    pub mail_from: String,

    /// Where the staff's messages go (a payment awaiting approval). Unset:
    /// none are sent.
    #[arg(long, env = "LEDGER_STAFF_EMAIL", global = true)]
    pub staff_email: Option<String>,

    /// The server's public base URL, for links in emails.
    #[arg(
        long,
        env = "LEDGER_PUBLIC_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub public_url: String,

    /// Let webhook endpoints be link-local or cloud metadata addresses
    /// (169.254.0.0/16, fe80::/10, metadata.google.internal…). Off.
    #[arg(
        long,
        env = "LEDGER_WEBHOOK_ALLOW_LINK_LOCAL",
        default_value_t = false,
        action = clap::ArgAction::Set,
        num_args = 0..=1,
        default_missing_value = "true",
        global = true
    )]
    pub webhook_allow_link_local: bool,

    /// Timeout of one webhook POST, in milliseconds.
    #[arg(long, env = "LEDGER_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=60_000), global = true)]
    pub webhook_timeout_ms: u64,

    /// The pause before a failed delivery's first retry, in milliseconds;
    /// doubled on each further retry (at most an hour).
    #[arg(long, env = "LEDGER_NOTIFY_RETRY_BASE_MS", default_value_t = 5_000, value_parser = clap::value_parser!(i64).range(100..=600_000), global = true)]
    pub notify_retry_base_ms: i64,
}

/// What one caller or connection may take of the server (SECURITY.md).
#[derive(Debug, Clone, Args)]
pub struct Limits {
    /// Longest a client may take to send a request's headers.
    #[arg(long, env = "LEDGER_HEADER_READ_TIMEOUT_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600), global = true)]
    pub header_read_timeout_secs: u64,

    /// Longest a request may take, body and answer included; past it the
    /// answer is 503 `unavailable` (a write's idempotency key makes the
    /// retry safe).
    #[arg(long, env = "LEDGER_REQUEST_TIMEOUT_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), global = true)]
    pub request_timeout_secs: u64,

    /// Most connections open at once; more wait to be accepted.
    #[arg(long, env = "LEDGER_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000), global = true)]
    pub max_connections: u32,

    /// Requests per second per token for owner, admin, editor and viewer
    /// tokens, and per client address without a valid token; 0 turns it off.
    #[arg(
        long,
        env = "LEDGER_RATE_LIMIT_PER_SECOND",
        default_value_t = 50,
        global = true
    )]
    pub rate_limit_per_second: u32,

    /// Requests a token may send at once above the rate.
    #[arg(long, env = "LEDGER_RATE_LIMIT_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..), global = true)]
    pub rate_limit_burst: u32,

    /// Requests per second per developer or system_bot token; unset or 0:
    /// not limited, so a worker fleet is never throttled by default.
    #[arg(long, env = "LEDGER_WORKER_RATE_LIMIT_PER_SECOND", global = true)]
    pub worker_rate_limit_per_second: Option<u32>,
}

impl Config {
    /// The database URL without its password, for logs and errors.
    pub fn redacted_database_url(&self) -> String {
        redact(&self.database_url)
    }

    /// The NATS URL without its credentials, for logs. NATS puts a bare
    /// token where a user name would be (`nats://TOKEN@host`), so the whole
    /// user part goes.
    pub fn redacted_nats_url(&self) -> Option<String> {
        self.nats_url
            .as_deref()
            .map(|url| match url.split_once("://") {
                Some((scheme, rest)) => match rest.rsplit_once('@') {
                    Some((_, host)) => format!("{scheme}://***@{host}"),
                    None => url.to_owned(),
                },
                None => url.to_owned(),
            })
    }

    /// The data directory: `--data-dir`, else the folder of a SQLite
    /// database file, else [`DEFAULT_DATA_DIR`].
    pub fn data_dir(&self) -> PathBuf {
        match &self.data_dir {
            Some(dir) => dir.clone(),
            None => {
                sqlite_folder(&self.database_url).unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR))
            }
        }
    }
}

/// The folder holding the file of a `sqlite://PATH` (or `sqlite:PATH`) URL;
/// `None` for other databases and for in-memory SQLite.
fn sqlite_folder(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let file = rest.split('?').next().unwrap_or_default();
    if file.is_empty() || file == ":memory:" {
        return None;
    }
    let folder = Path::new(file).parent()?;
    Some(if folder.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        folder.to_path_buf()
    })
}

pub use app::Secret;

fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The last `@` ends the user part: a password may contain `@` itself.
    match rest.rsplit_once('@') {
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
    /// Mint a JWT with the configured secret and print it on stdout.
    Token(TokenArgs),
}

/// `ledger-server token --role R [--account A] [--ttl 1h] [--sub S]`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// Role of the token.
    #[arg(long, value_parser = role_parser())]
    pub role: Role,

    /// Account the token is scoped to; required for owner, admin, editor and
    /// viewer, optional for system_bot (which it then scopes).
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub account: Option<AccountId>,

    /// Lifetime: a whole number and a unit, `90s`, `30m`, `1h` or `7d`; at most 365 days.
    #[arg(long, default_value = "1h", value_parser = parse_ttl)]
    pub ttl: Duration,

    /// Subject (`sub` claim), recorded as the actor of the events the token
    /// causes. Default: for owner, admin, editor and viewer tokens, the
    /// account's owner (the roster check accepts it, and the token acts
    /// with the role it claims, never more); otherwise `cli`.
    #[arg(long)]
    pub sub: Option<String>,
}

/// `on`/`off` (also `true`/`false`, `1`/`0`, `yes`/`no`).
fn on_off(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        other => Err(format!("{other:?} is not on or off")),
    }
}

/// `--role`: one of the roles, listed in `--help` and in the error.
fn role_parser() -> impl clap::builder::TypedValueParser<Value = Role> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(Role::ALL.map(Role::as_str))
        .try_map(|s: String| s.parse::<Role>())
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
        // An `@` inside the password hides it all the same.
        assert_eq!(
            redact("postgres://ledger:p@ss@w0rd@db/ledger"),
            "postgres://ledger:***@db/ledger"
        );
    }

    #[test]
    fn nats_credentials_never_reach_the_logs() {
        let shown = |url: &str| config(&["--nats-url", url]).redacted_nats_url().unwrap();
        assert_eq!(
            shown("nats://s3cr3t-token@nats:4222"),
            "nats://***@nats:4222"
        );
        assert_eq!(shown("nats://bot:pw@nats:4222"), "nats://***@nats:4222");
        assert_eq!(shown("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
    }

    #[test]
    fn defaults_need_no_configuration() {
        let cli = Cli::try_parse_from(["ledger-server"]).unwrap();
        assert_eq!(cli.config.database_url, "sqlite://./data/ledger.db");
        assert_eq!(cli.config.listen.to_string(), "127.0.0.1:8080");
        assert!(cli.command.is_none());
        assert!(
            cli.config.nats_url.is_none(),
            "NATS is off unless configured"
        );
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

    fn config(args: &[&str]) -> Config {
        let mut argv = vec!["ledger-server"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().config
    }

    #[test]
    fn the_data_dir_follows_the_sqlite_file_unless_given() {
        let data_dir = |args: &[&str]| config(args).data_dir();
        assert_eq!(
            data_dir(&["--database-url", "sqlite://./data/ledger.db"]),
            PathBuf::from("./data")
        );
        assert_eq!(
            data_dir(&["--database-url", "sqlite:///var/lib/ledger/l.db?mode=rwc"]),
            PathBuf::from("/var/lib/ledger")
        );
        assert_eq!(
            data_dir(&["--database-url", "sqlite:ledger.db"]),
            PathBuf::from(".")
        );
        assert_eq!(
            data_dir(&["--database-url", "sqlite::memory:"]),
            PathBuf::from(DEFAULT_DATA_DIR)
        );
        assert_eq!(
            data_dir(&["--database-url", "postgres://u:p@db/ledger"]),
            PathBuf::from(DEFAULT_DATA_DIR)
        );
        assert_eq!(
            data_dir(&[
                "--database-url",
                "sqlite://./x/l.db",
                "--data-dir",
                "/srv/state"
            ]),
            PathBuf::from("/srv/state")
        );
    }

    #[test]
    fn the_jwt_secret_never_shows_in_debug_output() {
        let c = config(&["--jwt-secret", "correct-horse-battery-staple-0123456789"]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("correct-horse"), "{shown}");
        assert!(shown.contains("Secret(***)"), "{shown}");
    }

    #[test]
    fn stripe_is_off_by_default_and_its_secrets_never_show() {
        let c = config(&[]);
        assert!(c.stripe_secret_key.is_none() && c.stripe_webhook_secret.is_none());
        assert_eq!(c.stripe_api_base, "https://api.stripe.com");
        let c = config(&[
            "--stripe-secret-key",
            "sk_test_very_secret",
            "--stripe-webhook-secret",
            "whsec_very_secret",
            "--stripe-api-base",
            "http://127.0.0.1:9",
        ]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("very_secret"), "{shown}");
        assert_eq!(c.stripe_api_base, "http://127.0.0.1:9");
    }

    #[test]
    fn paypal_is_off_by_default_and_its_secret_never_shows() {
        let c = config(&[]);
        assert!(c.paypal_client_id.is_none() && c.paypal_client_secret.is_none());
        assert!(c.paypal_webhook_id.is_none());
        assert_eq!(c.paypal_api_base, "https://api-m.paypal.com");
        let c = config(&[
            "--paypal-client-id",
            "AaBbCc-client",
            "--paypal-client-secret",
            "EeFf_very_secret",
            "--paypal-webhook-id",
            "8PT597110X687430LKGECATA",
            "--paypal-api-base",
            "http://127.0.0.1:9",
        ]);
        let shown = format!("{c:?}");
        assert!(!shown.contains("very_secret"), "{shown}");
        assert_eq!(c.paypal_client_id.as_deref(), Some("AaBbCc-client"));
        assert_eq!(
            c.paypal_webhook_id.as_deref(),
            Some("8PT597110X687430LKGECATA")
        );
        assert_eq!(c.paypal_api_base, "http://127.0.0.1:9");
    }

    #[test]
    fn the_token_subcommand_parses_its_flags() {
        let account = "0191e5a0-0000-7000-8000-000000000001";
        let cli = Cli::try_parse_from([
            "ledger-server",
            "token",
            "--role",
            "system_bot",
            "--account",
            account,
            "--ttl",
            "30m",
            "--data-dir",
            "/tmp/x",
        ])
        .unwrap();
        let Some(Command::Token(args)) = cli.command else {
            panic!("expected the token subcommand");
        };
        assert_eq!(args.role, Role::SystemBot);
        assert_eq!(args.account.unwrap().to_string(), account);
        assert_eq!(args.ttl, Duration::from_secs(30 * 60));
        assert_eq!(args.sub, None, "the sub is chosen when the token is minted");
        assert_eq!(cli.config.data_dir, Some(PathBuf::from("/tmp/x")));
    }

    #[test]
    fn the_token_subcommand_refuses_an_unknown_role_or_a_bad_ttl() {
        assert!(Cli::try_parse_from(["ledger-server", "token", "--role", "root"]).is_err());
        assert!(
            Cli::try_parse_from(["ledger-server", "token", "--role", "viewer", "--ttl", "0s"])
                .is_err()
        );
    }
}
