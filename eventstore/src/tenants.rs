//! Tenants and their API keys.
//!
//! An API key reads `lk_<tenant id, 32 hex>_<secret, 64 hex>`. The tenant id
//! inside it lets the lookup use the `(tenant_id, key_digest)` key, so the
//! table stays keyed by tenant like every other. Only the blake3 digest of the
//! whole key is stored; the key is shown once, when issued.

use crate::chain::GENESIS;
use crate::error::StoreError;
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
    INSERT INTO tenants (tenant_id, name, created_at) VALUES ($1, $2, now()) RETURNING tenant_id
), head AS (
    INSERT INTO chain_heads (tenant_id, last_seq, last_hash, last_recorded_at, updated_at)
    SELECT tenant_id, 0, $3, NULL, now() FROM tenant
), api_key AS (
    INSERT INTO api_keys (tenant_id, key_digest, key_hint, created_at)
    SELECT tenant_id, $4, $5, now() FROM tenant
)
SELECT tenant_id FROM tenant";

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
        sqlx::query(INSERT_TENANT)
            .bind(tenant_id.as_uuid())
            .bind(name)
            .bind(&GENESIS.0[..])
            .bind(&digest.as_bytes()[..])
            .bind(hint)
            .execute(&self.pool)
            .await
            .map_err(StoreError::from)?;
        Ok(NewTenant {
            tenant_id,
            name: name.to_string(),
            api_key,
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
