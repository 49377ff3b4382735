-- Each loan carries its own contract (decision 0018). A product's servicing and prepayment terms
-- are kept as numbered, immutable versions (core.loan_terms); a loan is pinned to the version its
-- product had when it was approved (terms_version), and servicing, payoff and the schedule's
-- statuses read the loan's version, never the product's current terms. A product change makes a
-- new version, which only loans approved afterwards get.
--
-- Existing loans are pinned to version 1: their product's terms at this migration, which is what
-- they were serviced under until now. The column is added with that default, so no loan row is
-- rewritten; the default is then dropped and a trigger pins each new loan.

CREATE TABLE core.loan_terms (
    product_code              text          NOT NULL REFERENCES core.products (product_code),
    terms_version             integer       NOT NULL,
    grace_days                integer       NOT NULL,
    late_fee_amount           numeric(15,2) NOT NULL,
    late_fee_rate             numeric(7,6)  NOT NULL,
    default_after_days        integer       NOT NULL,
    prepayment_fee_rate       numeric(7,6)  NOT NULL,
    prepayment_reamortisation text          NOT NULL,
    created_at                timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (product_code, terms_version)
);
GRANT SELECT ON core.loan_terms
    TO lakehouse_app_user, lakehouse_staff, lakehouse_read_only, lakehouse_etl_user;

ALTER TABLE core.products ADD COLUMN terms_version integer NOT NULL DEFAULT 1;
INSERT INTO core.loan_terms (product_code, terms_version, grace_days, late_fee_amount,
                             late_fee_rate, default_after_days, prepayment_fee_rate,
                             prepayment_reamortisation)
SELECT product_code, 1, grace_days, late_fee_amount, late_fee_rate, default_after_days,
       prepayment_fee_rate, prepayment_reamortisation
FROM core.products;

-- A change of any term makes the next version (before the row is written), and every version is
-- recorded once the product row holds it (after).
CREATE FUNCTION core.product_terms_next_version() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.terms_version := OLD.terms_version;
    IF (NEW.grace_days, NEW.late_fee_amount, NEW.late_fee_rate, NEW.default_after_days,
        NEW.prepayment_fee_rate, NEW.prepayment_reamortisation)
       IS DISTINCT FROM
       (OLD.grace_days, OLD.late_fee_amount, OLD.late_fee_rate, OLD.default_after_days,
        OLD.prepayment_fee_rate, OLD.prepayment_reamortisation) THEN
        NEW.terms_version := OLD.terms_version + 1;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER products_terms_next_version BEFORE UPDATE ON core.products
    FOR EACH ROW EXECUTE FUNCTION core.product_terms_next_version();

CREATE FUNCTION core.product_terms_record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO core.loan_terms (product_code, terms_version, grace_days, late_fee_amount,
                                 late_fee_rate, default_after_days, prepayment_fee_rate,
                                 prepayment_reamortisation)
    VALUES (NEW.product_code, NEW.terms_version, NEW.grace_days, NEW.late_fee_amount,
            NEW.late_fee_rate, NEW.default_after_days, NEW.prepayment_fee_rate,
            NEW.prepayment_reamortisation)
    ON CONFLICT (product_code, terms_version) DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER products_terms_record AFTER INSERT OR UPDATE ON core.products
    FOR EACH ROW EXECUTE FUNCTION core.product_terms_record();

ALTER TABLE core.loans ADD COLUMN terms_version integer NOT NULL DEFAULT 1;
ALTER TABLE core.loans ALTER COLUMN terms_version DROP DEFAULT;
ALTER TABLE core.loans ADD CONSTRAINT loans_terms_fkey FOREIGN KEY (product_code, terms_version)
    REFERENCES core.loan_terms (product_code, terms_version);

-- A new loan takes its product's current terms; approval pins the terms current then.
CREATE FUNCTION core.pin_loan_terms() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF TG_OP = 'INSERT' OR (NEW.status = 'APPROVED' AND OLD.status = 'APPLIED') THEN
        SELECT p.terms_version INTO NEW.terms_version
        FROM core.products p WHERE p.product_code = NEW.product_code;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER loans_pin_terms BEFORE INSERT OR UPDATE OF status ON core.loans
    FOR EACH ROW EXECUTE FUNCTION core.pin_loan_terms();

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
               (l.status = 'DISBURSED' AND p_date - l.next_due_date > p.default_after_days)
               OR (l.status = 'DEFAULTED' AND (l.next_due_date IS NULL OR l.next_due_date > p_date)) AS moves
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
            SELECT l.loan_number, p.grace_days, p.late_fee_amount, p.late_fee_rate
            FROM core.loans l
            JOIN core.loan_terms p ON (p.product_code, p.terms_version) = (l.product_code, l.terms_version)
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
