//! The command pipeline against a real PostgreSQL: exactly-once execution,
//! replays, reused keys, recorded rejections, atomic multi-aggregate
//! decisions, group commit, shards, conflicts between processes, snapshots.

mod support;

use aggregates::TenantId;
use commands::{BusConfig, CommandBus, Metrics, Outcome, PipelineError};
use eventstore::testing::TestDatabase;
use eventstore::{AggregateKey, EventStore, IdempotencyKey};
use serde_json::json;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use support::{AddToBoth, AddToCounter, RaiseLimit, ReadCounter};

fn bus(store: &EventStore) -> CommandBus {
    CommandBus::start(
        store.clone(),
        BusConfig::default(),
        Arc::new(Metrics::default()),
    )
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::parse(text).unwrap()
}

fn add(counter: &str, amount: i64) -> AddToCounter {
    AddToCounter {
        counter: counter.to_string(),
        amount,
    }
}

async fn events_of(store: &EventStore, tenant_id: TenantId) -> usize {
    store.read_tenant(tenant_id, 0, 10_000).await.unwrap().len()
}

/// A request submitted to the pipeline, waiting for its outcome.
type Call<'a> = Pin<Box<dyn Future<Output = Result<Outcome, PipelineError>> + 'a>>;

/// Submits every call before the pipeline runs at all, then waits for their
/// outcomes. On a current-thread runtime the shards run only when this task
/// yields: each call is polled once without yielding, which puts its request
/// in its shard's queue and leaves it waiting for the answer, so every shard
/// finds all of its requests waiting together when it next runs.
async fn submit_together(mut calls: Vec<Call<'_>>) -> Vec<Outcome> {
    // A fresh cooperative budget for the task, so no poll is refused.
    tokio::task::yield_now().await;
    std::future::poll_fn(|context| {
        for call in &mut calls {
            assert!(
                call.as_mut().poll(context).is_pending(),
                "a request was answered before the pipeline ran"
            );
        }
        Poll::Ready(())
    })
    .await;
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap());
    }
    outcomes
}

/// Appends the pipeline made (successful or not) and the commands they
/// carried, as its metrics report them.
fn appends(bus: &CommandBus) -> (u64, f64) {
    let text = bus.metrics().encode();
    let value = |name: &str| -> f64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    };
    (
        value("ledger_append_batch_commands_count") as u64,
        value("ledger_append_batch_commands_sum"),
    )
}

/// The transaction that appended each event of `keys`, numbered by first
/// appearance (the same number: the same statement).
async fn transactions_of(store: &EventStore, keys: &[String]) -> Vec<usize> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT idempotency_key, transaction_id::text FROM events WHERE idempotency_key = ANY($1)",
    )
    .bind(keys)
    .fetch_all(store.pool())
    .await
    .unwrap();
    let mut seen: Vec<String> = Vec::new();
    keys.iter()
        .map(|key| {
            let (_, transaction) = rows
                .iter()
                .find(|(row_key, _)| row_key == key)
                .unwrap_or_else(|| panic!("no event of {key}"));
            match seen.iter().position(|known| known == transaction) {
                Some(index) => index,
                None => {
                    seen.push(transaction.clone());
                    seen.len() - 1
                }
            }
        })
        .collect()
}

async fn read(bus: &CommandBus, tenant_id: TenantId, counter: &str) -> serde_json::Value {
    let nonce = uuid::Uuid::now_v7().to_string();
    let outcome = bus
        .execute(
            tenant_id,
            key(&nonce),
            ReadCounter {
                counter: counter.into(),
                nonce: nonce.clone(),
            },
        )
        .await
        .unwrap();
    outcome.body.as_ref().clone()
}

