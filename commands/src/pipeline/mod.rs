//! The command pipeline: from (tenant, idempotency key, request) to an
//! answer, exactly once.
//!
//! Requests are routed to one of a few shards by tenant. A shard takes every
//! request waiting for it, decides them in order against aggregates it keeps
//! in memory (loaded from snapshot and events on first use), and appends all
//! their events and idempotency records in one statement (group commit). Its
//! cache is trusted only while the tenant's chain head is the one it last
//! wrote: if another process appended, the compare-and-set on the head fails,
//! the shard drops what it knew of that tenant, reloads and decides again.
//! Aggregate sequences are the last guard (a stale decision conflicts on the
//! unique key). Conflicts are retried a bounded number of times with jitter.
//!
//! A key already answered is answered again from its record (or from the
//! shard's memory of recent answers); a key used for another request is
//! refused; two requests with one key in flight execute once.

mod clock;
mod crash;
pub mod fold;
pub mod load;
pub mod request;
mod shard;

pub use clock::{Clock, DatabaseTime, DatabaseTimeError, DATABASE_TIME_EVERY, FOLLOWING};
pub use crash::{CrashHook, CrashPoint};
pub use request::{
    derive_id, error_body, hashed_id, record_request, request_metadata, AggregateKind,
    AnyAggregate, AnyRequest, Decider, Loaded, Refusal, Reply, Request, Target, Touched,
    METADATA_COMMAND, METADATA_REQUEST, METADATA_RULES,
};

use crate::metrics::Metrics;
use aggregates::TenantId;
use eventstore::{EventStore, Fingerprint, IdempotencyKey};
use serde_json::Value;
use shard::{Job, Shard};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// How the pipeline runs.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Shards; each decides its tenants' requests in order on one task.
    pub shards: usize,
    /// Appends a shard keeps in flight at once (one connection each); each
    /// next batch is decided on top of the ones still in flight.
    pub pipeline_depth: usize,
    /// Requests that may wait per shard before submitters wait too.
    pub queue_length: usize,
    /// Most requests decided and appended together.
    pub batch_commands_max: usize,
    /// The time stamped on commands (never earlier than the tenant's last
    /// event): the system clock by default; `serve` and `project` set the
    /// database server's ([`DatabaseTime::clock`]), tests their own.
    pub clock: Clock,
    /// Where a fault test stops the shards dead; none in a server.
    pub crash: CrashHook,
    /// The rules requests are decided under (the current ones; older ones
    /// while older processes still decide, or for a test of recorded
    /// history).
    pub rules: aggregates::rules::Rules,
    /// How long after its decision an append may still take its tenant's
    /// head ([`eventstore::APPEND_WITHIN`], never more: a longer one would
    /// let a time closed for reads open again); a fault test shortens it.
    pub append_within: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            shards: 1,
            pipeline_depth: 2,
            queue_length: 4_096,
            batch_commands_max: 256,
            clock: Clock::system(),
            crash: CrashHook::default(),
            rules: aggregates::rules::Rules::CURRENT,
            append_within: eventstore::APPEND_WITHIN,
        }
    }
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// 2xx accepted, 4xx rejected by a domain rule.
    pub status: u16,
    /// The answer body: for an accepted request its reply with
    /// `aggregate_id`, `events` and `tenant_seq`; for a rejected one the
    /// error envelope. Shared: the pipeline remembers recent answers.
    pub body: Arc<Value>,
    /// tenant_seq the ledger had reached when the request completed.
    pub tenant_seq: i64,
    /// Whether this is the stored answer of an earlier submission.
    pub replayed: bool,
}

impl Outcome {
    /// The answer `record` keeps, as first given.
    pub fn recorded(record: &eventstore::IdempotencyRecord) -> Self {
        Self {
            status: record.status,
            body: Arc::new(record.outcome.clone()),
            tenant_seq: record.tenant_seq,
            replayed: false,
        }
    }

    /// Whether the request was accepted.
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why a request got no outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    #[error("the idempotency key was already used for a different request")]
    KeyReused,
    #[error("the request kept conflicting with concurrent writers ({attempts} attempts)")]
    Conflict { attempts: u32 },
    /// The tenant's head was taken past the append's deadline (`within`
    /// of its decision: [`BusConfig::append_within`]) `rounds` times in a
    /// row: the database (or a transaction holding the head row) held the
    /// request up; nothing was recorded.
    #[error("the database did not take the request within {within:?} of its decision ({rounds} times in a row)")]
    Late { rounds: u32, within: Duration },
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("unknown tenant")]
    UnknownTenant,
    #[error("the request cannot be fingerprinted: {0}")]
    Invalid(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// What the request was resolved with moved before it was decided
    /// ([`Refusal::Stale`]); resolving it again may succeed.
    #[error("the request's resolved facts are stale: {0}")]
    Stale(String),
    /// A scheduled request submitted before its due time
    /// ([`Refusal::NotDue`]); submitting it again once due succeeds.
    #[error(transparent)]
    NotDue(request::NotDue),
    #[error("the command pipeline is shutting down")]
    Stopped,
}

/// The shard, of `shards`, that decides `tenant_id`'s requests; the same in
/// every process of one build (tests use it to pick tenants of different
/// shards).
pub fn shard_of(tenant_id: TenantId, shards: usize) -> usize {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    tenant_id.hash(&mut hasher);
    (hasher.finish() % shards.max(1) as u64) as usize
}

/// Handle to the pipeline; cheap to clone.
#[derive(Clone)]
pub struct CommandBus {
    senders: Arc<Vec<mpsc::Sender<Job>>>,
    shutdown: Arc<watch::Sender<bool>>,
    handles: Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    metrics: Arc<Metrics>,
    rules: aggregates::rules::Rules,
    clock: Clock,
}

