use berth_kit::conditions::conditions;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::plan::{RunToCreate, Trigger, WorkflowPlan, run_name};

fn reasons(notes: &[Note]) -> Vec<&'static str> {
    notes.iter().map(|n| n.reason).collect()
}

fn at() -> Timestamp {
    "2025-01-01T10:00:00Z".parse().unwrap()
}

fn to_create(workflow: &str, suspended: bool) -> RunToCreate {
    RunToCreate {
        name: run_name("ops-cron", workflow, at()),
        workflow: workflow.into(),
        scheduled: at(),
        suspended,
        trigger: Trigger::Schedule,
    }
}

fn all_done(plan: Plan) -> Carried {
    Carried {
        plan,
        ..Carried::default()
    }
}

fn conflict(run: &str) -> Error {
    Error::Conflict(format!(
        "workflow a: run {run} due at 2025-01-01T10:00:00Z not created: a Job of that name exists, controlled by Scheduler twin (uid u-2), not by this Scheduler"
    ))
}

#[test]
fn every_decision_is_told_once() {
    let plan = Plan {
        create: vec![to_create("a", false), to_create("b", true)],
        unsuspend: vec!["c-1".into()],
        workflows: vec![
            WorkflowPlan {
                name: "a".into(),
                newly_missed: 2,
                ..WorkflowPlan::default()
            },
            WorkflowPlan {
                name: "f".into(),
                forbidden: Some(at()),
                ..WorkflowPlan::default()
            },
        ],
        ..Plan::default()
    };
    let n = notes(&all_done(plan), None);
    assert_eq!(
        reasons(&n),
        [
            "MissedSchedule",
            "SkippedRun",
            "RunCreated",
            "RunCreated",
            "RunStarted"
        ]
    );
    assert_eq!(n[0].type_, EventType::Warning);
    assert!(
        n[0].note.contains("workflow a: 2 due run(s) missed"),
        "{}",
        n[0].note
    );
    assert!(n[3].note.contains("queued"), "{}", n[3].note);
    assert!(
        notes(&Carried::default(), None).is_empty(),
        "quiet when nothing happens"
    );
}

#[test]
fn a_schedule_error_is_reported_when_it_appears_or_changes() {
    let invalid = |msg: &str| {
        all_done(Plan {
            workflows: vec![WorkflowPlan {
                name: "a".into(),
                invalid: Some(msg.into()),
                ..WorkflowPlan::default()
            }],
            ..Plan::default()
        })
    };
    let first = notes(&invalid("bad cron"), None);
    assert_eq!(reasons(&first), ["InvalidSchedule"]);
    assert!(first[0].note.contains("workflow a: bad cron"));

    let now = Time(Timestamp::UNIX_EPOCH);
    let old = SchedulerStatus {
        conditions: conditions(
            &[],
            &[schedules_verdict(&invalid("bad cron").plan)],
            Some(1),
            &now,
        ),
        ..SchedulerStatus::default()
    };
    assert!(notes(&invalid("bad cron"), Some(&old)).is_empty(), "already said");
    assert_eq!(
        reasons(&notes(&invalid("other error"), Some(&old))),
        ["InvalidSchedule"]
    );
}

/// What became of a run request is told once, with the request time; a refused one as a Warning until
/// the status says it, again only when the refusal changes.
#[test]
fn run_requests_are_told_once() {
    let mut run = to_create("m", true);
    run.trigger = Trigger::Manual;
    let plan = Plan {
        create: vec![run],
        workflows: vec![
            WorkflowPlan {
                name: "f".into(),
                manual_forbidden: Some(at()),
                ..WorkflowPlan::default()
            },
            WorkflowPlan {
                name: "l".into(),
                manual_late: Some(at()),
                ..WorkflowPlan::default()
            },
        ],
        unknown_requests: vec!["gone".into()],
        ..Plan::default()
    };
    let n = notes(&all_done(plan.clone()), None);
    assert_eq!(
        reasons(&n),
        [
            "InvalidRunRequest",
            "SkippedRun",
            "MissedRunRequest",
            "RunCreated"
        ]
    );
    assert_eq!(n[0].type_, EventType::Warning);
    assert!(n[0].note.contains("run.berth.dev/gone"), "{}", n[0].note);
    assert!(
        n[1].note
            .contains("manual run requested at 2025-01-01T10:00:00Z skipped"),
        "{}",
        n[1].note
    );
    assert!(n[3].note.contains("manual run"), "{}", n[3].note);

    let old = SchedulerStatus {
        conditions: conditions(
            &[],
            &[requests_verdict(&plan)],
            Some(1),
            &Time(Timestamp::UNIX_EPOCH),
        ),
        ..SchedulerStatus::default()
    };
    let quiet = Plan {
        unknown_requests: plan.unknown_requests,
        ..Plan::default()
    };
    assert!(notes(&all_done(quiet), Some(&old)).is_empty(), "already said");
}

/// A run whose name someone else holds is a Warning, never a `RunCreated`; said again only when the
/// conflict changes, while the runs that were made are told as usual.
#[test]
fn a_run_not_created_is_a_conflict_not_a_creation() {
    let plan = Plan {
        create: vec![to_create("a", false), to_create("b", false)],
        running: 2,
        ..Plan::default()
    };
    let taken = plan.create[0].name.clone();
    let made = plan.create[1].name.clone();
    let carried = Carried {
        plan: plan.carried_out(std::slice::from_ref(&made), &[]),
        not_created: vec![taken.clone()],
        conflicts: vec![conflict(&taken)],
    };
    let n = notes(&carried, None);
    assert_eq!(reasons(&n), ["NameConflict", "RunCreated"]);
    assert_eq!(n[0].type_, EventType::Warning);
    assert!(
        n[0].note.contains(&taken) && n[0].note.contains("Scheduler twin"),
        "{}",
        n[0].note
    );
    assert!(n[1].note.contains(&made), "{}", n[1].note);

    let verdict = conflict_verdict(&carried.conflicts).unwrap();
    let old = SchedulerStatus {
        conditions: conditions(&[], &[verdict], Some(1), &Time(Timestamp::UNIX_EPOCH)),
        ..SchedulerStatus::default()
    };
    let again = Carried {
        plan: Plan::default(),
        not_created: vec![taken.clone()],
        conflicts: vec![conflict(&taken)],
    };
    assert!(notes(&again, Some(&old)).is_empty(), "already said");
    let another = Carried {
        conflicts: vec![conflict(&taken), conflict("a-other-1")],
        ..again
    };
    assert_eq!(reasons(&notes(&another, Some(&old))), ["NameConflict"]);
}

/// When a reconcile fails part-way, its status is not written: only what happened to Jobs is told.
#[test]
fn run_notes_tell_only_what_happened_to_jobs() {
    let plan = Plan {
        create: vec![to_create("a", false)],
        workflows: vec![WorkflowPlan {
            name: "a".into(),
            newly_missed: 1,
            ..WorkflowPlan::default()
        }],
        running: 1,
        ..Plan::default()
    };
    let made = plan.create[0].name.clone();
    let carried = all_done(plan.carried_out(&[made], &[]));
    assert_eq!(reasons(&run_notes(&carried, None)), ["RunCreated"]);
}
