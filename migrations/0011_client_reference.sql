-- Only the server assigns transaction ids (TXN…, DSB-<loan number>): a client-chosen one could
-- take the id of a disbursement that is still to come and block it. A client's own receipt
-- number goes in client_reference, unique per customer. Existing rows keep their ids.
ALTER TABLE core.payments ADD COLUMN client_reference text;
ALTER TABLE core.payments ADD CONSTRAINT payments_client_reference_format
    CHECK (client_reference ~ '^[!-~]{1,40}$');

ALTER TABLE core.payment_directory ADD COLUMN client_reference text;
-- Leads with the reference: finding a payment by it (with or without the customer) is one probe.
ALTER TABLE core.payment_directory ADD CONSTRAINT payment_directory_client_reference_key
    UNIQUE (client_reference, customer_id);

CREATE OR REPLACE FUNCTION core.payments_register()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO core.payment_directory (payment_id, transaction_id, customer_id, payment_date,
                                        client_reference)
    VALUES (NEW.payment_id, NEW.transaction_id, NEW.customer_id, NEW.payment_date,
            NEW.client_reference);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION core.payments_identity_immutable()
RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.payment_id <> OLD.payment_id OR NEW.transaction_id <> OLD.transaction_id
       OR NEW.customer_id <> OLD.customer_id OR NEW.payment_date <> OLD.payment_date
       OR NEW.client_reference IS DISTINCT FROM OLD.client_reference THEN
        RAISE EXCEPTION 'a payment''s id, transaction id, reference, customer and date cannot change'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'payments_identity_immutable';
    END IF;
    RETURN NEW;
END $$;
