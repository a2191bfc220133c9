//! Ordered reads for projections, auditors and replays.
//!
//! Two orders, both safe against late commits:
//! - per tenant by `tenant_seq`: seqs are assigned under the tenant's head row
//!   lock and committed in order, so what a reader sees of a tenant is always
//!   a gapless prefix;
//! - across tenants by `(transaction_id, global_position)`, reading only rows of
//!   transactions older than the oldest one still running
//!   (`pg_snapshot_xmin(pg_current_snapshot())`). A transaction that commits
//!   late is still running at the time of the read, so its rows are not read
//!   yet; once it ends they sort after the reader's cursor. Nothing is skipped
//!   and no timeout is involved.

use crate::canonical::{to_canonical_string, CanonicalError};
use crate::chain::{ChainHash, EventFields};
use crate::error::StoreError;
use crate::EventStore;
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use cqrs_es::persist::SerializedEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

/// Largest page any read returns.
pub const READ_PAGE_MAX: i64 = 10_000;

async fn read_tenant_with<'e, E: sqlx::PgExecutor<'e>>(
    executor: E,
    tenant_id: TenantId,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let query = format!(
        "SELECT {EVENT_COLUMNS} FROM events \
         WHERE tenant_id = $1 AND tenant_seq > $2 \
         ORDER BY tenant_seq LIMIT $3"
    );
    let rows = sqlx::query(&query)
        .bind(tenant_id.as_uuid())
        .bind(after_seq)
        .bind(limit.clamp(1, READ_PAGE_MAX))
        .fetch_all(executor)
        .await?;
    rows.iter().map(stored_event_from_row).collect()
}

const READ_TENANTS: &str = "\
    SELECT e.tenant_id, e.tenant_seq, e.global_position, e.transaction_id::text::bigint AS transaction_id, \
           e.aggregate_type, e.aggregate_id, e.aggregate_seq, e.event_id, e.event_type, e.event_version, \
           e.payload::text AS payload, e.metadata::text AS metadata, e.idempotency_key, e.recorded_at, e.prev_hash, e.hash \
    FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS t(tenant_id, after_seq, until_seq) \
    CROSS JOIN LATERAL ( \
        SELECT * FROM events \
        WHERE events.tenant_id = t.tenant_id AND events.tenant_seq > t.after_seq AND events.tenant_seq <= t.until_seq \
        ORDER BY events.tenant_seq LIMIT $4 \
    ) AS e";

/// A range of one tenant's events: `after_seq < tenant_seq <= until_seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantRange {
    pub tenant_id: TenantId,
    pub after_seq: i64,
    pub until_seq: i64,
}

/// A JSON column as the store returns it: the text of the jsonb value (which
/// is its canonical form), parsed only by those who need it. Reading a page
/// of events for one projection then costs nothing for the payloads it skips,
/// and a domain event decodes from the text directly.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct JsonText(String);

impl JsonText {
    /// Canonical text of `value`.
    pub fn from_value(value: &Value) -> Result<Self, CanonicalError> {
        Ok(Self(to_canonical_string(value)?))
    }

    /// Canonical text of anything serializable, written directly (no
    /// intermediate `Value`): the same text [`JsonText::from_value`] gives.
    pub fn canonical<T: Serialize + ?Sized>(value: &T) -> Result<Self, CanonicalError> {
        Ok(Self(crate::canonical::to_canonical_json(value)?))
    }

    /// The canonical object of `members` (each value already canonical),
    /// written without parsing them again: keys in `jsonb` order.
    pub fn object(members: &[(&str, &JsonText)]) -> Result<Self, CanonicalError> {
        let mut members: Vec<(&str, &JsonText)> = members.to_vec();
        members.sort_by(|(a, _), (b, _)| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        // Each member is `"key": value` and a `, ` before all but the first.
        let bytes: usize = members
            .iter()
            .map(|(key, value)| key.len() + value.as_str().len() + 6)
            .sum();
        let mut out = String::with_capacity(bytes + 2);
        out.push('{');
        for (position, (key, value)) in members.iter().enumerate() {
            if position > 0 {
                out.push_str(", ");
            }
            crate::canonical::write_string(key, &mut out)?;
            out.push_str(": ");
            out.push_str(value.as_str());
        }
        out.push('}');
        Ok(Self(out))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, owned.
    pub fn into_string(self) -> String {
        self.0
    }

    /// Parsed into `T`.
    pub fn parse<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_str(&self.0)
    }

    /// Parsed into a generic JSON value.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::from_str(&self.0)
    }
}

