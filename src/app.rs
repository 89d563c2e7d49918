//! The application: every strategy wrapped in its measuring layer, the pool the admin and read
//! routes use, the current stock plan, the session store, and settings. Handlers get it as a cheap
//! [`AppState`] clone.

use std::ops::Deref;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use catalog::BooksOn;
use checkout_strategies::{
    Backends, Gate, PgDriver, RedisBackend, Registry, SqlBackend, SqlPool, StockPlan, StrategyError,
    StrategyKind, catalog, contention, redis_stock, reservation,
};
use sqlx::PgPool;

use crate::admission::InflightLimits;
use crate::sessions::{SessionConfig, Sessions};
use crate::stats::{Measured, Stats};

/// Settings the HTTP layer needs.
#[derive(Debug, Clone, Default)]
pub struct AppConfig {
    /// When set, /admin routes need `Authorization: Bearer <token>`; otherwise loopback only.
    pub admin_token: Option<String>,
    /// Longest a purchase may take before the client is answered 503.
    pub request_timeout: Duration,
    /// Where buyer sessions live and whether purchases need one.
    pub sessions: SessionConfig,
    /// Most purchases in flight per backend before new ones are refused with 503.
    pub inflight: InflightLimits,
}

/// Everything a request may touch.
#[derive(Debug)]
pub struct App {
    /// The strategies that run on the books' database; the others answer 501.
    pub registry: Registry,
    /// Where orders, stock and plans live: PostgreSQL, or MySQL/MariaDB.
    pub books: SqlPool,
    /// The client the per-sale SQL strategies buy through (`GET /strategies` names it).
    pub pg_driver: PgDriver,
    pub redis: RedisBackend,
    pub stats: Arc<Stats>,
    pub sessions: Sessions,
    pub config: AppConfig,
    plan: RwLock<StockPlan>,
    /// The id (`stock_plans.id`) of the plan the strategies hold; 0 when none is known.
    plan_id: AtomicI64,
    /// A local reset and following another replica's reset never interleave.
    plan_change: tokio::sync::Mutex<()>,
    /// Held shared by every purchase from its start to its end (past its client's timeout too),
    /// and exclusively by a reset: a purchase never straddles a reset, so none reserves against
    /// the old catalogue and commits into the new one.
    purchases: Arc<tokio::sync::RwLock<()>>,
}

/// Longest a reset waits for the purchases in progress to end. Far above a purchase's own bounds
/// (the pool's acquire timeout, the statement timeout); past it, nothing is reset.
pub const RESET_WAITS_FOR_PURCHASES: Duration = Duration::from_secs(30);

/// How often a server looks for a reset another replica made.
pub const PLAN_FOLLOW_INTERVAL: Duration = Duration::from_millis(100);

/// Shared handle to the [`App`]: one reference-count bump per request.
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<App>);

impl Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

impl App {
    /// Builds every strategy and hands each the stock `plan`. Touches no backend but what a
    /// strategy's `prepare` needs, so it works with PostgreSQL down.
    ///
    /// # Errors
    /// When a strategy cannot take the plan, or the session connection settings are rejected.
    pub async fn new(backends: &Backends, config: AppConfig, plan: StockPlan) -> Result<Self, StrategyError> {
        let stats = Arc::new(Stats::new());
        let registry = Registry::build_all(backends, |strategy| Measured::wrap(strategy, Arc::clone(&stats)));
        for strategy in registry.iter() {
            strategy.prepare(&plan).await?;
        }
        Ok(Self {
            registry,
            books: backends.books.clone(),
            pg_driver: backends.purchases.driver(),
            redis: backends.redis.clone(),
            stats,
            sessions: Sessions::lazy(&config.sessions)?,
            config,
            plan: RwLock::new(plan),
            plan_id: AtomicI64::new(0),
            plan_change: tokio::sync::Mutex::new(()),
            purchases: Arc::new(tokio::sync::RwLock::new(())),
        })
    }

