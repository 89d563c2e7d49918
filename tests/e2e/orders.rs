//! Orders as clients see them: multi-item orders are all-or-nothing, an idempotency key never
//! buys twice, the read routes show what was sold, statistics count it, and a reset starts over.

use std::collections::BTreeSet;
use std::sync::Arc;

use checkout_strategies::{PgDriver, RandomProducts, StrategyKind};
use serde_json::{Value, json};
use sqlx::Postgres;
use sqlx::pool::PoolOptions;
use sqlx::postgres::PgConnectOptions;

use crate::helpers::{
    Answer, Setup, TestApp, all_at_once, one_order_for_the_key, order_body, plan_of, read_answer, spawn_app,
};

/// Sends `POST /purchase` with `X-Strategy: kind` and an idempotency key.
async fn buy_by_header(app: &TestApp, kind: StrategyKind, body: &Value, key: &str) -> Answer {
    let request = app
        .client
        .post(format!("{}/purchase", app.url))
        .header("X-Strategy", kind.as_str())
        .header("Idempotency-Key", key)
        .json(body);
    read_answer(request.send().await.expect("server answers")).await
}

/// Product 1 has plenty, product 2 has three units; an order for five of product 2 must leave
/// product 1 alone, and one for three must take both.
async fn multi_item_orders_are_all_or_nothing(
    connect: PgConnectOptions,
    kind: StrategyKind,
    pg_driver: PgDriver,
) {
    multi_item_orders_are_all_or_nothing_on(connect, kind, Setup { pg_driver, ..Setup::default() }).await;
}

/// The scenario on the backends `base` names (its plan is the scenario's).
pub(crate) async fn multi_item_orders_are_all_or_nothing_on(
    connect: PgConnectOptions,
    kind: StrategyKind,
    base: Setup,
) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(1, 10), (2, 3)]), ..base }).await;

    let refused = app.buy(kind, &order_body(&[(1, 2), (2, 5)]), None).await;
    refused.assert_error(409, "sold_out");
    assert_eq!(
        refused.body["product_id"], 2,
        "{kind}: names the product that does not fit: {}",
        refused.body
    );
    assert_eq!(app.stock_in(kind, 1).await, 10, "{kind}: a refused order took stock of the product that fit");
    assert_eq!(app.stock_in(kind, 2).await, 3, "{kind}: a refused order took stock");
    assert_eq!(app.orders_in(kind).await, 0, "{kind}: a refused order was written");

    let unknown = app.buy(kind, &order_body(&[(1, 2), (999, 1)]), None).await;
    unknown.assert_error(404, "unknown_product");
    assert_eq!(unknown.body["product_id"], 999, "{kind}: names the unknown product: {}", unknown.body);
    assert_eq!(app.stock_in(kind, 1).await, 10, "{kind}: an order naming an unknown product took stock");
    assert_eq!(app.orders_in(kind).await, 0, "{kind}: an order naming an unknown product was written");

    let body = order_body(&[(2, 3), (1, 2)]);
    let placed = app.buy(kind, &body, None).await;
    let order_id = placed.assert_placed(kind);
    assert_eq!(app.stock_in(kind, 1).await, 8, "{kind}: a placed order takes every line");
    assert_eq!(app.stock_in(kind, 2).await, 0, "{kind}: a placed order takes every line");
    assert_eq!(app.orders_in(kind).await, 1, "{kind}: one placed order, one order in the books");

    let order = app.get_json(&format!("/orders/{order_id}")).await;
    assert_eq!(order["order_id"], order_id.as_str(), "the order found is the one placed: {order}");
    assert_eq!(order["status"], "confirmed", "{kind}: a placed order reads back confirmed: {order}");
    assert_eq!(order["strategy"], kind.as_str(), "{kind}: the order names its strategy: {order}");
    assert_eq!(
        order["items"],
        json!([{ "product_id": 1, "quantity": 2 }, { "product_id": 2, "quantity": 3 }]),
        "{kind}: the order holds every line with its quantity, by product id"
    );
    assert_eq!(order["delivery"], body["delivery"], "{kind}: the order keeps its delivery details");
    assert_eq!(order["user"], body["user"], "{kind}: the order keeps its user");

    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{kind}: all-or-nothing orders keep the books clean: {audit}");
}

