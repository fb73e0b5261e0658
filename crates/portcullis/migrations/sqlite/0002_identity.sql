-- Portcullis store, version 2: users, OAuth2 clients, refresh tokens,
-- browser sessions and JWT signing keys. Secrets are stored only as hashes
-- (Argon2id / bcrypt for passwords, SHA-256 for high-entropy tokens); the
-- private signing keys are the one exception, and the reason the store file
-- is created readable by its owner only.

CREATE TABLE users (
    username      TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,              -- PHC string: $argon2id$… or an imported $2b$… bcrypt hash
    scopes        TEXT NOT NULL,              -- space-separated
    disabled      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    tokens_after  INTEGER NOT NULL DEFAULT 0  -- access tokens issued before this (unix s) are refused
);

CREATE TABLE oauth_clients (
    client_id    TEXT PRIMARY KEY,
    secret_hash  BLOB NOT NULL,               -- SHA-256 of the secret
    name         TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    grants       TEXT NOT NULL,               -- space-separated grant types
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER
);

-- One row per refresh token ever issued. A family is one login; every
-- rotation adds a row to it. Presenting a token whose used_at is set is
-- reuse, and revokes the family.
CREATE TABLE refresh_tokens (
    token_hash   BLOB PRIMARY KEY,
    family       TEXT NOT NULL,
    client_id    TEXT NOT NULL,               -- '' for the public (no client) password flow
    subject      TEXT NOT NULL,
    kind         TEXT NOT NULL,               -- 'user' | 'client'
    scopes       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,            -- the family's absolute expiry
    used_at      INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family);
CREATE INDEX refresh_tokens_subject ON refresh_tokens(subject);

CREATE TABLE sessions (
    session_hash BLOB PRIMARY KEY,
    username     TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,            -- absolute
    revoked_at   INTEGER
);
CREATE INDEX sessions_username ON sessions(username);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    alg          TEXT NOT NULL,
    private_der  BLOB NOT NULL,               -- PKCS#8
    public_jwk   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER,                     -- stopped signing
    drop_after   INTEGER                      -- leaves the JWKS: the last token it signed has expired
);

-- Process-wide secrets generated at first start (the CSRF HMAC key).
CREATE TABLE secrets (
    name       TEXT PRIMARY KEY,
    value      BLOB NOT NULL,
    created_at INTEGER NOT NULL
);
