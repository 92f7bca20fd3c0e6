//! `metav1.Condition`s that move only when the truth moves: `lastTransitionTime` changes on a status
//! flip and nowhere else, so an unchanged world produces an identical status and no write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";

/// The present, to the second (the precision the API server keeps), so a status written now compares
/// equal to itself read back.
#[must_use]
pub fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// What a reconcile concluded about one condition type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub type_: &'static str,
    pub ok: bool,
    pub reason: String,
    pub message: String,
}

impl Verdict {
    #[must_use]
    pub fn new(type_: &'static str, ok: bool, reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            type_,
            ok,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// Turns verdicts into conditions, keeping each previous `lastTransitionTime` unless the status flipped.
#[must_use]
pub fn conditions(
    old: &[Condition],
    verdicts: &[Verdict],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    verdicts
        .iter()
        .map(|v| {
            let status = if v.ok { "True" } else { "False" };
            let since = old
                .iter()
                .find(|c| c.type_ == v.type_ && c.status == status)
                .map_or_else(|| now.clone(), |c| c.last_transition_time.clone());
            Condition {
                type_: v.type_.to_owned(),
                status: status.to_owned(),
                reason: v.reason.clone(),
                message: v.message.clone(),
                observed_generation: generation,
                last_transition_time: since,
            }
        })
        .collect()
}

/// `Ready` as the conjunction of the others: the first failing verdict names the reason.
#[must_use]
pub fn ready(parts: &[Verdict]) -> Verdict {
    match parts.iter().find(|v| !v.ok) {
        Some(v) => Verdict::new(
            READY,
            false,
            v.reason.clone(),
            format!("{}: {}", v.type_, v.message),
        ),
        None => Verdict::new(READY, true, "Ready", "all parts are ready"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn now_has_whole_seconds() {
        assert_eq!(now().0.subsec_nanosecond(), 0);
    }

    #[test]
    fn transition_time_moves_only_on_a_flip() {
        let v = [Verdict::new("PoolReady", false, "Progressing", "0/2 pods")];
        let first = conditions(&[], &v, Some(1), &at(100));
        assert_eq!(first[0].last_transition_time, at(100));

        let same_status_new_message = [Verdict::new("PoolReady", false, "Progressing", "1/2 pods")];
        let second = conditions(&first, &same_status_new_message, Some(1), &at(200));
        assert_eq!(second[0].last_transition_time, at(100), "no flip, no new time");
        assert_eq!(second[0].message, "1/2 pods");

        let flipped = [Verdict::new("PoolReady", true, "Available", "2/2 pods")];
        let third = conditions(&second, &flipped, Some(1), &at(300));
        assert_eq!(third[0].last_transition_time, at(300));
        assert_eq!(third[0].status, "True");
    }

    #[test]
    fn identical_inputs_give_identical_conditions() {
        let v = [Verdict::new("A", true, "Ok", "fine")];
        let once = conditions(&[], &v, Some(3), &at(1));
        assert_eq!(conditions(&once, &v, Some(3), &at(99)), once);
    }

    #[test]
    fn ready_names_the_first_failing_part() {
        let parts = [
            Verdict::new("NamespaceReady", true, "Active", "ok"),
            Verdict::new("DatabaseReady", false, "Provisioning", "server starting"),
        ];
        let r = ready(&parts);
        assert!(!r.ok);
        assert_eq!(r.reason, "Provisioning");
        assert_eq!(r.message, "DatabaseReady: server starting");
        assert!(ready(&parts[..1]).ok);
    }
}
