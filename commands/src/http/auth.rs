//! Authentication: the tenant behind an API key, the admin and metrics
//! tokens, the cache of verified keys, and the throttle on failed attempts.
//!
//! A verified key is trusted for [`AUTH_CACHE_TTL`] without asking the
//! database. Revoking a key evicts it from the revoking process's cache at
//! once, and other processes evict it when the revocation's notification
//! (`LISTEN ledger_api_keys`, see [`listen_for_revocations`]) arrives; the
//! cache lifetime bounds the wait should a notification be lost.
//!
//! Every failed authentication is logged with the client address and the
//! reason (never the key or token). A client address with
//! [`FAILED_AUTH_LIMIT`] failures within [`FAILED_AUTH_WINDOW`] is answered
//! 429 until the window ends, without a database query.

use super::error::ApiError;
use super::AppState;
use aggregates::TenantId;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use eventstore::{EventStore, KeyId};
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a verified API key is trusted without asking the database: the
/// longest a key revoked in another process may still be accepted here if
/// the revocation's notification is lost, and the resolution of a key's
/// `last_used_at` (written at most once per this period).
pub const AUTH_CACHE_TTL: Duration = Duration::from_secs(5);

/// Verified API keys remembered at most.
const AUTH_CACHE_ENTRIES_MAX: usize = 10_000;

/// Failed authentications a client address may make within
/// [`FAILED_AUTH_WINDOW`] before it is answered 429, by default
/// (`--failed-auth-limit`).
pub const FAILED_AUTH_LIMIT: u32 = 20;

/// The window failed authentications are counted in, from the first one.
pub const FAILED_AUTH_WINDOW: Duration = Duration::from_secs(60);

/// Client addresses whose failures are tracked at most; past it, the
/// oldest windows are forgotten first.
const FAILED_AUTH_ADDRESSES_MAX: usize = 10_000;

/// Pause before listening again after the revocation listener could not
/// connect.
const LISTEN_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Monotonic time for the key cache and the throttle, so tests can move it
/// by hand instead of sleeping.
#[derive(Clone)]
pub struct AuthClock(Arc<dyn Fn() -> Instant + Send + Sync>);

impl AuthClock {
    /// The system's monotonic clock.
    pub fn system() -> Self {
        Self(Arc::new(Instant::now))
    }

    /// A clock reading `now` (a test's settable time).
    pub fn from_fn(now: impl Fn() -> Instant + Send + Sync + 'static) -> Self {
        Self(Arc::new(now))
    }

    fn now(&self) -> Instant {
        (self.0)()
    }
}

impl Default for AuthClock {
    fn default() -> Self {
        Self::system()
    }
}

impl fmt::Debug for AuthClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthClock")
    }
}

/// Why a request failed to authenticate. The text is what the client is
/// told and what the log says; it never holds the key or token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("missing Authorization: Bearer <api key>")]
    MissingHeader,
    #[error("malformed Authorization header")]
    MalformedHeader,
    #[error("expected Authorization: Bearer <api key>")]
    NotBearer,
    #[error("unknown API key")]
    UnknownApiKey,
    #[error("admin routes are disabled: the server has no LEDGER_ADMIN_TOKEN")]
    AdminDisabled,
    #[error("this route needs the admin token")]
    NotAdminToken,
    #[error("/metrics needs the metrics token")]
    NotMetricsToken,
}

/// A verified key, as cached.
#[derive(Debug, Clone, Copy)]
struct CachedKey {
    tenant_id: TenantId,
    key_id: KeyId,
    verified: Instant,
}

#[derive(Default)]
struct KeyCache {
    /// By blake3 digest of the key: the key itself is never held.
    entries: HashMap<[u8; 32], CachedKey>,
    /// Bumped by every eviction, so a lookup that started before one does
    /// not cache what it read (it may be the key just revoked).
    generation: u64,
}

/// Failed authentications of one client address in the current window.
#[derive(Debug, Clone, Copy)]
struct FailureWindow {
    started: Instant,
    failures: u32,
}

/// What a failed authentication was for. API keys, and the admin and
/// metrics tokens, are throttled apart: a tenant's client failing with its
/// keys never locks the operator's tokens out (behind a proxy every client
/// shares one address), and a token guesser is throttled whatever the keys
/// do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    ApiKeys,
    Tokens,
}

/// Verified API keys and failed attempts, per process.
pub struct Authenticator {
    clock: AuthClock,
    /// Failures an address may make within a window before it is refused.
    failure_limit: u32,
    keys: Mutex<KeyCache>,
    failures: Mutex<HashMap<(IpAddr, Scope), FailureWindow>>,
    /// Bumped after every eviction from the key cache.
    evictions: watch::Sender<u64>,
}

impl Default for Authenticator {
    fn default() -> Self {
        Self::new(AuthClock::system())
    }
}

