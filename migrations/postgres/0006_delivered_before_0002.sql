-- Requests approved before 0002_approval_delivery was installed had their
-- credentials delivered at approval, the old way, and were never marked
-- delivered (the column came with 0002): the delivery worker would DM their
-- requesters an empty "credentials follow" note. Mark exactly those delivered,
-- at their decision. `installed_on` is the start of 0002's transaction; times
-- here are Unix milliseconds.
UPDATE approval_requests
SET delivered_at = decided_at
WHERE status = 'approved'
  AND delivered_at IS NULL
  AND decided_at < (
      SELECT floor(EXTRACT(EPOCH FROM installed_on) * 1000)::BIGINT
      FROM _sqlx_migrations
      WHERE version = 2
  );
