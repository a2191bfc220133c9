//! An aggregate's state from its stored history (its snapshot, then the
//! events after it): what a shard loads before deciding, and what a route
//! reads to resolve the facts a request carries (a payment's currency, its
//! tenders' accounts) from the store itself rather than a read table.

use super::request::{AnyAggregate, Loaded, Target};
use aggregates::{Decide, Rejection, TenantId};
use cqrs_es::persist::SerializedEvent;
use eventstore::{AggregateHistory, AggregateKey, EventStore, StoreError};
use std::collections::HashMap;

/// Folds `history` of `target` (of `tenant_id`) into its state: the
/// snapshot when it still deserializes (else every event from the first),
/// then each event after it, which must follow without a gap.
pub(crate) async fn fold_history(
    store: &EventStore,
    tenant_id: TenantId,
    target: &Target,
    history: AggregateHistory,
) -> Result<Loaded, StoreError> {
    let key = &target.key;
    let restored = history.snapshot.as_ref().and_then(|snapshot| {
        Some((
            (target.kind.restore)(&snapshot.payload)?,
            snapshot.last_sequence,
        ))
    });
    let (mut state, mut version, events) = match (restored, &history.snapshot) {
        (Some((state, version)), _) => (state, version, history.events),
        // A snapshot that no longer deserializes is ignored.
        (None, Some(_)) => (
            (target.kind.fresh)(),
            0,
            store.load_events(tenant_id, key, 0).await?,
        ),
        (None, None) => ((target.kind.fresh)(), 0, history.events),
    };
    version = apply_in_order(state.as_mut(), target, version, events)?;
    Ok(Loaded { state, version })
}

/// Applies `events` of `target` to `state`, which stands at event
/// `version`: each must follow the one before without a gap. Returns the
/// event the state then stands at.
fn apply_in_order(
    state: &mut dyn AnyAggregate,
    target: &Target,
    mut version: i64,
    events: impl IntoIterator<Item = SerializedEvent>,
) -> Result<i64, StoreError> {
    for event in events {
        let sequence = i64::try_from(event.sequence).unwrap_or(i64::MAX);
        if sequence != version + 1 {
            return Err(StoreError::Corrupt(format!(
                "aggregate {}/{} jumps from event {version} to {sequence}",
                target.key.aggregate_type, target.key.aggregate_id
            )));
        }
        apply_stored(state, target, event)?;
        version = sequence;
    }
    Ok(version)
}

/// Applies one stored event of `target` to `state`, upcast first.
fn apply_stored(
    state: &mut dyn AnyAggregate,
    target: &Target,
    event: SerializedEvent,
) -> Result<(), StoreError> {
    let sequence = event.sequence;
    state
        .apply_serialized(target.kind.upcast(event))
        .map(|_| ())
        .map_err(|error| {
            StoreError::Corrupt(format!(
                "event {sequence} of {}/{} does not deserialize: {error}",
                target.key.aggregate_type, target.key.aggregate_id
            ))
        })
}

/// `state` as the aggregate `A` it was loaded as.
fn downcast<A: Clone + 'static>(
    state: &dyn AnyAggregate,
    key: &AggregateKey,
) -> Result<A, StoreError> {
    state
        .as_any()
        .downcast_ref::<A>()
        .cloned()
        .ok_or_else(|| StoreError::Corrupt(format!("{key:?} has another type")))
}

/// The current states of the aggregates `A` named `ids` of `tenant_id`, by
/// id (an aggregate with no events is `A::default()`), read from the store
/// in one query.
pub async fn current<A>(
    store: &EventStore,
    tenant_id: TenantId,
    ids: &[String],
) -> Result<HashMap<String, A>, StoreError>
where
    A: Decide + Clone + 'static,
    A::Error: Rejection,
{
    let targets: Vec<Target> = ids.iter().map(|id| Target::of::<A>(id.clone())).collect();
    let keys: Vec<AggregateKey> = targets.iter().map(|target| target.key.clone()).collect();
    let mut histories = store.load_histories(tenant_id, &keys).await?;
    let mut states = HashMap::with_capacity(ids.len());
    for target in targets {
        let history = histories.remove(&target.key).unwrap_or_default();
        let loaded = fold_history(store, tenant_id, &target, history).await?;
        let state = downcast::<A>(loaded.state.as_ref(), &target.key)?;
        states.insert(target.key.aggregate_id, state);
    }
    Ok(states)
}

/// The aggregate `A` `id` of `tenant_id` folded from its events whose
/// stored type is one of `event_types` only, in order (upcast as a load
/// would): for a reader that needs only what those events set, such as a
/// payee's profile and plans without the lines that grow with its history.
/// No snapshot is read (it would carry the rest).
pub async fn current_from_types<A>(
    store: &EventStore,
    tenant_id: TenantId,
    id: &str,
    event_types: &[&str],
) -> Result<A, StoreError>
where
    A: Decide + Clone + 'static,
    A::Error: Rejection,
{
    let target = Target::of::<A>(id.to_string());
    let mut state = (target.kind.fresh)();
    for event in store
        .load_events_of_types(tenant_id, &target.key, event_types)
        .await?
    {
        apply_stored(state.as_mut(), &target, event)?;
    }
    downcast::<A>(state.as_ref(), &target.key)
}

/// The aggregate `A` `id` of `tenant_id` as its event `sequence` left it,
/// folded from its first event (upcast as a load would), whatever was
/// appended to it since: what a reaction to that event decides over, so
/// that it decides the same however late it runs.
pub async fn as_of_sequence<A>(
    store: &EventStore,
    tenant_id: TenantId,
    id: &str,
    sequence: i64,
) -> Result<A, StoreError>
where
    A: Decide + Clone + 'static,
    A::Error: Rejection,
{
    let target = Target::of::<A>(id.to_string());
    let key = &target.key;
    let mut state = (target.kind.fresh)();
    let events = store.load_events(tenant_id, key, 0).await?;
    let up_to = events
        .into_iter()
        .take_while(|event| i64::try_from(event.sequence).is_ok_and(|next| next <= sequence));
    let version = apply_in_order(state.as_mut(), &target, 0, up_to)?;
    if version != sequence {
        return Err(StoreError::Corrupt(format!(
            "aggregate {}/{} has no event {sequence} (its last is {version})",
            key.aggregate_type, key.aggregate_id
        )));
    }
    downcast::<A>(state.as_ref(), key)
}

/// The current state of the aggregate `A` `id` of `tenant_id`.
pub async fn current_one<A>(
    store: &EventStore,
    tenant_id: TenantId,
    id: &str,
) -> Result<A, StoreError>
where
    A: Decide + Clone + 'static,
    A::Error: Rejection,
{
    let mut states = current::<A>(store, tenant_id, &[id.to_string()]).await?;
    Ok(states.remove(id).unwrap_or_default())
}