#[tokio::test]
async fn an_accepted_command_answers_with_its_events_and_the_seq_reached() {
    // Proves: the answer carries aggregate_id, the events (type, seq, hash) and
    // the tenant_seq, and equals what was stored.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let bus = bus(store);
    let outcome = bus
        .execute(tenant_id, key("k1"), add("c", 3))
        .await
        .unwrap();
    let stored = store.read_tenant(tenant_id, 0, 10).await.unwrap();
    assert_eq!(
        outcome,
        Outcome {
            status: 200,
            body: Arc::new(json!({
                "aggregate_id": "c",
                "total": 3,
                "tenant_seq": 1,
                "events": [{
                    "type": "CounterAdded",
                    "aggregate_type": "counter",
                    "aggregate_id": "c",
                    "tenant_seq": 1,
                    "hash": stored[0].hash.to_hex(),
                }],
            })),
            tenant_seq: 1,
            replayed: false,
        }
    );
    assert_eq!(
        stored[0].payload.to_value().unwrap(),
        json!({"Added": {"amount": 3}})
    );
    // The first event of a request records it: its kind, canonical body and
    // the rules it was decided under.
    assert_eq!(
        stored[0].metadata.to_value().unwrap(),
        json!({"command": "add_to_counter", "request": {"amount": 3, "counter": "c"}, "rules": aggregates::rules::Rules::CURRENT.version()})
    );
    assert_eq!(stored[0].idempotency_key, "k1");
    bus.shutdown().await;
}

#[tokio::test]
async fn the_same_key_and_command_is_answered_again_without_new_events() {
    // Proves: a repeat gets the original outcome marked replayed, from memory
    // and, in a fresh process, from the stored record; nothing new is written.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let first_bus = bus(store);
    let first = first_bus
        .execute(tenant_id, key("k1"), add("c", 3))
        .await
        .unwrap();
    let again = first_bus
        .execute(tenant_id, key("k1"), add("c", 3))
        .await
        .unwrap();
    assert_eq!(
        again,
        Outcome {
            replayed: true,
            ..first.clone()
        }
    );
    first_bus.shutdown().await;

    let second_bus = bus(store);
    let from_record = second_bus
        .execute(tenant_id, key("k1"), add("c", 3))
        .await
        .unwrap();
    assert_eq!(
        from_record,
        Outcome {
            replayed: true,
            ..first
        }
    );
    assert_eq!(events_of(store, tenant_id).await, 1);
    assert_eq!(read(&second_bus, tenant_id, "c").await["total"], 3);
}

#[tokio::test]
async fn the_same_key_with_another_command_is_refused() {
    // Proves: reusing a key for a different request is refused, in memory and
    // from the stored record, and changes nothing.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let first_bus = bus(store);
    first_bus
        .execute(tenant_id, key("k1"), add("c", 3))
        .await
        .unwrap();
    assert_eq!(
        first_bus.execute(tenant_id, key("k1"), add("c", 4)).await,
        Err(PipelineError::KeyReused)
    );
    first_bus.shutdown().await;
    let second_bus = bus(store);
    assert_eq!(
        second_bus.execute(tenant_id, key("k1"), add("c", 4)).await,
        Err(PipelineError::KeyReused)
    );
    assert_eq!(events_of(store, tenant_id).await, 1);
}

#[tokio::test]
async fn thirty_two_concurrent_requests_with_one_key_execute_once() {
    // Proves: one key submitted 32 times at once, to two separate pipelines
    // (as two processes would), appends once; every caller gets the same
    // outcome, all but one marked replayed.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let buses = [bus(store), bus(store)];
    let mut calls = Vec::new();
    for index in 0..32 {
        let bus = buses[index % 2].clone();
        calls.push(tokio::spawn(async move {
            bus.execute(tenant_id, key("once"), add("c", 1)).await
        }));
    }
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap().unwrap());
    }
    assert_eq!(events_of(store, tenant_id).await, 1);
    assert_eq!(
        outcomes.iter().filter(|outcome| !outcome.replayed).count(),
        1
    );
    let first = outcomes
        .iter()
        .find(|outcome| !outcome.replayed)
        .unwrap()
        .clone();
    for outcome in outcomes {
        assert_eq!(
            outcome,
            Outcome {
                replayed: outcome.replayed,
                ..first.clone()
            }
        );
    }
    assert_eq!(read(&buses[0], tenant_id, "c").await["total"], 1);
}

