//! Two server processes on one database and one Redis prefix, as replicas behind a load balancer:
//! buyers split between them must never buy more than the stock, whichever strategy sells, and
//! either replica's audit must give the same, clean verdict, counting what the other replica
//! answered too. Each process keeps its own batchers, caches and queue consumers; only PostgreSQL
//! and Redis are shared.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use checkout_bench::bench::options::ServerFlags;
use checkout_bench::bench::server::Server;
use checkout_strategies::StrategyKind;
use serde_json::{Value, json};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{RowLock, Setup, audited_product, order_body, wait_for_lock_waiters};

const HOT: i64 = 100;
const STOCK: i64 = 10;
const BUYERS: usize = 200;
/// Longest the books may take to settle once the buyers stopped (queues drain, syncs run).
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

fn database_url(connect: &PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        connect.get_username(),
        connect.get_host(),
        connect.get_port(),
        connect.get_database().expect("the test database")
    )
}

/// Servers on the test's database and one Redis prefix of their own: the stores replicas share.
fn shared_stores(connect: &PgConnectOptions) -> ServerFlags {
    ServerFlags {
        url: None,
        admin_token: None,
        database_url: database_url(connect),
        redis_url: Setup::default().redis_url,
        redis_prefix: format!("test-replicas-{}:", uuid::Uuid::new_v4().simple()),
        server_args: Vec::new(),
        replicas: 1,
    }
}

/// One replica, started as `bench serve` on a free port.
async fn replica(flags: &ServerFlags, name: &str) -> Server {
    let log = std::env::temp_dir().join(format!("checkout-replica-{name}-{}.log", std::process::id()));
    Server::start_from(Some(Path::new(env!("CARGO_BIN_EXE_bench"))), flags, &log)
        .await
        .unwrap_or_else(|err| panic!("replica {name} starts: {err:#}"))
}

async fn health(client: &reqwest::Client, server: &Server) -> Value {
    let url = format!("{}/healthz", server.target.base());
    client.get(url).send().await.expect("GET /healthz").json().await.expect("health JSON")
}

