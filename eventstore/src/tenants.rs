//! Tenants and their API keys.
//!
//! An API key reads `lk_<tenant id, 32 hex>_<secret, 64 hex>`. The tenant id
//! inside it lets the lookup use the `(tenant_id, key_digest)` key, so the
//! table stays keyed by tenant like every other. Only the blake3 digest of the
//! whole key is stored; the key is shown once, when issued. Each key also has
//! a [`KeyId`], which is not secret: operators list and revoke keys by it.

use crate::chain::GENESIS;
use crate::error::StoreError;
use crate::idempotency::{Fingerprint, IdempotencyKey};
use crate::EventStore;
use aggregates::TenantId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

/// Longest tenant name, in characters.
pub const TENANT_NAME_LENGTH_MAX: usize = 200;

/// Channel on which a revocation is announced (payload: the key id), so
/// every server process drops the key from its cache at once.
pub const API_KEYS_CHANNEL: &str = "ledger_api_keys";

/// Most keys `api_keys` lists for one tenant (the newest).
pub const API_KEYS_LISTED_MAX: i64 = 1_000;

const KEY_PREFIX: &str = "lk_";

pub use aggregates::ids::KeyId;

/// A tenant just created, with its first API key (shown only now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTenant {
    pub tenant_id: TenantId,
    pub name: String,
    pub api_key: String,
    pub key_id: KeyId,
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
    /// cannot be shown again (only its digest is stored); its id can.
    Replayed {
        tenant_id: TenantId,
        name: String,
        key_id: KeyId,
    },
    /// The key already created a tenant with a different request.
    KeyReused,
}

/// The result of an idempotent API key issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyIssue {
    /// Issued now; the key is shown this once.
    Issued { key_id: KeyId, api_key: String },
    /// The idempotency key already issued a key for this tenant; the key
    /// cannot be shown again (only its digest is stored), its id can.
    Replayed(KeyId),
    /// No such tenant.
    UnknownTenant,
}

/// The key behind an authenticated request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsedKey {
    pub tenant_id: TenantId,
    pub key_id: KeyId,
}

/// An API key as listed: never the key, nor its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiKeyInfo {
    pub key_id: KeyId,
    /// Last four characters of the key.
    pub hint: String,
    pub created_at: DateTime<Utc>,
    /// To within the server's key cache lifetime; `None` if never used.
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// What revoking an API key under an Idempotency-Key did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revocation {
    /// Revoked under this key (now, or it was revoked before).
    Revoked(RevokedKey),
    /// This key revoked it already: the same answer.
    Replayed(RevokedKey),
    /// This key revoked another API key.
    KeyReused,
    /// No such API key of the tenant (or no such tenant).
    Unknown,
}

/// A revoked key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RevokedKey {
    pub key_id: KeyId,
    /// When it was first revoked (revoking again changes nothing).
    pub revoked_at: DateTime<Utc>,
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
    INSERT INTO api_keys (tenant_id, key_digest, key_hint, created_at, key_id)
    SELECT tenant_id, $4, $5, now(), $8 FROM tenant
)
SELECT tenant_id FROM tenant";

/// The tenant a creation key created, and its first key (the one issued
/// without an issue key).
const SELECT_CREATION: &str = "\
    SELECT t.tenant_id, t.name, t.creation_fingerprint, \
           (SELECT k.key_id FROM api_keys k \
            WHERE k.tenant_id = t.tenant_id AND k.issue_key IS NULL \
            ORDER BY k.created_at, k.key_id LIMIT 1) \
    FROM tenants t WHERE t.creation_key = $1";

const INSERT_KEY: &str = "\
    INSERT INTO api_keys (tenant_id, key_digest, key_hint, created_at, issue_key, key_id) \
    SELECT tenant_id, $2, $3, now(), $4, $5 FROM tenants WHERE tenant_id = $1 \
    ON CONFLICT (tenant_id, issue_key) DO NOTHING \
    RETURNING key_id";

const SELECT_ISSUED: &str = "\
    SELECT key_id FROM api_keys WHERE tenant_id = $1 AND issue_key = $2";

const SELECT_TENANT_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM tenants WHERE tenant_id = $1)";

const SELECT_KEY: &str = "\
    SELECT EXISTS (SELECT 1 FROM api_keys \
                   WHERE tenant_id = $1 AND key_digest = $2 AND revoked_at IS NULL)";

