-- A document (or a break) is looked up by its key far more often than
-- listed by status: each projection batch reads every document its events
-- continue, by (tenant_id, kind, id). The status indexes lead with the same
-- columns and end with the id, so a plan made while a table is empty (a
-- fresh ledger, a rebuild's shadow table, verify's scratch table) cannot
-- tell them from the primary key, and PostgreSQL then took the status
-- index: it matches the id only by reading every index entry of the tenant
-- and kind, one lookup costing more the more documents there are. Under the
-- payments workload that read was a sixth of the database's time.
--
-- Made partial on a predicate every row meets (status is NOT NULL), the
-- indexes hold the same rows, but only a query that compares the status
-- (a strict comparison implies `status IS NOT NULL`) may use them; a lookup
-- by key can only take the primary key.

DROP INDEX payment_documents_status;
CREATE INDEX payment_documents_status ON payment_documents (tenant_id, kind, status, id)
    WHERE status IS NOT NULL;

DROP INDEX commitment_documents_status;
CREATE INDEX commitment_documents_status ON commitment_documents (tenant_id, kind, status, id)
    WHERE status IS NOT NULL;

DROP INDEX compensation_documents_status;
CREATE INDEX compensation_documents_status ON compensation_documents (tenant_id, kind, status, id)
    WHERE status IS NOT NULL;

DROP INDEX payment_breaks_status;
CREATE INDEX payment_breaks_status ON payment_breaks (tenant_id, status, break_id)
    WHERE status IS NOT NULL;
