//! cqrs-es running on the ledger's store through `TenantRepository`.

use cqrs_es::event_sink::EventSink;
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, CqrsFramework, DomainEvent, EventStore as _};
use eventstore::testing::TestDatabase;
use eventstore::TenantRepository;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Counter {
    total: i64,
}

#[derive(Debug)]
enum CounterCommand {
    Add(i64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum CounterEvent {
    Added { amount: i64 },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        "Added".to_string()
    }
    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("amount must be positive")]
struct CounterError;

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;
    type Services = ();

    async fn handle(
        &mut self,
        command: CounterCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CounterError> {
        let CounterCommand::Add(amount) = command;
        if amount <= 0 {
            return Err(CounterError);
        }
        sink.write(CounterEvent::Added { amount }, self).await;
        Ok(())
    }

    fn apply(&mut self, event: CounterEvent) {
        let CounterEvent::Added { amount } = event;
        self.total += amount;
    }
}

fn metadata(key: &str) -> HashMap<String, String> {
    HashMap::from([("idempotency_key".to_string(), key.to_string())])
}

#[tokio::test]
async fn cqrs_es_commands_persist_chain_and_reload_through_the_repository() {
    // Proves: the PersistedEventRepository implementation works under cqrs-es
    // itself: events and snapshots persist, aggregates reload, keys are
    // required and never reused, and the chain stays intact.
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let tenant_id = store.create_tenant("acme").await.unwrap().tenant_id;
    let event_store = PersistedEventStore::<TenantRepository, Counter>::new_snapshot_store(
        TenantRepository::new(store.clone(), tenant_id),
        2,
    );
    let cqrs = CqrsFramework::new(event_store, vec![], ());
    for (index, amount) in [5, 7, 11].into_iter().enumerate() {
        cqrs.execute_with_metadata(
            "c-1",
            CounterCommand::Add(amount),
            metadata(&format!("k{index}")),
        )
        .await
        .unwrap();
    }
    let reloaded = PersistedEventStore::<TenantRepository, Counter>::new_event_store(
        TenantRepository::new(store.clone(), tenant_id),
    );
    let context = reloaded.load_aggregate("c-1").await.unwrap();
    assert_eq!(context.aggregate.total, 23);
    let events = reloaded.load_events("c-1").await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|event| event.sequence)
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );

    let (snapshots,): (i64,) = sqlx::query_as("SELECT count(*) FROM snapshots")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(snapshots, 1);

    let missing_key = cqrs
        .execute("c-1", CounterCommand::Add(1))
        .await
        .unwrap_err();
    assert_eq!(
        missing_key.to_string(),
        "every command needs an idempotency_key in its metadata"
    );
    let reused = cqrs
        .execute_with_metadata("c-1", CounterCommand::Add(1), metadata("k0"))
        .await
        .unwrap_err();
    assert!(
        matches!(reused, AggregateError::UnexpectedError(_)),
        "{reused:?}"
    );
    assert_eq!(
        reused.to_string(),
        "idempotency key k0 was already used for a different command"
    );
    assert_eq!(store.check_chain(tenant_id).await.unwrap().findings, vec![]);
    assert_eq!(store.chain_head(tenant_id).await.unwrap().unwrap().seq, 3);
}

/// Every (aggregate id, sequence, amount) a replay stream yields, in order.
async fn drain(mut stream: cqrs_es::persist::ReplayStream) -> Vec<(String, usize, i64)> {
    let mut events = Vec::new();
    while let Some(event) = stream.next::<Counter>(&[]).await {
        let event = event.unwrap();
        let CounterEvent::Added { amount } = event.payload;
        events.push((event.aggregate_id, event.sequence, amount));
    }
    events
}

#[tokio::test]
async fn the_repository_streams_one_aggregate_and_all_of_a_type_in_commit_order() {
    // Proves: stream_events yields one aggregate's events in sequence order
    // and stream_all_events every event of the aggregate type, of this
    // tenant only, in commit order; both end when the events do.
    use cqrs_es::persist::PersistedEventRepository;
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let acme = store.create_tenant("acme").await.unwrap().tenant_id;
    let beta = store.create_tenant("beta").await.unwrap().tenant_id;
    for (tenant_id, commands) in [
        (acme, vec![("c-1", 5), ("c-2", 7), ("c-1", 11), ("c-2", 13)]),
        (beta, vec![("c-1", 100)]),
    ] {
        let cqrs = CqrsFramework::new(
            PersistedEventStore::<TenantRepository, Counter>::new_event_store(
                TenantRepository::new(store.clone(), tenant_id),
            ),
            vec![],
            (),
        );
        for (index, (aggregate_id, amount)) in commands.into_iter().enumerate() {
            cqrs.execute_with_metadata(
                aggregate_id,
                CounterCommand::Add(amount),
                metadata(&format!("k{index}")),
            )
            .await
            .unwrap();
        }
    }
    let repository = TenantRepository::new(store.clone(), acme);
    assert_eq!(
        drain(repository.stream_events::<Counter>("c-2").await.unwrap()).await,
        [("c-2".to_string(), 1, 7), ("c-2".to_string(), 2, 13)]
    );
    assert_eq!(
        drain(repository.stream_all_events::<Counter>().await.unwrap()).await,
        [
            ("c-1".to_string(), 1, 5),
            ("c-2".to_string(), 1, 7),
            ("c-1".to_string(), 2, 11),
            ("c-2".to_string(), 2, 13),
        ]
    );
    assert_eq!(
        drain(repository.stream_events::<Counter>("c-3").await.unwrap()).await,
        []
    );
}
