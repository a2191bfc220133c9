//! The `payments` projection: each payment, gift card, settlement batch
//! and payout as its events leave it, kept as a document (the aggregate's
//! state) with its status, for the payment reads; and every break of a
//! settlement batch, open or resolved (`payment_breaks`).

use crate::decode::decode;
use crate::runtime::{ApplyError, Projection};
use aggregates::payments::gift_card::{GiftCard, GIFT_CARD_AGGREGATE};
use aggregates::payments::payout::{Payout, PAYOUT_AGGREGATE};
use aggregates::payments::settlement::{Settlement, SETTLEMENT_AGGREGATE};
use aggregates::payments::{Payment, PAYMENT_AGGREGATE};
use aggregates::{Decide, Rejection, TenantId};
use async_trait::async_trait;
use eventstore::StoredEvent;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use std::collections::BTreeMap;
use uuid::Uuid;

pub const NAME: &str = "payments";

pub struct Payments;

/// One document as the batch leaves it.
struct Document {
    status: String,
    created_seq: i64,
    last_seq: i64,
    state: Value,
}

type Key = (Uuid, &'static str, String);

const LOAD: &str = "\
    SELECT d.tenant_id, d.kind, d.id, d.created_seq, d.state \
    FROM payment_documents d \
    JOIN unnest($1::uuid[], $2::text[], $3::text[]) AS k(tenant_id, kind, id) \
      ON d.tenant_id = k.tenant_id AND d.kind = k.kind AND d.id = k.id";

const UPSERT: &str = "\
    INSERT INTO payment_documents (tenant_id, kind, id, status, created_seq, last_tenant_seq, state) \
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], \
                         $6::bigint[], $7::jsonb[]) \
    ON CONFLICT (tenant_id, kind, id) DO UPDATE SET status = EXCLUDED.status, \
        last_tenant_seq = EXCLUDED.last_tenant_seq, state = EXCLUDED.state";

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
    payment
        .status()
        .and_then(|status| serde_json::to_value(status).ok())
        .and_then(|status| status.as_str().map(str::to_string))
        .unwrap_or_default()
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

/// Folds `event` into the document of `key` (loaded, or from the
/// aggregate's default), where it stands `status` says.
fn fold<A>(
    documents: &mut BTreeMap<Key, Document>,
    key: Key,
    event: &StoredEvent,
    status: impl Fn(&A) -> String,
) -> Result<(), ApplyError>
where
    A: Decide + Serialize + DeserializeOwned,
    A::Error: Rejection,
{
    let failed = |message: String| ApplyError::Event {
        tenant_seq: event.tenant_seq,
        message,
    };
    let document = documents.entry(key.clone()).or_insert_with(|| Document {
        status: String::new(),
        created_seq: event.tenant_seq,
        last_seq: event.tenant_seq,
        state: Value::Null,
    });
    let mut state: A = if document.state.is_null() {
        A::default()
    } else {
        serde_json::from_value(document.state.clone())
            .map_err(|error| failed(format!("stored {} {}: {error}", key.1, key.2)))?
    };
    state.apply(decode::<A>(event)?);
    document.state = serde_json::to_value(&state).map_err(|error| failed(error.to_string()))?;
    document.status = status(&state);
    document.last_seq = event.tenant_seq;
    Ok(())
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
        let mut documents = load(connection, &ours).await?;
        for (event, kind) in ours {
            let key = (event.tenant_id.as_uuid(), kind, event.aggregate_id.clone());
            match kind {
                "payment" => fold(&mut documents, key, event, payment_status)?,
                "gift_card" => fold(&mut documents, key, event, |_: &GiftCard| {
                    "active".to_string()
                })?,
                "settlement" => fold(&mut documents, key, event, settlement_status)?,
                _ => fold(&mut documents, key, event, payout_status)?,
            }
        }
        write(connection, documents).await?;
        crate::payment_breaks::apply(connection, events).await
    }
}

