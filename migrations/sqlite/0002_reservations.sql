-- Values that must be unique across streams (an account's slug), reserved in
-- the same transaction as the events that take them.
CREATE TABLE reservations
(
    scope      text NOT NULL,
    value      text NOT NULL,
    owner      text NOT NULL,
    created_at text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (scope, value)
) STRICT;
