//! Long-running workers: one task per projection and per reactor, woken
//! promptly after appends and stopped cleanly on shutdown.
//!
//! Wake-ups come from this process's appends (the store's append signal), from
//! other processes (`LISTEN ledger_events`, which `notify_appends` feeds), and
//! from a poll interval as the fallback.

use crate::reactor::{react_catch_up_with, Reactor};
use crate::runtime::{
    catch_up_holding_back, catch_up_with, ApplyError, Limits, Projection, ProjectionError,
};
use crate::status::{set_state, State};
use aggregates::TenantId;
use eventstore::EventStore;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Channel of the cross-process append notification.
pub const EVENTS_CHANNEL: &str = "ledger_events";

/// How often an idle worker looks for work without being woken.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Shortest gap between two cross-process notifications from one process.
const NOTIFY_INTERVAL: Duration = Duration::from_millis(10);

/// A partition held back at an event its projection refuses is retried
/// after this many poll intervals (5 s by default).
const HELD_RETRY_POLLS: u32 = 5;

/// Pause after a failed batch before the worker tries again.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// After a wake-up, how long a worker lets further appends gather before it
/// reads: fewer, larger batches, at the cost of this much read latency.
const GATHER: Duration = Duration::from_millis(25);

/// Running workers.
pub struct Workers {
    shutdown: watch::Sender<bool>,
    progress: watch::Sender<u64>,
    handles: Vec<JoinHandle<()>>,
    /// The rebuild of stale projections started with the workers, if any.
    stale_rebuild: Option<JoinHandle<()>>,
}

impl Workers {
    /// Registers the projections and reactors, starts rebuilding the
    /// projections whose version changed (in the background: the live tables
    /// serve meanwhile; [`Workers::stop`] stops it too), and starts the
    /// workers.
    pub async fn start_registered(
        store: &EventStore,
        projections: Vec<Arc<dyn Projection>>,
        reactors: Vec<Arc<dyn Reactor>>,
    ) -> Result<Self, ProjectionError> {
        let stale = crate::status::register(store.pool(), &projections).await?;
        let names: Vec<&str> = reactors.iter().map(|reactor| reactor.name()).collect();
        crate::status::register_reactors(store.pool(), &names).await?;
        let mut workers = Self::start(store, projections, reactors);
        if !stale.is_empty() {
            let pool = store.pool().clone();
            workers.stale_rebuild = Some(tokio::spawn(rebuild_stale(
                pool,
                stale,
                workers.shutdown.subscribe(),
            )));
        }
        Ok(workers)
    }

    /// Starts one worker for all projections (each batch reads the events
    /// once for all of them), one per reactor, and a listener for other
    /// processes' appends.
    pub fn start(
        store: &EventStore,
        projections: Vec<Arc<dyn Projection>>,
        reactors: Vec<Arc<dyn Reactor>>,
    ) -> Self {
        Self::start_polling(store, projections, reactors, POLL_INTERVAL)
    }

    /// [`Workers::start`], idle workers looking for work every
    /// `poll_interval` when nothing wakes them (a test makes it long, so that
    /// only a wake-up can move them).
    pub fn start_polling(
        store: &EventStore,
        projections: Vec<Arc<dyn Projection>>,
        reactors: Vec<Arc<dyn Reactor>>,
        poll_interval: Duration,
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
            let work = Work::Projections(ProjectionWork::new(
                projections,
                poll_interval * HELD_RETRY_POLLS,
            ));
            handles.push(tokio::spawn(run(
                store.pool().clone(),
                work,
                wake.subscribe(),
                progress.clone(),
                shutdown.subscribe(),
                poll_interval,
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
                poll_interval,
            )));
        }
        Self {
            shutdown,
            progress,
            handles,
            stale_rebuild: None,
        }
    }

    /// Bumped each time a worker of this process has caught up after
    /// applying events (after the last batch of a round, before it idles),
    /// and after a failed round, which may have applied other tenants'.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.progress.subscribe()
    }

    /// Waits until the rebuild of stale projections started with the
    /// workers has ended (at once when there was none). Whether it swapped
    /// the tables in or failed shows in the projection's status.
    pub async fn stale_rebuilt(&mut self) {
        if let Some(handle) = self.stale_rebuild.take() {
            let _ = handle.await;
        }
    }

    /// Stops the workers after their current batch (a rebuild of stale
    /// projections in progress is abandoned: its shadow tables are dropped
    /// by the next rebuild, the live tables were never touched).
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for handle in self.handles.into_iter().chain(self.stale_rebuild) {
            let _ = handle.await;
        }
    }
}

