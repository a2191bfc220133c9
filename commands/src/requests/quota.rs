//! Quota requests: issuing and revoking grants, consuming, allocating and
//! releasing seats, expiring grants.

use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use aggregates::quota::{
    quota_aggregate_id, Allocation, Available, GrantSource, GrantTerms, Quota, QuotaAccount,
    QuotaCommand, QuotaEvent, QuotaType,
};
use aggregates::{Amount, GrantId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

/// What a grant is in the store's index of entities (a route naming only
/// the grant finds its quota there).
pub const GRANT_ENTITY: &str = "grant";

/// What is left of a quota after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct QuotaLeft {
    /// Units left; `null` when unlimited.
    pub available: Option<i64>,
    pub unlimited: bool,
}

/// The holder's quota of `quota` after the decision: what is left.
fn left(decider: &Decider<'_>, aggregate_id: &str) -> Result<QuotaLeft, Refusal> {
    let quota = decider.state::<Quota>(aggregate_id)?;
    let available = quota
        .available(decider.at())
        .map_err(|error| Refusal::Internal(error.to_string()))?;
    Ok(QuotaLeft {
        available: available.units(),
        unlimited: available == Available::Unlimited,
    })
}

/// The answer to issuing a grant: its terms and what the quota has left.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GrantIssued {
    pub grant_id: GrantId,
    pub quota: QuotaType,
    pub account: Option<QuotaAccount>,
    pub source: GrantSource,
    /// `null` is unlimited.
    pub amount: Option<Amount>,
    pub priority: u8,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(flatten)]
    pub left: QuotaLeft,
}

/// The answer to revoking a grant.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GrantRevoked {
    pub grant_id: GrantId,
    /// `revoked`.
    #[schema(inline)]
    pub status: RevokedStatus,
    /// The unused balance, posted as breakage.
    pub breakage: Option<Amount>,
    #[serde(flatten)]
    pub left: QuotaLeft,
}

/// The status a revoked grant answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RevokedStatus {
    Revoked,
}

/// The answer to a consumption.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Consumed {
    pub consumed: Amount,
    pub reference: Option<String>,
    /// The grants it was drawn from, in burn-down order.
    pub allocations: Vec<Allocation>,
    #[serde(flatten)]
    pub left: QuotaLeft,
}

/// The answer to allocating or releasing seats.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeatsChanged {
    /// Allocate only: seats allocated by this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allocated_now: Option<Amount>,
    /// Release only: seats released by this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub released: Option<Amount>,
    /// The grants the seats were taken from or given back to.
    pub allocations: Vec<Allocation>,
    /// Seats allocated in all after the request (unbacked ones included).
    pub allocated: Amount,
    #[serde(flatten)]
    pub left: QuotaLeft,
}

/// A grant an expiry closed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExpiredGrant {
    pub grant_id: GrantId,
    /// Unused balance posted as breakage.
    pub breakage: Amount,
}

/// The answer to expiring a quota's grants.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GrantsExpired {
    /// The grants expired (none when nothing was past its expiry).
    pub expired: Vec<ExpiredGrant>,
    #[serde(flatten)]
    pub left: QuotaLeft,
}

/// Issues a purchased or promotional grant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssueGrant {
    pub quota: QuotaType,
    pub account: Option<QuotaAccount>,
    pub source: GrantSource,
    /// `None` is unlimited.
    pub amount: Option<Amount>,
    pub priority: u8,
    pub effective_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl IssueGrant {
    fn aggregate_id(&self) -> String {
        quota_aggregate_id(self.quota, self.account.as_ref())
    }
}

impl Request for IssueGrant {
    const KIND: &'static str = "issue_grant";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Quota>(self.aggregate_id())]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        let grant_id = GrantId::from_uuid(decider.derive_id("grant"));
        let terms = GrantTerms {
            grant_id,
            source: self.source,
            amount: self.amount,
            priority: self.priority,
            effective_at: self.effective_at.unwrap_or(at),
            expires_at: self.expires_at,
        };
        let aggregate_id = self.aggregate_id();
        decider.execute::<Quota>(
            &aggregate_id,
            QuotaCommand::IssueGrant {
                quota: self.quota,
                account: self.account.clone(),
                terms: terms.clone(),
                at,
            },
        )?;
        decider.index::<Quota>(GRANT_ENTITY, grant_id.to_string(), &aggregate_id);
        let answer = GrantIssued {
            grant_id,
            quota: self.quota,
            account: self.account.clone(),
            source: terms.source,
            amount: terms.amount,
            priority: terms.priority,
            effective_at: terms.effective_at,
            expires_at: terms.expires_at,
            left: left(decider, &aggregate_id)?,
        };
        Reply::created(grant_id.to_string(), &answer)
    }
}

