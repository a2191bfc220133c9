//! The projection runtime: applying one tenant's events in bounded batches,
//! each batch and its checkpoint in one transaction.
//!
//! A batch transaction first takes its lease: the checkpoint row of
//! (tenant, projection), locked `FOR UPDATE SKIP LOCKED`, together with a
//! shared advisory lock of the projection (which a rebuild's swap takes
//! exclusively). A worker that cannot get both skips the partition, so any
//! number of processes can run workers side by side and exactly one applies a
//! given batch. The read-table writes and the checkpoint advance commit
//! together: a crash at any instant loses or doubles nothing.

use aggregates::TenantId;
use async_trait::async_trait;
use eventstore::{EventStore, StoreError, StoredEvent};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// Most events applied in one batch transaction.
pub const BATCH_EVENTS_MAX: i64 = 1_000;

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

    /// Applies one tenant's events (consecutive, in tenant_seq order) inside
    /// `connection`'s transaction. Table names must be unqualified: during a
    /// rebuild the search path points at shadow tables.
    async fn apply(
        &self,
        connection: &mut PgConnection,
        tenant_id: TenantId,
        events: &[StoredEvent],
    ) -> Result<(), ApplyError>;
}

/// Why a batch could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("event at tenant_seq {tenant_seq}: {message}")]
    Event { tenant_seq: i64, message: String },
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
    #[error("unknown projection {0}")]
    Unknown(String),
}

impl From<sqlx::Error> for ProjectionError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(StoreError::from(error))
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Applied `events`, up to `last_seq`.
    Applied { events: usize, last_seq: i64 },
    /// Nothing new for this tenant.
    UpToDate,
    /// Another worker holds the partition (or a rebuild is swapping).
    Busy,
}

/// Advisory lock namespace of the per-projection lock (`ledger` in ASCII).
const LOCK_NAMESPACE: i32 = 0x6c65_6467;

/// The per-projection advisory lock key.
pub(crate) fn lock_key(projection: &str) -> i32 {
    let digest = blake3::hash(projection.as_bytes());
    i32::from_be_bytes([
        digest.as_bytes()[0],
        digest.as_bytes()[1],
        digest.as_bytes()[2],
        digest.as_bytes()[3],
    ])
}

const LEASE: &str = "\
    SELECT last_seq FROM projection_checkpoints \
    WHERE tenant_id = $1 AND projection = $2 AND pg_try_advisory_xact_lock_shared($3, $4) \
    FOR UPDATE SKIP LOCKED";

const ADVANCE: &str = "\
    UPDATE projection_checkpoints SET last_seq = $3, last_recorded_at = $4, updated_at = now() \
    WHERE tenant_id = $1 AND projection = $2";

const ENSURE_CHECKPOINTS: &str = "\
    INSERT INTO projection_checkpoints (tenant_id, projection, last_seq, updated_at) \
    SELECT tenant_id, $2, 0, now() FROM unnest($1::uuid[]) AS t(tenant_id) \
    ON CONFLICT DO NOTHING";

const LAGGING: &str = "\
    SELECT h.tenant_id, c.last_seq IS NULL AS missing \
    FROM chain_heads h \
    LEFT JOIN projection_checkpoints c ON c.tenant_id = h.tenant_id AND c.projection = $1 \
    WHERE h.last_seq > coalesce(c.last_seq, 0) \
    ORDER BY h.tenant_id";

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

