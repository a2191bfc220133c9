//! Comparing a projection's live read tables with a fresh replay of its
//! events (what `ledger verify` does for every projection).
//!
//! The replay goes into scratch copies of the projection's tables, created as
//! temporary tables of one database session: nothing is written to the
//! ledger's own schema, and closing the session drops them. Each tenant is
//! replayed up to its live checkpoint. A tenant whose history the projection
//! cannot replay (an event missing below the checkpoint, an event the
//! projection refuses) is a [`ReplayFailure`] naming the tenant and the
//! tenant_seq; its rows are left out of the comparison and every other
//! tenant is still replayed and compared. Only operational errors (the
//! database going away) end a comparison early. The last events are applied
//! with the projection's live batches paused, so that the live tables agree
//! with their checkpoints while the rows are compared. A table of one row
//! per event is filtered in memory as the replay goes instead, the database
//! comparing only what is not certainly equal ([`crate::event_rows`]).

use crate::event_rows::{identity, ranges_of, EventRow, RowCheck, Scope};
use crate::progress::Progress;
use crate::runtime::{
    covering_ranges, is_refusal, lock_key, ApplyError, Projection, ProjectionError,
    BATCH_EVENTS_MAX, LOCK_NAMESPACE,
};
use aggregates::TenantId;
use eventstore::database::quote_identifier;
use eventstore::{EventStore, StoredEvent, TenantRange};
use serde::Serialize;
use serde_json::Value;
use sqlx::{Connection, PgConnection, PgPool};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::mpsc;
use uuid::Uuid;

/// Pages of events another reader of the same history hands over (each page
/// one tenant's, in seq order, and a tenant's pages in seq order), so that a
/// comparison need not read them again: see [`compare_all_with_replay_fed`].
pub type EventFeed = mpsc::Receiver<Arc<Vec<StoredEvent>>>;

/// Events a comparison gathers from its feed before applying them, as far
/// as the pages already handed over go (a batch may hold up to one page
/// more, and one tenant's run a whole page).
const FED_BATCH_EVENTS: usize = 10_000;

/// Most differing rows a comparison lists per table (the first by key);
/// [`Comparison::differing_rows`] counts them all.
pub const DIFFERENCES_MAX: i64 = 100;

/// Tenants replayed together in one batch read from the store (each up to
/// [`BATCH_EVENTS_MAX`] events, so such a batch holds at most 10,000
/// events).
const TENANTS_PER_BATCH: usize = 10;

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

/// A tenant whose history the projection could not replay: its rows were
/// not compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayFailure {
    pub tenant_id: TenantId,
    /// The event the replay stopped at.
    pub tenant_seq: i64,
    pub message: String,
}

/// What a comparison found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Comparison {
    /// The first [`DIFFERENCES_MAX`] differing rows of each table, by key.
    pub differences: Vec<Difference>,
    /// How many rows differ in each table that has any, listed or not.
    pub differing_rows: BTreeMap<String, u64>,
    pub failures: Vec<ReplayFailure>,
    /// Tenants whose next event after the live checkpoint the projection
    /// refuses: the live workers are held back there for good.
    pub stuck: Vec<ReplayFailure>,
}

impl Comparison {
    /// Nothing differs, every tenant replayed, and none is stuck.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty() && self.failures.is_empty() && self.stuck.is_empty()
    }
}

/// Replays `projection` (only `tenants` when given) into scratch tables up to
/// the live checkpoints and compares them with the live tables, row by row.
/// Live batches pause only for the final top-up and the comparison. Shows
/// progress (events replayed) unless `quiet`.
pub async fn compare_with_replay(
    pool: &PgPool,
    projection: &dyn Projection,
    tenants: Option<&[TenantId]>,
    quiet: bool,
) -> Result<Comparison, ProjectionError> {
    let mut comparisons = compare_all_with_replay(pool, &[projection], tenants, quiet).await?;
    Ok(comparisons.pop().unwrap_or_default())
}

