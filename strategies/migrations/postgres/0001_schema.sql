-- Catalogue: `stock` is what is left to sell, `initial_stock` what the last reset or populate put
-- there, so the audit can tell sold units from units that vanished.
CREATE TABLE IF NOT EXISTS products (
    id            BIGINT PRIMARY KEY,
    stock         BIGINT NOT NULL,
    initial_stock BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS orders (
    id              UUID PRIMARY KEY,
    strategy        TEXT        NOT NULL,
    status          TEXT        NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled')),
    idempotency_key TEXT,
    user_name       TEXT,
    address         TEXT        NOT NULL,
    phone           TEXT        NOT NULL,
    email           TEXT        NOT NULL,
    reason          TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- One order per idempotency key: a replayed request finds the first order instead of a second one.
CREATE UNIQUE INDEX IF NOT EXISTS orders_idempotency_key ON orders (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS order_items (
    order_id   UUID   NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id BIGINT NOT NULL,
    quantity   INT    NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);

CREATE INDEX IF NOT EXISTS order_items_product ON order_items (product_id);

-- The stock plan of the last reset or populate, so strategies that keep stock outside PostgreSQL
-- (the in-memory baseline, Redis) rebuild the same catalogue after a restart.
CREATE TABLE IF NOT EXISTS stock_plans (
    id         BIGSERIAL PRIMARY KEY,
    plan       JSONB       NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
