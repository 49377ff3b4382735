-- The money core: a double-entry journal behind every balance, interest that becomes receivable
-- on its due date (not at disbursement), late fees, default and write-off.
--
-- Sign convention: a line's amount is positive for a debit and negative for a credit, so the
-- lines of an entry sum to zero. Loan accounts (LOAN_*) are the loan's receivables; the others
-- are the general ledger. Every line carries its loan and customer, so a customer can read the
-- journal of their own loans under row-level security and a trial balance is one GROUP BY.

---------------------------------------------------------------------------------------------------
-- What servicing needs to know about a product.
ALTER TABLE core.products
    ADD COLUMN grace_days          integer       NOT NULL DEFAULT 5,
    ADD COLUMN late_fee_amount     numeric(15,2) NOT NULL DEFAULT 0,
    ADD COLUMN late_fee_rate       numeric(7,6)  NOT NULL DEFAULT 0,
    ADD COLUMN default_after_days  integer       NOT NULL DEFAULT 90,
    ADD COLUMN prepayment_fee_rate numeric(7,6)  NOT NULL DEFAULT 0,
    ADD CONSTRAINT products_servicing_terms_valid CHECK (
        grace_days BETWEEN 0 AND 365 AND late_fee_amount >= 0 AND late_fee_rate BETWEEN 0 AND 1
        AND default_after_days BETWEEN 1 AND 3650 AND prepayment_fee_rate BETWEEN 0 AND 1);

---------------------------------------------------------------------------------------------------
-- Loans: penalties (late fees) apart from fees, and the write-off.
ALTER TABLE core.loans
    ADD COLUMN penalties_outstanding numeric(15,2) NOT NULL DEFAULT 0,
    ADD COLUMN defaulted_at          timestamptz,
    ADD COLUMN written_off_at        timestamptz,
    ADD COLUMN written_off_by        text,
    ADD COLUMN written_off_amount    numeric(15,2),
    ADD COLUMN recovered_amount      numeric(15,2) NOT NULL DEFAULT 0,
    DROP CONSTRAINT loans_status_valid,
    ADD CONSTRAINT loans_status_valid CHECK (status IN (
        'APPLIED', 'APPROVED', 'REJECTED', 'CANCELLED', 'DISBURSED', 'CLOSED', 'DEFAULTED',
        'WRITTEN_OFF')),
    ADD CONSTRAINT loans_penalties_nonnegative CHECK (penalties_outstanding >= 0),
    ADD CONSTRAINT loans_written_off_stamped CHECK (
        (status <> 'WRITTEN_OFF' OR (written_off_at IS NOT NULL AND written_off_amount IS NOT NULL
                                     AND disbursement_date IS NOT NULL))
        AND recovered_amount BETWEEN 0 AND coalesce(written_off_amount, 0));

-- The lifecycle: a disbursed, closed, defaulted or written-off loan was approved and paid out.
ALTER TABLE core.loans DROP CONSTRAINT loans_lifecycle_stamped,
    ADD CONSTRAINT loans_lifecycle_stamped CHECK (
        (status NOT IN ('APPROVED', 'DISBURSED', 'CLOSED', 'DEFAULTED', 'WRITTEN_OFF')
         OR approval_date IS NOT NULL)
        AND (status NOT IN ('DISBURSED', 'CLOSED', 'DEFAULTED', 'WRITTEN_OFF')
             OR (disbursement_date IS NOT NULL AND maturity_date IS NOT NULL))
        AND (status <> 'REJECTED' OR rejected_at IS NOT NULL)
        AND (status <> 'CANCELLED' OR cancelled_at IS NOT NULL)
        AND (status <> 'CLOSED' OR closed_at IS NOT NULL));

---------------------------------------------------------------------------------------------------
-- Installments: how much of the scheduled interest has become receivable (on the due date, or
-- earlier when a payment pays it ahead or a payoff accrues it).
ALTER TABLE core.loan_installments
    ADD COLUMN interest_posted numeric(15,2) NOT NULL DEFAULT 0;
