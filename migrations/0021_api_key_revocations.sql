-- Revoking an API key over HTTP is recorded by its Idempotency-Key, per
-- tenant, as issuing one is: a retry answers as the first did (marked
-- replayed), and the same key naming another API key is refused.
CREATE TABLE api_key_revocations (
    tenant_id       uuid NOT NULL,
    idempotency_key text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    key_id          uuid NOT NULL,
    CONSTRAINT api_key_revocations_pkey PRIMARY KEY (tenant_id, idempotency_key)
);

COMMENT ON TABLE api_key_revocations IS
    'The Idempotency-Key of each revocation request over HTTP, and the API key it revoked.';
COMMENT ON COLUMN api_key_revocations.tenant_id IS 'Tenant of the revoked key.';
COMMENT ON COLUMN api_key_revocations.idempotency_key IS 'Idempotency-Key of the revoking request.';
COMMENT ON COLUMN api_key_revocations.key_id IS 'The API key it revoked (api_keys.key_id).';
