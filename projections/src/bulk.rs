//! Bulk replay into private tables (the shadow of a rebuild, the scratch of a
//! comparison): one reader streams pages of events while one applier per
//! projection applies the previous page on a connection of its own, so that
//! reading, decoding and each projection's writes overlap.
//!
//! Each applier commits every page together with its checkpoints (in the
//! private schema), so a bulk replay interrupted at any point leaves tables
//! and checkpoints that agree. Nobody else writes the private tables (the
//! caller holds the rebuild lock or owns the scratch schema), so no lease is
//! taken.

use crate::progress::Progress;
use crate::runtime::{
    advance, at_event, covering_ranges, ensure_checkpoints, is_refusal, use_schema, Advance,
    ApplyError, Projection, ProjectionError,
};
use aggregates::TenantId;
use eventstore::{EventStore, StoredEvent, TenantRange};
use futures_util::future::join_all;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Events of one tenant a page holds at most.
const PAGE_TENANT_EVENTS: i64 = 2_500;

/// Events a page holds at most, over all its tenants (bounds memory).
const PAGE_EVENTS: i64 = 10_000;

/// Pages read ahead of the slowest applier.
const PAGES_AHEAD: usize = 2;

/// Replays into the tables of `schema`, for each projection, every tenant's
/// events after the projection's checkpoint there up to `until` (per
/// projection, per tenant). Returns the events read and the tenants each
/// projection could not apply (held back at the event refused; the other
/// tenants are replayed all the same).
pub(crate) async fn replay(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: &str,
    until: &[HashMap<TenantId, i64>],
    progress: &mut Progress,
) -> Result<(u64, Vec<HeldBack>), ProjectionError> {
    // What to read: per tenant, from the lowest checkpoint to the highest bound.
    // Every tenant with events gets its checkpoint rows first (at 0), so that
    // a tenant whose first event came after an earlier pass is checkpointed
    // by this one.
    let mut checkpoints: Vec<HashMap<TenantId, i64>> = Vec::with_capacity(projections.len());
    {
        let mut transaction = pool.begin().await?;
        use_schema(&mut transaction, schema).await?;
        let names: Vec<&str> = projections
            .iter()
            .map(|projection| projection.name())
            .collect();
        ensure_checkpoints(&mut transaction, &names).await?;
        for projection in projections {
            let rows: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
                "SELECT tenant_id, last_seq FROM projection_checkpoints WHERE projection = $1",
            )
            .bind(projection.name())
            .fetch_all(&mut *transaction)
            .await?;
            checkpoints.push(
                rows.into_iter()
                    .map(|(tenant, seq)| (TenantId::from_uuid(tenant), seq))
                    .collect(),
            );
        }
        transaction.commit().await?;
    }
    let ranges = covering_ranges(until.iter().enumerate().flat_map(|(index, bounds)| {
        let checkpoints = &checkpoints[index];
        bounds.iter().map(move |(tenant_id, until_seq)| {
            let after_seq = checkpoints.get(tenant_id).copied().unwrap_or(0);
            (*tenant_id, after_seq, *until_seq)
        })
    }));
    if ranges.is_empty() {
        return Ok((0, Vec::new()));
    }

    let mut senders = Vec::with_capacity(projections.len());
    let mut appliers = Vec::with_capacity(projections.len());
    for (index, projection) in projections.iter().enumerate() {
        let (sender, receiver) = mpsc::channel::<Arc<Vec<StoredEvent>>>(PAGES_AHEAD);
        senders.push(sender);
        appliers.push(apply_pages(
            pool,
            *projection,
            schema,
            checkpoints[index].clone(),
            &until[index],
            receiver,
        ));
    }
    // Nothing is cancelled midway: an applier that fails drops its receiver,
    // the reader stops sending and drops the senders, the others finish.
    let (read, applied) = tokio::join!(
        read_pages(pool, ranges, senders, progress),
        join_all(appliers)
    );
    let mut held_back = Vec::new();
    for result in applied {
        held_back.extend(result?);
    }
    Ok((read?, held_back))
}

/// Reads `ranges` page by page and hands every page to every applier.
/// Stops early, without an error, when an applier has gone.
async fn read_pages(
    pool: &PgPool,
    mut ranges: Vec<TenantRange>,
    senders: Vec<mpsc::Sender<Arc<Vec<StoredEvent>>>>,
    progress: &mut Progress,
) -> Result<u64, ProjectionError> {
    let tenants_per_page = usize::try_from((PAGE_EVENTS / PAGE_TENANT_EVENTS).max(1)).unwrap_or(1);
    let mut read = 0;
    while !ranges.is_empty() {
        let page = ranges.len().min(tenants_per_page);
        let events = {
            let mut connection = pool.acquire().await?;
            EventStore::read_tenants_on(&mut connection, &ranges[..page], PAGE_TENANT_EVENTS)
                .await?
        };
        // Advance the ranges past what was read; a range read to its end is done.
        let mut last: HashMap<TenantId, i64> = HashMap::new();
        for event in &events {
            last.insert(event.tenant_id, event.tenant_seq);
        }
        for range in &mut ranges[..page] {
            range.after_seq = last
                .get(&range.tenant_id)
                .copied()
                .unwrap_or(range.until_seq);
        }
        ranges.retain(|range| range.after_seq < range.until_seq);
        read += events.len() as u64;
        progress.advance(events.len() as u64);
        let events = Arc::new(events);
        for sender in &senders {
            if sender.send(events.clone()).await.is_err() {
                return Ok(read);
            }
        }
    }
    Ok(read)
}

