//! Documentation schemas of command answers (the answers themselves are
//! built by the pipeline and replayed verbatim for a repeated key).

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

/// Every accepted command answers with these fields, plus its own (see each
/// route). A repeated Idempotency-Key answers the same body with
/// `Idempotent-Replayed: true`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandAnswer {
    /// The aggregate the command is about.
    pub aggregate_id: String,
    /// The events appended, in order.
    pub events: Vec<AppendedEventView>,
    /// tenant_seq the ledger reached; pass it as `min_seq` to read your write.
    pub tenant_seq: i64,
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
