//! The HTTP skeleton on a real socket: authentication, the Idempotency-Key
//! header, body limits, the error envelope, tenants, health, metrics and the
//! OpenAPI document.

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

#[tokio::test]
async fn requests_without_a_valid_api_key_are_refused_with_401() {
    // Proves: no key and a wrong key both answer 401 in the envelope, and
    // nothing is appended.
    let app = spawn_app(None).await;
    let missing = app
        .add("c")
        .header("idempotency-key", "k")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    error_of(missing, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let wrong_key = app
        .api_key
        .replace(&app.api_key[app.api_key.len() - 6..], "000000");
    let wrong = app
        .add("c")
        .bearer_auth(wrong_key)
        .header("idempotency-key", "k")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(wrong, StatusCode::UNAUTHORIZED, "unauthorized").await["error"]["message"],
        "unknown API key"
    );
    let not_bearer = app
        .add("c")
        .header("authorization", "Basic abc")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    error_of(not_bearer, StatusCode::UNAUTHORIZED, "unauthorized").await;
    let (events,): (i64,) = sqlx::query_as("SELECT count(*) FROM events")
        .fetch_one(app.db.store().pool())
        .await
        .unwrap();
    assert_eq!(events, 0);
}

#[tokio::test]
async fn mutating_requests_need_a_valid_idempotency_key() {
    // Proves: a missing or invalid Idempotency-Key answers 400 with its own code.
    let app = spawn_app(None).await;
    let missing = app
        .add("c")
        .bearer_auth(&app.api_key)
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    error_of(missing, StatusCode::BAD_REQUEST, "missing_idempotency_key").await;
    for bad in ["", &"k".repeat(256)] {
        let response = app
            .add("c")
            .bearer_auth(&app.api_key)
            .header("idempotency-key", bad)
            .json(&json!({"amount": 1}))
            .send()
            .await
            .unwrap();
        error_of(response, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused_with_413() {
    // Proves: a body over the configured limit answers 413 in the envelope.
    let app = spawn_app(None).await;
    let padding = "x".repeat(BODY_LIMIT_BYTES + 1);
    let response = app
        .add("c")
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "k")
        .header("content-type", "application/json")
        .body(format!("{{\"amount\": 1, \"padding\": \"{padding}\"}}"))
        .send()
        .await
        .unwrap();
    let body = error_of(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
    assert_eq!(body["error"]["details"]["limit_bytes"], BODY_LIMIT_BYTES);
}

#[tokio::test]
async fn malformed_bodies_answer_400_naming_the_problem() {
    // Proves: bad JSON, an unknown field, a wrong type and a missing content
    // type each answer 400 with a message naming the field or problem.
    let app = spawn_app(None).await;
    let cases = [
        ("{\"amount\": ", "EOF"),
        ("{\"amount\": 1, \"bogus\": 2}", "unknown field `bogus`"),
        ("{\"amount\": \"one\"}", "amount"),
        ("{\"amount\": 1.5}", "amount"),
        ("{\"amount\": 99999999999999999999}", "amount"),
    ];
    for (index, (body, expected)) in cases.into_iter().enumerate() {
        let response = app
            .add("c")
            .bearer_auth(&app.api_key)
            .header("idempotency-key", format!("k{index}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let error = error_of(response, StatusCode::BAD_REQUEST, "invalid_request").await;
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains(expected), "{body}: {message}");
    }
    let no_content_type = app
        .add("c")
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "plain")
        .body("{\"amount\": 1}")
        .send()
        .await
        .unwrap();
    let body = error_of(no_content_type, StatusCode::BAD_REQUEST, "invalid_request").await;
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type: application/json"),
        "{body}"
    );
}

#[tokio::test]
async fn a_replayed_key_answers_the_original_status_and_body_marked_replayed() {
    // Proves: a repeat returns the first answer verbatim with
    // Idempotent-Replayed: true; another body under the key answers 422.
    let app = spawn_app(None).await;
    let send = |amount: i64| {
        app.add("c")
            .bearer_auth(&app.api_key)
            .header("idempotency-key", "order-1")
            .json(&json!({"amount": amount}))
            .send()
    };
    let first = send(2).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first_body: Value = first.json().await.unwrap();
    assert_eq!(first_body["total"], 2);
    assert_eq!(first_body["tenant_seq"], 1);

    let again = send(2).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first_body);

    let reused = send(3).await.unwrap();
    error_of(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
}

#[tokio::test]
async fn tenants_are_created_with_the_admin_token_only() {
    // Proves: POST /v1/tenants needs the admin token (a tenant key is
    // refused), answers the id and a working key, and is idempotent by key.
    let app = spawn_app(Some(ADMIN_TOKEN)).await;
    let create = |token: &str, key: &str, name: &str| {
        app.client
            .post(format!("{}/v1/tenants", app.base))
            .bearer_auth(token)
            .header("idempotency-key", key)
            .json(&json!({"name": name}))
            .send()
    };
    let refused = create(&app.api_key, "t1", "beta").await.unwrap();
    assert_eq!(
        error_of(refused, StatusCode::UNAUTHORIZED, "unauthorized").await["error"]["message"],
        "this route needs the admin token"
    );
    let created = create(ADMIN_TOKEN, "t1", "beta").await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let body: Value = created.json().await.unwrap();
    let api_key = body["api_key"].as_str().unwrap().to_string();
    assert_eq!(body["name"], "beta");

    let replayed = create(ADMIN_TOKEN, "t1", "beta").await.unwrap();
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let replayed: Value = replayed.json().await.unwrap();
    assert_eq!(replayed["tenant_id"], body["tenant_id"]);
    assert_eq!(replayed["api_key"], Value::Null);
    let reused = create(ADMIN_TOKEN, "t1", "gamma").await.unwrap();
    error_of(
        reused,
        StatusCode::UNPROCESSABLE_ENTITY,
        "idempotency_key_reused",
    )
    .await;
    let empty = create(ADMIN_TOKEN, "t2", " ").await.unwrap();
    error_of(empty, StatusCode::BAD_REQUEST, "invalid_request").await;

    // The new tenant's key works on a tenant route.
    let added = app
        .add("c")
        .bearer_auth(&api_key)
        .header("idempotency-key", "k")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
    let issue = |key: Option<&'static str>| {
        let request = app
            .client
            .post(format!(
                "{}/v1/tenants/{}/api-keys",
                app.base,
                body["tenant_id"].as_str().unwrap()
            ))
            .bearer_auth(ADMIN_TOKEN);
        match key {
            Some(key) => request.header("idempotency-key", key),
            None => request,
        }
        .send()
    };
    let missing = issue(None).await.unwrap();
    error_of(missing, StatusCode::BAD_REQUEST, "missing_idempotency_key").await;
    let malformed = app
        .client
        .post(format!("{}/v1/tenants/not-a-uuid/api-keys", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", "rotate-0")
        .send()
        .await
        .unwrap();
    let malformed = error_of(malformed, StatusCode::BAD_REQUEST, "invalid_path_parameter").await;
    assert_eq!(malformed["error"]["details"]["value"], "not-a-uuid");
    let issued = issue(Some("rotate-1")).await.unwrap();
    assert_eq!(issued.status(), StatusCode::CREATED);
    let issued: Value = issued.json().await.unwrap();
    let second_key = issued["api_key"].as_str().unwrap().to_string();
    assert_ne!(second_key, api_key);
    let replayed = issue(Some("rotate-1")).await.unwrap();
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert_eq!(replayed.headers()["idempotent-replayed"], "true");
    let replayed: Value = replayed.json().await.unwrap();
    assert_eq!(replayed["api_key"], Value::Null);
    assert_eq!(replayed["tenant_id"], body["tenant_id"]);
    // Both issued keys work; the replay issued none.
    let (keys,): (i64,) = sqlx::query_as("SELECT count(*) FROM api_keys WHERE tenant_id = $1")
        .bind(uuid::Uuid::parse_str(body["tenant_id"].as_str().unwrap()).unwrap())
        .fetch_one(app.db.store().pool())
        .await
        .unwrap();
    assert_eq!(keys, 2);
    let added = app
        .add("c")
        .bearer_auth(&second_key)
        .header("idempotency-key", "k2")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(added.status(), StatusCode::OK);
}

#[tokio::test]
async fn without_an_admin_token_configured_admin_routes_are_closed() {
    // Proves: a server started without LEDGER_ADMIN_TOKEN creates no tenants.
    let app = spawn_app(None).await;
    let response = app
        .client
        .post(format!("{}/v1/tenants", app.base))
        .bearer_auth("anything")
        .header("idempotency-key", "t")
        .json(&json!({"name": "x"}))
        .send()
        .await
        .unwrap();
    error_of(response, StatusCode::UNAUTHORIZED, "unauthorized").await;
}

#[tokio::test]
async fn health_metrics_openapi_and_fallbacks_answer() {
    // Proves: /healthz checks the database, /metrics counts commands,
    // /openapi.json describes the routes, unknown routes and methods answer
    // in the envelope.
    let app = spawn_app(None).await;
    let health = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.json::<Value>().await.unwrap(),
        json!({"status": "ok"})
    );

    app.add("c")
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "m")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("ledger_commands_total{kind=\"add_to_counter\",status=\"200\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ledger_command_duration_seconds_count{kind=\"add_to_counter\"} 1"),
        "{metrics}"
    );

    let openapi: Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/v1/tenants",
        "/v1/tenants/{tenant_id}/api-keys",
        "/v1/tenants/{tenant_id}/api-keys/{key_id}/revoke",
        "/healthz",
        "/metrics",
    ] {
        assert!(
            openapi["paths"].get(path).is_some(),
            "{path} missing from {}",
            openapi["paths"]
        );
    }
    assert!(openapi["components"]["schemas"].get("ErrorBody").is_some());

    let unknown = app
        .client
        .get(format!("{}/v1/nothing", app.base))
        .send()
        .await
        .unwrap();
    error_of(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let wrong_method = app
        .client
        .delete(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    error_of(
        wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    )
    .await;
}

/// Polls `condition` every 10 ms until it holds, failing after 30 s with
/// `what` it waited for.
async fn wait_until<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !condition().await {
        assert!(
            std::time::Instant::now() < deadline,
            "waited 30 s for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_read_with_min_seq_answers_only_once_the_projection_passed_it() {
    // Proves: GET /v1/streams?min_seq=N that found the projection short of
    // N (its first look at the checkpoint is made to complete before the
    // projection applies N) waits, and answers with projection_seq N and the
    // stream written at N, applied after it looked; a read that did not wait
    // would answer projection_seq 0.
    let app = spawn_app_with(None, std::time::Duration::from_secs(60)).await;
    let written: Value = app
        .add("c")
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "k")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seq = written["tenant_seq"].as_i64().unwrap();
    // Hold the checkpoints so the read's first look at them waits in line.
    let locker = app.db.database().connect_pool(1).await.unwrap();
    let lock = "LOCK TABLE projection_checkpoints IN ACCESS EXCLUSIVE MODE";
    let mut held = locker.begin().await.unwrap();
    sqlx::query(lock).execute(&mut *held).await.unwrap();
    let request = app
        .client
        .get(format!("{}/v1/streams?min_seq={seq}", app.base))
        .bearer_auth(&app.api_key)
        .send();
    let pending = tokio::spawn(request);
    let pool = app.db.store().pool().clone();
    wait_until("the read to queue for the checkpoints", || {
        let pool = pool.clone();
        async move {
            let (waiting,): (i64,) = sqlx::query_as(
                "SELECT count(*) FROM pg_locks \
                 WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
                   AND relation = 'projection_checkpoints'::regclass AND NOT granted",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            waiting > 0
        }
    })
    .await;
    held.commit().await.unwrap();
    // Taking the lock again waits until the read's look (queued ahead) has
    // finished: it found checkpoint 0, as nothing has applied seq N yet.
    let mut again = locker.begin().await.unwrap();
    sqlx::query(lock).execute(&mut *again).await.unwrap();
    again.commit().await.unwrap();
    locker.close().await;
    // Nothing applies the projection but this call, made after that look.
    projections::rebuild::catch_up_live(&pool, &projections::stream_index::StreamIndex)
        .await
        .unwrap();
    let response = pending.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let page: Value = response.json().await.unwrap();
    assert_eq!(page["projection_seq"], seq);
    assert_eq!(page["streams"][0]["aggregate_id"], "c");
    assert_eq!(page["streams"][0]["last_tenant_seq"], seq);
    assert_eq!(page["next"], Value::Null);
}

#[tokio::test]
async fn a_read_with_min_seq_far_ahead_answers_503_after_the_bound() {
    // Proves: a min_seq the projection never reaches answers 503
    // projection_lagging with the projection's current seq, after the bound.
    let app = spawn_app_with(None, Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let response = app
        .client
        .get(format!("{}/v1/streams?min_seq=1000", app.base))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    let body = error_of(
        response,
        StatusCode::SERVICE_UNAVAILABLE,
        "projection_lagging",
    )
    .await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(
        body["error"]["details"],
        json!({"projection": "stream_index", "projection_seq": 0, "min_seq": 1000})
    );
    let bad = app
        .client
        .get(format!("{}/v1/streams?min_seq=abc", app.base))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert!(
        error_of(bad, StatusCode::BAD_REQUEST, "invalid_request").await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("min_seq")
    );
    let unknown = app
        .client
        .get(format!("{}/v1/streams?bogus=1", app.base))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .unwrap();
    assert!(
        error_of(unknown, StatusCode::BAD_REQUEST, "invalid_request").await["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bogus")
    );
}

#[tokio::test]
async fn projections_report_their_lag_to_the_admin_and_to_metrics() {
    // Proves: GET /v1/projections (admin only) and /metrics show checkpoint,
    // events behind and state, before and after the projection catches up;
    // /metrics as of the timer's latest refresh.
    let app = spawn_app(Some(ADMIN_TOKEN)).await;
    let (_stop_timer, timer_stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(commands::http::metrics::run_projection_metrics(
        app.state.clone(),
        Duration::from_millis(20),
        timer_stopped,
    ));
    for index in 0..3 {
        app.add(&format!("c{index}"))
            .bearer_auth(&app.api_key)
            .header("idempotency-key", format!("k{index}"))
            .json(&json!({"amount": 1}))
            .send()
            .await
            .unwrap();
    }
    let status = |token: &'static str| {
        app.client
            .get(format!("{}/v1/projections", app.base))
            .bearer_auth(token)
            .send()
    };
    error_of(
        status("wrong").await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let named = |list: &Value, name: &str| -> Value {
        list["projections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|projection| projection["name"] == name)
            .unwrap()
            .clone()
    };
    let before: Value = status(ADMIN_TOKEN).await.unwrap().json().await.unwrap();
    let names: Vec<&str> = before["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|projection| projection["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["journal", "quota", "stream_index", "subscriptions"]);
    let stream_index = &named(&before, "stream_index");
    assert_eq!(stream_index["name"], "stream_index");
    assert_eq!(stream_index["state"], "live");
    assert_eq!(stream_index["checkpoint"], 0);
    assert_eq!(stream_index["events_behind"], 3);
    assert!(stream_index["seconds_behind"].as_f64().unwrap() >= 0.0);
    let metrics = app.metrics_after_refresh().await;
    assert!(
        metrics.contains("ledger_projection_events_behind{projection=\"stream_index\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("ledger_projection_state{projection=\"stream_index\",state=\"live\"} 1"),
        "{metrics}"
    );

    projections::rebuild::catch_up_live(
        app.db.store().pool(),
        &projections::stream_index::StreamIndex,
    )
    .await
    .unwrap();
    let after: Value = status(ADMIN_TOKEN).await.unwrap().json().await.unwrap();
    let stream_index = named(&after, "stream_index");
    assert_eq!(stream_index["checkpoint"], 3);
    assert_eq!(stream_index["events_behind"], 0);
    assert_eq!(stream_index["seconds_behind"], 0.0);
    let metrics = app.metrics_after_refresh().await;
    assert!(
        metrics.contains("ledger_projection_checkpoint{projection=\"stream_index\"} 3"),
        "{metrics}"
    );
}

/// Log lines of the tests running on this thread: a test's server runs on
/// its current-thread runtime, so its log lines are written on its thread.
/// One subscriber for the whole binary (a default set per thread would let
/// a log statement first reached by another test be cached as disabled).
struct CapturedLog;

thread_local! {
    static THREAD_LOG: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes into the log of the thread it runs on.
struct ThreadLogWriter;

impl std::io::Write for ThreadLogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        THREAD_LOG.with(|log| log.borrow_mut().extend_from_slice(bytes));
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    /// Starts capturing this thread's warnings (from an empty log).
    fn start() -> Self {
        static SUBSCRIBER: std::sync::Once = std::sync::Once::new();
        SUBSCRIBER.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::WARN)
                .with_writer(|| ThreadLogWriter)
                .with_ansi(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber).unwrap();
        });
        THREAD_LOG.with(|log| log.borrow_mut().clear());
        Self
    }

    fn text(&self) -> String {
        THREAD_LOG.with(|log| String::from_utf8(log.borrow().clone()).unwrap())
    }
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

#[tokio::test]
async fn api_keys_are_listed_and_revoked_by_id_and_a_revoked_key_answers_401_at_once() {
    // Proves: issuing a key answers its id (replays too); the admin lists a
    // tenant's keys by id and hint, never a key; revoking answers 200 with
    // the time, the same again, 400/401/404 as documented (another tenant's
    // key is 404); the revoked key answers 401 on this server at once, the
    // key cache's clock unmoved, while the tenant's other key still works.
    let clock = TestInstant::new();
    let app = spawn_app_options(AppOptions {
        admin_token: Some(ADMIN_TOKEN),
        auth_clock: Some(clock.clock()),
        ..AppOptions::default()
    })
    .await;
    let openapi = app.openapi().await;
    let create = || {
        app.client
            .post(format!("{}/v1/tenants", app.base))
            .bearer_auth(ADMIN_TOKEN)
            .header("idempotency-key", "create-beta")
            .json(&json!({"name": "beta"}))
            .send()
    };
    let created = create().await.unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.unwrap();
    assert_eq!(
        assert_documented(&openapi, "post", "/v1/tenants", 201, &created),
        "TenantCreated"
    );
    let tenant = created["tenant_id"].as_str().unwrap().to_string();
    let first_key = created["api_key"].as_str().unwrap().to_string();
    let first_id = created["key_id"].as_str().unwrap().to_string();
    let replayed: Value = create().await.unwrap().json().await.unwrap();
    assert_eq!(
        replayed,
        json!({"tenant_id": tenant, "name": "beta", "api_key": null, "key_id": first_id})
    );
    let issue = || {
        app.client
            .post(format!("{}/v1/tenants/{tenant}/api-keys", app.base))
            .bearer_auth(ADMIN_TOKEN)
            .header("idempotency-key", "rotate-1")
            .send()
    };
    let issued: Value = issue().await.unwrap().json().await.unwrap();
    let issue_path = "/v1/tenants/{tenant_id}/api-keys";
    assert_eq!(
        assert_documented(&openapi, "post", issue_path, 201, &issued),
        "ApiKeyIssued"
    );
    let second_key = issued["api_key"].as_str().unwrap().to_string();
    let second_id = issued["key_id"].as_str().unwrap().to_string();
    assert_ne!(second_id, first_id);
    let replayed: Value = issue().await.unwrap().json().await.unwrap();
    assert_eq!(
        replayed,
        json!({"tenant_id": tenant, "api_key": null, "key_id": second_id})
    );
    // The first key works, and is cached from now on.
    assert_eq!(app.add_with(&first_key, "use-1").await, StatusCode::OK);

    let listed = app.keys(&tenant).await;
    assert_eq!(listed.status(), StatusCode::OK);
    let listed: Value = listed.json().await.unwrap();
    assert_eq!(
        assert_documented(&openapi, "get", issue_path, 200, &listed),
        "ApiKeyList"
    );
    assert_eq!(listed["tenant_id"], tenant.as_str());
    let keys = listed["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    for (key, id, text) in [
        (&keys[0], &second_id, &second_key),
        (&keys[1], &first_id, &first_key),
    ] {
        let mut fields: Vec<&str> = key
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["created_at", "hint", "key_id", "last_used_at", "revoked_at"]
        );
        assert_eq!(key["key_id"], id.as_str());
        assert_eq!(key["hint"], &text[text.len() - 4..]);
        assert_eq!(key["revoked_at"], Value::Null);
        assert!(
            !listed.to_string().contains(&text[36..]),
            "a key's secret was listed"
        );
    }
    assert_eq!(
        keys[0]["last_used_at"],
        Value::Null,
        "the second key was never used"
    );
    assert!(keys[1]["last_used_at"].is_string(), "{listed}");

    let revoke_path = "/v1/tenants/{tenant_id}/api-keys/{key_id}/revoke";
    let missing = app.revoke(&tenant, &first_id, None).await;
    assert_eq!(
        error_of(missing, StatusCode::BAD_REQUEST, "missing_idempotency_key").await["error"]
            ["code"],
        "missing_idempotency_key"
    );
    let malformed = error_of(
        app.revoke(&tenant, "nope", Some("r")).await,
        StatusCode::BAD_REQUEST,
        "invalid_path_parameter",
    )
    .await;
    assert_eq!(malformed["error"]["code"], "invalid_path_parameter");
    assert_eq!(
        malformed["error"]["details"],
        json!({"parameter": "key_id", "value": "nope"})
    );
    let as_tenant = app
        .client
        .post(format!(
            "{}/v1/tenants/{tenant}/api-keys/{first_id}/revoke",
            app.base
        ))
        .bearer_auth(&second_key)
        .header("idempotency-key", "r")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(as_tenant, StatusCode::UNAUTHORIZED, "unauthorized").await["error"]["message"],
        "this route needs the admin token"
    );
    let acme = tenant_of(&app.api_key);
    let acme_key_id = app.keys(&acme).await.json::<Value>().await.unwrap()["keys"][0]["key_id"]
        .as_str()
        .unwrap()
        .to_string();
    for (tenant, key_id) in [
        (uuid::Uuid::now_v7().to_string(), first_id.clone()),
        (tenant.clone(), uuid::Uuid::now_v7().to_string()),
        (tenant.clone(), acme_key_id.clone()),
    ] {
        let unknown = app.revoke(&tenant, &key_id, Some("r")).await;
        assert_eq!(
            error_of(unknown, StatusCode::NOT_FOUND, "not_found").await["error"]["code"],
            "not_found"
        );
    }
    let unknown_tenant = app.keys(&uuid::Uuid::now_v7().to_string()).await;
    assert_eq!(
        error_of(unknown_tenant, StatusCode::NOT_FOUND, "not_found").await["error"]["code"],
        "not_found"
    );
    assert_eq!(
        app.add_with(&app.api_key, "acme-1").await,
        StatusCode::OK,
        "acme's key untouched"
    );

    let revoked = app.revoke(&tenant, &first_id, Some("revoke-1")).await;
    assert_eq!(revoked.status(), StatusCode::OK);
    let revoked: Value = revoked.json().await.unwrap();
    assert_eq!(
        assert_documented(&openapi, "post", revoke_path, 200, &revoked),
        "ApiKeyRevoked"
    );
    let revoked_at = revoked["revoked_at"].as_str().unwrap().to_string();
    assert_eq!(
        revoked,
        json!({"tenant_id": tenant, "key_id": first_id, "revoked_at": revoked_at})
    );
    let again = app.revoke(&tenant, &first_id, Some("revoke-2")).await;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap(), revoked);

    // The cache's clock has not moved: only the eviction explains the 401.
    let refused = app
        .add("c")
        .bearer_auth(&first_key)
        .header("idempotency-key", "use-2")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(refused, StatusCode::UNAUTHORIZED, "unauthorized").await["error"]["message"],
        "unknown API key"
    );
    assert_eq!(app.add_with(&second_key, "use-3").await, StatusCode::OK);
    let listed: Value = app.keys(&tenant).await.json().await.unwrap();
    assert_eq!(listed["keys"][1]["revoked_at"], revoked_at.as_str());
    assert_eq!(listed["keys"][0]["revoked_at"], Value::Null);
}