#[tokio::test]
async fn repeated_keys_in_a_batch_do_not_hold_back_the_new_requests_beside_them() {
    // Proves: when one batch holds keys that already have records (a fresh
    // pipeline has no memory of them) next to new requests (the pipeline
    // reports one append of all 16), the repeats are answered from their
    // records and the new requests are appended by the next statement,
    // together, without counting a single conflict.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let first = bus(store);
    for index in 0..8 {
        let outcome = first
            .execute(
                tenant_id,
                key(&format!("old-{index}")),
                add(&format!("c-{index}"), 1),
            )
            .await
            .unwrap();
        assert_eq!(outcome.status, 200);
    }
    first.shutdown().await;

    let second = bus(store);
    let mut calls: Vec<Call<'_>> = Vec::new();
    let mut prefixes = Vec::new();
    for index in 0..8 {
        for prefix in ["old", "new"] {
            let (bus, counter) = (&second, format!("c-{index}"));
            let key = key(&format!("{prefix}-{index}"));
            calls.push(Box::pin(async move {
                bus.execute(tenant_id, key, add(&counter, 1)).await
            }));
            prefixes.push(prefix);
        }
    }
    let outcomes = submit_together(calls).await;
    for (prefix, outcome) in prefixes.iter().zip(&outcomes) {
        assert_eq!(outcome.status, 200);
        assert_eq!(outcome.replayed, *prefix == "old", "{prefix}: {outcome:?}");
    }
    // One statement of all 16 (refused for the recorded keys), then one of
    // the 8 new ones.
    assert_eq!(appends(&second), (2, 24.0));
    let new_keys: Vec<String> = (0..8).map(|index| format!("new-{index}")).collect();
    assert_eq!(transactions_of(store, &new_keys).await, [0; 8]);
    assert_eq!(second.metrics().conflicts(), 0);
    assert_eq!(events_of(store, tenant_id).await, 16);
    for index in 0..8 {
        assert_eq!(
            read(&second, tenant_id, &format!("c-{index}")).await["total"],
            2
        );
    }
}

#[tokio::test]
async fn requests_waiting_together_are_appended_by_one_statement() {
    // Proves group commit: 12 requests of two tenants, waiting together for
    // their shard, are decided in order and appended by one statement (the
    // pipeline reports one append of 12; their events share one
    // transaction), each tenant's answers carrying its seqs 1 to 6 in the
    // order the requests came.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenants = [
        store.create_tenant("acme").await.unwrap().tenant_id,
        store.create_tenant("beta").await.unwrap().tenant_id,
    ];
    let bus = bus(store);
    let mut calls: Vec<Call<'_>> = Vec::new();
    let mut keys = Vec::new();
    for index in 0..6 {
        for (tenant, tenant_id) in tenants.iter().enumerate() {
            let text = format!("k-{tenant}-{index}");
            let (bus, key) = (&bus, key(&text));
            calls.push(Box::pin(async move {
                bus.execute(*tenant_id, key, add(&format!("c-{}", index % 2), 1))
                    .await
            }));
            keys.push(text);
        }
    }
    let outcomes = submit_together(calls).await;
    assert_eq!(appends(&bus), (1, 12.0));
    assert_eq!(transactions_of(store, &keys).await, [0; 12]);
    for tenant in 0..2 {
        let seqs: Vec<i64> = outcomes
            .iter()
            .skip(tenant)
            .step_by(2)
            .map(|outcome| outcome.tenant_seq)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6], "tenant {tenant}");
    }
    assert_eq!(read(&bus, tenants[0], "c-0").await["total"], 3);
    bus.shutdown().await;
}

#[tokio::test]
async fn each_shard_appends_its_own_tenants_requests() {
    // Proves: with two shards, a tenant's requests go to the shard
    // `shard_of` names; requests waiting together are appended by one
    // statement per shard: two tenants of one shard share one, the third
    // tenant's (the other shard) another.
    let db = TestDatabase::new().await;
    let store = db.store();
    let mut by_shard: [Vec<TenantId>; 2] = [Vec::new(), Vec::new()];
    while by_shard[0].len() < 2 || by_shard[1].is_empty() {
        let tenant_id = store.create_tenant("t").await.unwrap().tenant_id;
        by_shard[commands::pipeline::shard_of(tenant_id, 2)].push(tenant_id);
        assert!(
            by_shard[0].len() + by_shard[1].len() < 64,
            "no tenant lands on one shard"
        );
    }
    let tenants = [by_shard[0][0], by_shard[0][1], by_shard[1][0]];
    let bus = CommandBus::start(
        store.clone(),
        BusConfig {
            shards: 2,
            ..BusConfig::default()
        },
        Arc::new(Metrics::default()),
    );
    let mut calls: Vec<Call<'_>> = Vec::new();
    let mut keys = Vec::new();
    for (index, tenant_id) in tenants.iter().enumerate() {
        let text = format!("k-{index}");
        let (bus, key) = (&bus, key(&text));
        calls.push(Box::pin(async move {
            bus.execute(*tenant_id, key, add("c", 1)).await
        }));
        keys.push(text);
    }
    let outcomes = submit_together(calls).await;
    assert!(outcomes.iter().all(|outcome| outcome.status == 200));
    assert_eq!(appends(&bus), (2, 3.0));
    assert_eq!(transactions_of(store, &keys).await, [0, 0, 1]);
    bus.shutdown().await;
}

