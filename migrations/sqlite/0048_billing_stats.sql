-- Indexes for the billing statistics (docs/adr/0013-payment-methods-and-stats.md):
-- revenue reads paid invoices by paid_at, outstanding reads pending ones;
-- the credit totals read ledger entries by occurred_at over a range.
CREATE INDEX rm_invoices_status_paid ON rm_invoices (status, paid_at);
CREATE INDEX rm_transactions_occurred ON rm_transactions (occurred_at, entry_type);
