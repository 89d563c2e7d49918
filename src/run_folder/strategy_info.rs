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
    /// The SQL server holding the server's books (`postgres`, `mysql`); absent from older servers,
    /// which ran on PostgreSQL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
    /// Whether it sells on that database (the others answer 501); older servers ran every one.
    #[serde(default = "available", skip_serializing_if = "is_available")]
    pub available: bool,
}

const fn available() -> bool {
    true
}

/// Only a strategy the server cannot run is written with `available`: older entries stay as
/// they were.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde hands the field by reference
const fn is_available(available: &bool) -> bool {
    *available
}

/// The driver rows leave unnamed: every strategy ran on it before drivers could be chosen.
const DEFAULT_PG_DRIVER: &str = "sqlx";

/// The database rows leave unnamed: every strategy ran on it before databases could be chosen.
pub const DEFAULT_DATABASE: &str = "postgres";

impl StrategyInfo {
    /// How a run folder's rows name this strategy: its name, followed by `@<driver>` when its
    /// purchases ran on a PostgreSQL client other than sqlx (`sql-atomic@tokio-postgres`) and by
    /// `@<database>` when its books were on another SQL server than PostgreSQL
    /// (`sql-atomic@mysql`), so one run can hold a strategy once per driver and per database.
    /// `memory` needs no database and keeps its name everywhere.
    pub fn label(&self) -> String {
        match (self.pg_driver.as_deref(), self.database()) {
            (_, database) if database != DEFAULT_DATABASE && self.uses_database() => {
                format!("{}@{database}", self.name)
            }
            (Some(driver), _) if driver != DEFAULT_PG_DRIVER => format!("{}@{driver}", self.name),
            _ => self.name.clone(),
        }
    }

    /// The SQL server its books were on.
    pub fn database(&self) -> &str {
        self.database.as_deref().unwrap_or(DEFAULT_DATABASE)
    }

    /// Whether its books are in the SQL database (every strategy but the in-process baseline).
    pub fn uses_database(&self) -> bool {
        self.backend != "in-process"
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
            database: None,
            available: true,
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
        assert!(old.available && old.database() == "postgres", "older servers ran everything on PostgreSQL");
    }

    #[test]
    fn a_strategy_on_another_database_is_labelled_with_it_memory_never() {
        let on = |name: &str, backend: &str, database: Option<&str>| StrategyInfo {
            name: name.into(),
            backend: backend.into(),
            safe: true,
            durable: true,
            queued: false,
            pg_driver: None,
            single_process: false,
            database: database.map(str::to_owned),
            available: true,
        };
        assert_eq!(on("sql-atomic", "postgres", Some("mysql")).label(), "sql-atomic@mysql");
        assert_eq!(on("sql-atomic", "postgres", Some("postgres")).label(), "sql-atomic");
        assert_eq!(on("memory", "in-process", Some("mysql")).label(), "memory");
    }
}
