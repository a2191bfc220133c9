//! Tenants and their API keys.
//!
//! An API key reads `lk_<tenant id, 32 hex>_<secret, 64 hex>`. The tenant id
//! inside it lets the lookup use the `(tenant_id, key_digest)` key, so the
//! table stays keyed by tenant like every other. Only the blake3 digest of the
//! whole key is stored; the key is shown once, when issued.

use crate::chain::GENESIS;
use crate::error::StoreError;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::EventStore;
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// Longest tenant name, in characters.
pub const TENANT_NAME_LENGTH_MAX: usize = 200;

const KEY_PREFIX: &str = "lk_";

/// A tenant just created, with its first API key (shown only now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    pub tenant_id: TenantId,
    pub name: String,
    pub api_key: String,
}

/// A tenant as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub tenant_id: TenantId,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// The result of an idempotent tenant creation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantCreation {
    /// Created now; the API key is shown this once.
    Created(NewTenant),
    /// The key already created this tenant with the same request. The API key
    /// cannot be shown again (only its digest is stored).
    Replayed { tenant_id: TenantId, name: String },
    /// The key already created a tenant with a different request.
    KeyReused,
}

/// The result of an idempotent API key issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyIssue {
    /// Issued now; shown this once.
    Issued(String),
    /// The idempotency key already issued a key for this tenant; the key
    /// cannot be shown again (only its digest is stored).
    Replayed,
    /// No such tenant.
    UnknownTenant,
}

/// Why a tenant could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    #[error(
        "tenant name must be 1 to {TENANT_NAME_LENGTH_MAX} characters without control characters"
    )]
    InvalidName,
    #[error(transparent)]
    Store(#[from] StoreError),
}

const INSERT_TENANT: &str = "\
WITH tenant AS (
    INSERT INTO tenants (tenant_id, name, created_at, creation_key, creation_fingerprint)
    VALUES ($1, $2, now(), $6, $7)
    ON CONFLICT (creation_key) DO NOTHING
    RETURNING tenant_id
), head AS (
    INSERT INTO chain_heads (tenant_id, last_seq, last_hash, last_recorded_at, updated_at)
    SELECT tenant_id, 0, $3, NULL, now() FROM tenant
), api_key AS (
    INSERT INTO api_keys (tenant_id, key_digest, key_hint, created_at)
    SELECT tenant_id, $4, $5, now() FROM tenant
)
SELECT tenant_id FROM tenant";

const SELECT_CREATION: &str = "\
    SELECT tenant_id, name, creation_fingerprint FROM tenants WHERE creation_key = $1";

const INSERT_KEY: &str = "\
    INSERT INTO api_keys (tenant_id, key_digest, key_hint, created_at, issue_key) \
    SELECT tenant_id, $2, $3, now(), $4 FROM tenants WHERE tenant_id = $1 \
    ON CONFLICT (tenant_id, issue_key) DO NOTHING \
    RETURNING tenant_id";

const SELECT_TENANT_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant_id = $1)";

const SELECT_KEY: &str = "\
    SELECT EXISTS (SELECT 1 FROM api_keys \
                   WHERE tenant_id = $1 AND key_digest = $2 AND revoked_at IS NULL)";

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// A fresh API key for `tenant_id`.
fn generate_api_key(tenant_id: TenantId) -> Result<String, StoreError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|error| StoreError::Invalid(format!("no randomness for an API key: {error}")))?;
    Ok(format!(
        "{KEY_PREFIX}{}_{}",
        tenant_id.as_uuid().simple(),
        hex(&secret)
    ))
}

/// The tenant an API key claims to belong to, if it is well formed.
fn claimed_tenant(api_key: &str) -> Option<TenantId> {
    let rest = api_key.strip_prefix(KEY_PREFIX)?;
    let (tenant, secret) = rest.split_once('_')?;
    if tenant.len() != 32 || secret.len() != 64 || !secret.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Uuid::try_parse(tenant).ok().map(TenantId::from_uuid)
}

impl EventStore {
    /// Creates a tenant with an empty chain and its first API key.
    pub async fn create_tenant(&self, name: &str) -> Result<NewTenant, TenantError> {
        match self.insert_tenant(name, None).await? {
            TenantCreation::Created(tenant) => Ok(tenant),
            // Without a creation key the insert cannot conflict.
            other => Err(TenantError::Store(StoreError::Corrupt(format!(
                "tenant creation without a key answered {other:?}"
            )))),
        }
    }

    /// Creates a tenant once per idempotency key: the same key with the same
    /// request answers the tenant it created, with another request is refused.
    pub async fn create_tenant_idempotent(
        &self,
        name: &str,
        key: &IdempotencyKey,
        fingerprint: &Fingerprint,
    ) -> Result<TenantCreation, TenantError> {
        self.insert_tenant(name, Some((key, fingerprint))).await
    }