/// The stored documents the events of `ours` continue.
async fn load(
    connection: &mut PgConnection,
    ours: &[(&StoredEvent, &'static str)],
) -> Result<BTreeMap<Key, Document>, ApplyError> {
    let mut keys: (Vec<Uuid>, Vec<&str>, Vec<&str>) = Default::default();
    for (event, kind) in ours {
        keys.0.push(event.tenant_id.as_uuid());
        keys.1.push(kind);
        keys.2.push(event.aggregate_id.as_str());
    }
    let rows: Vec<(Uuid, String, String, i64, Value)> = sqlx::query_as(LOAD)
        .bind(&keys.0)
        .bind(&keys.1)
        .bind(&keys.2)
        .fetch_all(&mut *connection)
        .await?;
    let mut documents = BTreeMap::new();
    for (tenant, kind, id, created_seq, state) in rows {
        let Some(kind) = KINDS.iter().copied().find(|known| *known == kind) else {
            continue;
        };
        documents.insert(
            (tenant, kind, id),
            Document {
                status: String::new(),
                created_seq,
                last_seq: created_seq,
                state,
            },
        );
    }
    Ok(documents)
}

async fn write(
    connection: &mut PgConnection,
    documents: BTreeMap<Key, Document>,
) -> Result<(), ApplyError> {
    let mut keys: (Vec<Uuid>, Vec<&str>, Vec<String>) = Default::default();
    let mut statuses = Vec::new();
    let mut seqs: (Vec<i64>, Vec<i64>) = Default::default();
    let mut states = Vec::new();
    for ((tenant, kind, id), document) in documents {
        keys.0.push(tenant);
        keys.1.push(kind);
        keys.2.push(id);
        statuses.push(document.status);
        seqs.0.push(document.created_seq);
        seqs.1.push(document.last_seq);
        states.push(document.state);
    }
    sqlx::query(UPSERT)
        .bind(&keys.0)
        .bind(&keys.1)
        .bind(&keys.2)
        .bind(&statuses)
        .bind(&seqs.0)
        .bind(&seqs.1)
        .bind(&states)
        .execute(&mut *connection)
        .await?;
    Ok(())
}

/// A document as read.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PaymentDocument {
    pub kind: String,
    pub id: String,
    pub status: String,
    pub created_seq: i64,
    pub last_tenant_seq: i64,
    pub state: Value,
}

/// The document of `kind` `id`, inside a tenant read transaction; `None`
/// when the tenant has none (or the projection has not applied it).
pub async fn get(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    kind: &str,
    id: &str,
) -> Result<Option<PaymentDocument>, sqlx::Error> {
    let mut found = get_many(connection, tenant_id, kind, &[id.to_string()]).await?;
    Ok(found.pop())
}

type DocumentRow = (String, String, String, i64, i64, Value);

fn document(
    (kind, id, status, created_seq, last_tenant_seq, state): DocumentRow,
) -> PaymentDocument {
    PaymentDocument {
        kind,
        id,
        status,
        created_seq,
        last_tenant_seq,
        state,
    }
}

/// The tenant's documents of `kind` (of `status`, when given) after
/// `after`, by id, at most `limit`, inside a tenant read transaction.
pub async fn list(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    kind: &str,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<PaymentDocument>, sqlx::Error> {
    let rows: Vec<DocumentRow> = sqlx::query_as(
        "SELECT kind, id, status, created_seq, last_tenant_seq, state FROM payment_documents \
         WHERE tenant_id = $1 AND kind = $2 AND ($3::text IS NULL OR status = $3) \
           AND ($4::text IS NULL OR id > $4) \
         ORDER BY id LIMIT $5",
    )
    .bind(tenant_id.as_uuid())
    .bind(kind)
    .bind(status)
    .bind(after)
    .bind(limit)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(document).collect())
}

/// The tenant's documents of `kind` among `ids`, by id.
pub async fn get_many(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    kind: &str,
    ids: &[String],
) -> Result<Vec<PaymentDocument>, sqlx::Error> {
    let rows: Vec<DocumentRow> = sqlx::query_as(
        "SELECT kind, id, status, created_seq, last_tenant_seq, state FROM payment_documents \
         WHERE tenant_id = $1 AND kind = $2 AND id = ANY($3) ORDER BY id",
    )
    .bind(tenant_id.as_uuid())
    .bind(kind)
    .bind(ids)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(document).collect())
}
