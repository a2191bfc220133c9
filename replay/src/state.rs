//! A tenant's state folded from its events, each event checked against the
//! domain's own decision.
//!
//! For every event of an aggregate the domain models (the subscription, the
//! quotas), the command the event records is rebuilt from the event and its
//! recorded time (the time the pipeline decided it at), and the aggregate's
//! own pure [`Decide::decide`] says, from the state before the event, what
//! that command gives. The event must be exactly that: a consumption's
//! allocations are the burn-down (SPEC 4.4 order) of the grants usable at
//! that time, its amount their sum, its journal entry their postings; a
//! closing's breakage is the unused balance; an issue's entry credits its
//! terms' amount; a subscription event follows the subscription's rules (no
//! second active subscription, plan changes and renewals of an active one,
//! periods of the plan's length). Every way an event differs, or the
//! aggregate refusing it, is a [`ReplayFinding`]; folding then goes on from
//! what the domain decided, so that one altered event is one finding.
//! Journal entries are posted with account flags enforced.
//!
//! Memory grows with a tenant's aggregates, open grants and accounts, never
//! with its events. A quota keeps the grants decisions can still touch (open
//! ones, and closed seat grants that still hold seats) and, of every other
//! grant, an index entry (id and status, to refuse an id issued twice or a
//! grant closed twice). A replay for a report ([`Retention::Report`]) keeps
//! closed grants too, since the report lists them.

use crate::source::AuditEvent;
use aggregates::journal::{Balances, JournalEntry};
use aggregates::quota::{
    parse_quota_aggregate_id, Available, Ending, Grant, GrantSource, GrantStatus, Quota,
    QuotaCommand, QuotaError, QuotaEvent, QuotaType, QUOTA_AGGREGATE,
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

/// The domain refused part of a tenant's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReplayFinding {
    pub tenant_seq: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub message: String,
}

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

/// What the domain decides for the command an event records.
struct Decided<E> {
    /// Events the domain decides first and the history lacks (expiries of
    /// grants already past their expiry).
    missing: Vec<E>,
    /// The event the domain decides in place of the stored one.
    event: E,
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

    /// Folds the next event, checking it against the domain's decision; a
    /// finding when the event is not what the domain decides (the fold goes
    /// on from the domain's decision).
    pub fn apply(&mut self, event: &AuditEvent) -> Result<(), ReplayFinding> {
        self.last_seq = event.tenant_seq;
        self.last_hash = Some(event.hash);
        self.last_recorded_at = Some(event.recorded_at);
        let finding = |message: String| ReplayFinding {
            tenant_seq: event.tenant_seq,
            aggregate_type: event.aggregate_type.clone(),
            aggregate_id: event.aggregate_id.clone(),
            message,
        };
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
        let checked = match event.aggregate_type.as_str() {
            SUBSCRIPTION_AGGREGATE => self.apply_subscription(event),
            QUOTA_AGGREGATE => self.apply_quota(event),
            // Other aggregates have no domain model here; their chain and
            // sequences are still checked.
            _ => Ok(()),
        };
        problems.extend(checked.err());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(finding(problems.join("; ")))
        }
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

