//! The MariaDB ceilings: mysqlslap replaying `sql-atomic`'s single-line purchase on MariaDB (the
//! conditional decrement, the order row and its lines, in one transaction) on a scratch database
//! this module creates with the MySQL schema and drops afterwards.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use checkout_strategies::SqlBackend;
use checkout_strategies::dialect::ceiling::{OneLinePurchase, one_line_purchase};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};

use super::tools;

/// Statements per transaction in [`script`]: begin, the ids, the decrement, the order row, its
/// lines, commit. mysqlslap counts statements, not transactions.
const STATEMENTS_PER_PURCHASE: u64 = 6;
/// Purchases per client in the sizing run (see [`MariaBench::measure`]).
const PROBE_PURCHASES_PER_CLIENT: u64 = 20;
/// How long an unreachable MariaDB may take to say so before its ceilings are skipped.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The scratch database the MariaDB ceilings run on, and how mysqlslap reaches it.
pub(super) struct MariaBench {
    pool: MySqlPool,
    admin: MySqlPool,
    database: String,
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
}

impl MariaBench {
    /// Creates the scratch database `url` names, with the MySQL schema and products 1..=`hot`
    /// holding `stock`. `Ok(Err(reason))` when the ceilings cannot run here (mysqlslap missing,
    /// MariaDB unreachable): they are skipped, the others still run.
    ///
    /// # Errors
    /// When the URL is not a MariaDB URL naming a database, the database already exists (it is
    /// not ours to drop afterwards), or the schema cannot be laid out.
    pub(super) async fn prepare(url: &str, hot: i64, stock: i64) -> anyhow::Result<Result<Self, String>> {
        anyhow::ensure!(
            SqlBackend::from_url(url) == Ok(SqlBackend::MySql),
            "--mariadb-url must be a mysql:// or mariadb:// URL, got {url:?}"
        );
        let options = MySqlConnectOptions::from_str(&url.replacen("mariadb://", "mysql://", 1))
            .with_context(|| format!("--mariadb-url {url:?} is not a valid URL"))?;
        let database = options.get_database().unwrap_or_default().to_owned();
        anyhow::ensure!(
            !database.is_empty() && database.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "--mariadb-url must name a scratch database of letters, digits and _ (got {database:?})"
        );
        if !tools::installed("mysqlslap").await {
            return Ok(Err("mysqlslap is not installed (Debian: apt-get install mariadb-client)".into()));
        }
        let password = password_of(url);
        let mut server = MySqlConnectOptions::new()
            .host(options.get_host())
            .port(options.get_port())
            .username(options.get_username());
        if let Some(password) = &password {
            server = server.password(password);
        }
        let connect = MySqlPoolOptions::new().max_connections(1).acquire_timeout(CONNECT_TIMEOUT);
        let admin = match connect.connect_with(server.clone()).await {
            Ok(admin) => admin,
            Err(err) => {
                let at = format!("{}:{}", options.get_host(), options.get_port());
                return Ok(Err(format!("MariaDB at {at} is unreachable: {err}")));
            }
        };
        // The name is checked to be letters, digits and `_` above.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE `{database}`")))
            .execute(&admin)
            .await
            .with_context(|| {
                format!(
                    "cannot create the scratch database {database} (left over from a killed run? drop it)"
                )
            })?;
        let bench = Self {
            pool: MySqlPoolOptions::new().max_connections(1).connect_with(server.database(&database)).await?,
            admin,
            database,
            host: options.get_host().to_owned(),
            port: options.get_port(),
            user: options.get_username().to_owned(),
            password,
        };
        if let Err(err) = bench.lay_out(hot, stock).await {
            bench.clean_up().await;
            return Err(err);
        }
        Ok(Ok(bench))
    }

    async fn lay_out(&self, hot: i64, stock: i64) -> anyhow::Result<()> {
        SqlBackend::MySql.migrator().run(&self.pool).await.context("cannot lay out the MySQL schema")?;
        // Numbers only, formatted from integers.
        let rows: Vec<String> = (1..=hot).map(|id| format!("({id}, {stock}, {stock})")).collect();
        let insert = format!("INSERT INTO products (id, stock, initial_stock) VALUES {}", rows.join(", "));
        sqlx::query(sqlx::AssertSqlSafe(insert)).execute(&self.pool).await?;
        Ok(())
    }