/// Reads and applies the events of `tenant_id` after `checkpoint_seq` (up to
/// `until_seq` when given) on `connection`, and advances the checkpoint row
/// (which must exist). The caller owns the transaction.
pub(crate) async fn apply_after(
    connection: &mut PgConnection,
    projection: &dyn Projection,
    tenant_id: TenantId,
    checkpoint_seq: i64,
    until_seq: Option<i64>,
    batch_events_max: i64,
) -> Result<Option<(usize, i64)>, ProjectionError> {
    let limit = match until_seq {
        Some(until) if until <= checkpoint_seq => return Ok(None),
        Some(until) => batch_events_max.min(until - checkpoint_seq),
        None => batch_events_max,
    };
    let events = EventStore::read_tenant_on(connection, tenant_id, checkpoint_seq, limit).await?;
    let Some(last) = events.last() else {
        return Ok(None);
    };
    // The store's per-tenant order is gapless; a hole here is a defect.
    if events[0].tenant_seq != checkpoint_seq + 1
        || last.tenant_seq != checkpoint_seq + events.len() as i64
    {
        return Err(StoreError::Corrupt(format!(
            "tenant {tenant_id}: events after {checkpoint_seq} are not consecutive"
        ))
        .into());
    }
    let (last_seq, last_recorded_at) = (last.tenant_seq, last.recorded_at);
    projection
        .apply(connection, tenant_id, &events)
        .await
        .map_err(|error| ProjectionError::Apply {
            projection: projection.name().to_string(),
            tenant_id,
            error,
        })?;
    sqlx::query(ADVANCE)
        .bind(tenant_id.as_uuid())
        .bind(projection.name())
        .bind(last_seq)
        .bind(last_recorded_at)
        .execute(&mut *connection)
        .await?;
    Ok(Some((events.len(), last_seq)))
}

/// One batch for one tenant in its own transaction: take the lease, apply,
/// advance, commit. `schema` selects shadow tables (rebuilds, verification).
pub async fn step(
    pool: &PgPool,
    projection: &dyn Projection,
    tenant_id: TenantId,
    schema: Option<&str>,
    until_seq: Option<i64>,
    batch_events_max: i64,
) -> Result<Step, ProjectionError> {
    let mut transaction = pool.begin().await?;
    if let Some(schema) = schema {
        use_schema(&mut transaction, schema).await?;
    }
    let lease: Option<(i64,)> = sqlx::query_as(LEASE)
        .bind(tenant_id.as_uuid())
        .bind(projection.name())
        .bind(LOCK_NAMESPACE)
        .bind(lock_key(projection.name()))
        .fetch_optional(&mut *transaction)
        .await?;
    let Some((checkpoint_seq,)) = lease else {
        return Ok(Step::Busy);
    };
    let applied = apply_after(
        &mut transaction,
        projection,
        tenant_id,
        checkpoint_seq,
        until_seq,
        batch_events_max,
    )
    .await?;
    match applied {
        Some((events, last_seq)) => {
            transaction.commit().await?;
            Ok(Step::Applied { events, last_seq })
        }
        None => Ok(Step::UpToDate),
    }
}

/// Tenants whose head is past `projection`'s checkpoint (in `schema`'s
/// checkpoint table when given), creating their missing checkpoint rows.
pub async fn lagging_tenants(
    pool: &PgPool,
    projection: &str,
    schema: Option<&str>,
) -> Result<Vec<TenantId>, ProjectionError> {
    let mut transaction = pool.begin().await?;
    if let Some(schema) = schema {
        use_schema(&mut transaction, schema).await?;
    }
    let rows: Vec<(Uuid, bool)> = sqlx::query_as(LAGGING)
        .bind(projection)
        .fetch_all(&mut *transaction)
        .await?;
    let missing: Vec<Uuid> = rows
        .iter()
        .filter(|(_, missing)| *missing)
        .map(|(tenant, _)| *tenant)
        .collect();
    if !missing.is_empty() {
        sqlx::query(ENSURE_CHECKPOINTS)
            .bind(&missing)
            .bind(projection)
            .execute(&mut *transaction)
            .await?;
    }
    transaction.commit().await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, _)| TenantId::from_uuid(tenant))
        .collect())
}

/// Applies batches until no tenant lags (or every lagging one is busy with
/// another worker). Returns the events applied. This is the single step tests
/// and `ledger project --once` drive.
pub async fn catch_up(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: Option<&str>,
    batch_events_max: i64,
) -> Result<u64, ProjectionError> {
    let mut applied = 0u64;
    loop {
        let tenants = lagging_tenants(pool, projection.name(), schema).await?;
        let mut progressed = false;
        for tenant_id in tenants {
            while let Step::Applied { events, .. } =
                step(pool, projection, tenant_id, schema, None, batch_events_max).await?
            {
                applied += events as u64;
                progressed = true;
            }
        }
        if !progressed {
            return Ok(applied);
        }
    }
}
