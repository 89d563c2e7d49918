//! MySQL's and MariaDB's statements (InnoDB, REPEATABLE READ), and what their error numbers mean.
//!
//! What differs from PostgreSQL, and why the statements look the way they do:
//! - No `UPDATE … RETURNING` and no data-modifying CTE: a conditional decrement reports success by
//!   its affected-row count (the driver asks for found rows, which for a decrement that changes
//!   the stock are the changed rows), and an order and its lines are two statements in one
//!   transaction.
//! - A plain `SELECT` inside a REPEATABLE READ transaction reads the snapshot of its first read,
//!   not the latest row: whatever decides a sale reads the row with the locking read itself
//!   (`FOR UPDATE`) or is the conditional `UPDATE` (which always sees the latest version).
//! - No arrays: a list of ids is read one locking read per id in id order, so InnoDB locks exactly
//!   those rows (a join against a list would let the optimizer pick a scan that locks every row it
//!   passes). Order lines are inserted from two JSON arrays (`JSON_TABLE`), which locks nothing
//!   but the new rows.
//! - `INSERT IGNORE` stands for `ON CONFLICT DO NOTHING`: `ON DUPLICATE KEY UPDATE` reports one
//!   affected row for a duplicate once found rows are on, which would hide the conflict.

use super::{AtomicSql, ByIds, ClaimSql, ClaimStep, DialectSql, FenceSql, ForUpdateSql, NaiveSql, OrderSql};
use crate::error::StrategyError;

const TAKE_LINE: &str = "UPDATE products SET stock = stock - $2, gate = 'postgres' \
                         WHERE id = $1 AND stock >= $2 AND COALESCE(gate, 'postgres') = 'postgres'";

const INSERT_ORDER_ROW: &str = "INSERT INTO orders (id, strategy, status, idempotency_key, user_name, \
                                address, phone, email) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

const INSERT_ORDER_LINES: &str = r#"
INSERT INTO order_items (order_id, product_id, quantity)
SELECT $1, p.product_id, q.quantity
FROM JSON_TABLE($9, '$[*]' COLUMNS (n FOR ORDINALITY, product_id BIGINT PATH '$')) AS p
JOIN JSON_TABLE($10, '$[*]' COLUMNS (n FOR ORDINALITY, quantity INT PATH '$')) AS q ON q.n = p.n
"#;

pub(crate) static SQL: DialectSql = DialectSql {
    atomic: AtomicSql {
        buy_one_line: None,
        take_line: TAKE_LINE,
        why_not: "SELECT gate FROM products WHERE id = $1",
    },
    for_update: ForUpdateSql {
        lock_products: ByIds::EachId("SELECT id, stock, gate FROM products WHERE id = $1 FOR UPDATE"),
        take: "UPDATE products SET stock = stock - $2, gate = 'postgres' WHERE id = $1",
    },
    naive: NaiveSql {
        read_stock: ByIds::EachId("SELECT id, stock FROM products WHERE id = $1"),
        take_unconditionally: "UPDATE products SET stock = stock - $2, gate = COALESCE(gate, 'postgres') \
                               WHERE id = $1",
    },
    orders: OrderSql {
        insert: &[INSERT_ORDER_ROW, INSERT_ORDER_LINES],
        receipt_by_key: "SELECT id, status, strategy FROM orders \
                         WHERE idempotency_key = $1 AND status <> 'void'",
    },
    fence: FenceSql {
        void: "INSERT IGNORE INTO orders (id, strategy, status, address, phone, email, reason) \
               VALUES ($1, $2, 'void', '', '', '', $3)",
        status: "SELECT status FROM orders WHERE id = $1",
    },
    claims: ClaimSql {
        claim: ClaimStep::InsertThenRead {
            // A key another transaction is inserting makes this wait for it, as in PostgreSQL.
            insert: "INSERT IGNORE INTO idempotency_claims (idempotency_key, order_id, strategy, fingerprint) \
                     VALUES ($1, $2, $3, $4)",
            holder: "SELECT order_id, strategy, fingerprint, \
                     CAST(TIMESTAMPDIFF(MICROSECOND, claimed_at, NOW(6)) / 1e6 AS DOUBLE) \
                     FROM idempotency_claims WHERE idempotency_key = $1",
        },
        unclaim: "DELETE FROM idempotency_claims WHERE idempotency_key = $1 AND order_id = $2",
        receipt: "SELECT status, strategy FROM orders WHERE id = $1 AND status <> 'void'",
    },
};