    /// mysqlslap with `clients` clients buying one unit (of product `hot`, or of a random one of
    /// 1..=`hot` when `spread`) for about `secs`. Returns purchases (transactions) per second.
    ///
    /// mysqlslap runs a fixed number of statements, not a duration: a short sizing run gives the
    /// rate, the measured run is sized from it to last about `secs`, and its rate is the
    /// statements per client × clients ÷ [`STATEMENTS_PER_PURCHASE`] over its "Average number of
    /// seconds to run all queries". Every measured purchase must have left its order behind.
    pub(super) async fn measure(
        &self,
        script: &Path,
        clients: u32,
        secs: u64,
        hot: i64,
        spread: bool,
    ) -> anyhow::Result<f64> {
        std::fs::write(script, self::script(hot, spread)?)?;
        let probe = self.mysqlslap(script, clients, PROBE_PURCHASES_PER_CLIENT).await?;
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "a positive rate times a few seconds"
        )]
        let per_client =
            ((probe * secs as f64 / f64::from(clients)).round() as u64).max(PROBE_PURCHASES_PER_CLIENT);
        let before = self.orders().await?;
        let rate = self.mysqlslap(script, clients, per_client).await?;
        let placed = self.orders().await? - before;
        let expected = per_client * u64::from(clients);
        anyhow::ensure!(
            placed == expected,
            "mysqlslap ran {expected} purchases but {placed} orders were written"
        );
        Ok(rate)
    }

    async fn mysqlslap(&self, script: &Path, clients: u32, purchases_per_client: u64) -> anyhow::Result<f64> {
        let statements = purchases_per_client * STATEMENTS_PER_PURCHASE * u64::from(clients);
        let args = vec![
            "--protocol=tcp".to_owned(),
            format!("--host={}", self.host),
            format!("--port={}", self.port),
            format!("--user={}", self.user),
            format!("--create-schema={}", self.database),
            format!("--query={}", script.display()),
            "--delimiter=;".to_owned(),
            format!("--concurrency={clients}"),
            format!("--number-of-queries={statements}"),
            "--iterations=1".to_owned(),
        ];
        tools::mysqlslap(&args, self.password.as_deref(), clients, STATEMENTS_PER_PURCHASE).await
    }

    async fn orders(&self) -> anyhow::Result<u64> {
        let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM orders").fetch_one(&self.pool).await?;
        Ok(u64::try_from(count)?)
    }

    /// Drops the scratch database; a failure is a warning (the measurement stands).
    pub(super) async fn clean_up(self) {
        self.pool.close().await;
        let drop = format!("DROP DATABASE `{}`", self.database);
        if let Err(err) = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&self.admin).await {
            eprintln!("bench ceilings: warning: cannot drop the scratch database {}: {err}", self.database);
        }
        self.admin.close().await;
    }
}

/// The password in `url`'s user info, percent-decoded (`MySqlConnectOptions` does not give it
/// back).
fn password_of(url: &str) -> Option<String> {
    let authority = url.split_once("://")?.1.split('/').next()?;
    let (user_info, _) = authority.rsplit_once('@')?;
    let (_, password) = user_info.split_once(':')?;
    // form_urlencoded would read a literal `+` as a space; a URL's user info keeps it.
    let encoded = format!("p={}", password.replace('+', "%2B"));
    form_urlencoded::parse(encoded.as_bytes()).next().map(|(_, value)| value.into_owned())
}

/// `sql-atomic`'s single-line purchase on MariaDB as a mysqlslap script: its statements with
/// literals in place of their parameters, a new order id per purchase, one unit of product `hot`
/// (or of a random one of 1..=`hot`).
fn script(hot: i64, spread: bool) -> anyhow::Result<String> {
    let OneLinePurchase { take_line, insert_order } = one_line_purchase(SqlBackend::MySql)
        .context("sql-atomic sells one line in one statement on MySQL")?;
    let product = if spread { "@product_id".to_owned() } else { hot.to_string() };
    // The JSON text the strategy binds; not `JSON_ARRAY(@product_id)`, which MariaDB turns into
    // an array of a string (`["47"]`) when given a user variable.
    let product_ids = if spread { "CONCAT('[', @product_id, ']')".to_owned() } else { format!("'[{hot}]'") };
    let ids = if spread {
        format!("SET @order_id = UNHEX(REPLACE(UUID(), '-', '')), @product_id = FLOOR(1 + RAND() * {hot})")
    } else {
        "SET @order_id = UNHEX(REPLACE(UUID(), '-', ''))".to_owned()
    };
    let take = fill(take_line, &[("$2", "1"), ("$1", &product)]);
    // From the highest parameter down, so `$1` never eats the start of `$10`.
    let order_values = [
        ("$10", "'[1]'"),
        ("$9", product_ids.as_str()),
        ("$8", "'buyer@example.com'"),
        ("$7", "'+380441234567'"),
        ("$6", "'1 Main St, Kyiv'"),
        ("$5", "'bench'"),
        ("$4", "NULL"),
        ("$3", "'confirmed'"),
        ("$2", "'sql-atomic'"),
        ("$1", "@order_id"),
    ];
    let mut statements = vec!["START TRANSACTION".to_owned(), ids, take];
    statements.extend(insert_order.iter().map(|statement| fill(statement, &order_values)));
    statements.push("COMMIT".to_owned());
    debug_assert_eq!(statements.len() as u64, STATEMENTS_PER_PURCHASE);
    Ok(statements.iter().map(|statement| format!("{statement};\n")).collect())
}

