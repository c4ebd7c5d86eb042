-- Bounded retries for the background jobs that talk to Discord, kept across
-- restarts: each failing item waits its own backoff, and a channel the bot
-- lost access to pauses everything bound for it instead of being hammered.

-- One row per failing item of a job (`item` is the job's own key, e.g. an
-- application id); it goes when the item succeeds. `alerted_at`: the person
-- concerned was told once that it is held.
CREATE TABLE job_retries (
    job             TEXT NOT NULL,
    item            TEXT NOT NULL,
    failures        BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    alerted_at      BIGINT,
    PRIMARY KEY (job, item)
);

-- A channel Discord refused the bot in (50001, 50013, 10003): nothing is
-- posted there until a probe succeeds or /keygate setup names a channel again.
CREATE TABLE channel_pauses (
    channel_id    BIGINT PRIMARY KEY,
    guild_id      BIGINT NOT NULL,
    code          BIGINT NOT NULL,
    paused_at     BIGINT NOT NULL,
    next_probe_at BIGINT NOT NULL
);
CREATE INDEX channel_pauses_guild ON channel_pauses (guild_id);
