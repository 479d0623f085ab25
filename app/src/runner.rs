//! The one place that runs commands: account commands through the group
//! committer (the one in-process writer of account streams), every other
//! aggregate's through the plain command service; each run is timed under
//! its command's name and wakes the projector. Also what a use case needs
//! around a run: the idempotency claim a key is bound to, the log position
//! to answer with, and waiting for the read models.

use std::time::Duration;

use events::AccountEvent;
use events::{AccountId, IdempotencyKey};
use ledger::{AccountCommand, AccountError, CreditAccount};
use store::{
    request_hash, BatchCommand, BatchResult, CommandContext, Executed, IdempotencyClaim,
    RecentOutcomes, Reservation, ServiceError, StoreError, SubmitError,
};
use tracing::error;

use crate::caller::Caller;
use crate::error::AppError;
use crate::input::MIN_POSITION_WAIT_MILLIS_MAX;
use crate::telemetry::{observe_batch, time_command};
use crate::{App, Written};

/// The request an idempotency key is bound to: the use case's route words
/// and the canonical body. These words are part of every stored claim: a
/// key claimed before a change must still hash the same, so they never
/// change (pinned by `api/tests/idempotency_hashes.rs`).
pub fn claim(key: &IdempotencyKey, route: &str, canonical_body: &str) -> IdempotencyClaim {
    IdempotencyClaim {
        key: key.clone(),
        request_hash: request_hash(format!("{route}\n{canonical_body}").as_bytes()),
    }
}

impl App {
    /// Runs an account command for a caller and wakes the projector. Its
    /// latency goes to the `ledger_command_duration_seconds` histogram.
    pub async fn run(
        &self,
        caller: &Caller,
        account: AccountId,
        command: AccountCommand,
        claim: Option<&IdempotencyClaim>,
        reservations: &[Reservation],
    ) -> Result<Executed<CreditAccount>, AppError> {
        let ctx = CommandContext::new(caller.actor());
        let done = self
            .run_account(&account.to_string(), command, &ctx, claim, reservations)
            .await?;
        Ok(done)
    }

    /// [`App::run`] with the context given and the service's own error
    /// kept, for use cases that act on a reserved value or a reused key
    /// themselves. Timed, and wakes the projector on success.
    pub async fn run_account(
        &self,
        account_id: &str,
        command: AccountCommand,
        ctx: &CommandContext,
        claim: Option<&IdempotencyClaim>,
        reservations: &[Reservation],
    ) -> Result<Executed<CreditAccount>, ServiceError<AccountError>> {
        let name = command.name();
        let done = time_command(
            name,
            self.submit(account_id, command, ctx, claim, reservations),
        )
        .await?;
        self.wrote(done.position());
        self.projector.wake();
        Ok(done)
    }

