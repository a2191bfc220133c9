//! Read tables of documents: each aggregate of a domain as its events
//! leave it (its state as `jsonb`) with its status, in a table of rows
//! `(tenant_id, kind, id, status, created_seq, last_tenant_seq, state)`.
//! A projection folds each batch's events into the documents they continue
//! (loaded in one statement, written in one).

use crate::decode::decode;
use crate::runtime::ApplyError;
use aggregates::{Decide, Rejection, TenantId};
use eventstore::StoredEvent;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use sqlx::PgConnection;
use std::any::Any;
use std::collections::BTreeMap;
use uuid::Uuid;

/// A status as the API spells it (its serde name), or empty for none.
pub fn status_text<T: Serialize>(status: Option<T>) -> String {
    status
        .and_then(|status| serde_json::to_value(status).ok())
        .and_then(|status| status.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One document as the batch leaves it.
pub(crate) struct Document {
    status: String,
    created_seq: i64,
    last_seq: i64,
    state: State,
}

/// A document's state while a batch folds into it.
enum State {
    /// As stored (`jsonb` text), until the batch's first event of the
    /// document: then decoded straight into the aggregate, never through a
    /// `serde_json::Value`.
    Stored(String),
    /// Being folded: decoded once per batch and encoded once when the
    /// batch is written, however many events it folds.
    Folded(Box<dyn FoldedState>),
}

/// An aggregate's state kept typed while a batch folds into it.
trait FoldedState: Send {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn to_json(&self) -> Result<String, serde_json::Error>;
}

impl<T: Serialize + Send + 'static> FoldedState for T {
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }
}

impl Document {
    /// The state to store, as JSON text: the folded one, encoded, or the
    /// stored one.
    fn into_state(self, key: &Key) -> Result<String, ApplyError> {
        match self.state {
            State::Folded(folded) => folded.to_json().map_err(|error| ApplyError::Event {
                tenant_seq: self.last_seq,
                message: format!("{} {}: {error}", key.1, key.2),
            }),
            State::Stored(stored) => Ok(stored),
        }
    }
}

/// (tenant, kind, id).
pub(crate) type Key = (Uuid, &'static str, String);

/// The documents of one batch, by key.
pub(crate) type Documents = BTreeMap<Key, Document>;

/// Folds `event` into the document of `key` (loaded, or from the
/// aggregate's default), where it stands `status` says.
pub(crate) fn fold<A>(
    documents: &mut Documents,
    key: Key,
    event: &StoredEvent,
    status: impl Fn(&A) -> String,
) -> Result<(), ApplyError>
where
    A: Decide + Serialize + DeserializeOwned + Send + 'static,
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
        state: State::Folded(Box::new(A::default())),
    });
    if let State::Stored(stored) = &document.state {
        let decoded: A = serde_json::from_str(stored)
            .map_err(|error| failed(format!("stored {} {}: {error}", key.1, key.2)))?;
        document.state = State::Folded(Box::new(decoded));
    }
    let state = match &mut document.state {
        State::Folded(folded) => folded.as_any_mut().downcast_mut::<A>(),
        State::Stored(_) => None,
    }
    .ok_or_else(|| failed(format!("{} {} folded as two aggregates", key.1, key.2)))?;
    state.apply(decode::<A>(event)?);
    document.status = status(state);
    document.last_seq = event.tenant_seq;
    Ok(())
}

