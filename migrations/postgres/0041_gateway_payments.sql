-- Gateway payments and refunds (docs/adr/0011-payments-gateway.md): the
-- gateway's name and payment id (a Stripe PaymentIntent `pi_…`) and the sum
-- refunded so far (decimal text, never more than `amount`).
ALTER TABLE rm_payments ADD COLUMN gateway text;
ALTER TABLE rm_payments ADD COLUMN gateway_ref text;
ALTER TABLE rm_payments ADD COLUMN refunded_amount text NOT NULL DEFAULT '0';
CREATE INDEX rm_payments_gateway_ref ON rm_payments (gateway_ref);
