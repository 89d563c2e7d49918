//! The raw tools `bench ceilings` runs, and what it reads from their output. Each runs as a child
//! process with a deadline: a tool that hangs fails the measurement, it does not hang bench.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio::process::Command;

/// Runs `program args`, killed after `limit`; returns its standard output.
async fn run(program: &str, args: &[String], limit: Duration) -> anyhow::Result<String> {
    run_with_env(program, args, &[], limit).await
}

/// [`run`] with `env` added to the child's environment.
async fn run_with_env(
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    limit: Duration,
) -> anyhow::Result<String> {
    let mut command = Command::new(program);
    command.args(args).envs(env.iter().copied()).kill_on_drop(true);
    let output = tokio::time::timeout(limit, command.output())
        .await
        .with_context(|| format!("{program} did not finish within {}s", limit.as_secs()))?
        .with_context(|| {
            format!("cannot run {program}: is it installed? (.ci/run and the README say how)")
        })?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    anyhow::ensure!(
        output.status.success(),
        "{program} failed ({}): {}{}",
        output.status,
        stdout.trim(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(stdout)
}

/// Whether `program` is on the PATH.
pub(super) async fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .await
        .is_ok_and(|output| output.status.success())
}

/// wrk: `connections` keep-alive connections on two threads for `secs` against `url`, with an
/// optional Lua script (a `POST` body). Returns requests per second; fails when more than 1 % of
/// the answers were not 2xx (a sold-out shelf or an error would measure something else).
pub(super) async fn wrk(
    url: &str,
    connections: u32,
    secs: u64,
    script: Option<&Path>,
) -> anyhow::Result<f64> {
    let mut args =
        vec!["-t2".to_owned(), format!("-c{connections}"), format!("-d{secs}s"), "--latency".to_owned()];
    if let Some(script) = script {
        args.extend(["-s".to_owned(), script.display().to_string()]);
    }
    args.push(url.to_owned());
    let out = run("wrk", &args, Duration::from_secs(secs + 30)).await?;
    parse_wrk(&out)
}

fn parse_wrk(out: &str) -> anyhow::Result<f64> {
    let number_after = |label: &str| -> Option<f64> {
        out.lines().find_map(|line| line.trim().strip_prefix(label)).and_then(|rest| rest.trim().parse().ok())
    };
    let rate =
        number_after("Requests/sec:").with_context(|| format!("no Requests/sec in wrk's output:\n{out}"))?;
    let requests: f64 = out
        .lines()
        .find_map(|line| line.trim().split_once(" requests in ").map(|(n, _)| n.trim().parse().ok()))
        .flatten()
        .unwrap_or(0.0);
    let bad = number_after("Non-2xx or 3xx responses:").unwrap_or(0.0);
    anyhow::ensure!(
        requests == 0.0 || bad / requests <= 0.01,
        "wrk: {bad} of {requests} answers were not 2xx:\n{out}"
    );
    Ok(rate)
}

/// redis-benchmark, unpipelined: `clients` clients sending `requests` of `command` (its
/// `__rand_int__` placeholders drawn from `keyspace`). Returns operations per second.
pub(super) async fn redis_benchmark(
    host: &str,
    port: u16,
    clients: u32,
    requests: u64,
    keyspace: u64,
    command: &[String],
) -> anyhow::Result<f64> {
    let mut args = vec![
        "-h".to_owned(),
        host.to_owned(),
        "-p".to_owned(),
        port.to_string(),
        "-c".to_owned(),
        clients.to_string(),
        "-n".to_owned(),
        requests.to_string(),
        "-r".to_owned(),
        keyspace.to_string(),
        "--csv".to_owned(),
    ];
    args.extend(command.iter().cloned());
    let out = run("redis-benchmark", &args, Duration::from_secs(120)).await?;
    parse_redis_benchmark(&out)
}

/// The rate is the second column, but the first (the command as typed) may hold commas and quotes
/// of its own: count from the end, where the header says the columns are.
fn parse_redis_benchmark(out: &str) -> anyhow::Result<f64> {
    let mut lines = out.lines();
    let header = lines.next().unwrap_or_default();
    let from_end = header.split(',').count().saturating_sub(1);
    lines
        .find_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            let rps = fields.get(fields.len().checked_sub(from_end)?)?;
            rps.trim_matches('"').parse().ok()
        })
        .with_context(|| format!("no rate in redis-benchmark's output:\n{out}"))
}

