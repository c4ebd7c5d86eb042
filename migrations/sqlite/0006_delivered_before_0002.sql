-- Requests approved before 0002_approval_delivery was installed had their
-- credentials delivered at approval, the old way, and were never marked
-- delivered (the column came with 0002): the delivery worker would DM their
-- requesters an empty "credentials follow" note. Mark exactly those delivered,
-- at their decision. sqlx stores `installed_on` as UTC text to the second
-- (CURRENT_TIMESTAMP), so the bound is the end of that second: a bot must
-- still connect to Discord and receive an interaction after migrating before
-- it can decide anything, which takes longer than that second's remainder.
UPDATE approval_requests
SET delivered_at = decided_at
WHERE status = 'approved'
  AND delivered_at IS NULL
  AND decided_at < (
      SELECT (CAST(strftime('%s', installed_on) AS BIGINT) + 1) * 1000
      FROM _sqlx_migrations
      WHERE version = 2
  );
