//! A tenant's state folded from its events, every recorded request decided
//! again on the way.
//!
//! The events one request appended are consecutive and share its
//! idempotency key; the first carries the request itself (its kind and
//! canonical body, in its metadata). For each request, in order, the
//! request is read back through the domain registry
//! ([`commands::domains::Registry`]), decided by its own
//! [`Request::decide`](commands::Request::decide) against the states folded
//! from the events before it, at its recorded time, under its key, and every
//! event the decision gives (aggregate, type, version, payload, metadata) is
//! compared with the stored one at the same place. Then the decision is
//! folded, so that one altered event is one finding, and the journal entries
//! are posted to the tenant's journal with account flags enforced. This is
//! the one mechanism for every domain: nothing here knows a domain.
//!
//! Every way a request's events differ from its decision is a
//! [`ReplayFinding`] at the seq of the event (both values named): an
//! aggregate type or request kind no domain registers, an event with no
//! recorded request, a recorded request that does not read back or that the
//! domain now refuses, an event the decision does not give, one it gives
//! that the history lacks. Where no decision can be made, the stored events
//! are folded as they are. An aggregate's events must also follow each
//! other (aggregate_seq), checked event by event.
//!
//! A replay as of a seq inside a request reads the rest of the request to
//! decide it, and folds only up to that seq ([`TenantState::look_ahead`]).
//! Memory grows with a tenant's aggregates and accounts, and with one
//! request's events (at most [`REQUEST_EVENTS_MAX`]), never with its history.

use crate::differences::{compare, missing, unexpected};
use crate::owed::Owed;
use crate::snapshots::Snapshots;
use crate::source::AuditEvent;
use aggregates::journal::{Balances, JournalEntry};
use aggregates::rules::Rules;
use chrono::{DateTime, Utc};
use commands::domains::Registry;
use commands::pipeline::fold::TenantFold;
use commands::pipeline::{
    request_metadata, AnyRequest, Refusal, METADATA_COMMAND, METADATA_REQUEST, METADATA_RULES,
};
use cqrs_es::persist::SerializedEvent;
use eventstore::{AggregateKey, ChainHash, IdempotencyKey, JsonText};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::OnceLock;

/// Most events read as one request. No decision of the ledger's domains
/// appends nearly this many; a longer run under one key is checked in parts
/// (and its parts are findings).
pub const REQUEST_EVENTS_MAX: usize = 16_384;

/// The domains, indexed once per process.
pub fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Registry::new)
}

/// The domain refused part of a tenant's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayFinding {
    pub tenant_seq: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub message: String,
}

/// A finding, with the line of the export file its event was read from
/// (`None` when read from the database).
pub type LocatedFinding = (ReplayFinding, Option<u64>);

/// What folding a tenant's events has built so far.
pub struct TenantState {
    /// Whether part of a request may be folded (a replay as of a point).
    partial: bool,
    /// Created with the first event (which names the tenant).
    fold: Option<TenantFold>,
    balances: Balances,
    /// Last aggregate_seq of every aggregate, as stored.
    versions: HashMap<(String, String), i64>,
    last_seq: i64,
    last_hash: Option<ChainHash>,
    last_recorded_at: Option<DateTime<Utc>>,
    /// The events of the request read last, not yet settled.
    request: Option<Pending>,
    /// Every journal entry posted, with the time its request was recorded
    /// (kept for reports only).
    entries: Option<Vec<(DateTime<Utc>, JournalEntry)>>,
    /// Those of them the journal's own requests recorded (kept with them).
    journal_own: Vec<JournalEntry>,
    /// What the events asked for (scheduled work, process managers'
    /// reactions) and nothing did yet (verification only).
    owed: Option<Owed>,
    /// The rules the last request decided again was decided under.
    rules: Rules,
    /// The snapshots not checked yet (verification of a database only).
    snapshots: Option<Snapshots>,
}

/// The stored events of one request.
struct Pending {
    idempotency_key: String,
    members: Vec<Member>,
    /// An event past a replay's point did not belong to the request: no
    /// later one does either.
    sealed: bool,
}

pub(crate) struct Member {
    pub(crate) event: AuditEvent,
    pub(crate) line: Option<u64>,
    /// What is wrong with it so far.
    pub(crate) problems: Vec<String>,
    /// Past the point a replay was asked for: read to decide the request,
    /// never folded nor reported.
    pub(crate) beyond: bool,
}

