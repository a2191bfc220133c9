//! The HTTP skeleton on a real socket: authentication, the Idempotency-Key
//! header, body limits, the error envelope, tenants, health, metrics and the
//! OpenAPI document.

#[path = "connections/mod.rs"]
mod connections;
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
    projections::status::register(store.pool(), &projections::catalog())
        .await
        .unwrap();
    let state = AppState::new(
        store,
        bus,
        config,
        tokio::sync::watch::channel(0).1,
        projections::catalog(),
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
        client: reqwest::Client::new(),
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

async fn error_of(response: reqwest::Response, status: StatusCode) -> Value {
    assert_eq!(response.status(), status);
    let body: Value = response.json().await.unwrap();
    let error = body
        .get("error")
        .unwrap_or_else(|| panic!("no error envelope: {body}"));
    assert!(
        error["code"].is_string() && error["message"].is_string() && error["details"].is_object(),
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
    assert_eq!(
        error_of(missing, StatusCode::UNAUTHORIZED).await["error"]["code"],
        "unauthorized"
    );
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
        error_of(wrong, StatusCode::UNAUTHORIZED).await["error"]["message"],
        "unknown API key"
    );
    let not_bearer = app
        .add("c")
        .header("authorization", "Basic abc")
        .json(&json!({"amount": 1}))
        .send()
        .await
        .unwrap();
    error_of(not_bearer, StatusCode::UNAUTHORIZED).await;
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
    assert_eq!(
        error_of(missing, StatusCode::BAD_REQUEST).await["error"]["code"],
        "missing_idempotency_key"
    );
    for bad in ["", &"k".repeat(256)] {
        let response = app
            .add("c")
            .bearer_auth(&app.api_key)
            .header("idempotency-key", bad)
            .json(&json!({"amount": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            error_of(response, StatusCode::BAD_REQUEST).await["error"]["code"],
            "invalid_idempotency_key"
        );
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
    let body = error_of(response, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(body["error"]["code"], "payload_too_large");
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
        let error = error_of(response, StatusCode::BAD_REQUEST).await;
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
    error_of(no_content_type, StatusCode::BAD_REQUEST).await;
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
    assert_eq!(
        error_of(reused, StatusCode::UNPROCESSABLE_ENTITY).await["error"]["code"],
        "idempotency_key_reused"
    );
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
        error_of(refused, StatusCode::UNAUTHORIZED).await["error"]["message"],
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
    error_of(reused, StatusCode::UNPROCESSABLE_ENTITY).await;
    let empty = create(ADMIN_TOKEN, "t2", " ").await.unwrap();
    error_of(empty, StatusCode::BAD_REQUEST).await;

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
    error_of(missing, StatusCode::BAD_REQUEST).await;
    let malformed = app
        .client
        .post(format!("{}/v1/tenants/not-a-uuid/api-keys", app.base))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", "rotate-0")
        .send()
        .await
        .unwrap();
    let malformed = error_of(malformed, StatusCode::BAD_REQUEST).await;
    assert_eq!(malformed["error"]["code"], "invalid_path_parameter");
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
    error_of(response, StatusCode::UNAUTHORIZED).await;
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
    assert_eq!(
        error_of(unknown, StatusCode::NOT_FOUND).await["error"]["code"],
        "not_found"
    );
    let wrong_method = app
        .client
        .delete(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_of(wrong_method, StatusCode::METHOD_NOT_ALLOWED).await["error"]["code"],
        "method_not_allowed"
    );
}

#[tokio::test]
async fn a_read_with_min_seq_answers_only_once_the_projection_passed_it() {
    // Proves: GET /v1/streams?min_seq=N waits for the projection; the answer
    // holds the stream written at seq N, applied after the request arrived.
    let app = spawn_app(None).await;
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
    let request = app
        .client
        .get(format!("{}/v1/streams?min_seq={seq}", app.base))
        .bearer_auth(&app.api_key)
        .send();
    let mut pending = tokio::spawn(request);
    // While nothing applies the projection, the read must still be waiting.
    let early = tokio::time::timeout(std::time::Duration::from_millis(300), &mut pending).await;
    assert!(
        early.is_err(),
        "the read answered before the projection passed min_seq"
    );
    // Nothing applies the projection but this call, made after the request.
    let store = app.db.store().clone();
    projections::rebuild::catch_up_live(store.pool(), &projections::stream_index::StreamIndex)
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
    let body = error_of(response, StatusCode::SERVICE_UNAVAILABLE).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
    assert_eq!(body["error"]["code"], "projection_lagging");
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
        error_of(bad, StatusCode::BAD_REQUEST).await["error"]["message"]
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
    error_of(unknown, StatusCode::BAD_REQUEST).await;
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
    error_of(status("wrong").await.unwrap(), StatusCode::UNAUTHORIZED).await;
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
