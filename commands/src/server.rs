//! Running the API: the command pipeline, the routes, graceful shutdown.

use crate::http::{app, AppState, HttpConfig};
use crate::metrics::Metrics;
use crate::pipeline::{BusConfig, CommandBus};
use eventstore::EventStore;
use std::future::Future;
use std::sync::Arc;
use tokio::net::TcpListener;
use utoipa_axum::router::OpenApiRouter;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub http: HttpConfig,
    pub bus: BusConfig,
}

/// Serves `routes` on `listener` until `shutdown` resolves, then stops taking
/// connections, finishes in-flight requests and drains the pipeline.
pub async fn serve(
    store: EventStore,
    listener: TcpListener,
    config: ServeConfig,
    routes: OpenApiRouter<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let bus = CommandBus::start(store.clone(), config.bus, metrics);
    let state = AppState::new(store, bus.clone(), config.http);
    let application = app(routes, state);
    tracing::info!(address = %listener.local_addr()?, "listening");
    let served = axum::serve(listener, application)
        .with_graceful_shutdown(shutdown)
        .await;
    bus.shutdown().await;
    tracing::info!("stopped");
    served
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
