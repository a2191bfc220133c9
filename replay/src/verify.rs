//! `ledger verify`: everything an auditor can check without trusting the
//! server.
//!
//! Per tenant, in one consistent snapshot, streaming (a few pages in memory
//! at a time): the hash chain recomputed from the stored columns, `tenant_seq`
//! gapless from 1, the chain head row equal to the last event, and the
//! domain replaying its own history (every aggregate's sequence gapless,
//! every event decodable and exactly what the aggregate decides, from the
//! state before it, for the command it records: see `state`; the journal
//! balanced and within account flags). Meanwhile every projection is
//! rebuilt into scratch tables from the same pages (the events up to the
//! projections' checkpoints are read once), and then compared row by row
//! with the live read tables (a table of one row per event, the journal's
//! entries, is filtered in memory as the replay goes, the database
//! comparing what is not certainly equal: see `projections::event_rows`).
//! Every
//! finding names the tenant and seq, or the table and key; a tenant whose
//! history a projection cannot replay is named with the seq it stopped at,
//! and everything else is still checked.

use crate::snapshots::Snapshots;
use crate::source::{stored_page, AuditEvent, PAGE_EVENTS};
use crate::state::{ReplayFinding, TenantState};
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use eventstore::chain::ChainChecker;
use eventstore::{
    check_text_event, ChainFinding, ChainHash, EventStore, StoreError, StoredEvent, GENESIS,
};
use projections::compare::{compare_all_with_replay_fed, Difference, ReplayFailure};
use projections::progress::Progress;
use projections::{Projection, ProjectionError};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

/// Pages read ahead of the projection comparison, which replays the pages
/// the chain walk reads.
const FEED_PAGES: usize = 4;

/// Where the reading of the tenants hands its pages to the projection
/// comparison; `None` once the comparison stopped taking them.
type Feed = Option<mpsc::Sender<Arc<Vec<StoredEvent>>>>;

/// One thing found wrong in a tenant's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Finding {
    /// The hash chain, the seqs or the head.
    Chain {
        /// Written once, with the finding's own fields (most of which
        /// carry it already).
        #[serde(skip_serializing)]
        tenant_seq: i64,
        #[serde(flatten, serialize_with = "chain_finding_with_seq")]
        finding: ChainFinding,
        /// Line of the export file, when verifying one.
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<u64>,
    },
    /// The domain refused its own history.
    Replay {
        #[serde(flatten)]
        finding: ReplayFinding,
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<u64>,
    },
    /// A line of an export file that is not an event.
    File { line: u64, message: String },
    /// The tenant has events but no chain head row.
    MissingHead,
}

/// `finding`'s fields and its `tenant_seq`, each key once (a field of the
/// same name written twice is a JSON object a strict reader refuses).
fn chain_finding_with_seq<S: serde::Serializer>(
    finding: &ChainFinding,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut fields = match serde_json::to_value(finding).map_err(serde::ser::Error::custom)? {
        serde_json::Value::Object(fields) => fields,
        other => {
            return Err(serde::ser::Error::custom(format!(
                "a chain finding as {other}"
            )))
        }
    };
    fields
        .entry("tenant_seq")
        .or_insert_with(|| finding.tenant_seq().into());
    fields.serialize(serializer)
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at_line = |line: &Option<u64>| {
            line.map(|line| format!("line {line}: "))
                .unwrap_or_default()
        };
        match self {
            Self::Chain { finding, line, .. } => write!(f, "{}{finding}", at_line(line)),
            Self::Replay { finding, line } => write!(
                f,
                "{}tenant_seq {}: {}/{}: {}",
                at_line(line),
                finding.tenant_seq,
                finding.aggregate_type,
                finding.aggregate_id,
                finding.message
            ),
            Self::File { line, message } => write!(f, "line {line}: {message}"),
            Self::MissingHead => write!(f, "no chain head row"),
        }
    }
}

/// A tenant's verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TenantVerdict {
    pub tenant_id: TenantId,
    pub events: u64,
    /// The chain head row (seq and hash). Publish `head_hash` outside the
    /// store: a later verify proves the history up to it was not rewritten.
    pub head_seq: i64,
    pub head_hash: ChainHash,
    pub findings: Vec<Finding>,
}

