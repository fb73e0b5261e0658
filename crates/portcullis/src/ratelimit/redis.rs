//! The Redis limiter: one Lua script per decision, one round trip, on the
//! Redis server's clock (`TIME`), so gateways whose clocks disagree still
//! count against the same timeline.
//!
//! The script is the same GCRA as `portcullis_core::ratelimit::decide`
//! (the tests compare them), applied to every counter of the request
//! before any is written: all admit, or nothing is stored. Each counter
//! holds its TAT in nanoseconds since the Unix epoch, as a decimal string,
//! under a name that carries the format version
//! ([`super::REDIS_FORMAT`]).

use super::{Check, Verdict};
use portcullis_core::ratelimit::Decision;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// `KEYS`: the counters. `ARGV`: per counter, four numbers: the request's
/// increment (cost × emission interval) and the limit's window (burst ×
/// emission interval), each as whole microseconds and the nanoseconds
/// left over (0-999).
///
/// Returns `{admitted, then per counter: ahead_us, ahead_ns, wait_us,
/// wait_ns}`: how far the counter's TAT is ahead of now (the new TAT when
/// it admits, the stored one when it refuses) and how long until it would
/// admit (0 when it does). Rust picks the deciding counter from these, as
/// it does in memory, and works out the room left in exact integers.
///
/// Why pairs of (microseconds, nanoseconds): Lua numbers are doubles,
/// exact for integers below 2^53. Nanoseconds since the epoch are near
/// 2^61 (2^53 ns is only 104 days), so they cannot be held in one number;
/// microseconds since the epoch are near 2^51 and exact for 285 years, and
/// `TIME` gives microseconds. So every time is a pair `u` µs + `n` ns
/// (`0 <= n < 1000`), added and subtracted with a carry, and the stored TAT
/// is written as the decimal digits of `u` followed by `n` as three digits
/// (the nanoseconds) and read back by splitting off the last three digits.
/// Every `u` stays below 2^53: the core caps a window at `MAX_SPAN_NS` (50
/// years) and an increment at twice that, so a TAT ahead of now plus an
/// increment is at most 150 years of microseconds (4.7e15), and an
/// absolute TAT is now plus at most 50 years.
const GCRA: &str = r"
local t = redis.call('TIME')
local now_u = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local out = {1}
local new = {}
for i = 1, n do
  local inc_u, inc_n = tonumber(ARGV[4 * i - 3]), tonumber(ARGV[4 * i - 2])
  local win_u, win_n = tonumber(ARGV[4 * i - 1]), tonumber(ARGV[4 * i])
  local a_u, a_n = 0, 0
  local s = redis.call('GET', KEYS[i])
  if s then
    local tu, tn = 0, tonumber(s)
    if #s > 3 then
      tu, tn = tonumber(string.sub(s, 1, -4)), tonumber(string.sub(s, -3))
    end
    if tu > now_u or (tu == now_u and tn > 0) then
      a_u, a_n = tu - now_u, tn
    end
  end
  local b_u, b_n = a_u + inc_u, a_n + inc_n
  if b_n >= 1000 then b_u, b_n = b_u + 1, b_n - 1000 end
  local w_u, w_n = b_u - win_u, b_n - win_n
  if w_n < 0 then w_u, w_n = w_u - 1, w_n + 1000 end
  local k = #out
  if w_u > 0 or (w_u == 0 and w_n > 0) then
    out[1] = 0
    out[k + 1], out[k + 2], out[k + 3], out[k + 4] = a_u, a_n, w_u, w_n
  else
    new[i] = {b_u, b_n}
    out[k + 1], out[k + 2], out[k + 3], out[k + 4] = b_u, b_n, 0, 0
  end
end
if out[1] == 1 then
  for i = 1, n do
    local b_u, b_n = new[i][1], new[i][2]
    local px = math.floor(b_u / 1000)
    if b_u % 1000 > 0 or b_n > 0 then px = px + 1 end
    redis.call('SET', KEYS[i], string.format('%.0f%03d', now_u + b_u, b_n), 'PX', string.format('%.0f', px))
  end
end
return out
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
        for c in checks {
            inv.key(c.redis_key(&self.settings.key_prefix));
            let inc = c.limit.increment_ns(cost);
            let window = c.limit.window_ns();
            inv.arg(inc / 1000)
                .arg(inc % 1000)
                .arg(window / 1000)
                .arg(window % 1000);
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
    let (&admitted, rest) = r.split_first().ok_or_else(bad)?;
    if rest.len() != 4 * checks.len() {
        return Err(bad());
    }
    let ns = |u: i64, n: i64| -> Result<u64, RedisLimitError> {
        let u = u64::try_from(u).map_err(|_| bad())?;
        let n = u64::try_from(n)
            .ok()
            .filter(|n| *n < 1000)
            .ok_or_else(bad)?;
        u.checked_mul(1000)
            .and_then(|v| v.checked_add(n))
            .ok_or_else(bad)
    };
    let mut decisions = Vec::with_capacity(checks.len());
    for (c, f) in checks.iter().zip(rest.chunks_exact(4)) {
        let ahead = ns(f[0], f[1])?;
        let wait = ns(f[2], f[3])?;
        decisions.push(if wait > 0 {
            Decision::Refuse {
                retry_after_ns: wait,
                reset_ns: ahead,
            }
        } else {
            Decision::Admit {
                // Stored by the script; not needed here.
                tat: 0,
                remaining: c.limit.room(ahead),
                reset_ns: ahead,
            }
        });
    }
    let v = super::verdict(checks, decisions.iter().copied()).ok_or_else(bad)?;
    if v.admitted != (admitted == 1) {
        return Err(bad());
    }
    Ok(v)
}
