//! One shard of the pipeline: a loop that batches, decides and appends.
//!
//! Layout:
//! - `queue`: the jobs waiting, the next batch taken from them, pauses
//!   after a conflict, answers of recent keys.
//! - `decide`: deciding a batch against the expected states, pure.
//! - `completion`: answering a finished (or failed) append.
//! - `cache`: the chain heads and aggregates a shard expects, loaded,
//!   kept, snapshotted and forgotten.

mod cache;
mod completion;
mod decide;
mod queue;

pub(crate) use queue::Job;

use super::request::Loaded;
use super::{BusConfig, Clock, CrashHook, CrashPoint, Outcome, PipelineError};
use crate::metrics::Metrics;
use aggregates::TenantId;
use decide::{decide_batch, BatchDecision, Decided};
use eventstore::{
    AggregateKey, AppendError, ChainHead, EventStore, IdempotencyKey, StoreError, TenantBatch,
};
use queue::{RecentOutcomes, PENDING_MAX};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Waits until `deadline`; never when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Most scheduler yields a shard spends gathering a batch.
const GATHER_YIELDS_MAX: usize = 16;

/// Yields without a new job after which a shard stops gathering.
const GATHER_QUIET_YIELDS: usize = 2;

fn store_failure(error: StoreError) -> PipelineError {
    match error {
        StoreError::Unavailable(error) => PipelineError::Unavailable(error.to_string()),
        StoreError::UnknownTenant(_) => PipelineError::UnknownTenant,
        other => PipelineError::Internal(other.to_string()),
    }
}

/// A batch whose append is in flight.
struct InFlight {
    decided: Vec<Decided>,
    tenants: Vec<TenantId>,
    /// Snapshots to write once the batch is known to have committed.
    snapshots: Vec<(TenantId, AggregateKey, i64, serde_json::Value)>,
}

/// What an append task reports.
struct Appended {
    batch: u64,
    result: Result<eventstore::AppendReport, AppendError>,
    elapsed: Duration,
}

pub(crate) struct Shard {
    store: EventStore,
    metrics: Arc<Metrics>,
    batch_commands_max: usize,
    pipeline_depth: usize,
    clock: Clock,
    crash: CrashHook,
    rules: aggregates::rules::Rules,
    append_within: Duration,
    /// Heads as this shard expects them, including batches still in flight.
    heads: HashMap<TenantId, ChainHead>,
    /// Aggregates as this shard expects them, including batches in flight.
    cached: HashMap<(TenantId, AggregateKey), Loaded>,
    recent: RecentOutcomes,
    pending: VecDeque<Job>,
    in_flight: HashMap<u64, InFlight>,
    in_flight_keys: HashSet<(TenantId, IdempotencyKey)>,
    appends: JoinSet<Appended>,
    /// Batch of each append task, to answer a batch whose task panicked.
    append_tasks: HashMap<tokio::task::Id, u64>,
    /// Pending jobs pausing after a conflict.
    pausing: usize,
    next_batch: u64,
}

impl Shard {
    pub(crate) fn new(store: EventStore, metrics: Arc<Metrics>, config: &BusConfig) -> Self {
        Self {
            store,
            metrics,
            batch_commands_max: config.batch_commands_max.max(1),
            pipeline_depth: config.pipeline_depth.max(1),
            clock: config.clock.clone(),
            crash: config.crash.clone(),
            rules: config.rules,
            append_within: config.append_within.min(eventstore::APPEND_WITHIN),
            heads: HashMap::new(),
            cached: HashMap::new(),
            recent: RecentOutcomes::default(),
            pending: VecDeque::new(),
            in_flight: HashMap::new(),
            in_flight_keys: HashSet::new(),
            appends: JoinSet::new(),
            append_tasks: HashMap::new(),
            pausing: 0,
            next_batch: 0,
        }
    }