enum Work {
    Projections(ProjectionWork),
    Reactor(Arc<dyn Reactor>),
}

/// Every projection, in one group; a projection whose batch fails is taken
/// out of the group and retried alone until it succeeds, so one failing
/// projection does not hold the others back. A partition (tenant,
/// projection) held back at an event the projection refuses is left alone
/// for a while and then retried, so that it does not send every batch of
/// its projection through the tenant-by-tenant fallback; while any is held,
/// its projection stays `failed`.
struct ProjectionWork {
    projections: Vec<Arc<dyn Projection>>,
    failing: HashSet<&'static str>,
    /// Partitions held back, and when each is retried.
    held: HashMap<(TenantId, &'static str), Instant>,
    /// How long a partition is left alone before it is retried.
    retry_held: Duration,
}

impl ProjectionWork {
    fn new(projections: Vec<Arc<dyn Projection>>, retry_held: Duration) -> Self {
        Self {
            projections,
            failing: HashSet::new(),
            held: HashMap::new(),
            retry_held,
        }
    }

    /// The projection's own name (the error carries a copy).
    fn static_name(&self, name: &str) -> Option<&'static str> {
        self.projections
            .iter()
            .find(|projection| projection.name() == name)
            .map(|projection| projection.name())
    }

    /// Leaves the partition an apply error names alone until its retry. A
    /// hole in a tenant's seqs stops every projection behind it, so each of
    /// those is held back with it, in the same round, and marked failed
    /// (before the one the error names, which the caller marks).
    async fn hold(&mut self, pool: &PgPool, error: &ProjectionError) {
        let ProjectionError::Apply {
            projection,
            tenant_id,
            error: apply_error,
        } = error
        else {
            return;
        };
        let retry_at = Instant::now() + self.retry_held;
        if let ApplyError::Missing { tenant_seq, found } = apply_error {
            let names: Vec<&'static str> = self.projections.iter().map(|p| p.name()).collect();
            // Unread (the database failing): only the one named is held;
            // each other is held by the round in which it meets the hole.
            let past = past_seq(pool, *tenant_id, &names, *tenant_seq)
                .await
                .unwrap_or_else(|_| names.iter().map(|name| name.to_string()).collect());
            for name in names {
                // One held already (at an event it refused, before the
                // hole) keeps its own retry and error.
                if past.iter().any(|past| past == name)
                    || name == projection
                    || self.held.contains_key(&(*tenant_id, name))
                {
                    continue;
                }
                self.held.insert((*tenant_id, name), retry_at);
                let behind = ProjectionError::Apply {
                    projection: name.to_string(),
                    tenant_id: *tenant_id,
                    error: ApplyError::Missing {
                        tenant_seq: *tenant_seq,
                        found: *found,
                    },
                };
                let message = behind.to_string();
                let _ = set_state(pool, name, State::Failed, Some(&message)).await;
            }
        }
        if let Some(name) = self.static_name(projection) {
            self.held.insert((*tenant_id, name), retry_at);
        }
    }

    fn holds(&self, name: &str) -> bool {
        self.held.keys().any(|(_, held)| *held == name)
    }

