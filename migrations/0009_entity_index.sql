-- Entities a request creates inside an aggregate (a grant inside a quota,
-- later a capture inside a payment) are found by their own id through this
-- index, written by the append in the same statement as the events that
-- create them. A route that names only the child (`/v1/grants/{id}/revoke`)
-- finds the aggregate to decide against here: the event store is the
-- source of truth, so this answers while read tables lag.
CREATE TABLE entity_index (
    tenant_id      uuid   NOT NULL,
    entity_type    text   NOT NULL,
    entity_id      text   NOT NULL,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    tenant_seq     bigint NOT NULL CHECK (tenant_seq > 0),
    CONSTRAINT entity_index_pkey PRIMARY KEY (tenant_id, entity_type, entity_id)
);

COMMENT ON TABLE entity_index IS 'The aggregate holding each entity a request created, by the entity''s own id; written with its events.';
COMMENT ON COLUMN entity_index.tenant_id IS 'Tenant owning the entity.';
COMMENT ON COLUMN entity_index.entity_type IS 'What the entity is (grant, ...).';
COMMENT ON COLUMN entity_index.entity_id IS 'The entity''s id, as the API names it.';
COMMENT ON COLUMN entity_index.aggregate_type IS 'Type of the aggregate holding it.';
COMMENT ON COLUMN entity_index.aggregate_id IS 'Id of the aggregate holding it.';
COMMENT ON COLUMN entity_index.tenant_seq IS 'First event of the request that created it.';

CREATE TRIGGER entity_index_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON entity_index
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

REVOKE UPDATE, DELETE, TRUNCATE ON entity_index FROM PUBLIC;
SELECT ledger_secure_tenant_table('entity_index');

-- Every grant issued before this index existed.
INSERT INTO entity_index (tenant_id, entity_type, entity_id, aggregate_type, aggregate_id, tenant_seq)
SELECT tenant_id, 'grant', payload #>> '{GrantIssued,terms,grant_id}', aggregate_type, aggregate_id, min(tenant_seq)
FROM events
WHERE aggregate_type = 'quota' AND event_type = 'GrantIssued'
GROUP BY tenant_id, payload #>> '{GrantIssued,terms,grant_id}', aggregate_type, aggregate_id
ON CONFLICT DO NOTHING;

-- The lookup it replaces.
DROP INDEX events_grant_issued;
