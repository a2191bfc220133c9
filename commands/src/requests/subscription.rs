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
use aggregates::rules::Rules;
use aggregates::subscription::{
    CancelAt, Subscription, SubscriptionCommand, SubscriptionEvent, SUBSCRIPTION_ID,
};
use aggregates::{Amount, GrantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// The subscription and the tenant's own quota of every type.
fn targets() -> Vec<Target> {
    let mut targets = vec![Target::of::<Subscription>(SUBSCRIPTION_ID)];
    targets
        .extend(QuotaType::ALL.map(|quota| Target::of::<Quota>(quota_aggregate_id(quota, None))));
    targets
}

/// The subscription as answers and replays show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SubscriptionState {
    Active {
        plan: String,
        limits: PlanLimits,
        trial_ends_at: Option<DateTime<Utc>>,
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
        /// A cancellation takes effect at the period end.
        cancel_at_period_end: bool,
    },
    /// Cancelled, or never subscribed (`cancelled_at` null).
    Cancelled { cancelled_at: Option<DateTime<Utc>> },
}

impl SubscriptionState {
    /// The view of `subscription`; `None` before the first subscribe.
    pub fn of(subscription: &Subscription) -> Option<Self> {
        match &subscription.active {
            Some(active) => Some(Self::Active {
                plan: active.plan.id.clone(),
                limits: PlanLimits {
                    seats: active.plan.seats.amount(),
                    runs: active.plan.runs.amount(),
                    credits: active.plan.credits.amount(),
                },
                trial_ends_at: active.trial_ends_at,
                period_start: active.period_start,
                period_end: active.period_end,
                cancel_at_period_end: active.cancel_at_period_end,
            }),
            None => subscription
                .cancelled_at
                .map(|cancelled_at| Self::Cancelled {
                    cancelled_at: Some(cancelled_at),
                }),
        }
    }
}

/// A plan's per-period limits (`null` is unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct PlanLimits {
    pub seats: Option<Amount>,
    pub runs: Option<Amount>,
    pub credits: Option<Amount>,
}

/// A grant a subscription request issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PlanGrant {
    pub grant_id: GrantId,
    pub quota: QuotaType,
    /// `null` is unlimited.
    pub amount: Option<Amount>,
}

/// How a subscription grant ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GrantEnded {
    Revoked,
    Expired,
}

/// A subscription grant a request ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct EndedGrant {
    pub grant_id: GrantId,
    pub quota: QuotaType,
    pub ended: GrantEnded,
    /// Unused balance posted as breakage.
    pub breakage: Amount,
}

/// The answer to subscribe, change-plan, cancel and renew: the subscription
/// after the request, and the grants it issued or ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SubscriptionAnswer {
    #[serde(flatten)]
    pub subscription: SubscriptionState,
    /// Subscribe, change-plan and renew: the plan's grants issued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants_issued: Option<Vec<PlanGrant>>,
    /// Change-plan, cancel and renew: the subscription grants ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grants_ended: Option<Vec<EndedGrant>>,
}

/// The answer of a subscription request: the subscription after it and
/// the grants it issued and ended.
fn answer(
    decider: &Decider<'_>,
    grants_issued: Option<Vec<PlanGrant>>,
    grants_ended: Option<Vec<EndedGrant>>,
) -> Result<SubscriptionAnswer, Refusal> {
    let subscription = decider.state::<Subscription>(SUBSCRIPTION_ID)?;
    Ok(SubscriptionAnswer {
        subscription: SubscriptionState::of(subscription)
            .unwrap_or(SubscriptionState::Cancelled { cancelled_at: None }),
        grants_issued,
        grants_ended,
    })
}

/// How much of a plan's allowance a request issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowance {
    /// All of it: a new period.
    Whole,
    /// What the period (from `period_start`) has not consumed yet: a
    /// plan change within it.
    LeftInPeriod { period_start: DateTime<Utc> },
}

/// Issues the plan's grant of every quota type it gives (of its
/// `allowance`), expiring at the period end, effective at `at`; ids derive
/// from the request. A quota with nothing to issue gets no grant.
fn issue_plan_grants(
    decider: &mut Decider<'_>,
    plan: &Plan,
    allowance: Allowance,
    period_end: DateTime<Utc>,
    at: DateTime<Utc>,
) -> Result<Vec<PlanGrant>, Refusal> {
    let mut grants = Vec::new();
    for quota in QuotaType::ALL {
        let mut amount = plan.limit(quota).amount();
        if let (Some(limit), Allowance::LeftInPeriod { period_start }) = (amount, allowance) {
            let consumed = decider
                .state::<Quota>(&quota_aggregate_id(quota, None))?
                .consumed_in_period(period_start, period_end);
            amount = Some(limit.checked_sub(consumed).unwrap_or(Amount::ZERO));
        }
        if amount.is_some_and(|amount| amount.is_zero()) {
            continue;
        }
        let grant_id =
            GrantId::from_uuid(decider.derive_id(&format!("subscription-grant:{quota}")));
        let terms = GrantTerms {
            grant_id,
            source: GrantSource::Subscription,
            amount,
            priority: PRIORITY_DEFAULT,
            effective_at: at,
            expires_at: Some(period_end),
        };
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
        grants.push(PlanGrant {
            grant_id,
            quota,
            amount,
        });
    }
    Ok(grants)
}

