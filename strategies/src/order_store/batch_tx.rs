//! A batch's transaction on the books of either dialect, for every strategy that writes many
//! orders per transaction. The PostgreSQL arms run [`super::write_batch`] (arrays, `RETURNING`:
//! the round trips the strategies have always made); the MariaDB arms run
//! [`crate::dialect::mysql_batch`]'s. Strategies add their own steps in their own modules
//! (`sql-coalesce` locks products and reads receipts on it).

use sqlx::pool::PoolConnection;
use sqlx::{Acquire, MySql, Postgres};

use super::{BatchError, BatchFailure, BatchOrder, StockTake, Written, commit_or_doubt, write_batch};
use crate::dialect::mysql_batch;
use crate::pg_driver::SqlPool;

/// A pooled connection of the books' server.
pub(crate) enum BatchConn {
    Postgres(PoolConnection<Postgres>),
    MySql(PoolConnection<MySql>),
}

impl BatchConn {
    /// # Errors
    /// When none is free in time or none can be opened: nothing was sent.
    pub(crate) async fn acquire(books: &SqlPool) -> Result<Self, BatchError> {
        Ok(match books {
            SqlPool::Postgres(pool) => Self::Postgres(pool.acquire().await?),
            SqlPool::MySql(pool) => Self::MySql(pool.acquire().await?),
        })
    }

    pub(crate) async fn begin(&mut self) -> Result<BatchTx<'_>, BatchError> {
        Ok(match self {
            Self::Postgres(conn) => BatchTx::Postgres(conn.begin().await?),
            Self::MySql(conn) => BatchTx::MySql(conn.begin().await?),
        })
    }
}

/// The batch's transaction, rolled back when dropped uncommitted.
pub(crate) enum BatchTx<'c> {
    Postgres(sqlx::Transaction<'c, Postgres>),
    MySql(sqlx::Transaction<'c, MySql>),
}

impl BatchTx<'_> {
    /// Writes `orders` and takes their units as `take` says; what became of each, in order
    /// ([`super::write_batch`] says how, on either server).
    ///
    /// # Errors
    /// The batch's error; the transaction must then roll back.
    pub(crate) async fn write(
        &mut self,
        orders: &[BatchOrder<'_>],
        take: StockTake,
    ) -> Result<Vec<Written>, BatchError> {
        match self {
            Self::Postgres(tx) => write_batch(tx, orders, take).await,
            Self::MySql(tx) => mysql_batch::write_batch(tx, orders, take).await,
        }
    }

    pub(crate) async fn rollback(self) -> Result<(), BatchError> {
        match self {
            Self::Postgres(tx) => tx.rollback().await?,
            Self::MySql(tx) => tx.rollback().await?,
        }
        Ok(())
    }

    /// # Errors
    /// As [`commit_or_doubt`].
    pub(crate) async fn commit_or_doubt<T>(self, written: T) -> Result<T, BatchFailure<T>> {
        match self {
            Self::Postgres(tx) => commit_or_doubt(tx, written).await,
            Self::MySql(tx) => commit_or_doubt(tx, written).await,
        }
    }
}
