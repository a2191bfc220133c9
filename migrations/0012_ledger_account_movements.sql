-- The accounts projection's running record: one row per account event that
-- moves a balance, so balances (posted and pending) as of any tenant_seq are
-- a sum over this table rather than a replay.
CREATE TABLE ledger_account_movements (
    tenant_id        uuid    NOT NULL,
    code             text    NOT NULL,
    asset            text    NOT NULL,
    tenant_seq       bigint  NOT NULL,
    debits_posted    bigint  NOT NULL,
    credits_posted   bigint  NOT NULL,
    debits_pending   bigint  NOT NULL,
    credits_pending  bigint  NOT NULL,
    CONSTRAINT ledger_account_movements_pkey PRIMARY KEY (tenant_id, code, asset, tenant_seq)
);

COMMENT ON TABLE ledger_account_movements IS 'What each account event changed of a journal account''s balance in one asset (accounts projection).';
COMMENT ON COLUMN ledger_account_movements.tenant_id IS 'Tenant.';
COMMENT ON COLUMN ledger_account_movements.code IS 'Account code.';
COMMENT ON COLUMN ledger_account_movements.asset IS 'Asset, CODE/SCALE.';
COMMENT ON COLUMN ledger_account_movements.tenant_seq IS 'tenant_seq of the account event.';
COMMENT ON COLUMN ledger_account_movements.debits_posted IS 'Debits posted by it.';
COMMENT ON COLUMN ledger_account_movements.credits_posted IS 'Credits posted by it.';
COMMENT ON COLUMN ledger_account_movements.debits_pending IS 'Change of pending debits (a hold reserving: positive; settling: negative).';
COMMENT ON COLUMN ledger_account_movements.credits_pending IS 'Change of pending credits.';

SELECT ledger_secure_tenant_table('ledger_account_movements');

CREATE INDEX ledger_account_movements_seq ON ledger_account_movements (tenant_id, tenant_seq);
