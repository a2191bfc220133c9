-- Read tables of the subscriptions, quota and journal projections. Every one
-- is keyed by tenant first and under row-level security; every value comes
-- from events (times are the events' recorded_at), so a replay rebuilds them
-- exactly.

CREATE TABLE subscriptions (
    tenant_id            uuid        NOT NULL,
    plan_id              text        NOT NULL,
    plan                 jsonb       NOT NULL,
    status               text        NOT NULL CHECK (status IN ('active', 'cancelled')),
    trial_ends_at        timestamptz,
    period_start         timestamptz NOT NULL,
    period_end           timestamptz NOT NULL,
    cancel_at_period_end boolean     NOT NULL,
    cancelled_at         timestamptz,
    subscribed_at        timestamptz NOT NULL,
    last_tenant_seq      bigint      NOT NULL,
    CONSTRAINT subscriptions_pkey PRIMARY KEY (tenant_id)
);

COMMENT ON TABLE subscriptions IS 'The tenant''s subscription (subscriptions projection).';
COMMENT ON COLUMN subscriptions.tenant_id IS 'Tenant.';
COMMENT ON COLUMN subscriptions.plan_id IS 'Current (or last) plan.';
COMMENT ON COLUMN subscriptions.plan IS 'The plan''s terms as recorded in the events (limits, period).';
COMMENT ON COLUMN subscriptions.status IS 'active or cancelled.';
COMMENT ON COLUMN subscriptions.trial_ends_at IS 'End of the trial, if one was given.';
COMMENT ON COLUMN subscriptions.period_start IS 'Start of the current period.';
COMMENT ON COLUMN subscriptions.period_end IS 'End of the current period (when its grants expire).';
COMMENT ON COLUMN subscriptions.cancel_at_period_end IS 'Whether the subscription ends at the period end.';
COMMENT ON COLUMN subscriptions.cancelled_at IS 'When it was cancelled; NULL while active.';
COMMENT ON COLUMN subscriptions.subscribed_at IS 'When the current subscription began.';
COMMENT ON COLUMN subscriptions.last_tenant_seq IS 'tenant_seq of the last event applied to the row.';

SELECT ledger_secure_tenant_table('subscriptions');

CREATE TABLE grants (
    tenant_id       uuid        NOT NULL,
    grant_id        uuid        NOT NULL,
    quota           text        NOT NULL,
    account         text        NOT NULL,
    source          text        NOT NULL,
    amount          bigint,
    used            bigint      NOT NULL,
    priority        smallint    NOT NULL,
    effective_at    timestamptz NOT NULL,
    expires_at      timestamptz,
    issued_at       timestamptz NOT NULL,
    status          text        NOT NULL CHECK (status IN ('active', 'revoked', 'expired')),
    closed_at       timestamptz,
    breakage        bigint      NOT NULL,
    last_tenant_seq bigint      NOT NULL,
    CONSTRAINT grants_pkey PRIMARY KEY (tenant_id, grant_id)
);

CREATE INDEX grants_by_quota ON grants (tenant_id, quota, account);

COMMENT ON TABLE grants IS 'Every grant with its balance (quota projection).';
COMMENT ON COLUMN grants.tenant_id IS 'Tenant.';
COMMENT ON COLUMN grants.grant_id IS 'Grant id.';
COMMENT ON COLUMN grants.quota IS 'seats, runs or credits.';
COMMENT ON COLUMN grants.account IS 'Quota account holding the grant; empty for the tenant''s own quota.';
COMMENT ON COLUMN grants.source IS 'subscription, purchase or promocode.';
COMMENT ON COLUMN grants.amount IS 'Units granted; NULL for unlimited.';
COMMENT ON COLUMN grants.used IS 'Units consumed (runs, credits) or allocated now (seats).';
COMMENT ON COLUMN grants.priority IS 'Burn-down priority, 0 (first) to 100 (last).';
COMMENT ON COLUMN grants.effective_at IS 'When the grant becomes usable.';
COMMENT ON COLUMN grants.expires_at IS 'When it expires; NULL for never.';
COMMENT ON COLUMN grants.issued_at IS 'recorded_at of the issue.';
COMMENT ON COLUMN grants.status IS 'active, revoked or expired.';
COMMENT ON COLUMN grants.closed_at IS 'When it was revoked or expired.';
COMMENT ON COLUMN grants.breakage IS 'Unused units posted as breakage when it closed.';
COMMENT ON COLUMN grants.last_tenant_seq IS 'tenant_seq of the last event applied to the row.';

SELECT ledger_secure_tenant_table('grants');

CREATE TABLE quota_totals (
    tenant_id        uuid    NOT NULL,
    quota            text    NOT NULL,
    account          text    NOT NULL,
    granted          numeric NOT NULL,
    consumed         numeric NOT NULL,
    allocated        numeric NOT NULL,
    breakage         numeric NOT NULL,
    unlimited_grants integer NOT NULL,
    last_tenant_seq  bigint  NOT NULL,
    CONSTRAINT quota_totals_pkey PRIMARY KEY (tenant_id, quota, account)
);

COMMENT ON TABLE quota_totals IS 'Running totals per quota and holder (quota projection).';
COMMENT ON COLUMN quota_totals.tenant_id IS 'Tenant.';
COMMENT ON COLUMN quota_totals.quota IS 'seats, runs or credits.';
COMMENT ON COLUMN quota_totals.account IS 'Quota account; empty for the tenant''s own quota.';
COMMENT ON COLUMN quota_totals.granted IS 'Units of every finite grant ever issued.';
COMMENT ON COLUMN quota_totals.consumed IS 'Units consumed (runs, credits).';
COMMENT ON COLUMN quota_totals.allocated IS 'Seats allocated now.';
COMMENT ON COLUMN quota_totals.breakage IS 'Units lost to expiry and revocation.';
COMMENT ON COLUMN quota_totals.unlimited_grants IS 'Unlimited grants ever issued.';
COMMENT ON COLUMN quota_totals.last_tenant_seq IS 'tenant_seq of the last event applied to the row.';

SELECT ledger_secure_tenant_table('quota_totals');

CREATE TABLE journal_entries (
    tenant_id      uuid        NOT NULL,
    tenant_seq     bigint      NOT NULL,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    event_type     text        NOT NULL,
    reference      text,
    recorded_at    timestamptz NOT NULL,
    postings       jsonb       NOT NULL,
    CONSTRAINT journal_entries_pkey PRIMARY KEY (tenant_id, tenant_seq)
);

COMMENT ON TABLE journal_entries IS 'Every journal entry, one per event that posts one (journal projection); balances as of any tenant_seq sum its postings.';
COMMENT ON COLUMN journal_entries.tenant_id IS 'Tenant.';
COMMENT ON COLUMN journal_entries.tenant_seq IS 'tenant_seq of the event that posted the entry.';
COMMENT ON COLUMN journal_entries.aggregate_type IS 'Aggregate of that event.';
COMMENT ON COLUMN journal_entries.aggregate_id IS 'Aggregate id of that event.';
COMMENT ON COLUMN journal_entries.event_type IS 'Type of that event (QuotaConsumed, GrantIssued, ...).';
COMMENT ON COLUMN journal_entries.reference IS 'External reference of a consumption.';
COMMENT ON COLUMN journal_entries.recorded_at IS 'recorded_at of the event.';
COMMENT ON COLUMN journal_entries.postings IS 'The postings as recorded in the event.';

SELECT ledger_secure_tenant_table('journal_entries');

CREATE TABLE account_balances (
    tenant_id       uuid    NOT NULL,
    account         text    NOT NULL,
    asset           text    NOT NULL,
    account_type    text    NOT NULL,
    debits          numeric NOT NULL,
    credits         numeric NOT NULL,
    last_tenant_seq bigint  NOT NULL,
    CONSTRAINT account_balances_pkey PRIMARY KEY (tenant_id, account, asset)
);

COMMENT ON TABLE account_balances IS 'Current debits and credits of every account per asset (journal projection).';
COMMENT ON COLUMN account_balances.tenant_id IS 'Tenant.';
COMMENT ON COLUMN account_balances.account IS 'Account code.';
COMMENT ON COLUMN account_balances.asset IS 'Asset, CODE/SCALE.';
COMMENT ON COLUMN account_balances.account_type IS 'asset, liability, equity, revenue or expense.';
COMMENT ON COLUMN account_balances.debits IS 'Sum of debits.';
COMMENT ON COLUMN account_balances.credits IS 'Sum of credits.';
COMMENT ON COLUMN account_balances.last_tenant_seq IS 'tenant_seq of the last posting to the account.';

SELECT ledger_secure_tenant_table('account_balances');