/// The entries of `members` (those folded) that the journal's own requests
/// recorded: the request every event names in its metadata (`command`) is
/// one of `OWN_ENTRY_KINDS`, whatever the rules it was decided under.
fn journal_own(members: &[Member]) -> impl Iterator<Item = JournalEntry> + '_ {
    use aggregates::journal::entry::EntryEvent;
    use commands::requests::journal::OWN_ENTRY_KINDS;
    members
        .iter()
        .filter(|member| !member.beyond && member.event.event_type == "EntryRecorded")
        .filter(|member| {
            serde_json::from_str::<Value>(&member.event.metadata)
                .ok()
                .and_then(|metadata| {
                    let kind = metadata.get(METADATA_COMMAND)?.as_str()?.to_string();
                    Some(OWN_ENTRY_KINDS.contains(&kind.as_str()))
                })
                .unwrap_or(false)
        })
        .filter_map(|member| match serde_json::from_str(&member.event.payload) {
            Ok(EntryEvent::EntryRecorded(recorded)) => Some(recorded.entry),
            _ => None,
        })
}

/// A request's events are appended at one time: a member recorded at
/// another would put part of the request on the other side of a point in
/// time (a period's end, an as_of). The time most of its events share is
/// the request's (its first event's on a tie); each event recorded at
/// another is a finding at its own seq, so one retimed event is one
/// finding, the first included.
fn one_time(members: &mut [Member]) {
    let Some(first) = members.first().map(|member| member.event.recorded_at) else {
        return;
    };
    // What every request of an untouched history is: nothing to count.
    if members
        .iter()
        .all(|member| member.event.recorded_at == first)
    {
        return;
    }
    let mut counts: Vec<(DateTime<Utc>, usize)> = Vec::new();
    for member in members.iter() {
        match counts
            .iter_mut()
            .find(|(at, _)| *at == member.event.recorded_at)
        {
            Some((_, count)) => *count += 1,
            None => counts.push((member.event.recorded_at, 1)),
        }
    }
    // The first of the most shared: `max_by_key` keeps the last of equals,
    // so look from the end.
    let Some(&(shared, _)) = counts.iter().rev().max_by_key(|(_, count)| *count) else {
        return;
    };
    let time = |at: DateTime<Utc>| at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
    for member in members.iter_mut() {
        if member.event.recorded_at != shared {
            member.problems.push(format!(
                "recorded_at {} where its request's other events record {}",
                time(member.event.recorded_at),
                time(shared)
            ));
        }
    }
}

impl TenantState {
    /// A state that folds whole requests (verification).
    pub fn for_verification() -> Self {
        Self::new(false)
    }

    /// A state that can stop inside a request (replay as of a point).
    pub fn for_report() -> Self {
        Self::new(true)
    }

    fn new(partial: bool) -> Self {
        Self {
            partial,
            fold: None,
            balances: Balances::wide(),
            versions: HashMap::new(),
            last_seq: 0,
            last_hash: None,
            last_recorded_at: None,
            request: None,
            entries: None,
            journal_own: Vec::new(),
            owed: (!partial).then(Owed::default),
            rules: Rules::CURRENT,
            snapshots: None,
        }
    }

    /// Keeps every journal entry posted from now on, with its time (what a
    /// report of a period needs).
    pub fn keep_entries(&mut self) {
        self.entries.get_or_insert_with(Vec::new);
    }

    /// The journal entries kept ([`TenantState::keep_entries`]), in order.
    pub fn entries(&self) -> &[(DateTime<Utc>, JournalEntry)] {
        self.entries.as_deref().unwrap_or_default()
    }

    /// The kept journal entries the journal's own requests recorded
    /// (`post_entry`, `reverse_entry`, `resolve_hold`, as their events'
    /// metadata names them), in order.
    pub fn journal_own(&self) -> &[JournalEntry] {
        &self.journal_own
    }