/// A projection's verdict: rows that differ from a fresh replay, and the
/// tenants whose history it could not replay (their rows not compared).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProjectionVerdict {
    pub projection: String,
    /// The first differing rows of each table (at most
    /// `projections::compare::DIFFERENCES_MAX` per table), by key.
    pub differences: Vec<Difference>,
    /// How many rows differ in each table that has any, listed or not.
    pub differing_rows: BTreeMap<String, u64>,
    pub failures: Vec<ReplayFailure>,
    /// Tenants the live projection is held back at: the event after its
    /// checkpoint, which the projection refuses (their rows up to the
    /// checkpoint were compared).
    pub stuck: Vec<ReplayFailure>,
}

/// Everything `verify` found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerifyReport {
    /// No finding and no difference.
    pub ok: bool,
    pub tenants: Vec<TenantVerdict>,
    pub projections: Vec<ProjectionVerdict>,
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
}

impl VerifyReport {
    fn finish(
        tenants: Vec<TenantVerdict>,
        projections: Vec<ProjectionVerdict>,
        started: Instant,
    ) -> Self {
        let ok = tenants.iter().all(|tenant| tenant.findings.is_empty())
            && projections.iter().all(|projection| {
                projection.differing_rows.is_empty()
                    && projection.failures.is_empty()
                    && projection.stuck.is_empty()
            });
        let events = tenants.iter().map(|tenant| tenant.events).sum();
        let seconds = started.elapsed().as_secs_f64();
        Self {
            ok,
            tenants,
            projections,
            events,
            seconds,
            events_per_s: if seconds > 0.0 {
                events as f64 / seconds
            } else {
                0.0
            },
        }
    }

    /// Findings and differences as readable lines.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for tenant in &self.tenants {
            for finding in &tenant.findings {
                lines.push(format!("tenant {}: {finding}", tenant.tenant_id));
            }
        }
        for projection in &self.projections {
            for failure in &projection.failures {
                lines.push(format!(
                    "projection {}: tenant {}: tenant_seq {}: cannot be replayed ({}); its rows were not compared",
                    projection.projection, failure.tenant_id, failure.tenant_seq, failure.message
                ));
            }
            for stuck in &projection.stuck {
                lines.push(format!(
                    "projection {}: tenant {}: tenant_seq {}: the live projection cannot apply it ({}); the tenant is held back before it",
                    projection.projection,
                    stuck.tenant_id,
                    stuck.tenant_seq,
                    stuck.message,
                ));
            }
            for difference in &projection.differences {
                lines.push(format!(
                    "projection {}: table {} key {}: live {} but a replay gives {}",
                    projection.projection,
                    difference.table,
                    difference.key,
                    difference
                        .live
                        .as_ref()
                        .map_or("no row".to_string(), |row| row.to_string()),
                    difference
                        .replay
                        .as_ref()
                        .map_or("no row".to_string(), |row| row.to_string()),
                ));
            }
            for (table, total) in &projection.differing_rows {
                let listed = projection
                    .differences
                    .iter()
                    .filter(|difference| &difference.table == table)
                    .count() as u64;
                if *total > listed {
                    lines.push(format!(
                        "projection {}: table {table}: {total} rows differ; the first {listed} by key are listed",
                        projection.projection
                    ));
                }
            }
        }
        lines
    }

    /// The report as `ledger verify` prints it: a line per tenant and per
    /// projection, then every finding, then the verdict.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for tenant in &self.tenants {
            let verdict = if tenant.findings.is_empty() {
                "ok".to_string()
            } else {
                format!("{} findings", tenant.findings.len())
            };
            out.push_str(&format!(
                "tenant {}: {} events, head seq {} hash {}: {verdict}\n",
                tenant.tenant_id, tenant.events, tenant.head_seq, tenant.head_hash
            ));
        }
        for projection in &self.projections {
            let mut verdicts = Vec::new();
            let differing: u64 = projection.differing_rows.values().sum();
            if differing > 0 {
                verdicts.push(format!("{differing} rows differ from a fresh replay"));
            }
            if !projection.failures.is_empty() {
                verdicts.push(format!(
                    "{} tenants cannot be replayed",
                    projection.failures.len()
                ));
            }
            if !projection.stuck.is_empty() {
                verdicts.push(format!(
                    "{} tenants held back at an event it cannot apply",
                    projection.stuck.len()
                ));
            }
            if verdicts.is_empty() {
                verdicts.push("equals a fresh replay".to_string());
            }
            out.push_str(&format!(
                "projection {}: {}\n",
                projection.projection,
                verdicts.join(", ")
            ));
        }
        for line in self.lines() {
            out.push_str(&line);
            out.push('\n');
        }
        out.push_str(&format!(
            "verified {} events in {:.2} s ({:.0} events/s): {}\n",
            self.events,
            self.seconds,
            self.events_per_s,
            if self.ok { "OK" } else { "FAILED" }
        ));
        out
    }
}

