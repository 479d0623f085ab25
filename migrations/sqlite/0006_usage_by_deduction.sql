-- A refund names a deduction; the account's state no longer keeps a record
-- of every deduction it made (it would grow without bound on a hot account),
-- so the API looks the deducted credits up here, by account and deduction.
CREATE INDEX rm_usage_deduction ON rm_usage (account_id, deduction_id);
