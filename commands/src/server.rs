//! Running the API: the command pipeline, the projection workers, the routes,
//! graceful shutdown.

use crate::domains::{ProcessManager, Registry};
use crate::http::auth::listen_for_revocations;
use crate::http::metrics::{
    refresh_projection_statuses, refresh_replica_lag, run_projection_metrics,
    PROJECTION_METRICS_INTERVAL,
};
use crate::http::{app, connections, AppState, HttpConfig};
use crate::metrics::Metrics;
use crate::pipeline::{BusConfig, CommandBus, DatabaseTime, DATABASE_TIME_EVERY};
use crate::scheduler::{Ticker, TickerConfig};
use aggregates::plan::PlanCatalog;
use eventstore::EventStore;
use projections::{Projection, Reactor, Workers};
use sqlx::postgres::PgPoolOptions;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use utoipa_axum::router::OpenApiRouter;

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub http: HttpConfig,
    pub bus: BusConfig,
    /// Run projection workers in this process (otherwise run `ledger
    /// project` processes next to it).
    pub workers: bool,
    /// The plans tenants may subscribe to.
    pub plans: PlanCatalog,
    /// The scheduler's ticker, run beside the workers; `None` runs none
    /// here (tests drive it by its single step).
    pub ticker: Option<TickerConfig>,
    /// A streaming replica every read of a read table goes to
    /// (`--read-database-url`); `None` reads the primary.
    pub read_database_url: Option<String>,
    /// The database's clock, which `bus.clock` follows (made by its
    /// [`DatabaseTime::clock`]): measured again every minute while the
    /// server runs, its offset shown in `/metrics`. `None` (tests) keeps
    /// `bus.clock` as it is.
    pub database_time: Option<DatabaseTime>,
}

/// A pool on the replica at `url`, connecting as reads need it. Each
/// statement is bounded by `timeout`: a read the standby holds up (behind
/// a lock its replay of the primary takes) answers 503 and frees its
/// connection instead of waiting out the request.
fn replica_pool(url: &str, timeout: std::time::Duration) -> Result<sqlx::PgPool, sqlx::Error> {
    let options: sqlx::postgres::PgConnectOptions = url.parse()?;
    let options = options.options([(
        "statement_timeout",
        format!("{}ms", timeout.as_millis().max(1)),
    )]);
    Ok(sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .connect_lazy_with(options))
}