/// Why verification could not run (as opposed to what it found).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),
    /// A replay as of a seq the tenant has not reached (or below 0).
    #[error("tenant_seq {asked} is not in the tenant's history (0 to its last, {head})")]
    SeqOutOfRange { asked: i64, head: i64 },
    #[error("cannot read {path}: {error}")]
    File { path: String, error: std::io::Error },
    #[error("cannot write {path}: {error}")]
    Write { path: String, error: std::io::Error },
    #[error("{0}")]
    Format(String),
    /// A replay met an event it cannot vouch for.
    #[error("the history does not verify: {0}")]
    Refused(Finding),
    /// The comparison's task ended without an answer (a defect).
    #[error("the projection comparison stopped: {0}")]
    Interrupted(String),
    /// The reading of the tenants ended without an answer (a defect).
    #[error("the reading of the events stopped: {0}")]
    ReadInterrupted(String),
}

impl From<sqlx::Error> for VerifyError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(error.into())
    }
}

/// Checks one event's place in the chain.
pub fn check_chain(checker: &mut ChainChecker, event: &AuditEvent) -> Vec<ChainFinding> {
    check_text_event(checker, &event.fields(), &event.prev_hash, &event.hash)
}

/// Checks one tenant's history, event by event.
pub struct TenantAudit {
    checker: ChainChecker,
    state: TenantState,
    findings: Vec<Finding>,
}

impl Default for TenantAudit {
    fn default() -> Self {
        Self {
            checker: ChainChecker::default(),
            state: TenantState::for_verification(),
            findings: Vec::new(),
        }
    }
}

impl TenantAudit {
    /// Checks the next event (`line` when read from a file).
    pub fn check(&mut self, event: AuditEvent, line: Option<u64>) {
        for (finding, line) in self.state.settle_before(&event) {
            self.findings.push(Finding::Replay { finding, line });
        }
        for finding in check_chain(&mut self.checker, &event) {
            self.findings.push(Finding::Chain {
                tenant_seq: finding.tenant_seq(),
                finding,
                line,
            });
        }
        for (finding, line) in self.state.apply(event, line) {
            self.findings.push(Finding::Replay { finding, line });
        }
    }

    /// Records a finding about the history that is not about one event's
    /// content (a line of a file that is not an event).
    pub fn record(&mut self, finding: Finding) {
        self.findings.push(finding);
    }

    /// Checks the snapshots `snapshots` names as the events are folded.
    pub fn expect_snapshots(&mut self, snapshots: Snapshots) {
        self.state.expect_snapshots(snapshots);
    }

    /// Checks the head row's time against the last event's, when its seq
    /// and hash are the last event's (else [`Self::finish`] finds them).
    pub fn head_time(
        &mut self,
        head_seq: i64,
        head_hash: ChainHash,
        head_recorded_at: Option<DateTime<Utc>>,
    ) {
        if !self.checker.finish(head_seq, &head_hash).is_empty() {
            return;
        }
        if let Some(finding) = self.checker.head_time(head_recorded_at) {
            self.findings.push(Finding::Chain {
                tenant_seq: finding.tenant_seq(),
                finding,
                line: None,
            });
        }
    }

