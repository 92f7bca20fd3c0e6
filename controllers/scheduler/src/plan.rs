//! The scheduling decision, as a pure function of the clock, the spec, what the status remembers and the
//! Jobs that exist. Nothing here talks to the cluster, so every rule is unit-tested with an injected clock.
//!
//! Rules (the Scheduler's contract):
//! - **Due runs.** A workflow's runs come due at its cron times in its zone ([`crate::schedule`]). Each run is
//!   one Job named `<workflow>-<Scheduler tag>-<unix minutes of the due time>` ([`run_name`]); the newest
//!   due time a workflow has acted on (started, skipped by `Forbid`, or missed) is its `lastScheduleTime`.
//!   That and the Jobs' scheduled-time labels are the memory of what was done, so a restarted operator never
//!   starts a run twice and never brings back a run whose Job was pruned. A run is known by its labels and
//!   controller, never by its name: Jobs named the way berth once named them still count.
//! - **Carried out, not planned.** A run whose Job cannot be created (its name is taken by a Job that is
//!   not this Scheduler's) was not acted on: [`Plan::carried_out`] takes it back out, so the status says
//!   what happened and the next reconcile decides that due time again.
//! - **Missed runs.** When the latest due time is at most `startingDeadlineSeconds` late (default
//!   [`DEFAULT_STARTING_DEADLINE_SECONDS`]), it starts, once; earlier due times since the last known one are
//!   skipped, and so is the latest when it is later than that. Skipped due times are added to `missed`
//!   (counted up to [`crate::schedule::COUNT_LIMIT`] per gap). Never a burst of catch-up runs.
//! - **A workflow's first due time.** With nothing remembered, due times count from the Scheduler's
//!   creation, except for a workflow added to a Scheduler that already has a status: its earlier due times
//!   are recorded as past (`lastScheduleTime`), neither started nor missed.
//! - **Workers.** At most `workers` runs are active across all workflows. A run due while every worker is
//!   busy is created suspended: that is the queue, kept in the cluster. Queued runs start oldest-due first
//!   (ties in workflow order) as workers free up. Runs still active when `workers` is lowered keep running.
//! - **concurrencyPolicy**, looking at the workflow's active and queued runs: `Allow` starts the new run
//!   anyway, `Forbid` skips it (no Job, not counted as missed), `Replace` deletes them and starts the new.
//! - **suspend** starts nothing, un-suspends nothing and plans no wake-up; history is still pruned. On resume
//!   the missed-run rule applies to the due times that passed meanwhile.
//! - **History.** Per workflow the newest `successfulJobsHistoryLimit` succeeded and `failedJobsHistoryLimit`
//!   failed runs are kept (newest by due time); older ones are deleted.
//! - **Workflows removed from the spec** lose their queued and finished runs; active ones finish.
//! - **Invalid schedule or zone**: that workflow starts no scheduled run and reports the error; the others
//!   go on. A run asked for by hand needs no schedule, so it still starts.
//! - **Runs asked for by hand** ([`berth_api::RUN_REQUEST_PREFIX`]`<workflow>` = the RFC 3339 time of the
//!   request, truncated to whole seconds; `kubectl berth run`). A request newer than the workflow's
//!   `lastManualRequest` (and than every manual run's Job) is decided once, like a due run at the request
//!   time: queued behind busy workers and started oldest-due first with the scheduled runs, under the
//!   workflow's `concurrencyPolicy`, counted in its history, named by [`manual_run_name`] and labelled
//!   `berth.dev/trigger=manual`. Its memory is `lastManualRequest` plus the manual Jobs' due-time labels,
//!   never `lastScheduleTime`: a manual run neither stands in for a due time nor moves the cron memory. A
//!   request later than the starting deadline when decided starts nothing (reported), so a status lost
//!   together with the pruned Job, or a restored backup, cannot start an old request again. A request the
//!   schedule's own run of this plan competes with waits for the next plan, where that run is a Job the
//!   policy can look at. While suspended a request waits; on resume it is decided (deadline included).
//!   Refused, with the value remembered in `refusedRunRequest` so it never starts late: a value that is
//!   not an RFC 3339 time, and a time more than [`MAX_CLOCK_SKEW`] ahead of the clock. Requests for a
//!   workflow not in the spec start nothing. One run per request, to the second: a second request in the
//!   same minute is a second run (the name carries seconds); two values written before the operator reads
//!   the first are one request, the newer.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use berth_api::{ConcurrencyPolicy, RUN_REQUEST_PREFIX, SchedulerSpec, Workflow, WorkflowStatus};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::schedule::Schedule;

