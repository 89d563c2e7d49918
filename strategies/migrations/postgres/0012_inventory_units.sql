-- `sql-skip-locked`'s unit pool: one row per unit of a product, free while `order_id` is NULL. A
-- buyer claims `quantity` free rows with `FOR UPDATE SKIP LOCKED`, so buyers of one product never
-- wait for each other's locks. A product's pool is laid out from its stock row by the first
-- `sql-skip-locked` sale after a reset, which claims the product for the `units` gate: from then
-- on the pool is its books (what is left is its free rows) and the stock row stays as it was.
CREATE TABLE IF NOT EXISTS inventory_units (
    product_id BIGINT NOT NULL,
    unit_no    BIGINT NOT NULL,
    order_id   UUID,
    PRIMARY KEY (product_id, unit_no)
);

CREATE INDEX IF NOT EXISTS inventory_units_free ON inventory_units (product_id, unit_no)
    WHERE order_id IS NULL;

ALTER TABLE products DROP CONSTRAINT IF EXISTS products_gate_check;
ALTER TABLE products ADD CONSTRAINT products_gate_check CHECK (gate IN ('postgres', 'redis', 'units'));