#[tokio::test]
async fn a_key_revoked_elsewhere_is_refused_once_announced_or_once_the_cache_lifetime_passes() {
    // Proves: a server listening for revocations refuses a key another
    // process revoked as soon as the announcement arrives, its cache clock
    // unmoved; a server that missed it keeps the cached key exactly until
    // AUTH_CACHE_TTL has passed, then refuses it.
    use commands::http::auth::{listen_for_revocations, AUTH_CACHE_TTL};
    let listening_clock = TestInstant::new();
    let deaf_clock = TestInstant::new();
    let listening = spawn_app_options(AppOptions {
        auth_clock: Some(listening_clock.clock()),
        ..AppOptions::default()
    })
    .await;
    let deaf = spawn_app_on(
        listening.db.clone(),
        listening.api_key.clone(),
        AppOptions {
            auth_clock: Some(deaf_clock.clock()),
            ..AppOptions::default()
        },
    )
    .await;
    let mut evictions = listening.state.auth.evictions();
    let (_stop_listener, listener_stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(listen_for_revocations(
        listening.db.store().clone(),
        listening.state.auth.clone(),
        listener_stopped,
    ));
    tokio::time::timeout(Duration::from_secs(10), evictions.changed())
        .await
        .expect("the revocation listener did not start listening within 10 s")
        .unwrap();
    let key = listening.api_key.clone();
    assert_eq!(listening.add_with(&key, "l-1").await, StatusCode::OK);
    assert_eq!(deaf.add_with(&key, "d-1").await, StatusCode::OK);

    // Another process (`ledger tenant revoke-key`, say) revokes the key.
    let store = listening.db.store();
    let tenant = eventstore::tenants::claimed_tenant(&key).unwrap();
    let key_id = store.api_keys(tenant).await.unwrap().unwrap()[0].key_id;
    store.revoke_api_key(tenant, key_id).await.unwrap().unwrap();
    tokio::time::timeout(Duration::from_secs(10), evictions.changed())
        .await
        .expect("the revocation was not announced to the listening server within 10 s")
        .unwrap();
    assert_eq!(
        listening.add_with(&key, "l-2").await,
        StatusCode::UNAUTHORIZED
    );

    assert_eq!(deaf.add_with(&key, "d-2").await, StatusCode::OK, "cached");
    deaf_clock.advance(AUTH_CACHE_TTL - Duration::from_millis(1));
    assert_eq!(
        deaf.add_with(&key, "d-3").await,
        StatusCode::OK,
        "still cached"
    );
    deaf_clock.advance(Duration::from_millis(1));
    assert_eq!(deaf.add_with(&key, "d-4").await, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn repeated_failed_authentications_from_one_address_are_answered_429_until_the_window_ends() {
    // Proves: every failed authentication (API key or admin token) is logged
    // with the client address and the reason, never the key or token; after
    // FAILED_AUTH_LIMIT failures within FAILED_AUTH_WINDOW the address is
    // answered 429 too_many_requests with Retry-After for every key it has
    // not verified lately (even a valid one) and every wrong token, without
    // asking the database (its keys table locked), until the window ends;
    // a key the server verified lately and the right admin token still
    // pass, so valid clients behind a shared address are not locked out;
    // another address is not held back.
    use commands::http::auth::{FAILED_AUTH_LIMIT, FAILED_AUTH_WINDOW};
    let log = CapturedLog::start();
    let clock = TestInstant::new();
    let app = spawn_app_options(AppOptions {
        admin_token: Some(ADMIN_TOKEN),
        auth_clock: Some(clock.clock()),
        ..AppOptions::default()
    })
    .await;
    let wrong_key = format!("{}{}", &app.api_key[..app.api_key.len() - 8], "0badf00d");
    let wrong_token = "not-the-admin-token-4711";
    let known = app.db.store().create_tenant("known").await.unwrap().api_key;
    let used = app
        .add("c")
        .bearer_auth(&known)
        .header("idempotency-key", "known-1")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), StatusCode::OK);
    for attempt in 0..FAILED_AUTH_LIMIT {
        let request = match attempt % 3 {
            0 => app.add("c").bearer_auth(&wrong_key),
            1 => app.add("c"),
            _ => app
                .client
                .get(format!("{}/v1/projections", app.base))
                .bearer_auth(wrong_token),
        };
        let response = request
            .header("idempotency-key", format!("k{attempt}"))
            .json(&json!({"amount": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }
    let text = log.text();
    assert_eq!(text.matches("authentication failed").count(), 20, "{text}");
    assert!(text.contains("client=127.0.0.1"), "{text}");
    assert!(
        text.contains(&format!(
            "reason=unknown API key tenant={}",
            tenant_of(&app.api_key)
        )),
        "{text}"
    );
    assert!(
        text.contains("reason=missing Authorization: Bearer <api key>"),
        "{text}"
    );
    assert!(
        text.contains("reason=this route needs the admin token"),
        "{text}"
    );
    assert!(text.contains("too many failed authentications"), "{text}");
    assert!(
        !text.contains("0badf00d") && !text.contains(&wrong_key[36..]),
        "a key was logged"
    );
    assert!(!text.contains(wrong_token), "a token was logged");

    // A lookup would now wait for the lock; a throttled request asks nothing.
    let mut lock = app.db.store().pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let throttled = tokio::time::timeout(
        Duration::from_secs(10),
        app.add("c")
            .bearer_auth(&app.api_key)
            .header("idempotency-key", "valid-1")
            .json(&json!({"amount": 1}))
            .send(),
    )
    .await
    .expect("a throttled request waited for the database")
    .unwrap();
    assert_eq!(throttled.headers()["retry-after"], "60");
    let body = error_of(
        throttled,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_requests",
    )
    .await;
    assert_eq!(body["error"]["code"], "too_many_requests");
    assert_eq!(body["error"]["details"], json!({"retry_after_s": 60}));
    let admin = tokio::time::timeout(
        Duration::from_secs(10),
        app.client
            .get(format!("{}/v1/projections", app.base))
            .bearer_auth(ADMIN_TOKEN)
            .send(),
    )
    .await
    .expect("an admin request waited")
    .unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
    let wrong_admin = app
        .client
        .get(format!("{}/v1/projections", app.base))
        .bearer_auth(wrong_token)
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_admin.status(), StatusCode::TOO_MANY_REQUESTS);
    let known_again = tokio::time::timeout(
        Duration::from_secs(10),
        app.add("c")
            .bearer_auth(&known)
            .header("idempotency-key", "known-2")
            .json(&json!({"amount": 1}))
            .send(),
    )
    .await
    .expect("a key verified lately waited for the database")
    .unwrap();
    assert_eq!(known_again.status(), StatusCode::OK);
    lock.rollback().await.unwrap();

    clock.advance(FAILED_AUTH_WINDOW - Duration::from_secs(1));
    let late = app
        .add("c")
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "valid-2")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(late.headers()["retry-after"], "1");
    let elsewhere = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap()
        .post(format!("{}/v1/test/counters/c/add", app.base))
        .bearer_auth(&app.api_key)
        .header("idempotency-key", "elsewhere-1")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        elsewhere.status(),
        StatusCode::OK,
        "another address is not throttled"
    );

    clock.advance(Duration::from_secs(1));
    assert_eq!(app.add_with(&app.api_key, "valid-3").await, StatusCode::OK);
    assert_eq!(
        app.add_with(&wrong_key, "wrong-again").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.add_with(&app.api_key, "valid-4").await,
        StatusCode::OK,
        "a new window"
    );
}

#[tokio::test]
async fn without_the_client_address_failures_are_logged_but_not_throttled() {
    // Proves: a router served without connection info (as one driven in
    // process) throttles no one: twice FAILED_AUTH_LIMIT failures all answer
    // 401, each logged with client=unknown, and the valid key still works.
    use commands::http::auth::FAILED_AUTH_LIMIT;
    let log = CapturedLog::start();
    let app = spawn_app_options(AppOptions {
        no_client_address: true,
        ..AppOptions::default()
    })
    .await;
    let wrong_key = format!("{}{}", &app.api_key[..app.api_key.len() - 8], "0badf00d");
    for attempt in 0..2 * FAILED_AUTH_LIMIT {
        let status = app.add_with(&wrong_key, &format!("k{attempt}")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "attempt {attempt}");
    }
    assert_eq!(app.add_with(&app.api_key, "valid").await, StatusCode::OK);
    let text = log.text();
    assert_eq!(text.matches("authentication failed").count(), 40, "{text}");
    assert_eq!(text.matches("client=unknown").count(), 40, "{text}");
}

#[tokio::test]
async fn metrics_scrapes_never_query_the_database_and_need_the_token_when_one_is_set() {
    // Proves: with a metrics token, /metrics answers 401 without it, with
    // another token or with the admin token; with it, the projection gauges
    // are there from the first scrape (computed before the server took a
    // connection); and 50 scrapes answer while the projection tables are
    // locked exclusively: no scrape queries them. Without a token /metrics
    // stays open.
    const METRICS_TOKEN: &str = "scrape-secret";
    let db = TestDatabase::new().await;
    projections::status::register(db.store().pool(), &commands::domains::projections())
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = commands::server::ServeConfig {
        http: HttpConfig::new(Some(ADMIN_TOKEN), BODY_LIMIT_BYTES)
            .with_metrics_token(Some(METRICS_TOKEN)),
        bus: BusConfig::default(),
        workers: false,
        plans: aggregates::plan::PlanCatalog::builtin(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let store = db.store().clone();
    let server = tokio::spawn(async move {
        commands::server::serve(
            store,
            listener,
            config,
            routes(),
            commands::domains::projections(),
            Vec::new(),
            async move {
                let _ = stopped.await;
            },
        )
        .await
        .unwrap();
    });
    let client = reqwest::Client::new();
    let scrape = |token: Option<&'static str>| {
        let request = client.get(format!("{base}/metrics"));
        match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
        .send()
    };
    for token in [None, Some("wrong"), Some(ADMIN_TOKEN)] {
        let refused = scrape(token).await.unwrap();
        assert_eq!(
            error_of(refused, StatusCode::UNAUTHORIZED, "unauthorized").await["error"]["code"],
            "unauthorized"
        );
    }
    let first = scrape(Some(METRICS_TOKEN)).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    let text = first.text().await.unwrap();
    assert!(
        text.contains("ledger_projection_state{projection=\"stream_index\",state=\"live\"} 1"),
        "{text}"
    );

    let mut lock = db.store().pool().begin().await.unwrap();
    sqlx::query(
        "LOCK TABLE projections, projection_checkpoints, chain_heads IN ACCESS EXCLUSIVE MODE",
    )
    .execute(&mut *lock)
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        for _ in 0..50 {
            assert_eq!(
                scrape(Some(METRICS_TOKEN)).await.unwrap().status(),
                StatusCode::OK
            );
        }
    })
    .await
    .expect("50 scrapes did not answer within 10 s with the projection tables locked");
    lock.rollback().await.unwrap();
    let _ = stop.send(());
    server.await.unwrap();

    let open = spawn_app(None).await;
    let scraped = open
        .client
        .get(format!("{}/metrics", open.base))
        .send()
        .await
        .unwrap();
    assert_eq!(scraped.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_route_that_authenticates_documents_its_statuses_and_the_429_of_throttling() {
    // Proves: /openapi.json is served as application/json, the same bytes
    // each time; the tenant and key routes and /metrics document exactly
    // the statuses they answer; every operation that authenticates
    // documents 429 in the error envelope with Retry-After, added to the
    // domain reason where it already had one; /healthz, which does not
    // authenticate, has none.
    let app = spawn_app(Some(ADMIN_TOKEN)).await;
    let fetch = || async {
        let response = app
            .client
            .get(format!("{}/openapi.json", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        response.bytes().await.unwrap()
    };
    let bytes = fetch().await;
    assert_eq!(fetch().await, bytes);
    let openapi: Value = serde_json::from_slice(&bytes).unwrap();
    let statuses = |method: &str, path: &str| -> Vec<String> {
        let responses = openapi["paths"][path][method]["responses"]
            .as_object()
            .unwrap_or_else(|| panic!("{method} {path} undocumented"));
        responses.keys().cloned().collect()
    };
    for (method, path, expected) in [
        (
            "post",
            "/v1/tenants",
            vec!["201", "400", "401", "408", "413", "422", "429", "503"],
        ),
        (
            "post",
            "/v1/tenants/{tenant_id}/api-keys",
            vec!["201", "400", "401", "404", "408", "429", "503"],
        ),
        (
            "get",
            "/v1/tenants/{tenant_id}/api-keys",
            vec!["200", "400", "401", "404", "408", "429"],
        ),
        (
            "post",
            "/v1/tenants/{tenant_id}/api-keys/{key_id}/revoke",
            vec!["200", "400", "401", "404", "408", "429", "503"],
        ),
        ("get", "/metrics", vec!["200", "401", "408", "429"]),
        ("get", "/healthz", vec!["200", "408", "503"]),
    ] {
        assert_eq!(statuses(method, path), expected, "{method} {path}");
    }
    let mut open = Vec::new();
    for (path, item) in openapi["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if operation["security"].as_array().is_none_or(Vec::is_empty) {
                open.push(format!("{method} {path}"));
                continue;
            }
            let throttled = &operation["responses"]["429"];
            assert_eq!(
                throttled["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path}"
            );
            assert!(
                throttled["description"]
                    .as_str()
                    .unwrap()
                    .contains("too_many_requests"),
                "{method} {path}: {throttled}"
            );
        }
    }
    assert_eq!(
        open,
        ["get /healthz"],
        "every other operation authenticates"
    );
    let consume = &openapi["paths"]["/v1/quota/{quota}/consume"]["post"]["responses"]["429"];
    assert!(
        consume["description"]
            .as_str()
            .unwrap()
            .starts_with("Not enough quota"),
        "{consume}"
    );
    assert!(
        openapi["paths"]["/v1/tenants"]["post"]["responses"]["429"]["headers"]
            .get("Retry-After")
            .is_some()
    );
    assert!(openapi["components"]["securitySchemes"]
        .get("metrics_token")
        .is_some());
}

/// The stream index, refusing one tenant's event at one seq while armed.
struct FailingStreamIndex {
    failing: std::sync::Mutex<Option<(aggregates::TenantId, i64)>>,
}

#[async_trait::async_trait]
impl projections::Projection for FailingStreamIndex {
    fn name(&self) -> &'static str {
        projections::stream_index::StreamIndex.name()
    }
    fn version(&self) -> i32 {
        projections::stream_index::StreamIndex.version()
    }
    fn tables(&self) -> &'static [&'static str] {
        projections::stream_index::StreamIndex.tables()
    }
    async fn apply(
        &self,
        connection: &mut sqlx::PgConnection,
        events: &[&eventstore::StoredEvent],
    ) -> Result<(), projections::ApplyError> {
        let failing = *self.failing.lock().unwrap();
        if let Some((tenant_id, tenant_seq)) = failing {
            if events
                .iter()
                .any(|event| event.tenant_id == tenant_id && event.tenant_seq == tenant_seq)
            {
                return Err(projections::ApplyError::Event {
                    tenant_seq,
                    message: "injected failure".into(),
                });
            }
        }
        projections::stream_index::StreamIndex
            .apply(connection, events)
            .await
    }
}

#[tokio::test]
async fn a_projection_that_cannot_apply_an_event_shows_failed_until_it_recovers() {
    // Proves: when the workers' projection cannot apply one tenant's event,
    // GET /v1/projections (and /metrics) show it `failed` with an error
    // naming that tenant and seq, the other tenant's reads are served, the
    // failing tenant's answer 503; once the event applies, the workers
    // (retrying by themselves) bring it back to `live` with no error and
    // nothing behind. (The state is recorded by the worker loop, which has
    // no single step: the test waits for each state, with a deadline.)
    let failing = Arc::new(FailingStreamIndex {
        failing: std::sync::Mutex::new(None),
    });
    let app = spawn_app_serving(
        Some(ADMIN_TOKEN),
        std::time::Duration::from_millis(200),
        vec![failing.clone() as Arc<dyn projections::Projection>],
    )
    .await;
    let store = app.db.store().clone();
    let acme = store.authenticate(&app.api_key).await.unwrap().unwrap();
    let beta = store.create_tenant("beta").await.unwrap();
    *failing.failing.lock().unwrap() = Some((acme, 1));
    for api_key in [&app.api_key, &beta.api_key] {
        let added = app
            .add("c")
            .bearer_auth(api_key)
            .header("idempotency-key", "k")
            .json(&json!({"amount": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(added.status(), StatusCode::OK);
    }
    let stream_index = || async {
        let list: Value = app
            .client
            .get(format!("{}/v1/projections", app.base))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(list["projections"].as_array().unwrap().len(), 1, "{list}");
        list["projections"][0].clone()
    };
    // The timer's single step, then a scrape.
    let metrics = || async {
        commands::http::metrics::refresh_projection_metrics(&app.state).await;
        app.metrics().await
    };
    let streams = |api_key: String| {
        app.client
            .get(format!("{}/v1/streams?min_seq=1", app.base))
            .bearer_auth(api_key)
            .send()
    };

    let workers = projections::Workers::start_registered(
        &store,
        vec![failing.clone() as Arc<dyn projections::Projection>],
        Vec::new(),
    )
    .await
    .unwrap();
    wait_until("stream_index to show failed", || async {
        stream_index().await["state"] == "failed"
    })
    .await;
    // Both tenants were in the first batch: beta was applied, acme held back.
    let failed = stream_index().await;
    assert_eq!(
        failed["error"],
        format!("projection stream_index, tenant {acme}: event at tenant_seq 1: injected failure")
    );
    assert_eq!(
        (
            failed["checkpoint"].clone(),
            failed["events_behind"].clone()
        ),
        (json!(1), json!(1))
    );
    let text = metrics().await;
    assert!(
        text.contains("ledger_projection_state{projection=\"stream_index\",state=\"failed\"} 1"),
        "{text}"
    );
    assert_eq!(
        streams(beta.api_key.clone()).await.unwrap().status(),
        StatusCode::OK
    );
    let held_back = error_of(
        streams(app.api_key.clone()).await.unwrap(),
        StatusCode::SERVICE_UNAVAILABLE,
        "projection_lagging",
    )
    .await;
    assert_eq!(held_back["error"]["details"]["projection_seq"], 0);

    *failing.failing.lock().unwrap() = None;
    wait_until("stream_index to recover to live", || async {
        stream_index().await["state"] == "live"
    })
    .await;
    let live = stream_index().await;
    assert_eq!(live["error"], Value::Null);
    assert_eq!(
        (live["checkpoint"].clone(), live["events_behind"].clone()),
        (json!(2), json!(0))
    );
    let text = metrics().await;
    assert!(
        text.contains("ledger_projection_state{projection=\"stream_index\",state=\"live\"} 1"),
        "{text}"
    );
    let page: Value = streams(app.api_key.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["streams"][0]["aggregate_id"], "c");
    workers.stop().await;
}
