//! Subscription requests. Subscribing, changing plan, cancelling and renewing
//! decide the subscription and the quota grants of its plan together, in one
//! atomic append: when the answer returns the grants are already in effect,
//! and a retried request (same key) issues them exactly once.

use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use aggregates::plan::Plan;
use aggregates::quota::{
    quota_aggregate_id, Ending, GrantSource, GrantTerms, Quota, QuotaCommand, QuotaEvent,
    QuotaType, PRIORITY_DEFAULT,
};
use aggregates::subscription::{
    CancelAt, Subscription, SubscriptionCommand, SubscriptionEvent, SUBSCRIPTION_ID,
};
use aggregates::GrantId;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The subscription and the tenant's own quota of every type.
fn targets() -> Vec<Target> {
    let mut targets = vec![Target::of::<Subscription>(SUBSCRIPTION_ID)];
    targets
        .extend(QuotaType::ALL.map(|quota| Target::of::<Quota>(quota_aggregate_id(quota, None))));
    targets
}

/// Issues the plan's grant of every quota type it gives, expiring at the
/// period end; ids derive from the request.
fn issue_plan_grants(
    decider: &mut Decider<'_>,
    plan: &Plan,
    period_end: DateTime<Utc>,
) -> Result<Vec<Value>, Refusal> {
    let mut grants = Vec::new();
    for quota in QuotaType::ALL {
        let limit = plan.limit(quota);
        if limit.amount().is_some_and(|amount| amount.is_zero()) {
            continue;
        }
        let grant_id =
            GrantId::from_uuid(decider.derive_id(&format!("subscription-grant:{quota}")));
        let terms = GrantTerms {
            grant_id,
            source: GrantSource::Subscription,
            amount: limit.amount(),
            priority: PRIORITY_DEFAULT,
            effective_at: decider.at(),
            expires_at: Some(period_end),
        };
        let at = decider.at();
        let aggregate_id = quota_aggregate_id(quota, None);
        decider.execute::<Quota>(
            &aggregate_id,
            QuotaCommand::IssueGrant {
                quota,
                account: None,
                terms,
                at,
            },
        )?;
        decider.index::<Quota>(
            crate::requests::quota::GRANT_ENTITY,
            grant_id.to_string(),
            &aggregate_id,
        );
        grants.push(json!({"grant_id": grant_id, "quota": quota, "amount": limit.amount()}));
    }
    Ok(grants)
}

/// Ends the open subscription grants of every quota type; returns what ended.
fn end_subscription_grants(
    decider: &mut Decider<'_>,
    ending: Ending,
) -> Result<Vec<Value>, Refusal> {
    let mut ended = Vec::new();
    for quota in QuotaType::ALL {
        let at = decider.at();
        let events = decider.execute::<Quota>(
            &quota_aggregate_id(quota, None),
            QuotaCommand::EndSubscriptionGrants { quota, ending, at },
        )?;
        for event in events {
            match event {
                QuotaEvent::GrantRevoked { grant_id, breakage, .. } => {
                    ended.push(json!({"grant_id": grant_id, "quota": quota, "ended": "revoked", "breakage": breakage}))
                }
                QuotaEvent::GrantExpired { grant_id, breakage, .. } => {
                    ended.push(json!({"grant_id": grant_id, "quota": quota, "ended": "expired", "breakage": breakage}))
                }
                _ => {}
            }
        }
    }
    Ok(ended)
}

/// The subscription as an answer shows it.
fn summary(decider: &Decider<'_>) -> Result<Value, Refusal> {
    let subscription = decider.state::<Subscription>(SUBSCRIPTION_ID)?;
    Ok(match report(subscription) {
        Value::Null => json!({"status": "cancelled", "cancelled_at": null}),
        summary => summary,
    })
}

fn with(mut body: Value, field: &str, value: Value) -> Value {
    if let Value::Object(map) = &mut body {
        map.insert(field.to_string(), value);
    }
    body
}

/// Subscribes the tenant to a plan and issues the plan's grants.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    pub plan: Plan,
    pub trial_ends_at: Option<DateTime<Utc>>,
}

impl Request for Subscribe {
    const KIND: &'static str = "subscribe";

    fn targets(&self) -> Vec<Target> {
        targets()
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        let events = decider.execute::<Subscription>(
            SUBSCRIPTION_ID,
            SubscriptionCommand::Subscribe {
                plan: self.plan.clone(),
                trial_ends_at: self.trial_ends_at,
                at,
            },
        )?;
        let period_end = match events.first() {
            Some(SubscriptionEvent::Subscribed { period_end, .. }) => *period_end,
            _ => {
                return Err(Refusal::Internal(
                    "subscribing produced no Subscribed event".into(),
                ))
            }
        };
        let grants = issue_plan_grants(decider, &self.plan, period_end)?;
        Ok(Reply::created(
            SUBSCRIPTION_ID,
            with(summary(decider)?, "grants_issued", grants.into()),
        ))
    }
}

/// Moves the tenant to another plan: the old plan's grants are revoked
/// (unused balance to breakage) and the new plan's issued for the rest of the
/// period.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePlan {
    pub plan: Plan,
}