impl std::fmt::Debug for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::fmt::Display for JsonText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &serde_json::value::RawValue =
            serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Self::from_value(&value).map_err(serde::de::Error::custom)
    }
}

/// A stored event's payload decoded into its domain event, kept with the
/// event by the first reader that decodes it: every projection of a batch
/// (and verify's comparison) reads the same event, and decoding it is most
/// of what applying it costs. Not part of the event's value: events compare
/// equal and print whatever it holds, and a clone starts without it.
///
/// It is checked against where the payload text lies, so a payload
/// replaced after decoding is decoded again. Stored events are read, never
/// changed: code that changes one's type, version or payload text in place
/// must reset this too.
#[derive(Default)]
pub struct Decoded(std::sync::OnceLock<DecodedValue>);

/// The decoded event, and where the payload text it was decoded from lay
/// (so that a payload replaced after decoding is decoded again).
struct DecodedValue {
    text: (usize, usize),
    value: std::sync::Arc<dyn std::any::Any + Send + Sync>,
}

impl Clone for Decoded {
    /// A clone's payload lies elsewhere: it decodes its own.
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl Decoded {
    /// Where `payload`'s text lies.
    fn text_of(payload: &JsonText) -> (usize, usize) {
        (payload.0.as_ptr() as usize, payload.0.len())
    }

    /// The event kept for `payload`, as type `T`, if one is.
    pub fn get<T: std::any::Any>(&self, payload: &JsonText) -> Option<&T> {
        self.0
            .get()
            .filter(|kept| kept.text == Self::text_of(payload))
            .and_then(|kept| kept.value.downcast_ref::<T>())
    }

    /// The event `payload` decodes into, as type `T`: the one kept, or
    /// `decode`'s (of `payload`), then kept. `None` when a `T` cannot be kept (the event
    /// was decoded as another type before, or its payload replaced since):
    /// the caller decodes it itself.
    pub fn get_or_decode<T, E>(
        &self,
        payload: &JsonText,
        decode: impl FnOnce() -> Result<T, E>,
    ) -> Result<Option<&T>, E>
    where
        T: std::any::Any + Send + Sync,
    {
        if self.0.get().is_none() {
            let value = decode()?;
            // A reader on another thread may have kept it first: the same
            // payload, the same event.
            let _ = self.0.set(DecodedValue {
                text: Self::text_of(payload),
                value: std::sync::Arc::new(value),
            });
        }
        Ok(self.get(payload))
    }
}

impl std::fmt::Debug for Decoded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Decoded")
    }
}

impl PartialEq for Decoded {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// Every column of a stored event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub tenant_id: TenantId,
    pub tenant_seq: i64,
    pub global_position: i64,
    pub transaction_id: i64,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub aggregate_seq: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub event_version: String,
    /// Canonical JSON text of the payload.
    pub payload: JsonText,
    /// Canonical JSON text of the metadata.
    pub metadata: JsonText,
    pub idempotency_key: String,
    pub recorded_at: DateTime<Utc>,
    pub prev_hash: ChainHash,
    pub hash: ChainHash,
    /// The payload decoded, once a reader has decoded it.
    #[serde(skip)]
    pub decoded: Decoded,
}

impl StoredEvent {
    /// The hash this event should have, recomputed from its columns and its
    /// stored `prev_hash`.
    pub fn recompute_hash(&self) -> Result<ChainHash, CanonicalError> {
        self.recompute_hash_from(&self.prev_hash)
    }

    /// The hash this event should have when chained from `prev`.
    pub fn recompute_hash_from(&self, prev: &ChainHash) -> Result<ChainHash, CanonicalError> {
        let (payload, metadata) = self.canonical_data()?;
        Ok(self.fields(&payload, &metadata).hash(prev))
    }

    /// Canonical text of the payload and the metadata, re-derived from the
    /// parsed JSON (so that a change of text form alone is not a change).
    pub fn canonical_data(&self) -> Result<(String, String), CanonicalError> {
        let canonical = |text: &JsonText| -> Result<String, CanonicalError> {
            let value = text
                .to_value()
                .map_err(|error| CanonicalError::Unparsable(error.to_string()))?;
            to_canonical_string(&value)
        };
        Ok((canonical(&self.payload)?, canonical(&self.metadata)?))
    }