    fn apply_quota(&mut self, event: &AuditEvent) -> Result<(), String> {
        let Some((quota_type, _)) = parse_quota_aggregate_id(&event.aggregate_id) else {
            return Err(format!(
                "{:?} is not a quota aggregate id (a quota type, then optionally @ and an account)",
                event.aggregate_id
            ));
        };
        let stored = decode::<Quota>(event)?;
        let at = event.recorded_at;
        let retention = self.retention;
        let book = self.quotas.entry(event.aggregate_id.clone()).or_default();
        let mut problems: Vec<String> = allocations_problem(&stored).into_iter().collect();
        let decided = match book.redecide(quota_type, &stored, at) {
            Ok(decided) => decided,
            Err(refusal) => {
                problems.push(refusal);
                return Err(problems.join("; "));
            }
        };
        if !decided.missing.is_empty() {
            let grants: Vec<String> = decided
                .missing
                .iter()
                .filter_map(closed_grant)
                .map(|grant_id| grant_id.to_string())
                .collect();
            problems.push(format!(
                "grant {} past its expiry at {} was not expired first",
                grants.join(", "),
                time(at)
            ));
        }
        if decided.event != stored {
            problems.push(describe_difference("quota", &stored, &decided.event));
        }
        let mut folded = decided.missing;
        folded.push(if problems.is_empty() {
            stored
        } else {
            decided.event
        });
        for event in folded {
            if let Some(entry) = event.entry() {
                if let Err(error) = self.balances.post(entry) {
                    problems.push(format!("journal entry refused: {error}"));
                }
            }
            book.fold(event, retention);
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// seq of the last event folded.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// The state as an auditor reads it, with quotas' availability as of `at`
    /// (the last event's time when `None`). Lists closed grants only when
    /// built [`TenantState::for_report`].
    pub fn report(&self, tenant_id: aggregates::TenantId, at: Option<DateTime<Utc>>) -> Value {
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

impl QuotaBook {
    /// What the quota decides, from the state before `stored`, for the
    /// command `stored` records (decided at `at`), or why it refuses it.
    fn redecide(
        &self,
        quota_type: QuotaType,
        stored: &QuotaEvent,
        at: DateTime<Utc>,
    ) -> Result<Decided<QuotaEvent>, String> {
        let refused = |error: QuotaError| format!("the quota refuses it: {error}");
        let decide = |command: QuotaCommand| self.quota.decide(command).map_err(refused);
        match stored {
            QuotaEvent::GrantIssued { quota, terms, .. } => {
                if *quota != quota_type {
                    return Err(refused(QuotaError::WrongQuota {
                        expected: quota_type,
                        requested: *quota,
                    }));
                }
                // The fold keeps no closed grant in `quota`: ask the index.
                if self.grants.contains_key(&terms.grant_id) {
                    return Err(refused(QuotaError::GrantExists(terms.grant_id)));
                }
                principal(decide(QuotaCommand::IssueGrant {
                    quota: *quota,
                    terms: terms.clone(),
                    at,
                })?)
            }
            QuotaEvent::GrantRevoked { grant_id, .. }
            | QuotaEvent::GrantExpired { grant_id, .. } => {
                let grant = self.open_grant(*grant_id).map_err(refused)?;
                let subscription = grant.terms.source == GrantSource::Subscription;
                let revoked = matches!(stored, QuotaEvent::GrantRevoked { .. });
                // Subscription grants end with their plan; others are
                // revoked one by one, or expire when due.
                let command = match (revoked, subscription) {
                    (true, false) => {
                        return principal(decide(QuotaCommand::RevokeGrant {
                            grant_id: *grant_id,
                            at,
                        })?)
                    }
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
                    (false, false) => QuotaCommand::ExpireGrants {
                        quota: quota_type,
                        at,
                    },
                };
                let expires = grant.terms.expires_at.map_or("never".to_string(), time);
                decide(command)?
                    .into_iter()
                    .find(|event| closed_grant(event) == Some(*grant_id))
                    .map(|event| Decided {
                        missing: Vec::new(),
                        event,
                    })
                    .ok_or_else(|| {
                        format!(
                            "the quota does not end grant {grant_id} at {}: it is open and expires {expires}",
                            time(at)
                        )
                    })
            }
            QuotaEvent::QuotaConsumed {
                amount, reference, ..
            } => principal(decide(QuotaCommand::Consume {
                quota: quota_type,
                amount: *amount,
                reference: reference.clone(),
                at,
            })?),
            QuotaEvent::SeatsAllocated { amount, .. } => {
                principal(decide(QuotaCommand::AllocateSeats {
                    amount: *amount,
                    at,
                })?)
            }
            QuotaEvent::SeatsReleased { amount, .. } => {
                principal(decide(QuotaCommand::ReleaseSeats {
                    amount: *amount,
                    at,
                })?)
            }
        }
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
    /// (or emptied of seats) that no decision can touch any more.
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
            QuotaEvent::QuotaConsumed { .. } | QuotaEvent::SeatsAllocated { .. } => {}
        }
        self.quota.apply(event);
        for grant_id in touched {
            self.retire(grant_id, retention);
        }
    }

    /// Drops `grant_id` from the decision state once it is closed and holds
    /// no seat.
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
        // i128: a sum of i64 values that cannot overflow short of 2^64 grants.
        let used: i128 = grants
            .iter()
            .map(|(_, grant)| i128::from(grant.used.value()))
            .sum();
        let consumable = quota_type.is_some_and(QuotaType::is_consumable);
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
            "consumed": if consumable { used.to_string() } else { "0".to_string() },
            "allocated": if consumable { "0".to_string() } else { used.to_string() },
            "grants": grants,
        })
    }
}