    /// Like [`App::new`], with the plan of the last reset; an empty catalogue first gets
    /// `fallback` so a fresh server can sell product 100 straight away.
    ///
    /// # Errors
    /// When the database does not answer.
    pub async fn load(
        backends: &Backends,
        config: AppConfig,
        fallback: StockPlan,
    ) -> Result<Self, StrategyError> {
        let (id, plan) = match catalog::latest_plan_with_id_on(&backends.books).await? {
            Some(latest) => latest,
            None if BooksOn(&backends.books).is_empty().await? => {
                let app = Self::new(backends, config, fallback.clone()).await?;
                // Through the full reset, so a Redis left over from an earlier database does not
                // keep a stale mirror under the same prefix.
                if let Err(err) = app.reset(fallback).await {
                    tracing::warn!(%err, "first catalogue not fully laid out; Redis keys load on first use");
                }
                return Ok(app);
            }
            None => (0, StockPlan::default()),
        };
        let app = Self::new(backends, config, plan).await?;
        app.plan_id.store(id, Ordering::Relaxed);
        Ok(app)
    }

    /// Resets PostgreSQL to `plan`, mirrors its stock into Redis (clearing everything else under
    /// the Redis prefix: streams, in-flight counters, idempotency keys), drops what strategies queue
    /// elsewhere (the broker's stream), hands every strategy the plan and clears the statistics.
    ///
    /// With `keep_catalogue`, the books keep their catalogue and history
    /// ([`catalog::reset_keeping`]), the plan in force is the last one with `plan`'s products, and
    /// only those are mirrored into Redis: millions of keys per reset would cost seconds, and the
    /// rest load on first use.
    ///
    /// # Errors
    /// When a backend does not answer; strategies may then hold the old plan.
    pub async fn reset(&self, plan: StockPlan) -> Result<(catalog::ResetSummary, StockPlan), StrategyError> {
        let _changing = self.plan_change.lock().await;
        // Purchases that start from now on wait for the reset to end (the lock favours writers).
        let _quiet =
            tokio::time::timeout(RESET_WAITS_FOR_PURCHASES, Arc::clone(&self.purchases).write_owned())
                .await
                .map_err(|_| {
                    StrategyError::Unavailable(format!(
                        "purchases were still running after {}s; nothing was reset, try again",
                        RESET_WAITS_FOR_PURCHASES.as_secs()
                    ))
                })?;
        let started = std::time::Instant::now();
        let (mut summary, plan) = catalog::reset_on(&self.books, &plan).await?;
        if let Ok(Some(id)) = BooksOn(&self.books).latest_plan_id().await {
            self.plan_id.store(id, Ordering::Relaxed);
        }
        // Only housekeeping: the audit reads the counts of the plan in force alone.
        if let Err(err) = contention::forget_earlier_plans(&self.books).await {
            tracing::warn!(%err, "could not drop the contention counts of earlier plans");
        }
        // The database is reset now: whatever happens to the Redis mirror, the strategies and the
        // statistics must follow, so the server never serves the old plan beside the new catalogue.
        let mirrored = self.reset_redis_mirror(&plan, summary.run_orders_deleted.is_some()).await;
        let mut prepared = Ok(());
        for strategy in self.registry.iter() {
            if let Err(err) = strategy.discard_queue().await {
                prepared = Err(err);
            }
            if let Err(err) = strategy.prepare(&plan).await {
                prepared = Err(err);
            }
        }
        self.stats.reset();
        *self.plan.write().unwrap_or_else(PoisonError::into_inner) = plan.clone();
        summary.redis_keys_loaded = mirrored?;
        prepared?;
        summary.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Ok((summary, plan))
    }

    /// Clears everything under the Redis prefix and mirrors the books' stock into it (only
    /// `plan`'s products when the catalogue was kept: millions of keys would cost seconds), when a
    /// strategy gated by Redis runs on the books' database. Returns the keys loaded.
    async fn reset_redis_mirror(&self, plan: &StockPlan, kept_catalogue: bool) -> Result<u64, StrategyError> {
        if !self.keeps_redis_mirror() {
            return Ok(0);
        }
        redis_stock::clear(&self.redis).await?;
        if kept_catalogue {
            let explicit: Vec<i64> = plan.products.iter().map(|p| p.id.get()).collect();
            redis_stock::load_products(&self.books, &self.redis, &explicit).await
        } else {
            redis_stock::load_from_sql(&self.books, &self.redis).await
        }
    }

    /// Whether a strategy gated by Redis (which keeps a mirror of the stock there) runs on the
    /// books' database.
    pub fn keeps_redis_mirror(&self) -> bool {
        StrategyKind::ALL
            .into_iter()
            .any(|kind| kind.spec().gate == Gate::Redis && self.database().runs(kind))
    }