/// Ends the open subscription grants of every quota type at `at`; returns
/// what ended of them (other grants due by `at` expire in the same
/// decision, and are left out of the answer).
fn end_subscription_grants(
    decider: &mut Decider<'_>,
    ending: Ending,
    at: DateTime<Utc>,
) -> Result<Vec<EndedGrant>, Refusal> {
    let mut ended = Vec::new();
    for quota in QuotaType::ALL {
        let id = quota_aggregate_id(quota, None);
        let events = decider.execute::<Quota>(
            &id,
            QuotaCommand::EndSubscriptionGrants { quota, ending, at },
        )?;
        let state = decider.state::<Quota>(&id)?;
        for event in events {
            let (grant_id, breakage, how) = match event {
                QuotaEvent::GrantRevoked {
                    grant_id, breakage, ..
                } => (grant_id, breakage, GrantEnded::Revoked),
                QuotaEvent::GrantExpired {
                    grant_id, breakage, ..
                } => (grant_id, breakage, GrantEnded::Expired),
                _ => continue,
            };
            let subscription = state
                .grant(grant_id)
                .is_some_and(|grant| grant.terms.source == GrantSource::Subscription);
            if !subscription {
                continue;
            }
            ended.push(EndedGrant {
                grant_id,
                quota,
                ended: how,
                breakage,
            });
        }
    }
    Ok(ended)
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
        let grants = issue_plan_grants(decider, &self.plan, Allowance::Whole, period_end, at)?;
        Reply::created(SUBSCRIPTION_ID, &answer(decider, Some(grants), None)?)
    }
}

/// Moves the tenant to another plan: the old plan's grants are revoked
/// (unused balance to breakage) and the new plan's issued for the rest of the
/// period: its seats whole, its runs and credits less what the period has
/// consumed on its subscription grants (since the fifth rules; whole
/// before), so a period's allowance is spent once whatever the plan.
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
        let (period_start, period_end) = decider
            .state::<Subscription>(SUBSCRIPTION_ID)?
            .active
            .as_ref()
            .map(|active| (active.period_start, active.period_end))
            .ok_or_else(|| {
                Refusal::Internal("changed plan without an active subscription".into())
            })?;
        let ended = end_subscription_grants(decider, Ending::Revoked, at)?;
        let allowance = if decider.rules().since(Rules::FIFTH) {
            Allowance::LeftInPeriod { period_start }
        } else {
            Allowance::Whole
        };
        let grants = issue_plan_grants(decider, &self.plan, allowance, period_end, at)?;
        Reply::ok(
            SUBSCRIPTION_ID,
            &answer(decider, Some(grants), Some(ended))?,
        )
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
            SubscriptionCommand::Cancel {
                when: self.at,
                at,
                rules: decider.rules(),
            },
        )?;
        let ended = match self.at {
            CancelAt::Now => end_subscription_grants(decider, Ending::Revoked, at)?,
            CancelAt::PeriodEnd => Vec::new(),
        };
        Reply::ok(SUBSCRIPTION_ID, &answer(decider, None, Some(ended))?)
    }
}

/// Starts the next period once the current one has ended (the subscription
/// aggregate refuses it before): the ending period's grants expire
/// (breakage; allocated seats move to the next period's seat grant) and the
/// plan's grants are issued again; with a cancellation scheduled, the
/// subscription ends instead. The scheduler submits it at the period end,
/// carrying that time (`due_at`): it then decides at the period end however
/// late it runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewSubscription {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}

impl Request for RenewSubscription {
    const KIND: &'static str = "renew_subscription";

    fn targets(&self) -> Vec<Target> {
        targets()
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at_due(self.due_at)?;
        let rules = decider.rules();
        let events = decider
            .execute::<Subscription>(SUBSCRIPTION_ID, SubscriptionCommand::Renew { at, rules })?;
        let ended = end_subscription_grants(decider, Ending::Expired, at)?;
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
                issue_plan_grants(decider, &plan, Allowance::Whole, *period_end, at)?
            }
            _ => Vec::new(),
        };
        Reply::ok(
            SUBSCRIPTION_ID,
            &answer(decider, Some(grants), Some(ended))?,
        )
    }
}

/// The scheduled work of the subscription: the renewal at the period end.
pub const RENEWAL: &str = "subscription:renewal";

/// What a subscription event schedules: each period's renewal at its end
/// (which ends the subscription instead when a cancellation is scheduled);
/// a cancellation settles it.
fn schedule(
    event: &eventstore::StoredEvent,
) -> Result<Vec<projections::scheduled::ScheduleChange>, projections::ApplyError> {
    use crate::scheduler::{due, settled};
    Ok(match projections::decode::decode::<Subscription>(event)? {
        SubscriptionEvent::Subscribed { period_end, .. }
        | SubscriptionEvent::PeriodRenewed { period_end, .. } => vec![due(
            RENEWAL,
            period_end,
            &RenewSubscription {
                due_at: Some(period_end),
            },
        )?],
        SubscriptionEvent::Cancelled { .. } => vec![settled(RENEWAL)],
        SubscriptionEvent::PlanChanged { .. } | SubscriptionEvent::CancellationScheduled { .. } => {
            Vec::new()
        }
    })
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
        reactions: Vec::new(),
        schedules: vec![projections::scheduled::ScheduleReader {
            aggregate_type: aggregates::subscription::SUBSCRIPTION_AGGREGATE,
            events: &["Subscribed", "PeriodRenewed", "Cancelled"],
            read: schedule,
        }],
        routes: crate::http::subscription::router,
        tags: vec![(
            "subscription",
            "The tenant's subscription and its plan's grants",
        )],
        sections: vec![Section {
            name: "subscription",
            aggregate_type: aggregates::subscription::SUBSCRIPTION_AGGREGATE,
            one: true,
            report: |_, state, _| {
                state
                    .as_any()
                    .downcast_ref::<Subscription>()
                    .and_then(SubscriptionState::of)
                    .and_then(|view| serde_json::to_value(view).ok())
                    .unwrap_or(Value::Null)
            },
        }],
    }
}
