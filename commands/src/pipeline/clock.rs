//! Where the pipeline reads the time it stamps on commands.
//!
//! The system clock in production; tests set their own to decide commands at
//! chosen times (renewals at a period's end, expiries) without waiting. A
//! tenant's stamps never go back whatever the clock says: the shard passes the
//! reading through `ChainHead::stamp`, which keeps them monotonic.
//!
//! Every process of a live ledger tells time by the database server's clock
//! ([`DatabaseTime`]): `serve` and `project` read PostgreSQL's clock before
//! they start and again every minute, and stamp and lease by that reading
//! moved on by their own monotonic clock. A host whose
//! clock runs minutes ahead would otherwise time escrow windows out and
//! expire holds early, and, since a tenant's stamps never go back, stamp
//! every later command of its tenants that far ahead on every server.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
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

/// What a process logs once it has read the database's clock first.
pub const FOLLOWING: &str = "the ledger tells time by the database server's clock";

/// How often a following process measures the database's clock again.
pub const DATABASE_TIME_EVERY: Duration = Duration::from_secs(60);

/// Past this distance from the database's clock a process logs a warning
/// (it follows the database's clock whatever the distance).
const OFFSET_WARNING: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Round trips one measurement takes on one connection, after one to warm
/// it; the fastest is kept (its midpoint is the nearest to the database's
/// reading).
const SAMPLES: usize = 3;

/// A measurement whose fastest round trip took longer is not taken (the
/// database or the network was busy; the last one stands): half of it is
/// how far off the reading may be.
const ROUND_TRIP_MAX: Duration = Duration::from_millis(100);

/// The database server's clock as last measured: its reading, the moment
/// of this process's monotonic clock it was taken at, and how far it was
/// from the host's clock then.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    database: DateTime<Utc>,
    at: Instant,
    offset: chrono::TimeDelta,
}

/// The database server's clock, as this process follows it: the last
/// reading moved on by the process's monotonic clock (so the host's clock
/// being stepped changes nothing), read again every minute. Cheap to clone;
/// every clock [`DatabaseTime::clock`] made shares it. `host` is only what
/// the offset is reported against.
#[derive(Clone, Debug)]
pub struct DatabaseTime {
    host: Clock,
    anchor: Arc<Mutex<Anchor>>,
}

/// Why the database's clock could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseTimeError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("the fastest round trip to the database took {0:?}")]
    Slow(Duration),
}

impl DatabaseTime {
    /// Reads the database's clock, against `host` (the system clock in a
    /// server; a test's own). A reading slower than [`ROUND_TRIP_MAX`] is
    /// tried again, up to `READINGS` in all, a tenth of a second apart;
    /// then the fastest is taken, with a warning (it is off by at most half
    /// its round trip).
    pub async fn measure(pool: &PgPool, host: Clock) -> Result<Self, sqlx::Error> {
        const READINGS: usize = 5;
        let mut best = read_anchor(pool, &host).await?;
        for _ in 1..READINGS {
            if best.0 <= ROUND_TRIP_MAX {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let read = read_anchor(pool, &host).await?;
            if read.0 < best.0 {
                best = read;
            }
        }
        let (round_trip, anchor) = best;
        if round_trip > ROUND_TRIP_MAX {
            tracing::warn!(
                round_trip_ms = round_trip.as_millis() as u64,
                "the database's clock was read over a slow round trip; it is read again every minute"
            );
        }
        log_offset(anchor.offset);
        tracing::info!(
            offset_ms = anchor.offset.num_milliseconds(),
            round_trip_us = round_trip.as_micros() as u64,
            "{FOLLOWING}"
        );
        Ok(Self {
            host,
            anchor: Arc::new(Mutex::new(anchor)),
        })
    }

    /// The last reading (a panic elsewhere while it was held leaves it
    /// whole: it is only ever replaced at once).
    fn anchor_held(&self) -> std::sync::MutexGuard<'_, Anchor> {
        self.anchor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn anchor(&self) -> Anchor {
        *self.anchor_held()
    }

    /// How far the database's clock was ahead of the host's (behind when
    /// negative) when last read.
    pub fn offset(&self) -> chrono::TimeDelta {
        self.anchor().offset
    }

    /// The database's time now.
    pub fn now(&self) -> DateTime<Utc> {
        let anchor = self.anchor();
        let elapsed = chrono::TimeDelta::from_std(anchor.at.elapsed()).unwrap_or_default();
        anchor
            .database
            .checked_add_signed(elapsed)
            .unwrap_or(anchor.database)
    }

    /// A clock reading [`DatabaseTime::now`].
    pub fn clock(&self) -> Clock {
        let time = self.clone();
        Clock::from_fn(move || time.now())
    }

    /// Reads the database's clock again, unless the reading is slower than
    /// [`ROUND_TRIP_MAX`] (the last one stands). Returns the offset. The
    /// reading replaces the last: the time may step back by the error of
    /// either (half a round trip) or the drift of a minute, which a
    /// tenant's stamps, never going back, do not follow.
    pub async fn remeasure(&self, pool: &PgPool) -> Result<chrono::TimeDelta, DatabaseTimeError> {
        let (round_trip, anchor) = read_anchor(pool, &self.host).await?;
        if round_trip > ROUND_TRIP_MAX {
            return Err(DatabaseTimeError::Slow(round_trip));
        }
        *self.anchor_held() = anchor;
        log_offset(anchor.offset);
        Ok(anchor.offset)
    }

    /// Reads the database's clock again every `every` until `stop` turns
    /// true (a reading under way is dropped), passing each offset to
    /// `measured` (the last one first); a failed reading (the database
    /// down, or too slow to tell the time by) keeps the last.
    pub async fn follow(
        self,
        pool: PgPool,
        every: Duration,
        measured: impl Fn(chrono::TimeDelta) + Send,
        mut stop: watch::Receiver<bool>,
    ) {
        measured(self.offset());
        loop {
            let reading = async {
                tokio::time::sleep(every).await;
                self.remeasure(&pool).await
            };
            tokio::select! {
                read = reading => match read {
                    Ok(offset) => measured(offset),
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the database's clock; keeping the last reading")
                    }
                },
                _ = stop.wait_for(|stopped| *stopped) => return,
            }
        }
    }
}

