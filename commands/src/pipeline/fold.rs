//! A tenant's aggregates folded from its history, and its recorded requests
//! decided again over them: what `verify` and `replay` run.
//!
//! The decision is the pipeline's own ([`Decider`] over the same
//! [`Request::decide`](super::Request::decide)); only where the states come
//! from differs: here, from the events before the request, folded in order.

use super::request::{
    record_request, AnyAggregate, AnyRequest, Decider, Loaded, Refusal, Reply, StateView, Touched,
};
use super::AggregateKind;
use aggregates::journal::JournalEntry;
use aggregates::rules::Rules;
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use eventstore::{AggregateKey, IdempotencyKey, JsonText, NewEvent};
use serde_json::Value;
use std::collections::HashMap;

/// A request decided again: its answer (or refusal) and what it touched.
pub struct Redecision {
    pub decision: Result<Reply, Refusal>,
    pub touched: Vec<Touched>,
}

impl Redecision {
    /// The events the decision gives, in the order the pipeline appends
    /// them (aggregate by aggregate, in the order first touched).
    pub fn events(&self) -> impl Iterator<Item = &NewEvent> {
        self.touched
            .iter()
            .flat_map(|touched| touched.events.iter())
    }
}

/// Every aggregate of one tenant, as folded so far.
pub struct TenantFold {
    tenant_id: TenantId,
    /// Whether decisions keep the states before them, so that part of a
    /// request can be folded (a replay as of a seq inside one).
    partial: bool,
    states: HashMap<(TenantId, AggregateKey), Loaded>,
    /// Nothing is staged between requests of a replay; the view needs a map.
    staged: HashMap<(TenantId, AggregateKey), Loaded>,
}

impl TenantFold {
    /// A fold that folds whole requests only (`partial` false: what verify
    /// needs), or also parts of them.
    pub fn new(tenant_id: TenantId, partial: bool) -> Self {
        Self {
            tenant_id,
            partial,
            states: HashMap::new(),
            staged: HashMap::new(),
        }
    }

    /// Decides `request` (whose canonical body is `body`) as the pipeline
    /// did: under `key`, at `at`, under `rules`, against the states folded
    /// so far (an aggregate never seen is new), recording the request on
    /// its first event. Changes nothing: [`TenantFold::commit`] folds what it decided.
    pub fn decide(
        &mut self,
        (request, body): (&dyn AnyRequest, &JsonText),
        key: &IdempotencyKey,
        at: DateTime<Utc>,
        rules: Rules,
    ) -> Redecision {
        for target in request.targets() {
            self.states
                .entry((self.tenant_id, target.key))
                .or_insert_with(|| Loaded {
                    state: target.kind.fresh(),
                    version: 0,
                });
        }
        let view = StateView {
            staged: &self.staged,
            cached: &self.states,
        };
        let mut decider = Decider::new(self.tenant_id, key, at, request.kind(), view)
            .for_replay(self.partial)
            .under(rules);
        let mut decision = request.decide(&mut decider);
        let mut touched = decider.into_touched();
        if decision.is_ok() {
            if let Some(first) = touched
                .iter_mut()
                .find(|touched| !touched.events.is_empty())
            {
                if let Err(refusal) = record_request(&mut first.events, request.kind(), body, rules)
                {
                    decision = Err(refusal);
                }
            }
        }
        Redecision { decision, touched }
    }

    /// Folds the first `events` events of a decision (all of them when
    /// `None`) and returns their journal entries, in order.
    pub fn commit(&mut self, redecision: Redecision, events: Option<usize>) -> Vec<JournalEntry> {
        let mut left = events.unwrap_or(usize::MAX);
        let mut entries = Vec::new();
        for touched in redecision.touched {
            if left == 0 {
                break;
            }
            let Touched {
                key,
                before,
                state,
                version,
                events,
                entries: touched_entries,
            } = touched;
            if events.len() <= left {
                left -= events.len();
                entries.extend(touched_entries);
                self.states
                    .insert((self.tenant_id, key), Loaded { state, version });
                continue;
            }
            // The point falls inside this aggregate's events: fold its
            // state before the decision up to the point.
            let Some(mut loaded) = before else {
                break;
            };
            for event in events.into_iter().take(left) {
                loaded.version = event.aggregate_seq;
                if let Ok(Some(entry)) = loaded.state.apply_serialized(serialized(event)) {
                    entries.push(entry);
                }
            }
            self.states.insert((self.tenant_id, key), loaded);
            left = 0;
        }
        entries
    }

    /// Folds a stored event no decision accounts for (its request refused or
    /// unreadable), so the fold follows the history; returns its journal
    /// entry. An event that does not decode is not folded.
    pub fn apply_stored(
        &mut self,
        kind: &AggregateKind,
        aggregate_id: &str,
        event: SerializedEvent,
    ) -> Result<Option<JournalEntry>, serde_json::Error> {
        let key = AggregateKey::new(kind.aggregate_type, aggregate_id);
        let version = event.sequence as i64;
        let loaded = self
            .states
            .entry((self.tenant_id, key))
            .or_insert_with(|| Loaded {
                state: kind.fresh(),
                version: 0,
            });
        let entry = loaded.state.apply_serialized(kind.upcast(event))?;
        loaded.version = version;
        Ok(entry)
    }

    /// The last aggregate_seq folded of an aggregate (0 before its first).
    pub fn version(&self, key: &AggregateKey) -> i64 {
        self.states
            .get(&(self.tenant_id, key.clone()))
            .map_or(0, |loaded| loaded.version)
    }

    /// The state of aggregate `key` as a snapshot payload; `None` before
    /// its first event.
    pub fn snapshot_of(&self, key: &AggregateKey) -> Option<Value> {
        self.states
            .get(&(self.tenant_id, key.clone()))
            .and_then(|loaded| loaded.state.snapshot().ok())
    }

    /// The tenant it folds.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The state of aggregate `A` `aggregate_id` as folded; `None` before
    /// its first event.
    pub fn state<A>(&self, aggregate_id: &str) -> Option<&A>
    where
        A: aggregates::Decide + 'static,
        A::Error: aggregates::Rejection,
    {
        self.states
            .get(&(self.tenant_id, AggregateKey::new(A::TYPE, aggregate_id)))
            .and_then(|loaded| loaded.state.as_any().downcast_ref::<A>())
    }

    /// Every aggregate folded, with its state.
    pub fn states(&self) -> impl Iterator<Item = (&AggregateKey, &dyn AnyAggregate)> {
        self.states
            .iter()
            .map(|((_, key), loaded)| (key, loaded.state.as_ref()))
    }
}

/// A decided event as a stored one reads.
fn serialized(event: NewEvent) -> SerializedEvent {
    SerializedEvent {
        aggregate_id: event.aggregate_id,
        sequence: usize::try_from(event.aggregate_seq).unwrap_or(0),
        aggregate_type: event.aggregate_type,
        event_type: event.event_type,
        event_version: event.event_version,
        payload: event.payload.to_value().unwrap_or_default(),
        metadata: event.metadata.to_value().unwrap_or_default(),
    }
}
