//! A reactor (process manager) on the projection runtime, submitting
//! commands through the pipeline: each reaction takes effect exactly once.

mod support;

use aggregates::TenantId;
use async_trait::async_trait;
use commands::{BusConfig, CommandBus, Metrics};
use eventstore::testing::TestDatabase;
use eventstore::{IdempotencyKey, StoredEvent};
use projections::reactor::{react_catch_up, react_step_within, ReactLimits};
use projections::runtime::Step;
use projections::worker::react_round;
use projections::Reactor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use support::{AddToCounter, RaiseLimit};

/// Mirrors every addition to counter `source` onto counter `mirror`, under a
/// key derived from the causing event. Fails once, at the 20th event, after
/// reacting to the 19 before it.
struct Mirror {
    bus: CommandBus,
    reactions: AtomicU64,
    replayed: AtomicU64,
    failed_once: AtomicBool,
}

#[async_trait]
impl Reactor for Mirror {
    fn name(&self) -> &'static str {
        "mirror"
    }

    async fn react(&self, tenant_id: TenantId, event: &StoredEvent) -> Result<(), String> {
        if event.aggregate_id != "source" || event.event_type != "CounterAdded" {
            return Ok(());
        }
        if self.reactions.fetch_add(1, Ordering::SeqCst) == 19
            && !self.failed_once.swap(true, Ordering::SeqCst)
        {
            return Err("injected crash".into());
        }
        let payload = event
            .payload
            .to_value()
            .map_err(|error| error.to_string())?;
        let amount = payload["Added"]["amount"].as_i64().ok_or("no amount")?;
        let key = IdempotencyKey::parse(&projections::reactor::reaction_key(
            self.name(),
            event.event_id,
            0,
        ))
        .map_err(|error| error.to_string())?;
        let outcome = self
            .bus
            .execute(
                tenant_id,
                key,
                AddToCounter {
                    counter: "mirror".into(),
                    amount,
                },
            )
            .await
            .map_err(|error| error.to_string())?;
        if outcome.replayed {
            self.replayed.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_reaction_repeated_after_a_crash_takes_effect_once() {
    // Proves: a reactor that crashes after reacting to 19 events, before its
    // checkpoint commits, reacts to them again on restart; the pipeline
    // answers those 19 from their records and the mirror counts each once.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let bus = CommandBus::start(
        store.clone(),
        BusConfig::default(),
        Arc::new(Metrics::default()),
    );
    for counter in ["source", "mirror"] {
        let key = IdempotencyKey::parse(&format!("raise-{counter}")).unwrap();
        bus.execute(
            tenant_id,
            key,
            RaiseLimit {
                counter: counter.into(),
                to: 1_000,
            },
        )
        .await
        .unwrap();
    }
    for index in 0..30 {
        let key = IdempotencyKey::parse(&format!("add-{index}")).unwrap();
        bus.execute(
            tenant_id,
            key,
            AddToCounter {
                counter: "source".into(),
                amount: 2,
            },
        )
        .await
        .unwrap();
    }
    let mirror = Mirror {
        bus: bus.clone(),
        reactions: AtomicU64::new(0),
        replayed: AtomicU64::new(0),
        failed_once: AtomicBool::new(false),
    };
    let mirror = Arc::new(mirror);
    projections::status::register_reactors(store.pool(), &["mirror"])
        .await
        .unwrap();
    let crash = react_round(store.pool(), mirror.clone()).await.unwrap_err();
    assert!(crash.to_string().ends_with("injected crash"), "{crash}");
    // Its lag and its last error are in the registry the status routes
    // (`GET /v1/projections`, `/metrics`) read.
    let failed = &projections::status::status(store.pool(), &["mirror"])
        .await
        .unwrap()[0];
    assert_eq!(failed.state, projections::status::State::Failed);
    assert!(
        failed.error.as_deref().unwrap().ends_with("injected crash"),
        "{failed:?}"
    );
    // Its checkpoint never advanced: behind by the 2 raises and 30
    // additions, and the 19 mirrored additions it appended before failing.
    assert_eq!((failed.checkpoint, failed.events_behind), (0, 51));
    // The round covers the 51 events it read, and no more: the 11 additions
    // it appended meanwhile wait for the next round, as appends do.
    assert_eq!(react_round(store.pool(), mirror.clone()).await.unwrap(), 51);
    assert_eq!(mirror.replayed.load(Ordering::SeqCst), 19);
    let recovered = &projections::status::status(store.pool(), &["mirror"])
        .await
        .unwrap()[0];
    assert_eq!(recovered.state, projections::status::State::Live);
    assert_eq!(recovered.error, None);

    let mirror_events = store
        .read_tenant(tenant_id, 0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.aggregate_id == "mirror" && event.event_type == "CounterAdded")
        .count();
    assert_eq!(mirror_events, 30);
    // The reactor's own appends are new events; reacting to them does
    // nothing, and then nothing lags.
    assert_eq!(
        react_catch_up(store.pool(), mirror.as_ref()).await.unwrap(),
        11
    );
    assert_eq!(mirror.reactions.load(Ordering::SeqCst), 50);
    assert_eq!(
        react_catch_up(store.pool(), mirror.as_ref()).await.unwrap(),
        0
    );
    let checkpoint = projections::read::checkpoint(store.pool(), "mirror", tenant_id)
        .await
        .unwrap();
    assert_eq!(
        checkpoint,
        store.chain_head(tenant_id).await.unwrap().unwrap().seq
    );
}

/// Waits, at each tenant's first event, for another tenant's first event to
/// be reacted to at the same time.
struct Rendezvous {
    barrier: tokio::sync::Barrier,
}

#[async_trait]
impl Reactor for Rendezvous {
    fn name(&self) -> &'static str {
        "rendezvous"
    }

    async fn react(&self, _tenant_id: TenantId, event: &StoredEvent) -> Result<(), String> {
        if event.tenant_seq == 1 {
            tokio::time::timeout(std::time::Duration::from_secs(10), self.barrier.wait())
                .await
                .map_err(|_| "no other tenant was reacted to meanwhile".to_string())?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_reactor_works_on_several_tenants_at_once() {
    // Proves: lagging tenants are reacted to concurrently, each in its own
    // order. Each tenant's first reaction waits for the other's; one tenant
    // at a time would never get past the first.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenants = two_tenants_with_events(store, 3).await;
    projections::status::register_reactors(store.pool(), &["rendezvous"])
        .await
        .unwrap();
    let reactor = Rendezvous {
        barrier: tokio::sync::Barrier::new(2),
    };
    assert_eq!(react_catch_up(store.pool(), &reactor).await.unwrap(), 6);
    for tenant_id in tenants {
        let checkpoint = projections::read::checkpoint(store.pool(), "rendezvous", tenant_id)
            .await
            .unwrap();
        assert_eq!(checkpoint, 3);
    }
}

/// Waits for `notify`, up to 10 s, failing with `what`.
async fn wait(notify: &tokio::sync::Notify, what: &str) -> Result<(), String> {
    tokio::time::timeout(std::time::Duration::from_secs(10), notify.notified())
        .await
        .map_err(|_| what.to_string())
}

/// Refuses the first event of tenant `failing` once another tenant is at
/// work on its own first event; that one waits until the refusal has
/// happened. So the failure always comes while the other is at work,
/// however the two are scheduled.
struct Refusing {
    failing: TenantId,
    at_work: tokio::sync::Notify,
    refused: tokio::sync::Notify,
}

#[async_trait]
impl Reactor for Refusing {
    fn name(&self) -> &'static str {
        "refusing"
    }

    async fn react(&self, tenant_id: TenantId, event: &StoredEvent) -> Result<(), String> {
        if event.tenant_seq != 1 {
            return Ok(());
        }
        if tenant_id == self.failing {
            wait(&self.at_work, "no other tenant was at work meanwhile").await?;
            self.refused.notify_one();
            return Err("refused".into());
        }
        self.at_work.notify_one();
        wait(&self.refused, "the other tenant was not refused meanwhile").await
    }
}

#[tokio::test]
async fn a_tenant_a_reactor_refuses_does_not_hold_back_the_others_at_work() {
    // Proves: when one tenant's reaction fails, a tenant reacted to at the
    // same time finishes its batch and its checkpoint advances; the error
    // is still returned, and the failing tenant's checkpoint stays put.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenants = two_tenants_with_events(store, 2).await;
    projections::status::register_reactors(store.pool(), &["refusing"])
        .await
        .unwrap();
    let reactor = Refusing {
        failing: tenants[0],
        at_work: tokio::sync::Notify::new(),
        refused: tokio::sync::Notify::new(),
    };
    let error = react_catch_up(store.pool(), &reactor).await.unwrap_err();
    assert!(error.to_string().ends_with("refused"), "{error}");
    let checkpoint = |tenant_id| projections::read::checkpoint(store.pool(), "refusing", tenant_id);
    assert_eq!(checkpoint(tenants[0]).await.unwrap(), 0);
    assert_eq!(checkpoint(tenants[1]).await.unwrap(), 2);
}

/// Refuses the first event of one tenant, at once.
struct RefusingOne {
    failing: TenantId,
}

#[async_trait]
impl Reactor for RefusingOne {
    fn name(&self) -> &'static str {
        "refusing"
    }

    async fn react(&self, tenant_id: TenantId, event: &StoredEvent) -> Result<(), String> {
        if tenant_id == self.failing && event.tenant_seq == 1 {
            return Err("refused".into());
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_tenant_a_reactor_refuses_does_not_hold_back_the_tenants_after_it() {
    // Proves: when the first tenant in the reactor's order fails, every
    // other tenant of the round is still reacted to (more tenants than the
    // reactor works on at once, so most start after the failure); the
    // error is returned and the failing tenant's checkpoint stays put.
    let db = TestDatabase::new().await;
    let store = db.store();
    let bus = CommandBus::start(
        store.clone(),
        BusConfig::default(),
        Arc::new(Metrics::default()),
    );
    let mut tenants = Vec::new();
    for index in 0..10 {
        let tenant_id = store
            .create_tenant(&format!("tenant-{index}"))
            .await
            .unwrap()
            .tenant_id;
        let raise = RaiseLimit {
            counter: "source".into(),
            to: 10,
        };
        bus.execute(tenant_id, IdempotencyKey::parse("raise").unwrap(), raise)
            .await
            .unwrap();
        tenants.push(tenant_id);
    }
    tenants.sort();
    projections::status::register_reactors(store.pool(), &["refusing"])
        .await
        .unwrap();
    let reactor = RefusingOne {
        failing: tenants[0],
    };
    let error = projections::reactor::react_catch_up_with(store.pool(), &reactor, || false)
        .await
        .unwrap_err();
    assert!(error.to_string().ends_with("refused"), "{error}");
    let mut checkpoints = Vec::new();
    for tenant_id in &tenants {
        checkpoints.push(
            projections::read::checkpoint(store.pool(), "refusing", *tenant_id)
                .await
                .unwrap(),
        );
    }
    let mut expected = vec![1; tenants.len()];
    expected[0] = 0;
    assert_eq!(checkpoints, expected);
}

/// Two tenants, each with `count` events (raises of one counter).
async fn two_tenants_with_events(store: &eventstore::EventStore, count: i64) -> Vec<TenantId> {
    let bus = CommandBus::start(
        store.clone(),
        BusConfig::default(),
        Arc::new(Metrics::default()),
    );
    let mut tenants = Vec::new();
    for name in ["acme", "globex"] {
        let tenant_id = store.create_tenant(name).await.unwrap().tenant_id;
        for index in 0..count {
            let key = IdempotencyKey::parse(&format!("raise-{index}")).unwrap();
            bus.execute(
                tenant_id,
                key,
                RaiseLimit {
                    counter: "source".into(),
                    to: 10 + index,
                },
            )
            .await
            .unwrap();
        }
        tenants.push(tenant_id);
    }
    tenants
}

/// Reacts to the events of `types` only, keeping the seqs it was given.
struct Picky {
    name: &'static str,
    types: &'static [&'static str],
    seen: Mutex<Vec<i64>>,
}

impl Picky {
    fn new(name: &'static str, types: &'static [&'static str]) -> Self {
        Self {
            name,
            types,
            seen: Mutex::new(Vec::new()),
        }
    }

    fn seen(&self) -> Vec<i64> {
        self.seen.lock().unwrap().clone()
    }
}

#[async_trait]
impl Reactor for Picky {
    fn name(&self) -> &'static str {
        self.name
    }

    fn aggregate_types(&self) -> Option<&'static [&'static str]> {
        Some(self.types)
    }

    async fn react(&self, _tenant_id: TenantId, event: &StoredEvent) -> Result<(), String> {
        self.seen.lock().unwrap().push(event.tenant_seq);
        Ok(())
    }
}

#[tokio::test]
async fn a_reactor_reads_only_the_aggregate_types_it_names() {
    // Proves: a reactor naming its aggregate types is given their events
    // only, in order, and its checkpoint still passes over the others to
    // the head.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenants = two_tenants_with_events(store, 5).await;
    projections::status::register_reactors(store.pool(), &["counters", "payments_only"])
        .await
        .unwrap();
    let counters = Picky::new("counters", &["counter"]);
    let payments_only = Picky::new("payments_only", &["payment"]);
    assert_eq!(react_catch_up(store.pool(), &counters).await.unwrap(), 10);
    assert_eq!(
        react_catch_up(store.pool(), &payments_only).await.unwrap(),
        10
    );
    let mut seen = counters.seen();
    seen.sort_unstable();
    assert_eq!(seen, vec![1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    assert_eq!(payments_only.seen(), Vec::<i64>::new());
    for tenant_id in tenants {
        for name in ["counters", "payments_only"] {
            let checkpoint = projections::read::checkpoint(store.pool(), name, tenant_id)
                .await
                .unwrap();
            assert_eq!(checkpoint, 5, "{name}");
        }
    }
}

#[tokio::test]
async fn a_reactor_passes_over_other_events_in_bounded_steps() {
    // Proves: passing over events of other types, one step covers at most
    // the window it is given, and the checkpoint records the time of the
    // event it stops at (read from the event inside the history, from the
    // head row at its end).
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = two_tenants_with_events(store, 5).await[0];
    projections::status::register_reactors(store.pool(), &["payments_only"])
        .await
        .unwrap();
    // Finding the lagging tenants gives them their checkpoint rows.
    let lagging = projections::runtime::lagging_tenants(store.pool(), "payments_only")
        .await
        .unwrap();
    assert!(lagging.contains(&tenant_id));
    let reactor = Picky::new("payments_only", &["payment"]);
    let events = store.read_tenant(tenant_id, 0, 10).await.unwrap();
    let checkpoint = || async {
        sqlx::query_as::<_, (i64, chrono::DateTime<chrono::Utc>)>(
            "SELECT last_seq, last_recorded_at FROM projection_checkpoints \
             WHERE tenant_id = $1 AND projection = 'payments_only'",
        )
        .bind(tenant_id.as_uuid())
        .fetch_one(store.pool())
        .await
        .unwrap()
    };
    let window = ReactLimits {
        batch_events: 1_000,
        scan_events: 2,
    };
    for (events_covered, last_seq) in [(2, 2), (2, 4), (1, 5)] {
        let step = react_step_within(store.pool(), &reactor, tenant_id, window)
            .await
            .unwrap();
        assert_eq!(
            step,
            Step::Applied {
                events: events_covered,
                last_seq
            }
        );
        let recorded_at = events[usize::try_from(last_seq).unwrap() - 1].recorded_at;
        assert_eq!(checkpoint().await, (last_seq, recorded_at));
    }
    let step = react_step_within(store.pool(), &reactor, tenant_id, window)
        .await
        .unwrap();
    assert_eq!(step, Step::UpToDate);
    assert_eq!(reactor.seen(), Vec::<i64>::new());
}

/// Appends one event of each aggregate type in `types`, in order, each as a
/// command of its own (written straight to the store).
async fn events_of_types(store: &eventstore::EventStore, tenant_id: TenantId, types: &[&str]) {
    use eventstore::{CommandWrite, Fingerprint, JsonText, NewEvent};
    for (index, aggregate_type) in types.iter().enumerate() {
        let at = store
            .chain_head(tenant_id)
            .await
            .unwrap()
            .and_then(|head| head.recorded_at)
            .unwrap_or_else(chrono::Utc::now);
        let body = serde_json::json!({ "n": index });
        let write = CommandWrite {
            key: IdempotencyKey::parse(&format!("typed-{index}")).unwrap(),
            fingerprint: Fingerprint::of("test", &body).unwrap(),
            status: 201,
            events: vec![NewEvent {
                aggregate_type: aggregate_type.to_string(),
                aggregate_id: format!("a-{index}"),
                aggregate_seq: 1,
                event_type: "Happened".to_string(),
                event_version: "1".to_string(),
                payload: JsonText::from_value(&body).unwrap(),
                metadata: JsonText::from_value(&serde_json::json!({})).unwrap(),
            }],
            indexed: Vec::new(),
            at: eventstore::chain::to_stored_precision(at + chrono::Duration::milliseconds(1)),
        };
        store
            .append_command(tenant_id, write, |_, seq| serde_json::json!({ "seq": seq }))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_full_batch_stops_at_its_last_event_and_the_next_goes_on_from_there() {
    // Proves: among events of other types, a batch that fills up moves the
    // checkpoint to its last event only (the rest of its window is read
    // again by the next batch), and one that does not fill up covers its
    // whole window; every watched event is reacted to once, in order.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    events_of_types(
        store,
        tenant_id,
        &[
            "other", "watched", "other", "other", "watched", "watched", "other",
        ],
    )
    .await;
    projections::status::register_reactors(store.pool(), &["watcher"])
        .await
        .unwrap();
    for (limits, steps) in [
        (
            ReactLimits {
                batch_events: 2,
                scan_events: 3,
            },
            vec![(3, 3), (3, 6), (1, 7)],
        ),
        (
            ReactLimits {
                batch_events: 1,
                scan_events: 6,
            },
            vec![(2, 2), (3, 5), (1, 6), (1, 7)],
        ),
    ] {
        sqlx::query("DELETE FROM projection_checkpoints WHERE projection = 'watcher'")
            .execute(store.pool())
            .await
            .unwrap();
        projections::runtime::lagging_tenants(store.pool(), "watcher")
            .await
            .unwrap();
        let reactor = Picky::new("watcher", &["watched"]);
        for (events, last_seq) in steps {
            let step = react_step_within(store.pool(), &reactor, tenant_id, limits)
                .await
                .unwrap();
            assert_eq!(step, Step::Applied { events, last_seq }, "{limits:?}");
        }
        let step = react_step_within(store.pool(), &reactor, tenant_id, limits)
            .await
            .unwrap();
        assert_eq!(step, Step::UpToDate);
        assert_eq!(reactor.seen(), vec![2, 5, 6], "{limits:?}");
    }
}
