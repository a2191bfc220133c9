//! What a request is to the pipeline: the aggregates it decides against and a
//! pure decision over them.
//!
//! A request may touch several aggregates of its tenant (subscribing writes
//! the subscription and every quota it grants); all its events are appended
//! in one transaction or not at all. Decisions see the state left by the
//! requests decided before them in the same batch, and work on copies, so a
//! request rejected half way leaves nothing behind.

use aggregates::journal::JournalEntry;
use aggregates::rules::Rules;
use aggregates::{Decide, Rejection, RejectionKind, TenantId};
use chrono::{DateTime, Utc};
use cqrs_es::persist::{EventUpcaster, SerializedEvent};
use cqrs_es::DomainEvent;
use eventstore::{AggregateKey, IdempotencyKey, IndexEntry, JsonText, NewEvent};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};
use std::any::Any;
use std::collections::HashMap;
use uuid::Uuid;

/// A command as submitted to the pipeline.
///
/// A request is data: it serializes to the canonical body that is
/// fingerprinted and recorded in the chain (in the metadata of the first
/// event it appends), and deserializes back from it, so that `verify` and
/// `replay` decide it again. Everything its decision reads besides its
/// target aggregates and its time is resolved into it before it is
/// submitted (a plan's terms, not the plan's name).
pub trait Request: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// Stable name of the request; part of its fingerprint and recorded in
    /// every event's metadata.
    const KIND: &'static str;

    /// The aggregates `decide` reads or writes; loaded before it runs.
    fn targets(&self) -> Vec<Target>;

    /// Decides the request. Pure: reads the aggregates through `decider`,
    /// executes their commands there, and never touches a clock or the
    /// database (the time is `decider.at()`).
    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal>;
}

/// A request, type-erased: what the pipeline queues and what a replay
/// decodes from the chain.
pub trait AnyRequest: Send + Sync {
    fn kind(&self) -> &'static str;
    fn targets(&self) -> Vec<Target>;
    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal>;
    /// The canonical body: the text fingerprinted and recorded.
    fn body(&self) -> Result<JsonText, eventstore::canonical::CanonicalError>;
}

impl<R: Request> AnyRequest for R {
    fn kind(&self) -> &'static str {
        R::KIND
    }

    fn targets(&self) -> Vec<Target> {
        Request::targets(self)
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        Request::decide(self, decider)
    }

    fn body(&self) -> Result<JsonText, eventstore::canonical::CanonicalError> {
        JsonText::canonical(self)
    }
}

/// An accepted request's answer, before the pipeline adds the events and the
/// tenant_seq reached.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// 201 when the request created something, 200 otherwise.
    pub status: u16,
    /// The aggregate the request is about.
    pub aggregate_id: String,
    /// Request-specific fields (an object).
    pub body: Value,
}

impl Reply {
    /// 201 Created, answering `answer` (a request's typed answer, an
    /// object).
    pub fn created(
        aggregate_id: impl Into<String>,
        answer: &impl Serialize,
    ) -> Result<Self, Refusal> {
        Self::with_status(201, aggregate_id.into(), answer)
    }

    /// 200 OK, answering `answer`.
    pub fn ok(aggregate_id: impl Into<String>, answer: &impl Serialize) -> Result<Self, Refusal> {
        Self::with_status(200, aggregate_id.into(), answer)
    }

    fn with_status(
        status: u16,
        aggregate_id: String,
        answer: &impl Serialize,
    ) -> Result<Self, Refusal> {
        let body = serde_json::to_value(answer)
            .map_err(|error| Refusal::Internal(format!("serializing the answer: {error}")))?;
        Ok(Self {
            status,
            aggregate_id,
            body,
        })
    }
}

/// Why a request produced no events.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// A domain rule refused it; recorded as the key's outcome.
    Rejected {
        kind: RejectionKind,
        code: String,
        message: String,
        details: Value,
    },
    /// A defect (an undeclared aggregate, unserializable event); answered 500
    /// and not recorded, so a retry after a fix can succeed.
    Internal(String),
    /// A fact resolved into the request before submission (a payment's
    /// currency, its tenders' accounts) no longer matches the aggregates:
    /// they moved in between. Not recorded; the submitter resolves again.
    Stale(String),
    /// A scheduled request submitted before its due time (the clock
    /// stepped back between the scheduler's lease and the pipeline's
    /// stamp). Not recorded, so the same key is decided once it is due.
    NotDue(NotDue),
}