    /// Ends the walk against the head (seq, hash) the store or file declares.
    pub fn finish(
        mut self,
        tenant_id: TenantId,
        head_seq: i64,
        head_hash: ChainHash,
    ) -> (TenantVerdict, TenantState) {
        for (finding, line) in self.state.settle() {
            self.findings.push(Finding::Replay { finding, line });
        }
        for (finding, line) in self.state.owed() {
            self.findings.push(Finding::Replay { finding, line });
        }
        for (finding, line) in self.state.unmatched_snapshots() {
            self.findings.push(Finding::Replay { finding, line });
        }
        for finding in self.checker.finish(head_seq, &head_hash) {
            self.findings.push(Finding::Chain {
                tenant_seq: finding.tenant_seq(),
                finding,
                line: None,
            });
        }
        let verdict = TenantVerdict {
            tenant_id,
            events: self.checker.events(),
            head_seq,
            head_hash,
            findings: self.findings,
        };
        (verdict, self.state)
    }

    /// Events checked so far.
    pub fn events(&self) -> u64 {
        self.checker.events()
    }

    /// The state folded so far.
    pub fn state(&self) -> &TenantState {
        &self.state
    }
}

/// A chain head row: seq, hash and the last event's time.
type Head = (i64, Vec<u8>, Option<DateTime<Utc>>);

/// What the reading of the tenants hands their walk: a tenant's chain head
/// row (`None` when it has none) and its aggregates' snapshots, then that
/// tenant's pages in seq order.
enum Read {
    Head(TenantId, Option<Head>, Snapshots),
    Page(Arc<Vec<StoredEvent>>),
}

/// Pages the reading of the tenants runs ahead of their walk.
const READ_AHEAD_PAGES: usize = 2;

/// Reads every tenant, each inside one repeatable-read snapshot (so the
/// head and the events agree even while others append), handing each page
/// to `feed` and then to `walk`, while the walk checks the pages before.
/// Stops early, without error, when the walk stopped taking them.
async fn read_tenants(
    store: EventStore,
    tenants: Vec<TenantId>,
    walk: mpsc::Sender<Read>,
    mut feed: Feed,
) -> Result<(), VerifyError> {
    for tenant_id in tenants {
        let mut transaction = store.pool().begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *transaction)
            .await?;
        let head = sqlx::query(
            "SELECT last_seq, last_hash, last_recorded_at FROM chain_heads WHERE tenant_id = $1",
        )
        .bind(tenant_id.as_uuid())
        .fetch_optional(&mut *transaction)
        .await?
        .map(|row| -> Result<Head, sqlx::Error> {
            use sqlx::Row;
            Ok((
                row.try_get(0)?,
                row.try_get(1)?,
                eventstore::optional_timestamp_at(&row, 2)?,
            ))
        })
        .transpose()?;
        let snapshots: Vec<(String, String, i64, sqlx::types::Json<serde_json::Value>)> =
            sqlx::query_as(
                "SELECT aggregate_type, aggregate_id, last_sequence, payload FROM snapshots \
                 WHERE tenant_id = $1",
            )
            .bind(tenant_id.as_uuid())
            .fetch_all(&mut *transaction)
            .await?;
        let snapshots = Snapshots::new(
            snapshots
                .into_iter()
                .map(|(kind, id, after, payload)| (kind, id, after, payload.0)),
        );
        if walk
            .send(Read::Head(tenant_id, head, snapshots))
            .await
            .is_err()
        {
            return Ok(());
        }
        let mut after_seq = 0;
        loop {
            let events =
                Arc::new(stored_page(&mut transaction, tenant_id, after_seq, i64::MAX).await?);
            let Some(last) = events.last() else { break };
            after_seq = last.tenant_seq;
            let full = events.len() as i64 >= PAGE_EVENTS;
            if let Some(sender) = feed.as_ref() {
                if sender.send(Arc::clone(&events)).await.is_err() {
                    feed = None;
                }
            }
            if walk.send(Read::Page(events)).await.is_err() {
                return Ok(());
            }
            if !full {
                break;
            }
        }
        transaction.commit().await?;
    }
    Ok(())
}

/// One tenant's walk under way.
struct Walking {
    tenant_id: TenantId,
    audit: TenantAudit,
    head_seq: i64,
    head_hash: ChainHash,
    /// The head row's time (`None` with no row: that is found already).
    head_recorded_at: Option<Option<DateTime<Utc>>>,
}

