//! The Redis strategies on a Redis Cluster of three masters the test starts itself on free
//! loopback ports (the shared Redis is never touched): the same contention, all-or-nothing and
//! stream scenarios as on a single Redis, plus the cluster's own questions: every key of a test
//! lands in one slot on one master, a reset's scan finds them there, and a cluster that stops
//! answering gets 503, not a hang.

use std::time::Duration;

use checkout_strategies::{Gate, StrategyKind, redis_stock};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::faults::redis_server::DisposableRedis;
use crate::helpers::{Setup, TestApp, order_body, plan_of, spawn_app};

/// Masters of the test cluster: the smallest cluster `redis-cli --cluster create` accepts.
const MASTERS: usize = 3;
/// How long the nodes may take to agree on the slot map.
const FORMING: Duration = Duration::from_secs(20);
/// Far above any reply timeout: a purchase still waiting then is hung.
const HANG: Duration = Duration::from_secs(15);

/// A Redis Cluster of [`MASTERS`] disposable `redis-server`s, no replicas; every node is killed
/// on drop.
#[derive(Debug)]
pub(crate) struct RedisCluster {
    nodes: Vec<DisposableRedis>,
}

impl RedisCluster {
    /// Starts the nodes, joins them with `redis-cli --cluster create` and returns once every node
    /// reports `cluster_state:ok`.
    pub(crate) async fn start() -> Self {
        let mut nodes = Vec::with_capacity(MASTERS);
        for _ in 0..MASTERS {
            nodes.push(DisposableRedis::start_cluster_node().await);
        }
        let cluster = Self { nodes };
        let created = tokio::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(cluster.nodes())
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .expect("run redis-cli (is it on PATH?)");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&created.stdout),
            String::from_utf8_lossy(&created.stderr)
        );
        cluster.wait_until_formed().await;
        cluster
    }

    async fn wait_until_formed(&self) {
        for node in &self.nodes {
            crate::helpers::eventually("a cluster node reports cluster_state:ok", FORMING, || async {
                cluster_info(&node.url()).await.is_some_and(|info| info.contains("cluster_state:ok"))
            })
            .await;
        }
    }

    /// `host:port` of every master, as `REDIS_CLUSTER_NODES` lists them.
    pub(crate) fn nodes(&self) -> Vec<String> {
        self.nodes.iter().map(|node| node.addr().to_string()).collect()
    }

    /// A test setup whose strategies use this cluster.
    pub(crate) fn setup(&self) -> Setup {
        Setup { redis_cluster: self.nodes(), ..Setup::default() }
    }

    /// How many keys matching `pattern` each master holds, asked of each node directly.
    async fn keys_per_node(&self, pattern: &str) -> Vec<usize> {
        let mut counts = Vec::with_capacity(self.nodes.len());
        for node in &self.nodes {
            let client = redis::Client::open(node.url()).expect("node URL");
            let mut conn = client.get_multiplexed_async_connection().await.expect("connect to a node");
            let keys: Vec<String> =
                redis::cmd("KEYS").arg(pattern).query_async(&mut conn).await.expect("KEYS on a node");
            counts.push(keys.len());
        }
        counts
    }

    /// Kills every node (`kill -9`).
    fn kill(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }

    /// Starts every node again on its port; each rejoins from its cluster config file, with its
    /// slots and no keys.
    async fn start_again(&mut self) {
        for node in &mut self.nodes {
            node.start_again().await;
        }
        self.wait_until_formed().await;
    }
}

/// `CLUSTER INFO` of the node at `url`, `None` while it does not answer.
async fn cluster_info(url: &str) -> Option<String> {
    let client = redis::Client::open(url).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    redis::cmd("CLUSTER").arg("INFO").query_async(&mut conn).await.ok()
}

/// Asserts that the test's keys exist and all live on one master, in one slot's hash tag.
async fn assert_keys_on_one_master(cluster: &RedisCluster, app: &TestApp, kind: StrategyKind) {
    let prefix = app.redis.keys.prefix();
    assert!(prefix.starts_with('{'), "{kind}: the prefix is a hash tag on a cluster: {prefix}");
    let counts = cluster.keys_per_node(&app.redis.keys.pattern()).await;
    let holding: Vec<_> = counts.iter().filter(|&&count| count > 0).collect();
    assert_eq!(holding.len(), 1, "{kind}: every key of the test on one master, per node: {counts:?}");
}

