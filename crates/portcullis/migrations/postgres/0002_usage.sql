-- Per-key analytics: the same table and meaning as
-- migrations/sqlite/0004_usage.sql (keep the two in step).
CREATE TABLE usage (
    span         TEXT NOT NULL CHECK (span IN ('minute', 'hour', 'day')),
    bucket_start BIGINT NOT NULL,
    key_id       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    count        BIGINT NOT NULL,
    PRIMARY KEY (span, bucket_start, key_id, subject, outcome)
);
CREATE INDEX usage_key ON usage(key_id, span, bucket_start);
