//! When each tenant was asked for and when it became ready, as seen by the bench's own watches.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

#[derive(Clone, Debug, Default)]
struct Tenant {
    created: Option<f64>,
    parts: u8,
    ready: Option<f64>,
}

/// Per-tenant timestamps (seconds since the phase started) and a count of ready tenants to wait on.
pub struct Tracker {
    t0: Instant,
    /// Bits of [`Tracker::part_ready`] that make a tenant ready.
    all_parts: u8,
    prefix: String,
    tenants: Mutex<HashMap<String, Tenant>>,
    ready: watch::Sender<usize>,
}

/// One tenant's outcome.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub name: String,
    pub created: Option<f64>,
    pub ready: Option<f64>,
}

impl Tracker {
    /// Tenants are the names starting with `prefix`; ready once every bit of `all_parts` was seen.
    pub fn new(prefix: &str, all_parts: u8) -> Self {
        Self {
            t0: Instant::now(),
            all_parts,
            prefix: prefix.to_owned(),
            tenants: Mutex::default(),
            ready: watch::Sender::new(0),
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.t0.elapsed().as_secs_f64()
    }

    pub fn mine(&self, name: &str) -> bool {
        name.starts_with(&self.prefix)
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Tenant>) -> T) -> Option<T> {
        self.tenants.lock().ok().map(|mut t| f(&mut t))
    }

    /// The client asked for tenant `name` now (the first call counts).
    pub fn created(&self, name: &str) {
        let now = self.elapsed();
        self.with(|t| {
            t.entry(name.to_owned()).or_default().created.get_or_insert(now);
        });
    }

    /// One part of `name` (a bit of `all_parts`) is ready; returns true when that made the tenant ready.
    pub fn part_ready(&self, name: &str, part: u8) -> bool {
        if !self.mine(name) {
            return false;
        }
        let now = self.elapsed();
        let all = self.all_parts;
        let newly = self
            .with(|t| {
                let tenant = t.entry(name.to_owned()).or_default();
                tenant.parts |= part;
                if tenant.parts & all == all && tenant.ready.is_none() {
                    tenant.ready = Some(now);
                    true
                } else {
                    false
                }
            })
            .unwrap_or(false);
        if newly {
            self.ready.send_modify(|n| *n += 1);
        }
        newly
    }

    /// Waits until `n` tenants are ready; false on timeout.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|ready| *ready >= n))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    pub fn ready_count(&self) -> usize {
        *self.ready.borrow()
    }

    /// Every tenant seen, sorted by name.
    pub fn outcomes(&self) -> Vec<Outcome> {
        let mut out: Vec<Outcome> = self
            .with(|t| {
                t.iter()
                    .map(|(name, s)| Outcome {
                        name: name.clone(),
                        created: s.created,
                        ready: s.ready,
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

/// Nearest-rank percentile `p` (0..=100) of sorted `values`.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 95.0), Some(3.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn ready_needs_every_part_once() {
        let t = Tracker::new("bf-", 0b11);
        t.created("bf-1");
        assert!(!t.part_ready("bf-1", 1));
        assert!(!t.part_ready("other", 3));
        assert!(t.part_ready("bf-1", 2));
        assert!(!t.part_ready("bf-1", 2), "counted once");
        assert_eq!(t.ready_count(), 1);
        assert!(t.outcomes()[0].ready.is_some());
    }
}