#[tokio::test]
async fn a_rejection_is_the_keys_outcome_even_after_the_state_changes() {
    // Proves: a domain rejection is recorded under its key; a retry gets the
    // same rejection even once the command would now be accepted.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let bus = bus(store);
    let rejected = bus
        .execute(tenant_id, key("big"), add("c", 20))
        .await
        .unwrap();
    assert_eq!(rejected.status, 429);
    assert_eq!(
        *rejected.body,
        json!({"error": {
            "code": "over_limit",
            "message": "adding 20 would pass the limit; 10 left",
            "details": {"available": 10},
        }})
    );
    bus.execute(
        tenant_id,
        key("raise"),
        RaiseLimit {
            counter: "c".into(),
            to: 100,
        },
    )
    .await
    .unwrap();
    bus.shutdown().await;

    let fresh = self::bus(store);
    let retried = fresh
        .execute(tenant_id, key("big"), add("c", 20))
        .await
        .unwrap();
    assert_eq!(
        retried,
        Outcome {
            replayed: true,
            ..rejected
        }
    );
    let accepted = fresh
        .execute(tenant_id, key("big-2"), add("c", 20))
        .await
        .unwrap();
    assert_eq!(accepted.body["total"], 20);
    assert_eq!(events_of(store, tenant_id).await, 2);
}

#[tokio::test]
async fn a_decision_rejected_half_way_leaves_nothing_behind() {
    // Proves: a request touching two aggregates appends both or neither, and
    // the first aggregate's in-memory state is not left changed.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let bus = bus(store);
    bus.execute(tenant_id, key("fill"), add("b", 8))
        .await
        .unwrap();
    let refused = bus
        .execute(
            tenant_id,
            key("both"),
            AddToBoth {
                first: "a".into(),
                second: "b".into(),
                amount: 5,
            },
        )
        .await
        .unwrap();
    assert_eq!(refused.status, 429);
    assert_eq!(events_of(store, tenant_id).await, 1);
    assert_eq!(read(&bus, tenant_id, "a").await["total"], 0);
    let accepted = bus
        .execute(
            tenant_id,
            key("both-2"),
            AddToBoth {
                first: "a".into(),
                second: "b".into(),
                amount: 2,
            },
        )
        .await
        .unwrap();
    assert_eq!(accepted.status, 201);
    assert_eq!(
        accepted.body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|event| event["aggregate_id"].clone())
            .collect::<Vec<_>>(),
        [json!("a"), json!("b")]
    );
    assert_eq!(read(&bus, tenant_id, "a").await["total"], 2);
    assert_eq!(read(&bus, tenant_id, "b").await["total"], 10);
}

