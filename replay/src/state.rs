//! A tenant's state folded from its events, each event checked against the
//! domain's own decision.
//!
//! For every event of an aggregate the domain models (the subscription, the
//! quotas), the command the event records is rebuilt from the event and its
//! recorded time (the time the pipeline decided it at), and the aggregate's
//! own pure [`Decide::decide`] says, from the state before the command, what
//! that command gives. The events must be exactly that: a consumption's
//! allocations are the burn-down (SPEC 4.4 order) of the grants usable at
//! that time, its amount their sum, its journal entry their postings; a
//! closing's breakage is the unused balance; an issue's entry credits its
//! terms' amount; a seat grant that closes with seats allocated first moves
//! them (`SeatsMoved`) to the open grants with room, the rest unbacked; a
//! seat grant issued while seats are unbacked takes them; a subscription
//! event follows the subscription's rules (no second active subscription,
//! plan changes and renewals of an active one, periods of the plan's
//! length). Every way an event differs, an event the domain decides and the
//! history lacks, an event it does not decide, or the aggregate refusing the
//! command, is a [`ReplayFinding`] at the event's tenant_seq; folding then
//! goes on from what the domain decided, so that one altered event is one
//! finding.
//!
//! One request may decide several events of a quota (expiries due first, a
//! seat move before a grant closes, the unbacked seats a new grant takes),
//! and where a closing grant's seats go depends on the whole command (the
//! grants it closes take none). So a quota's events are checked a request
//! at a time: the events one request appended for one quota (consecutive,
//! with the same idempotency key and time) form a group, settled when the
//! next event is not of it. In a group, the event naming the command (the
//! issue, consumption, allocation, release or revocation; the first closing
//! of a subscription grant; for expiries alone, the expiry of what is due)
//! says what was decided, and the command's decided events are lined up
//! with the stored ones. A replay as of a seq inside a group reads the rest
//! of the group to decide, and folds only up to that seq.
//!
//! Journal entries are posted with account flags enforced. Memory grows with
//! a tenant's aggregates, open grants and accounts (and one group, at most
//! [`GROUP_EVENTS_MAX`] events), never with its events. A quota keeps the
//! grants decisions can still touch (open ones, and closed seat grants that
//! still hold seats) and, of every other grant, an index entry (id and
//! status, to refuse an id issued twice or a grant closed twice). A replay
//! for a report ([`Retention::Report`]) keeps closed grants too, since the
//! report lists them.

use crate::source::AuditEvent;
use aggregates::journal::{Balances, JournalEntry};
use aggregates::quota::{
    holder_name, parse_quota_aggregate_id, Available, Ending, Grant, GrantSource, GrantStatus,
    Quota, QuotaAccount, QuotaCommand, QuotaError, QuotaEvent, QuotaType, OPEN_GRANTS_MAX,
    QUOTA_AGGREGATE,
};
use aggregates::subscription::{
    CancelAt, Subscription, SubscriptionCommand, SubscriptionEvent, SUBSCRIPTION_AGGREGATE,
};
use aggregates::{Amount, Decide, GrantId, Rejection};
use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::{Aggregate, DomainEvent};
use eventstore::ChainHash;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};

/// Most events one group holds. One request decides at most two events per
/// open grant of a quota (a seat move and the closing), plus an issue and
/// its move; a longer run of events under one key is checked in parts.
pub const GROUP_EVENTS_MAX: usize = 4 * OPEN_GRANTS_MAX;

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

/// What a fold keeps of grants no decision can touch any more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Retention {
    /// Only an index entry (verification).
    #[default]
    Decisions,
    /// The whole grant, for the report (replay).
    Report,
}

/// What folding a tenant's events has built so far.
#[derive(Debug, Default)]
pub struct TenantState {
    retention: Retention,
    subscription: Subscription,
    quotas: BTreeMap<String, QuotaBook>,
    balances: Balances,
    /// Last aggregate_seq of every aggregate.
    versions: HashMap<(String, String), i64>,
    last_seq: i64,
    last_hash: Option<ChainHash>,
    last_recorded_at: Option<DateTime<Utc>>,
    /// The quota events of the request read last, not yet settled.
    group: Option<Group>,
}

/// The events one request appended for one quota.
#[derive(Debug)]
struct Group {
    aggregate_id: String,
    quota_type: QuotaType,
    holder: Option<QuotaAccount>,
    idempotency_key: String,
    recorded_at: DateTime<Utc>,
    members: Vec<Member>,
    /// An event past a replay's point did not belong to the group: no later
    /// one does either.
    sealed: bool,
}

#[derive(Debug)]
struct Member {
    tenant_seq: i64,
    line: Option<u64>,
    /// `None` when it does not decode (its problems say why).
    event: Option<QuotaEvent>,
    /// What is wrong with it so far.
    problems: Vec<String>,
    /// Past the point a replay was asked for: read to decide the command,
    /// never folded nor reported.
    beyond: bool,
}

/// One quota aggregate as the fold keeps it.
#[derive(Debug, Default)]
struct QuotaBook {
    /// The aggregate's state, holding the grants decisions can still touch.
    quota: Quota,
    /// Every grant ever issued, by id.
    grants: HashMap<GrantId, IssuedGrant>,
    /// Grants dropped from `quota`, with their issue order
    /// ([`Retention::Report`] only).
    retired: Vec<(u64, Grant)>,
    /// Grants issued so far.
    issued: u64,
}

#[derive(Debug, Clone, Copy)]
struct IssuedGrant {
    /// 1 for the quota's first grant, 2 for its second...
    order: u64,
    status: GrantStatus,
}

/// What a group's next command is, as its stored events say.
enum Identified {
    /// The command, and the position (among the events still to settle) of
    /// the event that names it.
    Command(QuotaCommand, usize),
    /// The event at this position names a command the quota refuses, or
    /// none at all.
    Refused(usize, String),
}

/// What an event is about, to line stored events up with decided ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Subject {
    Issue(GrantId),
    Close(GrantId),
    Move(Option<GrantId>),
    /// A consumption, allocation or release: the command's own event.
    Movement,
}

fn subject(event: &QuotaEvent) -> Subject {
    match event {
        QuotaEvent::GrantIssued { terms, .. } => Subject::Issue(terms.grant_id),
        QuotaEvent::GrantRevoked { grant_id, .. } | QuotaEvent::GrantExpired { grant_id, .. } => {
            Subject::Close(*grant_id)
        }
        QuotaEvent::SeatsMoved { from, .. } => Subject::Move(*from),
        QuotaEvent::QuotaConsumed { .. }
        | QuotaEvent::SeatsAllocated { .. }
        | QuotaEvent::SeatsReleased { .. } => Subject::Movement,
    }
}

impl TenantState {
    /// A state that keeps only what decisions need (for verification).
    pub fn for_verification() -> Self {
        Self::default()
    }

    /// A state that keeps what the report shows (for replay).
    pub fn for_report() -> Self {
        Self {
            retention: Retention::Report,
            ..Self::default()
        }
    }

