-- Read table of the `escrow` projection: each commitment as its events
-- leave it (the aggregate's state as a document), with its status for
-- lists.
CREATE TABLE commitment_documents (
    tenant_id        uuid    NOT NULL,
    kind             text    NOT NULL CHECK (kind = 'commitment'),
    id               text    NOT NULL,
    status           text    NOT NULL,
    created_seq      bigint  NOT NULL,
    last_tenant_seq  bigint  NOT NULL,
    state            jsonb   NOT NULL,
    CONSTRAINT commitment_documents_pkey PRIMARY KEY (tenant_id, kind, id)
);

COMMENT ON TABLE commitment_documents IS 'Commitments as their events leave them (escrow projection).';
COMMENT ON COLUMN commitment_documents.tenant_id IS 'Tenant.';
COMMENT ON COLUMN commitment_documents.kind IS 'commitment.';
COMMENT ON COLUMN commitment_documents.id IS 'The commitment id.';
COMMENT ON COLUMN commitment_documents.status IS 'awaiting_funding, funded, completed, canceled or expired.';
COMMENT ON COLUMN commitment_documents.created_seq IS 'tenant_seq of its first event.';
COMMENT ON COLUMN commitment_documents.last_tenant_seq IS 'tenant_seq of its last event.';
COMMENT ON COLUMN commitment_documents.state IS 'The aggregate''s state after its last event.';

SELECT ledger_secure_tenant_table('commitment_documents');

CREATE INDEX commitment_documents_status ON commitment_documents (tenant_id, kind, status, id);
