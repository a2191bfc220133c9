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
use eventstore::{EventStore, StoredEvent};
use futures_util::stream::{self, StreamExt};
use sqlx::PgPool;
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

    /// Reacts to one event. Commands it submits must carry idempotency keys
    /// derived from the event alone.
    async fn react(&self, tenant_id: TenantId, event: &StoredEvent) -> Result<(), String>;
}

/// One batch of reactions for one tenant: take the lease, react to each
/// event in order, advance the checkpoint, commit.
pub async fn react_step(
    pool: &PgPool,
    reactor: &dyn Reactor,
    tenant_id: TenantId,
) -> Result<Step, ProjectionError> {
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
        return Ok(Step::Busy);
    };
    let events = EventStore::read_tenant_on(
        &mut transaction,
        tenant_id,
        checkpoint_seq,
        BATCH_EVENTS_MAX,
    )
    .await?;
    let Some(last) = events.last() else {
        return Ok(Step::UpToDate);
    };
    let (last_seq, last_recorded_at) = (last.tenant_seq, last.recorded_at);
    for event in &events {
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
    .bind(last_seq)
    .bind(last_recorded_at)
    .execute(&mut *transaction)
    .await?;
    transaction.commit().await?;
    Ok(Step::Applied {
        events: events.len(),
        last_seq,
    })
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

/// Reacts until no tenant lags (or the lagging ones are busy elsewhere).
pub async fn react_catch_up(pool: &PgPool, reactor: &dyn Reactor) -> Result<u64, ProjectionError> {
    react_catch_up_with(pool, reactor, || false).await
}

/// [`react_catch_up`], stopping early (between batches) once `stop`
/// answers true. Lagging tenants are reacted to concurrently, up to
/// [`REACTING_TENANTS_MAX`] at once; each tenant's events in order. When a
/// tenant fails, the tenants at work meanwhile finish their batch (a failing
/// tenant does not hold its neighbours back), no other starts, and the
/// first error is returned.
pub async fn react_catch_up_with(
    pool: &PgPool,
    reactor: &dyn Reactor,
    stop: impl Fn() -> bool,
) -> Result<u64, ProjectionError> {
    let at_once = usize::try_from(pool.options().get_max_connections() / 4)
        .unwrap_or(1)
        .clamp(1, REACTING_TENANTS_MAX);
    let failed = AtomicBool::new(false);
    let halt = || stop() || failed.load(Ordering::Relaxed);
    let mut applied = 0;
    loop {
        let lagging = crate::runtime::lagging_tenants(pool, reactor.name()).await?;
        let mut tenants = stream::iter(lagging)
            .map(|tenant_id| react_tenant(pool, reactor, tenant_id, &halt))
            .buffer_unordered(at_once);
        let mut progressed = false;
        let mut first_error = None;
        while let Some(reacted) = tenants.next().await {
            match reacted {
                Ok(events) => {
                    applied += events;
                    progressed |= events > 0;
                }
                Err(error) => {
                    failed.store(true, Ordering::Relaxed);
                    first_error.get_or_insert(error);
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        if !progressed || stop() {
            return Ok(applied);
        }
    }
}

/// Reacts to one tenant's events, batch by batch, until it is up to date,
/// another worker holds it, or `stop`.
async fn react_tenant(
    pool: &PgPool,
    reactor: &dyn Reactor,
    tenant_id: TenantId,
    stop: &impl Fn() -> bool,
) -> Result<u64, ProjectionError> {
    let mut applied = 0;
    while !stop() {
        match react_step(pool, reactor, tenant_id).await? {
            Step::Applied { events, .. } => applied += events as u64,
            Step::UpToDate | Step::Busy => break,
        }
    }
    Ok(applied)
}
