-- Four eyes (issue 28, point 9): a decision that needs a checker is a proposal by its maker, and
-- takes effect only when another person approves it. PostgreSQL holds the rule that matters most
-- itself: the checker's subject can never be the maker's.

-- The person behind the request's principal: issuer and subject, without the role, so that one
-- person's staff and admin tokens are one maker.
CREATE FUNCTION core.current_subject() RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT split_part(core.current_actor(), '|', 1) || '|' || split_part(core.current_actor(), '|', 2)
$$;

CREATE TABLE core.proposals (
    proposal_id    uuid PRIMARY KEY,
    action         text NOT NULL CHECK (action IN ('LOAN_APPROVAL', 'DISBURSEMENT', 'WRITE_OFF',
                                                   'REVERSAL', 'REFUND', 'PRODUCT_CHANGE',
                                                   'IDENTITY_LINK', 'STAFF_CHANGE')),
    -- What it acts on: a loan, payment, product code, identity link or directory entry.
    object_id      text NOT NULL CHECK (length(object_id) BETWEEN 1 AND 100),
    -- The object's version when proposed; a different one when approved is 409.
    object_version integer NOT NULL,
    -- The money it moves or commits, which the checker's limit must cover; NULL: none.
    amount         numeric(18, 2) CHECK (amount >= 0),
    -- What the maker asked for, as they sent it (a product's fields, a directory entry).
    payload        jsonb NOT NULL DEFAULT '{}',
    customer_id    uuid,
    branch_id      integer,
    maker          text NOT NULL DEFAULT core.current_actor(),
    maker_subject  text NOT NULL DEFAULT core.current_subject(),
    -- The maker's office: a checker must work there or above it.
    maker_office   integer NOT NULL DEFAULT coalesce(core.caller_office(), 1)
                       REFERENCES core.offices,
    status         text NOT NULL DEFAULT 'PENDING'
                       CHECK (status IN ('PENDING', 'APPROVED', 'REJECTED', 'EXPIRED')),
    proposed_at    timestamptz NOT NULL DEFAULT now(),
    expires_at     timestamptz NOT NULL DEFAULT now() + interval '7 days',
    request_id     text DEFAULT nullif(current_setting('app.request_id', true), ''),
    checker        text,
    checker_subject text,
    decided_at     timestamptz,
    reason         text CHECK (length(reason) <= 500),
    -- What taking effect returned (the loan, the product…), replayed to a repeated approval.
    outcome        jsonb,
    version        integer NOT NULL DEFAULT 1,
    CONSTRAINT proposals_four_eyes CHECK (checker_subject IS NULL OR checker_subject <> maker_subject),
    CONSTRAINT proposals_decided CHECK ((status = 'PENDING') = (decided_at IS NULL)),
    CONSTRAINT proposals_checked CHECK (status <> 'APPROVED' OR checker_subject IS NOT NULL)
);
-- One open proposal per action and object.
CREATE UNIQUE INDEX proposals_one_pending ON core.proposals (action, object_id)
    WHERE status = 'PENDING';
CREATE INDEX proposals_by_status ON core.proposals (status, proposed_at, proposal_id);

CREATE TRIGGER stamp_office BEFORE INSERT ON core.proposals
    FOR EACH ROW EXECUTE FUNCTION core.stamp_office();

-- A decision is written by SQL, never from a client's text: who decided comes from the request's
-- principal.
CREATE FUNCTION core.proposal_decided() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NEW.maker IS DISTINCT FROM OLD.maker OR NEW.maker_subject IS DISTINCT FROM OLD.maker_subject
       OR NEW.maker_office <> OLD.maker_office OR NEW.action <> OLD.action
       OR NEW.object_id <> OLD.object_id OR NEW.object_version <> OLD.object_version
       OR NEW.payload <> OLD.payload OR NEW.amount IS DISTINCT FROM OLD.amount
       OR NEW.proposed_at <> OLD.proposed_at OR NEW.expires_at <> OLD.expires_at THEN
        RAISE EXCEPTION 'a proposal does not change' USING ERRCODE = '23514';
    END IF;
    IF OLD.status = 'APPROVED' AND NEW.status = 'APPROVED' AND OLD.outcome IS NULL THEN
        -- What taking effect returned, written once, in the approving transaction.
        NEW.checker := OLD.checker;
        NEW.checker_subject := OLD.checker_subject;
        NEW.decided_at := OLD.decided_at;
        NEW.reason := OLD.reason;
        RETURN NEW;
    END IF;
    IF OLD.status <> 'PENDING' THEN
        RAISE EXCEPTION 'proposal % was decided already', OLD.proposal_id USING ERRCODE = '23514';
    END IF;
    -- Who decided comes from the request's principal, never from a client's text.
    IF NEW.status IN ('APPROVED', 'REJECTED') THEN
        NEW.checker := core.current_actor();
        NEW.checker_subject := core.current_subject();
    ELSE
        NEW.checker := NULL;
        NEW.checker_subject := NULL;
    END IF;
    NEW.decided_at := now();
    NEW.version := OLD.version + 1;
    RETURN NEW;
END
$$;
CREATE TRIGGER proposals_decided BEFORE UPDATE ON core.proposals
    FOR EACH ROW EXECUTE FUNCTION core.proposal_decided();

ALTER TABLE core.proposals ENABLE ROW LEVEL SECURITY;
-- Staff see (and decide) the proposals of makers in their office or below it, about customers in
-- their offices; business-wide ones (products, the directory) by their maker's office alone.
CREATE POLICY proposals_staff ON core.proposals FOR ALL TO lakehouse_staff
    USING (maker_office = ANY ((SELECT core.visible_offices())::integer[])
           AND (branch_id IS NULL OR branch_id = ANY ((SELECT core.visible_offices())::integer[])))
    WITH CHECK (maker_office = ANY ((SELECT core.visible_offices())::integer[])
                AND (branch_id IS NULL
                     OR branch_id = ANY ((SELECT core.visible_offices())::integer[])));
GRANT SELECT, INSERT ON core.proposals TO lakehouse_staff;
GRANT UPDATE (status, reason, outcome, checker, checker_subject, decided_at, version)
    ON core.proposals TO lakehouse_staff;
GRANT SELECT ON core.proposals TO lakehouse_read_only;
CREATE POLICY proposals_read_only ON core.proposals FOR SELECT TO lakehouse_read_only USING (true);

-- The trail: every step, append-only, naming maker and checker.
CREATE TABLE audit.proposal_events (
    event_id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    proposal_id uuid NOT NULL,
    action      text NOT NULL,
    object_id   text NOT NULL,
    step        text NOT NULL CHECK (step IN ('PROPOSED', 'APPROVED', 'REJECTED', 'EXPIRED')),
    maker       text NOT NULL,
    checker     text,
    actor       text NOT NULL,
    request_id  text,
    db_role     text NOT NULL
);
REVOKE ALL ON audit.proposal_events FROM PUBLIC;
GRANT SELECT ON audit.proposal_events TO lakehouse_admin_api;
CREATE TRIGGER proposal_events_append_only BEFORE UPDATE OR DELETE ON audit.proposal_events
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_change();
CREATE TRIGGER proposal_events_no_truncate BEFORE TRUNCATE ON audit.proposal_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_change();

-- Each step is also an event on the outbox (`proposal_made`, `proposal_decided`), in the staff
-- stream of the offices that see the proposal's customer.
CREATE FUNCTION core.proposal_record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    step text := CASE WHEN TG_OP = 'INSERT' THEN 'PROPOSED' ELSE NEW.status END;
BEGIN
    INSERT INTO audit.proposal_events (proposal_id, action, object_id, step, maker, checker,
                                       actor, request_id, db_role)
    VALUES (NEW.proposal_id, NEW.action, NEW.object_id, step, NEW.maker, NEW.checker,
            core.current_actor(), nullif(current_setting('app.request_id', true), ''),
            coalesce(nullif(current_setting('role', true), 'none'), session_user::text));
    INSERT INTO metadata.outbox_events (topic, aggregate_id, customer_id, payload)
    VALUES (CASE WHEN TG_OP = 'INSERT' THEN 'proposal_made' ELSE 'proposal_decided' END,
            NEW.proposal_id, NEW.customer_id,
            jsonb_build_object('proposal_id', NEW.proposal_id, 'action', NEW.action,
                               'object_id', NEW.object_id, 'status', NEW.status,
                               'amount', NEW.amount, 'maker', NEW.maker, 'checker', NEW.checker,
                               'at', statement_timestamp()));
    RETURN NULL;
END
$$;
CREATE TRIGGER proposals_record AFTER INSERT OR UPDATE OF status ON core.proposals
    FOR EACH ROW EXECUTE FUNCTION core.proposal_record();

-- The largest amount the caller may decide alone, from their directory entry; NULL: their role's
-- default (the service's configuration).
CREATE FUNCTION core.caller_approval_limit() RETURNS numeric
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT approval_limit FROM core.staff_members
    WHERE active AND principal = core.current_subject()
$$;
REVOKE ALL ON FUNCTION core.caller_approval_limit() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.caller_approval_limit() TO lakehouse_staff;

-- A checker activates a pending identity link: only through an approved proposal for it, which
-- another person decided (staff have no UPDATE on the links).
ALTER TABLE core.identity_links
    DROP CONSTRAINT identity_links_proof_valid,
    ADD CONSTRAINT identity_links_proof_valid
        CHECK (proof IN ('CODE', 'VERIFIED_EMAIL', 'VERIFIED_PHONE', 'CHECKER'));
CREATE FUNCTION core.activate_checked_link(p_proposal uuid) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    link uuid;
BEGIN
    -- Read as the caller would: the proposal must be one they can see, approved by them.
    SELECT object_id::uuid INTO link FROM core.proposals
    WHERE proposal_id = p_proposal AND action = 'IDENTITY_LINK' AND status = 'APPROVED'
      AND checker_subject = core.current_subject() AND checker_subject <> maker_subject;
    IF link IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE core.identity_links
    SET status = 'ACTIVE', activated_at = now(), code_hash = NULL, code_expires_at = NULL,
        proof = 'CHECKER'
    WHERE link_id = link AND status = 'PENDING'
    RETURNING link_id INTO link;
    RETURN link;
END
$$;
REVOKE ALL ON FUNCTION core.activate_checked_link(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.activate_checked_link(uuid) TO lakehouse_staff;

