-- PostgreSQL's 0053 turns the log's payload and metadata from jsonb into
-- json; SQLite keeps JSON as text already. Kept so both stores share their
-- migration numbers.
SELECT 1;
