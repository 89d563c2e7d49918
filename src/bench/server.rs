//! The server under test: started by bench as a child process (the same build, so the same
//! profile), or reached at `--url`; and the admin calls a comparison makes on it. A server bench
//! started can also be killed, stopped and started again on the same address (`bench chaos`).

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hyper::StatusCode;
use hyper::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use tokio::process::{Child, Command};

use super::options::ServerFlags;
use crate::loadgen::{Connection, Target};

/// How long a spawned server may take to create its database and answer `/healthz`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// Admin calls are bounded: a hung server fails the comparison, it does not hang it.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

pub use crate::run_folder::StrategyInfo;

/// The server a comparison drives.
#[derive(Debug)]
pub struct Server {
    pub target: Target,
    admin_token: Option<HeaderValue>,
    /// The running child, when bench started it and it has not been stopped or killed.
    child: Option<Child>,
    /// How bench started it, to start it again; `None` for `--url`.
    launch: Option<Launch>,
    /// The other replicas (`--replicas`): the same server on other ports, sharing its database
    /// and Redis. Admin calls go to this one; the load goes to all.
    others: Vec<Self>,
}

/// Longest the replicas may take to take up a reset made through the first one (they look every
/// 100 ms).
const PLAN_AGREEMENT_TIMEOUT: Duration = Duration::from_secs(10);

/// How a spawned server was started: the same command starts it again on the same address.
#[derive(Debug, Clone)]
struct Launch {
    exe: PathBuf,
    bind: String,
    flags: ServerFlags,
    log: PathBuf,
}

/// Set in the environment of the server bench starts: its stdin is a pipe from bench, and the end
/// of that pipe means bench is gone (killed, crashed), so the server stops instead of lingering.
pub const PARENT_PIPE_ENV: &str = "CHECKOUT_BENCH_PARENT_PIPE";

impl Server {
    /// Reaches `--url`, or starts a server on a free loopback port logging into `log`.
    ///
    /// # Errors
    /// When the server cannot be started, or does not answer `/healthz` in time.
    pub async fn start(flags: &ServerFlags, log: &Path) -> anyhow::Result<Self> {
        Self::start_from(None, flags, log).await
    }

    /// Like [`Server::start`], but a server it starts is `exe serve` rather than this very
    /// executable: a test binary is not `bench`, so tests pass the `bench` they built.
    ///
    /// # Errors
    /// When the server cannot be started, or does not answer `/healthz` in time.
    pub async fn start_from(exe: Option<&Path>, flags: &ServerFlags, log: &Path) -> anyhow::Result<Self> {
        anyhow::ensure!(
            flags.replicas <= 1 || flags.url.is_none(),
            "--replicas starts servers: it cannot be combined with --url (put a load balancer's URL in --url instead)"
        );
        let mut first = Self::start_one(exe, flags, log).await?;
        for replica in 2..=flags.replicas {
            let log = log.with_file_name(format!(
                "{}-replica-{replica}.log",
                log.file_stem().and_then(|stem| stem.to_str()).unwrap_or("server")
            ));
            match Self::start_one(exe, flags, &log).await {
                Ok(other) => first.others.push(other),
                Err(err) => {
                    first.stop().await;
                    return Err(err.context(format!("replica {replica} did not start")));
                }
            }
        }
        Ok(first)
    }

    async fn start_one(exe: Option<&Path>, flags: &ServerFlags, log: &Path) -> anyhow::Result<Self> {
        let admin_token = flags
            .admin_token
            .as_deref()
            .map(|token| HeaderValue::from_str(&format!("Bearer {token}")))
            .transpose()
            .context("ADMIN_TOKEN is not a valid header value")?;
        let (url, child, launch) = match &flags.url {
            Some(url) => (url.trim_end_matches('/').to_owned(), None, None),
            None => {
                let exe = match exe {
                    Some(exe) => exe.to_owned(),
                    None => std::env::current_exe().context("cannot find the bench executable")?,
                };
                let launch =
                    Launch { exe, bind: free_loopback_addr()?, flags: flags.clone(), log: log.to_owned() };
                let child = launch.spawn(false)?;
                (format!("http://{}", launch.bind), Some(child), Some(launch))
            }
        };
        let target = Target::resolve(&url).await?;
        let mut server = Self { target, admin_token, child, launch, others: Vec::new() };
        server.wait_healthy(log).await?;
        Ok(server)
    }

    /// The process id of the server bench started (`None` for `--url`, or once it exited).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// Where the load goes: every replica, this one first.
    pub fn load_targets(&self) -> Vec<Target> {
        std::iter::once(self.target.clone())
            .chain(self.others.iter().map(|other| other.target.clone()))
            .collect()
    }

