//! One shard of the pipeline: a loop that batches, decides and appends.

use super::request::{
    accepted_body, error_body, record_request, AnyRequest, Decider, Loaded, Refusal, StateView,
    Target,
};
use super::{Clock, Outcome, PipelineError};
use crate::metrics::Metrics;
use aggregates::TenantId;
use eventstore::{
    AggregateKey, AppendError, ChainHead, CommandWrite, EventStore, Fingerprint, IdempotencyKey,
    IdempotencyRecord, JsonText, StoreError, TenantBatch,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// A random pause before the `conflicts`th retry.
fn retry_pause(conflicts: u32) -> Duration {
    eventstore::append::jittered_pause(conflicts, RETRY_PAUSE_FIRST, RETRY_PAUSE_MAX)
}

/// Waits until `deadline`; never when there is none.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Times a request may conflict (head moved, stale aggregate) before it is
/// answered 409.
const CONFLICT_ROUNDS_MAX: u32 = 8;

/// Upper bound of the random pause before a conflicted request is decided
/// again, doubled per conflict up to [`RETRY_PAUSE_MAX`]: writers of
/// several processes that collided do not collide again in lockstep.
const RETRY_PAUSE_FIRST: Duration = Duration::from_micros(500);

/// Longest pause before a conflicted request is decided again.
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(16);

/// Most scheduler yields a shard spends gathering a batch.
const GATHER_YIELDS_MAX: usize = 16;

/// Yields without a new job after which a shard stops gathering.
const GATHER_QUIET_YIELDS: usize = 2;

/// Most jobs a shard holds (waiting or being retried) before submitters
/// wait on its queue.
const PENDING_MAX: usize = 4_096;

/// Aggregates a shard keeps in memory before it forgets half of them.
const AGGREGATES_CACHED_MAX: usize = 100_000;

/// Answers a shard remembers for repeated keys.
const RECENT_OUTCOMES_MAX: usize = 20_000;

/// An aggregate is snapshotted each time its version crosses a multiple of this.
const SNAPSHOT_INTERVAL: i64 = 100;

/// A submitted request waiting for its answer.
pub(crate) struct Job {
    tenant_id: TenantId,
    key: IdempotencyKey,
    fingerprint: Fingerprint,
    request: Box<dyn AnyRequest>,
    /// The request's canonical body, recorded with its first event.
    body: JsonText,
    reply: oneshot::Sender<Result<Outcome, PipelineError>>,
    submitted: Instant,
    conflicts: u32,
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
            not_before: None,
        }
    }
}

/// Answers of recently completed keys, oldest forgotten first.
#[derive(Default)]
struct RecentOutcomes {
    answers: HashMap<(TenantId, IdempotencyKey), (Fingerprint, Outcome)>,
    order: VecDeque<(TenantId, IdempotencyKey)>,
}

impl RecentOutcomes {
    fn answer(&self, job: &Job) -> Option<Result<Outcome, PipelineError>> {
        let (fingerprint, outcome) = self.answers.get(&(job.tenant_id, job.key.clone()))?;
        Some(replay(fingerprint, &job.fingerprint, outcome))
    }

