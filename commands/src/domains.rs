//! The one list of domains. A domain is its aggregates, its requests, its
//! projections, its process managers, its routes and its OpenAPI tag; the
//! pipeline, `serve`, `project`, `rebuild`, `verify`, `replay` and the
//! OpenAPI document all read them from [`domains`], so a new domain is its
//! files plus one line there.
//!
//! What the platform owns apart from any domain (the stream index and the
//! journal projections, tenants, health and metrics routes) is listed here
//! too, around the domains.

use crate::http::AppState;
use crate::pipeline::{AggregateKind, AnyAggregate, AnyRequest, CommandBus, Request};
use chrono::{DateTime, Utc};
use projections::scheduled::{ScheduleReader, ScheduledWork};
use projections::{Projection, Reactor};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;

/// One domain of the ledger.
pub struct Domain {
    /// Its name (`quota`).
    pub name: &'static str,
    /// The aggregate types it owns.
    pub aggregates: Vec<AggregateKind>,
    /// Every request kind it records in the chain.
    pub requests: Vec<RequestKind>,
    /// Its read tables.
    pub projections: Vec<Arc<dyn Projection>>,
    /// Process managers: reactions to its events that submit requests.
    pub process_managers: Vec<ProcessManager>,
    /// What its events schedule (renewals, expiries), for the scheduler.
    pub schedules: Vec<ScheduleReader>,
    /// What its process managers ask of its events, read from folded
    /// states (verify's check that no reaction is owed).
    pub reactions: Vec<ReactionReader>,
    /// Its HTTP routes, with their OpenAPI description.
    pub routes: fn() -> OpenApiRouter<AppState>,
    /// OpenAPI tags of its routes (name, description).
    pub tags: Vec<(&'static str, &'static str)>,
    /// What a replay reports of its aggregates.
    pub sections: Vec<Section>,
}

/// Every domain, in the order their reports and routes are listed.
pub fn domains() -> Vec<Domain> {
    vec![
        crate::requests::subscription::domain(),
        crate::requests::quota::domain(),
        crate::requests::journal::domain(),
        crate::requests::payments::domain(),
        crate::requests::escrow::domain(),
        crate::requests::compensation::domain(),
    ]
}

/// Every projection: the stream index, each domain's, then the journal
/// (reading the entries of every registered aggregate) and the scheduled
/// work (what every domain's events schedule).
pub fn projections() -> Vec<Arc<dyn Projection>> {
    let mut all: Vec<Arc<dyn Projection>> = vec![Arc::new(projections::stream_index::StreamIndex)];
    all.extend(domains().into_iter().flat_map(|domain| domain.projections));
    let readers = domains()
        .iter()
        .flat_map(|domain| domain.aggregates.iter().map(|kind| kind.entry_reader))
        .collect();
    all.push(Arc::new(projections::journal::Journal::new(readers)));
    let schedules = domains()
        .into_iter()
        .flat_map(|domain| domain.schedules)
        .collect();
    all.push(Arc::new(ScheduledWork::new(schedules)));
    all
}

/// The projection named `name`.
pub fn projection(name: &str) -> Option<Arc<dyn Projection>> {
    projections()
        .into_iter()
        .find(|projection| projection.name() == name)
}

/// What a process manager asks of the events of one aggregate type, read
/// from the states a replay folded (verify's check that no reaction is
/// owed): for `event`, with its request folded, the reaction it would make
/// (`None` when it makes none, or when what it would make cannot be told
/// from the history: a refusal it may have had is not in the chain).
#[derive(Clone, Copy)]
pub struct ReactionReader {
    /// The process manager's name (`commissions`).
    pub name: &'static str,
    pub aggregate_type: &'static str,
    /// The stored types of the events it reacts to.
    pub events: &'static [&'static str],
    pub read: fn(
        &crate::pipeline::fold::TenantFold,
        &eventstore::StoredEvent,
    ) -> Option<Box<dyn PendingReaction>>,
}

impl ReactionReader {
    /// Whether events stored as `event_type` (of its aggregate type) are
    /// read at all.
    pub fn reads(&self, event_type: &str) -> bool {
        self.events.contains(&event_type)
    }
}

/// A reaction read from an event, not made yet.
pub trait PendingReaction: Send + Sync {
    /// The key the process manager submits it under.
    fn key(&self) -> &eventstore::IdempotencyKey;
    /// The request it would submit against `fold` (the tenant as it stands
    /// now) under `rules`, resolving what it resolves when it reacts (a
    /// payee's plan and currency); `None` when it would submit none.
    fn request(
        &self,
        fold: &crate::pipeline::fold::TenantFold,
        rules: aggregates::rules::Rules,
    ) -> Option<Box<dyn AnyRequest>>;
}

/// A process manager, built on the pipeline it submits its requests to
/// and the store it resolves them from.
pub type ProcessManager = fn(CommandBus, eventstore::EventStore) -> Arc<dyn Reactor>;

