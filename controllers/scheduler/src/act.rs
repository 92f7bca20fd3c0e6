//! Carries a plan out: delete, then start queued runs, then create new ones; and tells what happened (not
//! what was planned) in Events.
//!
//! - **Create, not apply, for Jobs.** A run's name is deterministic, so `create` answering AlreadyExists
//!   means the name is taken; the Job holding it is read to see by whom ([`job::holder`]). This
//!   Scheduler's own Job is an earlier create whose answer was lost: done. Anyone else's is a conflict
//!   ([`Error::Conflict`]): the run was not made, so it is neither told as created nor recorded as
//!   scheduled, and the Scheduler says `Ready=False/NameConflict` with a Warning Event. Server-side apply
//!   would also "succeed" on an existing Job (or fail on its immutable template) and, worse, would bring
//!   back a run whose Job history pruning deleted.
//! - **A conflict does not fail the reconcile.** The kit's failure report rewrites the status as it was
//!   read before this reconcile (undoing what the other workflows just did), and its back-off would replace
//!   the wake-up at the next due time, making the other workflows late. So the conflict goes into the
//!   status and Events here, and the reconcile looks again soon ([`CONFLICT_RETRY`]).
//! - **A JSON merge patch of `spec.suspend: false` starts a queued run.** It touches exactly one mutable field;
//!   applying a whole Job would resend the immutable pod template, and a partial typed Job cannot be written
//!   without one. A 404 (the run was deleted meanwhile) means it did not start.
//! - **Deletion** is kit's background deletion (the garbage collector removes the pods); 404 is done.

use std::time::Duration;

