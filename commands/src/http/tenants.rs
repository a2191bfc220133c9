//! `/v1/tenants`: creating tenants and issuing API keys (admin token only).

use super::error::{ApiError, ErrorBody, REPLAYED_HEADER};
use super::extract::{Admin, ApiJson, ApiPath, IdempotencyKeyHeader};
use super::AppState;
use aggregates::text::Text;
use aggregates::TenantId;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use eventstore::tenants::TENANT_NAME_LENGTH_MAX;
use eventstore::{Fingerprint, KeyIssue, TenantCreation, TenantError};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant))
        .routes(routes!(issue_api_key))
}

/// A tenant to create.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Name of the business, 1-200 characters, no control characters.
    #[schema(value_type = String, min_length = 1, max_length = 200)]
    pub name: Text<TENANT_NAME_LENGTH_MAX>,
}

/// A created tenant and its API key. The key is shown only in the first
/// answer; a replay of the same request answers `api_key: null`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreated {
    pub tenant_id: uuid::Uuid,
    pub name: String,
    pub api_key: Option<String>,
}

/// A newly issued API key, shown once; a replay of the same request
/// answers `api_key: null`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyIssued {
    pub tenant_id: uuid::Uuid,
    pub api_key: Option<String>,
}

/// Creates a tenant with an empty ledger and its first API key.
#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    request_body = CreateTenant,
    params(("Idempotency-Key" = String, Header, description = "1-255 printable ASCII characters")),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Created", body = TenantCreated),
        (status = 400, description = "Invalid name or Idempotency-Key", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 422, description = "Idempotency-Key reused for another request", body = ErrorBody),
    )
)]
async fn create_tenant(
    State(state): State<AppState>,
    _: Admin,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(request): ApiJson<CreateTenant>,
) -> Result<Response, ApiError> {
    let name = request.name.as_str();
    let fingerprint = Fingerprint::of("create_tenant", &json!({"name": name.trim()}))?;
    let creation = state
        .store
        .create_tenant_idempotent(name, &key, &fingerprint)
        .await
        .map_err(|error| match error {
            TenantError::InvalidName => ApiError::bad_request(error.to_string()),
            TenantError::Store(error) => error.into(),
        })?;
    let (body, replayed) = match creation {
        TenantCreation::Created(tenant) => (
            TenantCreated {
                tenant_id: tenant.tenant_id.as_uuid(),
                name: tenant.name,
                api_key: Some(tenant.api_key),
            },
            false,
        ),
        TenantCreation::Replayed { tenant_id, name } => (
            TenantCreated {
                tenant_id: tenant_id.as_uuid(),
                name,
                api_key: None,
            },
            true,
        ),
        TenantCreation::KeyReused => {
            return Err(crate::pipeline::PipelineError::KeyReused.into());
        }
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// Issues another API key for a tenant (key rotation, or a lost first key),
/// once per Idempotency-Key and tenant.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant_id}/api-keys",
    tag = "tenants",
    params(
        ("tenant_id" = uuid::Uuid, Path, description = "The tenant"),
        ("Idempotency-Key" = String, Header, description = "1-255 printable ASCII characters"),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Issued (or the replay of an earlier issue)", body = ApiKeyIssued),
        (status = 400, description = "Malformed tenant id, missing or invalid Idempotency-Key", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
    )
)]
async fn issue_api_key(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(tenant_id): ApiPath<uuid::Uuid>,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
) -> Result<Response, ApiError> {
    let tenant_id = TenantId::from_uuid(tenant_id);
    let (api_key, replayed) = match state.store.issue_api_key(tenant_id, &key).await? {
        KeyIssue::Issued(api_key) => (Some(api_key), false),
        KeyIssue::Replayed => (None, true),
        KeyIssue::UnknownTenant => {
            return Err(ApiError::NotFound(format!("no tenant {tenant_id}")));
        }
    };
    let body = ApiKeyIssued {
        tenant_id: tenant_id.as_uuid(),
        api_key,
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    Ok(response)
}
