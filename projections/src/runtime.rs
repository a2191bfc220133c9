//! The projection runtime: applying events to read tables in bounded,
//! checkpointed batches.
//!
//! A batch transaction first takes its leases: the checkpoint rows of the
//! (tenant, projection) pairs that lag, locked `FOR UPDATE SKIP LOCKED`,
//! together with a shared advisory lock of each projection (which a rebuild's
//! swap takes exclusively). A worker that cannot get a lease skips that pair,
//! so any number of processes can run workers side by side and exactly one
//! applies a given batch. The events of every leased tenant are read in one
//! query, each projection applies those past its own checkpoint in one call
//! (set-based, across tenants), and the checkpoints advance in the same
//! transaction: a crash at any instant loses or doubles nothing.

use crate::event_rows::EventRows;
use aggregates::TenantId;
use async_trait::async_trait;
use eventstore::{EventStore, StoreError, StoredEvent, TenantRange};
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use uuid::Uuid;

/// Most events of one tenant applied in one batch.
pub const BATCH_EVENTS_MAX: i64 = 1_000;

/// Most (tenant, projection) checkpoints one batch leases.
pub const LEASES_MAX: i64 = 512;

/// A projection: a named, versioned builder of read tables.
#[async_trait]
pub trait Projection: Send + Sync + 'static {
    /// Unique name (lower case letters and `_`).
    fn name(&self) -> &'static str;

    /// Version of the read model; a different version than the one the live
    /// tables were built with makes the runtime rebuild them.
    fn version(&self) -> i32;

    /// The read tables it owns (unqualified names).
    fn tables(&self) -> &'static [&'static str];

    /// Applies events inside `connection`'s transaction: for each tenant a
    /// run of consecutive events in tenant_seq order, tenants in any order.
    /// Table names must be unqualified: during a rebuild the search path
    /// points at shadow tables.
    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError>;

    /// The one of its tables whose rows each come from one event alone, if
    /// any: a comparison sets it beside the replay in memory instead of in
    /// a scratch table.
    fn event_rows(&self) -> Option<&dyn EventRows> {
        None
    }
}

/// Why a batch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("event at tenant_seq {tenant_seq}: {message}")]
    Event { tenant_seq: i64, message: String },
    /// A hole in the tenant's seqs (an event removed behind the ledger's
    /// back): every projection behind it stops there.
    #[error("event at tenant_seq {tenant_seq}: tenant_seq {tenant_seq} is missing: the next event is tenant_seq {found}")]
    Missing { tenant_seq: i64, found: i64 },
}

impl ApplyError {
    /// The seq of the event refused (or missing) and why, when the events
    /// rather than the database are at fault or `event` is the only one
    /// applied; `None` for a database failure of several events.
    pub(crate) fn refused_at(&self, event: Option<&StoredEvent>) -> Option<(i64, String)> {
        match self {
            Self::Event {
                tenant_seq,
                message,
            } => Some((*tenant_seq, message.clone())),
            Self::Missing { tenant_seq, found } => Some((
                *tenant_seq,
                format!("tenant_seq {tenant_seq} is missing: the next event is tenant_seq {found}"),
            )),
            Self::Database(error) => event.map(|event| (event.tenant_seq, error.to_string())),
        }
    }
}

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("projection {projection}, tenant {tenant_id}: {error}")]
    Apply {
        projection: String,
        tenant_id: TenantId,
        error: ApplyError,
    },
    #[error("a rebuild of {0} is already running")]
    RebuildRunning(String),
    #[error("unknown projection {name} (known: {})", known.join(", "))]
    Unknown { name: String, known: Vec<String> },
    /// A live table a comparison read part by part was rebuilt and swapped
    /// in, or rewritten, before it ended.
    #[error("the read table {0} was rebuilt or rewritten while it was compared: compare again")]
    Changed(String),
}

impl From<sqlx::Error> for ProjectionError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::from(error))
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Applied `events`, up to `last_seq` (of the last tenant). A reactor
    /// counts the events it covered: reacted to, or passed over as of
    /// aggregate types it does not read.
    Applied { events: usize, last_seq: i64 },
    /// Nothing new for this tenant.
    UpToDate,
    /// Another worker holds the partition (or a rebuild is swapping).
    Busy,
}

