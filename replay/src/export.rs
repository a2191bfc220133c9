//! Evidence export: a tenant's events with their hashes as JSON Lines, and
//! reading such a file back, offline, for `verify --file` and `replay --file`.
//! Lines are read with a bound ([`LINE_BYTES_MAX`]): a longer line is
//! skipped and reported, never held in memory whole.
//!
//! Line 1 is a header: `{"format": "ledger-export", "version": 2,
//! "tenant_id", "events", "head_seq", "head_hash", "exported_at"}`. Every
//! further line is one event with every hashed column, `prev_hash` and
//! `hash`. An auditor needs only the `ledger` binary and the file.

use crate::as_of::{AsOf, Replayer};
use crate::source::{page, AuditEvent, PAGE_EVENTS};
use crate::verify::{report_for_file, Finding, TenantAudit, VerifyError, VerifyReport};
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use eventstore::canonical::to_canonical_string;
use eventstore::{ChainHash, EventStore, StoreError};
use projections::progress::Progress;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;
use uuid::Uuid;

/// Format name in the header.
pub const FORMAT: &str = "ledger-export";

/// Format version in the header. Version 2: the first event of every
/// request carries the request in its metadata (`verify` and `replay` decide
/// it again); a version 1 file has none and is not read.
pub const FORMAT_VERSION: u32 = 2;

/// The format and version a header declares, read before the rest of it
/// (another version may have other fields).
#[derive(Deserialize)]
struct Declared {
    format: String,
    version: u32,
}

/// Refuses a file of another format or version, saying which it is.
fn check_format(first: &str) -> Result<(), VerifyError> {
    let declared: Declared = serde_json::from_str(first)
        .map_err(|error| VerifyError::Format(format!("line 1: not an export header: {error}")))?;
    if declared.format != FORMAT {
        return Err(VerifyError::Format(format!(
            "line 1: format {:?} is not {FORMAT}",
            declared.format
        )));
    }
    if declared.version != FORMAT_VERSION {
        return Err(VerifyError::Format(format!(
            "line 1: {FORMAT} version {} is not read by this binary, which reads version \
             {FORMAT_VERSION} only (export the ledger again with this binary)",
            declared.version
        )));
    }
    Ok(())
}

/// Longest line read from an export file.
const LINE_BYTES_MAX: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    pub format: String,
    pub version: u32,
    pub tenant_id: TenantId,
    pub events: u64,
    pub head_seq: i64,
    pub head_hash: ChainHash,
    pub exported_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    tenant_seq: i64,
    aggregate_type: String,
    aggregate_id: String,
    aggregate_seq: i64,
    event_id: Uuid,
    event_type: String,
    event_version: String,
    /// Read strictly (each key once), as the hash is taken of one reading.
    payload: crate::strict_json::Strict,
    metadata: crate::strict_json::Strict,
    idempotency_key: String,
    recorded_at: DateTime<Utc>,
    prev_hash: ChainHash,
    hash: ChainHash,
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExportReport {
    pub tenant_id: TenantId,
    pub events: u64,
    pub head_seq: i64,
    pub head_hash: ChainHash,
}

fn io_error(path: &Path) -> impl Fn(std::io::Error) -> VerifyError + '_ {
    move |error| VerifyError::File {
        path: path.display().to_string(),
        error,
    }
}

/// What an export's writing of `path` failed with.
fn write_error(path: &Path) -> impl Fn(std::io::Error) -> VerifyError + '_ {
    move |error| VerifyError::Write {
        path: path.display().to_string(),
        error,
    }
}

