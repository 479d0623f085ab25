//! Background jobs the server runs on its own behalf, each until its
//! shutdown future resolves: the expiry sweeper and the subscription period
//! ticker.

use std::future::Future;
use std::time::Duration;

use events::{AccountId, Actor};
use ledger::AccountCommand;
use store::CommandContext;
use tracing::{debug, warn};

use crate::error::AppError;
use crate::{now, App};

/// How often the sweeper looks for due holds and lots.
pub const SWEEP_INTERVAL_MILLIS: u64 = 1_000;
/// Most accounts handled per sweep.
pub const SWEEP_ACCOUNTS_MAX: i64 = 100;
/// How often the period ticker processes due subscriptions.
pub const PERIOD_TICK_SECONDS: u64 = 60;

/// Releases holds past their TTL and expires grants past their expiry
/// without waiting for the account's next command, so the read models show
/// them on time; sweeps every [`SWEEP_INTERVAL_MILLIS`].
pub async fn run_sweeper(app: App, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(Duration::from_millis(SWEEP_INTERVAL_MILLIS)) => {
                if let Err(e) = sweep(&app).await {
                    warn!(error = %e, "expiry sweep failed");
                }
            }
        }
    }
}

/// One sweep: each account the projector's `expiry_schedule` says is due
/// gets one `ExpireDue` command; returns how many accounts were handled.
pub async fn sweep(app: &App) -> Result<usize, AppError> {
    let now = now();
    let due = app
        .read_models
        .accounts_due(now, SWEEP_ACCOUNTS_MAX)
        .await?;
    let ctx = CommandContext::new(Actor::system("expiry-sweeper"));
    for id in &due {
        let Ok(account) = AccountId::parse(id) else {
            continue;
        };
        match app
            .run_account(
                &account.to_string(),
                AccountCommand::ExpireDue { now },
                &ctx,
                None,
                &[],
            )
            .await
        {
            Ok(done) => {
                debug!(account = %id, events = done.events.len(), "expired due items");
                app.read_models.clear_due(id, now).await?;
            }
            Err(e) => warn!(account = %id, error = %e, "could not expire due items"),
        }
    }
    Ok(due.len())
}

/// How often the revoked-token list is reloaded from the store, so that a
/// revocation made on another server takes effect here too.
pub const REVOCATIONS_RELOAD_MILLIS: u64 = 5_000;

/// Reloads the revoked-token list every [`REVOCATIONS_RELOAD_MILLIS`].
pub async fn run_revocations(app: App, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(Duration::from_millis(REVOCATIONS_RELOAD_MILLIS)) => {
                if let Err(e) = crate::tokens::reload(&app).await {
                    warn!(error = %e, "reloading the revoked tokens failed");
                }
            }
        }
    }
}

/// The period ticker: processes due subscriptions with the real clock every
/// [`PERIOD_TICK_SECONDS`] ([`crate::subscriptions::periods::process_due`]),
/// next to the expiry sweeper.
pub async fn run_period_ticker(app: App, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let actor = Actor::system("subscription-periods");
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(Duration::from_secs(PERIOD_TICK_SECONDS)) => {
                match crate::subscriptions::periods::process_due(&app, &actor, now()).await {
                    Ok(run) if run.changed > 0 || run.failed > 0 => {
                        debug!(?run, "subscription periods processed");
                    }
                    Ok(_) => {}
                    Err(e) => warn!(error = ?e, "subscription period processing failed"),
                }
            }
        }
    }
}