/// [`compare_with_replay`] for several projections at once: each event is
/// read once and applied by every projection (each into its own scratch
/// tables, with its own failures). One comparison per projection, in order.
pub async fn compare_all_with_replay(
    pool: &PgPool,
    projections: &[&dyn Projection],
    tenants: Option<&[TenantId]>,
    quiet: bool,
) -> Result<Vec<Comparison>, ProjectionError> {
    // A session of its own, closed afterwards: the scratch tables are its
    // temporary tables, and its search path is changed for the replay.
    let connection = pool.acquire().await?.detach();
    compare_all_with_replay_fed(connection, projections, tenants, quiet, None).await
}

/// [`compare_all_with_replay`] on `connection`, a session of its own
/// (detached from any pool: it is changed for the replay, and closed at the
/// end), replaying first the events `feed` hands over (until its sender is
/// dropped) instead of reading them; whatever the feed leaves out (a tenant
/// it skips or stops short of the checkpoint, a hole in its seqs) is then
/// read from the store as usual, where a missing event is found and named.
/// Whoever feeds it may hold a pooled connection while it waits for the
/// comparison to take a page: the comparison needs none from the pool.
pub async fn compare_all_with_replay_fed(
    mut connection: PgConnection,
    projections: &[&dyn Projection],
    tenants: Option<&[TenantId]>,
    quiet: bool,
    feed: Option<EventFeed>,
) -> Result<Vec<Comparison>, ProjectionError> {
    let result = compare_on(&mut connection, projections, tenants, quiet, feed).await;
    let _ = connection.close().await;
    result
}

async fn compare_on(
    connection: &mut PgConnection,
    projections: &[&dyn Projection],
    tenants: Option<&[TenantId]>,
    quiet: bool,
    feed: Option<EventFeed>,
) -> Result<Vec<Comparison>, ProjectionError> {
    create_scratch_tables(&mut *connection, projections).await?;
    // The bulk, without holding up live workers.
    let bounds = all_live_checkpoints(&mut *connection, projections, tenants).await?;
    let mut scratch = Scratch::new(projections, &bounds, quiet);
    if let Some(feed) = feed {
        scratch.replay_fed(&mut *connection, feed, &bounds).await?;
    }
    scratch.replay_up_to(&mut *connection, &bounds).await?;
    // The rest, with live batches paused so the live tables match their
    // checkpoints.
    let mut transaction = connection.begin().await?;
    pause_live_batches(&mut transaction, projections).await?;
    let bounds = all_live_checkpoints(&mut transaction, projections, tenants).await?;
    scratch.replay_up_to(&mut transaction, &bounds).await?;
    let mut comparisons = compare_replays(&mut transaction, &mut scratch, tenants).await?;
    transaction.commit().await?;
    // What is replayed past the checkpoints is not compared.
    scratch.compare_rows = false;
    probe_past_checkpoints(
        &mut *connection,
        &mut scratch,
        &bounds,
        tenants,
        &mut comparisons,
    )
    .await?;
    scratch.progress.finish();
    Ok(comparisons)
}

/// Creates the session's scratch copies of the projections' tables, which
/// unqualified names then resolve to.
async fn create_scratch_tables(
    connection: &mut PgConnection,
    projections: &[&dyn Projection],
) -> Result<(), sqlx::Error> {
    // Unqualified names resolve to the scratch tables first. Changing the
    // search path also makes PostgreSQL re-parse any statement this session
    // prepared before, so none of them keeps pointing at a live table.
    sqlx::query("SELECT set_config('search_path', 'pg_temp, public', false)")
        .execute(&mut *connection)
        .await?;
    // The scratch tables stay in the session's own buffers (set before its
    // first temporary table), and each table's comparison joins in memory.
    // Both are ceilings, taken only as far as the tables need them.
    sqlx::query("SELECT set_config('temp_buffers', $1, false), set_config('work_mem', $2, false)")
        .bind(SCRATCH_BUFFERS)
        .bind(COMPARE_WORK_MEM)
        .execute(&mut *connection)
        .await?;
    for table in projections
        .iter()
        .flat_map(|projection| projection.tables())
    {
        let table = quote_identifier(table);
        sqlx::query(&format!(
            "CREATE TEMPORARY TABLE {table} (LIKE public.{table} INCLUDING ALL)"
        ))
        .execute(&mut *connection)
        .await?;
    }
    Ok(())
}

/// Most memory the session keeps its scratch tables in before spilling.
const SCRATCH_BUFFERS: &str = "256MB";

/// Memory a table's comparison may join in before spilling.
const COMPARE_WORK_MEM: &str = "64MB";