/// `startingDeadlineSeconds` when a workflow does not set it.
pub const DEFAULT_STARTING_DEADLINE_SECONDS: i64 = 300;
/// How far ahead of the operator's clock a run request may be dated: the requester's clock may run a
/// little fast, but a request from further ahead is no request for a run now.
pub const MAX_CLOCK_SKEW: SignedDuration = SignedDuration::from_secs(60);

/// What started a run (its Job's [`berth_api::TRIGGER_LABEL`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Trigger {
    /// Its workflow's schedule; also every Job made before runs carried the label.
    #[default]
    Schedule,
    /// A run request annotation; its due time is the request's time.
    Manual,
}

impl Trigger {
    /// The label value.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Self::Schedule => berth_api::TRIGGER_SCHEDULE,
            Self::Manual => berth_api::TRIGGER_MANUAL,
        }
    }
}

/// Where a run is in its life, as far as scheduling cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Suspended and not finished: waiting for a worker.
    Queued,
    /// Not suspended and not finished: holds a worker.
    Active,
    Succeeded,
    Failed,
}

/// The planner's view of one existing Job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub name: String,
    pub workflow: String,
    /// The due time; for a manual run, the time of its request.
    pub scheduled: Timestamp,
    pub state: RunState,
    /// When it succeeded or failed.
    pub finished: Option<Timestamp>,
    pub trigger: Trigger,
}

/// A Job to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunToCreate {
    /// The Job's name ([`run_name`]).
    pub name: String,
    pub workflow: String,
    /// The due time; for a manual run, the time of its request.
    pub scheduled: Timestamp,
    /// Created suspended: queued until a worker frees up.
    pub suspended: bool,
    pub trigger: Trigger,
}

/// What the planner concluded for one workflow of the spec; the status is made from it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkflowPlan {
    pub name: String,
    /// The newest due time acted on (started, skipped by `Forbid`, or missed).
    pub last_schedule: Option<Timestamp>,
    pub last_successful: Option<Timestamp>,
    pub last_failed: Option<Timestamp>,
    /// The newest run's name.
    pub last_run: Option<String>,
    /// Skipped due times, all told (the previous count plus `newly_missed`).
    pub missed: i32,
    /// Due times skipped by this plan because they were too late.
    pub newly_missed: u32,
    /// A due time skipped by this plan under `concurrencyPolicy: Forbid`.
    pub forbidden: Option<Timestamp>,
    /// Why the schedule or time zone cannot be used.
    pub invalid: Option<String>,
    /// The newest run request acted on (`lastManualRequest`).
    pub last_manual_request: Option<Timestamp>,
    /// A run request this plan skipped under `concurrencyPolicy: Forbid`.
    pub manual_forbidden: Option<Timestamp>,
    /// A run request this plan found later than the starting deadline.
    pub manual_late: Option<Timestamp>,
    /// The workflow's run request, refused.
    pub refused: Option<Refusal>,
    /// What the status keeps if this plan's run of the workflow is not created; set with that run.
    pub undecided: Option<Undecided>,
}

/// A run request annotation's value that starts nothing, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub value: String,
    pub why: String,
}

