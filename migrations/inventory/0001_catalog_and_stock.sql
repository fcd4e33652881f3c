-- The catalogue and each product's stock.
--
-- The domain types (services/inventory/src/domain) are the first line of
-- defence; these constraints are the last, against a bug or a manual edit.
-- In particular nothing, however written, can oversell: 0 <= reserved <= on_hand.

CREATE TABLE products (
    id             uuid        PRIMARY KEY,
    sku            text        NOT NULL UNIQUE
                               CHECK (sku ~ '^[A-Z0-9][A-Z0-9._-]{0,63}$'),
    name           text        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 200),
    description    text        NOT NULL DEFAULT '' CHECK (char_length(description) <= 2000),
    price_amount   bigint      NOT NULL CHECK (price_amount > 0),
    price_currency text        NOT NULL CHECK (price_currency ~ '^[A-Z]{3}$'),
    category       text        NOT NULL
                               CHECK (category IN ('ELECTRONICS', 'CLOTHING', 'BOOKS', 'HOME_GARDEN', 'SPORTS')),
    active         boolean     NOT NULL DEFAULT true,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- ListProducts filtered by category walks this index in id order.
CREATE INDEX products_active_by_category ON products (category, id) WHERE active;

-- One row per product, kept apart from the catalogue row: reservations update
-- stock many times a second, and should neither rewrite nor lock the product.
CREATE TABLE stock (
    product_id       uuid        PRIMARY KEY REFERENCES products (id),
    on_hand          bigint      NOT NULL CHECK (on_hand >= 0),
    reserved         bigint      NOT NULL CHECK (reserved >= 0),
    available        bigint      GENERATED ALWAYS AS (on_hand - reserved) STORED,
    -- reorder point = avg_daily_demand * lead_time_days + safety_stock
    avg_daily_demand bigint      NOT NULL DEFAULT 0 CHECK (avg_daily_demand BETWEEN 0 AND 4294967295),
    lead_time_days   bigint      NOT NULL DEFAULT 0 CHECK (lead_time_days BETWEEN 0 AND 4294967295),
    safety_stock     bigint      NOT NULL DEFAULT 0 CHECK (safety_stock BETWEEN 0 AND 4294967295),
    -- +1 on every change; WatchStock orders and de-duplicates levels by it.
    version          bigint      NOT NULL DEFAULT 1,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stock_not_oversold CHECK (reserved <= on_hand)
);

-- Every stock change is announced on the `inventory_stock` channel when its
-- transaction commits (never for a rolled-back one), to every replica's
-- WatchStock feed. A trigger rather than a call in the application, so even a
-- manual correction in psql reaches the watchers.
CREATE FUNCTION notify_stock_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('inventory_stock', json_build_object(
        'product_id', NEW.product_id,
        'on_hand', NEW.on_hand,
        'reserved', NEW.reserved,
        'version', NEW.version,
        'updated_at', NEW.updated_at
    )::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER stock_changed
    AFTER INSERT OR UPDATE ON stock
    FOR EACH ROW EXECUTE FUNCTION notify_stock_change();
