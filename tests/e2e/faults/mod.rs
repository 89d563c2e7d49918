//! Faults injected under load, against the real services: Redis replies lost after a script ran,
//! Redis killed mid-sale, the NATS broker down or killed mid-sale, PostgreSQL connections terminated, a commit whose reply is lost, stream
//! workers dying mid-batch, one idempotency key sent through every strategy at once, two gates
//! storming one product, a mirror key for a product PostgreSQL lacks, and a reset waiting on a row
//! lock.
//!
//! Each scenario lets the buyers finish, then does what the server's background work would (drain
//! the queues, sweep expired reservations) until the audit says the books are final, and checks
//! them independently of the audit ([`books::assert_exact`]): nothing oversold, no 201/202 order
//! missing from PostgreSQL, no order behind an answer that said it failed, nothing duplicated or
//! half-written, nothing stranded, and Redis equal to PostgreSQL for what the Redis gate sells.
//!
//! Helpers: [`disposable::Disposable`] (a server process of the test's own on a free port, killed
//! on drop, `kill -9` and restart at will) and its two kinds, [`redis_server::DisposableRedis`] and
//! [`nats_server::DisposableNats`] (a `nats-server -js` with its own store),
//! [`redis_proxy::RedisFaultProxy`] (replies held, or the link stalled right after a chosen
//! command), [`pg_proxy::PgFaultProxy`] (the reply to a `COMMIT` lost), [`storm`] (retrying
//! buyers and a tally of their answers), [`books`] (settling and checking).

use std::time::Duration;

use checkout_strategies::{PgSettings, RedisSettings, StockPlan, Tuning};

use crate::helpers::{Setup, TestApp, eventually};

mod books;
mod broker;
mod disposable;
mod gates;
mod inflight;
mod lost_commit;
mod nats_server;
mod pg_proxy;
mod pg_terminate;
mod redis_proxy;
mod redis_replies;
mod redis_restart;
pub(crate) mod redis_server;
mod reset_lock;
mod shared_key;
mod storm;
mod unknown_product;
mod worker_crash;

/// Reservation deadline in these tests: long enough for a purchase to commit on a busy machine,
/// short enough that a stranded reservation is swept within the test.
const RESERVATION_TTL: Duration = Duration::from_millis(1500);
/// Purchases answer 503 after this, whatever they wait on.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// An answer later than this means a request hung past the request timeout.
const ANSWER_BOUND: Duration = Duration::from_secs(8);
/// A Redis reply later than this is lost.
const REDIS_REPLY_TIMEOUT: Duration = Duration::from_millis(500);

/// A server selling `plan` through the Redis at `redis_url`, with short deadlines everywhere.
fn fault_setup(plan: StockPlan, redis_url: String) -> Setup {
    Setup {
        plan,
        tuning: Tuning { reservation_ttl: RESERVATION_TTL, ..Tuning::default() },
        redis_url,
        redis: RedisSettings {
            response_timeout: REDIS_REPLY_TIMEOUT,
            connect_timeout: Duration::from_millis(500),
        },
        request_timeout: REQUEST_TIMEOUT,
        pg: PgSettings { connections: 16, ..PgSettings::default() },
        ..Setup::default()
    }
}

/// Hash of a Lua script of the strategies crate, as `EVALSHA` sends it.
fn script_sha(source: &str) -> String {
    redis::Script::new(source).get_hash().to_owned()
}

/// Waits until the app's Redis connection works again. It reconnects only once a command fails
/// on the old connection (after a restart or a cut), so this sends commands until one succeeds.
async fn redis_reconnected(app: &TestApp) {
    eventually("the app's Redis connection is back", Duration::from_secs(10), || async {
        let mut conn = app.redis.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
    })
    .await;
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("bound address").port()
}
