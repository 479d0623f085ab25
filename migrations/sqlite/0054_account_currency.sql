-- Billing currency (issue 16): staff's choice of the currency an account is
-- billed in; NULL bills in the country's currency.
ALTER TABLE rm_accounts ADD COLUMN currency text;
