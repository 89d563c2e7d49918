//! `stream`'s acceptance path against the real Redis: what a purchase costs before it answers 202.
//! Beside it, in the same group, the raw baselines on the same multiplexed connection: a bare
//! `PING`, `EVALSHA` of a script that returns at once, and `EVALSHA` of `stream_enqueue.lua` with
//! arguments built once (what `bench ceilings`' redis-benchmark sends). The steps between them
//! are the script's own work in Redis, then everything `Stream::purchase` adds in the client:
//! the gate check, the pending payload, the key names.
//!
//! Each case runs with one caller and with 64 at once (the multiplexed connection pipelines them,
//! as it does for the server's request tasks). Nothing persists the stream here: the worker's
//! share of a probe is not in these figures. Needs Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`) and PostgreSQL (`BENCH_DATABASE_URL`, default database
//! `checkout_criterion`, created when missing) and skips with a message when either does not
//! answer. Keys live under `criterion:<pid>:` and are deleted after each measurement.

use std::hint::black_box;
use std::time::{Duration, Instant};

use checkout_strategies::RedisConn;
use checkout_strategies::redis_stream::Stream;
use checkout_strategies::{
    Delivery, OrderLine, OrderLines, PgSettings, ProductId, ProductStock, PurchaseOutcome, PurchaseRequest,
    Quantity, RedisBackend, RedisKeys, RedisSettings, StockPlan, Strategy, backends, catalog, lua_sources,
    redis_stock,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::future::join_all;
use uuid::Uuid;

const PRODUCT: i64 = 100;
/// More units than any measurement sells: a sold-out answer would measure the wrong path.
const STOCK: i64 = 1_000_000_000;
const CALLERS: [u64; 2] = [1, 64];

struct Rig {
    redis: RedisBackend,
    stream: Stream,
    raw_enqueue: redis::Script,
    trivial: redis::Script,
}

impl Rig {
    async fn open() -> Result<Self, String> {
        let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let pg_url = std::env::var("BENCH_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/checkout_criterion".into());
        let keys = RedisKeys::new(format!("criterion:{}:", std::process::id()));
        let redis = RedisBackend::lazy(&redis_url, keys, RedisSettings::default())
            .map_err(|err| format!("{redis_url}: {err}"))?;
        let mut conn = redis.conn.clone();
        tokio::time::timeout(Duration::from_secs(2), redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map_err(|_| format!("Redis at {redis_url} does not answer"))?
            .map_err(|err| format!("Redis at {redis_url}: {err}"))?;
        tokio::time::timeout(Duration::from_secs(5), backends::prepare_database(&pg_url))
            .await
            .map_err(|_| format!("PostgreSQL at {pg_url} does not answer"))?
            .map_err(|err| format!("PostgreSQL at {pg_url}: {err}"))?;
        let pg = backends::pg_pool(&pg_url, PgSettings::default()).map_err(|err| err.to_string())?;
        let product = ProductId::parse(PRODUCT).map_err(|err| err.0)?;
        let plan =
            StockPlan { products: vec![ProductStock { id: product, stock: STOCK }], ..StockPlan::default() };
        catalog::reset(&pg, &plan).await.map_err(|err| err.to_string())?;
        redis_stock::load_from_sql(&pg.clone().into(), &redis).await.map_err(|err| err.to_string())?;
        Ok(Self {
            stream: Stream::new(pg, redis.clone()),
            redis,
            raw_enqueue: redis::Script::new(lua_sources::STREAM_ENQUEUE),
            trivial: redis::Script::new("return 1"),
        })
    }

    fn conn(&self) -> RedisConn {
        self.redis.conn.clone()
    }

    /// Empties the stream and the pending hash the measurement filled, and tops the stock up.
    async fn clean(&self) {
        let mut conn = self.conn();
        let keys = &self.redis.keys;
        let _: Result<(), _> = redis::pipe()
            .del(keys.stream("stream"))
            .del(keys.pending("stream"))
            .set(keys.stock(PRODUCT), STOCK)
            .query_async(&mut conn)
            .await;
    }

    async fn drop_keys(&self) {
        let _ = redis_stock::clear(&self.redis).await;
    }
}

fn request() -> PurchaseRequest {
    let line = OrderLine {
        product_id: ProductId::parse(PRODUCT).expect("a valid id"),
        quantity: Quantity::parse(1).expect("a valid quantity"),
    };
    PurchaseRequest {
        order_id: Uuid::new_v4(),
        lines: OrderLines::new(vec![line]).expect("one line"),
        delivery: Delivery::new("1 Main St, Kyiv".into(), "+380441234567".into(), "buyer@example.com".into())
            .expect("a valid delivery"),
        user: Some("bench".into()),
        idempotency_key: None,
    }
}

async fn ping(mut conn: RedisConn) {
    let pong: String = redis::cmd("PING").query_async(&mut conn).await.expect("PONG");
    black_box(pong);
}

async fn trivial(script: &redis::Script, mut conn: RedisConn) {
    let one: i64 = script.invoke_async(&mut conn).await.expect("1");
    black_box(one);
}

/// The enqueue script with the arguments `stream` sends for a one-line order, built once.
async fn raw_enqueue(rig: &Rig, mut conn: RedisConn, payload: &str) {
    let keys = &rig.redis.keys;
    let reply: (i64, String) = rig
        .raw_enqueue
        .key(keys.pending("stream"))
        .key(keys.stream("stream"))
        .key(keys.stock(PRODUCT))
        .key(keys.inflight(PRODUCT))
        .arg(Uuid::new_v4().to_string())
        .arg(payload)
        .arg(1)
        .invoke_async(&mut conn)
        .await
        .expect("the script answers");
    assert_eq!(reply.0, 0, "accepted");
}

async fn purchase(rig: &Rig, template: &PurchaseRequest) {
    let request = PurchaseRequest { order_id: Uuid::new_v4(), ..template.clone() };
    match rig.stream.purchase(&request).await {
        Ok(PurchaseOutcome::Placed(receipt)) => {
            black_box(receipt);
        }
        other => panic!("a purchase with stock left is accepted: {other:?}"),
    }
}

/// Times `iters` rounds of `callers` concurrent calls of `call`, then empties what they filled.
async fn rounds<F, Fut>(rig: &Rig, iters: u64, callers: u64, call: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: Future<Output = ()>,
{
    let started = Instant::now();
    for _ in 0..iters {
        join_all((0..callers).map(|_| call())).await;
    }
    let elapsed = started.elapsed();
    rig.clean().await;
    elapsed
}

fn acceptance(c: &mut Criterion) {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let rig = match runtime.block_on(Rig::open()) {
        Ok(rig) => rig,
        Err(why) => {
            eprintln!("stream_enqueue: skipped: {why}");
            return;
        }
    };
    let template = request();
    let payload = r#"{"order_id":"00000000-0000-0000-0000-000000000000","strategy":"stream","items":[{"product_id":100,"quantity":1}],"delivery":{"address":"1 Main St, Kyiv","phone":"+380441234567","email":"buyer@example.com"},"user":"bench","idempotency_key":null,"created_at":"2026-12-01T00:00:00.000000Z"}"#;

    let mut group = c.benchmark_group("stream_acceptance_round_trip");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for callers in CALLERS {
        group.throughput(Throughput::Elements(callers));
        group.bench_with_input(BenchmarkId::new("redis_ping", callers), &callers, |b, &callers| {
            b.to_async(&runtime).iter_custom(|iters| rounds(&rig, iters, callers, || ping(rig.conn())));
        });
        group.bench_with_input(BenchmarkId::new("evalsha_return_1", callers), &callers, |b, &callers| {
            b.to_async(&runtime)
                .iter_custom(|iters| rounds(&rig, iters, callers, || trivial(&rig.trivial, rig.conn())));
        });
        group.bench_with_input(
            BenchmarkId::new("evalsha_stream_enqueue", callers),
            &callers,
            |b, &callers| {
                b.to_async(&runtime).iter_custom(|iters| {
                    rounds(&rig, iters, callers, || raw_enqueue(&rig, rig.conn(), payload))
                });
            },
        );
        group.bench_with_input(BenchmarkId::new("stream_purchase", callers), &callers, |b, &callers| {
            b.to_async(&runtime)
                .iter_custom(|iters| rounds(&rig, iters, callers, || purchase(&rig, &template)));
        });
    }
    group.finish();
    runtime.block_on(rig.drop_keys());
}

criterion_group!(benches, acceptance);
criterion_main!(benches);