impl Authenticator {
    pub fn new(clock: AuthClock) -> Self {
        Self {
            clock,
            failure_limit: FAILED_AUTH_LIMIT,
            keys: Mutex::default(),
            failures: Mutex::default(),
            evictions: watch::channel(0).0,
        }
    }

    /// The same authenticator refusing an address after `limit` failures
    /// within a window (at least 1).
    pub fn with_failure_limit(mut self, limit: u32) -> Self {
        self.failure_limit = limit.max(1);
        self
    }

    /// Counts evictions from the key cache (a revocation, here or announced
    /// by another process; a reconnection of the listener), so that callers
    /// can wait for one.
    pub fn evictions(&self) -> watch::Receiver<u64> {
        self.evictions.subscribe()
    }

    fn keys(&self) -> MutexGuard<'_, KeyCache> {
        // A panic while holding the lock leaves plain data behind: keep it.
        self.keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn failures(&self) -> MutexGuard<'_, HashMap<(IpAddr, Scope), FailureWindow>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The tenant an API key authenticates, from the cache or the database
    /// (which then records the key's use); `None` for an unknown, malformed
    /// or revoked key.
    pub async fn tenant(
        &self,
        store: &EventStore,
        api_key: &str,
    ) -> Result<Option<TenantId>, ApiError> {
        if let Some(tenant_id) = self.cached(api_key) {
            return Ok(Some(tenant_id));
        }
        let digest = *blake3::hash(api_key.as_bytes()).as_bytes();
        let now = self.clock.now();
        let generation = self.keys().generation;
        let Some(used) = store.use_api_key(api_key, AUTH_CACHE_TTL).await? else {
            return Ok(None);
        };
        let mut keys = self.keys();
        if keys.generation == generation {
            if keys.entries.len() >= AUTH_CACHE_ENTRIES_MAX {
                keys.entries.retain(|_, cached| {
                    now.saturating_duration_since(cached.verified) < AUTH_CACHE_TTL
                });
                if keys.entries.len() >= AUTH_CACHE_ENTRIES_MAX {
                    keys.entries.clear();
                }
            }
            keys.entries.insert(
                digest,
                CachedKey {
                    tenant_id: used.tenant_id,
                    key_id: used.key_id,
                    verified: now,
                },
            );
        }
        Ok(Some(used.tenant_id))
    }

