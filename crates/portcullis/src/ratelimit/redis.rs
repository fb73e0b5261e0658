//! The Redis limiter: one Lua script per decision, one round trip, on the
//! Redis server's clock (`TIME`), so gateways whose clocks disagree still
//! count against the same timeline.
//!
//! The script is the same GCRA as `portcullis_core::ratelimit::decide`
//! (the tests compare them), applied to every counter of the request
//! before any is written: all admit, or nothing is stored.

use super::{Check, Verdict};
use portcullis_core::ratelimit::Limit;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// `KEYS`: the counters. `ARGV[1]`: the cost; then per counter its
/// emission interval and burst (ms, count).
///
/// Returns `{admitted, index, remaining, reset_ms, retry_after_ms}` with
/// `index` 0-based: the refusing counter with the longest wait, or the
/// admitting one with the least room.
///
/// Lua numbers are doubles: exact for integers below 2^53, and Unix
/// milliseconds are near 2^41. `%.0f` writes them without an exponent.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cost = tonumber(ARGV[1])
local n = #KEYS
local tats = {}
local refuse_i, refuse_wait, refuse_reset = 0, -1, 0
local admit_i, admit_room, admit_reset = 0, -1, 0
for i = 1, n do
  local e = tonumber(ARGV[2 * i])
  local window = e * tonumber(ARGV[2 * i + 1])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local new_tat = tat + e * cost
  local allow_at = new_tat - window
  if now < allow_at then
    if allow_at - now > refuse_wait then
      refuse_i, refuse_wait, refuse_reset = i, allow_at - now, tat - now
    end
  else
    tats[i] = new_tat
    local room = math.floor((now + window - new_tat) / e)
    if admit_room < 0 or room < admit_room then
      admit_i, admit_room, admit_reset = i, room, new_tat - now
    end
  end
end
if refuse_i > 0 then
  return {0, refuse_i - 1, 0, refuse_reset, refuse_wait}
end
for i = 1, n do
  redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', string.format('%.0f', tats[i] - now))
end
return {1, admit_i - 1, admit_room, admit_reset, 0}
";

/// How to reach Redis and how long to wait for it.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`. May hold a password: never
    /// printed.
    pub url: String,
    /// The longest a decision waits for Redis (connect or answer).
    pub timeout: Duration,
    /// Failures in a row that open the breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before one request probes again.
    pub breaker_cooldown: Duration,
    /// Prefix of every counter's name.
    pub key_prefix: String,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("breaker_threshold", &self.breaker_threshold)
            .field("breaker_cooldown", &self.breaker_cooldown)
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

impl RedisSettings {
    /// Defaults: 50 ms timeout, the breaker opens after 3 failures in a
    /// row and probes again after 1 s.
    pub fn new(url: impl Into<String>) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            timeout: Duration::from_millis(50),
            breaker_threshold: 3,
            breaker_cooldown: Duration::from_secs(1),
            key_prefix: "portcullis:rl:".into(),
        }
    }
}

/// Why Redis gave no decision. Carries no URL or password.
#[derive(Debug, thiserror::Error)]
pub enum RedisLimitError {
    /// The URL does not parse.
    #[error("rate_limit.backend is not a valid redis:// URL ({0})")]
    BadUrl(String),
    /// No answer within the timeout.
    #[error("no answer from Redis within {0:?}")]
    Timeout(Duration),
    /// Redis answered with an error, or the connection failed.
    #[error("Redis: {0}")]
    Redis(String),
}

/// Decisions in Redis.
pub struct RedisLimiter {
    conn: ConnectionManager,
    script: redis::Script,
    settings: RedisSettings,
    metrics: crate::metrics::RedisMetrics,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("settings", &self.settings)
            .finish()
    }
}

/// A redis error as text without the connection details (the redis
/// crate's messages name the kind and the server's reply, not the URL).
fn describe(e: &redis::RedisError) -> String {
    format!(
        "{:?}: {}",
        e.kind(),
        e.detail().unwrap_or("connection failed")
    )
}

impl RedisLimiter {
    /// A limiter that connects on first use and reconnects by itself; it
    /// does not wait for Redis, so a gateway starts while Redis is down.
    pub fn new(settings: RedisSettings) -> Result<RedisLimiter, RedisLimitError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| RedisLimitError::BadUrl(format!("{:?}", e.kind())))?;
        // Reconnect quickly and give up quickly: the breaker, not the
        // client, decides how often an outage is probed.
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.timeout))
            .set_response_timeout(Some(settings.timeout))
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(settings.timeout);
        let conn = ConnectionManager::new_lazy_with_config(client, cfg)
            .map_err(|e| RedisLimitError::Redis(describe(&e)))?;
        Ok(RedisLimiter {
            conn,
            script: redis::Script::new(GCRA),
            settings,
            metrics: crate::metrics::RedisMetrics::new(),
        })
    }

    /// Checks that `url` is a Redis URL, without connecting.
    pub fn check_url(url: &str) -> Result<(), RedisLimitError> {
        redis::Client::open(url)
            .map(|_| ())
            .map_err(|e| RedisLimitError::BadUrl(format!("{:?}", e.kind())))
    }

    pub(super) fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// Decides a request of `cost` against every check in one script run.
    pub async fn check(
        &self,
        checks: &[Check<'_>],
        cost: u32,
    ) -> Result<Option<Verdict>, RedisLimitError> {
        if checks.is_empty() {
            return Ok(None);
        }
        let mut inv = self.script.prepare_invoke();
        inv.arg(cost.max(1));
        for c in checks {
            inv.key(c.redis_key(&self.settings.key_prefix));
            inv.arg(c.limit.emission_ms()).arg(c.limit.burst);
        }
        let mut conn = self.conn.clone();
        // The manager has its own timeouts; this one also bounds a
        // reconnect and the NOSCRIPT retry, so the whole decision never
        // waits longer than `timeout`.
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(self.settings.timeout, inv.invoke_async(&mut conn)).await;
        let took = crate::metrics::secs(started.elapsed());
        let reply: Vec<i64> = match answer {
            Err(_) => {
                self.metrics.error.record(took);
                return Err(RedisLimitError::Timeout(self.settings.timeout));
            }
            Ok(Err(e)) => {
                self.metrics.error.record(took);
                return Err(RedisLimitError::Redis(describe(&e)));
            }
            Ok(Ok(r)) => {
                self.metrics.ok.record(took);
                r
            }
        };
        parse_reply(&reply, checks).map(Some)
    }
}

fn parse_reply(r: &[i64], checks: &[Check<'_>]) -> Result<Verdict, RedisLimitError> {
    let bad = || RedisLimitError::Redis("unexpected reply from the rate-limit script".into());
    let [admitted, index, remaining, reset_ms, retry_ms] = *r else {
        return Err(bad());
    };
    let index = usize::try_from(index).map_err(|_| bad())?;
    let limit: Limit = *checks.get(index).ok_or_else(bad)?.limit;
    let ms = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Verdict {
        admitted: admitted == 1,
        limit,
        index,
        remaining: u32::try_from(remaining).unwrap_or(0),
        reset_secs: ms(reset_ms).div_ceil(1000),
        retry_after_secs: if admitted == 1 {
            0
        } else {
            ms(retry_ms).div_ceil(1000).max(1)
        },
    })
}