/// Revokes a purchased or promotional grant; its unused balance is breakage.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeGrant {
    pub grant_id: GrantId,
    pub quota: QuotaType,
    pub account: Option<QuotaAccount>,
}

impl Request for RevokeGrant {
    const KIND: &'static str = "revoke_grant";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Quota>(quota_aggregate_id(
            self.quota,
            self.account.as_ref(),
        ))]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let aggregate_id = quota_aggregate_id(self.quota, self.account.as_ref());
        let at = decider.at();
        let events = decider.execute::<Quota>(
            &aggregate_id,
            QuotaCommand::RevokeGrant {
                grant_id: self.grant_id,
                at,
            },
        )?;
        let breakage = events.iter().find_map(|event| match event {
            QuotaEvent::GrantRevoked {
                grant_id, breakage, ..
            } if *grant_id == self.grant_id => Some(*breakage),
            _ => None,
        });
        let answer = GrantRevoked {
            grant_id: self.grant_id,
            status: RevokedStatus::Revoked,
            breakage,
            left: left(decider, &aggregate_id)?,
        };
        Reply::ok(self.grant_id.to_string(), &answer)
    }
}

/// Consumes runs or credits, burning grants down in order; all or nothing.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumeQuota {
    pub quota: QuotaType,
    pub account: Option<QuotaAccount>,
    pub amount: Amount,
    pub reference: Option<String>,
}

impl Request for ConsumeQuota {
    const KIND: &'static str = "consume_quota";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Quota>(quota_aggregate_id(
            self.quota,
            self.account.as_ref(),
        ))]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let aggregate_id = quota_aggregate_id(self.quota, self.account.as_ref());
        let at = decider.at();
        let events = decider.execute::<Quota>(
            &aggregate_id,
            QuotaCommand::Consume {
                quota: self.quota,
                amount: self.amount,
                reference: self.reference.clone(),
                at,
            },
        )?;
        let drawn = events
            .iter()
            .find_map(|event| match event {
                QuotaEvent::QuotaConsumed {
                    allocations: drawn, ..
                } => Some(drawn.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let answer = Consumed {
            consumed: self.amount,
            reference: self.reference.clone(),
            allocations: drawn,
            left: left(decider, &aggregate_id)?,
        };
        Reply::ok(aggregate_id, &answer)
    }
}

/// Allocates or releases seats.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeSeats {
    pub account: Option<QuotaAccount>,
    pub amount: Amount,
    pub release: bool,
}

impl Request for ChangeSeats {
    const KIND: &'static str = "change_seats";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Quota>(quota_aggregate_id(
            QuotaType::Seats,
            self.account.as_ref(),
        ))]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let aggregate_id = quota_aggregate_id(QuotaType::Seats, self.account.as_ref());
        let at = decider.at();
        let command = if self.release {
            QuotaCommand::ReleaseSeats {
                amount: self.amount,
                at,
            }
        } else {
            QuotaCommand::AllocateSeats {
                amount: self.amount,
                at,
            }
        };
        let events = decider.execute::<Quota>(&aggregate_id, command)?;
        let drawn = events
            .iter()
            .find_map(|event| match event {
                QuotaEvent::SeatsAllocated {
                    allocations: drawn, ..
                }
                | QuotaEvent::SeatsReleased {
                    allocations: drawn, ..
                } => Some(drawn.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let allocated = decider
            .state::<Quota>(&aggregate_id)?
            .allocated()
            .map_err(|error| Refusal::Internal(error.to_string()))?;
        let (allocated_now, released) = if self.release {
            (None, Some(self.amount))
        } else {
            (Some(self.amount), None)
        };
        let answer = SeatsChanged {
            allocated_now,
            released,
            allocations: drawn,
            allocated,
            left: left(decider, &aggregate_id)?,
        };
        Reply::ok(aggregate_id, &answer)
    }
}

/// Expires the grants of a quota whose expiry has passed (posting breakage).
/// The scheduler submits it at a grant's expiry, carrying that time
/// (`due_at`): it expires what was due then, however late it runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireGrants {
    pub quota: QuotaType,
    pub account: Option<QuotaAccount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}

