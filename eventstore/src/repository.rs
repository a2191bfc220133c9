//! cqrs-es `PersistedEventRepository` on the ledger's tables, so cqrs-es's own
//! `PersistedEventStore` and `CqrsFramework` can run on this store.
//!
//! cqrs-es knows nothing of tenants, so a repository is bound to one tenant.
//! Every persisted event still goes through the hash chain, and the command's
//! idempotency key is required in the event metadata under
//! [`IDEMPOTENCY_KEY_METADATA`]: a key is recorded once and refused after.

use crate::append::{AppendError, CommandWrite, NewEvent};
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::load::AggregateKey;
use crate::read::{JsonText, StoredEvent, READ_PAGE_MAX};
use crate::EventStore;
use crate::StoreError;
use aggregates::TenantId;
use chrono::Utc;
use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use serde_json::{json, Value};

/// Metadata entry that carries the command's idempotency key.
pub const IDEMPOTENCY_KEY_METADATA: &str = "idempotency_key";

/// Events buffered between the database reader and a replay stream.
const REPLAY_QUEUE_LENGTH: usize = 1_000;

/// The store seen by cqrs-es, scoped to one tenant.
#[derive(Clone, Debug)]
pub struct TenantRepository {
    store: EventStore,
    tenant_id: TenantId,
}

impl TenantRepository {
    pub fn new(store: EventStore, tenant_id: TenantId) -> Self {
        Self { store, tenant_id }
    }
}

fn unknown(message: impl Into<String>) -> PersistenceError {
    PersistenceError::UnknownError(message.into().into())
}

fn persistence_error(error: crate::StoreError) -> PersistenceError {
    if error.is_unavailable() {
        PersistenceError::ConnectionError(Box::new(error))
    } else {
        PersistenceError::UnknownError(Box::new(error))
    }
}

impl PersistedEventRepository for TenantRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.get_last_events::<A>(aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let after = i64::try_from(last_sequence).map_err(|_| unknown("sequence out of range"))?;
        self.store
            .load_events(
                self.tenant_id,
                &AggregateKey::new(A::TYPE, aggregate_id),
                after,
            )
            .await
            .map_err(persistence_error)
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        let key = AggregateKey::new(A::TYPE, aggregate_id);
        let mut histories = self
            .store
            .load_histories(self.tenant_id, std::slice::from_ref(&key))
            .await
            .map_err(persistence_error)?;
        let snapshot = histories.remove(&key).and_then(|history| history.snapshot);
        Ok(snapshot.map(|snapshot| SerializedSnapshot {
            aggregate_id: aggregate_id.to_string(),
            aggregate: snapshot.payload,
            current_sequence: usize::try_from(snapshot.last_sequence).unwrap_or(0),
            current_snapshot: usize::try_from(snapshot.snapshot_version).unwrap_or(0),
        }))
    }

    async fn persist<A: Aggregate>(
        &self,
        events: &[SerializedEvent],
        snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        if let Some(first) = events.first() {
            let key_text = first
                .metadata
                .get(IDEMPOTENCY_KEY_METADATA)
                .and_then(Value::as_str)
                .ok_or_else(|| unknown("every command needs an idempotency_key in its metadata"))?;
            let key =
                IdempotencyKey::parse(key_text).map_err(|error| unknown(error.to_string()))?;
            let body: Vec<Value> = events
                .iter()
                .map(|event| {
                    json!([
                        event.aggregate_type,
                        event.aggregate_id,
                        event.sequence,
                        event.event_type,
                        event.event_version,
                        event.payload
                    ])
                })
                .collect();
            let fingerprint = Fingerprint::of("cqrs-es.persist", &Value::Array(body))
                .map_err(persistence_error)?;
            let new_events = events
                .iter()
                .map(|event| {
                    Ok(NewEvent {
                        aggregate_type: event.aggregate_type.clone(),
                        aggregate_id: event.aggregate_id.clone(),
                        aggregate_seq: i64::try_from(event.sequence)
                            .map_err(|_| unknown("sequence out of range"))?,
                        event_type: event.event_type.clone(),
                        event_version: event.event_version.clone(),
                        payload: JsonText::from_value(&event.payload)
                            .map_err(|error| persistence_error(error.into()))?,
                        metadata: JsonText::from_value(&event.metadata)
                            .map_err(|error| persistence_error(error.into()))?,
                    })
                })
                .collect::<Result<Vec<_>, PersistenceError>>()?;
            let write = CommandWrite {
                key,
                fingerprint,
                status: 201,
                events: new_events,
                indexed: Vec::new(),
                at: Utc::now(),
            };
            let aggregate_id = first.aggregate_id.clone();
            let outcome = |_: &[_], _| json!({ "aggregate_id": aggregate_id });
            match self
                .store
                .append_command(self.tenant_id, write, outcome)
                .await
            {
                Ok(_) => {}
                Err(AppendError::SequenceConflict { .. }) => {
                    return Err(PersistenceError::OptimisticLockError)
                }
                Err(AppendError::Unavailable(error)) => {
                    return Err(PersistenceError::ConnectionError(Box::new(error)))
                }
                Err(other) => return Err(PersistenceError::UnknownError(Box::new(other))),
            }
        }
        if let Some((aggregate_id, payload, current_sequence)) = snapshot_update {
            let last_sequence =
                i64::try_from(current_sequence).map_err(|_| unknown("sequence out of range"))?;
            self.store
                .save_snapshot(
                    self.tenant_id,
                    &AggregateKey::new(A::TYPE, aggregate_id),
                    last_sequence,
                    &payload,
                )
                .await
                .map_err(persistence_error)?;
        }
        Ok(())
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        Ok(self.stream(A::TYPE.to_string(), Some(aggregate_id.to_string())))
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Ok(self.stream(A::TYPE.to_string(), None))
    }
}

impl TenantRepository {
    /// Streams the tenant's events of one aggregate type (optionally one
    /// aggregate) in commit order, page by page, from a background task.
    fn stream(&self, aggregate_type: String, aggregate_id: Option<String>) -> ReplayStream {
        let (mut feed, stream) = ReplayStream::new(REPLAY_QUEUE_LENGTH);
        let store = self.store.clone();
        let tenant_id = self.tenant_id;
        tokio::spawn(async move {
            let mut after_seq = 0;
            loop {
                let page = match &aggregate_id {
                    Some(aggregate_id) => {
                        let key = AggregateKey::new(aggregate_type.clone(), aggregate_id.clone());
                        store
                            .load_events_page(tenant_id, &key, after_seq, READ_PAGE_MAX)
                            .await
                            .map(|events| {
                                let last = events.last().map(|event| event.sequence as i64);
                                (events, last)
                            })
                    }
                    None => store
                        .read_tenant_of_type(tenant_id, &aggregate_type, after_seq, READ_PAGE_MAX)
                        .await
                        .and_then(|events| {
                            let last = events.last().map(|event| event.tenant_seq);
                            let events = events
                                .iter()
                                .map(StoredEvent::to_serialized)
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(|error| StoreError::Corrupt(error.to_string()))?;
                            Ok((events, last))
                        }),
                };
                let (events, last) = match page {
                    Ok(page) => page,
                    Err(error) => {
                        let _ = feed.push(Err(persistence_error(error))).await;
                        return;
                    }
                };
                let Some(last) = last else { return };
                after_seq = last;
                for event in events {
                    if feed.push(Ok(event)).await.is_err() {
                        // The reader went away.
                        return;
                    }
                }
            }
        });
        stream
    }
}