/// Advisory lock namespace of the per-projection lock (`ledg` in ASCII).
pub(crate) const LOCK_NAMESPACE: i32 = 0x6c65_6467;

/// Advisory lock namespace held for a whole rebuild of one projection (by
/// `rebuild`; `status` tries it to tell an interrupted rebuild).
pub(crate) const REBUILD_LOCK_NAMESPACE: i32 = 0x6c65_6468;

/// The per-projection advisory lock key.
pub(crate) fn lock_key(projection: &str) -> i32 {
    let digest = blake3::hash(projection.as_bytes());
    let bytes = digest.as_bytes();
    i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// `schema` as the first place unqualified names resolve, for this transaction.
pub(crate) async fn use_schema(
    connection: &mut PgConnection,
    schema: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT set_config('search_path', $1, true)")
        .bind(format!(
            "{}, public",
            eventstore::database::quote_identifier(schema)
        ))
        .execute(connection)
        .await?;
    Ok(())
}

const LAGGING: &str = "\
    SELECT h.tenant_id, c.last_seq IS NULL AS missing \
    FROM chain_heads h \
    LEFT JOIN projection_checkpoints c ON c.tenant_id = h.tenant_id AND c.projection = $1 \
    WHERE h.last_seq > coalesce(c.last_seq, 0) \
    ORDER BY h.tenant_id";

const ENSURE_CHECKPOINTS: &str = "\
    INSERT INTO projection_checkpoints (tenant_id, projection, last_seq, updated_at) \
    SELECT h.tenant_id, p.name, 0, now() FROM chain_heads h CROSS JOIN unnest($1::text[]) AS p(name) \
    WHERE h.last_seq > 0 AND NOT EXISTS ( \
        SELECT 1 FROM projection_checkpoints c WHERE c.tenant_id = h.tenant_id AND c.projection = p.name) \
    ON CONFLICT DO NOTHING";

const LEASE: &str = "\
    SELECT c.tenant_id, c.projection, c.last_seq \
    FROM projection_checkpoints c \
    JOIN chain_heads h ON h.tenant_id = c.tenant_id \
    JOIN unnest($1::text[], $2::int[]) AS k(name, lock_key) ON c.projection = k.name \
    WHERE h.last_seq > c.last_seq AND ($5::uuid IS NULL OR c.tenant_id = $5) \
      AND (c.tenant_id, c.projection) NOT IN (SELECT * FROM unnest($6::uuid[], $7::text[])) \
      AND pg_try_advisory_xact_lock_shared($3, k.lock_key) \
    ORDER BY c.tenant_id, c.projection \
    LIMIT $4 \
    FOR UPDATE OF c SKIP LOCKED";

const ADVANCE: &str = "\
    UPDATE projection_checkpoints c \
    SET last_seq = a.last_seq, last_recorded_at = a.last_recorded_at, updated_at = now() \
    FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::timestamptz[]) \
         AS a(tenant_id, projection, last_seq, last_recorded_at) \
    WHERE c.tenant_id = a.tenant_id AND c.projection = a.projection AND c.last_seq < a.last_seq";

/// Per tenant, the one range covering every `(tenant, after_seq, until_seq)`
/// given (from the lowest start to the highest end), empty ones left out,
/// in tenant order: what to read once for several consumers.
pub(crate) fn covering_ranges(
    parts: impl IntoIterator<Item = (TenantId, i64, i64)>,
) -> Vec<TenantRange> {
    let mut ranges: std::collections::BTreeMap<TenantId, TenantRange> =
        std::collections::BTreeMap::new();
    for (tenant_id, after_seq, until_seq) in parts {
        if until_seq <= after_seq {
            continue;
        }
        let range = ranges.entry(tenant_id).or_insert(TenantRange {
            tenant_id,
            after_seq,
            until_seq,
        });
        range.after_seq = range.after_seq.min(after_seq);
        range.until_seq = range.until_seq.max(until_seq);
    }
    ranges.into_values().collect()
}

/// A checkpoint moving forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Advance {
    pub(crate) tenant_id: TenantId,
    pub(crate) projection: &'static str,
    pub(crate) last_seq: i64,
    pub(crate) last_recorded_at: chrono::DateTime<chrono::Utc>,
}