/// Every domain's process managers (built on a pipeline by `serve` and
/// `project`).
pub fn process_managers() -> Vec<ProcessManager> {
    domains()
        .into_iter()
        .flat_map(|domain| domain.process_managers)
        .collect()
}

/// A request kind: its name and how its recorded body is read back.
#[derive(Clone, Copy)]
pub struct RequestKind {
    pub kind: &'static str,
    decode: fn(&Value) -> Result<Box<dyn AnyRequest>, serde_json::Error>,
    decode_text: fn(&str) -> Result<Box<dyn AnyRequest>, serde_json::Error>,
}

impl RequestKind {
    /// The kind of request `R`.
    pub fn of<R: Request>() -> Self {
        Self {
            kind: R::KIND,
            decode: |body| {
                R::deserialize(body).map(|request| Box::new(request) as Box<dyn AnyRequest>)
            },
            decode_text: |body| {
                serde_json::from_str::<R>(body)
                    .map(|request| Box::new(request) as Box<dyn AnyRequest>)
            },
        }
    }

    /// The request recorded as `body`.
    pub fn decode(&self, body: &Value) -> Result<Box<dyn AnyRequest>, serde_json::Error> {
        (self.decode)(body)
    }

    /// The request recorded as the JSON text `body`, read without a `Value`
    /// in between. For the requests registered today (strings, integers of
    /// at most 64 bits, shallow objects) it is the request
    /// [`RequestKind::decode`] gives of the parsed text.
    pub fn decode_text(&self, body: &str) -> Result<Box<dyn AnyRequest>, serde_json::Error> {
        (self.decode_text)(body)
    }
}

/// What a replay reports of one aggregate type: a section of the report
/// (`quotas`), one value per aggregate (or the one aggregate's value, or
/// `null`, when `one`).
#[derive(Clone, Copy)]
pub struct Section {
    pub name: &'static str,
    pub aggregate_type: &'static str,
    pub one: bool,
    /// The aggregate (id, state) as of a time (the last event's when `None`).
    pub report: fn(&str, &dyn AnyAggregate, Option<DateTime<Utc>>) -> Value,
}

/// The domains indexed for a replay: aggregate types, request kinds and
/// schedule readers by name.
pub struct Registry {
    aggregates: HashMap<&'static str, AggregateKind>,
    requests: HashMap<&'static str, RequestKind>,
    schedules: HashMap<&'static str, ScheduleReader>,
    reactions: HashMap<&'static str, Vec<ReactionReader>>,
    sections: Vec<Section>,
}

impl Registry {
    /// Every domain of [`domains`].
    pub fn new() -> Self {
        Self::of(domains())
    }

    /// The given domains.
    pub fn of(domains: Vec<Domain>) -> Self {
        let mut aggregates = HashMap::new();
        let mut requests = HashMap::new();
        let mut schedules = HashMap::new();
        let mut reactions: HashMap<&'static str, Vec<ReactionReader>> = HashMap::new();
        let mut sections = Vec::new();
        for domain in domains {
            for kind in domain.aggregates {
                let twice = aggregates.insert(kind.aggregate_type, kind);
                assert!(
                    twice.is_none(),
                    "aggregate type {} registered twice",
                    kind.aggregate_type
                );
            }
            for kind in domain.requests {
                let twice = requests.insert(kind.kind, kind);
                assert!(
                    twice.is_none(),
                    "request kind {} registered twice",
                    kind.kind
                );
            }
            for reader in domain.schedules {
                let twice = schedules.insert(reader.aggregate_type, reader);
                assert!(
                    twice.is_none(),
                    "schedule of {} registered twice",
                    reader.aggregate_type
                );
            }
            for reader in domain.reactions {
                reactions
                    .entry(reader.aggregate_type)
                    .or_default()
                    .push(reader);
            }
            sections.extend(domain.sections);
        }
        Self {
            aggregates,
            requests,
            schedules,
            reactions,
            sections,
        }
    }

    /// The aggregate type named `name`, when a domain registers it.
    pub fn aggregate(&self, name: &str) -> Option<&AggregateKind> {
        self.aggregates.get(name)
    }

    /// The request kind named `kind`, when a domain registers it.
    pub fn request(&self, kind: &str) -> Option<&RequestKind> {
        self.requests.get(kind)
    }

    /// What events of `aggregate_type` schedule, when a domain says.
    pub fn schedule(&self, aggregate_type: &str) -> Option<&ScheduleReader> {
        self.schedules.get(aggregate_type)
    }

    /// What process managers ask of events of `aggregate_type`.
    pub fn reactions(&self, aggregate_type: &str) -> &[ReactionReader] {
        self.reactions
            .get(aggregate_type)
            .map_or(&[], Vec::as_slice)
    }

    /// The report's sections, in domain order.
    pub fn sections(&self) -> &[Section] {
        &self.sections
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}
