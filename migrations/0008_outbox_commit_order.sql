-- Outbox event ids in commit order. An id came from the sequence when the row was written, so a
-- transaction could take id 10, another id 11 and commit first; a client that had seen 11 and
-- reconnected with Last-Event-ID 11 never got 10. Now a status change takes a transaction-level
-- lock before the outbox row (and its id) is written, and keeps it until it commits or rolls
-- back: whoever takes the next id waits until the holder of the previous one is visible to
-- everyone. Status changes are short request transactions, so they queue for the rest of one
-- such transaction at most. A BEFORE trigger, because an identity value is drawn before the
-- outbox row's own triggers run.
CREATE FUNCTION core.lock_outbox_order()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM NEW.status THEN
        -- The outbox table's oid names the lock.
        PERFORM pg_advisory_xact_lock('metadata.outbox_events'::regclass::oid::bigint);
    END IF;
    RETURN NEW;
END $$;
REVOKE EXECUTE ON FUNCTION core.lock_outbox_order() FROM PUBLIC;

CREATE TRIGGER loan_status_order_lock
    BEFORE INSERT OR UPDATE OF status ON core.loans
    FOR EACH ROW EXECUTE FUNCTION core.lock_outbox_order();
