-- Revoked API tokens (SECURITY.md): a token whose `jti` is listed here is
-- refused with 401 by every server, which reloads the list every few
-- seconds. Rows are kept as the record of who revoked what and when.
CREATE TABLE revoked_tokens
(
    jti        text PRIMARY KEY,
    revoked_by text NOT NULL,
    reason     text NOT NULL,
    revoked_at text NOT NULL
);
