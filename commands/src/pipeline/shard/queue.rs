//! A shard's queue: the jobs waiting to be decided, which of them go into
//! the next batch, the pauses of jobs retried after a conflict, and the
//! answers of recently completed keys.

use super::{PipelineError, Shard};
use crate::pipeline::request::AnyRequest;
use crate::pipeline::Outcome;
use aggregates::TenantId;
use eventstore::{Fingerprint, IdempotencyKey, JsonText};
use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Times a request may conflict (head moved, stale aggregate) before it is
/// answered 409.
const CONFLICT_ROUNDS_MAX: u32 = 8;

/// Appends refused as late in a row after which a request is answered
/// that the database is slow: each took more than the append deadline
/// (4 s), so two stay well within a request's timeout (30 s by default).
const LATE_ROUNDS_MAX: u32 = 2;

/// Upper bound of the random pause before a conflicted request is decided
/// again, doubled per conflict up to [`RETRY_PAUSE_MAX`]: writers of
/// several processes that collided do not collide again in lockstep.
const RETRY_PAUSE_FIRST: Duration = Duration::from_micros(500);

/// Longest pause before a conflicted request is decided again.
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(16);

/// Most jobs a shard holds (waiting or being retried) before submitters
/// wait on its queue.
pub(super) const PENDING_MAX: usize = 4_096;

/// Answers a shard remembers for repeated keys.
const RECENT_OUTCOMES_MAX: usize = 20_000;

/// A random pause before the `conflicts`th retry.
fn retry_pause(conflicts: u32) -> Duration {
    eventstore::append::jittered_pause(conflicts, RETRY_PAUSE_FIRST, RETRY_PAUSE_MAX)
}

/// A submitted request waiting for its answer.
pub(crate) struct Job {
    pub(super) tenant_id: TenantId,
    pub(super) key: IdempotencyKey,
    pub(super) fingerprint: Fingerprint,
    pub(super) request: Box<dyn AnyRequest>,
    /// The request's canonical body, recorded with its first event.
    pub(super) body: JsonText,
    pub(super) reply: oneshot::Sender<Result<Outcome, PipelineError>>,
    pub(super) submitted: Instant,
    conflicts: u32,
    /// Its appends refused for being late (the database slow, not another
    /// append first) in a row, up to its last.
    pub(super) late_in_a_row: u32,
    /// Not decided again before this (a jittered pause after a conflict).
    not_before: Option<Instant>,
}

impl Job {
    pub(crate) fn new(
        tenant_id: TenantId,
        key: IdempotencyKey,
        fingerprint: Fingerprint,
        request: Box<dyn AnyRequest>,
        body: JsonText,
        reply: oneshot::Sender<Result<Outcome, PipelineError>>,
    ) -> Self {
        Self {
            tenant_id,
            key,
            fingerprint,
            request,
            body,
            reply,
            submitted: Instant::now(),
            conflicts: 0,
            late_in_a_row: 0,
            not_before: None,
        }
    }
}

/// Answers of recently completed keys, oldest forgotten first.
#[derive(Default)]
pub(super) struct RecentOutcomes {
    answers: HashMap<(TenantId, IdempotencyKey), (Fingerprint, Outcome)>,
    order: VecDeque<(TenantId, IdempotencyKey)>,
}

impl RecentOutcomes {
    fn answer(&self, job: &Job) -> Option<Result<Outcome, PipelineError>> {
        let (fingerprint, outcome) = self.answers.get(&(job.tenant_id, job.key.clone()))?;
        Some(replay(fingerprint, &job.fingerprint, outcome))
    }

    pub(super) fn remember(
        &mut self,
        tenant_id: TenantId,
        key: IdempotencyKey,
        fingerprint: Fingerprint,
        outcome: &Outcome,
    ) {
        let entry = (tenant_id, key);
        if self
            .answers
            .insert(entry.clone(), (fingerprint, outcome.clone()))
            .is_none()
        {
            self.order.push_back(entry);
        }
        while self.order.len() > RECENT_OUTCOMES_MAX {
            if let Some(oldest) = self.order.pop_front() {
                self.answers.remove(&oldest);
            }
        }
    }
}