/// Writes `tenant_id`'s events, as of one consistent snapshot, to `out`.
pub async fn export(
    store: &EventStore,
    tenant_id: TenantId,
    out: &Path,
    quiet: bool,
) -> Result<ExportReport, VerifyError> {
    let mut transaction = store.pool().begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *transaction)
        .await?;
    let (head_seq, head_hash) = crate::source::stored_head(&mut transaction, tenant_id)
        .await?
        .ok_or(VerifyError::UnknownTenant(tenant_id))?;
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE tenant_id = $1")
        .bind(tenant_id.as_uuid())
        .fetch_one(&mut *transaction)
        .await?;
    let file = std::fs::File::create(out).map_err(write_error(out))?;
    let mut writer = BufWriter::new(file);
    let header = Header {
        format: FORMAT.to_string(),
        version: FORMAT_VERSION,
        tenant_id,
        events: u64::try_from(events).unwrap_or(0),
        head_seq,
        head_hash,
        exported_at: Utc::now(),
    };
    let write_line =
        |writer: &mut BufWriter<std::fs::File>,
         value: &dyn erased::Line|
         -> Result<(), VerifyError> { value.write_to(writer).map_err(write_error(out)) };
    write_line(&mut writer, &header)?;
    let mut progress = Progress::new("export", header.events, quiet);
    let mut after_seq = 0;
    loop {
        let page = page(&mut transaction, tenant_id, after_seq, i64::MAX).await?;
        let Some(last) = page.last() else { break };
        after_seq = last.tenant_seq;
        for event in &page {
            let line = Line {
                tenant_seq: event.tenant_seq,
                aggregate_type: event.aggregate_type.clone(),
                aggregate_id: event.aggregate_id.clone(),
                aggregate_seq: event.aggregate_seq,
                event_id: event.event_id,
                event_type: event.event_type.clone(),
                event_version: event.event_version.clone(),
                payload: serde_json::from_str(&event.payload)
                    .map_err(|error| StoreError::Corrupt(error.to_string()))?,
                metadata: serde_json::from_str(&event.metadata)
                    .map_err(|error| StoreError::Corrupt(error.to_string()))?,
                idempotency_key: event.idempotency_key.clone(),
                recorded_at: event.recorded_at,
                prev_hash: event.prev_hash,
                hash: event.hash,
            };
            write_line(&mut writer, &line)?;
        }
        progress.advance(page.len() as u64);
        if (page.len() as i64) < PAGE_EVENTS {
            break;
        }
    }
    transaction.commit().await?;
    writer.flush().map_err(write_error(out))?;
    progress.finish();
    Ok(ExportReport {
        tenant_id,
        events: header.events,
        head_seq,
        head_hash,
    })
}

/// Serialising a header or an event as one line.
mod erased {
    pub trait Line {
        fn write_to(&self, writer: &mut dyn std::io::Write) -> std::io::Result<()>;
    }

    impl<T: serde::Serialize> Line for T {
        fn write_to(&self, writer: &mut dyn std::io::Write) -> std::io::Result<()> {
            serde_json::to_writer(&mut *writer, self)?;
            writer.write_all(b"\n")
        }
    }
}

/// One line of an export file as read, bounded.
enum FileLine {
    Text(String),
    /// Longer than [`LINE_BYTES_MAX`]: skipped without being held.
    TooLong,
    NotUtf8,
}

/// Reads the next line into `buffer` (without its line end), holding at
/// most `line_bytes_max` bytes of it: a longer line is skipped to its end
/// and reported. `None` at the end of the file.
fn read_line(
    reader: &mut impl BufRead,
    buffer: &mut Vec<u8>,
    line_bytes_max: usize,
) -> std::io::Result<Option<FileLine>> {
    buffer.clear();
    let bound = u64::try_from(line_bytes_max)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let read = std::io::Read::take(&mut *reader, bound).read_until(b'\n', buffer)?;
    if read == 0 {
        return Ok(None);
    }
    if buffer.last() == Some(&b'\n') {
        buffer.pop();
        if buffer.last() == Some(&b'\r') {
            buffer.pop();
        }
    } else if buffer.len() > line_bytes_max {
        buffer.clear();
        skip_line(reader)?;
        return Ok(Some(FileLine::TooLong));
    }
    Ok(Some(match std::str::from_utf8(buffer) {
        Ok(text) => FileLine::Text(text.to_string()),
        Err(_) => FileLine::NotUtf8,
    }))
}

/// Consumes the rest of the current line, a buffer at a time.
fn skip_line(reader: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let available = reader.fill_buf()?;
        if available.is_empty() {
            return Ok(());
        }
        match available.iter().position(|byte| *byte == b'\n') {
            Some(end) => {
                reader.consume(end + 1);
                return Ok(());
            }
            None => {
                let length = available.len();
                reader.consume(length);
            }
        }
    }
}

/// A line after the header: its number, and its event or why it is none.
type EventLine = (u64, Result<AuditEvent, Finding>);

/// An export file opened for reading: its header and its events, each with
/// its line number.
struct ExportFile {
    path: std::path::PathBuf,
    header: Header,
    reader: BufReader<std::fs::File>,
    buffer: Vec<u8>,
    line_number: u64,
}

