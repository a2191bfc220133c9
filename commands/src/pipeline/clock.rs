//! Where the pipeline reads the time it stamps on commands.
//!
//! The system clock in production; tests set their own to decide commands at
//! chosen times (renewals at a period's end, expiries) without waiting. A
//! tenant's stamps never go back whatever the clock says: the shard passes the
//! reading through `ChainHead::stamp`, which keeps them monotonic.

use chrono::{DateTime, Utc};
use std::fmt;
use std::sync::Arc;

/// A source of the current time, cheap to clone.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Arc::new(Utc::now))
    }

    /// A clock reading `now` (a test's settable time, a fixed instant).
    pub fn from_fn(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Clock")
    }
}
