//! What a shard expects of its tenants: their chain heads and aggregates,
//! read on first use (an aggregate from its snapshot, then the events after
//! it), kept across batches, snapshotted as they grow and forgotten when
//! another writer moved the tenant on.

use super::queue::Job;
use super::{store_failure, PipelineError, Shard};
use crate::pipeline::request::{Loaded, Target};
use aggregates::TenantId;
use eventstore::{AggregateKey, StoreError};
use std::collections::{HashMap, HashSet};

/// Aggregates a shard keeps in memory before it forgets half of them.
const AGGREGATES_CACHED_MAX: usize = 100_000;

/// An aggregate is snapshotted each time its version crosses a multiple of this.
const SNAPSHOT_INTERVAL: i64 = 100;

impl Shard {
    /// Makes sure every job's tenant head is known; answers jobs of unknown
    /// tenants. `None` when the heads could not be read (all answered).
    pub(super) async fn load_heads(&mut self, jobs: Vec<Job>) -> Option<Vec<Job>> {
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

    /// Loads every target not in the cache: snapshot, then events after it,
    /// for every tenant of the batch in one statement.
    pub(super) async fn load_aggregates(&mut self, jobs: &[Job]) -> Result<(), StoreError> {
        let mut missing: HashMap<(TenantId, AggregateKey), Target> = HashMap::new();
        for job in jobs {
            for target in job.request.targets() {
                let key = (job.tenant_id, target.key.clone());
                if !self.cached.contains_key(&key) {
                    missing.entry(key).or_insert(target);
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let keys: Vec<(TenantId, &AggregateKey)> = missing
            .keys()
            .map(|(tenant_id, key)| (*tenant_id, key))
            .collect();
        let mut histories = self.store.load_tenant_histories(&keys).await?;
        for (key, target) in missing {
            let history = histories.remove(&key).unwrap_or_default();
            let loaded =
                crate::pipeline::load::fold_history(&self.store, key.0, &target, history).await?;
            self.cached.insert(key, loaded);
        }
        Ok(())
    }

    /// Moves a batch's new states into the cache (where later batches build
    /// on them) and returns the snapshots due once it commits.
    pub(super) fn keep_staged(
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
    pub(super) fn snapshot(
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
    pub(super) fn forget_tenant(&mut self, tenant_id: TenantId) {
        self.heads.remove(&tenant_id);
        self.cached.retain(|(tenant, _), _| *tenant != tenant_id);
    }
}
