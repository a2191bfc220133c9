-- The burn-down order ranks grants by issue order ("oldest"), never by the
-- client-given effective_at; the read side lists active grants in that order
-- too, so it needs the issue's tenant_seq (recorded_at can tie).
ALTER TABLE grants ADD COLUMN issued_seq bigint NOT NULL DEFAULT 0;

COMMENT ON COLUMN grants.issued_seq IS
    'tenant_seq of the GrantIssued event: the issue order used by burn-down (0 until the quota projection, version 2, rebuilds the row).';