    /// Server processes the load is spread over.
    pub fn replicas(&self) -> usize {
        1 + self.others.len()
    }

    /// Whether bench started this server.
    pub const fn spawned(&self) -> bool {
        self.launch.is_some()
    }

    /// Kills the server bench started (SIGKILL: no shutdown, nothing finished) and reaps it.
    ///
    /// # Errors
    /// When bench did not start this server, or it is not running.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        let child = self.child.as_mut().context("no running server that bench started")?;
        child.kill().await.context("cannot kill the server")?;
        self.child = None;
        Ok(())
    }

    /// Asks the server bench started to stop (SIGTERM: it finishes in-flight work) and returns its
    /// exit status. Killed when it has not exited within `limit`.
    ///
    /// # Errors
    /// When bench did not start this server, it is not running, or it outlived `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let child = self.child.as_mut().context("no running server that bench started")?;
        let pid = child.id().context("the server has already exited")?;
        let sent = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        anyhow::ensure!(sent.is_ok_and(|status| status.success()), "cannot send SIGTERM to {pid}");
        let exit = tokio::time::timeout(limit, child.wait()).await;
        let outcome = match exit {
            Ok(status) => Ok(status.context("cannot wait for the server")?),
            Err(_) => {
                let _ = child.kill().await;
                Err(anyhow::anyhow!(
                    "the server was still running {}s after SIGTERM: killed",
                    limit.as_secs()
                ))
            }
        };
        self.child = None;
        outcome
    }

    /// Starts the server bench started again, on the same address with the same flags (its log
    /// goes on in the same file), and waits until it answers `/healthz`.
    ///
    /// # Errors
    /// When the server is still running, bench did not start it, or it does not come up.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "the server is still running");
        let launch = self.launch.clone().context("bench did not start this server")?;
        self.child = Some(launch.spawn(true)?);
        self.wait_healthy(&launch.log).await
    }

    /// Whether `/healthz` answers 200 right now (every backend up).
    pub async fn is_healthy(&self) -> bool {
        matches!(self.call(self.target.get("/healthz")).await, Ok((StatusCode::OK, _)))
    }

    async fn wait_healthy(&mut self, log: &Path) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!(
                    "the server exited ({status}) before it was ready; the end of its log ({}):\n{}",
                    log.display(),
                    tail(log, 8)
                );
            }
            match self.call(self.target.get("/healthz")).await {
                Ok((StatusCode::OK, _)) => return Ok(()),
                Ok(_) | Err(_) if started.elapsed() < STARTUP_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok((status, body)) => anyhow::bail!(
                    "{} /healthz answered {status} for {}s: {}",
                    self.target.base(),
                    STARTUP_TIMEOUT.as_secs(),
                    String::from_utf8_lossy(&body)
                ),
                Err(err) => {
                    let hint =
                        if self.spawned() { format!("; its log: {}", log.display()) } else { String::new() };
                    anyhow::bail!(
                        "{} did not answer within {}s ({err}){hint}",
                        self.target.base(),
                        STARTUP_TIMEOUT.as_secs()
                    );
                }
            }
        }
    }

    async fn call(
        &self,
        mut request: hyper::Request<http_body_util::Full<Bytes>>,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        if let Some(token) = &self.admin_token {
            request.headers_mut().insert(AUTHORIZATION, token.clone());
        }
        let exchange = async {
            let mut connection = Connection::open(&self.target).await?;
            connection.send(request).await
        };
        Ok(tokio::time::timeout(ADMIN_TIMEOUT, exchange)
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {}s", ADMIN_TIMEOUT.as_secs()))??)
    }

    /// A JSON answer from `request`, which must be 200.
    async fn json<T: DeserializeOwned>(
        &self,
        request: hyper::Request<http_body_util::Full<Bytes>>,
        what: &str,
    ) -> anyhow::Result<T> {
        let (status, body) = self.call(request).await.with_context(|| format!("{what} failed"))?;
        anyhow::ensure!(
            status == StatusCode::OK,
            "{what} answered {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(2_000)])
        );
        serde_json::from_slice(&body).with_context(|| format!("{what} answered JSON this bench cannot read"))
    }

    pub async fn strategies(&self) -> anyhow::Result<Vec<StrategyInfo>> {
        self.json(self.target.get("/strategies"), "GET /strategies").await
    }

    /// `POST /admin/reset` with `plan`; the answer says what the reset did and the plan in force.
    pub async fn reset(&self, plan: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
        let body = Bytes::from(plan.to_string());
        let answer: serde_json::Value =
            self.json(self.target.post("/admin/reset", body), "POST /admin/reset").await?;
        self.replicas_agree().await?;
        Ok(answer)
    }

    /// Waits until every other replica holds the plan this one does: a reset made through one
    /// replica reaches the others' strategies within their polling interval, and no buyer may
    /// reach a replica still holding the old one.
    async fn replicas_agree(&self) -> anyhow::Result<()> {
        if self.others.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + PLAN_AGREEMENT_TIMEOUT;
        let want = self.plan_id().await?;
        for other in &self.others {
            loop {
                let held = other.plan_id().await?;
                if held == want {
                    break;
                }
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "replica {} still holds plan {held} {}s after the reset to plan {want}",
                    other.target.base(),
                    PLAN_AGREEMENT_TIMEOUT.as_secs()
                );
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        Ok(())
    }

    /// The id of the plan this server's strategies hold (`GET /healthz`).
    async fn plan_id(&self) -> anyhow::Result<i64> {
        #[derive(Deserialize)]
        struct Health {
            plan_id: i64,
        }
        let (_, body) = self.call(self.target.get("/healthz")).await?;
        Ok(serde_json::from_slice::<Health>(&body).context("GET /healthz has no plan_id")?.plan_id)
    }

    /// `GET /admin/audit`, raw.
    pub async fn audit(&self) -> anyhow::Result<serde_json::Value> {
        self.json(self.target.get("/admin/audit"), "GET /admin/audit").await
    }

    /// `GET /admin/orders`.
    pub async fn orders(&self) -> anyhow::Result<HeldOrders> {
        self.json(self.target.get("/admin/orders"), "GET /admin/orders").await
    }

    /// `GET /products/{id}`: PostgreSQL's stock, `None` for an unknown product.
    pub async fn stock(&self, product: i64) -> anyhow::Result<Option<i64>> {
        #[derive(Deserialize)]
        struct Product {
            stock: i64,
        }
        let (status, body) = self.call(self.target.get(&format!("/products/{product}"))).await?;
        match status {
            StatusCode::OK => Ok(Some(serde_json::from_slice::<Product>(&body)?.stock)),
            StatusCode::NOT_FOUND => Ok(None),
            other => anyhow::bail!("GET /products/{product} answered {other}"),
        }
    }

    /// Stops the server bench started, every replica of it (a no-op for `--url`).
    pub async fn stop(mut self) {
        for other in std::mem::take(&mut self.others) {
            Box::pin(other.stop()).await;
        }
        if let Some(child) = &mut self.child {
            terminate(child).await;
        }
    }
}

/// One order the server holds, as `GET /admin/orders` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct HeldOrder {
    pub order_id: uuid::Uuid,
    pub strategy: String,
    pub status: String,
}

