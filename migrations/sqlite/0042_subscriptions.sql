-- Subscriptions read model (issue 6): one row per subscription, folded from
-- the subscription streams (times RFC 3339 UTC text, money decimal text).
-- `price` and `currency` are the current plan's, `billing_cycle` its cycle
-- (`monthly|annual`), so MRR = Σ price (monthly) or price / 12 (annual).
CREATE TABLE rm_subscriptions
(
    subscription_id        text PRIMARY KEY,
    account_id             text NOT NULL,
    plan                   text NOT NULL,
    status                 text NOT NULL,
    billing_cycle          text NOT NULL,
    price                  text NOT NULL,
    currency               text NOT NULL,
    current_period_start   text,
    current_period_end     text,
    cancel_at_period_end   integer NOT NULL,
    scheduled_plan         text,
    stripe_subscription_id text,
    past_due_since         text,
    canceled_at            text,
    created_at             text NOT NULL,
    updated_at             text NOT NULL,
    last_position          integer NOT NULL
) STRICT;
CREATE INDEX rm_subscriptions_account ON rm_subscriptions (account_id, created_at, subscription_id);
CREATE INDEX rm_subscriptions_status ON rm_subscriptions (status, subscription_id);
CREATE INDEX rm_subscriptions_stripe ON rm_subscriptions (stripe_subscription_id);
