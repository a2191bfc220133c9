-- Projection bookkeeping and the first read table.

CREATE TABLE projections (
    projection text        NOT NULL,
    version    integer     NOT NULL,
    state      text        NOT NULL CHECK (state IN ('live', 'rebuilding', 'failed')),
    error      text,
    updated_at timestamptz NOT NULL,
    CONSTRAINT projections_pkey PRIMARY KEY (projection)
);

COMMENT ON TABLE projections IS 'Every projection the code has registered: the version its read tables were built by, and its state. Not tenant data.';
COMMENT ON COLUMN projections.projection IS 'Name of the projection.';
COMMENT ON COLUMN projections.version IS 'Version of the code that built the live read tables; a different version in code triggers a rebuild.';
COMMENT ON COLUMN projections.state IS 'live, rebuilding (shadow tables being built), or failed (the last batch failed; see error).';
COMMENT ON COLUMN projections.error IS 'Last error of a failed batch or rebuild; NULL when healthy.';
COMMENT ON COLUMN projections.updated_at IS 'When the row last changed.';

CREATE TABLE projection_checkpoints (
    tenant_id        uuid        NOT NULL,
    projection       text        NOT NULL,
    last_seq         bigint      NOT NULL CHECK (last_seq >= 0),
    last_recorded_at timestamptz,
    updated_at       timestamptz NOT NULL,
    CONSTRAINT projection_checkpoints_pkey PRIMARY KEY (tenant_id, projection)
);

COMMENT ON TABLE projection_checkpoints IS 'How far each projection has applied each tenant''s events; advanced in the same transaction as the read-table writes. Its row lock is the per-partition lease of the worker applying a batch.';
COMMENT ON COLUMN projection_checkpoints.tenant_id IS 'Tenant (the partition).';
COMMENT ON COLUMN projection_checkpoints.projection IS 'Projection name.';
COMMENT ON COLUMN projection_checkpoints.last_seq IS 'tenant_seq of the last event applied (0 before the first).';
COMMENT ON COLUMN projection_checkpoints.last_recorded_at IS 'recorded_at of the last event applied.';
COMMENT ON COLUMN projection_checkpoints.updated_at IS 'When a batch last committed.';

SELECT ledger_secure_tenant_table('projection_checkpoints');

CREATE TABLE stream_index (
    tenant_id       uuid        NOT NULL,
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    version         bigint      NOT NULL CHECK (version > 0),
    last_tenant_seq bigint      NOT NULL CHECK (last_tenant_seq > 0),
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CONSTRAINT stream_index_pkey PRIMARY KEY (tenant_id, aggregate_type, aggregate_id)
);

COMMENT ON TABLE stream_index IS 'Read table of the stream_index projection: every aggregate (event stream) of a tenant.';
COMMENT ON COLUMN stream_index.tenant_id IS 'Tenant of the stream.';
COMMENT ON COLUMN stream_index.aggregate_type IS 'Aggregate type of the stream.';
COMMENT ON COLUMN stream_index.aggregate_id IS 'Aggregate id of the stream.';
COMMENT ON COLUMN stream_index.version IS 'aggregate_seq of the stream''s last event (its event count).';
COMMENT ON COLUMN stream_index.last_tenant_seq IS 'tenant_seq of the stream''s last event.';
COMMENT ON COLUMN stream_index.created_at IS 'recorded_at of the stream''s first event.';
COMMENT ON COLUMN stream_index.updated_at IS 'recorded_at of the stream''s last event.';

SELECT ledger_secure_tenant_table('stream_index');
