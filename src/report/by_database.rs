//! The same strategies on two databases side by side: a run with `--also-database` (or one whose
//! rows are labelled `<strategy>@<database>`) holds each SQL strategy once per database, and a
//! reader asks "which strategy on *my* database?" one row per strategy, not two rows far apart.

use super::capacity::CapacityFigures;
use super::figures::{Spread, StrategyFigures};

/// How rows name the databases: a label's `@<database>` suffix, none for PostgreSQL.
const DATABASES: [(&str, &str); 2] = [("", "PostgreSQL"), ("mysql", "MariaDB")];

/// The table's column headers.
#[must_use]
pub fn header() -> Vec<String> {
    let mut header = vec!["strategy".to_owned()];
    for (_, name) in DATABASES {
        header.push(format!("{name} capacity req/s"));
    }
    for (_, name) in DATABASES {
        header.push(format!("{name} time to sell out ms"));
    }
    for (_, name) in DATABASES {
        header.push(format!("{name} verdict"));
    }
    header
}

/// `label`'s strategy and database suffix (`""` for PostgreSQL).
fn split(label: &str) -> (&str, &str) {
    label
        .split_once('@')
        .filter(|(_, suffix)| DATABASES.iter().any(|(db, _)| db == suffix))
        .unwrap_or((label, ""))
}

fn number(spread: Spread) -> String {
    if spread.max > spread.min {
        format!("{:.0} ({:.0}–{:.0})", spread.median, spread.min, spread.max)
    } else {
        format!("{:.0}", spread.median)
    }
}

/// One row per strategy measured on more than one database, in the order strategies first appear;
/// empty when no strategy was (the table is then left out).
#[must_use]
pub fn rows(capacity: &[CapacityFigures], flash_sale: &[StrategyFigures]) -> Vec<Vec<String>> {
    let mut strategies: Vec<&str> = Vec::new();
    let labels = capacity.iter().map(|c| c.name.as_str()).chain(flash_sale.iter().map(|f| f.name.as_str()));
    for label in labels {
        let (strategy, _) = split(label);
        if !strategies.contains(&strategy) {
            strategies.push(strategy);
        }
    }
    let on = |strategy: &str, database: &str, label: &str| split(label) == (strategy, database);
    strategies
        .into_iter()
        .filter(|strategy| {
            let measured = DATABASES.iter().filter(|(db, _)| {
                capacity.iter().any(|c| on(strategy, db, &c.name))
                    || flash_sale.iter().any(|f| on(strategy, db, &f.name))
            });
            measured.count() > 1
        })
        .map(|strategy| {
            let mut row = vec![strategy.to_owned()];
            for (db, _) in DATABASES {
                let found = capacity.iter().find(|c| on(strategy, db, &c.name));
                row.push(found.map_or_else(|| "–".to_owned(), |c| number(c.capacity_rps)));
            }
            for (db, _) in DATABASES {
                let found = flash_sale.iter().find(|f| on(strategy, db, &f.name));
                row.push(found.map_or_else(
                    || "–".to_owned(),
                    |f| f.time_to_sell_out_ms.map_or_else(|| "did not sell out".to_owned(), number),
                ));
            }
            for (db, _) in DATABASES {
                let found = flash_sale.iter().find(|f| on(strategy, db, &f.name));
                row.push(found.map_or_else(|| "–".to_owned(), |f| f.verdict.as_str().to_owned()));
            }
            row
        })
        .collect()
}

/// What the table shows, under it.
pub const LEGEND: &str = "The same strategies, same run, same load, one database after the other (`--also-database`): \
     sustainable capacity (medians, min–max over repetitions) and the flash sale's time to sell out.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_database_suffix_is_split_off() {
        assert_eq!(split("sql-atomic@mysql"), ("sql-atomic", "mysql"));
        assert_eq!(split("sql-atomic"), ("sql-atomic", ""));
        assert_eq!(
            split("sql-atomic@tokio-postgres"),
            ("sql-atomic@tokio-postgres", ""),
            "a driver is no database"
        );
    }
}
