//! PostgreSQL's statements: the ones the strategies ran before there was a second dialect, kept
//! beside the logic they serve.

use super::{
    AtomicSql, ByIds, ClaimSql, ClaimStep, ClaimUnits, ContentionSql, DialectSql, FenceSql, ForUpdateSql,
    LayOutPool, NaiveSql, OptimisticSql, OrderSql, RedisSql, SkipLockedSql,
};

pub(crate) static SQL: DialectSql = DialectSql {
    atomic: AtomicSql {
        buy_one_line: Some(crate::sql_atomic::BUY_ONE_LINE),
        take_line: crate::sql_atomic::TAKE_LINE,
        why_not: crate::sql_atomic::WHY_NOT,
    },
    for_update: ForUpdateSql {
        lock_products: ByIds::Array(crate::sql_for_update::LOCK_PRODUCTS),
        take: crate::sql_for_update::TAKE,
    },
    naive: NaiveSql {
        read_stock: ByIds::Array(crate::sql_naive::READ_STOCK),
        take_unconditionally: crate::sql_stock::TAKE_UNCONDITIONALLY,
    },
    optimistic: OptimisticSql {
        read: ByIds::Array(crate::sql_optimistic::READ),
        swap: crate::sql_optimistic::SWAP,
    },
    skip_locked: SkipLockedSql {
        lay_out: LayOutPool::OneStatement(crate::sql_skip_locked::LAY_OUT_POOL),
        gate_of: crate::sql_skip_locked::GATE_OF,
        claim_units: ClaimUnits::OneStatement(crate::sql_skip_locked::CLAIM_UNITS),
    },
    contention: ContentionSql {
        record: crate::contention::RECORD,
        of_current_plan: crate::contention::OF_CURRENT_PLAN,
        forget_earlier: crate::contention::FORGET_EARLIER,
    },
    orders: OrderSql {
        insert: &[crate::order_store::INSERT_ORDER],
        receipt_by_key: crate::order_store::RECEIPT_BY_KEY,
    },
    fence: FenceSql { void: crate::fence::VOID, status: crate::fence::STATUS },
    claims: ClaimSql {
        claim: ClaimStep::Returning(crate::idempotency::CLAIM),
        unclaim: crate::idempotency::UNCLAIM,
        receipt: crate::idempotency::RECEIPT,
    },
    redis: RedisSql {
        take_reserved: "UPDATE products SET stock = stock - $2::bigint WHERE id = $1 AND stock >= $2::bigint",
    },
};
