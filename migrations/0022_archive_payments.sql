-- Hand-off to the lakehouse: payment partitions older than N years leave core.payments for the
-- archive schema, where analysts and the Trino login read them, once every loan with a payment
-- in them is closed or written off. The journal stays in core, so every loan's books and
-- statements stay complete.
--
-- What changes for an archived month:
--   * core.payment_directory keeps its rows, so the foreign keys that reference it (allocations,
--     schedule changes, journal entries) stay valid; the directory names a payment whose row
--     now lives in archive.payments_YYYY_MM.
--   * GET /v1/payments and /v1/payments/{id} no longer find those payments (404): they read
--     core.payments. The journal (GET /v1/loans/{id}/journal) still shows their money.
--   * Row-level security stays on core.payments; the archived table has none, so only the
--     analyst, read-only and Trino roles are granted it (never a customer's role).
--   * A payment dated in an archived month cannot be recorded again: its month's partition would
--     be created afresh in core. Archive only months older than BACKDATING_LIMIT_DAYS.
--
-- DETACH PARTITION takes an ACCESS EXCLUSIVE lock on core.payments for a moment: run it in a
-- quiet hour (or detach by hand with DETACH PARTITION … CONCURRENTLY, which cannot run inside
-- a function).
CREATE SCHEMA IF NOT EXISTS archive;
REVOKE ALL ON SCHEMA archive FROM PUBLIC;
GRANT USAGE ON SCHEMA archive TO lakehouse_read_only, lakehouse_analyst;
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lakehouse_trino') THEN
        GRANT USAGE ON SCHEMA archive TO lakehouse_trino;
    END IF;
END
$$;

CREATE FUNCTION core.archive_payment_partitions(p_older_than_years integer)
RETURNS TABLE (partition_name text, payments bigint, archived boolean, reason text)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    cutoff timestamptz := date_trunc('month', now() - make_interval(years => p_older_than_years), 'UTC');
    part   record;
    open_loans bigint;
BEGIN
    IF p_older_than_years < 1 THEN
        RAISE EXCEPTION 'archive only partitions at least a year old (got %)', p_older_than_years;
    END IF;
    FOR part IN
        SELECT c.oid::regclass AS rel, c.relname::text AS name,
               (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz AS upper_bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'core.payments'::regclass
        ORDER BY c.relname
    LOOP
        CONTINUE WHEN part.upper_bound IS NULL OR part.upper_bound > cutoff;
        EXECUTE format('SELECT count(*) FROM %s', part.rel) INTO payments;
        EXECUTE format(
            'SELECT count(DISTINCT l.loan_id) FROM %s p JOIN core.loans l ON l.loan_id = p.loan_id '
            'WHERE l.status NOT IN (''CLOSED'', ''WRITTEN_OFF'', ''REJECTED'', ''CANCELLED'')', part.rel)
        INTO open_loans;
        partition_name := part.name;
        IF open_loans > 0 THEN
            archived := false;
            reason := format('%s loan(s) with payments in it are still open', open_loans);
        ELSE
            EXECUTE format('ALTER TABLE core.payments DETACH PARTITION %s', part.rel);
            EXECUTE format('ALTER TABLE %s SET SCHEMA archive', part.rel);
            EXECUTE format('REVOKE ALL ON archive.%I FROM PUBLIC, lakehouse_app_user, lakehouse_staff, '
                           'lakehouse_etl_user, lakehouse_admin_api', part.name);
            EXECUTE format('GRANT SELECT ON archive.%I TO lakehouse_read_only, lakehouse_analyst', part.name);
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'lakehouse_trino') THEN
                EXECUTE format('GRANT SELECT ON archive.%I TO lakehouse_trino', part.name);
            END IF;
            archived := true;
            reason := NULL;
        END IF;
        RETURN NEXT;
    END LOOP;
END
$$;
REVOKE EXECUTE ON FUNCTION core.archive_payment_partitions(integer) FROM PUBLIC;
