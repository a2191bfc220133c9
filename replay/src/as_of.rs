//! `ledger replay` and `GET /v1/replay`: a tenant's state as of a tenant_seq
//! or a time, folded from its events with the domain's own decisions.
//!
//! A replay trusts nothing it has not recomputed: every event it folds has
//! its place in the hash chain checked (seq, prev_hash, the hash recomputed
//! from its columns) and must be what the domain decides from the state
//! before it. The first event that fails either refuses the whole replay,
//! naming its seq (and its line, in a file). A point inside a request reads
//! the rest of that request's events of the quota it falls in (checked the
//! same way), since the command they record is decided as a whole; only the
//! events up to the point are folded. So the `hash` a replay prints
//! as of seq N is the recomputed chain at N: when it equals a hash published
//! earlier for N, nothing up to N was rewritten.

use crate::source::{page, AuditEvent, PAGE_EVENTS};
use crate::state::{LocatedFinding, TenantState};
use crate::verify::{check_chain, Finding, VerifyError};
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use eventstore::{ChainChecker, ChainFinding, ChainHash, EventStore};
use serde_json::Value;
use sqlx::PgConnection;

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
    /// Events recorded before this time: a period's end, which the next
    /// period starts at.
    Before(DateTime<Utc>),
}

impl AsOf {
    /// The point, refused (`SeqOutOfRange`) when it is a seq outside the
    /// history, 0 to `head`: its answer would change as the tenant goes
    /// on.
    pub fn within(self, head: i64) -> Result<Self, VerifyError> {
        match self {
            Self::Seq(asked) if !(0..=head).contains(&asked) => {
                Err(VerifyError::SeqOutOfRange { asked, head })
            }
            point => Ok(point),
        }
    }

    /// Whether `event` is at or before the point.
    pub fn includes(self, event: &AuditEvent) -> bool {
        match self {
            Self::Head => true,
            Self::Seq(seq) => event.tenant_seq <= seq,
            Self::Time(time) => event.recorded_at <= time,
            Self::Before(time) => event.recorded_at < time,
        }
    }

    fn at(self) -> Option<DateTime<Utc>> {
        match self {
            Self::Time(time) | Self::Before(time) => Some(time),
            _ => None,
        }
    }
}

/// Folds one tenant's events up to a point, checking each event's place in
/// the chain first.
pub struct Replayer {
    as_of: AsOf,
    checker: ChainChecker,
    state: TenantState,
}

impl Replayer {
    pub fn new(as_of: AsOf) -> Self {
        Self {
            as_of,
            checker: ChainChecker::default(),
            state: TenantState::for_report(),
        }
    }

    /// Whether `event` is past the point asked (folding stops there).
    pub fn is_past(&self, event: &AuditEvent) -> bool {
        !self.as_of.includes(event)
    }

    /// Whether the replay reads `event`: every event up to the point, and
    /// past it the rest of the request the point falls in (the quota's
    /// command is decided with all of its events).
    pub fn wants(&self, event: &AuditEvent) -> bool {
        !self.is_past(event) || self.state.continues_group(event)
    }

    /// Checks the next event's place in the chain and, when it is not past
    /// the point, folds it (past it, reads it to decide the request the
    /// point falls in); the first finding refuses the replay.
    pub fn feed(&mut self, event: AuditEvent, line: Option<u64>) -> Result<(), Finding> {
        // What comes before `event` first, so that its findings come first.
        refuse(self.state.settle_before(&event))?;
        if let Some(finding) = check_chain(&mut self.checker, &event).into_iter().next() {
            return Err(Finding::Chain {
                tenant_seq: finding.tenant_seq(),
                finding,
                line,
            });
        }
        if self.is_past(&event) {
            self.state.look_ahead(event, line);
            return Ok(());
        }
        refuse(self.state.apply(event, line))
    }

    /// Checks that `event`, the first one past the point the replay does not
    /// read, follows the last event read with no hole in between (its own
    /// data is not the replay's business).
    pub fn check_follows(&mut self, event: &AuditEvent, line: Option<u64>) -> Result<(), Finding> {
        refuse(self.state.settle())?;
        let (last_seq, _) = self.checker.last();
        if event.tenant_seq == last_seq + 1 {
            return Ok(());
        }
        let finding = ChainFinding::Gap {
            expected_seq: last_seq + 1,
            found_seq: event.tenant_seq,
        };
        Err(Finding::Chain {
            tenant_seq: finding.tenant_seq(),
            finding,
            line,
        })
    }

    /// Checks the end of the chain against a declared head.
    pub fn finish(&self, head_seq: i64, head_hash: &ChainHash) -> Result<(), Finding> {
        match self.checker.finish(head_seq, head_hash).into_iter().next() {
            None => Ok(()),
            Some(finding) => Err(Finding::Chain {
                tenant_seq: finding.tenant_seq(),
                finding,
                line: None,
            }),
        }
    }

