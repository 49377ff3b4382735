-- A customer changes their own phone number, e-mail and address (PATCH /v1/me), and the database
-- holds them to it: their role may update only those columns (plus the row's bookkeeping), and
-- only their own row.
GRANT UPDATE (phone_number, email, address, version, updated_at, updated_by)
    ON core.customers TO lakehouse_app_user;
CREATE POLICY customers_self_update ON core.customers FOR UPDATE TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()))
    WITH CHECK (customer_id = (SELECT core.current_customer_id()));

-- A contact change, by the customer or by staff, emits `customer_contact_changed` with the
-- previous phone number and e-mail, so that a notifier can tell the old contact (an outbox row
-- and pg_notify, after the outbox's commit-order lock, migration 0008). The outbox is read by
-- staff only.
CREATE FUNCTION core.emit_contact_changed()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    payload jsonb;
    new_id  bigint;
BEGIN
    PERFORM pg_advisory_xact_lock('metadata.outbox_events'::regclass::oid::bigint);
    payload := jsonb_build_object(
        'customer_id', NEW.customer_id,
        'changed', to_jsonb(array_remove(ARRAY[
            CASE WHEN OLD.phone_number IS DISTINCT FROM NEW.phone_number THEN 'phone_number' END,
            CASE WHEN OLD.email IS DISTINCT FROM NEW.email THEN 'email' END,
            CASE WHEN OLD.address IS DISTINCT FROM NEW.address THEN 'address' END], NULL)),
        'previous', jsonb_build_object('phone_number', OLD.phone_number, 'email', OLD.email),
        'changed_at', statement_timestamp(),
        'actor', core.current_actor());
    INSERT INTO metadata.outbox_events (topic, aggregate_id, payload)
    VALUES ('customer_contact_changed', NEW.customer_id, payload)
    RETURNING event_id INTO new_id;
    PERFORM pg_notify('customer_contact_changed', (payload || jsonb_build_object('event_id', new_id))::text);
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION core.emit_contact_changed() FROM PUBLIC;

CREATE TRIGGER customers_contact_changed AFTER UPDATE OF phone_number, email, address ON core.customers
    FOR EACH ROW
    WHEN (OLD.phone_number IS DISTINCT FROM NEW.phone_number OR OLD.email IS DISTINCT FROM NEW.email
          OR OLD.address IS DISTINCT FROM NEW.address)
    EXECUTE FUNCTION core.emit_contact_changed();
