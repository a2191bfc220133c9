//! The envelope every accepted command answers in. Each request's own
//! answer is typed beside the request (`crate::requests`); the pipeline adds
//! `aggregate_id`, `events` and `tenant_seq` (pass it as `min_seq` to read
//! your write). A repeated Idempotency-Key answers the same body with
//! `Idempotent-Replayed: true`.

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

/// An accepted command's answer: the request's own answer `T`, and what
/// the pipeline appended.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted<T: ToSchema> {
    #[serde(flatten)]
    pub answer: T,
    /// The aggregate the command is about.
    pub aggregate_id: String,
    /// The events appended, in order.
    pub events: Vec<AppendedEventView>,
    /// The tenant's seq after the append.
    pub tenant_seq: i64,
}
