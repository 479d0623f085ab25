//! Releases holds past their TTL and expires grants past their expiry
//! without waiting for the account's next command, so the read models show
//! them on time. Work comes from the `expiry_schedule` table the projector
//! fills; each due account gets one `ExpireDue` command.

use std::future::Future;
use std::time::Duration;

use events::{AccountId, Actor};
use ledger::AccountCommand;
use store::sql::Arg;
use store::CommandContext;
use tracing::{debug, warn};

use crate::AppState;

/// How often the sweeper looks for due holds and lots.
pub const SWEEP_INTERVAL_MILLIS: u64 = 1_000;
/// Most accounts handled per sweep.
pub const SWEEP_ACCOUNTS_MAX: i64 = 100;

pub async fn run(state: AppState, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(Duration::from_millis(SWEEP_INTERVAL_MILLIS)) => {
                if let Err(e) = sweep(&state).await {
                    warn!(error = %e, "expiry sweep failed");
                }
            }
        }
    }
}

/// One sweep: returns how many accounts were handled.
pub async fn sweep(state: &AppState) -> Result<usize, store::StoreError> {
    let now = super::now();
    let now_text = projections::time_text(now);
    let due = state
        .store
        .fetch_all(
            "SELECT DISTINCT account_id FROM expiry_schedule WHERE due_at <= $1 \
             ORDER BY account_id LIMIT $2",
            &[Arg::from(now_text.as_str()), SWEEP_ACCOUNTS_MAX.into()],
        )
        .await?;
    let ctx = CommandContext::new(Actor::system("expiry-sweeper"));
    for row in &due {
        let id = row.text("account_id")?;
        let Ok(account) = AccountId::parse(&id) else {
            continue;
        };
        match state
            .submit(
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
                state
                    .store
                    .execute(
                        "DELETE FROM expiry_schedule WHERE account_id = $1 AND due_at <= $2",
                        &[id.as_str().into(), now_text.as_str().into()],
                    )
                    .await?;
            }
            Err(e) => warn!(account = %id, error = %e, "could not expire due items"),
        }
    }
    if !due.is_empty() {
        state.projector.wake();
    }
    Ok(due.len())
}
