//! Reading read tables on behalf of a tenant, isolated by row-level security,
//! and waiting for read-your-writes.

use aggregates::TenantId;
use sqlx::{PgPool, Postgres, Transaction};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use uuid::Uuid;

/// Default bound of a `min_seq` wait.
pub const MIN_SEQ_WAIT_DEFAULT: Duration = Duration::from_secs(5);

/// A read-only transaction that sees only `tenant_id`'s rows: it switches to
/// the `ledger_reader` role (no BYPASSRLS; this holds even when the pool
/// connects as a superuser) and sets `app.tenant_id`, both for this
/// transaction only.
pub async fn begin_tenant_read(
    pool: &PgPool,
    tenant_id: TenantId,
) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut transaction = pool.begin().await?;
    sqlx::query(
        "SELECT set_config('role', 'ledger_reader', true), set_config('app.tenant_id', $1, true)",
    )
    .bind(tenant_id.to_string())
    .execute(&mut *transaction)
    .await?;
    Ok(transaction)
}

/// The projection had not passed the requested seq within the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("projection at tenant_seq {current}, requested {requested}")]
pub struct Lagging {
    pub requested: i64,
    pub current: i64,
}

/// `projection`'s checkpoint for `tenant_id` (0 before its first batch).
pub async fn checkpoint(
    pool: &PgPool,
    projection: &str,
    tenant_id: TenantId,
) -> Result<i64, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT last_seq FROM projection_checkpoints WHERE tenant_id = $1 AND projection = $2",
    )
    .bind(tenant_id.as_uuid())
    .bind(projection)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(0, |(seq,)| seq))
}

/// Shortest pause between two reads of the watched checkpoints.
const WATCH_POLL_MIN: Duration = Duration::from_millis(10);

/// Longest pause between two reads of the watched checkpoints: the pause
/// doubles from [`WATCH_POLL_MIN`] up to this while nothing moves.
const WATCH_POLL_MAX: Duration = Duration::from_millis(200);

/// Every `min_seq` wait of a process, served by one task that reads the
/// checkpoints waited on in one query, however many wait: the database
/// work of waiting is one statement per pause (10 ms, doubling up to 200
/// ms while nothing moves), not one per waiter, and none at all while
/// nobody waits. Local workers' progress wakes it at once.
pub struct CheckpointWatch {
    pool: PgPool,
    waits: Mutex<HashMap<(&'static str, TenantId), Watched>>,
    /// Wakes the task when a wait starts.
    started: Notify,
    /// This process's workers' progress (closed when they run elsewhere).
    progress: watch::Receiver<u64>,
    task: std::sync::OnceLock<()>,
}

/// One watched checkpoint and how many wait on it.
struct Watched {
    seq: watch::Sender<i64>,
    waiters: usize,
}

/// A registered wait; leaving it (drop) unregisters it.
struct Registration<'a> {
    watch: &'a CheckpointWatch,
    key: (&'static str, TenantId),
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        let mut waits = self.watch.lock();
        if let Some(watched) = waits.get_mut(&self.key) {
            watched.waiters -= 1;
            if watched.waiters == 0 {
                waits.remove(&self.key);
            }
        }
    }
}

