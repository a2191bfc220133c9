//! One shard of the pipeline: a loop that batches, decides and appends.

use super::request::{
    accepted_body, error_body, Decider, Loaded, Refusal, Reply, StateView, Target,
};
use super::{Outcome, PipelineError, Request};
use crate::metrics::Metrics;
use aggregates::TenantId;
use chrono::Utc;
use eventstore::{
    AggregateKey, AppendError, ChainHead, CommandWrite, EventStore, Fingerprint, IdempotencyKey,
    IdempotencyRecord, StoreError, TenantBatch,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};

/// Rounds a batch may conflict (head moved, stale aggregate) before its
/// remaining requests are answered 409.
const CONFLICT_ROUNDS_MAX: u32 = 8;

/// Upper bound of the random pause after a conflicting round.
const JITTER_MAX: Duration = Duration::from_millis(20);

/// Aggregates a shard keeps in memory before it forgets half of them.
const AGGREGATES_CACHED_MAX: usize = 100_000;

/// Answers a shard remembers for repeated keys.
const RECENT_OUTCOMES_MAX: usize = 20_000;

/// An aggregate is snapshotted each time its version crosses a multiple of this.
const SNAPSHOT_INTERVAL: i64 = 100;

/// A request, type-erased for the shard.
pub(crate) trait ErasedRequest: Send + Sync {
    fn kind(&self) -> &'static str;
    fn targets(&self) -> Vec<Target>;
    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal>;
}

impl<R: Request> ErasedRequest for R {
    fn kind(&self) -> &'static str {
        R::KIND
    }

    fn targets(&self) -> Vec<Target> {
        Request::targets(self)
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        Request::decide(self, decider)
    }
}

/// A submitted request waiting for its answer.
pub(crate) struct Job {
    tenant_id: TenantId,
    key: IdempotencyKey,
    fingerprint: Fingerprint,
    request: Box<dyn ErasedRequest>,
    reply: oneshot::Sender<Result<Outcome, PipelineError>>,
    submitted: Instant,
}

