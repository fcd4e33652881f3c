-- The orchestrator's durable state: one row per saga instance, rewritten
-- in full by every state change (together with its step-log rows and its
-- outbox messages, in one transaction).
CREATE TABLE saga_instances (
    id                    uuid        PRIMARY KEY,
    saga_type             text        NOT NULL,
    status                text        NOT NULL CHECK (status IN
                              ('CREATED', 'RUNNING', 'COMPENSATING', 'COMPLETED', 'COMPENSATED', 'FAILED')),
    data                  jsonb       NOT NULL,
    -- Forward: index of the next step to run (= number of steps once all
    -- ran). Compensating: index of the step being compensated (-1 once none
    -- is left).
    step_index            integer     NOT NULL DEFAULT 0,
    -- Name of that step, for people and for matching replies.
    current_step          text,
    -- Attempts started on the current step and phase.
    attempt               integer     NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    -- A command was sent and its reply has not been handled yet.
    awaiting_reply        boolean     NOT NULL DEFAULT false,
    reply_deadline        timestamptz,
    -- A reply recorded by on_reply, waiting for a worker.
    reply_payload         bytea,
    reply_headers         jsonb,
    reply_received_at     timestamptz,
    -- When a worker should look at the saga next (a retry's backoff, a
    -- reply's deadline, or now); NULL once the saga has finished.
    due_at                timestamptz,
    -- What made the saga compensate.
    failure_step          text,
    failure_kind          text        CHECK (failure_kind IN ('rejected', 'exhausted')),
    failure_code          text,
    failure_message       text,
    -- Compensations that gave up: the saga ends FAILED instead of COMPENSATED.
    compensation_failures integer     NOT NULL DEFAULT 0,
    -- The latest error of any kind (step or engine), for operators.
    last_error            text,
    -- Lease: the engine working on the saga, and a fencing token that grows
    -- with every claim so a worker that lost its lease cannot write.
    lease_owner           text,
    lease_token           bigint      NOT NULL DEFAULT 0,
    lease_expires_at      timestamptz,
    -- Optimistic concurrency between the lease holder and recorded replies.
    version               bigint      NOT NULL DEFAULT 1,
    -- W3C trace context of the span that started the saga.
    traceparent           text,
    tracestate            text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    finished_at           timestamptz
);

-- Workers look for due sagas of their type.
CREATE INDEX saga_instances_due ON saga_instances (saga_type, due_at) WHERE due_at IS NOT NULL;

-- Admin listings: by status, newest first (ids are UUID v7).
CREATE INDEX saga_instances_status ON saga_instances (status, id DESC);

-- Every attempt of every step: what ran, when, by whom, and how it ended.
CREATE TABLE saga_step_log (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    saga_id     uuid        NOT NULL REFERENCES saga_instances (id) ON DELETE CASCADE,
    step_index  integer     NOT NULL,
    step        text        NOT NULL,
    phase       text        NOT NULL CHECK (phase IN ('action', 'compensation')),
    attempt     integer     NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN
                    ('succeeded', 'rejected', 'retrying', 'exhausted', 'sent', 'resent')),
    error_code  text,
    error       text,
    executed_by text,
    recorded_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX saga_step_log_saga ON saga_step_log (saga_id, id);
