-- Leases for the background jobs, so that several bot processes on one
-- database do each item once: a process claims an item by setting its
-- lease (PostgreSQL picks the row with FOR UPDATE SKIP LOCKED, so nobody
-- waits on a row another process is claiming), and a process that dies
-- holding one has it taken over when it lapses.

-- Posting a pending request, delivering an approved one, reminding its
-- approvers: one job at a time per request.
ALTER TABLE approval_requests ADD COLUMN lease_until BIGINT;

-- Redacting a DM that carried a secret.
ALTER TABLE dm_redactions ADD COLUMN lease_until BIGINT;
