-- Per-key analytics: decisions per (span, bucket, key, subject, outcome).
-- A gateway adds its in-memory counts every flush interval, each to its
-- minute, hour and day row, in one transaction:
--   INSERT ... ON CONFLICT (...) DO UPDATE SET count = usage.count + excluded.count
-- so several gateways writing the same buckets sum. bucket_start is Unix
-- seconds (floored to the span); key_id is the key's public id ('' for a
-- user's or client's own row, '-' for what is not counted per key);
-- outcome is portcullis_core::Outcome's name. Old buckets are deleted by
-- the aggregator's pruner, per span's retention.
CREATE TABLE usage (
    span         TEXT NOT NULL CHECK (span IN ('minute', 'hour', 'day')),
    bucket_start INTEGER NOT NULL,
    key_id       TEXT NOT NULL,
    subject      TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    count        INTEGER NOT NULL,
    PRIMARY KEY (span, bucket_start, key_id, subject, outcome)
);
-- A key's series.
CREATE INDEX usage_key ON usage(key_id, span, bucket_start);
