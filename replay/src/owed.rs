//! Work a tenant's history owes itself: what its events scheduled (a hold's
//! expiry, a renewal, a held line becoming payable), read through each
//! domain's schedule reader as the `scheduled_work` projection reads it.
//!
//! The ticker submits each piece of work once it is due, under the key
//! derived from the event that scheduled it, and a refusal is final. So at
//! the end of a tenant's history, work that is still open (neither settled
//! by a later event nor done under its key), due more than [`OWED_AFTER`]
//! before the history's last event, and that the domain would take now, is
//! owed: the scheduler skipped it (its run closed by hand, a refusal taken
//! as final by a defect), and the ledger's balances still hold what it
//! would have moved. Each such piece is a finding at the seq of the event
//! that scheduled it. Work the domain refuses now is not: a refusal is the
//! scheduler's final answer too.

use crate::source::AuditEvent;
use crate::state::{registry, LocatedFinding, ReplayFinding};
use aggregates::rules::Rules;
use chrono::{DateTime, Duration, Utc};
use commands::pipeline::fold::TenantFold;
use eventstore::{IdempotencyKey, JsonText, StoredEvent};
use projections::reactor::reaction_key;
use projections::scheduled::{ScheduleChange, SCHEDULER};
use serde_json::Value;
use std::collections::HashMap;

/// How long before a history's last event work must have fallen due to be
/// owed: the ticker runs every second and leases for 30 s, so this leaves
/// an outage of most of an hour to catch up from.
pub const OWED_AFTER: Duration = Duration::hours(1);

/// The open work of one tenant, by its name.
#[derive(Default)]
pub struct Schedule {
    open: HashMap<String, Due>,
    /// The work each open key submits.
    keys: HashMap<String, String>,
}

/// One piece of open work.
struct Due {
    due_at: DateTime<Utc>,
    key: String,
    kind: &'static str,
    request: Value,
    /// The event that scheduled it (and the line of the file it was read
    /// from).
    tenant_seq: i64,
    line: Option<u64>,
    aggregate_type: String,
    aggregate_id: String,
}

impl Schedule {
    /// Reads what `event` schedules or settles. An event its domain's
    /// reader cannot read schedules nothing (its decision is a finding of
    /// its own).
    pub fn read(&mut self, event: &AuditEvent, line: Option<u64>) {
        let Some(reader) = registry().schedule(&event.aggregate_type) else {
            return;
        };
        if !reader.events.contains(&event.event_type.as_str()) {
            return;
        }
        let Some(stored) = stored(event) else {
            return;
        };
        let Ok(changes) = reader.changes(&stored) else {
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
                    let key = reaction_key(SCHEDULER, event.event_id, n);
                    self.keys.insert(key.clone(), work.clone());
                    let due = Due {
                        due_at,
                        key,
                        kind,
                        request,
                        tenant_seq: event.tenant_seq,
                        line,
                        aggregate_type: event.aggregate_type.clone(),
                        aggregate_id: event.aggregate_id.clone(),
                    };
                    if let Some(replaced) = self.open.insert(work, due) {
                        self.keys.remove(&replaced.key);
                    }
                }
                ScheduleChange::Settled { work } => {
                    if let Some(settled) = self.open.remove(&work) {
                        self.keys.remove(&settled.key);
                    }
                }
            }
        }
    }

    /// A request was recorded under `key`: the work it submits is done.
    pub fn done(&mut self, key: &str) {
        if let Some(work) = self.keys.remove(key) {
            self.open.remove(&work);
        }
    }

    /// The open work due more than [`OWED_AFTER`] before `now` that `fold`
    /// (the tenant's state at `now`) would take under `rules`, in the order
    /// it was scheduled.
    pub fn owed(
        &self,
        fold: &mut TenantFold,
        now: DateTime<Utc>,
        rules: Rules,
    ) -> Vec<LocatedFinding> {
        let mut due: Vec<(&String, &Due)> = self
            .open
            .iter()
            .filter(|(_, due)| due.due_at + OWED_AFTER <= now)
            .collect();
        due.sort_by_key(|(work, due)| (due.tenant_seq, *work));
        due.into_iter()
            .filter(|(_, due)| taken(fold, due, now, rules))
            .map(|(work, due)| {
                let finding = ReplayFinding {
                    tenant_seq: due.tenant_seq,
                    aggregate_type: due.aggregate_type.clone(),
                    aggregate_id: due.aggregate_id.clone(),
                    message: format!(
                        "work {work} fell due at {} and is owed: its {} request (key {}) is \
                         not recorded, and the domain takes it at {}",
                        time(due.due_at),
                        due.kind,
                        due.key,
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

/// Whether the domain takes `due`'s request against `fold` at `now` and
/// it moves something (gives events; the decision is not folded).
fn taken(fold: &mut TenantFold, due: &Due, now: DateTime<Utc>, rules: Rules) -> bool {
    let (Some(kind), Ok(key), Ok(body)) = (
        registry().request(due.kind),
        IdempotencyKey::parse(&due.key),
        JsonText::from_value(&due.request),
    ) else {
        return false;
    };
    let Ok(request) = kind.decode(&due.request) else {
        return false;
    };
    let redecision = fold.decide((request.as_ref(), &body), &key, now, rules);
    redecision.decision.is_ok() && redecision.events().next().is_some()
}

/// `event` as the store reads it, for a schedule reader.
fn stored(event: &AuditEvent) -> Option<StoredEvent> {
    Some(StoredEvent {
        tenant_id: event.tenant_id,
        tenant_seq: event.tenant_seq,
        global_position: 0,
        transaction_id: 0,
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id.clone(),
        aggregate_seq: event.aggregate_seq,
        event_id: event.event_id,
        event_type: event.event_type.clone(),
        event_version: event.event_version.clone(),
        payload: serde_json::from_str(&event.payload).ok()?,
        metadata: JsonText::from_value(&Value::Null).ok()?,
        idempotency_key: event.idempotency_key.clone(),
        recorded_at: event.recorded_at,
        prev_hash: event.prev_hash,
        hash: event.hash,
        decoded: Default::default(),
    })
}