    /// Runs a caller's batch of account commands as one unit of the group
    /// committer: decided in order, committed in one transaction, each
    /// answered on its own (with `atomic`, all written or none). Each
    /// command is timed under `name`; wakes the projector.
    pub async fn run_batch(
        &self,
        name: &'static str,
        commands: Vec<BatchCommand>,
        atomic: bool,
    ) -> Result<Vec<BatchResult>, AppError> {
        let started = std::time::Instant::now();
        let results = self
            .committer
            .execute_batch(commands, atomic)
            .await
            .map_err(|e| match e {
                SubmitError::AtomicAcrossAccounts => AppError::invalid_field(
                    "atomic",
                    "an atomic batch must have all its items on one account",
                ),
                e => AppError::from(submit_error(e)),
            })?;
        observe_batch(name, &results, started.elapsed());
        let head = results
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(Executed::position))
            .max();
        self.wrote(head);
        self.projector.wake();
        Ok(results)
    }

    /// Hands an account command to the group committer. A full queue reads
    /// as contention (429 with Retry-After); a stopped committer as the
    /// store being away.
    async fn submit(
        &self,
        account_id: &str,
        command: AccountCommand,
        ctx: &CommandContext,
        claim: Option<&IdempotencyClaim>,
        reservations: &[Reservation],
    ) -> Result<Executed<CreditAccount>, ServiceError<AccountError>> {
        self.committer
            .execute(account_id, command, ctx, claim, reservations)
            .await
            .map_err(submit_error)
    }

    /// Runs a command of any other aggregate (catalog, invoices, payments,
    /// subscriptions, the Stripe event log) through the command service:
    /// load, handle, append, retried on a conflict. Wakes the projector.
    pub async fn execute<A>(
        &self,
        aggregate_id: &str,
        command: A::Command,
        ctx: &CommandContext,
        claim: Option<&IdempotencyClaim>,
        reservations: &[Reservation],
    ) -> Result<Executed<A>, ServiceError<A::Error>>
    where
        A: RecentOutcomes<Services = ()>,
        A::Command: Clone,
    {
        let done = self
            .commands
            .execute_with::<A>(aggregate_id, command, ctx, claim, reservations)
            .await?;
        self.wrote(done.position());
        self.projector.wake();
        Ok(done)
    }

    /// [`App::execute`] timed under `name` in the command histogram.
    pub async fn execute_timed<A>(
        &self,
        name: &'static str,
        aggregate_id: &str,
        command: A::Command,
        ctx: &CommandContext,
    ) -> Result<Executed<A>, ServiceError<A::Error>>
    where
        A: RecentOutcomes<Services = ()>,
        A::Command: Clone,
        A::Error: std::error::Error,
    {
        time_command(
            name,
            self.execute::<A>(aggregate_id, command, ctx, None, &[]),
        )
        .await
    }

    /// The log position for a response: the command's, or the head for a
    /// command that changed nothing.
    pub async fn position_of<A: cqrs_es::Aggregate>(
        &self,
        done: &Executed<A>,
    ) -> Result<i64, AppError> {
        match done.position() {
            Some(p) => Ok(p),
            None => Ok(self.store.head_position().await?),
        }
    }

    /// Waits (bounded) until the read models include `position`; 503 when
    /// they do not (`?min_position=` of every read).
    pub async fn wait_for(&self, min_position: Option<i64>) -> Result<(), AppError> {
        let Some(min) = min_position else {
            return Ok(());
        };
        if self.projector.position() >= min {
            return Ok(());
        }
        // A position the log has not reached is the caller's mistake, not
        // something to wait for: the head is what any instance committed.
        let head = self.store.head_position().await?;
        if min > head {
            return Err(AppError::invalid_field(
                "min_position",
                format!("min_position {min} is past the event log's head ({head})"),
            ));
        }
        let wait = Duration::from_millis(MIN_POSITION_WAIT_MILLIS_MAX);
        if self.projector.wait_for(min, wait).await {
            Ok(())
        } else {
            Err(AppError::Unavailable(format!(
                "the read models have not reached position {min} yet; retry shortly"
            )))
        }
    }

    /// Waits (bounded) until the read models have every event written so
    /// far, for use cases that read what other writers just wrote.
    pub async fn fresh_read_models(&self) -> Result<(), AppError> {
        let head = self.store.head_position().await?;
        if self
            .projector
            .wait_for(head, Duration::from_millis(MIN_POSITION_WAIT_MILLIS_MAX))
            .await
        {
            Ok(())
        } else {
            Err(AppError::Unavailable(
                "the read models are behind; retry shortly".into(),
            ))
        }
    }
}

/// What a refusal by the group committer means to a use case: a full
/// queue reads as contention (429 with Retry-After), a stopped committer
/// (or a unit it cannot take) as the store being away.
fn submit_error(e: SubmitError) -> ServiceError<AccountError> {
    match e {
        SubmitError::Overloaded => ServiceError::Contention { attempts: 0 },
        SubmitError::Service(e) => e,
        e @ (SubmitError::Stopped | SubmitError::AtomicAcrossAccounts) => {
            ServiceError::Store(StoreError::Persistence(e.to_string()))
        }
    }
}

/// The typed answer of an account command: the outcome event (the new one,
/// or the first one of a replay) rendered by `render`, with its position.
pub fn written<T>(
    done: &Executed<CreditAccount>,
    created: bool,
    render: impl Fn(&AccountEvent, Option<i64>) -> Option<T>,
) -> Result<Written<T>, AppError> {
    let event = done.outcome().ok_or(AppError::Internal)?;
    // The answer is the last event the renderer knows: follow-ups written
    // after it by the same command (a budget threshold reached) are not.
    let value = done
        .events
        .iter()
        .rev()
        .find_map(|e| render(&e.event, done.position()))
        .or_else(|| render(event, done.position()))
        .ok_or_else(|| {
            error!(?event, "command answered with an unexpected event");
            AppError::Internal
        })?;
    Ok(Written {
        value,
        replayed: done.replayed.is_some(),
        created,
    })
}