    /// Folds the next event (read from `line` of a file, if any), checking
    /// it against the domain's decision. Returns the findings of what was
    /// settled: this event's, or those of the quota group it ends (the
    /// event itself then waits in a group of its own). The fold goes on from
    /// the domain's decision.
    pub fn apply(&mut self, event: &AuditEvent, line: Option<u64>) -> Vec<LocatedFinding> {
        let mut findings = self.settle_before(event);
        self.last_seq = event.tenant_seq;
        self.last_hash = Some(event.hash);
        self.last_recorded_at = Some(event.recorded_at);
        let version = self
            .versions
            .entry((event.aggregate_type.clone(), event.aggregate_id.clone()))
            .or_insert(0);
        // A sequence out of step is a finding; the event is still checked
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
        match event.aggregate_type.as_str() {
            SUBSCRIPTION_AGGREGATE => problems.extend(self.apply_subscription(event).err()),
            QUOTA_AGGREGATE => match self.join_group(event, line, problems, false) {
                // Its findings come when the group is settled.
                Ok(()) => return findings,
                Err(refused) => problems = refused,
            },
            // Other aggregates have no domain model here; their chain and
            // sequences are still checked.
            _ => {}
        }
        if !problems.is_empty() {
            findings.push((finding(event, problems.join("; ")), line));
        }
        findings
    }

    /// Settles the quota group not yet settled unless `event` continues it:
    /// the findings of what comes before `event`, so that they can be
    /// reported before anything about `event` itself.
    pub fn settle_before(&mut self, event: &AuditEvent) -> Vec<LocatedFinding> {
        if self.continues_group(event) {
            Vec::new()
        } else {
            self.settle()
        }
    }

    /// Whether `event` belongs to the quota group not yet settled: same
    /// quota, idempotency key and time, with nothing in between.
    pub fn continues_group(&self, event: &AuditEvent) -> bool {
        self.group.as_ref().is_some_and(|group| {
            !group.sealed
                && group.members.len() < GROUP_EVENTS_MAX
                && event.aggregate_type == QUOTA_AGGREGATE
                && event.aggregate_id == group.aggregate_id
                && event.idempotency_key == group.idempotency_key
                && event.recorded_at == group.recorded_at
        })
    }

    /// Reads an event past the point a replay was asked for: when it belongs
    /// to the group not yet settled, the group's command is decided with it
    /// (the event is neither folded nor reported). Returns whether it did;
    /// once one did not, none after it does.
    pub fn look_ahead(&mut self, event: &AuditEvent, line: Option<u64>) -> bool {
        if self.continues_group(event) {
            return self.join_group(event, line, Vec::new(), true).is_ok();
        }
        if let Some(group) = &mut self.group {
            group.sealed = true;
        }
        false
    }

    /// Settles the quota group not yet settled: re-decides its commands,
    /// folds what the domain decided, and returns the findings.
    pub fn settle(&mut self) -> Vec<LocatedFinding> {
        let Some(group) = self.group.take() else {
            return Vec::new();
        };
        let book = self.quotas.entry(group.aggregate_id.clone()).or_default();
        let problems = book.settle(&group, self.retention, &mut self.balances);
        group
            .members
            .iter()
            .zip(problems)
            .filter(|(member, problems)| !member.beyond && !problems.is_empty())
            .map(|(member, problems)| {
                let finding = ReplayFinding {
                    tenant_seq: member.tenant_seq,
                    aggregate_type: QUOTA_AGGREGATE.to_string(),
                    aggregate_id: group.aggregate_id.clone(),
                    message: problems.join("; "),
                };
                (finding, member.line)
            })
            .collect()
    }

    /// Adds a quota event to the group (opening one when it does not
    /// continue it), or says why it cannot be checked at all.
    fn join_group(
        &mut self,
        event: &AuditEvent,
        line: Option<u64>,
        mut problems: Vec<String>,
        beyond: bool,
    ) -> Result<(), Vec<String>> {
        let Some((quota_type, holder)) = parse_quota_aggregate_id(&event.aggregate_id) else {
            problems.push(format!(
                "{:?} is not a quota aggregate id (a quota type, then optionally @ and an account)",
                event.aggregate_id
            ));
            return Err(problems);
        };
        let decoded = match decode::<Quota>(event) {
            Ok(decoded) => {
                problems.extend(allocations_problem(&decoded));
                Some(decoded)
            }
            Err(problem) => {
                problems.push(problem);
                None
            }
        };
        if !self.continues_group(event) {
            debug_assert!(
                self.group.is_none(),
                "a group is settled before another opens"
            );
            self.group = Some(Group {
                aggregate_id: event.aggregate_id.clone(),
                quota_type,
                holder,
                idempotency_key: event.idempotency_key.clone(),
                recorded_at: event.recorded_at,
                members: Vec::new(),
                sealed: false,
            });
        }
        if let Some(group) = &mut self.group {
            group.members.push(Member {
                tenant_seq: event.tenant_seq,
                line,
                event: decoded,
                problems,
                beyond,
            });
        }
        Ok(())
    }

    fn apply_subscription(&mut self, event: &AuditEvent) -> Result<(), String> {
        let stored = decode::<Subscription>(event)?;
        let decided = redecide_subscription(&self.subscription, &stored, event.recorded_at)?;
        if decided == stored {
            self.subscription.apply(stored);
            return Ok(());
        }
        let message = describe_difference("subscription", &stored, &decided);
        self.subscription.apply(decided);
        Err(message)
    }

    /// seq of the last event folded.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// The state as an auditor reads it, with quotas' availability as of `at`
    /// (the last event's time when `None`). Lists closed grants only when
    /// built [`TenantState::for_report`]. Call [`TenantState::settle`] first.
    pub fn report(&self, tenant_id: aggregates::TenantId, at: Option<DateTime<Utc>>) -> Value {
        debug_assert!(self.group.is_none(), "a report of a state not settled");
        let at = at.or(self.last_recorded_at);
        let subscription = self.subscription.active.as_ref().map(|active| {
            json!({
                "status": "active",
                "plan": active.plan.id,
                "limits": {"seats": active.plan.seats, "runs": active.plan.runs, "credits": active.plan.credits},
                "trial_ends_at": active.trial_ends_at,
                "period_start": active.period_start,
                "period_end": active.period_end,
                "cancel_at_period_end": active.cancel_at_period_end,
            })
        });
        let subscription = subscription.or_else(|| {
            self.subscription
                .cancelled_at
                .map(|cancelled_at| json!({"status": "cancelled", "cancelled_at": cancelled_at}))
        });
        let quotas: Vec<Value> = self
            .quotas
            .iter()
            .map(|(aggregate_id, book)| book.report(aggregate_id, at))
            .collect();
        let (accounts, trial_balance) = balances_report(&self.balances);
        json!({
            "tenant_id": tenant_id,
            "as_of_seq": self.last_seq,
            "as_of": at,
            "hash": self.last_hash,
            "subscription": subscription,
            "quotas": quotas,
            "accounts": accounts,
            "trial_balance": trial_balance,
        })
    }
}

fn finding(event: &AuditEvent, message: String) -> ReplayFinding {
    ReplayFinding {
        tenant_seq: event.tenant_seq,
        aggregate_type: event.aggregate_type.clone(),
        aggregate_id: event.aggregate_id.clone(),
        message,
    }
}

fn refused(error: QuotaError) -> String {
    format!("the quota refuses it: {error}")
}

