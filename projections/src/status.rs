//! The registry of projections (version, state, last error) and how far
//! behind each one is.

use crate::runtime::{lock_key, Projection, ProjectionError, REBUILD_LOCK_NAMESPACE};
use serde::Serialize;
use sqlx::PgPool;
use std::sync::Arc;

/// A projection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Live,
    Rebuilding,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Rebuilding => "rebuilding",
            Self::Failed => "failed",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "rebuilding" => Self::Rebuilding,
            "failed" => Self::Failed,
            _ => Self::Live,
        }
    }
}

/// What an operator needs to know about one projection.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionStatus {
    pub name: String,
    /// Version of the live tables.
    pub version: i32,
    pub state: State,
    /// Last error (failed batch or rebuild); `null` when healthy.
    pub error: Option<String>,
    /// Events applied, summed over tenants (the checkpoints).
    pub checkpoint: i64,
    /// Events appended but not yet applied, summed over tenants.
    pub events_behind: i64,
    /// Age of the oldest event not yet applied, in seconds (0 when current).
    pub seconds_behind: f64,
}

type StatusRow = (String, i32, String, Option<String>, i64, i64, f64);

const REGISTER: &str = "\
    INSERT INTO projections (projection, version, state, updated_at) \
    VALUES ($1, $2, 'live', now()) \
    ON CONFLICT (projection) DO NOTHING";

const VERSION: &str = "SELECT version FROM projections WHERE projection = $1";

const SET_STATE: &str = "\
    UPDATE projections SET state = $2, error = $3, updated_at = now() WHERE projection = $1";

// The first event each checkpoint waits for is one primary-key lookup per
// (projection, tenant): as a plain join, or a lateral one it may flatten
// (the LIMIT keeps it from that), the planner hashes the whole events
// table, every call (the /metrics refresher's, every 5 s).
const STATUS: &str = "\
    SELECT p.projection, p.version, p.state, p.error, \
           coalesce(sum(coalesce(c.last_seq, 0)), 0)::bigint AS checkpoint, \
           coalesce(sum(h.last_seq - coalesce(c.last_seq, 0)), 0)::bigint AS events_behind, \
           coalesce(extract(epoch FROM now() - min(e.recorded_at)), 0)::float8 AS seconds_behind \
    FROM projections p \
    CROSS JOIN chain_heads h \
    LEFT JOIN projection_checkpoints c ON c.tenant_id = h.tenant_id AND c.projection = p.projection \
    LEFT JOIN LATERAL ( \
        SELECT e.recorded_at FROM events e \
        WHERE e.tenant_id = h.tenant_id AND e.tenant_seq = coalesce(c.last_seq, 0) + 1 \
        LIMIT 1) e ON true \
    WHERE p.projection = ANY($1) \
    GROUP BY p.projection, p.version, p.state, p.error \
    ORDER BY p.projection";

/// A rebuild that stopped without finishing (its process was killed) left
/// its projection marked `rebuilding`: mark it live again, with a note, when
/// no rebuild of it holds the rebuild lock. Its live tables were never
/// touched; its shadow tables are dropped by the next rebuild.
const CLEAR_INTERRUPTED_REBUILD: &str = "\
    UPDATE projections SET state = 'live', error = 'a rebuild was interrupted', updated_at = now() \
    WHERE projection = $1 AND state = 'rebuilding' \
      AND pg_try_advisory_xact_lock($2, $3)";