impl<E: Rejection> From<E> for Refusal {
    fn from(error: E) -> Self {
        Self::Rejected {
            kind: error.kind(),
            code: error.code().to_string(),
            message: error.to_string(),
            details: error.details(),
        }
    }
}

/// The error envelope every error answer uses.
pub fn error_body(code: &str, message: &str, details: Value) -> Value {
    let details = if details.is_null() {
        json!({})
    } else {
        details
    };
    json!({"error": {"code": code, "message": message, "details": details}})
}

/// A scheduled request submitted before its due time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this request is due at {due_at}; it is {at}")]
pub struct NotDue {
    pub due_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
}

impl Rejection for NotDue {
    fn kind(&self) -> RejectionKind {
        RejectionKind::RuleBroken
    }

    fn code(&self) -> &'static str {
        "not_due"
    }

    fn details(&self) -> Value {
        json!({"due_at": self.due_at, "at": self.at})
    }
}

/// An aggregate a request decides against, with what it takes to load it.
#[derive(Clone)]
pub struct Target {
    pub key: AggregateKey,
    pub(crate) kind: AggregateKind,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.key.fmt(f)
    }
}

impl Target {
    /// The aggregate of type `A` with id `aggregate_id`.
    pub fn of<A>(aggregate_id: impl Into<String>) -> Self
    where
        A: Decide + 'static,
        A::Error: Rejection,
    {
        Self {
            key: AggregateKey::new(A::TYPE, aggregate_id),
            kind: AggregateKind::of::<A>(),
        }
    }
}

/// Type-erased constructors of one aggregate type: what the pipeline and a
/// replay need to hold, restore and fold aggregates they know only by type
/// name.
#[derive(Clone, Copy)]
pub struct AggregateKind {
    /// The aggregate type in the event store.
    pub aggregate_type: &'static str,
    pub(crate) fresh: fn() -> Box<dyn AnyAggregate>,
    /// From a snapshot; `None` when the snapshot no longer deserializes.
    pub(crate) restore: fn(&Value) -> Option<Box<dyn AnyAggregate>>,
    pub(crate) upcasters: fn() -> Vec<Box<dyn EventUpcaster>>,
    decodes: fn(&str) -> Result<(), serde_json::Error>,
    /// Reads the journal entries its events record, for the journal
    /// projection.
    pub entry_reader: projections::journal::EntryReader,
}

impl AggregateKind {
    /// The state a snapshot `payload` restores to, as a snapshot again
    /// (what the pipeline would load); `None` when it does not restore.
    pub fn restores(&self, payload: &Value) -> Option<Value> {
        (self.restore)(payload)?.snapshot().ok()
    }

    /// The kind of aggregate `A`.
    pub fn of<A>() -> Self
    where
        A: Decide + 'static,
        A::Error: Rejection,
    {
        Self {
            aggregate_type: A::TYPE,
            fresh: || Box::new(A::default()),
            restore: |payload| {
                serde_json::from_value::<A>(payload.clone())
                    .ok()
                    .map(|state| Box::new(state) as Box<dyn AnyAggregate>)
            },
            upcasters: A::upcasters,
            decodes: |payload| serde_json::from_str::<A::Event>(payload).map(|_| ()),
            entry_reader: projections::journal::EntryReader::of::<A>(),
        }
    }

    /// Whether `payload` (of the current event version) is an event of
    /// this kind of aggregate, and if not why.
    pub fn decodes(&self, payload: &str) -> Result<(), serde_json::Error> {
        (self.decodes)(payload)
    }

    /// A new aggregate of this kind, before its first event.
    pub fn fresh(&self) -> Box<dyn AnyAggregate> {
        (self.fresh)()
    }

    /// Turns a stored event of an older version into the current form.
    pub fn upcast(&self, event: SerializedEvent) -> SerializedEvent {
        (self.upcasters)().iter().fold(event, |event, upcaster| {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                upcaster.upcast(event)
            } else {
                event
            }
        })
    }
}

/// An aggregate of any type, as the pipeline and a replay keep it.
pub trait AnyAggregate: Send + Sync {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn clone_box(&self) -> Box<dyn AnyAggregate>;
    /// Folds a stored (already upcast) event in; returns the journal entry
    /// it records, if any.
    fn apply_serialized(
        &mut self,
        event: SerializedEvent,
    ) -> Result<Option<JournalEntry>, serde_json::Error>;
    /// The state as a snapshot payload.
    fn snapshot(&self) -> Result<Value, serde_json::Error>;
}

