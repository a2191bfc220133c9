//! Bounds on expensive work per tenant, so that one tenant's flood never
//! starves another: at most so many of a kind of work in flight per tenant,
//! and in all; beyond either bound the request answers 429
//! `too_many_requests` with `Retry-After` at once, holding nothing.

use super::error::ApiError;
use aggregates::TenantId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Default bound of concurrent `min_seq` reads per tenant.
pub const WAITERS_PER_TENANT_MAX_DEFAULT: usize = 64;

/// Default bound of concurrent replays (`GET /v1/replay`) per tenant.
pub const REPLAYS_PER_TENANT_MAX_DEFAULT: usize = 2;

/// Default bound of concurrent replays in all (each holds a connection of
/// the replay pool, which has this many).
pub const REPLAYS_MAX_DEFAULT: usize = 4;

/// What a refused request is told to wait before it tries again.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Work in flight per tenant, bounded per tenant and in all.
pub struct TenantLimiter {
    /// What the work is, for the refusal's message.
    work: &'static str,
    per_tenant_max: usize,
    total_max: usize,
    in_flight: Mutex<InFlight>,
}

#[derive(Default)]
struct InFlight {
    total: usize,
    tenants: HashMap<TenantId, usize>,
}

/// One unit of work in flight; dropping it frees its place.
pub struct Permit {
    limiter: Arc<TenantLimiter>,
    tenant_id: TenantId,
}

impl TenantLimiter {
    pub fn new(work: &'static str, per_tenant_max: usize, total_max: usize) -> Arc<Self> {
        Arc::new(Self {
            work,
            per_tenant_max: per_tenant_max.max(1),
            total_max: total_max.max(1),
            in_flight: Mutex::new(InFlight::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        // The counts stay consistent whatever panicked while holding it.
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for `tenant_id`'s work, or 429 when it has its bound in
    /// flight already, or everyone together has theirs.
    pub fn try_acquire(self: &Arc<Self>, tenant_id: TenantId) -> Result<Permit, ApiError> {
        let mut in_flight = self.lock();
        let mine = in_flight.tenants.get(&tenant_id).copied().unwrap_or(0);
        if mine >= self.per_tenant_max {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "this tenant has {} {} in flight, the most it may; retry shortly",
                    mine, self.work
                ),
                retry_after: RETRY_AFTER,
            });
        }
        if in_flight.total >= self.total_max {
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "the server has {} {} in flight, the most it takes; retry shortly",
                    in_flight.total, self.work
                ),
                retry_after: RETRY_AFTER,
            });
        }
        in_flight.total += 1;
        *in_flight.tenants.entry(tenant_id).or_insert(0) += 1;
        Ok(Permit {
            limiter: self.clone(),
            tenant_id,
        })
    }

    /// Work in flight for `tenant_id`.
    pub fn in_flight(&self, tenant_id: TenantId) -> usize {
        self.lock().tenants.get(&tenant_id).copied().unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut in_flight = self.limiter.lock();
        in_flight.total = in_flight.total.saturating_sub(1);
        if let Some(count) = in_flight.tenants.get_mut(&self.tenant_id) {
            *count -= 1;
            if *count == 0 {
                in_flight.tenants.remove(&self.tenant_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(n: u128) -> TenantId {
        TenantId::from_uuid(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_tenant_gets_its_bound_and_no_more_and_its_places_come_back() {
        let limiter = TenantLimiter::new("replays", 2, 10);
        let first = limiter.try_acquire(tenant(1)).unwrap();
        let _second = limiter.try_acquire(tenant(1)).unwrap();
        let refused = limiter.try_acquire(tenant(1)).map(|_| ()).unwrap_err();
        assert!(matches!(
            refused,
            ApiError::TooManyRequests { ref message, retry_after }
                if message == "this tenant has 2 replays in flight, the most it may; retry shortly"
                    && retry_after == RETRY_AFTER
        ));
        let _other = limiter.try_acquire(tenant(2)).unwrap();
        drop(first);
        assert_eq!(limiter.in_flight(tenant(1)), 1);
        assert!(limiter.try_acquire(tenant(1)).is_ok());
    }

    #[test]
    fn the_total_bound_holds_across_tenants() {
        let limiter = TenantLimiter::new("replays", 2, 3);
        let _held: Vec<Permit> = (1..=3)
            .map(|n| limiter.try_acquire(tenant(n)).unwrap())
            .collect();
        let refused = limiter.try_acquire(tenant(4)).map(|_| ()).unwrap_err();
        assert!(matches!(
            refused,
            ApiError::TooManyRequests { ref message, .. }
                if message == "the server has 3 replays in flight, the most it takes; retry shortly"
        ));
    }
}
