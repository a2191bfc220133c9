-- Read tables of the `accounts` projection: every account opened through
-- the journal (its type and flags as opened) and its balances per asset,
-- posted and pending (holds), from the accounts' own events.
CREATE TABLE ledger_accounts (
    tenant_id                       uuid    NOT NULL,
    code                            text    NOT NULL,
    account_type                    text    NOT NULL,
    debits_must_not_exceed_credits  boolean NOT NULL,
    credits_must_not_exceed_debits  boolean NOT NULL,
    opened_tenant_seq               bigint  NOT NULL,
    CONSTRAINT ledger_accounts_pkey PRIMARY KEY (tenant_id, code)
);

COMMENT ON TABLE ledger_accounts IS 'Accounts opened through the journal, with their type and flags (accounts projection).';
COMMENT ON COLUMN ledger_accounts.tenant_id IS 'Tenant.';
COMMENT ON COLUMN ledger_accounts.code IS 'Account code.';
COMMENT ON COLUMN ledger_accounts.account_type IS 'asset, liability, equity, revenue or expense.';
COMMENT ON COLUMN ledger_accounts.debits_must_not_exceed_credits IS 'No overdraft: debits, pending ones included, never pass posted credits.';
COMMENT ON COLUMN ledger_accounts.credits_must_not_exceed_debits IS 'Credits, pending ones included, never pass posted debits.';
COMMENT ON COLUMN ledger_accounts.opened_tenant_seq IS 'tenant_seq of the opening.';

SELECT ledger_secure_tenant_table('ledger_accounts');

CREATE TABLE ledger_account_balances (
    tenant_id       uuid    NOT NULL,
    code            text    NOT NULL,
    asset           text    NOT NULL,
    debits_posted   numeric NOT NULL,
    credits_posted  numeric NOT NULL,
    debits_pending  numeric NOT NULL,
    credits_pending numeric NOT NULL,
    last_tenant_seq bigint  NOT NULL,
    CONSTRAINT ledger_account_balances_pkey PRIMARY KEY (tenant_id, code, asset)
);

COMMENT ON TABLE ledger_account_balances IS 'Posted and pending amounts of every journal account per asset (accounts projection).';
COMMENT ON COLUMN ledger_account_balances.tenant_id IS 'Tenant.';
COMMENT ON COLUMN ledger_account_balances.code IS 'Account code.';
COMMENT ON COLUMN ledger_account_balances.asset IS 'Asset, CODE/SCALE.';
COMMENT ON COLUMN ledger_account_balances.debits_posted IS 'Sum of posted debits.';
COMMENT ON COLUMN ledger_account_balances.credits_posted IS 'Sum of posted credits.';
COMMENT ON COLUMN ledger_account_balances.debits_pending IS 'Debits reserved by open holds.';
COMMENT ON COLUMN ledger_account_balances.credits_pending IS 'Credits reserved by open holds.';
COMMENT ON COLUMN ledger_account_balances.last_tenant_seq IS 'tenant_seq of the account''s last event.';

SELECT ledger_secure_tenant_table('ledger_account_balances');
