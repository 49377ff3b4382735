-- Lake exports asked for by the service: an administrator through POST /v1/admin/lake-exports,
-- or the scheduler once a business day is closed. The service never runs the export itself (it
-- would need the owner's login and arrow); it leaves a request, and `lakehouse-export --follow`,
-- running as the owner beside it, runs while one waits. A run, however started, answers every
-- request whose earlier commits all lie below its horizon: it holds everything committed before
-- the request was made. A request made while an older transaction was still open waits for the
-- next run, which --follow starts.
CREATE TABLE metadata.lake_export_requests (
    request_id     uuid         NOT NULL DEFAULT gen_random_uuid(),
    catalog_name   varchar(255) NOT NULL,
    requested_at   timestamptz  NOT NULL DEFAULT now(),
    requested_by   text         NOT NULL DEFAULT core.current_actor(),
    -- Every transaction committed before the request lies below this (its snapshot's xmax): a
    -- run whose horizon reaches it holds them all.
    requested_xmax xid8         NOT NULL DEFAULT pg_snapshot_xmax(pg_current_snapshot()),
    -- The business day whose close the request also serves (the scheduler's); null when only a
    -- person asked.
    closed_day     date,
    -- The run that answered it. Retention deletes old runs, and with them their requests.
    job_id         uuid REFERENCES metadata.job_execution ON DELETE CASCADE,
    taken_at       timestamptz,
    CONSTRAINT lake_export_requests_pkey PRIMARY KEY (request_id),
    CONSTRAINT lake_export_requests_taken_with_run CHECK ((job_id IS NULL) = (taken_at IS NULL))
);
COMMENT ON TABLE metadata.lake_export_requests IS 'Lake exports asked for (by an administrator, or by the scheduler after the daily close) and the run that answered each';
COMMENT ON COLUMN metadata.lake_export_requests.requested_by IS 'Personal data: the login that asked, often an e-mail address';

-- At most one request of a lake waits at a time: asking again while one waits returns it.
CREATE UNIQUE INDEX lake_export_requests_one_pending
    ON metadata.lake_export_requests (catalog_name) WHERE job_id IS NULL;
-- The scheduler asks once per closed business day.
CREATE UNIQUE INDEX lake_export_requests_one_per_close
    ON metadata.lake_export_requests (catalog_name, closed_day) WHERE closed_day IS NOT NULL;
CREATE INDEX idx_lake_export_requests_job ON metadata.lake_export_requests (job_id);
CREATE INDEX idx_lake_export_requests_recent ON metadata.lake_export_requests (requested_at DESC, request_id DESC);

-- Administrators (and the scheduler, which acts as one) ask and read; the runs come from the
-- jobs' record, which they read already (as analysts). The scheduler folds a close into a
-- request that waits.
GRANT SELECT, INSERT, UPDATE (closed_day, requested_xmax) ON metadata.lake_export_requests
    TO lakehouse_admin_api;
