//! A tenant's state folded from its events with the domain's own `apply`:
//! the subscription, every quota with its grants, and the journal balances
//! (with account flags enforced). Folding checks that the domain accepts its
//! own history; the state as of any seq or time is what `replay` reports.

use crate::source::AuditEvent;
use aggregates::journal::Balances;
use aggregates::quota::{
    parse_quota_aggregate_id, Available, GrantStatus, Quota, QuotaEvent, QuotaType, QUOTA_AGGREGATE,
};
use aggregates::subscription::{Subscription, SubscriptionEvent, SUBSCRIPTION_AGGREGATE};
use chrono::{DateTime, Utc};
use cqrs_es::Aggregate;
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

/// What folding a tenant's events has built so far.
#[derive(Debug, Default)]
pub struct TenantState {
    subscription: Subscription,
    quotas: BTreeMap<String, Quota>,
    balances: Balances,
    /// Last aggregate_seq of every aggregate.
    versions: HashMap<(String, String), i64>,
    last_seq: i64,
    last_hash: Option<eventstore::ChainHash>,
    last_recorded_at: Option<DateTime<Utc>>,
}

impl TenantState {
    /// Folds the next event; a finding when the domain cannot accept it (the
    /// state is left as it was for that event).
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
        if event.aggregate_seq != *version + 1 {
            let expected = *version + 1;
            *version = event.aggregate_seq.max(*version);
            return Err(finding(format!(
                "aggregate_seq {} where {expected} was next",
                event.aggregate_seq
            )));
        }
        *version = event.aggregate_seq;
        match event.aggregate_type.as_str() {
            SUBSCRIPTION_AGGREGATE => {
                let decoded: SubscriptionEvent =
                    serde_json::from_str(&event.payload).map_err(|error| {
                        finding(format!("{} does not decode: {error}", event.event_type))
                    })?;
                let needs_active = !matches!(decoded, SubscriptionEvent::Subscribed { .. });
                if needs_active && self.subscription.active.is_none() {
                    return Err(finding(format!(
                        "{} without an active subscription",
                        event.event_type
                    )));
                }
                self.subscription.apply(decoded);
                Ok(())
            }
            QUOTA_AGGREGATE => {
                let decoded: QuotaEvent =
                    serde_json::from_str(&event.payload).map_err(|error| {
                        finding(format!("{} does not decode: {error}", event.event_type))
                    })?;
                let quota = self.quotas.entry(event.aggregate_id.clone()).or_default();
                check_quota_event(quota, &decoded).map_err(finding)?;
                if let Some(entry) = decoded.entry() {
                    self.balances
                        .post(entry)
                        .map_err(|error| finding(format!("journal entry refused: {error}")))?;
                }
                quota.apply(decoded);
                Ok(())
            }
            // Other aggregates have no domain model here; their chain and
            // sequences are still checked.
            _ => Ok(()),
        }
    }

    /// seq of the last event folded.
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// The state as an auditor reads it, with quotas' availability as of `at`
    /// (the last event's time when `None`).
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
            .map(|(aggregate_id, quota)| quota_report(aggregate_id, quota, at))
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

/// Refuses quota events the domain could not have decided from this state.
fn check_quota_event(quota: &Quota, event: &QuotaEvent) -> Result<(), String> {
    let known = |grant_id| {
        quota
            .grant(grant_id)
            .ok_or_else(|| format!("names unknown grant {grant_id}"))
    };
    match event {
        QuotaEvent::GrantIssued { terms, .. } => {
            if quota.grant(terms.grant_id).is_some() {
                return Err(format!("issues grant {} twice", terms.grant_id));
            }
        }
        QuotaEvent::GrantRevoked { grant_id, .. } | QuotaEvent::GrantExpired { grant_id, .. } => {
            let grant = known(*grant_id)?;
            if grant.status != GrantStatus::Active {
                return Err(format!(
                    "closes grant {grant_id}, already {}",
                    grant.status.as_str()
                ));
            }
            if quota.quota == Some(QuotaType::Seats) && !grant.used.is_zero() {
                return Err(format!(
                    "closes grant {grant_id} with {} seats still allocated on it",
                    grant.used
                ));
            }
        }
        QuotaEvent::QuotaConsumed { allocations, .. }
        | QuotaEvent::SeatsAllocated { allocations, .. } => {
            for allocation in allocations {
                let grant = known(allocation.grant_id)?;
                if let Some(remaining) = grant.remaining() {
                    if allocation.amount > remaining {
                        return Err(format!(
                            "draws {} from grant {} holding {remaining}",
                            allocation.amount, allocation.grant_id
                        ));
                    }
                }
            }
        }
        QuotaEvent::SeatsMoved {
            from,
            amount,
            allocations,
            ..
        } => {
            match from {
                Some(grant_id) => {
                    let grant = known(*grant_id)?;
                    if *amount > grant.used {
                        return Err(format!(
                            "moves {amount} seats off grant {grant_id} holding {}",
                            grant.used
                        ));
                    }
                }
                None if *amount > quota.unbacked => {
                    return Err(format!(
                        "moves {amount} unbacked seats where {} are unbacked",
                        quota.unbacked
                    ));
                }
                None => {}
            }
            for allocation in allocations {
                let grant = known(allocation.grant_id)?;
                let room = grant.remaining();
                if grant.status != GrantStatus::Active
                    || room.is_some_and(|room| allocation.amount > room)
                {
                    return Err(format!(
                        "moves {} seats onto grant {} ({}) holding {}",
                        allocation.amount,
                        allocation.grant_id,
                        grant.status.as_str(),
                        room.map_or_else(|| "unlimited".to_string(), |room| room.to_string())
                    ));
                }
            }
        }
        QuotaEvent::SeatsReleased { unbacked, .. } if *unbacked > quota.unbacked => {
            return Err(format!(
                "releases {unbacked} unbacked seats where {} are unbacked",
                quota.unbacked
            ));
        }
        QuotaEvent::SeatsReleased { allocations, .. } => {
            for allocation in allocations {
                let grant = known(allocation.grant_id)?;
                if allocation.amount > grant.used {
                    return Err(format!(
                        "releases {} seats of grant {} holding {}",
                        allocation.amount, allocation.grant_id, grant.used
                    ));
                }
            }
        }
    }
    Ok(())
}

fn quota_report(aggregate_id: &str, quota: &Quota, at: Option<DateTime<Utc>>) -> Value {
    let (quota_type, account) = parse_quota_aggregate_id(aggregate_id).unzip();
    let available = at.and_then(|at| quota.available(at).ok());
    let consumable = quota_type.is_some_and(QuotaType::is_consumable);
    // Consumed: over every grant, open or closed. Allocated: seats on open
    // grants and unbacked ones.
    let used: i128 = if consumable {
        quota
            .grants
            .iter()
            .map(|grant| i128::from(grant.used.value()))
            .sum()
    } else {
        quota
            .allocated()
            .map_or(0, |allocated| i128::from(allocated.value()))
    };
    let grants: Vec<Value> = quota
        .grants
        .iter()
        .map(|grant| {
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
