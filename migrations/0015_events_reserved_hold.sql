-- The reservation a hold made on an account, found by the hold's id: the
-- accounts projection reads it when the hold settles (its events name only
-- the hold), once per settled hold. Without this index that read scans
-- every event of the account, which on an account every payment reserves
-- on (a processor's receivable) grows with its history.
CREATE INDEX events_reserved_hold ON events (tenant_id, aggregate_id, (payload #>> '{Reserved,hold_id}'))
    WHERE event_type = 'Reserved';
