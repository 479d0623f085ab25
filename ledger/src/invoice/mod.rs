//! The invoice aggregate (one stream per invoice): issue with line items,
//! tax and total computed here from the inputs, then at most one of paid,
//! void or uncollectible. The number (`INV-YYYY-NNNNNN`) is chosen by the
//! caller and made unique by a store reservation (docs/adr/0010-billing.md).

mod aggregate;
#[cfg(test)]
mod tests;

pub use aggregate::{
    is_invoice_number, round_money, Invoice, InvoiceCommand, InvoiceError, IssueInvoice, LineInput,
    INVOICE_LINES_MAX, INVOICE_QUANTITY_MAX,
};