/// ER_DUP_ENTRY: a unique key is taken; the message names the key.
pub(crate) const DUPLICATE_ENTRY: u16 = 1062;
/// ER_LOCK_DEADLOCK: InnoDB rolled the transaction back to break a cycle.
const DEADLOCK: u16 = 1213;
/// ER_CHECKREAD: the row changed since the transaction's snapshot (MariaDB with
/// `innodb_snapshot_isolation`); the transaction rolled back and may succeed if run again.
const SNAPSHOT_CHANGED: u16 = 1020;
/// ER_LOCK_WAIT_TIMEOUT: a row lock was not granted within `innodb_lock_wait_timeout`.
const LOCK_WAIT_TIMEOUT: u16 = 1205;
/// ER_STATEMENT_TIMEOUT: `max_statement_time` fired (MariaDB).
const STATEMENT_TIMEOUT: u16 = 1969;
/// ER_QUERY_TIMEOUT: `max_execution_time` fired (MySQL).
const QUERY_TIMEOUT: u16 = 3024;
/// ER_CON_COUNT_ERROR, ER_SERVER_SHUTDOWN, ER_CONNECTION_KILLED, ER_QUERY_INTERRUPTED.
const SERVER_AWAY: [u16; 4] = [1040, 1053, 1927, 1317];

/// The transaction rolled back for a conflict and may succeed if run again.
pub(crate) const fn is_retryable(number: u16) -> bool {
    matches!(number, DEADLOCK | SNAPSHOT_CHANGED)
}

/// The server stopped while the statement ran: it may have committed, as after a lost reply.
pub(crate) fn may_have_committed(number: u16) -> bool {
    matches!(number, 1053 | 1927)
}

/// The unique key a duplicate-entry error names (`orders_idempotency_key`, `PRIMARY`), without
/// the table MySQL 8 puts in front of it.
pub(crate) fn duplicate_key(number: u16, message: &str) -> Option<&str> {
    if number != DUPLICATE_ENTRY {
        return None;
    }
    let quoted = message.rsplit_once(" for key '")?.1.strip_suffix('\'')?;
    Some(quoted.rsplit_once('.').map_or(quoted, |(_, key)| key))
}

/// The error a failure the server answered with error `number` is.
pub(crate) fn strategy_error(number: u16, message: String) -> StrategyError {
    if is_retryable(number) {
        StrategyError::Conflict(message)
    } else if matches!(number, LOCK_WAIT_TIMEOUT | STATEMENT_TIMEOUT | QUERY_TIMEOUT)
        || SERVER_AWAY.contains(&number)
    {
        StrategyError::Unavailable(message)
    } else {
        StrategyError::Internal(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_read_from_either_servers_message() {
        let mariadb = "Duplicate entry 'k-1' for key 'orders_idempotency_key'";
        let mysql8 = "Duplicate entry 'k-1' for key 'orders.orders_idempotency_key'";
        for message in [mariadb, mysql8] {
            assert_eq!(duplicate_key(DUPLICATE_ENTRY, message), Some("orders_idempotency_key"));
        }
        assert_eq!(duplicate_key(DUPLICATE_ENTRY, "Duplicate entry 'x' for key 'PRIMARY'"), Some("PRIMARY"));
        assert_eq!(duplicate_key(DEADLOCK, mariadb), None, "only a duplicate entry names a key");
    }

    #[test]
    fn conflicts_retry_and_timeouts_answer_503() {
        for number in [DEADLOCK, SNAPSHOT_CHANGED] {
            assert!(is_retryable(number));
            assert!(matches!(strategy_error(number, String::new()), StrategyError::Conflict(_)));
        }
        for number in [LOCK_WAIT_TIMEOUT, STATEMENT_TIMEOUT, QUERY_TIMEOUT] {
            assert!(!is_retryable(number));
            assert!(matches!(strategy_error(number, String::new()), StrategyError::Unavailable(_)));
        }
        assert!(matches!(strategy_error(DUPLICATE_ENTRY, String::new()), StrategyError::Internal(_)));
    }
}
