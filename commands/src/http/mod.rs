//! The HTTP API: one file per resource, each with its own `router()`, merged
//! here with the shared layers (body limit, fallbacks, OpenAPI); and
//! `connections`, which serves it with bounds on every connection.

pub mod auth;
pub(crate) mod compensation;
pub mod connections;
pub mod error;
pub(crate) mod escrow;
pub mod extract;
pub(crate) mod grants;
mod health;
pub(crate) mod journal;
pub(crate) mod ledger;
pub mod limits;
pub mod metrics;
pub mod openapi;
pub(crate) mod payments;
mod projections;
pub(crate) mod quota;
pub mod read;
mod scheduler;
pub mod schema;
mod streams;
pub(crate) mod subscription;
mod tenants;

use crate::metrics::Metrics;
use crate::pipeline::CommandBus;
use auth::{AuthClock, Authenticator};
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Extension, Router};
use connections::ConnectionLimits;
use error::ApiError;
use eventstore::EventStore;
use extract::BodyLimit;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

/// Default limit of a request body.
pub const BODY_LIMIT_BYTES_DEFAULT: usize = 1024 * 1024;

/// What the routes share.
#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    pub bus: CommandBus,
    pub metrics: Arc<Metrics>,
    /// Verified API keys and failed attempts of this process.
    pub auth: Arc<Authenticator>,
    pub config: Arc<HttpConfig>,
    /// Bumped when this process's projection workers commit a batch.
    pub progress: watch::Receiver<u64>,
    /// Every `min_seq` wait of the process, served by one reader.
    pub checkpoints: Arc<::projections::read::CheckpointWatch>,
    /// Concurrent `min_seq` reads, bounded per tenant.
    pub waiters: Arc<limits::TenantLimiter>,
    /// Concurrent replays, bounded per tenant and in all.
    pub replays: Arc<limits::TenantLimiter>,
    /// The replays' own pool ([`limits::REPLAYS_MAX_DEFAULT`] connections
    /// by default, each statement bounded by [`REPLAY_TIMEOUT`]),
    /// so replays never take the connections commands and reads need.
    pub replay_pool: sqlx::PgPool,
    /// Where reads of the read tables go: a streaming replica (`serve
    /// --read-database-url`), or the primary's pool. Commands, idempotency
    /// and the scheduler stay on the primary.
    pub read_pool: sqlx::PgPool,
    /// Whether `read_pool` is a replica's (`with_read_pool`).
    pub reads_replica: bool,
    /// The projections this server reads and reports on.
    pub projections: Arc<[Arc<dyn ::projections::Projection>]>,
    /// The process managers whose state and lag the status routes show
    /// beside the projections'.
    pub process_managers: Arc<[&'static str]>,
    /// The plans tenants may subscribe to.
    pub plans: Arc<aggregates::plan::PlanCatalog>,
}

impl AppState {
    /// Whether `key` has no recorded answer in the tenant yet. A check a
    /// route makes before its request reaches the pipeline, added after a
    /// key was first answered (a newer build, newer rules), is made only
    /// then: the key's retry gets its recorded answer, as every retry does.
    pub async fn unanswered(
        &self,
        tenant_id: aggregates::TenantId,
        key: &eventstore::IdempotencyKey,
    ) -> Result<bool, error::ApiError> {
        Ok(self
            .store
            .idempotency_record(tenant_id, key)
            .await?
            .is_none())
    }

    /// The answer recorded under `key` when its record was made for one of
    /// `accepts` (the same request asked again), replayed; `None` when the
    /// key has no record, or one of another request. For a route that
    /// cannot build its request any more (what it resolves the body with
    /// moved: a plan left the catalog) and would refuse a retry its first
    /// attempt was answered.
    pub async fn answered(
        &self,
        tenant_id: aggregates::TenantId,
        key: &eventstore::IdempotencyKey,
        accepts: &[eventstore::Fingerprint],
    ) -> Result<Option<crate::pipeline::Outcome>, error::ApiError> {
        let record = self.store.idempotency_record(tenant_id, key).await?;
        Ok(record
            .filter(|record| accepts.contains(&record.fingerprint))
            .map(|record| crate::pipeline::Outcome {
                replayed: true,
                ..crate::pipeline::Outcome::recorded(&record)
            }))
    }
}

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// blake3 of `LEDGER_ADMIN_TOKEN`; admin routes answer 401 without one.
    pub admin_token_digest: Option<blake3::Hash>,
    /// blake3 of `LEDGER_METRICS_TOKEN`; when set, `/metrics` needs it.
    pub metrics_token_digest: Option<blake3::Hash>,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Longest a read with `min_seq` waits for its projection.
    pub read_wait: Duration,
    /// Concurrent reads with `min_seq` per tenant; beyond, 429.
    pub waiters_per_tenant_max: usize,
    /// Concurrent replays per tenant; beyond, 429.
    pub replays_per_tenant_max: usize,
    /// Concurrent replays in all (the replay pool's size); beyond, 429.
    pub replays_max: usize,
    /// Failed authentications a client address may make within
    /// [`auth::FAILED_AUTH_WINDOW`]; beyond, 429 until the window ends.
    pub failed_auth_limit: u32,
    /// Timeouts and the limit of HTTP connections.
    pub connections: ConnectionLimits,
}