/// `sqlx`: every safe strategy on the default driver. `tokio_postgres`: the safe ones whose
/// purchase `PG_DRIVER` switches, again on tokio-postgres. `stream`, whose accepted orders are
/// persisted later, has its own (`stream::stream_reservations_are_all_or_nothing`). A new safe
/// strategy fails the coverage test until it has its own case.
macro_rules! multi_item_tests {
    (
        sqlx: { $($name:ident => $kind:expr),* $(,)? }
        tokio_postgres: { $($raw_name:ident => $raw_kind:expr),* $(,)? }
    ) => {
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $name(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                multi_item_orders_are_all_or_nothing(connect, $kind, PgDriver::Sqlx).await;
            }
        )*
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $raw_name(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                multi_item_orders_are_all_or_nothing(connect, $raw_kind, PgDriver::TokioPostgres).await;
            }
        )*

        #[test]
        fn every_safe_strategy_has_a_multi_item_test() {
            let covered = [$($kind,)* StrategyKind::Stream, StrategyKind::QueueNats];
            for kind in StrategyKind::ALL.into_iter().filter(|kind| kind.spec().safe) {
                assert!(covered.contains(&kind), "{kind} is safe but has no multi-item all-or-nothing test");
            }
            let on_tokio_postgres = [$($raw_kind),*];
            for kind in StrategyKind::ALL.into_iter().filter(|kind| kind.spec().safe && kind.runs_on_pg_driver()) {
                assert!(on_tokio_postgres.contains(&kind), "{kind} has no multi-item test on tokio-postgres");
            }
        }
    };
}

multi_item_tests! {
    sqlx: {
        memory_multi_item_orders_are_all_or_nothing => StrategyKind::Memory,
        sql_for_update_multi_item_orders_are_all_or_nothing => StrategyKind::SqlForUpdate,
        sql_atomic_multi_item_orders_are_all_or_nothing => StrategyKind::SqlAtomic,
        sql_coalesce_multi_item_orders_are_all_or_nothing => StrategyKind::SqlCoalesce,
        sql_skip_locked_multi_item_orders_are_all_or_nothing => StrategyKind::SqlSkipLocked,
        sql_optimistic_multi_item_orders_are_all_or_nothing => StrategyKind::SqlOptimistic,
        redis_orderlog_multi_item_orders_are_all_or_nothing => StrategyKind::RedisOrderlog,
        redis_lua_multi_item_orders_are_all_or_nothing => StrategyKind::RedisLua,
        redis_decr_multi_item_orders_are_all_or_nothing => StrategyKind::RedisDecr,
    }
    tokio_postgres: {
        tokio_postgres_sql_for_update_multi_item_orders_are_all_or_nothing => StrategyKind::SqlForUpdate,
        tokio_postgres_sql_atomic_multi_item_orders_are_all_or_nothing => StrategyKind::SqlAtomic,
        tokio_postgres_sql_skip_locked_multi_item_orders_are_all_or_nothing => StrategyKind::SqlSkipLocked,
        tokio_postgres_sql_optimistic_multi_item_orders_are_all_or_nothing => StrategyKind::SqlOptimistic,
    }
}

/// Orders holding `key` in the books `kind` sells from.
async fn orders_with_key(app: &TestApp, kind: StrategyKind, key: &str) -> i64 {
    if kind.spec().persists_to_postgres() {
        return sqlx::query_scalar("SELECT COUNT(*) FROM orders WHERE idempotency_key = $1")
            .bind(key)
            .fetch_one(&app.pool)
            .await
            .expect("count orders by key");
    }
    app.orders_in(kind).await
}