/// Marks live again, with a note, each of `names` a rebuild left
/// `rebuilding` when it stopped without finishing (its process killed or
/// interrupted), once no rebuild holds its lock: every status read does,
/// so a running server shows it within one refresh of its gauges, not at
/// its next start. One indexed read when nothing is rebuilding.
async fn clear_interrupted_rebuilds(pool: &PgPool, names: &[&str]) -> Result<(), ProjectionError> {
    let rebuilding: Vec<(String,)> = sqlx::query_as(
        "SELECT projection FROM projections WHERE projection = ANY($1) AND state = 'rebuilding'",
    )
    .bind(names)
    .fetch_all(pool)
    .await?;
    for (name,) in rebuilding {
        sqlx::query(CLEAR_INTERRUPTED_REBUILD)
            .bind(&name)
            .bind(REBUILD_LOCK_NAMESPACE)
            .bind(lock_key(&name))
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// The advisory lock (two keys) a rebuild of `projection` holds while it
/// runs: `SELECT ... FROM pg_locks WHERE locktype = 'advisory' AND classid
/// = <first> AND objid = <second>` tells whether one does.
pub fn rebuild_lock(projection: &str) -> (i32, i32) {
    (REBUILD_LOCK_NAMESPACE, lock_key(projection))
}

/// Registers reactors not seen before (they share the registry with
/// projections, so their state and errors are visible the same way).
pub async fn register_reactors(pool: &PgPool, names: &[&str]) -> Result<(), ProjectionError> {
    for name in names {
        sqlx::query(REGISTER)
            .bind(name)
            .bind(1_i32)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Registers projections not seen before (their tables start empty and fill
/// from checkpoint 0) and clears interrupted rebuilds. Returns the
/// projections whose live tables were built by another version (to be
/// rebuilt).
pub async fn register(
    pool: &PgPool,
    projections: &[Arc<dyn Projection>],
) -> Result<Vec<Arc<dyn Projection>>, ProjectionError> {
    let names: Vec<&str> = projections
        .iter()
        .map(|projection| projection.name())
        .collect();
    clear_interrupted_rebuilds(pool, &names).await?;
    let mut stale = Vec::new();
    for projection in projections {
        sqlx::query(REGISTER)
            .bind(projection.name())
            .bind(projection.version())
            .execute(pool)
            .await?;
        let (version,): (i32,) = sqlx::query_as(VERSION)
            .bind(projection.name())
            .fetch_one(pool)
            .await?;
        if version != projection.version() {
            stale.push(projection.clone());
        }
    }
    Ok(stale)
}

/// Records a projection's state and error.
pub async fn set_state(
    pool: &PgPool,
    projection: &str,
    state: State,
    error: Option<&str>,
) -> Result<(), ProjectionError> {
    sqlx::query(SET_STATE)
        .bind(projection)
        .bind(state.as_str())
        .bind(error)
        .execute(pool)
        .await?;
    Ok(())
}

/// Status of the named projections (registered ones only), by name.
pub async fn status(
    pool: &PgPool,
    names: &[&str],
) -> Result<Vec<ProjectionStatus>, ProjectionError> {
    clear_interrupted_rebuilds(pool, names).await?;
    let rows: Vec<StatusRow> = sqlx::query_as(STATUS).bind(names).fetch_all(pool).await?;
    let mut statuses: Vec<ProjectionStatus> = rows
        .into_iter()
        .map(
            |(name, version, state, error, checkpoint, events_behind, seconds_behind)| {
                ProjectionStatus {
                    name,
                    version,
                    state: State::parse(&state),
                    error,
                    checkpoint,
                    events_behind,
                    seconds_behind: seconds_behind.max(0.0),
                }
            },
        )
        .collect();
    // Registered projections with no tenant yet have no rows in the join.
    let registered: Vec<(String, i32, String, Option<String>)> = sqlx::query_as(
        "SELECT projection, version, state, error FROM projections WHERE projection = ANY($1)",
    )
    .bind(names)
    .fetch_all(pool)
    .await?;
    for (name, version, state, error) in registered {
        if !statuses.iter().any(|status| status.name == name) {
            statuses.push(ProjectionStatus {
                name,
                version,
                state: State::parse(&state),
                error,
                checkpoint: 0,
                events_behind: 0,
                seconds_behind: 0.0,
            });
        }
    }
    statuses.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(statuses)
}
