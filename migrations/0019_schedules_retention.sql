-- Schedules and retention.
--
-- A job run holds a transaction-scoped advisory lock on a connection of its own for as long as
-- it runs (runner_lock); a RUNNING row whose lock nobody holds lost its runner (a crash, a cut
-- connection) and metadata.fail_abandoned_jobs marks it FAILED.
ALTER TABLE metadata.job_execution ADD COLUMN runner_lock bigint;
CREATE INDEX idx_job_execution_running ON metadata.job_execution (started_at) WHERE status = 'RUNNING';
CREATE INDEX idx_job_execution_finished ON metadata.job_execution (finished_at) WHERE status <> 'RUNNING';

CREATE FUNCTION metadata.fail_abandoned_jobs()
RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    WITH held AS (
        -- A bigint advisory key shows in pg_locks as its high and low halves.
        SELECT (l.classid::bigint << 32) | l.objid::bigint AS key
        FROM pg_locks l
        WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
    ), failed AS (
        UPDATE metadata.job_execution j
        SET status = 'FAILED', finished_at = clock_timestamp(),
            error_message = 'abandoned: its runner no longer holds the run''s lock (crashed or disconnected)'
        WHERE j.status = 'RUNNING'
          AND CASE WHEN j.runner_lock IS NULL
                   -- Runs recorded before runner locks: a day is far beyond any job's timeout.
                   THEN j.started_at < now() - interval '1 day'
                   ELSE NOT EXISTS (SELECT 1 FROM held WHERE held.key = j.runner_lock) END
        RETURNING 1
    )
    SELECT count(*) FROM failed
$$;

-- Retention: one bounded batch of what is past its time, deleted; the caller repeats while a
-- batch comes back full, committing each, so no delete holds locks on many rows or for long.
--   idempotency_keys  keys older than p_older_than, never less than 24 hours
--   outbox_events     events older than p_older_than
--   staging_imports   rows of import batches fully processed, whose newest row is older
--   job_runs          finished runs older than p_older_than, with their lineage rows
CREATE INDEX idx_outbox_events_created ON metadata.outbox_events (created_at);
CREATE INDEX idx_customer_imports_imported ON staging.customer_imports (imported_at);

CREATE FUNCTION metadata.purge_batch(p_what text, p_older_than interval, p_limit integer)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    removed bigint;
    cutoff  timestamptz := now() - p_older_than;
BEGIN
    IF p_limit NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'batch size % is not between 1 and 100000', p_limit;
    END IF;
    CASE p_what
    WHEN 'idempotency_keys' THEN
        DELETE FROM core.idempotency_keys k
        USING (SELECT actor, idempotency_key, db_role FROM core.idempotency_keys
               WHERE created_at < now() - greatest(p_older_than, interval '24 hours')
               ORDER BY created_at LIMIT p_limit) old
        WHERE (k.actor, k.idempotency_key, k.db_role) = (old.actor, old.idempotency_key, old.db_role);
    WHEN 'outbox_events' THEN
        DELETE FROM metadata.outbox_events
        WHERE event_id IN (SELECT event_id FROM metadata.outbox_events
                           WHERE created_at < cutoff ORDER BY created_at LIMIT p_limit);
    WHEN 'staging_imports' THEN
        DELETE FROM staging.customer_imports
        WHERE import_id IN (
            SELECT s.import_id FROM staging.customer_imports s
            WHERE s.imported_at < cutoff
              AND NOT EXISTS (SELECT 1 FROM staging.customer_imports u
                              WHERE u.batch_id = s.batch_id
                                AND (NOT u.processed OR u.imported_at >= cutoff))
            ORDER BY s.imported_at LIMIT p_limit);
    WHEN 'job_runs' THEN
        WITH old AS (
            SELECT job_id FROM metadata.job_execution
            WHERE status <> 'RUNNING' AND finished_at < cutoff
            ORDER BY finished_at LIMIT p_limit
        ), lineage AS (
            DELETE FROM metadata.data_lineage d USING old WHERE d.job_id = old.job_id
        )
        DELETE FROM metadata.job_execution j USING old WHERE j.job_id = old.job_id;
    ELSE
        RAISE EXCEPTION 'unknown retention target %', p_what;
    END CASE;
    GET DIAGNOSTICS removed = ROW_COUNT;
    RETURN removed;
END
$$;

REVOKE EXECUTE ON FUNCTION metadata.fail_abandoned_jobs(), metadata.purge_batch(text, interval, integer)
    FROM PUBLIC;
-- The scheduler runs its jobs as the service's administrator principal.
GRANT USAGE ON SCHEMA metadata TO lakehouse_admin_api, lakehouse_authenticator;
GRANT EXECUTE ON FUNCTION metadata.fail_abandoned_jobs(), metadata.purge_batch(text, interval, integer),
    core.ensure_partitions_around(timestamptz) TO lakehouse_admin_api, lakehouse_authenticator;
