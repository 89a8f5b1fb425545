//! A token bucket for KMS CreateKey, shared by every tenant of one operator: KMS allows a few
//! CreateKey calls per second per account and region, and many tenants may be created at once.

use std::time::{Duration, Instant};

use tokio::sync::Mutex;

#[derive(Debug)]
pub(crate) struct RateLimiter {
    per_second: u32,
    state: Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// `per_second` calls per second with bursts of as many; 0 means no limit.
    pub(crate) fn new(per_second: u32) -> Self {
        RateLimiter { per_second, state: Mutex::new((f64::from(per_second), Instant::now())) }
    }

    /// Waits for a token. Waiters are served in order (tokio's mutex is fair).
    pub(crate) async fn acquire(&self) {
        if self.per_second == 0 {
            return;
        }
        let rate = f64::from(self.per_second);
        let mut state = self.state.lock().await;
        loop {
            let now = Instant::now();
            let (tokens, last) = *state;
            let tokens = (tokens + now.duration_since(last).as_secs_f64() * rate).min(rate);
            if tokens >= 1.0 {
                *state = (tokens - 1.0, now);
                return;
            }
            *state = (tokens, now);
            tokio::time::sleep(Duration::from_secs_f64((1.0 - tokens) / rate)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_beyond_the_burst_wait_for_their_turn() {
        let limiter = RateLimiter::new(20);
        let start = Instant::now();
        for _ in 0..30 {
            limiter.acquire().await;
        }
        // 20 at once, then 10 more at 20/s: about half a second.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    }
}