/// One projection's applier: each page past its checkpoints and up to its
/// bounds, applied and checkpointed in one transaction. When the projection
/// refuses a page, the page is applied tenant by tenant instead; a tenant
/// it refuses is held back at the event refused (its earlier events
/// applied one by one) and left out of later pages, and every other tenant
/// goes on. Returns the tenants held back.
async fn apply_pages(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: &str,
    checkpoints: HashMap<TenantId, i64>,
    until: &HashMap<TenantId, i64>,
    mut pages: mpsc::Receiver<Arc<Vec<StoredEvent>>>,
) -> Result<Vec<HeldBack>, ProjectionError> {
    let mut applier = Applier {
        pool,
        projection,
        schema,
        checkpoints,
        held_back: BTreeMap::new(),
    };
    while let Some(page) = pages.recv().await {
        let slice: Vec<&StoredEvent> = page
            .iter()
            .filter(|event| {
                !applier.held_back.contains_key(&event.tenant_id)
                    && event.tenant_seq > applier.checkpoint(event.tenant_id)
                    && event.tenant_seq <= until.get(&event.tenant_id).copied().unwrap_or(0)
            })
            .collect();
        if slice.is_empty() {
            continue;
        }
        if applier.apply(&slice).await?.is_err() {
            applier.apply_tenant_by_tenant(&slice).await?;
        }
    }
    Ok(applier.held_back.into_values().collect())
}

/// A tenant a projection's replay could not apply: held back at the event
/// it refused, the events before it applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HeldBack {
    pub projection: String,
    pub tenant_id: TenantId,
    /// The event refused.
    pub tenant_seq: i64,
    pub error: String,
}

/// One projection's applier of a bulk replay.
struct Applier<'a> {
    pool: &'a PgPool,
    projection: &'a dyn Projection,
    schema: &'a str,
    checkpoints: HashMap<TenantId, i64>,
    held_back: BTreeMap<TenantId, HeldBack>,
}

impl Applier<'_> {
    fn checkpoint(&self, tenant_id: TenantId) -> i64 {
        self.checkpoints.get(&tenant_id).copied().unwrap_or(0)
    }

    /// Applies `slice` (consecutive runs per tenant, starting right after
    /// each checkpoint) and advances the checkpoints, in one transaction.
    /// The outer error is operational; the inner one is the projection's
    /// refusal (rolled back).
    async fn apply(
        &mut self,
        slice: &[&StoredEvent],
    ) -> Result<Result<(), ApplyError>, ProjectionError> {
        let mut advances: HashMap<TenantId, Advance> = HashMap::new();
        for event in slice {
            let expected = advances
                .get(&event.tenant_id)
                .map(|advance| advance.last_seq)
                .unwrap_or_else(|| self.checkpoint(event.tenant_id));
            // A hole (an event removed behind the ledger's back) refuses
            // its tenant at the missing seq, which is held back there.
            if event.tenant_seq != expected + 1 {
                return Ok(Err(crate::runtime::missing(expected + 1, event.tenant_seq)));
            }
            advances.insert(
                event.tenant_id,
                Advance {
                    tenant_id: event.tenant_id,
                    projection: self.projection.name(),
                    last_seq: event.tenant_seq,
                    last_recorded_at: event.recorded_at,
                },
            );
        }
        let mut transaction = self.pool.begin().await?;
        use_schema(&mut transaction, self.schema).await?;
        if let Err(refusal) = self.projection.apply(&mut transaction, slice).await {
            transaction.rollback().await?;
            return match refusal {
                refusal if is_refusal(&refusal) => Ok(Err(at_event(slice, refusal))),
                ApplyError::Database(error) => Err(error.into()),
                refusal => Ok(Err(refusal)),
            };
        }
        let advances: Vec<Advance> = advances.into_values().collect();
        advance(&mut transaction, &advances).await?;
        transaction.commit().await?;
        for advanced in advances {
            self.checkpoints
                .insert(advanced.tenant_id, advanced.last_seq);
        }
        Ok(Ok(()))
    }

    /// After `slice` was refused: each tenant's run alone; a run refused
    /// again is applied one event at a time up to the event refused, and
    /// its tenant held back there.
    async fn apply_tenant_by_tenant(
        &mut self,
        slice: &[&StoredEvent],
    ) -> Result<(), ProjectionError> {
        let mut tenants: Vec<TenantId> = slice.iter().map(|event| event.tenant_id).collect();
        tenants.dedup();
        let runs: Vec<Vec<&StoredEvent>> = if tenants.len() == 1 {
            vec![slice.to_vec()]
        } else {
            tenants
                .iter()
                .map(|tenant_id| {
                    slice
                        .iter()
                        .copied()
                        .filter(|event| event.tenant_id == *tenant_id)
                        .collect()
                })
                .collect()
        };
        for run in runs {
            // A tenant alone in the slice was refused already.
            let refused = tenants.len() == 1 || self.apply(&run).await?.is_err();
            if !refused {
                continue;
            }
            // Refused together but applied one by one: nothing to hold back.
            let Some((tenant_seq, error)) = self.locate(&run).await? else {
                continue;
            };
            let tenant_id = run[0].tenant_id;
            self.held_back.insert(
                tenant_id,
                HeldBack {
                    projection: self.projection.name().to_string(),
                    tenant_id,
                    tenant_seq,
                    error,
                },
            );
        }
        Ok(())
    }

    /// Applies one tenant's `run` one event at a time up to the one refused:
    /// its seq and the refusal; `None` when every event applied.
    async fn locate(
        &mut self,
        run: &[&StoredEvent],
    ) -> Result<Option<(i64, String)>, ProjectionError> {
        for event in run {
            if let Err(refusal) = self.apply(&[*event]).await? {
                return Ok(refusal.refused_at(Some(event)));
            }
        }
        Ok(None)
    }
}