impl QuotaBook {
    /// Re-decides a group's commands one after the other, lines each
    /// command's decided events up with the stored ones, and folds what the
    /// domain decided (up to the first member beyond a replay's point).
    /// Returns every member's problems, in member order.
    fn settle(
        &mut self,
        group: &Group,
        retention: Retention,
        balances: &mut Balances,
    ) -> Vec<Vec<String>> {
        let at = group.recorded_at;
        let mut problems: Vec<Vec<String>> = group
            .members
            .iter()
            .map(|member| member.problems.clone())
            .collect();
        // Members still to account for (those that decode), in order.
        let mut open: Vec<usize> = (0..group.members.len())
            .filter(|index| group.members[*index].event.is_some())
            .collect();
        // Each pass accounts for at least one member.
        while !open.is_empty() {
            let stored: Vec<(usize, &QuotaEvent)> = open
                .iter()
                .filter_map(|index| {
                    group.members[*index]
                        .event
                        .as_ref()
                        .map(|event| (*index, event))
                })
                .collect();
            let (command, named) =
                match self.identify(group.quota_type, group.holder.as_ref(), &stored, at) {
                    Identified::Command(command, named) => (command, named),
                    Identified::Refused(position, problem) => {
                        problems[stored[position].0].push(problem);
                        open.remove(position);
                        continue;
                    }
                };
            let decided = match self.quota.decide(command) {
                Ok(decided) => decided,
                Err(error) => {
                    problems[stored[named].0].push(refused(error));
                    open.remove(named);
                    continue;
                }
            };
            let (steps, matched) = line_up(decided, &stored, named, &mut problems);
            if matched == 0 {
                problems[stored[0].0].push(undecided(stored[0].1, at));
                open.remove(0);
            } else {
                open.drain(..matched);
            }
            for (event, anchor) in steps {
                if group.members[anchor].beyond {
                    return problems;
                }
                if let Some(entry) = event.entry() {
                    if let Err(error) = balances.post(entry) {
                        problems[anchor].push(format!("journal entry refused: {error}"));
                    }
                }
                self.fold(event, retention);
            }
        }
        problems
    }

    /// The command the first of `stored` that names one records, from the
    /// state before the group's next command. Expiries of grants due at
    /// `at`, and seat moves, are decided by whatever command comes first;
    /// with nothing else, the command is the expiry of what is due.
    fn identify(
        &self,
        quota_type: QuotaType,
        holder: Option<&QuotaAccount>,
        stored: &[(usize, &QuotaEvent)],
        at: DateTime<Utc>,
    ) -> Identified {
        for (position, (_, event)) in stored.iter().enumerate() {
            let command = match event {
                QuotaEvent::GrantIssued {
                    quota,
                    account,
                    terms,
                    ..
                } => {
                    let refusal = if *quota != quota_type {
                        Some(QuotaError::WrongQuota {
                            expected: quota_type,
                            requested: *quota,
                        })
                    } else if account.as_ref() != holder {
                        Some(QuotaError::WrongHolder {
                            expected: holder_name(holder),
                            requested: holder_name(account.as_ref()),
                        })
                    } else if self.grants.contains_key(&terms.grant_id) {
                        // The fold keeps no closed grant in `quota`: ask the
                        // index.
                        Some(QuotaError::GrantExists(terms.grant_id))
                    } else {
                        None
                    };
                    if let Some(error) = refusal {
                        return Identified::Refused(position, refused(error));
                    }
                    QuotaCommand::IssueGrant {
                        quota: *quota,
                        account: account.clone(),
                        terms: terms.clone(),
                        at,
                    }
                }
                QuotaEvent::QuotaConsumed {
                    amount, reference, ..
                } => QuotaCommand::Consume {
                    quota: quota_type,
                    amount: *amount,
                    reference: reference.clone(),
                    at,
                },
                QuotaEvent::SeatsAllocated { amount, .. } => QuotaCommand::AllocateSeats {
                    amount: *amount,
                    at,
                },
                QuotaEvent::SeatsReleased { amount, .. } => QuotaCommand::ReleaseSeats {
                    amount: *amount,
                    at,
                },
                QuotaEvent::GrantRevoked { grant_id, .. }
                | QuotaEvent::GrantExpired { grant_id, .. } => {
                    let grant = match self.open_grant(*grant_id) {
                        Ok(grant) => grant,
                        Err(error) => return Identified::Refused(position, refused(error)),
                    };
                    let revoked = matches!(event, QuotaEvent::GrantRevoked { .. });
                    let subscription = grant.terms.source == GrantSource::Subscription;
                    let due = grant.terms.expires_at.is_some_and(|expires| expires <= at);
                    // Subscription grants end with their plan; others are
                    // revoked one by one, or expire when due.
                    match (revoked, subscription) {
                        (false, _) if due => continue,
                        (true, false) => QuotaCommand::RevokeGrant {
                            grant_id: *grant_id,
                            at,
                        },
                        (true, true) => QuotaCommand::EndSubscriptionGrants {
                            quota: quota_type,
                            ending: Ending::Revoked,
                            at,
                        },
                        (false, true) => QuotaCommand::EndSubscriptionGrants {
                            quota: quota_type,
                            ending: Ending::Expired,
                            at,
                        },
                        (false, false) => {
                            let expires = grant.terms.expires_at.map_or("never".to_string(), time);
                            return Identified::Refused(
                                position,
                                format!(
                                    "the quota does not end grant {grant_id} at {}: it is open and expires {expires}",
                                    time(at)
                                ),
                            );
                        }
                    }
                }
                QuotaEvent::SeatsMoved { .. } => continue,
            };
            return Identified::Command(command, position);
        }
        Identified::Command(
            QuotaCommand::ExpireGrants {
                quota: quota_type,
                at,
            },
            stored.len().saturating_sub(1),
        )
    }

    /// The open grant `grant_id`, or why a command naming it is refused.
    fn open_grant(&self, grant_id: GrantId) -> Result<&Grant, QuotaError> {
        match self.grants.get(&grant_id) {
            None => Err(QuotaError::UnknownGrant(grant_id)),
            Some(issued) if issued.status != GrantStatus::Active => Err(QuotaError::GrantClosed {
                grant_id,
                status: issued.status.as_str(),
            }),
            // Open grants are always kept in `quota`.
            Some(_) => self
                .quota
                .grant(grant_id)
                .ok_or(QuotaError::UnknownGrant(grant_id)),
        }
    }

    /// Folds an event the domain decided, then drops the grants it closed
    /// (or moved or released seats off) that no decision can touch any more.
    fn fold(&mut self, event: QuotaEvent, retention: Retention) {
        let mut touched: Vec<GrantId> = Vec::new();
        match &event {
            QuotaEvent::GrantIssued { terms, .. } => {
                self.issued = self.issued.saturating_add(1);
                self.grants.insert(
                    terms.grant_id,
                    IssuedGrant {
                        order: self.issued,
                        status: GrantStatus::Active,
                    },
                );
            }
            QuotaEvent::GrantRevoked { grant_id, .. }
            | QuotaEvent::GrantExpired { grant_id, .. } => {
                let status = if matches!(event, QuotaEvent::GrantRevoked { .. }) {
                    GrantStatus::Revoked
                } else {
                    GrantStatus::Expired
                };
                if let Some(issued) = self.grants.get_mut(grant_id) {
                    issued.status = status;
                }
                touched.push(*grant_id);
            }
            QuotaEvent::SeatsReleased { allocations, .. } => {
                touched.extend(allocations.iter().map(|allocation| allocation.grant_id));
            }
            QuotaEvent::SeatsMoved { from, .. } => touched.extend(*from),
            QuotaEvent::QuotaConsumed { .. } | QuotaEvent::SeatsAllocated { .. } => {}
        }
        self.quota.apply(event);
        for grant_id in touched {
            self.retire(grant_id, retention);
        }
    }

