//! The `compensation` projection: each plan (every version), role, payee
//! (profile, assignments and the ledger of every line with where it
//! stands) and pay run as its events leave it, kept as a document with its
//! status, for the compensation reads.

use crate::documents::{self, DocumentRow};
use crate::runtime::{ApplyError, Projection};
use aggregates::compensation::plan::{PLAN_AGGREGATE, ROLE_AGGREGATE};
use aggregates::compensation::run::PAY_RUN_AGGREGATE;
use aggregates::compensation::{PayRun, Payee, Plan, Role, PAYEE_AGGREGATE};
use aggregates::TenantId;
use async_trait::async_trait;
use eventstore::StoredEvent;
use sqlx::PgConnection;

pub const NAME: &str = "compensation";

/// The documents' table.
pub const TABLE: &str = "compensation_documents";

pub const PLAN: &str = "plan";
pub const ROLE: &str = "role";
pub const PAYEE: &str = "payee";
pub const PAY_RUN: &str = "pay_run";

/// The status of a document that has none of its own.
fn active() -> String {
    "active".to_string()
}

pub struct Compensation;

/// The kind of document an aggregate type makes.
fn kind_of(aggregate_type: &str) -> Option<&'static str> {
    match aggregate_type {
        PLAN_AGGREGATE => Some(PLAN),
        ROLE_AGGREGATE => Some(ROLE),
        PAYEE_AGGREGATE => Some(PAYEE),
        PAY_RUN_AGGREGATE => Some(PAY_RUN),
        _ => None,
    }
}

#[async_trait]
impl Projection for Compensation {
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
            .filter_map(|event| kind_of(&event.aggregate_type).map(|kind| (*event, kind)))
            .collect();
        if ours.is_empty() {
            return Ok(());
        }
        let kinds = [PLAN, ROLE, PAYEE, PAY_RUN];
        let mut found = documents::load(connection, TABLE, &kinds, &ours).await?;
        for (event, kind) in ours {
            let key = (event.tenant_id.as_uuid(), kind, event.aggregate_id.clone());
            match kind {
                PLAN => documents::fold::<Plan>(&mut found, key, event, |_: &Plan| active())?,
                ROLE => documents::fold::<Role>(&mut found, key, event, |_: &Role| active())?,
                PAYEE => documents::fold::<Payee>(&mut found, key, event, |_: &Payee| active())?,
                _ => documents::fold::<PayRun>(&mut found, key, event, |run: &PayRun| {
                    documents::status_text(run.status)
                })?,
            }
        }
        documents::write(connection, TABLE, found).await
    }
}

/// Document `kind` `id`, inside a tenant read transaction.
pub async fn get(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    kind: &str,
    id: &str,
) -> Result<Option<DocumentRow>, sqlx::Error> {
    documents::get(connection, TABLE, tenant_id, kind, id).await
}

/// The tenant's documents of `kind` (of `status`) after `after`, by id.
pub async fn list(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    kind: &str,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<DocumentRow>, sqlx::Error> {
    documents::list(connection, TABLE, tenant_id, kind, status, after, limit).await
}