    /// Forgets a key (just revoked), so the next request with it asks the
    /// database.
    pub fn evict(&self, key_id: KeyId) {
        {
            let mut keys = self.keys();
            keys.generation = keys.generation.wrapping_add(1);
            keys.entries.retain(|_, cached| cached.key_id != key_id);
        }
        self.evictions
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// Forgets every key: revocations may have been missed.
    pub fn evict_all(&self) {
        {
            let mut keys = self.keys();
            keys.generation = keys.generation.wrapping_add(1);
            keys.entries.clear();
        }
        self.evictions
            .send_modify(|count| *count = count.wrapping_add(1));
    }

    /// The tenant of `api_key` when this process verified it within the
    /// cache lifetime; nothing is asked of the database.
    pub fn cached(&self, api_key: &str) -> Option<TenantId> {
        let digest = *blake3::hash(api_key.as_bytes()).as_bytes();
        let now = self.clock.now();
        self.keys()
            .entries
            .get(&digest)
            .filter(|cached| now.saturating_duration_since(cached.verified) < AUTH_CACHE_TTL)
            .map(|cached| cached.tenant_id)
    }

    /// 429 while `client` has used up its failed attempts in the current
    /// window; nothing is asked of the database.
    pub fn check_throttle(&self, scope: Scope, client: Option<IpAddr>) -> Result<(), ApiError> {
        let Some(client) = client.map(|client| (throttle_key(client), scope)) else {
            return Ok(());
        };
        let now = self.clock.now();
        let mut failures = self.failures();
        let Some(window) = failures.get(&client).copied() else {
            return Ok(());
        };
        let ends = window.started + FAILED_AUTH_WINDOW;
        if now >= ends {
            failures.remove(&client);
            return Ok(());
        }
        if window.failures >= self.failure_limit {
            let retry_after = ends - now;
            return Err(ApiError::TooManyRequests {
                message: format!(
                    "too many failed authentications from this address; retry in {} s",
                    retry_after.as_secs_f64().ceil()
                ),
                retry_after,
            });
        }
        Ok(())
    }

    /// Refuses a request of `client` for `failure`: 429 while the address
    /// is throttled (the failure neither logged nor counted again), else
    /// [`Authenticator::failed`].
    pub fn refuse(&self, scope: Scope, client: Option<IpAddr>, failure: AuthFailure) -> ApiError {
        self.check_throttle(scope, client)
            .err()
            .unwrap_or_else(|| self.failed(scope, client, failure, None))
    }

    /// Logs and counts a failed authentication of `client` (when known) and
    /// answers 401.
    pub fn failed(
        &self,
        scope: Scope,
        client: Option<IpAddr>,
        failure: AuthFailure,
        claimed_tenant: Option<TenantId>,
    ) -> ApiError {
        let shown = ClientAddress(client);
        match claimed_tenant {
            Some(tenant) => {
                tracing::warn!(client = %shown, reason = %failure, %tenant, "authentication failed")
            }
            None => tracing::warn!(client = %shown, reason = %failure, "authentication failed"),
        }
        if let Some(client) = client.map(throttle_key) {
            self.count_failure(scope, client);
        }
        ApiError::Unauthorized(failure.to_string())
    }

    fn count_failure(&self, scope: Scope, client: IpAddr) {
        let client = (client, scope);
        let now = self.clock.now();
        let mut failures = self.failures();
        if !failures.contains_key(&client) && failures.len() >= FAILED_AUTH_ADDRESSES_MAX {
            failures.retain(|_, window| now < window.started + FAILED_AUTH_WINDOW);
            if failures.len() >= FAILED_AUTH_ADDRESSES_MAX {
                let oldest = failures
                    .iter()
                    .min_by_key(|(_, window)| window.started)
                    .map(|(address, _)| *address);
                if let Some(oldest) = oldest {
                    failures.remove(&oldest);
                }
            }
        }
        let window = failures.entry(client).or_insert(FailureWindow {
            started: now,
            failures: 0,
        });
        if now >= window.started + FAILED_AUTH_WINDOW {
            *window = FailureWindow {
                started: now,
                failures: 0,
            };
        }
        window.failures = window.failures.saturating_add(1);
        if window.failures == self.failure_limit {
            let seconds = (window.started + FAILED_AUTH_WINDOW - now).as_secs();
            tracing::warn!(
                client = %ClientAddress(Some(client.0)),
                scope = ?scope,
                failures = self.failure_limit,
                seconds,
                "too many failed authentications: refusing this client address until its window ends"
            );
        }
    }
}

/// Failures are counted per IPv4 address, and per /64 for IPv6 (one host
/// commonly holds a whole /64, so counting single IPv6 addresses would let
/// it try without bound).
fn throttle_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let segments = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(
                    segments[0],
                    segments[1],
                    segments[2],
                    segments[3],
                    0,
                    0,
                    0,
                    0,
                ))
            }
        },
    }
}

/// A client address for the log: `unknown` when the server was not given
/// one.
struct ClientAddress(Option<IpAddr>);

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(address) => address.fmt(f),
            None => f.write_str("unknown"),
        }
    }
}

/// The client's address, when the server was started with connection info
/// (a router driven in process has none, and is not throttled).
fn client_address(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

fn bearer(parts: &Parts) -> Result<&str, AuthFailure> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or(AuthFailure::MissingHeader)?;
    let text = header.to_str().map_err(|_| AuthFailure::MalformedHeader)?;
    let (scheme, token) = text.split_once(' ').ok_or(AuthFailure::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthFailure::NotBearer);
    }
    Ok(token.trim())
}

/// The tenant authenticated by the request's API key.
#[derive(Debug, Clone, Copy)]
pub struct Tenant(pub TenantId);

impl FromRequestParts<AppState> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let client = client_address(parts);
        let token =
            bearer(parts).map_err(|failure| state.auth.refuse(Scope::ApiKeys, client, failure))?;
        // A key this process verified lately passes whatever its address
        // did: the throttle guards the database lookups of unknown keys, and
        // must not lock out the valid clients behind a shared address.
        if let Some(tenant_id) = state.auth.cached(token) {
            return Ok(Self(tenant_id));
        }
        state.auth.check_throttle(Scope::ApiKeys, client)?;
        match state.auth.tenant(&state.store, token).await? {
            Some(tenant_id) => Ok(Self(tenant_id)),
            None => Err(state.auth.failed(
                Scope::ApiKeys,
                client,
                AuthFailure::UnknownApiKey,
                eventstore::tenants::claimed_tenant(token),
            )),
        }
    }
}

/// Checks the request's bearer token against `expected` (a blake3 digest,
/// which compares in constant time); `None` means the route is closed.
fn check_token(
    parts: &Parts,
    state: &AppState,
    expected: Option<&blake3::Hash>,
    closed: AuthFailure,
    wrong: AuthFailure,
) -> Result<(), ApiError> {
    let client = client_address(parts);
    let refuse = |failure: AuthFailure| state.auth.refuse(Scope::Tokens, client, failure);
    let token = bearer(parts).map_err(refuse)?;
    // An address throttled for its token failures is refused whatever
    // token it sends: were the right one to pass, a guesser would tell it
    // by the answer and guess on at full speed (a token is an operator's
    // choice, maybe a weak one). Failures with API keys count apart, so
    // a tenant's failing client never locks the operator out.
    state.auth.check_throttle(Scope::Tokens, client)?;
    match expected {
        None => Err(refuse(closed)),
        Some(expected) if blake3::hash(token.as_bytes()) == *expected => Ok(()),
        Some(_) => Err(refuse(wrong)),
    }
}

