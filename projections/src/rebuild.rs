//! Rebuilding a projection without downtime (comparing live tables with a
//! fresh replay is in `compare`).
//!
//! A rebuild replays every tenant into shadow tables in a schema of its own
//! (`rebuild_<names>`, with its own checkpoint table) while the live tables
//! keep serving and the live workers keep applying. Several projections
//! rebuild in one pass: each page of events is read once and applied by all
//! of them. When the shadow has caught up, one transaction takes the
//! projections' advisory locks exclusively (live batches finish first; new
//! ones skip), applies the last events to the shadow, drops the live tables,
//! moves the shadow tables into their place, replaces the checkpoints and
//! records the versions. Readers see the old
//! tables until that commit and the new ones after; they wait for the swap,
//! they never see an error or an empty table. Any error before the commit
//! drops the shadow schema and leaves the live tables untouched.

use crate::bulk;
pub use crate::bulk::HeldBack;
use crate::progress::Progress;
use crate::runtime::{
    apply_leases, catch_up, ensure_checkpoints, lease, lock_key, use_schema, ApplyError,
    Projection, ProjectionError, BATCH_EVENTS_MAX, LEASES_MAX, LOCK_NAMESPACE,
    REBUILD_LOCK_NAMESPACE,
};
use crate::status::{register, set_state, State};
use aggregates::TenantId;
use eventstore::database::quote_identifier;
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// Most bulk passes of a rebuild (each up to the heads as it starts); a
/// ledger growing faster than a rebuild replays would otherwise never be
/// caught.
const BULK_PASSES_MAX: usize = 100;

/// Once a bulk pass reads fewer events than this, the swap applies the rest
/// under its lock.
const SWAP_LEFTOVER_MAX: u64 = 1_000;

/// Most times a swap is tried; a swap refused by an event (one appended
/// after the last bulk pass) is followed by another bulk pass.
const SWAP_ATTEMPTS_MAX: usize = 3;

/// Longest schema name PostgreSQL keeps.
const IDENTIFIER_MAX: usize = 63;

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildReport {
    /// The projections rebuilt together.
    pub projections: Vec<String>,
    /// Events replayed (each read once, whatever the number of projections).
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    /// Tenants a projection could not apply: swapped in held back at the
    /// event refused (as the live workers hold them), every other tenant
    /// rebuilt. Empty when the rebuild is complete.
    pub held_back: Vec<HeldBack>,
}

impl RebuildReport {
    /// The report as `ledger rebuild` prints it: what was rebuilt, how much
    /// and how fast, then every tenant held back.
    pub fn render(&self) -> String {
        let mut out = format!(
            "{}: {} events in {:.2} s ({:.0} events/s)\n",
            self.projections.join(", "),
            self.events,
            self.seconds,
            self.events_per_s
        );
        for held in &self.held_back {
            out.push_str(&format!(
                "{}: tenant {} held back at tenant_seq {}: {}\n",
                held.projection, held.tenant_id, held.tenant_seq, held.error
            ));
        }
        out
    }
}

/// Which projections `ledger rebuild` rebuilds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every projection.
    All,
    /// Those whose version in code differs from the one their tables were
    /// built with.
    Stale,
    /// These, by name.
    Named(Vec<String>),
}

/// Rebuilds the projections of `catalog` that `selection` picks, together
/// (see [`rebuild_many`]): `ledger rebuild`. For `Stale` and `Named` the
/// catalog is registered first; a name not in it is refused before anything
/// is rebuilt.
pub async fn rebuild_selected(
    pool: &PgPool,
    catalog: Vec<Arc<dyn Projection>>,
    selection: Selection,
    quiet: bool,
) -> Result<RebuildReport, ProjectionError> {
    let selected = match selection {
        Selection::All => catalog,
        Selection::Stale => register(pool, &catalog).await?,
        Selection::Named(names) => {
            register(pool, &catalog).await?;
            let mut selected = Vec::new();
            for name in names {
                // A name given twice is one projection to rebuild.
                if selected
                    .iter()
                    .any(|projection: &Arc<dyn Projection>| projection.name() == name)
                {
                    continue;
                }
                let found = catalog
                    .iter()
                    .find(|projection| projection.name() == name)
                    .cloned();
                selected.push(found.ok_or_else(|| {
                    ProjectionError::Unknown {
                        known: catalog
                            .iter()
                            .map(|projection| projection.name().to_string())
                            .collect(),
                        name,
                    }
                })?);
            }
            selected
        }
    };
    let selected: Vec<&dyn Projection> = selected.iter().map(AsRef::as_ref).collect();
    rebuild_many(pool, &selected, quiet).await
}

