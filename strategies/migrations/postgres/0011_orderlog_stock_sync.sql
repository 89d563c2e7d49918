-- Units `redis-orderlog` sold that PostgreSQL's `products.stock` does not reflect yet. Its purchase
-- inserts the order, its lines and one row here per line in one statement (no update of the hot
-- product row); the stock sync deletes a batch of rows and takes their units from `products.stock`
-- in one transaction, so a unit is either here or off the stock row, never both and never neither.
-- What is left to sell of a product is `products.stock` minus its units here.
CREATE TABLE IF NOT EXISTS stock_unapplied (
    order_id   UUID   NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id BIGINT NOT NULL,
    quantity   INT    NOT NULL CHECK (quantity > 0),
    PRIMARY KEY (order_id, product_id)
);

CREATE INDEX IF NOT EXISTS stock_unapplied_product ON stock_unapplied (product_id);
