//! `run.json`: what was run, from which commit, on what, against which versions. `bench` writes
//! it and `report` reads it with these same types.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::StrategyInfo;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Git {
    pub sha: String,
    pub short_sha: String,
    /// Uncommitted changes in the work tree.
    pub dirty: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Host {
    pub hostname: String,
    pub cpus: usize,
    pub os: String,
    pub arch: String,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    pub url: String,
    pub spawned: bool,
    /// Server processes the load was spread over (`--replicas`); 1 in runs before replicas.
    #[serde(default = "one_replica")]
    pub replicas: usize,
}

const fn one_replica() -> usize {
    1
}

/// The whole `run.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunMeta {
    pub run_id: String,
    pub started_at: String,
    pub finished_at: String,
    pub git: Git,
    /// `checkout_bench`, `rustc`, `postgres`, `redis`: each as it reported itself.
    pub versions: BTreeMap<String, String>,
    pub host: Host,
    pub profile: String,
    pub preset: String,
    pub command: String,
    pub options: serde_json::Value,
    pub strategies: Vec<StrategyInfo>,
    pub repetition_order: Vec<Vec<String>>,
    pub server: ServerInfo,
    /// Set when the comparison stopped before every run was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

/// How this binary was compiled.
pub const fn profile() -> &'static str {
    if cfg!(debug_assertions) { "debug" } else { "release" }
}

/// The first line a command prints, or `unknown`.
fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).output().ok().filter(|out| out.status.success())?;
    Some(String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or_default().trim().to_owned())
        .filter(|line| !line.is_empty())
}

pub fn git() -> Git {
    let sha = output_of("git", &["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let short_sha = output_of("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "nogit".to_owned());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .is_ok_and(|out| out.status.success() && !out.stdout.is_empty());
    Git { sha, short_sha, dirty }
}

pub fn host() -> Host {
    let hostname = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| output_of("hostname", &[]))
        .unwrap_or_else(|| "unknown".to_owned());
    Host {
        hostname,
        cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
        os: std::env::consts::OS.to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
    }
}

/// Asks each backend for its version, a few seconds at most each; `unknown` when one does not say.
pub async fn versions(database_url: &str, redis_url: &str) -> BTreeMap<String, String> {
    let limit = Duration::from_secs(3);
    let postgres = tokio::time::timeout(limit, async {
        use sqlx::Connection as _;
        let mut conn = sqlx::PgConnection::connect(database_url).await.ok()?;
        sqlx::query_scalar::<_, String>("SHOW server_version").fetch_one(&mut conn).await.ok()
    });
    let redis = tokio::time::timeout(limit, async {
        let client = redis::Client::open(redis_url).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut conn).await.ok()?;
        info.lines().find_map(|line| line.strip_prefix("redis_version:")).map(|v| v.trim().to_owned())
    });
    let (postgres, redis) = tokio::join!(postgres, redis);
    let unknown = || "unknown".to_owned();
    BTreeMap::from([
        ("checkout_bench".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("rustc".to_owned(), output_of("rustc", &["--version"]).unwrap_or_else(unknown)),
        ("postgres".to_owned(), postgres.ok().flatten().unwrap_or_else(unknown)),
        ("redis".to_owned(), redis.ok().flatten().unwrap_or_else(unknown)),
    ])
}