    /// The hashed columns, given the canonical payload and metadata text.
    pub fn fields<'a>(&'a self, payload: &'a str, metadata: &'a str) -> EventFields<'a> {
        EventFields {
            tenant_id: self.tenant_id.as_uuid(),
            tenant_seq: self.tenant_seq,
            aggregate_type: &self.aggregate_type,
            aggregate_id: &self.aggregate_id,
            aggregate_seq: self.aggregate_seq,
            event_id: self.event_id,
            event_type: &self.event_type,
            event_version: &self.event_version,
            payload,
            metadata,
            idempotency_key: &self.idempotency_key,
            recorded_at_micros: self.recorded_at.timestamp_micros(),
        }
    }

    /// Where a cross-tenant reader stands after this event.
    pub fn cursor(&self) -> GlobalCursor {
        GlobalCursor {
            transaction_id: self.transaction_id,
            global_position: self.global_position,
        }
    }

    /// The event in cqrs-es's serialized form (for upcasting and folding).
    pub fn to_serialized(&self) -> Result<SerializedEvent, serde_json::Error> {
        Ok(SerializedEvent {
            aggregate_id: self.aggregate_id.clone(),
            sequence: usize::try_from(self.aggregate_seq).unwrap_or(usize::MAX),
            aggregate_type: self.aggregate_type.clone(),
            event_type: self.event_type.clone(),
            event_version: self.event_version.clone(),
            payload: self.payload.to_value()?,
            metadata: self.metadata.to_value()?,
        })
    }
}

/// A cross-tenant reader's position: the last (transaction_id,
/// global_position) it has read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GlobalCursor {
    pub transaction_id: i64,
    pub global_position: i64,
}

impl GlobalCursor {
    /// Before the first event.
    pub const START: Self = Self {
        transaction_id: 0,
        global_position: 0,
    };
}

/// Microseconds from the Unix epoch to PostgreSQL's, 2000-01-01.
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A `timestamptz` column that may hold what no [`DateTime`] can (written
/// behind the ledger's back: `infinity`, or a time after the year 262142):
/// such a time reads as the latest time a `DateTime` holds (`-infinity` as
/// the earliest) instead of panicking in the decoder, so that every reader
/// goes on: a live worker or a command load with that time, `verify` to
/// find the row wrong. (Rows come in binary; a text one is decoded as
/// usual, and a time out of range fails its read.)
pub fn timestamp_at(row: &PgRow, index: usize) -> Result<DateTime<Utc>, sqlx::Error> {
    use sqlx::postgres::PgValueFormat;
    use sqlx::{Type, ValueRef};
    let value = row.try_get_raw(index)?;
    let timestamptz = <DateTime<Utc> as Type<sqlx::Postgres>>::compatible(&value.type_info());
    if value.is_null() || value.format() != PgValueFormat::Binary || !timestamptz {
        return row.try_get(index);
    }
    let bytes: [u8; 8] = value
        .as_bytes()
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| sqlx::Error::Decode("a timestamptz is 8 bytes".into()))?;
    let since_2000 = i64::from_be_bytes(bytes);
    Ok(since_2000
        .checked_add(POSTGRES_EPOCH_MICROS)
        .and_then(DateTime::from_timestamp_micros)
        .unwrap_or(if since_2000 < 0 {
            DateTime::<Utc>::MIN_UTC
        } else {
            DateTime::<Utc>::MAX_UTC
        }))
}

/// [`timestamp_at`] of a column that may be null.
pub fn optional_timestamp_at(
    row: &PgRow,
    index: usize,
) -> Result<Option<DateTime<Utc>>, sqlx::Error> {
    use sqlx::ValueRef;
    if row.try_get_raw(index)?.is_null() {
        return Ok(None);
    }
    timestamp_at(row, index).map(Some)
}

pub(crate) const EVENT_COLUMNS: &str = "\
    tenant_id, tenant_seq, global_position, transaction_id::text::bigint AS transaction_id, \
    aggregate_type, aggregate_id, aggregate_seq, event_id, event_type, event_version, \
    payload::text AS payload, metadata::text AS metadata, idempotency_key, recorded_at, prev_hash, hash";

/// An event from a row selecting [`EVENT_COLUMNS`] (in that order: read by
/// position, the hot path of every projection and audit read).
pub(crate) fn stored_event_from_row(row: &PgRow) -> Result<StoredEvent, StoreError> {
    let tenant_seq: i64 = row.try_get(1)?;
    let hash_column = |index: usize, name: &str| -> Result<ChainHash, StoreError> {
        let bytes: &[u8] = row.try_get(index)?;
        ChainHash::from_slice(bytes).ok_or_else(|| {
            StoreError::Corrupt(format!("{name} at tenant_seq {tenant_seq} is not 32 bytes"))
        })
    };
    Ok(StoredEvent {
        tenant_id: TenantId::from_uuid(row.try_get(0)?),
        tenant_seq,
        global_position: row.try_get(2)?,
        transaction_id: row.try_get(3)?,
        aggregate_type: row.try_get(4)?,
        aggregate_id: row.try_get(5)?,
        aggregate_seq: row.try_get(6)?,
        event_id: row.try_get(7)?,
        event_type: row.try_get(8)?,
        event_version: row.try_get(9)?,
        payload: JsonText(row.try_get(10)?),
        metadata: JsonText(row.try_get(11)?),
        idempotency_key: row.try_get(12)?,
        recorded_at: timestamp_at(row, 13)?,
        prev_hash: hash_column(14, "prev_hash")?,
        hash: hash_column(15, "hash")?,
        decoded: Decoded::default(),
    })
}

