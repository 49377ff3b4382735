-- Two costs of a loan-book import that grew with every row it wrote (docs/performance.md).
--
-- 1. A payment's directory row is written once per statement, from the rows the statement
--    inserted, instead of by one PL/pgSQL call and one INSERT per payment (each INSERT also
--    firing the directory's statement triggers). The outcome of a statement that inserts
--    payments is the same: every payment in the directory, and a duplicate transaction id or
--    client reference refused with the directory's key. Two rules come with it, and every
--    writer keeps them (the ledger's one-row INSERT and the replay's own statement): payments
--    are inserted through core.payments, not into a partition (a statement trigger is not
--    cloned to partitions), and in a statement of their own, since the directory rows now
--    arrive after the statement's row-level key checks, so a row that refers to a payment in
--    the same statement would not find it.
CREATE OR REPLACE FUNCTION core.payments_register()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO core.payment_directory (payment_id, transaction_id, customer_id, payment_date,
                                        client_reference, branch_id)
    SELECT payment_id, transaction_id, customer_id, payment_date, client_reference, branch_id
    FROM new_payments;
    RETURN NULL;
END $$;

DROP TRIGGER payments_register ON core.payments;
CREATE TRIGGER payments_register AFTER INSERT ON core.payments
    REFERENCING NEW TABLE AS new_payments
    FOR EACH STATEMENT EXECUTE FUNCTION core.payments_register();

-- 2. PostgreSQL checks a foreign key again on every update of a row that the same transaction
--    wrote before, even when the key did not change. A replay writes each loan and installment
--    and then updates it at every repayment day: about 21 updates a loan, so some 9 million key
--    checks for a book of 100,000 loans, of rows whose keys never change. These four keys become
--    deferrable, still checked at once by default (nothing changes for the counter); a replay
--    defers them and checks them when a chunk is done (SET CONSTRAINTS,
--    src/domain/ledger/replay/repo.rs): a deferred check passes over a row version that a later
--    one replaced, so each row is looked up once.
ALTER TABLE core.loans ALTER CONSTRAINT loans_customer_id_fkey DEFERRABLE INITIALLY IMMEDIATE;
ALTER TABLE core.loans ALTER CONSTRAINT loans_product_code_fkey DEFERRABLE INITIALLY IMMEDIATE;
ALTER TABLE core.loans ALTER CONSTRAINT loans_terms_fkey DEFERRABLE INITIALLY IMMEDIATE;
ALTER TABLE core.loan_installments
    ALTER CONSTRAINT loan_installments_loan_id_fkey DEFERRABLE INITIALLY IMMEDIATE;
