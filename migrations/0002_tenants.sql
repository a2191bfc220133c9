-- Tenants and their API keys.

-- The tenants table is the one table not keyed by tenant: it is the list of
-- tenants (on a distributed deployment, a reference table).
CREATE TABLE tenants (
    tenant_id            uuid        NOT NULL,
    name                 text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at           timestamptz NOT NULL,
    creation_key         text        CHECK (length(creation_key) BETWEEN 1 AND 255),
    creation_fingerprint bytea       CHECK (length(creation_fingerprint) = 32),
    CONSTRAINT tenants_pkey PRIMARY KEY (tenant_id)
);

-- Tenant creation over HTTP is idempotent by its Idempotency-Key.
CREATE UNIQUE INDEX tenants_creation_key ON tenants (creation_key);

COMMENT ON TABLE tenants IS 'One row per business using the ledger.';
COMMENT ON COLUMN tenants.tenant_id IS 'Tenant identifier (uuid v7); leads every key in the schema.';
COMMENT ON COLUMN tenants.name IS 'Human-readable name given at creation.';
COMMENT ON COLUMN tenants.created_at IS 'When the tenant was created.';
COMMENT ON COLUMN tenants.creation_key IS 'Idempotency-Key of the request that created the tenant; NULL when created from the CLI.';
COMMENT ON COLUMN tenants.creation_fingerprint IS 'blake3 of the creating request; the same key with another request is refused.';

CREATE TABLE api_keys (
    tenant_id  uuid        NOT NULL,
    key_digest bytea       NOT NULL CHECK (length(key_digest) = 32),
    key_hint   text        NOT NULL,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz,
    issue_key  text        CHECK (length(issue_key) BETWEEN 1 AND 255),
    CONSTRAINT api_keys_pkey PRIMARY KEY (tenant_id, key_digest)
);

-- Issuing a key over HTTP is idempotent by its Idempotency-Key, per tenant.
CREATE UNIQUE INDEX api_keys_issue_key ON api_keys (tenant_id, issue_key);

COMMENT ON TABLE api_keys IS 'API keys of tenants. The key itself is shown once and never stored.';
COMMENT ON COLUMN api_keys.tenant_id IS 'Tenant the key authenticates; also embedded in the key text.';
COMMENT ON COLUMN api_keys.key_digest IS 'blake3 digest of the whole key text.';
COMMENT ON COLUMN api_keys.key_hint IS 'Last four characters of the key, to tell keys apart.';
COMMENT ON COLUMN api_keys.created_at IS 'When the key was issued.';
COMMENT ON COLUMN api_keys.revoked_at IS 'When the key was revoked; NULL while it is valid.';
COMMENT ON COLUMN api_keys.issue_key IS 'Idempotency-Key of the request that issued the key; NULL for a tenant''s first key.';

