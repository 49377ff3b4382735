-- Payment events, and a customer's own feed of events.
--
-- Every event names its customer in a column, so a customer reads their own events from the
-- outbox under row-level security, like every other table they read: the loan and payment
-- topics of their own rows and nothing else.
ALTER TABLE metadata.outbox_events ADD COLUMN customer_id uuid;

CREATE FUNCTION metadata.outbox_customer()
RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.customer_id := coalesce(NEW.customer_id, (NEW.payload ->> 'customer_id')::uuid);
    RETURN NEW;
END $$;

CREATE TRIGGER outbox_customer BEFORE INSERT ON metadata.outbox_events
    FOR EACH ROW EXECUTE FUNCTION metadata.outbox_customer();

UPDATE metadata.outbox_events SET customer_id = (payload ->> 'customer_id')::uuid
WHERE payload ? 'customer_id';

CREATE INDEX idx_outbox_events_customer ON metadata.outbox_events (customer_id, event_id)
    WHERE customer_id IS NOT NULL;

-- The topics a customer's feed carries.
CREATE FUNCTION metadata.customer_topic(p_topic text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT p_topic IN ('loan_status_changed', 'loan_fee_charged', 'payment_recorded',
                       'payment_confirmed', 'payment_failed', 'payment_reversed')
$$;

ALTER TABLE metadata.outbox_events ENABLE ROW LEVEL SECURITY;
CREATE POLICY outbox_events_staff ON metadata.outbox_events FOR SELECT TO lakehouse_staff
    USING (true);
CREATE POLICY outbox_events_self ON metadata.outbox_events FOR SELECT TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()) AND metadata.customer_topic(topic));
GRANT USAGE ON SCHEMA metadata TO lakehouse_app_user;
GRANT SELECT ON metadata.outbox_events TO lakehouse_app_user;

-- A payment that is recorded (`payment_recorded`, whatever its first status), confirmed
-- (`payment_confirmed`), failed (`payment_failed`) or reversed (`payment_reversed`) emits an
-- event. The trigger is deferred to commit: the outbox's commit-order lock (migration 0008) is
-- then held for the commit alone, not for the whole repayment, so concurrent repayments still
-- share their WAL flushes instead of queueing behind each other's.
CREATE FUNCTION core.emit_payment_event()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    topic   text;
    payload jsonb;
    new_id  bigint;
BEGIN
    IF TG_OP = 'INSERT' THEN
        topic := 'payment_recorded';
    ELSE
        topic := CASE NEW.status WHEN 'COMPLETED' THEN 'payment_confirmed'
                                 WHEN 'FAILED' THEN 'payment_failed'
                                 WHEN 'REVERSED' THEN 'payment_reversed' END;
        IF topic IS NULL OR OLD.status IS NOT DISTINCT FROM NEW.status THEN
            RETURN NULL;
        END IF;
    END IF;
    PERFORM pg_advisory_xact_lock('metadata.outbox_events'::regclass::oid::bigint);
    payload := jsonb_build_object(
        'payment_id', NEW.payment_id,
        'transaction_id', NEW.transaction_id,
        'client_reference', NEW.client_reference,
        'loan_id', NEW.loan_id,
        'customer_id', NEW.customer_id,
        'payment_type', NEW.payment_type,
        'amount', NEW.amount::text,
        'channel', NEW.channel,
        'old_status', CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END,
        'new_status', NEW.status,
        'payment_date', NEW.payment_date,
        'reason', NEW.status_reason,
        'changed_at', statement_timestamp(),
        'actor', core.current_actor());
    INSERT INTO metadata.outbox_events (topic, aggregate_id, customer_id, payload)
    VALUES (topic, NEW.payment_id, NEW.customer_id, payload)
    RETURNING event_id INTO new_id;
    PERFORM pg_notify(topic, (payload || jsonb_build_object('event_id', new_id))::text);
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION core.emit_payment_event() FROM PUBLIC;

CREATE CONSTRAINT TRIGGER payments_event AFTER INSERT OR UPDATE OF status ON core.payments
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION core.emit_payment_event();
