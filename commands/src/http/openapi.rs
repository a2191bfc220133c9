//! The OpenAPI document, generated from the route annotations, and
//! `/openapi.json` serving it.

use super::error::{ErrorBody, ErrorDetail};
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
        (name = "subscription", description = "The tenant's subscription and its plan's grants"),
        (name = "grants", description = "Grants of quota and their balances"),
        (name = "quota", description = "Consuming, allocating and reading quota"),
        (name = "journal", description = "Journal entries, account balances, trial balance"),
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
    }
}

/// Answers every operation of a kind can give, added to each such operation
/// of the finished document (where its own annotations do not describe
/// them already), so that no route documents fewer statuses than it
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
        let mut answers: Vec<(&str, &str)> = Vec::new();
        if authenticated {
            answers.push((
                "401",
                "`unauthorized`: no, malformed, unknown or revoked credentials",
            ));
            answers.push(("429", THROTTLED));
        }
        if has("Idempotency-Key", "header") {
            answers.push(("400", "`missing_idempotency_key` or `invalid_idempotency_key`, or invalid input (the message names the field)"));
            answers.push(("409", "`request_in_progress`: a request with this Idempotency-Key is being executed; or `conflict`: concurrent writes won too often, retry"));
            answers.push((
                "422",
                "`idempotency_key_reused`: the Idempotency-Key was used for another request",
            ));
            answers.push(("503", "`database_unavailable`, or `shutting_down`"));
        }
        if !operation["requestBody"].is_null() {
            answers.push(("400", "Invalid input: malformed JSON, an unknown or missing field, a value out of its bounds (the message names the field)"));
            answers.push((
                "413",
                "`payload_too_large`: the body is over the server's limit",
            ));
        }
        if has("min_seq", "query") {
            answers.push(("503", "`projection_lagging`: the projection did not reach `min_seq` within the server's read wait; or `database_unavailable`"));
            answers.push(("429", THROTTLED));
        }
        let responses = &mut operation["responses"];
        for (status, description) in answers {
            if responses.get(status).is_none() {
                responses[status] = serde_json::json!({
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
                });
            } else if status == "429" {
                let existing = responses[status]["description"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if !existing.contains("too_many_requests") {
                    responses[status]["description"] =
                        serde_json::Value::String(format!("{existing}; or {THROTTLED}"));
                }
            }
        }
    }
}

/// The 429 every authenticated route can answer.
const THROTTLED: &str = "`too_many_requests` (with `Retry-After`): too many failed authentications from this address, or this tenant has the most reads waiting for `min_seq` (or replays) in flight that it may";
