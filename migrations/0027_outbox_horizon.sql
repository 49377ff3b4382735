-- Events in an order PostgreSQL itself guarantees, with no lock shared by all writers.
--
-- Until now every event writer took one advisory lock (migration 0008) so that event ids would
-- follow commit order, and sent pg_notify, which serialises commits too: a servicing batch
-- holding that lock for seconds stopped every repayment. Now each outbox row carries its
-- transaction's id (xid8, which a failover keeps). A reader takes only the rows of transactions
-- older than the oldest one still running, `xact_id < pg_snapshot_xmin(pg_current_snapshot())`:
-- none of those can still commit, so nothing can appear before a position once it is read. The
-- order is (xact_id, event_id). The service wakes its streams by reading the outbox's head every
-- few milliseconds instead of by NOTIFY, which any login could send.
ALTER TABLE metadata.outbox_events
    ADD COLUMN xact_id xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX idx_outbox_events_position ON metadata.outbox_events (xact_id, event_id);
DROP INDEX metadata.idx_outbox_events_customer;
CREATE INDEX idx_outbox_events_customer ON metadata.outbox_events (customer_id, xact_id, event_id)
    WHERE customer_id IS NOT NULL;

DROP TRIGGER loan_status_order_lock ON core.loans;
DROP TRIGGER loan_status_order_lock_on_change ON core.loans;
DROP FUNCTION core.lock_outbox_order();

-- The event writers, as before but without the lock and the notification.
CREATE OR REPLACE FUNCTION core.notify_loan_status_change()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    old_status text := CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END;
    payload    jsonb;
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
    VALUES ('loan_status_changed', NEW.loan_id, payload);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION core.emit_fee_charged()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    payload jsonb;
BEGIN
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
    VALUES ('loan_fee_charged', NEW.loan_id, payload);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION core.emit_contact_changed()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    payload jsonb;
BEGIN
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
    VALUES ('customer_contact_changed', NEW.customer_id, payload);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION core.emit_payment_event()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    topic   text;
    payload jsonb;
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
    VALUES (topic, NEW.payment_id, NEW.customer_id, payload);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION core.service_loans(p_date date, p_after uuid, p_limit integer)
