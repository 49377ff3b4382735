-- A loan book comes in through staging: loans granted elsewhere, with their repayments, are
-- staged line by line, then replayed through the ledger (schedule, journal, allocations) and
-- serviced day by day as their history happened. The replay writes as the service's
-- administrator login, with the ETL principal that sent the batch as the actor.

-- One line per loan as sent: the record holds the contract, the disbursement, the repayments
-- and the source's balances at cut-over, and no personal data (the customer is named by code).
CREATE TABLE staging.loan_imports (
    batch_id         text        NOT NULL,
    line_number      integer     NOT NULL,
    source_system    text        NOT NULL,
    source_reference text,
    record           jsonb       NOT NULL,
    error_message    text,
    loan_id          uuid,
    processed        boolean     NOT NULL DEFAULT false,
    job_id           uuid,
    created_by       text        NOT NULL DEFAULT core.current_actor(),
    staged_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT loan_imports_pkey PRIMARY KEY (batch_id, line_number),
    CONSTRAINT loan_imports_batch_id_format CHECK (batch_id ~ '^[A-Za-z0-9._-]{1,50}$')
);
ALTER TABLE staging.loan_imports ENABLE ROW LEVEL SECURITY;
-- A batch is its sender's; the replay (the administrator login) reads and marks every line.
CREATE POLICY loan_imports_etl ON staging.loan_imports FOR ALL TO lakehouse_etl_user
    USING (created_by = core.current_actor()) WITH CHECK (created_by = core.current_actor());
CREATE POLICY loan_imports_replay ON staging.loan_imports FOR ALL TO lakehouse_admin_api
    USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, UPDATE, DELETE ON staging.loan_imports TO lakehouse_etl_user;
GRANT USAGE ON SCHEMA staging TO lakehouse_admin_api;
GRANT SELECT, UPDATE ON staging.loan_imports TO lakehouse_admin_api;

-- Whether another principal has staged lines under this batch id.
CREATE FUNCTION staging.loan_batch_taken(p_batch text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM staging.loan_imports s
                   WHERE s.batch_id = p_batch AND s.created_by IS DISTINCT FROM core.current_actor())