/// A workflow's status as it was before the plan decided its due times: what stays when the run it
/// decided on cannot be made. The missed due times go back too, so the next plan counts them once.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Undecided {
    pub last_schedule: Option<Timestamp>,
    pub missed: i32,
    pub last_manual_request: Option<Timestamp>,
    pub last_run: Option<String>,
}

/// Everything the reconcile does about runs, in one value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub create: Vec<RunToCreate>,
    /// Queued runs to start, oldest-due first.
    pub unsuspend: Vec<String>,
    /// Runs to delete (replaced, pruned from history, or of removed workflows).
    pub delete: Vec<String>,
    /// One per workflow of the spec, in spec order.
    pub workflows: Vec<WorkflowPlan>,
    /// Active runs once the plan is carried out.
    pub running: i32,
    /// Queued runs once the plan is carried out.
    pub queued: i32,
    /// The next due time of any workflow; `None` when suspended or nothing is scheduled.
    pub next_wakeup: Option<Timestamp>,
    /// Workflows named by run request annotations but not in the spec.
    pub unknown_requests: Vec<String>,
}

impl Plan {
    /// The plan as it was carried out: of its runs to create, only those in `created` were; of its queued
    /// runs to start, only those in `started` did (the rest were gone). A workflow whose run was not created
    /// keeps the status it had ([`Undecided`]), so the next plan decides that due time again (another
    /// attempt while inside the starting deadline, a missed run after it); the counts lose what did not
    /// happen.
    #[must_use]
    pub fn carried_out(mut self, created: &[String], started: &[String]) -> Self {
        let (made, unmade): (Vec<RunToCreate>, Vec<RunToCreate>) =
            self.create.into_iter().partition(|c| created.contains(&c.name));
        self.create = made;
        for run in unmade {
            let count = if run.suspended {
                &mut self.queued
            } else {
                &mut self.running
            };
            *count = count.saturating_sub(1);
            let workflow = self.workflows.iter_mut().find(|w| w.name == run.workflow);
            if let Some(w) = workflow
                && let Some(u) = w.undecided.take()
            {
                // A plan makes at most one run per workflow, so only that run's memory goes back.
                match run.trigger {
                    Trigger::Schedule => {
                        w.last_schedule = u.last_schedule;
                        w.missed = u.missed;
                        w.newly_missed = 0;
                    }
                    Trigger::Manual => w.last_manual_request = u.last_manual_request,
                }
                w.last_run = u.last_run;
            }
        }
        let before = self.unsuspend.len();
        self.unsuspend.retain(|n| started.contains(n));
        let gone = i32::try_from(before - self.unsuspend.len()).unwrap_or(i32::MAX);
        self.running = self.running.saturating_sub(gone);
        self
    }
}

/// What the planner reads.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub now: Timestamp,
    /// The Scheduler's name, part of every run's name.
    pub scheduler: &'a str,
    pub spec: &'a SchedulerSpec,
    /// The Scheduler's creation time.
    pub created: Option<Timestamp>,
    /// Whether the Scheduler has been reconciled before (its status has an observedGeneration).
    pub observed: bool,
    /// The per-workflow status as it stands.
    pub previous: &'a [WorkflowStatus],
    /// The Scheduler's Jobs, not counting those already being deleted.
    pub runs: &'a [Run],
    /// The Scheduler's annotations, where the run requests are.
    pub annotations: &'a BTreeMap<String, String>,
}

