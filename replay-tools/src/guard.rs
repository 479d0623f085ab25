//! Events are checked before the aggregate folds them: a tampered event
//! (with or without a recomputed chain) must give a report, never a wrong
//! fold or a failed invariant inside the ledger.

use std::collections::BTreeMap;

use events::{AccountEvent, LotDraw};
use ledger::CreditAccount;
use uuid::Uuid;

fn draws_fit(
    state: &CreditAccount,
    draws: &[LotDraw],
    overdraft: i64,
    spent: i64,
) -> Result<(), String> {
    let mut per_lot: BTreeMap<Uuid, i64> = BTreeMap::new();
    let mut total: i64 = overdraft;
    if overdraft < 0 {
        return Err(format!("a negative overdraft {overdraft}"));
    }
    for d in draws {
        if d.credits <= 0 {
            return Err(format!(
                "a draw of {} credits from lot {}",
                d.credits, d.lot_id
            ));
        }
        let sum = per_lot.entry(d.lot_id).or_default();
        *sum = sum.checked_add(d.credits).ok_or("draws overflow")?;
        total = total.checked_add(d.credits).ok_or("draws overflow")?;
    }
    if total != spent {
        return Err(format!(
            "draws and overdraft of {total} credits for {spent} credits spent"
        ));
    }
    for (lot, credits) in per_lot {
        let remaining = state
            .lots()
            .iter()
            .find(|l| l.id == lot)
            .map_or(0, |l| l.remaining);
        if remaining < credits {
            return Err(format!(
                "a draw of {credits} credits from lot {lot}, which holds {remaining}"
            ));
        }
    }
    Ok(())
}

fn repaid_fits(state: &CreditAccount, credits: i64, debt_repaid: i64) -> Result<(), String> {
    if credits < 0 || debt_repaid < 0 || debt_repaid > credits || debt_repaid > state.debt() {
        return Err(format!(
            "{credits} credits repaying {debt_repaid} of a debt of {}",
            state.debt()
        ));
    }
    Ok(())
}

/// Whether `event` can follow `state`: its figures add up (`balance_after`,
/// draws against the lots, debt repaid) and nothing overflows.
pub fn applicable(state: &CreditAccount, event: &AccountEvent) -> Result<(), String> {
    let balance = state
        .balance()
        .checked_add(event.balance_delta())
        .ok_or("the balance overflows")?;
    state
        .held()
        .checked_add(event.held_delta())
        .ok_or("the held credits overflow")?;
    if let Some(after) = event.balance_after() {
        if after != balance {
            return Err(format!(
                "balance_after {after}, but the balance before ({}) and the amount ({}) make {balance}",
                state.balance(),
                event.balance_delta()
            ));
        }
    }
    match event {
        AccountEvent::CreditsGranted(e) => repaid_fits(state, e.credits, e.debt_repaid),
        AccountEvent::CreditsRefunded(e) => repaid_fits(state, e.credits, e.debt_repaid),
        AccountEvent::CreditsAdjusted(e) if e.credits > 0 => {
            repaid_fits(state, e.credits, e.debt_repaid)
        }
        AccountEvent::CreditsAdjusted(e) => {
            let spent = e.credits.checked_neg().ok_or("the amount overflows")?;
            draws_fit(state, &e.draws, e.overdraft, spent)
        }
        AccountEvent::CreditsDeducted(e) => draws_fit(state, &e.draws, e.overdraft, e.credits),
        AccountEvent::HoldCaptured(e) => draws_fit(state, &e.draws, e.overdraft, e.captured),
        AccountEvent::CreditsExpired(e) => draws_fit(
            state,
            &[LotDraw {
                lot_id: e.lot_id,
                credits: e.credits,
            }],
            0,
            e.credits,
        ),
        _ => Ok(()),
    }
}
