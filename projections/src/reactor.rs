//! Reactors (process managers): the projection runtime, but instead of
//! writing read tables they submit commands.
//!
//! A reactor must derive each command's idempotency key from the event that
//! causes it ([`reaction_key`]: `pm:<name>:<event_id>:<n>`). Its checkpoint advances
//! after its reactions; if it crashes before, it reads the same events again,
//! submits the same commands under the same keys, and the pipeline answers
//! them from their records: each reaction takes effect exactly once.

use crate::runtime::{lock_key, ProjectionError, Step, BATCH_EVENTS_MAX, LOCK_NAMESPACE};
use aggregates::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventstore::{EventStore, StoredEvent, TenantRange};
use futures_util::stream::{self, StreamExt};
use sqlx::{PgConnection, PgPool, Row};
use std::sync::atomic::{AtomicBool, Ordering};

/// The idempotency key of the `n`th request process manager `name` submits
/// in reaction to event `event_id`: `pm:<name>:<event_id>:<n>`. Derived
/// from the causing event alone, so reading the event again submits the
/// same request under the same key and the pipeline answers it from its
/// record.
pub fn reaction_key(name: &str, event_id: uuid::Uuid, n: usize) -> String {
    format!("pm:{name}:{event_id}:{n}")
}

/// Reacts to events by submitting commands.
#[async_trait]
pub trait Reactor: Send + Sync + 'static {
    /// Unique name (shares the checkpoint table with projections).
    fn name(&self) -> &'static str;

    /// The aggregate types whose events it reacts to, or `None` (the
    /// default) for every event. The events of other types are not read:
    /// its checkpoint passes over them.
    fn aggregate_types(&self) -> Option<&'static [&'static str]> {
        None
    }

    /// Reacts to one event. Commands it submits must carry idempotency keys
    /// derived from the event alone.
    async fn react(&self, tenant_id: TenantId, event: &StoredEvent) -> Result<(), String>;
}

/// Most events one batch of a reactor that reads some aggregate types only
/// passes over, so that a long history of other events is covered in
/// bounded steps.
pub const SCAN_EVENTS_MAX: i64 = 16 * BATCH_EVENTS_MAX;

/// How much one batch of a reactor takes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReactLimits {
    /// Most events reacted to.
    pub batch_events: i64,
    /// Most events passed over, by a reactor that reads some aggregate
    /// types only.
    pub scan_events: i64,
}

impl Default for ReactLimits {
    fn default() -> Self {
        Self {
            batch_events: BATCH_EVENTS_MAX,
            scan_events: SCAN_EVENTS_MAX,
        }
    }
}

/// One batch of reactions for one tenant: take the lease, react to each
/// event in order, advance the checkpoint, commit.
pub async fn react_step(
    pool: &PgPool,
    reactor: &dyn Reactor,
    tenant_id: TenantId,
) -> Result<Step, ProjectionError> {
    react_step_within(pool, reactor, tenant_id, ReactLimits::default()).await
}

/// [`react_step`] within `limits` (a test makes them small).
pub async fn react_step_within(
    pool: &PgPool,
    reactor: &dyn Reactor,
    tenant_id: TenantId,
    limits: ReactLimits,
) -> Result<Step, ProjectionError> {
    Ok(react_batch(pool, reactor, tenant_id, limits).await?.step)
}

/// What one batch of reactions did, and whether more followed the head it
/// read (the batch was full, or its window ended before the head).
struct Reacted {
    step: Step,
    more: bool,
}