/// Characters of the Scheduler tag in a run's name.
pub const TAG_LEN: usize = 5;
/// The longest workflow name: the CRD's limit (`berth_api::Workflow::name`), checked against the run name
/// budget by a test.
pub const MAX_WORKFLOW_NAME: usize = 40;
/// Digits of a due time in Unix minutes, until the year 2160.
const MINUTE_DIGITS: usize = 8;
/// Digits of a request time in Unix seconds, until the year 2160.
const SECOND_DIGITS: usize = 10;
/// Marks a manual run's name: its time is in seconds, and never names the same Job as a due minute.
const MANUAL_MARK: char = 'm';
/// The longest scheduled run name; the pods' names, `<job>-<5 random>`, fit a DNS label too (61), uncut.
pub const MAX_SCHEDULED_RUN_NAME: usize = MAX_WORKFLOW_NAME + 1 + TAG_LEN + 1 + MINUTE_DIGITS;
/// The longest run name (a manual one): a Job name goes into its pods' `batch.kubernetes.io/job-name`
/// label, a DNS label of at most 63 characters. The API server cuts a generated pod name's base to 58, so
/// only the pods of a manual run of a 40-character workflow lose the `-` before their random suffix.
pub const MAX_RUN_NAME: usize = MAX_WORKFLOW_NAME + 1 + TAG_LEN + 1 + 1 + SECOND_DIGITS;
const _: () = assert!(MAX_SCHEDULED_RUN_NAME <= 61 && MAX_RUN_NAME <= 63);

/// A run's name: the workflow, the Scheduler's [`tag`] and the due time in minutes since the Unix epoch,
/// at most [`MAX_SCHEDULED_RUN_NAME`] (55) characters. The tag keeps two Schedulers of a namespace with a workflow of
/// the same name from naming their runs alike: without it the second one's create answers AlreadyExists
/// and its run is silently the first one's.
#[must_use]
pub fn run_name(scheduler: &str, workflow: &str, scheduled: Timestamp) -> String {
    format!(
        "{workflow}-{}-{}",
        tag(scheduler),
        scheduled.as_second().div_euclid(60)
    )
}

/// A manual run's name: the workflow, the Scheduler's [`tag`], and `m` with the request time in seconds
/// since the Unix epoch, at most [`MAX_RUN_NAME`] (58) characters. Seconds, so that two requests in one
/// minute are two runs; the mark, so that no request time names the Job of a due minute.
#[must_use]
pub fn manual_run_name(scheduler: &str, workflow: &str, requested: Timestamp) -> String {
    format!(
        "{workflow}-{}-{MANUAL_MARK}{}",
        tag(scheduler),
        requested.as_second()
    )
}

