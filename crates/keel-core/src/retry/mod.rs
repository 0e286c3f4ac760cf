//! Retry policies: how long to wait before the next attempt, and whether there is one.
//!
//! Pure code: the random sample used for jitter is an argument, so tests pin exact bounds.

use std::time::Duration;

/// How a backoff delay is randomised (see the AWS architecture blog's "Exponential Backoff And
/// Jitter" for the trade-offs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Jitter {
    /// Uniform in `[0, ceiling]`: spreads a retry storm the most.
    Full,
    /// Uniform in `[ceiling / 2, ceiling]`.
    Equal,
    /// Uniform in `[initial, previous * 3]`, capped at `max`.
    Decorrelated,
    /// Exactly the exponential ceiling.
    None,
}

/// A function's (or subscription's) retry policy.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in total, the first included; at least 1.
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: Jitter::Full,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextStep {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// The policy's attempts are used up.
    GiveUp,
}

impl RetryPolicy {
    /// The exponential ceiling after failed attempt `attempt` (1-based):
    /// `min(max, initial * multiplier^(attempt - 1))`.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(1024) as i32;
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exp);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The backoff delay after failed attempt `attempt` (1-based). `previous` is the delay used
    /// before this attempt (decorrelated jitter builds on it); `sample` is uniform in `[0, 1)`.
    pub fn delay_for(&self, attempt: u32, previous: Option<Duration>, sample: f64) -> Duration {
        let sample = sample.clamp(0.0, 1.0);
        match self.jitter {
            Jitter::None => self.ceiling(attempt),
            Jitter::Full => self.ceiling(attempt).mul_f64(sample),
            Jitter::Equal => {
                let half = self.ceiling(attempt) / 2;
                half + half.mul_f64(sample)
            }
            Jitter::Decorrelated => {
                let low = self.initial;
                let high = previous.unwrap_or(self.initial).saturating_mul(3).max(low);
                (low + (high - low).mul_f64(sample)).min(self.max)
            }
        }
    }

    /// Decides the step after failed attempt number `attempt` (1-based, counted within the
    /// current budget). A server's `Retry-After` is honoured as the least delay.
    pub fn next_step(
        &self,
        attempt: u32,
        previous: Option<Duration>,
        retry_after: Option<Duration>,
        sample: f64,
    ) -> NextStep {
        if attempt >= self.max_attempts {
            return NextStep::GiveUp;
        }
        let delay = self.delay_for(attempt, previous, sample);
        NextStep::RetryAfter(retry_after.map_or(delay, |least| delay.max(least)))
    }
}

#[cfg(test)]
mod tests;
