-- A reset that keeps the catalogue (`keep_catalogue`) and `server populate` leave orders in place
-- as history: orders created before the latest plan's `orders_since` are already off the shelf
-- (`initial_stock` counts them), and the audit and the next such reset look only at orders from
-- then on. NULL: every order is the run's (a reset that laid out the catalogue deleted the rest).
ALTER TABLE stock_plans ADD COLUMN IF NOT EXISTS orders_since TIMESTAMPTZ;

-- Finding the run's orders among ten million must not read them all. Orders are appended in
-- creation order, so a block-range index finds them for almost nothing on insert, where a B-tree
-- would add a write to every purchase.
CREATE INDEX IF NOT EXISTS orders_created_at ON orders USING brin (created_at);

-- The products a gate claimed since the reset, without scanning the catalogue. A sale that keeps
-- the gate it found leaves this index alone (the update stays HOT).
CREATE INDEX IF NOT EXISTS products_gated ON products (id) WHERE gate IS NOT NULL;