/// [`TAG_LEN`] base-36 characters of the 64-bit FNV-1a hash of the Scheduler's name. FNV-1a because a run's
/// name must come out the same in every berth build, which std's `DefaultHasher` does not promise. Two
/// Scheduler names share a tag about once in 60 million pairs; then creating a run reports the conflict.
#[must_use]
pub fn tag(scheduler: &str) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut h = fnv1a(scheduler.as_bytes());
    let mut out = [b'0'; TAG_LEN];
    for c in out.iter_mut().rev() {
        *c = DIGITS[usize::try_from(h % 36).unwrap_or(0)];
        h /= 36;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// The due time encoded in a run's name, when `name` is a run of `workflow` of `scheduler`: named as
/// [`run_name`] or [`manual_run_name`] name it, or `<workflow>-<minutes>` as berth named runs before the
/// tag (a status written then still names one as its last run).
fn run_name_time(scheduler: &str, workflow: &str, name: &str) -> Option<Timestamp> {
    let digits = |s: &str| -> Option<i64> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    let rest = name.strip_prefix(workflow)?.strip_prefix('-')?;
    let tagged = rest
        .strip_prefix(tag(scheduler).as_str())
        .and_then(|r| r.strip_prefix('-'));
    if let Some(seconds) = tagged.and_then(|r| r.strip_prefix(MANUAL_MARK)) {
        return Timestamp::from_second(digits(seconds)?).ok();
    }
    let minutes = digits(tagged.unwrap_or(rest))?;
    Timestamp::from_second(minutes.checked_mul(60)?).ok()
}

fn is_pending(state: RunState) -> bool {
    matches!(state, RunState::Queued | RunState::Active)
}

/// Decides what to create, start and delete, and what each workflow's status becomes.
#[must_use]
pub fn plan(input: &Input<'_>) -> Plan {
    let Input { spec, runs, .. } = *input;
    let mut out = Plan::default();
    let mut delete = BTreeSet::new();

    for wf in &spec.workflows {
        let own: Vec<&Run> = runs.iter().filter(|r| r.workflow == wf.name).collect();
        let (w, run) = decide(input, wf, &own, &mut delete, &mut out.next_wakeup);
        out.create.extend(run);
        delete.extend(history(spec, &own));
        out.workflows.push(w);
    }
    // Runs of workflows no longer in the spec: active ones finish, the rest go.
    delete.extend(
        runs.iter()
            .filter(|r| r.state != RunState::Active && !spec.workflows.iter().any(|w| w.name == r.workflow))
            .map(|r| r.name.clone()),
    );
    out.delete = delete.into_iter().collect();
    out.unknown_requests = input
        .annotations
        .keys()
        .filter_map(|k| k.strip_prefix(RUN_REQUEST_PREFIX))
        .filter(|name| !spec.workflows.iter().any(|w| w.name == *name))
        .map(str::to_owned)
        .collect();
    assign_workers(spec, runs, &mut out);
    out
}

/// One workflow: its due run (if one starts), the runs `Replace` deletes, its status, its next due time.
fn decide(
    input: &Input<'_>,
    wf: &Workflow,
    own: &[&Run],
    delete: &mut BTreeSet<String>,
    next_wakeup: &mut Option<Timestamp>,
) -> (WorkflowPlan, Option<RunToCreate>) {
    let Input {
        now,
        scheduler,
        spec,
        created,
        observed,
        previous,
        ..
    } = *input;
    let prev = previous.iter().find(|p| p.name == wf.name);
    let remembered = prev.and_then(|p| p.last_schedule_time.as_ref()).map(|t| t.0);
    let scheduled = |r: &&&Run| r.trigger == Trigger::Schedule;
    let before = remembered.max(own.iter().filter(scheduled).map(|r| r.scheduled).max());
    let mut w = WorkflowPlan {
        name: wf.name.clone(),
        last_schedule: before,
        missed: prev.map_or(0, |p| p.missed),
        ..WorkflowPlan::default()
    };
    let mut run = None;

    match Schedule::parse(&wf.schedule, wf.time_zone.as_deref()) {
        Err(message) => w.invalid = Some(message),
        Ok(schedule) => {
            if !spec.suspend {
                *next_wakeup = next_wakeup.iter().copied().chain(schedule.next_after(now)).min();
            }
            // Added to a Scheduler already running: what fell due before it existed is past.
            let added = w.last_schedule.is_none() && observed && prev.is_none();
            let since = w.last_schedule.or(created).unwrap_or(now);
            // While suspended nothing is decided, so nothing is looked up.
            let due = (added || !spec.suspend)
                .then(|| schedule.due_between(since, now))
                .flatten();
            if let Some(due) = due {
                w.last_schedule = Some(due.latest);
                if !added {
                    let deadline = SignedDuration::from_secs(
                        wf.starting_deadline_seconds
                            .unwrap_or(DEFAULT_STARTING_DEADLINE_SECONDS),
                    );
                    let pending: Vec<&&Run> = own.iter().filter(|r| is_pending(r.state)).collect();
                    w.newly_missed = due.earlier;
                    if now.duration_since(due.latest) > deadline {
                        w.newly_missed = w.newly_missed.saturating_add(1);
                    } else if own.iter().filter(scheduled).any(|r| r.scheduled == due.latest) {
                        // Already there (the last schedule normally covers it).
                    } else if wf.concurrency_policy == ConcurrencyPolicy::Forbid && !pending.is_empty() {
                        w.forbidden = Some(due.latest);
                    } else {
                        if wf.concurrency_policy == ConcurrencyPolicy::Replace {
                            delete.extend(pending.iter().map(|r| r.name.clone()));
                        }
                        // Suspended until `assign_workers` finds it a worker.
                        run = Some(RunToCreate {
                            name: run_name(scheduler, &wf.name, due.latest),
                            workflow: wf.name.clone(),
                            scheduled: due.latest,
                            suspended: true,
                            trigger: Trigger::Schedule,
                        });
                    }
                    w.missed = w
                        .missed
                        .saturating_add(i32::try_from(w.newly_missed).unwrap_or(i32::MAX));
                }
            }
        }
    }

    let acted = prev
        .and_then(|p| p.last_manual_request.as_ref())
        .map(|t| t.0)
        .max(
            own.iter()
                .filter(|r| r.trigger == Trigger::Manual)
                .map(|r| r.scheduled)
                .max(),
        );
    w.last_manual_request = acted;
    // A request waiting for the schedule's run is decided again when that run's Job is created: its watch
    // event wakes the Scheduler.
    let run = run.or_else(|| request(input, wf, own, acted, delete, &mut w));

    let last_finished = |state: RunState, remembered: Option<&Time>| {
        own.iter()
            .filter(|r| r.state == state)
            .filter_map(|r| r.finished)
            .chain(remembered.map(|t| t.0))
            .max()
    };
    w.last_successful = last_finished(
        RunState::Succeeded,
        prev.and_then(|p| p.last_successful_time.as_ref()),
    );
    w.last_failed = last_finished(RunState::Failed, prev.and_then(|p| p.last_failed_time.as_ref()));
    // The newest run: just created, still there, or remembered (its Job may have been pruned).
    let newest = |created: Option<&RunToCreate>| {
        created
            .map(|c| (c.scheduled, c.name.clone()))
            .into_iter()
            .chain(own.iter().map(|r| (r.scheduled, r.name.clone())))
            .chain(
                prev.and_then(|p| p.last_run.clone())
                    .and_then(|n| run_name_time(scheduler, &wf.name, &n).map(|t| (t, n))),
            )
            .max()
            .map(|(_, n)| n)
            .or_else(|| prev.and_then(|p| p.last_run.clone()))
    };
    w.last_run = newest(run.as_ref());
    w.undecided = run.is_some().then(|| Undecided {
        last_schedule: before,
        missed: prev.map_or(0, |p| p.missed),
        last_manual_request: acted,
        last_run: newest(None),
    });
    (w, run)
}

/// The manual run the workflow's run request starts, if any, when the schedule starts none in this plan
/// (a request competing with it waits for the next plan). `acted` is the newest request acted on; what
/// becomes of the request goes into `w`.
fn request(
    input: &Input<'_>,
    wf: &Workflow,
    own: &[&Run],
    acted: Option<Timestamp>,
    delete: &mut BTreeSet<String>,
    w: &mut WorkflowPlan,
) -> Option<RunToCreate> {
    let Input {
        now,
        scheduler,
        spec,
        previous,
        annotations,
        ..
    } = *input;
    let value = annotations.get(&format!("{RUN_REQUEST_PREFIX}{}", wf.name))?;
    let refuse = |why: String| {
        Some(Refusal {
            value: value.clone(),
            why,
        })
    };
    // Whole seconds: the status keeps no more, and a finer request would look new at every reconcile.
    let Some(at) = value
        .parse::<Timestamp>()
        .ok()
        .and_then(|t| Timestamp::from_second(t.as_second()).ok())
    else {
        w.refused = refuse(format!("{value:?} is not an RFC 3339 time"));
        return None;
    };
    let refused_before = previous
        .iter()
        .find(|p| p.name == wf.name)
        .and_then(|p| p.refused_run_request.as_deref());
    if refused_before == Some(value.as_str()) {
        w.refused = refuse(format!("{at} was ahead of the operator's clock when it was read"));
        return None;
    }
    if acted.is_some_and(|a| at <= a) {
        return None;
    }
    if at.duration_since(now) > MAX_CLOCK_SKEW {
        w.refused = refuse(format!(
            "{at} is more than {} s ahead of the operator's clock ({now})",
            MAX_CLOCK_SKEW.as_secs()
        ));
        return None;
    }
    if spec.suspend {
        return None;
    }
    w.last_manual_request = Some(at);
    let deadline = SignedDuration::from_secs(
        wf.starting_deadline_seconds
            .unwrap_or(DEFAULT_STARTING_DEADLINE_SECONDS),
    );
    if now.duration_since(at) > deadline {
        w.manual_late = Some(at);
        return None;
    }
    let pending: Vec<String> = own
        .iter()
        .filter(|r| is_pending(r.state) && !delete.contains(&r.name))
        .map(|r| r.name.clone())
        .collect();
    match wf.concurrency_policy {
        ConcurrencyPolicy::Forbid if !pending.is_empty() => {
            w.manual_forbidden = Some(at);
            return None;
        }
        ConcurrencyPolicy::Replace => delete.extend(pending),
        _ => {}
    }
    Some(RunToCreate {
        name: manual_run_name(scheduler, &wf.name, at),
        workflow: wf.name.clone(),
        scheduled: at,
        suspended: true,
        trigger: Trigger::Manual,
    })
}

/// Finished runs beyond the history limits, oldest first to go.
fn history(spec: &SchedulerSpec, own: &[&Run]) -> Vec<String> {
    let mut out = vec![];
    for (state, limit) in [
        (RunState::Succeeded, spec.successful_jobs_history_limit),
        (RunState::Failed, spec.failed_jobs_history_limit),
    ] {
        let mut finished: Vec<&&Run> = own.iter().filter(|r| r.state == state).collect();
        finished.sort_by_key(|r| std::cmp::Reverse(r.scheduled));
        let keep = usize::try_from(limit).unwrap_or(0);
        out.extend(finished.iter().skip(keep).map(|r| r.name.clone()));
    }
    out
}

/// Gives free workers to waiting runs (queued ones and those about to be created), oldest-due first and,
/// for equal due times, in workflow order; counts what runs and waits afterwards.
fn assign_workers(spec: &SchedulerSpec, runs: &[Run], out: &mut Plan) {
    let order: HashMap<&str, usize> = spec
        .workflows
        .iter()
        .enumerate()
        .map(|(i, w)| (w.name.as_str(), i))
        .collect();
    let rank = |workflow: &str| order.get(workflow).copied().unwrap_or(usize::MAX);
    let kept = |r: &&Run| !out.delete.contains(&r.name);
    let active = runs
        .iter()
        .filter(|r| r.state == RunState::Active)
        .filter(kept)
        .count();
    let mut waiting: Vec<(Timestamp, usize, String, Option<usize>)> = runs
        .iter()
        .filter(|r| r.state == RunState::Queued)
        .filter(kept)
        .map(|r| (r.scheduled, rank(&r.workflow), r.name.clone(), None))
        .chain(
            out.create
                .iter()
                .enumerate()
                .map(|(i, c)| (c.scheduled, rank(&c.workflow), c.name.clone(), Some(i))),
        )
        .collect();
    waiting.sort();

    let workers = usize::try_from(spec.workers).unwrap_or(0);
    let free = if spec.suspend {
        0
    } else {
        workers.saturating_sub(active)
    };
    let started = free.min(waiting.len());
    for (_, _, name, to_create) in waiting.iter().take(started) {
        match to_create.and_then(|i| out.create.get_mut(i)) {
            Some(c) => c.suspended = false,
            None => out.unsuspend.push(name.clone()),
        }
    }
    out.running = i32::try_from(active + started).unwrap_or(i32::MAX);
    out.queued = i32::try_from(waiting.len() - started).unwrap_or(i32::MAX);
}

#[cfg(test)]
mod tests;