/// The shadow schema of a rebuild of `projections`.
fn shadow_schema(projections: &[&dyn Projection]) -> String {
    let names: Vec<&str> = projections
        .iter()
        .map(|projection| projection.name())
        .collect();
    let schema = format!("rebuild_{}", names.join("_"));
    if schema.len() <= IDENTIFIER_MAX {
        schema
    } else {
        let digest = blake3::hash(names.join(",").as_bytes()).to_hex();
        format!("rebuild_{}", &digest[..16])
    }
}

/// Creates `schema` holding empty copies (columns, keys, indexes, row-level
/// security) of the projections' tables and of the checkpoint table.
async fn create_shadow(
    connection: &mut PgConnection,
    schema: &str,
    projections: &[&dyn Projection],
) -> Result<(), sqlx::Error> {
    let quoted = quote_identifier(schema);
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {quoted} CASCADE"))
        .execute(&mut *connection)
        .await?;
    sqlx::query(&format!("CREATE SCHEMA {quoted}"))
        .execute(&mut *connection)
        .await?;
    for table in projections
        .iter()
        .flat_map(|projection| projection.tables().iter())
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

/// Every tenant's head seq (of the tenants with events), in the order of
/// the collection asked for.
pub(crate) async fn current_heads<'e, C>(
    executor: impl sqlx::PgExecutor<'e>,
) -> Result<C, sqlx::Error>
where
    C: FromIterator<(TenantId, i64)>,
{
    let rows: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT tenant_id, last_seq FROM public.chain_heads WHERE last_seq > 0")
            .fetch_all(executor)
            .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, seq)| (TenantId::from_uuid(tenant), seq))
        .collect())
}

