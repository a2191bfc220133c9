//! `/v1/tenants`: creating tenants, issuing, listing and revoking API keys
//! (admin token only).

use super::error::{replayed_if, ApiError, ErrorBody};
use super::extract::{Admin, ApiJson, ApiPath, IdempotencyKeyHeader};
use super::AppState;
use aggregates::text::Text;
use aggregates::TenantId;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use eventstore::tenants::TENANT_NAME_LENGTH_MAX;
use eventstore::{
    ApiKeyInfo, Fingerprint, KeyId, KeyIssue, Revocation, TenantCreation, TenantError,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_tenant))
        .routes(routes!(issue_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
}

/// A tenant to create.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Name of the business, 1-200 characters, no control characters.
    #[schema(schema_with = tenant_name_schema)]
    pub name: Text<TENANT_NAME_LENGTH_MAX>,
}

/// A tenant's name: a text with at least one character that is not
/// white space (the name is stored trimmed).
fn tenant_name_schema() -> RefOr<Schema> {
    aggregates::schema::text(
        TENANT_NAME_LENGTH_MAX,
        r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$",
    )
    .into()
}

/// A created tenant and its API key. The key is shown only in the first
/// answer; a replay of the same request answers `api_key: null`.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantCreated {
    pub tenant_id: uuid::Uuid,
    pub name: String,
    pub api_key: Option<String>,
    /// The key's id (also in replays): list and revoke the key by it.
    pub key_id: uuid::Uuid,
}

/// A newly issued API key, shown once; a replay of the same request
/// answers `api_key: null`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyIssued {
    pub tenant_id: uuid::Uuid,
    pub api_key: Option<String>,
    /// The key's id (also in replays): list and revoke the key by it.
    pub key_id: uuid::Uuid,
}

/// A revoked API key.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyRevoked {
    pub tenant_id: uuid::Uuid,
    pub key_id: uuid::Uuid,
    /// When the key was first revoked; revoking again answers the same.
    pub revoked_at: DateTime<Utc>,
}

/// An API key as listed: never the key itself, nor its digest.
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub key_id: uuid::Uuid,
    /// The last four characters of the key, to tell keys apart.
    pub hint: String,
    pub created_at: DateTime<Utc>,
    /// When the key last authenticated a request, to within the servers' key
    /// cache lifetime; `null` if never.
    pub last_used_at: Option<DateTime<Utc>>,
    /// `null` while the key is valid.
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<ApiKeyInfo> for ApiKeyView {
    fn from(key: ApiKeyInfo) -> Self {
        Self {
            key_id: key.key_id.as_uuid(),
            hint: key.hint,
            created_at: key.created_at,
            last_used_at: key.last_used_at,
            revoked_at: key.revoked_at,
        }
    }
}

/// A tenant's API keys, newest first (at most 1,000).
#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKeyList {
    pub tenant_id: uuid::Uuid,
    pub keys: Vec<ApiKeyView>,
}

/// Creates a tenant with an empty ledger and its first API key.
#[utoipa::path(
    post,
    path = "/v1/tenants",
    tag = "tenants",
    request_body = CreateTenant,
    params(("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)")),
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
                key_id: tenant.key_id.as_uuid(),
            },
            false,
        ),
        TenantCreation::Replayed {
            tenant_id,
            name,
            key_id,
        } => (
            TenantCreated {
                tenant_id: tenant_id.as_uuid(),
                name,
                api_key: None,
                key_id: key_id.as_uuid(),
            },
            true,
        ),
        TenantCreation::KeyReused => {
            return Err(crate::pipeline::PipelineError::KeyReused.into());
        }
    };
    Ok(replayed_if(
        (StatusCode::CREATED, Json(body)).into_response(),
        replayed,
    ))
}

