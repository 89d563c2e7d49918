//! The statements `sql-atomic` runs for a single-line purchase on each backend, for the raw
//! ceilings (`bench ceilings`) to replay the very same texts with a database's own load tool.

use super::SqlBackend;

/// One single-line purchase of `sql-atomic`, in the order it runs them, in one transaction.
/// Parameters are `$n`, numbered as [`super::OrderSql::insert`] and the decrement number them.
#[derive(Debug, Clone, Copy)]
pub struct OneLinePurchase {
    /// `$1` product, `$2` quantity: the conditional decrement; the sale goes on when it changed
    /// one row.
    pub take_line: &'static str,
    /// `$1` order id, `$2` strategy, `$3` status, `$4` key, `$5` user, `$6` address, `$7` phone,
    /// `$8` email, `$9` product ids, `$10` quantities: the order row, then its lines.
    pub insert_order: &'static [&'static str],
}

/// What `sql-atomic` runs on `backend` when a purchase has one line and the dialect has no
/// single statement for it; `None` where it sells with one statement
/// ([`crate::sql_atomic::ONE_LINE_STATEMENT`] on PostgreSQL).
pub fn one_line_purchase(backend: SqlBackend) -> Option<OneLinePurchase> {
    let sql = backend.sql();
    if sql.atomic.buy_one_line.is_some() {
        return None;
    }
    Some(OneLinePurchase { take_line: sql.atomic.take_line, insert_order: sql.orders.insert })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mysql_sells_one_line_in_a_transaction_and_postgres_in_one_statement() {
        let mysql = one_line_purchase(SqlBackend::MySql).expect("MySQL has no data-modifying CTE");
        assert!(mysql.take_line.starts_with("UPDATE products"), "{}", mysql.take_line);
        assert_eq!(mysql.insert_order.len(), 2, "the order row and its lines");
        assert!(one_line_purchase(SqlBackend::Postgres).is_none());
    }
}
