//! Loading aggregates: the latest snapshot, if any, and the events after it.

use crate::error::StoreError;
use crate::EventStore;
use aggregates::TenantId;
use cqrs_es::persist::SerializedEvent;
use serde_json::Value;
use std::collections::HashMap;

/// An aggregate within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AggregateKey {
    pub aggregate_type: String,
    pub aggregate_id: String,
}

impl AggregateKey {
    pub fn new(aggregate_type: impl Into<String>, aggregate_id: impl Into<String>) -> Self {
        Self {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
        }
    }
}

/// A stored snapshot of an aggregate.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// aggregate_seq of the last event folded in.
    pub last_sequence: i64,
    /// How many snapshots have been taken of the aggregate.
    pub snapshot_version: i64,
    /// The serialized state.
    pub payload: Value,
}

/// What it takes to rebuild an aggregate: a snapshot and the events after it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AggregateHistory {
    pub snapshot: Option<Snapshot>,
    /// Events after the snapshot (all events when there is none), in order.
    pub events: Vec<SerializedEvent>,
}

// Snapshots and the events after them in one statement (one snapshot of
// the database, one round trip), for aggregates of any tenants: a snapshot
// row has no event type, and its seq (the last event it folds) puts it
// before its aggregate's events. Each part is one index probe or range
// scan per aggregate, whatever plan the prepared statement settles on (the
// subqueries with LIMIT or ORDER BY are never flattened into a join, which
// a generic plan might make read a tenant's whole history to find the few
// aggregates asked for, most of them new, with no event at all), once the
// events have statistics (see `EventStore::analyze_events_once`).
const SELECT_HISTORIES: &str = "\
    WITH k AS ( \
        SELECT k.tenant_id, k.aggregate_type, k.aggregate_id, s.last_sequence, s.snapshot_version, s.payload \
        FROM unnest($1::uuid[], $2::text[], $3::text[]) AS k(tenant_id, aggregate_type, aggregate_id) \
        LEFT JOIN LATERAL ( \
            SELECT s.last_sequence, s.snapshot_version, s.payload FROM snapshots s \
            WHERE s.tenant_id = k.tenant_id \
              AND s.aggregate_type = k.aggregate_type \
              AND s.aggregate_id = k.aggregate_id \
            LIMIT 1) s ON true \
    ) \
    SELECT k.tenant_id, k.aggregate_type, k.aggregate_id, k.last_sequence AS seq, NULL::text AS event_type, \
           NULL::text AS event_version, k.payload, NULL::jsonb AS metadata, k.snapshot_version \
    FROM k WHERE k.last_sequence IS NOT NULL \
    UNION ALL \
    SELECT k.tenant_id, e.aggregate_type, e.aggregate_id, e.aggregate_seq, e.event_type, e.event_version, \
           e.payload, e.metadata, NULL \
    FROM k CROSS JOIN LATERAL ( \
        SELECT * FROM events e \
        WHERE e.tenant_id = k.tenant_id \
          AND e.aggregate_type = k.aggregate_type \
          AND e.aggregate_id = k.aggregate_id \
          AND e.aggregate_seq > coalesce(k.last_sequence, 0) \
        ORDER BY e.aggregate_seq) e \
    ORDER BY 1, 2, 3, 4";

/// A row of [`SELECT_HISTORIES`]: a snapshot (no event type, its version
/// last) or an event.
type HistoryRow = (
    uuid::Uuid,
    String,
    String,
    i64,
    Option<String>,
    Option<String>,
    Value,
    Option<Value>,
    Option<i64>,
);

// One index range scan per aggregate (see SELECT_HISTORIES).
const SELECT_EVENTS_AFTER: &str = "\
    SELECT e.aggregate_type, e.aggregate_id, e.aggregate_seq, e.event_type, e.event_version, \
           e.payload, e.metadata \
    FROM unnest($2::text[], $3::text[], $4::bigint[]) AS k(aggregate_type, aggregate_id, after_seq) \
    CROSS JOIN LATERAL ( \
        SELECT * FROM events e \
        WHERE e.tenant_id = $1 \
          AND e.aggregate_type = k.aggregate_type \
          AND e.aggregate_id = k.aggregate_id \
          AND e.aggregate_seq > k.after_seq \
        ORDER BY e.aggregate_seq) e \
    ORDER BY e.aggregate_type, e.aggregate_id, e.aggregate_seq";