impl CommandBus {
    /// Starts the shards on the current runtime.
    pub fn start(store: EventStore, config: BusConfig, metrics: Arc<Metrics>) -> Self {
        let (shutdown, shutdown_receiver) = watch::channel(false);
        let mut senders = Vec::with_capacity(config.shards.max(1));
        let mut handles = Vec::with_capacity(config.shards.max(1));
        for _ in 0..config.shards.max(1) {
            let (sender, receiver) = mpsc::channel(config.queue_length.max(1));
            let shard = Shard::new(store.clone(), metrics.clone(), &config);
            handles.push(tokio::spawn(shard.run(receiver, shutdown_receiver.clone())));
            senders.push(sender);
        }
        Self {
            senders: Arc::new(senders),
            shutdown: Arc::new(shutdown),
            handles: Arc::new(std::sync::Mutex::new(handles)),
            metrics,
            rules: config.rules,
            clock: config.clock,
        }
    }

    /// The time the pipeline stamps requests with now.
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    /// The rules the pipeline decides under: what an edge building a
    /// request may put in it (a field older rules do not know is left out,
    /// so that an older build reads the request back).
    pub fn rules(&self) -> aggregates::rules::Rules {
        self.rules
    }

    /// The metrics the pipeline records into.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Executes `request` for `tenant_id` under `key`, exactly once.
    pub async fn execute<R: Request>(
        &self,
        tenant_id: TenantId,
        key: IdempotencyKey,
        request: R,
    ) -> Result<Outcome, PipelineError> {
        self.execute_any(tenant_id, key, Box::new(request)).await
    }

    /// [`execute`](Self::execute) for a request resolved from what the
    /// client asked (`asked`: the route's own name for it and the client's
    /// body), fingerprinted by that: a retry of the same ask under the same
    /// key gets the first answer even when the facts resolved into the
    /// request (a payment's tenders) have moved since.
    pub async fn execute_asked<R: Request>(
        &self,
        tenant_id: TenantId,
        key: IdempotencyKey,
        asked: &serde_json::Value,
        request: R,
    ) -> Result<Outcome, PipelineError> {
        self.execute_any_asked(tenant_id, key, asked, Box::new(request))
            .await
    }

    /// [`execute_asked`](Self::execute_asked) for a request known only by
    /// its kind (a process manager's, resolved from the event it reacts
    /// to: `asked` names that event).
    pub async fn execute_any_asked(
        &self,
        tenant_id: TenantId,
        key: IdempotencyKey,
        asked: &serde_json::Value,
        request: Box<dyn AnyRequest>,
    ) -> Result<Outcome, PipelineError> {
        let fingerprint = Fingerprint::of(request.kind(), asked)
            .map_err(|error| PipelineError::Invalid(error.to_string()))?;
        self.submit(tenant_id, key, Some(fingerprint), request)
            .await
    }

    /// [`execute`](Self::execute) for a request known only by its kind (one
    /// decoded from a recorded body, as the scheduler submits them).
    pub async fn execute_any(
        &self,
        tenant_id: TenantId,
        key: IdempotencyKey,
        request: Box<dyn AnyRequest>,
    ) -> Result<Outcome, PipelineError> {
        self.submit(tenant_id, key, None, request).await
    }

    /// Queues `request` on its tenant's shard, fingerprinted by `asked` or
    /// else by its canonical body, and waits for its answer.
    async fn submit(
        &self,
        tenant_id: TenantId,
        key: IdempotencyKey,
        asked: Option<Fingerprint>,
        request: Box<dyn AnyRequest>,
    ) -> Result<Outcome, PipelineError> {
        let body = request
            .body()
            .map_err(|error| PipelineError::Invalid(error.to_string()))?;
        let fingerprint =
            asked.unwrap_or_else(|| Fingerprint::of_canonical(request.kind(), body.as_str()));
        let (reply, answer) = oneshot::channel();
        let job = Job::new(tenant_id, key, fingerprint, request, body, reply);
        let sender = &self.senders[self.shard_of(tenant_id)];
        sender.send(job).await.map_err(|_| PipelineError::Stopped)?;
        // A shard that stops without reading its queue (aborted, or a
        // panic) drops the jobs it holds, and their answers with them; a job
        // that entered the queue as its reader went away would wait for
        // good, the queue kept alive by this very handle. The queue's
        // closing ends the wait.
        tokio::select! {
            biased;
            answer = answer => answer.map_err(|_| PipelineError::Stopped)?,
            () = sender.closed() => Err(PipelineError::Stopped),
        }
    }

    fn shard_of(&self, tenant_id: TenantId) -> usize {
        shard_of(tenant_id, self.senders.len())
    }

    /// Stops the shards where they are, as a killed process stops: each at
    /// its next await (between deciding and appending, inside an append,
    /// before answering). What a committed append wrote stays; nothing in
    /// flight is answered (its submitter gets [`PipelineError::Stopped`]).
    /// The simulation's crash; a server shuts down with
    /// [`shutdown`](Self::shutdown).
    pub fn abort(&self) {
        let handles = match self.handles.lock() {
            Ok(handles) => handles,
            Err(poisoned) => poisoned.into_inner(),
        };
        for handle in handles.iter() {
            handle.abort();
        }
    }

    /// Stops taking requests, answers those already queued, and waits for
    /// the shards to finish.
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        let handles: Vec<JoinHandle<()>> = match self.handles.lock() {
            Ok(mut handles) => handles.drain(..).collect(),
            Err(poisoned) => poisoned.into_inner().drain(..).collect(),
        };
        for handle in handles {
            let _ = handle.await;
        }
    }
}