    /// Reads the next event (from `line` of a file, if any). Returns the
    /// findings of what was settled: those of the request it ends (the event
    /// itself then waits as the first of the next request).
    pub fn apply(&mut self, event: AuditEvent, line: Option<u64>) -> Vec<LocatedFinding> {
        let findings = self.settle_before(&event);
        self.last_seq = event.tenant_seq;
        self.last_hash = Some(event.hash);
        self.last_recorded_at = Some(event.recorded_at);
        let stream = (event.aggregate_type.clone(), event.aggregate_id.clone());
        let version = self.versions.entry(stream).or_insert(0);
        // A sequence out of step is a finding; the event is still decided
        // and folded (an event deleted before it leaves it intact).
        let mut problems = Vec::new();
        if event.aggregate_seq != *version + 1 {
            problems.push(format!(
                "aggregate_seq {} where {} was next",
                event.aggregate_seq,
                *version + 1
            ));
        }
        *version = event.aggregate_seq.max(*version);
        if let Some(owed) = self.owed.as_mut() {
            owed.schedule(&event, line);
        }
        self.join(event, line, problems, false);
        findings
    }

    /// Settles the request not yet settled unless `event` continues it: the
    /// findings of what comes before `event`, so that they can be reported
    /// before anything about `event` itself.
    pub fn settle_before(&mut self, event: &AuditEvent) -> Vec<LocatedFinding> {
        if self.continues_group(event) {
            Vec::new()
        } else {
            self.settle()
        }
    }

    /// Whether `event` belongs to the request not yet settled: the same
    /// idempotency key, and not the first event of another recorded request.
    pub fn continues_group(&self, event: &AuditEvent) -> bool {
        self.request.as_ref().is_some_and(|request| {
            !request.sealed
                && request.members.len() < REQUEST_EVENTS_MAX
                && event.idempotency_key == request.idempotency_key
                && !records_a_request(&event.metadata)
        })
    }

    /// Reads an event past the point a replay was asked for: when it belongs
    /// to the request not yet settled, that request is decided with it (the
    /// event is neither folded nor reported). Returns whether it did; once
    /// one did not, none after it does.
    pub fn look_ahead(&mut self, event: AuditEvent, line: Option<u64>) -> bool {
        if self.continues_group(&event) {
            self.join(event, line, Vec::new(), true);
            return true;
        }
        if let Some(request) = &mut self.request {
            request.sealed = true;
        }
        false
    }

    fn join(&mut self, event: AuditEvent, line: Option<u64>, problems: Vec<String>, beyond: bool) {
        if self.fold.is_none() {
            self.fold = Some(TenantFold::new(event.tenant_id, self.partial));
        }
        let continues = self.continues_group(&event);
        let request = self.request.get_or_insert_with(|| Pending {
            idempotency_key: event.idempotency_key.clone(),
            members: Vec::new(),
            sealed: false,
        });
        debug_assert!(
            continues || request.members.is_empty(),
            "a request is settled before another opens"
        );
        request.members.push(Member {
            event,
            line,
            problems,
            beyond,
        });
    }

    /// Settles the request not yet settled: decides it again, compares,
    /// folds, and returns the findings.
    pub fn settle(&mut self) -> Vec<LocatedFinding> {
        let (Some(mut request), Some(fold)) = (self.request.take(), self.fold.as_mut()) else {
            return Vec::new();
        };
        let decided = redecide(fold, &request.members);
        if let Some(owed) = self.owed.as_mut() {
            // What the request is, when it reads back: work or a reaction
            // is done under its key only by a request of its own kind.
            let recorded = decided
                .as_ref()
                .ok()
                .map(|(_, _, rules, kind)| (kind.as_str(), *rules));
            owed.done(&request.idempotency_key, recorded, fold);
        }
        let entries = match decided {
            Ok((redecision, findings, rules, _)) => {
                self.rules = rules;
                for (position, problem) in findings {
                    request.members[position].problems.push(problem);
                }
                let folded = request
                    .members
                    .iter()
                    .take_while(|member| !member.beyond)
                    .count();
                let partial = (folded < request.members.len()).then_some(folded);
                fold.commit(redecision, partial)
            }
            Err(problem) => {
                request.members[0].problems.push(problem);
                fold_stored(fold, &mut request.members)
            }
        };
        if let Some(owed) = self.owed.as_mut() {
            for member in &request.members {
                owed.react(fold, &member.event, member.line);
            }
        }
        let snapshots = match self.snapshots.as_mut() {
            Some(snapshots) => snapshots.check(fold, &moved(&request.members)),
            None => Vec::new(),
        };
        let recorded_at = request.members[0].event.recorded_at;
        one_time(&mut request.members);
        for entry in &entries {
            if let Err(error) = self.balances.post(entry) {
                request.members[0]
                    .problems
                    .push(format!("the tenant's journal refuses an entry: {error}"));
            }
        }
        if let Some(kept) = self.entries.as_mut() {
            kept.extend(entries.into_iter().map(|entry| (recorded_at, entry)));
            self.journal_own.extend(journal_own(&request.members));
        }
        request
            .members
            .into_iter()
            .filter(|member| !member.beyond && !member.problems.is_empty())
            .map(|member| {
                let finding = ReplayFinding {
                    tenant_seq: member.event.tenant_seq,
                    aggregate_type: member.event.aggregate_type,
                    aggregate_id: member.event.aggregate_id,
                    message: member.problems.join("; "),
                };
                (finding, member.line)
            })
            .chain(snapshots)
            .collect()
    }