/// Moves checkpoints forward (never back), in one statement.
pub(crate) async fn advance(
    connection: &mut PgConnection,
    advances: &[Advance],
) -> Result<(), sqlx::Error> {
    if advances.is_empty() {
        return Ok(());
    }
    sqlx::query(ADVANCE)
        .bind(
            advances
                .iter()
                .map(|advance| advance.tenant_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(
            advances
                .iter()
                .map(|advance| advance.projection)
                .collect::<Vec<_>>(),
        )
        .bind(
            advances
                .iter()
                .map(|advance| advance.last_seq)
                .collect::<Vec<_>>(),
        )
        .bind(
            advances
                .iter()
                .map(|advance| advance.last_recorded_at)
                .collect::<Vec<_>>(),
        )
        .execute(connection)
        .await?;
    Ok(())
}

/// A projection's checkpoint of one tenant, held for the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) tenant_id: TenantId,
    /// Index into the projections of the batch.
    pub(crate) projection: usize,
    pub(crate) checkpoint: i64,
}

/// Makes sure every tenant with events has a checkpoint row for each of
/// `names` (in `connection`'s search path).
pub(crate) async fn ensure_checkpoints(
    connection: &mut PgConnection,
    names: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(ENSURE_CHECKPOINTS)
        .bind(names)
        .execute(connection)
        .await?;
    Ok(())
}

/// Leases the lagging checkpoints of `projections` (at most `leases_max`),
/// skipping those another worker holds.
pub(crate) async fn lease(
    connection: &mut PgConnection,
    projections: &[&dyn Projection],
    leases_max: i64,
) -> Result<Vec<Lease>, ProjectionError> {
    lease_of(connection, projections, leases_max, None, &[]).await
}

/// Partitions a worker leaves alone for a while: (tenant, projection) pairs
/// held back at an event the projection refuses, so that they do not send
/// every batch of that projection through the tenant-by-tenant fallback.
pub type HeldPartitions<'a> = &'a [(TenantId, &'a str)];

/// [`lease`], of one tenant only when `tenant` is given.
async fn lease_of(
    connection: &mut PgConnection,
    projections: &[&dyn Projection],
    leases_max: i64,
    tenant: Option<TenantId>,
    held_back: HeldPartitions<'_>,
) -> Result<Vec<Lease>, ProjectionError> {
    let names: Vec<&str> = projections
        .iter()
        .map(|projection| projection.name())
        .collect();
    let keys: Vec<i32> = names.iter().map(|name| lock_key(name)).collect();
    let rows: Vec<(Uuid, String, i64)> = sqlx::query_as(LEASE)
        .bind(&names)
        .bind(&keys)
        .bind(LOCK_NAMESPACE)
        .bind(leases_max)
        .bind(tenant.map(|tenant| tenant.as_uuid()))
        .bind(
            held_back
                .iter()
                .map(|(tenant_id, _)| tenant_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(held_back.iter().map(|(_, name)| *name).collect::<Vec<_>>())
        .fetch_all(connection)
        .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(tenant, name, checkpoint)| {
            let projection = names.iter().position(|candidate| *candidate == name)?;
            Some(Lease {
                tenant_id: TenantId::from_uuid(tenant),
                projection,
                checkpoint,
            })
        })
        .collect())
}

/// Refused: `expected` is missing from a tenant's events, `found` follows.
pub(crate) fn missing(expected: i64, found: i64) -> ApplyError {
    ApplyError::Missing {
        tenant_seq: expected,
        found,
    }
}

/// What one batch applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Batch {
    /// Events read and applied.
    pub(crate) events: u64,
    /// Whether the batch stopped at one of its limits (a tenant's events,
    /// or the leases): more may be waiting.
    pub(crate) full: bool,
}

/// Inside `connection`'s transaction: reads the events past every lease's
/// checkpoint (per tenant at most `per_tenant_max`, and not past `until`
/// when given), lets each projection apply those past its own checkpoint,
/// and advances the leased checkpoints.
pub(crate) async fn apply_leases(
    connection: &mut PgConnection,
    projections: &[&dyn Projection],
    leases: &[Lease],
    until: Option<&HashMap<TenantId, i64>>,
    per_tenant_max: i64,
) -> Result<Batch, ProjectionError> {
    // Per tenant, read from the lowest checkpoint among its leases.
    let mut from: HashMap<TenantId, i64> = HashMap::new();
    for lease in leases {
        let seq = from.entry(lease.tenant_id).or_insert(lease.checkpoint);
        *seq = (*seq).min(lease.checkpoint);
    }
    let ranges: Vec<TenantRange> = from
        .iter()
        .filter_map(|(tenant_id, after_seq)| {
            let until_seq = match until {
                Some(bounds) => *bounds.get(tenant_id)?,
                None => i64::MAX,
            };
            (until_seq > *after_seq).then_some(TenantRange {
                tenant_id: *tenant_id,
                after_seq: *after_seq,
                until_seq,
            })
        })
        .collect();
    if ranges.is_empty() {
        return Ok(Batch::default());
    }
    let (events, cut) = read_whole_requests(connection, &ranges, per_tenant_max).await?;
    // Each tenant's run must start right after its lowest checkpoint and be
    // gapless: the store guarantees it, so a hole is an event removed
    // behind the ledger's back. That tenant's batch is refused at the
    // missing seq (held back there, as for an event a projection refuses);
    // the other tenants go on.
    let mut runs: HashMap<TenantId, (i64, i64, chrono::DateTime<chrono::Utc>)> = HashMap::new();
    for event in &events {
        let run = runs.entry(event.tenant_id).or_insert((
            from.get(&event.tenant_id).copied().unwrap_or(0),
            0,
            event.recorded_at,
        ));
        if event.tenant_seq != run.0 + 1 {
            // The projection the read started for: the one furthest
            // behind, which the hole holds back.
            let projection = leases
                .iter()
                .filter(|lease| lease.tenant_id == event.tenant_id)
                .min_by_key(|lease| lease.checkpoint)
                .and_then(|lease| projections.get(lease.projection))
                .map_or("", |projection| projection.name());
            return Err(ProjectionError::Apply {
                projection: projection.to_string(),
                tenant_id: event.tenant_id,
                error: missing(run.0 + 1, event.tenant_seq),
            });
        }
        run.0 = event.tenant_seq;
        run.1 += 1;
        run.2 = event.recorded_at;
    }
    let mut advances = Vec::new();
    for (index, projection) in projections.iter().enumerate() {
        let checkpoints: HashMap<TenantId, i64> = leases
            .iter()
            .filter(|lease| lease.projection == index)
            .map(|lease| (lease.tenant_id, lease.checkpoint))
            .collect();
        let slice: Vec<&StoredEvent> = events
            .iter()
            .filter(|event| {
                checkpoints
                    .get(&event.tenant_id)
                    .is_some_and(|checkpoint| event.tenant_seq > *checkpoint)
            })
            .collect();
        if slice.is_empty() {
            continue;
        }
        projection
            .apply(connection, &slice)
            .await
            .map_err(|error| ProjectionError::Apply {
                projection: projection.name().to_string(),
                tenant_id: slice[0].tenant_id,
                error: at_event(&slice, error),
            })?;
        for (tenant_id, checkpoint) in checkpoints {
            if let Some((last_seq, _, last_recorded_at)) = runs.get(&tenant_id) {
                if *last_seq > checkpoint {
                    advances.push(Advance {
                        tenant_id,
                        projection: projection.name(),
                        last_seq: *last_seq,
                        last_recorded_at: *last_recorded_at,
                    });
                }
            }
        }
    }
    advance(connection, &advances).await?;
    Ok(Batch {
        events: events.len() as u64,
        full: cut
            || runs
                .values()
                .any(|run| run.1 >= per_tenant_max.min(eventstore::read::READ_PAGE_MAX)),
    })
}

/// The events of `ranges`, per tenant at most `per_tenant_max`, ending at
/// the end of a request: a tenant's run that would end inside a request
/// (the event after it has the same idempotency key) ends before that
/// request instead, so that a checkpoint never shows half a decision (a
/// hold posted and its entry not yet recorded). A request longer than a
/// batch is still cut. Also whether some run was cut short.
async fn read_whole_requests(
    connection: &mut PgConnection,
    ranges: &[TenantRange],
    per_tenant_max: i64,
) -> Result<(Vec<StoredEvent>, bool), ProjectionError> {
    // One event more per tenant: the one after the run, if any (within
    // what one read may return).
    let per_tenant_max = per_tenant_max.clamp(1, eventstore::read::READ_PAGE_MAX - 1);
    let mut events = EventStore::read_tenants_on(connection, ranges, per_tenant_max + 1).await?;
    let max = usize::try_from(per_tenant_max).unwrap_or(usize::MAX);
    let mut keep = Vec::new();
    let mut cut = false;
    for run in events.chunk_by(|left, right| left.tenant_id == right.tenant_id) {
        if run.len() <= max {
            keep.push(run.len());
            continue;
        }
        cut = true;
        let next = &run[max].idempotency_key;
        let whole = run[..max]
            .iter()
            .rposition(|event| event.idempotency_key != *next)
            .map_or(max, |last| last + 1);
        keep.push(whole);
    }
    let mut runs = keep.into_iter();
    let mut left = 0;
    let mut previous = None;
    events.retain(|event| {
        if previous != Some(event.tenant_id) {
            previous = Some(event.tenant_id);
            left = runs.next().unwrap_or(0);
        }
        let kept = left > 0;
        left = left.saturating_sub(1);
        kept
    });
    Ok((events, cut))
}

/// Whether an apply error comes from the events rather than from the
/// database failing: the projection refused an event, or the database
/// refused the data written for it.
pub(crate) fn is_refusal(error: &ApplyError) -> bool {
    match error {
        ApplyError::Event { .. } | ApplyError::Missing { .. } => true,
        ApplyError::Database(error) => refused_by_database(error),
    }
}

/// Whether the database refused the data written (data exceptions, class
/// 22, and integrity violations, class 23), as opposed to failing.
fn refused_by_database(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(error) => error
            .code()
            .is_some_and(|code| code.starts_with("22") || code.starts_with("23")),
        _ => false,
    }
}

/// `error`, naming the event when `events` is only one and the database
/// refused the data written for it: the seq an operator and `verify`
/// report.
pub(crate) fn at_event(events: &[&StoredEvent], error: ApplyError) -> ApplyError {
    match (events, error) {
        ([event], ApplyError::Database(error)) if refused_by_database(&error) => {
            ApplyError::Event {
                tenant_seq: event.tenant_seq,
                message: error.to_string(),
            }
        }
        (_, error) => error,
    }
}

/// How much one batch takes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most events of one tenant applied in one batch.
    pub batch_events_max: i64,
    /// Most (tenant, projection) checkpoints one batch leases.
    pub leases_max: i64,
}

