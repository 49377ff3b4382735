-- What a batch's report reads (its line counts and its errors by line) is the same for a
-- customer batch and a loan batch: one view over both stagings states it once.
--
-- security_invoker: the caller's grants and row-level policies apply, exactly as on the two
-- tables (the ETL principal sees its own batches only). A filter on `kind` skips the other
-- table's branch: at planning with a constant, at run time with a parameter.
CREATE VIEW staging.import_lines WITH (security_invoker = true) AS
    SELECT 'customers'::text AS kind, batch_id, line_number, processed, error_message
    FROM staging.customer_imports
    UNION ALL
    SELECT 'loans'::text, batch_id, line_number, processed, error_message
    FROM staging.loan_imports;

COMMENT ON VIEW staging.import_lines IS
    'Each staged import line, customers and loans alike: what a batch report reads';

GRANT SELECT ON staging.import_lines TO lakehouse_etl_user;