/// Longest a replay over HTTP may run (its statements and in all), below
/// the default request timeout (30 s) so that it answers before the
/// connection is cut, and frees its places when its client has gone.
pub const REPLAY_TIMEOUT: Duration = Duration::from_secs(25);

impl HttpConfig {
    pub fn new(admin_token: Option<&str>, body_limit_bytes: usize) -> Self {
        Self {
            admin_token_digest: token_digest(admin_token),
            metrics_token_digest: None,
            body_limit_bytes,
            read_wait: ::projections::read::MIN_SEQ_WAIT_DEFAULT,
            waiters_per_tenant_max: limits::WAITERS_PER_TENANT_MAX_DEFAULT,
            replays_per_tenant_max: limits::REPLAYS_PER_TENANT_MAX_DEFAULT,
            replays_max: limits::REPLAYS_MAX_DEFAULT,
            failed_auth_limit: auth::FAILED_AUTH_LIMIT,
            connections: ConnectionLimits::default(),
        }
    }

    /// The same settings with `/metrics` guarded by `token` (open when
    /// `None` or empty).
    pub fn with_metrics_token(mut self, token: Option<&str>) -> Self {
        self.metrics_token_digest = token_digest(token);
        self
    }
}

/// Only a token's digest is kept; an empty token is none.
fn token_digest(token: Option<&str>) -> Option<blake3::Hash> {
    token
        .filter(|token| !token.is_empty())
        .map(|token| blake3::hash(token.as_bytes()))
}

impl AppState {
    /// State for the routes: `progress` from this process's workers (a
    /// receiver whose sender is gone when they run elsewhere; reads then poll).
    pub fn new(
        store: EventStore,
        bus: CommandBus,
        config: HttpConfig,
        progress: watch::Receiver<u64>,
        projections: Vec<Arc<dyn ::projections::Projection>>,
    ) -> Self {
        let replay_options = store.pool().connect_options().as_ref().clone().options([(
            "statement_timeout",
            format!("{}ms", REPLAY_TIMEOUT.as_millis()),
        )]);
        let replay_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(u32::try_from(config.replays_max.max(1)).unwrap_or(u32::MAX))
            .acquire_timeout(Duration::from_secs(5))
            .test_before_acquire(false)
            .connect_lazy_with(replay_options);
        Self {
            checkpoints: ::projections::read::CheckpointWatch::new(
                store.pool().clone(),
                progress.clone(),
            ),
            waiters: limits::TenantLimiter::new(
                "reads waiting for min_seq",
                config.waiters_per_tenant_max,
                usize::MAX,
            ),
            replays: limits::TenantLimiter::new(
                "replays",
                config.replays_per_tenant_max,
                config.replays_max,
            ),
            replay_pool,
            read_pool: store.pool().clone(),
            reads_replica: false,
            store,
            metrics: bus.metrics().clone(),
            bus,
            auth: Arc::new(Authenticator::default().with_failure_limit(config.failed_auth_limit)),
            config: Arc::new(config),
            progress,
            projections: projections.into(),
            process_managers: Arc::from([]),
            plans: Arc::new(aggregates::plan::PlanCatalog::builtin()),
        }
    }

    /// The same state reading the read tables from `pool` (a streaming
    /// replica): `min_seq` waits on the replica's own checkpoints, so a
    /// read answers only once the replica has replayed the write.
    pub fn with_read_pool(mut self, pool: sqlx::PgPool) -> Self {
        self.checkpoints =
            ::projections::read::CheckpointWatch::new(pool.clone(), self.progress.clone());
        self.read_pool = pool;
        self.reads_replica = true;
        self
    }

    /// How far the replica reads go to is behind the primary, in seconds
    /// (`projections::read::replica_lag`); `None` when reads go to the
    /// primary (no replica, or a replica URL naming the primary's own
    /// database).
    pub async fn replica_lag(&self) -> Result<Option<f64>, ::projections::read::ReplicaLagError> {
        if !self.reads_replica {
            return Ok(None);
        }
        ::projections::read::replica_lag(self.store.pool(), &self.read_pool).await
    }

