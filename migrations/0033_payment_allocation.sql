-- The payment allocation strategy is a term of the product, pinned with the others (issue 27,
-- point 6; docs/money.md):
--   FEES_FIRST          fees, then late fees, then the installments due and the current one
--                       (interest, then principal, oldest first): the order of every loan so far;
--   INSTALLMENTS_FIRST  the installments due and the current one first, then fees, then late
--                       fees. A payment that covers an installment always pays it, so an
--                       earlier late fee never makes it late: the default for new products.
-- Existing products and their loans keep FEES_FIRST, so no balance moves.

ALTER TABLE core.products ADD COLUMN payment_allocation text NOT NULL DEFAULT 'FEES_FIRST',
    ADD CONSTRAINT products_payment_allocation_valid
        CHECK (payment_allocation IN ('FEES_FIRST', 'INSTALLMENTS_FIRST'));
ALTER TABLE core.products ALTER COLUMN payment_allocation SET DEFAULT 'INSTALLMENTS_FIRST';
ALTER TABLE core.loan_terms ADD COLUMN payment_allocation text NOT NULL DEFAULT 'FEES_FIRST';
ALTER TABLE core.loan_terms ALTER COLUMN payment_allocation DROP DEFAULT;

-- The versioning triggers read the terms by name: every column of core.loan_terms that the
-- product has (all but the key and created_at) is a term, so a term added to both tables later
-- needs no change here.
CREATE OR REPLACE FUNCTION core.product_terms_next_version() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    NEW.terms_version := OLD.terms_version;
    IF jsonb_populate_record(NULL::core.loan_terms, to_jsonb(NEW))
       IS DISTINCT FROM jsonb_populate_record(NULL::core.loan_terms, to_jsonb(OLD)) THEN
        NEW.terms_version := OLD.terms_version + 1;
    END IF;
    RETURN NEW;
END $$;

CREATE OR REPLACE FUNCTION core.product_terms_record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO core.loan_terms
    SELECT (jsonb_populate_record(NULL::core.loan_terms,
                                  to_jsonb(NEW) || jsonb_build_object('created_at', now()))).*
    ON CONFLICT (product_code, terms_version) DO NOTHING;
    RETURN NULL;
END $$;