/// The stored documents of `table` the events of `ours` (each with its
/// kind, one of `kinds`) continue.
pub(crate) async fn load(
    connection: &mut PgConnection,
    table: &str,
    kinds: &[&'static str],
    ours: &[(&StoredEvent, &'static str)],
) -> Result<Documents, ApplyError> {
    // Each document once, however many of the batch's events it has.
    let wanted: std::collections::BTreeSet<(Uuid, &str, &str)> = ours
        .iter()
        .map(|(event, kind)| {
            (
                event.tenant_id.as_uuid(),
                *kind,
                event.aggregate_id.as_str(),
            )
        })
        .collect();
    let mut keys: (Vec<Uuid>, Vec<&str>, Vec<&str>) = Default::default();
    for (tenant, kind, id) in wanted {
        keys.0.push(tenant);
        keys.1.push(kind);
        keys.2.push(id);
    }
    // One primary-key lookup per document, whatever plan the prepared
    // statement settles on: as a join (or a lateral one flattened into a
    // join, which the LIMIT prevents) a plan may read every document of
    // the table.
    let rows: Vec<(Uuid, String, String, i64, String)> = sqlx::query_as(&format!(
        "SELECT d.tenant_id, d.kind, d.id, d.created_seq, d.state::text \
         FROM unnest($1::uuid[], $2::text[], $3::text[]) AS k(tenant_id, kind, id) \
         CROSS JOIN LATERAL ( \
             SELECT * FROM {table} d \
             WHERE d.tenant_id = k.tenant_id AND d.kind = k.kind AND d.id = k.id \
             LIMIT 1) d"
    ))
    .bind(&keys.0)
    .bind(&keys.1)
    .bind(&keys.2)
    .fetch_all(&mut *connection)
    .await?;
    let mut documents = BTreeMap::new();
    for (tenant, kind, id, created_seq, state) in rows {
        let Some(kind) = kinds.iter().copied().find(|known| *known == kind) else {
            continue;
        };
        documents.insert(
            (tenant, kind, id),
            Document {
                status: String::new(),
                created_seq,
                last_seq: created_seq,
                state: State::Stored(state),
            },
        );
    }
    Ok(documents)
}

/// Writes `documents` to `table`.
pub(crate) async fn write(
    connection: &mut PgConnection,
    table: &str,
    documents: Documents,
) -> Result<(), ApplyError> {
    let mut keys: (Vec<Uuid>, Vec<&str>, Vec<String>) = Default::default();
    let mut statuses = Vec::new();
    let mut seqs: (Vec<i64>, Vec<i64>) = Default::default();
    let mut states = Vec::new();
    for (key, mut document) in documents {
        statuses.push(std::mem::take(&mut document.status));
        seqs.0.push(document.created_seq);
        seqs.1.push(document.last_seq);
        states.push(document.into_state(&key)?);
        let (tenant, kind, id) = key;
        keys.0.push(tenant);
        keys.1.push(kind);
        keys.2.push(id);
    }
    sqlx::query(&format!(
        "INSERT INTO {table} (tenant_id, kind, id, status, created_seq, last_tenant_seq, state) \
         SELECT tenant_id, kind, id, status, created_seq, last_tenant_seq, state::jsonb \
         FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], \
                     $7::text[]) \
             AS document(tenant_id, kind, id, status, created_seq, last_tenant_seq, state) \
         ON CONFLICT (tenant_id, kind, id) DO UPDATE SET status = EXCLUDED.status, \
             last_tenant_seq = EXCLUDED.last_tenant_seq, state = EXCLUDED.state"
    ))
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
pub struct DocumentRow {
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
    table: &str,
    tenant_id: TenantId,
    kind: &str,
    id: &str,
) -> Result<Option<DocumentRow>, sqlx::Error> {
    let mut found = get_many(connection, table, tenant_id, kind, &[id.to_string()]).await?;
    Ok(found.pop())
}

type RawRow = (String, String, String, i64, i64, Value);

fn document((kind, id, status, created_seq, last_tenant_seq, state): RawRow) -> DocumentRow {
    DocumentRow {
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
    table: &str,
    tenant_id: TenantId,
    kind: &str,
    status: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<DocumentRow>, sqlx::Error> {
    // A plain comparison of the status, when there is one, so that the
    // status index (partial, see migration 0018) may serve it.
    let of_status = if status.is_some() {
        "status = $3"
    } else {
        "$3::text IS NULL"
    };
    let rows: Vec<RawRow> = sqlx::query_as(&format!(
        "SELECT kind, id, status, created_seq, last_tenant_seq, state FROM {table} \
         WHERE tenant_id = $1 AND kind = $2 AND {of_status} \
           AND ($4::text IS NULL OR id > $4) \
         ORDER BY id LIMIT $5"
    ))
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
    table: &str,
    tenant_id: TenantId,
    kind: &str,
    ids: &[String],
) -> Result<Vec<DocumentRow>, sqlx::Error> {
    let rows: Vec<RawRow> = sqlx::query_as(&format!(
        "SELECT kind, id, status, created_seq, last_tenant_seq, state FROM {table} \
         WHERE tenant_id = $1 AND kind = $2 AND id = ANY($3) ORDER BY id"
    ))
    .bind(tenant_id.as_uuid())
    .bind(kind)
    .bind(ids)
    .fetch_all(connection)
    .await?;
    Ok(rows.into_iter().map(document).collect())
}
