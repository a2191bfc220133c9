-- A break may be resolved by matching: its line settles, after all, the
-- item its reference names (the item came to be after the batch was
-- imported, or came to owe the line's amount, as a dispute won).
--
-- The old check is found by what it checks, not by its name: a rebuild
-- moves in a shadow table whose constraints PostgreSQL named itself.

DO $$
DECLARE
    old name;
BEGIN
    FOR old IN
        SELECT c.conname
        FROM pg_constraint c
        WHERE c.conrelid = 'payment_breaks'::regclass
          AND c.contype = 'c'
          AND pg_get_constraintdef(c.oid) LIKE '%resolution%'
    LOOP
        EXECUTE format('ALTER TABLE payment_breaks DROP CONSTRAINT %I', old);
    END LOOP;
END $$;

ALTER TABLE payment_breaks ADD CONSTRAINT payment_breaks_resolution_check
    CHECK (resolution IN ('write_off', 'adjust', 'match'));

COMMENT ON COLUMN payment_breaks.resolution IS 'write_off, adjust or match, once resolved.';