/// Each projection's live checkpoints, in order.
async fn all_live_checkpoints(
    connection: &mut PgConnection,
    projections: &[&dyn Projection],
    tenants: Option<&[TenantId]>,
) -> Result<Vec<BTreeMap<TenantId, i64>>, sqlx::Error> {
    let mut bounds = Vec::with_capacity(projections.len());
    for projection in projections {
        bounds.push(live_checkpoints(&mut *connection, projection.name(), tenants).await?);
    }
    Ok(bounds)
}

/// Holds the projections' live batches until `connection`'s transaction
/// ends.
async fn pause_live_batches(
    connection: &mut PgConnection,
    projections: &[&dyn Projection],
) -> Result<(), sqlx::Error> {
    let mut locks: Vec<i32> = projections
        .iter()
        .map(|projection| lock_key(projection.name()))
        .collect();
    // Always in one order, so two comparisons never wait on each other.
    locks.sort_unstable();
    for lock in locks {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(LOCK_NAMESPACE)
            .bind(lock)
            .execute(&mut *connection)
            .await?;
    }
    Ok(())
}

/// Compares each projection's scratch tables with its live ones, leaving
/// out the tenants its replay failed: one comparison per projection, in
/// order.
async fn compare_replays(
    connection: &mut PgConnection,
    scratch: &mut Scratch<'_>,
    tenants: Option<&[TenantId]>,
) -> Result<Vec<Comparison>, ProjectionError> {
    let only: Option<Vec<Uuid>> =
        tenants.map(|tenants| tenants.iter().map(TenantId::as_uuid).collect());
    let mut comparisons = Vec::with_capacity(scratch.replays.len());
    for replay in &mut scratch.replays {
        let failed: Vec<Uuid> = replay.failures.keys().map(TenantId::as_uuid).collect();
        let mut differences = Vec::new();
        let mut differing_rows = BTreeMap::new();
        for table in replay.projection.tables() {
            let (listed, total) = match replay.projection.event_rows() {
                Some(event_rows) if event_rows.table() == *table => {
                    let rows = std::mem::take(&mut replay.rows);
                    let replayed = (&replay.failures, &replay.applied);
                    crate::event_rows::finish(
                        &mut *connection,
                        event_rows,
                        rows,
                        replayed,
                        only.as_deref(),
                    )
                    .await?
                }
                _ => compare_table(&mut *connection, table, only.as_deref(), &failed, None).await?,
            };
            if total > 0 {
                differing_rows.insert(table.to_string(), total);
            }
            differences.extend(listed);
        }
        comparisons.push(Comparison {
            differences,
            differing_rows,
            failures: replay.failures.values().cloned().collect(),
            stuck: Vec::new(),
        });
    }
    Ok(comparisons)
}

/// Finds the partitions the live workers cannot move past: replays on, in
/// the scratch tables (compared already), every tenant's events after its
/// live checkpoint up to its head. An event a projection refuses there is
/// one the live workers refuse too, holding that tenant back for good: it
/// goes to [`Comparison::stuck`]. Events that apply are only lag.
async fn probe_past_checkpoints(
    connection: &mut PgConnection,
    scratch: &mut Scratch<'_>,
    live: &[BTreeMap<TenantId, i64>],
    tenants: Option<&[TenantId]>,
    comparisons: &mut [Comparison],
) -> Result<(), ProjectionError> {
    let mut heads: BTreeMap<TenantId, i64> =
        crate::rebuild::current_heads(&mut *connection).await?;
    heads.retain(|tenant, _| tenants.is_none_or(|tenants| tenants.contains(tenant)));
    let bounds: Vec<BTreeMap<TenantId, i64>> = live
        .iter()
        .map(|checkpoints| {
            heads
                .iter()
                .filter(|(tenant, head)| **head > checkpoints.get(tenant).copied().unwrap_or(0))
                .map(|(tenant, head)| (*tenant, *head))
                .collect()
        })
        .collect();
    let before: Vec<Vec<TenantId>> = scratch
        .replays
        .iter()
        .map(|replay| replay.failures.keys().copied().collect())
        .collect();
    scratch.replay_up_to(connection, &bounds).await?;
    for (index, replay) in scratch.replays.iter().enumerate() {
        comparisons[index].stuck = replay
            .failures
            .values()
            .filter(|failure| !before[index].contains(&failure.tenant_id))
            .cloned()
            .collect();
    }
    Ok(())
}

