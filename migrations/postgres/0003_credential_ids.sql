-- Public ids for keys and Secrets (the verify API names them; a hash is not for
-- showing), and when each key was last presented to the verify API.
ALTER TABLE api_keys ADD COLUMN id TEXT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
UPDATE api_keys SET id = 'key_' || substr(md5(random()::text || key_hash), 1, 16);
ALTER TABLE api_keys ALTER COLUMN id SET NOT NULL;
-- A binary from before this migration, still running during a rolling
-- deploy, inserts keys without an id.
ALTER TABLE api_keys ALTER COLUMN id SET DEFAULT 'key_' || substr(md5(random()::text || clock_timestamp()::text), 1, 16);
CREATE UNIQUE INDEX api_keys_id ON api_keys (id);

ALTER TABLE app_secrets ADD COLUMN id TEXT;
UPDATE app_secrets SET id = 'sec_' || substr(md5(random()::text || secret_hash), 1, 16);
ALTER TABLE app_secrets ALTER COLUMN id SET NOT NULL;
ALTER TABLE app_secrets ALTER COLUMN id SET DEFAULT 'sec_' || substr(md5(random()::text || clock_timestamp()::text), 1, 16);
CREATE UNIQUE INDEX app_secrets_id ON app_secrets (id);