/// One reading of the database's clock: on one connection (no wait for a
/// pooled connection inside a round trip), warmed by one query first,
/// `SAMPLES` round trips reading `clock_timestamp()`, the fastest kept and
/// set against the midpoint of its round trip; with that round trip.
async fn read_anchor(pool: &PgPool, host: &Clock) -> Result<(Duration, Anchor), sqlx::Error> {
    const NOW: &str = "SELECT clock_timestamp()";
    let mut connection = pool.acquire().await?;
    sqlx::query_scalar::<_, DateTime<Utc>>(NOW)
        .fetch_one(&mut *connection)
        .await?;
    let mut best: Option<(Duration, Anchor)> = None;
    for _ in 0..SAMPLES {
        let before = Instant::now();
        let host_before = host.now();
        let database: DateTime<Utc> = sqlx::query_scalar(NOW).fetch_one(&mut *connection).await?;
        let round_trip = before.elapsed();
        let half = round_trip / 2;
        let host_at = host_before + chrono::TimeDelta::from_std(half).unwrap_or_default();
        let anchor = Anchor {
            database,
            at: before + half,
            offset: database - host_at,
        };
        if best.is_none_or(|(fastest, _)| round_trip < fastest) {
            best = Some((round_trip, anchor));
        }
    }
    best.ok_or_else(|| sqlx::Error::Protocol("no reading of the database's clock".into()))
}

fn log_offset(offset: chrono::TimeDelta) {
    if offset.abs() > OFFSET_WARNING {
        tracing::warn!(
            offset_ms = offset.num_milliseconds(),
            "this host's clock is off the database server's: the ledger tells time by the database's"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn the_database_s_time_is_its_last_reading_moved_on_by_the_monotonic_clock() {
        // The host's clock says 2030; the database read 2000-01-01 2 s ago.
        let read = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
        let host = Clock::from_fn(|| Utc.with_ymd_and_hms(2030, 6, 1, 0, 0, 0).unwrap());
        let time = DatabaseTime {
            host,
            anchor: Arc::new(Mutex::new(Anchor {
                database: read,
                at: Instant::now().checked_sub(Duration::from_secs(2)).unwrap(),
                offset: chrono::TimeDelta::zero(),
            })),
        };
        for now in [time.now(), time.clock().now()] {
            let since = now - read;
            assert!(
                since >= chrono::TimeDelta::seconds(2) && since < chrono::TimeDelta::seconds(3),
                "{now}"
            );
        }
    }
}
