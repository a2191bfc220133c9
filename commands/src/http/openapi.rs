//! The OpenAPI document, generated from the route annotations, and
//! `/openapi.json` serving it.

use super::error::{ApiError, ErrorBody, ErrorDetail};
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ledger",
        description = "Event-sourced, hash-chained ledger: subscriptions, grants and quota consumption."
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Security),
    tags(
        (name = "tenants", description = "Tenants and API keys (admin token)"),
        (name = "streams", description = "The tenant's event streams"),
        (name = "scheduler", description = "Work falling due at a time and what the scheduler did with it"),
        (name = "operations", description = "Health, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A tenant's API key"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The server's LEDGER_ADMIN_TOKEN"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "metrics_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The server's LEDGER_METRICS_TOKEN, when it has one"))
                    .build(),
            ),
        );
    }
}

/// What a route that authenticates may answer 429 for.
const THROTTLED: &str = "too_many_requests: too many failed authentications from this \
    address, or this tenant has the most reads waiting for min_seq (or replays) in flight \
    that it may; Retry-After gives the seconds to wait";

/// `/openapi.json`, serialized once when the application is built: the
/// document never changes while the server runs.
#[derive(Clone)]
pub struct Document(Result<Bytes, String>);

impl Document {
    /// The document with the answers every kind of route shares
    /// ([`add_shared_answers`]) and the plans of the served catalog
    /// (`plans`, the only values a `PlanId` takes), serialized.
    pub fn serialize(api: &utoipa::openapi::OpenApi, plans: &[String]) -> Self {
        Self(
            serde_json::to_value(api)
                .and_then(|mut document| {
                    add_shared_answers(&mut document);
                    if let Some(plan_id) = document
                        .pointer_mut("/components/schemas/PlanId")
                        .and_then(serde_json::Value::as_object_mut)
                    {
                        plan_id.insert("enum".into(), plans.into());
                    }
                    serde_json::to_vec(&document)
                })
                .map(Bytes::from)
                .map_err(|error| format!("cannot serialize the OpenAPI document: {error}")),
        )
    }

    /// The cached bytes (a cheap clone), or 500 if the document could not
    /// be serialized.
    pub fn response(&self) -> Response {
        match &self.0 {
            Ok(bytes) => ([(CONTENT_TYPE, "application/json")], bytes.clone()).into_response(),
            Err(error) => ApiError::Internal(error.clone()).into_response(),
        }
    }
}

/// Answers every operation of a kind can give, added to each such operation
/// of the finished document (merged into what its own annotations say of
/// the same status), so that no route documents fewer statuses than it
/// answers, and a new route gets them the day it is written.
pub fn add_shared_answers(document: &mut serde_json::Value) {
    let Some(paths) = document["paths"].as_object_mut() else {
        return;
    };
    for operation in paths
        .values_mut()
        .filter_map(serde_json::Value::as_object_mut)
        .flat_map(|methods| methods.values_mut())
    {
        let parameters: Vec<(String, String)> = operation["parameters"]
            .as_array()
            .map(|parameters| {
                parameters
                    .iter()
                    .map(|parameter| {
                        let text =
                            |field: &str| parameter[field].as_str().unwrap_or("").to_string();
                        (text("name"), text("in"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let has = |name: &str, place: &str| {
            parameters
                .iter()
                .any(|(candidate, at)| candidate == name && at == place)
        };
        let authenticated = operation["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty());
        let mut answers: Vec<(&str, &str)> = vec![("408", TIMED_OUT)];
        if !parameters.is_empty() {
            answers.push(("400", PARAMETER_INVALID));
        }
        if authenticated {
            answers.push((
                "401",
                "`unauthorized`: no, malformed, unknown or revoked credentials",
            ));
            document_throttling(&mut operation["responses"]);
        }
        let keyed = has("Idempotency-Key", "header");
        if keyed {
            answers.push(("400", KEY_INVALID));
            answers.push(("503", UNAVAILABLE));
        }
        let command = operation["security"].as_array().is_some_and(|security| {
            security
                .iter()
                .any(|scheme| scheme.get("api_key").is_some())
        });
        // A key or the admin token is checked against the database (on a
        // cache miss), and what such a route does reads or writes it.
        let stored = operation["security"].as_array().is_some_and(|security| {
            security.iter().any(|scheme| {
                scheme.get("api_key").is_some() || scheme.get("admin_token").is_some()
            })
        });
        if stored {
            answers.push(("503", DATABASE));
        }
        if command && keyed {
            answers.push(("409", IN_PROGRESS));
            answers.push(("422", KEY_REUSED));
        }
        if !operation["requestBody"].is_null() {
            answers.push(("400", BODY_INVALID));
            answers.push(("413", TOO_LARGE));
        }
        if has("min_seq", "query") {
            answers.push(("503", LAGGING));
        }
        let responses = &mut operation["responses"];
        for (status, description) in answers {
            match responses.get_mut(status) {
                None => responses[status] = error_answer(description),
                Some(existing) => {
                    let known = existing["description"].as_str().unwrap_or("");
                    if !known.contains(description) {
                        existing["description"] =
                            serde_json::Value::String(format!("{known}; or {description}"));
                    }
                }
            }
        }
    }
}

/// Documents the 429 of an operation that authenticates: a new answer with
/// `Retry-After`, or, where the operation answers 429 for a domain reason
/// already, that reason's description with this one added.
fn document_throttling(responses: &mut serde_json::Value) {
    match responses.get_mut("429") {
        Some(existing) => {
            let description = existing["description"].as_str().unwrap_or("");
            existing["description"] =
                serde_json::Value::String(format!("{description}; or {THROTTLED}"));
        }
        None => {
            let mut answer = error_answer(THROTTLED);
            answer["headers"] = serde_json::json!({"Retry-After": {
                "description": "Seconds until the client may try again",
                "schema": {"type": "integer"},
            }});
            responses["429"] = answer;
        }
    }
}

/// An answer in the error envelope.
fn error_answer(description: &str) -> serde_json::Value {
    serde_json::json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    })
}

const KEY_INVALID: &str = "`missing_idempotency_key` or `invalid_idempotency_key`, or invalid \
    input (the message names the field)";
const UNAVAILABLE: &str = "`shutting_down`: the server is stopping, retry on another; or \
    `database_slow`: the database held the request past its append deadline twice in a row, \
    nothing was recorded, retry";
const DATABASE: &str = "`database_unavailable`: the database is out of reach, retry shortly";
const IN_PROGRESS: &str = "`request_in_progress`: a request with this Idempotency-Key is being \
    executed; or `conflict`: concurrent writes won too often, retry";
const KEY_REUSED: &str =
    "`idempotency_key_reused`: the Idempotency-Key was used for another request";
const BODY_INVALID: &str = "Invalid input: malformed JSON, an unknown or missing field, a value \
    out of its bounds (the message names the field)";
const PARAMETER_INVALID: &str = "Invalid input: a parameter out of its bounds, malformed or \
    unknown (the message names it); `min_seq_ahead`: `min_seq` is beyond the tenant's last \
    tenant_seq (details.tenant_seq), so no wait could reach it";
const LAGGING: &str = "`projection_lagging`: the projection did not reach `min_seq` within the \
    server's read wait";
const TOO_LARGE: &str = "`payload_too_large`: the body is over the server's limit";
const TIMED_OUT: &str = "`request_timeout`: the body did not arrive, or the answer was not ready, \
    within the server's request timeout; the connection is closed";
