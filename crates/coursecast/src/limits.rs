//! Per-IP rate limits (auth endpoints, socket handshakes), with the wait a refused
//! client is told in `Retry-After`.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock, DefaultClock},
};

use crate::error::AppError;

/// A keyed token bucket per client IP; [`IpRateLimiter::spawn_pruner`] keeps it bounded.
#[derive(Clone)]
pub struct IpRateLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    clock: DefaultClock,
}

impl IpRateLimiter {
    pub fn new(per_second: u32, burst: u32) -> Self {
        let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(per_second);
        Self {
            limiter: Arc::new(RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))),
            clock: DefaultClock::default(),
        }
    }

    /// Takes one token for `ip`, or says how long to wait.
    pub fn check(&self, ip: IpAddr) -> Result<(), AppError> {
        self.limiter.check_key(&ip).map_err(|not_until| {
            let wait: Duration = not_until.wait_time_from(self.clock.now());
            AppError::RateLimited { retry_after_secs: wait.as_secs_f64().ceil() as u64 }
        })
    }

    /// Every minute, forgets IPs whose buckets are full again, so the map stays
    /// bounded by recent clients. The task ends once the limiter is dropped.
    pub fn spawn_pruner(&self) {
        let limiter = Arc::downgrade(&self.limiter);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                let Some(limiter) = limiter.upgrade() else { return };
                limiter.retain_recent();
                limiter.shrink_to_fit();
            }
        });
    }
}

/// Failed attempts per key (an address, an account), as a token bucket that only
/// failures drain: `check` asks before the work, `charge` records a failure after.
/// Successes cost nothing, so 300 students signing in correctly from one campus
/// address are never refused, while guessing from one address, or at one account,
/// is stopped after `burst` failures and then allowed `per_minute` a minute.
pub struct FailureLimiter<K> {
    burst: f64,
    per_second: f64,
    buckets: std::sync::Mutex<std::collections::HashMap<K, Bucket>>,
}

struct Bucket {
    tokens: f64,
    at: std::time::Instant,
}

/// Keys remembered at most; past it, buckets that have refilled are forgotten (they
/// hold nothing a fresh bucket would not), then the oldest half.
const FAILURE_KEYS_MAX: usize = 100_000;

impl<K: std::hash::Hash + Eq + Clone> FailureLimiter<K> {
    pub fn new(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        Self { burst: per_minute, per_second: per_minute / 60.0, buckets: Default::default() }
    }

    /// `RATE_LIMITED` (with the wait until the next failure would be allowed) once
    /// `key` has no failures left.
    pub fn check(&self, key: &K) -> Result<(), AppError> {
        let now = std::time::Instant::now();
        let mut buckets = crate::locks::lock(&self.buckets);
        let Some(bucket) = buckets.get_mut(key) else { return Ok(()) };
        self.refill(bucket, now);
        if bucket.tokens >= 1.0 {
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / self.per_second;
        Err(AppError::RateLimited { retry_after_secs: wait.ceil().max(1.0) as u64 })
    }

    /// Records one failure of `key`.
    pub fn charge(&self, key: K) {
        let now = std::time::Instant::now();
        let mut buckets = crate::locks::lock(&self.buckets);
        if buckets.len() >= FAILURE_KEYS_MAX && !buckets.contains_key(&key) {
            self.forget_some(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        self.refill(bucket, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }

    fn refill(&self, bucket: &mut Bucket, now: std::time::Instant) {
        let gained = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + gained).min(self.burst);
        bucket.at = now;
    }

    fn forget_some(&self, buckets: &mut std::collections::HashMap<K, Bucket>, now: std::time::Instant) {
        let full_after = std::time::Duration::from_secs_f64(self.burst / self.per_second);
        buckets.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
        if buckets.len() >= FAILURE_KEYS_MAX {
            let mut ages: Vec<std::time::Instant> = buckets.values().map(|b| b.at).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            buckets.retain(|_, b| b.at > cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_drain_a_key_and_keys_are_apart() {
        let limiter = FailureLimiter::new(3);
        for _ in 0..3 {
            assert!(limiter.check(&"a").is_ok());
            limiter.charge("a");
        }
        let refused = limiter.check(&"a").unwrap_err();
        assert!(matches!(refused, AppError::RateLimited { retry_after_secs: 20 }), "{refused:?}");
        assert!(limiter.check(&"b").is_ok(), "another key is untouched");
    }
}
