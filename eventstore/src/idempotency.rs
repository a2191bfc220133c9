//! Idempotency keys, command fingerprints and the records that answer a
//! repeated key.

use crate::chain::ChainHash;
use crate::error::StoreError;
use crate::EventStore;
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use std::fmt;

/// Longest idempotency key accepted, in bytes.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 255;

/// A command's idempotency key: 1 to 255 printable ASCII characters, unique
/// per tenant for the life of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

/// Why a text is not an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIdempotencyKey {
    #[error("the idempotency key is empty")]
    Empty,
    #[error("the idempotency key is longer than {IDEMPOTENCY_KEY_LENGTH_MAX} characters")]
    TooLong,
    #[error("the idempotency key may only contain printable ASCII characters")]
    NotPrintableAscii,
}

impl IdempotencyKey {
    /// Validates `text` as a key.
    pub fn parse(text: &str) -> Result<Self, InvalidIdempotencyKey> {
        if text.is_empty() {
            return Err(InvalidIdempotencyKey::Empty);
        }
        if text.len() > IDEMPOTENCY_KEY_LENGTH_MAX {
            return Err(InvalidIdempotencyKey::TooLong);
        }
        if !text.bytes().all(|byte| (0x20..=0x7e).contains(&byte)) {
            return Err(InvalidIdempotencyKey::NotPrintableAscii);
        }
        Ok(Self(text.to_string()))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// blake3 of a command's canonical encoding: two submissions under one key
/// are the same command exactly when their fingerprints are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Fingerprint of a command of kind `kind` whose canonical body is `body`.
    pub fn of(kind: &str, body: &Value) -> Result<Self, StoreError> {
        Self::of_serialize(kind, body)
    }

    /// Fingerprint of a command of kind `kind` whose body serializes from
    /// `body` (the same fingerprint [`Fingerprint::of`] gives its `Value`).
    pub fn of_serialize<T: serde::Serialize + ?Sized>(
        kind: &str,
        body: &T,
    ) -> Result<Self, StoreError> {
        let canonical = crate::canonical::to_canonical_json(body)?;
        Ok(Self::of_canonical(kind, &canonical))
    }

    /// Fingerprint of a command of kind `kind` whose canonical body text is
    /// `canonical` (the text a request is recorded with in the chain).
    pub fn of_canonical(kind: &str, canonical: &str) -> Self {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&(kind.len() as u64).to_be_bytes());
        hasher.update(kind.as_bytes());
        hasher.update(canonical.as_bytes());
        Self(*hasher.finalize().as_bytes())
    }
}

/// The stored outcome of a command.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyRecord {
    pub tenant_id: TenantId,
    pub key: IdempotencyKey,
    pub fingerprint: Fingerprint,
    /// 2xx when the command was accepted, 4xx when it was rejected.
    pub status: u16,
    /// Reply body or error body, as first returned.
    pub outcome: Value,
    /// tenant_seq of the first event appended, if any.
    pub first_seq: Option<i64>,
    /// tenant_seq the ledger had reached when the command completed.
    pub tenant_seq: i64,
    pub recorded_at: DateTime<Utc>,
}

/// One event as a command's answer lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EventSummary {
    #[serde(rename = "type")]
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub tenant_seq: i64,
    pub hash: ChainHash,
}

type RecordRow = (
    uuid::Uuid,
    String,
    Vec<u8>,
    i16,
    Value,
    Option<i64>,
    i64,
    DateTime<Utc>,
);

const SELECT_RECORDS: &str = "\
    SELECT tenant_id, idempotency_key, fingerprint, status, outcome, first_seq, tenant_seq, recorded_at \
    FROM idempotency_records \
    WHERE (tenant_id, idempotency_key) IN (SELECT * FROM unnest($1::uuid[], $2::text[]))";

const SELECT_EVENT_SUMMARIES: &str = "\
    SELECT event_type, aggregate_type, aggregate_id, tenant_seq, hash \
    FROM events \
    WHERE tenant_id = $1 AND tenant_seq BETWEEN $2 AND $3 \
    ORDER BY tenant_seq";

