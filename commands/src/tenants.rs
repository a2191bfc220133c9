//! Tenant administration from the command line (`ledger tenant`): creating a
//! tenant, listing and revoking its API keys. Each answers the text to print,
//! readable or as JSON.

use aggregates::TenantId;
use chrono::{DateTime, Utc};
use eventstore::{EventStore, KeyId};
use std::error::Error;

/// Creates a tenant named `name`: its id, its API key (shown only now) and
/// the key's id.
pub async fn create(store: &EventStore, name: &str, json: bool) -> Result<String, Box<dyn Error>> {
    let tenant = store.create_tenant(name).await?;
    if json {
        return Ok(format!(
            "{{\"tenant_id\": \"{}\", \"api_key\": \"{}\", \"key_id\": \"{}\"}}\n",
            tenant.tenant_id, tenant.api_key, tenant.key_id
        ));
    }
    let mut out = format!("created tenant {}\n", tenant.name);
    out.push_str(&format!("  tenant_id: {}\n", tenant.tenant_id));
    out.push_str(&format!("  api_key:   {}\n", tenant.api_key));
    out.push_str(&format!("  key_id:    {}\n", tenant.key_id));
    out.push_str("The API key is shown only now; store it safely.\n");
    Ok(out)
}

/// A tenant's API keys, newest first (never a key itself).
pub async fn keys(
    store: &EventStore,
    tenant_id: TenantId,
    json: bool,
) -> Result<String, Box<dyn Error>> {
    let keys = store
        .api_keys(tenant_id)
        .await?
        .ok_or_else(|| format!("no tenant {tenant_id}"))?;
    if json {
        let list = serde_json::json!({"tenant_id": tenant_id.to_string(), "keys": keys});
        return Ok(format!("{}\n", serde_json::to_string(&list)?));
    }
    let mut out = String::new();
    for key in keys {
        let time = |at: Option<DateTime<Utc>>| {
            at.map_or_else(|| "never".to_string(), |at| at.to_rfc3339())
        };
        out.push_str(&format!(
            "{}  ...{}  created {}  last used {}  revoked {}\n",
            key.key_id,
            key.hint,
            key.created_at.to_rfc3339(),
            time(key.last_used_at),
            time(key.revoked_at)
        ));
    }
    Ok(out)
}

/// Revokes a tenant's API key (again: answers the first revocation).
pub async fn revoke_key(
    store: &EventStore,
    tenant_id: TenantId,
    key_id: KeyId,
    json: bool,
) -> Result<String, Box<dyn Error>> {
    let revoked = match store.revoke_api_key(tenant_id, key_id, None).await? {
        eventstore::Revocation::Revoked(revoked) | eventstore::Revocation::Replayed(revoked) => {
            revoked
        }
        eventstore::Revocation::KeyReused | eventstore::Revocation::Unknown => {
            return Err(format!("tenant {tenant_id} has no API key {key_id}").into())
        }
    };
    if json {
        let answer = serde_json::json!({
            "tenant_id": tenant_id.to_string(),
            "key_id": revoked.key_id,
            "revoked_at": revoked.revoked_at,
        });
        return Ok(format!("{}\n", serde_json::to_string(&answer)?));
    }
    Ok(format!(
        "revoked API key {} of tenant {tenant_id} at {}\n",
        revoked.key_id,
        revoked.revoked_at.to_rfc3339()
    ))
}