impl<A> AnyAggregate for A
where
    A: Decide + 'static,
    A::Error: Rejection,
{
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn clone_box(&self) -> Box<dyn AnyAggregate> {
        Box::new(self.clone())
    }

    fn apply_serialized(
        &mut self,
        event: SerializedEvent,
    ) -> Result<Option<JournalEntry>, serde_json::Error> {
        let event: A::Event = serde_json::from_value(event.payload)?;
        let entry = A::journal_entry(&event).cloned();
        self.apply(event);
        Ok(entry)
    }

    fn snapshot(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

/// An aggregate's state and the sequence of its last event.
pub struct Loaded {
    pub state: Box<dyn AnyAggregate>,
    pub version: i64,
}

/// Where a decider finds aggregates it has not touched yet: those staged by
/// earlier requests of the batch, then the shard's cache.
pub(crate) struct StateView<'a> {
    pub(crate) staged: &'a HashMap<(TenantId, AggregateKey), Loaded>,
    pub(crate) cached: &'a HashMap<(TenantId, AggregateKey), Loaded>,
}

impl StateView<'_> {
    fn get(&self, tenant_id: TenantId, key: &AggregateKey) -> Option<&Loaded> {
        let lookup = (tenant_id, key.clone());
        self.staged
            .get(&lookup)
            .or_else(|| self.cached.get(&lookup))
    }
}

/// One aggregate a decision has touched: its new state and new events.
pub struct Touched {
    pub key: AggregateKey,
    /// The state before the decision (kept only when the decider was asked
    /// to, for a replay that folds part of a request).
    pub before: Option<Loaded>,
    pub state: Box<dyn AnyAggregate>,
    pub version: i64,
    pub events: Vec<NewEvent>,
    /// The journal entries of `events`, in order (collected only when the
    /// decider was asked to, for a replay's tenant-wide journal).
    pub entries: Vec<JournalEntry>,
}

/// A request's view of its tenant's aggregates while it decides.
pub struct Decider<'a> {
    tenant_id: TenantId,
    key: &'a IdempotencyKey,
    at: DateTime<Utc>,
    kind: &'static str,
    view: StateView<'a>,
    touched: Vec<Touched>,
    /// Entities the decision created, to be found by their own id.
    indexed: Vec<IndexEntry>,
    /// Whether `Touched::entries` are kept (a replay).
    for_replay: bool,
    /// Whether `Touched::before` is kept (a replay that may fold part of a
    /// request).
    keep_before: bool,
    /// Every event's metadata (`{"command": kind}`), encoded on first use.
    metadata: Option<JsonText>,
    /// The rules the request is decided under.
    rules: Rules,
}

impl<'a> Decider<'a> {
    pub(crate) fn new(
        tenant_id: TenantId,
        key: &'a IdempotencyKey,
        at: DateTime<Utc>,
        kind: &'static str,
        view: StateView<'a>,
    ) -> Self {
        Self {
            tenant_id,
            key,
            at,
            kind,
            view,
            touched: Vec::new(),
            indexed: Vec::new(),
            for_replay: false,
            keep_before: false,
            metadata: None,
            rules: Rules::CURRENT,
        }
    }

    /// The same decider deciding under `rules` (a recorded request is
    /// decided again under the rules it was decided under).
    pub(crate) fn under(mut self, rules: Rules) -> Self {
        self.rules = rules;
        self
    }

    /// The kind of the request being decided.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The rules the request is decided under: where a decision changed
    /// between versions, the request keeps the older behaviour for older
    /// rules.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// The same decider keeping what a replay folds with: the journal
    /// entries and, with `keep_before`, each touched aggregate's state
    /// before the decision.
    pub(crate) fn for_replay(mut self, keep_before: bool) -> Self {
        self.for_replay = true;
        self.keep_before = keep_before;
        self
    }

    /// An id derived from the tenant, the request's idempotency key and
    /// `label`: the same on every retry of the request, different for every
    /// other request. Decisions stay pure (no randomness) and a retried
    /// request issues the same ids.
    pub fn derive_id(&self, label: &str) -> Uuid {
        derive_id(self.tenant_id, self.key, label)
    }

    /// The tenant the request belongs to.
    pub fn tenant_id(&self) -> TenantId {
        self.tenant_id
    }

    /// The time of the request, stamped by the pipeline; never earlier than
    /// the tenant's last event.
    pub fn at(&self) -> DateTime<Utc> {
        self.at
    }

