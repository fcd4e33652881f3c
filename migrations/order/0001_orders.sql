-- The order service's own tables. The event log (es_events, outbox, inbox,
-- projection_checkpoints) and the saga tables (saga_instances,
-- saga_step_log) belong to the eventstore and saga libraries and are
-- installed by their own migration sets before this one.

-- PlaceOrder's idempotency records: one per customer and key, written in the
-- transaction that places the order. `fingerprint` is what was ordered
-- (products and quantities, canonical form), so a key reused for another
-- order is recognised and refused.
CREATE TABLE order_requests (
    customer_id     uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    order_id        uuid        NOT NULL UNIQUE,
    fingerprint     text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (customer_id, idempotency_key)
);

-- Read model: one row per order, as GetOrder and WatchOrder show it. Written
-- only by the `order_view` projection; `version` is the stream version of
-- the last event applied.
CREATE TABLE order_view (
    order_id             uuid        PRIMARY KEY,
    customer_id          uuid        NOT NULL,
    status               text        NOT NULL
                             CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED')),
    -- [{product_id, product_name, quantity, unit_price, line_total}]
    lines                jsonb       NOT NULL,
    total_amount         bigint      NOT NULL CHECK (total_amount >= 0),
    currency             text        NOT NULL,
    failure_reason       text,
    cancellation_pending boolean     NOT NULL DEFAULT false,
    payment_id           uuid,
    version              bigint      NOT NULL,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);

-- Read model: each customer's orders for ListOrders, newest first (order ids
-- are UUID v7, so id order is placement order), optionally by status.
-- Written only by the `customer_order_history` projection.
CREATE TABLE customer_order_history (
    order_id             uuid        PRIMARY KEY,
    customer_id          uuid        NOT NULL,
    status               text        NOT NULL
                             CHECK (status IN ('PENDING', 'CONFIRMED', 'REJECTED', 'CANCELLED')),
    lines                jsonb       NOT NULL,
    total_amount         bigint      NOT NULL CHECK (total_amount >= 0),
    currency             text        NOT NULL,
    failure_reason       text,
    cancellation_pending boolean     NOT NULL DEFAULT false,
    payment_id           uuid,
    version              bigint      NOT NULL,
    created_at           timestamptz NOT NULL,
    updated_at           timestamptz NOT NULL
);

CREATE INDEX customer_order_history_newest
    ON customer_order_history (customer_id, order_id DESC);

CREATE INDEX customer_order_history_by_status
    ON customer_order_history (customer_id, status, order_id DESC);

-- WatchOrder follows status changes of every replica through Postgres: the
-- projection's transaction notifies on commit (and only then), with the
-- order id as payload.
CREATE FUNCTION order_view_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT'
       OR NEW.status IS DISTINCT FROM OLD.status
       OR NEW.cancellation_pending IS DISTINCT FROM OLD.cancellation_pending THEN
        PERFORM pg_notify('order_status', NEW.order_id::text);
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER order_view_status_changed
    AFTER INSERT OR UPDATE ON order_view
    FOR EACH ROW EXECUTE FUNCTION order_view_notify();

-- Read model fed by the services' Kafka integration events (a cross-service
-- projection): units and revenue per product and day. Sales are counted on
-- the day an order was confirmed, cancellations on the day it was cancelled;
-- the net figures are sold minus cancelled. Each message is applied once
-- (inbox, in the same transaction).
CREATE TABLE product_sales (
    product_id        uuid   NOT NULL,
    day               date   NOT NULL,
    currency          text   NOT NULL,
    product_name      text   NOT NULL,
    units_sold        bigint NOT NULL DEFAULT 0,
    units_cancelled   bigint NOT NULL DEFAULT 0,
    revenue           bigint NOT NULL DEFAULT 0,
    revenue_cancelled bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (product_id, day, currency)
);
