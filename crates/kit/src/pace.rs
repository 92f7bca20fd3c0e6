//! How often a parent's status is rewritten while it converges. Its children report their progress one
//! after another (a tenant's Scheduler within a second, then its Database starting, then ready; a Database's
//! pool pods one by one), seconds to minutes apart, and each report used to become a status write of its
//! own. Progress that leaves the `Ready` condition's status as it was is now written at most once per
//! [`PACE`]: a later report joins the held one. The first status, a new generation and a flip of `Ready`
//! are written at once, so what a user waits on (`kubectl wait --for=condition=Ready`) is never late; the
//! detail of why something is not Ready yet may be, by up to [`PACE`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

pub const PACE: Duration = Duration::from_secs(5);

/// When this process last wrote each object's status, by UID, for the last [`PACE`] only. A new process
/// remembers nothing and writes at once.
#[derive(Debug, Default)]
pub struct Pace {
    written: Mutex<HashMap<String, Instant>>,
}

impl Pace {
    /// How long a change that is not `urgent` waits before it is written; `None`: now.
    pub fn hold(&self, uid: &str, urgent: bool, now: Instant) -> Option<Duration> {
        if urgent {
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

/// A status as far as its pace goes: the generation it was computed for and its conditions.
pub trait Progress {
    fn generation(&self) -> Option<i64>;
    fn conditions(&self) -> &[Condition];
}

/// Whether going from `old` to `new` is written at once: the first status, another generation, or a flip
/// of `Ready`.
#[must_use]
pub fn urgent<S: Progress>(old: Option<&S>, new: &S) -> bool {
    let ready = |s: &S| {
        s.conditions()
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.status.clone())
    };
    old.is_none_or(|old| old.generation() != new.generation() || ready(old) != ready(new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    struct Seen(Option<i64>, Vec<Condition>);

    impl Progress for Seen {
        fn generation(&self) -> Option<i64> {
            self.0
        }
        fn conditions(&self) -> &[Condition] {
            &self.1
        }
    }

    fn ready(ok: bool, reason: &str) -> Vec<Condition> {
        vec![Condition {
            type_: "Ready".to_owned(),
            status: if ok { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        }]
    }

    #[test]
    fn progress_within_the_pace_waits_for_the_rest_of_it() {
        let pace = Pace::default();
        let t0 = Instant::now();
        assert_eq!(
            pace.hold("u", false, t0),
            None,
            "nothing written by this process yet"
        );
        pace.wrote("u", t0);
        let half = PACE / 2;
        assert_eq!(pace.hold("u", false, t0 + half), Some(PACE - half));
        assert_eq!(pace.hold("u", true, t0 + half), None, "urgent");
        assert_eq!(pace.hold("u", false, t0 + PACE), None, "the pace is over");
        assert_eq!(pace.hold("other", false, t0 + half), None, "per object");
    }

    #[test]
    fn first_status_ready_flips_and_new_generations_are_urgent() {
        let pending = Seen(Some(1), ready(false, "Pending"));
        let starting = Seen(Some(1), ready(false, "Starting"));
        let ok = Seen(Some(1), ready(true, "Ready"));
        assert!(urgent(None, &pending), "the first status");
        assert!(urgent(Some(&pending), &ok));
        assert!(urgent(Some(&ok), &starting));
        assert!(urgent(Some(&pending), &Seen(Some(2), ready(false, "Pending"))));
        assert!(
            urgent(Some(&Seen(Some(1), vec![])), &pending),
            "Ready reported at last"
        );
        assert!(!urgent(Some(&pending), &starting), "progress");
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
