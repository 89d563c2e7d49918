//! `sql-coalesce`'s own steps on a batch's transaction ([`BatchTx`]), one method per step. The
//! PostgreSQL arms run the statements the strategy has always run (arrays: the same round trips);
//! the MariaDB arms run [`crate::dialect::mysql_batch`]'s and lock products one id at a time, as
//! `sql-for-update` does there.

use super::{KeyedReceipt, LOCK_PRODUCTS, RECEIPTS_BY_KEY, Shelf};
use crate::dialect::{SqlBackend, mysql_batch};
use crate::order_store::{BatchError, BatchTx};
use crate::pg_driver::{DbError, fetch_by_ids};

impl BatchTx<'_> {
    /// Locks `products` (ascending ids) and reads them under the lock; an unknown id has no row.
    pub(super) async fn lock_products(&mut self, products: &Vec<i64>) -> Result<Vec<Shelf>, BatchError> {
        match self {
            Self::Postgres(tx) => {
                Ok(sqlx::query_as::<_, Shelf>(LOCK_PRODUCTS).bind(products).fetch_all(&mut **tx).await?)
            }
            Self::MySql(tx) => {
                let sql = SqlBackend::MySql.sql().for_update.lock_products;
                fetch_by_ids(&mut **tx, sql, products)
                    .await?
                    .iter()
                    .map(|row| Ok(Shelf { id: row.get(0)?, stock: row.get(1)?, gate: row.get(2)? }))
                    .collect::<Result<_, DbError>>()
                    .map_err(BatchError::from)
            }
        }
    }

    /// The live orders holding any of `keys` (not empty).
    pub(super) async fn receipts_by_key(&mut self, keys: &[&str]) -> Result<Vec<KeyedReceipt>, BatchError> {
        match self {
            Self::Postgres(tx) => Ok(sqlx::query_as(RECEIPTS_BY_KEY).bind(keys).fetch_all(&mut **tx).await?),
            Self::MySql(tx) => Ok(mysql_batch::receipts_by_key(tx, keys)
                .await?
                .into_iter()
                .map(|(idempotency_key, id, status, strategy)| KeyedReceipt {
                    idempotency_key,
                    id,
                    status,
                    strategy,
                })
                .collect()),
        }
    }
}
