//! Stock checks and decrements shared by the SQL strategies that read the stock before writing it.

use crate::order::{OrderLines, PurchaseOutcome};
use crate::pg_driver::{DbError, Statements};

/// Claims the PostgreSQL gate when the product has none yet, but never checks it: only `sql-naive`
/// decrements unconditionally, and it is unsafe by design (see `crate::gates`).
pub(crate) const TAKE_UNCONDITIONALLY: &str =
    "UPDATE products SET stock = stock - $2::bigint, gate = COALESCE(gate, 'postgres') WHERE id = $1";

/// The refusal for `lines` given `(id, stock)` rows sorted by id, or `None` when every line fits.
pub(crate) fn check_lines(lines: &OrderLines, rows: &[(i64, i64)]) -> Option<PurchaseOutcome> {
    for line in lines {
        match rows.binary_search_by_key(&line.product_id.get(), |&(id, _)| id) {
            Err(_) => return Some(PurchaseOutcome::UnknownProduct(line.product_id)),
            Ok(at) if rows[at].1 < i64::from(line.quantity.get()) => {
                return Some(PurchaseOutcome::SoldOut(line.product_id));
            }
            Ok(_) => {}
        }
    }
    None
}

/// Decrements every line with `take_unconditionally` (`$1` product, `$2` quantity, in the
/// connection's dialect) without looking at the stock, in product-id order.
pub(crate) async fn take_lines(
    conn: &mut (impl Statements + ?Sized),
    take_unconditionally: &'static str,
    lines: &OrderLines,
) -> Result<(), DbError> {
    for line in lines {
        conn.execute(take_unconditionally, &[&line.product_id.get(), &i64::from(line.quantity.get())])
            .await?;
    }
    Ok(())
}
