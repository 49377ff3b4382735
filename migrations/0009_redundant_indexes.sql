-- Indexes another index already serves. Each costs every insert and update of its table a second
-- index write, and vacuum and the seed a second build, for no plan the other cannot make:
-- * payments (payment_date): a leading column of (payment_date DESC, payment_id DESC), which
--   a scan in either direction serves for any range or order on the date;
-- * customer_metrics (customer_id, metric_date): the same columns as the unique key's index;
-- * risk_indicators (alert_level): a leading column of (alert_level, indicator_id).
-- The schema test `no_index_is_a_leading_part_of_another` keeps new ones out.
DROP INDEX core.idx_payments_payment_date;
DROP INDEX analytics.idx_customer_metrics_customer;
DROP INDEX analytics.idx_risk_indicators_alert_level;
