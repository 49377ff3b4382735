-- A verified contact proves an identity link only if it has not changed lately (issue 28,
-- point 1; a review finding): otherwise a staff member could set a customer's e-mail to their
-- own, then link their own login and prove it with that e-mail. A contact changed in the last
-- 30 days (audit.changes records every change of a customer's e-mail or phone) proves nothing;
-- the code still does.
CREATE OR REPLACE FUNCTION core.prove_identity_link(p_issuer text, p_subject text, p_code text,
                                                    p_email text, p_phone text)
RETURNS uuid LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    pending uuid;
    linked  uuid;
    settled boolean;
BEGIN
    SELECT l.customer_id INTO pending FROM core.identity_links l
    WHERE l.issuer = p_issuer AND l.subject = p_subject AND l.status = 'PENDING';
    IF pending IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT NOT EXISTS (SELECT 1 FROM audit.changes a
                       WHERE a.entity = 'customer' AND a.entity_id = pending
                         AND a.changed_at > now() - interval '30 days'
                         AND (a.changes ? 'email' OR a.changes ? 'phone_number'))
    INTO settled;
    IF NOT settled THEN
        p_email := NULL;
        p_phone := NULL;
    END IF;
    -- The principal as the service writes it (Caller::principal).
    PERFORM set_config('app.actor',
                       p_issuer || '|' || replace(replace(p_subject, '%', '%25'), '|', '%7C')
                       || '|customer|' || pending, true);
    UPDATE core.identity_links l
    SET status = 'ACTIVE', activated_at = now(), code_hash = NULL, code_expires_at = NULL,
        proof = CASE
            WHEN p_code IS NOT NULL AND l.code_expires_at > now()
                 AND l.code_hash = sha256(convert_to(p_code, 'UTF8')) THEN 'CODE'
            WHEN p_email IS NOT NULL AND lower(c.email) = lower(p_email) THEN 'VERIFIED_EMAIL'
            ELSE 'VERIFIED_PHONE' END
    FROM core.customers c
    WHERE l.issuer = p_issuer AND l.subject = p_subject AND l.status = 'PENDING'
      AND c.customer_id = l.customer_id
      AND ((p_code IS NOT NULL AND l.code_expires_at > now()
            AND l.code_hash = sha256(convert_to(p_code, 'UTF8')))
           OR (p_email IS NOT NULL AND lower(c.email) = lower(p_email))
           OR (p_phone IS NOT NULL AND c.phone_number = p_phone))
    RETURNING l.customer_id INTO linked;
    RETURN linked;
END $$;
