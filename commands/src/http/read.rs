//! Reads of read tables: read-your-writes waits and tenant-scoped
//! transactions that a disconnecting client cannot cancel half way.

use super::error::ApiError;
use super::extract::{AsOfPoint, Seq};
use super::AppState;
use aggregates::TenantId;
use futures_core::future::BoxFuture;
use serde_json::json;
use sqlx::PgConnection;

/// Runs `read` in a read transaction scoped to `tenant_id` (row-level
/// security under the reader role), once `projection` has applied the
/// tenant's events through `min_seq` (bounded wait, then 503
/// `projection_lagging` with the projection's current seq). A `min_seq`
/// beyond the tenant's last seq can never be reached: 400 `min_seq_ahead`
/// at once, with the tenant's seq. Returns the read and the seq the
/// projection had reached.
///
/// The work runs in a task of its own: if the client goes away, the
/// transaction still ends cleanly instead of leaving a pooled connection
/// inside it.
pub async fn tenant_read<T, F>(
    state: &AppState,
    tenant_id: TenantId,
    projection: &'static str,
    min_seq: Option<Seq>,
    read: F,
) -> Result<(T, i64), ApiError>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>
        + Send
        + 'static,
{
    let pool = state.read_pool.clone();
    let checkpoints = state.checkpoints.clone();
    let bound = state.config.read_wait;
    let current = projections::read::checkpoint(&pool, projection, tenant_id)
        .await
        .map_err(|error| read_error(state, error))?;
    let min_seq = min_seq.map(|seq| seq.0);
    // Only a read that has to wait takes one of the tenant's waiting places,
    // and only while it waits.
    let waiting = match min_seq {
        Some(min_seq) if current < min_seq => {
            refuse_ahead(state, tenant_id, min_seq).await?;
            Some(state.waiters.try_acquire(tenant_id)?)
        }
        _ => None,
    };
    let task = tokio::spawn(async move {
        let reached = match (min_seq, waiting) {
            (Some(min_seq), Some(waiting)) => {
                let waited = checkpoints
                    .wait_for_seq(projection, tenant_id, min_seq, current, bound)
                    .await;
                drop(waiting);
                match waited {
                    Ok(reached) => reached,
                    Err(lagging) => return Ok(Err(lagging)),
                }
            }
            _ => current,
        };
        let mut transaction = projections::read::begin_tenant_read(&pool, tenant_id).await?;
        let value = read(&mut transaction).await?;
        transaction.commit().await?;
        Ok::<_, sqlx::Error>(Ok((value, reached)))
    });
    let result = task
        .await
        .map_err(|error| ApiError::Internal(format!("read task failed: {error}")))?
        .map_err(|error| read_error(state, error))?;
    result.map_err(|lagging| ApiError::Unavailable {
        code: "projection_lagging",
        message: format!(
            "the {projection} projection has not reached tenant_seq {} yet; retry shortly",
            lagging.requested
        ),
        details: json!({
            "projection": projection,
            "projection_seq": lagging.current,
            "min_seq": lagging.requested,
        }),
    })
}

/// A read's error as answered. A hot standby cancels a read that stands in
/// the way of its replay of the primary (SQLSTATE 40001 or 40P01), and the
/// replica's statement timeout cancels one held up behind that replay
/// (57014): retried shortly, either reads again, so both answer 503.
fn read_error(state: &AppState, error: sqlx::Error) -> ApiError {
    let code = match &error {
        sqlx::Error::Database(database) if state.reads_replica => database.code(),
        _ => None,
    };
    let message = match code.as_deref() {
        Some("40001" | "40P01") => "the read replica cancelled the read, which stood in the way of its replay; retry shortly",
        Some("57014") => "the read ran past the read replica's statement timeout (held up behind its replay, or slow there); retry shortly",
        _ => return error.into(),
    };
    tracing::warn!(%error, "the read replica cancelled a read");
    ApiError::Unavailable {
        code: "database_unavailable",
        message: message.into(),
        details: serde_json::Value::Null,
    }
}

/// How long past a time must be before a read or a report as of it is
/// final: a request is stamped when it is decided and commits a moment
/// later. An append more than `eventstore::APPEND_WITHIN` (4 s) after its
/// decision is refused and decided again at a new time, and a read as of
/// a time waits out the appends in flight (`EventStore::settle`), so a
/// time this far past (a second's margin for the clocks of several
/// processes) has every event recorded at or before it committed, and an
/// answer as of it is the same on any later day.
pub const CLOSED_AFTER: chrono::Duration = chrono::Duration::seconds(5);

/// When `at` closes, if it is not closed yet at `now` ([`CLOSED_AFTER`]).
pub fn closes_at(
    at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    (at > now - CLOSED_AFTER).then(|| at + CLOSED_AFTER)
}

