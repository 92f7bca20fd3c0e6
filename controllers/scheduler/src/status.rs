//! The Scheduler's status, made from the plan: identical when nothing changed, so the kit writes nothing.
//!
//! Conditions:
//! - `SchedulesValid`: every workflow's schedule and time zone parse (reason `Valid`), else `False` with
//!   reason `InvalidSchedule` and each bad workflow's error in the message.
//! - `Ready`: `False`/`NameConflict` while a due run cannot be created because a Job that is not this
//!   Scheduler's holds its name (the message names the runs and whose Jobs hold them; `SchedulesValid`
//!   still tells about schedules meanwhile); `False`/`InvalidSchedule` when a schedule is invalid (the other
//!   workflows still run);
//!   `True`/`Suspended` while `spec.suspend` is set (the controller is operating, deliberately idle: not an
//!   error, so not `False`); otherwise `True`/`Ready`.
//! - `RunRequestsValid`: `False`/`InvalidRunRequest` while a run request annotation is refused or names a
//!   workflow not in the spec (each in the message); else `True`/`Valid`. It leaves `Ready` alone: a bad
//!   request stops no scheduled run.

use berth_api::{RUN_REQUEST_PREFIX, SchedulerStatus, WorkflowStatus};
use berth_kit::Error;
use berth_kit::conditions::{READY, Verdict, conditions, ready};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::plan::Plan;

pub const SCHEDULES_VALID: &str = "SchedulesValid";
pub const INVALID_SCHEDULE: &str = "InvalidSchedule";
pub const SUSPENDED: &str = "Suspended";
pub const RUN_REQUESTS_VALID: &str = "RunRequestsValid";
pub const INVALID_RUN_REQUEST: &str = "InvalidRunRequest";

/// The `RunRequestsValid` verdict of a plan.
#[must_use]
pub fn requests_verdict(plan: &Plan) -> Verdict {
    let refused = plan.workflows.iter().filter_map(|w| {
        let r = w.refused.as_ref()?;
        Some(format!(
            "{RUN_REQUEST_PREFIX}{}: refused, {}; set a new time to ask again",
            w.name, r.why
        ))
    });
    let unknown = plan
        .unknown_requests
        .iter()
        .map(|name| format!("{RUN_REQUEST_PREFIX}{name}: ignored, no workflow {name} in the spec"));
    let problems: Vec<String> = refused.chain(unknown).collect();
    if problems.is_empty() {
        Verdict::new(RUN_REQUESTS_VALID, true, "Valid", "no run request is refused")
    } else {
        Verdict::new(
            RUN_REQUESTS_VALID,
            false,
            INVALID_RUN_REQUEST,
            problems.join("; "),
        )
    }
}

/// The `SchedulesValid` verdict of a plan.
#[must_use]
pub fn schedules_verdict(plan: &Plan) -> Verdict {
    let errors: Vec<String> = plan
        .workflows
        .iter()
        .filter_map(|w| w.invalid.as_ref().map(|e| format!("workflow {}: {e}", w.name)))
        .collect();
    if errors.is_empty() {
        Verdict::new(
            SCHEDULES_VALID,
            true,
            "Valid",
            "every schedule and time zone is valid",
        )
    } else {
        Verdict::new(SCHEDULES_VALID, false, INVALID_SCHEDULE, errors.join("; "))
    }
}

/// `Ready` while runs could not be created because someone else's Jobs hold their names (`conflicts`, each
/// an [`Error::Conflict`]): the kit's category as reason, every conflict in the message. `None` without any.
#[must_use]
pub fn conflict_verdict(conflicts: &[Error]) -> Option<Verdict> {
    let reason = conflicts.first()?.category();
    let message: Vec<String> = conflicts.iter().map(ToString::to_string).collect();
    Some(Verdict::new(READY, false, reason, message.join("; ")))
}

