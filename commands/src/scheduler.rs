//! The scheduler's ticker: submits each piece of due work (the
//! `scheduled_work` projection) once the clock has passed its due time.
//!
//! A tick leases a bounded batch of due work (`scheduler_runs`: a row per
//! idempotency key, taken over by another ticker only once its lease has
//! run out), submits each request through the pipeline under the key
//! derived from the event that scheduled it, and records the answer.
//! Several processes tick side by side: the lease makes a double submission
//! rare, and the key makes it harmless (the pipeline answers the second from
//! the first's record). A process killed between lease and answer leaves a
//! lease that runs out; the next ticker submits again under the same key.
//!
//! The request carries its due time and decides at it, so the outcome does
//! not depend on when the ticker ran, and a replay decides it the same way.
//! A domain refusal is final: recorded in `scheduler_runs` and never
//! submitted again. No answer (the database is down) is retried after the
//! lease. A request that cannot be decided yet, which the pipeline does
//! not record, gives its lease back and is submitted again by the next
//! tick: `not_due` (the clock stepped back between the lease and the
//! pipeline's stamp), or stale (an escrow window's timeout while a window
//! that ended before it awaits its own, usually decided in the same
//! tick).

use crate::domains::Registry;
use crate::pipeline::{Clock, CommandBus, Outcome, PipelineError};
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use eventstore::IdempotencyKey;
use projections::scheduled::ScheduleChange;
use projections::ApplyError;
use serde_json::Value;
use sqlx::PgPool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use uuid::Uuid;

/// How the ticker works.
#[derive(Debug, Clone, Copy)]
pub struct TickerConfig {
    /// Time between ticks when there is nothing more due (`serve
    /// --tick-ms`).
    pub every: Duration,
    /// Most requests one tick submits.
    pub batch: i64,
    /// How long a ticker keeps what it leased before another may take it.
    pub lease: Duration,
}