    /// Applies what lags, batch by batch, until caught up or `stop`.
    async fn catch_up(
        &mut self,
        pool: &PgPool,
        stop: impl Fn() -> bool + Copy,
    ) -> Result<u64, ProjectionError> {
        let now = Instant::now();
        // Partitions due for their retry go back into the batches; their
        // projections come back to `live` if the round applies them.
        let mut retried: HashSet<&'static str> = HashSet::new();
        self.held.retain(|(_, name), retry_at| {
            let keep = *retry_at > now;
            if !keep {
                retried.insert(*name);
            }
            keep
        });
        let held_back: Vec<(TenantId, &str)> = self.held.keys().copied().collect();
        let healthy: Vec<&dyn Projection> = self
            .projections
            .iter()
            .filter(|projection| !self.failing.contains(projection.name()))
            .map(|projection| projection.as_ref())
            .collect();
        let mut applied = 0;
        if !healthy.is_empty() {
            let caught_up =
                catch_up_holding_back(pool, &healthy, None, Limits::default(), stop, &held_back)
                    .await;
            match caught_up {
                Ok(events) => {
                    applied += events;
                    for name in retried {
                        if !self.holds(name) && !self.failing.contains(name) {
                            let _ = set_state(pool, name, State::Live, None).await;
                        }
                    }
                }
                Err(error) => {
                    if let ProjectionError::Apply { projection, .. } = &error {
                        if let Some(name) = self.static_name(projection) {
                            self.failing.insert(name);
                        }
                    }
                    self.hold(pool, &error).await;
                    return Err(error);
                }
            }
        }
        let retrying: Vec<Arc<dyn Projection>> = self
            .projections
            .iter()
            .filter(|projection| self.failing.contains(projection.name()))
            .cloned()
            .collect();
        for projection in retrying {
            let alone = [projection.as_ref()];
            let caught_up =
                catch_up_holding_back(pool, &alone, None, Limits::default(), stop, &held_back)
                    .await;
            match caught_up {
                Ok(events) => {
                    applied += events;
                    self.failing.remove(projection.name());
                    if !self.holds(projection.name()) {
                        let _ = set_state(pool, projection.name(), State::Live, None).await;
                    }
                }
                Err(error) => {
                    self.hold(pool, &error).await;
                    let message = error.to_string();
                    let _ = set_state(pool, projection.name(), State::Failed, Some(&message)).await;
                }
            }
        }
        Ok(applied)
    }
}

/// Those of `names` whose checkpoint for `tenant_id` is at or past
/// `tenant_seq`.
async fn past_seq(
    pool: &PgPool,
    tenant_id: TenantId,
    names: &[&str],
    tenant_seq: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT projection FROM projection_checkpoints \
         WHERE tenant_id = $1 AND projection = ANY($2) AND last_seq >= $3",
    )
    .bind(tenant_id.as_uuid())
    .bind(names)
    .bind(tenant_seq)
    .fetch_all(pool)
    .await
}

