//! Appending to the store: events, their idempotency records and the new chain
//! head, for any number of tenants, in one statement (one transaction, one
//! round trip).
//!
//! A writer builds a [`TenantBatch`] per tenant from the [`ChainHead`] it last
//! saw. Pushing a command assigns its events their tenant_seq and hash right
//! away, so the caller can answer with them. The statement then locks the
//! tenants' head rows in tenant order, advances each head whose seq and hash
//! are still the expected ones (compare-and-set) and inserts only those
//! tenants' rows. A tenant whose head moved (another process appended) is
//! reported back untouched; its writer reloads and decides again. The head row
//! lock is held until commit, so a tenant's seqs are gapless and assigned in
//! commit order.

use crate::chain::{to_stored_precision, ChainHash, EventFields, GENESIS};
use crate::error::{constraint_violation, StoreError};
use crate::idempotency::{EventSummary, Fingerprint, IdempotencyKey, IdempotencyRecord};
use crate::load::AggregateKey;
use crate::read::JsonText;
use crate::EventStore;
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{Connection, PgConnection, Row};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// How often a single-command append retries after its tenant's head moved.
const HEAD_MOVED_ATTEMPTS_MAX: u32 = 32;

/// Upper bound of the first random pause of a single-command append whose
/// tenant's head moved; doubled per attempt up to [`HEAD_MOVED_PAUSE_MAX`].
const HEAD_MOVED_PAUSE_FIRST: Duration = Duration::from_micros(200);

/// Longest pause between two attempts of a single-command append.
const HEAD_MOVED_PAUSE_MAX: Duration = Duration::from_millis(20);

/// A random pause before retry number `attempt` (1 for the first retry):
/// uniform up to `first` doubled per earlier attempt, capped at `max`.
/// Writers that collided spread out instead of colliding again in lockstep.
pub fn jittered_pause(attempt: u32, first: Duration, max: Duration) -> Duration {
    let ceiling = first
        .saturating_mul(1 << attempt.saturating_sub(1).min(16))
        .min(max);
    // Without entropy the pause is the ceiling: still bounded, still a pause.
    let random = getrandom::u64().unwrap_or(u64::MAX);
    let micros = u64::try_from(ceiling.as_micros()).unwrap_or(u64::MAX);
    Duration::from_micros(random % micros.max(1) + 1)
}

/// The head of a tenant's chain: its last seq, last hash and last time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    pub tenant_id: TenantId,
    pub seq: i64,
    pub hash: ChainHash,
    /// recorded_at of the last event; `None` before the first.
    pub recorded_at: Option<DateTime<Utc>>,
}

impl ChainHead {
    /// The head of a tenant with no events.
    pub fn genesis(tenant_id: TenantId) -> Self {
        Self {
            tenant_id,
            seq: 0,
            hash: GENESIS,
            recorded_at: None,
        }
    }

    /// The time to stamp on the next command: `now` at stored precision, but
    /// never earlier than the last event, so recorded_at never decreases
    /// along tenant_seq (and "as of a time" maps to one seq).
    pub fn stamp(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let now = to_stored_precision(now);
        match self.recorded_at {
            Some(last) if last > now => last,
            _ => now,
        }
    }
}

/// An event to append, before it has a place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// The aggregate's next sequence: one past the version the decision saw.
    pub aggregate_seq: i64,
    pub event_type: String,
    pub event_version: String,
    /// Canonical text: exactly what the `jsonb` column will give back.
    pub payload: JsonText,
    pub metadata: JsonText,
}

/// One completed command: its events (none when rejected), recorded under its
/// idempotency key with its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandWrite {
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    /// 2xx accepted, 4xx rejected.
    pub status: u16,
    pub events: Vec<NewEvent>,
    /// Entities the command created, found later by their own id
    /// ([`EventStore::find_indexed`]); written with its events.
    pub indexed: Vec<IndexEntry>,
    /// When the command was accepted; from [`ChainHead::stamp`].
    pub at: DateTime<Utc>,
}

/// An entity created inside an aggregate (a grant inside a quota), by the
/// id the API names it with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub entity_type: &'static str,
    pub entity_id: String,
    pub aggregate: AggregateKey,
}

/// An event with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendedEvent {
    pub event_id: Uuid,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub aggregate_seq: i64,
    pub event_type: String,
    pub tenant_seq: i64,
    pub hash: ChainHash,
}

impl AppendedEvent {
    /// The event as a command's answer lists it.
    pub fn summary(&self) -> EventSummary {
        EventSummary {
            event_type: self.event_type.clone(),
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            tenant_seq: self.tenant_seq,
            hash: self.hash,
        }
    }
}

