-- The event log. Columns match sqlite-es 0.5's `events` table, so sqlite-es
-- reads it as it is. `position` is the global log order: SQLite has one
-- writer at a time, so positions are taken in commit order.
CREATE TABLE events
(
    position       integer PRIMARY KEY AUTOINCREMENT,
    aggregate_type text                          NOT NULL,
    aggregate_id   text                          NOT NULL,
    sequence       integer CHECK (sequence >= 0) NOT NULL,
    event_type     text                          NOT NULL,
    event_version  text                          NOT NULL,
    payload        text                          NOT NULL,
    metadata       text                          NOT NULL,
    UNIQUE (aggregate_type, aggregate_id, sequence)
) STRICT;

CREATE TRIGGER events_no_update BEFORE UPDATE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TRIGGER events_no_delete BEFORE DELETE ON events
BEGIN
    SELECT RAISE(ABORT, 'events are append-only');
END;

CREATE TABLE idempotency_keys
(
    account_id      text    NOT NULL,
    idempotency_key text    NOT NULL,
    request_hash    text    NOT NULL,
    aggregate_type  text    NOT NULL,
    sequence        integer NOT NULL,
    created_at      text    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (account_id, idempotency_key)
) STRICT;
