-- Buyers `sql-optimistic` turned away with 409 `contention` (they lost the compare-and-swap every
-- time), per plan and product: the audit reports them beside the stock left, and every server
-- replica must report the same figure whichever process answered the 409. Keyed by the plan in
-- force (`stock_plans.id`), so any new plan, whoever recorded it, starts from zero; a reset drops
-- the rows of older plans.
CREATE TABLE IF NOT EXISTS contention_refusals (
    plan_id BIGINT NOT NULL,
    product_id BIGINT NOT NULL,
    refusals BIGINT NOT NULL,
    PRIMARY KEY (plan_id, product_id)
);