    /// The same state with another plan catalog.
    pub fn with_plans(mut self, plans: aggregates::plan::PlanCatalog) -> Self {
        self.plans = Arc::new(plans);
        self
    }

    /// The same state with the key cache and the failure throttle reading
    /// `clock` (tests move it instead of sleeping).
    pub fn with_auth_clock(mut self, clock: AuthClock) -> Self {
        self.auth =
            Arc::new(Authenticator::new(clock).with_failure_limit(self.config.failed_auth_limit));
        self
    }

    /// The same state showing the process managers `names` in the status
    /// routes.
    pub fn with_process_managers(mut self, names: Vec<&'static str>) -> Self {
        self.process_managers = names.into();
        self
    }

    /// Names of the projections and the process managers.
    pub fn projection_names(&self) -> Vec<&'static str> {
        self.projections
            .iter()
            .map(|projection| projection.name())
            .chain(self.process_managers.iter().copied())
            .collect()
    }
}

/// Every route of the crate, with its OpenAPI description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(health::router())
        .merge(metrics::router())
        .merge(tenants::router())
        .merge(projections::router())
        .merge(streams::router())
        .merge(scheduler::router())
        .merge(domain_routes())
}

/// Every domain's routes, with its OpenAPI tags.
fn domain_routes() -> OpenApiRouter<AppState> {
    let mut routes = OpenApiRouter::new();
    for domain in crate::domains::domains() {
        let mut domain_routes = (domain.routes)();
        let tags = domain_routes
            .get_openapi_mut()
            .tags
            .get_or_insert_with(Vec::new);
        for (name, description) in &domain.tags {
            tags.push(
                utoipa::openapi::tag::TagBuilder::new()
                    .name(*name)
                    .description(Some(*description))
                    .build(),
            );
        }
        routes = routes.merge(domain_routes);
    }
    routes
}

/// The application: `routes` (this crate's, possibly merged with routes of
/// other crates), `/openapi.json`, fallbacks and shared layers.
pub fn app(routes: OpenApiRouter<AppState>, state: AppState) -> Router {
    let body_limit_bytes = state.config.body_limit_bytes;
    let (router, api) = routes.split_for_parts();
    let document = openapi::Document::serialize(&api, &state.plans.ids());
    router
        .route(
            "/openapi.json",
            get(move || std::future::ready(document.response())),
        )
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .layer(Extension(BodyLimit(body_limit_bytes)))
        .with_state(state)
}

/// Submits `resolved` (the request a route resolved the body to, or why
/// it resolves to none), fingerprinted by `asked` (the route's name for
/// what the client asked), so a retry gets the first answer though what it
/// was resolved with changed between the two (a plan that left the
/// catalog is not looked up again for a key answered for the same body).
/// A key answered by an older build, which fingerprinted the resolved
/// request instead, is answered when the request resolves as it did then.
pub(crate) async fn submit_resolved<R: crate::pipeline::Request>(
    state: &AppState,
    tenant_id: aggregates::TenantId,
    key: eventstore::IdempotencyKey,
    asked: &serde_json::Value,
    resolved: Result<R, error::ApiError>,
) -> Result<axum::response::Response, error::ApiError> {
    use crate::pipeline::{AnyRequest, PipelineError};
    use eventstore::Fingerprint;
    let fingerprint = |fingerprint: Result<Fingerprint, eventstore::StoreError>| {
        fingerprint.map_err(|error| error::ApiError::Internal(error.to_string()))
    };
    let of_asked = fingerprint(Fingerprint::of(R::KIND, asked))?;
    let request = match resolved {
        Ok(request) => request,
        Err(error) => {
            return match state.answered(tenant_id, &key, &[of_asked]).await? {
                Some(outcome) => Ok(error::outcome_response(outcome)),
                None => Err(error),
            }
        }
    };
    let body = request
        .body()
        .map_err(|error| error::ApiError::Internal(error.to_string()))?;
    let of_request = Fingerprint::of_canonical(R::KIND, body.as_str());
    match state
        .bus
        .execute_asked(tenant_id, key.clone(), asked, request)
        .await
    {
        Err(PipelineError::KeyReused) => {
            match state.answered(tenant_id, &key, &[of_request]).await? {
                Some(outcome) => Ok(error::outcome_response(outcome)),
                None => Err(PipelineError::KeyReused.into()),
            }
        }
        outcome => Ok(error::outcome_response(outcome?)),
    }
}
