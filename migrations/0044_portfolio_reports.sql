-- Portfolio reports (issue 29, point 1): portfolio at risk and aging, from each loan's position
-- on a business date. Today's positions are read live; a past date's from its daily snapshot in
-- analytics.loan_analytics (the seed guide lists the table), which the scheduler fills.

-- The position of every loan on the books (DISBURSED or DEFAULTED) as the caller may see them
-- (row-level security applies: a teller sees their branch's): its balances, and the days past due
-- on `p_date` as the loan itself counts them (the oldest installment due by then and unpaid by more
-- than the product's arrears tolerance; see GET /v1/loans/{id}). Only a loan whose next due date
-- has passed can be in arrears, so only those look at their installments.
CREATE FUNCTION analytics.loan_positions(p_date date)
RETURNS TABLE (loan_id uuid, loan_number text, customer_id uuid, branch_id integer,
               product_code text, status text, principal_outstanding numeric,
               interest_outstanding numeric, fees_outstanding numeric,
               penalties_outstanding numeric, days_past_due integer)
LANGUAGE sql STABLE AS $$
    SELECT l.loan_id, l.loan_number, l.customer_id, l.branch_id, l.product_code, l.status,
           coalesce(l.principal_outstanding, 0), coalesce(l.interest_outstanding, 0),
           l.fees_outstanding, l.penalties_outstanding,
           CASE WHEN l.next_due_date < p_date THEN
               coalesce(p_date - (
                   SELECT min(i.due_date) FROM core.loan_installments i
                   WHERE i.loan_id = l.loan_id AND i.due_date <= p_date
                     AND i.principal_due - i.principal_paid + i.interest_due - i.interest_paid
                         > (SELECT t.arrears_tolerance FROM core.loan_terms t
                            WHERE (t.product_code, t.terms_version)
                                  = (l.product_code, l.terms_version))), 0)
           ELSE 0 END
    FROM core.loans l
    WHERE l.status IN ('DISBURSED', 'DEFAULTED')
$$;
GRANT EXECUTE ON FUNCTION analytics.loan_positions(date)
    TO lakehouse_staff, lakehouse_analyst, lakehouse_read_only;

CREATE TABLE analytics.loan_analytics (
    snapshot_date         date NOT NULL,
    loan_id               uuid NOT NULL,
    loan_number           text NOT NULL,
    customer_id           uuid NOT NULL,
    branch_id             integer NOT NULL,
    product_code          text NOT NULL,
    status                text NOT NULL,
    principal_outstanding numeric(15, 2) NOT NULL,
    interest_outstanding  numeric(15, 2) NOT NULL,
    fees_outstanding      numeric(15, 2) NOT NULL,
    penalties_outstanding numeric(15, 2) NOT NULL,
    days_past_due         integer NOT NULL,
    taken_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (snapshot_date, loan_id)
);
ALTER TABLE analytics.loan_analytics ENABLE ROW LEVEL SECURITY;
CREATE POLICY loan_analytics_analyst ON analytics.loan_analytics FOR ALL TO lakehouse_analyst
    USING (true) WITH CHECK (true);
CREATE POLICY loan_analytics_read_only ON analytics.loan_analytics FOR SELECT
    TO lakehouse_read_only USING (true);
CREATE POLICY loan_analytics_staff ON analytics.loan_analytics FOR SELECT TO lakehouse_staff
    USING (branch_id = ANY ((SELECT core.visible_offices())::integer[]));
GRANT SELECT, INSERT, UPDATE, DELETE ON analytics.loan_analytics TO lakehouse_analyst;
GRANT SELECT ON analytics.loan_analytics TO lakehouse_staff, lakehouse_read_only;

INSERT INTO metadata.catalog_info (schema_name, table_name, description, owner_team, contains_pii,
                                   refresh_cycle)
SELECT 'analytics', 'loan_analytics',
       'Each loan on the books at the close of a business date: balances and days past due; the '
       'portfolio-at-risk and aging reports of past dates read it', 'risk', false, 'daily'
WHERE NOT EXISTS (SELECT 1 FROM metadata.catalog_info
                  WHERE schema_name = 'analytics' AND table_name = 'loan_analytics');

-- Which business dates have a snapshot, whatever rows the caller may see of it: the first one,
-- and whether `p_date` has one.
CREATE FUNCTION analytics.snapshot_taken(p_date date, OUT first_date date, OUT taken boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT (SELECT min(snapshot_date) FROM analytics.loan_analytics),
           EXISTS (SELECT 1 FROM analytics.loan_analytics WHERE snapshot_date = p_date)
$$;
REVOKE ALL ON FUNCTION analytics.snapshot_taken(date) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION analytics.snapshot_taken(date)
    TO lakehouse_staff, lakehouse_analyst, lakehouse_read_only;