impl Walking {
    fn start(tenant_id: TenantId, head: Option<Head>) -> Result<Self, VerifyError> {
        let mut audit = TenantAudit::default();
        let (head_seq, head_hash, head_recorded_at) = match head {
            Some((seq, hash, recorded_at)) => (
                seq,
                crate::source::stored_hash(&hash, "chain head hash", tenant_id)?,
                Some(recorded_at),
            ),
            None => {
                audit.findings.push(Finding::MissingHead);
                (0, GENESIS, None)
            }
        };
        Ok(Self {
            tenant_id,
            audit,
            head_seq,
            head_hash,
            head_recorded_at,
        })
    }

    fn finish(mut self) -> TenantVerdict {
        if let Some(recorded_at) = self.head_recorded_at {
            self.audit
                .head_time(self.head_seq, self.head_hash, recorded_at);
        }
        self.audit
            .finish(self.tenant_id, self.head_seq, self.head_hash)
            .0
    }
}

/// Checks every tenant's chain and history as [`read_tenants`] reads them
/// (on a task of its own, up to [`READ_AHEAD_PAGES`] pages ahead); their
/// verdicts in order.
async fn walk_tenants(
    store: &EventStore,
    tenants: Vec<TenantId>,
    feed: Feed,
    progress: &mut Progress,
) -> Result<Vec<TenantVerdict>, VerifyError> {
    let mut verdicts = Vec::with_capacity(tenants.len());
    let (sender, mut pages) = mpsc::channel(READ_AHEAD_PAGES);
    let mut reading = ReadTask(tokio::spawn(read_tenants(
        store.clone(),
        tenants,
        sender,
        feed,
    )));
    let mut walking: Option<Walking> = None;
    while let Some(read) = pages.recv().await {
        match read {
            Read::Head(tenant_id, head, snapshots) => {
                verdicts.extend(walking.take().map(Walking::finish));
                let mut started = Walking::start(tenant_id, head)?;
                started.audit.expect_snapshots(snapshots);
                walking = Some(started);
            }
            Read::Page(events) => {
                if let Some(walking) = walking.as_mut() {
                    for event in events.iter() {
                        walking.audit.check(AuditEvent::from(event.clone()), None);
                    }
                }
                progress.advance(events.len() as u64);
            }
        }
    }
    // The reading ended: with every tenant read, or with an error.
    (&mut reading.0)
        .await
        .map_err(|error| VerifyError::ReadInterrupted(error.to_string()))??;
    verdicts.extend(walking.take().map(Walking::finish));
    Ok(verdicts)
}

/// The reading of the tenants, stopped when the walk ends unfinished.
struct ReadTask(tokio::task::JoinHandle<Result<(), VerifyError>>);

impl Drop for ReadTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every tenant the database knows of: those with a tenant row, a chain
/// head or events (so that a tenant whose rows were removed is still
/// verified), in id order. Distinct tenants of the events are found by
/// skipping along the primary key, one index probe per tenant.
async fn known_tenants(store: &EventStore) -> Result<Vec<TenantId>, VerifyError> {
    let rows: Vec<(uuid::Uuid,)> = sqlx::query_as(KNOWN_TENANTS)
        .fetch_all(store.pool())
        .await?;
    Ok(rows
        .into_iter()
        .map(|(tenant,)| TenantId::from_uuid(tenant))
        .collect())
}

const KNOWN_TENANTS: &str = "\
    WITH RECURSIVE with_events(tenant_id) AS ( \
        (SELECT tenant_id FROM events ORDER BY tenant_id LIMIT 1) \
        UNION ALL \
        SELECT (SELECT e.tenant_id FROM events e WHERE e.tenant_id > w.tenant_id ORDER BY e.tenant_id LIMIT 1) \
        FROM with_events w WHERE w.tenant_id IS NOT NULL \
    ) \
    SELECT tenant_id FROM tenants \
    UNION SELECT tenant_id FROM chain_heads \
    UNION SELECT tenant_id FROM with_events WHERE tenant_id IS NOT NULL \
    ORDER BY tenant_id";