/// `at`, once it is closed at `now` ([`closes_at`]); else 422
/// `as_of_open`, saying when it closes.
pub fn closed_as_of(
    at: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let Some(closes_at) = closes_at(at, now) else {
        return Ok(at);
    };
    Err(ApiError::Unprocessable {
        code: "as_of_open",
        message: format!(
            "{} is not closed yet: an answer as of a time is given once it is {} s past (from {}), so that it is the same on any later day; read now (no as_of), or as of a tenant_seq",
            rfc3339(&at),
            CLOSED_AFTER.num_seconds(),
            rfc3339(&closes_at)
        ),
        details: json!({"as_of": rfc3339(&at), "closes_at": rfc3339(&closes_at)}),
    })
}

/// `at`, once closed at the ledger's clock ([`closed_as_of`]), with the
/// tenant's appends in flight waited out (`EventStore::settle`), so that
/// every event stamped at or before it has committed
/// (`eventstore::closing`).
pub async fn settled_as_of(
    state: &AppState,
    tenant_id: TenantId,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let at = closed_as_of(at, state.bus.now())?;
    state.store.settle(tenant_id).await?;
    Ok(at)
}

/// `time` as the refusals of an open time write it (RFC 3339, UTC, `Z`).
pub fn rfc3339(time: &chrono::DateTime<chrono::Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The seq a balance `as_of` is taken at: the seq given, or the tenant's
/// last recorded at or before the time given, taken back to the end of the
/// request it falls in (a request's holds, account movements and entries
/// are one decision, never shown in part). Read from the events on the
/// primary: a replica's may not hold an acknowledged write yet, and the
/// read that follows waits for the seq found here. A seq past the tenant's
/// last is 422 `as_of_seq_ahead`, as for replays and reports.
pub async fn as_of_seq(
    state: &AppState,
    tenant_id: TenantId,
    as_of: AsOfPoint,
) -> Result<i64, ApiError> {
    // A time not yet closed is refused before anything is read.
    if let AsOfPoint::Time(time) = as_of {
        settled_as_of(state, tenant_id, time.get()).await?;
    }
    let mut reading = projections::read::begin_tenant_read(state.store.pool(), tenant_id).await?;
    let seq = match as_of {
        AsOfPoint::Seq(seq) => seq,
        AsOfPoint::Time(time) => {
            projections::journal::seq_at(&mut reading, tenant_id, time.get()).await?
        }
    };
    let head = state
        .store
        .chain_head(tenant_id)
        .await?
        .map_or(0, |head| head.seq);
    if seq > head {
        return Err(ApiError::Unprocessable {
            code: "as_of_seq_ahead",
            message: format!(
                "tenant_seq {seq} is beyond the tenant's last, {head}: balances as of it would change as the tenant goes on"
            ),
            details: json!({"as_of_seq": seq, "tenant_seq": head}),
        });
    }
    let seq = projections::journal::request_end(&mut reading, tenant_id, seq).await?;
    reading.commit().await?;
    Ok(seq)
}

/// 400 `min_seq_ahead` when `min_seq` is beyond the tenant's last seq (no
/// wait could reach it).
async fn refuse_ahead(state: &AppState, tenant_id: TenantId, min_seq: i64) -> Result<(), ApiError> {
    let tenant_seq = state
        .store
        .chain_head(tenant_id)
        .await?
        .map_or(0, |head| head.seq);
    if min_seq <= tenant_seq {
        return Ok(());
    }
    Err(ApiError::BadRequest {
        code: "min_seq_ahead",
        message: format!(
            "tenant_seq {min_seq} is beyond the tenant's last, {tenant_seq}: no wait can reach it"
        ),
        details: json!({"min_seq": min_seq, "tenant_seq": tenant_seq}),
    })
}

/// A read's query when it takes nothing but `min_seq`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Wait until the read tables have applied this tenant_seq.
    #[param(inline)]
    pub min_seq: Option<Seq>,
}

/// Where the next page after `items` starts (`limit` asked): the key of
/// its last item, or `None` when this page was the last.
pub fn next_after<T, K>(items: &[T], limit: i64, key: impl Fn(&T) -> K) -> Option<K> {
    (items.len() as i64 == limit)
        .then(|| items.last().map(key))
        .flatten()
}

/// The id of the `aggregate_type` aggregate holding entity `entity` `id`
/// (a refund's payment, a claim's commitment), from the store's index,
/// which is current whatever the read tables have applied; 404 when the
/// tenant has none.
pub async fn indexed_holder(
    state: &AppState,
    tenant_id: TenantId,
    (entity, id): (&str, &str),
    aggregate_type: &str,
) -> Result<String, ApiError> {
    let key = state
        .store
        .find_indexed(tenant_id, entity, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no {entity} {id}")))?;
    if key.aggregate_type != aggregate_type {
        return Err(ApiError::Internal(format!(
            "{entity} {id} is held by a {} aggregate, not a {aggregate_type}",
            key.aggregate_type
        )));
    }
    Ok(key.aggregate_id)
}