    /// Drops `grant_id` from the decision state once it is closed and holds
    /// no seat (seats on a grant are allocated until moved or released).
    fn retire(&mut self, grant_id: GrantId, retention: Retention) {
        let consumable = self.quota.quota.is_some_and(QuotaType::is_consumable);
        let Some(position) = self
            .quota
            .grants
            .iter()
            .position(|grant| grant.terms.grant_id == grant_id)
        else {
            return;
        };
        let grant = &self.quota.grants[position];
        let holds_seats = !consumable && !grant.used.is_zero();
        if grant.status == GrantStatus::Active || holds_seats {
            return;
        }
        let grant = self.quota.grants.remove(position);
        if retention == Retention::Report {
            let order = self.grants.get(&grant_id).map_or(0, |issued| issued.order);
            self.retired.push((order, grant));
        }
    }

    fn report(&self, aggregate_id: &str, at: Option<DateTime<Utc>>) -> Value {
        let (quota_type, account) = parse_quota_aggregate_id(aggregate_id).unzip();
        let available = at.and_then(|at| self.quota.available(at).ok());
        let order = |grant: &Grant| {
            self.grants
                .get(&grant.terms.grant_id)
                .map_or(0, |issued| issued.order)
        };
        let mut grants: Vec<(u64, &Grant)> = self
            .quota
            .grants
            .iter()
            .map(|grant| (order(grant), grant))
            .chain(self.retired.iter().map(|(order, grant)| (*order, grant)))
            .collect();
        grants.sort_by_key(|(order, _)| *order);
        let consumable = quota_type.is_some_and(QuotaType::is_consumable);
        // Consumed: over every grant, open or closed (i128: a sum of i64
        // values that cannot overflow short of 2^64 grants). Allocated: the
        // seats on open grants, and the unbacked ones.
        let (consumed, allocated, unbacked) = if consumable {
            let consumed: i128 = grants
                .iter()
                .map(|(_, grant)| i128::from(grant.used.value()))
                .sum();
            (consumed, 0, Amount::ZERO)
        } else {
            let allocated = self
                .quota
                .allocated()
                .map_or(0, |allocated| i128::from(allocated.value()));
            (0, allocated, self.quota.unbacked)
        };
        let grants: Vec<Value> = grants
            .into_iter()
            .map(|(_, grant)| {
                json!({
                    "grant_id": grant.terms.grant_id,
                    "source": grant.terms.source,
                    "amount": grant.terms.amount,
                    "used": grant.used,
                    "balance": grant.remaining(),
                    "priority": grant.terms.priority,
                    "effective_at": grant.terms.effective_at,
                    "expires_at": grant.terms.expires_at,
                    "status": grant.status,
                })
            })
            .collect();
        json!({
            "quota": quota_type,
            "account": account.flatten(),
            "available": available.and_then(Available::units),
            "unlimited": available == Some(Available::Unlimited),
            "consumed": consumed.to_string(),
            "allocated": allocated.to_string(),
            "unbacked": unbacked.to_string(),
            "grants": grants,
        })
    }
}

/// Lines one command's decided events up with the stored events still to
/// settle (`named` is the position of the one that names the command), in
/// order, and records what differs in `problems`. A decided event is matched
/// with the stored event about the same thing (the same grant issued or
/// closed, seats moved off the same grant, the command's own movement); up
/// to the naming event, stored events the command does not decide are
/// skipped (and named); after it, only the next stored event is tried. A
/// decided event with no match pairs with the next stored event when that
/// one matches no decided event either (an altered event; past the naming
/// event, only one of the same type), else the history lacks it. Returns each decided event with the member it is folded at,
/// and how many stored events the command accounts for.
fn line_up(
    decided: Vec<QuotaEvent>,
    stored: &[(usize, &QuotaEvent)],
    named: usize,
    problems: &mut [Vec<String>],
) -> (Vec<(QuotaEvent, usize)>, usize) {
    let subjects: Vec<Subject> = decided.iter().map(subject).collect();
    let mut steps = Vec::with_capacity(decided.len());
    let mut next = 0;
    for (position, event) in decided.into_iter().enumerate() {
        let last = if next <= named { named } else { next };
        let found = (next..=last.min(stored.len().saturating_sub(1)))
            .find(|candidate| subject(stored[*candidate].1) == subjects[position]);
        // Past the naming event, the next stored event may be the next
        // command's: only one of the same type is taken as altered.
        let unclaimed = stored.get(next).is_some_and(|(_, candidate)| {
            !subjects[position..].contains(&subject(candidate))
                && (next <= named || candidate.event_type() == event.event_type())
        });
        match found {
            Some(found) => {
                for (skipped, _) in &stored[next..found] {
                    problems[*skipped].push(format!(
                        "the quota does not decide it: it decides {} next",
                        event.event_type()
                    ));
                }
                let (member, stored_event) = stored[found];
                if *stored_event != event {
                    problems[member].push(describe_difference("quota", stored_event, &event));
                }
                steps.push((event, member));
                next = found + 1;
            }
            None if unclaimed => {
                let (member, stored_event) = stored[next];
                problems[member].push(describe_difference("quota", stored_event, &event));
                steps.push((event, member));
                next += 1;
            }
            None => {
                let (member, place) = match stored.get(next) {
                    Some((member, _)) => (*member, "before it"),
                    // `next` > 0 here: an empty `stored` is never lined up.
                    None => (stored[next.saturating_sub(1)].0, "after it"),
                };
                problems[member].push(format!(
                    "the quota decides {} {} {place}, and the history lacks it",
                    event.event_type(),
                    render_fields(&fields(&event))
                ));
                steps.push((event, member));
            }
        }
    }
    (steps, next)
}

/// Why a stored event no command accounts for.
fn undecided(event: &QuotaEvent, at: DateTime<Utc>) -> String {
    match event {
        QuotaEvent::SeatsMoved {
            from: Some(grant_id),
            ..
        } => format!(
            "the quota moves seats off grant {grant_id} only as it closes it, and does not close it at {}",
            time(at)
        ),
        QuotaEvent::SeatsMoved { from: None, .. } => format!(
            "the quota moves unbacked seats only to a seat grant issued, or in effect for an allocation, and none is at {}",
            time(at)
        ),
        other => format!(
            "the quota decides no {} at {}",
            other.event_type(),
            time(at)
        ),
    }
}

/// A time as events and findings show it (RFC 3339, UTC, `Z`).
fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// A movement whose amount is not the sum of its allocations (a seat move's
/// amount is what went to grants and what became unbacked).
fn allocations_problem(event: &QuotaEvent) -> Option<String> {
    let (amount, allocations, unbacked) = match event {
        QuotaEvent::QuotaConsumed {
            amount,
            allocations,
            ..
        }
        | QuotaEvent::SeatsAllocated {
            amount,
            allocations,
            ..
        } => (amount, allocations, Amount::ZERO),
        QuotaEvent::SeatsReleased {
            amount,
            allocations,
            unbacked,
            ..
        }
        | QuotaEvent::SeatsMoved {
            amount,
            allocations,
            unbacked,
            ..
        } => (amount, allocations, *unbacked),
        _ => return None,
    };
    let sum = allocations.iter().try_fold(unbacked, |sum, allocation| {
        sum.checked_add(allocation.amount)
    });
    let parts = if unbacked.is_zero() {
        "its allocations"
    } else {
        "its allocations and unbacked seats"
    };
    match sum {
        Ok(sum) if sum == *amount => None,
        Ok(sum) => Some(format!("amount {amount} is not the sum of {parts} ({sum})")),
        Err(_) => Some(format!("{parts} overflow")),
    }
}