#[tokio::test]
async fn two_processes_writing_one_aggregate_never_lose_or_double_an_update() {
    // Proves: two pipelines with their own caches, racing on one counter,
    // retry on conflicts until each command lands once; the chain stays whole.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let buses = [bus(store), bus(store)];
    buses[0]
        .execute(
            tenant_id,
            key("raise"),
            RaiseLimit {
                counter: "c".into(),
                to: 1_000,
            },
        )
        .await
        .unwrap();
    let mut calls = Vec::new();
    for index in 0..60 {
        let bus = buses[index % 2].clone();
        calls.push(tokio::spawn(async move {
            bus.execute(tenant_id, key(&format!("add-{index}")), add("c", 1))
                .await
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status, 200);
    }
    assert_eq!(events_of(store, tenant_id).await, 61);
    assert_eq!(read(&buses[1], tenant_id, "c").await["total"], 60);
    assert_eq!(read(&buses[0], tenant_id, "c").await["total"], 60);
    assert_eq!(store.check_chain(tenant_id).await.unwrap().findings, vec![]);
}

#[tokio::test]
async fn aggregates_load_from_their_snapshot_and_ignore_one_that_does_not_deserialize() {
    // Proves: a fresh pipeline starts from the stored snapshot (not the
    // events before it), and replays from scratch when the snapshot is junk.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let first = bus(store);
    first
        .execute(tenant_id, key("a1"), add("c", 2))
        .await
        .unwrap();
    first
        .execute(tenant_id, key("a2"), add("c", 3))
        .await
        .unwrap();
    first.shutdown().await;
    let counter = AggregateKey::new("counter", "c");
    // A snapshot claiming a different total proves it is the one used.
    store
        .save_snapshot(tenant_id, &counter, 2, &json!({"total": 7, "limit": null}))
        .await
        .unwrap();
    assert_eq!(read(&bus(store), tenant_id, "c").await["total"], 7);
    store
        .save_snapshot(
            tenant_id,
            &counter,
            3,
            &json!({"nonsense": true, "total": "x"}),
        )
        .await
        .unwrap();
    assert_eq!(read(&bus(store), tenant_id, "c").await["total"], 5);
}

#[tokio::test]
async fn requests_of_an_unknown_tenant_are_refused() {
    // Proves: a tenant that was never created cannot append.
    let db = TestDatabase::new().await;
    let bus = bus(db.store());
    assert_eq!(
        bus.execute(TenantId::generate(), key("k"), add("c", 1))
            .await,
        Err(PipelineError::UnknownTenant)
    );
}

#[tokio::test]
async fn commands_are_stamped_by_the_configured_clock_and_never_go_back_in_time() {
    // Proves: the pipeline stamps commands with BusConfig::clock, and a clock
    // that goes back does not make a tenant's recorded_at decrease.
    use chrono::{TimeZone, Utc};
    use std::sync::Mutex;
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let first = Utc.with_ymd_and_hms(2030, 6, 1, 12, 0, 0).unwrap();
    let now = Arc::new(Mutex::new(first));
    let reading = now.clone();
    let bus = CommandBus::start(
        store.clone(),
        BusConfig {
            clock: commands::Clock::from_fn(move || *reading.lock().unwrap()),
            ..BusConfig::default()
        },
        Arc::new(Metrics::default()),
    );
    bus.execute(tenant_id, key("k1"), add("c", 1))
        .await
        .unwrap();
    *now.lock().unwrap() = Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0).unwrap();
    bus.execute(tenant_id, key("k2"), add("c", 1))
        .await
        .unwrap();
    let later = Utc.with_ymd_and_hms(2031, 1, 1, 0, 0, 0).unwrap();
    *now.lock().unwrap() = later;
    bus.execute(tenant_id, key("k3"), add("c", 1))
        .await
        .unwrap();
    let stamps: Vec<_> = store
        .read_tenant(tenant_id, 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|event| event.recorded_at)
        .collect();
    assert_eq!(stamps, [first, first, later]);
    bus.shutdown().await;
}

/// Adds to a counter the client saw at `seen` (a fact resolved before the
/// request, as a route resolves one): refused stale when it moved.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct AddIfAt {
    counter: String,
    seen: i64,
}

impl commands::Request for AddIfAt {
    const KIND: &'static str = "add_if_at";

    fn targets(&self) -> Vec<commands::Target> {
        vec![commands::Target::of::<support::Counter>(&self.counter)]
    }

    fn decide(
        &self,
        decider: &mut commands::Decider<'_>,
    ) -> Result<commands::Reply, commands::Refusal> {
        let total = decider.state::<support::Counter>(&self.counter)?.total;
        if total != self.seen {
            return Err(commands::Refusal::Stale(format!(
                "counter {} is at {total}, not {}",
                self.counter, self.seen
            )));
        }
        add(&self.counter, 1).decide(decider)
    }
}

#[tokio::test]
async fn a_stale_refusal_is_answered_only_once_the_key_is_known_unrecorded() {
    // Proves: a request refused as resolved from facts that moved is
    // answered stale (not recorded: resolve it again) when the pipeline
    // read that its key has no record; when the records cannot be read, it
    // answers that it cannot tell instead, so that a client never resolves
    // again, under a new key, a request its key may hold.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    bus(store)
        .execute(tenant_id, key("add"), add("c", 5))
        .await
        .unwrap();
    let stale = AddIfAt {
        counter: "c".into(),
        seen: 4,
    };
    let pipeline = bus(store);
    let answer = pipeline
        .execute(tenant_id, key("seen-4"), stale.clone())
        .await;
    assert!(
        matches!(&answer, Err(PipelineError::Stale(why)) if why == "counter c is at 5, not 4"),
        "{answer:?}"
    );
    let rename = |from: &str, to: &str| format!("ALTER TABLE {from} RENAME TO {to}");
    sqlx::query(&rename("idempotency_records", "idempotency_records_away"))
        .execute(store.pool())
        .await
        .unwrap();
    let unread = pipeline
        .execute(tenant_id, key("seen-4-again"), stale)
        .await;
    sqlx::query(&rename("idempotency_records_away", "idempotency_records"))
        .execute(store.pool())
        .await
        .unwrap();
    assert!(
        matches!(&unread, Err(PipelineError::Internal(why)) if why.contains("idempotency_records")),
        "{unread:?}"
    );
    assert_eq!(events_of(store, tenant_id).await, 1);
}

