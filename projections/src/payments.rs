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

    fn version(&self) -> i32 {
        2
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
