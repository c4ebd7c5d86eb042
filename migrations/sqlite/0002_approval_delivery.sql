-- Where a request's wizard ran (the Reveal fallback posts there), when the
-- approvers were reminded of it, and when its approval reached the requester
-- (an approval not delivered yet is retried, across restarts).
ALTER TABLE approval_requests ADD COLUMN origin_channel_id BIGINT;
ALTER TABLE approval_requests ADD COLUMN reminded_at BIGINT;
ALTER TABLE approval_requests ADD COLUMN delivered_at BIGINT;
