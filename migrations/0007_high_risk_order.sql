-- The high-risk loan listing walks customers riskiest first (unrated last, as a score of 1000)
-- and stops after a page, instead of sorting every approved and disbursed loan for each page.
CREATE INDEX idx_customers_risk_order ON core.customers ((coalesce(credit_score, 1000)), customer_id);
