-- Arrears tolerance and no pyramiding of late fees (issue 27, point 6; docs/money.md).
--
-- A product (and so each version of its terms, which loans are pinned to) has an arrears
-- tolerance: an installment short by no more than it counts as paid for aging, late fees and
-- default; the shortfall stays owed. Existing terms keep a tolerance of 0, so their books do not
-- move.
--
-- No late fee is charged on an installment when the payments received for it (after the previous
-- due date, until the end of its grace days) would have paid it, had they not gone to fees and
-- late fees charged earlier: this is how 16 CFR 444.4 forbids pyramiding late charges.

ALTER TABLE core.products ADD COLUMN arrears_tolerance numeric(15,2) NOT NULL DEFAULT 0,
    ADD CONSTRAINT products_arrears_tolerance_valid CHECK (arrears_tolerance >= 0);
ALTER TABLE core.loan_terms ADD COLUMN arrears_tolerance numeric(15,2) NOT NULL DEFAULT 0;

CREATE OR REPLACE FUNCTION core.product_terms_next_version() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.terms_version := OLD.terms_version;
    IF (NEW.grace_days, NEW.late_fee_amount, NEW.late_fee_rate, NEW.default_after_days,
        NEW.prepayment_fee_rate, NEW.prepayment_reamortisation, NEW.arrears_tolerance)
       IS DISTINCT FROM
       (OLD.grace_days, OLD.late_fee_amount, OLD.late_fee_rate, OLD.default_after_days,
        OLD.prepayment_fee_rate, OLD.prepayment_reamortisation, OLD.arrears_tolerance) THEN
        NEW.terms_version := OLD.terms_version + 1;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION core.product_terms_record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO core.loan_terms (product_code, terms_version, grace_days, late_fee_amount,
                                 late_fee_rate, default_after_days, prepayment_fee_rate,
                                 prepayment_reamortisation, arrears_tolerance)
    VALUES (NEW.product_code, NEW.terms_version, NEW.grace_days, NEW.late_fee_amount,
            NEW.late_fee_rate, NEW.default_after_days, NEW.prepayment_fee_rate,
            NEW.prepayment_reamortisation, NEW.arrears_tolerance)
    ON CONFLICT (product_code, terms_version) DO NOTHING;
    RETURN NULL;
END $$;

-- The due date of a loan's oldest installment due by p_date and short by more than p_tolerance;
-- NULL when there is none (the loan is not in arrears).
CREATE FUNCTION core.in_arrears_since(p_loan uuid, p_date date, p_tolerance numeric)
RETURNS date LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT min(i.due_date) FROM core.loan_installments i
    WHERE i.loan_id = p_loan AND i.due_date <= p_date
      AND i.principal_due - i.principal_paid + i.interest_due - i.interest_paid > p_tolerance
$$;

-- What a loan's payments dated (business day) after p_after and up to p_through paid on fees and
-- late fees, net of reversals.
CREATE FUNCTION core.paid_on_charges(p_loan uuid, p_after date, p_through date)
RETURNS numeric LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(sum(a.amount), 0)
    FROM core.payment_allocations a
    JOIN core.payment_directory d ON d.payment_id = a.payment_id
    WHERE a.loan_id = p_loan AND a.component IN ('FEE', 'PENALTY') AND a.reversed_at IS NULL
      AND core.business_date(d.payment_date) > p_after
      AND core.business_date(d.payment_date) <= p_through
$$;

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
               l.next_due_date + p.grace_days < p_date AS in_arrears,
               (l.status = 'DISBURSED' AND p_date - l.next_due_date > p.default_after_days
                AND p_date - core.in_arrears_since(l.loan_id, p_date, p.arrears_tolerance)
                    > p.default_after_days)
               OR (l.status = 'DEFAULTED'
                   AND (l.next_due_date IS NULL OR l.next_due_date > p_date
                        OR core.in_arrears_since(l.loan_id, p_date, p.arrears_tolerance) IS NULL)) AS moves
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
    WITH late AS (
        SELECT gen_random_uuid() AS entry_id, i.loan_id, a.application_date, i.customer_id,
               i.installment_number, i.due_date + l.grace_days + 1 AS charged_on,
               l.late_fee_amount + round(l.late_fee_rate * (i.principal_due - i.principal_paid
                                                            + i.interest_due - i.interest_paid), 2) AS amount,
               l.loan_number
        FROM unnest(arrears_ids, arrears_dates) AS a(loan_id, application_date)
        CROSS JOIN LATERAL (
            SELECT l.loan_number, l.disbursement_date, p.grace_days, p.late_fee_amount,
                   p.late_fee_rate, p.arrears_tolerance
            FROM core.loans l
            JOIN core.loan_terms p ON (p.product_code, p.terms_version) = (l.product_code, l.terms_version)
            WHERE l.loan_id = a.loan_id AND l.application_date = a.application_date
            LIMIT 1) l
        JOIN core.loan_installments i ON i.loan_id = a.loan_id
        WHERE i.due_date + l.grace_days < p_date
          -- Short by more than the tolerance, even counting back what payments received for
          -- this installment (after the previous due date, up to the end of its grace days)
          -- paid on charges instead: no late fee because of an earlier one.
          AND i.principal_due - i.principal_paid + i.interest_due - i.interest_paid
              - core.paid_on_charges(i.loan_id,
                    coalesce((SELECT max(e.due_date) FROM core.loan_installments e
                              WHERE e.loan_id = i.loan_id
                                AND e.installment_number < i.installment_number),
                             core.business_date(l.disbursement_date) - 1),
                    i.due_date + l.grace_days)
              > l.arrears_tolerance
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
        RETURNING event_id
    )
    SELECT count(*) INTO late_fees FROM events;

    defaulted := 0;
    cured := 0;
    IF cardinality(moving_ids) = 0
       OR EXISTS (SELECT 1 FROM core.servicing_days d WHERE d.business_date > p_date) THEN
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
