//! Answering a finished append: its jobs answered, retried or put back,
//! what the shard expected of moved tenants forgotten, and the snapshots it
//! made due written.

use super::decide::Decided;
use super::queue::{replay, Job};
use super::{store_failure, Appended, InFlight, PipelineError, Shard};
use crate::pipeline::{CrashPoint, Outcome};
use aggregates::TenantId;
use eventstore::{AppendError, AppendReport, IdempotencyKey};
use std::collections::HashSet;

impl Shard {
    /// Answers the commands of a finished append, or puts them back.
    pub(super) async fn complete(&mut self, appended: Appended) {
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
                // Committed for some tenant (another writer moved none or
                // only some of them).
                if report.moved.len() < batch.tenants.len() {
                    self.crash.stop_if_crashing(CrashPoint::Appended).await;
                }
                self.appended(batch, report)
            }
            Err(error) => self.not_appended(batch, error).await,
        }
    }

    /// The append ran: every tenant of the batch but those another writer
    /// moved was written; their jobs are answered, the others retried.
    fn appended(&mut self, batch: InFlight, report: AppendReport) {
        let moved: HashSet<TenantId> = report.moved.into_iter().collect();
        let late: HashSet<TenantId> = report.late.into_iter().collect();
        if !late.is_empty() {
            tracing::warn!(
                tenants = late.len(),
                "appends refused: the database took the head past their deadline"
            );
        }
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
        for Decided { mut job, outcome } in batch.decided {
            if moved.contains(&job.tenant_id) {
                job.late_in_a_row = if late.contains(&job.tenant_id) {
                    job.late_in_a_row + 1
                } else {
                    0
                };
                retry.push(job);
            } else {
                self.recent
                    .remember(job.tenant_id, job.key.clone(), job.fingerprint, &outcome);
                self.respond(job, Ok(outcome));
            }
        }
        self.retry(retry);
    }

    /// The append failed: its jobs are retried after a conflict, answered
    /// from their records when a key was already recorded, else answered
    /// with the failure.
    async fn not_appended(&mut self, batch: InFlight, error: AppendError) {
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
                    .map(|Decided { mut job, .. }| {
                        job.late_in_a_row = 0;
                        job
                    })
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

    /// An append task panicked or was cancelled: nobody can tell whether its
    /// batch committed, so its jobs are answered 500 (a retry with the same
    /// key gets the recorded outcome, if any) and its tenants forgotten.
    pub(super) fn append_task_failed(&mut self, error: tokio::task::JoinError) {
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

    /// Jobs whose decision failed (internally, or on stale facts): one
    /// whose key already has a record (an earlier submission completed) is
    /// answered from it, the others with their failure. When the records
    /// cannot be read, every job is answered that the database is out of
    /// reach: a key it may hold is never answered as unrecorded (a client
    /// told `Stale` resolves the request again under a new key).
    pub(super) async fn answer_failed(&mut self, failed: Vec<(Job, PipelineError)>) {
        let keys: Vec<(TenantId, IdempotencyKey)> = failed
            .iter()
            .map(|(job, _)| (job.tenant_id, job.key.clone()))
            .collect();
        let records = match self.store.idempotency_records(&keys).await {
            Ok(records) => records,
            Err(error) => {
                let failure = store_failure(error);
                for (job, _) in failed {
                    self.respond(job, Err(failure.clone()));
                }
                return;
            }
        };
        for (job, error) in failed {
            let record = records
                .iter()
                .find(|record| record.tenant_id == job.tenant_id && record.key == job.key);
            let answer = match record {
                Some(record) => replay(
                    &record.fingerprint,
                    &job.fingerprint,
                    &Outcome::recorded(record),
                ),
                None => Err(error),
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
                    let outcome = Outcome::recorded(record);
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