macro_rules! cluster_contention_tests {
    ($($name:ident => $kind:expr),* $(,)?) => {
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $name(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                let cluster = RedisCluster::start().await;
                let app = crate::contention::flash_sale_on(connect, $kind, cluster.setup()).await;
                assert_keys_on_one_master(&cluster, &app, $kind).await;
            }
        )*

        #[test]
        fn every_redis_strategy_has_a_cluster_contention_test() {
            let covered = [$($kind),*];
            for kind in StrategyKind::ALL.into_iter().filter(|kind| kind.spec().gate == Gate::Redis) {
                assert!(covered.contains(&kind), "{kind} has no contention test on a Redis Cluster");
            }
        }
    };
}

cluster_contention_tests! {
    redis_decr_sells_exactly_the_stock_on_a_cluster => StrategyKind::RedisDecr,
    redis_lua_sells_exactly_the_stock_on_a_cluster => StrategyKind::RedisLua,
    redis_orderlog_sells_exactly_the_stock_on_a_cluster => StrategyKind::RedisOrderlog,
    stream_accepts_and_persists_exactly_the_stock_on_a_cluster => StrategyKind::Stream,
    stream_deferred_cancels_the_excess_on_a_cluster => StrategyKind::StreamDeferred,
    queue_nats_accepts_and_persists_exactly_the_stock_on_a_cluster => StrategyKind::QueueNats,
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn redis_lua_multi_item_orders_are_all_or_nothing_on_a_cluster(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let cluster = RedisCluster::start().await;
    crate::orders::multi_item_orders_are_all_or_nothing_on(connect, StrategyKind::RedisLua, cluster.setup())
        .await;
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn redis_decr_multi_item_orders_are_all_or_nothing_on_a_cluster(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let cluster = RedisCluster::start().await;
    crate::orders::multi_item_orders_are_all_or_nothing_on(connect, StrategyKind::RedisDecr, cluster.setup())
        .await;
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn stream_reservations_are_all_or_nothing_on_a_cluster(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let cluster = RedisCluster::start().await;
    crate::stream::stream_reservations_are_all_or_nothing_on(connect, StrategyKind::Stream, cluster.setup())
        .await;
}

/// The reset's scan is keyless: a cluster would send it to a random master, which holds none of
/// the keys two times in three. Routed to the master of the hash tag, it finds every key.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_reset_clears_every_key_on_the_cluster(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let cluster = RedisCluster::start().await;
    let app =
        spawn_app(connect, Setup { plan: plan_of(&[(1, 10), (2, 10), (3, 10)]), ..cluster.setup() }).await;
    for kind in [StrategyKind::RedisLua, StrategyKind::Stream] {
        let answer = app.buy(kind, &order_body(&[(1, 1), (2, 1)]), None).await;
        assert!(answer.status == 201 || answer.status == 202, "{kind}: {} {}", answer.status, answer.body);
    }
    let pattern = app.redis.keys.pattern();
    let held: usize = cluster.keys_per_node(&pattern).await.iter().sum();
    assert!(held > 3, "stock keys, in-flight counters and a stream exist: {held}");

    let removed = redis_stock::clear(&app.redis).await.expect("clear the cluster");
    assert_eq!(usize::try_from(removed).unwrap(), held, "the scan found every key");
    assert_eq!(cluster.keys_per_node(&pattern).await, vec![0; MASTERS], "nothing left on any master");
    // Again a few times: a scan sent to a random master would find nothing two times in three.
    for _ in 0..MASTERS {
        let reloaded = redis_stock::load_from_sql(&app.pool.clone().into(), &app.redis)
            .await
            .expect("reload the mirror");
        assert_eq!(reloaded, 3, "one stock key per product");
        let removed = redis_stock::clear(&app.redis).await.expect("clear the cluster");
        assert_eq!(removed, 3, "the reloaded stock keys are found again");
    }
}

/// A cluster whose every master is gone: Redis purchases answer 503 within the reply timeout,
/// never hang, and the SQL strategies keep selling. Once the masters are back (empty: they keep
/// nothing on disk, only their slots), the same connection sells again, the lost stock rebuilt
/// from PostgreSQL.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn purchases_answer_503_while_the_cluster_is_down(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    const KINDS: [StrategyKind; 3] = [StrategyKind::RedisLua, StrategyKind::RedisDecr, StrategyKind::Stream];
    let mut cluster = RedisCluster::start().await;
    let app = spawn_app(connect, Setup { plan: plan_of(&[(100, 10), (200, 10)]), ..cluster.setup() }).await;
    app.buy(StrategyKind::RedisLua, &order_body(&[(100, 1)]), None)
        .await
        .assert_placed(StrategyKind::RedisLua);

    cluster.kill();
    for kind in KINDS {
        let answer = tokio::time::timeout(HANG, app.buy(kind, &order_body(&[(100, 1)]), None))
            .await
            .unwrap_or_else(|_| panic!("{kind}: a purchase hung on a dead cluster"));
        answer.assert_error(503, "backend_unavailable");
    }
    // Product 100 is the Redis gate's since the first sale; 200 is free for PostgreSQL's.
    app.buy(StrategyKind::SqlAtomic, &order_body(&[(200, 1)]), None)
        .await
        .assert_placed(StrategyKind::SqlAtomic);

    cluster.start_again().await;
    crate::helpers::eventually("redis-lua sells again on the restarted cluster", HANG, || async {
        app.buy(StrategyKind::RedisLua, &order_body(&[(100, 1)]), None).await.status == 201
    })
    .await;
    let redis_orders = app.order_count().await - 1;
    assert_eq!(app.stock(100).await, 10 - redis_orders, "a unit per order, none for the refused purchases");
    assert_eq!(
        app.redis_stock(100).await,
        Some(10 - redis_orders),
        "the lost mirror was rebuilt net of the sales"
    );
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "an outage of the whole cluster leaves the books clean: {audit}");
}

