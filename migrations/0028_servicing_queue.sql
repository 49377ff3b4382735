-- Servicing at portfolio scale (decision 0016).
--
-- A business day's run first queues every active loan (core.servicing_queue). Workers
-- then take batches off the queue: a short transaction that locks the batch's loans with SKIP
-- LOCKED, so a loan a repayment holds stays queued for a later batch instead of being waited for.
-- A money movement on a loan still queued services that loan first, in its own transaction
-- (core.service_loan_now), so each loan sees the day's servicing and its movements in one serial
-- order whichever comes first.
--
-- Each batch touches only what changes: interest falling due (the pending-interest index), late
-- fees for loans whose oldest unpaid installment (next_due_date) is past its grace days, and the
-- loans whose status moves. The statements start from the batch's loans, so the planner never
-- joins the whole book (the old late-fee statement hashed all 200,000 loans per batch: 0.84 ms a
-- loan on a day with nothing due). serviced_through, rewritten on every loan every day, is gone:
-- the queue says which loans a day has reached.

CREATE TABLE core.servicing_days (
    business_date date PRIMARY KEY,
    opened_at timestamptz NOT NULL DEFAULT now(),
    queued integer NOT NULL,
    finished_at timestamptz
);

CREATE TABLE core.servicing_queue (
    business_date date NOT NULL,
    loan_id uuid NOT NULL,
    application_date timestamptz NOT NULL,
    PRIMARY KEY (business_date, loan_id)
);
CREATE INDEX servicing_queue_loan ON core.servicing_queue (loan_id);

DROP FUNCTION core.service_loans(date, uuid, integer);
ALTER TABLE core.loans DROP COLUMN serviced_through;

-- Services the given loans (ids and their partition keys) for p_date. The caller holds their row
-- locks. Loans no longer active are left alone. Default and cure only when no later day has been
-- opened (catching up runs the days in order; re-running an old day must not move a status back).
--
-- Every statement starts from the batch and reaches each loan through its partition key, one
-- loan at a time (LATERAL … LIMIT 1: a parameterised scan that prunes to one partition), never by
-- joining the whole book.
CREATE FUNCTION core.service_locked(p_date date, p_ids uuid[], p_dates timestamptz[],
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
    -- a status move (default past the product's threshold, cure with no arrears left).
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
               (l.status = 'DISBURSED' AND p_date - l.next_due_date > p.default_after_days)
               OR (l.status = 'DEFAULTED' AND (l.next_due_date IS NULL OR l.next_due_date > p_date)) AS moves
        FROM core.loans l JOIN core.products p ON p.product_code = l.product_code
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
            SELECT l.loan_number, p.grace_days, p.late_fee_amount, p.late_fee_rate
            FROM core.loans l JOIN core.products p ON p.product_code = l.product_code
            WHERE l.loan_id = a.loan_id AND l.application_date = a.application_date
            LIMIT 1) l
        JOIN core.loan_installments i ON i.loan_id = a.loan_id
        WHERE i.due_date + l.grace_days < p_date
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

-- Opens p_date: queues every active loan not queued for it already. A day run again (on
-- request: the scheduler runs each day once) queues its loans again; servicing a loan twice for a
-- day posts nothing twice. Returns the loans queued.
CREATE FUNCTION core.open_servicing_day(p_date date) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n integer;
BEGIN
    INSERT INTO core.servicing_days AS d (business_date, queued) VALUES (p_date, 0)
    ON CONFLICT (business_date) DO UPDATE SET finished_at = NULL;
    INSERT INTO core.servicing_queue (business_date, loan_id, application_date)
    SELECT p_date, l.loan_id, l.application_date FROM core.loans l
    WHERE l.status IN ('DISBURSED', 'DEFAULTED')
    ON CONFLICT DO NOTHING;
    GET DIAGNOSTICS n = ROW_COUNT;
    UPDATE core.servicing_days SET queued = queued + n WHERE business_date = p_date;
    -- The queue is empty between runs, and autovacuum analyses it long after a run fills it:
    -- with statistics of an empty table, the batches' claims and every repayment's check of its
    -- loan would scan the whole queue.
    ANALYZE core.servicing_queue;
    RETURN n;
END $$;

-- One batch of p_date's queue: up to p_limit queued loans after p_after (a worker's cursor, so
-- that no claim walks past the entries earlier batches deleted), those nobody else holds locked,
-- serviced and taken off the queue. `skipped` counts queued loans left for later because another
-- transaction held them; `last_loan` is the cursor for the next claim (NULL: none left after
-- p_after).
CREATE FUNCTION core.service_queued(p_date date, p_after uuid, p_limit integer,
                                    OUT last_loan uuid, OUT loans integer, OUT skipped integer,
                                    OUT interest_entries integer, OUT late_fees integer,
                                    OUT defaulted integer, OUT cured integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    n_claimed integer;
    ids uuid[];
    dates timestamptz[];
BEGIN
    WITH claimed AS (
        SELECT q.loan_id, q.application_date FROM core.servicing_queue q
        WHERE q.business_date = p_date
          AND q.loan_id > coalesce(p_after, '00000000-0000-0000-0000-000000000000')
        ORDER BY q.loan_id LIMIT p_limit FOR UPDATE SKIP LOCKED
    ), locked AS (
        SELECT c.loan_id, c.application_date FROM claimed c
        CROSS JOIN LATERAL (SELECT 1 FROM core.loans l
                            WHERE l.loan_id = c.loan_id AND l.application_date = c.application_date
                            LIMIT 1 FOR UPDATE SKIP LOCKED) l
    ), taken AS (
        DELETE FROM core.servicing_queue q USING locked k
        WHERE q.business_date = p_date AND q.loan_id = k.loan_id
        RETURNING q.loan_id, q.application_date
    )
    SELECT coalesce(array_agg(t.loan_id), '{}'), coalesce(array_agg(t.application_date), '{}'),
           (SELECT count(*) FROM claimed), (SELECT c.loan_id FROM claimed c ORDER BY c.loan_id DESC LIMIT 1)
    INTO ids, dates, n_claimed, last_loan FROM taken t;
    loans := cardinality(ids);
    skipped := n_claimed - loans;
    IF loans = 0 THEN
        interest_entries := 0; late_fees := 0; defaulted := 0; cured := 0;
        RETURN;
    END IF;
    SELECT s.interest_entries, s.late_fees, s.defaulted, s.cured
    INTO interest_entries, late_fees, defaulted, cured
    FROM core.service_locked(p_date, ids, dates) s;
END $$;

-- Closes p_date when its queue is empty; returns whether it is closed.
CREATE FUNCTION core.close_servicing_day(p_date date) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM core.servicing_queue q WHERE q.business_date = p_date) THEN
        RETURN false;
    END IF;
    UPDATE core.servicing_days SET finished_at = coalesce(finished_at, now())
    WHERE business_date = p_date;
    RETURN true;
