//! The `payments` projection: each payment, gift card, settlement batch
//! and payout as its events leave it, kept as a document (the aggregate's
//! state) with its status, for the payment reads; and every break of a
//! settlement batch, open or resolved (`payment_breaks`).

use crate::documents;
use crate::runtime::{ApplyError, Projection};
use aggregates::payments::gift_card::{GiftCard, GIFT_CARD_AGGREGATE};
use aggregates::payments::payout::{Payout, PAYOUT_AGGREGATE};
use aggregates::payments::settlement::{Settlement, SETTLEMENT_AGGREGATE};
use aggregates::payments::{Payment, PAYMENT_AGGREGATE};
use async_trait::async_trait;
use eventstore::StoredEvent;
use sqlx::PgConnection;

pub const NAME: &str = "payments";

/// The documents' table.
pub const TABLE: &str = "payment_documents";

pub struct Payments;

/// Every kind of document.
const KINDS: [&str; 4] = ["payment", "gift_card", "settlement", "payout"];

/// The kind of document the events of `aggregate_type` make.
fn kind_of(aggregate_type: &str) -> Option<&'static str> {
    match aggregate_type {
        PAYMENT_AGGREGATE => Some("payment"),
        GIFT_CARD_AGGREGATE => Some("gift_card"),
        SETTLEMENT_AGGREGATE => Some("settlement"),
        PAYOUT_AGGREGATE => Some("payout"),
        _ => None,
    }
}

/// Where a payment stands (its status as the API spells it).
fn payment_status(payment: &Payment) -> String {
    documents::status_text(payment.status())
}

fn settlement_status(settlement: &Settlement) -> String {
    match settlement.paid_out {
        Some(_) => "paid_out".into(),
        None => "imported".into(),
    }
}

fn payout_status(payout: &Payout) -> String {
    payout
        .status
        .map_or_else(String::new, |status| status.as_str().to_string())
}

#[async_trait]
impl Projection for Payments {
    fn name(&self) -> &'static str {
        NAME
    }

    /// 3: a payment's status reads `partially_captured` while an
    /// authorization is open, and no longer `null` once its releases pass
    /// its amount; a payout keeps when it was paid and failed (its rows are
    /// rebuilt on the first start).
    fn version(&self) -> i32 {
        3
    }

    fn tables(&self) -> &'static [&'static str] {
        &["payment_documents", "payment_breaks"]
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
        let mut documents = documents::load(connection, TABLE, &KINDS, &ours).await?;
        for (event, kind) in ours {
            let key = (event.tenant_id.as_uuid(), kind, event.aggregate_id.clone());
            match kind {
                "payment" => documents::fold(&mut documents, key, event, payment_status)?,
                "gift_card" => documents::fold(&mut documents, key, event, |_: &GiftCard| {
                    "active".to_string()
                })?,
                "settlement" => documents::fold(&mut documents, key, event, settlement_status)?,
                _ => documents::fold(&mut documents, key, event, payout_status)?,
            }
        }
        documents::write(connection, TABLE, documents).await?;
        crate::payment_breaks::apply(connection, events).await
    }
}

pub use documents::DocumentRow as PaymentDocument;

/// The payment document of `kind` `id`, inside a tenant read transaction.
pub async fn get(
    connection: &mut PgConnection,
    tenant_id: aggregates::TenantId,
    kind: &str,
    id: &str,
) -> Result<Option<PaymentDocument>, sqlx::Error> {
    documents::get(connection, TABLE, tenant_id, kind, id).await
}

/// The payment documents of `kind` among `ids`, by id.
pub async fn get_many(
    connection: &mut PgConnection,
    tenant_id: aggregates::TenantId,
    kind: &str,
    ids: &[String],
) -> Result<Vec<PaymentDocument>, sqlx::Error> {
    documents::get_many(connection, TABLE, tenant_id, kind, ids).await
}

/// The payment documents of `kind` (of `status`) after `after`, by id.
pub async fn list(
    connection: &mut PgConnection,
    tenant_id: aggregates::TenantId,
    kind: &str,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<PaymentDocument>, sqlx::Error> {
    documents::list(connection, TABLE, tenant_id, kind, status, after, limit).await
}

/// A settlement batch in sum, its lines added up by the database (a
/// payout reads its batches so: up to 100 of up to 10,000 lines each,
/// never brought out whole).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct BatchSums {
    /// `<processor>:<batch_id>`.
    pub id: String,
    pub status: String,
    pub batch_id: String,
    pub settled_at: Option<chrono::DateTime<chrono::Utc>>,
    pub lines: i64,
    /// Lines that matched an item of the ledger, and lines that opened a
    /// break.
    pub matched: i64,
    pub breaks: i64,
    /// The sums of the lines' gross, fee and net, as decimal text (they
    /// may pass 64 bits).
    pub gross: String,
    pub fee: String,
    pub net: String,
}

/// The settlement batches `ids` of `tenant_id` in sum, in the order of
/// `ids` (a batch not found is left out).
pub async fn batch_sums(
    connection: &mut PgConnection,
    tenant_id: aggregates::TenantId,
    ids: &[String],
) -> Result<Vec<BatchSums>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT d.id, d.status, d.state->>'batch_id' AS batch_id, \
                (d.state->>'settled_at')::timestamptz AS settled_at, \
                s.lines, s.matched, s.breaks, s.gross, s.fee, s.net \
         FROM {TABLE} d CROSS JOIN LATERAL ( \
             SELECT count(*) AS lines, \
                    count(*) FILTER (WHERE l->'outcome'->>'outcome' = 'matched') AS matched, \
                    count(*) FILTER (WHERE l->'outcome'->>'outcome' = 'break') AS breaks, \
                    coalesce(sum((l->'line'->>'gross')::numeric), 0)::text AS gross, \
                    coalesce(sum((l->'line'->>'fee')::numeric), 0)::text AS fee, \
                    coalesce(sum((l->'line'->>'net')::numeric), 0)::text AS net \
             FROM jsonb_array_elements(d.state->'lines') AS l) s \
         WHERE d.tenant_id = $1 AND d.kind = 'settlement' AND d.id = ANY($2) \
         ORDER BY array_position($2, d.id)"
    ))
    .bind(tenant_id.as_uuid())
    .bind(ids)
    .fetch_all(connection)
    .await
}
