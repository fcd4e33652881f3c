-- Fencing tokens come from one sequence so they increase across every lease.
CREATE SEQUENCE projection_fencing_tokens;

-- Where each projection is in the global order, and who may advance it.
CREATE TABLE projection_checkpoints (
    projection       text        PRIMARY KEY,
    transaction_id   xid8        NOT NULL DEFAULT '0'::xid8,
    position         bigint      NOT NULL DEFAULT 0,
    lease_owner      uuid,
    lease_expires_at timestamptz,
    fencing_token    bigint      NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