impl EventStore {
    /// Events of `tenant_id` with `tenant_seq > after_seq`, in seq order, at
    /// most `limit` (capped at [`READ_PAGE_MAX`]).
    pub async fn read_tenant(
        &self,
        tenant_id: TenantId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        read_tenant_with(&self.pool, tenant_id, after_seq, limit).await
    }

    /// Like [`EventStore::read_tenant`], on a connection the caller holds
    /// (inside its transaction).
    pub async fn read_tenant_on(
        connection: &mut sqlx::PgConnection,
        tenant_id: TenantId,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        read_tenant_with(connection, tenant_id, after_seq, limit).await
    }

    /// Events of several tenants in one query, each range capped at
    /// `per_tenant_limit` (at most [`READ_PAGE_MAX`]), ordered by tenant then
    /// seq, on a connection the caller holds.
    pub async fn read_tenants_on(
        connection: &mut sqlx::PgConnection,
        ranges: &[TenantRange],
        per_tenant_limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let tenants: Vec<Uuid> = ranges
            .iter()
            .map(|range| range.tenant_id.as_uuid())
            .collect();
        let after: Vec<i64> = ranges.iter().map(|range| range.after_seq).collect();
        let until: Vec<i64> = ranges.iter().map(|range| range.until_seq).collect();
        let rows = sqlx::query(READ_TENANTS)
            .bind(&tenants)
            .bind(&after)
            .bind(&until)
            .bind(per_tenant_limit.clamp(1, READ_PAGE_MAX))
            .fetch_all(connection)
            .await?;
        let mut events = rows
            .iter()
            .map(stored_event_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // Put in order here, not by the statement: PostgreSQL sorted the
        // rows with their payloads already turned into text, a page of
        // 10,000 spilling to disk past `work_mem`, which took a third to
        // two thirds of the read. Each range comes back as one run in seq
        // order, which this sort only merges.
        events.sort_by_key(|event| (event.tenant_id, event.tenant_seq));
        Ok(events)
    }

    /// On a connection the caller holds: the events of `aggregate_types`
    /// among one tenant's events `after_seq < tenant_seq <= until_seq`, in
    /// seq order, at most `limit` (capped at [`READ_PAGE_MAX`]). The others
    /// are passed over in the primary key without their payloads being
    /// turned into text, which is most of what reading an event costs.
    pub async fn read_tenant_types_on(
        connection: &mut sqlx::PgConnection,
        range: TenantRange,
        aggregate_types: &[&str],
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let query = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE tenant_id = $1 AND tenant_seq > $2 AND tenant_seq <= $3 \
               AND aggregate_type = ANY($4) \
             ORDER BY tenant_seq LIMIT $5"
        );
        let rows = sqlx::query(&query)
            .bind(range.tenant_id.as_uuid())
            .bind(range.after_seq)
            .bind(range.until_seq)
            .bind(aggregate_types)
            .bind(limit.clamp(1, READ_PAGE_MAX))
            .fetch_all(connection)
            .await?;
        rows.iter().map(stored_event_from_row).collect()
    }

    /// Like [`EventStore::read_tenant`], but only events of one aggregate type.
    pub async fn read_tenant_of_type(
        &self,
        tenant_id: TenantId,
        aggregate_type: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let query = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE tenant_id = $1 AND aggregate_type = $2 AND tenant_seq > $3 \
             ORDER BY tenant_seq LIMIT $4"
        );
        let rows = sqlx::query(&query)
            .bind(tenant_id.as_uuid())
            .bind(aggregate_type)
            .bind(after_seq)
            .bind(limit.clamp(1, READ_PAGE_MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_event_from_row).collect()
    }