impl Request for ExpireGrants {
    const KIND: &'static str = "expire_grants";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Quota>(quota_aggregate_id(
            self.quota,
            self.account.as_ref(),
        ))]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let aggregate_id = quota_aggregate_id(self.quota, self.account.as_ref());
        let at = decider.at_due(self.due_at)?;
        let events = decider.execute::<Quota>(
            &aggregate_id,
            QuotaCommand::ExpireGrants {
                quota: self.quota,
                at,
            },
        )?;
        let expired = events
            .iter()
            .filter_map(|event| match event {
                QuotaEvent::GrantExpired {
                    grant_id, breakage, ..
                } => Some(ExpiredGrant {
                    grant_id: *grant_id,
                    breakage: *breakage,
                }),
                _ => None,
            })
            .collect();
        let answer = GrantsExpired {
            expired,
            left: left(decider, &aggregate_id)?,
        };
        Reply::ok(aggregate_id, &answer)
    }
}

/// The scheduled work of grant `grant_id`: its expiry.
pub fn grant_expiry(grant_id: GrantId) -> String {
    format!("grant:{grant_id}:expiry")
}

/// What a quota event schedules: a grant's expiry at its expiry time; its
/// end (expired or revoked) settles it.
fn schedule(
    event: &eventstore::StoredEvent,
) -> Result<Vec<projections::scheduled::ScheduleChange>, projections::ApplyError> {
    use crate::scheduler::{due, settled};
    Ok(match &*projections::decode::decoded::<Quota>(event)? {
        QuotaEvent::GrantIssued {
            quota,
            account,
            terms,
            ..
        } => match terms.expires_at {
            Some(expires_at) => vec![due(
                grant_expiry(terms.grant_id),
                expires_at,
                &ExpireGrants {
                    quota: *quota,
                    account: account.clone(),
                    due_at: Some(expires_at),
                },
            )?],
            None => Vec::new(),
        },
        QuotaEvent::GrantRevoked { grant_id, .. } | QuotaEvent::GrantExpired { grant_id, .. } => {
            vec![settled(grant_expiry(*grant_id))]
        }
        _ => Vec::new(),
    })
}

/// The quota domain: grants, consumption and seats.
pub fn domain() -> crate::domains::Domain {
    use crate::domains::{Domain, RequestKind, Section};
    use crate::pipeline::AggregateKind;
    Domain {
        name: "quota",
        aggregates: vec![AggregateKind::of::<Quota>()],
        requests: vec![
            RequestKind::of::<IssueGrant>(),
            RequestKind::of::<RevokeGrant>(),
            RequestKind::of::<ConsumeQuota>(),
            RequestKind::of::<ChangeSeats>(),
            RequestKind::of::<ExpireGrants>(),
        ],
        projections: vec![std::sync::Arc::new(projections::quota::QuotaProjection)],
        process_managers: Vec::new(),
        reactions: Vec::new(),
        schedules: vec![projections::scheduled::ScheduleReader {
            aggregate_type: aggregates::quota::QUOTA_AGGREGATE,
            events: &["GrantIssued", "GrantRevoked", "GrantExpired"],
            read: schedule,
        }],
        routes: || crate::http::grants::router().merge(crate::http::quota::router()),
        tags: vec![
            ("grants", "Grants of quota and their balances"),
            ("quota", "Consuming, allocating and reading quota"),
        ],
        sections: vec![Section {
            name: "quotas",
            aggregate_type: aggregates::quota::QUOTA_AGGREGATE,
            one: false,
            report: |aggregate_id, state, at| match state.as_any().downcast_ref::<Quota>() {
                Some(quota) => report(aggregate_id, quota, at),
                None => Value::Null,
            },
        }],
    }
}

/// A quota as a replay reports it: availability as of `at`, what was
/// consumed or allocated, and every grant in issue order.
fn report(aggregate_id: &str, quota: &Quota, at: Option<DateTime<Utc>>) -> Value {
    let (quota_type, account) = aggregates::quota::parse_quota_aggregate_id(aggregate_id).unzip();
    let available = at.and_then(|at| quota.available(at).ok());
    let consumable = quota_type.is_some_and(QuotaType::is_consumable);
    // Consumed: over every grant, open or closed (i128: a sum of i64 values
    // that cannot overflow short of 2^64 grants). Allocated: the seats on
    // open grants, and the unbacked ones.
    let (consumed, allocated, unbacked) = if consumable {
        let consumed: i128 = quota
            .grants
            .iter()
            .map(|grant| i128::from(grant.used.value()))
            .sum();
        (consumed, 0, Amount::ZERO)
    } else {
        let allocated = quota
            .allocated()
            .map_or(0, |allocated| i128::from(allocated.value()));
        (0, allocated, quota.unbacked)
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
        "consumed": consumed.to_string(),
        "allocated": allocated.to_string(),
        "unbacked": unbacked.to_string(),
        "grants": grants,
    })
}
