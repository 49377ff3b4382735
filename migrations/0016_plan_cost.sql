-- core.business_date in PL/pgSQL. As a SQL function it could never be inlined (its body reads
-- core.business_settings through a sub-select), so every query that called it planned that
-- sub-select again: about 30 µs per call, twice per repayment (pg_stat_statements with
-- track_planning). PL/pgSQL keeps the plan for the session.
CREATE OR REPLACE FUNCTION core.business_date(p_at timestamptz)
RETURNS date LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (p_at AT TIME ZONE (SELECT timezone FROM core.business_settings))::date;
END
$$;
