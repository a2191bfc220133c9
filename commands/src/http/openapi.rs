//! The OpenAPI document, generated from the route annotations, and
//! `/openapi.json` serving it.

use super::error::{ApiError, ErrorBody, ErrorDetail};
use axum::body::Bytes;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Ref, RefOr, ResponseBuilder};
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
    address; Retry-After gives the seconds left";

/// Documents the 429 of every operation that authenticates (every one with
/// a security requirement), where routes of every crate are merged, so no
/// route can forget it. An operation that already answers 429 for a domain
/// reason gets the reason added to its description.
pub fn document_throttling(api: &mut utoipa::openapi::OpenApi) {
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            document_operation_throttling(operation);
        }
    }
}

fn document_operation_throttling(operation: &mut Operation) {
    if operation.security.as_ref().is_none_or(Vec::is_empty) {
        return;
    }
    let responses = &mut operation.responses.responses;
    match responses.get_mut("429") {
        Some(RefOr::T(response)) => {
            response.description = format!("{}; or {THROTTLED}", response.description);
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let response = ResponseBuilder::new()
                .description(THROTTLED)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .header(
                    "Retry-After",
                    utoipa::openapi::HeaderBuilder::new()
                        .schema(
                            utoipa::openapi::ObjectBuilder::new()
                                .schema_type(utoipa::openapi::schema::Type::Integer),
                        )
                        .description(Some("Seconds until the client may try again"))
                        .build(),
                )
                .build();
            responses.insert("429".to_string(), RefOr::T(response));
        }
    }
}

/// `/openapi.json`, serialized once when the application is built: the
/// document never changes while the server runs.
#[derive(Clone)]
pub struct Document(Result<Bytes, String>);

impl Document {
    pub fn serialize(api: &utoipa::openapi::OpenApi) -> Self {
        Self(
            api.to_json()
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