#[derive(Debug, Clone)]
struct PreparedEvent {
    tenant_seq: i64,
    aggregate_type: String,
    aggregate_id: String,
    aggregate_seq: i64,
    event_id: Uuid,
    event_type: String,
    event_version: String,
    payload: String,
    metadata: String,
    idempotency_key: String,
    recorded_at: DateTime<Utc>,
    prev_hash: ChainHash,
    hash: ChainHash,
}

#[derive(Debug, Clone)]
struct PreparedRecord {
    key: IdempotencyKey,
    fingerprint: Fingerprint,
    status: i16,
    outcome: String,
    /// Whether the outcome's list of events is left out (rebuilt from
    /// the events when it is replayed).
    events_omitted: bool,
    first_seq: Option<i64>,
    tenant_seq: i64,
    recorded_at: DateTime<Utc>,
}

/// The commands of one tenant to append together, chained from the head the
/// writer expects.
#[derive(Debug, Clone)]
pub struct TenantBatch {
    expected: ChainHead,
    head: ChainHead,
    events: Vec<PreparedEvent>,
    records: Vec<PreparedRecord>,
    /// Index entries with the first seq of the command creating them.
    indexed: Vec<(IndexEntry, i64)>,
    /// By when the append must take the head, else it is refused as if
    /// the head had moved (`closing`); none for a batch not stamped by
    /// the pipeline's clock.
    deadline: Option<std::time::Instant>,
}

impl TenantBatch {
    /// An empty batch chaining from `expected`.
    pub fn new(expected: ChainHead) -> Self {
        Self {
            expected,
            head: expected,
            events: Vec::new(),
            records: Vec::new(),
            indexed: Vec::new(),
            deadline: None,
        }
    }

    /// The batch, to be appended by `deadline` or refused as if its head
    /// had moved ([`crate::closing`]): set by the pipeline, to its
    /// decision's time and [`crate::APPEND_WITHIN`].
    pub fn within(mut self, deadline: std::time::Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The tenant of the batch.
    pub fn tenant_id(&self) -> TenantId {
        self.expected.tenant_id
    }

    /// The head the batch chains from.
    pub fn expected(&self) -> ChainHead {
        self.expected
    }

    /// The head once the batch is appended.
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// How many commands the batch holds.
    pub fn command_count(&self) -> usize {
        self.records.len()
    }

    /// Adds a command: gives its events the next tenant_seqs and their hashes,
    /// then records `outcome(events, tenant_seq reached)` as the body replayed
    /// for its key. Fails, changing nothing, when event data has no canonical
    /// form or the command's time is earlier than the head's.
    pub fn push(
        &mut self,
        command: CommandWrite,
        outcome: impl FnOnce(&[AppendedEvent], i64) -> Value,
    ) -> Result<Pushed, StoreError> {
        self.check_time(command.at)?;
        let (prepared, head) = chain(self.head, &command.key, command.at, command.events);
        let status = i16::try_from(command.status)
            .map_err(|_| StoreError::Invalid(format!("status {} out of range", command.status)))?;
        let appended: Vec<AppendedEvent> = prepared.iter().map(PreparedEvent::appended).collect();
        let outcome_value = outcome(&appended, head.seq);
        let (outcome, events_omitted) = crate::idempotency::record_text(&outcome_value, &appended)?;
        self.records.push(PreparedRecord {
            key: command.key,
            fingerprint: command.fingerprint,
            status,
            outcome,
            events_omitted,
            first_seq: prepared.first().map(|event| event.tenant_seq),
            tenant_seq: head.seq,
            recorded_at: command.at,
        });
        if let Some(first) = prepared.first() {
            let first_seq = first.tenant_seq;
            self.indexed
                .extend(command.indexed.into_iter().map(|entry| (entry, first_seq)));
        }
        self.events.extend(prepared);
        self.head = head;
        Ok(Pushed {
            events: appended,
            outcome: outcome_value,
            tenant_seq: head.seq,
        })
    }

    /// Refuses a command time earlier than the head's or finer than the
    /// store keeps.
    fn check_time(&self, at: DateTime<Utc>) -> Result<(), StoreError> {
        if let Some(last) = self.head.recorded_at {
            if at < last {
                return Err(StoreError::Invalid(format!(
                    "command time {at} is earlier than the chain head's {last}"
                )));
            }
        }
        if to_stored_precision(at) != at {
            return Err(StoreError::Invalid(format!(
                "command time {at} has sub-microsecond precision"
            )));
        }
        Ok(())
    }
}

/// Chains a command's `events` after `head`: each gets the next tenant_seq,
/// an id and its hash. Returns them and the head after the last.
fn chain(
    mut head: ChainHead,
    key: &IdempotencyKey,
    at: DateTime<Utc>,
    events: Vec<NewEvent>,
) -> (Vec<PreparedEvent>, ChainHead) {
    let mut prepared = Vec::with_capacity(events.len());
    for event in events {
        let payload = event.payload.into_string();
        let metadata = event.metadata.into_string();
        let tenant_seq = head.seq + 1;
        let event_id = Uuid::now_v7();
        let hash = EventFields {
            tenant_id: head.tenant_id.as_uuid(),
            tenant_seq,
            aggregate_type: &event.aggregate_type,
            aggregate_id: &event.aggregate_id,
            aggregate_seq: event.aggregate_seq,
            event_id,
            event_type: &event.event_type,
            event_version: &event.event_version,
            payload: &payload,
            metadata: &metadata,
            idempotency_key: key.as_str(),
            recorded_at_micros: at.timestamp_micros(),
        }
        .hash(&head.hash);
        prepared.push(PreparedEvent {
            tenant_seq,
            aggregate_type: event.aggregate_type,
            aggregate_id: event.aggregate_id,
            aggregate_seq: event.aggregate_seq,
            event_id,
            event_type: event.event_type,
            event_version: event.event_version,
            payload,
            metadata,
            idempotency_key: key.as_str().to_string(),
            recorded_at: at,
            prev_hash: head.hash,
            hash,
        });
        head.seq = tenant_seq;
        head.hash = hash;
        head.recorded_at = Some(at);
    }
    (prepared, head)
}

impl PreparedEvent {
    /// What the command's answer says of the event.
    fn appended(&self) -> AppendedEvent {
        AppendedEvent {
            event_id: self.event_id,
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            aggregate_seq: self.aggregate_seq,
            event_type: self.event_type.clone(),
            tenant_seq: self.tenant_seq,
            hash: self.hash,
        }
    }
}

/// A command placed in a batch: its events in the chain and its recorded
/// outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    pub events: Vec<AppendedEvent>,
    pub outcome: Value,
    /// The tenant_seq reached after the command.
    pub tenant_seq: i64,
}

