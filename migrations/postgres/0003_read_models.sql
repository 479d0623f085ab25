-- Read models, folded from the global log by the projector. Every table can
-- be dropped and refilled from the events (`rebuild`). Times are RFC 3339
-- UTC text with microseconds, so text order is time order; money is decimal
-- text. The projector updates them and its checkpoint in one transaction.

CREATE TABLE projection_checkpoints
(
    name     text PRIMARY KEY,
    position bigint NOT NULL
);

CREATE TABLE rm_accounts
(
    account_id            text PRIMARY KEY,
    name                  text NOT NULL,
    slug                  text NOT NULL,
    owner_user_id         text NOT NULL,
    plan                  text NOT NULL,
    status                text NOT NULL,
    country               text NOT NULL,
    billing_email         text NOT NULL,
    billing_address       text,
    tax_id                text,
    tax_rate              text NOT NULL,
    credit_limit          bigint NOT NULL,
    low_balance_threshold bigint NOT NULL,
    opened_at             text NOT NULL,
    updated_at            text NOT NULL,
    last_position         bigint NOT NULL
);
CREATE INDEX rm_accounts_slug ON rm_accounts (slug);
CREATE INDEX rm_accounts_status ON rm_accounts (status, account_id);

CREATE TABLE rm_balances
(
    account_id     text PRIMARY KEY,
    balance        bigint NOT NULL,
    held           bigint NOT NULL,
    credit_limit   bigint NOT NULL,
    period         text NOT NULL,
    period_granted bigint NOT NULL,
    period_used    bigint NOT NULL,
    last_position  bigint NOT NULL,
    updated_at     text NOT NULL
);

CREATE TABLE rm_transactions
(
    position      bigint PRIMARY KEY,
    account_id    text NOT NULL,
    sequence      bigint NOT NULL,
    entry_type    text NOT NULL,
    reference_id  text NOT NULL,
    amount        bigint NOT NULL,
    balance_after bigint NOT NULL,
    description   text,
    occurred_at   text NOT NULL
);
CREATE INDEX rm_transactions_account ON rm_transactions (account_id, position);

CREATE TABLE rm_usage
(
    position            bigint PRIMARY KEY,
    account_id          text NOT NULL,
    deduction_id        text NOT NULL,
    hold_id             text,
    operation           text,
    credits             bigint NOT NULL,
    units               bigint NOT NULL,
    cost_version        bigint,
    cost_usd            text,
    model               text,
    tokens_input        bigint,
    tokens_output       bigint,
    related_object_type text,
    related_object_id   text,
    metadata            text,
    recorded_at         text NOT NULL
);
CREATE INDEX rm_usage_account ON rm_usage (account_id, position);

CREATE TABLE rm_usage_daily
(
    account_id text NOT NULL,
    day        text NOT NULL,
    operation  text NOT NULL,
    model      text NOT NULL,
    credits    bigint NOT NULL,
    cost_usd   text NOT NULL,
    count      bigint NOT NULL,
    PRIMARY KEY (account_id, day, operation, model)
);

CREATE TABLE rm_cost_history
(
    version       bigint PRIMARY KEY,
    operation     text NOT NULL,
    cost          bigint NOT NULL,
    unit          text NOT NULL,
    previous_cost bigint,
    previous_unit text,
    actor         text NOT NULL,
    changed_at    text NOT NULL,
    position      bigint NOT NULL
);
