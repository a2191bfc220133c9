//! One tenant's event that a projection cannot apply, in the live workers
//! and in a rebuild: that tenant is held back at the event itself (named by
//! seq, even when it is the database that refuses the write) and every
//! other tenant is applied.

use super::{append, count, tenant, AfterLog, EventLog, Logged};
use aggregates::TenantId;
use async_trait::async_trait;
use eventstore::testing::TestDatabase;
use eventstore::{EventStore, StoredEvent};
use projections::rebuild::{rebuild, HeldBack};
use projections::runtime::{catch_up, catch_up_holding_back, Limits, BATCH_EVENTS_MAX};
use projections::{ApplyError, Projection};
use sqlx::PgConnection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// After [`EventLog`] has written a batch, writes one chosen event also as a time
/// PostgreSQL cannot hold, so the database refuses that write (as it did
/// the year -5000 a client could once send).
struct OutOfRange {
    tenant_id: TenantId,
    tenant_seq: i64,
    refusing: AtomicBool,
}

#[async_trait]
impl AfterLog for OutOfRange {
    async fn after(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        let chosen = events
            .iter()
            .any(|event| event.tenant_id == self.tenant_id && event.tenant_seq == self.tenant_seq);
        if chosen && self.refusing.load(Ordering::SeqCst) {
            sqlx::query("SELECT '5000-01-01 00:00:00+00 BC'::timestamptz")
                .execute(connection)
                .await?;
        }
        Ok(())
    }
}

async fn checkpoints(store: &EventStore) -> Vec<(uuid::Uuid, i64)> {
    sqlx::query_as(
        "SELECT tenant_id, last_seq FROM projection_checkpoints \
         WHERE projection = 'event_log' ORDER BY tenant_id",
    )
    .fetch_all(store.pool())
    .await
    .unwrap()
}

/// Three tenants of 50 events each, the projection refusing the second
/// tenant's event 20.
async fn three_tenants(store: &EventStore) -> [TenantId; 3] {
    EventLog::create_table(store).await;
    let tenants = [
        tenant(store).await,
        tenant(store).await,
        tenant(store).await,
    ];
    for tenant_id in tenants {
        append(store, tenant_id, 0, 50, 5, 50).await;
    }
    tenants
}

fn expected_checkpoints(tenants: &[TenantId; 3], held_at: i64) -> Vec<(uuid::Uuid, i64)> {
    let mut expected: Vec<(uuid::Uuid, i64)> = tenants
        .iter()
        .map(|tenant_id| {
            let seq = if *tenant_id == tenants[1] {
                held_at
            } else {
                50
            };
            (tenant_id.as_uuid(), seq)
        })
        .collect();
    expected.sort();
    expected
}

const REFUSAL: &str =
    "error returned from database: timestamp out of range: \"5000-01-01 00:00:00+00 BC\"";

#[tokio::test]
async fn a_write_the_database_refuses_holds_its_tenant_back_at_that_event() {
    // Proves: when the database refuses one tenant's write in a batch of
    // several tenants, the workers apply every other tenant, apply that
    // tenant's events up to the refused one, and name the tenant and seq.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let tenants = three_tenants(&store).await;
    let projection = Logged(OutOfRange {
        tenant_id: tenants[1],
        tenant_seq: 20,
        refusing: AtomicBool::new(true),
    });
    let error = catch_up(store.pool(), &projection, None, BATCH_EVENTS_MAX)
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "projection event_log, tenant {}: event at tenant_seq 20: {REFUSAL}",
            tenants[1]
        )
    );
    assert_eq!(
        checkpoints(&store).await,
        expected_checkpoints(&tenants, 19)
    );
    assert_eq!(count(&store, "event_log").await, 119);
    projection.refusing.store(false, Ordering::SeqCst);
    assert_eq!(
        catch_up(store.pool(), &projection, None, BATCH_EVENTS_MAX)
            .await
            .unwrap(),
        31
    );
    assert_eq!(count(&store, "event_log").await, 150);
}