UPDATE core.loan_installments
SET interest_posted = CASE WHEN due_date <= current_date THEN interest_due ELSE interest_paid END;
ALTER TABLE core.loan_installments
    DROP CONSTRAINT loan_installments_interest_paid_range,
    ADD CONSTRAINT loan_installments_interest_posted_range
        CHECK (interest_posted BETWEEN 0 AND interest_due),
    ADD CONSTRAINT loan_installments_interest_paid_range
        CHECK (interest_paid BETWEEN 0 AND interest_posted);

-- Allocations: penalties, and how much of an allocation the payment itself made receivable
-- (interest paid ahead of its due date, accrued interest and the prepayment fee of a payoff).
ALTER TABLE core.payment_allocations
    ADD COLUMN posted numeric(15,2) NOT NULL DEFAULT 0,
    DROP CONSTRAINT payment_allocations_component_valid,
    ADD CONSTRAINT payment_allocations_component_valid
        CHECK (component IN ('FEE', 'PENALTY', 'INTEREST', 'PRINCIPAL')),
    DROP CONSTRAINT payment_allocations_target,
    ADD CONSTRAINT payment_allocations_target
        CHECK ((component IN ('FEE', 'PENALTY')) = (installment_number IS NULL)),
    ADD CONSTRAINT payment_allocations_posted_range CHECK (posted BETWEEN 0 AND amount);

---------------------------------------------------------------------------------------------------
CREATE TABLE core.journal_entries (
    entry_id           uuid        NOT NULL,
    -- Posting order, across transactions and within one (posted_at is the transaction's start).
    entry_number       bigint      GENERATED ALWAYS AS IDENTITY,
    loan_id            uuid        NOT NULL,
    customer_id        uuid        NOT NULL,
    kind               text        NOT NULL,
    business_date      date        NOT NULL,
    payment_id         uuid,
    installment_number integer,
    reverses           uuid,
    posted_at          timestamptz NOT NULL DEFAULT now(),
    posted_by          text        NOT NULL DEFAULT core.current_actor(),
    CONSTRAINT journal_entries_pkey PRIMARY KEY (entry_id),
    CONSTRAINT journal_entries_loan_id_fkey FOREIGN KEY (loan_id)
        REFERENCES core.loan_directory (loan_id),
    CONSTRAINT journal_entries_reverses_fkey FOREIGN KEY (reverses)
        REFERENCES core.journal_entries (entry_id),
    CONSTRAINT journal_entries_reverses_key UNIQUE (reverses),
    CONSTRAINT journal_entries_kind_valid CHECK (kind IN (
        'DISBURSEMENT', 'REPAYMENT', 'PAYOFF', 'FEE', 'INTEREST_DUE', 'LATE_FEE', 'WRITE_OFF',
        'RECOVERY', 'REVERSAL')),
    CONSTRAINT journal_entries_reversal_shape CHECK ((kind = 'REVERSAL') = (reverses IS NOT NULL))
);
-- A loan's journal in posting order; a payment's entries; one late fee per installment.
CREATE INDEX idx_journal_entries_loan ON core.journal_entries (loan_id, entry_number);
CREATE INDEX idx_journal_entries_payment ON core.journal_entries (payment_id)
    WHERE payment_id IS NOT NULL;
CREATE UNIQUE INDEX journal_entries_late_fee_once ON core.journal_entries (loan_id, installment_number)
    WHERE kind = 'LATE_FEE';

CREATE TABLE core.journal_lines (
    entry_id    uuid          NOT NULL,
    line_number smallint      NOT NULL,
    loan_id     uuid          NOT NULL,
    customer_id uuid          NOT NULL,
    account     text          NOT NULL,
    amount      numeric(15,2) NOT NULL,
    CONSTRAINT journal_lines_pkey PRIMARY KEY (entry_id, line_number),
    CONSTRAINT journal_lines_entry_id_fkey FOREIGN KEY (entry_id)
        REFERENCES core.journal_entries (entry_id),
    CONSTRAINT journal_lines_account_valid CHECK (account IN (
        'LOAN_PRINCIPAL', 'LOAN_INTEREST', 'LOAN_FEES', 'LOAN_PENALTIES', 'LOAN_OVERPAYMENT',
        'CASH', 'INTEREST_INCOME', 'FEE_INCOME', 'PENALTY_INCOME', 'WRITE_OFF_EXPENSE')),
    CONSTRAINT journal_lines_amount_nonzero CHECK (amount <> 0)
);
CREATE INDEX idx_journal_lines_loan_account ON core.journal_lines (loan_id, account);

-- Every INSERT into the lines must leave each entry it touches balanced, and an entry's lines
-- arrive in one statement: no later statement can add to (or unbalance) a posted entry.
CREATE FUNCTION core.check_journal_balanced()
RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_lines GROUP BY entry_id HAVING sum(amount) <> 0) THEN
        RAISE EXCEPTION 'a journal entry''s lines must sum to zero'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'journal_lines_balanced';
    END IF;
    IF EXISTS (SELECT 1 FROM (SELECT entry_id, count(*) AS lines FROM new_lines GROUP BY entry_id) n
               WHERE (SELECT count(*) FROM core.journal_lines l WHERE l.entry_id = n.entry_id)
                     <> n.lines) THEN
        RAISE EXCEPTION 'a posted journal entry takes no further lines'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'journal_lines_balanced';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER journal_lines_balanced AFTER INSERT ON core.journal_lines
    REFERENCING NEW TABLE AS new_lines FOR EACH STATEMENT
    EXECUTE FUNCTION core.check_journal_balanced();