    /// Checks the snapshots `snapshots` names against the events as they
    /// are folded (verification of a database: files carry none).
    pub fn expect_snapshots(&mut self, snapshots: Snapshots) {
        self.snapshots = Some(snapshots);
    }

    /// The snapshots no request ended at (after the last request is
    /// settled).
    pub fn unmatched_snapshots(&mut self) -> Vec<LocatedFinding> {
        match self.snapshots.as_mut() {
            Some(snapshots) => snapshots.unmatched(self.fold.as_ref(), self.last_seq),
            None => Vec::new(),
        }
    }

    /// The work due more than [`OWED_AFTER`](crate::owed::OWED_AFTER)
    /// before the last event that nothing did and the domain would take
    /// (verification only; after the last request is settled).
    pub fn owed(&mut self) -> Vec<LocatedFinding> {
        match (&self.owed, self.fold.as_mut(), self.last_recorded_at) {
            (Some(owed), Some(fold), Some(now)) => owed.owed(fold, now, self.rules),
            _ => Vec::new(),
        }
    }

    /// seq of the last event folded.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// The chain hash of the last event folded.
    pub fn last_hash(&self) -> Option<ChainHash> {
        self.last_hash
    }

    /// The recorded time of the last event folded.
    pub fn last_recorded_at(&self) -> Option<DateTime<Utc>> {
        self.last_recorded_at
    }

    /// The aggregates folded.
    pub fn fold(&self) -> Option<&TenantFold> {
        self.fold.as_ref()
    }

    /// The tenant's journal as folded.
    pub(crate) fn balances(&self) -> &Balances {
        &self.balances
    }

    /// Whether a request is read but not settled yet.
    pub(crate) fn is_settled(&self) -> bool {
        self.request.is_none()
    }
}

/// Whether an event's metadata records a request (the first event of one).
fn records_a_request(metadata: &str) -> bool {
    // The stored text names the field (as jsonb writes it: `"request": `);
    // parsing is left to the decision.
    static FIELD: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| format!("\"{METADATA_REQUEST}\": "));
    metadata.contains(FIELD.as_str())
}

/// Decides the request `members` record and compares: the decision and the
/// problems found, each with the position of the member it is about; or,
/// when no decision can be made, why (about the first member).
/// Also returns the rules it was decided under and its kind.
#[allow(clippy::type_complexity)]
fn redecide(
    fold: &mut TenantFold,
    members: &[Member],
) -> Result<
    (
        commands::pipeline::fold::Redecision,
        Vec<(usize, String)>,
        Rules,
        String,
    ),
    String,
> {
    let first = &members[0].event;
    let Recorded {
        kind,
        request,
        body,
        rules,
    } = match read_back_canonical(&first.metadata) {
        Some(read) => read,
        None => read_back(&first.metadata)?,
    };
    let key = IdempotencyKey::parse(&first.idempotency_key)
        .map_err(|error| format!("idempotency key: {error}"))?;
    let redecision = fold.decide((request.as_ref(), &body), &key, first.recorded_at, rules);
    match &redecision.decision {
        Ok(_) => {}
        Err(Refusal::Rejected { code, message, .. }) => {
            return Err(format!(
                "the domain refuses the recorded {kind} request: {code}: {message}"
            ))
        }
        Err(Refusal::NotDue(not_due)) => {
            return Err(format!(
                "the domain refuses the recorded {kind} request: {}: {not_due}",
                aggregates::decide::Rejection::code(not_due)
            ))
        }
        Err(Refusal::Internal(message) | Refusal::Stale(message)) => {
            return Err(format!(
                "the recorded {kind} request cannot be decided: {message}"
            ))
        }
    }
    let decided: Vec<_> = redecision.events().collect();
    let mut problems = Vec::new();
    for (position, member) in members.iter().enumerate() {
        match decided.get(position) {
            Some(decided) => {
                problems.extend(compare(&member.event, decided).map(|problem| (position, problem)))
            }
            None => problems.push((position, unexpected(&member.event, &kind, decided.len()))),
        }
    }
    let last = members.len() - 1;
    for decided in decided.iter().skip(members.len()) {
        problems.push((last, missing(decided, &kind)));
    }
    Ok((redecision, problems, rules, kind))
}

