//! The events an audit reads, from the database or from an export file, in
//! one shape: every hashed column, with payload and metadata as their
//! canonical text.

use aggregates::TenantId;
use chrono::{DateTime, Utc};
use eventstore::chain::EventFields;
use eventstore::{ChainHash, EventStore, JsonText, StoreError, StoredEvent, TenantRange};
use sqlx::PgConnection;
use uuid::Uuid;

/// Events read per page while streaming a tenant.
pub const PAGE_EVENTS: i64 = 10_000;

/// One event as an audit sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub tenant_id: TenantId,
    pub tenant_seq: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub aggregate_seq: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    /// Canonical JSON text (what the chain hashes).
    pub payload: String,
    pub metadata: String,
    pub idempotency_key: String,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: ChainHash,
    pub hash: ChainHash,
}

impl AuditEvent {
    /// The hashed columns.
    pub fn fields(&self) -> EventFields<'_> {
        EventFields {
            tenant_id: self.tenant_id.as_uuid(),
            tenant_seq: self.tenant_seq,
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            aggregate_seq: self.aggregate_seq,
            event_id: self.event_id,
            event_type: &self.event_type,
            event_version: &self.event_version,
            payload: &self.payload,
            metadata: &self.metadata,
            idempotency_key: &self.idempotency_key,
            recorded_at_micros: self.recorded_at.timestamp_micros(),
        }
    }
}

impl AuditEvent {
    /// The event as the store reads it, for a domain's schedule or
    /// reaction reader; `None` when its payload is not JSON. Its place in
    /// the global order is not known here (0), and its metadata, which no
    /// reader reads, is left out (`null`: parsing it would cost as much as
    /// the payload).
    pub fn to_stored(&self) -> Option<StoredEvent> {
        Some(StoredEvent {
            tenant_id: self.tenant_id,
            tenant_seq: self.tenant_seq,
            global_position: 0,
            transaction_id: 0,
            aggregate_type: self.aggregate_type.clone(),
            aggregate_id: self.aggregate_id.clone(),
            aggregate_seq: self.aggregate_seq,
            event_id: self.event_id,
            event_type: self.event_type.clone(),
            event_version: self.event_version.clone(),
            payload: serde_json::from_str(&self.payload).ok()?,
            metadata: JsonText::from_value(&serde_json::Value::Null).ok()?,
            idempotency_key: self.idempotency_key.clone(),
            recorded_at: self.recorded_at,
            prev_hash: self.prev_hash,
            hash: self.hash,
            decoded: Default::default(),
        })
    }
}

impl From<StoredEvent> for AuditEvent {
    fn from(event: StoredEvent) -> Self {
        Self {
            tenant_id: event.tenant_id,
            tenant_seq: event.tenant_seq,
            aggregate_type: event.aggregate_type,
            aggregate_id: event.aggregate_id,
            aggregate_seq: event.aggregate_seq,
            event_id: event.event_id,
            event_type: event.event_type,
            event_version: event.event_version,
            payload: event.payload.into_string(),
            metadata: event.metadata.into_string(),
            idempotency_key: event.idempotency_key,
            recorded_at: event.recorded_at,
            prev_hash: event.prev_hash,
            hash: event.hash,
        }
    }
}

/// A page of a tenant's events after `after_seq`, up to `until_seq`, as
/// the store reads them (every column, for a projection to apply too), in
/// seq order.
pub async fn stored_page(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    after_seq: i64,
    until_seq: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let range = TenantRange {
        tenant_id,
        after_seq,
        until_seq,
    };
    EventStore::read_tenants_on(connection, &[range], PAGE_EVENTS).await
}

/// The tenant's chain head row (seq, hash), as `connection` reads it (a
/// snapshot's); `None` when it has none.
pub async fn stored_head(
    connection: &mut PgConnection,
    tenant_id: TenantId,
) -> Result<Option<(i64, ChainHash)>, StoreError> {
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT last_seq, last_hash FROM chain_heads WHERE tenant_id = $1")
            .bind(tenant_id.as_uuid())
            .fetch_optional(&mut *connection)
            .await?;
    head.map(|(seq, hash)| Ok((seq, stored_hash(&hash, "chain head hash", tenant_id)?)))
        .transpose()
}

/// A hash of `tenant_id`'s chain as stored (32 bytes); `what` names it in
/// the error when it is not.
pub fn stored_hash(bytes: &[u8], what: &str, tenant_id: TenantId) -> Result<ChainHash, StoreError> {
    ChainHash::from_slice(bytes)
        .ok_or_else(|| StoreError::Corrupt(format!("{what} of tenant {tenant_id} is not 32 bytes")))
}

/// A page of a tenant's events after `after_seq`, up to `until_seq`, in seq
/// order.
pub async fn page(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    after_seq: i64,
    until_seq: i64,
) -> Result<Vec<AuditEvent>, StoreError> {
    let events = stored_page(connection, tenant_id, after_seq, until_seq).await?;
    Ok(events.into_iter().map(AuditEvent::from).collect())
}