/// pgbench: `clients` clients running `script` for `secs`, prepared statements, no vacuum.
/// Returns transactions per second.
pub(super) async fn pgbench(
    database_url: &str,
    clients: u32,
    secs: u64,
    script: &Path,
) -> anyhow::Result<f64> {
    let args = vec![
        "-n".to_owned(),
        "-M".to_owned(),
        "prepared".to_owned(),
        format!("-c{clients}"),
        format!("-j{}", clients.min(2)),
        format!("-T{secs}"),
        "-f".to_owned(),
        script.display().to_string(),
        database_url.to_owned(),
    ];
    let out = run("pgbench", &args, Duration::from_secs(secs + 60)).await?;
    parse_pgbench(&out)
}

fn parse_pgbench(out: &str) -> anyhow::Result<f64> {
    out.lines()
        .find_map(|line| line.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .with_context(|| format!("no tps in pgbench's output:\n{out}"))
}

/// mysqlslap with `args` (its clients and statement count among them), the password through
/// `MYSQL_PWD` so it is not on a command line. Returns transactions per second: the statements each
/// client ran × `clients` ÷ `statements_per_transaction`, over the seconds it took.
pub(super) async fn mysqlslap(
    args: &[String],
    password: Option<&str>,
    clients: u32,
    statements_per_transaction: u64,
) -> anyhow::Result<f64> {
    let env: Vec<(&str, &str)> = password.map(|password| ("MYSQL_PWD", password)).into_iter().collect();
    // A purchase takes well under a second even on a saturated hot row; the limit only stops a hang.
    let out = run_with_env("mysqlslap", args, &env, Duration::from_secs(600)).await?;
    parse_mysqlslap(&out, clients, statements_per_transaction)
}

fn parse_mysqlslap(out: &str, clients: u32, statements_per_transaction: u64) -> anyhow::Result<f64> {
    let number_after = |label: &str| -> Option<f64> {
        out.lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
    };
    let seconds = number_after("Average number of seconds to run all queries:")
        .with_context(|| format!("no seconds in mysqlslap's output:\n{out}"))?;
    let per_client = number_after("Average number of queries per client:")
        .with_context(|| format!("no queries per client in mysqlslap's output:\n{out}"))?;
    anyhow::ensure!(seconds > 0.0, "mysqlslap ran for 0 s, too short to give a rate:\n{out}");
    #[expect(clippy::cast_precision_loss, reason = "a handful of statements per transaction")]
    let transactions = per_client * f64::from(clients) / statements_per_transaction as f64;
    Ok(transactions / seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_gives_its_rate_and_refuses_a_run_of_errors() {
        let ok = "Running 5s test @ http://127.0.0.1:8080/strategies\n  2 threads and 64 connections\n  \
                  531234 requests in 5.00s, 1.2GB read\nRequests/sec: 106246.80\nTransfer/sec: 240MB\n";
        assert_eq!(parse_wrk(ok).unwrap(), 106_246.80);
        let bad =
            "  1000 requests in 5.00s, 1MB read\n  Non-2xx or 3xx responses: 900\nRequests/sec:   200.00\n";
        let err = parse_wrk(bad).unwrap_err().to_string();
        assert!(err.contains("900 of 1000"), "{err}");
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn redis_benchmark_csv_gives_its_rate() {
        let out = "\"test\",\"rps\",\"avg_latency_ms\"\n\"DECR bench:k\",\"94339.62\",\"0.4\"\n";
        assert_eq!(parse_redis_benchmark(out).unwrap(), 94_339.62);
        let commas =
            "\"test\",\"rps\",\"avg_latency_ms\"\n\"EVALSHA x {\"a\":1,\"b\":2} 1\",\"19507.44\",\"2.1\"\n";
        assert_eq!(parse_redis_benchmark(commas).unwrap(), 19_507.44);
        assert!(parse_redis_benchmark("\"test\",\"rps\"\n").is_err());
    }

    #[test]
    fn pgbench_output_gives_its_tps() {
        let out = "number of transactions actually processed: 12000\nlatency average = 3.3 ms\n\
                   initial connection time = 5.1 ms\ntps = 2412.345678 (without initial connection time)\n";
        assert_eq!(parse_pgbench(out).unwrap(), 2_412.345_678);
    }

    #[test]
    fn mysqlslap_output_gives_transactions_per_second() {
        let out = "Benchmark\n\tAverage number of seconds to run all queries: 0.946 seconds\n\t\
                   Minimum number of seconds to run all queries: 0.946 seconds\n\t\
                   Number of clients running queries: 8\n\tAverage number of queries per client: 600\n";
        let rate = parse_mysqlslap(out, 8, 6).unwrap();
        assert!((rate - 800.0 / 0.946).abs() < 1e-6, "{rate}");
        let instant = "Average number of seconds to run all queries: 0.000 seconds\n\
                       Average number of queries per client: 6\n";
        assert!(parse_mysqlslap(instant, 1, 6).is_err());
        assert!(parse_mysqlslap("nothing", 1, 6).is_err());
    }
}