async fn total_events(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let (total,): (i64,) =
        sqlx::query_as("SELECT coalesce(sum(last_seq), 0)::bigint FROM chain_heads")
            .fetch_one(pool)
            .await?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Applies, on `connection` (inside its transaction, search path already on
/// the shadow schema), every event the shadow has not seen, up to `until` per
/// tenant when given (only those tenants).
async fn top_up(
    connection: &mut PgConnection,
    projections: &[&dyn Projection],
    until: Option<&HashMap<TenantId, i64>>,
    held_back: &[HeldBack],
) -> Result<u64, ProjectionError> {
    let names: Vec<&str> = projections
        .iter()
        .map(|projection| projection.name())
        .collect();
    ensure_checkpoints(connection, &names).await?;
    let mut applied = 0;
    loop {
        let mut leases = lease(connection, projections, LEASES_MAX).await?;
        if let Some(bounds) = until {
            leases.retain(|lease| bounds.contains_key(&lease.tenant_id));
        }
        leases.retain(|lease| {
            !is_held_back(held_back, projections[lease.projection], lease.tenant_id)
        });
        let events = apply_leases(connection, projections, &leases, until, BATCH_EVENTS_MAX)
            .await?
            .events;
        if events == 0 {
            return Ok(applied);
        }
        applied += events;
    }
}

/// Replays `projection` into shadow tables and swaps them in.
pub async fn rebuild(
    pool: &PgPool,
    projection: &dyn Projection,
    quiet: bool,
) -> Result<RebuildReport, ProjectionError> {
    rebuild_many(pool, &[projection], quiet).await
}

/// Tries of a rebuild lock, 100 ms apart, before another rebuild is taken
/// to hold it.
const REBUILD_LOCK_TRIES: u32 = 10;

/// Takes the rebuild lock of every projection on `connection`, or none.
async fn lock_rebuilds(
    connection: &mut PgConnection,
    projections: &[&dyn Projection],
) -> Result<(), ProjectionError> {
    for (index, projection) in projections.iter().enumerate() {
        // A status read clearing an interrupted rebuild holds the lock for
        // the length of one statement: tried for up to a second.
        let mut locked = false;
        for _ in 0..REBUILD_LOCK_TRIES {
            (locked,) = sqlx::query_as("SELECT pg_try_advisory_lock($1, $2)")
                .bind(REBUILD_LOCK_NAMESPACE)
                .bind(lock_key(projection.name()))
                .fetch_one(&mut *connection)
                .await?;
            if locked {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if !locked {
            unlock_rebuilds(connection, &projections[..index]).await;
            return Err(ProjectionError::RebuildRunning(
                projection.name().to_string(),
            ));
        }
    }
    Ok(())
}

async fn unlock_rebuilds(connection: &mut PgConnection, projections: &[&dyn Projection]) {
    for projection in projections {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(REBUILD_LOCK_NAMESPACE)
            .bind(lock_key(projection.name()))
            .execute(&mut *connection)
            .await;
    }
}

/// Replays `projections` together (each event read once, applied by all)
/// into shadow tables and swaps them all in at once.
pub async fn rebuild_many(
    pool: &PgPool,
    projections: &[&dyn Projection],
    quiet: bool,
) -> Result<RebuildReport, ProjectionError> {
    let names: Vec<String> = projections
        .iter()
        .map(|projection| projection.name().to_string())
        .collect();
    if projections.is_empty() {
        return Ok(RebuildReport {
            projections: names,
            events: 0,
            seconds: 0.0,
            events_per_s: 0.0,
            held_back: Vec::new(),
        });
    }
    let mut guard = pool.acquire().await?;
    lock_rebuilds(&mut guard, projections).await?;
    let schema = shadow_schema(projections);
    let started = Instant::now();
    let mut result = Ok((0, Vec::new()));
    for projection in projections {
        if let Err(error) = set_state(pool, projection.name(), State::Rebuilding, None).await {
            result = Err(error);
            break;
        }
    }
    if result.is_ok() {
        result = rebuild_into(pool, projections, &schema, quiet).await;
    }
    // A failed rebuild's shadow schema goes while the lock is still held:
    // once it is released, another rebuild may set up a schema of the same
    // name, which a later drop would take with it.
    if result.is_err() {
        let _ = drop_schema(pool, &schema).await;
    }
    unlock_rebuilds(&mut guard, projections).await;
    match result {
        Ok((events, held_back)) => {
            record_held_back(pool, projections, &held_back).await;
            let seconds = started.elapsed().as_secs_f64();
            Ok(RebuildReport {
                projections: names,
                events,
                seconds,
                events_per_s: if seconds > 0.0 {
                    events as f64 / seconds
                } else {
                    0.0
                },
                held_back,
            })
        }
        Err(error) => {
            let message = format!("rebuild failed: {error}");
            for projection in projections {
                let _ = set_state(pool, projection.name(), State::Live, Some(&message)).await;
            }
            Err(error)
        }
    }
}

async fn rebuild_into(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: &str,
    quiet: bool,
) -> Result<(u64, Vec<HeldBack>), ProjectionError> {
    let names: Vec<&str> = projections
        .iter()
        .map(|projection| projection.name())
        .collect();
    let mut connection = pool.acquire().await?;
    create_shadow(&mut connection, schema, projections).await?;
    drop(connection);
    let mut progress = Progress::new(&names.join(", "), total_events(pool).await?, quiet);
    let mut events = 0;
    let mut held_back: Vec<HeldBack> = Vec::new();
    for attempt in 1..=SWAP_ATTEMPTS_MAX {
        let (heads, read) =
            bulk_passes(pool, projections, schema, &mut held_back, &mut progress).await?;
        events += read;
        refuse_when_nothing_applies(projections, &heads, &held_back)?;
        match swap(pool, projections, schema, &held_back).await {
            Ok(last) => {
                progress.advance(last);
                progress.finish();
                return Ok((events + last, held_back));
            }
            // An event the projection refuses came after the last bulk
            // pass: the swap rolled back, and the next bulk pass holds its
            // tenant back, as it holds every other.
            Err(ProjectionError::Apply { .. }) if attempt < SWAP_ATTEMPTS_MAX => {}
            Err(error) => return Err(error),
        }
    }
    Err(ProjectionError::Store(eventstore::StoreError::Contention(
        format!("the rebuild's swap was refused {SWAP_ATTEMPTS_MAX} times"),
    )))
}

/// The bulk of the replay, in large batches, while the live tables serve,
/// until what is left is small (the swap applies the rest under its lock).
/// A tenant held back stays out of the later passes. Returns the heads
/// replayed to and the events read.
async fn bulk_passes(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: &str,
    held_back: &mut Vec<HeldBack>,
    progress: &mut Progress,
) -> Result<(HashMap<TenantId, i64>, u64), ProjectionError> {
    let mut events = 0;
    let mut heads = HashMap::new();
    for _ in 0..BULK_PASSES_MAX {
        heads = current_heads(pool).await?;
        let until: Vec<HashMap<TenantId, i64>> = projections
            .iter()
            .map(|projection| {
                heads
                    .iter()
                    .filter(|(tenant_id, _)| !is_held_back(held_back, *projection, **tenant_id))
                    .map(|(tenant_id, seq)| (*tenant_id, *seq))
                    .collect()
            })
            .collect();
        let (read, more) = bulk::replay(pool, projections, schema, &until, progress).await?;
        held_back.extend(more);
        events += read;
        if read < SWAP_LEFTOVER_MAX {
            break;
        }
    }
    Ok((heads, events))
}

/// The swap, in one transaction: waits for the live batches, applies the
/// last events to the shadow (not the tenants held back), moves the shadow
/// tables and checkpoints into place and records the versions. Returns the
/// events applied.
async fn swap(
    pool: &PgPool,
    projections: &[&dyn Projection],
    schema: &str,
    held_back: &[HeldBack],
) -> Result<u64, ProjectionError> {
    let names: Vec<&str> = projections
        .iter()
        .map(|projection| projection.name())
        .collect();
    let mut transaction = pool.begin().await?;
    // In key order, as every other taker of these locks takes them (a
    // comparison of verify), so two never wait on each other.
    let mut keys: Vec<i32> = names.iter().map(|name| lock_key(name)).collect();
    keys.sort_unstable();
    for key in keys {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_NAMESPACE)
            .bind(key)
            .execute(&mut *transaction)
            .await?;
    }
    use_schema(&mut transaction, schema).await?;
    let last = top_up(&mut transaction, projections, None, held_back).await?;
    let quoted = quote_identifier(schema);
    sqlx::query("SELECT set_config('search_path', 'public', true)")
        .execute(&mut *transaction)
        .await?;
    let tables: Vec<&str> = projections
        .iter()
        .flat_map(|projection| projection.tables().iter().copied())
        .collect();
    lock_live_tables(&mut transaction, &tables).await?;
    for table in tables {
        let live_indexes = indexes(&mut transaction, table).await?;
        let quoted_table = quote_identifier(table);
        sqlx::query(&format!("DROP TABLE public.{quoted_table}"))
            .execute(&mut *transaction)
            .await?;
        sqlx::query(&format!(
            "ALTER TABLE {quoted}.{quoted_table} SET SCHEMA public"
        ))
        .execute(&mut *transaction)
        .await?;
        keep_index_names(&mut transaction, table, live_indexes).await?;
    }
    sqlx::query("DELETE FROM public.projection_checkpoints WHERE projection = ANY($1)")
        .bind(&names)
        .execute(&mut *transaction)
        .await?;
    sqlx::query(&format!(
        "INSERT INTO public.projection_checkpoints SELECT * FROM {quoted}.projection_checkpoints WHERE projection = ANY($1)"
    ))
    .bind(&names)
    .execute(&mut *transaction)
    .await?;
    sqlx::query(&format!("DROP SCHEMA {quoted} CASCADE"))
        .execute(&mut *transaction)
        .await?;
    for projection in projections {
        sqlx::query("UPDATE projections SET version = $2, state = 'live', error = NULL, updated_at = now() WHERE projection = $1")
            .bind(projection.name())
            .bind(projection.version())
            .execute(&mut *transaction)
            .await?;
    }
    transaction.commit().await?;
    Ok(last)
}

/// How long the swap waits for its live tables before giving way to the
/// readers (and trying again): well under PostgreSQL's deadlock check.
const SWAP_LOCK_WAIT: &str = "100ms";

/// How often a swap still giving way to readers says so in the log.
const SWAP_LOCK_WARN_EVERY: u32 = 100;

/// Locks every live table of the swap at once, before any is dropped. A
/// reader holding one of them while it asks for another (a join reads
/// two) would deadlock with tables dropped one by one, and PostgreSQL
/// would fail one of the two. A try that waits past [`SWAP_LOCK_WAIT`]
/// (or meets a deadlock) lets go of what it took, so the reader goes on,
/// and tries again, for as long as it takes: the swap waited before, too,
/// and giving up would throw the replay away. One savepoint for every try
/// (rolled back to, never nested).
async fn lock_live_tables(
    transaction: &mut PgConnection,
    tables: &[&str],
) -> Result<(), ProjectionError> {
    let listed: Vec<String> = tables
        .iter()
        .map(|table| format!("public.{}", quote_identifier(table)))
        .collect();
    let lock = format!("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE", listed.join(", "));
    sqlx::query(&format!("SET LOCAL lock_timeout = '{SWAP_LOCK_WAIT}'"))
        .execute(&mut *transaction)
        .await?;
    sqlx::query("SAVEPOINT swap_locks")
        .execute(&mut *transaction)
        .await?;
    let mut tried: u32 = 0;
    loop {
        match sqlx::query(&lock).execute(&mut *transaction).await {
            Ok(_) => break,
            Err(error) if gives_way(&error) => {
                sqlx::query("ROLLBACK TO SAVEPOINT swap_locks")
                    .execute(&mut *transaction)
                    .await?;
                tried += 1;
                if tried.is_multiple_of(SWAP_LOCK_WARN_EVERY) {
                    tracing::warn!(tried, tables = ?tables, "the rebuild's swap still waits for readers of the live tables");
                }
                // Readers that queued behind this try go first.
                tokio::time::sleep(std::time::Duration::from_millis(
                    20 + u64::from(tried % 7) * 5,
                ))
                .await;
            }
            Err(error) => return Err(error.into()),
        }
    }
    sqlx::query("RELEASE SAVEPOINT swap_locks")
        .execute(&mut *transaction)
        .await?;
    sqlx::query("SET LOCAL lock_timeout TO DEFAULT")
        .execute(&mut *transaction)
        .await?;
    Ok(())
}

/// Whether a try of the swap's locks should let go and try again: a lock
/// not granted within `lock_timeout` (55P03), or a deadlock PostgreSQL
/// broke by failing it (40P01, when `deadlock_timeout` is set below the
/// swap's wait).
fn gives_way(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .and_then(|error| error.code())
        .is_some_and(|code| code == "55P03" || code == "40P01")
}

/// The indexes of live table `table`: (definition without its name and
/// table, name).
async fn indexes(
    connection: &mut PgConnection,
    table: &str,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT regexp_replace(pg_get_indexdef(i.indexrelid), \
                               '^CREATE (UNIQUE )?INDEX \\S+ ON \\S+ ', 'CREATE \\1INDEX ON '), \
                c.relname::text \
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
         WHERE i.indrelid = format('public.%I', $1::text)::regclass \
         ORDER BY c.relname",
    )
    .bind(table)
    .fetch_all(&mut *connection)
    .await
}

/// Gives the indexes of `table`, just moved in from the shadow, the names
/// the live table's had (`live`): PostgreSQL named the shadow's own (`LIKE
/// ... INCLUDING ALL` keeps no index name), and migrations name indexes.
async fn keep_index_names(
    connection: &mut PgConnection,
    table: &str,
    mut live: Vec<(String, String)>,
) -> Result<(), sqlx::Error> {
    for (definition, name) in indexes(connection, table).await? {
        let Some(position) = live.iter().position(|(kept, _)| *kept == definition) else {
            continue;
        };
        let (_, live_name) = live.remove(position);
        if live_name != name {
            sqlx::query(&format!(
                "ALTER INDEX public.{} RENAME TO {}",
                quote_identifier(&name),
                quote_identifier(&live_name)
            ))
            .execute(&mut *connection)
            .await?;
        }
    }
    Ok(())
}

fn is_held_back(held_back: &[HeldBack], projection: &dyn Projection, tenant_id: TenantId) -> bool {
    held_back
        .iter()
        .any(|held| held.tenant_id == tenant_id && held.projection == projection.name())
}

/// A projection that could apply none of the tenants (a defect in its new
/// version, say) is not swapped in: the rebuild fails naming the first
/// tenant, and the live tables stay as they are.
fn refuse_when_nothing_applies(
    projections: &[&dyn Projection],
    heads: &HashMap<TenantId, i64>,
    held_back: &[HeldBack],
) -> Result<(), ProjectionError> {
    for projection in projections {
        let mine: Vec<&HeldBack> = held_back
            .iter()
            .filter(|held| held.projection == projection.name())
            .collect();
        if let Some(first) = mine.first() {
            if mine.len() >= heads.len() {
                return Err(ProjectionError::Apply {
                    projection: first.projection.clone(),
                    tenant_id: first.tenant_id,
                    error: ApplyError::Event {
                        tenant_seq: first.tenant_seq,
                        message: first.error.clone(),
                    },
                });
            }
        }
    }
    Ok(())
}

/// Marks each projection swapped in with tenants held back as failed,
/// naming them (the live workers retry them and mark it live once they
/// apply).
async fn record_held_back(pool: &PgPool, projections: &[&dyn Projection], held_back: &[HeldBack]) {
    for projection in projections {
        let mine: Vec<String> = held_back
            .iter()
            .filter(|held| held.projection == projection.name())
            .map(|held| {
                format!(
                    "tenant {}: event at tenant_seq {}: {}",
                    held.tenant_id, held.tenant_seq, held.error
                )
            })
            .collect();
        if !mine.is_empty() {
            let message = format!("rebuilt with tenants held back: {}", mine.join("; "));
            let _ = set_state(pool, projection.name(), State::Failed, Some(&message)).await;
        }
    }
}

/// Catches the live tables of `projection` up (for callers that want a
/// projection current before comparing or reporting).
pub async fn catch_up_live(
    pool: &PgPool,
    projection: &dyn Projection,
) -> Result<u64, ProjectionError> {
    catch_up(pool, projection, None, BATCH_EVENTS_MAX).await
}