impl Work {
    /// Applies what lags, batch by batch, until a batch reaches the heads or
    /// `shutdown`; the run loop then lets further appends gather.
    async fn catch_up(
        &mut self,
        pool: &PgPool,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<u64, ProjectionError> {
        let stop = || *shutdown.borrow();
        match self {
            Self::Projections(work) => work.catch_up(pool, stop).await,
            Self::Reactor(reactor) => react_catch_up_with(pool, reactor.as_ref(), stop).await,
        }
    }

    /// Records a failure: on the projection named by an apply error (an
    /// event refused, a hole in a tenant's seqs), on the reactor, or on
    /// every projection of the group when the batch failed for another
    /// reason (a refused checkpoint).
    async fn record_failure(&self, pool: &PgPool, error: &ProjectionError) {
        let names: Vec<String> = match (self, error) {
            (_, ProjectionError::Apply { projection, .. }) => vec![projection.clone()],
            (Self::Reactor(reactor), _) => vec![reactor.name().to_string()],
            (Self::Projections(work), _) => work
                .projections
                .iter()
                .map(|projection| projection.name().to_string())
                .collect(),
        };
        for name in names {
            let _ = set_state(pool, &name, State::Failed, Some(&error.to_string())).await;
        }
    }

    /// Marks the reactor, or the projections neither failing on their own
    /// nor holding a partition back, live again after a failed round.
    async fn record_recovery(&self, pool: &PgPool) {
        match self {
            Self::Reactor(reactor) => {
                let _ = set_state(pool, reactor.name(), State::Live, None).await;
            }
            Self::Projections(work) => {
                for projection in &work.projections {
                    let name = projection.name();
                    if !work.failing.contains(name) && !work.holds(name) {
                        let _ = set_state(pool, name, State::Live, None).await;
                    }
                }
            }
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Projections(_) => "projections",
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
    poll_interval: Duration,
) {
    let mut failed = false;
    loop {
        if *shutdown.borrow() {
            return;
        }
        // Mark the wake-up seen before working, so an append during the
        // batch wakes the next round.
        wake.borrow_and_update();
        let pause = match work.catch_up(&pool, &shutdown).await {
            Ok(applied) => {
                if failed {
                    failed = false;
                    work.record_recovery(&pool).await;
                }
                if applied > 0 {
                    progress.send_modify(|count| *count = count.wrapping_add(1));
                }
                poll_interval
            }
            Err(error) => {
                tracing::error!(worker = work.name(), %error, "batch failed");
                // A round that failed for one tenant may have applied
                // others: their waiting reads look again now rather than
                // at their next poll.
                progress.send_modify(|count| *count = count.wrapping_add(1));
                if !error_is_unavailable(&error) {
                    failed = true;
                    work.record_failure(&pool, &error).await;
                }
                // The whole pause, whatever is appended meanwhile: a batch
                // that fails is not retried at every append.
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_PAUSE) => continue,
                    _ = shutdown.changed() => return,
                }
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

/// Rebuilds `stale` projections (built by another version) unless shutdown
/// comes first.
async fn rebuild_stale(
    pool: PgPool,
    stale: Vec<Arc<dyn Projection>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let names: Vec<&str> = stale.iter().map(|projection| projection.name()).collect();
    tracing::info!(projections = ?names, "rebuilding stale projections");
    let projections: Vec<&dyn Projection> = stale.iter().map(AsRef::as_ref).collect();
    tokio::select! {
        result = crate::rebuild::rebuild_many(&pool, &projections, true) => match result {
            Ok(report) => tracing::info!(
                projections = ?report.projections,
                events = report.events,
                seconds = report.seconds,
                "rebuilt"
            ),
            Err(error) => tracing::error!(projections = ?names, %error, "rebuild failed"),
        },
        _ = shutdown.changed() => {
            tracing::info!(projections = ?names, "rebuild abandoned at shutdown");
        }
    }
}

/// What `ledger project --once` did: events applied per projection.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct OnceReport {
    pub applied: std::collections::BTreeMap<String, u64>,
}

impl OnceReport {
    /// The report as `ledger project --once` prints it: a line per
    /// projection.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, events) in &self.applied {
            out.push_str(&format!("{name}: applied {events} events\n"));
        }
        out
    }
}

/// Runs the workers of `projections` and `reactors` (registering them and
/// rebuilding the stale ones first, see [`Workers::start_registered`]) next
/// to [`notify_appends`], until `shutdown` resolves; then stops them:
/// `ledger project`.
pub async fn run_until(
    store: &EventStore,
    projections: &[Arc<dyn Projection>],
    reactors: Vec<Arc<dyn Reactor>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ProjectionError> {
    let (stop, stopped) = watch::channel(false);
    let notifier = tokio::spawn(notify_appends(store.clone(), stopped));
    let workers = Workers::start_registered(store, projections.to_vec(), reactors).await?;
    shutdown.await;
    workers.stop().await;
    let _ = stop.send(true);
    let _ = notifier.await;
    Ok(())
}

/// One round of a reactor's worker: reacts to what lags, and records the
/// outcome in the registry as the worker does (state `failed` with the
/// error when the round failed for another reason than an unavailable
/// database; `live` when it went through). The worker's single step, for
/// tests and one-off runs.
pub async fn react_round(pool: &PgPool, reactor: Arc<dyn Reactor>) -> Result<u64, ProjectionError> {
    let mut work = Work::Reactor(reactor);
    let (_never, running) = watch::channel(false);
    match work.catch_up(pool, &running).await {
        Ok(applied) => {
            work.record_recovery(pool).await;
            Ok(applied)
        }
        Err(error) => {
            if !error_is_unavailable(&error) {
                work.record_failure(pool, &error).await;
            }
            Err(error)
        }
    }
}

/// Registers the projections, rebuilds those built by another version, and
/// catches every one up: `ledger project --once`.
pub async fn run_once(
    pool: &PgPool,
    projections: &[Arc<dyn Projection>],
    quiet: bool,
) -> Result<OnceReport, ProjectionError> {
    let stale = crate::status::register(pool, projections).await?;
    let stale: Vec<&dyn Projection> = stale.iter().map(AsRef::as_ref).collect();
    crate::rebuild::rebuild_many(pool, &stale, quiet).await?;
    let mut applied = std::collections::BTreeMap::new();
    for projection in projections {
        let alone = [projection.as_ref()];
        let events = catch_up_with(pool, &alone, None, Limits::default(), || false).await?;
        applied.insert(projection.name().to_string(), events);
    }
    Ok(OnceReport { applied })
}

pub(crate) fn error_is_unavailable(error: &ProjectionError) -> bool {
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
