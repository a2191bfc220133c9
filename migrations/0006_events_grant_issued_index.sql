-- Revoking a grant names only the grant; the command finds the quota that
-- holds it from its GrantIssued event in the event store (the source of
-- truth), so it works while the read tables lag or their workers are stopped.
-- This index serves that lookup: per tenant, the grant id of every
-- GrantIssued event (and nothing else), so it stays as small as the grants.
CREATE INDEX events_grant_issued
    ON events (tenant_id, (payload #>> '{GrantIssued,terms,grant_id}'))
    WHERE aggregate_type = 'quota' AND event_type = 'GrantIssued';

COMMENT ON INDEX events_grant_issued IS
    'Finds the quota aggregate holding a grant (by tenant and grant id) from its GrantIssued event.';
