-- An accepted command's answer lists the events it appended (type,
-- aggregate, tenant_seq, hash): the same facts as its rows in `events`,
-- first_seq to tenant_seq. Kept in the record too, they were most of its
-- size (a card capture's five events: 1,396 bytes of outcome, 320
-- without them) and most of what the database parsed to write it. A record
-- written from now on leaves that list out when it is exactly the
-- command's events, says so here, and gets it back from the events when
-- the answer to a repeated key is given again (`idempotency_records` in
-- eventstore). Records written before keep their list, and are answered as
-- they are. A server of an earlier build does not know the flag and would
-- answer a repeated key without its events: stop those before servers of
-- this build take commands.
ALTER TABLE idempotency_records
    ADD COLUMN events_omitted boolean NOT NULL DEFAULT false;

COMMENT ON COLUMN idempotency_records.events_omitted IS
    'true when the answer''s "events" member (the events first_seq to tenant_seq, as the answer lists them) is left out of outcome and rebuilt from the events when the answer is replayed.';


COMMENT ON COLUMN idempotency_records.outcome IS
    'Reply body (accepted) or error body (rejected), answered again to a repeated key; without its "events" member when events_omitted.';