impl Request for ChangePlan {
    const KIND: &'static str = "change_plan";

    fn targets(&self) -> Vec<Target> {
        targets()
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        decider.execute::<Subscription>(
            SUBSCRIPTION_ID,
            SubscriptionCommand::ChangePlan {
                plan: self.plan.clone(),
                at,
            },
        )?;
        let period_end = decider
            .state::<Subscription>(SUBSCRIPTION_ID)?
            .active
            .as_ref()
            .map(|active| active.period_end)
            .ok_or_else(|| {
                Refusal::Internal("changed plan without an active subscription".into())
            })?;
        let ended = end_subscription_grants(decider, Ending::Revoked)?;
        let grants = issue_plan_grants(decider, &self.plan, period_end)?;
        let body = with(summary(decider)?, "grants_ended", ended.into());
        Ok(Reply::ok(
            SUBSCRIPTION_ID,
            with(body, "grants_issued", grants.into()),
        ))
    }
}

/// Cancels now (grants revoked) or at the end of the period (grants run out
/// with the period).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelSubscription {
    pub at: CancelAt,
}

impl Request for CancelSubscription {
    const KIND: &'static str = "cancel_subscription";

    fn targets(&self) -> Vec<Target> {
        targets()
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        decider.execute::<Subscription>(
            SUBSCRIPTION_ID,
            SubscriptionCommand::Cancel { when: self.at, at },
        )?;
        let ended = match self.at {
            CancelAt::Now => end_subscription_grants(decider, Ending::Revoked)?,
            CancelAt::PeriodEnd => Vec::new(),
        };
        Ok(Reply::ok(
            SUBSCRIPTION_ID,
            with(summary(decider)?, "grants_ended", ended.into()),
        ))
    }
}

/// Starts the next period once the current one has ended (the subscription
/// aggregate refuses it before): the ending period's grants expire
/// (breakage; allocated seats move to the next period's seat grant) and the
/// plan's grants are issued again; with a cancellation scheduled, the
/// subscription ends instead.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewSubscription {}

impl Request for RenewSubscription {
    const KIND: &'static str = "renew_subscription";

    fn targets(&self) -> Vec<Target> {
        targets()
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        let events =
            decider.execute::<Subscription>(SUBSCRIPTION_ID, SubscriptionCommand::Renew { at })?;
        let ended = end_subscription_grants(decider, Ending::Expired)?;
        let grants = match events.first() {
            Some(SubscriptionEvent::PeriodRenewed { period_end, .. }) => {
                let plan = decider
                    .state::<Subscription>(SUBSCRIPTION_ID)?
                    .active
                    .as_ref()
                    .map(|active| active.plan.clone())
                    .ok_or_else(|| {
                        Refusal::Internal("renewed without an active subscription".into())
                    })?;
                issue_plan_grants(decider, &plan, *period_end)?
            }
            _ => Vec::new(),
        };
        let body = with(summary(decider)?, "grants_ended", ended.into());
        Ok(Reply::ok(
            SUBSCRIPTION_ID,
            with(body, "grants_issued", grants.into()),
        ))
    }
}

/// The subscriptions domain: the tenant's plan and the grants it issues.
pub fn domain() -> crate::domains::Domain {
    use crate::domains::{Domain, RequestKind, Section};
    use crate::pipeline::AggregateKind;
    Domain {
        name: "subscriptions",
        aggregates: vec![AggregateKind::of::<Subscription>()],
        requests: vec![
            RequestKind::of::<Subscribe>(),
            RequestKind::of::<ChangePlan>(),
            RequestKind::of::<CancelSubscription>(),
            RequestKind::of::<RenewSubscription>(),
        ],
        projections: vec![std::sync::Arc::new(
            projections::subscriptions::Subscriptions,
        )],
        process_managers: Vec::new(),
        routes: crate::http::subscription::router,
        tags: vec![(
            "subscription",
            "The tenant's subscription and its plan's grants",
        )],
        sections: vec![Section {
            name: "subscription",
            aggregate_type: aggregates::subscription::SUBSCRIPTION_AGGREGATE,
            one: true,
            report: |_, state, _| match state.as_any().downcast_ref::<Subscription>() {
                Some(subscription) => report(subscription),
                None => Value::Null,
            },
        }],
    }
}

/// The subscription as answers and replays show it; `null` before the
/// first subscribe.
fn report(subscription: &Subscription) -> Value {
    match &subscription.active {
        Some(active) => json!({
            "status": "active",
            "plan": active.plan.id,
            "limits": {"seats": active.plan.seats, "runs": active.plan.runs, "credits": active.plan.credits},
            "trial_ends_at": active.trial_ends_at,
            "period_start": active.period_start,
            "period_end": active.period_end,
            "cancel_at_period_end": active.cancel_at_period_end,
        }),
        None => match subscription.cancelled_at {
            Some(cancelled_at) => json!({"status": "cancelled", "cancelled_at": cancelled_at}),
            None => Value::Null,
        },
    }
}