-- Entries and lines are immutable: a mistake is corrected by a contra entry.
CREATE FUNCTION core.refuse_journal_change()
RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'the journal is append-only; post a reversal instead'
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE TRIGGER journal_entries_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON core.journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION core.refuse_journal_change();
CREATE TRIGGER journal_lines_immutable BEFORE UPDATE OR DELETE OR TRUNCATE ON core.journal_lines
    FOR EACH STATEMENT EXECUTE FUNCTION core.refuse_journal_change();

ALTER TABLE core.journal_entries ENABLE ROW LEVEL SECURITY;
ALTER TABLE core.journal_lines ENABLE ROW LEVEL SECURITY;
CREATE POLICY journal_entries_self ON core.journal_entries FOR SELECT TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY journal_entries_staff_read ON core.journal_entries FOR SELECT TO lakehouse_staff
    USING (true);
CREATE POLICY journal_entries_staff_post ON core.journal_entries FOR INSERT TO lakehouse_staff
    WITH CHECK (true);
CREATE POLICY journal_entries_read_only ON core.journal_entries FOR SELECT TO lakehouse_read_only
    USING (true);
CREATE POLICY journal_lines_self ON core.journal_lines FOR SELECT TO lakehouse_app_user
    USING (customer_id = (SELECT core.current_customer_id()));
CREATE POLICY journal_lines_staff_read ON core.journal_lines FOR SELECT TO lakehouse_staff
    USING (true);
CREATE POLICY journal_lines_staff_post ON core.journal_lines FOR INSERT TO lakehouse_staff
    WITH CHECK (true);
CREATE POLICY journal_lines_read_only ON core.journal_lines FOR SELECT TO lakehouse_read_only
    USING (true);
GRANT SELECT ON core.journal_entries, core.journal_lines TO lakehouse_app_user, lakehouse_read_only;
GRANT SELECT, INSERT ON core.journal_entries, core.journal_lines TO lakehouse_staff;
GRANT USAGE ON SEQUENCE core.journal_entries_entry_number_seq TO lakehouse_staff;