impl ExportFile {
    fn open(path: &Path) -> Result<Self, VerifyError> {
        let file = std::fs::File::open(path).map_err(io_error(path))?;
        let mut reader = BufReader::new(file);
        let mut buffer = Vec::new();
        let first =
            match read_line(&mut reader, &mut buffer, LINE_BYTES_MAX).map_err(io_error(path))? {
                None => {
                    return Err(VerifyError::Format(
                        "line 1: the file is empty; expected an export header".into(),
                    ))
                }
                Some(FileLine::TooLong) => {
                    return Err(VerifyError::Format(format!(
                        "line 1: longer than {LINE_BYTES_MAX} bytes; expected an export header"
                    )))
                }
                Some(FileLine::NotUtf8) => {
                    return Err(VerifyError::Format(
                        "line 1: not UTF-8; expected an export header".into(),
                    ))
                }
                Some(FileLine::Text(text)) => text,
            };
        check_format(&first)?;
        let header: Header = serde_json::from_str(&first).map_err(|error| {
            VerifyError::Format(format!("line 1: not an export header: {error}"))
        })?;
        Ok(Self {
            path: path.to_path_buf(),
            header,
            reader,
            buffer,
            line_number: 1,
        })
    }

    /// The next event, or a finding for a line that is not one.
    fn next_event(&mut self) -> Result<Option<EventLine>, VerifyError> {
        let read = read_line(&mut self.reader, &mut self.buffer, LINE_BYTES_MAX)
            .map_err(io_error(&self.path))?;
        let Some(read) = read else {
            return Ok(None);
        };
        self.line_number += 1;
        let line = self.line_number;
        let parsed = match read {
            FileLine::TooLong => Err(format!("longer than {LINE_BYTES_MAX} bytes")),
            FileLine::NotUtf8 => Err("not UTF-8".to_string()),
            FileLine::Text(text) => serde_json::from_str::<Line>(&text)
                .map_err(|error| format!("not an event line: {error}"))
                .and_then(|event| {
                    let payload =
                        to_canonical_string(&event.payload.0).map_err(|error| error.to_string())?;
                    let metadata = to_canonical_string(&event.metadata.0)
                        .map_err(|error| error.to_string())?;
                    Ok(AuditEvent {
                        tenant_id: self.header.tenant_id,
                        tenant_seq: event.tenant_seq,
                        aggregate_type: event.aggregate_type,
                        aggregate_id: event.aggregate_id,
                        aggregate_seq: event.aggregate_seq,
                        event_id: event.event_id,
                        event_type: event.event_type,
                        event_version: event.event_version,
                        payload,
                        metadata,
                        idempotency_key: event.idempotency_key,
                        recorded_at: event.recorded_at,
                        prev_hash: event.prev_hash,
                        hash: event.hash,
                    })
                }),
        };
        Ok(Some((
            line,
            parsed.map_err(|message| Finding::File { line, message }),
        )))
    }

    /// The finding for a header whose event count is not the file's.
    fn count_finding(&self, events: u64) -> Option<Finding> {
        (events != self.header.events).then(|| Finding::File {
            line: 1,
            message: format!(
                "the header declares {} events, the file holds {events}",
                self.header.events
            ),
        })
    }
}

/// Verifies an export file offline: chain, seqs, head, the domain replay.
pub fn verify_file(path: &Path) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let mut file = ExportFile::open(path)?;
    let mut audit = TenantAudit::default();
    // Events, not lines: a line that is no event is its own finding, and
    // is not counted against the header's count as well.
    let mut events = 0u64;
    while let Some((line, event)) = file.next_event()? {
        match event {
            Ok(event) => {
                events += 1;
                audit.check(event, Some(line));
            }
            Err(finding) => audit.record(finding),
        }
    }
    if let Some(finding) = file.count_finding(events) {
        audit.record(finding);
    }
    let header = &file.header;
    let (verdict, _) = audit.finish(header.tenant_id, header.head_seq, header.head_hash);
    Ok(report_for_file(verdict, started))
}

