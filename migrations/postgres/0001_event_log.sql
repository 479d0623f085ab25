-- The event log. Column names and types match postgres-es 0.5's `events`
-- table, so postgres-es reads it as it is; `position` is the global log order.
CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        jsonb                        NOT NULL,
    metadata       jsonb                        NOT NULL,
    position       bigint                       NOT NULL,
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_position_idx ON events (position);

CREATE SEQUENCE events_position_seq AS bigint;

-- Positions are handed out under one transaction-scoped advisory lock, held
-- until commit. A transaction that takes a position therefore commits (or
-- rolls back) before the next one can take a higher one, so a reader that
-- sees position N can never later see a position below N appear: tailing the
-- log by position skips nothing (docs/adr/0002-global-ordering.md). There is
-- deliberately no column default: a default would draw the number before the
-- lock is held.
CREATE FUNCTION events_assign_position() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_advisory_xact_lock(7245031001);
    NEW.position := nextval('events_position_seq');
    RETURN NEW;
END
$$;

CREATE TRIGGER events_assign_position
    BEFORE INSERT ON events
    FOR EACH ROW EXECUTE FUNCTION events_assign_position();

-- The log is append-only.
CREATE FUNCTION events_refuse_change() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    RAISE EXCEPTION 'events are append-only';
END
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_refuse_change();

-- One row per idempotency key and account, written in the same transaction
-- as the events it produced: the store, not memory, makes a key apply once.
CREATE TABLE idempotency_keys
(
    account_id      text        NOT NULL,
    idempotency_key text        NOT NULL,
    request_hash    text        NOT NULL,
    aggregate_type  text        NOT NULL,
    sequence        bigint      NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, idempotency_key)
);
