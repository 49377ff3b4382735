-- Rotating the ID-number encryption key. Ciphertexts now carry the id of the key that sealed
-- them ([2][key id][nonce][sealed]; the first format, [1][nonce][sealed], is key 1), the service
-- opens them with any configured key and seals with the current one, and `lakehouse-api jobs
-- reencrypt-pii` moves old rows to the current key in batches.
--
-- core.pii_keys holds, per key id, an HMAC of a constant under that key (never the key): the
-- first start with a key id registers it, after proving the key against an ID number stored
-- under it; every later start compares, so a wrong key is a start-up error, not a 500 per read.
CREATE TABLE core.pii_keys (
    purpose       text        NOT NULL CHECK (purpose IN ('ENCRYPTION', 'HASH')),
    key_id        smallint    NOT NULL CHECK (key_id BETWEEN 0 AND 255),
    check_mac     bytea       NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (purpose, key_id)
);
REVOKE ALL ON core.pii_keys FROM PUBLIC;

-- The key id a ciphertext carries.
CREATE FUNCTION core.pii_key_id(p_ciphertext bytea)
RETURNS integer LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE get_byte(p_ciphertext, 0) WHEN 1 THEN 1 WHEN 2 THEN get_byte(p_ciphertext, 1) END
$$;

CREATE FUNCTION core.pii_key_registered(p_purpose text, p_key_id integer)
RETURNS bytea LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT check_mac FROM core.pii_keys WHERE purpose = p_purpose AND key_id = p_key_id
$$;

-- Registers a key's check unless its id has one; returns the check the id has.
CREATE FUNCTION core.pii_key_check(p_purpose text, p_key_id integer, p_mac bytea)
RETURNS bytea LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO core.pii_keys (purpose, key_id, check_mac) VALUES (p_purpose, p_key_id, p_mac)
    ON CONFLICT DO NOTHING;
    RETURN (SELECT check_mac FROM core.pii_keys WHERE purpose = p_purpose AND key_id = p_key_id);
END
$$;

-- One stored ID number sealed with key p_key_id (any, when NULL): what a new key is proven on.
-- Its ciphertext and hash, never the clear value.
CREATE FUNCTION core.pii_key_sample(p_key_id integer)
RETURNS TABLE (owner uuid, ciphertext bytea, id_hash bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT customer_id, id_number_ciphertext, id_number_hash FROM core.customers
    WHERE p_key_id IS NULL OR core.pii_key_id(id_number_ciphertext) = p_key_id
    LIMIT 1
$$;

REVOKE EXECUTE ON FUNCTION core.pii_key_registered(text, integer), core.pii_key_check(text, integer, bytea),
    core.pii_key_sample(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION core.pii_key_registered(text, integer), core.pii_key_check(text, integer, bytea),
    core.pii_key_sample(integer) TO lakehouse_authenticator;
