-- Stock reservations of the order saga, keyed by the saga's id.

CREATE TABLE reservations (
    id         uuid        PRIMARY KEY,
    status     text        NOT NULL CHECK (status IN ('HELD', 'COMMITTED', 'RELEASED', 'EXPIRED')),
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- The sweeper's work list: held reservations by deadline.
CREATE INDEX reservations_held_by_expiry ON reservations (expires_at) WHERE status = 'HELD';

-- What each reservation holds, with the name and price the customer was shown.
CREATE TABLE reservation_lines (
    reservation_id      uuid   NOT NULL REFERENCES reservations (id),
    product_id          uuid   NOT NULL REFERENCES products (id),
    quantity            bigint NOT NULL CHECK (quantity > 0),
    product_name        text   NOT NULL,
    unit_price_amount   bigint NOT NULL CHECK (unit_price_amount > 0),
    unit_price_currency text   NOT NULL,
    PRIMARY KEY (reservation_id, product_id)
);
