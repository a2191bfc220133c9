//! Live workers: crash safety, one worker per partition with takeover, bounded batches, a tenant held back.

use super::*;

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

/// Appends one command per size in `sizes`, each of that many events (one
/// per fresh aggregate), in one statement.
async fn append_requests(store: &EventStore, tenant_id: TenantId, first: u64, sizes: &[u64]) {
    let head = store.chain_head(tenant_id).await.unwrap().unwrap();
    let mut batch = TenantBatch::new(head);
    for (index, size) in sizes.iter().enumerate() {
        let command = first + index as u64;
        let at = batch.head().stamp(Utc::now());
        let events = (0..*size)
            .map(|n| NewEvent {
                aggregate_type: "counter".into(),
                aggregate_id: format!("r{command}-{n}"),
                aggregate_seq: 1,
                event_type: "Added".into(),
                event_version: "1".into(),
                payload: eventstore::JsonText::from_value(&json!({"n": n})).unwrap(),
                metadata: eventstore::JsonText::from_value(&json!({})).unwrap(),
            })
            .collect();
        let write = CommandWrite {
            key: IdempotencyKey::parse(&format!("request-{command}")).unwrap(),
            fingerprint: Fingerprint::of("test", &json!(command)).unwrap(),
            status: 200,
            events,
            indexed: Vec::new(),
            at,
        };
        batch.push(write, |_, _| json!({})).unwrap();
    }
    let report = store.append(std::slice::from_ref(&batch)).await.unwrap();
    assert!(report.moved.is_empty());
}

#[tokio::test]
async fn a_batch_ends_at_the_end_of_a_request() {
    // Proves: a batch of at most 25 events never ends inside a request
    // (three events each: 24 of them, then the rest), so a checkpoint
    // never shows half a decision; a request longer than a batch is still
    // cut at the batch's size.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    EventLog::create_table(&store).await;
    let tenant_id = tenant(&store).await;
    append_requests(&store, tenant_id, 0, &[3; 10]).await;
    let log = EventLog::new();
    let limits = Limits {
        batch_events_max: 25,
        leases_max: 16,
    };
    projections::runtime::lagging_tenants(store.pool(), "event_log")
        .await
        .unwrap();
    let checkpoint = || async {
        let (seq,): (i64,) = sqlx::query_as(
            "SELECT last_seq FROM projection_checkpoints WHERE projection = 'event_log'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        seq
    };
    let mut steps = Vec::new();
    for _ in 0..3 {
        let applied = step_with(store.pool(), &[&log], None, limits)
            .await
            .unwrap();
        steps.push((applied, checkpoint().await));
    }
    assert_eq!(steps, [(24, 24), (6, 30), (0, 30)]);
    // One request of 40 events, then one of 2.
    append_requests(&store, tenant_id, 10, &[40, 2]).await;
    let mut steps = Vec::new();
    for _ in 0..3 {
        let applied = step_with(store.pool(), &[&log], None, limits)
            .await
            .unwrap();
        steps.push((applied, checkpoint().await));
    }
    assert_eq!(steps, [(25, 55), (17, 72), (0, 72)]);
    assert_eq!(count(&store, "event_log").await, 72);
}
