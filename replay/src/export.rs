//! Evidence export: a tenant's events with their hashes as JSON Lines, and
//! reading such a file back, offline, for `verify --file` and `replay --file`.
//!
//! Line 1 is a header: `{"format": "ledger-export", "version": 1,
//! "tenant_id", "events", "head_seq", "head_hash", "exported_at"}`. Every
//! further line is one event with every hashed column, `prev_hash` and
//! `hash`. An auditor needs only the `ledger` binary and the file.

use crate::source::{page, AuditEvent, PAGE_EVENTS};
use crate::state::TenantState;
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

/// Format version in the header.
pub const FORMAT_VERSION: u32 = 1;

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
    payload: Value,
    metadata: Value,
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
    let head: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT last_seq, last_hash FROM chain_heads WHERE tenant_id = $1")
            .bind(tenant_id.as_uuid())
            .fetch_optional(&mut *transaction)
            .await?;
    let (head_seq, head_hash) = head.ok_or(VerifyError::UnknownTenant(tenant_id))?;
    let head_hash = ChainHash::from_slice(&head_hash).ok_or_else(|| {
        StoreError::Corrupt(format!(
            "chain head hash of tenant {tenant_id} is not 32 bytes"
        ))
    })?;
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events WHERE tenant_id = $1")
        .bind(tenant_id.as_uuid())
        .fetch_one(&mut *transaction)
        .await?;
    let file = std::fs::File::create(out).map_err(io_error(out))?;
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
         -> Result<(), VerifyError> { value.write_to(writer).map_err(io_error(out)) };
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
    writer.flush().map_err(io_error(out))?;
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

/// An export file opened for reading: its header and its events, each with
/// its line number.
struct ExportFile {
    header: Header,
    lines: std::io::Lines<BufReader<std::fs::File>>,
    line_number: u64,
}

impl ExportFile {
    fn open(path: &Path) -> Result<Self, VerifyError> {
        let file = std::fs::File::open(path).map_err(io_error(path))?;
        let mut lines = BufReader::new(file).lines();
        let first = lines
            .next()
            .ok_or_else(|| {
                VerifyError::Format("line 1: the file is empty; expected an export header".into())
            })?
            .map_err(io_error(path))?;
        let header: Header = serde_json::from_str(&first).map_err(|error| {
            VerifyError::Format(format!("line 1: not an export header: {error}"))
        })?;
        if header.format != FORMAT || header.version != FORMAT_VERSION {
            return Err(VerifyError::Format(format!(
                "line 1: format {:?} version {} is not {FORMAT} version {FORMAT_VERSION}",
                header.format, header.version
            )));
        }
        Ok(Self {
            header,
            lines,
            line_number: 1,
        })
    }

    /// The next event, or a finding for a line that is not one.
    fn next_event(&mut self) -> Option<(u64, Result<AuditEvent, Finding>)> {
        let text = self.lines.next()?;
        self.line_number += 1;
        let line = self.line_number;
        let parsed = match text {
            Err(error) => Err(format!("unreadable: {error}")),
            Ok(text) if text.len() > LINE_BYTES_MAX => {
                Err(format!("longer than {LINE_BYTES_MAX} bytes"))
            }
            Ok(text) => serde_json::from_str::<Line>(&text)
                .map_err(|error| format!("not an event line: {error}"))
                .and_then(|event| {
                    let payload =
                        to_canonical_string(&event.payload).map_err(|error| error.to_string())?;
                    let metadata =
                        to_canonical_string(&event.metadata).map_err(|error| error.to_string())?;
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
        Some((
            line,
            parsed.map_err(|message| Finding::File { line, message }),
        ))
    }
}

/// Verifies an export file offline: chain, seqs, head, the domain replay.
pub fn verify_file(path: &Path) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let mut file = ExportFile::open(path)?;
    let mut audit = TenantAudit::default();
    let mut file_findings = Vec::new();
    while let Some((line, event)) = file.next_event() {
        match event {
            Ok(event) => audit.check(&event, Some(line)),
            Err(finding) => file_findings.push(finding),
        }
    }
    let events = audit.events();
    let header = file.header.clone();
    let (mut verdict, _) = audit.finish(header.tenant_id, header.head_seq, header.head_hash);
    if events != header.events {
        file_findings.push(Finding::File {
            line: 1,
            message: format!(
                "the header declares {} events, the file holds {events}",
                header.events
            ),
        });
    }
    verdict.findings.extend(file_findings);
    Ok(report_for_file(verdict, started))
}

/// Where a replay stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// Every event.
    Head,
    /// Events up to this tenant_seq.
    Seq(i64),
    /// Events recorded at or before this time (recorded_at never decreases
    /// along tenant_seq), with quotas' availability as of this time.
    Time(DateTime<Utc>),
}

impl AsOf {
    fn includes(self, event: &AuditEvent) -> bool {
        match self {
            Self::Head => true,
            Self::Seq(seq) => event.tenant_seq <= seq,
            Self::Time(time) => event.recorded_at <= time,
        }
    }

    fn at(self) -> Option<DateTime<Utc>> {
        match self {
            Self::Time(time) => Some(time),
            _ => None,
        }
    }
}

/// A replay that could not be completed.
fn refused(finding: &Finding) -> VerifyError {
    VerifyError::Format(format!("the history does not replay: {finding}"))
}

/// The tenant's state as of `as_of`, from an export file, offline.
pub fn replay_file(path: &Path, as_of: AsOf) -> Result<Value, VerifyError> {
    let mut file = ExportFile::open(path)?;
    let mut state = TenantState::for_report();
    while let Some((_, event)) = file.next_event() {
        let event = event.map_err(|finding| refused(&finding))?;
        if !as_of.includes(&event) {
            break;
        }
        state.apply(&event).map_err(|finding| {
            refused(&Finding::Replay {
                finding,
                line: None,
            })
        })?;
    }
    Ok(state.report(file.header.tenant_id, as_of.at()))
}

/// The tenant's state as of `as_of`, from the store, folded event by event
/// inside one snapshot (the same answer at any later time).
pub async fn replay_tenant(
    connection: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    as_of: AsOf,
) -> Result<Value, VerifyError> {
    let mut state = TenantState::for_report();
    let until = match as_of {
        AsOf::Seq(seq) => seq,
        _ => i64::MAX,
    };
    let mut after_seq = 0;
    'pages: loop {
        let events = page(connection, tenant_id, after_seq, until).await?;
        let Some(last) = events.last() else { break };
        after_seq = last.tenant_seq;
        for event in &events {
            if !as_of.includes(event) {
                break 'pages;
            }
            state.apply(event).map_err(|finding| {
                refused(&Finding::Replay {
                    finding,
                    line: None,
                })
            })?;
        }
        if (events.len() as i64) < PAGE_EVENTS {
            break;
        }
    }
    Ok(state.report(tenant_id, as_of.at()))
}
