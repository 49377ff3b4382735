-- Roles are cluster-wide, so every database migrated on this cluster shares them. Each statement
-- here must be idempotent and must survive another database running this file at the same moment:
-- a concurrent CREATE ROLE or GRANT of the same name fails with unique_violation (or, for a
-- membership row updated twice, "tuple concurrently updated"), which only means the other migration
-- won the race.

CREATE OR REPLACE FUNCTION pg_temp.create_role_once(role_name text, options text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
        EXECUTE format('CREATE ROLE %I %s', role_name, options);
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END $$;

CREATE OR REPLACE FUNCTION pg_temp.grant_role_once(granted text, grantee text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF NOT pg_catalog.pg_has_role(grantee, granted, 'MEMBER') THEN
        EXECUTE format('GRANT %I TO %I', granted, grantee);
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation OR internal_error THEN
    NULL;
END $$;

-- The roles a request switches to (see src/auth/mod.rs, Role::db_role).
SELECT pg_temp.create_role_once('lakehouse_read_only', 'NOLOGIN');
SELECT pg_temp.create_role_once('lakehouse_analyst', 'NOLOGIN');
SELECT pg_temp.create_role_once('lakehouse_app_user', 'NOLOGIN');
SELECT pg_temp.create_role_once('lakehouse_staff', 'NOLOGIN');
SELECT pg_temp.create_role_once('lakehouse_etl_user', 'NOLOGIN');
SELECT pg_temp.create_role_once('lakehouse_admin_api', 'NOLOGIN');

-- The pool's login role. NOINHERIT: it holds no privilege of its own until a request switches
-- role. Not superuser, owns nothing, no BYPASSRLS. `lakehouse-api migrate` gives it LOGIN and a
-- password (as a SCRAM verifier, so the password never appears in SQL text).
SELECT pg_temp.create_role_once(
    'lakehouse_authenticator',
    'NOLOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS'
);

SELECT pg_temp.grant_role_once('lakehouse_read_only', 'lakehouse_analyst');
-- Administrators may do everything staff and analysts may, and read the monitoring views.
SELECT pg_temp.grant_role_once('lakehouse_staff', 'lakehouse_admin_api');
SELECT pg_temp.grant_role_once('lakehouse_analyst', 'lakehouse_admin_api');
SELECT pg_temp.grant_role_once('pg_monitor', 'lakehouse_admin_api');

SELECT pg_temp.grant_role_once(r, 'lakehouse_authenticator')
FROM unnest(ARRAY['lakehouse_app_user', 'lakehouse_staff', 'lakehouse_analyst',
                  'lakehouse_etl_user', 'lakehouse_admin_api']) AS r;

-- The readiness probe compares applied migrations with the binary's.
GRANT SELECT ON TABLE _sqlx_migrations TO lakehouse_authenticator;

CREATE SCHEMA IF NOT EXISTS core;
CREATE SCHEMA IF NOT EXISTS analytics;
CREATE SCHEMA IF NOT EXISTS metadata;
CREATE SCHEMA IF NOT EXISTS staging;

REVOKE CREATE ON SCHEMA public FROM PUBLIC;

GRANT USAGE ON SCHEMA core TO lakehouse_app_user, lakehouse_staff, lakehouse_read_only,
    lakehouse_etl_user, lakehouse_authenticator;
GRANT USAGE ON SCHEMA analytics TO lakehouse_analyst, lakehouse_staff;
GRANT USAGE ON SCHEMA metadata TO lakehouse_analyst, lakehouse_etl_user;
GRANT USAGE ON SCHEMA staging TO lakehouse_etl_user;

-- The customer a request acts for, or NULL. missing_ok and nullif make "not set" (and the ''
-- a pooled connection keeps after a transaction-local set_config) mean "no customer", never an
-- error and never "every customer". Policies call it as (SELECT core.current_customer_id()) so it
-- is evaluated once per statement, not once per row.
CREATE OR REPLACE FUNCTION core.current_customer_id()
RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT nullif(current_setting('app.current_customer_id', true), '')::uuid
$$;

-- Who is acting, for audit columns: the token subject the service set, else the database user.
CREATE OR REPLACE FUNCTION core.current_actor()
RETURNS text LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT coalesce(nullif(current_setting('app.actor', true), ''), session_user::text)
$$;