/// `bench ceilings` with `--redis-cluster-nodes`: the Redis ceilings run on the master that serves
/// their hash tag (a plain connection there is answered, not redirected), and the rows say so.
#[tokio::test]
async fn bench_ceilings_measures_redis_on_the_master_of_its_tag() {
    use checkout_bench::run_folder::ceilings::CeilingRow;
    use checkout_bench::run_folder::read_csv;

    let cluster = RedisCluster::start().await;
    let db = crate::bench::ScratchDatabase::new();
    let out = crate::bench::tempdir();
    let args = db.args(
        &out,
        &format!(
            "ceilings --repeat 1 --secs 1 --redis-clients 4 --only redis-decr-command,redis-reserve-check \
             --redis-cluster-nodes {}",
            cluster.nodes().join(",")
        ),
    );
    let output = tokio::task::spawn_blocking(move || crate::bench::bench(&args)).await.expect("bench task");
    db.drop_it().await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "bench ceilings on a cluster failed:\n{stderr}");
    let folder = std::fs::read_dir(&out).unwrap().flatten().find(|e| e.path().is_dir()).unwrap().path();
    let rows: Vec<CeilingRow> = read_csv(&folder.join("ceilings.csv")).expect("ceilings.csv");
    assert_eq!(rows.len(), 2, "one row per ceiling: {rows:?}");
    let masters: Vec<String> =
        cluster.nodes().into_iter().filter(|node| rows[0].operation.ends_with(node)).collect();
    assert_eq!(masters.len(), 1, "the rows name one of the cluster's masters: {rows:?}");
    for row in &rows {
        assert!(row.ops_per_sec > 0.0, "{row:?}");
        assert!(row.operation.contains("Redis Cluster master of {ceilings}"), "{row:?}");
        assert!(row.operation.ends_with(&masters[0]), "every Redis ceiling on the same master: {rows:?}");
    }
    // Only the master of the tag's slot answers a plain write of a tagged key; the others redirect.
    for node in cluster.nodes() {
        let client = redis::Client::open(format!("redis://{node}")).expect("node URL");
        let mut conn = client.get_multiplexed_async_connection().await.expect("connect to a node");
        let written: redis::RedisResult<()> =
            redis::cmd("SET").arg("{ceilings}:probe").arg(1).query_async(&mut conn).await;
        assert_eq!(written.is_ok(), node == masters[0], "{node}: {written:?}");
    }
    let _ = std::fs::remove_dir_all(&out);
}