/// `GET /admin/orders`.
#[derive(Debug, Clone, Deserialize)]
pub struct HeldOrders {
    pub orders: Vec<HeldOrder>,
    pub truncated: bool,
}

/// The last `lines` lines of a log file, for an error message.
fn tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `127.0.0.1:<a port nothing listens on right now>`.
fn free_loopback_addr() -> anyhow::Result<String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .context("no free loopback port")?
        .port();
    Ok(format!("127.0.0.1:{port}"))
}

/// The server's per-backend in-flight limits (`server --help`).
const IN_FLIGHT_LIMITS: [&str; 3] = ["MAX_INFLIGHT_POSTGRES", "MAX_INFLIGHT_REDIS", "MAX_INFLIGHT_MEMORY"];

impl Launch {
    /// Starts `<exe> serve` on `bind`, its output into the log (appended to when `append`).
    fn spawn(&self, append: bool) -> anyhow::Result<Child> {
        let Self { exe, bind, flags, log } = self;
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let mut command = Command::new(exe);
        // A comparison measures what each strategy sells, not how the server sheds load: its
        // server admits every purchase unless the caller's environment sets a limit.
        for limit in IN_FLIGHT_LIMITS {
            if std::env::var_os(limit).is_none() {
                command.env(limit, "0");
            }
        }
        command
            .arg("serve")
            .args(["--bind", bind, "--database-url", &flags.database_url])
            .args(["--redis-url", &flags.redis_url, "--redis-prefix", &flags.redis_prefix])
            .args(&flags.server_args)
            .env("RUST_LOG", std::env::var("BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".to_owned()))
            // The child's own environment must not override the flags above.
            .env_remove("DATABASE_URL")
            .env_remove("BIND")
            .env_remove("REDIS_PREFIX")
            .env(PARENT_PIPE_ENV, "1")
            // Held open by the `Child` for as long as bench lives.
            .stdin(Stdio::piped())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true);
        command.spawn().context("cannot start the server")
    }
}

/// Asks the child to stop (SIGTERM: it finishes in-flight work), then kills it after a few seconds.
async fn terminate(child: &mut Child) {
    #[cfg(unix)]
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_ok() {
            return;
        }
    }
    let _ = child.kill().await;
}