/// The live checkpoints of `projection`, of `tenants` when given.
async fn live_checkpoints(
    connection: &mut PgConnection,
    projection: &str,
    tenants: Option<&[TenantId]>,
) -> Result<BTreeMap<TenantId, i64>, sqlx::Error> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT tenant_id, last_seq FROM public.projection_checkpoints WHERE projection = $1",
    )
    .bind(projection)
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant, seq)| (TenantId::from_uuid(tenant), seq))
        .filter(|(tenant, _)| tenants.is_none_or(|tenants| tenants.contains(tenant)))
        .collect())
}

/// The scratch replays, fed from one read of the events.
struct Scratch<'a> {
    replays: Vec<Replay<'a>>,
    progress: Progress,
    /// Whether the event rows replayed are set beside the live ones (up
    /// to the checkpoints; not past them).
    compare_rows: bool,
}

/// One projection's scratch replay: how far each tenant got, and the
/// tenants that failed.
struct Replay<'a> {
    projection: &'a dyn Projection,
    applied: HashMap<TenantId, i64>,
    failures: BTreeMap<TenantId, ReplayFailure>,
    /// Tenants whose fed events stopped being contiguous: the rest of them
    /// is read from the store.
    unfed: HashSet<TenantId>,
    /// The comparison of its event-rows table under way, if it has one.
    rows: RowCheck,
}

/// One tenant's events of a batch.
struct Run<'e> {
    tenant_id: TenantId,
    events: Vec<&'e StoredEvent>,
}