impl CheckpointWatch {
    /// A watch reading `pool`, woken by `progress` (a receiver whose sender
    /// is gone when no workers run in this process: the task then polls).
    pub fn new(pool: PgPool, progress: watch::Receiver<u64>) -> Arc<Self> {
        Arc::new(Self {
            pool,
            waits: Mutex::new(HashMap::new()),
            started: Notify::new(),
            progress,
            task: std::sync::OnceLock::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(&'static str, TenantId), Watched>> {
        // A panic while holding the lock leaves a map that is still valid.
        self.waits
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until `projection` has applied `tenant_id`'s events through
    /// `min_seq`, at most `bound`, from `current`, the checkpoint the caller
    /// read (a new wait wakes the watcher, which reads it again at once).
    /// Returns the checkpoint reached, or how far it had got.
    pub async fn wait_for_seq(
        self: &Arc<Self>,
        projection: &'static str,
        tenant_id: TenantId,
        min_seq: i64,
        current: i64,
        bound: Duration,
    ) -> Result<i64, Lagging> {
        if current >= min_seq {
            return Ok(current);
        }
        self.task.get_or_init(|| {
            tokio::spawn(watch_checkpoints(
                Arc::downgrade(self),
                self.progress.clone(),
            ));
        });
        let key = (projection, tenant_id);
        let mut seq = {
            let mut waits = self.lock();
            let watched = waits.entry(key).or_insert_with(|| Watched {
                seq: watch::channel(current).0,
                waiters: 0,
            });
            watched.waiters += 1;
            watched.seq.subscribe()
        };
        let _registration = Registration { watch: self, key };
        self.started.notify_one();
        let reached = tokio::time::timeout(bound, seq.wait_for(|seq| *seq >= min_seq))
            .await
            .ok()
            .and_then(Result::ok)
            .map(|reached| *reached);
        let current = current.max(*seq.borrow());
        reached.ok_or(Lagging {
            requested: min_seq,
            current,
        })
    }

    /// The checkpoints waited on now.
    fn watched(&self) -> Vec<(&'static str, TenantId)> {
        self.lock().keys().copied().collect()
    }

    /// Publishes the checkpoints read (each row: the index of its key in
    /// `watched`, and the seq); whether any moved.
    fn publish(&self, watched: &[(&'static str, TenantId)], rows: &[(i64, i64)]) -> bool {
        let waits = self.lock();
        let mut moved = false;
        for (index, seq) in rows {
            let key = usize::try_from(*index - 1)
                .ok()
                .and_then(|index| watched.get(index));
            if let Some(watched) = key.and_then(|key| waits.get(key)) {
                moved |= watched.seq.send_if_modified(|current| {
                    let changed = *seq > *current;
                    if changed {
                        *current = *seq;
                    }
                    changed
                });
            }
        }
        moved
    }
}

const WATCHED_CHECKPOINTS: &str = "\
    SELECT w.n, c.last_seq \
    FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS w(tenant_id, projection, n) \
    JOIN projection_checkpoints c ON c.tenant_id = w.tenant_id AND c.projection = w.projection";

/// The task behind a [`CheckpointWatch`]: while anyone waits, reads the
/// watched checkpoints, then pauses (shorter after a move, on a local
/// worker's progress or a new wait); while nobody waits, sleeps until a
/// wait starts. Ends when the watch is dropped.
async fn watch_checkpoints(
    watch: std::sync::Weak<CheckpointWatch>,
    mut progress: watch::Receiver<u64>,
) {
    let mut pause = WATCH_POLL_MIN;
    loop {
        let Some(this) = watch.upgrade() else {
            return;
        };
        let watched = this.watched();
        if watched.is_empty() {
            // Re-checked every so often, so a dropped watch ends the task.
            let _ = tokio::time::timeout(WATCH_POLL_MAX * 10, this.started.notified()).await;
            pause = WATCH_POLL_MIN;
            continue;
        }
        let tenants: Vec<Uuid> = watched.iter().map(|(_, id)| id.as_uuid()).collect();
        let names: Vec<&str> = watched.iter().map(|(name, _)| *name).collect();
        let read: Result<Vec<(i64, i64)>, sqlx::Error> = sqlx::query_as(WATCHED_CHECKPOINTS)
            .bind(&tenants)
            .bind(&names)
            .fetch_all(&this.pool)
            .await;
        pause = match read {
            Ok(rows) if this.publish(&watched, &rows) => WATCH_POLL_MIN,
            Ok(_) => (pause * 2).min(WATCH_POLL_MAX),
            Err(error) => {
                tracing::debug!(%error, "cannot read the checkpoints waited on");
                WATCH_POLL_MAX
            }
        };
        let started = this.started.notified();
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            changed = progress.changed() => {
                if changed.is_ok() {
                    pause = WATCH_POLL_MIN;
                } else {
                    // No local workers: only the pause paces the reads.
                    tokio::time::sleep(pause).await;
                }
            }
            () = started => pause = WATCH_POLL_MIN,
        }
    }
}

/// Why a replica's lag cannot be told.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaLagError {
    #[error("the primary cannot be asked for its WAL position: {0}")]
    Primary(#[source] sqlx::Error),
    #[error("the read replica cannot be asked: {0}")]
    Replica(#[source] sqlx::Error),
    /// A database of its own that replays nothing: a promoted standby, a
    /// copy, another database. Its reads do not follow the primary.
    #[error(
        "the read replica is not a standby (not in recovery): its reads do not follow the primary"
    )]
    NotStandby,
}

// A database's identity: its cluster's system identifier (a standby
// shares its primary's), when its server started, and its name.
// (The start as microseconds since the epoch: its text would follow each
// session's time zone.)
const DATABASE: &str = "SELECT (SELECT system_identifier FROM pg_control_system())::text, \
                               (extract(epoch FROM pg_postmaster_start_time()) * 1000000)::bigint::text, \
                               current_database()::text";

/// How far `replica` is behind `primary` in replaying its WAL, in seconds:
/// `None` when `replica` is the primary's own database (reads go to the
/// primary). Measured: the time the replica takes to replay everything the
/// primary had flushed when asked (0 when it already has), watched for up
/// to [`LAG_PROBE`]; past that, the time since the last commit it replayed
/// (since it started, when it has replayed none), which keeps growing while
/// the standby is cut off. A replica that is another database but no
/// standby is [`ReplicaLagError::NotStandby`], not "caught up".
pub async fn replica_lag(
    primary: &PgPool,
    replica: &PgPool,
) -> Result<Option<f64>, ReplicaLagError> {
    let (flushed,): (String,) = sqlx::query_as("SELECT pg_current_wal_flush_lsn()::text")
        .fetch_one(primary)
        .await
        .map_err(ReplicaLagError::Primary)?;
    let started = std::time::Instant::now();
    let mut looked = false;
    loop {
        let (standby, replayed, since_commit): (bool, bool, f64) = sqlx::query_as(
            "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, false), \
                    extract(epoch FROM now() - \
                        coalesce(pg_last_xact_replay_timestamp(), pg_postmaster_start_time()))::float8",
        )
        .bind(&flushed)
        .fetch_one(replica)
        .await
        .map_err(ReplicaLagError::Replica)?;
        let waited = started.elapsed();
        if !standby {
            return not_standby(primary, replica).await;
        }
        if replayed {
            // Caught up at the first look: no lag at all.
            return Ok(Some(if looked { waited.as_secs_f64() } else { 0.0 }));
        }
        looked = true;
        if waited >= LAG_PROBE {
            return Ok(Some(since_commit.max(waited.as_secs_f64())));
        }
        tokio::time::sleep(LAG_POLL).await;
    }
}

/// A replica not in recovery: the primary's own database (no lag), or
/// another one (another server, or another database of the primary's).
async fn not_standby(primary: &PgPool, replica: &PgPool) -> Result<Option<f64>, ReplicaLagError> {
    let of_primary: (String, String, String) = sqlx::query_as(DATABASE)
        .fetch_one(primary)
        .await
        .map_err(ReplicaLagError::Primary)?;
    let of_replica: (String, String, String) = sqlx::query_as(DATABASE)
        .fetch_one(replica)
        .await
        .map_err(ReplicaLagError::Replica)?;
    if of_primary == of_replica {
        Ok(None)
    } else {
        Err(ReplicaLagError::NotStandby)
    }
}

/// Longest [`replica_lag`] watches a replica catch up.
pub const LAG_PROBE: Duration = Duration::from_secs(1);

/// How often [`replica_lag`] looks again.
const LAG_POLL: Duration = Duration::from_millis(10);
