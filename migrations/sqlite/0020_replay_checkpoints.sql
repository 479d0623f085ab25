-- Replay checkpoints (docs/adr/0008-replay-tools.md): an account's folded
-- state every 10,000 events, written by `ledger-replay rebuild`, so that an
-- as-of balance folds at most one interval of events. `occurred_at` is the
-- instant of the event at `sequence` (RFC 3339 UTC with microseconds, so text
-- order is time order); `last_hash` is that event's chain hash. A cache like
-- `snapshots`: `ledger-replay verify` checks every row against the log and a
-- fresh fold. Numbered apart from the other issues' migrations on purpose.
CREATE TABLE replay_checkpoints
(
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       integer NOT NULL,
    position       integer NOT NULL,
    occurred_at    text   NOT NULL,
    last_hash      text   NOT NULL,
    format         integer NOT NULL,
    payload        text   NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
) STRICT;
CREATE INDEX replay_checkpoints_at ON replay_checkpoints (aggregate_type, aggregate_id, occurred_at);