---------------------------------------------------------------------------------------------------
-- The business day: due dates, servicing and "today" are dates in one time zone, kept with the
-- books so that every instance of the service agrees (`lakehouse-api migrate` sets it from
-- BUSINESS_TIMEZONE). The check rejects a zone PostgreSQL does not know.
CREATE TABLE core.business_settings (
    singleton boolean NOT NULL DEFAULT true,
    timezone  text    NOT NULL DEFAULT 'UTC',
    CONSTRAINT business_settings_pkey PRIMARY KEY (singleton),
    CONSTRAINT business_settings_singleton CHECK (singleton),
    CONSTRAINT business_settings_timezone_known CHECK (now() AT TIME ZONE timezone IS NOT NULL)
);
INSERT INTO core.business_settings DEFAULT VALUES;
GRANT SELECT ON core.business_settings TO lakehouse_app_user, lakehouse_staff, lakehouse_read_only,
    lakehouse_etl_user;

CREATE FUNCTION core.business_date(p_at timestamptz)
RETURNS date LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT (p_at AT TIME ZONE (SELECT timezone FROM core.business_settings))::date
$$;

---------------------------------------------------------------------------------------------------
-- Backfill: the books of loans paid out before the journal existed, from their payments and
-- allocations, in one statement (the balance trigger checks every entry).
WITH disbursements AS (
    SELECT p.payment_id, p.loan_id, p.customer_id, p.amount, p.payment_date
    FROM core.payments p WHERE p.payment_type = 'DISBURSEMENT' AND p.status = 'COMPLETED'
), fees AS (
    SELECT p.payment_id, p.loan_id, p.customer_id, p.amount, p.payment_date, p.status
    FROM core.payments p WHERE p.payment_type = 'FEE' AND p.status IN ('COMPLETED', 'REVERSED')
), repayments AS (
    SELECT p.payment_id, p.loan_id, p.customer_id, p.amount, p.payment_date, p.status,
           sum(a.amount) FILTER (WHERE a.component = 'FEE') AS fee,
           sum(a.amount) FILTER (WHERE a.component = 'INTEREST') AS interest,
           sum(a.amount) FILTER (WHERE a.component = 'PRINCIPAL') AS principal
    FROM core.payments p JOIN core.payment_allocations a ON a.payment_id = p.payment_id
    WHERE p.payment_type = 'REPAYMENT' AND p.status IN ('COMPLETED', 'REVERSED')
    GROUP BY p.payment_id, p.loan_id, p.customer_id, p.amount, p.payment_date, p.status
), posted AS (
    SELECT loan_id, customer_id, installment_number, due_date, interest_posted
    FROM core.loan_installments WHERE interest_posted > 0
), drafts AS (
    SELECT gen_random_uuid() AS entry_id, loan_id, customer_id, 'DISBURSEMENT' AS kind,
           payment_date::date AS business_date, payment_id, NULL::integer AS installment_number,
           ARRAY['LOAN_PRINCIPAL', 'CASH'] AS accounts, ARRAY[amount, -amount] AS amounts,
           false AS reversed
    FROM disbursements
    UNION ALL
    SELECT gen_random_uuid(), loan_id, customer_id, 'INTEREST_DUE', least(due_date, current_date),
           NULL, installment_number, ARRAY['LOAN_INTEREST', 'INTEREST_INCOME'],
           ARRAY[interest_posted, -interest_posted], false
    FROM posted
    UNION ALL
    SELECT gen_random_uuid(), loan_id, customer_id, 'FEE', payment_date::date, payment_id, NULL,
           ARRAY['LOAN_FEES', 'FEE_INCOME'], ARRAY[amount, -amount], status = 'REVERSED'
    FROM fees
    UNION ALL
    SELECT gen_random_uuid(), loan_id, customer_id, 'REPAYMENT', payment_date::date, payment_id, NULL,
           ARRAY['CASH', 'LOAN_FEES', 'LOAN_INTEREST', 'LOAN_PRINCIPAL'],
           ARRAY[amount, -coalesce(fee, 0), -coalesce(interest, 0), -coalesce(principal, 0)],
           status = 'REVERSED'
    FROM repayments
), entries AS (
    SELECT entry_id, loan_id, customer_id, kind, business_date, payment_id, installment_number,
           NULL::uuid AS reverses, accounts, amounts
    FROM drafts
    UNION ALL
    SELECT gen_random_uuid(), loan_id, customer_id, 'REVERSAL', business_date, payment_id, NULL,
           entry_id, accounts, ARRAY(SELECT -x FROM unnest(amounts) AS x)
    FROM drafts WHERE reversed
), inserted AS (
    INSERT INTO core.journal_entries (entry_id, loan_id, customer_id, kind, business_date,
                                      payment_id, installment_number, reverses, posted_by)
    SELECT entry_id, loan_id, customer_id, kind, business_date, payment_id, installment_number,
           reverses, 'system|migration-0012'
    FROM entries ORDER BY business_date, reverses NULLS FIRST
    RETURNING entry_id
)
INSERT INTO core.journal_lines (entry_id, line_number, loan_id, customer_id, account, amount)
SELECT e.entry_id, row_number() OVER (PARTITION BY e.entry_id), e.loan_id, e.customer_id, l.account, l.amount
FROM entries e CROSS JOIN LATERAL unnest(e.accounts, e.amounts) AS l(account, amount)
WHERE l.amount <> 0 AND e.entry_id IN (SELECT entry_id FROM inserted);