/// The status after `plan` is carried out (see [`crate::plan::Plan::carried_out`]), with the runs it could
/// not create for `conflicts`. `now` only stamps conditions that flip.
#[must_use]
pub fn status(
    old: Option<&SchedulerStatus>,
    generation: Option<i64>,
    plan: &Plan,
    conflicts: &[Error],
    suspended: bool,
    now: Timestamp,
) -> SchedulerStatus {
    let schedules = schedules_verdict(plan);
    let readiness = if let Some(conflict) = conflict_verdict(conflicts) {
        conflict
    } else if schedules.ok && suspended {
        Verdict::new(
            READY,
            true,
            SUSPENDED,
            "suspended: no new runs start and queued runs stay queued",
        )
    } else {
        ready(std::slice::from_ref(&schedules))
    };
    // Whole seconds, as the API server stores them, so a re-read status compares equal.
    let now = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    SchedulerStatus {
        observed_generation: generation,
        conditions: conditions(
            old_conditions,
            &[schedules, readiness, requests_verdict(plan)],
            generation,
            &now,
        ),
        running: plan.running,
        queued: plan.queued,
        workflows: plan
            .workflows
            .iter()
            .map(|w| WorkflowStatus {
                name: w.name.clone(),
                last_schedule_time: w.last_schedule.map(Time),
                last_successful_time: w.last_successful.map(Time),
                last_failed_time: w.last_failed.map(Time),
                last_run: w.last_run.clone(),
                missed: w.missed,
                last_manual_request: w.last_manual_request.map(Time),
                refused_run_request: w.refused.as_ref().map(|r| r.value.clone()),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use berth_api::condition_status;

    use super::*;
    use crate::plan::WorkflowPlan;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn a_plan(invalid: Option<&str>) -> Plan {
        Plan {
            running: 2,
            queued: 1,
            workflows: vec![WorkflowPlan {
                name: "etl".into(),
                last_schedule: Some(ts("2025-01-01T10:00:00Z")),
                last_run: Some("etl-28928760".into()),
                missed: 3,
                invalid: invalid.map(str::to_owned),
                ..WorkflowPlan::default()
            }],
            ..Plan::default()
        }
    }

    #[test]
    fn counts_and_workflows_come_from_the_plan() {
        let s = status(
            None,
            Some(4),
            &a_plan(None),
            &[],
            false,
            ts("2025-01-01T10:00:05.5Z"),
        );
        assert_eq!((s.running, s.queued, s.observed_generation), (2, 1, Some(4)));
        let w = &s.workflows[0];
        assert_eq!(w.last_schedule_time, Some(Time(ts("2025-01-01T10:00:00Z"))));
        assert_eq!((w.last_run.as_deref(), w.missed), (Some("etl-28928760"), 3));
        assert_eq!(condition_status(&s.conditions, READY), Some(true));
        assert_eq!(
            s.conditions[0].last_transition_time,
            Time(ts("2025-01-01T10:00:05Z")),
            "whole seconds"
        );
    }

    #[test]
    fn an_unchanged_world_gives_an_identical_status() {
        let first = status(
            None,
            Some(1),
            &a_plan(None),
            &[],
            false,
            ts("2025-01-01T10:00:00Z"),
        );
        let again = status(
            Some(&first),
            Some(1),
            &a_plan(None),
            &[],
            false,
            ts("2025-01-01T11:00:00Z"),
        );
        assert_eq!(first, again);
    }

    #[test]
    fn an_invalid_schedule_makes_ready_false_with_the_message() {
        let s = status(
            None,
            Some(1),
            &a_plan(Some("unknown time zone \"Mars/Base\"")),
            &[],
            false,
            ts("2025-01-01T10:00:00Z"),
        );
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", INVALID_SCHEDULE)
        );
        assert!(
            ready
                .message
                .contains("workflow etl: unknown time zone \"Mars/Base\""),
            "{}",
            ready.message
        );
    }

    #[test]
    fn suspended_is_ready_with_its_own_reason_unless_a_schedule_is_invalid() {
        let s = status(
            None,
            Some(1),
            &a_plan(None),
            &[],
            true,
            ts("2025-01-01T10:00:00Z"),
        );
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", SUSPENDED)
        );
        let s = status(
            None,
            Some(1),
            &a_plan(Some("bad")),
            &[],
            true,
            ts("2025-01-01T10:00:00Z"),
        );
        assert_eq!(condition_status(&s.conditions, READY), Some(false));
    }

    /// A refused request or one for a workflow not in the spec: `RunRequestsValid=False` naming each,
    /// while `Ready` stays true; gone once the annotations are fine.
    #[test]
    fn refused_run_requests_are_told_without_touching_ready() {
        let at = ts("2025-01-01T10:00:00Z");
        let mut p = a_plan(None);
        p.workflows[0].refused = Some(crate::plan::Refusal {
            value: "soon".into(),
            why: "\"soon\" is not an RFC 3339 time".into(),
        });
        p.unknown_requests = vec!["gone".into()];
        let s = status(None, Some(1), &p, &[], false, at);
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == RUN_REQUESTS_VALID)
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", INVALID_RUN_REQUEST)
        );
        assert_eq!(
            c.message,
            "run.berth.dev/etl: refused, \"soon\" is not an RFC 3339 time; set a new time to ask again; \
             run.berth.dev/gone: ignored, no workflow gone in the spec"
        );
        assert_eq!(condition_status(&s.conditions, READY), Some(true));
        assert_eq!(s.workflows[0].refused_run_request.as_deref(), Some("soon"));
        let fine = status(Some(&s), Some(1), &a_plan(None), &[], false, at);
        assert_eq!(condition_status(&fine.conditions, RUN_REQUESTS_VALID), Some(true));
        assert_eq!(fine.workflows[0].refused_run_request, None);
    }

    /// A run whose name another's Job holds: `Ready=False/NameConflict` naming it, ahead of an invalid
    /// schedule (which `SchedulesValid` still tells); gone again once nothing conflicts.
    #[test]
    fn a_name_conflict_makes_ready_false_until_it_is_over() {
        let taken = Error::Conflict("workflow etl: run etl-1xmi6-28928760 due at 2025-01-01T10:00:00Z not created: a Job of that name exists, controlled by Scheduler twin (uid u-2), not by this Scheduler".into());
        let at = ts("2025-01-01T10:00:00Z");
        let s = status(
            None,
            Some(1),
            &a_plan(Some("bad")),
            std::slice::from_ref(&taken),
            false,
            at,
        );
        let ready = s.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", "NameConflict")
        );
        assert_eq!(ready.message, taken.to_string());
        assert_eq!(condition_status(&s.conditions, SCHEDULES_VALID), Some(false));

        let again = status(Some(&s), Some(1), &a_plan(Some("bad")), &[taken], false, at);
        assert_eq!(again, s, "the same conflict writes nothing");
        let over = status(Some(&s), Some(1), &a_plan(None), &[], false, at);
        assert_eq!(condition_status(&over.conditions, READY), Some(true));
    }
}
