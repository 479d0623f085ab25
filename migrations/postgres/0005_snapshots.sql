-- The ledger's own snapshots (never cqrs-es 0.5.0's, which apply events
-- twice): the latest folded state of a stream at a sequence, with the chain
-- hash of that event so it can be checked against the log. A cache: loading
-- ignores a snapshot of another format or one that does not read, and folds
-- the whole stream instead.
CREATE TABLE snapshots
(
    aggregate_type text NOT NULL,
    aggregate_id   text NOT NULL,
    sequence       bigint NOT NULL,
    last_hash      text NOT NULL,
    format         bigint NOT NULL,
    payload        text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);