impl Limits {
    /// Batches of at most `batch_events_max` events per tenant, leasing up
    /// to [`LEASES_MAX`] checkpoints.
    pub fn events(batch_events_max: i64) -> Self {
        Self {
            batch_events_max,
            leases_max: LEASES_MAX,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::events(BATCH_EVENTS_MAX)
    }
}

/// One batch in its own transaction: lease what lags, apply, advance,
/// commit. `schema` selects shadow tables (rebuilds, verification). Returns
/// the events read (0 when nothing lags or everything lagging is leased by
/// another worker).
pub async fn step(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: Option<&str>,
    batch_events_max: i64,
) -> Result<u64, ProjectionError> {
    step_with(pool, projections, schema, Limits::events(batch_events_max)).await
}

/// [`step`] within `limits`.
///
/// When a batch of several tenants fails to apply, it is rolled back and
/// each of its tenants is applied in a transaction of its own: one tenant's
/// event that a projection cannot apply holds back that tenant only. The
/// others commit; the failing tenant's events before the one refused are
/// applied one by one, and the error (naming the tenant and the seq) is
/// returned after them.
pub async fn step_with(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: Option<&str>,
    limits: Limits,
) -> Result<u64, ProjectionError> {
    Ok(step_holding_back(pool, projections, schema, limits, &[])
        .await?
        .events)
}

/// [`step_with`], leaving the `held_back` partitions alone.
async fn step_holding_back(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: Option<&str>,
    limits: Limits,
    held_back: HeldPartitions<'_>,
) -> Result<Batch, ProjectionError> {
    // After a failed batch, the tenants applied one by one count as a full
    // batch when they applied anything: the next one goes on at once.
    let isolated = |events| Batch {
        events,
        full: events > 0,
    };
    let tenants = match step_of(pool, projections, schema, limits, None, held_back).await {
        Ok(Stepped::Applied(batch)) => return Ok(batch),
        Ok(Stepped::Failed { tenants, .. }) if tenants.len() == 1 => {
            return match isolate(pool, projections, schema, limits, tenants[0], held_back).await? {
                (_, Some(error)) => Err(error),
                (applied, None) => Ok(isolated(applied)),
            };
        }
        Ok(Stepped::Failed { tenants, .. }) => tenants,
        Err(error) => return Err(error),
    };
    let mut applied = 0;
    let mut first_error = None;
    for tenant in tenants {
        match step_of(pool, projections, schema, limits, Some(tenant), held_back).await? {
            Stepped::Applied(batch) => applied += batch.events,
            Stepped::Failed { .. } => {
                let (events, error) =
                    isolate(pool, projections, schema, limits, tenant, held_back).await?;
                applied += events;
                if let Some(error) = error {
                    first_error.get_or_insert(error);
                }
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(isolated(applied)),
    }
}

/// After one tenant's batch failed: applies that tenant's events one at a
/// time, each in a transaction of its own, up to the one that fails, so the
/// tenant is held back at the event itself (named in the error) rather than
/// at the start of the batch. The `held_back` partitions stay left alone:
/// an event refused there before must not hide the one refused now.
/// Returns the events applied and the error (none when every event applied
/// on its own).
async fn isolate(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: Option<&str>,
    limits: Limits,
    tenant: TenantId,
    held_back: HeldPartitions<'_>,
) -> Result<(u64, Option<ProjectionError>), ProjectionError> {
    let one = Limits {
        batch_events_max: 1,
        leases_max: limits.leases_max,
    };
    let mut applied = 0;
    for _ in 0..limits.batch_events_max {
        match step_of(pool, projections, schema, one, Some(tenant), held_back).await? {
            Stepped::Applied(Batch { events: 0, .. }) => break,
            Stepped::Applied(batch) => applied += batch.events,
            Stepped::Failed { error, .. } => return Ok((applied, Some(error))),
        }
    }
    Ok((applied, None))
}

/// What one transaction of [`step_with`] did.
enum Stepped {
    Applied(Batch),
    /// A projection could not apply the batch of these tenants: rolled back.
    Failed {
        tenants: Vec<TenantId>,
        error: ProjectionError,
    },
}

async fn step_of(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: Option<&str>,
    limits: Limits,
    tenant: Option<TenantId>,
    held_back: HeldPartitions<'_>,
) -> Result<Stepped, ProjectionError> {
    let mut transaction = pool.begin().await?;
    if let Some(schema) = schema {
        use_schema(&mut transaction, schema).await?;
    }
    let leases = lease_of(
        &mut transaction,
        projections,
        limits.leases_max,
        tenant,
        held_back,
    )
    .await?;
    if leases.is_empty() {
        // Release the shared projection locks now (a rebuild's swap waits
        // for them), not when the connection is next used.
        transaction.rollback().await?;
        return Ok(Stepped::Applied(Batch::default()));
    }
    let leases_full = leases.len() as i64 >= limits.leases_max;
    match apply_leases(
        &mut transaction,
        projections,
        &leases,
        None,
        limits.batch_events_max,
    )
    .await
    {
        Ok(batch) => {
            transaction.commit().await?;
            Ok(Stepped::Applied(Batch {
                full: batch.full || leases_full,
                ..batch
            }))
        }
        Err(error @ ProjectionError::Apply { .. }) => {
            // Roll back now, not when the connection is next used: the
            // tenants' checkpoint rows must be free for the retries.
            transaction.rollback().await?;
            let mut tenants: Vec<TenantId> = leases.iter().map(|lease| lease.tenant_id).collect();
            tenants.dedup();
            Ok(Stepped::Failed { tenants, error })
        }
        Err(error) => Err(error),
    }
}

/// Makes sure every tenant with events has a checkpoint row for each
/// projection (in `schema` when given).
async fn ensure_all_checkpoints(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: Option<&str>,
) -> Result<(), ProjectionError> {
    let names: Vec<&str> = projections
        .iter()
        .map(|projection| projection.name())
        .collect();
    let mut transaction = pool.begin().await?;
    if let Some(schema) = schema {
        use_schema(&mut transaction, schema).await?;
    }
    ensure_checkpoints(&mut transaction, &names).await?;
    transaction.commit().await?;
    Ok(())
}

/// Applies batches until one reads up to the heads, stopping short of its
/// limits (so nothing lags but what was appended meanwhile, or what another
/// worker holds): the single step tests and `ledger project --once` drive.
/// Returns the events read.
pub async fn catch_up_all(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: Option<&str>,
    batch_events_max: i64,
) -> Result<u64, ProjectionError> {
    catch_up_with(
        pool,
        projections,
        schema,
        Limits::events(batch_events_max),
        || false,
    )
    .await
}

/// [`catch_up_all`] within `limits`, stopping early (between batches) once
/// `stop` answers true.
pub async fn catch_up_with(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: Option<&str>,
    limits: Limits,
    stop: impl Fn() -> bool,
) -> Result<u64, ProjectionError> {
    catch_up_holding_back(pool, projections, schema, limits, stop, &[]).await
}

/// [`catch_up_with`], leaving the `held_back` partitions alone (what the
/// workers do between retries of them).
pub async fn catch_up_holding_back(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: Option<&str>,
    limits: Limits,
    stop: impl Fn() -> bool,
    held_back: HeldPartitions<'_>,
) -> Result<u64, ProjectionError> {
    ensure_all_checkpoints(pool, projections, schema).await?;
    let mut applied = 0;
    while !stop() {
        let batch = step_holding_back(pool, projections, schema, limits, held_back).await?;
        applied += batch.events;
        // A batch that stopped short of its limits read up to the heads as
        // they were: what came since is only what was appended meanwhile.
        // Returning lets a worker wait for more to gather (larger batches,
        // each with one set of checkpoint writes and one commit) instead of
        // applying every few events the moment they land.
        if !batch.full {
            break;
        }
    }
    Ok(applied)
}

/// [`catch_up_all`] for one projection.
pub async fn catch_up(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: Option<&str>,
    batch_events_max: i64,
) -> Result<u64, ProjectionError> {
    catch_up_all(pool, &[projection], schema, batch_events_max).await
}

/// Tenants whose head is past `projection`'s checkpoint, creating their
/// missing checkpoint rows (reactors step tenant by tenant).
pub async fn lagging_tenants(
    pool: &PgPool,
    projection: &str,
) -> Result<Vec<TenantId>, ProjectionError> {
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(LAGGING)
        .bind(projection)
        .fetch_all(pool)
        .await?;
    if rows.iter().any(|(_, missing)| *missing) {
        let mut connection = pool.acquire().await?;
        ensure_checkpoints(&mut connection, &[projection]).await?;
    }
    Ok(rows
        .into_iter()
        .map(|(tenant, _)| TenantId::from_uuid(tenant))
        .collect())
}