/// What an append did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendReport {
    /// Tenants whose head was not the expected one: nothing of theirs was
    /// written. Every other tenant of the call was appended.
    pub moved: Vec<TenantId>,
    /// Those of `moved` refused because the head was taken past their
    /// batch's deadline ([`TenantBatch::within`]), not because it moved:
    /// the database was slow, not another writer in the way.
    pub late: Vec<TenantId>,
}

/// Why an append wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// An aggregate already has an event at this sequence: the decision was
    /// made on a stale version.
    #[error("aggregate {aggregate_type}/{aggregate_id} of tenant {tenant_id} already has event {aggregate_seq}")]
    SequenceConflict {
        tenant_id: TenantId,
        aggregate_type: String,
        aggregate_id: String,
        aggregate_seq: i64,
    },
    /// A command's key already has a record with the same fingerprint: this is
    /// a repeat, to be answered with the stored outcome.
    #[error("idempotency key {} already completed this command", .0.key)]
    KeyReplayed(Box<IdempotencyRecord>),
    /// A command's key already has a record of a different command.
    #[error("idempotency key {} was already used for a different command", .0.key)]
    KeyReused(Box<IdempotencyRecord>),
    /// The database is out of reach.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Anything else.
    #[error(transparent)]
    Other(StoreError),
}

impl From<StoreError> for AppendError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(error) => Self::Unavailable(error),
            other => Self::Other(other),
        }
    }
}