/// What the subscription decides, from `state`, for the command `stored`
/// records (decided at `at`), or why it refuses it.
fn redecide_subscription(
    state: &Subscription,
    stored: &SubscriptionEvent,
    at: DateTime<Utc>,
) -> Result<SubscriptionEvent, String> {
    let commands = match stored {
        SubscriptionEvent::Subscribed {
            plan,
            trial_ends_at,
            ..
        } => vec![SubscriptionCommand::Subscribe {
            plan: plan.clone(),
            trial_ends_at: *trial_ends_at,
            at,
        }],
        SubscriptionEvent::PlanChanged { plan, .. } => vec![SubscriptionCommand::ChangePlan {
            plan: plan.clone(),
            at,
        }],
        SubscriptionEvent::CancellationScheduled { .. } => vec![SubscriptionCommand::Cancel {
            when: CancelAt::PeriodEnd,
            at,
        }],
        // Cancelling now ends it at the command's time; a renewal with a
        // cancellation scheduled, at the period end.
        SubscriptionEvent::Cancelled { .. } => vec![
            SubscriptionCommand::Cancel {
                when: CancelAt::Now,
                at,
            },
            SubscriptionCommand::Renew { at },
        ],
        SubscriptionEvent::PeriodRenewed { .. } => vec![SubscriptionCommand::Renew { at }],
    };
    // The command whose decision is the stored event; else the first the
    // subscription accepts (the difference is the finding); else the first
    // refusal.
    let mut first: Option<Result<SubscriptionEvent, String>> = None;
    for command in commands {
        let decided = match state.decide(command) {
            Ok(mut events) if events.len() == 1 => Ok(events.remove(0)),
            Ok(events) => Err(format!(
                "the subscription decides {} events for it",
                events.len()
            )),
            Err(error) => Err(format!("the subscription refuses it: {error}")),
        };
        if decided.as_ref() == Ok(stored) {
            return decided;
        }
        first = match first {
            None => Some(decided),
            Some(Err(_)) if decided.is_ok() => Some(decided),
            kept => kept,
        };
    }
    first.unwrap_or_else(|| Err("the subscription decides nothing for it".to_string()))
}
/// Decodes an event of aggregate `A`, through `A`'s upcasters; refuses a
/// payload of another event type, or a version this binary neither writes
/// nor upcasts.
fn decode<A>(event: &AuditEvent) -> Result<A::Event, String>
where
    A: Decide,
    A::Error: Rejection,
{
    let failed =
        |error: serde_json::Error| format!("{} does not decode: {error}", event.event_type);
    let upcasters = A::upcasters();
    let upcastable = upcasters
        .iter()
        .any(|upcaster| upcaster.can_upcast(&event.event_type, &event.event_version));
    let decoded: A::Event = if upcastable {
        let serialized = SerializedEvent {
            aggregate_id: event.aggregate_id.clone(),
            sequence: usize::try_from(event.aggregate_seq).unwrap_or(usize::MAX),
            aggregate_type: event.aggregate_type.clone(),
            event_type: event.event_type.clone(),
            event_version: event.event_version.clone(),
            payload: serde_json::from_str(&event.payload).map_err(failed)?,
            metadata: serde_json::from_str(&event.metadata).map_err(failed)?,
        };
        let upcast = upcasters.iter().fold(serialized, |serialized, upcaster| {
            if upcaster.can_upcast(&serialized.event_type, &serialized.event_version) {
                upcaster.upcast(serialized)
            } else {
                serialized
            }
        });
        serde_json::from_value(upcast.payload).map_err(failed)?
    } else {
        serde_json::from_str(&event.payload).map_err(failed)?
    };
    if decoded.event_type() != event.event_type {
        return Err(format!(
            "event_type {} but the payload is a {}",
            event.event_type,
            decoded.event_type()
        ));
    }
    if !upcastable && decoded.event_version() != event.event_version {
        return Err(format!(
            "{} version {} is neither the version this binary writes ({}) nor one it upcasts",
            event.event_type,
            event.event_version,
            decoded.event_version()
        ));
    }
    Ok(decoded)
}

/// An event's fields by name (an event serializes as `{"Type": {fields}}`).
fn fields<E: Serialize>(event: &E) -> BTreeMap<String, Value> {
    match serde_json::to_value(event) {
        Ok(Value::Object(variant)) => variant
            .into_iter()
            .next()
            .and_then(|(_, fields)| match fields {
                Value::Object(fields) => Some(fields.into_iter().collect()),
                _ => None,
            })
            .unwrap_or_default(),
        _ => BTreeMap::new(),
    }
}

/// How a stored event differs from the one the domain decides: its type,
/// or each field that differs, stored value first.
fn describe_difference<E: Serialize + DomainEvent>(
    aggregate: &str,
    stored: &E,
    decided: &E,
) -> String {
    if stored.event_type() != decided.event_type() {
        return format!(
            "{} where the {aggregate} decides {} {}",
            stored.event_type(),
            decided.event_type(),
            render_fields(&fields(decided))
        );
    }
    let stored_fields = fields(stored);
    let differences: Vec<String> = fields(decided)
        .into_iter()
        .filter(|(name, value)| stored_fields.get(name) != Some(value))
        .map(|(name, value)| {
            let stored_value = stored_fields.get(&name).unwrap_or(&Value::Null);
            format!(
                "{name} {} where the {aggregate} decides {}",
                render_field(&name, stored_value),
                render_field(&name, &value)
            )
        })
        .collect();
    if differences.is_empty() {
        format!(
            "{} differs from what the {aggregate} decides",
            stored.event_type()
        )
    } else {
        differences.join("; ")
    }
}

fn render_fields(fields: &BTreeMap<String, Value>) -> String {
    let parts: Vec<String> = fields
        .iter()
        .map(|(name, value)| format!("{name} {}", render_field(name, value)))
        .collect();
    format!("({})", parts.join(", "))
}