/// The answer to a repeated key: the stored outcome when it is the same
/// request, a refusal when it is another.
pub(super) fn replay(
    stored: &Fingerprint,
    submitted: &Fingerprint,
    outcome: &Outcome,
) -> Result<Outcome, PipelineError> {
    if stored == submitted {
        Ok(Outcome {
            replayed: true,
            ..outcome.clone()
        })
    } else {
        Err(PipelineError::KeyReused)
    }
}

impl Shard {
    /// Puts jobs back to be decided again after a random pause (after a
    /// conflict, or an append refused as late), or answers: 503 once its
    /// appends were late [`LATE_ROUNDS_MAX`] times in a row (well within a
    /// request's timeout), 409 once it has gone round too often.
    pub(super) fn retry(&mut self, jobs: Vec<Job>) {
        let now = Instant::now();
        for mut job in jobs.into_iter().rev() {
            job.conflicts += 1;
            if job.late_in_a_row >= LATE_ROUNDS_MAX {
                let error = PipelineError::Late {
                    rounds: job.late_in_a_row,
                    within: self.append_within,
                };
                self.respond(job, Err(error));
            } else if job.conflicts >= CONFLICT_ROUNDS_MAX {
                let attempts = job.conflicts;
                self.respond(job, Err(PipelineError::Conflict { attempts }));
            } else {
                if job.late_in_a_row == 0 {
                    self.metrics.conflict();
                }
                job.not_before = Some(now + retry_pause(job.conflicts));
                self.pausing += 1;
                self.pending.push_front(job);
            }
        }
    }

    /// Puts jobs back to be decided again at once, keeping their order: they
    /// did not conflict themselves (another job of their batch did).
    pub(super) fn requeue(&mut self, jobs: Vec<Job>) {
        for job in jobs.into_iter().rev() {
            self.pending.push_front(job);
        }
    }

    /// When the first pausing job may be decided again; `None` when none
    /// pauses.
    pub(super) fn earliest_pause_end(&self) -> Option<Instant> {
        if self.pausing == 0 {
            return None;
        }
        self.pending.iter().filter_map(|job| job.not_before).min()
    }

    /// The next batch: pending jobs answered from memory are answered; a job
    /// whose tenant has a batch in flight waits (its head is locked by that
    /// batch until it commits: a batch sent alongside could reach the head
    /// first and find it not yet moved), as does a key repeated in the batch.
    pub(super) fn next_jobs(&mut self) -> Vec<Job> {
        let mut jobs = Vec::new();
        let mut waiting = VecDeque::new();
        let mut keys = HashSet::new();
        let busy: HashSet<TenantId> = self
            .in_flight
            .values()
            .flat_map(|batch| batch.tenants.iter().copied())
            .collect();
        let mut scanned = 0;
        let now = Instant::now();
        while jobs.len() < self.batch_commands_max && scanned < PENDING_MAX {
            let Some(mut job) = self.pending.pop_front() else {
                break;
            };
            scanned += 1;
            if let Some(not_before) = job.not_before {
                if not_before > now {
                    waiting.push_back(job);
                    continue;
                }
                job.not_before = None;
                self.pausing -= 1;
            }
            let key = (job.tenant_id, job.key.clone());
            if busy.contains(&job.tenant_id)
                || self.in_flight_keys.contains(&key)
                || keys.contains(&key)
            {
                waiting.push_back(job);
                continue;
            }
            match self.recent.answer(&job) {
                Some(answer) => self.respond(job, answer),
                None => {
                    keys.insert(key);
                    jobs.push(job);
                }
            }
        }
        // Waiting jobs keep their place at the front.
        while let Some(job) = waiting.pop_back() {
            self.pending.push_front(job);
        }
        jobs
    }
}
