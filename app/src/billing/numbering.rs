//! Invoice numbers `INV-YYYY-NNNNNN`, gapless per year: each issue
//! reserves its number in the invoice's own append (a store reservation),
//! so only committed invoices take numbers.

use chrono::Datelike;
use ledger::invoice::IssueInvoice;
use ledger::{Invoice, InvoiceCommand};
use store::{CommandContext, Executed, IdempotencyClaim, Reservation, ServiceError};

use crate::error::AppError;
use crate::App;

/// The reservation scope that makes invoice numbers unique (and, taken only
/// by committed invoices, gapless).
pub const INVOICE_NUMBER_SCOPE: &str = "invoice_number";
/// How often one issue tries the next number after losing it to another.
pub const INVOICE_NUMBER_ATTEMPTS_MAX: u32 = 200;
/// Highest sequence number of a year (six digits).
pub const INVOICE_SEQUENCE_MAX: u32 = 999_999;

/// The number after `last` (the year's highest reserved, if any) under
/// `prefix` (`INV-YYYY-`), or `None` when `last` is not one of ours.
fn next_number(prefix: &str, last: Option<&str>) -> Option<u32> {
    match last {
        None => Some(1),
        Some(v) => v.get(prefix.len()..)?.parse::<u32>().ok()?.checked_add(1),
    }
}

/// Issues an invoice under the next free number of its year: the year's
/// highest reserved number plus one, reserved in the invoice's own append.
/// Losing the number to a concurrent issue (`Reserved`) tries the next; an
/// issue that fails takes no number, so the numbers stay gapless.
pub async fn issue_invoice(
    app: &App,
    ctx: &CommandContext,
    mut command: IssueInvoice,
    claim: Option<&IdempotencyClaim>,
) -> Result<Executed<Invoice>, AppError> {
    let prefix = format!("INV-{:04}-", command.now.year());
    let stream = command.invoice_id.to_string();
    for _ in 0..INVOICE_NUMBER_ATTEMPTS_MAX {
        let last = app
            .store
            .highest_reservation(INVOICE_NUMBER_SCOPE, &prefix)
            .await?;
        let next = next_number(&prefix, last.as_deref()).ok_or(AppError::Internal)?;
        if next > INVOICE_SEQUENCE_MAX {
            return Err(AppError::Conflict(format!(
                "invoice numbers of {} are exhausted",
                command.now.year()
            )));
        }
        command.number = format!("{prefix}{next:06}");
        let reservation = Reservation {
            scope: INVOICE_NUMBER_SCOPE.into(),
            value: command.number.clone(),
        };
        match app
            .execute::<Invoice>(
                &stream,
                InvoiceCommand::Issue(Box::new(command.clone())),
                ctx,
                claim,
                std::slice::from_ref(&reservation),
            )
            .await
        {
            Err(ServiceError::Reserved { .. }) => continue,
            other => return Ok(other?),
        }
    }
    Err(AppError::RateLimited {
        retry_after_seconds: 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_number_follows_the_highest_reserved_one() {
        assert_eq!(next_number("INV-2026-", None), Some(1));
        assert_eq!(next_number("INV-2026-", Some("INV-2026-000041")), Some(42));
        assert_eq!(next_number("INV-2026-", Some("INV-2026-abc")), None);
        assert_eq!(next_number("INV-2026-", Some("INV")), None);
    }
}