/// Verifies the database: every tenant (or one), then every projection
/// against a fresh replay. Every problem in the data is a finding; only an
/// operational failure (the database going away) is an error.
pub async fn verify_database(
    store: &EventStore,
    tenant: Option<TenantId>,
    projections: &[Arc<dyn Projection>],
    quiet: bool,
) -> Result<VerifyReport, VerifyError> {
    let started = Instant::now();
    let known = known_tenants(store).await?;
    let tenants: Vec<TenantId> = match tenant {
        Some(tenant_id) if known.contains(&tenant_id) => vec![tenant_id],
        Some(tenant_id) => return Err(VerifyError::UnknownTenant(tenant_id)),
        None => known,
    };
    let heads = store.chain_heads(&tenants).await?;
    let total: i64 = heads.iter().map(|head| head.seq).sum();
    // The projections are replayed and compared on a task (and a database
    // session) of their own while the tenants' chains and histories are
    // checked here: the two overlap on both sides, and the comparison
    // replays the pages this walk reads instead of reading them again.
    let filter: Option<Vec<TenantId>> = tenant.map(|tenant_id| vec![tenant_id]);
    let (sender, receiver) = mpsc::channel(FEED_PAGES);
    let feed: Feed = Some(sender);
    // The comparison's session is taken before the reading starts: the
    // reading holds a pooled connection while it waits for the comparison.
    let session = store.pool().acquire().await?.detach();
    let comparing = {
        let projections = projections.to_vec();
        tokio::spawn(async move {
            let projections: Vec<&dyn Projection> = projections.iter().map(AsRef::as_ref).collect();
            compare_all_with_replay_fed(
                session,
                &projections,
                filter.as_deref(),
                quiet,
                Some(receiver),
            )
            .await
        })
    };
    let mut progress = Progress::new("verify", u64::try_from(total).unwrap_or(0), quiet);
    // The comparison replays what the feed leaves out from the store once
    // the reading of the tenants ends (and drops the feed).
    let verdicts = match walk_tenants(store, tenants, feed, &mut progress).await {
        Ok(verdicts) => verdicts,
        Err(error) => {
            comparing.abort();
            return Err(error);
        }
    };
    progress.finish();
    let comparisons = comparing
        .await
        .map_err(|error| VerifyError::Interrupted(error.to_string()))??;
    let verdicts_of_projections = projections
        .iter()
        .zip(comparisons)
        .map(|(projection, comparison)| ProjectionVerdict {
            projection: projection.name().to_string(),
            differences: comparison.differences,
            differing_rows: comparison.differing_rows,
            failures: comparison.failures,
            stuck: comparison.stuck,
        })
        .collect();
    Ok(VerifyReport::finish(
        verdicts,
        verdicts_of_projections,
        started,
    ))
}

pub(crate) fn report_for_file(verdict: TenantVerdict, started: Instant) -> VerifyReport {
    VerifyReport::finish(vec![verdict], Vec::new(), started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_finding_writes_its_tenant_seq_once() {
        // Proves: `verify --json` writes each chain finding's tenant_seq
        // once, whether the finding carries it (a hash mismatch) or not (a
        // gap, whose seq is the one expected).
        let at = |finding: ChainFinding| {
            let text = serde_json::to_string(&Finding::Chain {
                tenant_seq: finding.tenant_seq(),
                finding,
                line: Some(3),
            })
            .unwrap();
            (text.matches("\"tenant_seq\"").count(), text)
        };
        let (count, text) = at(ChainFinding::HashMismatch {
            tenant_seq: 60,
            stored: GENESIS,
            computed: ChainHash([1; 32]),
        });
        assert_eq!(count, 1, "{text}");
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            (
                &value["check"],
                &value["finding"],
                &value["tenant_seq"],
                &value["line"]
            ),
            (
                &serde_json::json!("chain"),
                &serde_json::json!("hash_mismatch"),
                &serde_json::json!(60),
                &serde_json::json!(3)
            )
        );
        let (count, text) = at(ChainFinding::Gap {
            expected_seq: 7,
            found_seq: 9,
        });
        assert_eq!(count, 1, "{text}");
        assert!(text.contains("\"tenant_seq\":7"), "{text}");
    }
}
