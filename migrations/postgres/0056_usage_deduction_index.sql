-- The refund lookup (`account_id = $1 AND deduction_id = $2`) finds its row
-- by the deduction id alone: ids are UUIDv7, so new rows land at the
-- index's right edge instead of at random places in a tree keyed by
-- account first; a shorter key, and one random-insert index fewer for the
-- projector and the rebuild to keep up (docs/benchmarks.md).
DROP INDEX rm_usage_deduction;
CREATE INDEX rm_usage_deduction ON rm_usage (deduction_id);