    /// Rewrites the Redis mirror from PostgreSQL, keeping units of accepted, not yet persisted
    /// orders in flight. For a quiet system: see [`redis_stock::repair`].
    ///
    /// # Errors
    /// When a backend does not answer; [`StrategyError::NotOnDatabase`] when the books are not in
    /// PostgreSQL (no strategy keeps a Redis mirror then).
    pub async fn repair_redis(&self) -> Result<redis_stock::RepairReport, StrategyError> {
        if !self.keeps_redis_mirror() {
            return Err(StrategyError::NotOnDatabase(format!(
                "no strategy keeps a Redis mirror of {}'s stock: nothing to repair",
                self.database()
            )));
        }
        let holds = reservation::holds(&self.redis).await?;
        let ids: Vec<uuid::Uuid> = holds.iter().map(|hold| hold.order_id).collect();
        let committed = reservation::committed(&self.books, &ids).await?;
        let now_ms = reservation::redis_now_ms(&self.redis).await?;
        let held = reservation::units_by_product(&holds, &committed, now_ms);
        redis_stock::repair(&self.books, &self.redis, &held).await
    }

    /// Takes up a plan another process recorded (a reset through another replica, a populate)
    /// when it is newer than the one the strategies hold: they drop what they kept of the old
    /// catalogue (caches of claimed gates and laid-out unit pools, `memory`'s books) and the
    /// statistics start over, as after a local reset. PostgreSQL and Redis were reset by whoever
    /// recorded the plan. Returns whether it took a new plan.
    ///
    /// # Errors
    /// When PostgreSQL does not answer, or a strategy cannot take the plan.
    pub async fn follow_plan(&self) -> Result<bool, StrategyError> {
        let Some(latest) = BooksOn(&self.books).latest_plan_id().await? else { return Ok(false) };
        if latest == self.plan_id.load(Ordering::Relaxed) {
            return Ok(false);
        }
        let _changing = self.plan_change.lock().await;
        let Some((id, plan)) = catalog::latest_plan_with_id_on(&self.books).await? else { return Ok(false) };
        if id == self.plan_id.load(Ordering::Relaxed) {
            return Ok(false);
        }
        for strategy in self.registry.iter() {
            strategy.prepare(&plan).await?;
        }
        self.stats.reset();
        *self.plan.write().unwrap_or_else(PoisonError::into_inner) = plan;
        self.plan_id.store(id, Ordering::Relaxed);
        Ok(true)
    }

    /// Follows resets made elsewhere ([`Self::follow_plan`]) every [`PLAN_FOLLOW_INTERVAL`] until
    /// `stop` fires. Errors are logged and retried.
    pub async fn follow_plans(&self, stop: checkout_strategies::CancellationToken) {
        while !stop.is_cancelled() {
            match self.follow_plan().await {
                Ok(true) => {
                    tracing::info!(plan_id = self.plan_id(), "took up a plan another process recorded")
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(%err, "could not look for a newer plan; trying again"),
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(PLAN_FOLLOW_INTERVAL) => {}
            }
        }
    }

    /// The books' pool when they are in PostgreSQL: the Redis mirror and reservations belong to
    /// strategies that run there alone.
    pub const fn pg(&self) -> Option<&PgPool> {
        self.books.postgres()
    }

    /// The SQL server that holds the books.
    pub const fn database(&self) -> SqlBackend {
        self.books.backend()
    }

    /// The id of the plan the strategies hold (`stock_plans.id`), 0 when none is known.
    /// A purchase's pass, to await inside the purchase's own task: while a purchase holds it, no
    /// reset runs ([`App::reset`] waits for every pass to be dropped).
    pub fn purchase_pass(
        &self,
    ) -> impl std::future::Future<Output = tokio::sync::OwnedRwLockReadGuard<()>> + Send + 'static {
        Arc::clone(&self.purchases).read_owned()
    }

    pub fn plan_id(&self) -> i64 {
        self.plan_id.load(Ordering::Relaxed)
    }

    /// The plan of the last reset.
    pub fn current_plan(&self) -> StockPlan {
        self.plan.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Product ids the current plan names explicitly: the audit always reports them.
    pub fn tracked_products(&self) -> Vec<i64> {
        self.plan.read().unwrap_or_else(PoisonError::into_inner).products.iter().map(|p| p.id.get()).collect()
    }
}
