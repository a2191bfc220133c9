//! The per-tenant hash chain.
//!
//! `hash = blake3(prev_hash || canonical(event))`. The canonical encoding of an
//! event is a length-prefixed concatenation of its stored columns, so it can be
//! recomputed from the `events` table alone (or from an export file) and no two
//! different events share an encoding. The first event of a tenant chains from
//! [`GENESIS`], 32 zero bytes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

/// Version tag at the start of every canonical event encoding.
const ENCODING_TAG: &[u8] = b"ledger.event.v1";

/// A 32-byte blake3 digest in the chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChainHash(pub [u8; 32]);

/// The hash the first event of every tenant chains from.
pub const GENESIS: ChainHash = ChainHash([0; 32]);

impl ChainHash {
    /// Reads a hash from stored bytes; `None` unless exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// Lower-case hex, the form shown to users and written to exports.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from_digit(u32::from(byte >> 4), 16).unwrap_or('0'));
            out.push(char::from_digit(u32::from(byte & 0xf), 16).unwrap_or('0'));
        }
        out
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (index, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl fmt::Debug for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChainHash({})", self.to_hex())
    }
}

impl fmt::Display for ChainHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for ChainHash {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ChainHash {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::from_hex(&text).ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
    }
}

/// The stored columns of one event that the chain covers, borrowed.
/// `payload` and `metadata` are their canonical JSON text.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    pub tenant_id: Uuid,
    pub tenant_seq: i64,
    pub aggregate_type: &'a str,
    pub aggregate_id: &'a str,
    pub aggregate_seq: i64,
    pub event_id: Uuid,
    pub event_type: &'a str,
    pub event_version: &'a str,
    pub payload: &'a str,
    pub metadata: &'a str,
    pub idempotency_key: &'a str,
    pub recorded_at_micros: i64,
}

impl EventFields<'_> {
    /// `blake3(prev || canonical(self))`.
    pub fn hash(&self, prev: &ChainHash) -> ChainHash {
        let mut hasher = Buffered::new();
        hasher.put(&prev.0);
        hasher.put_sized(ENCODING_TAG);
        hasher.put(self.tenant_id.as_bytes());
        hasher.put(&self.tenant_seq.to_be_bytes());
        hasher.put_sized(self.aggregate_type.as_bytes());
        hasher.put_sized(self.aggregate_id.as_bytes());
        hasher.put(&self.aggregate_seq.to_be_bytes());
        hasher.put(self.event_id.as_bytes());
        hasher.put_sized(self.event_type.as_bytes());
        hasher.put_sized(self.event_version.as_bytes());
        hasher.put_sized(self.payload.as_bytes());
        hasher.put_sized(self.metadata.as_bytes());
        hasher.put_sized(self.idempotency_key.as_bytes());
        hasher.put(&self.recorded_at_micros.to_be_bytes());
        hasher.finish()
    }
}

/// A BLAKE3 hasher fed through a buffer of one chunk: the hash of an event
/// takes two dozen small pieces, and handing each to BLAKE3 on its own
/// costs more than hashing them. The input, and so the hash, is the same.
struct Buffered {
    hasher: blake3::Hasher,
    buffer: [u8; BUFFERED_BYTES],
    len: usize,
}

/// BLAKE3's chunk.
const BUFFERED_BYTES: usize = 1024;

impl Buffered {
    fn new() -> Self {
        Self {
            hasher: blake3::Hasher::new(),
            buffer: [0; BUFFERED_BYTES],
            len: 0,
        }
    }

