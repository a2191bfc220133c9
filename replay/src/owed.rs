//! What a tenant's history owes itself: the work its events scheduled (a
//! hold's expiry, a renewal, a held line becoming payable), read through
//! each domain's schedule reader as the `scheduled_work` projection reads
//! it, and the requests its process managers make of its events (a
//! capture's commission, a refund's clawback), read through their reaction
//! readers from the states folded.
//!
//! The ticker submits each piece of work once it is due, and a process
//! manager each reaction once its event is appended, under a key derived
//! from the event; a refusal is final (recorded beside the chain, not in
//! it). So at the end of a tenant's history, work still open (neither
//! settled by a later event nor done under its key) or a reaction not
//! made under its key, due more than [`OWED_AFTER`] before the history's
//! last event, that the domain would take now, is owed: the scheduler or
//! the process manager skipped it (its run closed by hand, a checkpoint
//! moved past it, a refusal taken as final by a defect), and the ledger
//! still holds what it would have moved. Each is a finding at the seq of
//! the event that asked for it. What the domain refuses now is not: a
//! refusal is the final answer there too.

use crate::source::AuditEvent;
use crate::state::{registry, LocatedFinding, ReplayFinding};
use aggregates::rules::Rules;
use chrono::{DateTime, Duration, Utc};
use commands::domains::PendingReaction;
use commands::pipeline::fold::TenantFold;
use commands::pipeline::AnyRequest;
use eventstore::IdempotencyKey;
use projections::reactor::reaction_key;
use projections::scheduled::{ScheduleChange, SCHEDULER};
use std::collections::HashMap;

/// How long before a history's last event work must have fallen due (or a
/// reaction's event been recorded) to be owed: the ticker runs every second
/// and leases for 30 s, and the process managers follow the events as the
/// projections do, so this leaves an outage of most of an hour to catch up
/// from.
pub const OWED_AFTER: Duration = Duration::hours(1);

/// What a tenant's events asked for and nothing did yet.
#[derive(Default)]
pub struct Owed {
    /// Open scheduled work by its name.
    work: HashMap<String, Due>,
    /// The work each open key submits.
    keys: HashMap<String, String>,
    /// Reactions not made yet, by their key.
    reactions: HashMap<String, Due>,
}

/// What is asked: a request (scheduled work carries its own), or a
/// reaction whose request is resolved when it is decided (as the process
/// manager resolves it when it reacts).
enum Ask {
    Work(Box<dyn AnyRequest>),
    Reaction(Box<dyn PendingReaction>),
}

/// One request owed from `due_at` on.
struct Due {
    due_at: DateTime<Utc>,
    /// When the event that asked for it was recorded: work scheduled
    /// already overdue (a commission accrued late, payable at once) is
    /// counted from then.
    asked_at: DateTime<Utc>,
    key: IdempotencyKey,
    ask: Ask,
    /// What it is, for the finding (`work hold:…:expiry`).
    what: String,
    /// The event that asked for it (and the line of the file it was read
    /// from).
    tenant_seq: i64,
    line: Option<u64>,
    aggregate_type: String,
    aggregate_id: String,
}

impl Due {
    /// `ask`, under `key`, of `event` (read from `line`), due at `due_at`.
    fn new(
        (event, line): (&AuditEvent, Option<u64>),
        due_at: DateTime<Utc>,
        (key, ask): (IdempotencyKey, Ask),
        what: String,
    ) -> Self {
        Self {
            due_at,
            asked_at: event.recorded_at,
            key,
            ask,
            what,
            tenant_seq: event.tenant_seq,
            line,
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
        }
    }
}

impl Owed {
    /// Reads what `event` schedules or settles. An event its domain's
    /// reader cannot read schedules nothing (its decision is a finding of
    /// its own).
    pub fn schedule(&mut self, event: &AuditEvent, line: Option<u64>) {
        let Some(reader) = registry().schedule(&event.aggregate_type) else {
            return;
        };
        if !reader.reads(&event.event_type) {
            return;
        }
        let Some(changes) = event
            .to_stored()
            .and_then(|stored| reader.changes(&stored).ok())
        else {
            return;
        };
        for (n, change) in changes.into_iter().enumerate() {
            match change {
                ScheduleChange::Due {
                    work,
                    due_at,
                    kind,
                    request,
                } => {
                    // What was scheduled under the name before is replaced,
                    // whether or not this reads.
                    self.settle(&work);
                    let key = reaction_key(SCHEDULER, event.event_id, n);
                    let decoded = registry()
                        .request(kind)
                        .and_then(|kind| kind.decode(&request).ok());
                    let (Some(request), Ok(parsed)) = (decoded, IdempotencyKey::parse(&key)) else {
                        continue;
                    };
                    let what = format!("work {work}");
                    let due = Due::new((event, line), due_at, (parsed, Ask::Work(request)), what);
                    self.keys.insert(key, work.clone());
                    self.work.insert(work, due);
                }
                ScheduleChange::Settled { work } => self.settle(&work),
            }
        }
    }

