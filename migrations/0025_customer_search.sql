-- Staff find a walk-in customer by customer code, phone number, national ID or name
-- (POST /v1/customers/search). Each way is an index probe:
--   customer code  the unique key;
--   national ID    the blind index id_number_hash (unique), never a decryption;
--   phone number   E.164, normalised on every write (below), and an index on it;
--   name           a trigram index on the name without case or accents (pg_trgm and unaccent,
--                  both trusted contrib extensions), for prefix and similarity matches.
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
CREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA public;

-- unaccent() is only STABLE (its dictionary could change); with the dictionary named, the
-- result depends on the argument alone, which is what an index expression needs.
CREATE FUNCTION core.search_name(p_name text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT lower(public.unaccent('public.unaccent'::regdictionary, p_name))
$$;

CREATE INDEX idx_customers_search_name ON core.customers
    USING gin (core.search_name(full_name) public.gin_trgm_ops);

-- Phone numbers in E.164: '+', the country code and the national number, up to 15 digits.
-- A number written nationally (leading 0) takes the business's country code; '00' is the
-- international prefix. Separators (space, '-', '.', parentheses) are dropped.
ALTER TABLE core.business_settings
    ADD COLUMN phone_country_code text NOT NULL DEFAULT '84',
    ADD CONSTRAINT business_settings_phone_country_code_format
        CHECK (phone_country_code ~ '^[1-9][0-9]{0,2}$');

CREATE FUNCTION core.e164(p_phone text, p_country_code text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT CASE
        WHEN d.raw LIKE '+%' THEN d.raw
        WHEN d.raw LIKE '00%' THEN '+' || substr(d.raw, 3)
        WHEN d.raw LIKE '0%' THEN '+' || p_country_code || substr(d.raw, 2)
        ELSE '+' || d.raw
    END
    FROM (SELECT regexp_replace(p_phone, '[[:space:]().-]', '', 'g') AS raw) d
$$;

CREATE FUNCTION core.normalise_phone()
RETURNS trigger LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.phone_number := core.e164(NEW.phone_number,
                                  (SELECT phone_country_code FROM core.business_settings));
    RETURN NEW;
END $$;

CREATE TRIGGER customers_normalise_phone BEFORE INSERT OR UPDATE OF phone_number ON core.customers
    FOR EACH ROW WHEN (NEW.phone_number IS NOT NULL)
    EXECUTE FUNCTION core.normalise_phone();

-- Existing rows, without raising contact-change events or audit rows: the number is the same,
-- only written differently.
ALTER TABLE core.customers DISABLE TRIGGER customers_contact_changed;
ALTER TABLE core.customers DISABLE TRIGGER customers_audit_update;
UPDATE core.customers SET phone_number = phone_number
WHERE phone_number IS NOT NULL AND phone_number IS DISTINCT FROM
      core.e164(phone_number, (SELECT phone_country_code FROM core.business_settings));
ALTER TABLE core.customers ENABLE TRIGGER customers_contact_changed;
ALTER TABLE core.customers ENABLE TRIGGER customers_audit_update;

ALTER TABLE core.customers DROP CONSTRAINT customers_phone_number_format;
ALTER TABLE core.customers ADD CONSTRAINT customers_phone_number_format
    CHECK (phone_number ~ '^\+[1-9][0-9]{7,14}$');

-- Phones are not unique (a family may share one): the id makes the order of a page.
CREATE INDEX idx_customers_phone ON core.customers (phone_number, customer_id)
    WHERE phone_number IS NOT NULL;
