//! Prometheus metrics of the command pipeline and the HTTP API.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::time::Duration;

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

/// Every metric the process exports, registered once.
pub struct Metrics {
    registry: Registry,
    commands: Family<CommandLabels, Counter>,
    command_seconds: Family<KindLabels, Histogram>,
    batch_commands: Histogram,
    batch_seconds: Histogram,
    conflicts: Counter,
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
        Self {
            registry,
            commands,
            command_seconds,
            batch_commands,
            batch_seconds,
            conflicts,
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
    }

    /// Counts a conflict that led to a retry.
    pub fn conflict(&self) {
        self.conflicts.inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}