async fn react_batch(
    pool: &PgPool,
    reactor: &dyn Reactor,
    tenant_id: TenantId,
    limits: ReactLimits,
) -> Result<Reacted, ProjectionError> {
    let done = |step| Reacted { step, more: false };
    let mut transaction = pool.begin().await?;
    let lease: Option<(i64,)> = sqlx::query_as(
        "SELECT last_seq FROM projection_checkpoints \
         WHERE tenant_id = $1 AND projection = $2 AND pg_try_advisory_xact_lock_shared($3, $4) \
         FOR UPDATE SKIP LOCKED",
    )
    .bind(tenant_id.as_uuid())
    .bind(reactor.name())
    .bind(LOCK_NAMESPACE)
    .bind(lock_key(reactor.name()))
    .fetch_optional(&mut *transaction)
    .await?;
    let Some((checkpoint_seq,)) = lease else {
        return Ok(done(Step::Busy));
    };
    let Some(batch) =
        read_batch(&mut transaction, reactor, tenant_id, checkpoint_seq, limits).await?
    else {
        return Ok(done(Step::UpToDate));
    };
    for event in &batch.events {
        reactor
            .react(tenant_id, event)
            .await
            .map_err(|message| ProjectionError::Apply {
                projection: reactor.name().to_string(),
                tenant_id,
                error: crate::runtime::ApplyError::Event {
                    tenant_seq: event.tenant_seq,
                    message,
                },
            })?;
    }
    sqlx::query(
        "UPDATE projection_checkpoints SET last_seq = $3, last_recorded_at = $4, updated_at = now() \
         WHERE tenant_id = $1 AND projection = $2",
    )
    .bind(tenant_id.as_uuid())
    .bind(reactor.name())
    .bind(batch.last_seq)
    .bind(batch.last_recorded_at)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(Reacted {
        step: Step::Applied {
            events: usize::try_from(batch.last_seq - checkpoint_seq).unwrap_or(0),
            last_seq: batch.last_seq,
        },
        more: batch.more,
    })
}

/// The events of one batch and the event the checkpoint moves to.
struct ReactorBatch {
    events: Vec<StoredEvent>,
    last_seq: i64,
    last_recorded_at: DateTime<Utc>,
    /// Events followed the batch when it was read.
    more: bool,
}

/// The events after `checkpoint_seq` the reactor reads, and how far they
/// cover the tenant's history: to the last of them when the batch is full,
/// else to the end of the range read (every event of another type in it
/// passed over). `None` when nothing follows the checkpoint.
async fn read_batch(
    connection: &mut PgConnection,
    reactor: &dyn Reactor,
    tenant_id: TenantId,
    checkpoint_seq: i64,
    limits: ReactLimits,
) -> Result<Option<ReactorBatch>, ProjectionError> {
    let batch_events = limits.batch_events.max(1);
    let Some(types) = reactor.aggregate_types() else {
        let events =
            EventStore::read_tenant_on(connection, tenant_id, checkpoint_seq, batch_events).await?;
        let Some((last_seq, last_recorded_at)) = events
            .last()
            .map(|last| (last.tenant_seq, last.recorded_at))
        else {
            return Ok(None);
        };
        return Ok(Some(ReactorBatch {
            more: events.len() as i64 >= batch_events,
            events,
            last_seq,
            last_recorded_at,
        }));
    };
    // Every event up to the head row read here is committed: an append
    // moves the head in the transaction that inserts its events.
    let row =
        sqlx::query("SELECT last_seq, last_recorded_at FROM chain_heads WHERE tenant_id = $1")
            .bind(tenant_id.as_uuid())
            .fetch_optional(&mut *connection)
            .await?;
    let head: Option<(i64, Option<DateTime<Utc>>)> = match row {
        Some(row) => Some((row.try_get(0)?, eventstore::optional_timestamp_at(&row, 1)?)),
        None => None,
    };
    let Some((head_seq, head_recorded_at)) = head.filter(|(seq, _)| *seq > checkpoint_seq) else {
        return Ok(None);
    };
    let range = TenantRange {
        tenant_id,
        after_seq: checkpoint_seq,
        until_seq: head_seq.min(checkpoint_seq.saturating_add(limits.scan_events.max(1))),
    };
    let events = EventStore::read_tenant_types_on(connection, range, types, batch_events).await?;
    let (last_seq, last_recorded_at) = match events.last() {
        Some(last) if events.len() as i64 >= batch_events => {
            (last.tenant_seq, Some(last.recorded_at))
        }
        _ if range.until_seq == head_seq => (head_seq, head_recorded_at),
        _ => (range.until_seq, None),
    };
    let last_recorded_at = match last_recorded_at {
        Some(at) => at,
        None => recorded_at(connection, tenant_id, last_seq).await?,
    };
    Ok(Some(ReactorBatch {
        events,
        last_seq,
        last_recorded_at,
        more: last_seq < head_seq,
    }))
}

