//! The HTTP skeleton on a real socket: authentication, the Idempotency-Key
//! header, body limits, the error envelope, tenants, health, metrics and the
//! OpenAPI document.

mod support;

use axum::extract::{Path, State};
use axum::response::Response;
use commands::http::error::{outcome_response, ApiError};
use commands::http::extract::{ApiJson, IdempotencyKeyHeader, Tenant};
use commands::http::{app, routes, AppState, HttpConfig};
use commands::{BusConfig, CommandBus, Metrics};
use eventstore::testing::TestDatabase;
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
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
    db: TestDatabase,
}

async fn spawn_app(admin_token: Option<&str>) -> TestApp {
    spawn_app_with(admin_token, std::time::Duration::from_secs(5)).await
}

/// The app without projection workers: tests drive projections by hand.
async fn spawn_app_with(admin_token: Option<&str>, read_wait: std::time::Duration) -> TestApp {
    spawn_app_serving(admin_token, read_wait, projections::catalog()).await
}

/// [`spawn_app_with`], listing and reading `catalog` as its projections.
async fn spawn_app_serving(
    admin_token: Option<&str>,
    read_wait: std::time::Duration,
    catalog: Vec<Arc<dyn projections::Projection>>,
) -> TestApp {
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let api_key = store.create_tenant("acme").await.unwrap().api_key;
    let bus = CommandBus::start(
        store.clone(),
        BusConfig::default(),
        Arc::new(Metrics::default()),
    );
    let mut config = HttpConfig::new(admin_token, BODY_LIMIT_BYTES);
    config.read_wait = read_wait;
    projections::status::register(store.pool(), &catalog)
        .await
        .unwrap();
    let state = AppState::new(
        store,
        bus,
        config,
        tokio::sync::watch::channel(0).1,
        catalog,
    );
    let test_routes = OpenApiRouter::new().route(
        "/v1/test/counters/{counter}/add",
        axum::routing::post(add_to_counter),
    );
    let application = app(routes().merge(test_routes), state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, application).await });
    TestApp {
        base,
        client: support::app::http_client(),
        api_key,
        db,
    }
}

impl TestApp {
    fn add(&self, counter: &str) -> reqwest::RequestBuilder {
        self.client
            .post(format!("{}/v1/test/counters/{counter}/add", self.base))
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
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    let app = spawn_app_with(None, std::time::Duration::from_millis(300)).await;
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
    // events behind and state, before and after the projection catches up.
    let app = spawn_app(Some(ADMIN_TOKEN)).await;
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
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
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
    let metrics = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ledger_projection_checkpoint{projection=\"stream_index\"} 3"),
        "{metrics}"
    );
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
    let metrics = || async {
        app.client
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
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