    /// Runs until shut down, then answers what is still queued and in flight
    /// and returns.
    pub(crate) async fn run(
        mut self,
        mut receiver: mpsc::Receiver<Job>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut closing = false;
        let mut receiving = true;
        loop {
            self.launch().await;
            if !receiving && self.pending.is_empty() && self.in_flight.is_empty() {
                return;
            }
            let resume = self.earliest_pause_end();
            tokio::select! {
                job = receiver.recv(), if receiving && self.pending.len() < PENDING_MAX => match job {
                    Some(job) => {
                        self.pending.push_back(job);
                        // Let the submitters that are about to send (those
                        // just answered) catch up before deciding: a few
                        // yields gather a whole cohort into one batch.
                        let mut quiet = 0;
                        for _ in 0..GATHER_YIELDS_MAX {
                            let before = self.pending.len();
                            while self.pending.len() < PENDING_MAX {
                                match receiver.try_recv() {
                                    Ok(job) => self.pending.push_back(job),
                                    Err(_) => break,
                                }
                            }
                            if self.pending.len() >= self.batch_commands_max {
                                break;
                            }
                            quiet = if self.pending.len() == before { quiet + 1 } else { 0 };
                            if quiet >= GATHER_QUIET_YIELDS {
                                break;
                            }
                            tokio::task::yield_now().await;
                        }
                    }
                    None => receiving = false,
                },
                Some(done) = self.appends.join_next_with_id(), if !self.appends.is_empty() => match done {
                    Ok((task, appended)) => {
                        self.append_tasks.remove(&task);
                        self.complete(appended).await;
                    }
                    Err(error) => self.append_task_failed(error),
                },
                () = sleep_until(resume), if resume.is_some() => {}
                _ = shutdown.changed(), if !closing => {
                    receiver.close();
                    closing = true;
                }
            }
        }
    }

    fn respond(&self, job: Job, answer: Result<Outcome, PipelineError>) {
        let status = match &answer {
            Ok(outcome) => outcome.status,
            Err(error) => crate::http::error::pipeline_error_status(error).as_u16(),
        };
        self.metrics
            .command_answered(job.request.kind(), status, job.submitted.elapsed());
        // The submitter may have gone away; its answer is recorded regardless.
        let _ = job.reply.send(answer);
    }

    /// Decides and sends batches while there is room in the pipeline.
    async fn launch(&mut self) {
        while self.in_flight.len() < self.pipeline_depth && !self.pending.is_empty() {
            let jobs = self.next_jobs();
            if jobs.is_empty() {
                return;
            }
            self.send(jobs).await;
        }
    }

    /// Decides `jobs` against the expected state and sends their append.
    async fn send(&mut self, jobs: Vec<Job>) {
        let jobs = match self.load_heads(jobs).await {
            Some(jobs) => jobs,
            None => return,
        };
        if let Err(error) = self.load_aggregates(&jobs).await {
            let failure = store_failure(error);
            for job in jobs {
                self.respond(job, Err(failure.clone()));
            }
            return;
        }
        let BatchDecision {
            batches,
            staged,
            decided,
            failed,
        } = decide_batch(
            jobs,
            &self.heads,
            &self.cached,
            (
                self.clock.now(),
                self.rules,
                std::time::Instant::now() + self.append_within,
            ),
        );
        if !failed.is_empty() {
            self.answer_failed(failed).await;
        }
        if decided.is_empty() {
            return;
        }
        self.crash.stop_if_crashing(CrashPoint::Decided).await;
        self.start_append(batches, staged, decided);
    }

    /// Expects the heads and states of a decided batch (later batches build
    /// on them) and appends it in a task of its own.
    fn start_append(
        &mut self,
        batches: Vec<TenantBatch>,
        staged: HashMap<(TenantId, AggregateKey), Loaded>,
        decided: Vec<Decided>,
    ) {
        // Later batches build on this one: expect its heads and states now.
        for batch in &batches {
            self.heads.insert(batch.tenant_id(), batch.head());
        }
        let snapshots = self.keep_staged(staged);
        for decided in &decided {
            self.in_flight_keys
                .insert((decided.job.tenant_id, decided.job.key.clone()));
        }
        let id = self.next_batch;
        self.next_batch += 1;
        self.in_flight.insert(
            id,
            InFlight {
                tenants: batches.iter().map(TenantBatch::tenant_id).collect(),
                decided,
                snapshots,
            },
        );
        let store = self.store.clone();
        let task = self.appends.spawn(async move {
            let started = Instant::now();
            let result = store.append(&batches).await;
            Appended {
                batch: id,
                result,
                elapsed: started.elapsed(),
            }
        });
        self.append_tasks.insert(task.id(), id);
    }
}