const APPEND: &str = "\
WITH expected AS (
    SELECT * FROM unnest($1::uuid[], $2::bigint[], $3::bytea[], $4::bigint[], $5::bytea[],
                         $6::timestamptz[], $36::int4[], $37::float8[])
        AS x(tenant_id, expected_seq, expected_hash, new_seq, new_hash, new_recorded_at,
             lock_key, budget)
), shared AS (
    SELECT count(pg_advisory_xact_lock_shared($38::int4, k.lock_key)) AS taken
    FROM (SELECT DISTINCT lock_key FROM expected ORDER BY lock_key) k
), locked AS MATERIALIZED (
    SELECT h.tenant_id, x.budget FROM chain_heads h
    JOIN expected x ON x.tenant_id = h.tenant_id
    WHERE (SELECT taken FROM shared) >= 0
    ORDER BY h.tenant_id
    FOR UPDATE OF h
), timely AS (
    SELECT l.tenant_id FROM locked l
    WHERE l.budget IS NULL
       OR clock_timestamp() <= statement_timestamp() + make_interval(secs => l.budget)
), advanced AS (
    UPDATE chain_heads h
    SET last_seq = x.new_seq, last_hash = x.new_hash,
        last_recorded_at = x.new_recorded_at, updated_at = now()
    FROM expected x
    WHERE h.tenant_id = x.tenant_id
      AND h.tenant_id IN (SELECT tenant_id FROM timely)
      AND h.last_seq = x.expected_seq
      AND h.last_hash = x.expected_hash
    RETURNING h.tenant_id
), inserted_events AS (
    INSERT INTO events (tenant_id, tenant_seq, aggregate_type, aggregate_id, aggregate_seq,
                        event_id, event_type, event_version, payload, metadata,
                        idempotency_key, recorded_at, prev_hash, hash)
    SELECT e.tenant_id, e.tenant_seq, e.aggregate_type, e.aggregate_id, e.aggregate_seq,
           e.event_id, e.event_type, e.event_version, e.payload::jsonb, e.metadata::jsonb,
           e.idempotency_key, e.recorded_at, e.prev_hash, e.hash
    FROM unnest($7::uuid[], $8::bigint[], $9::text[], $10::text[], $11::bigint[],
                $12::uuid[], $13::text[], $14::text[], $15::text[], $16::text[],
                $17::text[], $18::timestamptz[], $19::bytea[], $20::bytea[])
        WITH ORDINALITY AS e(tenant_id, tenant_seq, aggregate_type, aggregate_id, aggregate_seq,
                             event_id, event_type, event_version, payload, metadata,
                             idempotency_key, recorded_at, prev_hash, hash, ordinal)
    WHERE e.tenant_id IN (SELECT tenant_id FROM advanced)
    ORDER BY e.ordinal
    RETURNING 1
), inserted_records AS (
    INSERT INTO idempotency_records (tenant_id, idempotency_key, fingerprint, status, outcome,
                                     events_omitted, first_seq, tenant_seq, recorded_at)
    SELECT r.tenant_id, r.idempotency_key, r.fingerprint, r.status, r.outcome::jsonb,
           r.events_omitted, r.first_seq, r.tenant_seq, r.recorded_at
    FROM unnest($21::uuid[], $22::text[], $23::bytea[], $24::smallint[], $25::text[],
                $35::boolean[], $26::bigint[], $27::bigint[], $28::timestamptz[])
        AS r(tenant_id, idempotency_key, fingerprint, status, outcome,
             events_omitted, first_seq, tenant_seq, recorded_at)
    WHERE r.tenant_id IN (SELECT tenant_id FROM advanced)
    RETURNING 1
), inserted_index AS (
    INSERT INTO entity_index (tenant_id, entity_type, entity_id, aggregate_type, aggregate_id, tenant_seq)
    SELECT i.tenant_id, i.entity_type, i.entity_id, i.aggregate_type, i.aggregate_id, i.tenant_seq
    FROM unnest($29::uuid[], $30::text[], $31::text[], $32::text[], $33::text[], $34::bigint[])
        AS i(tenant_id, entity_type, entity_id, aggregate_type, aggregate_id, tenant_seq)
    WHERE i.tenant_id IN (SELECT tenant_id FROM advanced)
    RETURNING 1
)
SELECT tenant_id, true FROM advanced
UNION ALL
SELECT tenant_id, false FROM locked WHERE tenant_id NOT IN (SELECT tenant_id FROM timely)";

/// Events a store appends before it checks that the events table has
/// statistics: past the sizes where a plan made without them goes wrong.
pub const EVENTS_BEFORE_ANALYZE: u64 = 1_000;

