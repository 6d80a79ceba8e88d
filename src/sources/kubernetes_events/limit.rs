//! Client-side request rate limit: a token bucket, as client-go's `QPS`/`Burst`.
//!
//! The bucket holds up to `burst` tokens and refills at `qps` per second; each request
//! takes one, waiting for it when the bucket is empty. It keeps a relist storm (many
//! scopes, many pages, a flapping connection) from hammering the API server.

use std::time::Duration;

use tokio::time::Instant;

/// A token bucket shared by every request of one source.
#[derive(Debug)]
pub struct RateLimiter {
    qps: f64,
    burst: f64,
    /// (tokens available, when they were counted).
    state: std::sync::Mutex<(f64, Instant)>,
}

impl RateLimiter {
    /// `qps` requests per second on average, up to `burst` at once. A `qps` of zero or
    /// less means no limit.
    pub fn new(qps: f64, burst: u32) -> RateLimiter {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            qps,
            burst,
            state: std::sync::Mutex::new((burst, Instant::now())),
        }
    }

    /// Waits until a request may go.
    pub async fn acquire(&self) {
        if self.qps <= 0.0 || !self.qps.is_finite() {
            return;
        }
        let wait = {
            let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let (tokens, at) = *state;
            let now = Instant::now();
            let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.qps).min(self.burst);
            // Take the token now (possibly going negative): later callers queue behind.
            *state = (tokens - 1.0, now);
            if tokens >= 1.0 {
                Duration::ZERO
            } else {
                Duration::from_secs_f64((1.0 - tokens) / self.qps)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_goes_at_once_then_requests_are_spaced_by_the_rate() {
        let limiter = RateLimiter::new(10.0, 3);
        let start = tokio::time::Instant::now();
        for _ in 0..3 {
            limiter.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_millis(1),
            "the burst is free"
        );
        for _ in 0..5 {
            limiter.acquire().await;
        }
        let spent = start.elapsed();
        assert!(
            spent >= Duration::from_millis(450) && spent <= Duration::from_millis(600),
            "five more at 10/s take about half a second: {spent:?}"
        );
    }
}