    /// The time a scheduled request decides at: its due time `due_at`
    /// (carried in the request, so a replay decides it the same way), once
    /// the pipeline's clock has reached it; without one, the request's
    /// time. Before its due time the request is refused (`not_due`),
    /// unrecorded.
    pub fn at_due(&self, due_at: Option<DateTime<Utc>>) -> Result<DateTime<Utc>, Refusal> {
        match due_at {
            None => Ok(self.at),
            Some(due_at) if due_at <= self.at => Ok(due_at),
            Some(due_at) => Err(Refusal::NotDue(NotDue {
                due_at,
                at: self.at,
            })),
        }
    }

    /// The current state of aggregate `A` `aggregate_id` (a declared target).
    pub fn state<A>(&self, aggregate_id: &str) -> Result<&A, Refusal>
    where
        A: Decide + 'static,
        A::Error: Rejection,
    {
        let key = AggregateKey::new(A::TYPE, aggregate_id);
        let state: &dyn AnyAggregate = match self.touched.iter().find(|touched| touched.key == key)
        {
            Some(touched) => touched.state.as_ref(),
            None => self
                .view
                .get(self.tenant_id, &key)
                .ok_or_else(|| undeclared(&key))?
                .state
                .as_ref(),
        };
        state
            .as_any()
            .downcast_ref::<A>()
            .ok_or_else(|| Refusal::Internal(format!("aggregate {key:?} has another type")))
    }

    /// The sequence of the last event of aggregate `A` `aggregate_id`
    /// (0 before its first).
    pub fn version<A>(&self, aggregate_id: &str) -> Result<i64, Refusal>
    where
        A: Decide + 'static,
        A::Error: Rejection,
    {
        let key = AggregateKey::new(A::TYPE, aggregate_id);
        match self.touched.iter().find(|touched| touched.key == key) {
            Some(touched) => Ok(touched.version),
            None => Ok(self
                .view
                .get(self.tenant_id, &key)
                .ok_or_else(|| undeclared(&key))?
                .version),
        }
    }

    /// Decides `command` on aggregate `A` `aggregate_id` and, when accepted,
    /// applies its events to the request's working copy and queues them.
    pub fn execute<A>(
        &mut self,
        aggregate_id: &str,
        command: A::Command,
    ) -> Result<Vec<A::Event>, Refusal>
    where
        A: Decide + 'static,
        A::Error: Rejection,
    {
        let key = AggregateKey::new(A::TYPE, aggregate_id);
        let position = match self.touched.iter().position(|touched| touched.key == key) {
            Some(position) => position,
            None => {
                let loaded = self
                    .view
                    .get(self.tenant_id, &key)
                    .ok_or_else(|| undeclared(&key))?;
                let before = self.keep_before.then(|| Loaded {
                    state: loaded.state.clone_box(),
                    version: loaded.version,
                });
                self.touched.push(Touched {
                    key: key.clone(),
                    before,
                    state: loaded.state.clone_box(),
                    version: loaded.version,
                    events: Vec::new(),
                    entries: Vec::new(),
                });
                self.touched.len() - 1
            }
        };
        let metadata = match &self.metadata {
            Some(metadata) => metadata.clone(),
            None => {
                let metadata = JsonText::canonical(&EventMetadata { command: self.kind })
                    .map_err(|error| Refusal::Internal(format!("metadata of {key:?}: {error}")))?;
                self.metadata = Some(metadata.clone());
                metadata
            }
        };
        let touched = &mut self.touched[position];
        let state = touched
            .state
            .as_any_mut()
            .downcast_mut::<A>()
            .ok_or_else(|| Refusal::Internal(format!("aggregate {key:?} has another type")))?;
        let events = state.decide(command)?;
        for event in &events {
            let payload = JsonText::canonical(event)
                .map_err(|error| Refusal::Internal(format!("event of {key:?}: {error}")))?;
            touched.version += 1;
            touched.events.push(NewEvent {
                aggregate_type: key.aggregate_type.clone(),
                aggregate_id: key.aggregate_id.clone(),
                aggregate_seq: touched.version,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload,
                metadata: metadata.clone(),
            });
            if self.for_replay {
                touched.entries.extend(A::journal_entry(event).cloned());
            }
            state.apply(event.clone());
        }
        Ok(events)
    }