/// What a store (and its clones) counts toward [`EVENTS_BEFORE_ANALYZE`].
#[derive(Debug, Default)]
pub(crate) struct EventStatistics {
    appended: AtomicU64,
    checked: AtomicBool,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

// Whether the events table has no column statistics (never analyzed; a
// VACUUM or CREATE INDEX sets its row count, not these).
const STATISTICS_MISSING: &str = "\
    SELECT NOT EXISTS ( \
        SELECT 1 FROM pg_stats s \
        JOIN pg_class c ON c.oid = 'events'::regclass \
        JOIN pg_namespace n ON n.oid = c.relnamespace \
        WHERE s.schemaname = n.nspname AND s.tablename = 'events')";

const SELECT_HEADS: &str = "\
    SELECT tenant_id, last_seq, last_hash, last_recorded_at FROM chain_heads \
    WHERE tenant_id = ANY($1)";

const SELECT_CONFLICTING_EVENT: &str = "\
    SELECT tenant_id, aggregate_type, aggregate_id, aggregate_seq FROM events \
    WHERE (tenant_id, aggregate_type, aggregate_id, aggregate_seq) IN \
          (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[])) \
    LIMIT 1";

async fn run_append<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    columns: &Columns<'_>,
) -> Result<Vec<(Uuid, bool)>, sqlx::Error> {
    sqlx::query_as(APPEND)
        .bind(&columns.head_tenant)
        .bind(&columns.head_expected_seq)
        .bind(&columns.head_expected_hash)
        .bind(&columns.head_new_seq)
        .bind(&columns.head_new_hash)
        .bind(&columns.head_new_recorded_at)
        .bind(&columns.event_tenant)
        .bind(&columns.event_tenant_seq)
        .bind(&columns.event_aggregate_type)
        .bind(&columns.event_aggregate_id)
        .bind(&columns.event_aggregate_seq)
        .bind(&columns.event_id)
        .bind(&columns.event_type)
        .bind(&columns.event_version)
        .bind(&columns.event_payload)
        .bind(&columns.event_metadata)
        .bind(&columns.event_key)
        .bind(&columns.event_recorded_at)
        .bind(&columns.event_prev_hash)
        .bind(&columns.event_hash)
        .bind(&columns.record_tenant)
        .bind(&columns.record_key)
        .bind(&columns.record_fingerprint)
        .bind(&columns.record_status)
        .bind(&columns.record_outcome)
        .bind(&columns.record_first_seq)
        .bind(&columns.record_tenant_seq)
        .bind(&columns.record_recorded_at)
        .bind(&columns.index_tenant)
        .bind(&columns.index_type)
        .bind(&columns.index_id)
        .bind(&columns.index_aggregate_type)
        .bind(&columns.index_aggregate_id)
        .bind(&columns.index_seq)
        .bind(&columns.record_events_omitted)
        .bind(&columns.head_lock_key)
        .bind(&columns.head_budget)
        .bind(crate::closing::APPEND_LOCK_NAMESPACE)
        .fetch_all(executor)
        .await
}

/// The batches that hold commands; refuses two batches of one tenant.
fn non_empty_distinct(batches: &[TenantBatch]) -> Result<Vec<&TenantBatch>, AppendError> {
    let batches: Vec<&TenantBatch> = batches
        .iter()
        .filter(|batch| batch.command_count() > 0)
        .collect();
    let mut tenants = HashSet::with_capacity(batches.len());
    for batch in &batches {
        if !tenants.insert(batch.tenant_id()) {
            return Err(AppendError::Other(StoreError::Invalid(format!(
                "two batches for tenant {} in one append",
                batch.tenant_id()
            ))));
        }
    }
    Ok(batches)
}

/// Which tenants of the call did not advance.
/// The statement's rows: each tenant it advanced (`true`), and each whose
/// head it locked past the batch's deadline (`false`).
fn report(batches: &[&TenantBatch], rows: Vec<(Uuid, bool)>) -> AppendReport {
    let advanced: HashSet<Uuid> = rows
        .iter()
        .filter(|(_, advanced)| *advanced)
        .map(|(tenant, _)| *tenant)
        .collect();
    let late: HashSet<Uuid> = rows
        .iter()
        .filter(|(_, advanced)| !*advanced)
        .map(|(tenant, _)| *tenant)
        .collect();
    let tenants = || batches.iter().map(|batch| batch.tenant_id());
    AppendReport {
        moved: tenants()
            .filter(|tenant| !advanced.contains(&tenant.as_uuid()))
            .collect(),
        late: tenants()
            .filter(|tenant| late.contains(&tenant.as_uuid()))
            .collect(),
    }
}

