-- Integration messages written in the same transaction as the state change
-- they announce; a relay publishes them and stamps published_at.
CREATE TABLE outbox (
    sequence     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    message_id   uuid        NOT NULL UNIQUE,
    partition    smallint    NOT NULL CHECK (partition >= 0),
    destination  text        NOT NULL,
    message_key  text        NOT NULL,
    headers      jsonb       NOT NULL DEFAULT '{}'::jsonb,
    payload      bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    attempts     integer     NOT NULL DEFAULT 0,
    last_error   text,
    published_at timestamptz,
    parked_at    timestamptz
);

CREATE INDEX outbox_pending ON outbox (partition, sequence)
    WHERE published_at IS NULL AND parked_at IS NULL;

CREATE INDEX outbox_published ON outbox (published_at)
    WHERE published_at IS NOT NULL;

-- Messages a consumer has already handled, recorded in the handler's own
-- transaction.
CREATE TABLE inbox (
    consumer     text        NOT NULL,
    message_id   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);