impl Job {
    pub(crate) fn new(
        tenant_id: TenantId,
        key: IdempotencyKey,
        fingerprint: Fingerprint,
        request: Box<dyn ErasedRequest>,
        reply: oneshot::Sender<Result<Outcome, PipelineError>>,
    ) -> Self {
        Self {
            tenant_id,
            key,
            fingerprint,
            request,
            reply,
            submitted: Instant::now(),
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
        body: record.outcome.clone(),
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

/// A request decided in a round, waiting for the append.
struct Decided {
    job: Job,
    outcome: Outcome,
}

pub(crate) struct Shard {
    store: EventStore,
    metrics: Arc<Metrics>,
    batch_commands_max: usize,
    heads: HashMap<TenantId, ChainHead>,
    cached: HashMap<(TenantId, AggregateKey), Loaded>,
    recent: RecentOutcomes,
}

impl Shard {
    pub(crate) fn new(store: EventStore, metrics: Arc<Metrics>, batch_commands_max: usize) -> Self {
        Self {
            store,
            metrics,
            batch_commands_max,
            heads: HashMap::new(),
            cached: HashMap::new(),
            recent: RecentOutcomes::default(),
        }
    }

    /// Runs until shut down, then answers what is still queued and returns.
    pub(crate) async fn run(
        mut self,
        mut receiver: mpsc::Receiver<Job>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut closing = false;
        loop {
            let next = if closing {
                receiver.recv().await
            } else {
                tokio::select! {
                    job = receiver.recv() => job,
                    _ = shutdown.changed() => {
                        receiver.close();
                        closing = true;
                        continue;
                    }
                }
            };
            let Some(first) = next else { return };
            let mut jobs = vec![first];
            while jobs.len() < self.batch_commands_max {
                match receiver.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.process(jobs).await;
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

    async fn process(&mut self, jobs: Vec<Job>) {
        let mut pending = Vec::with_capacity(jobs.len());
        for job in jobs {
            match self.recent.answer(&job) {
                Some(answer) => self.respond(job, answer),
                None => pending.push(job),
            }
        }
        let mut conflict_rounds = 0;
        while !pending.is_empty() {
            // One request per key per round; a repeat waits for the round and
            // is then answered from the first one's outcome.
            let mut keys = HashSet::with_capacity(pending.len());
            let (round, deferred): (Vec<Job>, Vec<Job>) = pending
                .into_iter()
                .partition(|job| keys.insert((job.tenant_id, job.key.clone())));
            let retry = self.round(round).await;
            let conflicted = !retry.is_empty();
            pending = retry;
            for job in deferred {
                match self.recent.answer(&job) {
                    Some(answer) => self.respond(job, answer),
                    None => pending.push(job),
                }
            }
            if conflicted {
                self.metrics.conflict();
                conflict_rounds += 1;
                if conflict_rounds >= CONFLICT_ROUNDS_MAX {
                    for job in pending.drain(..) {
                        self.respond(
                            job,
                            Err(PipelineError::Conflict {
                                attempts: conflict_rounds,
                            }),
                        );
                    }
                    return;
                }
                tokio::time::sleep(jitter(conflict_rounds)).await;
            }
        }
    }

    /// Decides and appends `jobs` (distinct keys). Returns the jobs to try
    /// again because their tenant changed underneath; answers all others.
    async fn round(&mut self, jobs: Vec<Job>) -> Vec<Job> {
        let jobs = match self.load_heads(jobs).await {
            Some(jobs) => jobs,
            None => return Vec::new(),
        };
        if let Err(error) = self.load_aggregates(&jobs).await {
            let failure = store_failure(error);
            for job in jobs {
                self.respond(job, Err(failure.clone()));
            }
            return Vec::new();
        }

        let now = Utc::now();
        let mut batches: Vec<TenantBatch> = Vec::new();
        let mut batch_of: HashMap<TenantId, usize> = HashMap::new();
        let mut staged: HashMap<(TenantId, AggregateKey), Loaded> = HashMap::new();
        let mut decided: Vec<Decided> = Vec::with_capacity(jobs.len());
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
            let touched = decider.into_touched();
            let (status, events) = match &decision {
                Ok(reply) => (
                    reply.status,
                    touched
                        .iter()
                        .flat_map(|touched| touched.events.iter().cloned())
                        .collect(),
                ),
                Err(Refusal::Rejected { kind, .. }) => (Refusal::status(*kind), Vec::new()),
                Err(Refusal::Internal(message)) => {
                    tracing::error!(kind = job.request.kind(), %message, "request failed");
                    let message = message.clone();
                    self.respond(job, Err(PipelineError::Internal(message)));
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
                            body: pushed.outcome,
                            tenant_seq: pushed.tenant_seq,
                            replayed: false,
                        },
                    });
                }
                Err(error) => {
                    tracing::error!(kind = job.request.kind(), %error, "request produced unstorable events");
                    self.respond(job, Err(PipelineError::Internal(error.to_string())));
                }
            }
        }
        if decided.is_empty() {
            return Vec::new();
        }

        let started = Instant::now();
        let result = self.store.append(&batches).await;
        self.metrics
            .batch_appended(decided.len(), started.elapsed());
        match result {
            Ok(report) => {
                let moved: HashSet<TenantId> = report.moved.into_iter().collect();
                for tenant_id in &moved {
                    self.forget_tenant(*tenant_id);
                }
                for batch in &batches {
                    if !moved.contains(&batch.tenant_id()) {
                        self.heads.insert(batch.tenant_id(), batch.head());
                    }
                }
                self.keep_staged(staged, &moved);
                let mut retry = Vec::new();
                for Decided { job, outcome } in decided {
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
                retry
            }
            Err(AppendError::SequenceConflict { tenant_id, .. }) => {
                // Another process wrote to an aggregate this shard had cached.
                self.forget_tenant(tenant_id);
                decided.into_iter().map(|decided| decided.job).collect()
            }
            Err(AppendError::KeyReplayed(_) | AppendError::KeyReused(_)) => {
                self.answer_known_keys(decided).await
            }
            Err(other) => {
                // The statement may or may not have committed (a lost
                // acknowledgement): forget what this shard believed.
                let failure = match &other {
                    AppendError::Unavailable(error) => {
                        PipelineError::Unavailable(error.to_string())
                    }
                    other => PipelineError::Internal(other.to_string()),
                };
                tracing::warn!(error = %other, "append failed");
                for batch in &batches {
                    self.forget_tenant(batch.tenant_id());
                }
                for Decided { job, .. } in decided {
                    self.respond(job, Err(failure.clone()));
                }
                Vec::new()
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
                let upcasters = (target.kind.upcasters)();
                for event in events {
                    let sequence = event.sequence as i64;
                    if sequence != version + 1 {
                        return Err(StoreError::Corrupt(format!(
                            "aggregate {}/{} jumps from event {version} to {sequence}",
                            key.aggregate_type, key.aggregate_id
                        )));
                    }
                    let event = upcasters.iter().fold(event, |event, upcaster| {
                        if upcaster.can_upcast(&event.event_type, &event.event_version) {
                            upcaster.upcast(event)
                        } else {
                            event
                        }
                    });
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

    /// Moves the round's new states into the cache (except for tenants that
    /// moved) and snapshots aggregates that crossed an interval.
    fn keep_staged(
        &mut self,
        staged: HashMap<(TenantId, AggregateKey), Loaded>,
        moved: &HashSet<TenantId>,
    ) {
        for ((tenant_id, key), loaded) in staged {
            if moved.contains(&tenant_id) {
                continue;
            }
            let previous = self
                .cached
                .get(&(tenant_id, key.clone()))
                .map_or(0, |cached| cached.version);
            if loaded.version / SNAPSHOT_INTERVAL > previous / SNAPSHOT_INTERVAL {
                self.snapshot(tenant_id, &key, &loaded);
            }
            self.cached.insert((tenant_id, key), loaded);
        }
        if self.cached.len() > AGGREGATES_CACHED_MAX {
            // Forget an arbitrary half; they reload from snapshots on demand.
            let mut keep = false;
            self.cached.retain(|_, _| {
                keep = !keep;
                keep
            });
        }
    }

    /// Writes a snapshot in the background; a lost snapshot costs only load time.
    fn snapshot(&self, tenant_id: TenantId, key: &AggregateKey, loaded: &Loaded) {
        let Ok(payload) = loaded.state.snapshot() else {
            return;
        };
        let store = self.store.clone();
        let key = key.clone();
        let version = loaded.version;
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

/// A random pause after the `round`th conflict: up to 250 µs doubled per
/// round, at most [`JITTER_MAX`].
fn jitter(round: u32) -> Duration {
    let mut bytes = [0u8; 8];
    let random = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => 0,
    };
    let ceiling_micros = (250u64 << round.min(7)).min(JITTER_MAX.as_micros() as u64);
    Duration::from_micros(random % ceiling_micros)
}
