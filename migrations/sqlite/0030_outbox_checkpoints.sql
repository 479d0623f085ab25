-- The NATS outbox (docs/adr/0009-nats.md): how far the log has been
-- published to JetStream. Not a read model: nothing is derived from it, and
-- `rebuild` leaves it alone. Advanced by compare-and-set only after
-- JetStream acknowledged every event up to `position`, so a restart
-- publishes again from here (JetStream drops the repeats by Nats-Msg-Id).
CREATE TABLE outbox_checkpoints
(
    name     text PRIMARY KEY,
    position integer NOT NULL
) STRICT;
