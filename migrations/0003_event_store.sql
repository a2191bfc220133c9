-- The event store: immutable, hash-chained events, the per-tenant chain head,
-- idempotency records and snapshots.

CREATE TABLE events (
    tenant_id       uuid        NOT NULL,
    tenant_seq      bigint      NOT NULL CHECK (tenant_seq > 0),
    global_position bigint      GENERATED ALWAYS AS IDENTITY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    aggregate_type  text        NOT NULL,
    aggregate_id    text        NOT NULL,
    aggregate_seq   bigint      NOT NULL CHECK (aggregate_seq > 0),
    event_id        uuid        NOT NULL,
    event_type      text        NOT NULL,
    event_version   text        NOT NULL,
    payload         jsonb       NOT NULL,
    metadata        jsonb       NOT NULL,
    idempotency_key text        NOT NULL,
    recorded_at     timestamptz NOT NULL,
    prev_hash       bytea       NOT NULL CHECK (length(prev_hash) = 32),
    hash            bytea       NOT NULL CHECK (length(hash) = 32),
    CONSTRAINT events_pkey PRIMARY KEY (tenant_id, tenant_seq),
    CONSTRAINT events_aggregate_seq_key UNIQUE (tenant_id, aggregate_type, aggregate_id, aggregate_seq)
);

-- Cross-tenant readers follow (transaction_id, global_position) and only read
-- below the oldest running transaction, so a late commit is never skipped.
CREATE INDEX events_commit_order ON events (transaction_id, global_position);

COMMENT ON TABLE events IS 'Append-only, hash-chained event log of every tenant.';
COMMENT ON COLUMN events.tenant_id IS 'Tenant the event belongs to.';
COMMENT ON COLUMN events.tenant_seq IS 'Gapless per-tenant sequence (1, 2, 3 ...) assigned in commit order under the chain head lock.';
COMMENT ON COLUMN events.global_position IS 'Store-wide insertion position; with transaction_id it orders cross-tenant reads.';
COMMENT ON COLUMN events.transaction_id IS 'Id of the inserting transaction; readers only read below pg_snapshot_xmin so late commits are never skipped.';
COMMENT ON COLUMN events.aggregate_type IS 'Type of the aggregate the event belongs to (subscription, quota, ...).';
COMMENT ON COLUMN events.aggregate_id IS 'Id of the aggregate within the tenant.';
COMMENT ON COLUMN events.aggregate_seq IS 'Per-aggregate sequence (1, 2, 3 ...); unique per aggregate for optimistic concurrency.';
COMMENT ON COLUMN events.event_id IS 'Unique id of the event (uuid v7).';
COMMENT ON COLUMN events.event_type IS 'Past-tense name of the event (QuotaConsumed, ...).';
COMMENT ON COLUMN events.event_version IS 'Schema version of the payload; older versions are upcast on read.';
COMMENT ON COLUMN events.payload IS 'Event data as JSON; its jsonb text form is what the chain hashes.';
COMMENT ON COLUMN events.metadata IS 'Event metadata as JSON (command name, causation, ...).';
COMMENT ON COLUMN events.idempotency_key IS 'Idempotency key of the command that appended the event.';
COMMENT ON COLUMN events.recorded_at IS 'Time the command was accepted; never decreases along tenant_seq.';
COMMENT ON COLUMN events.prev_hash IS 'Hash of the previous event of the tenant (32 zero bytes for tenant_seq 1).';
COMMENT ON COLUMN events.hash IS 'blake3(prev_hash || canonical encoding of this row).';

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

REVOKE UPDATE, DELETE, TRUNCATE ON events FROM PUBLIC;
SELECT ledger_secure_tenant_table('events');

CREATE TABLE chain_heads (
    tenant_id        uuid        NOT NULL,
    last_seq         bigint      NOT NULL CHECK (last_seq >= 0),
    last_hash        bytea       NOT NULL CHECK (length(last_hash) = 32),
    last_recorded_at timestamptz,
    updated_at       timestamptz NOT NULL,
    CONSTRAINT chain_heads_pkey PRIMARY KEY (tenant_id)
);

