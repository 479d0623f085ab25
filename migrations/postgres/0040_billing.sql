-- Billing read models (docs/adr/0010-billing.md): one row per invoice and per
-- payment, folded from the invoice and payment streams like the other read
-- models (times RFC 3339 UTC text, money decimal text). `document` keeps the
-- whole InvoiceIssued event (lines, address snapshot) as JSON text.
CREATE TABLE rm_invoices
(
    invoice_id    text PRIMARY KEY,
    number        text NOT NULL,
    account_id    text NOT NULL,
    status        text NOT NULL,
    currency      text NOT NULL,
    subtotal      text NOT NULL,
    tax           text NOT NULL,
    total         text NOT NULL,
    issued_at     text NOT NULL,
    due_at        text NOT NULL,
    paid_at       text,
    payment_id    text,
    method        text,
    document      text NOT NULL,
    updated_at    text NOT NULL,
    last_position bigint NOT NULL
);
CREATE INDEX rm_invoices_account ON rm_invoices (account_id, issued_at, invoice_id);
CREATE INDEX rm_invoices_issued ON rm_invoices (issued_at, invoice_id);

CREATE TABLE rm_payments
(
    payment_id     text PRIMARY KEY,
    invoice_id     text NOT NULL,
    account_id     text NOT NULL,
    amount         text NOT NULL,
    currency       text NOT NULL,
    method         text NOT NULL,
    status         text NOT NULL,
    reference      text,
    submitted_by   text NOT NULL,
    decided_by     text,
    decided_at     text,
    failure_reason text,
    submitted_at   text NOT NULL,
    updated_at     text NOT NULL,
    last_position  bigint NOT NULL
);
CREATE INDEX rm_payments_submitted ON rm_payments (submitted_at, payment_id);