/// A request carrying the admin token (`LEDGER_ADMIN_TOKEN`).
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let expected = state.config.admin_token_digest.as_ref();
        check_token(
            parts,
            state,
            expected,
            AuthFailure::AdminDisabled,
            AuthFailure::NotAdminToken,
        )?;
        Ok(Self)
    }
}

/// A request allowed to read `/metrics`: any, unless the server has a
/// metrics token (`LEDGER_METRICS_TOKEN`), which it must then carry.
#[derive(Debug, Clone, Copy)]
pub struct MetricsReader;

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(expected) = &state.config.metrics_token_digest {
            check_token(
                parts,
                state,
                Some(expected),
                AuthFailure::NotMetricsToken,
                AuthFailure::NotMetricsToken,
            )?;
        }
        Ok(Self)
    }
}

/// Evicts keys revoked by any process from this process's cache, as their
/// revocations are announced on [`eventstore::tenants::API_KEYS_CHANNEL`];
/// runs until `shutdown`. Whenever it (re)starts listening it evicts every
/// key, since revocations announced meanwhile were missed.
pub async fn listen_for_revocations(
    store: EventStore,
    auth: Arc<Authenticator>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let connected = match PgListener::connect_with(store.pool()).await {
            Ok(mut listener) => listener
                .listen(eventstore::tenants::API_KEYS_CHANNEL)
                .await
                .map(|()| listener),
            Err(error) => Err(error),
        };
        let mut listener = match connected {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for API key revocations; relying on the key cache lifetime");
                tokio::select! {
                    _ = shutdown.changed() => return,
                    () = tokio::time::sleep(LISTEN_RETRY_PAUSE) => continue,
                }
            }
        };
        auth.evict_all();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                received = listener.try_recv() => match received {
                    Ok(Some(notification)) => match notification.payload().parse::<KeyId>() {
                        Ok(key_id) => auth.evict(key_id),
                        Err(_) => auth.evict_all(),
                    },
                    // The connection was lost and is listening again: what
                    // was announced meanwhile is lost.
                    Ok(None) => auth.evict_all(),
                    Err(error) => {
                        tracing::warn!(%error, "lost the API key revocation listener");
                        break;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let host: Ipv6Addr = "2001:db8:1:2:aaaa:bbbb:cccc:dddd".parse().unwrap();
        let neighbour: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let elsewhere: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(
            throttle_key(IpAddr::V6(host)),
            throttle_key(IpAddr::V6(neighbour))
        );
        assert_ne!(
            throttle_key(IpAddr::V6(host)),
            throttle_key(IpAddr::V6(elsewhere))
        );
        let mapped = Ipv4Addr::new(192, 0, 2, 7).to_ipv6_mapped();
        assert_eq!(
            throttle_key(IpAddr::V6(mapped)),
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
        );
    }

    #[test]
    fn tracked_addresses_are_capped_and_the_oldest_window_is_forgotten_first() {
        let start = Instant::now();
        let now = Arc::new(Mutex::new(start));
        let clock = {
            let now = now.clone();
            AuthClock::from_fn(move || *now.lock().unwrap())
        };
        let auth = Authenticator::new(clock);
        let address =
            |index: usize| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + u32::try_from(index).unwrap()));
        for index in 0..FAILED_AUTH_ADDRESSES_MAX {
            *now.lock().unwrap() = start + Duration::from_micros(index as u64);
            for _ in 0..FAILED_AUTH_LIMIT {
                auth.count_failure(Scope::ApiKeys, address(index));
            }
        }
        assert_eq!(auth.failures().len(), FAILED_AUTH_ADDRESSES_MAX);
        assert!(auth
            .check_throttle(Scope::ApiKeys, Some(address(0)))
            .is_err());
        assert!(auth.check_throttle(Scope::Tokens, Some(address(0))).is_ok());
        auth.count_failure(Scope::ApiKeys, address(FAILED_AUTH_ADDRESSES_MAX));
        assert_eq!(auth.failures().len(), FAILED_AUTH_ADDRESSES_MAX);
        assert!(
            auth.check_throttle(Scope::ApiKeys, Some(address(0)))
                .is_ok(),
            "the oldest window was forgotten"
        );
        assert!(auth
            .check_throttle(Scope::ApiKeys, Some(address(1)))
            .is_err());
    }
}
