//! Starting and stopping the HTTP server, alone or with the stream workers beside it.

use std::future::Future;
use std::net::SocketAddr;

use checkout_strategies::background::{self, BackgroundSettings};
use checkout_strategies::reservation::SweeperSettings;
use checkout_strategies::stock_sync::StockSyncSettings;
use checkout_strategies::{Backends, CancellationToken, WorkerSettings};
use tokio::net::TcpListener;

use crate::app::AppState;

/// Serves `state` on `listener` until `shutdown` resolves, then lets in-flight requests finish
/// and the strategies finish what they took (a batcher answers its queue).
///
/// # Errors
/// When accepting connections fails for good.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let service = crate::http::app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, service).with_graceful_shutdown(shutdown).await;
    state.registry.shutdown().await;
    served
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::warn!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

/// Serves the API beside the strategies' background work (the reservation sweeper, and, with
/// `worker` settings, the stream workers and the broker consumer), until `stop` is cancelled or one of them stops on its
/// own. Whichever stops first is reported; the other is then asked to stop and waited for, so the
/// API finishes its requests and the workers their batch.
///
/// # Errors
/// When either task failed or panicked.
pub async fn serve_with_worker(
    listener: TcpListener,
    state: AppState,
    backends: Backends,
    worker: Option<WorkerSettings>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // Replicas share PostgreSQL and Redis: a reset through any of them reaches the others' strategies.
    let follower = tokio::spawn({
        let (app, stop) = (state.clone(), stop.clone());
        async move { app.follow_plans(stop).await }
    });
    let mut api = tokio::spawn(run(listener, state, stop.clone().cancelled_owned()));
    let worker_stop = stop.clone();
    let settings = BackgroundSettings {
        workers: worker,
        sweeper: SweeperSettings::default(),
        stock_sync: StockSyncSettings::default(),
    };
    let mut worker = tokio::spawn(async move { background::run(&backends, settings, worker_stop).await });
    let (first, second) = tokio::select! {
        exit = &mut api => {
            let first = report_exit("api", exit);
            stop.cancel();
            (first, report_exit("worker", worker.await))
        }
        exit = &mut worker => {
            let first = report_exit("worker", exit);
            stop.cancel();
            (first, report_exit("api", api.await))
        }
    };
    stop.cancel();
    if let Err(err) = follower.await {
        tracing::error!(%err, "the plan follower panicked");
    }
    first.and(second)
}

/// Logs how a task ended and turns it into a result.
fn report_exit<E>(task: &str, exit: Result<Result<(), E>, tokio::task::JoinError>) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match exit {
        Ok(Ok(())) => {
            tracing::info!(task, "stopped");
            Ok(())
        }
        Ok(Err(err)) => {
            tracing::error!(task, %err, "stopped with an error");
            Err(anyhow::Error::new(err).context(format!("{task} failed")))
        }
        Err(err) => {
            tracing::error!(task, %err, "panicked or was cancelled");
            Err(anyhow::anyhow!("{task} task died: {err}"))
        }
    }
}
