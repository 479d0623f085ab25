-- When an account next has something to expire: a hold's TTL or a grant's
-- expiry. Filled by the projector, drained by the server's sweeper, which
-- sends the account an ExpireDue command. An operational queue, not a read
-- model: a rebuild refills it and the sweeper finds nothing left to do for
-- items already handled.
CREATE TABLE expiry_schedule
(
    account_id text NOT NULL,
    item_id    text NOT NULL,
    due_at     text NOT NULL,
    PRIMARY KEY (account_id, item_id)
);
CREATE INDEX expiry_schedule_due ON expiry_schedule (due_at);
