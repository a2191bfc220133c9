//! Long-running workers: one task per projection and per reactor, woken
//! promptly after appends and stopped cleanly on shutdown.
//!
//! Wake-ups come from this process's appends (the store's append signal), from
//! other processes (`LISTEN ledger_events`, which `notify_appends` feeds), and
//! from a poll interval as the fallback.

use crate::reactor::{react_catch_up, Reactor};
use crate::runtime::{catch_up, catch_up_all, Projection, ProjectionError, BATCH_EVENTS_MAX};
use crate::status::{set_state, State};
use eventstore::EventStore;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Channel of the cross-process append notification.
pub const EVENTS_CHANNEL: &str = "ledger_events";

/// How often an idle worker looks for work without being woken.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Shortest gap between two cross-process notifications from one process.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(10);

/// Pause after a failed batch before the worker tries again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// After a wake-up, how long a worker lets further appends gather before it
/// reads: fewer, larger batches, at the cost of this much read latency.
const GATHER: Duration = Duration::from_millis(5);

/// Running workers.
pub struct Workers {
    shutdown: watch::Sender<bool>,
    progress: watch::Sender<u64>,
    handles: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts one worker for all projections (each batch reads the events
    /// once for all of them), one per reactor, and a listener for other
    /// processes' appends.
    pub fn start(
        store: &EventStore,
        projections: Vec<Arc<dyn Projection>>,
        reactors: Vec<Arc<dyn Reactor>>,
    ) -> Self {
        let (shutdown, _) = watch::channel(false);
        let (progress, _) = watch::channel(0u64);
        let (wake, _) = watch::channel(0u64);
        let wake = Arc::new(wake);
        let mut handles = Vec::new();
        handles.push(tokio::spawn(forward_local(
            store.subscribe_appended(),
            wake.clone(),
            shutdown.subscribe(),
        )));
        handles.push(tokio::spawn(listen(
            store.pool().clone(),
            wake.clone(),
            shutdown.subscribe(),
        )));
        if !projections.is_empty() {
            let work = Work::Projections {
                projections,
                failing: HashSet::new(),
            };
            handles.push(tokio::spawn(run(
                store.pool().clone(),
                work,
                wake.subscribe(),
                progress.clone(),
                shutdown.subscribe(),
            )));
        }
        for reactor in reactors {
            let pool = store.pool().clone();
            let work = Work::Reactor(reactor);
            handles.push(tokio::spawn(run(
                pool,
                work,
                wake.subscribe(),
                progress.clone(),
                shutdown.subscribe(),
            )));
        }
        Self {
            shutdown,
            progress,
            handles,
        }
    }

    /// Bumped after every batch a worker of this process commits.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Stops the workers after their current batch.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for handle in self.handles {
            let _ = handle.await;
        }
    }
}

enum Work {
    /// Every projection, in one group; a projection whose batch fails is
    /// taken out of the group and retried alone until it succeeds, so one
    /// failing projection does not hold the others back.
    Projections {
        projections: Vec<Arc<dyn Projection>>,
        failing: HashSet<&'static str>,
    },
    Reactor(Arc<dyn Reactor>),
}

impl Work {
    async fn catch_up(&mut self, pool: &PgPool) -> Result<u64, ProjectionError> {
        match self {
            Self::Projections {
                projections,
                failing,
            } => {
                let healthy: Vec<&dyn Projection> = projections
                    .iter()
                    .filter(|projection| !failing.contains(projection.name()))
                    .map(|projection| projection.as_ref())
                    .collect();
                let mut applied = 0;
                if !healthy.is_empty() {
                    match catch_up_all(pool, &healthy, None, BATCH_EVENTS_MAX).await {
                        Ok(events) => applied += events,
                        Err(ProjectionError::Apply {
                            projection,
                            tenant_id,
                            error,
                        }) => {
                            if let Some(failed) = projections
                                .iter()
                                .find(|candidate| candidate.name() == projection)
                            {
                                failing.insert(failed.name());
                            }
                            return Err(ProjectionError::Apply {
                                projection,
                                tenant_id,
                                error,
                            });
                        }
                        Err(other) => return Err(other),
                    }
                }
                let retrying: Vec<Arc<dyn Projection>> = projections
                    .iter()
                    .filter(|projection| failing.contains(projection.name()))
                    .cloned()
                    .collect();
                for projection in retrying {
                    match catch_up(pool, projection.as_ref(), None, BATCH_EVENTS_MAX).await {
                        Ok(events) => {
                            applied += events;
                            failing.remove(projection.name());
                            let _ = set_state(pool, projection.name(), State::Live, None).await;
                        }
                        Err(error) => {
                            let _ = set_state(
                                pool,
                                projection.name(),
                                State::Failed,
                                Some(&error.to_string()),
                            )
                            .await;
                        }
                    }
                }
                Ok(applied)
            }
            Self::Reactor(reactor) => react_catch_up(pool, reactor.as_ref()).await,
        }
    }

