-- The log's payload and metadata as `json` (the text as written) instead of
-- `jsonb` (issue 14). Nothing queries inside them: the ledger reads them
-- whole, as text, in every projector batch, replay and audit, and `jsonb`
-- pays for a binary parse on every insert and a re-serialization on every
-- read. Measured on this box with pgbench, 1,000-row reads as text: json
-- 2.0x the rows/s of jsonb; 100-row inserts: json 1.4x (docs/benchmarks.md).
-- postgres-es reads either type. The hash chain is computed over the
-- canonical form in Rust (docs/adr/0003), so the stored text's key order
-- does not matter. The rewrite takes the table's lock for its duration:
-- on a large log, run `ledger-server migrate` in a maintenance window.
ALTER TABLE events
    ALTER COLUMN payload TYPE json USING payload::json,
    ALTER COLUMN metadata TYPE json USING metadata::json;
