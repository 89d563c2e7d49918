//! Our own HTTP client at full speed: `connections` keep-alive connections, each sending the next
//! request as soon as the answer is in. This is the load generator's client without its schedule,
//! so held against wrk it says what our client costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::loadgen::{Connection, Target};

/// What to send, again and again.
#[derive(Debug, Clone)]
pub(super) enum Request {
    Get(String),
    Post(String, Bytes),
}

/// Requests per second answered 2xx over `duration`; fails when more than 1 % were not.
pub(super) async fn saturate(
    target: &Target,
    request: Request,
    connections: u32,
    duration: Duration,
) -> anyhow::Result<f64> {
    let good = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let (target, request, good, bad) =
            (target.clone(), request.clone(), Arc::clone(&good), Arc::clone(&bad));
        tasks.spawn(async move {
            let Ok(mut connection) = Connection::open(&target).await else {
                bad.fetch_add(1, Ordering::Relaxed);
                return;
            };
            while Instant::now() < deadline {
                let sent = match &request {
                    Request::Get(path) => target.get(path),
                    Request::Post(path, body) => target.post(path, body.clone()),
                };
                match connection.send(sent).await {
                    Ok((status, _)) if status.is_success() => good.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => bad.fetch_add(1, Ordering::Relaxed),
                    Err(_) => {
                        bad.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                };
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let (good, bad) = (good.load(Ordering::Relaxed) as f64, bad.load(Ordering::Relaxed) as f64);
    anyhow::ensure!(
        good > 0.0 && bad / (good + bad) <= 0.01,
        "our client: {bad} of {} requests failed",
        good + bad
    );
    Ok(good / elapsed)
}
