-- Outbox event ids in commit order. An id came from the sequence when the row was written, so a
-- transaction could take id 10, another id 11 and commit first; a client that had seen 11 and
-- reconnected with Last-Event-ID 11 never got 10. Now a status change takes a transaction-level
-- lock before it takes its id and keeps it until it commits or rolls back: whoever takes the
-- next id waits until the holder of the previous one is visible to everyone. Status changes are
-- short request transactions, so they queue for the rest of one such transaction at most.
CREATE OR REPLACE FUNCTION core.notify_loan_status_change()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_status text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END;
    payload    jsonb;
    new_id     bigint;
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.status IS NOT DISTINCT FROM NEW.status THEN
        RETURN NULL;
    END IF;
    payload := jsonb_build_object(
        'loan_id', NEW.loan_id,
        'loan_number', NEW.loan_number,
        'customer_id', NEW.customer_id,
        'old_status', old_status,
        'new_status', NEW.status,
        'changed_at', statement_timestamp(),
        'actor', core.current_actor());
    -- The outbox table's oid names the lock.
    PERFORM pg_advisory_xact_lock('metadata.outbox_events'::regclass::oid::bigint);
    INSERT INTO metadata.outbox_events (topic, aggregate_id, payload)
    VALUES ('loan_status_changed', NEW.loan_id, payload)
    RETURNING event_id INTO new_id;
    PERFORM pg_notify('loan_status_changed',
                      (payload || jsonb_build_object('event_id', new_id))::text);
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION core.notify_loan_status_change() FROM PUBLIC;