fn record_from_row(row: RecordRow) -> Result<IdempotencyRecord, StoreError> {
    let (tenant_id, key, fingerprint, status, outcome, first_seq, tenant_seq, recorded_at) = row;
    let fingerprint = <[u8; 32]>::try_from(fingerprint.as_slice())
        .map_err(|_| StoreError::Corrupt(format!("fingerprint of key {key} is not 32 bytes")))?;
    Ok(IdempotencyRecord {
        tenant_id: TenantId::from_uuid(tenant_id),
        key: IdempotencyKey::parse(&key)
            .map_err(|error| StoreError::Corrupt(format!("stored key {key:?}: {error}")))?,
        fingerprint: Fingerprint(fingerprint),
        status: u16::try_from(status)
            .map_err(|_| StoreError::Corrupt(format!("status {status} of key {key}")))?,
        outcome,
        first_seq,
        tenant_seq,
        recorded_at,
    })
}

impl EventStore {
    /// The record of `key`, if a command with that key has completed.
    pub async fn idempotency_record(
        &self,
        tenant_id: TenantId,
        key: &IdempotencyKey,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let mut records = self
            .idempotency_records(&[(tenant_id, key.clone())])
            .await?;
        Ok(records.pop())
    }

    /// The records of every key of `keys` that has one, in no particular order.
    pub async fn idempotency_records(
        &self,
        keys: &[(TenantId, IdempotencyKey)],
    ) -> Result<Vec<IdempotencyRecord>, StoreError> {
        let tenants: Vec<uuid::Uuid> = keys.iter().map(|(tenant, _)| tenant.as_uuid()).collect();
        let texts: Vec<&str> = keys.iter().map(|(_, key)| key.as_str()).collect();
        let rows: Vec<RecordRow> = sqlx::query_as(SELECT_RECORDS)
            .bind(&tenants)
            .bind(&texts)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(record_from_row).collect()
    }

    /// The events a completed command appended, for replaying its answer.
    pub async fn event_summaries(
        &self,
        tenant_id: TenantId,
        record: &IdempotencyRecord,
    ) -> Result<Vec<EventSummary>, StoreError> {
        let Some(first_seq) = record.first_seq else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String, String, String, i64, Vec<u8>)> =
            sqlx::query_as(SELECT_EVENT_SUMMARIES)
                .bind(tenant_id.as_uuid())
                .bind(first_seq)
                .bind(record.tenant_seq)
                .fetch_all(&self.pool)
                .await?;
        rows.into_iter()
            .map(
                |(event_type, aggregate_type, aggregate_id, tenant_seq, hash)| {
                    let hash = ChainHash::from_slice(&hash).ok_or_else(|| {
                        StoreError::Corrupt(format!(
                            "hash at tenant_seq {tenant_seq} is not 32 bytes"
                        ))
                    })?;
                    Ok(EventSummary {
                        event_type,
                        aggregate_type,
                        aggregate_id,
                        tenant_seq,
                        hash,
                    })
                },
            )
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_must_be_one_to_255_printable_ascii_characters() {
        assert_eq!(IdempotencyKey::parse(""), Err(InvalidIdempotencyKey::Empty));
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(256)),
            Err(InvalidIdempotencyKey::TooLong)
        );
        assert_eq!(
            IdempotencyKey::parse("tab\there"),
            Err(InvalidIdempotencyKey::NotPrintableAscii)
        );
        assert_eq!(
            IdempotencyKey::parse("é"),
            Err(InvalidIdempotencyKey::NotPrintableAscii)
        );
        assert_eq!(
            IdempotencyKey::parse(&"k".repeat(255))
                .unwrap()
                .as_str()
                .len(),
            255
        );
        assert_eq!(
            IdempotencyKey::parse("order 42 / retry ~1")
                .unwrap()
                .as_str(),
            "order 42 / retry ~1"
        );
    }

    #[test]
    fn fingerprints_ignore_key_order_but_not_values_or_kind() {
        let a = Fingerprint::of("consume", &serde_json::json!({"a": 1, "b": 2})).unwrap();
        let b = Fingerprint::of("consume", &serde_json::json!({"b": 2, "a": 1})).unwrap();
        let c = Fingerprint::of("consume", &serde_json::json!({"a": 1, "b": 3})).unwrap();
        let d = Fingerprint::of("release", &serde_json::json!({"a": 1, "b": 2})).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