#[tokio::test]
async fn a_rebuild_holds_back_the_tenant_it_cannot_apply_and_rebuilds_every_other() {
    // Proves: a rebuild whose projection refuses one tenant's event (the
    // database refusing the write) names that tenant and seq, swaps in the
    // others complete and that tenant up to the event before, and marks the
    // projection failed saying so; once the event applies, the workers
    // catch the tenant up.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let tenants = three_tenants(&store).await;
    let projection = Arc::new(Logged(OutOfRange {
        tenant_id: tenants[1],
        tenant_seq: 20,
        refusing: AtomicBool::new(false),
    }));
    projections::status::register(store.pool(), &[projection.clone() as Arc<dyn Projection>])
        .await
        .unwrap();
    catch_up(store.pool(), projection.as_ref(), None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    assert_eq!(count(&store, "event_log").await, 150);
    projection.refusing.store(true, Ordering::SeqCst);
    let report = rebuild(store.pool(), projection.as_ref(), true)
        .await
        .unwrap();
    assert_eq!(
        report.held_back,
        vec![HeldBack {
            projection: "event_log".into(),
            tenant_id: tenants[1],
            tenant_seq: 20,
            error: REFUSAL.into(),
        }]
    );
    assert_eq!(report.events, 150);
    assert_eq!(
        checkpoints(&store).await,
        expected_checkpoints(&tenants, 19)
    );
    assert_eq!(count(&store, "event_log").await, 119);
    let (state, message): (String, Option<String>) =
        sqlx::query_as("SELECT state, error FROM projections WHERE projection = 'event_log'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(state, "failed");
    assert_eq!(
        message.unwrap(),
        format!(
            "rebuilt with tenants held back: tenant {}: event at tenant_seq 20: {REFUSAL}",
            tenants[1]
        )
    );
    projection.refusing.store(false, Ordering::SeqCst);
    assert_eq!(
        catch_up(store.pool(), projection.as_ref(), None, BATCH_EVENTS_MAX)
            .await
            .unwrap(),
        31
    );
    assert_eq!(count(&store, "event_log").await, 150);
}

#[tokio::test]
async fn a_rebuild_that_can_apply_no_tenant_is_not_swapped_in() {
    // Proves: when a projection refuses every tenant (a defect of a new
    // version, say), the rebuild fails naming the first tenant and seq and
    // the live tables stay as they were.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    EventLog::create_table(&store).await;
    let tenant_id = tenant(&store).await;
    append(&store, tenant_id, 0, 30, 5, 30).await;
    let projection = Logged(OutOfRange {
        tenant_id,
        tenant_seq: 7,
        refusing: AtomicBool::new(false),
    });
    catch_up(store.pool(), &projection, None, BATCH_EVENTS_MAX)
        .await
        .unwrap();
    projection.refusing.store(true, Ordering::SeqCst);
    let error = rebuild(store.pool(), &projection, true).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("projection event_log, tenant {tenant_id}: event at tenant_seq 7: {REFUSAL}")
    );
    assert_eq!(count(&store, "event_log").await, 30);
    assert_eq!(checkpoints(&store).await, vec![(tenant_id.as_uuid(), 30)]);
}

/// [`OutOfRange`]'s refusal of one tenant's event, plus: once armed, the
/// first batch appends that tenant's next events (the refused one among
/// them), which so arrive after the rebuild's bulk pass read its heads.
struct LateRefusal {
    refusing: OutOfRange,
    store: EventStore,
    armed: AtomicBool,
}

#[async_trait]
impl AfterLog for LateRefusal {
    async fn after(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        if self.armed.swap(false, Ordering::SeqCst) {
            append(&self.store, self.refusing.tenant_id, 1_000, 5, 5, 5).await;
        }
        self.refusing.after(connection, events).await
    }
}

#[tokio::test]
async fn an_event_refused_in_the_swap_holds_its_tenant_back_like_one_refused_in_bulk() {
    // Proves: a refused event appended after the rebuild's last bulk pass
    // (so first met by the swap's final top-up) does not fail the rebuild:
    // the swap rolls back, another bulk pass holds that tenant back at the
    // event, and the swap then puts everything else in place.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    EventLog::create_table(&store).await;
    let acme = tenant(&store).await;
    let late = tenant(&store).await;
    append(&store, acme, 0, 500, 5, 250).await;
    append(&store, late, 0, 10, 5, 10).await;
    let projection = Logged(LateRefusal {
        refusing: OutOfRange {
            tenant_id: late,
            tenant_seq: 13,
            refusing: AtomicBool::new(true),
        },
        store: store.clone(),
        armed: AtomicBool::new(false),
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
    assert_eq!(
        report.held_back,
        vec![HeldBack {
            projection: "event_log".into(),
            tenant_id: late,
            tenant_seq: 13,
            error: REFUSAL.into(),
        }]
    );
    let mut expected = vec![(acme.as_uuid(), 500), (late.as_uuid(), 12)];
    expected.sort();
    assert_eq!(checkpoints(&store).await, expected);
    assert_eq!(count(&store, "event_log").await, 512);
}

/// After [`EventLog`] has written a batch, refuses one tenant's event, and
/// counts the batches that offered it any of that tenant's events.
struct CountingRefusal {
    tenant_id: TenantId,
    tenant_seq: i64,
    offers: std::sync::atomic::AtomicU64,
}

#[async_trait]
impl AfterLog for CountingRefusal {
    async fn after(&self, _: &mut PgConnection, events: &[&StoredEvent]) -> Result<(), ApplyError> {
        if events.iter().any(|event| event.tenant_id == self.tenant_id) {
            self.offers.fetch_add(1, Ordering::SeqCst);
        }
        if events
            .iter()
            .any(|event| event.tenant_id == self.tenant_id && event.tenant_seq == self.tenant_seq)
        {
            return Err(ApplyError::Event {
                tenant_seq: self.tenant_seq,
                message: "refused".into(),
            });
        }
        Ok(())
    }
}

/// Waits (at most 30 s) until the `event_log` checkpoints are `expected`.
async fn wait_for_checkpoints(store: &EventStore, expected: &[(uuid::Uuid, i64)]) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let now = checkpoints(store).await;
        if now == expected {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "checkpoints {now:?}, waited 30 s for {expected:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn workers_leave_a_held_back_tenant_alone_between_retries() {
    // Proves: once the workers hold a tenant back at an event the
    // projection refuses, later rounds (woken by other tenants' appends)
    // apply the other tenants without offering the held tenant's events
    // again, and the projection stays failed naming it.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    EventLog::create_table(&store).await;
    let tenants = [
        tenant(&store).await,
        tenant(&store).await,
        tenant(&store).await,
    ];
    let projection = Arc::new(Logged(CountingRefusal {
        tenant_id: tenants[1],
        tenant_seq: 5,
        offers: std::sync::atomic::AtomicU64::new(0),
    }));
    let catalog = vec![projection.clone() as Arc<dyn Projection>];
    projections::status::register(store.pool(), &catalog)
        .await
        .unwrap();
    // Rounds come from appends only: the poll (and so the retry of the
    // held tenant, five polls later) is far away.
    let workers = projections::Workers::start_polling(
        &store,
        catalog,
        Vec::new(),
        std::time::Duration::from_secs(600),
    );
    for tenant_id in tenants {
        append(&store, tenant_id, 0, 10, 5, 10).await;
    }
    let expect = |others: i64| {
        let mut expected: Vec<(uuid::Uuid, i64)> = tenants
            .iter()
            .map(|tenant_id| {
                let seq = if *tenant_id == tenants[1] { 4 } else { others };
                (tenant_id.as_uuid(), seq)
            })
            .collect();
        expected.sort();
        expected
    };
    wait_for_checkpoints(&store, &expect(10)).await;
    let offers = projection.offers.load(Ordering::SeqCst);
    for round in 0..5_u64 {
        for tenant_id in [tenants[0], tenants[2]] {
            append(&store, tenant_id, 100 + round * 10, 10, 5, 10).await;
        }
        wait_for_checkpoints(&store, &expect(20 + 10 * round as i64)).await;
    }
    assert_eq!(
        projection.offers.load(Ordering::SeqCst),
        offers,
        "the held tenant's events were offered again"
    );
    let (state, message): (String, Option<String>) =
        sqlx::query_as("SELECT state, error FROM projections WHERE projection = 'event_log'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(state, "failed");
    assert_eq!(
        message.unwrap(),
        format!(
            "projection event_log, tenant {}: event at tenant_seq 5: refused",
            tenants[1]
        )
    );
    workers.stop().await;
}

/// A projection that writes nothing and refuses one tenant's event.
struct Refusing {
    name: &'static str,
    tenant_id: TenantId,
    tenant_seq: i64,
}

#[async_trait]
impl Projection for Refusing {
    fn name(&self) -> &'static str {
        self.name
    }
    fn version(&self) -> i32 {
        1
    }
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }
    async fn apply(&self, _: &mut PgConnection, events: &[&StoredEvent]) -> Result<(), ApplyError> {
        if events
            .iter()
            .any(|event| event.tenant_id == self.tenant_id && event.tenant_seq == self.tenant_seq)
        {
            return Err(ApplyError::Event {
                tenant_seq: self.tenant_seq,
                message: format!("{} refuses", self.name),
            });
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_tenant_applied_event_by_event_leaves_its_held_partitions_alone() {
    // Proves: with (tenant, first) held back at event 5, which `first`
    // refuses, a batch that fails because `second` refuses the same
    // tenant's event 12 is located event by event up to that event
    // (`second` applied to 11, the error naming it), instead of stopping
    // again at the held partition's event 5 and leaving `second` at 4.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let tenants = [tenant(&store).await, tenant(&store).await];
    for tenant_id in tenants {
        append(&store, tenant_id, 0, 10, 5, 10).await;
    }
    let first = Refusing {
        name: "first",
        tenant_id: tenants[0],
        tenant_seq: 5,
    };
    let second = Refusing {
        name: "second",
        tenant_id: tenants[0],
        tenant_seq: 12,
    };
    let both: [&dyn Projection; 2] = [&first, &second];
    let catch_up = |held_back| {
        catch_up_holding_back(
            store.pool(),
            &both,
            None,
            Limits::default(),
            || false,
            held_back,
        )
    };
    let error = catch_up(&[]).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "projection first, tenant {}: event at tenant_seq 5: first refuses",
            tenants[0]
        )
    );
    append(&store, tenants[0], 10, 10, 5, 10).await;
    let error = catch_up(&[(tenants[0], "first")]).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "projection second, tenant {}: event at tenant_seq 12: second refuses",
            tenants[0]
        )
    );
    let checkpoint = |name, tenant_id| projections::read::checkpoint(store.pool(), name, tenant_id);
    assert_eq!(checkpoint("first", tenants[0]).await.unwrap(), 4);
    assert_eq!(checkpoint("second", tenants[0]).await.unwrap(), 11);
    assert_eq!(checkpoint("first", tenants[1]).await.unwrap(), 10);
    assert_eq!(checkpoint("second", tenants[1]).await.unwrap(), 10);
}
