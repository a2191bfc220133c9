-- Read table of the `payments` projection (version 2): every break a
-- settlement import opened, open until it is resolved, for the breaks list
-- and the reconciliation's aging.
CREATE TABLE payment_breaks (
    tenant_id      uuid         NOT NULL,
    break_id       uuid         NOT NULL,
    settlement_id  text         NOT NULL,
    processor      text         NOT NULL,
    batch_id       text         NOT NULL,
    asset          text         NOT NULL,
    line           integer      NOT NULL CHECK (line >= 1),
    class          text         NOT NULL CHECK (class IN ('unknown_reference', 'amount_mismatch', 'currency_mismatch', 'duplicate')),
    line_type      text         NOT NULL,
    reference      text         NOT NULL,
    expected       bigint,
    actual         bigint       NOT NULL,
    settled_at     timestamptz  NOT NULL,
    opened_at      timestamptz  NOT NULL,
    opened_seq     bigint       NOT NULL,
    status         text         NOT NULL CHECK (status IN ('open', 'resolved')),
    resolution     text         CHECK (resolution IN ('write_off', 'adjust')),
    reason         text,
    resolved_at    timestamptz,
    resolved_seq   bigint,
    CONSTRAINT payment_breaks_pkey PRIMARY KEY (tenant_id, break_id),
    CONSTRAINT payment_breaks_resolved CHECK ((status = 'resolved') = (resolved_seq IS NOT NULL))
);

COMMENT ON TABLE payment_breaks IS 'Breaks of imported settlement batches, open or resolved (payments projection).';
COMMENT ON COLUMN payment_breaks.tenant_id IS 'Tenant.';
COMMENT ON COLUMN payment_breaks.break_id IS 'The break.';
COMMENT ON COLUMN payment_breaks.settlement_id IS 'Its batch, <processor>:<batch_id>.';
COMMENT ON COLUMN payment_breaks.processor IS 'The processor.';
COMMENT ON COLUMN payment_breaks.batch_id IS 'The processor''s batch id.';
COMMENT ON COLUMN payment_breaks.asset IS 'The batch''s asset.';
COMMENT ON COLUMN payment_breaks.line IS 'Its line in the batch, from 1.';
COMMENT ON COLUMN payment_breaks.class IS 'unknown_reference, amount_mismatch, currency_mismatch or duplicate.';
COMMENT ON COLUMN payment_breaks.line_type IS 'The line''s type (capture, refund, dispute, dispute_reversal).';
COMMENT ON COLUMN payment_breaks.reference IS 'The processor''s reference on the line.';
COMMENT ON COLUMN payment_breaks.expected IS 'The ledger''s gross for the reference, when it has one.';
COMMENT ON COLUMN payment_breaks.actual IS 'The processor''s gross.';
COMMENT ON COLUMN payment_breaks.settled_at IS 'When the processor settled the batch.';
COMMENT ON COLUMN payment_breaks.opened_at IS 'When the batch was imported.';
COMMENT ON COLUMN payment_breaks.opened_seq IS 'tenant_seq of the import.';
COMMENT ON COLUMN payment_breaks.status IS 'open or resolved.';
COMMENT ON COLUMN payment_breaks.resolution IS 'write_off or adjust, once resolved.';
COMMENT ON COLUMN payment_breaks.reason IS 'Why, as the resolution gave it.';
COMMENT ON COLUMN payment_breaks.resolved_at IS 'When it was resolved.';
COMMENT ON COLUMN payment_breaks.resolved_seq IS 'tenant_seq of the resolution.';
COMMENT ON COLUMN payment_documents.id IS 'Its id (a settlement''s is <processor>:<batch_id>, a gift card''s its code).';

SELECT ledger_secure_tenant_table('payment_breaks');

CREATE INDEX payment_breaks_status ON payment_breaks (tenant_id, status, break_id);
CREATE INDEX payment_breaks_settlement ON payment_breaks (tenant_id, settlement_id, line);