/// The tenant's state as of `as_of`, from an export file, offline. The
/// whole file is checked as it is read (every line an event, the hash chain
/// recomputed, the last event equal to the header's head, the count equal
/// to the header's); the first mismatch refuses the replay, naming its line.
pub fn replay_file(path: &Path, as_of: AsOf) -> Result<Value, VerifyError> {
    let mut file = ExportFile::open(path)?;
    let mut replayer = Replayer::new(as_of.within(file.header.head_seq)?);
    let mut lines = 0u64;
    while let Some((line, event)) = file.next_event()? {
        lines += 1;
        let event = event.map_err(VerifyError::Refused)?;
        replayer
            .feed(event, Some(line))
            .map_err(VerifyError::Refused)?;
    }
    let header = &file.header;
    replayer
        .finish(header.head_seq, &header.head_hash)
        .map_err(VerifyError::Refused)?;
    if let Some(finding) = file.count_finding(lines) {
        return Err(VerifyError::Refused(finding));
    }
    replayer
        .report(header.tenant_id)
        .map_err(VerifyError::Refused)
}

/// The last seq at or before `seq` in the export file at `path` that ends
/// a request (its next event is another request's, or there is none).
pub fn request_end(path: &Path, seq: i64) -> Result<i64, VerifyError> {
    let mut file = ExportFile::open(path)?;
    let mut end = 0;
    let mut last: Option<(i64, String)> = None;
    while let Some((_, event)) = file.next_event()? {
        let event = event.map_err(VerifyError::Refused)?;
        if let Some((last_seq, key)) = &last {
            if *key != event.idempotency_key && *last_seq <= seq {
                end = *last_seq;
            }
        }
        if event.tenant_seq > seq {
            return Ok(end);
        }
        last = Some((event.tenant_seq, event.idempotency_key));
    }
    Ok(last.map_or(
        end,
        |(last_seq, _)| if last_seq <= seq { last_seq } else { end },
    ))
}

/// The tenant's state as of `as_of` folded from an export file, offline,
/// checked as [`replay_file`] checks it, with every journal entry kept
/// (what a report computes from), and the file's header.
pub fn fold_file(
    path: &Path,
    as_of: AsOf,
) -> Result<(Header, crate::state::TenantState), VerifyError> {
    let mut file = ExportFile::open(path)?;
    let mut replayer = Replayer::new(as_of).keep_entries();
    let mut progress = Progress::new("report", file.header.events, false);
    let mut lines = 0u64;
    while let Some((line, event)) = file.next_event()? {
        lines += 1;
        progress.advance(1);
        let event = event.map_err(VerifyError::Refused)?;
        replayer
            .feed(event, Some(line))
            .map_err(VerifyError::Refused)?;
    }
    progress.finish();
    replayer
        .finish(file.header.head_seq, &file.header.head_hash)
        .map_err(VerifyError::Refused)?;
    if let Some(finding) = file.count_finding(lines) {
        return Err(VerifyError::Refused(finding));
    }
    let state = replayer.into_state().map_err(VerifyError::Refused)?;
    Ok((file.header, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_line_longer_than_the_bound_is_skipped_without_being_held() {
        // Proves: memory for a line stays within the bound however long the
        // line is, the line is reported, and the next line is read whole.
        let long = std::io::repeat(b'x').take(1_000_000);
        let rest: &[u8] = b"\n{\"next\": 1}\r\nlast";
        let mut reader = BufReader::with_capacity(64, long.chain(rest));
        let mut buffer = Vec::new();
        assert!(matches!(
            read_line(&mut reader, &mut buffer, 100),
            Ok(Some(FileLine::TooLong))
        ));
        assert!(buffer.capacity() <= 256, "{}", buffer.capacity());
        match read_line(&mut reader, &mut buffer, 100) {
            Ok(Some(FileLine::Text(text))) => assert_eq!(text, "{\"next\": 1}"),
            _ => panic!("expected the next line"),
        }
        match read_line(&mut reader, &mut buffer, 100) {
            Ok(Some(FileLine::Text(text))) => assert_eq!(text, "last"),
            _ => panic!("expected the last line"),
        }
        assert!(matches!(read_line(&mut reader, &mut buffer, 100), Ok(None)));
    }

    #[test]
    fn a_line_of_exactly_the_bound_is_read() {
        // Proves: the bound is on the line's bytes, its line end excluded.
        let text = format!("{}\n", "y".repeat(100));
        let mut reader = BufReader::new(text.as_bytes());
        let mut buffer = Vec::new();
        match read_line(&mut reader, &mut buffer, 100) {
            Ok(Some(FileLine::Text(line))) => assert_eq!(line.len(), 100),
            _ => panic!("expected the line"),
        }
        let mut reader = BufReader::new(&[0xff, 0xfe, b'\n'][..]);
        assert!(matches!(
            read_line(&mut reader, &mut buffer, 100),
            Ok(Some(FileLine::NotUtf8))
        ));
    }
}
