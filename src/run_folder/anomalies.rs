//! The anomalies a run can show: what the join of clients' answers with the server's books found.

use serde::{Deserialize, Serialize};

/// Every way a run can be wrong. Zero everywhere is a clean run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomalies {
    /// Units in orders beyond the initial stock.
    pub oversold: i64,
    /// Units left on the shelf after the drain while buyers of that product were refused.
    pub undersold: i64,
    /// Orders acknowledged (201/202) that the server does not hold, or holds cancelled after a 201.
    pub lost: i64,
    /// Orders the server holds that no client was told about (a 503 naming the order told).
    pub phantom: i64,
    /// Orders beyond the first for one idempotency key, and order ids acknowledged twice.
    pub duplicated: i64,
    /// Orders answered 202 and cancelled later.
    pub accepted_then_cancelled: i64,
    /// Units the Redis mirror disagrees with PostgreSQL by, when the audit checks it.
    pub redis_drift: i64,
}

impl Anomalies {
    pub const fn is_clean(&self) -> bool {
        self.oversold == 0
            && self.undersold == 0
            && self.lost == 0
            && self.phantom == 0
            && self.duplicated == 0
            && self.accepted_then_cancelled == 0
            && self.redis_drift == 0
    }
}