/// Adds to a counter and indexes an entity whose id derives from the
/// request's key (as a settlement indexes its breaks).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct AddIndexed {
    counter: String,
    amount: i64,
}

impl commands::Request for AddIndexed {
    const KIND: &'static str = "add_indexed";

    fn targets(&self) -> Vec<commands::Target> {
        vec![commands::Target::of::<support::Counter>(&self.counter)]
    }

    fn decide(
        &self,
        decider: &mut commands::Decider<'_>,
    ) -> Result<commands::Reply, commands::Refusal> {
        let entity = decider.derive_id("entity").to_string();
        decider.index::<support::Counter>("entity", entity, &self.counter);
        add(&self.counter, self.amount).decide(decider)
    }
}

#[tokio::test]
async fn a_key_reused_for_a_request_deriving_its_entities_from_it_is_refused_as_reused() {
    // Proves: a key used again, with another body, by a pipeline that does
    // not remember it (a restart, another process) for a request that
    // indexes an entity whose id derives from the key is answered as a
    // reused key (the entity's index row is already there under the key,
    // which the append meets first), not as an internal error; and the
    // same body again is its replay.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let first = AddIndexed {
        counter: "a".into(),
        amount: 1,
    };
    let done = bus(store)
        .execute(tenant_id, key("k"), first.clone())
        .await
        .unwrap();
    assert_eq!((done.status, done.replayed), (200, false));
    let other = AddIndexed {
        counter: "b".into(),
        amount: 2,
    };
    let reused = bus(store).execute(tenant_id, key("k"), other).await;
    assert!(
        matches!(reused, Err(PipelineError::KeyReused)),
        "{reused:?}"
    );
    let again = bus(store)
        .execute(tenant_id, key("k"), first)
        .await
        .unwrap();
    assert_eq!((again.replayed, &again.body), (true, &done.body));
    assert_eq!(events_of(store, tenant_id).await, 1);
}

#[tokio::test]
async fn a_request_whose_appends_are_all_late_answers_late_and_records_nothing() {
    // Proves: with no time allowed between a decision and its append,
    // every append of the request is refused as late (the database slow);
    // after two in a row it answers `Late` (503 `database_slow` over HTTP,
    // naming the rounds and the deadline), not `Conflict`, with no
    // conflict counted and nothing recorded; the same key, sent again to a
    // pipeline with the usual deadline, is decided afresh and accepted.
    let db = TestDatabase::new().await;
    let store = db.store();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let metrics = Arc::new(Metrics::default());
    let slow = CommandBus::start(
        store.clone(),
        BusConfig {
            append_within: std::time::Duration::ZERO,
            ..BusConfig::default()
        },
        metrics.clone(),
    );
    let answer = slow.execute(tenant_id, key("k"), add("c", 1)).await;
    assert_eq!(
        answer,
        Err(PipelineError::Late {
            rounds: 2,
            within: std::time::Duration::ZERO
        })
    );
    assert_eq!(metrics.conflicts(), 0);
    let response = axum::response::IntoResponse::into_response(
        commands::http::error::ApiError::from(answer.unwrap_err()),
    );
    assert_eq!(response.status(), 503);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (&body["error"]["code"], &body["error"]["details"]),
        (
            &json!("database_slow"),
            &json!({"rounds": 2, "within_ms": 0})
        )
    );
    slow.shutdown().await;
    assert_eq!(store.chain_head(tenant_id).await.unwrap().unwrap().seq, 0);
    let bus = bus(store);
    let accepted = bus.execute(tenant_id, key("k"), add("c", 1)).await.unwrap();
    assert_eq!((accepted.status, accepted.replayed), (200, false));
    bus.shutdown().await;
}
