//! `--scenario batch`: deductions in batches over HTTP, against single
//! deductions in the same run.
//!
//! Every phase gets `--accounts` fresh accounts (all opened and granted
//! before the first load, so that no phase carries another's set-up), then
//! `--workers` closed-loop workers drive it for `--duration`:
//!
//! 1. `http single`: the single route, `POST /v1/accounts/{id}/deductions`,
//!    exactly as `--scenario accounts` sends it;
//! 2. `http batch N` for each N of `--batch-sizes`:
//!    `POST /v1/accounts/{id}/deductions/batch` with N items on one account.
//!
//! After each load the read models' catch-up to the load's last position
//! is timed; after all of them every balance is checked against the grant
//! less the credits deducted. Any failure (an item not applied, an answer
//! other than 200/201) is counted and fails the run.

use anyhow::bail;

use crate::http::{HttpBench, BATCH_ITEMS_MAX, GRANT_CREDITS};
use crate::report::{batch_phase_name, BatchStats, ScenarioResult, SINGLE_PHASE_NAME};
use crate::{progress, Cli, DURATION_MAX};

/// Most batch sizes one run accepts.
pub const BATCH_SIZES_MAX: usize = 8;
/// A deduction rate no phase reaches on one account (the whole server
/// does a few thousand to tens of thousands a second).
const DEDUCTIONS_PER_S_CEILING: u64 = 1_000_000;
// The grant covers the longest phase at that rate: no item runs out.
const _: () = assert!(DURATION_MAX.as_secs() * DEDUCTIONS_PER_S_CEILING < GRANT_CREDITS as u64);

/// Most deductions the workers of a batch phase have in flight at once:
/// below the server's command queue (20,000 commands, beyond which it
/// answers 429), so a closed loop of large batches measures the ledger,
/// not its back-pressure.
pub const BATCH_ITEMS_IN_FLIGHT_MAX: usize = 16_000;

/// Workers of a phase of `items`-item batches: `--workers`, fewer when
/// their batches would overfill the server's queue.
pub fn batch_workers(workers: usize, items: usize) -> usize {
    workers.min((BATCH_ITEMS_IN_FLIGHT_MAX / items.max(1)).max(1))
}

/// Checks `--batch-sizes`: 1 to [`BATCH_SIZES_MAX`] distinct sizes, each
/// 1 to [`BATCH_ITEMS_MAX`].
pub fn check_sizes(sizes: &[usize]) -> anyhow::Result<()> {
    if sizes.is_empty() || sizes.len() > BATCH_SIZES_MAX {
        bail!("--batch-sizes takes 1 to {BATCH_SIZES_MAX} sizes");
    }
    for (i, &n) in sizes.iter().enumerate() {
        if n == 0 || n > BATCH_ITEMS_MAX {
            bail!("--batch-sizes: each size must be 1 to {BATCH_ITEMS_MAX}, not {n}");
        }
        if sizes[..i].contains(&n) {
            bail!("--batch-sizes: {n} is given twice");
        }
    }
    Ok(())
}

/// Runs the single phase and one phase per batch size, then checks every
/// balance. `bench` is prepared (the operation priced at one credit).
pub async fn run(cli: &Cli, bench: &HttpBench) -> anyhow::Result<Vec<ScenarioResult>> {
    check_sizes(&cli.batch_sizes)?;
    let phases = 1 + cli.batch_sizes.len();
    progress(format!(
        "batch: opening {} accounts for each of {phases} phases",
        cli.accounts
    ));
    let mut sets = Vec::with_capacity(phases);
    for _ in 0..phases {
        sets.push(bench.open_accounts(cli.accounts).await?);
    }
    let mut sets = sets.into_iter();
    let mut runs = Vec::with_capacity(phases);

    let Some(set) = sets.next() else {
        bail!("no accounts for the single phase");
    };
    progress(format!(
        "batch: {} workers for {:?}, single deductions over {} accounts",
        cli.workers, cli.duration, cli.accounts
    ));
    let mut single = bench
        .load(SINGLE_PHASE_NAME, &set, cli.workers, cli.duration, None)
        .await?;
    let r = &mut single.result;
    r.batch = Some(BatchStats::new(1, r.ops, r.elapsed_s));
    r.errors_fail_run = true;
    r.note = Some("POST /v1/accounts/{id}/deductions, one per request".into());
    runs.push(single);

    for (&items, set) in cli.batch_sizes.iter().zip(sets) {
        let workers = batch_workers(cli.workers, items);
        progress(format!(
            "batch: {workers} workers for {:?}, batches of {items} over {} accounts",
            cli.duration, cli.accounts
        ));
        runs.push(
            bench
                .load_batch(&batch_phase_name(items), &set, workers, cli.duration, items)
                .await?,
        );
    }

    progress("batch: checking every balance");
    for run in &mut runs {
        bench.verify(run).await?;
    }
    Ok(runs.into_iter().map(|r| r.result).collect())
}

#[cfg(test)]
mod tests {
    use super::check_sizes;

    #[test]
    fn large_batches_get_fewer_workers() {
        assert_eq!(super::batch_workers(32, 100), 32);
        assert_eq!(super::batch_workers(32, 1000), 16);
        assert_eq!(super::batch_workers(4, 1000), 4);
    }

    #[test]
    fn batch_sizes_are_bounded() {
        assert!(check_sizes(&[1, 10, 100, 1000]).is_ok());
        assert!(check_sizes(&[]).is_err());
        assert!(check_sizes(&[0]).is_err());
        assert!(check_sizes(&[1001]).is_err());
        assert!(check_sizes(&[10, 10]).is_err());
        assert!(check_sizes(&[1, 2, 3, 4, 5, 6, 7, 8, 9]).is_err());
    }
}