/// A valid key's id, recording its use when the recorded one is older than
/// $3 milliseconds (a no-op update writes nothing). The update is a CTE the
/// select does not read: PostgreSQL runs it all the same.
const USE_KEY: &str = "\
WITH valid AS (
    SELECT key_id FROM api_keys
    WHERE tenant_id = $1 AND key_digest = $2 AND revoked_at IS NULL
), used AS (
    UPDATE api_keys SET last_used_at = now()
    WHERE tenant_id = $1 AND key_digest = $2 AND revoked_at IS NULL
      AND (last_used_at IS NULL OR last_used_at < now() - make_interval(secs => $3 / 1000.0))
)
SELECT key_id FROM valid";

/// Revokes a key once (a second revocation keeps the first time) and
/// announces it to every server process; the notification is delivered on
/// commit.
const REVOKE_KEY: &str = "\
WITH recorded AS (
    INSERT INTO api_key_revocations (tenant_id, idempotency_key, key_id)
    SELECT tenant_id, $3, key_id FROM api_keys
    WHERE tenant_id = $1 AND key_id = $2 AND $3::text IS NOT NULL
    ON CONFLICT (tenant_id, idempotency_key) DO NOTHING
    RETURNING key_id
), revoked AS (
    UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
    WHERE tenant_id = $1 AND key_id = $2
      AND ($3::text IS NULL OR key_id IN (SELECT key_id FROM recorded))
    RETURNING key_id, revoked_at
)
SELECT key_id, revoked_at, pg_notify($4, key_id::text) FROM revoked";

const SELECT_REVOCATION: &str = "\
    SELECT r.key_id, k.revoked_at, \
           EXISTS (SELECT 1 FROM api_keys a WHERE a.tenant_id = $1 AND a.key_id = $3) \
    FROM api_key_revocations r \
    JOIN api_keys k ON k.tenant_id = r.tenant_id AND k.key_id = r.key_id \
    WHERE r.tenant_id = $1 AND r.idempotency_key = $2";

const SELECT_KEYS: &str = "\
    SELECT key_id, key_hint, created_at, last_used_at, revoked_at FROM api_keys \
    WHERE tenant_id = $1 ORDER BY created_at DESC, key_id DESC LIMIT $2";

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