/// Column arrays of one append statement, borrowed from the batches.
#[derive(Default)]
struct Columns<'a> {
    head_tenant: Vec<Uuid>,
    head_expected_seq: Vec<i64>,
    head_expected_hash: Vec<&'a [u8]>,
    head_new_seq: Vec<i64>,
    head_new_hash: Vec<&'a [u8]>,
    head_new_recorded_at: Vec<Option<DateTime<Utc>>>,
    head_lock_key: Vec<i32>,
    /// Seconds left to take the head, from when the statement is built.
    head_budget: Vec<Option<f64>>,
    event_tenant: Vec<Uuid>,
    event_tenant_seq: Vec<i64>,
    event_aggregate_type: Vec<&'a str>,
    event_aggregate_id: Vec<&'a str>,
    event_aggregate_seq: Vec<i64>,
    event_id: Vec<Uuid>,
    event_type: Vec<&'a str>,
    event_version: Vec<&'a str>,
    event_payload: Vec<&'a str>,
    event_metadata: Vec<&'a str>,
    event_key: Vec<&'a str>,
    event_recorded_at: Vec<DateTime<Utc>>,
    event_prev_hash: Vec<&'a [u8]>,
    event_hash: Vec<&'a [u8]>,
    record_tenant: Vec<Uuid>,
    record_key: Vec<&'a str>,
    record_fingerprint: Vec<&'a [u8]>,
    record_status: Vec<i16>,
    record_outcome: Vec<&'a str>,
    record_events_omitted: Vec<bool>,
    record_first_seq: Vec<Option<i64>>,
    record_tenant_seq: Vec<i64>,
    record_recorded_at: Vec<DateTime<Utc>>,
    index_tenant: Vec<Uuid>,
    index_type: Vec<&'a str>,
    index_id: Vec<&'a str>,
    index_aggregate_type: Vec<&'a str>,
    index_aggregate_id: Vec<&'a str>,
    index_seq: Vec<i64>,
}