    /// Events whose chain was checked.
    pub fn events(&self) -> u64 {
        self.checker.events()
    }

    /// Keeps every journal entry folded, with its time (for reports).
    pub fn keep_entries(mut self) -> Self {
        self.state.keep_entries();
        self
    }

    /// The folded state itself, once the request the point falls in is
    /// decided (a finding there refuses it).
    pub fn into_state(mut self) -> Result<TenantState, Finding> {
        refuse(self.state.settle())?;
        Ok(self.state)
    }

    /// The state as of the point, once the request it falls in is decided
    /// (a finding there refuses the replay).
    pub fn report(&mut self, tenant_id: TenantId) -> Result<Value, Finding> {
        refuse(self.state.settle())?;
        Ok(crate::report::report(
            &self.state,
            tenant_id,
            self.as_of.at(),
        ))
    }
}

/// The first finding, as the refusal of a replay.
fn refuse(findings: Vec<LocatedFinding>) -> Result<(), Finding> {
    match findings.into_iter().next() {
        None => Ok(()),
        Some((finding, line)) => Err(Finding::Replay { finding, line }),
    }
}

/// The tenant's state as of `as_of`, from the store, on `connection` (which
/// should be inside one snapshot, so that the answer is one point in time):
/// the chain of every event up to the point is recomputed and checked, and
/// the first event past it must follow with no hole. A seq past the last
/// event (or below 0) is refused: the answer would change as the tenant
/// goes on.
pub async fn replay_tenant(
    connection: &mut PgConnection,
    tenant_id: TenantId,
    as_of: AsOf,
) -> Result<Value, VerifyError> {
    let (head_seq,): (i64,) =
        sqlx::query_as("SELECT coalesce(max(tenant_seq), 0) FROM events WHERE tenant_id = $1")
            .bind(tenant_id.as_uuid())
            .fetch_one(&mut *connection)
            .await?;
    let mut replayer = Replayer::new(as_of.within(head_seq)?);
    let mut after_seq = 0;
    'pages: loop {
        let events = page(connection, tenant_id, after_seq, i64::MAX).await?;
        let Some(last) = events.last() else { break };
        after_seq = last.tenant_seq;
        let full = (events.len() as i64) >= PAGE_EVENTS;
        for event in events {
            if !replayer.wants(&event) {
                replayer
                    .check_follows(&event, None)
                    .map_err(VerifyError::Refused)?;
                break 'pages;
            }
            replayer.feed(event, None).map_err(VerifyError::Refused)?;
        }
        if !full {
            break;
        }
    }
    replayer.report(tenant_id).map_err(VerifyError::Refused)
}

/// Whether the tenant's last event, in the snapshot `connection` reads, is
/// the one its chain head row names (an event deleted at the end of the
/// chain leaves the events whole but short of the head). Needs the chain
/// heads, which the API's reader role does not read.
async fn check_head(connection: &mut PgConnection, tenant_id: TenantId) -> Result<(), VerifyError> {
    let head = crate::source::stored_head(connection, tenant_id).await?;
    let last: Option<(i64, Vec<u8>)> = sqlx::query_as(
        "SELECT tenant_seq, hash FROM events WHERE tenant_id = $1 ORDER BY tenant_seq DESC LIMIT 1",
    )
    .bind(tenant_id.as_uuid())
    .fetch_optional(&mut *connection)
    .await?;
    let finding = match (head, last) {
        (None, None) => return Ok(()),
        (None, Some(_)) => Finding::MissingHead,
        (Some(head), last) => {
            let last = match last {
                Some((seq, bytes)) => {
                    let hash = crate::source::stored_hash(&bytes, "last event's hash", tenant_id)?;
                    (seq, hash)
                }
                None => (0, eventstore::GENESIS),
            };
            let Some(finding) = ChainFinding::head_against(head, last) else {
                return Ok(());
            };
            Finding::Chain {
                tenant_seq: finding.tenant_seq(),
                finding,
                line: None,
            }
        }
    };
    Err(VerifyError::Refused(finding))
}

/// [`replay_tenant`] in a read-only, repeatable-read transaction of its own
/// (what `ledger replay --tenant` runs).
pub async fn replay_stored(
    store: &EventStore,
    tenant_id: TenantId,
    as_of: AsOf,
) -> Result<Value, VerifyError> {
    let mut transaction = store.pool().begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *transaction)
        .await?;
    // First: a seq past an end deleted from the chain is a history that
    // does not verify, not a seq the tenant has not reached.
    check_head(&mut transaction, tenant_id).await?;
    let report = replay_tenant(&mut transaction, tenant_id, as_of).await?;
    transaction.commit().await?;
    Ok(report)
}