/// The same key sent again, by the other route and with another body, answers the first order.
async fn idempotent_replay(connect: PgConnectOptions, kind: StrategyKind, pg_driver: PgDriver) {
    if kind.spec().queued {
        // 202 then 200, pending until a worker persists the order: the same contract, queued.
        return crate::stream::idempotent_replay(connect, kind).await;
    }
    const KEY: &str = "replay-order-0001";
    let setup = Setup { plan: plan_of(&[(100, 50), (7, 5)]), pg_driver, ..Setup::default() };
    let app = spawn_app(connect, setup).await;

    let first = app.buy(kind, &order_body(&[(100, 2)]), Some(KEY)).await;
    let order_id = first.assert_placed(kind);
    let again = app.buy(kind, &order_body(&[(100, 2)]), Some(KEY)).await;
    assert_eq!(again.status, 200, "{kind}: a replayed key answers 200: {}", again.body);
    assert_eq!(again.body, first.body, "{kind}: a replayed key answers the first receipt");

    let by_header = buy_by_header(&app, kind, &order_body(&[(100, 2)]), KEY).await;
    assert_eq!(by_header.status, 200, "{kind}: the key is the same through X-Strategy: {}", by_header.body);
    assert_eq!(by_header.body, first.body, "{kind}: the key is the same through X-Strategy");

    let other_body = app.buy(kind, &order_body(&[(7, 1)]), Some(KEY)).await;
    other_body.assert_error(422, "idempotency_key_reused");
    assert_eq!(
        other_body.body["order_id"],
        order_id.to_string().as_str(),
        "{kind}: a key reused for another purchase is refused and names the first order: {}",
        other_body.body
    );

    assert_eq!(orders_with_key(&app, kind, KEY).await, 1, "{kind}: one key, one order");
    assert_eq!(app.orders_in(kind).await, 1, "{kind}: replays write no order");
    assert_eq!(app.stock_in(kind, 100).await, 48, "{kind}: replays take no stock");
    assert_eq!(app.stock_in(kind, 7).await, 5, "{kind}: a reused key with another body takes no stock");

    let stats = app.stats_of(kind).await;
    assert_eq!(stats["confirmed"], 1, "{kind}: one confirmation: {stats}");
    assert_eq!(stats["replayed"], 2, "{kind}: two replays: {stats}");
    assert_eq!(stats["errors"]["idempotency_key_reused"], 1, "{kind}: one reused key: {stats}");

    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{kind}: replays keep the books clean: {audit}");
}

/// Twenty clients send the same key at once: one order, one 201, the others 200 with its id.
async fn concurrent_replay(connect: PgConnectOptions, kind: StrategyKind, pg_driver: PgDriver) {
    if kind.spec().queued {
        return crate::stream::concurrent_replay(connect, kind).await;
    }
    const KEY: &str = "concurrent-order-0001";
    const CLIENTS: usize = 20;
    let app = Arc::new(
        spawn_app(connect, Setup { plan: plan_of(&[(100, 50)]), pg_driver, ..Setup::default() }).await,
    );
    let answers =
        all_at_once(
            &app,
            CLIENTS,
            |app| async move { app.buy(kind, &order_body(&[(100, 3)]), Some(KEY)).await },
        )
        .await;
    one_order_for_the_key(&answers, 201, kind).assert_placed(kind);
    assert_eq!(orders_with_key(&app, kind, KEY).await, 1, "{kind}: one key, one order");
    assert_eq!(app.orders_in(kind).await, 1, "{kind}: concurrent replays write no order");
    assert_eq!(app.stock_in(kind, 100).await, 47, "{kind}: stock is taken once");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{kind}: concurrent replays keep the books clean: {audit}");
}

