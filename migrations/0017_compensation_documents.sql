-- Read table of the `compensation` projection: each plan, role, payee
-- (with its ledger of lines) and pay run as its events leave it (the
-- aggregate's state as a document), with its status for lists.
CREATE TABLE compensation_documents (
    tenant_id        uuid    NOT NULL,
    kind             text    NOT NULL CHECK (kind IN ('plan', 'role', 'payee', 'pay_run')),
    id               text    NOT NULL,
    status           text    NOT NULL,
    created_seq      bigint  NOT NULL,
    last_tenant_seq  bigint  NOT NULL,
    state            jsonb   NOT NULL,
    CONSTRAINT compensation_documents_pkey PRIMARY KEY (tenant_id, kind, id)
);

COMMENT ON TABLE compensation_documents IS 'Plans, roles, payees and pay runs as their events leave them (compensation projection).';
COMMENT ON COLUMN compensation_documents.tenant_id IS 'Tenant.';
COMMENT ON COLUMN compensation_documents.kind IS 'plan, role, payee or pay_run.';
COMMENT ON COLUMN compensation_documents.id IS 'The plan, role or payee id, or the pay run id.';
COMMENT ON COLUMN compensation_documents.status IS 'A pay run''s draft, approved or paid; active for the others.';
COMMENT ON COLUMN compensation_documents.created_seq IS 'tenant_seq of its first event.';
COMMENT ON COLUMN compensation_documents.last_tenant_seq IS 'tenant_seq of its last event.';
COMMENT ON COLUMN compensation_documents.state IS 'The aggregate''s state after its last event.';

SELECT ledger_secure_tenant_table('compensation_documents');

CREATE INDEX compensation_documents_status ON compensation_documents (tenant_id, kind, status, id);
