-- Public ids for keys and Secrets (the verify API names them; a hash is not for
-- showing), and when each key was last presented to the verify API.
ALTER TABLE api_keys ADD COLUMN id TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
UPDATE api_keys SET id = 'key_' || lower(hex(randomblob(8)));
CREATE UNIQUE INDEX api_keys_id ON api_keys (id);

ALTER TABLE app_secrets ADD COLUMN id TEXT;
UPDATE app_secrets SET id = 'sec_' || lower(hex(randomblob(8)));
CREATE UNIQUE INDEX app_secrets_id ON app_secrets (id);
