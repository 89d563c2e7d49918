-- Which gate sells a product since the last reset: 'postgres' (the SQL strategies take its stock
-- row) or 'redis' (the Redis strategies take the mirror first). The first safe strategy to sell a
-- product fixes it; a safe strategy of the other gate is refused until the next reset, because
-- neither gate sees the other's sales before they are committed.
ALTER TABLE products ADD COLUMN IF NOT EXISTS gate TEXT CHECK (gate IN ('postgres', 'redis'));

-- One idempotency namespace for every strategy: the first request with a key claims it here,
-- before any stock moves, and every later request with the key replays the claimed order,
-- whichever strategy it names. `fingerprint` tells a true retry from a reused key.
CREATE TABLE IF NOT EXISTS idempotency_claims (
    idempotency_key TEXT        PRIMARY KEY,
    order_id        UUID        NOT NULL,
    strategy        TEXT        NOT NULL,
    fingerprint     TEXT        NOT NULL,
    claimed_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A void order is a fence, not an order: the id of a purchase whose outcome was in doubt (a lost
-- reply, a reservation that outlived its deadline) is written here as void before its units go
-- back on the shelf, so the purchase can never commit afterwards (its insert collides with the
-- primary key). Void rows hold no items and no stock; every book and listing skips them.
ALTER TABLE orders DROP CONSTRAINT IF EXISTS orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('pending', 'confirmed', 'cancelled', 'void'));
