//! Rebuilding a projection without downtime, and comparing live tables with
//! a fresh replay.
//!
//! A rebuild replays every tenant into shadow tables in a schema of its own
//! (`rebuild_<name>`, with its own checkpoint table) while the live tables keep
//! serving and the live workers keep applying. When the shadow has caught up,
//! one transaction takes the projection's advisory lock exclusively (live
//! batches finish first; new ones skip), applies the last events to the
//! shadow, drops the live tables, moves the shadow tables into their place,
//! replaces the checkpoints and records the version. Readers see the old
//! tables until that commit and the new ones after; they wait for the swap,
//! they never see an error or an empty table. Any error before the commit
//! drops the shadow schema and leaves the live tables untouched.

use crate::progress::Progress;
use crate::runtime::{
    apply_after, catch_up, lagging_tenants, lock_key, step, use_schema, Projection,
    ProjectionError, Step, BATCH_EVENTS_MAX,
};
use crate::status::{set_state, State};
use aggregates::TenantId;
use eventstore::database::quote_identifier;
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use std::time::Instant;
use uuid::Uuid;

/// Most differences a comparison reports per table.
pub const DIFFERENCES_MAX: i64 = 100;

/// Catch-up passes before the swap applies the rest under its lock.
const CATCH_UP_PASSES_MAX: usize = 8;

/// Advisory lock namespace held for a whole rebuild of one projection.
const REBUILD_LOCK_NAMESPACE: i32 = 0x6c65_6468;

/// Same as the runtime's per-projection lock namespace.
const LOCK_NAMESPACE: i32 = 0x6c65_6467;

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildReport {
    pub projection: String,
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
}