/// Each aggregate a request's events (those folded) moved, with the
/// tenant_seq and line of its last event there.
fn moved(members: &[Member]) -> Vec<(AggregateKey, i64, Option<u64>)> {
    let mut moved: Vec<(AggregateKey, i64, Option<u64>)> = Vec::new();
    for member in members.iter().filter(|member| !member.beyond) {
        let key = AggregateKey::new(
            member.event.aggregate_type.clone(),
            member.event.aggregate_id.clone(),
        );
        match moved.iter_mut().find(|(moved, _, _)| *moved == key) {
            Some(last) => (last.1, last.2) = (member.event.tenant_seq, member.line),
            None => moved.push((key, member.event.tenant_seq, member.line)),
        }
    }
    moved
}

/// A request a first event records, read back.
struct Recorded {
    kind: String,
    request: Box<dyn AnyRequest>,
    /// Its canonical body, which the request must give again.
    body: JsonText,
    /// The rules it was decided under.
    rules: Rules,
}

/// The rules of version `version` (the first when the metadata names
/// none), if this build knows them.
fn rules_of(version: Option<u32>) -> Result<Rules, String> {
    match version {
        None => Ok(Rules::FIRST),
        Some(version) => Rules::new(version).ok_or_else(|| {
            format!(
                "the request was decided under rules {version}, which this build does not know \
                 (it knows 1 to {})",
                Rules::CURRENT.version()
            )
        }),
    }
}

/// The request a first event records, read back.
fn read_back(metadata: &str) -> Result<Recorded, String> {
    let (kind, body, rules) = recorded_request(metadata)?;
    let registered = registry()
        .request(&kind)
        .ok_or_else(|| format!("request kind {kind:?} is registered by no domain"))?;
    let request = registered
        .decode(&body)
        .map_err(|error| format!("the recorded {kind} request does not read back: {error}"))?;
    let recorded = JsonText::from_value(&body).map_err(|error| error.to_string())?;
    match request.body() {
        Ok(canonical) if canonical == recorded => Ok(Recorded {
            kind,
            request,
            body: recorded,
            rules,
        }),
        Ok(canonical) => Err(format!(
            "the recorded {kind} request {recorded} reads back as {canonical}"
        )),
        Err(error) => Err(format!("the recorded {kind} request: {error}")),
    }
}

/// The metadata members a first event's request is read back from, as
/// they are written: the body's text is borrowed, not parsed into a tree.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordedText<'a> {
    #[serde(borrow, rename = "command")]
    kind: &'a str,
    #[serde(borrow, rename = "request")]
    body: &'a RawValue,
    #[serde(default, rename = "rules")]
    rules: Option<u32>,
}

/// [`read_back`] without a `Value` tree, for the usual case: metadata
/// that is exactly what the pipeline writes for the request it records
/// ([`request_metadata`]), whose body a registered request decodes from
/// and writes back to the same text. Such a body is its own canonical form
/// and reads back the same from its parsed tree, so the answer is
/// [`read_back`]'s. Anything else (metadata written otherwise or with
/// other members, a kind no domain registers, a body that does not decode
/// or is written otherwise) is `None`, for [`read_back`] to name the
/// problem.
fn read_back_canonical(metadata: &str) -> Option<Recorded> {
    let recorded: RecordedText<'_> = serde_json::from_str(metadata).ok()?;
    let rules = rules_of(recorded.rules).ok()?;
    let request = registry()
        .request(recorded.kind)?
        .decode_text(recorded.body.get())
        .ok()?;
    let canonical = request.body().ok()?;
    let written = request_metadata(recorded.kind, &canonical, rules).ok()?;
    (written.as_str() == metadata).then(|| Recorded {
        kind: recorded.kind.to_string(),
        request,
        body: canonical,
        rules,
    })
}

