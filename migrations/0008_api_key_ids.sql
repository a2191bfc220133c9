-- API keys get a stable id, so an operator can list and revoke a key without
-- ever holding it again, and the time of their last use, so a key no client
-- uses any more can be found and revoked.

-- Existing keys get a random id (the volatile default is evaluated per row);
-- keys issued from now on get a time-ordered id from the application.
ALTER TABLE api_keys ADD COLUMN key_id uuid NOT NULL DEFAULT gen_random_uuid();
ALTER TABLE api_keys ADD COLUMN last_used_at timestamptz;

-- Keys are revoked and listed by id, per tenant.
CREATE UNIQUE INDEX api_keys_key_id ON api_keys (tenant_id, key_id);

COMMENT ON COLUMN api_keys.key_id IS
    'Stable identifier of the key (not secret): how operators list and revoke it.';
COMMENT ON COLUMN api_keys.last_used_at IS
    'When the key last authenticated a request, to within the server''s key cache lifetime (written at most once per that period); NULL if never used.';
