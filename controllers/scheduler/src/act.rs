//! Carries a plan out: delete, then start queued runs, then create new ones; and tells about it in Events.
//!
//! - **Create, not apply, for Jobs.** A run's name is deterministic, so `create` answering AlreadyExists
//!   means the run was already made: done. Server-side apply would also "succeed" on an existing Job (or
//!   fail on its immutable template) and, worse, would bring back a run whose Job history pruning deleted.
//! - **A JSON merge patch of `spec.suspend: false` starts a queued run.** It touches exactly one mutable field;
//!   applying a whole Job would resend the immutable pod template, and a partial typed Job cannot be written
//!   without one. A 404 (the run was deleted meanwhile) is done.
//! - **Deletion** is kit's background deletion (the garbage collector removes the pods); 404 is done.

use berth_api::{Scheduler, SchedulerStatus, condition_status, find_condition};
use berth_kit::conditions::Verdict;
use berth_kit::error::{is_conflict, is_not_found};
use berth_kit::{Context, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use crate::job;
use crate::plan::Plan;
use crate::status::{SCHEDULES_VALID, schedules_verdict};

/// An Event to publish on the Scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

/// The Events a plan deserves. Each says something new: a schedule error is reported when it first
/// appears or changes, not on every reconcile.
#[must_use]
pub fn notes(plan: &Plan, old: Option<&SchedulerStatus>) -> Vec<Note> {
    let mut out = vec![];
    let schedules: Verdict = schedules_verdict(plan);
    let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let already_said = condition_status(old_conditions, SCHEDULES_VALID) == Some(false)
        && find_condition(old_conditions, SCHEDULES_VALID).is_some_and(|c| c.message == schedules.message);
    if !schedules.ok && !already_said {
        out.push(Note {
            type_: EventType::Warning,
            reason: "InvalidSchedule",
            note: schedules.message,
        });
    }
    for w in &plan.workflows {
        if w.newly_missed > 0 {
            out.push(Note {
                type_: EventType::Warning,
                reason: "MissedSchedule",
                note: format!(
                    "workflow {}: {} due run(s) missed (operator down or Scheduler suspended); only the latest due time, if within startingDeadlineSeconds, starts late",
                    w.name, w.newly_missed
                ),
            });
        }
        if let Some(at) = w.forbidden {
            out.push(Note {
                type_: EventType::Normal,
                reason: "SkippedRun",
                note: format!("workflow {}: run due at {at} skipped, the previous run is still active or queued (concurrencyPolicy Forbid)", w.name),
            });
        }
    }
    for c in &plan.create {
        let what = if c.suspended {
            "queued, every worker is busy"
        } else {
            "started"
        };
        out.push(Note {
            type_: EventType::Normal,
            reason: "RunCreated",
            note: format!(
                "workflow {}: run {} due at {} {what}",
                c.workflow,
                c.name(),
                c.scheduled
            ),
        });
    }
    for name in &plan.unsuspend {
        out.push(Note {
            type_: EventType::Normal,
            reason: "RunStarted",
            note: format!("queued run {name} started"),
        });
    }
    out
}

/// Deletes, starts and creates what `plan` says, then publishes its Events.
///
/// # Errors
/// The first API error (other than AlreadyExists on create and NotFound on start or delete); the next
/// reconcile plans again from what the cluster then holds.
pub async fn act(
    ctx: &Context,
    scheduler: &Scheduler,
    api: &Api<Job>,
    plan: &Plan,
    owner: &OwnerReference,
) -> Result<()> {
    // Deletions first: a replaced run gives its worker to the new one.
    for name in &plan.delete {
        ctx.delete(api, name).await?;
        tracing::debug!(job = %name, "deleted run");
    }
    let params = PatchParams {
        field_manager: Some(ctx.manager.clone()),
        ..PatchParams::default()
    };
    let resume = Patch::Merge(serde_json::json!({ "spec": { "suspend": false } }));
    for name in &plan.unsuspend {
        ctx.count_write("patch");
        match api.patch(name, &params, &resume).await {
            Ok(_) => tracing::info!(job = %name, "started queued run"),
            Err(e) if is_not_found(&e) => tracing::debug!(job = %name, "queued run is gone"),
            Err(e) => return Err(e.into()),
        }
    }
    let post = PostParams {
        field_manager: Some(ctx.manager.clone()),
        ..PostParams::default()
    };
    for run in &plan.create {
        let Some(workflow) = scheduler.spec.workflows.iter().find(|w| w.name == run.workflow) else {
            continue;
        };
        let job = job::build(scheduler, workflow, run, owner.clone());
        ctx.count_write("create");
        match api.create(&post, &job).await {
            Ok(_) => tracing::info!(job = %job.name_any(), suspended = run.suspended, "created run"),
            Err(e) if is_conflict(&e) => tracing::debug!(job = %job.name_any(), "run exists already"),
            Err(e) => return Err(e.into()),
        }
    }
    let reference = scheduler.object_ref(&());
    for n in notes(plan, scheduler.status.as_ref()) {
        ctx.event(&reference, n.type_, n.reason, n.note).await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use berth_kit::conditions::conditions;
    use jiff::Timestamp;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::plan::{RunToCreate, WorkflowPlan};

    fn reasons(notes: &[Note]) -> Vec<&'static str> {
        notes.iter().map(|n| n.reason).collect()
    }

    #[test]
    fn every_decision_is_told_once() {
        let at: Timestamp = "2025-01-01T10:00:00Z".parse().unwrap();
        let plan = Plan {
            create: vec![
                RunToCreate {
                    workflow: "a".into(),
                    scheduled: at,
                    suspended: false,
                },
                RunToCreate {
                    workflow: "b".into(),
                    scheduled: at,
                    suspended: true,
                },
            ],
            unsuspend: vec!["c-1".into()],
            workflows: vec![
                WorkflowPlan {
                    name: "a".into(),
                    newly_missed: 2,
                    ..WorkflowPlan::default()
                },
                WorkflowPlan {
                    name: "f".into(),
                    forbidden: Some(at),
                    ..WorkflowPlan::default()
                },
            ],
            ..Plan::default()
        };
        let n = notes(&plan, None);
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
            notes(&Plan::default(), None).is_empty(),
            "quiet when nothing happens"
        );
    }

    #[test]
    fn a_schedule_error_is_reported_when_it_appears_or_changes() {
        let invalid = |msg: &str| Plan {
            workflows: vec![WorkflowPlan {
                name: "a".into(),
                invalid: Some(msg.into()),
                ..WorkflowPlan::default()
            }],
            ..Plan::default()
        };
        let first = notes(&invalid("bad cron"), None);
        assert_eq!(reasons(&first), ["InvalidSchedule"]);
        assert!(first[0].note.contains("workflow a: bad cron"));

        let now = Time(Timestamp::UNIX_EPOCH);
        let old = SchedulerStatus {
            conditions: conditions(&[], &[schedules_verdict(&invalid("bad cron"))], Some(1), &now),
            ..SchedulerStatus::default()
        };
        assert!(notes(&invalid("bad cron"), Some(&old)).is_empty(), "already said");
        assert_eq!(
            reasons(&notes(&invalid("other error"), Some(&old))),
            ["InvalidSchedule"]
        );
    }
}