RETURNS TABLE (last_loan uuid, loans integer, interest_entries integer, late_fees integer,
               defaulted integer, cured integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    batch uuid[];
BEGIN
    -- The batch, locked: each later statement takes a new snapshot and sees the loans as the
    -- repayments that held them left them.
    SELECT array_agg(loan_id ORDER BY loan_id) INTO batch FROM (
        SELECT l.loan_id FROM core.loans l
        WHERE l.status IN ('DISBURSED', 'DEFAULTED') AND l.loan_id > coalesce(p_after, '00000000-0000-0000-0000-000000000000')
        ORDER BY l.loan_id LIMIT p_limit FOR UPDATE) b;
    loans := coalesce(cardinality(batch), 0);
    last_loan := batch[loans];
    IF loans = 0 THEN
        interest_entries := 0; late_fees := 0; defaulted := 0; cured := 0;
        RETURN NEXT;
        RETURN;
    END IF;

    -- Interest falling due.
    WITH due AS (
        SELECT gen_random_uuid() AS entry_id, i.loan_id, i.customer_id, i.installment_number,
               i.due_date, i.interest_due - i.interest_posted AS amount
        FROM core.loan_installments i
        WHERE i.loan_id = ANY (batch) AND i.due_date <= p_date AND i.interest_posted < i.interest_due
    ), entries AS (
        INSERT INTO core.journal_entries (entry_id, loan_id, customer_id, kind, business_date,
                                          installment_number)
        SELECT entry_id, loan_id, customer_id, 'INTEREST_DUE', due_date, installment_number FROM due
    ), lines AS (
        INSERT INTO core.journal_lines (entry_id, line_number, loan_id, customer_id, account, amount)
        SELECT entry_id, v.n, loan_id, customer_id, v.account, v.amount
        FROM due CROSS JOIN LATERAL (VALUES (1, 'LOAN_INTEREST', due.amount),
                                            (2, 'INTEREST_INCOME', -due.amount)) AS v(n, account, amount)
    ), installments AS (
        UPDATE core.loan_installments i SET interest_posted = i.interest_due
        FROM due WHERE i.loan_id = due.loan_id AND i.installment_number = due.installment_number
    ), totals AS (
        UPDATE core.loans l SET interest_outstanding = l.interest_outstanding + t.amount,
                                version = l.version + 1, updated_at = now(),
                                updated_by = core.current_actor()
        FROM (SELECT loan_id, sum(amount) AS amount FROM due GROUP BY loan_id) t
        WHERE l.loan_id = t.loan_id
    )
    SELECT count(*) INTO interest_entries FROM due;

    -- One late fee per installment past its grace days and not fully paid.
    WITH late AS (
        SELECT gen_random_uuid() AS entry_id, i.loan_id, i.customer_id, i.installment_number,
               i.due_date + p.grace_days + 1 AS charged_on,
               p.late_fee_amount + round(p.late_fee_rate * (i.principal_due - i.principal_paid
                                                            + i.interest_due - i.interest_paid), 2) AS amount,
               l.loan_number
        FROM core.loan_installments i
        JOIN core.loan_directory d ON d.loan_id = i.loan_id
        JOIN core.loans l ON l.loan_id = d.loan_id AND l.application_date = d.application_date
        JOIN core.products p ON p.product_code = l.product_code
        WHERE i.loan_id = ANY (batch)
          AND i.due_date + p.grace_days < p_date
          AND (i.principal_paid < i.principal_due OR i.interest_paid < i.interest_due)
          AND NOT EXISTS (SELECT 1 FROM core.journal_entries e
                          WHERE e.loan_id = i.loan_id AND e.installment_number = i.installment_number
                            AND e.kind = 'LATE_FEE')
    ), charged AS (
        SELECT * FROM late WHERE amount > 0
    ), entries AS (
        INSERT INTO core.journal_entries (entry_id, loan_id, customer_id, kind, business_date,
                                          installment_number)
        SELECT entry_id, loan_id, customer_id, 'LATE_FEE', least(charged_on, p_date), installment_number
        FROM charged
    ), lines AS (
        INSERT INTO core.journal_lines (entry_id, line_number, loan_id, customer_id, account, amount)
        SELECT entry_id, v.n, loan_id, customer_id, v.account, v.amount
        FROM charged CROSS JOIN LATERAL (VALUES (1, 'LOAN_PENALTIES', charged.amount),
                                                (2, 'PENALTY_INCOME', -charged.amount)) AS v(n, account, amount)
    ), totals AS (
        UPDATE core.loans l SET penalties_outstanding = l.penalties_outstanding + t.amount,
                                version = l.version + 1, updated_at = now(),
                                updated_by = core.current_actor()
        FROM (SELECT loan_id, sum(amount) AS amount FROM charged GROUP BY loan_id) t
        WHERE l.loan_id = t.loan_id
    ), events AS (
        INSERT INTO metadata.outbox_events (topic, aggregate_id, payload)
        SELECT 'loan_fee_charged', loan_id,
               jsonb_build_object('loan_id', loan_id, 'loan_number', loan_number,
                                  'customer_id', customer_id, 'kind', 'LATE_FEE',
                                  'installment_number', installment_number,
                                  'amount', amount::text, 'charged_on', least(charged_on, p_date),
                                  'changed_at', statement_timestamp(), 'actor', core.current_actor())
        FROM charged
        RETURNING event_id
    )
    SELECT count(*) INTO late_fees FROM events;

    -- Aging: default past the product's threshold; cure when no arrears are left. Only for loans
    -- not yet serviced for a later date.
    WITH aging AS (
        SELECT l.loan_id, l.application_date, l.status, p.default_after_days,
               coalesce(p_date - (SELECT min(i.due_date) FROM core.loan_installments i
                                  WHERE i.loan_id = l.loan_id AND i.due_date <= p_date
                                    AND (i.principal_paid < i.principal_due
                                         OR i.interest_paid < i.interest_due)), 0) AS dpd
        FROM core.loans l JOIN core.products p ON p.product_code = l.product_code
        WHERE l.loan_id = ANY (batch)
          AND (l.serviced_through IS NULL OR l.serviced_through <= p_date)
    ), moved AS (
        UPDATE core.loans l
        SET status = CASE WHEN a.status = 'DISBURSED' AND a.dpd > a.default_after_days
                          THEN 'DEFAULTED'
                          WHEN a.status = 'DEFAULTED' AND a.dpd = 0 THEN 'DISBURSED'
                          ELSE l.status END,
            defaulted_at = CASE WHEN a.status = 'DISBURSED' AND a.dpd > a.default_after_days
                                THEN now()
                                WHEN a.status = 'DEFAULTED' AND a.dpd = 0 THEN NULL
                                ELSE l.defaulted_at END,
            serviced_through = p_date
        FROM aging a
        WHERE l.loan_id = a.loan_id AND l.application_date = a.application_date
        RETURNING a.status AS old_status, l.status AS new_status
    )
    SELECT count(*) FILTER (WHERE old_status = 'DISBURSED' AND new_status = 'DEFAULTED'),
           count(*) FILTER (WHERE old_status = 'DEFAULTED' AND new_status = 'DISBURSED')
    INTO defaulted, cured FROM moved;
    RETURN NEXT;
END $$;