const UPSERT_SNAPSHOT: &str = "\
    INSERT INTO snapshots (tenant_id, aggregate_type, aggregate_id, last_sequence, snapshot_version, payload, taken_at) \
    VALUES ($1, $2, $3, $4, 1, $5, now()) \
    ON CONFLICT (tenant_id, aggregate_type, aggregate_id) DO UPDATE \
    SET last_sequence = EXCLUDED.last_sequence, \
        snapshot_version = snapshots.snapshot_version + 1, \
        payload = EXCLUDED.payload, \
        taken_at = EXCLUDED.taken_at \
    WHERE snapshots.last_sequence < EXCLUDED.last_sequence";

const SELECT_AGGREGATE_PAGE: &str = "\
    SELECT aggregate_type, aggregate_id, aggregate_seq, event_type, event_version, payload, metadata \
    FROM events \
    WHERE tenant_id = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND aggregate_seq > $4 \
    ORDER BY aggregate_seq LIMIT $5";

const SELECT_AGGREGATE_OF_TYPES: &str = "\
    SELECT aggregate_type, aggregate_id, aggregate_seq, event_type, event_version, payload, metadata \
    FROM events \
    WHERE tenant_id = $1 AND aggregate_type = $2 AND aggregate_id = $3 AND event_type = ANY($4) \
    ORDER BY aggregate_seq";

type EventRow = (String, String, i64, String, String, Value, Value);

fn serialized_from_row(row: EventRow) -> SerializedEvent {
    let (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata) =
        row;
    SerializedEvent {
        aggregate_id,
        // aggregate_seq is CHECKed positive, so it fits a usize on 64-bit targets.
        sequence: usize::try_from(sequence).unwrap_or(usize::MAX),
        aggregate_type,
        event_type,
        event_version,
        payload,
        metadata,
    }
}

const SELECT_INDEXED: &str = "\
    SELECT aggregate_type, aggregate_id FROM entity_index \
    WHERE tenant_id = $1 AND entity_type = $2 AND entity_id = $3";