END $$;

-- The earliest day opened and not finished: another instance's run, which this one's workers may
-- help with.
CREATE FUNCTION core.servicing_day_open() RETURNS date
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT min(d.business_date) FROM core.servicing_days d WHERE d.finished_at IS NULL
$$;

-- Whether servicing has yet to reach this loan on a day already opened.
CREATE FUNCTION core.servicing_pending(p_loan uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM core.servicing_queue q WHERE q.loan_id = p_loan)
$$;

-- Services one loan for every opened day that has not reached it yet, in day order. The caller
-- holds the loan's row lock (every money movement takes it first). If a batch has claimed the
-- loan's queue row and skipped the loan, this waits for that batch only.
CREATE FUNCTION core.service_loan_now(p_loan uuid) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    days date[];
    day date;
    applied timestamptz;
BEGIN
    WITH taken AS (
        DELETE FROM core.servicing_queue q WHERE q.loan_id = p_loan RETURNING q.business_date
    )
    SELECT array_agg(business_date ORDER BY business_date) INTO days FROM taken;
    IF days IS NULL THEN
        RETURN 0;
    END IF;
    SELECT d.application_date INTO applied FROM core.loan_directory d WHERE d.loan_id = p_loan;
    FOREACH day IN ARRAY days LOOP
        PERFORM core.service_locked(day, ARRAY[p_loan], ARRAY[applied]);
    END LOOP;
    RETURN cardinality(days);
END $$;

REVOKE EXECUTE ON FUNCTION core.service_locked(date, uuid[], timestamptz[]),
    core.open_servicing_day(date), core.service_queued(date, uuid, integer),
    core.close_servicing_day(date), core.servicing_day_open(), core.servicing_pending(uuid),
    core.service_loan_now(uuid)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.open_servicing_day(date), core.service_queued(date, uuid, integer),
    core.close_servicing_day(date), core.servicing_day_open() TO lakehouse_admin_api;
GRANT EXECUTE ON FUNCTION core.servicing_pending(uuid), core.service_loan_now(uuid)
    TO lakehouse_app_user, lakehouse_staff, lakehouse_admin_api;
