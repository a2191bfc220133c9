//! The HTTP API: one file per resource, each with its own `router()`, merged
//! here with the shared layers (body limit, fallbacks, OpenAPI); and
//! `connections`, which serves it with bounds on every connection.

pub mod connections;
pub mod error;
pub mod extract;
mod grants;
mod health;
mod journal;
mod metrics;
pub mod openapi;
mod projections;
mod quota;
pub mod read;
pub mod schema;
mod streams;
mod subscription;
mod tenants;

use crate::metrics::Metrics;
use crate::pipeline::CommandBus;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Extension, Json, Router};
use connections::ConnectionLimits;
use error::ApiError;
use eventstore::EventStore;
use extract::{AuthCache, BodyLimit};
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
    pub auth: Arc<AuthCache>,
    pub config: Arc<HttpConfig>,
    /// Bumped when this process's projection workers commit a batch.
    pub progress: watch::Receiver<u64>,
    /// The projections this server reads and reports on.
    pub projections: Arc<[Arc<dyn ::projections::Projection>]>,
    /// The plans tenants may subscribe to.
    pub plans: Arc<aggregates::plan::PlanCatalog>,
}

/// HTTP settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// blake3 of `LEDGER_ADMIN_TOKEN`; admin routes answer 401 without one.
    pub admin_token_digest: Option<blake3::Hash>,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// Longest a read with `min_seq` waits for its projection.
    pub read_wait: Duration,
    /// Timeouts and the limit of HTTP connections.
    pub connections: ConnectionLimits,
}

impl HttpConfig {
    pub fn new(admin_token: Option<&str>, body_limit_bytes: usize) -> Self {
        Self {
            admin_token_digest: admin_token
                .filter(|token| !token.is_empty())
                .map(|token| blake3::hash(token.as_bytes())),
            body_limit_bytes,
            read_wait: ::projections::read::MIN_SEQ_WAIT_DEFAULT,
            connections: ConnectionLimits::default(),
        }
    }
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
        Self {
            store,
            metrics: bus.metrics().clone(),
            bus,
            auth: Arc::new(AuthCache::default()),
            config: Arc::new(config),
            progress,
            projections: projections.into(),
            plans: Arc::new(aggregates::plan::PlanCatalog::builtin()),
        }
    }

    /// The same state with another plan catalog.
    pub fn with_plans(mut self, plans: aggregates::plan::PlanCatalog) -> Self {
        self.plans = Arc::new(plans);
        self
    }

    /// Names of the projections.
    pub fn projection_names(&self) -> Vec<&'static str> {
        self.projections
            .iter()
            .map(|projection| projection.name())
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
        .merge(subscription::router())
        .merge(grants::router())
        .merge(quota::router())
        .merge(journal::router())
}

/// The application: `routes` (this crate's, possibly merged with routes of
/// other crates), `/openapi.json`, fallbacks and shared layers.
pub fn app(routes: OpenApiRouter<AppState>, state: AppState) -> Router {
    let body_limit_bytes = state.config.body_limit_bytes;
    let (router, api) = routes.split_for_parts();
    let api = Arc::new(api);
    router
        .route(
            "/openapi.json",
            get(move || std::future::ready(Json(api.as_ref().clone()))),
        )
        .fallback(|| async { ApiError::NotFound("no such route".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(body_limit_bytes))
        .layer(Extension(BodyLimit(body_limit_bytes)))
        .with_state(state)
}
