//! When a time is closed: every event recorded at or before it committed,
//! so that an answer as of it is the same on any later day.
//!
//! An event's time is its request's stamp, taken when the request is
//! decided; the append commits it a moment later. Two rules close the gap:
//! - an append takes the tenant's append lock (shared, [`append_lock_key`])
//!   before its head row, and advances the head only while it is within
//!   [`APPEND_WITHIN`] of its decision, else it is refused as if the head
//!   had moved, and the pipeline decides the request again at a new time;
//! - a read as of a time at least [`APPEND_WITHIN`] (and a margin) past
//!   first waits out every append holding the tenant's lock
//!   ([`EventStore::settle`]).
//!
//! So an append stamped at or before a closed time has committed, or holds
//! the lock (and the read waits for it), or can no longer commit.

use crate::{EventStore, StoreError};
use aggregates::TenantId;
use std::time::Duration;

/// How long after its decision an append may still take its tenant's head:
/// past it, the head is not advanced and the request is decided again. A
/// time is closed for reads a margin after this.
pub const APPEND_WITHIN: Duration = Duration::from_secs(4);

/// Advisory lock namespace of the tenants' append locks (`ledj` in ASCII).
pub const APPEND_LOCK_NAMESPACE: i32 = 0x6c65_646a;

/// The key of `tenant_id`'s append lock in [`APPEND_LOCK_NAMESPACE`]: the
/// last four bytes of its id, random in a UUIDv7 (its first bytes are its
/// creation time, shared by the tenants created within a minute). Two
/// tenants sharing a key only wait for each other's appends a moment
/// longer.
pub fn append_lock_key(tenant_id: TenantId) -> i32 {
    let bytes = tenant_id.as_uuid().into_bytes();
    i32::from_be_bytes([bytes[12], bytes[13], bytes[14], bytes[15]])
}

impl EventStore {
    /// Waits until no append of `tenant_id` that began before this call is
    /// still in flight (each has committed or failed): taken before a time
    /// is turned into a seq, so that a closed time's answer holds every
    /// event recorded at or before it. Any role may: the lock is advisory.
    pub async fn settle(&self, tenant_id: TenantId) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
            .bind(APPEND_LOCK_NAMESPACE)
            .bind(append_lock_key(tenant_id))
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
