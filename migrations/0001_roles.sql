-- Roles and helpers for tenant isolation.
--
-- Two roles, both without LOGIN:
-- * ledger_reader: what the HTTP API reads under (`SET LOCAL ROLE`), with no
--   BYPASSRLS, so row-level security filters every read to the tenant named in
--   `app.tenant_id`, even when the configured connection is a superuser.
-- * ledger_service: members see every tenant's rows. The role that runs the
--   migrations becomes a member, so the ledger's own writers and workers are
--   not filtered; they scope every query by tenant themselves.
-- Roles are cluster-wide: create them only when missing, and tolerate a
-- concurrent migration of another database creating them first.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_reader') THEN
        CREATE ROLE ledger_reader NOLOGIN NOBYPASSRLS;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'ledger_service') THEN
        CREATE ROLE ledger_service NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT ledger_reader TO CURRENT_USER;
GRANT ledger_service TO CURRENT_USER;

-- The tenant the current transaction is scoped to, or NULL when none is set.
CREATE FUNCTION ledger_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$;

COMMENT ON FUNCTION ledger_current_tenant() IS
    'The tenant named by the app.tenant_id setting (SET LOCAL inside a read transaction), or NULL.';

-- Puts a tenant-keyed table under row-level security: ENABLE and FORCE (so the
-- table owner is filtered too), a policy limiting every command to the current
-- tenant, a policy letting ledger_service members through, and SELECT for the
-- reader role. Used for the event table and every read table, including the
-- shadow tables a projection rebuild creates.
CREATE FUNCTION ledger_secure_tenant_table(target regclass) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', target);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', target);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s USING (tenant_id = ledger_current_tenant()) '
        'WITH CHECK (tenant_id = ledger_current_tenant())', target);
    EXECUTE format(
        'CREATE POLICY service_access ON %s TO ledger_service USING (true) WITH CHECK (true)',
        target);
    EXECUTE format('GRANT SELECT ON %s TO ledger_reader', target);
END
$$;

COMMENT ON FUNCTION ledger_secure_tenant_table(regclass) IS
    'Enables and forces row-level security on a tenant-keyed table with the standard policies.';

-- Rejects any change to an append-only table (statement level, so even a
-- statement matching no rows is refused).
CREATE FUNCTION ledger_reject_change() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

COMMENT ON FUNCTION ledger_reject_change() IS
    'Trigger function refusing UPDATE, DELETE and TRUNCATE on append-only tables.';
