//! Reading read tables on behalf of a tenant, isolated by row-level security,
//! and waiting for read-your-writes.

use aggregates::TenantId;
use sqlx::{PgPool, Postgres, Transaction};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Default bound of a `min_seq` wait.
pub const MIN_SEQ_WAIT_DEFAULT: Duration = Duration::from_secs(5);

/// How often a `min_seq` wait re-reads the checkpoint when no local worker
/// signals progress (workers in another process).
const MIN_SEQ_POLL: Duration = Duration::from_millis(20);

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

/// Waits until `projection` has applied `tenant_id`'s events through
/// `min_seq`, at most `bound`. Wakes on `progress` (bumped by this process's
/// workers) or every few milliseconds.
pub async fn wait_for_seq(
    pool: &PgPool,
    projection: &str,
    tenant_id: TenantId,
    min_seq: i64,
    bound: Duration,
    progress: &mut watch::Receiver<u64>,
) -> Result<Result<i64, Lagging>, sqlx::Error> {
    let deadline = Instant::now() + bound;
    loop {
        let current = checkpoint(pool, projection, tenant_id).await?;
        if current >= min_seq {
            return Ok(Ok(current));
        }
        let now = Instant::now();
        if now >= deadline {
            return Ok(Err(Lagging {
                requested: min_seq,
                current,
            }));
        }
        let pause = MIN_SEQ_POLL.min(deadline - now);
        // A closed channel only means no local workers: keep polling.
        let _ = tokio::time::timeout(pause, progress.changed()).await;
    }
}