/// Creates `schema` holding empty copies (columns, keys, indexes, row-level
/// security) of the projection's tables and of the checkpoint table.
async fn create_shadow(
    connection: &mut PgConnection,
    schema: &str,
    projection: &dyn Projection,
) -> Result<(), sqlx::Error> {
    let quoted = quote_identifier(schema);
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {quoted} CASCADE"))
        .execute(&mut *connection)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {quoted}"))
        .execute(&mut *connection)
        .await?;
    for table in projection
        .tables()
        .iter()
        .chain(["projection_checkpoints"].iter())
    {
        let table = quote_identifier(table);
        sqlx::query(&format!(
            "CREATE TABLE {quoted}.{table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(&mut *connection)
        .await?;
        sqlx::query("SELECT ledger_secure_tenant_table($1::regclass)")
            .bind(format!("{quoted}.{table}"))
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

async fn drop_schema(pool: &PgPool, schema: &str) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quote_identifier(schema)
    ))
    .execute(pool)
    .await?;
    Ok(())
}

async fn total_events(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let (total,): (i64,) =
        sqlx::query_as("SELECT coalesce(sum(last_seq), 0)::bigint FROM chain_heads")
            .fetch_one(pool)
            .await?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Applies, on `connection` (inside its transaction, search path already on
/// the shadow schema), every event of every tenant the shadow has not seen,
/// up to `until` per tenant when given.
async fn top_up(
    connection: &mut PgConnection,
    projection: &dyn Projection,
    until: Option<&[(TenantId, i64)]>,
) -> Result<u64, ProjectionError> {
    let tenants: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT h.tenant_id, coalesce(c.last_seq, 0) FROM chain_heads h \
         LEFT JOIN projection_checkpoints c ON c.tenant_id = h.tenant_id AND c.projection = $1 \
         WHERE h.last_seq > coalesce(c.last_seq, 0)",
    )
    .bind(projection.name())
    .fetch_all(&mut *connection)
    .await?;
    let mut applied = 0;
    for (tenant, mut checkpoint_seq) in tenants {
        let tenant_id = TenantId::from_uuid(tenant);
        let until_seq = match until {
            Some(bounds) => match bounds
                .iter()
                .find(|(bound_tenant, _)| *bound_tenant == tenant_id)
            {
                Some((_, seq)) => Some(*seq),
                None => continue,
            },
            None => None,
        };
        sqlx::query(
            "INSERT INTO projection_checkpoints (tenant_id, projection, last_seq, updated_at) \
             VALUES ($1, $2, 0, now()) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(projection.name())
        .execute(&mut *connection)
        .await?;
        while let Some((events, last_seq)) = apply_after(
            connection,
            projection,
            tenant_id,
            checkpoint_seq,
            until_seq,
            BATCH_EVENTS_MAX,
        )
        .await?
        {
            applied += events as u64;
            checkpoint_seq = last_seq;
        }
    }
    Ok(applied)
}

/// Replays `projection` into shadow tables and swaps them in.
pub async fn rebuild(
    pool: &PgPool,
    projection: &dyn Projection,
    quiet: bool,
) -> Result<RebuildReport, ProjectionError> {
    let name = projection.name();
    let mut guard = pool.acquire().await?;
    let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)")
        .bind(REBUILD_LOCK_NAMESPACE)
        .bind(lock_key(name))
        .fetch_one(&mut *guard)
        .await?;
    if !locked {
        return Err(ProjectionError::RebuildRunning(name.to_string()));
    }
    let schema = format!("rebuild_{name}");
    let started = Instant::now();
    set_state(pool, name, State::Rebuilding, None).await?;
    let result = rebuild_into(pool, projection, &schema, quiet).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
        .bind(REBUILD_LOCK_NAMESPACE)
        .bind(lock_key(name))
        .execute(&mut *guard)
        .await;
    match result {
        Ok(events) => {
            let seconds = started.elapsed().as_secs_f64();
            Ok(RebuildReport {
                projection: name.to_string(),
                events,
                seconds,
                events_per_s: if seconds > 0.0 {
                    events as f64 / seconds
                } else {
                    0.0
                },
            })
        }
        Err(error) => {
            let _ = drop_schema(pool, &schema).await;
            let message = format!("rebuild failed: {error}");
            let _ = set_state(pool, name, State::Live, Some(&message)).await;
            Err(error)
        }
    }
}

async fn rebuild_into(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: &str,
    quiet: bool,
) -> Result<u64, ProjectionError> {
    let mut connection = pool.acquire().await?;
    create_shadow(&mut connection, schema, projection).await?;
    drop(connection);
    let mut progress = Progress::new(projection.name(), total_events(pool).await?, quiet);
    let mut events = 0;
    // Bulk of the replay, in ordinary batches, while the live tables serve;
    // then passes over what arrived meanwhile, until a pass is short.
    for _ in 0..CATCH_UP_PASSES_MAX {
        let applied = catch_up_reporting(pool, projection, schema, &mut progress).await?;
        events += applied;
        if applied < BATCH_EVENTS_MAX as u64 {
            break;
        }
    }
    // The swap: wait for live batches, apply the last events, move tables.
    let mut transaction = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(LOCK_NAMESPACE)
        .bind(lock_key(projection.name()))
        .execute(&mut *transaction)
        .await?;
    use_schema(&mut transaction, schema).await?;
    let last = top_up(&mut transaction, projection, None).await?;
    progress.advance(last);
    events += last;
    let quoted = quote_identifier(schema);
    sqlx::query("SELECT set_config('search_path', 'public', true)")
        .execute(&mut *transaction)
        .await?;
    for table in projection.tables() {
        let table = quote_identifier(table);
        sqlx::query(&format!("DROP TABLE public.{table}"))
            .execute(&mut *transaction)
            .await?;
        sqlx::query(&format!("ALTER TABLE {quoted}.{table} SET SCHEMA public"))
            .execute(&mut *transaction)
            .await?;
    }
    sqlx::query("DELETE FROM public.projection_checkpoints WHERE projection = $1")
        .bind(projection.name())
        .execute(&mut *transaction)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO public.projection_checkpoints SELECT * FROM {quoted}.projection_checkpoints WHERE projection = $1"
    ))
    .bind(projection.name())
    .execute(&mut *transaction)
    .await?;
    sqlx::query(&format!("DROP SCHEMA {quoted} CASCADE"))
        .execute(&mut *transaction)
        .await?;
    sqlx::query("UPDATE projections SET version = $2, state = 'live', error = NULL, updated_at = now() WHERE projection = $1")
        .bind(projection.name())
        .bind(projection.version())
        .execute(&mut *transaction)
        .await?;
    transaction.commit().await?;
    progress.finish();
    Ok(events)
}

async fn catch_up_reporting(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: &str,
    progress: &mut Progress,
) -> Result<u64, ProjectionError> {
    let mut applied = 0;
    for tenant_id in lagging_tenants(pool, projection.name(), Some(schema)).await? {
        while let Step::Applied { events, .. } = step(
            pool,
            projection,
            tenant_id,
            Some(schema),
            None,
            BATCH_EVENTS_MAX,
        )
        .await?
        {
            applied += events as u64;
            progress.advance(events as u64);
        }
    }
    Ok(applied)
}

/// A row that differs between a live table and a fresh replay.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Difference {
    pub table: String,
    /// The row's primary key.
    pub key: Value,
    /// The live row (`null` when the replay has a row the live table lacks).
    pub live: Option<Value>,
    /// The replayed row (`null` when the live table has a row the replay lacks).
    pub replay: Option<Value>,
}

/// Replays `projection` into scratch tables up to the live checkpoints and
/// compares them with the live tables, row by row. Live batches pause only
/// for the final top-up and the comparison.
pub async fn compare_with_replay(
    pool: &PgPool,
    projection: &dyn Projection,
    tenants: Option<&[TenantId]>,
) -> Result<Vec<Difference>, ProjectionError> {
    let schema = format!(
        "verify_{}_{}",
        projection.name(),
        &Uuid::now_v7().simple().to_string()[20..]
    );
    let result = compare_in(pool, projection, &schema, tenants).await;
    drop_schema(pool, &schema).await?;
    result
}

