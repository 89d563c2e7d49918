//! CPU used by each party while a ceiling is measured, read from `/proc`: a tool that saturates
//! the two cores it shares with the server, PostgreSQL and Redis measures them all, so a ratio is
//! only fair when the row says who spent the CPU.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Linux reports process times in clock ticks of `USER_HZ`, 100 on every mainstream architecture.
const TICKS_PER_SEC: f64 = 100.0;

/// Which party a process belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Party {
    Server,
    Postgres,
    Redis,
}

/// CPU spent over a measurement, in cores (1.0 = one core busy all the time).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub server: f64,
    pub postgres: f64,
    pub redis: f64,
    /// Everything else: the measuring tool, bench itself, other processes.
    pub rest: f64,
}

/// Counts CPU by party while a measurement runs. Processes come and go during one (pgbench opens
/// a PostgreSQL backend per client and closes it at the end, taking its counters with it), so
/// the meter samples every process every 200 ms and adds up each one's growth; a process that
/// ends loses at most its last interval.
#[derive(Debug)]
pub struct Meter {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Usage>,
}

impl Meter {
    /// Starts sampling; `server` is the checkout server's pid when bench started it.
    pub fn start(server: Option<u32>) -> Self {
        let (stop, mut stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let machine_start = machine_busy().unwrap_or(0);
            let mut last: HashMap<u32, (Party, u64)> = processes(server);
            let mut spent = [0u64; 3];
            loop {
                let done = tokio::select! {
                    _ = &mut stopped => true,
                    () = tokio::time::sleep(Duration::from_millis(200)) => false,
                };
                let now = processes(server);
                for (pid, (party, ticks)) in &now {
                    let before = last.get(pid).filter(|(p, _)| p == party).map_or(0, |(_, t)| *t);
                    spent[*party as usize] += ticks.saturating_sub(before);
                }
                last = now;
                if done {
                    break;
                }
            }
            let secs = started.elapsed().as_secs_f64().max(1e-3);
            let cores = |ticks: u64| ticks as f64 / TICKS_PER_SEC / secs;
            let busy = machine_busy().unwrap_or(0).saturating_sub(machine_start);
            let named: u64 = spent.iter().sum();
            Usage {
                server: cores(spent[Party::Server as usize]),
                postgres: cores(spent[Party::Postgres as usize]),
                redis: cores(spent[Party::Redis as usize]),
                rest: cores(busy.saturating_sub(named)),
            }
        });
        Self { stop, task }
    }

    /// Stops sampling and returns what each party used.
    pub async fn stop(self) -> Usage {
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// Every process of a named party, with its CPU ticks so far.
fn processes(server: Option<u32>) -> HashMap<u32, (Party, u64)> {
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return found };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((comm, ticks)) = parse_stat(&stat) else { continue };
        let party = if Some(pid) == server {
            Party::Server
        } else if comm == "postgres" {
            Party::Postgres
        } else if comm == "redis-server" {
            Party::Redis
        } else {
            continue;
        };
        found.insert(pid, (party, ticks));
    }
    found
}

/// `(comm, utime + stime)` from a `/proc/<pid>/stat` line. The command name is in parentheses and
/// may itself hold spaces or parentheses, so fields are counted from the last `)`.
fn parse_stat(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the comm: state is field 3 of the line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((comm, utime + stime))
}

/// Busy ticks of the whole machine (every core) from `/proc/stat`.
fn machine_busy() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_machine(stat.lines().next()?)
}

fn parse_machine(line: &str) -> Option<u64> {
    let values: Vec<u64> =
        line.strip_prefix("cpu ")?.split_whitespace().filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user].
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).copied().unwrap_or(0);
    Some(total - idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (my (odd) proc) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 4 0 1 2 3";
        assert_eq!(parse_stat(line), Some(("my (odd) proc", 300)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn machine_busy_leaves_out_idle_and_iowait() {
        let line = "cpu  100 5 50 1000 20 3 2 0 0 0";
        assert_eq!(parse_machine(line), Some(160));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_loop_shows_in_rest_and_a_named_process_in_its_party() {
        let meter = Meter::start(Some(std::process::id()));
        tokio::task::spawn_blocking(|| {
            let started = Instant::now();
            let mut x = 0u64;
            while started.elapsed().as_millis() < 600 {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        })
        .await
        .unwrap();
        let usage = meter.stop().await;
        // A loaded machine may give the loop a fraction of a core; any share shows it was counted,
        // and counted under the party the pid was given.
        assert!(usage.server > 0.02, "this process, named as the server, spun a core: {usage:?}");
    }
}
