//! Where the pipeline reads the time it stamps on commands.
//!
//! The system clock in production; tests set their own to decide commands at
//! chosen times (renewals at a period's end, expiries) without waiting. A
//! tenant's stamps never go back whatever the clock says: the shard passes the
//! reading through `ChainHead::stamp`, which keeps them monotonic.
//!
//! Every process of a live ledger tells time by the database server's clock
//! ([`DatabaseTime`]): `serve` and `project` measure how far the host's
//! clock is from PostgreSQL's before they start and again every minute, and
//! stamp and lease by the system clock moved by that much. A host whose
//! clock runs minutes ahead would otherwise time escrow windows out and
//! expire holds early, and, since a tenant's stamps never go back, stamp
//! every later command of its tenants that far ahead on every server.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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

/// How often a following process measures the database's clock again.
pub const DATABASE_TIME_EVERY: Duration = Duration::from_secs(60);

/// Past this distance from the database's clock a process logs a warning
/// (it follows the database's clock whatever the distance).
const OFFSET_WARNING: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Round trips one measurement takes; the fastest one is kept (its midpoint
/// is the nearest to the database's reading).
const SAMPLES: usize = 3;

/// A host's clock (`base`) and how far the database server's clock is ahead
/// of it (behind when negative), as last measured; cheap to clone, shared
/// by every clock [`DatabaseTime::clock`] made.
#[derive(Clone, Debug, Default)]
pub struct DatabaseTime {
    base: Clock,
    /// Microseconds.
    offset: Arc<AtomicI64>,
}

impl DatabaseTime {
    /// Measures the database's clock against `base` once.
    pub async fn measure(pool: &PgPool, base: Clock) -> Result<Self, sqlx::Error> {
        let time = Self {
            base,
            offset: Arc::default(),
        };
        time.remeasure(pool).await?;
        Ok(time)
    }

    /// The offset last measured.
    pub fn offset(&self) -> chrono::TimeDelta {
        chrono::TimeDelta::microseconds(self.offset.load(Ordering::Relaxed))
    }

    /// The base clock moved by the offset, as it is measured again.
    pub fn clock(&self) -> Clock {
        let time = self.clone();
        Clock::from_fn(move || time.base.now() + time.offset())
    }

    /// Measures again: `SAMPLES` round trips reading `clock_timestamp()`,
    /// the one with the shortest round trip taken, its reading set against
    /// the midpoint of the base clock's readings around it. Returns the
    /// offset.
    pub async fn remeasure(&self, pool: &PgPool) -> Result<chrono::TimeDelta, sqlx::Error> {
        let mut best: Option<(chrono::TimeDelta, chrono::TimeDelta)> = None;
        for _ in 0..SAMPLES {
            let before = self.base.now();
            let database: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
                .fetch_one(pool)
                .await?;
            let after = self.base.now();
            let round_trip = after - before;
            let offset = database - (before + round_trip / 2);
            if best.is_none_or(|(fastest, _)| round_trip < fastest) {
                best = Some((round_trip, offset));
            }
        }
        let offset = best.map(|(_, offset)| offset).unwrap_or_default();
        let micros = offset.num_microseconds().unwrap_or(i64::MAX);
        self.offset.store(micros, Ordering::Relaxed);
        if offset.abs() > OFFSET_WARNING {
            tracing::warn!(
                offset_ms = offset.num_milliseconds(),
                "this host's clock is off the database server's: the ledger tells time by the database's"
            );
        }
        Ok(offset)
    }

    /// Measures again every `every` until `stop` turns true, passing each
    /// offset to `measured` (the last one first); a failed measurement (the
    /// database down) keeps the last offset.
    pub async fn follow(
        self,
        pool: PgPool,
        every: Duration,
        measured: impl Fn(chrono::TimeDelta) + Send,
        mut stop: watch::Receiver<bool>,
    ) {
        measured(self.offset());
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
            match self.remeasure(&pool).await {
                Ok(offset) => measured(offset),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the database's clock; keeping the last offset")
                }
            }
        }
    }
}
