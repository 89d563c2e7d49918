-- The PostgreSQL schema (migrations/postgres, up to 0015) as one InnoDB migration.
--
-- Order ids are BINARY(16): sqlx encodes a UUID as its 16 bytes, and InnoDB copies the primary key
-- into every secondary index and into order_items, so 16 bytes instead of CHAR(36)'s 36 keep those
-- indexes and the clustered index less than half as wide. Text that identifies something
-- (idempotency keys, strategy and status names, gates) is compared byte for byte (utf8mb4_bin), as
-- PostgreSQL compares text: 'Key' and 'key' are two idempotency keys, not one.

CREATE TABLE IF NOT EXISTS products (
    id            BIGINT      NOT NULL PRIMARY KEY,
    stock         BIGINT      NOT NULL,
    initial_stock BIGINT      NOT NULL,
    -- Which gate sells the product since the last reset ('postgres' is the SQL row's gate,
    -- whichever SQL server holds the row).
    gate          VARCHAR(16) NULL,
    version       BIGINT      NOT NULL DEFAULT 0,
    CONSTRAINT products_gate_check CHECK (gate IN ('postgres', 'redis', 'units'))
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS orders (
    id              BINARY(16)   NOT NULL PRIMARY KEY,
    strategy        VARCHAR(32)  NOT NULL,
    status          VARCHAR(16)  NOT NULL,
    -- No partial index in InnoDB: a plain UNIQUE key on a nullable column does the same job, since
    -- InnoDB lets any number of rows hold NULL there (void fences and orders without a key).
    idempotency_key VARCHAR(128) NULL,
    user_name       VARCHAR(512) NULL,
    address         TEXT         NOT NULL,
    phone           TEXT         NOT NULL,
    email           TEXT         NOT NULL,
    reason          TEXT         NULL,
    -- Sessions run in UTC (sqlx sets time_zone '+00:00'), so the default is UTC like timestamptz.
    created_at      DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    CONSTRAINT orders_status_check CHECK (status IN ('pending', 'confirmed', 'cancelled', 'void')),
    UNIQUE KEY orders_idempotency_key (idempotency_key),
    KEY orders_created_at (created_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS order_items (
    order_id   BINARY(16) NOT NULL,
    product_id BIGINT     NOT NULL,
    quantity   INT        NOT NULL,
    PRIMARY KEY (order_id, product_id),
    KEY order_items_product (product_id),
    CONSTRAINT order_items_quantity_check CHECK (quantity > 0),
    CONSTRAINT order_items_order FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS stock_plans (
    id           BIGINT      NOT NULL AUTO_INCREMENT PRIMARY KEY,
    plan         JSON        NOT NULL,
    created_at   DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    orders_since DATETIME(6) NULL
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS idempotency_claims (
    idempotency_key VARCHAR(128) NOT NULL PRIMARY KEY,
    order_id        BINARY(16)   NOT NULL,
    strategy        VARCHAR(32)  NOT NULL,
    fingerprint     TEXT         NOT NULL,
    claimed_at      DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS stock_unapplied (
    order_id   BINARY(16) NOT NULL,
    product_id BIGINT     NOT NULL,
    quantity   INT        NOT NULL,
    PRIMARY KEY (order_id, product_id),
    KEY stock_unapplied_product (product_id),
    CONSTRAINT stock_unapplied_quantity_check CHECK (quantity > 0),
    CONSTRAINT stock_unapplied_order FOREIGN KEY (order_id) REFERENCES orders (id) ON DELETE CASCADE
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS inventory_units (
    product_id BIGINT     NOT NULL,
    unit_no    BIGINT     NOT NULL,
    order_id   BINARY(16) NULL,
    PRIMARY KEY (product_id, unit_no)
) ENGINE = InnoDB;

CREATE TABLE IF NOT EXISTS contention_refusals (
    plan_id    BIGINT NOT NULL,
    product_id BIGINT NOT NULL,
    refusals   BIGINT NOT NULL,
    PRIMARY KEY (plan_id, product_id)
) ENGINE = InnoDB;
