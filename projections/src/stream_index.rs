//! The `stream_index` projection: every aggregate (event stream) of a tenant
//! with its version and last tenant_seq; and its read queries.

use crate::runtime::{ApplyError, Projection};
use aggregates::TenantId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use eventstore::StoredEvent;
use serde::Serialize;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use utoipa::ToSchema;
use uuid::Uuid;

/// Name of the projection.
pub const NAME: &str = "stream_index";

/// Most streams one page lists.
pub const PAGE_MAX: i64 = 1_000;

pub struct StreamIndex;

/// One stream, per batch: its last version, seq and time, and its first time.
struct Latest {
    version: i64,
    last_tenant_seq: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

const UPSERT: &str = "\
    INSERT INTO stream_index (tenant_id, aggregate_type, aggregate_id, version, last_tenant_seq, created_at, updated_at) \
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::timestamptz[], $7::timestamptz[]) \
    ON CONFLICT (tenant_id, aggregate_type, aggregate_id) DO UPDATE \
    SET version = EXCLUDED.version, last_tenant_seq = EXCLUDED.last_tenant_seq, updated_at = EXCLUDED.updated_at \
    WHERE stream_index.last_tenant_seq < EXCLUDED.last_tenant_seq";

#[async_trait]
impl Projection for StreamIndex {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &["stream_index"]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        // One row per stream for the whole batch (set-based, one statement).
        let mut latest: BTreeMap<(Uuid, &str, &str), Latest> = BTreeMap::new();
        for event in events {
            latest
                .entry((
                    event.tenant_id.as_uuid(),
                    event.aggregate_type.as_str(),
                    event.aggregate_id.as_str(),
                ))
                .and_modify(|stream| {
                    stream.version = event.aggregate_seq;
                    stream.last_tenant_seq = event.tenant_seq;
                    stream.updated_at = event.recorded_at;
                })
                .or_insert(Latest {
                    version: event.aggregate_seq,
                    last_tenant_seq: event.tenant_seq,
                    created_at: event.recorded_at,
                    updated_at: event.recorded_at,
                });
        }
        let tenants: Vec<Uuid> = latest.keys().map(|(tenant, _, _)| *tenant).collect();
        let types: Vec<&str> = latest
            .keys()
            .map(|(_, aggregate_type, _)| *aggregate_type)
            .collect();
        let ids: Vec<&str> = latest
            .keys()
            .map(|(_, _, aggregate_id)| *aggregate_id)
            .collect();
        let versions: Vec<i64> = latest.values().map(|stream| stream.version).collect();
        let seqs: Vec<i64> = latest
            .values()
            .map(|stream| stream.last_tenant_seq)
            .collect();
        let created: Vec<DateTime<Utc>> = latest.values().map(|stream| stream.created_at).collect();
        let updated: Vec<DateTime<Utc>> = latest.values().map(|stream| stream.updated_at).collect();
        sqlx::query(UPSERT)
            .bind(&tenants)
            .bind(&types)
            .bind(&ids)
            .bind(&versions)
            .bind(&seqs)
            .bind(&created)
            .bind(&updated)
            .execute(connection)
            .await?;
        Ok(())
    }
}

/// A stream as listed.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Stream {
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// aggregate_seq of the last event (the number of events).
    pub version: i64,
    /// tenant_seq of the last event.
    pub last_tenant_seq: i64,
    /// Time of the first event.
    pub created_at: DateTime<Utc>,
    /// Time of the last event.
    pub updated_at: DateTime<Utc>,
}

type StreamRow = (String, String, i64, i64, DateTime<Utc>, DateTime<Utc>);

/// A page of the tenant's streams ordered by (type, id), after the given
/// (type, id), optionally of one aggregate type. Run inside a tenant read
/// transaction.
pub async fn list(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    aggregate_type: Option<&str>,
    after: Option<(&str, &str)>,
    limit: i64,
) -> Result<Vec<Stream>, sqlx::Error> {
    let rows: Vec<StreamRow> = sqlx::query_as(
        "SELECT aggregate_type, aggregate_id, version, last_tenant_seq, created_at, updated_at \
         FROM stream_index \
         WHERE tenant_id = $1 \
           AND ($2::text IS NULL OR aggregate_type = $2) \
           AND ($3::text IS NULL OR (aggregate_type, aggregate_id) > ($3, $4)) \
         ORDER BY aggregate_type, aggregate_id \
         LIMIT $5",
    )
    .bind(tenant_id.as_uuid())
    .bind(aggregate_type)
    .bind(after.map(|(aggregate_type, _)| aggregate_type))
    .bind(after.map(|(_, aggregate_id)| aggregate_id))
    .bind(limit.clamp(1, PAGE_MAX))
    .fetch_all(connection)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(aggregate_type, aggregate_id, version, last_tenant_seq, created_at, updated_at)| {
                Stream {
                    aggregate_type,
                    aggregate_id,
                    version,
                    last_tenant_seq,
                    created_at,
                    updated_at,
                }
            },
        )
        .collect())
}
