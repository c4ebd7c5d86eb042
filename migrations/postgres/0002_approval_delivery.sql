-- Where a request's wizard ran (the Reveal fallback posts there) and when the
-- approvers were reminded of it.
ALTER TABLE approval_requests ADD COLUMN origin_channel_id BIGINT;
ALTER TABLE approval_requests ADD COLUMN reminded_at BIGINT;
