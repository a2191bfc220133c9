//! Idempotency keys, command fingerprints and the records that answer a
//! repeated key.

use crate::chain::ChainHash;
use crate::error::StoreError;
use crate::EventStore;
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::{Map, Value};
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

/// The member of an accepted answer listing the events it appended.
pub const ANSWER_EVENTS: &str = "events";

/// The text `outcome` is recorded as, and whether its [`ANSWER_EVENTS`]
/// member was left out of it: an answer listing exactly the command's
/// events (`appended`, which the chain keeps as first_seq..tenant_seq)
/// keeps them once, in the chain, and gets them back from there when it is
/// replayed. Any other outcome is recorded whole.
pub(crate) fn record_text(
    outcome: &Value,
    appended: &[crate::AppendedEvent],
) -> Result<(String, bool), serde_json::Error> {
    if let Value::Object(map) = outcome {
        if let Some(Value::Array(listed)) = map.get(ANSWER_EVENTS) {
            if lists(listed, appended) {
                let without = Without {
                    map,
                    left_out: ANSWER_EVENTS,
                };
                return Ok((serde_json::to_string(&without)?, true));
            }
        }
    }
    Ok((serde_json::to_string(outcome)?, false))
}

/// Whether `listed` is `appended` as an answer lists them, in order.
fn lists(listed: &[Value], appended: &[crate::AppendedEvent]) -> bool {
    listed.len() == appended.len()
        && listed
            .iter()
            .zip(appended)
            .all(|(listed, event)| names(listed, event))
}

/// Whether `listed` is `event` exactly as [`EventSummary`] serializes it:
/// its five members and nothing else.
fn names(listed: &Value, event: &crate::AppendedEvent) -> bool {
    let Value::Object(members) = listed else {
        return false;
    };
    let text = |name: &str| members.get(name).and_then(Value::as_str);
    members.len() == 5
        && text("type") == Some(event.event_type.as_str())
        && text("aggregate_type") == Some(event.aggregate_type.as_str())
        && text("aggregate_id") == Some(event.aggregate_id.as_str())
        && members.get("tenant_seq").and_then(Value::as_i64) == Some(event.tenant_seq)
        && text("hash") == Some(event.hash.to_hex().as_str())
}

/// An object without one of its members.
struct Without<'a> {
    map: &'a Map<String, Value>,
    left_out: &'a str,
}

impl Serialize for Without<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut object = serializer.serialize_map(None)?;
        for (name, value) in self.map {
            if name != self.left_out {
                object.serialize_entry(name, value)?;
            }
        }
        object.end()
    }
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

// A record whose events were left out gets them back as the answer listed
// them (under `ANSWER_EVENTS`, each an `EventSummary`, in tenant_seq
// order): one range of the chain's primary key per record.
const SELECT_RECORDS: &str = "\
    SELECT r.tenant_id, r.idempotency_key, r.fingerprint, r.status, \
           CASE WHEN r.events_omitted THEN r.outcome || jsonb_build_object('events', coalesce(( \
               SELECT jsonb_agg(jsonb_build_object( \
                          'type', e.event_type, 'aggregate_type', e.aggregate_type, \
                          'aggregate_id', e.aggregate_id, 'tenant_seq', e.tenant_seq, \
                          'hash', encode(e.hash, 'hex')) ORDER BY e.tenant_seq) \
               FROM events e \
               WHERE e.tenant_id = r.tenant_id AND e.tenant_seq BETWEEN r.first_seq AND r.tenant_seq), \
               '[]'::jsonb)) \
           ELSE r.outcome END, \
           r.first_seq, r.tenant_seq, r.recorded_at \
    FROM idempotency_records r \
    WHERE (r.tenant_id, r.idempotency_key) IN (SELECT * FROM unnest($1::uuid[], $2::text[]))";

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

    fn appended(tenant_seq: i64, event_type: &str, hash: u8) -> crate::AppendedEvent {
        crate::AppendedEvent {
            event_id: uuid::Uuid::nil(),
            aggregate_type: "payment".into(),
            aggregate_id: "p-1".into(),
            aggregate_seq: tenant_seq,
            event_type: event_type.into(),
            tenant_seq,
            hash: ChainHash([hash; 32]),
        }
    }

    #[test]
    fn only_a_list_of_exactly_the_commands_events_is_left_out_of_the_record() {
        let events = [
            appended(4, "Captured", 0xab),
            appended(5, "ReferenceClaimed", 0x1c),
        ];
        let listed: Vec<Value> = events
            .iter()
            .map(|event| serde_json::to_value(event.summary()).unwrap())
            .collect();
        let answer = serde_json::json!({"events": listed, "status": "captured"});
        assert_eq!(
            record_text(&answer, &events).unwrap(),
            (r#"{"status":"captured"}"#.to_string(), true)
        );
        // Anything else is recorded whole: fewer events, another spelling of
        // the hash, a member more, a list that is not the events', the
        // events out of order.
        let mut variants = Vec::new();
        variants.push(serde_json::json!({"events": [listed[0].clone()]}));
        let mut upper = listed.clone();
        upper[1]["hash"] = Value::String("AB".repeat(32));
        variants.push(serde_json::json!({"events": upper}));
        let mut more = listed.clone();
        more[0]["extra"] = Value::Null;
        variants.push(serde_json::json!({"events": more}));
        variants.push(serde_json::json!({"events": 2}));
        variants.push(serde_json::json!({"events": [listed[1].clone(), listed[0].clone()]}));
        variants.push(serde_json::json!([listed]));
        for variant in variants {
            assert_eq!(
                record_text(&variant, &events).unwrap(),
                (variant.to_string(), false),
                "{variant}"
            );
        }
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
