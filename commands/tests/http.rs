//! The HTTP skeleton on a real socket: authentication, the Idempotency-Key
//! header, body limits, the error envelope, tenants, health, metrics and the
//! OpenAPI document.
//!
//! The tests are in `http/`, one file per theme; the test app and the
//! helpers they share are here.

#[path = "connections/mod.rs"]
mod connections;
mod support;

use axum::extract::{Path, State};
use axum::response::Response;
use commands::http::auth::AuthClock;
use commands::http::error::{outcome_response, ApiError};
use commands::http::extract::{ApiJson, IdempotencyKeyHeader, Tenant};
use commands::http::{app, routes, AppState, HttpConfig};
use commands::{BusConfig, CommandBus, Metrics};
use eventstore::testing::TestDatabase;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::AddToCounter;
use utoipa_axum::router::OpenApiRouter;

#[path = "http/api_keys.rs"]
mod api_keys;
#[path = "http/health.rs"]
mod health;
#[path = "http/read_side.rs"]
mod read_side;
#[path = "http/replica.rs"]
mod replica;
#[path = "http/requests.rs"]
mod requests;
#[path = "http/tenants.rs"]
mod tenants;
#[path = "http/throttling.rs"]
mod throttling;

const ADMIN_TOKEN: &str = "admin-secret";

const BODY_LIMIT_BYTES: usize = 4 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    amount: i64,
}

/// A mutating route on the test aggregate, built only from the real
/// extractors and the pipeline.
async fn add_to_counter(
    State(state): State<AppState>,
    Tenant(tenant_id): Tenant,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    Path(counter): Path<String>,
    ApiJson(body): ApiJson<AddBody>,
) -> Result<Response, ApiError> {
    let outcome = state
        .bus
        .execute(
            tenant_id,
            key,
            AddToCounter {
                counter,
                amount: body.amount,
            },
        )
        .await?;
    Ok(outcome_response(outcome))
}

struct TestApp {
    base: String,
    client: reqwest::Client,
    api_key: String,
    db: Arc<TestDatabase>,
    state: AppState,
}

/// How a test app runs.
#[derive(Default)]
struct AppOptions {
    admin_token: Option<&'static str>,
    /// Longest a `min_seq` read waits; 5 s when `None`.
    read_wait: Option<Duration>,
    /// The key cache's and the throttle's clock; the system's when `None`.
    auth_clock: Option<AuthClock>,
    /// Serve without the client address, as a router driven in process is.
    no_client_address: bool,
    /// The projections it lists and reads; the ledger's when `None`.
    catalog: Option<Vec<Arc<dyn projections::Projection>>>,
    /// Where its reads go, as a replica's (`serve --read-database-url`);
    /// the primary's pool when `None`.
    read_pool: Option<sqlx::PgPool>,
}

/// A monotonic clock the test moves by hand.
#[derive(Clone)]
struct TestInstant(Arc<Mutex<Instant>>);

impl TestInstant {
    fn new() -> Self {
        Self(Arc::new(Mutex::new(Instant::now())))
    }

    fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }

    fn clock(&self) -> AuthClock {
        let now = self.0.clone();
        AuthClock::from_fn(move || *now.lock().unwrap())
    }
}

async fn spawn_app(admin_token: Option<&'static str>) -> TestApp {
    spawn_app_with(admin_token, Duration::from_secs(5)).await
}

async fn spawn_app_with(admin_token: Option<&'static str>, read_wait: Duration) -> TestApp {
    spawn_app_options(AppOptions {
        admin_token,
        read_wait: Some(read_wait),
        ..AppOptions::default()
    })
    .await
}

/// The app on a fresh database with a tenant `acme`.
async fn spawn_app_options(options: AppOptions) -> TestApp {
    let db = Arc::new(TestDatabase::new().await);
    let api_key = db.store().create_tenant("acme").await.unwrap().api_key;
    spawn_app_on(db, api_key, options).await
}

/// [`spawn_app_with`], listing and reading `catalog` as its projections.
async fn spawn_app_serving(
    admin_token: Option<&'static str>,
    read_wait: Duration,
    catalog: Vec<Arc<dyn projections::Projection>>,
) -> TestApp {
    spawn_app_options(AppOptions {
        admin_token,
        read_wait: Some(read_wait),
        catalog: Some(catalog),
        ..AppOptions::default()
    })
    .await
}