-- The balance columns now mean what the journal says: interest_outstanding is interest due
-- (receivable) and unpaid, no longer the whole schedule's interest.
UPDATE core.loans l
SET principal_outstanding = coalesce(b.principal, 0), interest_outstanding = coalesce(b.interest, 0),
    fees_outstanding = coalesce(b.fees, 0)
FROM (SELECT loan_id,
             sum(amount) FILTER (WHERE account = 'LOAN_PRINCIPAL') AS principal,
             sum(amount) FILTER (WHERE account = 'LOAN_INTEREST') AS interest,
             sum(amount) FILTER (WHERE account = 'LOAN_FEES') AS fees
      FROM core.journal_lines GROUP BY loan_id) b
WHERE b.loan_id = l.loan_id;

---------------------------------------------------------------------------------------------------
-- Daily servicing, set-based over a batch of active loans (by loan id, after p_after): interest
-- falling due on or before p_date becomes receivable (one entry per installment, dated its due
-- date); an installment more than the product's grace days past due is charged one late fee;
-- a loan more than default_after_days past due defaults, and a defaulted loan with no arrears is
-- cured. It locks the batch's loans first, as every money movement does, so it never races a
-- repayment. Idempotent per date; a date before the one a loan was last serviced for changes no
-- status (catching up runs the dates in order).
ALTER TABLE core.loans ADD COLUMN serviced_through date;
CREATE INDEX idx_loan_installments_interest_pending ON core.loan_installments (loan_id, due_date)
    WHERE interest_posted < interest_due;

CREATE FUNCTION core.service_loans(p_date date, p_after uuid, p_limit integer)
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

    -- One late fee per installment past its grace days and not fully paid. Its event takes the
    -- outbox's commit-order lock first, as status changes do (migration 0008).
    PERFORM pg_advisory_xact_lock('metadata.outbox_events'::regclass::oid::bigint);
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
        RETURNING event_id, payload
    )
    SELECT count(*) INTO late_fees
    FROM events CROSS JOIN LATERAL (
        SELECT pg_notify('loan_fee_charged',
                         (payload || jsonb_build_object('event_id', event_id))::text)) AS sent;

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
REVOKE EXECUTE ON FUNCTION core.service_loans(date, uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.service_loans(date, uuid, integer) TO lakehouse_admin_api;
