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
    _db: TestDatabase,
}

async fn spawn_app(admin_token: Option<&str>) -> TestApp {
    let db = TestDatabase::new().await;
    let store = db.store().clone();
    let api_key = store.create_tenant("acme").await.unwrap().api_key;
    let bus = CommandBus::start(
        store.clone(),
        BusConfig::default(),
        Arc::new(Metrics::default()),
    );
    let state = AppState::new(store, bus, HttpConfig::new(admin_token, BODY_LIMIT_BYTES));
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
        _db: db,
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
    let issued = app
        .client
        .post(format!(
            "{}/v1/tenants/{}/api-keys",
            app.base,
            body["tenant_id"].as_str().unwrap()
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(issued.status(), StatusCode::CREATED);
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
