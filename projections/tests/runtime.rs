//! The projection runtime against a real PostgreSQL: crash safety, one worker
//! per partition, zero-downtime rebuilds, row-level security, versions.
//!
//! The tests are in `runtime/`, one file per theme; the test projections
//! and helpers they share are here.

use aggregates::TenantId;
use async_trait::async_trait;
use chrono::Utc;
use eventstore::testing::TestDatabase;
use eventstore::{
    CommandWrite, EventStore, Fingerprint, IdempotencyKey, NewEvent, StoredEvent, TenantBatch,
};
use projections::compare::{compare_with_replay, Comparison};
use projections::rebuild::rebuild;
use projections::runtime::{
    catch_up, catch_up_all, catch_up_with, step_with, Limits, BATCH_EVENTS_MAX,
};
use projections::stream_index::StreamIndex;
use projections::{ApplyError, Projection};
use serde_json::json;
use sqlx::PgConnection;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

#[path = "runtime/held_back.rs"]
mod held_back;
#[path = "runtime/isolation.rs"]
mod isolation;
#[path = "runtime/rebuilds.rs"]
mod rebuilds;
#[path = "runtime/workers.rs"]
mod workers;

/// Appends `commands` commands of one event each to `tenant_id`, spread over
/// `streams` aggregates, `per_batch` commands per statement.
async fn append(
    store: &EventStore,
    tenant_id: TenantId,
    first: u64,
    commands: u64,
    streams: u64,
    per_batch: u64,
) {
    let mut next = first;
    while next < first + commands {
        let head = store.chain_head(tenant_id).await.unwrap().unwrap();
        let mut batch = TenantBatch::new(head);
        let mut versions: std::collections::HashMap<String, i64> = std::collections::HashMap::new();
        for index in next..(next + per_batch).min(first + commands) {
            let stream = format!("s{}", index % streams);
            let version = match versions.get(&stream) {
                Some(version) => *version,
                None => store
                    .load_events(
                        tenant_id,
                        &eventstore::AggregateKey::new("counter", &stream),
                        0,
                    )
                    .await
                    .unwrap()
                    .len() as i64,
            };
            versions.insert(stream.clone(), version + 1);
            let at = batch.head().stamp(Utc::now());
            batch
                .push(
                    CommandWrite {
                        key: IdempotencyKey::parse(&format!("k{index}")).unwrap(),
                        fingerprint: Fingerprint::of("test", &json!(index)).unwrap(),
                        status: 200,
                        events: vec![NewEvent {
                            aggregate_type: "counter".into(),
                            aggregate_id: stream,
                            aggregate_seq: version + 1,
                            event_type: "Added".into(),
                            event_version: "1".into(),
                            payload: eventstore::JsonText::from_value(&json!({"n": index}))
                                .unwrap(),
                            metadata: eventstore::JsonText::from_value(&json!({})).unwrap(),
                        }],
                        indexed: Vec::new(),
                        at,
                    },
                    |_, _| json!({}),
                )
                .unwrap();
        }
        let report = store.append(std::slice::from_ref(&batch)).await.unwrap();
        if !report.moved.is_empty() {
            let now = store.chain_head(tenant_id).await.unwrap().unwrap();
            panic!("moved: expected {:?} now {:?}", batch.expected(), now);
        }
        next = (next + per_batch).min(first + commands);
    }
}

async fn tenant(store: &EventStore) -> TenantId {
    store.create_tenant("acme").await.unwrap().tenant_id
}

/// A projection that records every (tenant, seq) it applies in a table whose
/// key refuses a second application.
struct EventLog {
    applied: AtomicU64,
    fail_at_seq: AtomicU64,
    /// Fail only on this tenant's event (any tenant's when `None`).
    fail_tenant: Mutex<Option<TenantId>>,
    fail: AtomicBool,
}

impl EventLog {
    fn new() -> Self {
        Self {
            applied: AtomicU64::new(0),
            fail_at_seq: AtomicU64::new(0),
            fail_tenant: Mutex::new(None),
            fail: AtomicBool::new(false),
        }
    }

    async fn create_table(store: &EventStore) {
        for statement in [
            "CREATE TABLE event_log (tenant_id uuid NOT NULL, tenant_seq bigint NOT NULL, PRIMARY KEY (tenant_id, tenant_seq))",
            "SELECT ledger_secure_tenant_table('event_log')",
        ] {
            sqlx::query(statement).execute(store.pool()).await.unwrap();
        }
    }
}

#[async_trait]
impl Projection for EventLog {
    fn name(&self) -> &'static str {
        "event_log"
    }
    fn version(&self) -> i32 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["event_log"]
    }
    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        if self.fail.load(Ordering::SeqCst) {
            let fail_at = self.fail_at_seq.load(Ordering::SeqCst) as i64;
            let fail_tenant = *self.fail_tenant.lock().unwrap();
            if let Some(event) = events.iter().find(|event| {
                event.tenant_seq == fail_at
                    && fail_tenant.is_none_or(|tenant| tenant == event.tenant_id)
            }) {
                return Err(ApplyError::Event {
                    tenant_seq: event.tenant_seq,
                    message: "injected failure".into(),
                });
            }
        }
        let tenants: Vec<uuid::Uuid> = events
            .iter()
            .map(|event| event.tenant_id.as_uuid())
            .collect();
        let seqs: Vec<i64> = events.iter().map(|event| event.tenant_seq).collect();
        sqlx::query("INSERT INTO event_log SELECT * FROM unnest($1::uuid[], $2::bigint[])")
            .bind(&tenants)
            .bind(&seqs)
            .execute(connection)
            .await?;
        self.applied
            .fetch_add(events.len() as u64, Ordering::SeqCst);
        Ok(())
    }
}

async fn count(store: &EventStore, table: &str) -> i64 {
    let (count,): (i64,) = sqlx::query_as(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(store.pool())
        .await
        .unwrap();
    count
}

/// What a test projection does after [`EventLog`] has written a batch
/// (`events`), inside the batch's transaction.
#[async_trait]
trait AfterLog: Send + Sync {
    async fn after(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError>;
}

/// The `event_log` projection ([`EventLog`]), then `H` on every batch.
struct Logged<H>(H);

impl<H> std::ops::Deref for Logged<H> {
    type Target = H;
    fn deref(&self) -> &H {
        &self.0
    }
}

#[async_trait]
impl<H: AfterLog + 'static> Projection for Logged<H> {
    fn name(&self) -> &'static str {
        "event_log"
    }
    fn version(&self) -> i32 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &["event_log"]
    }
    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        EventLog::new().apply(connection, events).await?;
        self.0.after(connection, events).await
    }
}

/// Waits for `future`, failing the test after a minute (a deadlock) with
/// `what` it waited for.
async fn within_a_minute<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("waited a minute for {what}"))
}