/// A field of an event as a finding shows it: allocations as
/// `amount from grant`, journal entries as their postings.
fn render_field(name: &str, value: &Value) -> String {
    match (name, value) {
        (_, Value::Null) => "none".to_string(),
        ("allocations", Value::Array(allocations)) if allocations.is_empty() => "none".to_string(),
        ("allocations", Value::Array(allocations)) => allocations
            .iter()
            .map(|allocation| {
                format!(
                    "{} from grant {}",
                    render_field("amount", &allocation["amount"]),
                    render_field("grant_id", &allocation["grant_id"])
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        ("entry", value) => serde_json::from_value::<JournalEntry>(value.clone()).map_or_else(
            |_| value.to_string(),
            |entry| {
                let postings: Vec<String> = entry
                    .postings()
                    .iter()
                    .map(|posting| {
                        format!(
                            "{} {} {} {}",
                            posting.side.as_str(),
                            posting.account.code,
                            posting.amount,
                            posting.asset
                        )
                    })
                    .collect();
                format!("[{}]", postings.join(", "))
            },
        ),
        (_, Value::String(text)) => text.clone(),
        (_, value) => value.to_string(),
    }
}

fn balances_report(balances: &Balances) -> (Vec<Value>, Vec<Value>) {
    let mut accounts = Vec::new();
    let mut per_asset: BTreeMap<String, (i128, i128)> = BTreeMap::new();
    for (account, account_type, asset, debits, credits) in balances.entries() {
        let totals = per_asset.entry(asset.to_string()).or_insert((0, 0));
        totals.0 += i128::from(debits);
        totals.1 += i128::from(credits);
        accounts.push(json!({
            "account": account,
            "type": account_type.as_str(),
            "asset": asset,
            "debits": debits.to_string(),
            "credits": credits.to_string(),
            "balance": (i128::from(credits) - i128::from(debits)).to_string(),
        }));
    }
    let trial_balance = per_asset
        .into_iter()
        .map(|(asset, (debits, credits))| {
            json!({"asset": asset, "debits": debits.to_string(), "credits": credits.to_string(), "balanced": debits == credits})
        })
        .collect();
    (accounts, trial_balance)
}

/// A replay report as readable text.
pub fn render(report: &Value) -> String {
    let mut out = String::new();
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => "-".to_string(),
        other => other.to_string(),
    };
    out.push_str(&format!(
        "tenant {} as of tenant_seq {} ({}), hash {}\n",
        text(&report["tenant_id"]),
        text(&report["as_of_seq"]),
        text(&report["as_of"]),
        text(&report["hash"])
    ));
    let subscription = &report["subscription"];
    if subscription.is_null() {
        out.push_str("subscription: none\n");
    } else {
        out.push_str(&format!(
            "subscription: {} {} (period {} to {}{})\n",
            text(&subscription["status"]),
            text(&subscription["plan"]),
            text(&subscription["period_start"]),
            text(&subscription["period_end"]),
            if subscription["cancel_at_period_end"] == true {
                ", cancels at period end"
            } else {
                ""
            }
        ));
    }
    out.push_str("quotas:\n");
    for quota in report["quotas"].as_array().into_iter().flatten() {
        let holder = if quota["account"].is_null() {
            String::new()
        } else {
            format!(" of {}", text(&quota["account"]))
        };
        let available = if quota["unlimited"] == true {
            "unlimited".to_string()
        } else {
            text(&quota["available"])
        };
        let unbacked = if quota["unbacked"].is_null() || quota["unbacked"] == "0" {
            String::new()
        } else {
            format!(" ({} unbacked)", text(&quota["unbacked"]))
        };
        out.push_str(&format!(
            "  {}{holder}: available {available}, consumed {}, allocated {}{unbacked}, {} grants\n",
            text(&quota["quota"]),
            text(&quota["consumed"]),
            text(&quota["allocated"]),
            quota["grants"].as_array().map_or(0, Vec::len)
        ));
    }
    out.push_str("accounts:\n");
    for account in report["accounts"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<50} {:<9} {:<10} debits {:>12} credits {:>12} balance {:>12}\n",
            text(&account["account"]),
            text(&account["type"]),
            text(&account["asset"]),
            text(&account["debits"]),
            text(&account["credits"]),
            text(&account["balance"])
        ));
    }
    out.push_str("trial balance:\n");
    for line in report["trial_balance"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {:<10} debits {:>12} credits {:>12} {}\n",
            text(&line["asset"]),
            text(&line["debits"]),
            text(&line["credits"]),
            if line["balanced"] == true {
                "balanced"
            } else {
                "UNBALANCED"
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use aggregates::quota::{GrantTerms, PRIORITY_DEFAULT};
    use aggregates::TenantId;
    use chrono::TimeZone;
    use uuid::Uuid;

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 1, 0, minute, 0).unwrap()
    }

    fn id(n: u128) -> GrantId {
        GrantId::from_uuid(Uuid::from_u128(n))
    }

    fn units(value: i64) -> Amount {
        Amount::new(value).unwrap()
    }

    /// `decided` as the `seq`-th event of the tenant's quota `aggregate_id`
    /// (its only aggregate), appended under `key` at `recorded_at`.
    fn stored_as(
        aggregate_id: &str,
        seq: i64,
        decided: &QuotaEvent,
        key: &str,
        recorded_at: DateTime<Utc>,
    ) -> AuditEvent {
        AuditEvent {
            tenant_id: TenantId::from_uuid(Uuid::nil()),
            tenant_seq: seq,
            aggregate_type: QUOTA_AGGREGATE.to_string(),
            aggregate_id: aggregate_id.to_string(),
            aggregate_seq: seq,
            event_id: Uuid::nil(),
            event_type: decided.event_type(),
            event_version: decided.event_version(),
            payload: serde_json::to_string(decided).unwrap(),
            metadata: "{}".to_string(),
            idempotency_key: key.to_string(),
            recorded_at,
            prev_hash: eventstore::GENESIS,
            hash: eventstore::GENESIS,
        }
    }

    /// `decided` as the `seq`-th event of the tenant's `credits` quota, a
    /// request of its own.
    fn stored(seq: i64, decided: &QuotaEvent, recorded_at: DateTime<Utc>) -> AuditEvent {
        stored_as("credits", seq, decided, &format!("k{seq}"), recorded_at)
    }

    /// Every finding `apply` and the final `settle` give for `events`.
    fn check(state: &mut TenantState, events: &[AuditEvent]) -> Vec<ReplayFinding> {
        let mut findings: Vec<ReplayFinding> = events
            .iter()
            .flat_map(|event| state.apply(event, None))
            .map(|(finding, _)| finding)
            .collect();
        findings.extend(state.settle().into_iter().map(|(finding, _)| finding));
        findings
    }

    /// A seats quota driven by its own decisions, its events stored one
    /// request (key) per command.
    struct Seats {
        quota: Quota,
        events: Vec<AuditEvent>,
    }

    impl Seats {
        fn new() -> Self {
            Self {
                quota: Quota::default(),
                events: Vec::new(),
            }
        }

        fn decide(&self, command: QuotaCommand) -> Vec<QuotaEvent> {
            self.quota.decide(command).unwrap()
        }

        /// Decides `command` at `minute`, applies and stores its events.
        fn run(&mut self, command: QuotaCommand, key: &str, minute: u32) -> Vec<AuditEvent> {
            let events = self.decide(command);
            self.store(&events, key, minute)
        }

        /// Stores `events` as one request's (without deciding them).
        fn store(&mut self, events: &[QuotaEvent], key: &str, minute: u32) -> Vec<AuditEvent> {
            let mut stored = Vec::new();
            for event in events {
                let seq = i64::try_from(self.events.len()).unwrap() + 1;
                let event_row = stored_as("seats", seq, event, key, at(minute));
                self.quota.apply(event.clone());
                self.events.push(event_row.clone());
                stored.push(event_row);
            }
            stored
        }

        fn issue(&mut self, n: u128, amount: i64, expires: Option<u32>, minute: u32) {
            let terms = GrantTerms {
                grant_id: id(n),
                source: GrantSource::Purchase,
                amount: Some(units(amount)),
                priority: PRIORITY_DEFAULT,
                effective_at: at(0),
                expires_at: expires.map(at),
            };
            let command = QuotaCommand::IssueGrant {
                quota: QuotaType::Seats,
                account: None,
                terms,
                at: at(minute),
            };
            self.run(command, &format!("issue-{n}"), minute);
        }
    }

    /// A seats quota with grant 1 (2 seats, expiring at minute 5) holding
    /// both seats allocated, and grant 2 (3 seats, no expiry) none.
    fn two_seat_grants() -> Seats {
        let mut seats = Seats::new();
        seats.issue(1, 2, Some(5), 1);
        seats.issue(2, 3, None, 1);
        let allocate = QuotaCommand::AllocateSeats {
            amount: units(2),
            at: at(2),
        };
        seats.run(allocate, "allocate", 2);
        assert_eq!(seats.quota.grant(id(1)).unwrap().used, units(2));
        seats
    }

    /// Issues and revokes `count` purchases (ids in descending order, so
    /// issue order is not id order), feeding each decided event to `state`.
    fn issue_and_revoke(state: &mut TenantState, count: u128) -> Vec<GrantId> {
        let mut quota = Quota::default();
        let mut seq = 0;
        let mut ids = Vec::new();
        for n in 1..=count {
            let grant_id = id(count + 1 - n);
            ids.push(grant_id);
            let terms = GrantTerms {
                grant_id,
                source: GrantSource::Purchase,
                amount: Some(units(2)),
                priority: PRIORITY_DEFAULT,
                effective_at: at(0),
                expires_at: None,
            };
            let commands = [
                (
                    QuotaCommand::IssueGrant {
                        quota: QuotaType::Credits,
                        account: None,
                        terms,
                        at: at(1),
                    },
                    at(1),
                ),
                (
                    QuotaCommand::RevokeGrant {
                        grant_id,
                        at: at(2),
                    },
                    at(2),
                ),
            ];
            for (command, recorded_at) in commands {
                for event in quota.decide(command).unwrap() {
                    seq += 1;
                    assert_eq!(state.apply(&stored(seq, &event, recorded_at), None), vec![]);
                    quota.apply(event);
                }
            }
        }
        assert_eq!(state.settle(), vec![]);
        ids
    }

    #[test]
    fn closed_grants_leave_the_decision_state_but_stay_known_by_id() {
        // Proves: a quota's decision state holds only open grants however
        // many were issued; closed ones stay indexed by id, so issuing one
        // of their ids again is still refused.
        let mut state = TenantState::for_verification();
        let ids = issue_and_revoke(&mut state, 2_000);
        let book = &state.quotas["credits"];
        assert_eq!(book.quota.grants.len(), 0);
        assert_eq!(book.grants.len(), 2_000);
        assert!(book.retired.is_empty());
        let again = QuotaEvent::GrantIssued {
            quota: QuotaType::Credits,
            account: None,
            terms: GrantTerms {
                grant_id: ids[6],
                source: GrantSource::Purchase,
                amount: None,
                priority: PRIORITY_DEFAULT,
                effective_at: at(3),
                expires_at: None,
            },
            entry: None,
        };
        assert_eq!(
            check(&mut state, &[stored(4_001, &again, at(3))]),
            vec![ReplayFinding {
                tenant_seq: 4_001,
                aggregate_type: "quota".to_string(),
                aggregate_id: "credits".to_string(),
                message: format!("the quota refuses it: grant {} already exists", ids[6]),
            }]
        );
    }

    #[test]
    fn a_report_lists_every_grant_in_issue_order() {
        // Proves: a state built for a report keeps closed grants, and lists
        // them in the order they were issued.
        let mut state = TenantState::for_report();
        let ids = issue_and_revoke(&mut state, 3);
        let report = state.report(TenantId::from_uuid(Uuid::nil()), None);
        let grants: Vec<(String, String)> = report["quotas"][0]["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|grant| {
                (
                    grant["grant_id"].as_str().unwrap().to_string(),
                    grant["status"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let expected: Vec<(String, String)> = ids
            .iter()
            .map(|id| (id.to_string(), "revoked".to_string()))
            .collect();
        assert_eq!(grants, expected);
        assert_eq!(state.quotas["credits"].quota.grants.len(), 0);
    }

    #[test]
    fn seats_moved_off_an_expiring_grant_are_checked_against_the_revocation_that_expired_it() {
        // Proves: revoking grant 2 once grant 1 is past its expiry expires
        // grant 1 first, and its seats go where that revocation sends them
        // (not onto grant 2, which closes in the same command: unbacked);
        // verify accepts exactly that, and names the same move rewritten
        // onto grant 2 (what expiring alone would decide), once, at its seq.
        let mut seats = two_seat_grants();
        let before = seats.quota.clone();
        let revoke = QuotaCommand::RevokeGrant {
            grant_id: id(2),
            at: at(6),
        };
        let group = seats.run(revoke, "revoke", 6);
        let types: Vec<&str> = group
            .iter()
            .map(|event| event.event_type.as_str())
            .collect();
        assert_eq!(types, ["SeatsMoved", "GrantExpired", "GrantRevoked"]);
        let mut state = TenantState::for_verification();
        assert_eq!(check(&mut state, &seats.events), vec![]);
        assert_eq!(state.quotas["seats"].quota.unbacked, units(2));

        let expire_alone = before
            .decide(QuotaCommand::ExpireGrants {
                quota: QuotaType::Seats,
                at: at(6),
            })
            .unwrap();
        let mut forged = seats.events.clone();
        let seq = group[0].tenant_seq;
        forged[usize::try_from(seq - 1).unwrap()] =
            stored_as("seats", seq, &expire_alone[0], "revoke", at(6));
        let mut state = TenantState::for_verification();
        assert_eq!(
            check(&mut state, &forged),
            vec![ReplayFinding {
                tenant_seq: seq,
                aggregate_type: "quota".to_string(),
                aggregate_id: "seats".to_string(),
                message: format!(
                    "allocations 2 from grant {} where the quota decides none; \
                     entry [debit grant:{} 2 SEATS/0, credit grant:{} 2 SEATS/0] \
                     where the quota decides [debit seats_unbacked 2 SEATS/0, credit grant:{} 2 SEATS/0]; \
                     unbacked 0 where the quota decides 2",
                    id(2),
                    id(2),
                    id(1),
                    id(1)
                ),
            }]
        );
        // The fold went on from the domain's decision.
        assert_eq!(state.quotas["seats"].quota.unbacked, units(2));
    }

    #[test]
    fn a_seat_grant_issued_while_seats_are_unbacked_must_record_taking_them() {
        // Proves: a seat grant issued while seats are unbacked takes them in
        // the same request (`SeatsMoved` from the unbacked seats); a history
        // that lacks that move is named at the issue, with the move the
        // quota decides, and the events after it are checked from the
        // state with the move made (no second finding).
        let mut seats = two_seat_grants();
        let revoke = QuotaCommand::RevokeGrant {
            grant_id: id(2),
            at: at(6),
        };
        seats.run(revoke, "revoke", 6);
        assert_eq!(seats.quota.unbacked, units(2));
        let terms = GrantTerms {
            grant_id: id(3),
            source: GrantSource::Purchase,
            amount: Some(units(5)),
            priority: PRIORITY_DEFAULT,
            effective_at: at(7),
            expires_at: None,
        };
        let issue = seats.decide(QuotaCommand::IssueGrant {
            quota: QuotaType::Seats,
            account: None,
            terms,
            at: at(7),
        });
        assert!(
            matches!(&issue[1], QuotaEvent::SeatsMoved { from: None, amount, .. } if *amount == units(2)),
            "{issue:?}"
        );
        // The move left out of the history; the quota is driven on as if
        // it had been made.
        let seq = i64::try_from(seats.events.len()).unwrap() + 1;
        let mut forged = seats.events.clone();
        forged.push(stored_as("seats", seq, &issue[0], "issue-3", at(7)));
        seats.store(&issue, "issue-3", 7);
        let allocate = QuotaCommand::AllocateSeats {
            amount: units(1),
            at: at(8),
        };
        let allocated = seats.run(allocate, "allocate-more", 8);
        forged.extend(allocated.into_iter().map(|mut event| {
            event.tenant_seq -= 1;
            event.aggregate_seq -= 1;
            event
        }));
        let mut state = TenantState::for_verification();
        assert_eq!(
            check(&mut state, &forged),
            vec![ReplayFinding {
                tenant_seq: seq,
                aggregate_type: "quota".to_string(),
                aggregate_id: "seats".to_string(),
                message: format!(
                    "the quota decides SeatsMoved (allocations 2 from grant {}, amount 2, \
                     entry [debit grant:{} 2 SEATS/0, credit seats_unbacked 2 SEATS/0], from none, unbacked 0) \
                     after it, and the history lacks it",
                    id(3),
                    id(3)
                ),
            }]
        );
        assert_eq!(state.quotas["seats"].quota.unbacked, Amount::ZERO);
        assert_eq!(state.quotas["seats"].quota.allocated(), Ok(units(3)));
    }

    #[test]
    fn a_replay_inside_a_request_decides_with_the_rest_of_it_and_folds_only_up_to_its_point() {
        // Proves: as of the first event of a revocation that moves an
        // expiring grant's seats, the replay reads the rest of the request
        // to know the command (without it, expiring alone would send the
        // seats elsewhere and be a finding), folds only the first event,
        // and reports seats allocated = on open grants + unbacked.
        let mut seats = two_seat_grants();
        let revoke = QuotaCommand::RevokeGrant {
            grant_id: id(2),
            at: at(6),
        };
        let group = seats.run(revoke, "revoke", 6);
        let before = &seats.events[..seats.events.len() - group.len()];

        let mut state = TenantState::for_report();
        assert_eq!(check(&mut state, before), vec![]);
        assert_eq!(state.apply(&group[0], None), vec![]);
        assert!(state.look_ahead(&group[1], None));
        assert!(state.look_ahead(&group[2], None));
        assert_eq!(state.settle(), vec![]);
        assert_eq!(state.last_seq(), group[0].tenant_seq);
        let report = state.report(TenantId::from_uuid(Uuid::nil()), None);
        let quota = &report["quotas"][0];
        assert_eq!(
            (&quota["allocated"], &quota["unbacked"], &quota["available"]),
            (&json!("2"), &json!("2"), &json!(1))
        );
        let statuses: Vec<&str> = quota["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|grant| grant["status"].as_str().unwrap())
            .collect();
        assert_eq!(statuses, ["active", "active"]);
        assert!(
            render(&report)
                .contains("  seats: available 1, consumed 0, allocated 2 (2 unbacked), 2 grants\n"),
            "{}",
            render(&report)
        );

        // Without the rest of the request, the move is not what expiring
        // alone decides.
        let mut state = TenantState::for_report();
        assert_eq!(check(&mut state, before), vec![]);
        assert_eq!(state.apply(&group[0], None), vec![]);
        assert_eq!(state.settle().len(), 1);
    }

    #[test]
    fn a_first_grant_issued_for_another_holder_than_its_quota_is_refused() {
        // Proves: a quota account's quota (`credits@user-42`) refuses a
        // grant issued for the tenant itself, even as its first grant
        // (which the aggregate alone, with no holder yet, would take).
        let issued = QuotaEvent::GrantIssued {
            quota: QuotaType::Credits,
            account: None,
            terms: GrantTerms {
                grant_id: id(1),
                source: GrantSource::Purchase,
                amount: None,
                priority: PRIORITY_DEFAULT,
                effective_at: at(0),
                expires_at: None,
            },
            entry: None,
        };
        let mut state = TenantState::for_verification();
        assert_eq!(
            check(
                &mut state,
                &[stored_as("credits@user-42", 1, &issued, "k", at(1))]
            ),
            vec![ReplayFinding {
                tenant_seq: 1,
                aggregate_type: "quota".to_string(),
                aggregate_id: "credits@user-42".to_string(),
                message: "the quota refuses it: this quota belongs to user-42, not the tenant"
                    .to_string(),
            }]
        );
    }

    #[test]
    fn a_closing_missing_from_a_request_is_named_and_the_next_command_still_checked() {
        // Proves: a plan change that ends two subscription grants and issues
        // another, stored without the second closing, is named (at the
        // event it should precede) as the closing the quota decides; the
        // issue after it is still checked as the issue it is.
        let subscription = |n: u128| GrantTerms {
            grant_id: id(n),
            source: GrantSource::Subscription,
            amount: Some(units(10)),
            priority: PRIORITY_DEFAULT,
            effective_at: at(0),
            expires_at: Some(at(50)),
        };
        let issue = |n: u128| QuotaCommand::IssueGrant {
            quota: QuotaType::Credits,
            account: None,
            terms: subscription(n),
            at: at(1),
        };
        let mut quota = Quota::default();
        let mut decided = Vec::new();
        for command in [issue(1), issue(2)] {
            for event in quota.decide(command).unwrap() {
                quota.apply(event.clone());
                decided.push((event, "sub".to_string(), at(1)));
            }
        }
        let mut change = quota
            .decide(QuotaCommand::EndSubscriptionGrants {
                quota: QuotaType::Credits,
                ending: Ending::Revoked,
                at: at(2),
            })
            .unwrap();
        change.iter().for_each(|event| quota.apply(event.clone()));
        let mut reissue = issue(3);
        if let QuotaCommand::IssueGrant { at: issued_at, .. } = &mut reissue {
            *issued_at = at(2);
        }
        change.extend(quota.decide(reissue).unwrap());
        assert_eq!(change.len(), 3);
        let lacking = change.remove(1);
        decided.extend(
            change
                .into_iter()
                .map(|event| (event, "change".to_string(), at(2))),
        );
        let events: Vec<AuditEvent> = decided
            .iter()
            .enumerate()
            .map(|(index, (event, key, recorded_at))| {
                let seq = i64::try_from(index).unwrap() + 1;
                stored_as("credits", seq, event, key, *recorded_at)
            })
            .collect();
        let mut state = TenantState::for_verification();
        assert_eq!(
            check(&mut state, &events),
            vec![ReplayFinding {
                tenant_seq: 4,
                aggregate_type: "quota".to_string(),
                aggregate_id: "credits".to_string(),
                message: format!(
                    "the quota decides GrantRevoked {} before it, and the history lacks it",
                    render_fields(&fields(&lacking))
                ),
            }]
        );
        assert_eq!(
            state.quotas["credits"]
                .grants
                .values()
                .filter(|grant| grant.status == GrantStatus::Active)
                .count(),
            1
        );
    }

    #[test]
    fn a_move_no_command_decides_is_named() {
        // Proves: seats moved off a grant that nothing closes at that time
        // are named as a move the quota does not decide, and not folded.
        let seats = two_seat_grants();
        let seq = i64::try_from(seats.events.len()).unwrap() + 1;
        let forged = QuotaEvent::SeatsMoved {
            from: Some(id(2)),
            amount: units(1),
            allocations: Vec::new(),
            unbacked: units(1),
            entry: JournalEntry::transfer(
                aggregates::quota::grant_account(&seats.quota.grant(id(2)).unwrap().terms),
                aggregates::quota::unbacked_account(None),
                &QuotaType::Seats.asset(),
                units(1),
            )
            .unwrap(),
        };
        let mut events = seats.events.clone();
        events.push(stored_as("seats", seq, &forged, "move", at(3)));
        let mut state = TenantState::for_verification();
        assert_eq!(
            check(&mut state, &events),
            vec![ReplayFinding {
                tenant_seq: seq,
                aggregate_type: "quota".to_string(),
                aggregate_id: "seats".to_string(),
                message: format!(
                    "the quota moves seats off grant {} only as it closes it, and does not close it at {}",
                    id(2),
                    time(at(3))
                ),
            }]
        );
        assert_eq!(state.quotas["seats"].quota.unbacked, Amount::ZERO);
    }
}
