//! Documentation schemas of command answers (the answers themselves are
//! built by the pipeline and replayed verbatim for a repeated key). Every
//! accepted command answers `aggregate_id`, `events` and `tenant_seq` (pass
//! it as `min_seq` to read your write), plus its own fields; a repeated
//! Idempotency-Key answers the same body with `Idempotent-Replayed: true`.

use serde::Serialize;
use utoipa::ToSchema;

/// An event a command appended.
#[derive(Debug, Serialize, ToSchema)]
pub struct AppendedEventView {
    /// Event type, e.g. `QuotaConsumed`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub tenant_seq: i64,
    /// blake3 chain hash, hex.
    pub hash: String,
}

/// One grant's part of a consumption or allocation.
#[derive(Debug, Serialize, ToSchema)]
pub struct AllocationView {
    pub grant_id: uuid::Uuid,
    pub amount: i64,
}

/// The answer to a consumption.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsumeAnswer {
    pub consumed: i64,
    pub reference: Option<String>,
    /// Which grants it was drawn from, in burn-down order.
    pub allocations: Vec<AllocationView>,
    /// Units left; `null` when unlimited.
    pub available: Option<i64>,
    pub unlimited: bool,
    pub aggregate_id: String,
    pub events: Vec<AppendedEventView>,
    pub tenant_seq: i64,
}

/// The answer to issuing a grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct GrantIssuedAnswer {
    pub grant_id: uuid::Uuid,
    pub quota: String,
    pub account: Option<String>,
    pub source: String,
    /// `null` is unlimited.
    pub amount: Option<i64>,
    pub priority: u8,
    pub effective_at: String,
    pub expires_at: Option<String>,
    pub available: Option<i64>,
    pub unlimited: bool,
    pub aggregate_id: String,
    pub events: Vec<AppendedEventView>,
    pub tenant_seq: i64,
}

/// A plan's per-period limits (`null` is unlimited).
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanLimitsView {
    pub seats: Option<i64>,
    pub runs: Option<i64>,
    pub credits: Option<i64>,
}

/// A grant a subscription command issued.
#[derive(Debug, Serialize, ToSchema)]
pub struct PlanGrantView {
    pub grant_id: uuid::Uuid,
    /// `seats`, `runs` or `credits`.
    pub quota: String,
    /// `null` is unlimited.
    pub amount: Option<i64>,
}

/// A subscription grant a command ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct EndedGrantView {
    pub grant_id: uuid::Uuid,
    pub quota: String,
    /// `revoked` or `expired`.
    pub ended: String,
    /// Unused balance posted as breakage.
    pub breakage: i64,
}

/// The answer to subscribe, change-plan, cancel and renew: the subscription
/// after the command, and the grants it issued or ended.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionAnswer {
    /// `active` or `cancelled`.
    pub status: String,
    /// Active only.
    pub plan: Option<String>,
    /// Active only.
    pub limits: Option<PlanLimitsView>,
    pub trial_ends_at: Option<String>,
    /// Active only.
    pub period_start: Option<String>,
    /// Active only.
    pub period_end: Option<String>,
    /// Active only: a cancellation takes effect at the period end.
    pub cancel_at_period_end: Option<bool>,
    /// Cancelled only.
    pub cancelled_at: Option<String>,
    /// Subscribe, change-plan and renew: the plan's grants issued.
    pub grants_issued: Option<Vec<PlanGrantView>>,
    /// Change-plan, cancel and renew: the subscription grants ended.
    pub grants_ended: Option<Vec<EndedGrantView>>,
    pub aggregate_id: String,
    pub events: Vec<AppendedEventView>,
    pub tenant_seq: i64,
}

/// The answer to revoking a grant.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokeAnswer {
    pub grant_id: uuid::Uuid,
    /// `revoked`.
    pub status: String,
    /// Unused balance posted as breakage.
    pub breakage: i64,
    /// The quota's units left; `null` when unlimited.
    pub available: Option<i64>,
    pub unlimited: bool,
    pub aggregate_id: String,
    pub events: Vec<AppendedEventView>,
    pub tenant_seq: i64,
}

/// The answer to allocating or releasing seats.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeatsAnswer {
    /// Allocate only: seats allocated by this command.
    pub allocated_now: Option<i64>,
    /// Release only: seats released by this command.
    pub released: Option<i64>,
    /// The grants the seats were taken from or given back to.
    pub allocations: Vec<AllocationView>,
    /// Seats allocated in all after the command (unbacked ones included).
    pub allocated: i64,
    /// Seats left; `null` when unlimited.
    pub available: Option<i64>,
    pub unlimited: bool,
    pub aggregate_id: String,
    pub events: Vec<AppendedEventView>,
    pub tenant_seq: i64,
}

/// A grant an expiry closed.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExpiredGrantView {
    pub grant_id: uuid::Uuid,
    /// Unused balance posted as breakage.
    pub breakage: i64,
}

/// The answer to expiring a quota's grants.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExpireAnswer {
    /// The grants expired (none when nothing was past its expiry).
    pub expired: Vec<ExpiredGrantView>,
    /// Units left; `null` when unlimited.
    pub available: Option<i64>,
    pub unlimited: bool,
    pub aggregate_id: String,
    pub events: Vec<AppendedEventView>,
    pub tenant_seq: i64,
}
