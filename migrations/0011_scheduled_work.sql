-- The scheduler: work that falls due at a time (a period renewal, a grant's
-- expiry, a hold's expiry), projected from the events that schedule it, and
-- the runs of the ticker that submits it.
CREATE TABLE scheduled_work (
    tenant_id        uuid        NOT NULL,
    work             text        NOT NULL,
    due_at           timestamptz NOT NULL,
    idempotency_key  text        NOT NULL,
    request_kind     text        NOT NULL,
    request          jsonb       NOT NULL,
    scheduled_seq    bigint      NOT NULL,
    settled_seq      bigint,
    CONSTRAINT scheduled_work_pkey PRIMARY KEY (tenant_id, work)
);

COMMENT ON TABLE scheduled_work IS 'Work falling due at a time, one row per thing scheduled (scheduled_work projection).';
COMMENT ON COLUMN scheduled_work.tenant_id IS 'Tenant.';
COMMENT ON COLUMN scheduled_work.work IS 'What is scheduled (subscription:renewal, grant:<id>:expiry, hold:<id>:expiry).';
COMMENT ON COLUMN scheduled_work.due_at IS 'When the request falls due; it decides at this time.';
COMMENT ON COLUMN scheduled_work.idempotency_key IS 'pm:scheduler:<event_id>:<n>, from the event that scheduled it.';
COMMENT ON COLUMN scheduled_work.request_kind IS 'Kind of the request submitted.';
COMMENT ON COLUMN scheduled_work.request IS 'The request submitted, carrying its due time.';
COMMENT ON COLUMN scheduled_work.scheduled_seq IS 'tenant_seq of the event that scheduled it.';
COMMENT ON COLUMN scheduled_work.settled_seq IS 'tenant_seq of the event that settled it (done, or made moot); null while open.';

SELECT ledger_secure_tenant_table('scheduled_work');

CREATE INDEX scheduled_work_open_due ON scheduled_work (due_at) WHERE settled_seq IS NULL;

CREATE TABLE scheduler_runs (
    tenant_id        uuid        NOT NULL,
    idempotency_key  text        NOT NULL,
    work             text        NOT NULL,
    leased_until     timestamptz NOT NULL,
    attempts         integer     NOT NULL,
    outcome          text        CHECK (outcome IN ('accepted', 'refused')),
    status           integer,
    error_code       text,
    last_error       text,
    tenant_seq       bigint,
    finished_at      timestamptz,
    CONSTRAINT scheduler_runs_pkey PRIMARY KEY (tenant_id, idempotency_key)
);

COMMENT ON TABLE scheduler_runs IS 'What the ticker did with each due request: its lease, attempts and final outcome.';
COMMENT ON COLUMN scheduler_runs.tenant_id IS 'Tenant.';
COMMENT ON COLUMN scheduler_runs.idempotency_key IS 'The idempotency key the request is submitted under.';
COMMENT ON COLUMN scheduler_runs.work IS 'What was scheduled.';
COMMENT ON COLUMN scheduler_runs.leased_until IS 'Until when the ticker that leased it has it; another takes it over after.';
COMMENT ON COLUMN scheduler_runs.attempts IS 'Times a ticker leased it.';
COMMENT ON COLUMN scheduler_runs.outcome IS 'accepted or refused (final); null until the pipeline answers.';
COMMENT ON COLUMN scheduler_runs.status IS 'HTTP status of the answer.';
COMMENT ON COLUMN scheduler_runs.error_code IS 'The refusal''s error code.';
COMMENT ON COLUMN scheduler_runs.last_error IS 'Why the last attempt got no answer (the database was down, ...).';
COMMENT ON COLUMN scheduler_runs.tenant_seq IS 'tenant_seq the answer reached.';
COMMENT ON COLUMN scheduler_runs.finished_at IS 'When the answer came (the ticker''s clock).';

SELECT ledger_secure_tenant_table('scheduler_runs');
