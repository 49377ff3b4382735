-- A replay (a loan-book import) names each row's office itself, set-based, instead of having a
-- trigger look it up row by row. The office stamp was a sixth of an import's server time: one
-- PL/pgSQL call and one customer look-up for each of 13 million rows (docs/performance.md).
--
-- Outside a replay nothing changes: every row takes its customer's office, whatever the
-- statement said. In a replay, a row that names no office is stamped, and the rows that name
-- one are checked once per statement: each distinct (customer, office) of the statement against
-- the customer's, and a statement that names another office is refused (23514). So what a
-- replay names is what the stamp would have written, whoever set `app.replaying`. (The service
-- sets it only in a replay, and the logins that reach SQL directly write none of these tables.)
-- The replaying statements take the office from the customer (schedules, payments, a
-- movement's journal, allocations and rescheduled installments) or from the installment (the
-- interest and fees servicing posts).
CREATE FUNCTION core.check_named_offices() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A look-up per distinct customer by its key (a scalar subquery is never turned into a join
    -- that could read every customer).
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT customer_id, branch_id FROM named_rows) n
               WHERE n.customer_id IS NOT NULL
                 AND n.branch_id IS DISTINCT FROM (SELECT c.branch_id FROM core.customers c
                                                   WHERE c.customer_id = n.customer_id)) THEN
        RAISE EXCEPTION 'a row of % names an office other than its customer''s', TG_TABLE_NAME
            USING ERRCODE = 'check_violation', CONSTRAINT = 'named_office_is_the_customers';
    END IF;
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION core.check_named_offices() FROM PUBLIC;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['core.loan_installments', 'core.payments', 'core.payment_directory',
                             'core.payment_allocations', 'core.schedule_changes',
                             'core.journal_entries', 'core.journal_lines']
    LOOP
        EXECUTE format('DROP TRIGGER stamp_office ON %s', t);
        EXECUTE format('CREATE TRIGGER stamp_office BEFORE INSERT ON %s FOR EACH ROW '
                       'WHEN (NEW.branch_id IS NULL '
                       'OR current_setting(''app.replaying'', true) IS DISTINCT FROM ''on'') '
                       'EXECUTE FUNCTION core.stamp_office()', t);
        EXECUTE format('CREATE TRIGGER check_named_offices AFTER INSERT ON %s '
                       'REFERENCING NEW TABLE AS named_rows FOR EACH STATEMENT '
                       'WHEN (current_setting(''app.replaying'', true) = ''on'') '
                       'EXECUTE FUNCTION core.check_named_offices()', t);
    END LOOP;
END
$$;

-- A payment's directory row takes the payment's office (the payment's own stamp put it there).
CREATE OR REPLACE FUNCTION core.payments_register()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO core.payment_directory (payment_id, transaction_id, customer_id, payment_date,
                                        client_reference, branch_id)
    VALUES (NEW.payment_id, NEW.transaction_id, NEW.customer_id, NEW.payment_date,
            NEW.client_reference, NEW.branch_id);
    RETURN NULL;
END $$;

-- Servicing, as migration 0047 left it, but naming the office of the interest and late fees it
-- posts: the installment's, which is its customer's.
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
        SELECT gen_random_uuid() AS entry_id, i.loan_id, i.customer_id, i.branch_id,
               i.installment_number, i.due_date, i.interest_due - i.interest_posted AS amount
        FROM core.loan_installments i
        WHERE i.loan_id = ANY (active) AND i.due_date <= p_date AND i.interest_posted < i.interest_due
    ), entries AS (
        INSERT INTO core.journal_entries (entry_id, loan_id, customer_id, branch_id, kind,
                                          business_date, installment_number)
        SELECT entry_id, loan_id, customer_id, branch_id, 'INTEREST_DUE', due_date,
               installment_number
        FROM due
    ), lines AS (
        INSERT INTO core.journal_lines (entry_id, line_number, loan_id, customer_id, branch_id,
                                        account, amount)
        SELECT entry_id, v.n, loan_id, customer_id, branch_id, v.account, v.amount
        FROM due CROSS JOIN LATERAL (VALUES (1, 'LOAN_INTEREST', due.amount),
                                            (2, 'INTEREST_INCOME', -due.amount)) AS v(n, account, amount)
    ), installments AS (
        UPDATE core.loan_installments i SET interest_posted = i.interest_due
        FROM due WHERE i.loan_id = ANY (active)
          AND i.loan_id = due.loan_id AND i.installment_number = due.installment_number
    ), totals AS (
        UPDATE core.loans l SET interest_outstanding = l.interest_outstanding + t.amount,
                                version = l.version + 1, updated_at = now(),
                                updated_by = core.current_actor()
        FROM (SELECT d.loan_id, b.application_date, sum(d.amount) AS amount
              FROM due d JOIN unnest(p_ids, p_dates) AS b(loan_id, application_date) ON b.loan_id = d.loan_id
              GROUP BY d.loan_id, b.application_date) t
        WHERE l.loan_id = ANY (active) AND l.application_date = ANY (p_dates)
          AND l.loan_id = t.loan_id AND l.application_date = t.application_date
    )
    SELECT count(*) INTO interest_entries FROM due;

    -- One late fee per installment past its grace days and not fully paid.
    WITH late AS MATERIALIZED (
        SELECT gen_random_uuid() AS entry_id, i.loan_id, a.application_date, i.customer_id,
               i.branch_id, i.installment_number, i.due_date + l.grace_days + 1 AS charged_on,
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
        INSERT INTO core.journal_entries (entry_id, loan_id, customer_id, branch_id, kind,
                                          business_date, installment_number)
        SELECT entry_id, loan_id, customer_id, branch_id, 'LATE_FEE', least(charged_on, p_date),
               installment_number
        FROM charged
    ), lines AS (
        INSERT INTO core.journal_lines (entry_id, line_number, loan_id, customer_id, branch_id,
                                        account, amount)
        SELECT entry_id, v.n, loan_id, customer_id, branch_id, v.account, v.amount
        FROM charged CROSS JOIN LATERAL (VALUES (1, 'LOAN_PENALTIES', charged.amount),
                                                (2, 'PENALTY_INCOME', -charged.amount)) AS v(n, account, amount)
    ), totals AS (
        UPDATE core.loans l SET penalties_outstanding = l.penalties_outstanding + t.amount,
                                version = l.version + 1, updated_at = now(),
                                updated_by = core.current_actor()
        FROM (SELECT loan_id, application_date, sum(amount) AS amount FROM charged
              GROUP BY loan_id, application_date) t
        WHERE l.loan_id = ANY (arrears_ids) AND l.application_date = ANY (arrears_dates)
          AND l.loan_id = t.loan_id AND l.application_date = t.application_date
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
        WHERE l.loan_id = ANY (moving_ids) AND l.application_date = ANY (moving_dates)
          AND l.loan_id = m.loan_id AND l.application_date = m.application_date
        RETURNING l.status AS new_status
    )
    SELECT count(*) FILTER (WHERE new_status = 'DEFAULTED'),
           count(*) FILTER (WHERE new_status = 'DISBURSED')
    INTO defaulted, cured FROM moved;
END $$;

ALTER FUNCTION core.service_locked(date, uuid[], timestamptz[]) SET jit = off;
ALTER FUNCTION core.service_locked(date, uuid[], timestamptz[]) SET plan_cache_mode = force_custom_plan;