impl Default for TickerConfig {
    fn default() -> Self {
        Self {
            every: Duration::from_millis(1_000),
            batch: 256,
            lease: Duration::from_secs(30),
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Due work this tick leased.
    pub leased: usize,
    /// Requests accepted (or answered from an earlier acceptance).
    pub accepted: usize,
    /// Requests refused by their domain (final).
    pub refused: usize,
    /// Requests without an answer, left to a later tick.
    pub failed: usize,
    /// Requests that cannot be decided yet, unrecorded and left to a later
    /// tick: stamped before their due time (`not_due`), or waiting for
    /// another piece of work to be decided first (an escrow window that
    /// ended earlier, since rules 5).
    pub waiting: usize,
}

/// The ticker: the pool it leases on, the pipeline it submits to, the
/// clock it tells due time by.
#[derive(Clone)]
pub struct Ticker {
    pool: PgPool,
    bus: CommandBus,
    registry: Arc<Registry>,
    clock: Clock,
    config: TickerConfig,
    /// Whether the last tick found `scheduled_work` of another version
    /// (logged when it starts and when it ends).
    held_back: Arc<std::sync::atomic::AtomicBool>,
}

/// Leases up to `$3` pieces of open work due at `$1` that no ticker holds,
/// until `$2`; answers what it leased. Nothing while `scheduled_work` was
/// built by another version than `$4` (this build's): a table a newer
/// build is rebuilding holds requests as an older build wrote them, and
/// one a newer build rebuilt, requests this build may not know.
const LEASE: &str = "\
    WITH due AS ( \
        SELECT w.tenant_id, w.idempotency_key, w.work, w.request_kind, w.request, w.due_at \
        FROM scheduled_work w \
        LEFT JOIN scheduler_runs r \
          ON r.tenant_id = w.tenant_id AND r.idempotency_key = w.idempotency_key \
        WHERE w.settled_seq IS NULL AND w.due_at <= $1 \
          AND (r.tenant_id IS NULL OR (r.outcome IS NULL AND r.leased_until <= $1)) \
          AND NOT EXISTS (SELECT 1 FROM projections p \
                          WHERE p.projection = 'scheduled_work' AND p.version <> $4) \
        ORDER BY w.due_at, w.tenant_id, w.idempotency_key LIMIT $3 \
    ), leased AS ( \
        INSERT INTO scheduler_runs (tenant_id, idempotency_key, work, leased_until, attempts) \
        SELECT tenant_id, idempotency_key, work, $2, 1 FROM due \
        ON CONFLICT (tenant_id, idempotency_key) DO UPDATE \
            SET leased_until = EXCLUDED.leased_until, attempts = scheduler_runs.attempts + 1 \
            WHERE scheduler_runs.outcome IS NULL AND scheduler_runs.leased_until <= $1 \
        RETURNING tenant_id, idempotency_key \
    ) \
    SELECT due.tenant_id, due.idempotency_key, due.request_kind, due.request \
    FROM due JOIN leased USING (tenant_id, idempotency_key) \
    ORDER BY due.due_at, due.tenant_id, due.idempotency_key";

/// Records the final answer; `$8` is a note on it (or `NULL`).
const FINISH: &str = "\
    UPDATE scheduler_runs SET outcome = $3, status = $4, error_code = $5, tenant_seq = $6, \
        finished_at = $7, last_error = $8 \
    WHERE tenant_id = $1 AND idempotency_key = $2";

/// The note on work ended by its key's record of another form of its
/// request.
pub const ANSWERED_AS_RECORDED: &str =
    "answered by its key's record of another form of the request (an earlier build's)";

const FAIL: &str = "\
    UPDATE scheduler_runs SET last_error = $3 WHERE tenant_id = $1 AND idempotency_key = $2";

/// A request that cannot be decided yet gives its lease back at once: the
/// next tick submits it again (after what it waits for, leased with it,
/// has been decided), not only once the lease would have run out. Only
/// its own lease (until `$5`): one that ran out and was taken by another
/// ticker stays that ticker's.
const WAIT: &str = "\
    UPDATE scheduler_runs SET last_error = $3, leased_until = $4 \
    WHERE tenant_id = $1 AND idempotency_key = $2 AND leased_until = $5";

/// One piece of leased work.
struct Leased {
    tenant_id: Uuid,
    key: String,
    kind: String,
    request: Value,
}

/// How one submission ended. A final answer may carry a note for the
/// work's record ([`ANSWERED_AS_RECORDED`]).
enum Answer {
    Accepted {
        status: u16,
        tenant_seq: i64,
        note: Option<&'static str>,
    },
    Refused {
        status: u16,
        code: String,
        tenant_seq: i64,
        note: Option<&'static str>,
    },
    Unanswered(String),
    /// Not decidable yet: submitted again after the lease.
    Waiting(String),
}

impl Answer {
    /// How `outcome` ends the work: accepted, or refused with its code;
    /// with `note`.
    fn of(outcome: &Outcome, note: Option<&'static str>) -> Self {
        if outcome.accepted() {
            return Self::Accepted {
                status: outcome.status,
                tenant_seq: outcome.tenant_seq,
                note,
            };
        }
        Self::Refused {
            status: outcome.status,
            code: outcome.body["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            tenant_seq: outcome.tenant_seq,
            note,
        }
    }
}

impl Ticker {
    pub fn new(
        pool: PgPool,
        bus: CommandBus,
        registry: Arc<Registry>,
        clock: Clock,
        config: TickerConfig,
    ) -> Self {
        Self {
            pool,
            bus,
            registry,
            clock,
            config,
            held_back: Arc::default(),
        }
    }

    /// Whether `scheduled_work` was built by another version than this
    /// build's (a rebuild on start under way, or failed; or a newer build's
    /// table): the ticker then leases nothing (`LEASE` checks it again), and
    /// says so once when it starts waiting and once when it stops.
    async fn schedule_of_another_version(&self) -> Result<bool, sqlx::Error> {
        use std::sync::atomic::Ordering;
        let version: Option<i32> =
            sqlx::query_scalar("SELECT version FROM projections WHERE projection = $1")
                .bind(projections::scheduled::NAME)
                .fetch_optional(&self.pool)
                .await?;
        let other = version.filter(|version| *version != projections::scheduled::VERSION);
        let was = self.held_back.swap(other.is_some(), Ordering::Relaxed);
        match other {
            Some(version) if !was => tracing::warn!(
                table_version = version,
                version = projections::scheduled::VERSION,
                "scheduled_work was built by another version of its projection: the ticker waits for its rebuild"
            ),
            None if was => tracing::info!("scheduled_work is of this build's version: the ticker goes on"),
            _ => {}
        }
        Ok(other.is_some())
    }

    /// One tick at the clock's time: leases the due work, submits it,
    /// records the answers.
    pub async fn tick(&self) -> Result<TickReport, sqlx::Error> {
        if self.schedule_of_another_version().await? {
            return Ok(TickReport::default());
        }
        let now = self.clock.now();
        let lease = chrono::Duration::from_std(self.config.lease).unwrap_or_default();
        let until = now + lease;
        let rows: Vec<(Uuid, String, String, Value)> = sqlx::query_as(LEASE)
            .bind(now)
            .bind(until)
            .bind(self.config.batch.max(1))
            .bind(projections::scheduled::VERSION)
            .fetch_all(&self.pool)
            .await?;
        let mut report = TickReport {
            leased: rows.len(),
            ..TickReport::default()
        };
        let mut submissions = tokio::task::JoinSet::new();
        for (tenant_id, key, kind, request) in rows {
            let ticker = self.clone();
            let leased = Leased {
                tenant_id,
                key,
                kind,
                request,
            };
            submissions.spawn(async move {
                let answer = ticker.submit(&leased).await;
                (leased, answer)
            });
        }
        while let Some(joined) = submissions.join_next().await {
            let Ok((leased, answer)) = joined else {
                report.failed += 1;
                continue;
            };
            match &answer {
                Answer::Accepted { .. } => report.accepted += 1,
                Answer::Refused { .. } => report.refused += 1,
                Answer::Unanswered(error) => {
                    tracing::warn!(key = %leased.key, %error, "scheduled request got no answer");
                    report.failed += 1;
                }
                Answer::Waiting(why) => {
                    tracing::debug!(key = %leased.key, %why, "scheduled request waits");
                    report.waiting += 1;
                }
            }
            // A lost record is harmless (the lease runs out and the request
            // is answered from its own record next time): go on with the rest.
            if let Err(error) = self.record(&leased, answer, now, until).await {
                tracing::warn!(key = %leased.key, %error, "cannot record a scheduled request's answer");
            }
        }
        Ok(report)
    }

    /// Submits one leased request.
    async fn submit(&self, leased: &Leased) -> Answer {
        let Some(kind) = self.registry.request(&leased.kind) else {
            return Answer::Unanswered(format!("no domain knows request kind {}", leased.kind));
        };
        let request = match kind.decode(&leased.request) {
            Ok(request) => request,
            Err(error) => {
                return Answer::Unanswered(format!("the request does not decode: {error}"))
            }
        };
        let key = match IdempotencyKey::parse(&leased.key) {
            Ok(key) => key,
            Err(error) => return Answer::Unanswered(error.to_string()),
        };
        let tenant_id = TenantId::from_uuid(leased.tenant_id);
        match self.bus.execute_any(tenant_id, key.clone(), request).await {
            Ok(outcome) => Answer::of(&outcome, None),
            Err(PipelineError::UnknownTenant) => Answer::Refused {
                status: 404,
                code: "unknown_tenant".into(),
                tenant_seq: 0,
                note: None,
            },
            // Clients cannot take a `pm:` key (the edge refuses them): the
            // key answered this work's request as an earlier build wrote it
            // (the schedule's request changed since). What the key's record
            // says is what became of the work.
            Err(PipelineError::KeyReused) => self.recorded(tenant_id, &key).await,
            Err(error @ (PipelineError::NotDue(_) | PipelineError::Stale(_))) => {
                Answer::Waiting(error.to_string())
            }
            Err(error) => Answer::Unanswered(error.to_string()),
        }
    }

    /// What the record of `key` answered, for a request the key refused as
    /// another.
    async fn recorded(&self, tenant_id: TenantId, key: &IdempotencyKey) -> Answer {
        let store = eventstore::EventStore::new(self.pool.clone());
        match store.idempotency_record(tenant_id, key).await {
            Ok(Some(record)) => {
                tracing::warn!(key = %key.as_str(), ANSWERED_AS_RECORDED);
                Answer::of(&Outcome::recorded(&record), Some(ANSWERED_AS_RECORDED))
            }
            Ok(None) => Answer::Unanswered("the key was reused, yet it has no record".into()),
            Err(error) => Answer::Unanswered(error.to_string()),
        }
    }

    /// Records how one submission ended.
    async fn record(
        &self,
        leased: &Leased,
        answer: Answer,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let (outcome, status, code, tenant_seq, note) = match answer {
            Answer::Accepted {
                status,
                tenant_seq,
                note,
            } => ("accepted", status, None, tenant_seq, note),
            Answer::Refused {
                status,
                code,
                tenant_seq,
                note,
            } => ("refused", status, Some(code), tenant_seq, note),
            Answer::Unanswered(error) => {
                sqlx::query(FAIL)
                    .bind(leased.tenant_id)
                    .bind(&leased.key)
                    .bind(error)
                    .execute(&self.pool)
                    .await?;
                return Ok(());
            }
            Answer::Waiting(why) => {
                sqlx::query(WAIT)
                    .bind(leased.tenant_id)
                    .bind(&leased.key)
                    .bind(why)
                    .bind(now)
                    .bind(until)
                    .execute(&self.pool)
                    .await?;
                return Ok(());
            }
        };
        sqlx::query(FINISH)
            .bind(leased.tenant_id)
            .bind(&leased.key)
            .bind(outcome)
            .bind(i32::from(status))
            .bind(code)
            .bind(tenant_seq)
            .bind(now)
            .bind(note)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Ticks every `every` until `shutdown` turns true; straight again
    /// while a tick finds a full batch due and decides some of it.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        loop {
            let full = match self.tick().await {
                // Straight on only when the full batch decided something:
                // a batch of work that all waits (given back at once)
                // waits out the pause, never spinning.
                Ok(report) => {
                    report.leased as i64 >= self.config.batch.max(1)
                        && report.waiting < report.leased
                }
                Err(error) => {
                    tracing::warn!(%error, "scheduler tick failed");
                    false
                }
            };
            if full {
                if *shutdown.borrow() {
                    return;
                }
                continue;
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.every) => {}
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

/// The change that schedules `request` as `work`, due at `due_at`.
pub fn due<R: crate::pipeline::Request>(
    work: impl Into<String>,
    due_at: DateTime<Utc>,
    request: &R,
) -> Result<ScheduleChange, ApplyError> {
    let request = serde_json::to_value(request).map_err(|error| ApplyError::Event {
        tenant_seq: 0,
        message: format!("scheduling {}: {error}", R::KIND),
    })?;
    Ok(ScheduleChange::Due {
        work: work.into(),
        due_at,
        kind: R::KIND,
        request,
    })
}

/// The change that settles `work`.
pub fn settled(work: impl Into<String>) -> ScheduleChange {
    ScheduleChange::Settled { work: work.into() }
}
