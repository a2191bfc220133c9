-- Read table of the `payments` projection: each payment, gift card,
-- settlement batch and payout as its events leave it (the aggregate's state
-- as a document), with its status for lists.
CREATE TABLE payment_documents (
    tenant_id        uuid    NOT NULL,
    kind             text    NOT NULL CHECK (kind IN ('payment', 'gift_card', 'settlement', 'payout')),
    id               text    NOT NULL,
    status           text    NOT NULL,
    created_seq      bigint  NOT NULL,
    last_tenant_seq  bigint  NOT NULL,
    state            jsonb   NOT NULL,
    CONSTRAINT payment_documents_pkey PRIMARY KEY (tenant_id, kind, id)
);

COMMENT ON TABLE payment_documents IS 'Payments, gift cards, settlement batches and payouts as their events leave them (payments projection).';
COMMENT ON COLUMN payment_documents.tenant_id IS 'Tenant.';
COMMENT ON COLUMN payment_documents.kind IS 'payment, gift_card, settlement or payout.';
COMMENT ON COLUMN payment_documents.id IS 'Its id (a settlement''s is <processor>/<batch_id>, a gift card''s its code).';
COMMENT ON COLUMN payment_documents.status IS 'Where it stands (a payment''s status, a payout''s, a settlement imported or paid_out, a gift card active).';
COMMENT ON COLUMN payment_documents.created_seq IS 'tenant_seq of its first event.';
COMMENT ON COLUMN payment_documents.last_tenant_seq IS 'tenant_seq of its last event.';
COMMENT ON COLUMN payment_documents.state IS 'The aggregate''s state after its last event.';

SELECT ledger_secure_tenant_table('payment_documents');

CREATE INDEX payment_documents_status ON payment_documents (tenant_id, kind, status, id);