/// `statement` on one line (mysqlslap splits its file at `;` only, but one line reads better in
/// its errors) with each parameter replaced by its literal.
fn fill(statement: &str, values: &[(&str, &str)]) -> String {
    let mut filled = statement.split_whitespace().collect::<Vec<_>>().join(" ");
    for (parameter, value) in values {
        filled = filled.replace(parameter, value);
    }
    filled
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mysqlslap_script_is_sql_atomics_mariadb_statements_with_no_parameter_left() {
        let purchase = one_line_purchase(SqlBackend::MySql).unwrap();
        for spread in [false, true] {
            let script = script(100, spread).unwrap();
            let statements: Vec<&str> = script.lines().collect();
            assert_eq!(statements.len() as u64, STATEMENTS_PER_PURCHASE, "{script}");
            assert_eq!(statements[0], "START TRANSACTION;");
            assert_eq!(statements[5], "COMMIT;");
            // The statement texts themselves, each parameter turned into a literal.
            let product = if spread { "@product_id" } else { "100" };
            assert_eq!(
                statements[2],
                format!("{};", fill(purchase.take_line, &[("$2", "1"), ("$1", product)]))
            );
            assert!(statements[3].starts_with("INSERT INTO orders") && statements[3].contains("@order_id"));
            assert!(statements[4].starts_with("INSERT INTO order_items"), "{script}");
            assert!(statements[4].contains("SELECT @order_id, p.product_id"), "{script}");
            assert_eq!(statements[1].contains("RAND()"), spread, "{script}");
            let lines_of = if spread { "CONCAT('[', @product_id, ']')" } else { "'[100]'" };
            assert!(statements[4].contains(&format!("JSON_TABLE({lines_of},")), "{script}");
            // `$` stays in the JSON paths (`'$[*]'`); a `$` before a digit is a parameter left.
            let left = script.as_bytes().windows(2).any(|pair| pair[0] == b'$' && pair[1].is_ascii_digit());
            assert!(!left, "a parameter was left: {script}");
        }
    }

    #[test]
    fn the_password_comes_from_the_url_decoded() {
        assert_eq!(password_of("mysql://root@127.0.0.1:3306/db"), None);
        assert_eq!(password_of("mysql://u:p%40ss+1@host/db").as_deref(), Some("p@ss+1"));
    }

    /// The MariaDB ceiling against the local MariaDB for one second: a positive rate, every
    /// purchase's order written, and the scratch database gone afterwards.
    #[tokio::test]
    async fn the_mariadb_ceiling_measures_a_positive_rate_and_drops_its_database() {
        let database = format!("ceilings_test_{}", uuid::Uuid::new_v4().simple());
        let url = format!("mysql://root@127.0.0.1:3306/{database}");
        let bench = MariaBench::prepare(&url, 100, 1_000_000_000_000)
            .await
            .unwrap()
            .expect("the local MariaDB and mysqlslap are there");
        let dir = std::env::temp_dir().join(format!("{database}.sql"));
        let hot = bench.measure(&dir, 2, 1, 100, false).await;
        let spread = bench.measure(&dir, 2, 1, 100, true).await;
        let (products,): (i64,) = sqlx::query_as("SELECT COUNT(DISTINCT product_id) FROM order_items")
            .fetch_one(&bench.pool)
            .await
            .unwrap();
        bench.clean_up().await;
        let _ = std::fs::remove_file(&dir);
        assert!(hot.unwrap() > 0.0);
        assert!(spread.unwrap() > 0.0);
        assert!(products > 1, "the spread buys more than the hot product: {products}");
        let admin = MySqlPool::connect("mysql://root@127.0.0.1:3306").await.unwrap();
        let left: Option<(String,)> =
            sqlx::query_as("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?")
                .bind(&database)
                .fetch_optional(&admin)
                .await
                .unwrap();
        assert!(left.is_none(), "the scratch database is dropped");
    }

    #[tokio::test]
    async fn an_unreachable_mariadb_is_a_reason_to_skip_not_an_error() {
        let skipped = MariaBench::prepare("mysql://root@127.0.0.1:1/checkout_bench_ceilings", 100, 1).await;
        let reason = skipped.unwrap().err().expect("skipped");
        assert!(reason.contains("unreachable") || reason.contains("mysqlslap"), "{reason}");
    }
}
