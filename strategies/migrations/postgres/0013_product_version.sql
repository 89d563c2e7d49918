-- `sql-optimistic`'s compare-and-swap: a purchase reads a product's stock and version, then
-- updates the row only if the version is still the one it read, moving it on by one.
ALTER TABLE products ADD COLUMN IF NOT EXISTS version BIGINT NOT NULL DEFAULT 0;