$$;
REVOKE EXECUTE ON FUNCTION staging.loan_batch_taken(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION staging.loan_batch_taken(text) TO lakehouse_etl_user;

-- Which loans came from where: one row per source loan, written in the transaction that
-- replayed it, so a loan is imported once whatever batch carries it again.
CREATE TABLE core.imported_loans (
    source_system    text        NOT NULL,
    source_reference text        NOT NULL,
    loan_id          uuid        NOT NULL,
    customer_id      uuid        NOT NULL REFERENCES core.customers (customer_id),
    branch_id        integer     NOT NULL,
    batch_id         text        NOT NULL,
    line_number      integer     NOT NULL,
    imported_at      timestamptz NOT NULL DEFAULT now(),
    imported_by      text        NOT NULL DEFAULT core.current_actor(),
    CONSTRAINT imported_loans_pkey PRIMARY KEY (source_system, source_reference),
    CONSTRAINT imported_loans_loan_key UNIQUE (loan_id)
);
CREATE TRIGGER stamp_office BEFORE INSERT ON core.imported_loans
    FOR EACH ROW EXECUTE FUNCTION core.stamp_office();
ALTER TABLE core.imported_loans ENABLE ROW LEVEL SECURITY;
CREATE POLICY imported_loans_admin ON core.imported_loans FOR ALL TO lakehouse_admin_api
    USING (true) WITH CHECK (true);
CREATE POLICY imported_loans_staff ON core.imported_loans FOR SELECT TO lakehouse_staff
    USING (branch_id = ANY ((SELECT core.visible_offices())::integer[]));
GRANT SELECT, INSERT ON core.imported_loans TO lakehouse_admin_api;
GRANT SELECT ON core.imported_loans TO lakehouse_staff;

-- A replay in progress: the transaction set `app.replaying` (transaction-local). Its historical
-- payments, fees and status moves emit no events (the loan emits one `loan_imported`). Only the
-- service sets it, in a replay; the logins that reach SQL directly (read-only, analysts, ETL)
-- write no loans or payments, so the setting silences nothing of theirs. (No role check: the
-- triggers fire inside security-definer functions too, as the functions' owner.)
CREATE FUNCTION core.replaying() RETURNS boolean
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(current_setting('app.replaying', true), '') = 'on'
$$;

DROP TRIGGER loan_status_change_trigger ON core.loans;
CREATE TRIGGER loan_status_change_trigger AFTER INSERT ON core.loans FOR EACH ROW
    WHEN (NOT core.replaying())
    EXECUTE FUNCTION core.notify_loan_status_change();
DROP TRIGGER loan_status_change_on_update ON core.loans;
CREATE TRIGGER loan_status_change_on_update AFTER UPDATE OF status ON core.loans FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status AND NOT core.replaying())
    EXECUTE FUNCTION core.notify_loan_status_change();
DROP TRIGGER payments_event ON core.payments;
CREATE CONSTRAINT TRIGGER payments_event AFTER INSERT OR UPDATE OF status ON core.payments
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW WHEN (NOT core.replaying())
    EXECUTE FUNCTION core.emit_payment_event();

-- Servicing, as migration 0036 left it, but for a replay: the late fees it charges for past
-- days emit no events, and a replayed day moves the loan's status (default, cure) as that day's
-- servicing did, although later days have been serviced since (the replaying transaction wrote
-- the loan: its past is being written, not rewritten).
CREATE OR REPLACE FUNCTION core.service_locked(p_date date, p_ids uuid[], p_dates timestamptz[],
                                    OUT interest_entries integer, OUT late_fees integer,
                                    OUT defaulted integer, OUT cured integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    active uuid[];
    arrears_ids uuid[];
    arrears_dates timestamptz[];
    moving_ids uuid[];
    moving_dates timestamptz[];
    replaying boolean := core.replaying();
BEGIN
    -- What each loan needs, from its row as the movements that held it left it: interest falling
    -- due (an active loan with principal left: a loan paid off and charged a fee after owes no
    -- more interest), late fees (its oldest unpaid installment is past the grace days) and
    -- a status move (default past the loan's threshold, cure with no arrears left).
    SELECT coalesce(array_agg(b.loan_id) FILTER (WHERE l.accrues), '{}'),
           coalesce(array_agg(b.loan_id) FILTER (WHERE l.in_arrears), '{}'),
           coalesce(array_agg(b.application_date) FILTER (WHERE l.in_arrears), '{}'),
           coalesce(array_agg(b.loan_id) FILTER (WHERE l.moves), '{}'),
           coalesce(array_agg(b.application_date) FILTER (WHERE l.moves), '{}')
    INTO active, arrears_ids, arrears_dates, moving_ids, moving_dates
    FROM unnest(p_ids, p_dates) AS b(loan_id, application_date)
    CROSS JOIN LATERAL (
        SELECT l.principal_outstanding > 0 AS accrues,
               l.next_due_date + p.grace_days < p_date
                   AND (p.late_fee_amount > 0 OR p.late_fee_rate > 0) AS in_arrears,
               -- next_due_date is the oldest installment not paid in full: with no tolerance
               -- it is where the arrears start, and only a tolerance needs the installments.
               (l.status = 'DISBURSED' AND p_date - l.next_due_date > p.default_after_days
                AND (p.arrears_tolerance = 0
                     OR p_date - core.in_arrears_since(l.loan_id, p_date, p.arrears_tolerance)
                        > p.default_after_days))
               OR (l.status = 'DEFAULTED'
                   AND (l.next_due_date IS NULL OR l.next_due_date > p_date
                        OR (p.arrears_tolerance > 0
                            AND core.in_arrears_since(l.loan_id, p_date, p.arrears_tolerance)
                                IS NULL))) AS moves
        FROM core.loans l
        JOIN core.loan_terms p ON (p.product_code, p.terms_version) = (l.product_code, l.terms_version)
        WHERE l.loan_id = b.loan_id AND l.application_date = b.application_date
          AND l.status IN ('DISBURSED', 'DEFAULTED')
        LIMIT 1) l;

    -- Interest falling due.
    WITH due AS (
        SELECT gen_random_uuid() AS entry_id, i.loan_id, i.customer_id, i.installment_number,
               i.due_date, i.interest_due - i.interest_posted AS amount
        FROM core.loan_installments i
        WHERE i.loan_id = ANY (active) AND i.due_date <= p_date AND i.interest_posted < i.interest_due
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
        FROM (SELECT d.loan_id, b.application_date, sum(d.amount) AS amount
              FROM due d JOIN unnest(p_ids, p_dates) AS b(loan_id, application_date) ON b.loan_id = d.loan_id
              GROUP BY d.loan_id, b.application_date) t
        WHERE l.loan_id = t.loan_id AND l.application_date = t.application_date
    )
    SELECT count(*) INTO interest_entries FROM due;

    -- One late fee per installment past its grace days and not fully paid.
    WITH late AS MATERIALIZED (
        SELECT gen_random_uuid() AS entry_id, i.loan_id, a.application_date, i.customer_id,
               i.installment_number, i.due_date + l.grace_days + 1 AS charged_on,
               l.late_fee_amount + round(l.late_fee_rate * (i.principal_due - i.principal_paid
                                                            + i.interest_due - i.interest_paid),
                                         l.currency_digits) AS amount,
               l.loan_number, l.disbursement_date, l.grace_days, l.arrears_tolerance,
               i.principal_due - i.principal_paid + i.interest_due - i.interest_paid AS shortfall
        FROM unnest(arrears_ids, arrears_dates) AS a(loan_id, application_date)
        CROSS JOIN LATERAL (
            SELECT l.loan_number, l.disbursement_date, p.grace_days, p.late_fee_amount,
                   p.late_fee_rate, p.arrears_tolerance, p.currency_digits
            FROM core.loans l
            JOIN core.loan_terms p ON (p.product_code, p.terms_version) = (l.product_code, l.terms_version)
            WHERE l.loan_id = a.loan_id AND l.application_date = a.application_date
            LIMIT 1) l
        JOIN core.loan_installments i ON i.loan_id = a.loan_id
        WHERE i.due_date + l.grace_days < p_date
          AND i.principal_due - i.principal_paid + i.interest_due - i.interest_paid
              > l.arrears_tolerance
          AND NOT EXISTS (SELECT 1 FROM core.journal_entries e
                          WHERE e.loan_id = i.loan_id AND e.installment_number = i.installment_number
                            AND e.kind = 'LATE_FEE')
    ), charged AS (
        -- Short by more than the tolerance even counting back what the payments received for
        -- the installment (after the previous due date, up to the end of its grace days) paid on
        -- charges instead: no late fee because of an earlier one. Asked only of the few
        -- installments about to be charged.
        SELECT * FROM late
        WHERE amount > 0
          AND shortfall - core.paid_on_charges(loan_id,
                  coalesce((SELECT max(e.due_date) FROM core.loan_installments e
                            WHERE e.loan_id = late.loan_id
                              AND e.installment_number < late.installment_number),
                           core.business_date(disbursement_date) - 1),
                  charged_on - 1)
              > arrears_tolerance
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
        FROM (SELECT loan_id, application_date, sum(amount) AS amount FROM charged
              GROUP BY loan_id, application_date) t
        WHERE l.loan_id = t.loan_id AND l.application_date = t.application_date
    ), events AS (
        INSERT INTO metadata.outbox_events (topic, aggregate_id, payload)
        SELECT 'loan_fee_charged', loan_id,
               jsonb_build_object('loan_id', loan_id, 'loan_number', loan_number,
                                  'customer_id', customer_id, 'kind', 'LATE_FEE',
                                  'installment_number', installment_number,
                                  'amount', amount::text, 'charged_on', least(charged_on, p_date),
                                  'changed_at', statement_timestamp(), 'actor', core.current_actor())
        FROM charged
        WHERE NOT replaying
        RETURNING event_id
    )
    SELECT count(*) INTO late_fees FROM charged;

    defaulted := 0;
    cured := 0;
    IF cardinality(moving_ids) = 0
       OR (NOT replaying
           AND EXISTS (SELECT 1 FROM core.servicing_days d WHERE d.business_date > p_date)) THEN
        RETURN;
    END IF;
    WITH moved AS (
        UPDATE core.loans l
        SET status = CASE l.status WHEN 'DISBURSED' THEN 'DEFAULTED' ELSE 'DISBURSED' END,
            defaulted_at = CASE l.status WHEN 'DISBURSED' THEN now() END,
            version = l.version + 1, updated_at = now(), updated_by = core.current_actor()
        FROM unnest(moving_ids, moving_dates) AS m(loan_id, application_date)
        WHERE l.loan_id = m.loan_id AND l.application_date = m.application_date
        RETURNING l.status AS new_status
    )
    SELECT count(*) FILTER (WHERE new_status = 'DEFAULTED'),
           count(*) FILTER (WHERE new_status = 'DISBURSED')
    INTO defaulted, cured FROM moved;
END $$;

ALTER FUNCTION core.service_locked(date, uuid[], timestamptz[]) SET jit = off;

-- Servicing of a replayed day, for the loans the replaying transaction itself wrote and holds.
CREATE FUNCTION core.service_replayed(p_date date, p_ids uuid[], p_dates timestamptz[],
                                      OUT interest_entries integer, OUT late_fees integer,
                                      OUT defaulted integer, OUT cured integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT core.replaying() THEN
        RAISE EXCEPTION 'core.service_replayed serves a replay only' USING ERRCODE = '42501';
    END IF;
    SELECT s.interest_entries, s.late_fees, s.defaulted, s.cured
    INTO interest_entries, late_fees, defaulted, cured
    FROM core.service_locked(p_date, p_ids, p_dates) s;
END $$;
ALTER FUNCTION core.service_replayed(date, uuid[], timestamptz[]) SET jit = off;
REVOKE EXECUTE ON FUNCTION core.service_replayed(date, uuid[], timestamptz[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.service_replayed(date, uuid[], timestamptz[]) TO lakehouse_admin_api;

-- The one event an imported loan emits (staff streams; the loan's customer is not told).
CREATE FUNCTION core.emit_loan_imported(p_loans uuid[]) RETURNS integer
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH emitted AS (
        INSERT INTO metadata.outbox_events (topic, aggregate_id, payload)
        SELECT 'loan_imported', l.loan_id,
               jsonb_build_object('loan_id', l.loan_id, 'loan_number', l.loan_number,
                                  'customer_id', l.customer_id,
                                  'source_system', i.source_system,
                                  'source_reference', i.source_reference,
                                  'product_code', l.product_code,
                                  'loan_amount', l.loan_amount::text,
                                  'disbursement_date', l.disbursement_date,
                                  'status', l.status,
                                  'principal_outstanding', l.principal_outstanding::text,
                                  'interest_outstanding', l.interest_outstanding::text,
                                  'fees_outstanding', l.fees_outstanding::text,
                                  'penalties_outstanding', l.penalties_outstanding::text,
                                  'changed_at', statement_timestamp(),
                                  'actor', core.current_actor())
        FROM core.imported_loans i
        JOIN core.loan_directory d ON d.loan_id = i.loan_id
        JOIN core.loans l ON (l.loan_id, l.application_date) = (d.loan_id, d.application_date)
        WHERE i.loan_id = ANY (p_loans)
        RETURNING 1
    )
    SELECT count(*)::integer FROM emitted
$$;
REVOKE EXECUTE ON FUNCTION core.emit_loan_imported(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.emit_loan_imported(uuid[]) TO lakehouse_admin_api;
