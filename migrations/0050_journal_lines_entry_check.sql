-- A journal line's entry is checked once per statement, with the lines' balance, instead of by a
-- foreign key line by line. The key looked each line's entry up and locked it (FOR KEY SHARE,
-- which writes to the entry's page): about 14 µs a line, a tenth of a loan import's servicing
-- (docs/performance.md). The statement's check is one query over all its lines. The key guarded
-- nothing else: entries are never updated, deleted or truncated (journal_entries_immutable).
--
-- SECURITY DEFINER: the check sees every line and entry, whatever the writer's row-level
-- security lets it read, as the key's check did.
CREATE OR REPLACE FUNCTION core.check_journal_balanced()
RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    -- A look-up per entry by its key (a scalar subquery is never turned into a join that could
    -- read the whole journal).
    IF EXISTS (SELECT 1 FROM (SELECT DISTINCT entry_id FROM new_lines) n
               WHERE (SELECT e.entry_id FROM core.journal_entries e
                      WHERE e.entry_id = n.entry_id) IS NULL) THEN
        RAISE EXCEPTION 'a journal line must belong to a posted entry'
            USING ERRCODE = 'foreign_key_violation', CONSTRAINT = 'journal_lines_entry_id_fkey';
    END IF;
    IF EXISTS (SELECT 1
               FROM (SELECT entry_id, sum(amount) AS total, count(*) AS lines
                     FROM new_lines GROUP BY entry_id) n
               WHERE n.total <> 0
                  OR (SELECT count(*) FROM core.journal_lines l WHERE l.entry_id = n.entry_id)
                     <> n.lines) THEN
        RAISE EXCEPTION 'a journal entry''s lines must sum to zero, all posted by one statement'
            USING ERRCODE = 'check_violation', CONSTRAINT = 'journal_lines_balanced';
    END IF;
    RETURN NULL;
END $$;

ALTER TABLE core.journal_lines DROP CONSTRAINT journal_lines_entry_id_fkey;
