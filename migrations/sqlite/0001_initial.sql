-- keygate schema, SQLite dialect. Times are Unix milliseconds (BIGINT) and
-- Discord ids are BIGINT in both dialects, so one set of queries serves both.

CREATE TABLE guild_settings (
    guild_id             BIGINT PRIMARY KEY,
    audit_channel_id     BIGINT,
    approvals_channel_id BIGINT,
    approver_role_id     BIGINT,
    creator_role_id      BIGINT,
    approvals_required   BIGINT NOT NULL CHECK (approvals_required BETWEEN 0 AND 5),
    dm_lifetime_secs     BIGINT NOT NULL CHECK (dm_lifetime_secs > 0),
    request_expiry_secs  BIGINT NOT NULL CHECK (request_expiry_secs > 0),
    updated_at           BIGINT NOT NULL
);

CREATE TABLE wizard_drafts (
    id         TEXT PRIMARY KEY,
    guild_id   BIGINT NOT NULL,
    user_id    BIGINT NOT NULL,
    state      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    UNIQUE (guild_id, user_id)
);

CREATE TABLE applications (
    id              TEXT PRIMARY KEY,
    guild_id        BIGINT NOT NULL,
    owner_id        BIGINT NOT NULL,
    name            TEXT NOT NULL,
    name_key        TEXT NOT NULL,
    uri             TEXT NOT NULL,
    description     TEXT NOT NULL,
    login_user_type TEXT NOT NULL CHECK (login_user_type IN ('guest', 'employee')),
    source_app      TEXT NOT NULL CHECK (source_app IN ('external_cma', 'external_webstore', 'client_app', 'bot')),
    status          TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
-- Names are unique per guild, ignoring case, among requests that did not end unapproved.
CREATE UNIQUE INDEX applications_guild_name ON applications (guild_id, name_key)
    WHERE status NOT IN ('denied', 'expired', 'withdrawn');
CREATE INDEX applications_guild ON applications (guild_id, created_at);

CREATE TABLE app_redirect_urls (
    app_id   TEXT NOT NULL REFERENCES applications (id),
    kind     TEXT NOT NULL CHECK (kind IN ('post_login', 'post_logout')),
    position BIGINT NOT NULL,
    url      TEXT NOT NULL,
    PRIMARY KEY (app_id, kind, position)
);

CREATE TABLE app_scopes (
    app_id   TEXT NOT NULL REFERENCES applications (id),
    position BIGINT NOT NULL,
    scope    TEXT NOT NULL,
    PRIMARY KEY (app_id, position),
    UNIQUE (app_id, scope)
);

-- One secret per application, as a hash.
CREATE TABLE app_secrets (
    app_id        TEXT PRIMARY KEY REFERENCES applications (id),
    secret_hash   TEXT NOT NULL,
    secret_prefix TEXT NOT NULL,
    created_at    BIGINT NOT NULL
);

-- Several rows per app only through rotation; only hashes are kept.
CREATE TABLE api_keys (
    key_hash   TEXT PRIMARY KEY,
    app_id     TEXT NOT NULL REFERENCES applications (id),
    key_prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX api_keys_app ON api_keys (app_id, created_at);

CREATE TABLE approval_requests (
    app_id             TEXT PRIMARY KEY REFERENCES applications (id),
    guild_id           BIGINT NOT NULL,
    requester_id       BIGINT NOT NULL,
    approvals_required BIGINT NOT NULL,
    status             TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'withdrawn', 'expired')),
    created_at         BIGINT NOT NULL,
    expires_at         BIGINT NOT NULL,
    decided_at         BIGINT,
    decided_by         BIGINT,
    deny_reason        TEXT,
    channel_id         BIGINT,
    message_id         BIGINT
);
CREATE INDEX approval_requests_pending ON approval_requests (status, expires_at);

CREATE TABLE approval_votes (
    app_id      TEXT NOT NULL REFERENCES approval_requests (app_id),
    approver_id BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (app_id, approver_id)
);

CREATE TABLE audit_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    guild_id   BIGINT NOT NULL,
    app_id     TEXT,
    actor_id   BIGINT,
    kind       TEXT NOT NULL,
    summary    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_events_app ON audit_events (app_id, id);

-- The record is append-only; only its posting state (audit_outbox) changes.
CREATE TRIGGER audit_events_no_update BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;
CREATE TRIGGER audit_events_no_delete BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END;

CREATE TABLE audit_outbox (
    event_id        BIGINT PRIMARY KEY REFERENCES audit_events (id),
    guild_id        BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    posted_at       BIGINT
);
CREATE INDEX audit_outbox_unposted ON audit_outbox (guild_id, event_id) WHERE posted_at IS NULL;

CREATE TABLE dm_redactions (
    channel_id BIGINT NOT NULL,
    message_id BIGINT NOT NULL,
    app_id     TEXT NOT NULL REFERENCES applications (id),
    user_id    BIGINT NOT NULL,
    due_at     BIGINT NOT NULL,
    done_at    BIGINT,
    PRIMARY KEY (channel_id, message_id)
);
CREATE INDEX dm_redactions_due ON dm_redactions (due_at) WHERE done_at IS NULL;
