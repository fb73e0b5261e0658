-- Portcullis store, version 1. Postgres gets the same tables in its own
-- migration folder; keep the two in step.

CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    key_hash       BLOB NOT NULL UNIQUE,      -- SHA-256 of the full key; the key itself is never stored
    prefix         TEXT NOT NULL,             -- pc_<env>_ and 6 characters, for people to recognise a key
    env            TEXT NOT NULL,
    owner          TEXT NOT NULL,
    name           TEXT NOT NULL,
    scopes         TEXT NOT NULL,             -- space-separated
    created_at     INTEGER NOT NULL,          -- unix seconds
    expires_at     INTEGER,
    revoked_at     INTEGER,
    disabled       INTEGER NOT NULL DEFAULT 0,
    remaining_uses INTEGER,
    rate_limit     TEXT,
    metadata       TEXT NOT NULL DEFAULT '{}',
    last_used_at   INTEGER,
    rotated_from   TEXT,
    rotated_to     TEXT
);
CREATE INDEX api_keys_owner ON api_keys(owner);

-- Every change to a key appends a row here, in the same transaction. A
-- running gateway polls it to drop stale cache entries, so a change made by
-- the CLI (another process) reaches it within the poll interval.
CREATE TABLE key_changes (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    key_hash   BLOB NOT NULL,
    changed_at INTEGER NOT NULL
);

CREATE TABLE audit_events (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT NOT NULL DEFAULT '{}'
);
