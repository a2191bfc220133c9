//! The `scheduled_work` projection: what falls due at a time, and the
//! request to submit then.
//!
//! Each domain says what its events schedule (a [`ScheduleReader`] per
//! aggregate type, from the domain registry): a subscription's renewal at
//! its period end, a grant's expiry, a hold's expiry. An event schedules
//! work under a name (`work`); a later event may schedule the same work
//! again (the next period's renewal) or settle it (the hold was posted, so
//! its expiry is moot). The ticker (`commands::scheduler`) submits the open
//! work once its time has come, under the idempotency key derived from the
//! event that scheduled it ([`reaction_key`]), so a submission repeated
//! after a crash, or by two processes, takes effect once.
//!
//! What the ticker did (its leases and each request's outcome) is not
//! projected from events and lives beside, in `scheduler_runs`: a rebuild of
//! this table leaves it alone.

use crate::reactor::reaction_key;
use crate::runtime::{ApplyError, Projection};
use aggregates::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::HashMap;
use utoipa::ToSchema;
use uuid::Uuid;

pub const NAME: &str = "scheduled_work";

/// The version of the table's contents (see [`ScheduledWork::version`]):
/// a ticker leases only from a table built by this version.
pub const VERSION: i32 = 2;

/// The name under which the scheduler's reactions are keyed.
pub const SCHEDULER: &str = "scheduler";

/// What one event does to the schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum ScheduleChange {
    /// `work` falls due at `due_at`: then the request `request` of kind
    /// `kind` is submitted. Replaces what `work` was scheduled as before.
    Due {
        work: String,
        due_at: DateTime<Utc>,
        kind: &'static str,
        request: Value,
    },
    /// `work` is done, or moot: nothing is submitted for it any more.
    Settled { work: String },
}

/// What the events of one aggregate type schedule.
#[derive(Clone, Copy)]
pub struct ScheduleReader {
    pub aggregate_type: &'static str,
    /// The stored types of the events that schedule or settle work: the
    /// others are not decoded for the schedule (an upcaster that renamed
    /// one would need the old name here too).
    pub events: &'static [&'static str],
    pub read: fn(&StoredEvent) -> Result<Vec<ScheduleChange>, ApplyError>,
}

impl ScheduleReader {
    /// Whether events stored as `event_type` (of its aggregate type) are
    /// read at all.
    pub fn reads(&self, event_type: &str) -> bool {
        self.events.contains(&event_type)
    }

    /// What `event` schedules: nothing when its aggregate type or event
    /// type is not this reader's.
    pub fn changes(&self, event: &StoredEvent) -> Result<Vec<ScheduleChange>, ApplyError> {
        if event.aggregate_type != self.aggregate_type || !self.reads(&event.event_type) {
            return Ok(Vec::new());
        }
        (self.read)(event)
    }
}

/// The projection, reading the events of every reader's aggregate type.
pub struct ScheduledWork {
    readers: HashMap<&'static str, ScheduleReader>,
}

impl ScheduledWork {
    pub fn new(readers: Vec<ScheduleReader>) -> Self {
        Self {
            readers: readers
                .into_iter()
                .map(|reader| (reader.aggregate_type, reader))
                .collect(),
        }
    }
}

/// One row as the batch leaves it.
struct Row {
    due: Option<Due>,
    settled_seq: Option<i64>,
}

struct Due {
    due_at: DateTime<Utc>,
    key: String,
    kind: &'static str,
    request: Value,
    scheduled_seq: i64,
}

const UPSERT: &str = "\
    INSERT INTO scheduled_work (tenant_id, work, due_at, idempotency_key, request_kind, request, \
                                scheduled_seq, settled_seq) \
    SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], \
                         $6::jsonb[], $7::bigint[], $8::bigint[]) \
    ON CONFLICT (tenant_id, work) DO UPDATE SET due_at = EXCLUDED.due_at, \
        idempotency_key = EXCLUDED.idempotency_key, request_kind = EXCLUDED.request_kind, \
        request = EXCLUDED.request, scheduled_seq = EXCLUDED.scheduled_seq, \
        settled_seq = EXCLUDED.settled_seq";

const SETTLE: &str = "\
    UPDATE scheduled_work w SET settled_seq = s.seq \
    FROM UNNEST($1::uuid[], $2::text[], $3::bigint[]) AS s(tenant_id, work, seq) \
    WHERE w.tenant_id = s.tenant_id AND w.work = s.work AND w.settled_seq IS NULL";

#[async_trait]
impl Projection for ScheduledWork {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Bumped whenever a schedule reader's output for an event already
    /// stored changes (a request's fields, a work's name or due time):
    /// `serve` and `project` then rebuild the table on start, so that open
    /// work carries the request this build submits, not an older build's.
    /// 2: an escrow commitment's expiry names the windows it times out
    /// first (`timeouts`).
    fn version(&self) -> i32 {
        VERSION
    }

