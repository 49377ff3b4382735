-- An ETL batch belongs to the principal that sent it (issue 28, point 4). Before, every ETL
-- principal saw every staged line: one could read another's import report and add lines to its
-- batch. Each staged line now records its sender; row-level security shows an ETL principal its
-- own lines only, so another's batch is 404. A batch id another principal used is refused (409)
-- by `staging.batch_taken`, asked under the batch's upload lock. Lines staged before this
-- migration have no sender and belong to no ETL principal.
ALTER TABLE staging.customer_imports ADD COLUMN created_by text;
ALTER TABLE staging.customer_imports ALTER COLUMN created_by SET DEFAULT core.current_actor();

DROP POLICY customer_imports_etl ON staging.customer_imports;
CREATE POLICY customer_imports_etl ON staging.customer_imports FOR ALL TO lakehouse_etl_user
    USING (created_by = core.current_actor()) WITH CHECK (created_by = core.current_actor());

CREATE FUNCTION staging.batch_taken(p_batch text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM staging.customer_imports s
                   WHERE s.batch_id = p_batch AND s.created_by IS DISTINCT FROM core.current_actor())
$$;
REVOKE EXECUTE ON FUNCTION staging.batch_taken(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION staging.batch_taken(text) TO lakehouse_etl_user;