impl<'a> Scratch<'a> {
    /// Empty replays of `projections`, with progress counted up to the
    /// furthest of the `bounds`.
    fn new(
        projections: &[&'a dyn Projection],
        bounds: &[BTreeMap<TenantId, i64>],
        quiet: bool,
    ) -> Self {
        let total = bounds
            .iter()
            .flat_map(BTreeMap::values)
            .map(|seq| u64::try_from(*seq).unwrap_or(0))
            .max()
            .unwrap_or(0);
        let names: Vec<&str> = projections
            .iter()
            .map(|projection| projection.name())
            .collect();
        Self {
            replays: projections
                .iter()
                .map(|projection| Replay {
                    projection: *projection,
                    applied: HashMap::new(),
                    failures: BTreeMap::new(),
                    unfed: HashSet::new(),
                    rows: RowCheck::default(),
                })
                .collect(),
            progress: Progress::new(&format!("compare {}", names.join(", ")), total, quiet),
            compare_rows: true,
        }
    }

    /// Applies every tenant's events up to each projection's bound for it
    /// (`bounds[i]` for the `i`th), batch by batch: each batch is read once
    /// and applied by each projection in a transaction of its own (or a
    /// savepoint when `connection` is inside one).
    async fn replay_up_to(
        &mut self,
        connection: &mut PgConnection,
        bounds: &[BTreeMap<TenantId, i64>],
    ) -> Result<(), ProjectionError> {
        let mut pending: Vec<TenantRange> = self.ranges(bounds);
        while !pending.is_empty() {
            let take = pending.len().min(TENANTS_PER_BATCH);
            let ranges: Vec<TenantRange> = pending.drain(..take).collect();
            let events =
                EventStore::read_tenants_on(&mut *connection, &ranges, BATCH_EVENTS_MAX).await?;
            self.progress.advance(events.len() as u64);
            let compare_rows = self.compare_rows;
            for (index, replay) in self.replays.iter_mut().enumerate() {
                let mut runs = Vec::with_capacity(ranges.len());
                for range in &ranges {
                    let Some(until_seq) = bounds[index].get(&range.tenant_id).copied() else {
                        continue;
                    };
                    if replay.failures.contains_key(&range.tenant_id) {
                        continue;
                    }
                    let after_seq = replay.applied.get(&range.tenant_id).copied().unwrap_or(0);
                    if until_seq <= after_seq {
                        continue;
                    }
                    let own = TenantRange {
                        tenant_id: range.tenant_id,
                        after_seq,
                        until_seq,
                    };
                    let run: Vec<&StoredEvent> = events
                        .iter()
                        .filter(|event| {
                            event.tenant_id == own.tenant_id
                                && event.tenant_seq > own.after_seq
                                && event.tenant_seq <= own.until_seq
                        })
                        .collect();
                    // A read cut by its limit before this projection's part.
                    let cut = i64::try_from(
                        events
                            .iter()
                            .filter(|e| e.tenant_id == own.tenant_id)
                            .count(),
                    )
                    .is_ok_and(|read| read >= BATCH_EVENTS_MAX);
                    if run.is_empty() && cut {
                        continue;
                    }
                    if let Some((tenant_seq, message)) = missing_event(&own, &run, cut) {
                        replay.fail(own.tenant_id, tenant_seq, message);
                        continue;
                    }
                    runs.push(Run {
                        tenant_id: own.tenant_id,
                        events: run,
                    });
                }
                replay
                    .apply_runs(&mut *connection, &runs, compare_rows)
                    .await?;
            }
            // Tenants with events left go round again.
            let remaining = self.ranges(bounds);
            for range in ranges {
                if let Some(left) = remaining
                    .iter()
                    .find(|left| left.tenant_id == range.tenant_id)
                {
                    pending.push(*left);
                }
            }
        }
        Ok(())
    }

    /// Replays the pages `feed` hands over, gathered into batches of up to
    /// about [`FED_BATCH_EVENTS`] (what has arrived), each projection up to
    /// its bound for a tenant.
    async fn replay_fed(
        &mut self,
        connection: &mut PgConnection,
        mut feed: EventFeed,
        bounds: &[BTreeMap<TenantId, i64>],
    ) -> Result<(), ProjectionError> {
        while let Some(page) = feed.recv().await {
            let mut pages = vec![page];
            let mut gathered = pages[0].len();
            while gathered < FED_BATCH_EVENTS {
                match feed.try_recv() {
                    Ok(page) => {
                        gathered += page.len();
                        pages.push(page);
                    }
                    Err(_) => break,
                }
            }
            self.progress.advance(within(&pages, bounds));
            let compare_rows = self.compare_rows;
            for (index, replay) in self.replays.iter_mut().enumerate() {
                let runs = replay.fed_runs(&pages, &bounds[index]);
                replay
                    .apply_runs(&mut *connection, &runs, compare_rows)
                    .await?;
            }
        }
        Ok(())
    }

    /// Per tenant, what some projection still has to replay: from the
    /// lowest point a projection (not failed there) reached to the highest
    /// bound.
    fn ranges(&self, bounds: &[BTreeMap<TenantId, i64>]) -> Vec<TenantRange> {
        covering_ranges(
            self.replays
                .iter()
                .zip(bounds)
                .flat_map(|(replay, bounds)| {
                    bounds
                        .iter()
                        .filter(|(tenant_id, _)| !replay.failures.contains_key(tenant_id))
                        .map(|(tenant_id, until_seq)| {
                            let after_seq = replay.applied.get(tenant_id).copied().unwrap_or(0);
                            (*tenant_id, after_seq, *until_seq)
                        })
                }),
        )
    }
}

impl Replay<'_> {
    fn fail(&mut self, tenant_id: TenantId, tenant_seq: i64, message: String) {
        self.failures.entry(tenant_id).or_insert(ReplayFailure {
            tenant_id,
            tenant_seq,
            message,
        });
    }

