-- Key lifecycle: rotation with a grace period, revocation of Secrets, expiry
-- warnings, per-guild key lifetime, and whether a credential ever reached its
-- owner (one never shown may be issued again).

-- A rotated credential names its successor, who rotated it, and until when it
-- keeps working; `shown_at` is when it reached its owner. Credentials from
-- before this migration were delivered the old way: they count as shown.
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
ALTER TABLE api_keys ADD COLUMN rotated_by BIGINT;
ALTER TABLE api_keys ADD COLUMN grace_ends_at BIGINT;
ALTER TABLE api_keys ADD COLUMN shown_at BIGINT;
-- The next expiry warning (30, 7 or 1 days before), the stage last sent, the
-- lease of the process sending one (or, after a failure, the earliest next
-- try), the failures so far (for backoff), and when the expiry itself was
-- recorded.
ALTER TABLE api_keys ADD COLUMN next_warning_at BIGINT;
ALTER TABLE api_keys ADD COLUMN warned_days BIGINT;
ALTER TABLE api_keys ADD COLUMN warning_lease_until BIGINT;
ALTER TABLE api_keys ADD COLUMN warning_failures BIGINT NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN expiry_recorded_at BIGINT;
UPDATE api_keys SET shown_at = created_at;
-- 30, 7 and 1 days in milliseconds.
UPDATE api_keys SET next_warning_at = CASE
    WHEN created_at < expires_at - 2592000000 THEN expires_at - 2592000000
    WHEN created_at < expires_at - 604800000 THEN expires_at - 604800000
    WHEN created_at < expires_at - 86400000 THEN expires_at - 86400000
    END
    WHERE revoked_at IS NULL AND expires_at > CAST(extract(epoch FROM now()) * 1000 AS BIGINT);
-- Keys that stopped working before this migration need no expiry event now.
UPDATE api_keys SET expiry_recorded_at = expires_at WHERE expires_at <= CAST(extract(epoch FROM now()) * 1000 AS BIGINT);
-- At most one current key per application: of concurrent rotations one wins.
CREATE UNIQUE INDEX api_keys_current ON api_keys (app_id) WHERE replaced_by IS NULL AND revoked_at IS NULL;
CREATE INDEX api_keys_warning ON api_keys (next_warning_at) WHERE next_warning_at IS NOT NULL;
CREATE INDEX api_keys_unrecorded_expiry ON api_keys ((COALESCE(grace_ends_at, expires_at)))
    WHERE expiry_recorded_at IS NULL AND revoked_at IS NULL;

-- Secrets rotate too: several per application, one of them current.
ALTER TABLE app_secrets DROP CONSTRAINT app_secrets_pkey;
ALTER TABLE app_secrets ADD PRIMARY KEY (id);
DROP INDEX app_secrets_id;
ALTER TABLE app_secrets ADD COLUMN revoked_at BIGINT;
ALTER TABLE app_secrets ADD COLUMN replaced_by TEXT;
ALTER TABLE app_secrets ADD COLUMN rotated_by BIGINT;
ALTER TABLE app_secrets ADD COLUMN grace_ends_at BIGINT;
ALTER TABLE app_secrets ADD COLUMN shown_at BIGINT;
UPDATE app_secrets SET shown_at = created_at;
-- Revoking an application used to revoke its keys only.
UPDATE app_secrets s SET revoked_at = a.updated_at FROM applications a
    WHERE a.id = s.app_id AND a.status = 'revoked';
-- During a rolling deploy an older binary issues credentials without saying
-- they were shown (it has no such notion): they count as shown, never as lost.
ALTER TABLE app_secrets ALTER COLUMN shown_at SET DEFAULT CAST(extract(epoch FROM now()) * 1000 AS BIGINT);
ALTER TABLE api_keys ALTER COLUMN shown_at SET DEFAULT CAST(extract(epoch FROM now()) * 1000 AS BIGINT);
CREATE UNIQUE INDEX app_secrets_hash ON app_secrets (secret_hash);
CREATE UNIQUE INDEX app_secrets_current ON app_secrets (app_id) WHERE replaced_by IS NULL AND revoked_at IS NULL;
CREATE INDEX app_secrets_app ON app_secrets (app_id, created_at);

-- A revoked application gives its name back, like one that was never approved.
DROP INDEX applications_guild_name;
CREATE UNIQUE INDEX applications_guild_name ON applications (guild_id, name_key)
    WHERE status NOT IN ('denied', 'expired', 'withdrawn', 'revoked');

ALTER TABLE guild_settings ADD COLUMN key_lifetime_days BIGINT NOT NULL DEFAULT 365
    CHECK (key_lifetime_days BETWEEN 1 AND 730);
