-- Imports commit in chunks (decision 0017): a chunk of staged lines at a time while the body
-- arrives, then the batch's lines are loaded a range at a time. No transaction stays open while
-- the client sends, so an upload never holds the events' horizon back.

-- The conflicts of one range of lines, after that range's load: its good lines that were not
-- inserted clashed with an existing customer. Runs as the owner because the ETL role sees only
-- the customers it created; it says which key clashed and reveals nothing else.
CREATE FUNCTION staging.explain_import_conflicts(p_batch text, p_after integer, p_through integer)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH explained AS (
        UPDATE staging.customer_imports s
        SET error_message = CASE
                WHEN EXISTS (SELECT 1 FROM core.customers c WHERE c.customer_code = s.customer_code)
                    THEN 'duplicate customer_code: ' || s.customer_code || ' is already registered'
                ELSE 'duplicate id_number: a customer with this ID number is already registered'
            END
        WHERE s.batch_id = p_batch AND s.line_number > p_after AND s.line_number <= p_through
          AND NOT s.processed AND s.error_message IS NULL
        RETURNING 1
    )
    SELECT count(*) FROM explained
$$;
REVOKE EXECUTE ON FUNCTION staging.explain_import_conflicts(text, integer, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION staging.explain_import_conflicts(text, integer, integer)
    TO lakehouse_etl_user;
DROP FUNCTION staging.explain_import_conflicts(text);

-- Removes up to p_limit staged lines of a batch that no successful run loaded or judged: those
-- of a failed upload, or of one that died. The caller holds the batch's upload lock, so no live
-- upload's lines are among them. Returns how many went. The ETL role cannot delete staging rows
-- itself.
CREATE FUNCTION staging.discard_unloaded(p_batch text, p_limit integer)
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH gone AS (
        DELETE FROM staging.customer_imports
        WHERE import_id IN (
            SELECT s.import_id
            FROM staging.customer_imports s
            JOIN metadata.job_execution j ON j.job_id = s.job_id
            WHERE s.batch_id = p_batch AND NOT s.processed AND j.status <> 'SUCCEEDED'
            LIMIT p_limit)
        RETURNING 1
    )
    SELECT count(*) FROM gone
$$;
REVOKE EXECUTE ON FUNCTION staging.discard_unloaded(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION staging.discard_unloaded(text, integer) TO lakehouse_etl_user;
