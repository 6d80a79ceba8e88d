//! Exponential backoff with jitter, shared by the sinks that retry.
//!
//! The wait starts at `initial`, doubles after each failure up to `max`, and each actual
//! sleep is the current wait times a random factor in [0.75, 1.25), so many kollate agents
//! that lost the same receiver do not come back in lock step.

use std::time::Duration;

/// The waits between retries of one delivery.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits starting at `initial`, capped at `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            next: initial.min(max),
        }
    }

    /// The next wait (jittered), advancing the schedule.
    pub fn next_delay(&mut self) -> Duration {
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        let delay = self.next.mul_f64(jitter);
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Sleeps for the next wait.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Starts the schedule again (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial.min(self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_with_bounded_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let waits: Vec<Duration> = (0..6).map(|_| b.next_delay()).collect();
        let nominal = [100, 200, 400, 500, 500, 500];
        for (w, n) in waits.iter().zip(nominal) {
            let n = Duration::from_millis(n);
            assert!(
                *w >= n.mul_f64(0.75) && *w < n.mul_f64(1.25),
                "{w:?} vs {n:?}"
            );
        }
        b.reset();
        assert!(b.next_delay() < Duration::from_millis(125));
    }
}