    fn tables(&self) -> &'static [&'static str] {
        &["scheduled_work"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        let mut rows: HashMap<(Uuid, String), Row> = HashMap::new();
        for event in events {
            let Some(reader) = self.readers.get(event.aggregate_type.as_str()) else {
                continue;
            };
            for (n, change) in reader.changes(event)?.into_iter().enumerate() {
                fold(&mut rows, event, n, change);
            }
        }
        let (mut upserts, mut settles) = (Columns::default(), (vec![], vec![], vec![]));
        for ((tenant, work), row) in rows {
            match row.due {
                Some(due) => upserts.push(tenant, work, due, row.settled_seq),
                None => {
                    settles.0.push(tenant);
                    settles.1.push(work);
                    settles.2.push(row.settled_seq.unwrap_or_default());
                }
            }
        }
        if !upserts.tenants.is_empty() {
            sqlx::query(UPSERT)
                .bind(&upserts.tenants)
                .bind(&upserts.works)
                .bind(&upserts.due_ats)
                .bind(&upserts.keys)
                .bind(&upserts.kinds)
                .bind(&upserts.requests)
                .bind(&upserts.scheduled_seqs)
                .bind(&upserts.settled_seqs)
                .execute(&mut *connection)
                .await?;
        }
        if !settles.0.is_empty() {
            sqlx::query(SETTLE)
                .bind(&settles.0)
                .bind(&settles.1)
                .bind(&settles.2)
                .execute(&mut *connection)
                .await?;
        }
        Ok(())
    }
}

/// Folds the `n`th change of `event` into the batch's rows.
fn fold(
    rows: &mut HashMap<(Uuid, String), Row>,
    event: &StoredEvent,
    n: usize,
    change: ScheduleChange,
) {
    let tenant = event.tenant_id.as_uuid();
    match change {
        ScheduleChange::Due {
            work,
            due_at,
            kind,
            request,
        } => {
            rows.insert(
                (tenant, work),
                Row {
                    due: Some(Due {
                        due_at,
                        key: reaction_key(SCHEDULER, event.event_id, n),
                        kind,
                        request,
                        scheduled_seq: event.tenant_seq,
                    }),
                    settled_seq: None,
                },
            );
        }
        ScheduleChange::Settled { work } => {
            let row = rows.entry((tenant, work)).or_insert(Row {
                due: None,
                settled_seq: None,
            });
            row.settled_seq.get_or_insert(event.tenant_seq);
        }
    }
}

/// The columns of an upsert.
#[derive(Default)]
struct Columns {
    tenants: Vec<Uuid>,
    works: Vec<String>,
    due_ats: Vec<DateTime<Utc>>,
    keys: Vec<String>,
    kinds: Vec<&'static str>,
    requests: Vec<Value>,
    scheduled_seqs: Vec<i64>,
    settled_seqs: Vec<Option<i64>>,
}

impl Columns {
    fn push(&mut self, tenant: Uuid, work: String, due: Due, settled_seq: Option<i64>) {
        self.tenants.push(tenant);
        self.works.push(work);
        self.due_ats.push(due.due_at);
        self.keys.push(due.key);
        self.kinds.push(due.kind);
        self.requests.push(due.request);
        self.scheduled_seqs.push(due.scheduled_seq);
        self.settled_seqs.push(settled_seq);
    }
}

/// One piece of scheduled work as read, with what the ticker did with it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema, sqlx::FromRow)]
pub struct ScheduledRow {
    pub work: String,
    pub due_at: DateTime<Utc>,
    pub idempotency_key: String,
    pub request_kind: String,
    #[schema(value_type = Object)]
    pub request: Value,
    pub scheduled_seq: i64,
    /// tenant_seq of the event that settled it; `null` while open.
    pub settled_seq: Option<i64>,
    /// `accepted` or `refused` once the ticker has its answer; `null`
    /// before.
    pub outcome: Option<String>,
    /// The refusal's error code.
    pub error_code: Option<String>,
    /// Times a ticker took it.
    pub attempts: i32,
    /// Why the last attempt got no answer; or, on work answered by its
    /// key's record of another form of its request, that note.
    pub last_error: Option<String>,
}

/// The tenant's scheduled work ordered by due time (then name), after the
/// work named `after`, at most `limit` rows; only the open work (neither
/// settled nor answered) when `open`. Inside a tenant read transaction.
pub async fn list(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    open: bool,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ScheduledRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT w.work, w.due_at, w.idempotency_key, w.request_kind, w.request, w.scheduled_seq, \
                w.settled_seq, r.outcome, r.error_code, coalesce(r.attempts, 0) AS attempts, \
                r.last_error \
         FROM scheduled_work w \
         LEFT JOIN scheduler_runs r \
           ON r.tenant_id = w.tenant_id AND r.idempotency_key = w.idempotency_key \
         WHERE w.tenant_id = $1 \
           AND (NOT $2 OR (w.settled_seq IS NULL AND r.outcome IS NULL)) \
           AND ($3::text IS NULL OR (w.due_at, w.work) > \
                (SELECT a.due_at, a.work FROM scheduled_work a WHERE a.tenant_id = $1 AND a.work = $3)) \
         ORDER BY w.due_at, w.work LIMIT $4",
    )
    .bind(tenant_id.as_uuid())
    .bind(open)
    .bind(after)
    .bind(limit)
    .fetch_all(connection)
    .await
}
