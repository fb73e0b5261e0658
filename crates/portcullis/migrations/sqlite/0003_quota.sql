-- Quotas: a key's remaining uses may be refilled to refill_amount at the
-- start of every UTC day or month. refilled_at is the start of the period
-- of the last refill (Unix seconds); the refill happens lazily, in the
-- same statement that spends a use.
ALTER TABLE api_keys ADD COLUMN refill_interval TEXT CHECK (refill_interval IN ('day', 'month'));
ALTER TABLE api_keys ADD COLUMN refill_amount INTEGER;
ALTER TABLE api_keys ADD COLUMN refilled_at INTEGER NOT NULL DEFAULT 0;
