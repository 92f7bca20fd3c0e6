//! When to try a failed delivery again, and when to stop.
//!
//! Delays grow exponentially up to a cap, so an endpoint that is down for a minute is retried within
//! seconds while one that is down for hours costs berth a request every half hour, not a request a
//! second. Half of each delay is random ("equal jitter"): after an outage, the deliveries that failed
//! together do not all come back in the same instant. A delivery is abandoned once its first attempt
//! is older than a day; by then the event is news no longer and its receiver can read the current state.

use std::time::Duration;

/// The retry schedule of one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The delay after the first failure, before jitter.
    pub base: Duration,
    /// How much each further failure multiplies the delay by.
    pub factor: u32,
    /// No delay is longer than this, before jitter.
    pub cap: Duration,
    /// A delivery whose first attempt is older than this is given up.
    pub max_age: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(5),
            factor: 2,
            cap: Duration::from_secs(30 * 60),
            max_age: Duration::from_secs(24 * 60 * 60),
        }
    }
}

impl Backoff {
    /// How long to wait after failed attempt number `attempt` (0 for the first), given `jitter` drawn
    /// uniformly from `[0, 1)`: `min(cap, base × factor^attempt)`, of which the first half is fixed and
    /// the second half scaled by `jitter`.
    ///
    /// Never overflows: a product too large for a [`Duration`] is the cap. A `jitter` outside `[0, 1)`
    /// (or NaN) is clamped, so a bad random source cannot stretch a delay past the cap.
    #[must_use]
    pub fn next_delay(&self, attempt: u32, jitter: f64) -> Duration {
        let full = self
            .factor
            .checked_pow(attempt)
            .and_then(|n| self.base.checked_mul(n))
            .map_or(self.cap, |d| d.min(self.cap));
        let jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        // `try_from_secs_f64` rather than `mul_f64`: near `Duration::MAX` the float product can round
        // above what a Duration holds, and `mul_f64` would panic where this falls back to the whole delay.
        Duration::try_from_secs_f64(full.as_secs_f64() * (0.5 + jitter / 2.0)).unwrap_or(full)
    }

    /// True when a delivery first attempted at `first_attempt_at` should not be tried again at `now`
    /// (both unix seconds). A clock that went backwards gives up nothing.
    #[must_use]
    pub fn give_up(&self, first_attempt_at: i64, now: i64) -> bool {
        let age = now.saturating_sub(first_attempt_at);
        u64::try_from(age).is_ok_and(|age| age > self.max_age.as_secs())
    }
}

/// A jitter for [`Backoff::next_delay`]: uniform in `[0, 1)`, from the operating system's random
/// generator (53 random bits, all an `f64` mantissa holds).
///
/// # Errors
/// When the operating system's random generator cannot be read.
pub fn jitter() -> Result<f64, getrandom::Error> {
    // 53 bits, which an f64 holds exactly, over 2^53.
    let bits = getrandom::u64()? >> 11;
    Ok(bits as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn defaults_are_the_documented_ones() {
        let b = Backoff::default();
        assert_eq!(
            (b.base, b.factor, b.cap, b.max_age),
            (5 * SECOND, 2, 1800 * SECOND, 86_400 * SECOND)
        );
    }

    #[test]
    fn delays_double_until_the_cap() {
        let b = Backoff::default();
        let at_most: Vec<u64> = (0..12)
            .map(|n| b.next_delay(n, 0.999_999_999).as_secs())
            .collect();
        let at_least: Vec<u64> = (0..12).map(|n| b.next_delay(n, 0.0).as_secs()).collect();
        assert_eq!(at_most, [4, 9, 19, 39, 79, 159, 319, 639, 1279, 1799, 1799, 1799]);
        assert_eq!(at_least, [2, 5, 10, 20, 40, 80, 160, 320, 640, 900, 900, 900]);
        // `as_secs` truncates: the upper bounds are a hair under base × 2^n.
        assert!(b.next_delay(0, 0.999_999_999) < 5 * SECOND);
    }

    #[test]
    fn every_delay_lies_within_its_jitter_band_and_bands_never_shrink() {
        let b = Backoff::default();
        let mut previous_low = Duration::ZERO;
        for attempt in 0..64 {
            let full = b.cap.min(b.base * 2u32.saturating_pow(attempt.min(20)));
            let low = b.next_delay(attempt, 0.0);
            assert_eq!(low, full / 2, "attempt {attempt}");
            for jitter in [0.0, 0.25, 0.5, 0.75, 0.999] {
                let d = b.next_delay(attempt, jitter);
                assert!(
                    d >= full / 2 && d < full,
                    "attempt {attempt} jitter {jitter}: {d:?}"
                );
            }
            assert!(low >= previous_low, "attempt {attempt}");
            previous_low = low;
        }
    }

    #[test]
    fn huge_attempts_and_durations_do_not_overflow() {
        let b = Backoff::default();
        assert_eq!(b.next_delay(u32::MAX, 0.0), b.cap / 2);
        let unbounded = Backoff {
            base: Duration::MAX,
            factor: u32::MAX,
            cap: Duration::MAX,
            max_age: Duration::MAX,
        };
        for attempt in [0, 1, 31, 32, 33, u32::MAX] {
            for jitter in [0.0, 0.5, 0.999_999] {
                let d = unbounded.next_delay(attempt, jitter);
                assert!(d >= Duration::MAX / 2 - SECOND, "{attempt} {jitter}: {d:?}");
            }
        }
        assert!(!unbounded.give_up(i64::MIN, i64::MAX));
    }

    #[test]
    fn jitter_out_of_range_is_clamped() {
        let b = Backoff::default();
        assert_eq!(b.next_delay(3, -1.0), b.next_delay(3, 0.0));
        assert_eq!(b.next_delay(3, f64::NAN), b.next_delay(3, 0.0));
        assert_eq!(b.next_delay(3, 7.0), 40 * SECOND);
        assert_eq!(b.next_delay(3, f64::INFINITY), 40 * SECOND);
    }

    #[test]
    fn gives_up_only_after_max_age() {
        let b = Backoff::default();
        let first = 1_700_000_000;
        assert!(!b.give_up(first, first));
        assert!(!b.give_up(first, first + 86_400));
        assert!(b.give_up(first, first + 86_401));
        assert!(!b.give_up(first, first - 60), "clock went backwards");
        assert!(b.give_up(i64::MIN, i64::MAX), "no overflow");
    }

    #[test]
    fn random_jitter_is_in_the_unit_interval_and_varies() {
        let draws: Vec<f64> = (0..1000).map(|_| jitter().unwrap()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)));
        assert!(draws.iter().any(|j| *j < 0.5) && draws.iter().any(|j| *j >= 0.5));
    }
}