use berth_api::{Scheduler, SchedulerStatus, condition_status, find_condition};
use berth_kit::conditions::{READY, Verdict};
use berth_kit::error::{is_conflict, is_not_found};
use berth_kit::{Context, Error, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::EventType;

use crate::job::{self, Holder};
use crate::plan::{Plan, Trigger};
use crate::status::{
    INVALID_RUN_REQUEST, RUN_REQUESTS_VALID, SCHEDULES_VALID, conflict_verdict, requests_verdict,
    schedules_verdict,
};

/// How soon a Scheduler whose run could not be created looks again: a few tries inside the default
/// starting deadline, in case the name is freed. Nothing berth watches says when a foreign Job goes.
pub const CONFLICT_RETRY: Duration = Duration::from_secs(60);

/// An Event to publish on the Scheduler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

/// What carrying out a plan did.
#[derive(Debug, Default)]
pub struct Carried {
    /// The plan without the runs that were not created or started ([`Plan::carried_out`]): what the
    /// status and Events tell.
    pub plan: Plan,
    /// Runs planned but not created: their names were taken.
    pub not_created: Vec<String>,
    /// Why, for each run whose name someone else holds; all [`Error::Conflict`].
    pub conflicts: Vec<Error>,
}

/// The Events a carried-out plan deserves. Each says something new: a schedule error or a name conflict
/// is reported when it first appears or changes, not on every reconcile.
#[must_use]
pub fn notes(carried: &Carried, old: Option<&SchedulerStatus>) -> Vec<Note> {
    let mut out = decision_notes(&carried.plan, old);
    out.extend(run_notes(carried, old));
    out
}

/// What the plan decided that only the status records (a bad schedule, missed and skipped due times): told
/// only when that status is written, since otherwise the next reconcile decides it again.
fn decision_notes(plan: &Plan, old: Option<&SchedulerStatus>) -> Vec<Note> {
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
    let requests = requests_verdict(plan);
    let already_said = find_condition(old_conditions, RUN_REQUESTS_VALID)
        .is_some_and(|c| c.status == "False" && c.message == requests.message);
    if !requests.ok && !already_said {
        out.push(Note {
            type_: EventType::Warning,
            reason: INVALID_RUN_REQUEST,
            note: requests.message,
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
        if let Some(at) = w.manual_forbidden {
            out.push(Note {
                type_: EventType::Normal,
                reason: "SkippedRun",
                note: format!("workflow {}: manual run requested at {at} skipped, the previous run is still active or queued (concurrencyPolicy Forbid)", w.name),
            });
        }
        if let Some(at) = w.manual_late {
            out.push(Note {
                type_: EventType::Warning,
                reason: "MissedRunRequest",
                note: format!("workflow {}: manual run requested at {at} not started, the request is older than startingDeadlineSeconds (operator down or Scheduler suspended)", w.name),
            });
        }
    }
    out
}

/// What happened to Jobs: conflicts, runs created, queued runs started.
fn run_notes(carried: &Carried, old: Option<&SchedulerStatus>) -> Vec<Note> {
    let mut out = vec![];
    if let Some(conflict) = conflict_verdict(&carried.conflicts) {
        let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
        let already_said = find_condition(old_conditions, READY)
            .is_some_and(|c| c.reason == conflict.reason && c.message == conflict.message);
        if !already_said {
            out.push(Note {
                type_: EventType::Warning,
                reason: carried.conflicts.first().map_or("NameConflict", Error::category),
                note: conflict.message,
            });
        }
    }
    for c in &carried.plan.create {
        let what = if c.suspended {
            "queued, every worker is busy"
        } else {
            "started"
        };
        let note = match c.trigger {
            Trigger::Schedule => format!(
                "workflow {}: run {} due at {} {what}",
                c.workflow, c.name, c.scheduled
            ),
            Trigger::Manual => format!(
                "workflow {}: manual run {} requested at {} {what}",
                c.workflow, c.name, c.scheduled
            ),
        };
        out.push(Note {
            type_: EventType::Normal,
            reason: "RunCreated",
            note,
        });
    }
    for name in &carried.plan.unsuspend {
        out.push(Note {
            type_: EventType::Normal,
            reason: "RunStarted",
            note: format!("queued run {name} started"),
        });
    }
    out
}

/// Runs made and started so far; what was not reached counts as not done.
#[derive(Debug, Default)]
struct Done {
    created: Vec<String>,
    started: Vec<String>,
    conflicts: Vec<Error>,
}

/// Deletes, starts and creates what `plan` says, then publishes the Events of what happened.
///
/// # Errors
/// The first API error (other than AlreadyExists on create and NotFound on start or delete); the Events of
/// what was done before it are published all the same, and the next reconcile plans again from what the
/// cluster then holds.
pub async fn act(
    ctx: &Context,
    scheduler: &Scheduler,
    api: &Api<Job>,
    plan: Plan,
    owner: &OwnerReference,
) -> Result<Carried> {
    let mut done = Done::default();
    let result = carry(ctx, scheduler, api, &plan, owner, &mut done).await;
    let not_created: Vec<String> = plan
        .create
        .iter()
        .map(|c| c.name.clone())
        .filter(|n| !done.created.contains(n))
        .collect();
    let carried = Carried {
        plan: plan.carried_out(&done.created, &done.started),
        not_created,
        conflicts: done.conflicts,
    };
    let old = scheduler.status.as_ref();
    let told = match result {
        Ok(()) => notes(&carried, old),
        // The status is not written: what only it records is decided again next time.
        Err(_) => run_notes(&carried, old),
    };
    let reference = scheduler.object_ref(&());
    for n in told {
        ctx.event(&reference, n.type_, n.reason, n.note).await;
    }
    result.map(|()| carried)
}

async fn carry(
    ctx: &Context,
    scheduler: &Scheduler,
    api: &Api<Job>,
    plan: &Plan,
    owner: &OwnerReference,
    done: &mut Done,
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
            Ok(_) => {
                tracing::info!(job = %name, "started queued run");
                done.started.push(name.clone());
            }
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
        let mut job = job::build(scheduler, workflow, run, owner.clone());
        if let Some(seal) = &ctx.settings.seal {
            seal.apply(&mut job.metadata, &owner.uid);
        }
        ctx.count_write("create");
        let holder = match api.create(&post, &job).await {
            Ok(_) => Holder::Us,
            Err(e) if is_conflict(&e) => {
                let existing = api.get_metadata_opt(&run.name).await?;
                job::holder(
                    existing.as_ref().map(|j| &j.metadata),
                    &owner.uid,
                    ctx.settings.seal.as_ref(),
                )
            }
            Err(e) => return Err(e.into()),
        };
        match holder {
            Holder::Us => {
                tracing::info!(job = %run.name, suspended = run.suspended, "created run");
                done.created.push(run.name.clone());
            }
            Holder::Leaving => tracing::debug!(job = %run.name, "run's name is being freed; trying later"),
            Holder::Other(why) => {
                let e = Error::Conflict(format!(
                    "workflow {}: run {} due at {} not created: {why}",
                    run.workflow, run.name, run.scheduled
                ));
                tracing::warn!(error = %e, category = e.category(), "run not created");
                done.conflicts.push(e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
