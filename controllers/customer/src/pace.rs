//! How often a Customer's status is rewritten while its tenant is being built. Its children report their
//! progress one after another (the Scheduler within a second, then the Database starting, then ready, seconds to minutes apart), and
//! each report used to become a status write of its own. Progress that leaves the tenant's `Ready`
//! condition as it was is now written at most once per [`PACE`]: a later report joins the held one. The
//! first status, a new generation and a flip of `Ready` are written at once, so what a user waits on
//! (`kubectl wait --for=condition=Ready`) is never late; the detail of why the tenant is not Ready yet may
//! be, by up to [`PACE`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_api::{CustomerStatus, find_condition};

pub const PACE: Duration = Duration::from_secs(5);

/// When this process last wrote each Customer's status, by UID, for the last [`PACE`] only. A new
/// process remembers nothing and writes at once.
#[derive(Debug, Default)]
pub struct Pace {
    written: Mutex<HashMap<String, Instant>>,
}

impl Pace {
    /// How long `new` waits before it is written; `None`: now (or there is nothing to write).
    pub fn hold(
        &self,
        uid: &str,
        old: Option<&CustomerStatus>,
        new: &CustomerStatus,
        now: Instant,
    ) -> Option<Duration> {
        let old = old?;
        if old == new || urgent(old, new) {
            return None;
        }
        let last = *self.written.lock().ok()?.get(uid)?;
        PACE.checked_sub(now.saturating_duration_since(last))
            .filter(|wait| !wait.is_zero())
    }

    pub fn wrote(&self, uid: &str, now: Instant) {
        if let Ok(mut written) = self.written.lock() {
            written.retain(|_, at| now.saturating_duration_since(*at) < PACE);
            written.insert(uid.to_owned(), now);
        }
    }
}

fn urgent(old: &CustomerStatus, new: &CustomerStatus) -> bool {
    let ready = |s: &CustomerStatus| find_condition(&s.conditions, "Ready").map(|c| c.status.clone());
    old.observed_generation != new.observed_generation || ready(old) != ready(new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    fn status(generation: i64, ready: bool, summary: &str) -> CustomerStatus {
        CustomerStatus {
            observed_generation: Some(generation),
            conditions: vec![Condition {
                type_: "Ready".to_owned(),
                status: if ready { "True" } else { "False" }.to_owned(),
                reason: "R".to_owned(),
                message: String::new(),
                observed_generation: Some(generation),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }],
            summary: Some(summary.to_owned()),
            ..CustomerStatus::default()
        }
    }

    #[test]
    fn progress_within_the_pace_waits_for_the_rest_of_it() {
        let pace = Pace::default();
        let t0 = Instant::now();
        let (old, new) = (
            status(1, false, "database pending"),
            status(1, false, "database starting"),
        );
        assert_eq!(
            pace.hold("u", Some(&old), &new, t0),
            None,
            "nothing written by this process yet"
        );
        pace.wrote("u", t0);
        let half = PACE / 2;
        assert_eq!(pace.hold("u", Some(&old), &new, t0 + half), Some(PACE - half));
        assert_eq!(
            pace.hold("u", Some(&old), &new, t0 + PACE),
            None,
            "the pace is over"
        );
        assert_eq!(
            pace.hold("other", Some(&old), &new, t0 + half),
            None,
            "per Customer"
        );
    }

    #[test]
    fn first_status_ready_flips_and_new_generations_are_written_at_once() {
        let pace = Pace::default();
        let t0 = Instant::now();
        pace.wrote("u", t0);
        let at = t0 + PACE / 4;
        let pending = status(1, false, "database pending");
        assert_eq!(pace.hold("u", None, &pending, at), None, "the first status");
        assert_eq!(
            pace.hold("u", Some(&pending), &status(1, true, "all ready"), at),
            None
        );
        assert_eq!(
            pace.hold("u", Some(&pending), &status(2, false, "database pending"), at),
            None
        );
        assert_eq!(
            pace.hold("u", Some(&pending), &pending, at),
            None,
            "nothing to write"
        );
    }

    #[test]
    fn only_recent_writes_are_remembered() {
        let pace = Pace::default();
        let t0 = Instant::now();
        pace.wrote("a", t0);
        pace.wrote("b", t0 + PACE);
        assert_eq!(
            pace.written.lock().unwrap().len(),
            1,
            "a's write is past its pace"
        );
    }
}
