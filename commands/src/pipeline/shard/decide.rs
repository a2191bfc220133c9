//! Deciding a batch: pure. Each job is decided, in order, against the
//! states left by the jobs before it in the batch, then the shard's cache,
//! and pushed on its tenant's append; nothing here reads the database or a
//! clock, so the shard does its I/O before and after.

use super::queue::Job;
use crate::pipeline::request::{
    accepted_body, error_body, record_request, Decider, Loaded, Refusal, Reply, StateView, Touched,
};
use crate::pipeline::Outcome;
use crate::pipeline::PipelineError;
use aggregates::rules::Rules;
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use eventstore::{AggregateKey, AppendedEvent, ChainHead, CommandWrite, NewEvent, TenantBatch};
use std::collections::HashMap;
use std::sync::Arc;

/// A request decided in a batch, waiting for the append.
pub(super) struct Decided {
    pub(super) job: Job,
    /// Its answer once the batch commits.
    pub(super) outcome: Outcome,
}

/// What deciding a batch of jobs came to.
pub(super) struct BatchDecision {
    /// One append per tenant, in the order the tenants first appear.
    pub(super) batches: Vec<TenantBatch>,
    /// The aggregates' states once the batch commits.
    pub(super) staged: HashMap<(TenantId, AggregateKey), Loaded>,
    /// Jobs accepted or rejected, in order, each pushed on its batch.
    pub(super) decided: Vec<Decided>,
    /// Jobs whose decision failed (a defect, or stale facts), with why; nothing
    /// of theirs is in the batches.
    pub(super) failed: Vec<(Job, PipelineError)>,
}

/// One job's decision.
enum JobDecision {
    /// Accepted or rejected and pushed on its batch, with the aggregates it
    /// changed (none when rejected).
    Pushed(Decided, Vec<Touched>),
    /// Failed internally, with why.
    Failed(Job, PipelineError),
}

/// Decides `jobs` in order against the `cached` states and the expected
/// `heads`, stamping each at `now` or its tenant's head time if later, into
/// one append per tenant, to be appended by `deadline` (else decided
/// again: `eventstore::closing`).
pub(super) fn decide_batch(
    jobs: Vec<Job>,
    heads: &HashMap<TenantId, ChainHead>,
    cached: &HashMap<(TenantId, AggregateKey), Loaded>,
    (now, rules, deadline): (DateTime<Utc>, Rules, std::time::Instant),
) -> BatchDecision {
    let mut batches: Vec<TenantBatch> = Vec::new();
    let mut batch_of: HashMap<TenantId, usize> = HashMap::new();
    let mut staged: HashMap<(TenantId, AggregateKey), Loaded> = HashMap::new();
    let mut decided: Vec<Decided> = Vec::with_capacity(jobs.len());
    let mut failed: Vec<(Job, PipelineError)> = Vec::new();
    for job in jobs {
        let index = *batch_of.entry(job.tenant_id).or_insert_with(|| {
            // A tenant without a head was answered by load_heads.
            let head = heads
                .get(&job.tenant_id)
                .copied()
                .unwrap_or_else(|| ChainHead::genesis(job.tenant_id));
            batches.push(TenantBatch::new(head).within(deadline));
            batches.len() - 1
        });
        let view = StateView {
            staged: &staged,
            cached,
        };
        match decide_job(job, &mut batches[index], view, (now, rules)) {
            JobDecision::Pushed(done, touched) => {
                for touched in touched {
                    staged.insert(
                        (done.job.tenant_id, touched.key),
                        Loaded {
                            state: touched.state,
                            version: touched.version,
                        },
                    );
                }
                decided.push(done);
            }
            JobDecision::Failed(job, message) => failed.push((job, message)),
        }
    }
    BatchDecision {
        batches,
        staged,
        decided,
        failed,
    }
}

/// Decides `job` against `view` and pushes it on its tenant's `batch`.
fn decide_job(
    job: Job,
    batch: &mut TenantBatch,
    view: StateView<'_>,
    (now, rules): (DateTime<Utc>, Rules),
) -> JobDecision {
    let at = batch.head().stamp(now);
    let mut decider =
        Decider::new(job.tenant_id, &job.key, at, job.request.kind(), view).under(rules);
    let decision = job.request.decide(&mut decider);
    let (touched, indexed) = decider.into_parts();
    let (status, events) = match recorded(&job, &decision, &touched, rules) {
        Ok(recorded) => recorded,
        Err(message) => return JobDecision::Failed(job, message),
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
    let outcome = |appended: &[AppendedEvent], tenant_seq| body(&decision, appended, tenant_seq);
    match batch.push(write, outcome) {
        Ok(pushed) => {
            let touched = if decision.is_ok() {
                touched
            } else {
                Vec::new()
            };
            let outcome = Outcome {
                status,
                body: Arc::new(pushed.outcome),
                tenant_seq: pushed.tenant_seq,
                replayed: false,
            };
            JobDecision::Pushed(Decided { job, outcome }, touched)
        }
        Err(error) => {
            tracing::error!(kind = job.request.kind(), %error, "request produced unstorable events");
            let message = error.to_string();
            JobDecision::Failed(job, PipelineError::Internal(message))
        }
    }
}

/// The status and events a decision records: an accepted request's events
/// with the request recorded on the first, none for a rejection. An error
/// (a defect, answered 500 and not recorded) when the request cannot be
/// recorded or its decision failed internally.
fn recorded(
    job: &Job,
    decision: &Result<Reply, Refusal>,
    touched: &[Touched],
    rules: Rules,
) -> Result<(u16, Vec<NewEvent>), PipelineError> {
    match decision {
        Ok(reply) => {
            let mut events: Vec<_> = touched
                .iter()
                .flat_map(|touched| touched.events.iter().cloned())
                .collect();
            match record_request(&mut events, job.request.kind(), &job.body, rules) {
                Ok(()) => Ok((reply.status, events)),
                Err(refusal) => {
                    let message = format!("{refusal:?}");
                    tracing::error!(kind = job.request.kind(), %message, "request not recorded");
                    Err(PipelineError::Internal(message))
                }
            }
        }
        Err(Refusal::Rejected { kind, .. }) => Ok((
            crate::http::error::rejection_status(*kind).as_u16(),
            Vec::new(),
        )),
        Err(Refusal::Internal(message)) => {
            tracing::error!(kind = job.request.kind(), %message, "request failed");
            Err(PipelineError::Internal(message.clone()))
        }
        Err(Refusal::Stale(message)) => Err(PipelineError::Stale(message.clone())),
        Err(Refusal::NotDue(not_due)) => Err(PipelineError::NotDue(not_due.clone())),
    }
}

/// The answer body a decision records for its key, given the events
/// appended and the tenant_seq reached.
fn body(
    decision: &Result<Reply, Refusal>,
    appended: &[AppendedEvent],
    tenant_seq: i64,
) -> serde_json::Value {
    match decision {
        Ok(reply) => accepted_body(reply, appended, tenant_seq),
        Err(Refusal::Rejected {
            code,
            message,
            details,
            ..
        }) => error_body(code, message, details.clone()),
        Err(Refusal::Internal(_) | Refusal::Stale(_) | Refusal::NotDue(_)) => {
            serde_json::Value::Null
        }
    }
}
