//! Zero-downtime rebuilds: under writes and reads, tenants appearing meanwhile, failures, stale versions.

use super::*;

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

/// The indexes of `table`: (name, partial).
async fn indexes(store: &EventStore, table: &str) -> Vec<(String, bool)> {
    sqlx::query_as(
        "SELECT indexrelid::regclass::text, indpred IS NOT NULL FROM pg_index \
         WHERE indrelid = $1::regclass ORDER BY 1",
    )
    .bind(table)
    .fetch_all(store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_rebuild_keeps_the_index_names_and_0018_replaces_old_status_indexes_whatever_their_names()
{
    // Proves: the tables a rebuild swaps in keep their indexes' names (the
    // shadow's are named by PostgreSQL; migrations name indexes); and
    // migration 0018 finds the full status indexes by their columns, so on
    // a ledger an older build rebuilt (its indexes under PostgreSQL's
    // names) it still replaces them, leaving one partial index under its
    // own name.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    projections::status::register(
        store.pool(),
        &[Arc::new(projections::payments::Payments) as Arc<dyn Projection>],
    )
    .await
    .unwrap();
    let before = indexes(&store, "payment_breaks").await;
    rebuild(store.pool(), &projections::payments::Payments, true)
        .await
        .unwrap();
    assert_eq!(indexes(&store, "payment_breaks").await, before);
    assert_eq!(
        indexes(&store, "payment_documents").await,
        vec![
            ("payment_documents_pkey".to_string(), false),
            ("payment_documents_status".to_string(), true),
        ]
    );

    // The indexes as migrations 0013 to 0017 made them, the payments
    // tables' as a rebuild by an older build left them.
    sqlx::raw_sql(
        "DROP INDEX payment_documents_status, payment_breaks_status, \
             commitment_documents_status, compensation_documents_status; \
         CREATE INDEX payment_documents_tenant_id_kind_status_id_idx \
             ON payment_documents (tenant_id, kind, status, id); \
         CREATE INDEX payment_breaks_tenant_id_status_break_id_idx \
             ON payment_breaks (tenant_id, status, break_id); \
         CREATE INDEX commitment_documents_status ON commitment_documents (tenant_id, kind, status, id); \
         CREATE INDEX compensation_documents_status ON compensation_documents (tenant_id, kind, status, id);",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let migration = eventstore::MIGRATOR
        .iter()
        .find(|migration| migration.version == 18)
        .unwrap();
    sqlx::raw_sql(migration.sql.as_ref())
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(
        indexes(&store, "payment_documents").await,
        vec![
            ("payment_documents_pkey".to_string(), false),
            ("payment_documents_status".to_string(), true),
        ]
    );
    assert_eq!(indexes(&store, "payment_breaks").await, before);
    assert_eq!(
        before,
        vec![
            ("payment_breaks_pkey".to_string(), false),
            ("payment_breaks_settlement".to_string(), false),
            ("payment_breaks_status".to_string(), true),
        ]
    );
    for table in ["commitment_documents", "compensation_documents"] {
        assert_eq!(
            indexes(&store, table).await,
            vec![
                (format!("{table}_pkey"), false),
                (format!("{table}_status"), true),
            ]
        );
    }
}

#[tokio::test]
async fn a_reader_holding_one_table_while_it_asks_for_another_meets_no_deadlock_with_the_swap() {
    // Proves: the swap locks every table of a projection at once before it
    // drops any, giving way to a reader that holds one of them while it
    // asks for another (as a join of the two does), so neither fails.
    // Before, the swap dropped the tables one by one: it held the first
    // while it waited for the reader's, the reader waited for the first,
    // and PostgreSQL failed one of them (a 500 for a balance read).
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let accounts = projections::accounts::Accounts;
    projections::status::register(
        store.pool(),
        &[Arc::new(projections::accounts::Accounts) as Arc<dyn Projection>],
    )
    .await
    .unwrap();
    let mut reader = store.pool().begin().await.unwrap();
    sqlx::query("SELECT count(*) FROM ledger_account_movements")
        .execute(&mut *reader)
        .await
        .unwrap();
    let pool = store.pool().clone();
    let rebuilding = tokio::spawn(async move { rebuild(&pool, &accounts, true).await });
    // The swap waits for the table the reader holds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (waiting,): (i64,) = sqlx::query_as(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation \
             WHERE NOT l.granted AND c.relname = 'ledger_account_movements' \
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        )
        .fetch_one(store.pool())
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the swap never waited for the reader's table"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    let (accounts_read,): (i64,) = sqlx::query_as("SELECT count(*) FROM ledger_accounts")
        .fetch_one(&mut *reader)
        .await
        .unwrap();
    assert_eq!(accounts_read, 0);
    reader.commit().await.unwrap();
    let report = rebuilding.await.unwrap().unwrap();
    assert_eq!(report.events, 0, "{report:?}");
}

#[tokio::test]
async fn a_rebuild_that_stopped_without_finishing_is_shown_live_again_at_the_next_status_read() {
    // Proves: a projection left `rebuilding` by a rebuild whose process was
    // killed reads as live again, with a note, at the next status read
    // (every 5 s on a running server), not only when a server starts;
    // while a rebuild holds its lock, it stays `rebuilding`.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    projections::status::register(
        store.pool(),
        &[Arc::new(StreamIndex) as Arc<dyn Projection>],
    )
    .await
    .unwrap();
    let mark_rebuilding = || {
        sqlx::query("UPDATE projections SET state = 'rebuilding' WHERE projection = $1")
            .bind(StreamIndex.name())
            .execute(store.pool())
    };
    let read = || async {
        let statuses = projections::status::status(store.pool(), &[StreamIndex.name()])
            .await
            .unwrap();
        (statuses[0].state.as_str(), statuses[0].error.clone())
    };
    // A rebuild running: its lock held on a session of its own.
    let (namespace, key) = projections::status::rebuild_lock(StreamIndex.name());
    let mut rebuild = store.pool().acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1, $2)")
        .bind(namespace)
        .bind(key)
        .execute(&mut *rebuild)
        .await
        .unwrap();
    let (pid,): (i32,) = sqlx::query_as("SELECT pg_backend_pid()")
        .fetch_one(&mut *rebuild)
        .await
        .unwrap();
    mark_rebuilding().await.unwrap();
    assert_eq!(read().await, ("rebuilding", None));
    // Its process killed: the session ends (waited for), the lock goes
    // with it.
    let (ended,): (bool,) = sqlx::query_as("SELECT pg_terminate_backend($1, 10000)")
        .bind(pid)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!(ended);
    drop(rebuild.detach());
    assert_eq!(
        read().await,
        ("live", Some("a rebuild was interrupted".to_string()))
    );
}