COMMENT ON TABLE chain_heads IS 'Head of each tenant''s hash chain; its row lock serialises the tenant''s appends.';
COMMENT ON COLUMN chain_heads.tenant_id IS 'Tenant whose chain this is.';
COMMENT ON COLUMN chain_heads.last_seq IS 'tenant_seq of the tenant''s last event (0 before the first).';
COMMENT ON COLUMN chain_heads.last_hash IS 'hash of the tenant''s last event (32 zero bytes before the first).';
COMMENT ON COLUMN chain_heads.last_recorded_at IS 'recorded_at of the last event; the next one is never earlier.';
COMMENT ON COLUMN chain_heads.updated_at IS 'Server time of the last append.';

-- A head only moves forward and is never removed.
CREATE FUNCTION ledger_chain_head_forward() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NEW.tenant_id <> OLD.tenant_id OR NEW.last_seq < OLD.last_seq THEN
        RAISE EXCEPTION 'chain head of tenant % may only move forward', OLD.tenant_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER chain_heads_forward_only
    BEFORE UPDATE ON chain_heads
    FOR EACH ROW EXECUTE FUNCTION ledger_chain_head_forward();

CREATE TRIGGER chain_heads_never_removed
    BEFORE DELETE OR TRUNCATE ON chain_heads
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

CREATE TABLE idempotency_records (
    tenant_id       uuid        NOT NULL,
    idempotency_key text        NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 255),
    fingerprint     bytea       NOT NULL CHECK (length(fingerprint) = 32),
    status          smallint    NOT NULL,
    outcome         jsonb       NOT NULL,
    first_seq       bigint,
    tenant_seq      bigint      NOT NULL,
    recorded_at     timestamptz NOT NULL,
    CONSTRAINT idempotency_records_pkey PRIMARY KEY (tenant_id, idempotency_key)
);

COMMENT ON TABLE idempotency_records IS 'Outcome of every command by idempotency key, written with its events; kept for the life of the ledger.';
COMMENT ON COLUMN idempotency_records.tenant_id IS 'Tenant that sent the command.';
COMMENT ON COLUMN idempotency_records.idempotency_key IS 'The command''s Idempotency-Key (1-255 printable ASCII).';
COMMENT ON COLUMN idempotency_records.fingerprint IS 'blake3 of the canonical command; a reused key with another fingerprint is refused.';
COMMENT ON COLUMN idempotency_records.status IS 'Status of the outcome (201/200 accepted, 4xx rejected).';
COMMENT ON COLUMN idempotency_records.outcome IS 'Reply body (accepted) or error body (rejected), replayed verbatim.';
COMMENT ON COLUMN idempotency_records.first_seq IS 'tenant_seq of the first event the command appended; NULL when it appended none.';
COMMENT ON COLUMN idempotency_records.tenant_seq IS 'tenant_seq the ledger had reached when the command completed (its last event, if any).';
COMMENT ON COLUMN idempotency_records.recorded_at IS 'Time the command was accepted.';

CREATE TRIGGER idempotency_records_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON idempotency_records
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_reject_change();

CREATE TABLE snapshots (
    tenant_id        uuid        NOT NULL,
    aggregate_type   text        NOT NULL,
    aggregate_id     text        NOT NULL,
    last_sequence    bigint      NOT NULL CHECK (last_sequence > 0),
    snapshot_version bigint      NOT NULL,
    payload          jsonb       NOT NULL,
    taken_at         timestamptz NOT NULL,
    CONSTRAINT snapshots_pkey PRIMARY KEY (tenant_id, aggregate_type, aggregate_id)
);

COMMENT ON TABLE snapshots IS 'Latest snapshot of an aggregate; an optimisation, never a source of truth.';
COMMENT ON COLUMN snapshots.tenant_id IS 'Tenant of the aggregate.';
COMMENT ON COLUMN snapshots.aggregate_type IS 'Type of the aggregate.';
COMMENT ON COLUMN snapshots.aggregate_id IS 'Id of the aggregate within the tenant.';
COMMENT ON COLUMN snapshots.last_sequence IS 'aggregate_seq of the last event folded into the snapshot.';
COMMENT ON COLUMN snapshots.snapshot_version IS 'How many snapshots of the aggregate have been taken.';
COMMENT ON COLUMN snapshots.payload IS 'Serialized aggregate state; ignored if it no longer deserializes.';
COMMENT ON COLUMN snapshots.taken_at IS 'When the snapshot was written.';