    fn remember(
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
fn replay(
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

fn outcome_of(record: &IdempotencyRecord) -> Outcome {
    Outcome {
        status: record.status,
        body: Arc::new(record.outcome.clone()),
        tenant_seq: record.tenant_seq,
        replayed: false,
    }
}

fn store_failure(error: StoreError) -> PipelineError {
    match error {
        StoreError::Unavailable(error) => PipelineError::Unavailable(error.to_string()),
        StoreError::UnknownTenant(_) => PipelineError::UnknownTenant,
        other => PipelineError::Internal(other.to_string()),
    }
}

/// A request decided in a batch, waiting for the append.
struct Decided {
    job: Job,
    outcome: Outcome,
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
    pub(crate) fn new(
        store: EventStore,
        metrics: Arc<Metrics>,
        batch_commands_max: usize,
        pipeline_depth: usize,
        clock: Clock,
    ) -> Self {
        Self {
            store,
            metrics,
            batch_commands_max,
            pipeline_depth: pipeline_depth.max(1),
            clock,
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
            Err(PipelineError::KeyReused) => 422,
            Err(PipelineError::Conflict { .. }) => 409,
            Err(PipelineError::Unavailable(_) | PipelineError::Stopped) => 503,
            Err(PipelineError::UnknownTenant) => 404,
            Err(PipelineError::Invalid(_)) => 400,
            Err(PipelineError::Internal(_)) => 500,
        };
        self.metrics
            .command_answered(job.request.kind(), status, job.submitted.elapsed());
        // The submitter may have gone away; its answer is recorded regardless.
        let _ = job.reply.send(answer);
    }

    /// Puts jobs back to be decided again after a random pause (after a
    /// conflict), or answers 409 once a job has conflicted too often.
    fn retry(&mut self, jobs: Vec<Job>) {
        let now = Instant::now();
        for mut job in jobs.into_iter().rev() {
            job.conflicts += 1;
            if job.conflicts >= CONFLICT_ROUNDS_MAX {
                let attempts = job.conflicts;
                self.respond(job, Err(PipelineError::Conflict { attempts }));
            } else {
                self.metrics.conflict();
                job.not_before = Some(now + retry_pause(job.conflicts));
                self.pausing += 1;
                self.pending.push_front(job);
            }
        }
    }

    /// Puts jobs back to be decided again at once, keeping their order: they
    /// did not conflict themselves (another job of their batch did).
    fn requeue(&mut self, jobs: Vec<Job>) {
        for job in jobs.into_iter().rev() {
            self.pending.push_front(job);
        }
    }

    /// When the first pausing job may be decided again; `None` when none
    /// pauses.
    fn earliest_pause_end(&self) -> Option<Instant> {
        if self.pausing == 0 {
            return None;
        }
        self.pending.iter().filter_map(|job| job.not_before).min()
    }

    /// An append task panicked or was cancelled: nobody can tell whether its
    /// batch committed, so its jobs are answered 500 (a retry with the same
    /// key gets the recorded outcome, if any) and its tenants forgotten.
    fn append_task_failed(&mut self, error: tokio::task::JoinError) {
        tracing::error!(%error, "append task failed");
        let Some(batch) = self.append_tasks.remove(&error.id()) else {
            return;
        };
        let Some(batch) = self.in_flight.remove(&batch) else {
            return;
        };
        for tenant_id in &batch.tenants {
            self.forget_tenant(*tenant_id);
        }
        for Decided { job, .. } in batch.decided {
            self.in_flight_keys
                .remove(&(job.tenant_id, job.key.clone()));
            self.respond(
                job,
                Err(PipelineError::Internal("the append failed".to_string())),
            );
        }
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

    /// The next batch: pending jobs answered from memory are answered; a job
    /// whose tenant has a batch in flight waits (its head is locked by that
    /// batch until it commits: a batch sent alongside could reach the head
    /// first and find it not yet moved), as does a key repeated in the batch.
    fn next_jobs(&mut self) -> Vec<Job> {
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

        let now = self.clock.now();
        let mut batches: Vec<TenantBatch> = Vec::new();
        let mut batch_of: HashMap<TenantId, usize> = HashMap::new();
        let mut staged: HashMap<(TenantId, AggregateKey), Loaded> = HashMap::new();
        let mut decided: Vec<Decided> = Vec::with_capacity(jobs.len());
        let mut failed: Vec<(Job, String)> = Vec::new();
        for job in jobs {
            let index = *batch_of.entry(job.tenant_id).or_insert_with(|| {
                // A tenant without a head was answered by load_heads.
                let head = self
                    .heads
                    .get(&job.tenant_id)
                    .copied()
                    .unwrap_or_else(|| ChainHead::genesis(job.tenant_id));
                batches.push(TenantBatch::new(head));
                batches.len() - 1
            });
            let batch = &mut batches[index];
            let at = batch.head().stamp(now);
            let view = StateView {
                staged: &staged,
                cached: &self.cached,
            };
            let mut decider = Decider::new(job.tenant_id, &job.key, at, job.request.kind(), view);
            let decision = job.request.decide(&mut decider);
            let (touched, indexed) = decider.into_parts();
            let recorded = decision.as_ref().map_err(Clone::clone).and_then(|reply| {
                let mut events: Vec<_> = touched
                    .iter()
                    .flat_map(|touched| touched.events.iter().cloned())
                    .collect();
                record_request(&mut events, job.request.kind(), &job.body)?;
                Ok((reply.status, events))
            });
            let (status, events) = match (&decision, recorded) {
                (Ok(_), Ok(recorded)) => recorded,
                (Ok(_), Err(refusal)) => {
                    let message = format!("{refusal:?}");
                    tracing::error!(kind = job.request.kind(), %message, "request not recorded");
                    failed.push((job, message));
                    continue;
                }
                (Err(Refusal::Rejected { kind, .. }), _) => (Refusal::status(*kind), Vec::new()),
                (Err(Refusal::Internal(message)), _) => {
                    tracing::error!(kind = job.request.kind(), %message, "request failed");
                    failed.push((job, message.clone()));
                    continue;
                }
            };
            let outcome = |appended: &[_], tenant_seq| match &decision {
                Ok(reply) => accepted_body(reply, appended, tenant_seq),
                Err(Refusal::Rejected {
                    code,
                    message,
                    details,
                    ..
                }) => error_body(code, message, details.clone()),
                Err(Refusal::Internal(_)) => serde_json::Value::Null,
            };
            let write = CommandWrite {
                key: job.key.clone(),
                fingerprint: job.fingerprint,
                status,
                events,
                indexed: if decision.is_ok() {
                    indexed
                } else {
                    Vec::new()
                },
                at,
            };
            match batch.push(write, outcome) {
                Ok(pushed) => {
                    if decision.is_ok() {
                        for touched in touched {
                            staged.insert(
                                (job.tenant_id, touched.key),
                                Loaded {
                                    state: touched.state,
                                    version: touched.version,
                                },
                            );
                        }
                    }
                    decided.push(Decided {
                        job,
                        outcome: Outcome {
                            status,
                            body: Arc::new(pushed.outcome),
                            tenant_seq: pushed.tenant_seq,
                            replayed: false,
                        },
                    });
                }
                Err(error) => {
                    tracing::error!(kind = job.request.kind(), %error, "request produced unstorable events");
                    failed.push((job, error.to_string()));
                }
            }
        }
        if !failed.is_empty() {
            self.answer_failed(failed).await;
        }
        if decided.is_empty() {
            return;
        }
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

    /// Answers the commands of a finished append, or puts them back.
    async fn complete(&mut self, appended: Appended) {
        let Some(batch) = self.in_flight.remove(&appended.batch) else {
            return;
        };
        for decided in &batch.decided {
            self.in_flight_keys
                .remove(&(decided.job.tenant_id, decided.job.key.clone()));
        }
        self.metrics
            .batch_appended(batch.decided.len(), appended.elapsed);
        match appended.result {
            Ok(report) => {
                let moved: HashSet<TenantId> = report.moved.into_iter().collect();
                for tenant_id in &moved {
                    // Another writer appended: what this shard expected of the
                    // tenant (here and in later batches) is stale.
                    self.forget_tenant(*tenant_id);
                }
                for (tenant_id, key, version, payload) in batch.snapshots {
                    if !moved.contains(&tenant_id) {
                        self.snapshot(tenant_id, key, version, payload);
                    }
                }
                let mut retry = Vec::new();
                for Decided { job, outcome } in batch.decided {
                    if moved.contains(&job.tenant_id) {
                        retry.push(job);
                    } else {
                        self.recent.remember(
                            job.tenant_id,
                            job.key.clone(),
                            job.fingerprint,
                            &outcome,
                        );
                        self.respond(job, Ok(outcome));
                    }
                }
                self.retry(retry);
            }
            Err(error) => {
                // Nothing of the batch was written (or, with a lost
                // acknowledgement, nobody can tell): forget what this shard
                // expected of its tenants.
                for tenant_id in &batch.tenants {
                    self.forget_tenant(*tenant_id);
                }
                match error {
                    AppendError::SequenceConflict { .. } => {
                        let jobs = batch
                            .decided
                            .into_iter()
                            .map(|decided| decided.job)
                            .collect();
                        self.retry(jobs);
                    }
                    AppendError::KeyReplayed(_) | AppendError::KeyReused(_) => {
                        // The jobs whose key had no record were not at fault:
                        // they go again at once, without counting a conflict.
                        let others = self.answer_known_keys(batch.decided).await;
                        self.requeue(others);
                    }
                    other => {
                        let failure = match &other {
                            AppendError::Unavailable(error) => {
                                PipelineError::Unavailable(error.to_string())
                            }
                            other => PipelineError::Internal(other.to_string()),
                        };
                        tracing::warn!(error = %other, "append failed");
                        for Decided { job, .. } in batch.decided {
                            self.respond(job, Err(failure.clone()));
                        }
                    }
                }
            }
        }
    }

    /// Makes sure every job's tenant head is known; answers jobs of unknown
    /// tenants. `None` when the heads could not be read (all answered).
    async fn load_heads(&mut self, jobs: Vec<Job>) -> Option<Vec<Job>> {
        let missing: Vec<TenantId> = jobs
            .iter()
            .map(|job| job.tenant_id)
            .filter(|tenant_id| !self.heads.contains_key(tenant_id))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            match self.store.chain_heads(&missing).await {
                Ok(heads) => {
                    for head in heads {
                        self.heads.insert(head.tenant_id, head);
                    }
                }
                Err(error) => {
                    let failure = store_failure(error);
                    for job in jobs {
                        self.respond(job, Err(failure.clone()));
                    }
                    return None;
                }
            }
        }
        let (known, unknown): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|job| self.heads.contains_key(&job.tenant_id));
        for job in unknown {
            self.respond(job, Err(PipelineError::UnknownTenant));
        }
        Some(known)
    }

    /// Loads every target not in the cache: snapshot, then events after it.
    async fn load_aggregates(&mut self, jobs: &[Job]) -> Result<(), StoreError> {
        let mut missing: HashMap<TenantId, HashMap<AggregateKey, Target>> = HashMap::new();
        for job in jobs {
            for target in job.request.targets() {
                if !self
                    .cached
                    .contains_key(&(job.tenant_id, target.key.clone()))
                {
                    missing
                        .entry(job.tenant_id)
                        .or_default()
                        .insert(target.key.clone(), target);
                }
            }
        }
        for (tenant_id, targets) in missing {
            let keys: Vec<AggregateKey> = targets.keys().cloned().collect();
            let mut histories = self.store.load_histories(tenant_id, &keys).await?;
            for (key, target) in targets {
                let history = histories.remove(&key).unwrap_or_default();
                let restored = history.snapshot.as_ref().and_then(|snapshot| {
                    Some((
                        (target.kind.restore)(&snapshot.payload)?,
                        snapshot.last_sequence,
                    ))
                });
                let (mut state, mut version, events) = match (restored, &history.snapshot) {
                    (Some((state, version)), _) => (state, version, history.events),
                    // A snapshot that no longer deserializes is ignored.
                    (None, Some(_)) => (
                        (target.kind.fresh)(),
                        0,
                        self.store.load_events(tenant_id, &key, 0).await?,
                    ),
                    (None, None) => ((target.kind.fresh)(), 0, history.events),
                };
                for event in events {
                    let sequence = event.sequence as i64;
                    if sequence != version + 1 {
                        return Err(StoreError::Corrupt(format!(
                            "aggregate {}/{} jumps from event {version} to {sequence}",
                            key.aggregate_type, key.aggregate_id
                        )));
                    }
                    let event = target.kind.upcast(event);
                    state.apply_serialized(event).map_err(|error| {
                        StoreError::Corrupt(format!(
                            "event {sequence} of {}/{} does not deserialize: {error}",
                            key.aggregate_type, key.aggregate_id
                        ))
                    })?;
                    version = sequence;
                }
                self.cached
                    .insert((tenant_id, key), Loaded { state, version });
            }
        }
        Ok(())
    }

    /// Moves a batch's new states into the cache (where later batches build
    /// on them) and returns the snapshots due once it commits.
    fn keep_staged(
        &mut self,
        staged: HashMap<(TenantId, AggregateKey), Loaded>,
    ) -> Vec<(TenantId, AggregateKey, i64, serde_json::Value)> {
        let mut snapshots = Vec::new();
        for ((tenant_id, key), loaded) in staged {
            let previous = self
                .cached
                .get(&(tenant_id, key.clone()))
                .map_or(0, |cached| cached.version);
            if loaded.version / SNAPSHOT_INTERVAL > previous / SNAPSHOT_INTERVAL {
                if let Ok(payload) = loaded.state.snapshot() {
                    snapshots.push((tenant_id, key.clone(), loaded.version, payload));
                }
            }
            self.cached.insert((tenant_id, key), loaded);
        }
        if self.cached.len() > AGGREGATES_CACHED_MAX {
            // Forget an arbitrary half; they reload from snapshots on demand.
            // Tenants with batches in flight lose their expectations too.
            let mut keep = false;
            self.cached.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
        snapshots
    }

    /// Writes a snapshot in the background; a lost snapshot costs only load time.
    fn snapshot(
        &self,
        tenant_id: TenantId,
        key: AggregateKey,
        version: i64,
        payload: serde_json::Value,
    ) {
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(error) = store
                .save_snapshot(tenant_id, &key, version, &payload)
                .await
            {
                tracing::warn!(%error, aggregate = ?key, "snapshot not saved");
            }
        });
    }

    /// Forgets the head and every cached aggregate of a tenant.
    fn forget_tenant(&mut self, tenant_id: TenantId) {
        self.heads.remove(&tenant_id);
        self.cached.retain(|(tenant, _), _| *tenant != tenant_id);
    }

    /// Jobs whose decision failed internally: one whose key already has a
    /// record (an earlier submission completed) is answered from it, the
    /// others 500.
    async fn answer_failed(&mut self, failed: Vec<(Job, String)>) {
        let keys: Vec<(TenantId, IdempotencyKey)> = failed
            .iter()
            .map(|(job, _)| (job.tenant_id, job.key.clone()))
            .collect();
        let records = self
            .store
            .idempotency_records(&keys)
            .await
            .unwrap_or_default();
        for (job, message) in failed {
            let record = records
                .iter()
                .find(|record| record.tenant_id == job.tenant_id && record.key == job.key);
            let answer = match record {
                Some(record) => replay(&record.fingerprint, &job.fingerprint, &outcome_of(record)),
                None => Err(PipelineError::Internal(message)),
            };
            self.respond(job, answer);
        }
    }

    /// After an append refused a key that already has a record: answers
    /// every job whose key is recorded, returns the others for another round.
    async fn answer_known_keys(&mut self, decided: Vec<Decided>) -> Vec<Job> {
        let keys: Vec<(TenantId, IdempotencyKey)> = decided
            .iter()
            .map(|decided| (decided.job.tenant_id, decided.job.key.clone()))
            .collect();
        let records = match self.store.idempotency_records(&keys).await {
            Ok(records) => records,
            Err(error) => {
                let failure = store_failure(error);
                for Decided { job, .. } in decided {
                    self.respond(job, Err(failure.clone()));
                }
                return Vec::new();
            }
        };
        let mut retry = Vec::new();
        for Decided { job, .. } in decided {
            let record = records
                .iter()
                .find(|record| record.tenant_id == job.tenant_id && record.key == job.key);
            match record {
                Some(record) => {
                    let outcome = outcome_of(record);
                    self.recent.remember(
                        job.tenant_id,
                        job.key.clone(),
                        record.fingerprint,
                        &outcome,
                    );
                    let answer = replay(&record.fingerprint, &job.fingerprint, &outcome);
                    self.respond(job, answer);
                }
                None => retry.push(job),
            }
        }
        retry
    }
}