    fn put(&mut self, bytes: &[u8]) {
        if bytes.len() > BUFFERED_BYTES - self.len {
            self.flush();
            if bytes.len() >= BUFFERED_BYTES {
                self.hasher.update(bytes);
                return;
            }
        }
        self.buffer[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    /// `bytes` after their length. Lengths are bounded by PostgreSQL's 1 GB
    /// field limit, so u64 never truncates.
    fn put_sized(&mut self, bytes: &[u8]) {
        self.put(&(bytes.len() as u64).to_be_bytes());
        self.put(bytes);
    }

    fn flush(&mut self) {
        self.hasher.update(&self.buffer[..self.len]);
        self.len = 0;
    }

    fn finish(mut self) -> ChainHash {
        self.flush();
        ChainHash(*self.hasher.finalize().as_bytes())
    }
}

/// Truncates a time to the microsecond precision `timestamptz` keeps, so the
/// hashed time equals the stored one.
pub fn to_stored_precision(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>(payload: &'a str) -> EventFields<'a> {
        EventFields {
            tenant_id: Uuid::nil(),
            tenant_seq: 1,
            aggregate_type: "counter",
            aggregate_id: "c-1",
            aggregate_seq: 1,
            event_id: Uuid::nil(),
            event_type: "Added",
            event_version: "1",
            payload,
            metadata: "{}",
            idempotency_key: "k",
            recorded_at_micros: 0,
        }
    }

    #[test]
    fn hash_depends_on_prev_and_on_every_byte_of_the_payload() {
        let first = fields(r#"{"amount": 1}"#).hash(&GENESIS);
        assert_ne!(first, fields(r#"{"amount": 2}"#).hash(&GENESIS));
        assert_ne!(first, fields(r#"{"amount": 1}"#).hash(&first));
        assert_eq!(first, fields(r#"{"amount": 1}"#).hash(&GENESIS));
    }

    const GOLDEN: &str = "e1ac278a03cd4ea7aa9f636edfa8d10b1a30ba9943883ef61788758ed1f7a50c";

    #[test]
    fn the_hash_is_blake3_of_the_fields_in_order_whatever_their_size() {
        // Every field handed to BLAKE3 on its own, as the encoding defines.
        fn reference(fields: &EventFields<'_>, prev: &ChainHash) -> ChainHash {
            let mut hasher = blake3::Hasher::new();
            let sized = |hasher: &mut blake3::Hasher, bytes: &[u8]| {
                hasher.update(&(bytes.len() as u64).to_be_bytes());
                hasher.update(bytes);
            };
            hasher.update(&prev.0);
            sized(&mut hasher, ENCODING_TAG);
            hasher.update(fields.tenant_id.as_bytes());
            hasher.update(&fields.tenant_seq.to_be_bytes());
            sized(&mut hasher, fields.aggregate_type.as_bytes());
            sized(&mut hasher, fields.aggregate_id.as_bytes());
            hasher.update(&fields.aggregate_seq.to_be_bytes());
            hasher.update(fields.event_id.as_bytes());
            sized(&mut hasher, fields.event_type.as_bytes());
            sized(&mut hasher, fields.event_version.as_bytes());
            sized(&mut hasher, fields.payload.as_bytes());
            sized(&mut hasher, fields.metadata.as_bytes());
            sized(&mut hasher, fields.idempotency_key.as_bytes());
            hasher.update(&fields.recorded_at_micros.to_be_bytes());
            ChainHash(*hasher.finalize().as_bytes())
        }
        let prev = fields("{}").hash(&GENESIS);
        // The payload starts 159 bytes into the buffer: payloads that fit
        // it, fill it to the byte (865), cross it, and are larger than it
        // on their own.
        for size in [0, 1, 864, 865, 866, 900, 1023, 1024, 1025, 3000] {
            let payload = "x".repeat(size);
            let fields = fields(&payload);
            assert_eq!(fields.hash(&prev), reference(&fields, &prev), "{size}");
        }
        // The hash of one event, as every chain stored so far has it.
        let fields = fields(r#"{"amount": 1}"#);
        assert_eq!(reference(&fields, &GENESIS).to_hex(), GOLDEN);
        assert_eq!(fields.hash(&GENESIS).to_hex(), GOLDEN);
    }

    #[test]
    fn length_prefixes_keep_field_boundaries_apart() {
        let mut a = fields("{}");
        a.aggregate_type = "ab";
        a.aggregate_id = "c";
        let mut b = fields("{}");
        b.aggregate_type = "a";
        b.aggregate_id = "bc";
        assert_ne!(a.hash(&GENESIS), b.hash(&GENESIS));
    }

    #[test]
    fn hex_round_trips() {
        let hash = fields("{}").hash(&GENESIS);
        assert_eq!(ChainHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(ChainHash::from_hex("zz"), None);
    }
}

/// Something wrong with a tenant's chain, at a tenant_seq.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum ChainFinding {
    /// The next event does not carry the next seq: events are missing or out
    /// of order.
    Gap { expected_seq: i64, found_seq: i64 },
    /// The event's prev_hash is not the previous event's hash.
    PrevHashMismatch {
        tenant_seq: i64,
        stored: ChainHash,
        expected: ChainHash,
    },
    /// The hash recomputed from the event's columns is not the stored one:
    /// the event was altered after it was written.
    HashMismatch {
        tenant_seq: i64,
        stored: ChainHash,
        computed: ChainHash,
    },
    /// The event's data has no canonical form, so it cannot be hashed.
    Uncanonical { tenant_seq: i64, reason: String },
    /// recorded_at went backwards.
    TimeWentBackwards { tenant_seq: i64 },
    /// The chain head row does not match the last event.
    HeadMismatch {
        head_seq: i64,
        head_hash: ChainHash,
        last_seq: i64,
        last_hash: ChainHash,
    },
    /// The chain head row's time is not its last event's: the next request
    /// is stamped no earlier than the head's time, so a head moved forward
    /// dates every later request after it.
    HeadTimeMismatch {
        head_seq: i64,
        head_recorded_at: Option<DateTime<Utc>>,
        last_recorded_at: Option<DateTime<Utc>>,
    },
}

impl ChainFinding {
    /// The chain head row (seq, hash) against the last event (seq, hash;
    /// 0 and [`GENESIS`] before the first): a mismatch when they differ.
    pub fn head_against(head: (i64, ChainHash), last: (i64, ChainHash)) -> Option<Self> {
        (head != last).then_some(Self::HeadMismatch {
            head_seq: head.0,
            head_hash: head.1,
            last_seq: last.0,
            last_hash: last.1,
        })
    }

    /// The tenant_seq the finding is about.
    pub fn tenant_seq(&self) -> i64 {
        match self {
            Self::Gap { expected_seq, .. } => *expected_seq,
            Self::PrevHashMismatch { tenant_seq, .. }
            | Self::HashMismatch { tenant_seq, .. }
            | Self::Uncanonical { tenant_seq, .. }
            | Self::TimeWentBackwards { tenant_seq } => *tenant_seq,
            Self::HeadMismatch { head_seq, .. } | Self::HeadTimeMismatch { head_seq, .. } => {
                *head_seq
            }
        }
    }
}

impl fmt::Display for ChainFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gap { expected_seq, found_seq } => write!(
                f,
                "tenant_seq {expected_seq}: expected next, found {found_seq} (events missing or out of order)"
            ),
            Self::PrevHashMismatch { tenant_seq, stored, expected } => write!(
                f,
                "tenant_seq {tenant_seq}: prev_hash {stored} is not the previous event's hash {expected}"
            ),
            Self::HashMismatch { tenant_seq, stored, computed } => write!(
                f,
                "tenant_seq {tenant_seq}: stored hash {stored} but the columns hash to {computed} (event altered)"
            ),
            Self::Uncanonical { tenant_seq, reason } => {
                write!(f, "tenant_seq {tenant_seq}: cannot be hashed: {reason}")
            }
            Self::TimeWentBackwards { tenant_seq } => {
                write!(f, "tenant_seq {tenant_seq}: recorded_at is earlier than the previous event's")
            }
            Self::HeadMismatch { head_seq, head_hash, last_seq, last_hash } => write!(
                f,
                "chain head says tenant_seq {head_seq} with hash {head_hash}, \
                 but the last event is tenant_seq {last_seq} with hash {last_hash}"
            ),
            Self::HeadTimeMismatch { head_seq, head_recorded_at, last_recorded_at } => {
                let time = |at: &Option<DateTime<Utc>>| {
                    at.map_or("no time".to_string(), |at| at.to_rfc3339())
                };
                write!(
                    f,
                    "chain head says the last event was recorded at {}, \
                     but tenant_seq {head_seq} was recorded at {} \
                     (the next request would be stamped no earlier than the head's time)",
                    time(head_recorded_at),
                    time(last_recorded_at)
                )
            }
        }
    }
}

/// Checks one tenant's chain event by event, in tenant_seq order, keeping only
/// the previous event in memory.
#[derive(Debug, Clone)]
pub struct ChainChecker {
    last_seq: i64,
    last_hash: ChainHash,
    last_micros: i64,
    events: u64,
}

impl Default for ChainChecker {
    fn default() -> Self {
        Self {
            last_seq: 0,
            last_hash: GENESIS,
            last_micros: i64::MIN,
            events: 0,
        }
    }
}

impl ChainChecker {
    /// Checks the next event, given its columns (`fields`, with canonical
    /// payload and metadata) and its stored hashes. Returns what is wrong.
    pub fn check(
        &mut self,
        fields: &EventFields<'_>,
        stored_prev: &ChainHash,
        stored_hash: &ChainHash,
    ) -> Vec<ChainFinding> {
        let mut findings = Vec::new();
        let tenant_seq = fields.tenant_seq;
        if tenant_seq != self.last_seq + 1 {
            findings.push(ChainFinding::Gap {
                expected_seq: self.last_seq + 1,
                found_seq: tenant_seq,
            });
        }
        if *stored_prev != self.last_hash {
            findings.push(ChainFinding::PrevHashMismatch {
                tenant_seq,
                stored: *stored_prev,
                expected: self.last_hash,
            });
        }
        let computed = fields.hash(stored_prev);
        if computed != *stored_hash {
            findings.push(ChainFinding::HashMismatch {
                tenant_seq,
                stored: *stored_hash,
                computed,
            });
        }
        if fields.recorded_at_micros < self.last_micros {
            findings.push(ChainFinding::TimeWentBackwards { tenant_seq });
        }
        self.last_seq = tenant_seq;
        self.last_hash = *stored_hash;
        self.last_micros = fields.recorded_at_micros;
        self.events += 1;
        findings
    }

    /// Records an event that could not be hashed at all, keeping the chain
    /// position so later events are still checked.
    pub fn skip_uncanonical(
        &mut self,
        tenant_seq: i64,
        stored_hash: &ChainHash,
        reason: String,
    ) -> Vec<ChainFinding> {
        let mut findings = Vec::new();
        if tenant_seq != self.last_seq + 1 {
            findings.push(ChainFinding::Gap {
                expected_seq: self.last_seq + 1,
                found_seq: tenant_seq,
            });
        }
        findings.push(ChainFinding::Uncanonical { tenant_seq, reason });
        self.last_seq = tenant_seq;
        self.last_hash = *stored_hash;
        self.events += 1;
        findings
    }

    /// Compares the time of the last event checked with the stored head's
    /// (`None` before the first event), once the head's seq and hash are
    /// the last event's ([`Self::finish`] finds them otherwise).
    pub fn head_time(&self, head_recorded_at: Option<DateTime<Utc>>) -> Option<ChainFinding> {
        let last = (self.events > 0).then_some(self.last_micros);
        if head_recorded_at.map(|at| at.timestamp_micros()) == last {
            return None;
        }
        Some(ChainFinding::HeadTimeMismatch {
            head_seq: self.last_seq,
            head_recorded_at,
            last_recorded_at: last.and_then(DateTime::from_timestamp_micros),
        })
    }

    /// Compares the end of the chain with the stored head (seq, hash).
    pub fn finish(&self, head_seq: i64, head_hash: &ChainHash) -> Vec<ChainFinding> {
        ChainFinding::head_against((head_seq, *head_hash), (self.last_seq, self.last_hash))
            .into_iter()
            .collect()
    }

    /// Events checked so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// seq and hash of the last event checked.
    pub fn last(&self) -> (i64, ChainHash) {
        (self.last_seq, self.last_hash)
    }
}