/// `sqlx`: every strategy on the default driver. `tokio_postgres`: the strategies whose purchase
/// `PG_DRIVER` switches, again on tokio-postgres.
macro_rules! idempotency_tests {
    (
        sqlx: { $($replay:ident, $concurrent:ident => $kind:expr),* $(,)? }
        tokio_postgres: { $($raw_replay:ident, $raw_concurrent:ident => $raw_kind:expr),* $(,)? }
    ) => {
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $replay(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                idempotent_replay(connect, $kind, PgDriver::Sqlx).await;
            }

            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $concurrent(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                concurrent_replay(connect, $kind, PgDriver::Sqlx).await;
            }
        )*
        $(
            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $raw_replay(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                idempotent_replay(connect, $raw_kind, PgDriver::TokioPostgres).await;
            }

            #[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
            async fn $raw_concurrent(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
                concurrent_replay(connect, $raw_kind, PgDriver::TokioPostgres).await;
            }
        )*

        #[test]
        fn every_strategy_has_idempotency_tests() {
            let covered = [$($kind),*];
            for kind in StrategyKind::ALL {
                assert!(covered.contains(&kind), "{kind} has no idempotency test");
            }
            let on_tokio_postgres = [$($raw_kind),*];
            for kind in StrategyKind::ALL.into_iter().filter(|kind| kind.runs_on_pg_driver()) {
                assert!(on_tokio_postgres.contains(&kind), "{kind} has no idempotency test on tokio-postgres");
            }
        }
    };
}

