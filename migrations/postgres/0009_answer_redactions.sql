-- A DM that is an interaction's own answer (Generate API Key pressed in the
-- DM answers with the key in one callback) is scheduled before the callback,
-- when its message id is not known yet: message_id then holds the
-- interaction's id, and interaction_id says so until the message is found.
-- credential_id names the key it carries, so that the worker, finding the
-- message, can count the key as shown.
ALTER TABLE dm_redactions ADD COLUMN interaction_id BIGINT;
ALTER TABLE dm_redactions ADD COLUMN credential_id TEXT;
