//! The projection runtime against a real PostgreSQL: crash safety, one worker
//! per partition, zero-downtime rebuilds, row-level security, versions.

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

/// The SQLSTATE of a database error (`None` for any other error).
fn sqlstate(error: &sqlx::Error) -> Option<String> {
    error
        .as_database_error()
        .and_then(|database| database.code())
        .map(|code| code.into_owned())
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

/// After [`EventLog`] has recorded every (tenant, seq) it applies in
/// `event_log` (whose key refuses a second application), at random, kills its
/// own connection: a crash between apply and commit. The server rolls the
/// transaction back, as it would for a process killed there.
struct CrashingLog {
    seed: AtomicU64,
    crashes: AtomicU64,
    crashing: AtomicBool,
}

#[async_trait]
impl AfterLog for CrashingLog {
    async fn after(
        &self,
        connection: &mut PgConnection,
        _: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        let mut seed = self.seed.load(Ordering::SeqCst);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        self.seed.store(seed, Ordering::SeqCst);
        if self.crashing.load(Ordering::SeqCst) && seed.is_multiple_of(2) {
            self.crashes.fetch_add(1, Ordering::SeqCst);
            sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
                .execute(connection)
                .await?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn workers_killed_between_apply_and_commit_lose_and_double_nothing() {
    // Proves: during 5,000 events appended concurrently, workers whose
    // connection dies right after applying (before the commit), and workers
    // aborted at random instants, neither lose nor double an event: every
    // event is in the log exactly once and the stream index equals a fresh
    // replay.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    EventLog::create_table(&store).await;
    let tenants = [tenant(&store).await, tenant(&store).await];
    let writer_store = store.clone();
    let writer = tokio::spawn(async move {
        for round in 0..10u64 {
            for tenant_id in tenants {
                append(&writer_store, tenant_id, round * 250, 250, 40, 50).await;
            }
        }
    });
    let log = Arc::new(Logged(CrashingLog {
        seed: AtomicU64::new(0x9e37_79b9_7f4a_7c15),
        crashes: AtomicU64::new(0),
        crashing: AtomicBool::new(true),
    }));
    let mut timer = 0x2545_f491_4f6c_dd1d_u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "workers killed at random did not catch up within 120 s (writer finished: {}, \
             crashes so far: {})",
            writer.is_finished(),
            log.crashes.load(Ordering::SeqCst)
        );
        let writing = !writer.is_finished();
        // Each worker has a connection of its own, dropped with it, as a
        // crashed process's would be.
        let pool = db.database().connect_pool(1).await.unwrap();
        let (worker_pool, worker_log) = (pool.clone(), log.clone());
        let worker = tokio::spawn(async move {
            let projections: [&dyn Projection; 2] = [&StreamIndex, worker_log.as_ref()];
            catch_up_all(&worker_pool, &projections, None, 25).await
        });
        timer ^= timer << 13;
        timer ^= timer >> 7;
        timer ^= timer << 17;
        // Killed at a random instant within 20 ms unless it finished first.
        let kill_after = std::time::Duration::from_micros(timer % 20_000);
        let mut worker = worker;
        let caught_up = match tokio::time::timeout(kill_after, &mut worker).await {
            Ok(finished) => matches!(finished, Ok(Ok(_))),
            Err(_) => {
                worker.abort();
                let _ = worker.await;
                false
            }
        };
        pool.close().await;
        // Done once a worker that started after the last append caught up
        // before its kill.
        if !writing && caught_up {
            break;
        }
    }
    writer.await.unwrap();
    log.crashing.store(false, Ordering::SeqCst);
    let projections: [&dyn Projection; 2] = [&StreamIndex, log.as_ref()];
    catch_up_all(store.pool(), &projections, None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    assert!(log.crashes.load(Ordering::SeqCst) >= 50);
    assert_eq!(count(&store, "event_log").await, 5_000);
    let (missing,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM events e \
         WHERE NOT EXISTS (SELECT 1 FROM event_log l \
                           WHERE l.tenant_id = e.tenant_id AND l.tenant_seq = e.tenant_seq)",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(missing, 0);
    assert_eq!(
        compare_with_replay(store.pool(), &StreamIndex, None, true)
            .await
            .unwrap(),
        Comparison::default()
    );
    let (streams, versions, last): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(version)::bigint, max(last_tenant_seq) FROM stream_index",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((streams, versions, last), (80, 5_000, 2_500));
}

/// After [`EventLog`], the first batch once armed waits inside the transaction
/// (after writing its rows) until released: a worker caught holding its
/// leases.
struct Gated {
    armed: AtomicBool,
    entered: Notify,
    release: Notify,
    /// Server process of the connection that stopped.
    backend: AtomicU64,
}

impl Gated {
    fn new() -> Self {
        Self {
            armed: AtomicBool::new(false),
            entered: Notify::new(),
            release: Notify::new(),
            backend: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl AfterLog for Gated {
    async fn after(
        &self,
        connection: &mut PgConnection,
        _: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            let (backend,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
                .fetch_one(&mut *connection)
                .await?;
            self.backend.store(backend as u64, Ordering::SeqCst);
            self.entered.notify_one();
            self.release.notified().await;
        }
        Ok(())
    }
}

/// Waits for `future`, failing the test after a minute (a deadlock) with
/// `what` it waited for.
async fn within_a_minute<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(std::time::Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("waited a minute for {what}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_a_projection_and_one_takes_over_when_the_other_dies() {
    // Proves: while one worker holds partitions mid-batch, a second one skips
    // them without waiting and applies every other partition; when the first
    // dies holding its leases, its work is rolled back and the second applies
    // everything; no event is applied twice (the log's key refuses it).
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    EventLog::create_table(&store).await;
    let mut tenants = Vec::new();
    for _ in 0..8 {
        let tenant_id = tenant(&store).await;
        append(&store, tenant_id, 0, 300, 10, 100).await;
        tenants.push(tenant_id);
    }
    let gated = Arc::new(Logged(Gated::new()));
    let all = Limits {
        batch_events_max: 25,
        leases_max: 512,
    };

    // The first worker leases every partition and stops mid-batch.
    gated.armed.store(true, Ordering::SeqCst);
    let first_pool = db.database().connect_pool(1).await.unwrap();
    let (pool, projection) = (first_pool.clone(), gated.clone());
    let first = tokio::spawn(async move {
        catch_up_with(&pool, &[projection.as_ref()], None, all, || false).await
    });
    within_a_minute(
        "the first worker to hold its leases",
        gated.entered.notified(),
    )
    .await;
    let second_pool = db.database().connect_pool(1).await.unwrap();
    let skipped = within_a_minute(
        "the second worker's step beside the held leases",
        step_with(&second_pool, &[gated.as_ref()], None, all),
    )
    .await
    .unwrap();
    assert_eq!(skipped, 0, "every partition is leased by the first worker");

    // It dies holding them (its server session ends; the server waits until
    // it has, so its locks are gone): the second takes over.
    let (terminated,): (bool,) = sqlx::query_as("SELECT pg_terminate_backend($1, 60000)")
        .bind(gated.backend.load(Ordering::SeqCst) as i32)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(terminated);
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    first_pool.close().await;
    let applied = within_a_minute(
        "the second worker to take over",
        catch_up_with(&second_pool, &[gated.as_ref()], None, all, || false),
    )
    .await
    .unwrap();
    assert_eq!(applied, 2_400);
    assert_eq!(count(&store, "event_log").await, 2_400);

    // Both work at once: one partition per batch; the first holds one, the
    // second applies the seven others meanwhile.
    for tenant_id in &tenants {
        append(&store, *tenant_id, 300, 100, 10, 100).await;
    }
    let one = Limits {
        batch_events_max: 100,
        leases_max: 1,
    };
    gated.armed.store(true, Ordering::SeqCst);
    let first_pool = db.database().connect_pool(1).await.unwrap();
    let (pool, projection) = (first_pool.clone(), gated.clone());
    let first = tokio::spawn(async move {
        catch_up_with(&pool, &[projection.as_ref()], None, one, || false).await
    });
    within_a_minute(
        "the first worker to hold one partition",
        gated.entered.notified(),
    )
    .await;
    let second = within_a_minute(
        "the second worker to apply the other partitions",
        catch_up_with(&second_pool, &[gated.as_ref()], None, one, || false),
    )
    .await
    .unwrap();
    assert_eq!(second, 700);
    gated.release.notify_one();
    let first = within_a_minute("the released first worker", first)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first, 100);
    assert_eq!(count(&store, "event_log").await, 3_200);
}

#[tokio::test]
async fn an_event_a_projection_cannot_apply_holds_back_its_tenant_only() {
    // Proves: in a batch of several tenants, one tenant's event that the
    // projection refuses holds that tenant's checkpoint right before it,
    // while the other tenants' events are applied and checkpointed; the
    // error names the tenant and seq.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    EventLog::create_table(&store).await;
    let tenants = [
        tenant(&store).await,
        tenant(&store).await,
        tenant(&store).await,
    ];
    for tenant_id in tenants {
        append(&store, tenant_id, 0, 50, 5, 50).await;
    }
    let log = EventLog::new();
    *log.fail_tenant.lock().unwrap() = Some(tenants[1]);
    log.fail_at_seq.store(20, Ordering::SeqCst);
    log.fail.store(true, Ordering::SeqCst);
    let error = catch_up(store.pool(), &log, None, BATCH_EVENTS_MAX)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "projection event_log, tenant {}: event at tenant_seq 20: injected failure",
            tenants[1]
        )
    );
    let checkpoints: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT tenant_id, last_seq FROM projection_checkpoints \
         WHERE projection = 'event_log' ORDER BY tenant_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut expected: Vec<(uuid::Uuid, i64)> = tenants
        .iter()
        .map(|tenant_id| {
            let seq = if *tenant_id == tenants[1] { 19 } else { 50 };
            (tenant_id.as_uuid(), seq)
        })
        .collect();
    expected.sort();
    assert_eq!(checkpoints, expected);
    assert_eq!(count(&store, "event_log").await, 119);

    log.fail.store(false, Ordering::SeqCst);
    assert_eq!(
        catch_up(store.pool(), &log, None, BATCH_EVENTS_MAX)
            .await
            .unwrap(),
        31
    );
    assert_eq!(count(&store, "event_log").await, 150);
}

#[tokio::test]
async fn a_batch_applies_at_most_1000_events_of_each_tenant_it_leases() {
    // Proves: a worker's batch (the default limits) takes at most 1,000
    // events of each tenant, all its tenants at once, and checkpoints
    // exactly what it applied: 2,500 and 300 events take batches of 1,300,
    // 1,000 and 500.
    assert_eq!(BATCH_EVENTS_MAX, 1_000);
    assert_eq!(Limits::default().batch_events_max, BATCH_EVENTS_MAX);
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    EventLog::create_table(&store).await;
    let (large, small) = (tenant(&store).await, tenant(&store).await);
    append(&store, large, 0, 2_500, 10, 500).await;
    append(&store, small, 0, 300, 10, 300).await;
    let log = EventLog::new();
    // The checkpoint rows a worker creates before its first batch.
    let mut lagging = projections::runtime::lagging_tenants(store.pool(), "event_log")
        .await
        .unwrap();
    lagging.sort();
    let mut expected = vec![large, small];
    expected.sort();
    assert_eq!(lagging, expected);
    let checkpoints = || async {
        let mut seqs = Vec::new();
        for tenant_id in [large, small] {
            seqs.push(
                projections::read::checkpoint(store.pool(), "event_log", tenant_id)
                    .await
                    .unwrap(),
            );
        }
        seqs
    };
    let mut steps = Vec::new();
    loop {
        let events = step_with(store.pool(), &[&log], None, Limits::default())
            .await
            .unwrap();
        steps.push((events, checkpoints().await));
        if events == 0 || steps.len() > 4 {
            break;
        }
    }
    assert_eq!(
        steps,
        [
            (1_300, vec![1_000, 300]),
            (1_000, vec![2_000, 300]),
            (500, vec![2_500, 300]),
            (0, vec![2_500, 300]),
        ]
    );
    assert_eq!(count(&store, "event_log").await, 2_800);
}

#[tokio::test]
async fn a_rebuild_under_writes_and_reads_swaps_in_a_table_equal_to_a_fresh_replay() {
    // Proves: while a writer appends and a reader reads continuously, the
    // rebuild swaps in tables that equal a fresh replay (including events
    // appended meanwhile) and the reader never errs nor sees an empty table;
    // a projection whose table refuses a second application (event_log),
    // rebuilt under the same writes, applies every event exactly once.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    EventLog::create_table(&store).await;
    let tenant_id = tenant(&store).await;
    append(&store, tenant_id, 0, 3_000, 200, 500).await;
    catch_up(store.pool(), &StreamIndex, None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    catch_up(store.pool(), &EventLog::new(), None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    projections::status::register(
        store.pool(),
        &[
            Arc::new(StreamIndex) as Arc<dyn Projection>,
            Arc::new(EventLog::new()) as Arc<dyn Projection>,
        ],
    )
    .await
    .unwrap();

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let writer_store = store.clone();
    let mut writer_stop = stopped.clone();
    let writer = tokio::spawn(async move {
        let mut next = 3_000;
        while !*writer_stop.borrow_and_update() {
            append(&writer_store, tenant_id, next, 20, 250, 20).await;
            // The live workers keep applying during the rebuilds.
            catch_up(writer_store.pool(), &StreamIndex, None, BATCH_EVENTS_MAX)
                .await
                .unwrap();
            catch_up(
                writer_store.pool(),
                &EventLog::new(),
                None,
                BATCH_EVENTS_MAX,
            )
            .await
            .unwrap();
            next += 20;
        }
        next
    });
    let reader_store = store.clone();
    let mut reader_stop = stopped.clone();
    let reader = tokio::spawn(async move {
        let mut reads = 0u64;
        while !*reader_stop.borrow_and_update() {
            let mut transaction =
                projections::read::begin_tenant_read(reader_store.pool(), tenant_id)
                    .await
                    .unwrap();
            let streams =
                projections::stream_index::list(&mut transaction, tenant_id, None, None, 1_000)
                    .await
                    .unwrap();
            transaction.commit().await.unwrap();
            assert!(
                streams.len() >= 200,
                "the reader saw {} streams",
                streams.len()
            );
            reads += 1;
        }
        reads
    });
    let report = within_a_minute(
        "the stream index rebuild under writes",
        rebuild(store.pool(), &StreamIndex, true),
    )
    .await
    .unwrap();
    assert!(report.events >= 3_000);
    let report = within_a_minute(
        "the event log rebuild under writes",
        rebuild(store.pool(), &EventLog::new(), true),
    )
    .await
    .unwrap();
    assert!(report.events >= 3_000);
    stop.send(true).unwrap();
    let appended = writer.await.unwrap();
    let reads = reader.await.unwrap();
    assert!(reads > 0);
    catch_up(store.pool(), &StreamIndex, None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    catch_up(store.pool(), &EventLog::new(), None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    assert_eq!(
        compare_with_replay(store.pool(), &StreamIndex, None, true)
            .await
            .unwrap(),
        Comparison::default()
    );
    assert_eq!(
        compare_with_replay(store.pool(), &EventLog::new(), None, true)
            .await
            .unwrap(),
        Comparison::default()
    );
    let (logged, first, last): (i64, i64, i64) =
        sqlx::query_as("SELECT count(*), min(tenant_seq), max(tenant_seq) FROM event_log")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!((logged, first, last), (appended as i64, 1, appended as i64));
    let (versions,): (i64,) = sqlx::query_as("SELECT sum(version)::bigint FROM stream_index")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(versions, appended as i64);
    let (schemas,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild\\_%'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(schemas, 0);
}

/// After [`EventLog`], the first batch once armed creates a new tenant and
/// appends its first events: a tenant that appears while a rebuild is
/// replaying.
struct Interloper {
    store: EventStore,
    armed: AtomicBool,
    newcomer: Mutex<Option<TenantId>>,
}

#[async_trait]
impl AfterLog for Interloper {
    async fn after(&self, _: &mut PgConnection, _: &[&StoredEvent]) -> Result<(), ApplyError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            let newcomer = self.store.create_tenant("beta").await.unwrap().tenant_id;
            append(&self.store, newcomer, 0, 5, 5, 5).await;
            *self.newcomer.lock().unwrap() = Some(newcomer);
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_tenant_whose_first_events_come_during_a_rebuild_is_applied_once() {
    // Proves: a tenant whose first events are appended while a rebuild is
    // replaying (after its first pass began) is replayed into the shadow
    // once, checkpointed there, and not applied again at the swap.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    EventLog::create_table(&store).await;
    let acme = tenant(&store).await;
    // More than a rebuild leaves to its swap, so it makes a second pass.
    append(&store, acme, 0, 1_500, 10, 500).await;
    let projection = Logged(Interloper {
        store: store.clone(),
        armed: AtomicBool::new(false),
        newcomer: Mutex::new(None),
    });
    catch_up(store.pool(), &projection, None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    projections::status::register(
        store.pool(),
        &[Arc::new(EventLog::new()) as Arc<dyn Projection>],
    )
    .await
    .unwrap();
    projection.armed.store(true, Ordering::SeqCst);

    let report = rebuild(store.pool(), &projection, true).await.unwrap();

    let newcomer = projection.newcomer.lock().unwrap().unwrap();
    assert_eq!(report.events, 1_505);
    let per_tenant: Vec<(uuid::Uuid, i64, i64)> = sqlx::query_as(
        "SELECT tenant_id, count(*), max(tenant_seq) FROM event_log GROUP BY tenant_id ORDER BY count(*)",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        per_tenant,
        vec![(newcomer.as_uuid(), 5, 5), (acme.as_uuid(), 1_500, 1_500)]
    );
    let checkpoints: Vec<(uuid::Uuid, i64)> = sqlx::query_as(
        "SELECT tenant_id, last_seq FROM projection_checkpoints WHERE projection = 'event_log' ORDER BY last_seq",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(
        checkpoints,
        vec![(newcomer.as_uuid(), 5), (acme.as_uuid(), 1_500)]
    );
}

#[tokio::test]
async fn a_failing_rebuild_leaves_the_live_tables_untouched() {
    // Proves: an error during the replay stops the rebuild, drops the shadow
    // tables, keeps the live rows and records the error.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    EventLog::create_table(&store).await;
    let tenant_id = tenant(&store).await;
    append(&store, tenant_id, 0, 300, 5, 100).await;
    let log = Arc::new(EventLog::new());
    projections::status::register(store.pool(), &[log.clone() as Arc<dyn Projection>])
        .await
        .unwrap();
    catch_up(store.pool(), log.as_ref(), None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    log.fail_at_seq.store(150, Ordering::SeqCst);
    log.fail.store(true, Ordering::SeqCst);
    let error = rebuild(store.pool(), log.as_ref(), true).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "projection event_log, tenant {tenant_id}: event at tenant_seq 150: injected failure"
        )
    );
    assert_eq!(count(&store, "event_log").await, 300);
    let (state, message): (String, Option<String>) =
        sqlx::query_as("SELECT state, error FROM projections WHERE projection = 'event_log'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(state, "live");
    assert_eq!(message.unwrap(), format!("rebuild failed: {error}"));
    let (schemas,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_namespace WHERE nspname = 'rebuild_event_log'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(schemas, 0);
}

/// Reads through `pool` as tenants `a` (3 streams) and `b` (5 streams) and
/// asserts each read sees only its own rows and cannot write.
async fn assert_tenant_reads_are_isolated(pool: &sqlx::PgPool, a: TenantId, b: TenantId) {
    for (tenant_id, streams) in [(a, 3i64), (b, 5)] {
        let mut transaction = projections::read::begin_tenant_read(pool, tenant_id)
            .await
            .unwrap();
        let rows: Vec<(uuid::Uuid,)> = sqlx::query_as("SELECT tenant_id FROM stream_index")
            .fetch_all(&mut *transaction)
            .await
            .unwrap();
        assert_eq!(rows.len() as i64, streams);
        assert!(rows
            .iter()
            .all(|(row_tenant,)| *row_tenant == tenant_id.as_uuid()));
        let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
            .fetch_one(&mut *transaction)
            .await
            .unwrap();
        assert_eq!(events, streams * 10);
        let denied =
            sqlx::query("INSERT INTO stream_index VALUES ($1, 'x', 'y', 1, 1, now(), now())")
                .bind(tenant_id.as_uuid())
                .execute(&mut *transaction)
                .await
                .expect_err("the reader role must not write");
        assert_eq!(
            sqlstate(&denied).as_deref(),
            Some("42501"),
            "not a privilege refusal: {denied}"
        );
    }
}

#[tokio::test]
async fn a_tenant_read_sees_only_that_tenants_rows_on_superuser_and_ordinary_connections() {
    // Proves: with app.tenant_id set to A, a query with no tenant filter
    // returns no row of B, both when the pool connects as a superuser and
    // when it connects as an ordinary login role (member of the reader role,
    // as the ledger's own role would be).
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let (a, b) = (tenant(&store).await, tenant(&store).await);
    append(&store, a, 0, 30, 3, 30).await;
    append(&store, b, 0, 50, 5, 50).await;
    catch_up(store.pool(), &StreamIndex, None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    let (superuser,): (bool,) =
        sqlx::query_as("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert!(
        superuser,
        "this test proves isolation on a superuser connection"
    );
    assert_eq!(count(&store, "stream_index").await, 8);
    assert_tenant_reads_are_isolated(store.pool(), a, b).await;

    // An ordinary login role, unique to this test (roles are cluster-wide).
    let role = format!("ledger_test_login_{}", uuid::Uuid::now_v7().simple());
    for statement in [
        format!("CREATE ROLE {role} LOGIN NOSUPERUSER NOBYPASSRLS"),
        format!("GRANT ledger_reader TO {role}"),
    ] {
        sqlx::query(&statement).execute(store.pool()).await.unwrap();
    }
    let ordinary = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect_with(db.options().username(&role))
        .await
        .unwrap();
    let (ordinary_superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&ordinary)
            .await
            .unwrap();
    assert_eq!((ordinary_superuser, bypass), (false, false));
    assert_tenant_reads_are_isolated(&ordinary, a, b).await;
    ordinary.close().await;
    sqlx::query(&format!("DROP OWNED BY {role}"))
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(store.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_projection_whose_version_changed_is_found_stale_and_rebuilt() {
    // Proves: registering code of another version reports the projection
    // stale; the workers started with that code rebuild it by themselves
    // (every event replayed by the new code) and record the new version.
    struct Versioned {
        version: i32,
        applied: AtomicU64,
    }
    #[async_trait]
    impl Projection for Versioned {
        fn name(&self) -> &'static str {
            "stream_index"
        }
        fn version(&self) -> i32 {
            self.version
        }
        fn tables(&self) -> &'static [&'static str] {
            StreamIndex.tables()
        }
        async fn apply(
            &self,
            connection: &mut PgConnection,
            events: &[&StoredEvent],
        ) -> Result<(), ApplyError> {
            StreamIndex.apply(connection, events).await?;
            self.applied
                .fetch_add(events.len() as u64, Ordering::SeqCst);
            Ok(())
        }
    }
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let tenant_id = tenant(&store).await;
    append(&store, tenant_id, 0, 10, 2, 10).await;
    let v1: Arc<dyn Projection> = Arc::new(Versioned {
        version: 1,
        applied: AtomicU64::new(0),
    });
    let v2 = Arc::new(Versioned {
        version: 2,
        applied: AtomicU64::new(0),
    });
    assert!(
        projections::status::register(store.pool(), std::slice::from_ref(&v1))
            .await
            .unwrap()
            .is_empty()
    );
    catch_up(store.pool(), v1.as_ref(), None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    let stale = projections::status::register(store.pool(), &[v2.clone() as Arc<dyn Projection>])
        .await
        .unwrap();
    assert_eq!(
        stale
            .iter()
            .map(|projection| projection.version())
            .collect::<Vec<_>>(),
        [2]
    );
    let mut workers = projections::worker::Workers::start_registered(
        &store,
        vec![v2.clone() as Arc<dyn Projection>],
        vec![],
    )
    .await
    .unwrap();
    workers.stale_rebuilt().await;
    workers.stop().await;
    assert_eq!(v2.applied.load(Ordering::SeqCst), 10);
    assert!(
        projections::status::register(store.pool(), &[v2 as Arc<dyn Projection>])
            .await
            .unwrap()
            .is_empty()
    );
    let statuses = projections::status::status(store.pool(), &["stream_index"])
        .await
        .unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].version, 2);
    assert_eq!(statuses[0].checkpoint, 10);
    assert_eq!(statuses[0].events_behind, 0);
    assert_eq!(statuses[0].state, projections::status::State::Live);
    assert_eq!(statuses[0].error, None);
}