idempotency_tests! {
    sqlx: {
        memory_replays_a_key, memory_replays_a_key_sent_concurrently => StrategyKind::Memory,
        sql_naive_replays_a_key, sql_naive_replays_a_key_sent_concurrently => StrategyKind::SqlNaive,
        sql_for_update_replays_a_key, sql_for_update_replays_a_key_sent_concurrently => StrategyKind::SqlForUpdate,
        sql_atomic_replays_a_key, sql_atomic_replays_a_key_sent_concurrently => StrategyKind::SqlAtomic,
        sql_coalesce_replays_a_key, sql_coalesce_replays_a_key_sent_concurrently => StrategyKind::SqlCoalesce,
        sql_skip_locked_replays_a_key, sql_skip_locked_replays_a_key_sent_concurrently => StrategyKind::SqlSkipLocked,
        sql_optimistic_replays_a_key, sql_optimistic_replays_a_key_sent_concurrently => StrategyKind::SqlOptimistic,
        redis_decr_replays_a_key, redis_decr_replays_a_key_sent_concurrently => StrategyKind::RedisDecr,
        redis_lua_replays_a_key, redis_lua_replays_a_key_sent_concurrently => StrategyKind::RedisLua,
        redis_orderlog_replays_a_key, redis_orderlog_replays_a_key_sent_concurrently => StrategyKind::RedisOrderlog,
        stream_replays_a_key, stream_replays_a_key_sent_concurrently => StrategyKind::Stream,
        stream_deferred_replays_a_key, stream_deferred_replays_a_key_sent_concurrently => StrategyKind::StreamDeferred,
        queue_nats_replays_a_key, queue_nats_replays_a_key_sent_concurrently => StrategyKind::QueueNats,
    }
    tokio_postgres: {
        tokio_postgres_sql_naive_replays_a_key, tokio_postgres_sql_naive_replays_a_key_sent_concurrently => StrategyKind::SqlNaive,
        tokio_postgres_sql_for_update_replays_a_key, tokio_postgres_sql_for_update_replays_a_key_sent_concurrently => StrategyKind::SqlForUpdate,
        tokio_postgres_sql_atomic_replays_a_key, tokio_postgres_sql_atomic_replays_a_key_sent_concurrently => StrategyKind::SqlAtomic,
        tokio_postgres_sql_skip_locked_replays_a_key, tokio_postgres_sql_skip_locked_replays_a_key_sent_concurrently => StrategyKind::SqlSkipLocked,
        tokio_postgres_sql_optimistic_replays_a_key, tokio_postgres_sql_optimistic_replays_a_key_sent_concurrently => StrategyKind::SqlOptimistic,
    }
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn product_routes(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(100, 10)]), ..Setup::default() }).await;
    assert_eq!(
        app.get_json("/products/100").await,
        json!({ "id": 100, "stock": 10 }),
        "a product and its stock"
    );
    app.buy(StrategyKind::SqlAtomic, &order_body(&[(100, 4)]), None)
        .await
        .assert_placed(StrategyKind::SqlAtomic);
    assert_eq!(
        app.get_json("/products/100").await,
        json!({ "id": 100, "stock": 6 }),
        "GET /products shows the stock after a sale"
    );

    for bad in ["abc", "1.5", "0", "-3", "99999999999999999999"] {
        app.get(&format!("/products/{bad}")).await.assert_error(400, "invalid_request");
    }
    let unknown = app.get("/products/999").await;
    unknown.assert_error(404, "unknown_product");
    assert_eq!(unknown.body["product_id"], 999, "names the unknown product: {}", unknown.body);
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn order_routes(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    let app = spawn_app(connect, Setup { plan: plan_of(&[(100, 10)]), ..Setup::default() }).await;
    for bad in ["not-a-uuid", "123", "0c8d6d5e-0000-0000-0000"] {
        app.get(&format!("/orders/{bad}")).await.assert_error(400, "invalid_request");
    }
    let missing = uuid::Uuid::new_v4().to_string();
    let unknown = app.get(&format!("/orders/{missing}")).await;
    unknown.assert_error(404, "unknown_order");
    assert_eq!(unknown.body["order_id"], missing.as_str(), "names the unknown order: {}", unknown.body);

    // Orders that never reach PostgreSQL are found too.
    let memory = StrategyKind::Memory;
    let order_id = app.buy(memory, &order_body(&[(100, 1)]), Some("memory-key")).await.assert_placed(memory);
    let order = app.get_json(&format!("/orders/{order_id}")).await;
    assert_eq!(order["strategy"], "memory", "a memory order is found by id: {order}");
    assert_eq!(order["status"], "confirmed", "a memory order reads back confirmed: {order}");
    assert_eq!(
        order["items"],
        json!([{ "product_id": 100, "quantity": 1 }]),
        "a memory order keeps its lines"
    );
    assert_eq!(order["idempotency_key"], "memory-key", "a memory order keeps its key: {order}");
    assert_eq!(app.order_count().await, 0, "a memory order is not written to PostgreSQL");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn strategies_list_every_kind_with_its_guarantees(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    for pg_driver in PgDriver::ALL {
        let app = spawn_app(connect.clone(), Setup { pg_driver, ..Setup::default() }).await;
        let listing = app.get_json("/strategies").await;
        let entries = listing.as_array().expect("GET /strategies is an array");
        let names: Vec<&str> = entries.iter().filter_map(|entry| entry["name"].as_str()).collect();
        assert_eq!(names, StrategyKind::names(), "every strategy is listed once, in order");
        let declared: BTreeSet<&str> = [
            "name",
            "backend",
            "gate",
            "single_process",
            "reserves_before_accepting",
            "safe",
            "durable",
            "async",
            "queue",
            "description",
            "database",
            "available",
        ]
        .into();
        for (kind, entry) in StrategyKind::ALL.into_iter().zip(entries) {
            let keys: BTreeSet<&str> =
                entry.as_object().expect("entry is an object").keys().map(String::as_str).collect();
            let mut fields = declared.clone();
            if kind.runs_on_pg_driver() {
                // A results folder records which client a SQL strategy's purchases ran on.
                fields.insert("pg_driver");
                assert_eq!(entry["pg_driver"], pg_driver.as_str(), "{kind}: the driver in use: {entry}");
            }
            assert_eq!(keys, fields, "{kind}: the declared fields and nothing else");
            assert_eq!(
                (&entry["database"], &entry["available"]),
                (&json!("postgres"), &json!(true)),
                "{kind}"
            );
            let spec = kind.spec();
            assert_eq!(entry["backend"], spec.backend, "{kind}: backend: {entry}");
            assert_eq!(
                entry["safe"],
                ![StrategyKind::SqlNaive, StrategyKind::StreamDeferred].contains(&kind),
                "{kind}: only sql-naive and stream-deferred are unsafe: {entry}"
            );
            assert_eq!(
                entry["durable"],
                kind != StrategyKind::Memory,
                "{kind}: only memory is not durable: {entry}"
            );
            assert_eq!(entry["async"], spec.queued, "{kind}: async: {entry}");
            assert_eq!(entry["queue"], serde_json::to_value(spec.queue).unwrap(), "{kind}: queue: {entry}");
            assert_eq!(
                entry["async"],
                !entry["queue"].is_null(),
                "{kind}: a queued strategy names its queue"
            );
            assert!(
                entry["description"].as_str().is_some_and(|text| !text.trim().is_empty()),
                "{kind}: has a description: {entry}"
            );
        }
    }
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn stats_count_purchases_and_reset_zeroes_them(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    const KIND: StrategyKind = StrategyKind::SqlAtomic;
    let app = spawn_app(connect, Setup { plan: plan_of(&[(100, 2)]), ..Setup::default() }).await;
    app.buy(KIND, &order_body(&[(100, 1)]), Some("stats-key")).await.assert_placed(KIND);
    app.buy(KIND, &order_body(&[(100, 1)]), None).await.assert_placed(KIND);
    app.buy(KIND, &order_body(&[(100, 1)]), None).await.assert_error(409, "sold_out");
    let replay = app.buy(KIND, &order_body(&[(100, 1)]), Some("stats-key")).await;
    assert_eq!(replay.status, 200, "the key replays: {}", replay.body);
    app.buy(KIND, &order_body(&[(555, 1)]), None).await.assert_error(404, "unknown_product");

    let stats = app.stats_of(KIND).await;
    assert_eq!(stats["attempts"], 5, "every purchase that reached the strategy is an attempt: {stats}");
    assert_eq!(stats["confirmed"], 2, "confirmed: {stats}");
    assert_eq!(stats["sold_out"], 1, "sold out: {stats}");
    assert_eq!(stats["replayed"], 1, "replayed: {stats}");
    assert_eq!(stats["unknown_product"], 1, "unknown product: {stats}");
    assert_eq!(stats["errors"], json!({}), "no backend errors: {stats}");
    assert_eq!(stats["latency"]["count"], stats["attempts"], "one latency sample per attempt: {stats}");
    for kind in StrategyKind::ALL.into_iter().filter(|&kind| kind != KIND) {
        assert_eq!(
            app.stats_of(kind).await["attempts"],
            0,
            "{kind}: another strategy's purchases are not its own"
        );
    }

    let reset = app
        .client
        .post(format!("{}/admin/reset", app.url))
        .json(&json!({ "products": [{ "id": 100, "stock": 5 }] }))
        .send()
        .await
        .expect("server answers");
    assert_eq!(reset.status(), 200, "reset succeeds");
    for kind in StrategyKind::ALL {
        let stats = app.stats_of(kind).await;
        for counter in ["attempts", "confirmed", "sold_out", "replayed", "unknown_product", "pending"] {
            assert_eq!(stats[counter], 0, "{kind}: reset zeroes {counter}: {stats}");
        }
        assert_eq!(stats["errors"], json!({}), "{kind}: reset clears errors: {stats}");
        assert_eq!(stats["latency"]["count"], 0, "{kind}: reset clears latency: {stats}");
    }
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn metrics_count_purchases(_: PoolOptions<Postgres>, connect: PgConnectOptions) {
    const KIND: StrategyKind = StrategyKind::SqlAtomic;
    let app = spawn_app(connect, Setup::default()).await;
    let scrape = || async {
        let response = app.client.get(format!("{}/metrics", app.url)).send().await.expect("server answers");
        assert_eq!(response.status(), 200, "GET /metrics answers");
        let content_type =
            response.headers()[reqwest::header::CONTENT_TYPE].to_str().expect("ASCII").to_owned();
        assert!(content_type.starts_with("text/plain"), "Prometheus text format: {content_type}");
        response.text().await.expect("metrics text")
    };
    scrape().await;
    app.buy(KIND, &order_body(&[(100, 1)]), None).await.assert_placed(KIND);
    let text = scrape().await;
    let line = text
        .lines()
        .find(|line| {
            line.starts_with("checkout_purchases_total{")
                && line.contains(r#"strategy="sql-atomic""#)
                && line.contains(r#"outcome="confirmed""#)
        })
        .unwrap_or_else(|| {
            panic!("checkout_purchases_total counts a confirmed sql-atomic purchase:\n{text}")
        });
    let count: f64 = line.rsplit(' ').next().and_then(|value| value.parse().ok()).expect("a sample value");
    assert!(count >= 1.0, "the confirmed purchase is counted: {line}");
    assert!(text.contains("checkout_purchase_duration_seconds"), "latency is exported:\n{text}");
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn reset_lays_out_a_random_catalogue_and_deletes_every_order(
    _: PoolOptions<Postgres>,
    connect: PgConnectOptions,
) {
    let app = spawn_app(connect, Setup::default()).await;
    let sql_order = app
        .buy(StrategyKind::SqlAtomic, &order_body(&[(100, 1)]), None)
        .await
        .assert_placed(StrategyKind::SqlAtomic);
    let memory_order = app
        .buy(StrategyKind::Memory, &order_body(&[(100, 1)]), None)
        .await
        .assert_placed(StrategyKind::Memory);
    assert_eq!(app.order_count().await, 1, "the SQL order is in PostgreSQL before the reset");

    let random = RandomProducts { count: 50, min_stock: 30_000, max_stock: 100_000, seed: 7 };
    let reset = app
        .client
        .post(format!("{}/admin/reset", app.url))
        .json(&json!({ "products": [], "random_products": random }))
        .send()
        .await
        .expect("server answers");
    let reset = read_answer(reset).await;
    assert_eq!(reset.status, 200, "reset succeeds: {}", reset.body);
    assert_eq!(reset.body["status"], "reset", "reset reports itself: {}", reset.body);
    assert_eq!(reset.body["summary"]["products_written"], 50, "reset writes the catalogue: {}", reset.body);

    for id in [1, 2, 25, 50] {
        let product = app.get_json(&format!("/products/{id}")).await;
        let stock = product["stock"].as_i64().expect("stock");
        assert!((30_000..=100_000).contains(&stock), "product {id}: stock within [min, max]: {stock}");
        assert_eq!(
            stock,
            random.stock_of(id),
            "product {id}: stock is the plan's pure function of (seed, id)"
        );
    }
    for gone in [51, 100] {
        app.get(&format!("/products/{gone}")).await.assert_error(404, "unknown_product");
    }

    assert_eq!(app.order_count().await, 0, "reset deletes every PostgreSQL order");
    for order_id in [&sql_order, &memory_order] {
        app.get(&format!("/orders/{order_id}")).await.assert_error(404, "unknown_order");
    }
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "a fresh catalogue audits clean: {audit}");
    assert_eq!(audit["total"]["orders"], 0, "no order after a reset: {audit}");
    assert_eq!(audit["total"]["units_in_orders"], 0, "no unit sold after a reset: {audit}");
    assert_eq!(audit["ledgers"]["memory"]["total"]["orders"], 0, "reset empties the memory ledger: {audit}");

    // Every strategy sells from the new catalogue, memory included.
    for kind in [StrategyKind::Memory, StrategyKind::SqlAtomic] {
        app.buy(kind, &order_body(&[(3, 2)]), None).await.assert_placed(kind);
        assert_eq!(
            app.stock_in(kind, 3).await,
            random.stock_of(3) - 2,
            "{kind}: sells from the reset's stock"
        );
    }
}