/// Waits until every replica holds the plan of the last reset.
async fn same_plan(client: &reqwest::Client, replicas: &[&Server]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut ids = Vec::new();
        for replica in replicas {
            ids.push(health(client, replica).await["plan_id"].as_i64().expect("plan_id"));
        }
        if ids.windows(2).all(|pair| pair[0] == pair[1]) && ids[0] > 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the replicas never agreed on the plan: {ids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `replica`'s audit until the books are final and nothing is held.
async fn settled(replica: &Server, kind: StrategyKind) -> Value {
    let deadline = Instant::now() + SETTLE_WITHIN;
    loop {
        let audit = replica.audit().await.expect("GET /admin/audit");
        if audit["settled"] == true && audit["reservations"]["holds"] == 0 {
            return audit;
        }
        assert!(Instant::now() < deadline, "{kind}: the books did not settle: {audit}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// 200 buyers at once, alternating between the replicas; returns the answers' statuses.
async fn storm(client: &reqwest::Client, replicas: [&Server; 2], kind: StrategyKind) -> Vec<u16> {
    let body = Arc::new(order_body(&[(HOT, 1)]));
    let urls: Vec<String> = replicas
        .iter()
        .map(|replica| format!("{}/strategies/{kind}/purchase", replica.target.base()))
        .collect();
    let buyers: Vec<_> = (0..BUYERS)
        .map(|i| {
            let (client, body, url) = (client.clone(), Arc::clone(&body), urls[i % urls.len()].clone());
            tokio::spawn(async move {
                let answer = client.post(url).json(&*body).send().await.expect("the replica answers");
                answer.status().as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::with_capacity(BUYERS);
    for buyer in buyers {
        statuses.push(buyer.await.expect("buyer task"));
    }
    statuses
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn every_safe_strategy_sells_exactly_the_stock_across_two_replicas(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let flags = shared_stores(&connect);
    let (a, b) = tokio::join!(replica(&flags, "a"), replica(&flags, "b"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let replicas = [&a, &b];
    let plan = json!({ "products": [{ "id": HOT, "stock": STOCK }] });
    let kinds: Vec<StrategyKind> = StrategyKind::ALL
        .into_iter()
        .filter(|kind| kind.spec().safe && !kind.spec().single_process)
        .collect();
    assert!(kinds.len() >= 8, "the safe, shareable strategies: {kinds:?}");

    for kind in kinds {
        // Each strategy's sale starts from a reset made through one replica only: the other
        // must take the new plan up by itself before buyers reach it.
        a.reset(&plan).await.expect("reset through replica a");
        same_plan(&client, &replicas).await;
        let statuses = storm(&client, replicas, kind).await;
        let accepted = statuses.iter().filter(|status| matches!(status, 201 | 202)).count();
        let refused = statuses.iter().filter(|status| matches!(status, 409)).count();
        assert_eq!(accepted, STOCK as usize, "{kind}: exactly the stock sold across replicas: {statuses:?}");
        assert_eq!(accepted + refused, BUYERS, "{kind}: every other buyer heard sold out: {statuses:?}");

        let on_a = settled(&a, kind).await;
        let on_b = settled(&b, kind).await;
        for (name, audit) in [("a", &on_a), ("b", &on_b)] {
            assert_eq!(audit["clean"], true, "{kind}: replica {name}'s audit: {audit}");
            assert_eq!(audit["total"]["units_in_orders"], STOCK, "{kind}: replica {name}: {audit}");
            assert_eq!(audit["total"]["oversold"], 0, "{kind}: replica {name}: {audit}");
            assert_eq!(audit["total"]["duplicated"], 0, "{kind}: replica {name}: {audit}");
        }
        assert_eq!(on_a["total"], on_b["total"], "{kind}: both replicas audit the same books");
        assert_eq!(a.stock(HOT).await.expect("stock"), Some(0), "{kind}: nothing left on the shelf");
    }
    a.stop().await;
    b.stop().await;
}

async fn buy(client: &reqwest::Client, replica: &Server, kind: StrategyKind) -> (u16, Value) {
    let url = format!("{}/strategies/{kind}/purchase", replica.target.base());
    let answer = client.post(url).json(&order_body(&[(HOT, 1)])).send().await.expect("the replica answers");
    let status = answer.status().as_u16();
    (status, answer.json().await.expect("JSON answer"))
}

/// What a replica remembers of the catalogue (products it claimed for the Redis gate, unit pools
/// it laid out) must not outlive a reset made through another replica: a stale claim would let
/// the Redis gate sell units the PostgreSQL gate also sells, and a stale pool would refuse units
/// that are there.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_reset_through_one_replica_reaches_the_others(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let flags = shared_stores(&connect);
    let (a, b) = tokio::join!(replica(&flags, "a"), replica(&flags, "b"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let plan = json!({ "products": [{ "id": HOT, "stock": STOCK }] });

    // Replica b claims the product for the Redis gate and lays out nothing else.
    a.reset(&plan).await.expect("reset");
    same_plan(&client, &[&a, &b]).await;
    let (status, body) = buy(&client, &b, StrategyKind::RedisLua).await;
    assert_eq!(status, 201, "b sells through the Redis gate: {body}");
    let audit = a.audit().await.expect("GET /admin/audit on a");
    assert_eq!(audit["sold_by"], json!(["redis-lua"]), "a's audit names what b sold: {audit}");

    // A new sale: the reset frees the product from every gate, and replica a's SQL strategy
    // claims it first. Replica b must see that, not its memory of the last sale.
    a.reset(&plan).await.expect("reset");
    same_plan(&client, &[&a, &b]).await;
    let (status, body) = buy(&client, &a, StrategyKind::SqlAtomic).await;
    assert_eq!(status, 201, "a sells through the PostgreSQL gate: {body}");
    let (status, body) = buy(&client, &b, StrategyKind::RedisLua).await;
    assert_eq!(status, 409, "b must not sell a product the PostgreSQL gate sells: {body}");
    assert_eq!(body["error"], "inventory_gate_conflict", "{body}");

    // Replica b lays out a unit pool and sells it out; after a reset through a, b's pool is gone
    // and must be laid out again, not taken for sold out.
    a.reset(&plan).await.expect("reset");
    same_plan(&client, &[&a, &b]).await;
    for _ in 0..STOCK {
        let (status, body) = buy(&client, &b, StrategyKind::SqlSkipLocked).await;
        assert_eq!(status, 201, "b sells from its unit pool: {body}");
    }
    a.reset(&plan).await.expect("reset");
    same_plan(&client, &[&a, &b]).await;
    let (status, body) = buy(&client, &b, StrategyKind::SqlSkipLocked).await;
    assert_eq!(status, 201, "after the reset the units are there again: {body}");

    let audit = settled(&b, StrategyKind::SqlSkipLocked).await;
    assert_eq!(audit["clean"], true, "{audit}");
    a.stop().await;
    b.stop().await;
}

/// Buyers who read one version of the row while it is locked: with no retry, one swaps and the
/// rest are refused for contention.
const STALE_READERS: usize = 8;

/// `sql-optimistic`'s 409 `contention` answers come from whichever replica the buyer reached. The
/// audit of every replica must count all of them, not only the ones it answered itself, and a
/// reset through one replica must start every replica's count over.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn contention_refusals_of_either_replica_are_in_both_audits(
    pool: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    const PLENTY: i64 = 1_000;
    let kind = StrategyKind::SqlOptimistic;
    let mut flags = shared_stores(&connect);
    flags.server_args = vec!["--optimistic-retries=0".into()];
    let (a, b) = tokio::join!(replica(&flags, "a"), replica(&flags, "b"));
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let watcher = pool.connect_with(connect.clone()).await.expect("connect the test database");
    let plan = json!({ "products": [{ "id": HOT, "stock": PLENTY }] });
    a.reset(&plan).await.expect("reset through replica a");
    same_plan(&client, &[&a, &b]).await;

    // Every buyer reads the version, then waits for the row lock to swap: once it is released,
    // one swap holds and every other buyer finds the version moved.
    let lock = RowLock::take(&connect, HOT).await;
    let buyers: Vec<_> = (0..STALE_READERS)
        .map(|i| {
            let replica = (if i % 2 == 0 { &a } else { &b }).target.base().to_owned();
            let client = client.clone();
            tokio::spawn(async move {
                let url = format!("{replica}/strategies/{kind}/purchase");
                let answer = client.post(url).json(&order_body(&[(HOT, 1)])).send().await.expect("answers");
                let status = answer.status().as_u16();
                (i % 2, status, answer.json::<Value>().await.expect("JSON answer"))
            })
        })
        .collect();
    wait_for_lock_waiters(&watcher, i64::try_from(STALE_READERS).unwrap(), Duration::from_secs(10)).await;
    lock.release().await;
    let mut refused_by = [0_usize; 2];
    let mut placed = 0;
    for buyer in buyers {
        let (replica, status, body) = buyer.await.expect("buyer task");
        match status {
            201 => placed += 1,
            409 => {
                assert_eq!(body["error"], "contention", "refused for contention: {body}");
                refused_by[replica] += 1;
            }
            _ => panic!("unexpected answer {status}: {body}"),
        }
    }
    assert_eq!(placed, 1, "one swap per version read: refused {refused_by:?}");
    assert!(refused_by.iter().all(|&refused| refused > 0), "both replicas refused buyers: {refused_by:?}");
    let refused = refused_by.iter().sum::<usize>();

    for (name, replica) in [("a", &a), ("b", &b)] {
        let audit = replica.audit().await.expect("GET /admin/audit");
        let product = audited_product(&audit, HOT, kind);
        assert_eq!(
            product["contention_refusals"], refused,
            "replica {name} counts the refusals of both replicas ({refused_by:?}): {product}"
        );
        assert_eq!(audit["total"]["contention_refusals"], refused, "replica {name}: {audit}");
        assert_eq!(product["final_stock"], PLENTY - 1, "replica {name}: units left: {product}");
        assert_eq!(audit["clean"], true, "replica {name}: an undersell is not an anomaly: {audit}");
    }

    b.reset(&plan).await.expect("reset through replica b");
    same_plan(&client, &[&a, &b]).await;
    for (name, replica) in [("a", &a), ("b", &b)] {
        let audit = replica.audit().await.expect("GET /admin/audit");
        assert_eq!(
            audit["total"]["contention_refusals"], 0,
            "replica {name}: a new plan counts anew: {audit}"
        );
    }
    a.stop().await;
    b.stop().await;
}
