//! One batch's transaction on either server, one method per step. The PostgreSQL arms run the
//! statements the strategy has always run (arrays, `RETURNING`: the same round trips); the
//! MariaDB arms run [`crate::dialect::mysql_batch`]'s and lock products one id at a time, as
//! `sql-for-update` does there.

use sqlx::pool::PoolConnection;
use sqlx::{Acquire, MySql, Postgres};

use super::{KeyedReceipt, LOCK_PRODUCTS, RECEIPTS_BY_KEY, Shelf};
use crate::dialect::{SqlBackend, mysql_batch};
use crate::order_store::{
    BatchError, BatchFailure, BatchOrder, StockTake, Written, commit_or_doubt, write_batch,
};
use crate::pg_driver::{DbError, SqlPool, fetch_by_ids};

/// A pooled connection of the books' server.
pub(super) enum BatchConn {
    Postgres(PoolConnection<Postgres>),
    MySql(PoolConnection<MySql>),
}

impl BatchConn {
    /// # Errors
    /// When none is free in time or none can be opened: nothing was sent.
    pub(super) async fn acquire(books: &SqlPool) -> Result<Self, BatchError> {
        Ok(match books {
            SqlPool::Postgres(pool) => Self::Postgres(pool.acquire().await?),
            SqlPool::MySql(pool) => Self::MySql(pool.acquire().await?),
        })
    }

    pub(super) async fn begin(&mut self) -> Result<BatchTx<'_>, BatchError> {
        Ok(match self {
            Self::Postgres(conn) => BatchTx::Postgres(conn.begin().await?),
            Self::MySql(conn) => BatchTx::MySql(conn.begin().await?),
        })
    }
}

/// The batch's transaction, rolled back when dropped uncommitted.
pub(super) enum BatchTx<'c> {
    Postgres(sqlx::Transaction<'c, Postgres>),
    MySql(sqlx::Transaction<'c, MySql>),
}

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

    /// Writes the accepted `orders` and takes their units, checked again under the locks.
    pub(super) async fn write(&mut self, orders: &[BatchOrder<'_>]) -> Result<Vec<Written>, BatchError> {
        match self {
            Self::Postgres(tx) => write_batch(tx, orders, StockTake::Checked).await,
            Self::MySql(tx) => mysql_batch::write_batch(tx, orders).await,
        }
    }

    pub(super) async fn rollback(self) -> Result<(), BatchError> {
        match self {
            Self::Postgres(tx) => tx.rollback().await?,
            Self::MySql(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    /// # Errors
    /// As [`commit_or_doubt`].
    pub(super) async fn commit_or_doubt<T>(self, written: T) -> Result<T, BatchFailure<T>> {
        match self {
            Self::Postgres(tx) => commit_or_doubt(tx, written).await,
            Self::MySql(tx) => commit_or_doubt(tx, written).await,
        }
    }
}
