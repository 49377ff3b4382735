-- The admin report's top statements come from pg_stat_statements (preloaded by
-- deploy/postgresql.conf). Creating the extension needs a superuser; where the owner is not
-- one, the report says the statistics are unavailable instead.
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public;
EXCEPTION WHEN insufficient_privilege OR undefined_file THEN
    RAISE NOTICE 'pg_stat_statements not created: %', SQLERRM;
END
$$;
