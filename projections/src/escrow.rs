//! The `escrow` projection: each commitment as its events leave it, kept
//! as a document (the aggregate's state: milestones, deposits with what is
//! left of them, transfers with their lineage, claims) with its status, for
//! the escrow reads.

use crate::documents::{self, DocumentRow};
use crate::runtime::{ApplyError, Projection};
use aggregates::escrow::{Commitment, COMMITMENT_AGGREGATE};
use aggregates::TenantId;
use async_trait::async_trait;
use eventstore::StoredEvent;
use sqlx::PgConnection;

pub const NAME: &str = "escrow";

/// The documents' table.
pub const TABLE: &str = "commitment_documents";

/// The one kind of document.
pub const KIND: &str = "commitment";

pub struct Escrow;

/// Where a commitment stands (its status as the API spells it).
fn status(commitment: &Commitment) -> String {
    documents::status_text(commitment.status())
}

#[async_trait]
impl Projection for Escrow {
    fn name(&self) -> &'static str {
        NAME
    }

    fn version(&self) -> i32 {
        1
    }

    fn tables(&self) -> &'static [&'static str] {
        &[TABLE]
    }

    async fn apply(
        &self,
        connection: &mut PgConnection,
        events: &[&StoredEvent],
    ) -> Result<(), ApplyError> {
        let ours: Vec<(&StoredEvent, &'static str)> = events
            .iter()
            .filter(|event| event.aggregate_type == COMMITMENT_AGGREGATE)
            .map(|event| (*event, KIND))
            .collect();
        if ours.is_empty() {
            return Ok(());
        }
        let mut found = documents::load(connection, TABLE, &[KIND], &ours).await?;
        for (event, kind) in ours {
            let key = (event.tenant_id.as_uuid(), kind, event.aggregate_id.clone());
            documents::fold(&mut found, key, event, status)?;
        }
        documents::write(connection, TABLE, found).await
    }
}

/// Commitment `id`, inside a tenant read transaction.
pub async fn get(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    id: &str,
) -> Result<Option<DocumentRow>, sqlx::Error> {
    documents::get(connection, TABLE, tenant_id, KIND, id).await
}

/// The tenant's commitments (of `status`) after `after`, by id.
pub async fn list(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<DocumentRow>, sqlx::Error> {
    documents::list(connection, TABLE, tenant_id, KIND, status, after, limit).await
}
