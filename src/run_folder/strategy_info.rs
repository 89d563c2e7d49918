//! A strategy as a run folder records it (`run.json`), from `GET /strategies`.

use serde::{Deserialize, Serialize};

/// A strategy as `GET /strategies` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct StrategyInfo {
    pub name: String,
    pub backend: String,
    pub safe: bool,
    pub durable: bool,
    #[serde(rename = "async")]
    pub queued: bool,
    /// The PostgreSQL client its purchases ran on (`sqlx`, `tokio-postgres`), for the strategies
    /// the server's `PG_DRIVER` switches; absent for the others and from older servers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pg_driver: Option<String>,
    /// Its books live in one server process (`memory`): it cannot run across replicas.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_process: bool,
}

/// The driver rows leave unnamed: every strategy ran on it before drivers could be chosen.
const DEFAULT_PG_DRIVER: &str = "sqlx";

impl StrategyInfo {
    /// How a run folder's rows name this strategy: its name, followed by `@<driver>` when its
    /// purchases ran on a PostgreSQL client other than sqlx (`sql-atomic@tokio-postgres`), so one
    /// run can hold a strategy once per driver.
    pub fn label(&self) -> String {
        match self.pg_driver.as_deref() {
            Some(driver) if driver != DEFAULT_PG_DRIVER => format!("{}@{driver}", self.name),
            _ => self.name.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_driver_other_than_sqlx_shows_in_the_label() {
        let info = |pg_driver: Option<&str>| StrategyInfo {
            name: "sql-atomic".into(),
            backend: "postgres".into(),
            safe: true,
            durable: true,
            queued: false,
            pg_driver: pg_driver.map(str::to_owned),
            single_process: false,
        };
        assert_eq!(info(None).label(), "sql-atomic");
        assert_eq!(info(Some("sqlx")).label(), "sql-atomic");
        assert_eq!(info(Some("tokio-postgres")).label(), "sql-atomic@tokio-postgres");
        let old: StrategyInfo = serde_json::from_str(
            r#"{"name":"memory","backend":"in-process","safe":true,"durable":false,"async":false}"#,
        )
        .expect("a run.json entry written before drivers");
        assert_eq!(old.pg_driver, None);
        assert!(!serde_json::to_string(&old).unwrap().contains("pg_driver"), "nothing new in old entries");
    }
}