    async fn insert_tenant(
        &self,
        name: &str,
        creation: Option<(&IdempotencyKey, &Fingerprint)>,
    ) -> Result<TenantCreation, TenantError> {
        let name = name.trim();
        if name.is_empty()
            || name.chars().count() > TENANT_NAME_LENGTH_MAX
            || name.chars().any(char::is_control)
        {
            return Err(TenantError::InvalidName);
        }
        let tenant_id = TenantId::generate();
        let api_key = generate_api_key(tenant_id)?;
        let digest = blake3::hash(api_key.as_bytes());
        let hint = &api_key[api_key.len() - 4..];
        let inserted: Option<(Uuid,)> = sqlx::query_as(INSERT_TENANT)
            .bind(tenant_id.as_uuid())
            .bind(name)
            .bind(&GENESIS.0[..])
            .bind(&digest.as_bytes()[..])
            .bind(hint)
            .bind(creation.map(|(key, _)| key.as_str()))
            .bind(creation.map(|(_, fingerprint)| &fingerprint.0[..]))
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from)?;
        if inserted.is_some() {
            return Ok(TenantCreation::Created(NewTenant {
                tenant_id,
                name: name.to_string(),
                api_key,
            }));
        }
        let Some((key, fingerprint)) = creation else {
            return Err(TenantError::Store(StoreError::Corrupt(
                "tenant insert without a creation key did nothing".into(),
            )));
        };
        let (existing, existing_name, existing_fingerprint): (Uuid, String, Option<Vec<u8>>) =
            sqlx::query_as(SELECT_CREATION)
                .bind(key.as_str())
                .fetch_one(&self.pool)
                .await
                .map_err(StoreError::from)?;
        if existing_fingerprint.as_deref() == Some(&fingerprint.0[..]) {
            Ok(TenantCreation::Replayed {
                tenant_id: TenantId::from_uuid(existing),
                name: existing_name,
            })
        } else {
            Ok(TenantCreation::KeyReused)
        }
    }

    /// Issues another API key for an existing tenant (shown only now), once
    /// per idempotency key and tenant.
    pub async fn issue_api_key(
        &self,
        tenant_id: TenantId,
        key: &IdempotencyKey,
    ) -> Result<KeyIssue, StoreError> {
        let api_key = generate_api_key(tenant_id)?;
        let digest = blake3::hash(api_key.as_bytes());
        let inserted: Option<(Uuid,)> = sqlx::query_as(INSERT_KEY)
            .bind(tenant_id.as_uuid())
            .bind(&digest.as_bytes()[..])
            .bind(&api_key[api_key.len() - 4..])
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await?;
        if inserted.is_some() {
            return Ok(KeyIssue::Issued(api_key));
        }
        let (exists,): (bool,) = sqlx::query_as(SELECT_TENANT_EXISTS)
            .bind(tenant_id.as_uuid())
            .fetch_one(&self.pool)
            .await?;
        Ok(if exists {
            KeyIssue::Replayed
        } else {
            KeyIssue::UnknownTenant
        })
    }

    /// The tenant an API key authenticates, or `None` for an unknown,
    /// malformed or revoked key.
    pub async fn authenticate(&self, api_key: &str) -> Result<Option<TenantId>, StoreError> {
        let Some(tenant_id) = claimed_tenant(api_key) else {
            return Ok(None);
        };
        let digest = blake3::hash(api_key.as_bytes());
        let (found,): (bool,) = sqlx::query_as(SELECT_KEY)
            .bind(tenant_id.as_uuid())
            .bind(&digest.as_bytes()[..])
            .fetch_one(&self.pool)
            .await?;
        Ok(found.then_some(tenant_id))
    }

    /// Every tenant, oldest first.
    pub async fn tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        let rows: Vec<(Uuid, String, DateTime<Utc>)> =
            sqlx::query_as("SELECT tenant_id, name, created_at FROM tenants ORDER BY tenant_id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows
            .into_iter()
            .map(|(tenant_id, name, created_at)| Tenant {
                tenant_id: TenantId::from_uuid(tenant_id),
                name,
                created_at,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_key_names_its_tenant() {
        let tenant = TenantId::generate();
        let key = generate_api_key(tenant).unwrap();
        assert_eq!(key.len(), 3 + 32 + 1 + 64);
        assert_eq!(claimed_tenant(&key), Some(tenant));
    }

    #[test]
    fn malformed_keys_name_no_tenant() {
        assert_eq!(claimed_tenant(""), None);
        assert_eq!(claimed_tenant("lk_nothex_00"), None);
        let tenant = TenantId::generate();
        let key = generate_api_key(tenant).unwrap();
        assert_eq!(claimed_tenant(&key[..key.len() - 1]), None);
        assert_eq!(claimed_tenant(&key.replacen("lk_", "xx_", 1)), None);
    }
}