/// The tenant an API key claims to belong to, if it is well formed. Not a
/// secret: it is what the key says, not proof that it is the tenant's.
pub fn claimed_tenant(api_key: &str) -> Option<TenantId> {
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
        let key_id = KeyId::generate();
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
            .bind(key_id.as_uuid())
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::from)?;
        if inserted.is_some() {
            return Ok(TenantCreation::Created(NewTenant {
                tenant_id,
                name: name.to_string(),
                api_key,
                key_id,
            }));
        }
        let Some((key, fingerprint)) = creation else {
            return Err(TenantError::Store(StoreError::Corrupt(
                "tenant insert without a creation key did nothing".into(),
            )));
        };
        let (existing, existing_name, existing_fingerprint, first_key): (
            Uuid,
            String,
            Option<Vec<u8>>,
            Option<Uuid>,
        ) = sqlx::query_as(SELECT_CREATION)
            .bind(key.as_str())
            .fetch_one(&self.pool)
            .await
            .map_err(StoreError::from)?;
        if existing_fingerprint.as_deref() == Some(&fingerprint.0[..]) {
            // The first key is inserted with the tenant, in one statement.
            let first_key = first_key.ok_or_else(|| {
                StoreError::Corrupt(format!("tenant {existing} has no first API key"))
            })?;
            Ok(TenantCreation::Replayed {
                tenant_id: TenantId::from_uuid(existing),
                name: existing_name,
                key_id: KeyId::from_uuid(first_key),
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
            .bind(KeyId::generate().as_uuid())
            .fetch_optional(&self.pool)
            .await?;
        if let Some((key_id,)) = inserted {
            return Ok(KeyIssue::Issued {
                key_id: KeyId::from_uuid(key_id),
                api_key,
            });
        }
        let issued: Option<(Uuid,)> = sqlx::query_as(SELECT_ISSUED)
            .bind(tenant_id.as_uuid())
            .bind(key.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match issued {
            Some((key_id,)) => KeyIssue::Replayed(KeyId::from_uuid(key_id)),
            // The insert selects from tenants: it only skips an unknown tenant
            // or a conflicting issue key.
            None => KeyIssue::UnknownTenant,
        })
    }

    /// Authenticates a request by its API key and records the key's use, at
    /// most once per `last_used_resolution` (the caller's cache lifetime), so
    /// that authenticating is not a write per request. `None` for an
    /// unknown, malformed or revoked key.
    pub async fn use_api_key(
        &self,
        api_key: &str,
        last_used_resolution: Duration,
    ) -> Result<Option<UsedKey>, StoreError> {
        let Some(tenant_id) = claimed_tenant(api_key) else {
            return Ok(None);
        };
        let digest = blake3::hash(api_key.as_bytes());
        let resolution_ms = i64::try_from(last_used_resolution.as_millis()).unwrap_or(i64::MAX);
        let found: Option<(Uuid,)> = sqlx::query_as(USE_KEY)
            .bind(tenant_id.as_uuid())
            .bind(&digest.as_bytes()[..])
            .bind(resolution_ms)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.map(|(key_id,)| UsedKey {
            tenant_id,
            key_id: KeyId::from_uuid(key_id),
        }))
    }

    /// Revokes a tenant's key under the Idempotency-Key `key` (none from
    /// the command line), and announces it on [`API_KEYS_CHANNEL`] so that
    /// servers drop it from their caches. Revoking a revoked key answers the
    /// first revocation's time; `key` is recorded with the key it revoked,
    /// so a retry is a replay and the same `key` naming another API key is
    /// refused.
    pub async fn revoke_api_key(
        &self,
        tenant_id: TenantId,
        key_id: KeyId,
        key: Option<&IdempotencyKey>,
    ) -> Result<Revocation, StoreError> {
        let revoked: Option<(Uuid, DateTime<Utc>, ())> = sqlx::query_as(REVOKE_KEY)
            .bind(tenant_id.as_uuid())
            .bind(key_id.as_uuid())
            .bind(key.map(IdempotencyKey::as_str))
            .bind(API_KEYS_CHANNEL)
            .fetch_optional(&self.pool)
            .await?;
        if let Some((key_id, revoked_at, ())) = revoked {
            return Ok(Revocation::Revoked(RevokedKey {
                key_id: KeyId::from_uuid(key_id),
                revoked_at,
            }));
        }
        let Some(key) = key else {
            return Ok(Revocation::Unknown);
        };
        let recorded: Option<(Uuid, Option<DateTime<Utc>>, bool)> =
            sqlx::query_as(SELECT_REVOCATION)
                .bind(tenant_id.as_uuid())
                .bind(key.as_str())
                .bind(key_id.as_uuid())
                .fetch_optional(&self.pool)
                .await?;
        Ok(match recorded {
            Some((recorded, Some(revoked_at), _)) if recorded == key_id.as_uuid() => {
                Revocation::Replayed(RevokedKey { key_id, revoked_at })
            }
            // An API key the tenant does not have is unknown, whatever the
            // Idempotency-Key did before.
            Some((_, _, true)) => Revocation::KeyReused,
            Some(_) | None => Revocation::Unknown,
        })
    }

    /// Whether the database has tenant `tenant_id`.
    pub async fn tenant_exists(&self, tenant_id: TenantId) -> Result<bool, StoreError> {
        let (exists,): (bool,) = sqlx::query_as(SELECT_TENANT_EXISTS)
            .bind(tenant_id.as_uuid())
            .fetch_one(&self.pool)
            .await?;
        Ok(exists)
    }

    /// A tenant's keys, newest first (at most [`API_KEYS_LISTED_MAX`]), or
    /// `None` for an unknown tenant.
    pub async fn api_keys(
        &self,
        tenant_id: TenantId,
    ) -> Result<Option<Vec<ApiKeyInfo>>, StoreError> {
        if !self.tenant_exists(tenant_id).await? {
            return Ok(None);
        }
        type Row = (
            Uuid,
            String,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
        );
        let rows: Vec<Row> = sqlx::query_as(SELECT_KEYS)
            .bind(tenant_id.as_uuid())
            .bind(API_KEYS_LISTED_MAX)
            .fetch_all(&self.pool)
            .await?;
        Ok(Some(
            rows.into_iter()
                .map(
                    |(key_id, hint, created_at, last_used_at, revoked_at)| ApiKeyInfo {
                        key_id: KeyId::from_uuid(key_id),
                        hint,
                        created_at,
                        last_used_at,
                        revoked_at,
                    },
                )
                .collect(),
        ))
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