/// When the event at `tenant_seq` was recorded (or the last before it:
/// the history has no gap, but a tampered one must not wedge the reactor;
/// `verify` reports it).
async fn recorded_at(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    tenant_seq: i64,
) -> Result<DateTime<Utc>, ProjectionError> {
    let row = sqlx::query(
        "SELECT recorded_at FROM events WHERE tenant_id = $1 AND tenant_seq <= $2 \
             ORDER BY tenant_seq DESC LIMIT 1",
    )
    .bind(tenant_id.as_uuid())
    .bind(tenant_seq)
    .fetch_one(connection)
    .await?;
    Ok(eventstore::timestamp_at(&row, 0)?)
}

/// Most tenants a reactor works on at once. Tenants are independent (each
/// has its own checkpoint and its reactions in its own order), and a
/// reaction mostly waits on the command it submits, so one tenant at a time
/// leaves a reactor far behind the appends under load. Each tenant at work
/// holds its checkpoint's transaction (a connection) while its reactions
/// read with another, so a reactor works on at most a quarter as many
/// tenants as its pool has connections: half the pool at most, the rest
/// left to the listener, the projection workers and the reads.
pub const REACTING_TENANTS_MAX: usize = 4;

/// Reacts until no tenant lags (or the lagging ones are busy elsewhere),
/// round after round, so that the events its own reactions append are
/// reacted to as well: what tests and one-off runs call to catch a reactor
/// up.
pub async fn react_catch_up(pool: &PgPool, reactor: &dyn Reactor) -> Result<u64, ProjectionError> {
    let mut applied = 0;
    loop {
        match react_catch_up_with(pool, reactor, || false).await? {
            0 => return Ok(applied),
            events => applied += events,
        }
    }
}

/// One round of a reactor's worker: every lagging tenant up to the head
/// read by its last batch (batch after batch while they are full), stopping
/// early (between batches) once `stop` answers true. What is appended
/// meanwhile waits for the next round, as it does for the projections: a
/// round never chases the appends of a busy ledger batch by small batch.
/// Lagging tenants are reacted to concurrently, up to
/// [`REACTING_TENANTS_MAX`] at once; each tenant's events in order. When a
/// tenant fails, the others are still reacted to (a failing tenant holds
/// back none of its neighbours, before or after it), and the first error is
/// returned once the round ends; only the database going away stops the
/// round early. Returns the events covered (reacted to or passed over).
pub async fn react_catch_up_with(
    pool: &PgPool,
    reactor: &dyn Reactor,
    stop: impl Fn() -> bool,
) -> Result<u64, ProjectionError> {
    let at_once = usize::try_from(pool.options().get_max_connections() / 4)
        .unwrap_or(1)
        .clamp(1, REACTING_TENANTS_MAX);
    let unavailable = AtomicBool::new(false);
    let halt = || stop() || unavailable.load(Ordering::Relaxed);
    let lagging = crate::runtime::lagging_tenants(pool, reactor.name()).await?;
    let mut tenants = stream::iter(lagging)
        .map(|tenant_id| react_tenant(pool, reactor, tenant_id, &halt))
        .buffer_unordered(at_once);
    let mut applied = 0;
    let mut first_error = None;
    while let Some(reacted) = tenants.next().await {
        match reacted {
            Ok(events) => applied += events,
            Err(error) => {
                if crate::worker::error_is_unavailable(&error) {
                    unavailable.store(true, Ordering::Relaxed);
                }
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(applied),
    }
}

/// Reacts to one tenant's events, batch by batch, until a batch reaches
/// the head it read, another worker holds the tenant, or `stop`.
async fn react_tenant(
    pool: &PgPool,
    reactor: &dyn Reactor,
    tenant_id: TenantId,
    stop: &impl Fn() -> bool,
) -> Result<u64, ProjectionError> {
    let mut applied = 0;
    while !stop() {
        let reacted = react_batch(pool, reactor, tenant_id, ReactLimits::default()).await?;
        match reacted.step {
            Step::Applied { events, .. } => applied += events as u64,
            Step::UpToDate | Step::Busy => break,
        }
        if !reacted.more {
            break;
        }
    }
    Ok(applied)
}