/// Issues another API key for a tenant (key rotation, or a lost first key),
/// once per Idempotency-Key and tenant.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant_id}/api-keys",
    tag = "tenants",
    params(
        ("tenant_id" = uuid::Uuid, Path, description = "The tenant"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
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
    let (api_key, key_id, replayed) = match state.store.issue_api_key(tenant_id, &key).await? {
        KeyIssue::Issued { key_id, api_key } => (Some(api_key), key_id, false),
        KeyIssue::Replayed(key_id) => (None, key_id, true),
        KeyIssue::UnknownTenant => {
            return Err(ApiError::NotFound(format!("no tenant {tenant_id}")));
        }
    };
    let body = ApiKeyIssued {
        tenant_id: tenant_id.as_uuid(),
        api_key,
        key_id: key_id.as_uuid(),
    };
    Ok(replayed_if(
        (StatusCode::CREATED, Json(body)).into_response(),
        replayed,
    ))
}

/// A tenant's API keys, newest first (at most 1,000): id, hint, when
/// issued, last used and revoked. Never a key or its digest.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant_id}/api-keys",
    tag = "tenants",
    params(("tenant_id" = uuid::Uuid, Path, description = "The tenant")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The tenant's keys", body = ApiKeyList),
        (status = 400, description = "Malformed tenant id", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "Unknown tenant", body = ErrorBody),
    )
)]
async fn list_api_keys(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(tenant_id): ApiPath<uuid::Uuid>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let tenant_id = TenantId::from_uuid(tenant_id);
    let keys = state
        .store
        .api_keys(tenant_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no tenant {tenant_id}")))?;
    Ok(Json(ApiKeyList {
        tenant_id: tenant_id.as_uuid(),
        keys: keys.into_iter().map(ApiKeyView::from).collect(),
    }))
}

/// The path of one key; named, so a malformed id is named in the 400.
#[derive(Debug, Deserialize)]
struct KeyPath {
    tenant_id: uuid::Uuid,
    key_id: uuid::Uuid,
}

/// Revokes an API key: from this answer on, this server answers 401 to it;
/// other servers on the database within moments (they are notified), and
/// at the latest once their key cache lifetime (5 s) has passed. Like every
/// mutation it needs an Idempotency-Key, recorded with the key it revoked:
/// a retry answers the same (`Idempotent-Replayed: true`), the same
/// Idempotency-Key naming another API key is 422. Revoking a revoked key
/// under another Idempotency-Key answers the first revocation's time.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant_id}/api-keys/{key_id}/revoke",
    tag = "tenants",
    params(
        ("tenant_id" = uuid::Uuid, Path, description = "The tenant"),
        ("key_id" = uuid::Uuid, Path, description = "The key, as issued or listed"),
        ("Idempotency-Key" = inline(IdempotencyKeyHeader), Header, description = "1-255 printable ASCII characters, neither first nor last a space, not starting with `pm:` (the process managers' keys)"),
    ),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Revoked (now or before)", body = ApiKeyRevoked),
        (status = 400, description = "Malformed tenant or key id, missing or invalid Idempotency-Key", body = ErrorBody),
        (status = 401, description = "Not the admin token", body = ErrorBody),
        (status = 404, description = "Unknown tenant, or no such key of this tenant", body = ErrorBody),
        (status = 422, description = "`idempotency_key_reused`: the Idempotency-Key revoked another API key", body = ErrorBody),
    )
)]
async fn revoke_api_key(
    State(state): State<AppState>,
    _: Admin,
    ApiPath(path): ApiPath<KeyPath>,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
) -> Result<Response, ApiError> {
    let tenant_id = TenantId::from_uuid(path.tenant_id);
    let key_id = KeyId::from_uuid(path.key_id);
    let (revoked, replayed) = match state
        .store
        .revoke_api_key(tenant_id, key_id, Some(&key))
        .await?
    {
        Revocation::Revoked(revoked) => (revoked, false),
        Revocation::Replayed(revoked) => (revoked, true),
        Revocation::KeyReused => return Err(crate::pipeline::PipelineError::KeyReused.into()),
        Revocation::Unknown => {
            return Err(ApiError::NotFound(format!(
                "tenant {tenant_id} has no API key {key_id}"
            )))
        }
    };
    // This process stops accepting the key now; the others when the
    // revocation's notification reaches them.
    state.auth.evict(key_id);
    let body = ApiKeyRevoked {
        tenant_id: tenant_id.as_uuid(),
        key_id: revoked.key_id.as_uuid(),
        revoked_at: revoked.revoked_at,
    };
    Ok(replayed_if(Json(body).into_response(), replayed))
}
