-- The loan lifecycle: who did what when, generated loan numbers, the status-change feed.

ALTER TABLE core.loans
    ALTER COLUMN product_code SET NOT NULL,
    ADD COLUMN approved_by      text,
    ADD COLUMN rejected_at      timestamptz,
    ADD COLUMN rejected_by      text,
    ADD COLUMN rejection_reason text,
    ADD COLUMN disbursed_by     text,
    ADD COLUMN cancelled_at     timestamptz,
    ADD COLUMN cancelled_by     text,
    ADD COLUMN closed_at        timestamptz,
    ADD CONSTRAINT loans_lifecycle_stamped CHECK (
        (status NOT IN ('APPROVED', 'DISBURSED', 'CLOSED', 'DEFAULTED') OR approval_date IS NOT NULL)
        AND (status NOT IN ('DISBURSED', 'CLOSED', 'DEFAULTED')
             OR (disbursement_date IS NOT NULL AND maturity_date IS NOT NULL))
        AND (status <> 'REJECTED' OR rejected_at IS NOT NULL)
        AND (status <> 'CANCELLED' OR cancelled_at IS NOT NULL)
        AND (status <> 'CLOSED' OR closed_at IS NOT NULL));

-- A customer's own loans, newest first, across partitions: one Merge Append of index scans.
CREATE INDEX idx_loans_customer_date ON core.loans (customer_id, application_date DESC, loan_id DESC);
CREATE INDEX idx_loans_date ON core.loans (application_date DESC, loan_id DESC);

-- Loan numbers: 'LN' || year || 8 digits. The sequence makes them unique without a lookup;
-- core.loan_directory's unique key guarantees it across partitions whatever the source.
CREATE SEQUENCE core.loan_number_seq AS bigint;
GRANT USAGE ON SEQUENCE core.loan_number_seq TO lakehouse_app_user, lakehouse_staff;

---------------------------------------------------------------------------------------------------
-- Status events: every loan that is created or changes status writes an outbox row and sends
-- pg_notify('loan_status_changed', …), both inside the changing transaction, so a rolled-back
-- change emits nothing. The outbox lets a client that reconnects catch up (Last-Event-ID).
CREATE TABLE metadata.outbox_events (
    event_id     bigint      GENERATED ALWAYS AS IDENTITY,
    topic        text        NOT NULL,
    aggregate_id uuid        NOT NULL,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT outbox_events_pkey PRIMARY KEY (event_id)
);
CREATE INDEX idx_outbox_events_topic ON metadata.outbox_events (topic, event_id);

GRANT USAGE ON SCHEMA metadata TO lakehouse_staff;
GRANT SELECT ON metadata.outbox_events TO lakehouse_staff;

-- The guide's trigger, extended with the outbox row and the event id in the payload.
CREATE FUNCTION core.notify_loan_status_change()
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
    INSERT INTO metadata.outbox_events (topic, aggregate_id, payload)
    VALUES ('loan_status_changed', NEW.loan_id, payload)
    RETURNING event_id INTO new_id;
    PERFORM pg_notify('loan_status_changed',
                      (payload || jsonb_build_object('event_id', new_id))::text);
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION core.notify_loan_status_change() FROM PUBLIC;

CREATE TRIGGER loan_status_change_trigger
    AFTER INSERT OR UPDATE OF status ON core.loans
    FOR EACH ROW EXECUTE FUNCTION core.notify_loan_status_change();

GRANT SELECT ON core.products TO lakehouse_analyst;
