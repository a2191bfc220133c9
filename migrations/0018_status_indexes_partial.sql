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
--
-- The old indexes are found by their columns, not their names: a rebuild
-- moves in a shadow table whose indexes PostgreSQL named itself.

DO $$
DECLARE
    old regclass;
BEGIN
    FOR old IN
        SELECT i.indexrelid::regclass
        FROM pg_index i
        WHERE i.indrelid IN ('payment_documents'::regclass, 'commitment_documents'::regclass,
                             'compensation_documents'::regclass, 'payment_breaks'::regclass)
          AND NOT i.indisprimary
          AND i.indpred IS NULL
          AND ARRAY(SELECT a.attname::text
                    FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, position)
                    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                    ORDER BY k.position)
              IN (ARRAY['tenant_id', 'kind', 'status', 'id'], ARRAY['tenant_id', 'status', 'break_id'])
    LOOP
        EXECUTE format('DROP INDEX %s', old);
    END LOOP;
END
$$;

CREATE INDEX payment_documents_status ON payment_documents (tenant_id, kind, status, id)
    WHERE status IS NOT NULL;
CREATE INDEX commitment_documents_status ON commitment_documents (tenant_id, kind, status, id)
    WHERE status IS NOT NULL;
CREATE INDEX compensation_documents_status ON compensation_documents (tenant_id, kind, status, id)
    WHERE status IS NOT NULL;
CREATE INDEX payment_breaks_status ON payment_breaks (tenant_id, status, break_id)
    WHERE status IS NOT NULL;
