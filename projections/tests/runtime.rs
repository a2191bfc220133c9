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
use projections::runtime::{catch_up, BATCH_EVENTS_MAX};
use projections::stream_index::StreamIndex;
use projections::{ApplyError, Projection};
use serde_json::json;
use sqlx::PgConnection;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

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
                            payload: json!({"n": index}),
                            metadata: json!({}),
                        }],
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
    fail: AtomicBool,
}

impl EventLog {
    fn new() -> Self {
        Self {
            applied: AtomicU64::new(0),
            fail_at_seq: AtomicU64::new(0),
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
            if let Some(event) = events.iter().find(|event| event.tenant_seq == fail_at) {
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

#[tokio::test]
async fn workers_killed_at_random_instants_leave_read_tables_equal_to_a_fresh_replay() {
    // Proves: aborting the worker task at random points (between apply and
    // commit among them) many times during 5,000 events neither loses nor
    // doubles an event: the read table equals a fresh replay.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let tenants = [tenant(&store).await, tenant(&store).await];
    let writer_store = store.clone();
    let writer = tokio::spawn(async move {
        for round in 0..10u64 {
            for tenant_id in tenants {
                append(&writer_store, tenant_id, round * 250, 250, 40, 50).await;
            }
        }
    });
    let mut kills = 0;
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    while !writer.is_finished() || kills < 50 {
        // Each worker has connections of its own, dropped with it, as a
        // crashed process's would be.
        let pool = db.database().connect_pool(1).await.unwrap();
        let worker_pool = pool.clone();
        let worker =
            tokio::spawn(async move { catch_up(&worker_pool, &StreamIndex, None, 37).await });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // A random instant within a few milliseconds: the kill timer, not a wait for the worker.
        tokio::time::sleep(std::time::Duration::from_micros(seed % 4_000)).await;
        worker.abort();
        let _ = worker.await;
        pool.close().await;
        kills += 1;
    }
    writer.await.unwrap();
    catch_up(store.pool(), &StreamIndex, None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    assert!(kills >= 50);
    assert_eq!(
        compare_with_replay(store.pool(), &StreamIndex, None, true)
            .await
            .unwrap(),
        Comparison::default()
    );
    // And the table says what the events say.
    let (streams, versions, last): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*), sum(version)::bigint, max(last_tenant_seq) FROM stream_index",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!((streams, versions, last), (80, 5_000, 2_500));
}

#[tokio::test]
async fn two_workers_on_one_projection_never_apply_an_event_twice() {
    // Proves: two workers racing on every partition apply each event once,
    // without deadlock; when one is stopped the other carries on alone.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    EventLog::create_table(&store).await;
    let tenants = [
        tenant(&store).await,
        tenant(&store).await,
        tenant(&store).await,
    ];
    for tenant_id in tenants {
        append(&store, tenant_id, 0, 600, 10, 100).await;
    }
    let log = Arc::new(EventLog::new());
    let first_pool = db.database().connect_pool(4).await.unwrap();
    let second_pool = db.database().connect_pool(4).await.unwrap();
    let (first_log, second_log) = (log.clone(), log.clone());
    let first =
        tokio::spawn(async move { catch_up(&first_pool, first_log.as_ref(), None, 25).await });
    let second =
        tokio::spawn(async move { catch_up(&second_pool, second_log.as_ref(), None, 25).await });
    let (first, second) = tokio::time::timeout(std::time::Duration::from_secs(60), async {
        (first.await.unwrap(), second.await.unwrap())
    })
    .await
    .expect("workers deadlocked");
    let applied = first.unwrap() + second.unwrap();
    // A worker may return while the other still holds the last partitions;
    // finish with one of them.
    let rest = catch_up(store.pool(), log.as_ref(), None, 25)
        .await
        .unwrap();
    assert_eq!(applied + rest, 1_800);
    assert_eq!(log.applied.load(Ordering::SeqCst), 1_800);
    assert_eq!(count(&store, "event_log").await, 1_800);

    // One worker stops (aborted mid-run); the other takes over.
    for tenant_id in tenants {
        append(&store, tenant_id, 600, 200, 10, 100).await;
    }
    let stopped_pool = db.database().connect_pool(2).await.unwrap();
    let (stopped_log, worker_pool) = (log.clone(), stopped_pool.clone());
    let stopped =
        tokio::spawn(async move { catch_up(&worker_pool, stopped_log.as_ref(), None, 25).await });
    stopped.abort();
    let _ = stopped.await;
    stopped_pool.close().await;
    catch_up(store.pool(), log.as_ref(), None, 25)
        .await
        .unwrap();
    assert_eq!(count(&store, "event_log").await, 2_400);
    assert_eq!(
        log.applied.load(Ordering::SeqCst) as i64,
        count(&store, "event_log").await
    );
}

#[tokio::test]
async fn a_rebuild_under_writes_and_reads_swaps_in_a_table_equal_to_a_fresh_replay() {
    // Proves: while a writer appends and a reader reads continuously, the
    // rebuild swaps in tables that equal a fresh replay (including events
    // appended meanwhile) and the reader never errs nor sees an empty table.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let tenant_id = tenant(&store).await;
    append(&store, tenant_id, 0, 3_000, 200, 500).await;
    catch_up(store.pool(), &StreamIndex, None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    projections::status::register(
        store.pool(),
        &[Arc::new(StreamIndex) as Arc<dyn Projection>],
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
            // The live worker keeps applying during the rebuild.
            catch_up(writer_store.pool(), &StreamIndex, None, BATCH_EVENTS_MAX)
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
    let report = rebuild(store.pool(), &StreamIndex, true).await.unwrap();
    assert!(report.events >= 3_000);
    stop.send(true).unwrap();
    let appended = writer.await.unwrap();
    let reads = reader.await.unwrap();
    assert!(reads > 0);
    catch_up(store.pool(), &StreamIndex, None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    assert_eq!(
        compare_with_replay(store.pool(), &StreamIndex, None, true)
            .await
            .unwrap(),
        Comparison::default()
    );
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

#[tokio::test]
async fn a_tenant_read_sees_only_that_tenants_rows_even_on_a_superuser_connection() {
    // Proves: with app.tenant_id set to A, a query with no tenant filter
    // returns no row of B, although the pool connects as a superuser.
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
    for (tenant_id, streams) in [(a, 3i64), (b, 5)] {
        let mut transaction = projections::read::begin_tenant_read(store.pool(), tenant_id)
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
                .await;
        assert!(denied.is_err(), "the reader role must not write");
    }
}

#[tokio::test]
async fn a_projection_whose_version_changed_is_found_stale_and_rebuilt() {
    // Proves: registering code of another version reports the projection
    // stale; rebuilding records the new version.
    struct Versioned(i32);
    #[async_trait]
    impl Projection for Versioned {
        fn name(&self) -> &'static str {
            "stream_index"
        }
        fn version(&self) -> i32 {
            self.0
        }
        fn tables(&self) -> &'static [&'static str] {
            StreamIndex.tables()
        }
        async fn apply(
            &self,
            connection: &mut PgConnection,
            events: &[&StoredEvent],
        ) -> Result<(), ApplyError> {
            StreamIndex.apply(connection, events).await
        }
    }
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let tenant_id = tenant(&store).await;
    append(&store, tenant_id, 0, 10, 2, 10).await;
    let v1: Arc<dyn Projection> = Arc::new(Versioned(1));
    let v2: Arc<dyn Projection> = Arc::new(Versioned(2));
    assert!(
        projections::status::register(store.pool(), std::slice::from_ref(&v1))
            .await
            .unwrap()
            .is_empty()
    );
    let stale = projections::status::register(store.pool(), std::slice::from_ref(&v2))
        .await
        .unwrap();
    assert_eq!(
        stale
            .iter()
            .map(|projection| projection.version())
            .collect::<Vec<_>>(),
        [2]
    );
    rebuild(store.pool(), v2.as_ref(), true).await.unwrap();
    assert!(projections::status::register(store.pool(), &[v2])
        .await
        .unwrap()
        .is_empty());
    let statuses = projections::status::status(store.pool(), &["stream_index"])
        .await
        .unwrap();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].version, 2);
    assert_eq!(statuses[0].checkpoint, 10);
    assert_eq!(statuses[0].events_behind, 0);
    assert_eq!(statuses[0].state, projections::status::State::Live);
}
