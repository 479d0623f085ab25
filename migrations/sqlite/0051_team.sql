-- Team read model (issue 15): one row per member record of an account's
-- team stream (a member added directly, or an invitation and the member it
-- became), folded from the `team` streams. Times RFC 3339 UTC text.
-- `status` is invited|active|removed|revoked. The roster check itself reads
-- the team stream, not this table (docs/adr/0017); this table serves the
-- staff's cross-account user list.
CREATE TABLE rm_team_members
(
    member_id     text PRIMARY KEY,
    account_id    text NOT NULL,
    user_id       text,
    email         text NOT NULL,
    role          text NOT NULL,
    status        text NOT NULL,
    invited_by    text,
    created_at    text NOT NULL,
    expires_at    text,
    joined_at     text,
    removed_at    text,
    last_seen_at  text,
    updated_at    text NOT NULL,
    last_position bigint NOT NULL
);
CREATE INDEX rm_team_members_account ON rm_team_members (account_id, created_at, member_id);
CREATE INDEX rm_team_members_list ON rm_team_members (created_at, member_id);
CREATE INDEX rm_team_members_user ON rm_team_members (user_id);
