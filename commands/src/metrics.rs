//! Prometheus metrics of the command pipeline and the HTTP API.

use projections::status::{ProjectionStatus, State};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// Request kind (`consume_quota`, ...).
    pub kind: String,
    /// Answer status (201, 429, ...).
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionLabels {
    pub projection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProjectionStateLabels {
    pub projection: String,
    pub state: String,
}

/// The pipeline's append attempts, summed: how many, the commands they
/// carried (a command retried after a failed attempt counts again) and
/// their time, each from the call to the store until the statement
/// returned (building its arrays and waiting for a pooled connection
/// included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AppendTotals {
    pub appends: u64,
    pub commands: u64,
    pub nanos: u64,
}

impl AppendTotals {
    /// What was recorded since `before`.
    pub fn since(self, before: AppendTotals) -> AppendTotals {
        AppendTotals {
            appends: self.appends.saturating_sub(before.appends),
            commands: self.commands.saturating_sub(before.commands),
            nanos: self.nanos.saturating_sub(before.nanos),
        }
    }

    /// Commands per append, on average; `None` without appends.
    pub fn commands_mean(self) -> Option<f64> {
        (self.appends > 0).then(|| self.commands as f64 / self.appends as f64)
    }

    /// Milliseconds per append, on average; `None` without appends.
    pub fn ms_mean(self) -> Option<f64> {
        (self.appends > 0).then(|| self.nanos as f64 / 1e6 / self.appends as f64)
    }
}

/// [`AppendTotals`] as they grow.
#[derive(Default)]
struct AppendCounters {
    appends: AtomicU64,
    commands: AtomicU64,
    nanos: AtomicU64,
}

/// Every metric the process exports, registered once.
pub struct Metrics {
    registry: Registry,
    commands: Family<CommandLabels, Counter>,
    command_seconds: Family<KindLabels, Histogram>,
    batch_commands: Histogram,
    batch_seconds: Histogram,
    /// The appends' sums (the histograms do not give theirs back).
    append_counters: AppendCounters,
    conflicts: Counter,
    projection_checkpoint: Family<ProjectionLabels, Gauge>,
    projection_events_behind: Family<ProjectionLabels, Gauge>,
    projection_seconds_behind: Family<ProjectionLabels, Gauge<f64, AtomicU64>>,
    projection_state: Family<ProjectionStateLabels, Gauge>,
    /// How far the replica reads go to is behind the primary (0 on the
    /// primary itself, NaN when the replica cannot be asked).
    replica_replay_lag: Gauge<f64, AtomicU64>,
    /// How far the database server's clock is ahead of this host's, which
    /// the pipeline and the ticker follow.
    clock_offset: Gauge<f64, AtomicU64>,
    /// Bumped after every refresh of the projection gauges.
    projections_refreshed: watch::Sender<u64>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("ledger");
        let commands = Family::<CommandLabels, Counter>::default();
        registry.register(
            "commands",
            "Commands answered, by kind and status",
            commands.clone(),
        );
        let command_seconds = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register(
            "command_duration_seconds",
            "Time from submission to answer of a command",
            command_seconds.clone(),
        );
        let batch_commands = Histogram::new(exponential_buckets(1.0, 2.0, 10));
        registry.register(
            "append_batch_commands",
            "Commands appended per database statement",
            batch_commands.clone(),
        );
        let batch_seconds = Histogram::new(exponential_buckets(0.0002, 2.0, 14));
        registry.register(
            "append_batch_duration_seconds",
            "Time of one append statement",
            batch_seconds.clone(),
        );
        let conflicts = Counter::default();
        registry.register(
            "append_conflicts",
            "Appends retried because another writer appended first",
            conflicts.clone(),
        );
        let projection_checkpoint = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "projection_checkpoint",
            "Events applied by the projection, summed over tenants",
            projection_checkpoint.clone(),
        );
        let projection_events_behind = Family::<ProjectionLabels, Gauge>::default();
        registry.register(
            "projection_events_behind",
            "Events appended but not yet applied by the projection",
            projection_events_behind.clone(),
        );
        let projection_seconds_behind =
            Family::<ProjectionLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "projection_seconds_behind",
            "Age of the oldest event the projection has not applied",
            projection_seconds_behind.clone(),
        );
        let projection_state = Family::<ProjectionStateLabels, Gauge>::default();
        registry.register(
            "projection_state",
            "1 for the projection's current state (live, rebuilding, failed)",
            projection_state.clone(),
        );
        let replica_replay_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "replica_replay_lag_seconds",
            "How far the replica the reads go to is behind the primary (0 when reads go to the primary, NaN when the replica cannot be asked)",
            replica_replay_lag.clone(),
        );
        let clock_offset = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "clock_offset_seconds",
            "How far the database server's clock is ahead of this host's (negative: behind), as last measured; the ledger stamps commands and tells due time by the database's clock",
            clock_offset.clone(),
        );
        Self {
            registry,
            commands,
            command_seconds,
            batch_commands,
            batch_seconds,
            append_counters: AppendCounters::default(),
            conflicts,
            projection_checkpoint,
            projection_events_behind,
            projection_seconds_behind,
            projection_state,
            replica_replay_lag,
            clock_offset,
            projections_refreshed: watch::channel(0).0,
        }
    }
}

