//! Where a fault test may stop the pipeline dead, as a process killed
//! there would stop: between deciding a batch and appending it, or between
//! an append's commit and its answers. A server has no hook: the shards
//! never ask.

use std::fmt;
use std::sync::Arc;

/// A point of a batch's way through a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CrashPoint {
    /// The batch is decided; its append has not started.
    Decided,
    /// The batch's append committed; none of its commands is answered.
    Appended,
}

/// Asked at every [`CrashPoint`] a shard passes. When it answers `true`
/// the shard stops there for good, answering nothing more, until the
/// pipeline is aborted ([`CommandBus::abort`](super::CommandBus::abort)).
/// Appends already under way go on by themselves, as a dead process's
/// connections finish or roll back what they sent.
#[derive(Clone, Default)]
pub struct CrashHook(Option<Arc<dyn Fn(CrashPoint) -> bool + Send + Sync>>);

impl CrashHook {
    /// A hook asking `crashes` at every point.
    pub fn from_fn(crashes: impl Fn(CrashPoint) -> bool + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(crashes)))
    }

    /// Stops the calling shard at `point` for good when the hook says so:
    /// it waits here until aborted. Returns at once otherwise.
    pub(crate) async fn stop_if_crashing(&self, point: CrashPoint) {
        if self.0.as_ref().is_some_and(|crashes| crashes(point)) {
            std::future::pending::<()>().await;
        }
    }
}

impl fmt::Debug for CrashHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "CrashHook(set)"
        } else {
            "CrashHook(none)"
        })
    }
}
