-- Notifications (issue 17, docs/adr/0021-notifications.md): outgoing
-- webhook endpoints, and the durable queue of deliveries (webhook POSTs
-- and emails) that the notifier plans from the event log. The planner
-- inserts a batch's deliveries and moves its checkpoint
-- (`outbox_checkpoints.notifications`) in one transaction; a delivery row
-- is unique per (event, channel, target, kind), so a planned event is
-- never queued twice. Times are Unix milliseconds.
CREATE TABLE webhook_endpoints
(
    id          text PRIMARY KEY,
    url         text    NOT NULL,
    -- JSON array of event types, or ["*"].
    events      text    NOT NULL,
    -- NULL: events of every account.
    account_id  text,
    secret      text    NOT NULL,
    description text,
    created_by  text    NOT NULL,
    created_ms  bigint  NOT NULL
);

CREATE TABLE notification_deliveries
(
    id              text PRIMARY KEY,
    position        bigint  NOT NULL,
    event_id        text    NOT NULL,
    event_type      text    NOT NULL,
    account_id      text,
    -- webhook | email
    channel         text    NOT NULL,
    -- the endpoint's id, or the email address
    target          text    NOT NULL,
    -- the event type (webhook), or the message kind (email)
    kind            text    NOT NULL,
    -- the webhook body, or the email's parameters (JSON)
    payload         text    NOT NULL,
    -- pending | delivered | failed
    status          text    NOT NULL,
    attempts        bigint  NOT NULL DEFAULT 0,
    next_attempt_ms bigint  NOT NULL,
    last_error      text,
    last_status     bigint,
    created_ms      bigint  NOT NULL,
    delivered_ms    bigint,
    UNIQUE (event_id, channel, target, kind)
);
CREATE INDEX notification_deliveries_due ON notification_deliveries (status, next_attempt_ms);
CREATE INDEX notification_deliveries_target ON notification_deliveries (target, position, id);
