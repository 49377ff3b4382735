-- Streams read the outbox by position (xact_id, event_id) and filter topics on the way
-- (migration 0027); no statement reads it by (topic, event_id) any more. The index only cost
-- every event writer one more index insert: every repayment, fee and status change.
DROP INDEX metadata.idx_outbox_events_topic;