    /// Each tenant's run of fed `pages` this replay applies next: the events
    /// right after the last it applied, up to its `bounds`, as long as their
    /// seqs run on without a gap (a tenant with a gap is left to the store).
    fn fed_runs<'e>(
        &mut self,
        pages: &'e [Arc<Vec<StoredEvent>>],
        bounds: &BTreeMap<TenantId, i64>,
    ) -> Vec<Run<'e>> {
        let mut runs: Vec<Run<'e>> = Vec::new();
        let mut run_of: HashMap<TenantId, usize> = HashMap::new();
        // The tenant of the event before, and its run and bound (`None`
        // when it is not fed). A fed page holds one tenant's events, so the
        // maps are looked up once per page, not once per event; a page that
        // mixed tenants would still be taken apart right.
        let mut current: Option<(TenantId, Option<(usize, i64)>)> = None;
        for event in pages.iter().flat_map(|page| page.iter()) {
            let tenant_id = event.tenant_id;
            if current.is_none_or(|(tenant, _)| tenant != tenant_id) {
                let fed = self.fed_run(tenant_id, bounds, &mut runs, &mut run_of);
                current = Some((tenant_id, fed));
            }
            let Some((_, Some((index, until_seq)))) = current else {
                continue;
            };
            if event.tenant_seq > until_seq {
                continue;
            }
            let run = &mut runs[index];
            let last = run.events.last().map_or_else(
                || self.applied.get(&tenant_id).copied().unwrap_or(0),
                |event| event.tenant_seq,
            );
            if event.tenant_seq == last + 1 {
                run.events.push(event);
            } else if event.tenant_seq > last + 1 {
                self.unfed.insert(tenant_id);
                current = Some((tenant_id, None));
            }
        }
        runs.retain(|run| !run.events.is_empty());
        runs
    }

    /// The index in `runs` of `tenant_id`'s run (opened when it has none)
    /// and its bound; `None` when the tenant has no bound, failed, or is
    /// left to the store.
    fn fed_run(
        &self,
        tenant_id: TenantId,
        bounds: &BTreeMap<TenantId, i64>,
        runs: &mut Vec<Run<'_>>,
        run_of: &mut HashMap<TenantId, usize>,
    ) -> Option<(usize, i64)> {
        let until_seq = bounds.get(&tenant_id).copied()?;
        if self.failures.contains_key(&tenant_id) || self.unfed.contains(&tenant_id) {
            return None;
        }
        let index = *run_of.entry(tenant_id).or_insert_with(|| {
            runs.push(Run {
                tenant_id,
                events: Vec::new(),
            });
            runs.len() - 1
        });
        Some((index, until_seq))
    }

    /// Applies `runs` together; when the projection refuses, finds the tenant
    /// (and the event) it refuses, records it, and applies the others. The
    /// event rows they give are set beside the live ones when
    /// `compare_rows`.
    async fn apply_runs(
        &mut self,
        connection: &mut PgConnection,
        runs: &[Run<'_>],
        compare_rows: bool,
    ) -> Result<(), ProjectionError> {
        let events: Vec<&StoredEvent> = runs.iter().flat_map(|run| run.events.clone()).collect();
        if events.is_empty() {
            return Ok(());
        }
        match self.try_apply(connection, &events, compare_rows).await? {
            Ok(rows) => {
                for run in runs {
                    if let Some(last) = run.events.last() {
                        self.applied.insert(run.tenant_id, last.tenant_seq);
                    }
                }
                if compare_rows {
                    self.set_beside_live(connection, runs, rows).await?;
                }
                Ok(())
            }
            Err(refusal) if runs.len() == 1 => {
                let (tenant_seq, message) = self
                    .locate(connection, &events, refusal, compare_rows)
                    .await?;
                self.fail(runs[0].tenant_id, tenant_seq, message);
                Ok(())
            }
            Err(_) => {
                for run in runs {
                    Box::pin(self.apply_runs(connection, std::slice::from_ref(run), compare_rows))
                        .await?;
                }
                Ok(())
            }
        }
    }

    /// Sets the event rows `runs` gave (`rows`) beside the live rows of the
    /// same seqs, when the projection has such a table.
    async fn set_beside_live(
        &mut self,
        connection: &mut PgConnection,
        runs: &[Run<'_>],
        rows: Vec<EventRow>,
    ) -> Result<(), ProjectionError> {
        let Some(event_rows) = self.projection.event_rows() else {
            return Ok(());
        };
        if !self.rows.knows_table() {
            // Read once, checked again at the end (`finish`): a table
            // swapped in meanwhile is another table for good.
            let first = identity(&mut *connection, event_rows.table()).await?;
            self.rows.note_table(first);
        }
        let ranges = ranges_of(
            runs.iter()
                .map(|run| (run.tenant_id, run.events.as_slice())),
        );
        let live = event_rows.live(&mut *connection, &ranges).await?;
        let unequal = self.rows.compare(rows, live);
        if !unequal.is_empty() {
            event_rows.write(&mut *connection, &unequal).await?;
        }
        Ok(())
    }

    /// The event of one tenant's run the projection refuses, and why.
    async fn locate(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
        refusal: ApplyError,
        rows_apart: bool,
    ) -> Result<(i64, String), ProjectionError> {
        if let Some(refused) = refusal.refused_at(None) {
            return Ok(refused);
        }
        // A write the database refused: apply one event at a time (the
        // tenant is left out of the comparison, so what is applied here
        // does not matter) until it is refused again.
        for event in events {
            if let Err(refusal) = self.try_apply(connection, &[*event], rows_apart).await? {
                let (_, message) = refusal
                    .refused_at(Some(event))
                    .unwrap_or((event.tenant_seq, String::new()));
                return Ok((event.tenant_seq, message));
            }
        }
        Ok((
            events.first().map_or(0, |event| event.tenant_seq),
            refusal.to_string(),
        ))
    }

    /// Applies `events` in a transaction (or savepoint) of their own: with
    /// `rows_apart`, all but the projection's event rows, which it returns.
    /// The outer `Err` is operational; the inner one is the projection (or
    /// the database, on its behalf) refusing the events, rolled back.
    async fn try_apply(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
        rows_apart: bool,
    ) -> Result<Result<Vec<EventRow>, ApplyError>, ProjectionError> {
        let mut transaction = connection.begin().await?;
        let applied = match self.projection.event_rows() {
            Some(event_rows) if rows_apart => event_rows.apply_rest(&mut transaction, events).await,
            _ => self
                .projection
                .apply(&mut transaction, events)
                .await
                .map(|()| Vec::new()),
        };
        match applied {
            Ok(rows) => {
                transaction.commit().await?;
                Ok(Ok(rows))
            }
            Err(error) if is_refusal(&error) => {
                transaction.rollback().await?;
                Ok(Err(error))
            }
            Err(error) => Err(ProjectionError::Apply {
                projection: self.projection.name().to_string(),
                tenant_id: events
                    .first()
                    .map_or(TenantId::from_uuid(Uuid::nil()), |event| event.tenant_id),
                error,
            }),
        }
    }
}

/// Events of `pages` some projection replays: at or below the highest of
/// their tenant's bounds.
fn within(pages: &[Arc<Vec<StoredEvent>>], bounds: &[BTreeMap<TenantId, i64>]) -> u64 {
    let mut highest: HashMap<TenantId, i64> = HashMap::new();
    for (tenant_id, until_seq) in bounds.iter().flatten() {
        let bound = highest.entry(*tenant_id).or_insert(*until_seq);
        *bound = (*bound).max(*until_seq);
    }
    pages
        .iter()
        .flat_map(|page| page.iter())
        .filter(|event| {
            highest
                .get(&event.tenant_id)
                .is_some_and(|until_seq| event.tenant_seq <= *until_seq)
        })
        .count() as u64
}

/// The first event missing from a tenant's run, if any: a hole, or an end
/// short of the bound although the read was not `cut` by its limit.
fn missing_event(range: &TenantRange, run: &[&StoredEvent], cut: bool) -> Option<(i64, String)> {
    let mut expected = range.after_seq + 1;
    for event in run {
        if event.tenant_seq != expected {
            return Some((
                expected,
                format!(
                    "tenant_seq {expected} is missing: the next event is tenant_seq {}",
                    event.tenant_seq
                ),
            ));
        }
        expected += 1;
    }
    if expected <= range.until_seq && !cut {
        return Some((
            expected,
            format!(
                "tenant_seq {expected} is missing: the live tables have applied events up to tenant_seq {}",
                range.until_seq
            ),
        ));
    }
    None
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

/// Columns of `public.table` whose text a reader may take otherwise than
/// the database compares it (`numeric`: `30000.00` equals `30000`;
/// `jsonb`: `1.0` equals `1`), and the others.
async fn columns_by_reading(
    connection: &mut PgConnection,
    table: &str,
) -> Result<(Vec<String>, Vec<String>), sqlx::Error> {
    let rows: Vec<(String, bool)> = sqlx::query_as(
        "SELECT attname, atttypid IN ('numeric'::regtype, 'jsonb'::regtype, 'json'::regtype) \
         FROM pg_attribute \
         WHERE attrelid = ($1::text)::regclass AND attnum > 0 AND NOT attisdropped \
         ORDER BY attnum",
    )
    .bind(format!("public.{}", quote_identifier(table)))
    .fetch_all(connection)
    .await?;
    let (textual, typed): (Vec<_>, Vec<_>) = rows.into_iter().partition(|(_, textual)| *textual);
    let names = |columns: Vec<(String, bool)>| columns.into_iter().map(|(name, _)| name).collect();
    Ok((names(textual), names(typed)))
}

/// Rows of `table` that differ between the live table and the scratch one,
/// for `tenants` (all when `None`) except `excluded`, and only the rows in
/// `scope` when given (an event-rows table): the two joined on the primary
/// key (both sides stream in key order), keeping rows that are missing on
/// one side or differ in any column: the first [`DIFFERENCES_MAX`] by key,
/// and how many differ in all. `numeric` and JSON columns are compared as
/// text, as the ledger reads them: `30000.00` for a `numeric` 30000, or
/// `1.0` for a `jsonb` 1, is equal to the database but not to a reader
/// that takes it as an integer (a balance, a scheduled request), so it
/// differs; the other columns by their type's equality (exact for the
/// types read tables hold: text, uuid, integers, times, booleans).
pub(crate) async fn compare_table(
    connection: &mut PgConnection,
    table: &str,
    tenants: Option<&[Uuid]>,
    excluded: &[Uuid],
    scope: Option<&Scope<'_>>,
) -> Result<(Vec<Difference>, u64), sqlx::Error> {
    let keys = key_columns(connection, table).await?;
    let (textual, typed) = columns_by_reading(connection, table).await?;
    let quoted_table = quote_identifier(table);
    // A row missing on one side has NULL keys there, which differ.
    let differs = typed
        .iter()
        .map(|column| {
            let column = quote_identifier(column);
            format!("l.{column} IS DISTINCT FROM r.{column}")
        })
        .chain(textual.iter().map(|column| {
            let column = quote_identifier(column);
            format!("l.{column}::text IS DISTINCT FROM r.{column}::text")
        }))
        .collect::<Vec<_>>()
        .join(" OR ");
    let mut only =
        "($2::uuid[] IS NULL OR x.tenant_id = ANY($2)) AND NOT (x.tenant_id = ANY($3))".to_string();
    if scope.is_some() {
        only = format!("{only} AND {}", Scope::CONDITION);
    }
    let join = keys
        .iter()
        .map(|key| {
            let key = quote_identifier(key);
            format!("l.{key} = r.{key}")
        })
        .collect::<Vec<_>>()
        .join(" AND ");
    let order = keys
        .iter()
        .map(|key| {
            let key = quote_identifier(key);
            format!("coalesce(l.{key}, r.{key})")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let statement = format!(
        "SELECT CASE WHEN l IS NULL THEN NULL ELSE to_jsonb(l) END, \
                CASE WHEN r IS NULL THEN NULL ELSE to_jsonb(r) END, \
                count(*) OVER () \
         FROM (SELECT * FROM public.{quoted_table} AS x WHERE {only}) l \
         FULL JOIN (SELECT * FROM pg_temp.{quoted_table} AS x WHERE {only}) r ON {join} \
         WHERE {differs} \
         ORDER BY {order} \
         LIMIT $1"
    );
    let mut query = sqlx::query_as::<_, (Option<Value>, Option<Value>, i64)>(&statement)
        .bind(DIFFERENCES_MAX)
        .bind(tenants)
        .bind(excluded);
    if let Some(scope) = scope {
        query = scope.bind(query);
    }
    let rows = query.fetch_all(connection).await?;
    let key_of = |row: &Value| -> Value {
        Value::Object(
            keys.iter()
                .map(|key| (key.clone(), row.get(key).cloned().unwrap_or(Value::Null)))
                .collect(),
        )
    };
    let total = rows
        .first()
        .map_or(0, |(_, _, total)| u64::try_from(*total).unwrap_or(0));
    // In key order, as the statement sorts them.
    let differences: Vec<Difference> = rows
        .into_iter()
        .filter_map(|(live, replay, _)| {
            let key = key_of(live.as_ref().or(replay.as_ref())?);
            Some(Difference {
                table: table.to_string(),
                key,
                live,
                replay,
            })
        })
        .collect();
    Ok((differences, total))
}

#[cfg(test)]
mod tests;