    /// Records that the decision creates the entity `entity_type`
    /// `entity_id` inside aggregate `A` `aggregate_id` (a grant inside a
    /// quota): a route naming only the entity finds the aggregate through
    /// the store's index, written with the request's events.
    pub fn index<A>(&mut self, entity_type: &'static str, entity_id: String, aggregate_id: &str)
    where
        A: Decide + 'static,
        A::Error: Rejection,
    {
        self.indexed.push(IndexEntry {
            entity_type,
            entity_id,
            aggregate: AggregateKey::new(A::TYPE, aggregate_id),
        });
    }

    /// Everything the decision touched, in order.
    pub(crate) fn into_touched(self) -> Vec<Touched> {
        self.touched
    }

    /// Everything the decision touched, in order, and the entities it
    /// created.
    pub(crate) fn into_parts(self) -> (Vec<Touched>, Vec<IndexEntry>) {
        (self.touched, self.indexed)
    }
}

/// The id `label` of the request under `key` of `tenant_id`: what
/// [`Decider::derive_id`] gives, for an id a request must carry before it is
/// submitted (an entry or hold it creates is one of its targets).
pub fn derive_id(tenant_id: TenantId, key: &IdempotencyKey, label: &str) -> Uuid {
    hashed_id(&[
        b"ledger.derived-id.v1",
        tenant_id.as_uuid().as_bytes(),
        &(key.as_str().len() as u64).to_be_bytes(),
        key.as_str().as_bytes(),
        label.as_bytes(),
    ])
}

/// The id the BLAKE3 hash of `parts`, in order, gives (its first 16
/// bytes): the same parts, the same id. The first part names what the id
/// is of (`ledger.derived-id.v1`), so ids of different things never meet.
pub fn hashed_id(parts: &[&[u8]]) -> Uuid {
    let mut hasher = blake3::Hasher::new();
    for part in parts {
        hasher.update(part);
    }
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// What every event records of the request that decided it.
#[derive(Serialize)]
struct EventMetadata {
    /// The request's kind (`consume_quota`, ...).
    command: &'static str,
}

/// Records the request in the chain: the first of its events carries, in
/// its metadata, its kind, canonical body and the rules it was decided
/// under (`{"command": kind, "request": body, "rules": 11}`, the body the
/// text its fingerprint is taken of), so the hash covers it.
pub fn record_request(
    events: &mut [NewEvent],
    kind: &str,
    body: &JsonText,
    rules: Rules,
) -> Result<(), Refusal> {
    let Some(first) = events.first_mut() else {
        return Ok(());
    };
    first.metadata = request_metadata(kind, body, rules)
        .map_err(|error| Refusal::Internal(format!("recording the request: {error}")))?;
    Ok(())
}

/// The metadata that records a request of `kind` with canonical `body`,
/// decided under `rules`: `{"command": kind, "request": body, "rules": n}`,
/// canonical; without `rules` for the first rules (as every request was
/// recorded before rules were versioned).
pub fn request_metadata(
    kind: &str,
    body: &JsonText,
    rules: Rules,
) -> Result<JsonText, eventstore::canonical::CanonicalError> {
    let kind = JsonText::canonical(kind)?;
    let version = JsonText::canonical(&rules.version())?;
    let mut members = vec![(METADATA_COMMAND, &kind), (METADATA_REQUEST, body)];
    if rules != Rules::FIRST {
        members.push((METADATA_RULES, &version));
    }
    JsonText::object(&members)
}

/// The metadata field naming a request's kind (on every event).
pub const METADATA_COMMAND: &str = "command";

/// The metadata field holding a request's canonical body (on its first event).
pub const METADATA_REQUEST: &str = "request";

/// The metadata field holding the rules a request was decided under (on
/// its first event; none for the first rules).
pub const METADATA_RULES: &str = "rules";

fn undeclared(key: &AggregateKey) -> Refusal {
    Refusal::Internal(format!(
        "aggregate {}/{} was not declared as a target of the request",
        key.aggregate_type, key.aggregate_id
    ))
}

/// Builds an accepted request's answer: its reply fields, the aggregate, the
/// events appended and the tenant_seq reached.
pub(crate) fn accepted_body(
    reply: &Reply,
    events: &[eventstore::AppendedEvent],
    tenant_seq: i64,
) -> Value {
    let mut body = match &reply.body {
        Value::Object(map) => map.clone(),
        Value::Null => Map::new(),
        other => Map::from_iter([("result".to_string(), other.clone())]),
    };
    body.insert(
        "aggregate_id".into(),
        Value::String(reply.aggregate_id.clone()),
    );
    body.insert(
        eventstore::ANSWER_EVENTS.into(),
        Value::Array(
            events
                .iter()
                .map(|event| serde_json::to_value(event.summary()).unwrap_or(Value::Null))
                .collect(),
        ),
    );
    body.insert("tenant_seq".into(), Value::from(tenant_seq));
    Value::Object(body)
}
