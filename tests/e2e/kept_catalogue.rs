//! Resets that keep a populated catalogue (`keep_catalogue`): a run on top of history is audited
//! exactly from the run's orders alone, and the next such reset undoes the run — its orders gone,
//! the products it touched back to their stock before it — while history and every untouched
//! product stay as populate wrote them.

use std::path::Path;
use std::time::Duration;

use checkout_bench::bench::capacity::probe::{self, ProbeShape, Regulars};
use checkout_bench::bench::options::ServerFlags;
use checkout_bench::bench::server::Server;
use checkout_bench::populate::{self, PopulateArgs};
use checkout_strategies::reservation::{Sweeper, SweeperSettings};
use checkout_strategies::{ProductId, StrategyKind, catalog};
use serde_json::json;
use sqlx::PgPool;

use crate::helpers::{Setup, TestApp, order_body, spawn_app_on};

const HOT: i64 = 100;

fn seed_fixtures() -> PopulateArgs {
    PopulateArgs {
        products: 2_000,
        orders: 5_000,
        hot_product: HOT,
        hot_stock: 10_000,
        min_stock: 30_000,
        max_stock: 100_000,
        seed: 11,
        max_items_per_order: 3,
        orders_strategy: StrategyKind::SqlAtomic,
    }
}

async fn keep_reset(app: &TestApp, hot_stock: i64) -> serde_json::Value {
    let response = app
        .client
        .post(format!("{}/admin/reset", app.url))
        .json(&json!({ "products": [{ "id": HOT, "stock": hot_stock }], "keep_catalogue": true }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

async fn buy(app: &TestApp, kind: StrategyKind, product: i64, quantity: i64) {
    let response = app.purchase(kind, &order_body(&[(product, quantity)])).await;
    let status = response.status();
    assert_eq!(status, 201, "{kind} buying {product}: {}", response.text().await.unwrap());
}

async fn stocks(pool: &PgPool) -> Vec<(i64, i64, i64)> {
    sqlx::query_as("SELECT id, stock, initial_stock FROM products ORDER BY id").fetch_all(pool).await.unwrap()
}

async fn history_digest(pool: &PgPool) -> Option<String> {
    sqlx::query_scalar(
        "SELECT md5(string_agg(concat_ws(':', i.order_id, i.product_id, i.quantity, o.status), ','
                    ORDER BY i.order_id, i.product_id))
         FROM order_items i JOIN orders o ON o.id = i.order_id",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn a_run_over_history_is_audited_exactly_and_undone_by_the_next_reset(pool: PgPool) {
    let args = seed_fixtures();
    populate::run(&pool, &args).await.unwrap();
    let populated = stocks(&pool).await;
    let history = history_digest(&pool).await;
    let plan = catalog::latest_plan(&pool).await.unwrap().unwrap();
    let app = spawn_app_on(pool.clone(), Setup { plan, ..Setup::default() }, false).await;

    let reset = keep_reset(&app, 40).await;
    assert_eq!(reset["summary"]["run_orders_deleted"], 0, "populate's orders are history: {reset}");
    assert_eq!(reset["plan"]["random_products"]["count"], 2_000, "the catalogue stays: {reset}");
    assert_eq!(reset["summary"]["redis_keys_loaded"], 1, "only the plan's product is mirrored: {reset}");

    // The hot product sold out by two gates' worth of buyers, regular products by several
    // strategies: PostgreSQL's gate, Redis's (its mirror loads on first use) and the in-memory books.
    for _ in 0..40 {
        buy(&app, StrategyKind::SqlAtomic, HOT, 1).await;
    }
    let refused = app.purchase(StrategyKind::SqlAtomic, &order_body(&[(HOT, 1)])).await;
    assert_eq!(refused.status(), 409, "the hot product is sold out at the stock the reset set");
    for product in 1..=10 {
        buy(&app, StrategyKind::SqlAtomic, product, 2).await;
    }
    for product in 11..=20 {
        assert_eq!(app.redis_stock(product).await, None, "no key before the first sale");
        buy(&app, StrategyKind::RedisLua, product, 3).await;
    }
    for product in 21..=25 {
        buy(&app, StrategyKind::Memory, product, 1).await;
    }

    // A mirror loaded on first use waits for the sweeper's resync (the server sweeps every 250 ms).
    let report =
        Sweeper::new(pool.clone(), app.redis.clone(), SweeperSettings::default()).sweep().await.unwrap();
    assert_eq!(report.resynced, 10, "{report:?}");
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{audit}");
    assert_eq!(audit["settled"], true, "{audit}");
    assert_eq!(audit["order_status"]["confirmed"], 60, "the run's orders only, not populate's 5,000");
    let hot = audit["products"].as_array().unwrap().iter().find(|p| p["product_id"] == HOT).unwrap();
    assert_eq!(
        (&hot["initial_stock"], &hot["final_stock"], &hot["units_in_orders"], &hot["stock_drift"]),
        (&json!(40), &json!(0), &json!(40), &json!(0)),
        "the hot product's books read as the run saw them: {hot}"
    );
    let listed = audit["products"].as_array().unwrap().len();
    assert_eq!(listed, 21, "the hot product and the 20 regular products PostgreSQL sold: {audit}");
    assert_eq!(audit["total"]["units_in_orders"], 40 + 10 * 2 + 10 * 3);
    assert_eq!(audit["ledgers"]["memory"]["clean"], true, "{audit}");
    let orders = app.get_json("/admin/orders").await;
    assert_eq!(orders["count"], 65, "the run's orders, PostgreSQL's and memory's: {orders}");

    let reset = keep_reset(&app, 500).await;
    assert_eq!(reset["summary"]["run_orders_deleted"], 60, "{reset}");
    assert_eq!(reset["summary"]["products_restored"], 21, "{reset}");
    assert_eq!(history_digest(&pool).await, history, "history is untouched");
    let after = stocks(&pool).await;
    assert_eq!(after.len(), populated.len());
    for (before, now) in populated.iter().zip(&after) {
        if before.0 == HOT {
            assert_eq!(now.1, 500, "the hot product has the stock the reset set");
            assert_eq!(now.2 - now.1, before.2 - before.1, "its initial stock still counts its history");
        } else {
            assert_eq!(before, now, "product {} is back as populate wrote it", before.0);
        }
    }
    let untouched = ProductId::parse(1_999).unwrap();
    assert_eq!(catalog::stock_of(&pool, untouched).await.unwrap(), Some(populated[1_998].1));

    // A product the PostgreSQL gate sold in the last run is free for Redis's gate in this one.
    buy(&app, StrategyKind::RedisLua, 1, 1).await;
    buy(&app, StrategyKind::SqlAtomic, HOT, 5).await;
    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{audit}");
    assert_eq!(audit["order_status"]["confirmed"], 2);
    assert_eq!(audit["total"]["units_in_orders"], 6);
}

#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn keeping_the_catalogue_and_replacing_it_at_once_is_refused(pool: PgPool) {
    populate::run(&pool, &PopulateArgs { orders: 10, ..seed_fixtures() }).await.unwrap();
    let plan = catalog::latest_plan(&pool).await.unwrap().unwrap();
    let app = spawn_app_on(pool.clone(), Setup { plan, ..Setup::default() }, false).await;
    let response = app
        .client
        .post(format!("{}/admin/reset", app.url))
        .json(&json!({ "random_products": { "count": 5 }, "keep_catalogue": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_request");
    assert!(body["message"].as_str().unwrap().contains("keep_catalogue"), "{body}");
    assert_eq!(stocks(&pool).await.len(), 2_000, "nothing was touched");
}

/// Capacity probes over a populated catalogue, as `bench capacity --catalogue existing` runs them:
/// hunters and regular customers over every product, one strategy per probe, each probe's reset
/// undoing the last. The audit of the last probe is exact and reads only its orders, and a final
/// reset leaves every product but the hunted one as populate wrote it.
#[sqlx::test(migrator = "checkout_strategies::MIGRATOR")]
async fn capacity_probes_over_a_kept_catalogue_leave_it_as_populate_wrote_it(pool: PgPool) {
    let args = seed_fixtures();
    populate::run(&pool, &args).await.unwrap();
    let populated = stocks(&pool).await;
    let history = history_digest(&pool).await;
    let plan = catalog::latest_plan(&pool).await.unwrap().unwrap();
    let app = spawn_app_on(pool.clone(), Setup { plan, ..Setup::default() }, false).await;
    let flags = ServerFlags {
        url: Some(app.url.clone()),
        admin_token: None,
        database_url: String::new(),
        redis_url: String::new(),
        redis_prefix: String::new(),
        server_args: Vec::new(),
        replicas: 1,
    };
    let server = Server::start(&flags, Path::new("unused.log")).await.unwrap();
    let shape = ProbeShape {
        product: HOT,
        connections: 8,
        probe: Duration::from_secs(1),
        slo: Duration::from_secs(5),
        // The sweeper that resyncs mirrors loaded on first sale runs in the server binary, not
        // here: the test sweeps itself before auditing.
        drain_limit: Duration::from_millis(200),
        // Heavier than the seed's 3, so one short probe reaches many products.
        regulars: Regulars { weight: 50, products: 2_000 },
        keep_catalogue: true,
    };

    let mut last = None;
    for kind in [StrategyKind::SqlAtomic, StrategyKind::RedisLua] {
        let measured = probe::probe(Some(&server), &server.target, kind.as_str(), &shape, 300.0, "[test]")
            .await
            .unwrap();
        let counts = &measured.record.counts;
        assert_eq!(
            (counts.sent, counts.confirmed, counts.errors, counts.sold_out),
            (300, 300, 0, 0),
            "{kind}"
        );
        last = Some(measured);
    }
    Sweeper::new(pool.clone(), app.redis.clone(), SweeperSettings::default()).sweep().await.unwrap();

    let audit = app.audit().await;
    assert_eq!(audit["clean"], true, "{audit}");
    assert_eq!(audit["settled"], true, "{audit}");
    assert_eq!(audit["order_status"]["confirmed"], 300, "the last probe's orders only: {audit}");
    assert_eq!(audit["sold_by"], json!(["redis-lua"]), "{audit}");
    let products = audit["products"].as_array().unwrap();
    let hunted = products.iter().find(|p| p["product_id"] == HOT).unwrap();
    let hunters =
        i64::try_from(last.unwrap().record.acks.iter().filter(|ack| ack.product_id == HOT).count()).unwrap();
    assert_eq!(hunted["units_in_orders"], hunters, "{hunted}");
    assert_eq!(hunted["initial_stock"], 600, "twice the probe's requests: {hunted}");
    assert!(products.len() > 50, "regulars bought all over the catalogue: {} products", products.len());
    assert!(products.iter().all(|p| p["stock_drift"] == 0 && p["redis_drift"] == 0), "{audit}");

    keep_reset(&app, 10_000).await;
    assert_eq!(history_digest(&pool).await, history, "history is untouched");
    let after = stocks(&pool).await;
    for (before, now) in populated.iter().zip(&after) {
        if before.0 != HOT {
            assert_eq!(before, now, "product {} is back as populate wrote it", before.0);
        }
    }
    assert_eq!(app.order_count().await, 5_000, "populate's orders, and nothing of the probes");
}