    /// Records a failure (the projection named by an apply error, or the reactor).
    async fn record_failure(&self, pool: &PgPool, error: &ProjectionError) {
        let name = match (self, error) {
            (_, ProjectionError::Apply { projection, .. }) => projection.clone(),
            (Self::Reactor(reactor), _) => reactor.name().to_string(),
            (Self::Projections { .. }, _) => return,
        };
        let _ = set_state(pool, &name, State::Failed, Some(&error.to_string())).await;
    }

    /// Marks a recovered reactor live again.
    async fn record_recovery(&self, pool: &PgPool) {
        if let Self::Reactor(reactor) = self {
            let _ = set_state(pool, reactor.name(), State::Live, None).await;
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Projections { .. } => "projections",
            Self::Reactor(reactor) => reactor.name(),
        }
    }
}

async fn run(
    pool: PgPool,
    mut work: Work,
    mut wake: watch::Receiver<u64>,
    progress: watch::Sender<u64>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut failed = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Mark the wake-up seen before working, so an append during the
        // batch wakes the next round.
        wake.borrow_and_update();
        let pause = match work.catch_up(&pool).await {
            Ok(applied) => {
                if failed {
                    failed = false;
                    work.record_recovery(&pool).await;
                }
                if applied > 0 {
                    progress.send_modify(|count| *count = count.wrapping_add(1));
                }
                POLL_INTERVAL
            }
            Err(error) => {
                tracing::error!(worker = work.name(), %error, "batch failed");
                if !error_is_unavailable(&error) {
                    failed = true;
                    work.record_failure(&pool, &error).await;
                }
                RETRY_PAUSE
            }
        };
        tokio::select! {
            _ = wake.changed() => {
                tokio::select! {
                    _ = tokio::time::sleep(GATHER) => {}
                    _ = shutdown.changed() => return,
                }
            }
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

fn error_is_unavailable(error: &ProjectionError) -> bool {
    matches!(error, ProjectionError::Store(store) if store.is_unavailable())
}

/// Turns this process's appends into wake-ups.
async fn forward_local(
    mut appended: watch::Receiver<u64>,
    wake: Arc<watch::Sender<u64>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            changed = appended.changed() => {
                if changed.is_err() {
                    return;
                }
                wake.send_modify(|count| *count = count.wrapping_add(1));
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// Turns other processes' appends (`NOTIFY ledger_events`) into wake-ups;
/// reconnects after losing the database.
async fn listen(pool: PgPool, wake: Arc<watch::Sender<u64>>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let connected = match PgListener::connect_with(&pool).await {
            Ok(mut listener) => listener.listen(EVENTS_CHANNEL).await.map(|()| listener),
            Err(error) => Err(error),
        };
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(error) => {
                tracing::debug!(%error, "cannot listen for appends; polling");
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(RETRY_PAUSE) => continue,
                }
            }
        };
        loop {
            tokio::select! {
                received = listener.try_recv() => match received {
                    Ok(Some(_)) => wake.send_modify(|count| *count = count.wrapping_add(1)),
                    // The connection was lost; wake (work may have been missed) and reconnect.
                    Ok(None) | Err(_) => {
                        wake.send_modify(|count| *count = count.wrapping_add(1));
                        break;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// Forwards this process's appends to other processes as `NOTIFY
/// ledger_events`, at most one per [`NOTIFY_INTERVAL`]. Runs until shutdown.
/// (Notifying inside the append would serialise every commit on the
/// notification queue lock.)
pub async fn notify_appends(store: EventStore, mut shutdown: watch::Receiver<bool>) {
    let mut appended = store.subscribe_appended();
    loop {
        tokio::select! {
            changed = appended.changed() => {
                if changed.is_err() {
                    return;
                }
                appended.borrow_and_update();
                if let Err(error) = sqlx::query("SELECT pg_notify($1, '')").bind(EVENTS_CHANNEL).execute(store.pool()).await {
                    tracing::debug!(%error, "append notification not sent");
                }
                tokio::time::sleep(NOTIFY_INTERVAL).await;
            }
            _ = shutdown.changed() => return,
        }
    }
}
