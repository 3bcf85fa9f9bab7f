//! Who may do what: API keys with roles, compared in constant time, and token-bucket rate limits
//! per key and per client IP (both off unless configured).

use crate::{bail, Result};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Roles in increasing power: each may do what the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Health, metrics, metadata, the status page.
    Readonly,
    /// Also inference.
    User,
    /// Also loading and unloading models.
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Role> {
        match s {
            "readonly" => Some(Role::Readonly),
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Readonly => "readonly",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
}

/// The keys from an API key file: one `KEY ROLE` per line (`#` starts a comment).
#[derive(Clone)]
pub struct ApiKeys {
    keys: Vec<(Vec<u8>, Role)>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.keys.len())
    }
}

impl ApiKeys {
    pub fn parse(text: &str) -> Result<ApiKeys> {
        let mut keys: Vec<(Vec<u8>, Role)> = Vec::new();
        for (k, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [key, role] = fields[..] else {
                bail!(InvalidInput, "API key file, line {}: expected 'KEY ROLE'", k + 1);
            };
            let Some(role) = Role::parse(role) else {
                bail!(InvalidInput, "API key file, line {}: role must be readonly, user or admin", k + 1);
            };
            if key.len() < 16 {
                bail!(InvalidInput, "API key file, line {}: keys must be at least 16 characters", k + 1);
            }
            if keys.iter().any(|(existing, _)| existing == key.as_bytes()) {
                bail!(InvalidInput, "API key file, line {}: the key is listed twice", k + 1);
            }
            keys.push((key.as_bytes().to_vec(), role));
        }
        if keys.is_empty() {
            bail!(InvalidInput, "the API key file has no keys");
        }
        Ok(ApiKeys { keys })
    }

    /// The role of `presented`, comparing it with every key in time that does not depend on
    /// where (or whether) they differ.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let mut found = None;
        for (key, role) in &self.keys {
            if constant_time_eq(key, presented.as_bytes()) {
                found = Some(*role);
            }
        }
        found
    }
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = (a.len() ^ b.len()) as u64;
    for k in 0..a.len().max(b.len()) {
        let x = a.get(k).copied().unwrap_or(0);
        let y = b.get(k).copied().unwrap_or(0);
        diff |= u64::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// `RATE` or `RATE:BURST` requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl RateLimit {
    pub fn parse(s: &str) -> Result<RateLimit> {
        let (rate, burst) = s.split_once(':').unwrap_or((s, ""));
        let rate: f64 = rate.trim().parse().ok().filter(|r: &f64| r.is_finite() && *r > 0.0).ok_or_else(|| {
            crate::err!(InvalidInput, "rate limit '{s}' is not RATE[:BURST] with RATE > 0 requests per second")
        })?;
        let burst = if burst.is_empty() {
            rate.max(1.0)
        } else {
            burst
                .trim()
                .parse()
                .ok()
                .filter(|b: &f64| b.is_finite() && *b >= 1.0)
                .ok_or_else(|| crate::err!(InvalidInput, "rate limit '{s}': BURST must be a number >= 1"))?
        };
        Ok(RateLimit { per_second: rate, burst })
    }
}

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets by client (key or IP). Memory is bounded: past `MAX_CLIENTS` buckets, the
/// full ones (clients idle long enough to have refilled) are dropped first.
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

const MAX_CLIENTS: usize = 100_000;

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter { limit, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token for `client`; when none is left, the seconds until one is.
    pub fn check(&self, client: &str) -> std::result::Result<(), u64> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CLIENTS && !buckets.contains_key(client) {
            let limit = self.limit;
            buckets.retain(|_, b| refill(b, now, limit) < limit.burst);
            if buckets.len() >= MAX_CLIENTS {
                // Everyone is busy: forget the whole table rather than grow without bound.
                buckets.clear();
            }
        }
        let bucket = buckets.entry(client.to_string()).or_insert(Bucket { tokens: self.limit.burst, updated: now });
        let tokens = refill(bucket, now, self.limit);
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            Err(((1.0 - tokens) / self.limit.per_second).ceil().max(1.0) as u64)
        }
    }
}

fn refill(b: &mut Bucket, now: Instant, limit: RateLimit) -> f64 {
    let elapsed = now.duration_since(b.updated).as_secs_f64();
    b.tokens = (b.tokens + elapsed * limit.per_second).min(limit.burst);
    b.updated = now;
    b.tokens
}

/// Per-IP clients: IPv6 addresses count per /64, since one host usually holds a whole /64.
pub fn ip_client(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_files_parse_and_roles_order() {
        let keys = ApiKeys::parse("# keys\nreader-key-0123456789 readonly\nadmin-key-0123456789 admin # me\n").unwrap();
        assert_eq!(keys.role_of("admin-key-0123456789"), Some(Role::Admin));
        assert_eq!(keys.role_of("reader-key-0123456789"), Some(Role::Readonly));
        assert_eq!(keys.role_of("admin-key-012345678"), None);
        assert_eq!(keys.role_of(""), None);
        assert!(Role::Admin > Role::User && Role::User > Role::Readonly);
        for bad in [
            "",
            "k readonly",
            "long-enough-key-123 root",
            "long-enough-key-123",
            "a b c",
            "long-enough-key-123 user\nlong-enough-key-123 admin",
        ] {
            assert!(ApiKeys::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn constant_time_eq_compares_whole_keys() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(!constant_time_eq(b"", b"\0"));
    }

    #[test]
    fn buckets_allow_the_burst_then_refuse_with_a_wait() {
        let limiter = RateLimiter::new(RateLimit::parse("1:3").unwrap());
        for _ in 0..3 {
            assert_eq!(limiter.check("a"), Ok(()));
        }
        assert_eq!(limiter.check("a"), Err(1));
        assert_eq!(limiter.check("b"), Ok(()));
        assert_eq!(RateLimit::parse("5").unwrap(), RateLimit { per_second: 5.0, burst: 5.0 });
        for bad in ["0", "-1", "x", "1:0", "nan", "inf"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad}");
        }
    }
}