/// Warns when the replica at `pool` is not a standby, or when its login
/// cannot read what the reads need: the checkpoints (`ledger_service`, or
/// a superuser or a role that bypasses row-level security) and the read
/// tables (`ledger_reader`). A replica out of reach is only noted: reads
/// answer 503 until it comes up. Runs beside the start, which it never
/// holds up.
async fn check_replica(pool: sqlx::PgPool) {
    // A role the replica has not replayed yet is one the login lacks.
    let checked: Result<(bool, bool, bool), sqlx::Error> = sqlx::query_as(
        "SELECT pg_is_in_recovery(), \
                coalesce((SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles \
                          WHERE rolname = 'ledger_reader'), false), \
                coalesce((SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles \
                          WHERE rolname = 'ledger_service'), false) \
                  OR (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user)",
    )
    .fetch_one(&pool)
    .await;
    match checked {
        Ok((standby, reader, checkpoints)) => {
            if !standby {
                tracing::warn!("--read-database-url is not a standby (not in recovery)");
            }
            if !reader || !checkpoints {
                tracing::warn!(
                    reader,
                    checkpoints,
                    "the --read-database-url login needs ledger_reader, and ledger_service (or superuser): connect as the primary's login"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "the read replica cannot be asked yet"),
    }
}

/// A replica's statements stop a second before the request would be cut
/// (at least a second), so that a held-up read answers 503, not 408.
fn replica_statement_timeout(limits: connections::ConnectionLimits) -> std::time::Duration {
    limits
        .request_timeout
        .saturating_sub(std::time::Duration::from_secs(1))
        .max(std::time::Duration::from_secs(1))
}

/// Why the plan catalog of `serve --plans` cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PlansError {
    #[error("cannot read plan catalog {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}", path.display())]
    Invalid {
        path: PathBuf,
        error: aggregates::plan::CatalogError,
    },
}

/// The plans tenants may subscribe to: read from the JSON file at `path`,
/// or the built-in catalog without one.
pub fn plan_catalog(path: Option<&Path>) -> Result<PlanCatalog, PlansError> {
    let Some(path) = path else {
        return Ok(PlanCatalog::builtin());
    };
    let text = std::fs::read_to_string(path).map_err(|error| PlansError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    PlanCatalog::from_json(&text).map_err(|error| PlansError::Invalid {
        path: path.to_path_buf(),
        error,
    })
}

/// The command pipeline on a pool of its own (see [`EventStore::with_pool`]):
/// one connection per append in flight.
pub fn start_bus(store: &EventStore, config: BusConfig, metrics: Arc<Metrics>) -> CommandBus {
    let options = store.pool().connect_options().as_ref().clone();
    let pool = PgPoolOptions::new()
        .max_connections(
            u32::try_from(config.shards.max(1) * config.pipeline_depth.max(1)).unwrap_or(u32::MAX),
        )
        .acquire_timeout(std::time::Duration::from_secs(5))
        .test_before_acquire(false)
        .connect_lazy_with(options);
    CommandBus::start(store.with_pool(pool), config, metrics)
}

/// Registers the projections and reactors, starts rebuilding the
/// projections whose version changed (in the background: the live tables
/// serve meanwhile), and starts their workers.
pub async fn start_workers(
    store: &EventStore,
    projections: &[Arc<dyn Projection>],
    reactors: Vec<Arc<dyn Reactor>>,
) -> Result<Workers, projections::ProjectionError> {
    Workers::start_registered(store, projections.to_vec(), reactors).await
}

/// The scheduler's ticker on `store`, submitting to `bus` at `bus`'s clock;
/// runs until `stop` turns true.
pub fn start_ticker(
    store: &EventStore,
    bus: &CommandBus,
    clock: crate::pipeline::Clock,
    config: TickerConfig,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let ticker = Ticker::new(
        store.pool().clone(),
        bus.clone(),
        Arc::new(Registry::new()),
        clock,
        config,
    );
    tokio::spawn(ticker.run(stop))
}

/// Serves `routes` on `listener` until `shutdown` resolves, then stops taking
/// connections, finishes in-flight requests (closing what is left at the
/// shutdown timeout), stops the ticker and the workers, and drains the
/// pipeline. Next to them run the timer that refreshes the projection gauges
/// of `/metrics` (once before the first connection is taken) and the
/// listener that evicts API keys revoked by other processes. The workers,
/// the process managers and the scheduler's ticker run here unless
/// `config.workers` is off (`ledger project` runs them then).
pub async fn serve(
    store: EventStore,
    listener: TcpListener,
    config: ServeConfig,
    routes: OpenApiRouter<AppState>,
    projections: Vec<Arc<dyn Projection>>,
    process_managers: Vec<ProcessManager>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error>> {
    let metrics = Arc::new(Metrics::default());
    let clock = config.bus.clock.clone();
    let (stop_tasks, tasks_stopped) = watch::channel(false);
    let following = config.database_time.map(|time| {
        let metrics = metrics.clone();
        let measured = move |offset| metrics.set_clock_offset(offset);
        follow_database_time(&store, time, measured, tasks_stopped.clone())
    });
    // A server never stops its shards dead: only a fault test's own
    // pipeline has a crash hook.
    let bus = start_bus(
        &store,
        BusConfig {
            crash: crate::pipeline::CrashHook::default(),
            ..config.bus
        },
        metrics,
    );
    let reactors: Vec<Arc<dyn Reactor>> = process_managers
        .into_iter()
        .map(|build| build(bus.clone(), store.clone()))
        .collect();
    let reactor_names = reactors.iter().map(|reactor| reactor.name()).collect();
    let notifier = tokio::spawn(projections::worker::notify_appends(
        store.clone(),
        tasks_stopped.clone(),
    ));
    let workers = if config.workers {
        Some(start_workers(&store, &projections, reactors).await?)
    } else {
        None
    };
    let (stop_ticker, ticker_stopped) = watch::channel(false);
    let ticker = config
        .ticker
        .filter(|_| config.workers)
        .map(|ticker| start_ticker(&store, &bus, clock, ticker, ticker_stopped));
    let progress = match &workers {
        Some(workers) => workers.progress(),
        None => watch::channel(0).1,
    };
    let limits = config.http.connections;
    let served = Served {
        http: config.http,
        plans: config.plans,
        read_database_url: config.read_database_url,
        progress,
        projections,
        process_managers: reactor_names,
    };
    let state = serving_state(&store, &bus, served).await?;
    let revocations = tokio::spawn(listen_for_revocations(
        store,
        state.auth.clone(),
        tasks_stopped.clone(),
    ));
    let projection_metrics = tokio::spawn(run_projection_metrics(
        state.clone(),
        PROJECTION_METRICS_INTERVAL,
        tasks_stopped,
    ));
    let application = app(routes, state);
    tracing::info!(address = %listener.local_addr()?, "listening");
    // Every request carries the client address (ConnectInfo), which feeds
    // the failed-authentication throttle.
    connections::serve(listener, application, limits, shutdown).await;
    let _ = stop_ticker.send(true);
    if let Some(ticker) = ticker {
        let _ = ticker.await;
    }
    // The process managers among the workers submit through the pipeline:
    // they stop before it.
    if let Some(workers) = workers {
        workers.stop().await;
    }
    bus.shutdown().await;
    let _ = stop_tasks.send(true);
    let _ = notifier.await;
    let _ = revocations.await;
    let _ = projection_metrics.await;
    if let Some(following) = following {
        let _ = following.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// What the routes serve beside the store and the pipeline.
struct Served {
    http: HttpConfig,
    plans: PlanCatalog,
    read_database_url: Option<String>,
    progress: watch::Receiver<u64>,
    projections: Vec<Arc<dyn Projection>>,
    process_managers: Vec<&'static str>,
}

/// The state the routes serve from, on the replica's pool when reads go
/// to one; the projection gauges told once before the first request (the
/// replica's lag, which may take up to a connection's timeout to tell, is
/// NaN until it is told).
async fn serving_state(
    store: &EventStore,
    bus: &CommandBus,
    served: Served,
) -> Result<AppState, Box<dyn std::error::Error>> {
    let limits = served.http.connections;
    if limits.request_timeout <= served.http.read_wait {
        tracing::warn!(
            request_timeout_ms = limits.request_timeout.as_millis(),
            read_wait_ms = served.http.read_wait.as_millis(),
            "the request timeout is not above the min_seq wait: lagging reads answer 408, not 503"
        );
    }
    let state = AppState::new(
        store.clone(),
        bus.clone(),
        served.http,
        served.progress,
        served.projections,
    )
    .with_plans(served.plans)
    .with_process_managers(served.process_managers);
    let state = match &served.read_database_url {
        Some(url) => {
            let pool = replica_pool(url, replica_statement_timeout(limits))?;
            tokio::spawn(check_replica(pool.clone()));
            state.with_read_pool(pool)
        }
        None => state,
    };
    refresh_projection_statuses(&state).await;
    if state.reads_replica {
        state.metrics.set_replica_lag(Some(f64::NAN));
        let state = state.clone();
        tokio::spawn(async move { refresh_replica_lag(&state).await });
    } else {
        refresh_replica_lag(&state).await;
    }
    Ok(state)
}

/// Measures `time` again every minute (the database's clock that the
/// pipeline and the ticker follow) until `stop` turns true.
fn follow_database_time(
    store: &EventStore,
    time: DatabaseTime,
    measured: impl Fn(chrono::TimeDelta) + Send + 'static,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let pool = store.pool().clone();
    tokio::spawn(time.follow(pool, DATABASE_TIME_EVERY, measured, stop))
}

/// `ledger project`: the projection workers, the process managers and the
/// scheduler's ticker (with a pipeline of their own to submit to), until
/// `shutdown` resolves. With `database_time`, `bus.clock` follows it (see
/// [`ServeConfig::database_time`]).
pub async fn project(
    store: EventStore,
    projections: Vec<Arc<dyn Projection>>,
    process_managers: Vec<ProcessManager>,
    bus: BusConfig,
    ticker: TickerConfig,
    database_time: Option<DatabaseTime>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), projections::ProjectionError> {
    let clock = bus.clock.clone();
    let (stop_following, following_stopped) = watch::channel(false);
    let following =
        database_time.map(|time| follow_database_time(&store, time, |_| {}, following_stopped));
    let bus = start_bus(&store, bus, Arc::new(Metrics::default()));
    let reactors = process_managers
        .into_iter()
        .map(|build| build(bus.clone(), store.clone()))
        .collect();
    let (stop_ticker, ticker_stopped) = watch::channel(false);
    let ticking = start_ticker(&store, &bus, clock, ticker, ticker_stopped);
    let stop = async move {
        shutdown.await;
        let _ = stop_ticker.send(true);
        let _ = ticking.await;
    };
    let result = projections::worker::run_until(&store, &projections, reactors, stop).await;
    bus.shutdown().await;
    let _ = stop_following.send(true);
    if let Some(following) = following {
        let _ = following.await;
    }
    result
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