    /// Work `work` is done or moot.
    fn settle(&mut self, work: &str) {
        if let Some(settled) = self.work.remove(work) {
            self.keys.remove(settled.key.as_str());
        }
    }

    /// Reads what process managers ask of `event`, from `fold` with its
    /// request folded.
    pub fn react(&mut self, fold: &TenantFold, event: &AuditEvent, line: Option<u64>) {
        let readers = registry().reactions(&event.aggregate_type);
        let reading: Vec<_> = readers
            .iter()
            .filter(|reader| reader.reads(&event.event_type))
            .collect();
        if reading.is_empty() {
            return;
        }
        let Some(stored) = event.to_stored() else {
            return;
        };
        for reader in reading {
            if let Some(pending) = (reader.read)(fold, &stored) {
                let what = format!("the {} process manager's reaction", reader.name);
                let key = pending.key().clone();
                let ask = (key, Ask::Reaction(pending));
                let due = Due::new((event, line), event.recorded_at, ask, what);
                self.reactions.insert(due.key.as_str().to_string(), due);
            }
        }
    }

    /// A request was recorded under `key` (its kind and rules, when it
    /// reads back; `fold` the tenant before it): the work or reaction that
    /// key makes is done (and not decided again at the end; were it, the
    /// domain would refuse it as done: its work settled, its line taken),
    /// when the request is of the kind it asks for. A request of another
    /// kind under the key (a forger's relabelling) does not do it.
    pub fn done(&mut self, key: &str, recorded: Option<(&str, Rules)>, fold: &TenantFold) {
        let asks = |due: &Due| match (recorded, &due.ask) {
            (None, _) => true,
            (Some((kind, _)), Ask::Work(request)) => request.kind() == kind,
            (Some((kind, rules)), Ask::Reaction(pending)) => pending
                .request(fold, rules)
                .is_none_or(|request| request.kind() == kind),
        };
        if let Some(work) = self.keys.get(key).cloned() {
            if self.work.get(&work).is_some_and(asks) {
                self.keys.remove(key);
                self.work.remove(&work);
            }
        }
        if self.reactions.get(key).is_some_and(asks) {
            self.reactions.remove(key);
        }
    }

    /// What is due (and was asked for) more than [`OWED_AFTER`] before
    /// `now` and that `fold` (the tenant's state at `now`) would take under
    /// `rules`, in the order it was asked for.
    pub fn owed(
        &self,
        fold: &mut TenantFold,
        now: DateTime<Utc>,
        rules: Rules,
    ) -> Vec<LocatedFinding> {
        let mut due: Vec<&Due> = self
            .work
            .values()
            .chain(self.reactions.values())
            .filter(|due| now.signed_duration_since(due.due_at.max(due.asked_at)) >= OWED_AFTER)
            .collect();
        due.sort_by(|a, b| (a.tenant_seq, &a.what).cmp(&(b.tenant_seq, &b.what)));
        due.into_iter()
            .filter_map(|due| Some((due, taken(fold, due, now, rules)?)))
            .map(|(due, kind)| {
                let finding = ReplayFinding {
                    tenant_seq: due.tenant_seq,
                    aggregate_type: due.aggregate_type.clone(),
                    aggregate_id: due.aggregate_id.clone(),
                    message: format!(
                        "{} fell due at {} and is owed: its {} request (key {}) is not \
                         recorded, and the domain takes it at {}",
                        due.what,
                        time(due.due_at),
                        kind,
                        due.key.as_str(),
                        time(now)
                    ),
                };
                (finding, due.line)
            })
            .collect()
    }
}

fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The kind of `due`'s request when the domain takes it against `fold` at
/// `now` and it moves something (gives events; the decision is not
/// folded).
fn taken(
    fold: &mut TenantFold,
    due: &Due,
    now: DateTime<Utc>,
    rules: Rules,
) -> Option<&'static str> {
    let resolved;
    let request: &dyn AnyRequest = match &due.ask {
        Ask::Work(request) => request.as_ref(),
        Ask::Reaction(pending) => {
            resolved = pending.request(fold, rules)?;
            resolved.as_ref()
        }
    };
    let body = request.body().ok()?;
    let redecision = fold.decide((request, &body), &due.key, now, rules);
    (redecision.decision.is_ok() && redecision.events().next().is_some()).then(|| request.kind())
}