    /// Events of every tenant after `cursor` in commit order, at most `limit`
    /// (capped at [`READ_PAGE_MAX`]). Never skips an event that commits after
    /// this read: see the module documentation.
    pub async fn read_all(
        &self,
        cursor: GlobalCursor,
        limit: i64,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let query = format!(
            "SELECT {EVENT_COLUMNS} FROM events \
             WHERE (transaction_id, global_position) > ($1::text::xid8, $2) \
               AND transaction_id < pg_snapshot_xmin(pg_current_snapshot()) \
             ORDER BY transaction_id, global_position LIMIT $3"
        );
        let rows = sqlx::query(&query)
            .bind(cursor.transaction_id.to_string())
            .bind(cursor.global_position)
            .bind(limit.clamp(1, READ_PAGE_MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_event_from_row).collect()
    }
}

/// The result of checking one tenant's chain in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainReport {
    pub tenant_id: TenantId,
    /// Events read.
    pub events: u64,
    /// The head row (seq, hash).
    pub head_seq: i64,
    pub head_hash: ChainHash,
    /// Everything found wrong, in seq order; empty for an intact chain.
    pub findings: Vec<crate::chain::ChainFinding>,
}

impl EventStore {
    /// Recomputes `tenant_id`'s chain from the stored columns, page by page,
    /// and compares its end with the head row.
    pub async fn check_chain(&self, tenant_id: TenantId) -> Result<ChainReport, StoreError> {
        let head = self
            .chain_head(tenant_id)
            .await?
            .ok_or(StoreError::UnknownTenant(tenant_id))?;
        let mut checker = crate::chain::ChainChecker::default();
        let mut findings = Vec::new();
        // Page by the seq actually read, so a hole does not stop the walk.
        let mut after_seq = 0;
        loop {
            let page = self
                .read_tenant(tenant_id, after_seq, READ_PAGE_MAX)
                .await?;
            let Some(last) = page.last() else { break };
            after_seq = last.tenant_seq;
            for event in &page {
                findings.extend(check_stored_event(&mut checker, event));
            }
        }
        findings.extend(checker.finish(head.seq, &head.hash));
        Ok(ChainReport {
            tenant_id,
            events: checker.events(),
            head_seq: head.seq,
            head_hash: head.hash,
            findings,
        })
    }
}

/// Feeds one stored event to a checker.
pub fn check_stored_event(
    checker: &mut crate::chain::ChainChecker,
    event: &StoredEvent,
) -> Vec<crate::chain::ChainFinding> {
    check_text_event(
        checker,
        &event.fields(event.payload.as_str(), event.metadata.as_str()),
        &event.prev_hash,
        &event.hash,
    )
}

/// Feeds one event, with payload and metadata as stored text, to a checker.
/// The text is hashed as read; only when that does not match is it
/// re-canonicalised, so that a change of text form alone is never reported
/// as tampering.
pub fn check_text_event(
    checker: &mut crate::chain::ChainChecker,
    fields: &EventFields<'_>,
    prev_hash: &ChainHash,
    hash: &ChainHash,
) -> Vec<crate::chain::ChainFinding> {
    use crate::chain::ChainFinding;
    let mut findings = checker.check(fields, prev_hash, hash);
    let mismatch = findings
        .iter()
        .position(|finding| matches!(finding, ChainFinding::HashMismatch { .. }));
    if let Some(position) = mismatch {
        let recanonical = |text: &str| {
            serde_json::from_str::<Value>(text)
                .map_err(|error| CanonicalError::Unparsable(error.to_string()))
                .and_then(|value| to_canonical_string(&value))
        };
        match (recanonical(fields.payload), recanonical(fields.metadata)) {
            (Ok(payload), Ok(metadata)) => {
                let mut canonical = *fields;
                canonical.payload = &payload;
                canonical.metadata = &metadata;
                if canonical.hash(prev_hash) == *hash {
                    findings.remove(position);
                }
            }
            (Err(error), _) | (_, Err(error)) => {
                findings[position] = ChainFinding::Uncanonical {
                    tenant_seq: fields.tenant_seq,
                    reason: error.to_string(),
                };
            }
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_object_of_canonical_members_is_the_canonical_object() {
        let body = JsonText::canonical(&serde_json::json!({"bb": 1, "a": [true]})).unwrap();
        let kind = JsonText::canonical("consume_quota").unwrap();
        let quoted = JsonText::canonical("x").unwrap();
        let object = JsonText::object(&[
            ("request", &body),
            ("say \"hi\"", &quoted),
            ("command", &kind),
        ])
        .unwrap();
        assert_eq!(
            object.as_str(),
            r#"{"command": "consume_quota", "request": {"a": [true], "bb": 1}, "say \"hi\"": "x"}"#
        );
        let through_value = JsonText::from_value(&object.to_value().unwrap()).unwrap();
        assert_eq!(object, through_value);
        assert_eq!(
            JsonText::object(&[("a\0", &kind)]),
            Err(CanonicalError::Nul)
        );
    }
}