/// The app without projection workers (tests drive projections by hand), on
/// `db`; several apps on one database stand for several server processes.
async fn spawn_app_on(db: Arc<TestDatabase>, api_key: String, options: AppOptions) -> TestApp {
    let store = db.store().clone();
    let bus = CommandBus::start(
        store.clone(),
        BusConfig::default(),
        Arc::new(Metrics::default()),
    );
    let mut config = HttpConfig::new(options.admin_token, BODY_LIMIT_BYTES);
    config.read_wait = options.read_wait.unwrap_or(Duration::from_secs(5));
    let catalog = options
        .catalog
        .unwrap_or_else(commands::domains::projections);
    projections::status::register(store.pool(), &catalog)
        .await
        .unwrap();
    let mut state = AppState::new(
        store,
        bus,
        config,
        tokio::sync::watch::channel(0).1,
        catalog,
    );
    if let Some(clock) = options.auth_clock {
        state = state.with_auth_clock(clock);
    }
    if let Some(pool) = options.read_pool {
        state = state.with_read_pool(pool);
    }
    let test_routes = OpenApiRouter::new().route(
        "/v1/test/counters/{counter}/add",
        axum::routing::post(add_to_counter),
    );
    let application = app(routes().merge(test_routes), state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    if options.no_client_address {
        tokio::spawn(async move { axum::serve(listener, application).await });
    } else {
        tokio::spawn(async move {
            axum::serve(
                listener,
                application.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
    }
    TestApp {
        base,
        client: support::app::http_client(),
        api_key,
        db,
        state,
    }
}

impl TestApp {
    fn add(&self, counter: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/test/counters/{counter}/add", self.base))
    }

    /// `/metrics` once the projection gauges' timer has refreshed them
    /// twice from now (the second refresh started after this call).
    async fn metrics_after_refresh(&self) -> String {
        let mut refreshed = self.state.metrics.projections_refreshed();
        refreshed.borrow_and_update();
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(10), refreshed.changed())
                .await
                .expect("the projection gauges were not refreshed within 10 s")
                .unwrap();
        }
        self.metrics().await
    }

    /// `/metrics` as it stands.
    async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Asserts that `response` is `status` with `code` in the error envelope (a
/// message and a details object); returns the body.
async fn error_of(response: reqwest::Response, status: StatusCode, code: &str) -> Value {
    let actual = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(actual, status, "expected {status} {code}: {body}");
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no error envelope: {body}"));
    assert_eq!(error["code"], code, "{body}");
    assert!(
        error["message"].is_string() && error["details"].is_object(),
        "{body}"
    );
    body
}

/// Asserts that `body`, answered by `method path` with `status`, has exactly
/// the fields of the schema `/openapi.json` documents for that answer (none
/// undocumented, every required one present); answers the schema's name.
fn assert_documented(
    openapi: &Value,
    method: &str,
    path: &str,
    status: u16,
    body: &Value,
) -> String {
    let reference = openapi["paths"][path][method]["responses"][status.to_string()]["content"]
        ["application/json"]["schema"]["$ref"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {path} {status}: no schema reference"));
    let name = reference
        .trim_start_matches("#/components/schemas/")
        .to_string();
    let schema = &openapi["components"]["schemas"][&name];
    let properties = schema["properties"].as_object().unwrap();
    let fields = body.as_object().unwrap();
    for field in fields.keys() {
        assert!(
            properties.contains_key(field),
            "{method} {path}: `{field}` not in {name}: {body}"
        );
    }
    for required in schema["required"].as_array().into_iter().flatten() {
        let required = required.as_str().unwrap();
        assert!(
            fields.contains_key(required),
            "{method} {path}: `{required}` of {name} missing: {body}"
        );
    }
    name
}

impl TestApp {
    async fn openapi(&self) -> Value {
        self.client
            .get(format!("{}/openapi.json", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// POST .../api-keys/{key_id}/revoke with the admin token.
    async fn revoke(
        &self,
        tenant: &str,
        key_id: &str,
        idempotency_key: Option<&str>,
    ) -> reqwest::Response {
        let request = self
            .client
            .post(format!(
                "{}/v1/tenants/{tenant}/api-keys/{key_id}/revoke",
                self.base
            ))
            .bearer_auth(ADMIN_TOKEN);
        match idempotency_key {
            Some(key) => request.header("idempotency-key", key),
            None => request,
        }
        .send()
        .await
        .unwrap()
    }

    async fn keys(&self, tenant: &str) -> reqwest::Response {
        self.client
            .get(format!("{}/v1/tenants/{tenant}/api-keys", self.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
    }

    /// Adds 1 to a counter with `api_key`; answers the status.
    async fn add_with(&self, api_key: &str, idempotency_key: &str) -> StatusCode {
        self.add("c")
            .bearer_auth(api_key)
            .header("idempotency-key", idempotency_key)
            .json(&json!({"amount": 1}))
            .send()
            .await
            .unwrap()
            .status()
    }
}

/// The tenant id an API key names.
fn tenant_of(api_key: &str) -> String {
    eventstore::tenants::claimed_tenant(api_key)
        .unwrap()
        .to_string()
}
