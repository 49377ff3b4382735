-- A fee that staff charge emits a `loan_fee_charged` event, as servicing's late fees do: an
-- outbox row and pg_notify in the charging transaction, after the outbox's commit-order lock
-- (migration 0008). A trigger on the journal's FEE entries, so no path that charges a fee can
-- forget it; the WHEN clause keeps it off every other entry.
CREATE FUNCTION core.emit_fee_charged()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    payload jsonb;
    new_id  bigint;
BEGIN
    PERFORM pg_advisory_xact_lock('metadata.outbox_events'::regclass::oid::bigint);
    SELECT jsonb_build_object(
               'loan_id', NEW.loan_id,
               'loan_number', d.loan_number,
               'customer_id', NEW.customer_id,
               'kind', 'FEE',
               'payment_id', NEW.payment_id,
               'amount', (SELECT sum(l.amount) FROM core.journal_lines l
                          WHERE l.entry_id = NEW.entry_id AND l.account = 'LOAN_FEES')::text,
               'charged_on', NEW.business_date,
               'changed_at', statement_timestamp(),
               'actor', core.current_actor())
    INTO payload
    FROM core.loan_directory d WHERE d.loan_id = NEW.loan_id;
    INSERT INTO metadata.outbox_events (topic, aggregate_id, payload)
    VALUES ('loan_fee_charged', NEW.loan_id, payload)
    RETURNING event_id INTO new_id;
    PERFORM pg_notify('loan_fee_charged', (payload || jsonb_build_object('event_id', new_id))::text);
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION core.emit_fee_charged() FROM PUBLIC;

CREATE TRIGGER journal_fee_charged AFTER INSERT ON core.journal_entries
    FOR EACH ROW WHEN (NEW.kind = 'FEE')
    EXECUTE FUNCTION core.emit_fee_charged();
