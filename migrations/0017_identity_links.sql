-- Identity links: which customer an identity provider's (issuer, subject) is. Staff make them
-- (POST /v1/customers/{id}/identities) for customers whose tokens carry no customer claim; the
-- service looks them up through core.linked_customer, which its login role may call before
-- any request role is set.
CREATE TABLE core.identity_links (
    link_id     uuid PRIMARY KEY,
    issuer      text NOT NULL CHECK (length(issuer) BETWEEN 1 AND 255 AND issuer !~ '[|''[:space:]]'),
    subject     text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255 AND subject !~ '[''"\\`[:space:]]'),
    customer_id uuid NOT NULL REFERENCES core.customers (customer_id),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text NOT NULL DEFAULT core.current_actor(),
    CONSTRAINT identity_links_one_customer_per_subject UNIQUE (issuer, subject)
);
CREATE INDEX identity_links_customer ON core.identity_links (customer_id);

ALTER TABLE core.identity_links ENABLE ROW LEVEL SECURITY;
CREATE POLICY identity_links_staff ON core.identity_links FOR ALL TO lakehouse_staff
    USING (true) WITH CHECK (true);
GRANT SELECT, INSERT, DELETE ON core.identity_links TO lakehouse_staff;

CREATE FUNCTION core.linked_customer(p_issuer text, p_subject text)
RETURNS uuid LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT customer_id FROM core.identity_links WHERE issuer = p_issuer AND subject = p_subject
$$;
REVOKE ALL ON FUNCTION core.linked_customer(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.linked_customer(text, text) TO lakehouse_authenticator;
