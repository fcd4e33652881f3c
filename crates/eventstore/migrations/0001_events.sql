-- The append-only event log, read per stream (stream_id, version) and in
-- global order (transaction_id, position). See the crate documentation for why
-- the global order is keyed by the writing transaction's id.
CREATE TABLE es_events (
    position       bigint GENERATED ALWAYS AS IDENTITY,
    transaction_id xid8        NOT NULL DEFAULT pg_current_xact_id(),
    stream_id      text        NOT NULL,
    version        bigint      NOT NULL CHECK (version >= 1),
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL CHECK (schema_version >= 1),
    payload        jsonb       NOT NULL,
    metadata       jsonb       NOT NULL DEFAULT '{}'::jsonb,
    recorded_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT es_events_global_order PRIMARY KEY (transaction_id, position),
    CONSTRAINT es_events_stream_version UNIQUE (stream_id, version)
);

-- Append-only: an event, once written, is never changed or removed.
CREATE FUNCTION es_events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'es_events is append-only (% refused)', TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER es_events_append_only
    BEFORE UPDATE OR DELETE ON es_events
    FOR EACH ROW EXECUTE FUNCTION es_events_refuse_change();

-- Latest state of an aggregate at some version; a cache, never the truth.
CREATE TABLE es_snapshots (
    stream_id      text        PRIMARY KEY,
    version        bigint      NOT NULL CHECK (version >= 1),
    schema_version integer     NOT NULL,
    state          jsonb       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now()
);
