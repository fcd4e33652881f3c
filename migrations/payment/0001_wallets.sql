-- Wallets live in the event store (es_events, stream `wallet-<user id>`,
-- installed by the eventstore crate's own migrations). These tables are what
-- the service keeps next to it.

-- Saga commands handled, by command id: the consumer's inbox for
-- payment.charge / payment.refund, which also keeps the reply so that a
-- redelivered or re-sent command gets the same answer without moving money
-- again. Written in the transaction that appends the command's events.
CREATE TABLE payment_commands (
    command_id  text PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('charge', 'refund')),
    customer_id uuid NOT NULL,
    order_id    uuid NOT NULL,
    amount      bigint NOT NULL,
    currency    text NOT NULL,
    reply       jsonb NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT now()
);

-- Deposits by Idempotency-Key, per user: the same key and body answer with
-- the original deposit, the same key with another body is refused. Written
-- in the transaction that appends the Deposited event.
CREATE TABLE deposit_requests (
    user_id         uuid NOT NULL,
    idempotency_key text NOT NULL,
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL,
    transaction_id  uuid NOT NULL,
    account_id      uuid NOT NULL,
    balance_after   bigint NOT NULL CHECK (balance_after >= 0),
    created_at      timestamptz NOT NULL,
    PRIMARY KEY (user_id, idempotency_key)
);

-- Read model of the projection `payment.wallet_transactions`: each wallet's
-- running balance and the last stream version applied to it (the projection
-- skips events at or below it, so a replay changes nothing) ...
CREATE TABLE wallet_balances (
    user_id    uuid PRIMARY KEY,
    account_id uuid NOT NULL,
    balance    bigint NOT NULL CHECK (balance >= 0),
    currency   text NOT NULL,
    version    bigint NOT NULL
);

-- ... and every movement of money, newest first by stream version.
CREATE TABLE wallet_transactions (
    transaction_id  uuid PRIMARY KEY,
    user_id         uuid NOT NULL,
    account_id      uuid NOT NULL,
    version         bigint NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('DEPOSIT', 'CHARGE', 'REFUND', 'PAYOUT')),
    amount          bigint NOT NULL CHECK (amount > 0),
    currency        text NOT NULL,
    balance_after   bigint NOT NULL CHECK (balance_after >= 0),
    order_id        uuid,
    idempotency_key text,
    created_at      timestamptz NOT NULL,
    UNIQUE (user_id, version)
);