/// A time as events and findings show it (RFC 3339, UTC, `Z`).
fn time(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// The last event a command decides is the one it is named after; the
/// events before it are the expiries the quota decides first.
fn principal(mut events: Vec<QuotaEvent>) -> Result<Decided<QuotaEvent>, String> {
    let event = events
        .pop()
        .ok_or_else(|| "the quota decides nothing for it".to_string())?;
    Ok(Decided {
        missing: events,
        event,
    })
}

/// The grant a closing event closes.
fn closed_grant(event: &QuotaEvent) -> Option<GrantId> {
    match event {
        QuotaEvent::GrantRevoked { grant_id, .. } | QuotaEvent::GrantExpired { grant_id, .. } => {
            Some(*grant_id)
        }
        _ => None,
    }
}

/// A movement whose amount is not the sum of its allocations.
fn allocations_problem(event: &QuotaEvent) -> Option<String> {
    let (amount, allocations) = match event {
        QuotaEvent::QuotaConsumed {
            amount,
            allocations,
            ..
        }
        | QuotaEvent::SeatsAllocated {
            amount,
            allocations,
            ..
        }
        | QuotaEvent::SeatsReleased {
            amount,
            allocations,
            ..
        } => (amount, allocations),
        _ => return None,
    };
    let sum = allocations
        .iter()
        .try_fold(Amount::ZERO, |sum, allocation| {
            sum.checked_add(allocation.amount)
        });
    match sum {
        Ok(sum) if sum == *amount => None,
        Ok(sum) => Some(format!(
            "amount {amount} is not the sum of its allocations ({sum})"
        )),
        Err(_) => Some("its allocations overflow".to_string()),
    }
}

/// What the subscription decides, from `state`, for the command `stored`
/// records (decided at `at`), or why it refuses it.
fn redecide_subscription(
    state: &Subscription,
    stored: &SubscriptionEvent,
    at: DateTime<Utc>,
) -> Result<SubscriptionEvent, String> {
    let command = match stored {
        SubscriptionEvent::Subscribed {
            plan,
            trial_ends_at,
            ..
        } => SubscriptionCommand::Subscribe {
            plan: plan.clone(),
            trial_ends_at: *trial_ends_at,
            at,
        },
        SubscriptionEvent::PlanChanged { plan, .. } => SubscriptionCommand::ChangePlan {
            plan: plan.clone(),
            at,
        },
        SubscriptionEvent::CancellationScheduled { .. } => SubscriptionCommand::Cancel {
            when: CancelAt::PeriodEnd,
            at,
        },
        // A renewal with a cancellation scheduled decides the same event.
        SubscriptionEvent::Cancelled { .. } => SubscriptionCommand::Cancel {
            when: CancelAt::Now,
            at,
        },
        SubscriptionEvent::PeriodRenewed { .. } => SubscriptionCommand::Renew { at },
    };
    let mut events = state
        .decide(command)
        .map_err(|error| format!("the subscription refuses it: {error}"))?;
    match events.len() {
        1 => Ok(events.remove(0)),
        count => Err(format!("the subscription decides {count} events for it")),
    }
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

/// How a stored event differs from the one the domain decides: its type,
/// or each field that differs, stored value first.
fn describe_difference<E: Serialize + DomainEvent>(
    aggregate: &str,
    stored: &E,
    decided: &E,
) -> String {
    let fields = |event: &E| -> BTreeMap<String, Value> {
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
    };
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
        out.push_str(&format!(
            "  {}{holder}: available {available}, consumed {}, allocated {}, {} grants\n",
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

    /// `decided` as the `seq`-th event of the tenant's `credits` quota.
    fn stored(seq: i64, decided: &QuotaEvent, recorded_at: DateTime<Utc>) -> AuditEvent {
        AuditEvent {
            tenant_id: TenantId::from_uuid(Uuid::nil()),
            tenant_seq: seq,
            aggregate_type: QUOTA_AGGREGATE.to_string(),
            aggregate_id: "credits".to_string(),
            aggregate_seq: seq,
            event_id: Uuid::nil(),
            event_type: decided.event_type(),
            event_version: decided.event_version(),
            payload: serde_json::to_string(decided).unwrap(),
            metadata: "{}".to_string(),
            idempotency_key: format!("k{seq}"),
            recorded_at,
            prev_hash: eventstore::GENESIS,
            hash: eventstore::GENESIS,
        }
    }

    /// Issues and revokes `count` purchases (ids in descending order, so
    /// issue order is not id order), feeding each decided event to `state`.
    fn issue_and_revoke(state: &mut TenantState, count: u128) -> Vec<GrantId> {
        let mut quota = Quota::default();
        let mut seq = 0;
        let mut ids = Vec::new();
        for n in 1..=count {
            let grant_id = GrantId::from_uuid(Uuid::from_u128(count + 1 - n));
            ids.push(grant_id);
            let terms = GrantTerms {
                grant_id,
                source: GrantSource::Purchase,
                amount: Some(Amount::new(2).unwrap()),
                priority: PRIORITY_DEFAULT,
                effective_at: at(0),
                expires_at: None,
            };
            let commands = [
                QuotaCommand::IssueGrant {
                    quota: QuotaType::Credits,
                    terms,
                    at: at(1),
                },
                QuotaCommand::RevokeGrant {
                    grant_id,
                    at: at(2),
                },
            ];
            for command in commands {
                let recorded_at = match &command {
                    QuotaCommand::IssueGrant { at, .. } | QuotaCommand::RevokeGrant { at, .. } => {
                        *at
                    }
                    _ => unreachable!(),
                };
                for event in quota.decide(command).unwrap() {
                    seq += 1;
                    assert_eq!(state.apply(&stored(seq, &event, recorded_at)), Ok(()));
                    quota.apply(event);
                }
            }
        }
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
            state.apply(&stored(4_001, &again, at(3))),
            Err(ReplayFinding {
                tenant_seq: 4_001,
                aggregate_type: "quota".to_string(),
                aggregate_id: "credits".to_string(),
                message: format!("the quota refuses it: grant {} already exists", ids[6]),
            })
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
}