impl<'a> Columns<'a> {
    fn from_batches(batches: &[&'a TenantBatch]) -> Self {
        let mut columns = Self::default();
        for batch in batches {
            let tenant = batch.tenant_id().as_uuid();
            columns.head_tenant.push(tenant);
            columns.head_expected_seq.push(batch.expected.seq);
            columns.head_expected_hash.push(&batch.expected.hash.0);
            columns.head_new_seq.push(batch.head.seq);
            columns.head_new_hash.push(&batch.head.hash.0);
            columns.head_new_recorded_at.push(batch.head.recorded_at);
            columns
                .head_lock_key
                .push(crate::closing::append_lock_key(batch.tenant_id()));
            columns.head_budget.push(batch.deadline.map(|deadline| {
                deadline
                    .saturating_duration_since(std::time::Instant::now())
                    .as_secs_f64()
            }));
            for event in &batch.events {
                columns.event_tenant.push(tenant);
                columns.event_tenant_seq.push(event.tenant_seq);
                columns.event_aggregate_type.push(&event.aggregate_type);
                columns.event_aggregate_id.push(&event.aggregate_id);
                columns.event_aggregate_seq.push(event.aggregate_seq);
                columns.event_id.push(event.event_id);
                columns.event_type.push(&event.event_type);
                columns.event_version.push(&event.event_version);
                columns.event_payload.push(&event.payload);
                columns.event_metadata.push(&event.metadata);
                columns.event_key.push(&event.idempotency_key);
                columns.event_recorded_at.push(event.recorded_at);
                columns.event_prev_hash.push(&event.prev_hash.0);
                columns.event_hash.push(&event.hash.0);
            }
            for record in &batch.records {
                columns.record_tenant.push(tenant);
                columns.record_key.push(record.key.as_str());
                columns.record_fingerprint.push(&record.fingerprint.0);
                columns.record_status.push(record.status);
                columns.record_outcome.push(&record.outcome);
                columns.record_events_omitted.push(record.events_omitted);
                columns.record_first_seq.push(record.first_seq);
                columns.record_tenant_seq.push(record.tenant_seq);
                columns.record_recorded_at.push(record.recorded_at);
            }
            for (entry, tenant_seq) in &batch.indexed {
                columns.index_tenant.push(tenant);
                columns.index_type.push(entry.entity_type);
                columns.index_id.push(&entry.entity_id);
                columns
                    .index_aggregate_type
                    .push(&entry.aggregate.aggregate_type);
                columns
                    .index_aggregate_id
                    .push(&entry.aggregate.aggregate_id);
                columns.index_seq.push(*tenant_seq);
            }
        }
        columns
    }
}

impl EventStore {
    /// The current heads of `tenants` (tenants without a head are absent).
    pub async fn chain_heads(&self, tenants: &[TenantId]) -> Result<Vec<ChainHead>, StoreError> {
        let ids: Vec<Uuid> = tenants.iter().map(TenantId::as_uuid).collect();
        let rows = sqlx::query(SELECT_HEADS)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let (tenant, seq, hash): (Uuid, i64, Vec<u8>) =
                    (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
                let recorded_at = crate::read::optional_timestamp_at(row, 3)?;
                let hash = ChainHash::from_slice(&hash).ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "chain head hash of tenant {tenant} is not 32 bytes"
                    ))
                })?;
                Ok(ChainHead {
                    tenant_id: TenantId::from_uuid(tenant),
                    seq,
                    hash,
                    recorded_at,
                })
            })
            .collect()
    }

    /// The current head of one tenant; `None` for an unknown tenant.
    pub async fn chain_head(&self, tenant_id: TenantId) -> Result<Option<ChainHead>, StoreError> {
        Ok(self.chain_heads(&[tenant_id]).await?.pop())
    }

    /// Appends the batches (at most one per tenant) in one statement. Tenants
    /// whose head moved are reported and left untouched; any error writes
    /// nothing at all.
    pub async fn append(&self, batches: &[TenantBatch]) -> Result<AppendReport, AppendError> {
        let batches = non_empty_distinct(batches)?;
        if batches.is_empty() {
            return Ok(AppendReport::default());
        }
        // The connection first: the time left to each batch's deadline is
        // told once nothing but the statement is left to wait for.
        let mut connection = self
            .pool
            .acquire()
            .await
            .map_err(|error| AppendError::from(StoreError::from(error)))?;
        let columns = Columns::from_batches(&batches);
        match run_append(&mut *connection, &columns).await {
            Ok(rows) => {
                drop(connection);
                let report = report(&batches, rows);
                if report.moved.len() < batches.len() {
                    self.signal_appended();
                    self.note_appended(columns.event_tenant.len());
                }
                Ok(report)
            }
            Err(error) => {
                drop(connection);
                Err(self.explain_append_failure(&batches, &columns, error).await)
            }
        }
    }

    /// Counts events appended through this store; the first time the count
    /// reaches [`EVENTS_BEFORE_ANALYZE`], gives the events statistics if
    /// they have none yet ([`EventStore::analyze_events_once`]), in the
    /// background ([`EventStore::analysis_done`] waits for it). A failed
    /// attempt is tried again at the next append.
    fn note_appended(&self, events: usize) {
        let events = events as u64;
        let total = self
            .statistics
            .appended
            .fetch_add(events, Ordering::Relaxed)
            + events;
        if total < EVENTS_BEFORE_ANALYZE || self.statistics.checked.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        let task = tokio::spawn(async move {
            if let Err(error) = store.analyze_events_once().await {
                store.statistics.checked.store(false, Ordering::Release);
                tracing::warn!(%error, "the events were not analyzed");
            }
        });
        if let Ok(mut slot) = self.statistics.task.lock() {
            *slot = Some(task);
        }
    }

    /// Waits for the analysis [`EventStore::append`] started, if any.
    pub async fn analysis_done(&self) {
        let task = self
            .statistics
            .task
            .lock()
            .ok()
            .and_then(|mut slot| slot.take());
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Analyzes the events table if it has no column statistics, on a
    /// connection of its own (not one of the pool's, which may be the
    /// pipeline's few); says whether it asked for it. Every connection
    /// plans its prepared statements generically from their first run
    /// (`plan_cache_mode`). Without statistics, a connection that first
    /// loads aggregates while `events` holds a hundred or two rows gets a
    /// plan taking the primary key `(tenant_id, tenant_seq)`, which costs
    /// the same as the aggregate's index at that size, and reads every
    /// event of a tenant to find one aggregate's, for as long as it lives.
    /// Statistics make every cached plan on the table again and tell the
    /// two apart. Autovacuum gives them too, later, and never where it is
    /// off. A role that may not analyze the table gets PostgreSQL's warning
    /// and nothing changes.
    pub async fn analyze_events_once(&self) -> Result<bool, StoreError> {
        let mut connection = PgConnection::connect_with(&self.pool.connect_options()).await?;
        let (missing,): (bool,) = sqlx::query_as(STATISTICS_MISSING)
            .fetch_one(&mut connection)
            .await?;
        if missing {
            sqlx::query("ANALYZE events")
                .execute(&mut connection)
                .await?;
        }
        connection.close().await?;
        Ok(missing)
    }

    /// Like [`EventStore::append`], inside a transaction the caller owns and
    /// commits. The head rows stay locked until then.
    pub async fn append_in_transaction(
        &self,
        transaction: &mut sqlx::PgConnection,
        batches: &[TenantBatch],
    ) -> Result<AppendReport, AppendError> {
        let batches = non_empty_distinct(batches)?;
        if batches.is_empty() {
            return Ok(AppendReport::default());
        }
        let columns = Columns::from_batches(&batches);
        match run_append(&mut *transaction, &columns).await {
            Ok(rows) => Ok(report(&batches, rows)),
            Err(error) => Err(self.explain_append_failure(&batches, &columns, error).await),
        }
    }

    /// Turns a failed append into the error naming its cause.
    async fn explain_append_failure(
        &self,
        batches: &[&TenantBatch],
        columns: &Columns<'_>,
        error: sqlx::Error,
    ) -> AppendError {
        let Some((code, constraint)) = constraint_violation(&error) else {
            return StoreError::from(error).into();
        };
        if code != "23505" {
            return StoreError::from(error).into();
        }
        match constraint.as_str() {
            "events_aggregate_seq_key" => {
                let found: Result<Option<(Uuid, String, String, i64)>, sqlx::Error> =
                    sqlx::query_as(SELECT_CONFLICTING_EVENT)
                        .bind(&columns.event_tenant)
                        .bind(&columns.event_aggregate_type)
                        .bind(&columns.event_aggregate_id)
                        .bind(&columns.event_aggregate_seq)
                        .fetch_optional(&self.pool)
                        .await;
                match found {
                    Ok(Some((tenant, aggregate_type, aggregate_id, aggregate_seq))) => {
                        AppendError::SequenceConflict {
                            tenant_id: TenantId::from_uuid(tenant),
                            aggregate_type,
                            aggregate_id,
                            aggregate_seq,
                        }
                    }
                    Ok(None) => StoreError::from(error).into(),
                    Err(lookup) => StoreError::from(lookup).into(),
                }
            }
            // A key recorded already, or an entity its request derives
            // from the key (a settlement's breaks) indexed already under
            // it: either way the key is taken, which its record tells.
            "idempotency_records_pkey" | "entity_index_pkey" => {
                let keys: Vec<(TenantId, IdempotencyKey)> = batches
                    .iter()
                    .flat_map(|batch| {
                        batch
                            .records
                            .iter()
                            .map(|record| (batch.tenant_id(), record.key.clone()))
                    })
                    .collect();
                let records = match self.idempotency_records(&keys).await {
                    Ok(records) => records,
                    Err(lookup) => return lookup.into(),
                };
                // Report the first key of the batch that has a record.
                for batch in batches {
                    for pending in &batch.records {
                        let stored = records.iter().find(|record| {
                            record.tenant_id == batch.tenant_id() && record.key == pending.key
                        });
                        if let Some(stored) = stored {
                            return if stored.fingerprint == pending.fingerprint {
                                AppendError::KeyReplayed(Box::new(stored.clone()))
                            } else {
                                AppendError::KeyReused(Box::new(stored.clone()))
                            };
                        }
                    }
                }
                StoreError::from(error).into()
            }
            _ => StoreError::from(error).into(),
        }
    }

    /// Appends one command for one tenant, re-chaining from the fresh head
    /// (a bounded number of times) when another writer appended meanwhile.
    /// The command's aggregate sequences still guard its decision: if the
    /// other writer touched the same aggregate, this fails with
    /// [`AppendError::SequenceConflict`].
    pub async fn append_command(
        &self,
        tenant_id: TenantId,
        command: CommandWrite,
        outcome: impl Fn(&[AppendedEvent], i64) -> Value,
    ) -> Result<Vec<AppendedEvent>, AppendError> {
        for attempt in 0..HEAD_MOVED_ATTEMPTS_MAX {
            if attempt > 0 {
                tokio::time::sleep(jittered_pause(
                    attempt,
                    HEAD_MOVED_PAUSE_FIRST,
                    HEAD_MOVED_PAUSE_MAX,
                ))
                .await;
            }
            let head = self
                .chain_head(tenant_id)
                .await?
                .ok_or_else(|| AppendError::Other(StoreError::UnknownTenant(tenant_id)))?;
            let mut write = command.clone();
            write.at = head.stamp(write.at);
            let mut batch = TenantBatch::new(head);
            let appended = batch.push(write, &outcome)?.events;
            let report = self.append(std::slice::from_ref(&batch)).await?;
            if report.moved.is_empty() {
                return Ok(appended);
            }
        }
        Err(AppendError::Other(StoreError::Contention(format!(
            "the chain head of tenant {tenant_id} kept moving for {HEAD_MOVED_ATTEMPTS_MAX} attempts"
        ))))
    }
}