impl EventStore {
    /// The aggregate holding the entity `entity_type` `entity_id` of the
    /// tenant (a grant's quota), from the index the append writes with the
    /// events that created it; `None` when the tenant has no such entity.
    pub async fn find_indexed(
        &self,
        tenant_id: TenantId,
        entity_type: &str,
        entity_id: &str,
    ) -> Result<Option<AggregateKey>, StoreError> {
        let row: Option<(String, String)> = sqlx::query_as(SELECT_INDEXED)
            .bind(tenant_id.as_uuid())
            .bind(entity_type)
            .bind(entity_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|(aggregate_type, aggregate_id)| AggregateKey::new(aggregate_type, aggregate_id)))
    }

    /// Snapshots and following events of several aggregates of one tenant, in
    /// one query. Aggregates with no events and no snapshot are absent.
    pub async fn load_histories(
        &self,
        tenant_id: TenantId,
        keys: &[AggregateKey],
    ) -> Result<HashMap<AggregateKey, AggregateHistory>, StoreError> {
        let keys: Vec<(TenantId, &AggregateKey)> =
            keys.iter().map(|key| (tenant_id, key)).collect();
        Ok(self
            .load_tenant_histories(&keys)
            .await?
            .into_iter()
            .map(|((_, key), history)| (key, history))
            .collect())
    }

    /// Snapshots and following events of aggregates of any tenants, in one
    /// query (a batch of requests of several tenants loads in one round
    /// trip). Aggregates with no events and no snapshot are absent.
    pub async fn load_tenant_histories(
        &self,
        keys: &[(TenantId, &AggregateKey)],
    ) -> Result<HashMap<(TenantId, AggregateKey), AggregateHistory>, StoreError> {
        let tenants: Vec<uuid::Uuid> = keys.iter().map(|(tenant, _)| tenant.as_uuid()).collect();
        let types: Vec<&str> = keys
            .iter()
            .map(|(_, key)| key.aggregate_type.as_str())
            .collect();
        let ids: Vec<&str> = keys
            .iter()
            .map(|(_, key)| key.aggregate_id.as_str())
            .collect();
        let rows: Vec<HistoryRow> = sqlx::query_as(SELECT_HISTORIES)
            .bind(&tenants)
            .bind(&types)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        let mut histories: HashMap<(TenantId, AggregateKey), AggregateHistory> = HashMap::new();
        for (
            tenant,
            aggregate_type,
            aggregate_id,
            seq,
            event_type,
            event_version,
            payload,
            metadata,
            snapshot_version,
        ) in rows
        {
            let key = AggregateKey::new(aggregate_type, aggregate_id);
            let history = histories
                .entry((TenantId::from_uuid(tenant), key.clone()))
                .or_default();
            match (event_type, event_version, metadata, snapshot_version) {
                (None, None, None, Some(snapshot_version)) => {
                    history.snapshot = Some(Snapshot {
                        last_sequence: seq,
                        snapshot_version,
                        payload,
                    });
                }
                (Some(event_type), Some(event_version), Some(metadata), None) => {
                    history.events.push(serialized_from_row((
                        key.aggregate_type,
                        key.aggregate_id,
                        seq,
                        event_type,
                        event_version,
                        payload,
                        metadata,
                    )));
                }
                _ => {
                    return Err(StoreError::Corrupt(format!(
                        "{}/{} of tenant {tenant} at {seq}: a history row that is neither a snapshot nor an event",
                        key.aggregate_type, key.aggregate_id
                    )))
                }
            }
        }
        Ok(histories)
    }

    /// Events of one aggregate with `aggregate_seq > after_seq`, in order.
    pub async fn load_events(
        &self,
        tenant_id: TenantId,
        key: &AggregateKey,
        after_seq: i64,
    ) -> Result<Vec<SerializedEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(SELECT_EVENTS_AFTER)
            .bind(tenant_id.as_uuid())
            .bind([key.aggregate_type.as_str()])
            .bind([key.aggregate_id.as_str()])
            .bind([after_seq])
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(serialized_from_row).collect())
    }

    /// The events of one aggregate whose stored type is one of
    /// `event_types`, in order. The others are read in the index range and
    /// dropped by the filter, their payloads neither sent nor decoded.
    pub async fn load_events_of_types(
        &self,
        tenant_id: TenantId,
        key: &AggregateKey,
        event_types: &[&str],
    ) -> Result<Vec<SerializedEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(SELECT_AGGREGATE_OF_TYPES)
            .bind(tenant_id.as_uuid())
            .bind(&key.aggregate_type)
            .bind(&key.aggregate_id)
            .bind(event_types)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(serialized_from_row).collect())
    }

    /// At most `limit` events of one aggregate after `after_seq`, in order.
    pub async fn load_events_page(
        &self,
        tenant_id: TenantId,
        key: &AggregateKey,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<SerializedEvent>, StoreError> {
        let rows: Vec<EventRow> = sqlx::query_as(SELECT_AGGREGATE_PAGE)
            .bind(tenant_id.as_uuid())
            .bind(&key.aggregate_type)
            .bind(&key.aggregate_id)
            .bind(after_seq)
            .bind(limit.clamp(1, crate::read::READ_PAGE_MAX))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(serialized_from_row).collect())
    }

    /// Stores a snapshot of an aggregate taken after its event `last_sequence`;
    /// an older snapshot never replaces a newer one.
    pub async fn save_snapshot(
        &self,
        tenant_id: TenantId,
        key: &AggregateKey,
        last_sequence: i64,
        payload: &Value,
    ) -> Result<(), StoreError> {
        sqlx::query(UPSERT_SNAPSHOT)
            .bind(tenant_id.as_uuid())
            .bind(&key.aggregate_type)
            .bind(&key.aggregate_id)
            .bind(last_sequence)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