impl Metrics {
    /// Counts an answered command.
    pub fn command_answered(&self, kind: &str, status: u16, elapsed: Duration) {
        self.commands
            .get_or_create(&CommandLabels {
                kind: kind.to_string(),
                status,
            })
            .inc();
        self.command_seconds
            .get_or_create(&KindLabels {
                kind: kind.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one append statement.
    pub fn batch_appended(&self, commands: usize, elapsed: Duration) {
        self.batch_commands.observe(commands as f64);
        self.batch_seconds.observe(elapsed.as_secs_f64());
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let counters = &self.append_counters;
        counters.appends.fetch_add(1, Ordering::Relaxed);
        counters
            .commands
            .fetch_add(commands as u64, Ordering::Relaxed);
        counters.nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// The append attempts recorded so far. Each sum is read on its own:
    /// an append finishing meanwhile may be in one and not yet in another,
    /// so read them where the pipeline is quiet.
    pub fn append_totals(&self) -> AppendTotals {
        let counters = &self.append_counters;
        AppendTotals {
            appends: counters.appends.load(Ordering::Relaxed),
            commands: counters.commands.load(Ordering::Relaxed),
            nanos: counters.nanos.load(Ordering::Relaxed),
        }
    }

    /// Counts a conflict that led to a retry.
    pub fn conflict(&self) {
        self.conflicts.inc();
    }

    /// Conflicts counted so far.
    pub fn conflicts(&self) -> u64 {
        self.conflicts.get()
    }

    /// Counts refreshes of the projection gauges, so that callers can wait
    /// for the next one.
    pub fn projections_refreshed(&self) -> watch::Receiver<u64> {
        self.projections_refreshed.subscribe()
    }

    /// Records the projections' status (by the timer that refreshes them).
    /// Sets the replica's replay lag (`None`: reads go to the primary; NaN:
    /// the replica cannot be asked).
    pub fn set_replica_lag(&self, lag_seconds: Option<f64>) {
        self.replica_replay_lag.set(lag_seconds.unwrap_or(0.0));
    }

    /// Sets how far the database server's clock is ahead of this host's.
    pub fn set_clock_offset(&self, offset: chrono::TimeDelta) {
        let seconds = offset.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        self.clock_offset.set(seconds);
    }

    pub fn set_projections(&self, statuses: &[ProjectionStatus]) {
        for status in statuses {
            let labels = ProjectionLabels {
                projection: status.name.clone(),
            };
            self.projection_checkpoint
                .get_or_create(&labels)
                .set(status.checkpoint);
            self.projection_events_behind
                .get_or_create(&labels)
                .set(status.events_behind);
            self.projection_seconds_behind
                .get_or_create(&labels)
                .set(status.seconds_behind);
            for state in [State::Live, State::Rebuilding, State::Failed] {
                let labels = ProjectionStateLabels {
                    projection: status.name.clone(),
                    state: state.as_str().to_string(),
                };
                self.projection_state
                    .get_or_create(&labels)
                    .set(i64::from(status.state == state));
            }
        }
        self.projections_refreshed
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