async fn live_checkpoints(
    connection: &mut PgConnection,
    projection: &str,
) -> Result<Vec<(TenantId, i64)>, sqlx::Error> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT tenant_id, last_seq FROM public.projection_checkpoints WHERE projection = $1",
    )
    .bind(projection)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, seq)| (TenantId::from_uuid(tenant), seq))
        .collect())
}

async fn compare_in(
    pool: &PgPool,
    projection: &dyn Projection,
    schema: &str,
    tenants: Option<&[TenantId]>,
) -> Result<Vec<Difference>, ProjectionError> {
    let selected = |checkpoints: Vec<(TenantId, i64)>| -> Vec<(TenantId, i64)> {
        match tenants {
            Some(tenants) => checkpoints
                .into_iter()
                .filter(|(tenant, _)| tenants.contains(tenant))
                .collect(),
            None => checkpoints,
        }
    };
    let mut connection = pool.acquire().await?;
    create_shadow(&mut connection, schema, projection).await?;
    let first = selected(live_checkpoints(&mut connection, projection.name()).await?);
    drop(connection);
    // The bulk, without holding up live workers.
    let mut transaction = pool.begin().await?;
    use_schema(&mut transaction, schema).await?;
    top_up(&mut transaction, projection, Some(&first)).await?;
    transaction.commit().await?;
    // The rest, with live batches paused so live tables match their checkpoints.
    let mut transaction = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind(LOCK_NAMESPACE)
        .bind(lock_key(projection.name()))
        .execute(&mut *transaction)
        .await?;
    let current = selected(live_checkpoints(&mut transaction, projection.name()).await?);
    use_schema(&mut transaction, schema).await?;
    top_up(&mut transaction, projection, Some(&current)).await?;
    sqlx::query("SELECT set_config('search_path', 'public', true)")
        .execute(&mut *transaction)
        .await?;
    let filter: Option<Vec<Uuid>> =
        tenants.map(|tenants| tenants.iter().map(TenantId::as_uuid).collect());
    let mut differences = Vec::new();
    for table in projection.tables() {
        differences
            .extend(compare_table(&mut transaction, schema, table, filter.as_deref()).await?);
    }
    transaction.commit().await?;
    Ok(differences)
}

/// Primary-key columns of `public.table`.
async fn key_columns(
    connection: &mut PgConnection,
    table: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT a.attname FROM pg_index i \
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
         WHERE i.indrelid = ($1::text)::regclass AND i.indisprimary \
         ORDER BY array_position(i.indkey, a.attnum)",
    )
    .bind(format!("public.{}", quote_identifier(table)))
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(|(name,)| name).collect())
}

async fn compare_table(
    connection: &mut PgConnection,
    schema: &str,
    table: &str,
    tenants: Option<&[Uuid]>,
) -> Result<Vec<Difference>, sqlx::Error> {
    let keys = key_columns(connection, table).await?;
    let quoted_table = quote_identifier(table);
    let only = "($2::uuid[] IS NULL OR tenant_id = ANY($2))";
    let live = format!("(SELECT * FROM public.{quoted_table} WHERE {only})");
    let replay = format!(
        "(SELECT * FROM {}.{quoted_table} WHERE {only})",
        quote_identifier(schema)
    );
    let rows: Vec<(String, Value)> = sqlx::query_as(&format!(
        "(SELECT 'live', to_jsonb(d) FROM ({live} EXCEPT ALL {replay}) d LIMIT $1) \
         UNION ALL \
         (SELECT 'replay', to_jsonb(d) FROM ({replay} EXCEPT ALL {live}) d LIMIT $1)"
    ))
    .bind(DIFFERENCES_MAX)
    .bind(tenants)
    .fetch_all(connection)
    .await?;
    let key_of = |row: &Value| -> Value {
        Value::Object(
            keys.iter()
                .map(|key| (key.clone(), row.get(key).cloned().unwrap_or(Value::Null)))
                .collect(),
        )
    };
    let mut differences: Vec<Difference> = Vec::new();
    for (side, row) in rows {
        let key = key_of(&row);
        let existing = differences
            .iter_mut()
            .find(|difference| difference.key == key);
        match (side.as_str(), existing) {
            ("live", Some(difference)) => difference.live = Some(row),
            ("live", None) => differences.push(Difference {
                table: table.to_string(),
                key,
                live: Some(row),
                replay: None,
            }),
            (_, Some(difference)) => difference.replay = Some(row),
            (_, None) => differences.push(Difference {
                table: table.to_string(),
                key,
                live: None,
                replay: Some(row),
            }),
        }
    }
    Ok(differences)
}

/// Catches the live tables of `projection` up (for callers that want a
/// projection current before comparing or reporting).
pub async fn catch_up_live(
    pool: &PgPool,
    projection: &dyn Projection,
) -> Result<u64, ProjectionError> {
    catch_up(pool, projection, None, BATCH_EVENTS_MAX).await
}
