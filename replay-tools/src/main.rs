//! `ledger-replay`: audit tools for finance (see the crate docs and
//! README.md). Errors are one line on stderr and exit code 2; `verify`
//! exits 1 when it finds discrepancies.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use replay_tools::history::{for_each_entry, Format, HistoryWriter, Streams};
use replay_tools::rebuild::{progress_bar, projection_names, Selection};
use replay_tools::time::{parse_instant, DateEnd};
use replay_tools::{asof, export, rebuild, verify, ReplayError};
use store::audit::Access;
use store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "ledger-replay",
    version,
    about = "Audit the credit ledger from its events: as-of balances, history, verify, rebuild, export"
)]
struct Cli {
    /// The ledger's database, as the server is configured.
    #[arg(long, env = "LEDGER_DATABASE_URL", default_value = store::DEFAULT_DATABASE_URL, global = true)]
    database_url: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Balance, held and available of an account at an instant, as JSON.
    Balance {
        account: String,
        /// RFC 3339 instant or plain date (its end); default now.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Every event of an account with its signed amount and running balance.
    History {
        account: String,
        /// RFC 3339 instant or plain date (its start).
        #[arg(long)]
        from: Option<String>,
        /// RFC 3339 instant or plain date (its end).
        #[arg(long)]
        to: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Recompute every hash chain, fold every account and diff the read
    /// models; exit 1 listing each discrepancy.
    Verify {
        /// Only this account's stream and rows.
        #[arg(long, conflicts_with = "pack")]
        account: Option<String>,
        /// Re-check an audit pack written by `export`, without a database.
        #[arg(long)]
        pack: Option<PathBuf>,
    },
    /// Refill read models (and replay checkpoints) from the log.
    Rebuild {
        /// all (default), read_models, checkpoints, or one table.
        #[arg(long, help = format!("One of: {}", projection_names()))]
        projection: Option<String>,
    },
    /// Write an audit pack for an account into a folder.
    Export {
        account: String,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LEDGER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ledger-replay: cannot start: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let line = e.to_string().replace('\n', " ");
            eprintln!("ledger-replay: {line}");
            ExitCode::from(2)
        }
    }
}

fn out_line(s: &str) -> Result<(), ReplayError> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{s}").map_err(ReplayError::io("cannot write to stdout"))
}

async fn open(url: &str, access: Access) -> Result<Store, ReplayError> {
    Ok(Store::open_existing(url, access).await?)
}

async fn run(cli: Cli) -> Result<ExitCode, ReplayError> {
    let url = cli.database_url.as_str();
    match cli.command {
        Command::Balance { account, as_of } => {
            let at = match as_of {
                Some(s) => parse_instant(&s, DateEnd::End)?,
                None => chrono::Utc::now(),
            };
            let store = open(url, Access::ReadOnly).await?;
            let b = asof::balance_as_of(&store, &account, at).await?;
            out_line(&serde_json::to_string_pretty(&b)?)?;
        }
        Command::History {
            account,
            from,
            to,
            format,
        } => {
            let from = from
                .map(|s| parse_instant(&s, DateEnd::Start))
                .transpose()?;
            let to = to.map(|s| parse_instant(&s, DateEnd::End)).transpose()?;
            let store = open(url, Access::ReadOnly).await?;
            let stdout = std::io::stdout();
            let mut writer = HistoryWriter::new(format, std::io::BufWriter::new(stdout.lock()));
            for_each_entry(&store, &account, Streams::CreditsAndTeam, from, to, |e| {
                writer.write(&e)
            })
            .await?;
            writer.finish()?;
        }
        Command::Verify { account, pack } => {
            if let Some(dir) = pack {
                let found = export::verify_pack(&dir)?;
                for d in &found {
                    out_line(&d.to_string())?;
                }
                return Ok(if found.is_empty() {
                    out_line(&format!("pack {} verified: intact", dir.display()))?;
                    ExitCode::SUCCESS
                } else {
                    out_line(&format!(
                        "pack {}: {} discrepancies",
                        dir.display(),
                        found.len()
                    ))?;
                    ExitCode::from(1)
                });
            }
            let store = open(url, Access::ReadOnly).await?;
            let r = verify::verify(&store, account.as_deref()).await?;
            for d in &r.discrepancies {
                out_line(&d.to_string())?;
            }
            let listed = if r.discrepancy_count as usize > r.discrepancies.len() {
                format!(" (first {} listed)", r.discrepancies.len())
            } else {
                String::new()
            };
            out_line(&format!(
                "{}: {} streams, {} events (head position {}), {} accounts, {} read-model rows up to position {}, {} checkpoints, {} snapshots; {} discrepancies{listed}",
                if r.ok { "clean" } else { "FAILED" },
                r.streams,
                r.events,
                r.head_position,
                r.accounts,
                r.read_model_rows_checked,
                r.projected_position,
                r.checkpoints_checked,
                r.snapshots_checked,
                r.discrepancy_count,
            ))?;
            return Ok(if r.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Command::Rebuild { projection } => {
            let selection = Selection::parse(projection.as_deref())?;
            let store = open(url, Access::ReadWrite).await?;
            let bar = progress_bar();
            let o = rebuild::rebuild(&store, &selection, &bar).await?;
            eprintln!(
                "rebuilt {} from {} events up to position {} in {:.2} s: {:.0} events/s; {} checkpoints",
                if o.tables.is_empty() { "checkpoints".to_owned() } else { o.tables.join(", ") },
                o.events,
                o.upto_position,
                o.seconds,
                o.events_per_second,
                o.checkpoints
            );
            out_line(&serde_json::to_string(&o)?)?;
        }
        Command::Export { account, out } => {
            let store = open(url, Access::ReadOnly).await?;
            let (v, report) = export::export(&store, &account, &out).await?;
            out_line(&format!(
                "exported {} events of account {} to {} (chain head {}); verify {}",
                v.events,
                v.account_id,
                out.display(),
                v.chain_head_hash,
                if report.ok {
                    "clean"
                } else {
                    "found discrepancies"
                }
            ))?;
            return Ok(if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
    }
    Ok(ExitCode::SUCCESS)
}