/// The request a first event records: its kind, body and rules.
fn recorded_request(metadata: &str) -> Result<(String, Value, Rules), String> {
    let metadata: Value = serde_json::from_str(metadata)
        .map_err(|error| format!("the metadata does not parse: {error}"))?;
    let Some(body) = metadata.get(METADATA_REQUEST) else {
        return Err("no recorded request: the first event of a request must carry it".into());
    };
    let kind = metadata
        .get(METADATA_COMMAND)
        .and_then(Value::as_str)
        .ok_or("the recorded request names no kind")?;
    let rules = match metadata.get(METADATA_RULES) {
        None => None,
        Some(version) => Some(
            version
                .as_u64()
                .and_then(|version| u32::try_from(version).ok())
                .ok_or("the recorded rules are no version number")?,
        ),
    };
    Ok((kind.to_string(), body.clone(), rules_of(rules)?))
}

/// Folds the stored events of a request no decision accounts for, as they
/// are: the problems of those that cannot be folded go on their member.
/// Returns their journal entries.
fn fold_stored(fold: &mut TenantFold, members: &mut [Member]) -> Vec<JournalEntry> {
    let mut entries = Vec::new();
    for member in members.iter_mut().filter(|member| !member.beyond) {
        let event = &member.event;
        let Some(kind) = registry().aggregate(&event.aggregate_type) else {
            member.problems.push(format!(
                "aggregate type {:?} is registered by no domain",
                event.aggregate_type
            ));
            continue;
        };
        let serialized = serde_json::from_str(&event.payload).map(|payload| SerializedEvent {
            aggregate_id: event.aggregate_id.clone(),
            sequence: usize::try_from(event.aggregate_seq).unwrap_or(0),
            aggregate_type: event.aggregate_type.clone(),
            event_type: event.event_type.clone(),
            event_version: event.event_version.clone(),
            payload,
            metadata: Value::Null,
        });
        match serialized
            .and_then(|serialized| fold.apply_stored(kind, &event.aggregate_id, serialized))
        {
            Ok(entry) => entries.extend(entry),
            Err(error) => member
                .problems
                .push(format!("{} does not decode: {error}", event.event_type)),
        }
    }
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `metadata` is read back without a tree; when it is, the
    /// answer must be the one read back through the tree.
    fn read_without_tree(metadata: &str) -> bool {
        let Some(fast) = read_back_canonical(metadata) else {
            return false;
        };
        let slow = read_back(metadata).unwrap();
        assert_eq!(fast.kind, slow.kind);
        assert_eq!(fast.body, slow.body);
        assert_eq!(fast.rules, slow.rules);
        assert_eq!(fast.request.body().unwrap(), slow.request.body().unwrap());
        true
    }

    #[test]
    fn a_request_reads_back_with_the_rules_it_was_decided_under() {
        let body = r#"{"quota": "credits", "amount": 1, "account": "acct-97", "reference": null}"#;
        let first = format!(r#"{{"command": "consume_quota", "request": {body}}}"#);
        let second = format!(r#"{{"rules": 2, "command": "consume_quota", "request": {body}}}"#);
        let third = format!(r#"{{"rules": 3, "command": "consume_quota", "request": {body}}}"#);
        let fourth = format!(r#"{{"rules": 4, "command": "consume_quota", "request": {body}}}"#);
        let fifth = format!(r#"{{"rules": 5, "command": "consume_quota", "request": {body}}}"#);
        let sixth = format!(r#"{{"rules": 6, "command": "consume_quota", "request": {body}}}"#);
        let seventh = format!(r#"{{"rules": 7, "command": "consume_quota", "request": {body}}}"#);
        let eighth = format!(r#"{{"rules": 8, "command": "consume_quota", "request": {body}}}"#);
        let ninth = format!(r#"{{"rules": 9, "command": "consume_quota", "request": {body}}}"#);
        let tenth = format!(r#"{{"rules": 10, "command": "consume_quota", "request": {body}}}"#);
        let eleventh = format!(r#"{{"rules": 11, "command": "consume_quota", "request": {body}}}"#);
        for (metadata, rules) in [
            (&first, Rules::FIRST),
            (&second, Rules::SECOND),
            (&third, Rules::THIRD),
            (&fourth, Rules::FOURTH),
            (&fifth, Rules::FIFTH),
            (&sixth, Rules::SIXTH),
            (&seventh, Rules::SEVENTH),
            (&eighth, Rules::EIGHTH),
            (&ninth, Rules::NINTH),
            (&tenth, Rules::TENTH),
            (&eleventh, Rules::ELEVENTH),
        ] {
            assert!(read_without_tree(metadata), "{metadata}");
            assert_eq!(read_back(metadata).unwrap().rules, rules);
        }
        let unknown = format!(r#"{{"rules": 12, "command": "consume_quota", "request": {body}}}"#);
        assert!(!read_without_tree(&unknown));
        assert_eq!(
            read_back(&unknown).err().as_deref(),
            Some("the request was decided under rules 12, which this build does not know (it knows 1 to 11)")
        );
        let no_number =
            format!(r#"{{"rules": "2", "command": "consume_quota", "request": {body}}}"#);
        assert_eq!(
            read_back(&no_number).err().as_deref(),
            Some("the recorded rules are no version number")
        );
    }

    #[test]
    fn a_request_recorded_canonically_reads_back_without_a_tree_and_any_other_as_before() {
        let canonical = r#"{"command": "consume_quota", "request": {"quota": "credits", "amount": 1, "account": "acct-97", "reference": null}}"#;
        assert!(read_without_tree(canonical));

        // The same request written otherwise reads back through the tree,
        // to the same canonical body.
        let spaced = r#"{"request":{"account":"acct-97","amount":1,"quota":"credits","reference":null},"command":"consume\u005fquota"}"#;
        assert!(!read_without_tree(spaced));
        let Recorded { kind, body, .. } = read_back(spaced).unwrap();
        assert_eq!(kind, "consume_quota");
        assert_eq!(
            body.as_str(),
            r#"{"quota": "credits", "amount": 1, "account": "acct-97", "reference": null}"#
        );

        // Every problem is still named as before.
        let refusals = [
            (
                r#"{"command": "consume_quota", "request": {"quota": "credits", "amount": 1, "account": "acct-97"}}"#,
                r#"the recorded consume_quota request {"quota": "credits", "amount": 1, "account": "acct-97"} reads back as {"quota": "credits", "amount": 1, "account": "acct-97", "reference": null}"#,
            ),
            (
                r#"{"command": "mint_money", "request": {}}"#,
                r#"request kind "mint_money" is registered by no domain"#,
            ),
            (
                r#"{"command": "consume_quota"}"#,
                "no recorded request: the first event of a request must carry it",
            ),
            (
                r#"{"command": 7, "request": {}}"#,
                "the recorded request names no kind",
            ),
        ];
        // Read back as before, though serde would read these into the
        // metadata's two members: an array, and a member more (nested
        // deeper than the tree allows).
        let deep = format!(
            r#"{{"x": {}{}, "command": "consume_quota", "request": {{"quota": "credits", "amount": 1, "account": "acct-97", "reference": null}}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        let mut refusals: Vec<(String, &str)> = refusals
            .into_iter()
            .map(|(metadata, message)| (metadata.to_string(), message))
            .collect();
        refusals.push((
            r#"["consume_quota", {"quota": "credits", "amount": 1, "account": "acct-97", "reference": null}]"#.to_string(),
            "no recorded request: the first event of a request must carry it",
        ));
        refusals.push((
            deep,
            "the metadata does not parse: recursion limit exceeded at line 1 column 133",
        ));
        for (metadata, message) in refusals {
            let metadata = metadata.as_str();
            assert!(!read_without_tree(metadata), "{metadata}");
            assert_eq!(read_back(metadata).err().as_deref(), Some(message));
        }
        let undecodable = r#"{"command": "consume_quota", "request": {"quota": "credits", "extra": 2, "amount": 1, "account": "acct-97", "reference": null}}"#;
        assert!(!read_without_tree(undecodable));
        assert_eq!(
            read_back(undecodable).err().as_deref(),
            Some("the recorded consume_quota request does not read back: unknown field `extra`, expected one of `quota`, `account`, `amount`, `reference`")
        );
    }
}
