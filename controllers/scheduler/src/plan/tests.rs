use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;

/// The Scheduler every test plans for (its tag is `1xmi6`).
const SCHEDULER: &str = "ops-cron";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn wf(name: &str, schedule: &str) -> Workflow {
    Workflow {
        name: name.into(),
        schedule: schedule.into(),
        image: "busybox".into(),
        ..Workflow::default()
    }
}

fn spec(workers: i32, workflows: Vec<Workflow>) -> SchedulerSpec {
    SchedulerSpec {
        workers,
        workflows,
        successful_jobs_history_limit: 3,
        failed_jobs_history_limit: 1,
        ..SchedulerSpec::default()
    }
}

fn run(workflow: &str, scheduled: &str, state: RunState) -> Run {
    let scheduled = ts(scheduled);
    let finished = matches!(state, RunState::Succeeded | RunState::Failed)
        .then(|| scheduled + SignedDuration::from_secs(30));
    Run {
        name: run_name(SCHEDULER, workflow, scheduled),
        workflow: workflow.into(),
        scheduled,
        state,
        finished,
        trigger: Trigger::Schedule,
    }
}

fn remembered(name: &str, last: &str) -> WorkflowStatus {
    WorkflowStatus {
        name: name.into(),
        last_schedule_time: Some(Time(ts(last))),
        ..WorkflowStatus::default()
    }
}

/// Plans at `now` for a Scheduler created at 09:00 that has been reconciled before.
fn plan_at(now: &str, spec: &SchedulerSpec, previous: &[WorkflowStatus], runs: &[Run]) -> Plan {
    plan(&Input {
        now: ts(now),
        scheduler: SCHEDULER,
        spec,
        created: Some(ts("2025-01-01T09:00:00Z")),
        observed: true,
        previous,
        runs,
        annotations: &BTreeMap::new(),
    })
}

fn created(p: &Plan) -> Vec<(String, bool)> {
    p.create.iter().map(|c| (c.name.clone(), c.suspended)).collect()
}

/// Carries a plan out on a list of runs, as the cluster would (Jobs created, started, deleted).
fn apply(runs: &[Run], p: &Plan) -> Vec<Run> {
    let mut out: Vec<Run> = runs
        .iter()
        .filter(|r| !p.delete.contains(&r.name))
        .cloned()
        .collect();
    for r in &mut out {
        if p.unsuspend.contains(&r.name) {
            r.state = RunState::Active;
        }
    }
    out.extend(p.create.iter().map(|c| Run {
        name: c.name.clone(),
        workflow: c.workflow.clone(),
        scheduled: c.scheduled,
        state: if c.suspended {
            RunState::Queued
        } else {
            RunState::Active
        },
        finished: None,
        trigger: c.trigger,
    }));
    out
}

/// The status the reconcile would write, as the next plan reads it.
fn remember(p: &Plan) -> Vec<WorkflowStatus> {
    p.workflows
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
        .collect()
}

/// A DNS label (RFC 1123), as a name in a label value must be.
fn is_dns_label(s: &str) -> bool {
    let ok = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| ok(b) || b == b'-')
        && s.bytes().next().is_some_and(ok)
        && s.bytes().last().is_some_and(ok)
}

#[test]
fn run_names_carry_the_workflow_the_scheduler_tag_and_the_minute() {
    let t = ts("2025-01-01T10:05:00Z");
    assert_eq!(run_name(SCHEDULER, "backup", t), "backup-1xmi6-28928765");
    assert_eq!(tag(SCHEDULER), "1xmi6");
    // FNV-1a's published test vectors: the tag cannot drift with a Rust or berth upgrade.
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn two_schedulers_name_runs_of_the_same_workflow_apart() {
    let t = ts("2025-01-01T10:05:00Z");
    let long = "s".repeat(253);
    let pairs = [
        ("left", "right"),
        (SCHEDULER, "ops-cron-2"),
        ("a", "b"),
        ("ab", "ba"),
        (long.as_str(), &long[1..]),
    ];
    for (one, other) in pairs {
        let (x, y) = (run_name(one, "sync", t), run_name(other, "sync", t));
        assert_ne!(x, y, "{one} and {other}");
        assert!(is_dns_label(&x) && is_dns_label(&y), "{x} {y}");
    }
    let tags: std::collections::HashSet<String> = (0..2000).map(|i| tag(&format!("scheduler-{i}"))).collect();
    assert_eq!(tags.len(), 2000, "no two of 2000 Scheduler names share a tag");
    assert!(tags.iter().all(|t| t.len() == TAG_LEN && is_dns_label(t)));
}

#[test]
fn the_longest_run_name_fits_a_dns_label() {
    let longest = "w".repeat(MAX_WORKFLOW_NAME);
    let last_minute = ts("2159-12-31T23:59:00Z");
    let name = run_name(&"s".repeat(253), &longest, last_minute);
    assert_eq!(name.len(), MAX_SCHEDULED_RUN_NAME);
    assert!(MAX_SCHEDULED_RUN_NAME <= 61 && is_dns_label(&name), "{name}");
    let last_second = ts("2159-12-31T23:59:59Z");
    let manual = manual_run_name(&"s".repeat(253), &longest, last_second);
    assert_eq!(manual.len(), MAX_RUN_NAME);
    assert!(MAX_RUN_NAME <= 63 && is_dns_label(&manual), "{manual}");
}

#[test]
fn manual_run_names_carry_seconds_and_never_name_a_due_minute() {
    let t = ts("2025-01-01T10:05:00Z");
    assert_eq!(
        manual_run_name(SCHEDULER, "backup", t),
        "backup-1xmi6-m1735725900"
    );
    assert_ne!(
        manual_run_name(SCHEDULER, "backup", t),
        run_name(SCHEDULER, "backup", t)
    );
    let next = t + SignedDuration::from_secs(7);
    assert_ne!(
        manual_run_name(SCHEDULER, "backup", t),
        manual_run_name(SCHEDULER, "backup", next)
    );
    for at in [t, next] {
        let name = manual_run_name(SCHEDULER, "backup", at);
        assert_eq!(run_name_time(SCHEDULER, "backup", &name), Some(at), "{name}");
    }
    for name in ["backup-1xmi6-m", "backup-1xmi6-mx1", "backup-1xmi6-m-1"] {
        assert_eq!(run_name_time(SCHEDULER, "backup", name), None, "{name}");
    }
}

/// The budget holds only while the CRD admits no longer workflow name than [`MAX_WORKFLOW_NAME`].
#[test]
fn the_crd_limits_workflow_names_to_the_budget() {
    use kube::CustomResourceExt;
    let crd = serde_json::to_value(berth_api::Scheduler::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let name = &spec["properties"]["workflows"]["items"]["properties"]["name"];
    assert_eq!(
        name["maxLength"].as_u64(),
        Some(MAX_WORKFLOW_NAME as u64),
        "{name}"
    );
    let rules = name["x-kubernetes-validations"].to_string();
    assert!(
        rules.contains(&format!("size(self) <= {MAX_WORKFLOW_NAME}")),
        "{rules}"
    );
}

#[test]
fn the_due_time_comes_back_from_a_run_name() {
    for t in [
        "1970-01-01T00:00:00Z",
        "2025-01-01T10:05:00Z",
        "2025-10-26T01:30:00Z",
        "2159-12-31T23:59:00Z",
    ] {
        let t = ts(t);
        for workflow in ["backup", "a", "nightly-report-2"] {
            let name = run_name(SCHEDULER, workflow, t);
            assert_eq!(run_name_time(SCHEDULER, workflow, &name), Some(t), "{name}");
        }
    }
    let t = ts("2025-01-01T10:05:00Z");
    assert_eq!(
        run_name_time(SCHEDULER, "backup", "backup-28928765"),
        Some(t),
        "named before the tag"
    );
    let not_ours = [
        run_name("another", "backup", t),
        run_name(SCHEDULER, "backups", t),
        run_name(SCHEDULER, "backup-1xmi6", t),
        "backup-".to_owned(),
        "backup-1xmi6-".to_owned(),
        "backup-1xmi6-x1".to_owned(),
        "backup--28928765".to_owned(),
        "backup-+28928765".to_owned(),
    ];
    for name in not_ours {
        assert_eq!(run_name_time(SCHEDULER, "backup", &name), None, "{name}");
    }
}

/// Runs named `<workflow>-<minute>` by an earlier berth are still the Scheduler's runs (known by labels and
/// controller): they hold workers, queue, start, count as history, and stop their due time running twice.
#[test]
fn runs_named_before_the_tag_still_count() {
    let legacy = |workflow: &str, scheduled: &str, state: RunState| {
        let mut r = run(workflow, scheduled, state);
        r.name = format!("{workflow}-{}", r.scheduled.as_second() / 60);
        r
    };
    let s = spec(1, vec![wf("sync", "*/5 * * * *")]);
    let prev = [remembered("sync", "2025-01-01T10:00:00Z")];

    let busy = [legacy("sync", "2025-01-01T10:00:00Z", RunState::Active)];
    let p = plan_at("2025-01-01T10:05:00Z", &s, &prev, &busy);
    assert_eq!(
        created(&p),
        [("sync-1xmi6-28928765".to_owned(), true)],
        "queued behind it"
    );

    let queued = [legacy("sync", "2025-01-01T10:00:00Z", RunState::Queued)];
    let p = plan_at("2025-01-01T10:01:00Z", &s, &prev, &queued);
    assert_eq!(p.unsuspend, ["sync-28928760"]);

    let history: Vec<Run> = ["06", "07", "08", "09"]
        .iter()
        .map(|h| legacy("sync", &format!("2025-01-01T{h}:00:00Z"), RunState::Succeeded))
        .collect();
    let p = plan_at("2025-01-01T10:01:00Z", &s, &prev, &history);
    assert_eq!(p.delete, ["sync-28928520"], "the oldest of four, limit 3");

    // The status lost, the legacy run of 10:05 is enough to not run 10:05 again.
    let done = [legacy("sync", "2025-01-01T10:05:00Z", RunState::Succeeded)];
    let p = plan_at("2025-01-01T10:05:30Z", &s, &[], &done);
    assert!(p.create.is_empty());
    assert_eq!(p.workflows[0].last_run.as_deref(), Some("sync-28928765"));

    // A remembered legacy last run is older than a newer tagged one.
    let mut old = remembered("sync", "2025-01-01T10:00:00Z");
    old.last_run = Some("sync-28928760".into());
    let p = plan_at("2025-01-01T10:05:00Z", &s, &[old], &[]);
    assert_eq!(p.workflows[0].last_run.as_deref(), Some("sync-1xmi6-28928765"));
}

#[test]
fn a_run_not_created_is_decided_again_and_its_missed_runs_count_once() {
    let mut w = wf("sync", "*/5 * * * *");
    w.starting_deadline_seconds = Some(120);
    let s = spec(2, vec![w, wf("other", "*/5 * * * *")]);
    let mut prev = vec![
        remembered("sync", "2025-01-01T10:00:00Z"),
        remembered("other", "2025-01-01T10:00:00Z"),
    ];
    prev[0].missed = 1;
    prev[0].last_run = Some(run_name(SCHEDULER, "sync", ts("2025-01-01T10:00:00Z")));
    // Down since 10:00: 10:05 and 10:10 were missed, 10:15 is due.
    let p = plan_at("2025-01-01T10:15:30Z", &s, &prev, &[]);
    let sync = run_name(SCHEDULER, "sync", ts("2025-01-01T10:15:00Z"));
    let other = run_name(SCHEDULER, "other", ts("2025-01-01T10:15:00Z"));
    assert_eq!(created(&p), [(sync.clone(), false), (other.clone(), false)]);
    assert_eq!((p.workflows[0].newly_missed, p.workflows[0].missed), (2, 3));

    // sync's name was taken: its status stays as it was, other's moves on.
    let carried = p.clone().carried_out(std::slice::from_ref(&other), &[]);
    assert_eq!(created(&carried), [(other, false)]);
    assert_eq!((carried.running, carried.queued), (1, 0));
    let (taken, moved) = (&carried.workflows[0], &carried.workflows[1]);
    assert_eq!(taken.last_schedule, Some(ts("2025-01-01T10:00:00Z")));
    assert_eq!((taken.missed, taken.newly_missed), (1, 0));
    assert_eq!(taken.last_run, prev[0].last_run);
    assert_eq!(moved, &p.workflows[1]);

    // Tried again inside the deadline, then made: the two missed runs are counted once.
    let runs = apply(&[], &carried);
    let again = plan_at("2025-01-01T10:16:30Z", &s, &remember(&carried), &runs);
    assert_eq!(created(&again), [(sync.clone(), false)]);
    let made = again.clone().carried_out(std::slice::from_ref(&sync), &[]);
    assert_eq!(made, again, "all of it carried out");
    assert_eq!((made.workflows[0].missed, made.workflows[0].newly_missed), (3, 2));
    assert_eq!(made.workflows[0].last_run.as_deref(), Some(sync.as_str()));

    // Still taken when the deadline passed: missed, with the ones before it.
    let late = plan_at("2025-01-01T10:17:30Z", &s, &remember(&carried), &runs);
    assert!(late.create.is_empty());
    assert_eq!((late.workflows[0].missed, late.workflows[0].newly_missed), (4, 3));
    assert_eq!(late.workflows[0].last_schedule, Some(ts("2025-01-01T10:15:00Z")));
}

#[test]
fn a_queued_run_gone_before_it_started_is_not_counted() {
    let s = spec(2, vec![wf("a", "0 * * * *")]);
    let prev = [remembered("a", "2025-01-01T10:00:00Z")];
    let runs = [run("a", "2025-01-01T10:00:00Z", RunState::Queued)];
    let p = plan_at("2025-01-01T10:30:00Z", &s, &prev, &runs);
    assert_eq!((p.unsuspend.len(), p.running, p.queued), (1, 1, 0));
    let carried = p.carried_out(&[], &[]);
    assert!(carried.unsuspend.is_empty());
    assert_eq!((carried.running, carried.queued), (0, 0));
}

#[test]
fn a_new_scheduler_waits_for_the_first_due_time() {
    let s = spec(2, vec![wf("report", "*/5 * * * *")]);
    let p = plan(&Input {
        now: ts("2025-01-01T10:01:10Z"),
        scheduler: SCHEDULER,
        spec: &s,
        created: Some(ts("2025-01-01T10:01:00Z")),
        observed: false,
        previous: &[],
        runs: &[],
        annotations: &BTreeMap::new(),
    });
    assert!(p.create.is_empty());
    assert_eq!(p.next_wakeup, Some(ts("2025-01-01T10:05:00Z")));
    assert_eq!(p.workflows[0].last_schedule, None);
    assert_eq!(p.workflows[0].missed, 0);
}

#[test]
fn a_due_run_starts_once_and_a_restart_does_not_repeat_it() {
    let s = spec(2, vec![wf("report", "*/5 * * * *")]);
    let prev = [remembered("report", "2025-01-01T10:00:00Z")];
    let first = plan_at("2025-01-01T10:05:01Z", &s, &prev, &[]);
    assert_eq!(created(&first), [("report-1xmi6-28928765".to_owned(), false)]);
    assert_eq!(first.workflows[0].last_schedule, Some(ts("2025-01-01T10:05:00Z")));
    assert_eq!(
        first.workflows[0].last_run.as_deref(),
        Some("report-1xmi6-28928765")
    );
    assert_eq!(first.next_wakeup, Some(ts("2025-01-01T10:10:00Z")));
    assert_eq!((first.running, first.queued), (1, 0));

    // A restarted operator sees the Job (and, or, the status) and does nothing new.
    let runs = apply(&[], &first);
    let with_status = plan_at("2025-01-01T10:06:00Z", &s, &remember(&first), &runs);
    let without_status = plan_at("2025-01-01T10:06:00Z", &s, &prev, &runs);
    for again in [&with_status, &without_status] {
        assert!(again.create.is_empty() && again.delete.is_empty() && again.unsuspend.is_empty());
        assert_eq!(remember(again), remember(&first), "same status, no write");
    }
}

#[test]
fn a_pruned_run_is_never_brought_back() {
    let mut s = spec(2, vec![wf("report", "*/5 * * * *")]);
    s.successful_jobs_history_limit = 0;
    let runs = [run("report", "2025-01-01T10:05:00Z", RunState::Succeeded)];
    let prev = [remembered("report", "2025-01-01T10:05:00Z")];
    let p = plan_at("2025-01-01T10:06:00Z", &s, &prev, &runs);
    assert_eq!(p.delete, ["report-1xmi6-28928765"]);
    let after = apply(&runs, &p);
    let again = plan_at("2025-01-01T10:06:30Z", &s, &remember(&p), &after);
    assert!(again.create.is_empty());
    assert_eq!(
        again.workflows[0].last_run.as_deref(),
        Some("report-1xmi6-28928765"),
        "remembered"
    );
    assert_eq!(
        again.workflows[0].last_successful,
        Some(ts("2025-01-01T10:05:30Z")),
        "remembered"
    );
}

#[test]
fn missed_runs_within_the_deadline_start_only_the_latest() {
    let s = spec(2, vec![wf("tick", "* * * * *")]);
    let prev = [remembered("tick", "2025-01-01T10:00:00Z")];
    // Down from 10:00:30 to 10:03:30: 10:01 and 10:02 are skipped, 10:03 (30 s late) starts.
    let p = plan_at("2025-01-01T10:03:30Z", &s, &prev, &[]);
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].scheduled, ts("2025-01-01T10:03:00Z"));
    assert_eq!(p.workflows[0].newly_missed, 2);
    assert_eq!(p.workflows[0].missed, 2);
    // The count is not added twice.
    let again = plan_at("2025-01-01T10:03:40Z", &s, &remember(&p), &apply(&[], &p));
    assert_eq!(again.workflows[0].missed, 2);
    assert_eq!(again.workflows[0].newly_missed, 0);
}

#[test]
fn a_run_later_than_its_deadline_is_skipped_and_counted() {
    let mut w = wf("report", "*/5 * * * *");
    w.starting_deadline_seconds = Some(60);
    let s = spec(2, vec![w]);
    let mut prev = remembered("report", "2025-01-01T10:00:00Z");
    prev.missed = 1;
    let p = plan_at("2025-01-01T10:38:00Z", &s, &[prev], &[]);
    assert!(p.create.is_empty(), "10:35 is 180 s late, more than 60 s");
    assert_eq!(p.workflows[0].newly_missed, 7, "10:05 … 10:35");
    assert_eq!(p.workflows[0].missed, 8);
    assert_eq!(p.workflows[0].last_schedule, Some(ts("2025-01-01T10:35:00Z")));
    assert_eq!(p.next_wakeup, Some(ts("2025-01-01T10:40:00Z")));
}

#[test]
fn the_default_starting_deadline_is_five_minutes() {
    let s = spec(2, vec![wf("daily", "0 3 * * *")]);
    let prev = [remembered("daily", "2024-12-31T03:00:00Z")];
    let in_time = plan_at("2025-01-01T03:05:00Z", &s, &prev, &[]);
    assert_eq!(in_time.create.len(), 1);
    let late = plan_at("2025-01-01T03:05:01Z", &s, &prev, &[]);
    assert!(late.create.is_empty());
    assert_eq!(late.workflows[0].missed, 1);
}

#[test]
fn forbid_skips_while_the_previous_run_is_active_or_queued() {
    let mut w = wf("sync", "*/5 * * * *");
    w.concurrency_policy = ConcurrencyPolicy::Forbid;
    let s = spec(4, vec![w]);
    let prev = [remembered("sync", "2025-01-01T10:00:00Z")];
    for state in [RunState::Active, RunState::Queued] {
        let runs = [run("sync", "2025-01-01T10:00:00Z", state)];
        let p = plan_at("2025-01-01T10:05:00Z", &s, &prev, &runs);
        assert!(p.create.is_empty(), "{state:?}");
        assert_eq!(p.workflows[0].forbidden, Some(ts("2025-01-01T10:05:00Z")));
        assert_eq!(
            p.workflows[0].last_schedule,
            Some(ts("2025-01-01T10:05:00Z")),
            "decided once"
        );
        assert_eq!(p.workflows[0].missed, 0, "a skip is not a miss");
        // When the previous run finishes, the skipped run does not start late.
        let done = [run("sync", "2025-01-01T10:00:00Z", RunState::Succeeded)];
        let later = plan_at("2025-01-01T10:06:00Z", &s, &remember(&p), &done);
        assert!(later.create.is_empty());
    }
    let done = [run("sync", "2025-01-01T10:00:00Z", RunState::Failed)];
    assert_eq!(plan_at("2025-01-01T10:05:00Z", &s, &prev, &done).create.len(), 1);
}

#[test]
fn allow_starts_next_to_the_previous_run() {
    let s = spec(4, vec![wf("sync", "*/5 * * * *")]);
    let prev = [remembered("sync", "2025-01-01T10:00:00Z")];
    let runs = [run("sync", "2025-01-01T10:00:00Z", RunState::Active)];
    let p = plan_at("2025-01-01T10:05:00Z", &s, &prev, &runs);
    assert_eq!(created(&p), [("sync-1xmi6-28928765".to_owned(), false)]);
    assert!(p.delete.is_empty());
    assert_eq!(p.running, 2);
}

#[test]
fn replace_deletes_the_active_and_queued_runs_and_starts_the_new_one() {
    let mut w = wf("sync", "*/5 * * * *");
    w.concurrency_policy = ConcurrencyPolicy::Replace;
    let s = spec(1, vec![w]);
    let prev = [remembered("sync", "2025-01-01T10:00:00Z")];
    let runs = [
        run("sync", "2025-01-01T09:55:00Z", RunState::Active),
        run("sync", "2025-01-01T10:00:00Z", RunState::Queued),
        run("sync", "2025-01-01T09:50:00Z", RunState::Succeeded),
    ];
    let p = plan_at("2025-01-01T10:05:00Z", &s, &prev, &runs);
    assert_eq!(p.delete, [runs[0].name.clone(), runs[1].name.clone()]);
    assert_eq!(
        created(&p),
        [("sync-1xmi6-28928765".to_owned(), false)],
        "the freed worker takes it"
    );
    assert!(p.unsuspend.is_empty());
    assert_eq!((p.running, p.queued), (1, 0));
}

#[test]
fn six_due_at_once_on_four_workers_queue_two_and_start_them_oldest_first() {
    let names = ["a", "b", "c", "d", "e", "f"];
    let s = spec(4, names.iter().map(|n| wf(n, "*/5 * * * *")).collect());
    let prev: Vec<_> = names
        .iter()
        .map(|n| remembered(n, "2025-01-01T10:00:00Z"))
        .collect();
    let p = plan_at("2025-01-01T10:05:00Z", &s, &prev, &[]);
    let suspended: Vec<bool> = p.create.iter().map(|c| c.suspended).collect();
    assert_eq!(
        suspended,
        [false, false, false, false, true, true],
        "ties go in workflow order"
    );
    assert_eq!((p.running, p.queued), (4, 2));

    // Nothing changes while all four run.
    let mut runs = apply(&[], &p);
    let status = remember(&p);
    let steady = plan_at("2025-01-01T10:06:00Z", &s, &status, &runs);
    assert!(steady.create.is_empty() && steady.unsuspend.is_empty() && steady.delete.is_empty());

    // One finishes: the oldest-due queued run (e, same due time, earlier in the spec) starts.
    runs[0].state = RunState::Succeeded;
    runs[0].finished = Some(ts("2025-01-01T10:06:30Z"));
    let next = plan_at("2025-01-01T10:06:31Z", &s, &status, &runs);
    assert_eq!(
        next.unsuspend,
        [run_name(SCHEDULER, "e", ts("2025-01-01T10:05:00Z"))]
    );
    assert_eq!((next.running, next.queued), (4, 1));
}

#[test]
fn queued_runs_start_oldest_due_first_across_workflows() {
    let s = spec(1, vec![wf("a", "0 * * * *"), wf("b", "0 * * * *")]);
    let prev = [
        remembered("a", "2025-01-01T10:00:00Z"),
        remembered("b", "2025-01-01T10:00:00Z"),
    ];
    let runs = [
        run("a", "2025-01-01T10:00:00Z", RunState::Queued),
        run("b", "2025-01-01T09:00:00Z", RunState::Queued),
    ];
    let p = plan_at("2025-01-01T10:30:00Z", &s, &prev, &runs);
    assert_eq!(p.unsuspend, [runs[1].name.clone()]);
    assert_eq!((p.running, p.queued), (1, 1));
}

#[test]
fn new_runs_queue_behind_older_queued_ones() {
    let s = spec(1, vec![wf("a", "*/5 * * * *")]);
    let prev = [remembered("a", "2025-01-01T10:00:00Z")];
    let runs = [run("a", "2025-01-01T10:00:00Z", RunState::Queued)];
    let p = plan_at("2025-01-01T10:05:00Z", &s, &prev, &runs);
    assert_eq!(p.unsuspend, [runs[0].name.clone()]);
    assert_eq!(created(&p), [("a-1xmi6-28928765".to_owned(), true)]);
}

#[test]
fn fewer_workers_stop_nothing_and_start_nothing() {
    let s = spec(1, vec![wf("a", "*/5 * * * *")]);
    let prev = [remembered("a", "2025-01-01T10:05:00Z")];
    let runs = [
        run("a", "2025-01-01T10:00:00Z", RunState::Active),
        run("a", "2025-01-01T10:05:00Z", RunState::Active),
        run("a", "2025-01-01T09:55:00Z", RunState::Queued),
    ];
    let p = plan_at("2025-01-01T10:06:00Z", &s, &prev, &runs);
    assert!(p.unsuspend.is_empty() && p.delete.is_empty() && p.create.is_empty());
    assert_eq!((p.running, p.queued), (2, 1));
}

#[test]
fn suspend_starts_nothing_and_keeps_the_queue() {
    let mut s = spec(4, vec![wf("a", "*/5 * * * *")]);
    s.suspend = true;
    let prev = [remembered("a", "2025-01-01T10:00:00Z")];
    let runs = [run("a", "2025-01-01T10:00:00Z", RunState::Queued)];
    let p = plan_at("2025-01-01T10:05:00Z", &s, &prev, &runs);
    assert!(p.create.is_empty() && p.unsuspend.is_empty() && p.delete.is_empty());
    assert_eq!(p.next_wakeup, None, "no wake-ups while suspended");
    assert_eq!((p.running, p.queued), (0, 1));
    assert_eq!(
        p.workflows[0].last_schedule,
        Some(ts("2025-01-01T10:00:00Z")),
        "nothing decided"
    );

    // Resumed at 10:21: 10:20 starts, 10:05 … 10:15 were missed, the queued run starts first.
    s.suspend = false;
    let resumed = plan_at("2025-01-01T10:21:00Z", &s, &remember(&p), &runs);
    assert_eq!(resumed.unsuspend, [runs[0].name.clone()]);
    assert_eq!(resumed.create.len(), 1);
    assert_eq!(resumed.create[0].scheduled, ts("2025-01-01T10:20:00Z"));
    assert_eq!(resumed.workflows[0].missed, 3);
}

#[test]
fn history_keeps_the_newest_succeeded_and_failed_runs() {
    let s = spec(4, vec![wf("a", "0 * * * *")]);
    let runs = [
        run("a", "2025-01-01T01:00:00Z", RunState::Succeeded),
        run("a", "2025-01-01T02:00:00Z", RunState::Failed),
        run("a", "2025-01-01T03:00:00Z", RunState::Succeeded),
        run("a", "2025-01-01T04:00:00Z", RunState::Succeeded),
        run("a", "2025-01-01T05:00:00Z", RunState::Failed),
        run("a", "2025-01-01T06:00:00Z", RunState::Succeeded),
        run("a", "2025-01-01T07:00:00Z", RunState::Failed),
        run("a", "2025-01-01T08:00:00Z", RunState::Active),
    ];
    let prev = [remembered("a", "2025-01-01T08:00:00Z")];
    let p = plan_at("2025-01-01T08:30:00Z", &s, &prev, &runs);
    let mut expected = vec![runs[0].name.clone(), runs[1].name.clone(), runs[4].name.clone()];
    expected.sort();
    assert_eq!(
        p.delete, expected,
        "3 succeeded and 1 failed stay; the active run is not history"
    );
    assert_eq!(p.workflows[0].last_successful, Some(ts("2025-01-01T06:00:30Z")));
    assert_eq!(p.workflows[0].last_failed, Some(ts("2025-01-01T07:00:30Z")));
    assert_eq!(p.workflows[0].last_run.as_deref(), Some(runs[7].name.as_str()));
}

#[test]
fn runs_of_removed_workflows_are_cleaned_up_but_active_ones_finish() {
    let s = spec(2, vec![wf("kept", "0 * * * *")]);
    let runs = [
        run("gone", "2025-01-01T09:00:00Z", RunState::Active),
        run("gone", "2025-01-01T09:30:00Z", RunState::Queued),
        run("gone", "2025-01-01T08:00:00Z", RunState::Succeeded),
    ];
    let prev = [remembered("kept", "2025-01-01T10:00:00Z")];
    let p = plan_at("2025-01-01T10:10:00Z", &s, &prev, &runs);
    let mut expected = vec![runs[1].name.clone(), runs[2].name.clone()];
    expected.sort();
    assert_eq!(p.delete, expected);
    assert_eq!((p.running, p.queued), (1, 0));
    assert_eq!(p.workflows.len(), 1, "the status lists only the spec's workflows");
}

#[test]
fn berlin_spring_forward_runs_the_0230_job_once() {
    let mut w = wf("nightly", "30 2 * * *");
    w.time_zone = Some("Europe/Berlin".into());
    let s = spec(1, vec![w]);
    let prev = [remembered("nightly", "2025-03-29T01:30:00Z")];
    // 2025-03-30 02:30 does not exist in Berlin; the run comes due at 03:00 CEST = 01:00Z.
    let before = plan_at("2025-03-30T00:59:59Z", &s, &prev, &[]);
    assert!(before.create.is_empty());
    assert_eq!(before.next_wakeup, Some(ts("2025-03-30T01:00:00Z")));
    let due = plan_at("2025-03-30T01:00:05Z", &s, &prev, &[]);
    assert_eq!(
        created(&due),
        [(run_name(SCHEDULER, "nightly", ts("2025-03-30T01:00:00Z")), false)]
    );
    let after = plan_at("2025-03-30T02:00:00Z", &s, &remember(&due), &apply(&[], &due));
    assert!(after.create.is_empty());
    assert_eq!(after.next_wakeup, Some(ts("2025-03-31T00:30:00Z")), "02:30 CEST");
}

#[test]
fn berlin_fall_back_runs_the_0230_job_once() {
    let mut w = wf("nightly", "30 2 * * *");
    w.time_zone = Some("Europe/Berlin".into());
    let s = spec(1, vec![w]);
    let prev = [remembered("nightly", "2025-10-25T00:30:00Z")];
    // 2025-10-26 02:30 happens at 00:30Z (CEST) and again at 01:30Z (CET).
    let first = plan_at("2025-10-26T00:30:02Z", &s, &prev, &[]);
    assert_eq!(first.create.len(), 1);
    assert_eq!(
        first.next_wakeup,
        Some(ts("2025-10-27T01:30:00Z")),
        "not the repeated 02:30"
    );
    let runs = apply(&[], &first);
    let repeated = plan_at("2025-10-26T01:30:02Z", &s, &remember(&first), &runs);
    assert!(repeated.create.is_empty());
    // Even with the status lost, the Job's due time is enough.
    let forgotten = plan_at("2025-10-26T01:30:02Z", &s, &[], &runs);
    assert!(forgotten.create.is_empty());
}

#[test]
fn an_invalid_schedule_stops_only_its_workflow() {
    let mut bad_zone = wf("zone", "@hourly");
    bad_zone.time_zone = Some("Europe/Atlantis".into());
    let s = spec(
        2,
        vec![wf("bad", "61 * * * *"), bad_zone, wf("good", "*/5 * * * *")],
    );
    let prev = [
        remembered("bad", "2025-01-01T10:00:00Z"),
        remembered("zone", "2025-01-01T10:00:00Z"),
        remembered("good", "2025-01-01T10:00:00Z"),
    ];
    let runs = [run("bad", "2025-01-01T10:00:00Z", RunState::Queued)];
    let p = plan_at("2025-01-01T11:00:00Z", &s, &prev, &runs);
    assert!(p.workflows[0].invalid.as_deref().unwrap().contains("61 * * * *"));
    assert!(
        p.workflows[1]
            .invalid
            .as_deref()
            .unwrap()
            .contains("Europe/Atlantis")
    );
    assert_eq!(p.workflows[2].invalid, None);
    assert_eq!(
        created(&p),
        [(run_name(SCHEDULER, "good", ts("2025-01-01T11:00:00Z")), false)]
    );
    assert_eq!(
        p.unsuspend,
        [runs[0].name.clone()],
        "a queued run still gets its worker"
    );
    assert_eq!(p.next_wakeup, Some(ts("2025-01-01T11:05:00Z")));
}

#[test]
fn a_workflow_added_later_does_not_catch_up_on_time_before_it_existed() {
    let s = spec(2, vec![wf("old", "0 * * * *"), wf("new", "0 * * * *")]);
    let prev = [remembered("old", "2025-01-01T10:00:00Z")];
    let p = plan_at("2025-01-01T10:02:00Z", &s, &prev, &[]);
    assert!(p.create.is_empty());
    assert_eq!(p.workflows[1].last_schedule, Some(ts("2025-01-01T10:00:00Z")));
    assert_eq!(p.workflows[1].missed, 0);
    let next = plan_at("2025-01-01T10:03:00Z", &s, &remember(&p), &[]);
    assert!(next.create.is_empty());
    assert_eq!(next.workflows, p.workflows);
    let due = plan_at("2025-01-01T11:00:00Z", &s, &remember(&p), &[]);
    assert_eq!(due.create.len(), 2);
}

#[test]
fn an_operator_down_since_creation_starts_the_latest_due_run_in_time() {
    let s = spec(2, vec![wf("tick", "* * * * *")]);
    let p = plan(&Input {
        now: ts("2025-01-01T10:03:30Z"),
        scheduler: SCHEDULER,
        spec: &s,
        created: Some(ts("2025-01-01T10:00:30Z")),
        observed: false,
        previous: &[],
        runs: &[],
        annotations: &BTreeMap::new(),
    });
    assert_eq!(p.create.len(), 1);
    assert_eq!(p.create[0].scheduled, ts("2025-01-01T10:03:00Z"));
    assert_eq!(p.workflows[0].missed, 2, "10:01 and 10:02");
}

/// Drives the planner with a ticking clock over an hour, runs taking 150 s each, and checks the contract
/// at every tick: never more active runs than workers, every due time run at most once, queued runs
/// started oldest-due first, no writes planned when nothing happened. Halfway the status is lost
/// (an operator restart that also lost its status), which must not repeat a run.
#[test]
fn an_hour_of_ticks_keeps_every_promise() {
    let s = spec(
        2,
        vec![
            wf("one", "* * * * *"),
            wf("two", "*/2 * * * *"),
            wf("three", "*/3 * * * *"),
        ],
    );
    let start = ts("2025-01-01T10:00:00Z");
    let mut status: Vec<WorkflowStatus> = s
        .workflows
        .iter()
        .map(|w| remembered(&w.name, "2025-01-01T10:00:00Z"))
        .collect();
    let mut runs: Vec<Run> = vec![];
    let mut ever_created = std::collections::HashSet::new();
    let mut started_at: HashMap<String, Timestamp> = HashMap::new();
    for tick in 1..=360 {
        let now = start + SignedDuration::from_secs(tick * 10);
        let mut changed = false;
        for r in &mut runs {
            if r.state == RunState::Active
                && now.duration_since(started_at[&r.name]) >= SignedDuration::from_secs(150)
            {
                r.state = RunState::Succeeded;
                r.finished = Some(now);
                changed = true;
            }
        }
        if tick == 180 {
            status.clear();
        }
        let p = plan(&Input {
            now,
            scheduler: SCHEDULER,
            spec: &s,
            created: Some(start),
            observed: true,
            previous: &status,
            runs: &runs,
            annotations: &BTreeMap::new(),
        });

        let oldest_queued: Vec<&Run> = {
            let mut q: Vec<&Run> = runs.iter().filter(|r| r.state == RunState::Queued).collect();
            q.sort_by_key(|r| r.scheduled);
            q.into_iter().take(p.unsuspend.len()).collect()
        };
        for (name, oldest) in p.unsuspend.iter().zip(&oldest_queued) {
            assert_eq!(name, &oldest.name, "tick {tick}: oldest-due first");
        }
        for c in &p.create {
            assert!(
                ever_created.insert(c.name.clone()),
                "tick {tick}: {} created twice",
                c.name
            );
        }
        let quiet = p.create.is_empty() && p.unsuspend.is_empty() && p.delete.is_empty();
        let next_status = remember(&p);
        if quiet && !changed && tick != 180 {
            assert_eq!(
                next_status, status,
                "tick {tick}: nothing happened, nothing to write"
            );
        }
        runs = apply(&runs, &p);
        for r in runs.iter().filter(|r| r.state == RunState::Active) {
            started_at.entry(r.name.clone()).or_insert(now);
        }
        let active = runs.iter().filter(|r| r.state == RunState::Active).count();
        assert!(active <= 2, "tick {tick}: {active} active");
        assert_eq!(usize::try_from(p.running).unwrap(), active);
        status = next_status;
    }
    // Every due time of the hour was created once (more runs are due than two workers can take, so
    // the queue grows; nothing is dropped and nothing repeated).
    assert_eq!(ever_created.len(), 60 + 30 + 20);
}

/// A minute of ticks at a time for an hour, with some run names held by someone else's Jobs: at :07 for
/// 20 s (then freed), at :13 and :29 for good. At every tick the status accounts for every due time it
/// claims as acted on: each is a run made or a run counted missed, never a run another's Job stands in
/// for. The one freed in time runs late; the two never freed are missed once each.
#[test]
fn names_taken_by_others_are_tried_again_then_missed_never_claimed() {
    let mut w = wf("tick", "* * * * *");
    w.starting_deadline_seconds = Some(45);
    let s = spec(4, vec![w]);
    let start = ts("2025-01-01T10:00:00Z");
    let at = |secs: i64| start + SignedDuration::from_secs(secs);
    let minute = |m: i64| run_name(SCHEDULER, "tick", at(m * 60));
    let taken_until: HashMap<String, Timestamp> = HashMap::from([
        (minute(7), at(7 * 60 + 20)),
        (minute(13), Timestamp::MAX),
        (minute(29), Timestamp::MAX),
    ]);
    let mut status = vec![remembered("tick", "2025-01-01T10:00:00Z")];
    let mut runs: Vec<Run> = vec![];
    let mut made: HashMap<String, Timestamp> = HashMap::new();
    for tick in 1..=360 {
        let now = at(tick * 10);
        for r in &mut runs {
            if r.state == RunState::Active && now.duration_since(r.scheduled) >= SignedDuration::from_secs(30)
            {
                r.state = RunState::Succeeded;
                r.finished = Some(now);
            }
        }
        let p = plan(&Input {
            now,
            scheduler: SCHEDULER,
            spec: &s,
            created: Some(start),
            observed: true,
            previous: &status,
            runs: &runs,
            annotations: &BTreeMap::new(),
        });
        let created: Vec<String> = p
            .create
            .iter()
            .map(|c| c.name.clone())
            .filter(|n| taken_until.get(n).is_none_or(|&until| now >= until))
            .collect();
        let started = p.unsuspend.clone();
        let carried = p.carried_out(&created, &started);
        for c in &carried.create {
            assert!(
                made.insert(c.name.clone(), c.scheduled).is_none(),
                "tick {tick}: {} twice",
                c.name
            );
        }
        runs = apply(&runs, &carried);
        status = remember(&carried);

        let w = &status[0];
        let last = w.last_schedule_time.as_ref().map_or(start, |t| t.0);
        let claimed = last.duration_since(start).as_secs() / 60;
        let ran = made.values().filter(|&&t| t <= last).count();
        assert_eq!(
            claimed,
            i64::try_from(ran).unwrap() + i64::from(w.missed),
            "tick {tick}: status claims up to {last}, {ran} made, {} missed",
            w.missed
        );
        if let Some(name) = &w.last_run {
            assert!(
                made.contains_key(name),
                "tick {tick}: last run {name} is not ours"
            );
        }
    }
    assert_eq!(made.len(), 58);
    assert_eq!(
        made.get(&minute(7)),
        Some(&at(7 * 60)),
        "freed in time, so run late"
    );
    assert!(!made.contains_key(&minute(13)) && !made.contains_key(&minute(29)));
    assert_eq!(status[0].missed, 2);
}

// ------------------------------------------------------------------------------ runs asked for by hand

/// The annotations of a Scheduler asking for a run of `workflow` at `at`.
fn asking(workflow: &str, at: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(format!("{RUN_REQUEST_PREFIX}{workflow}"), at.to_owned())])
}

/// [`plan_at`] with annotations.
fn plan_asked(
    now: &str,
    spec: &SchedulerSpec,
    previous: &[WorkflowStatus],
    runs: &[Run],
    annotations: &BTreeMap<String, String>,
) -> Plan {
    plan(&Input {
        now: ts(now),
        scheduler: SCHEDULER,
        spec,
        created: Some(ts("2025-01-01T09:00:00Z")),
        observed: true,
        previous,
        runs,
        annotations,
    })
}

fn manual(workflow: &str, requested: &str, state: RunState) -> Run {
    let mut r = run(workflow, requested, state);
    r.name = manual_run_name(SCHEDULER, workflow, r.scheduled);
    r.trigger = Trigger::Manual;
    r
}

#[test]
fn a_request_starts_one_manual_run_and_a_restart_does_not_repeat_it() {
    let s = spec(2, vec![wf("sync", "0 * * * *")]);
    let prev = [remembered("sync", "2025-01-01T10:00:00Z")];
    let ask = asking("sync", "2025-01-01T10:20:07.250+01:00");
    let first = plan_asked("2025-01-01T09:20:10Z", &s, &prev, &[], &ask);
    let name = manual_run_name(SCHEDULER, "sync", ts("2025-01-01T09:20:07Z"));
    assert_eq!(created(&first), [(name.clone(), false)], "whole seconds, in UTC");
    assert_eq!(first.create[0].trigger, Trigger::Manual);
    let w = &first.workflows[0];
    assert_eq!(w.last_manual_request, Some(ts("2025-01-01T09:20:07Z")));
    assert_eq!(
        w.last_schedule,
        Some(ts("2025-01-01T10:00:00Z")),
        "the cron memory stays"
    );
    assert_eq!(
        (w.last_run.as_deref(), w.refused.as_ref()),
        (Some(name.as_str()), None)
    );
    assert_eq!((first.running, first.queued), (1, 0));

    // Restarted: the Job, the status, or both are enough; so is the status once the Job is pruned.
    let runs = apply(&[], &first);
    let cases = [
        (remember(&first), runs.clone()),
        (prev.to_vec(), runs.clone()),
        (remember(&first), vec![]),
    ];
    for (status, runs) in cases {
        let again = plan_asked("2025-01-01T09:20:30Z", &s, &status, &runs, &ask);
        assert!(
            again.create.is_empty() && again.delete.is_empty(),
            "{status:?} {runs:?}"
        );
        assert_eq!(
            again.workflows[0].last_manual_request,
            Some(ts("2025-01-01T09:20:07Z"))
        );
    }
    // A new value is a new request; one not newer than the last one acted on is none.
    let newer = plan_asked(
        "2025-01-01T09:20:40Z",
        &s,
        &remember(&first),
        &runs,
        &asking("sync", "2025-01-01T09:20:39Z"),
    );
    assert_eq!(newer.create.len(), 1, "two requests in one minute are two runs");
    assert_ne!(newer.create[0].name, name);
    let older = plan_asked(
        "2025-01-01T09:20:40Z",
        &s,
        &remember(&first),
        &runs,
        &asking("sync", "2025-01-01T09:19:00Z"),
    );
    assert!(older.create.is_empty());
}

/// A manual run is never taken for a due time: a request dated (within the clock skew) after the next due
/// time does not make that due time look done, with or without the manual memory in the status.
#[test]
fn a_manual_run_leaves_the_cron_memory_alone() {
    let s = spec(4, vec![wf("sync", "*/5 * * * *")]);
    let prev = [remembered("sync", "2025-01-01T10:00:00Z")];
    let ask = asking("sync", "2025-01-01T10:05:20Z");
    let p = plan_asked("2025-01-01T10:04:55Z", &s, &prev, &[], &ask);
    assert_eq!(created(&p).len(), 1);
    assert_eq!(p.workflows[0].last_schedule, Some(ts("2025-01-01T10:00:00Z")));
    assert_eq!(p.next_wakeup, Some(ts("2025-01-01T10:05:00Z")));
    let runs = apply(&[], &p);
    for status in [remember(&p), prev.to_vec()] {
        let due = plan_asked("2025-01-01T10:05:01Z", &s, &status, &runs, &ask);
        assert_eq!(
            created(&due),
            [(run_name(SCHEDULER, "sync", ts("2025-01-01T10:05:00Z")), false)],
            "{status:?}"
        );
        assert_eq!(due.workflows[0].last_schedule, Some(ts("2025-01-01T10:05:00Z")));
        assert_eq!(due.workflows[0].newly_missed, 0);
        assert_eq!(
            due.workflows[0].last_manual_request,
            Some(ts("2025-01-01T10:05:20Z"))
        );
    }
}

/// Asked for at the very second a run comes due: the due run is made first, the manual one in the next
/// plan (woken by the due run's Job), each with its own name and label.
#[test]
fn a_request_at_a_due_time_waits_one_plan_and_both_run() {
    let s = spec(4, vec![wf("sync", "*/5 * * * *")]);
    let prev = [remembered("sync", "2025-01-01T10:00:00Z")];
    let ask = asking("sync", "2025-01-01T10:05:00Z");
    let p = plan_asked("2025-01-01T10:05:00Z", &s, &prev, &[], &ask);
    assert_eq!(
        created(&p),
        [(run_name(SCHEDULER, "sync", ts("2025-01-01T10:05:00Z")), false)]
    );
    assert_eq!(p.create[0].trigger, Trigger::Schedule);
    assert_eq!(p.workflows[0].last_manual_request, None, "not yet acted on");
    assert_eq!(
        p.next_wakeup,
        Some(ts("2025-01-01T10:10:00Z")),
        "the new Job's event wakes it"
    );
    let runs = apply(&[], &p);
    let next = plan_asked("2025-01-01T10:05:01Z", &s, &remember(&p), &runs, &ask);
    assert_eq!(
        created(&next),
        [(
            manual_run_name(SCHEDULER, "sync", ts("2025-01-01T10:05:00Z")),
            false
        )]
    );
    assert_eq!(next.workflows[0].last_schedule, Some(ts("2025-01-01T10:05:00Z")));
    assert_eq!(next.next_wakeup, Some(ts("2025-01-01T10:10:00Z")));
}

#[test]
fn manual_runs_queue_for_a_worker_oldest_due_first_with_scheduled_runs() {
    let s = spec(1, vec![wf("a", "0 * * * *"), wf("b", "0 * * * *")]);
    let prev = [
        remembered("a", "2025-01-01T10:00:00Z"),
        remembered("b", "2025-01-01T10:00:00Z"),
    ];
    let mut runs = vec![
        run("a", "2025-01-01T09:00:00Z", RunState::Active),
        run("a", "2025-01-01T10:00:00Z", RunState::Queued),
    ];
    let ask = asking("b", "2025-01-01T10:10:00Z");
    let p = plan_asked("2025-01-01T10:10:02Z", &s, &prev, &runs, &ask);
    let name = manual_run_name(SCHEDULER, "b", ts("2025-01-01T10:10:00Z"));
    assert_eq!(
        created(&p),
        [(name.clone(), true)],
        "queued: the one worker is busy"
    );
    assert_eq!((p.running, p.queued), (1, 2));
    runs = apply(&runs, &p);
    let status = remember(&p);

    // The worker frees: the older scheduled run goes first, then the manual one.
    runs[0].state = RunState::Succeeded;
    runs[0].finished = Some(ts("2025-01-01T10:11:00Z"));
    let next = plan_asked("2025-01-01T10:11:01Z", &s, &status, &runs, &ask);
    assert_eq!(next.unsuspend, [runs[1].name.clone()]);
    assert!(next.create.is_empty(), "the request was acted on: it is queued");
    runs = apply(&runs, &next);
    runs[1].state = RunState::Failed;
    runs[1].finished = Some(ts("2025-01-01T10:12:00Z"));
    let last = plan_asked("2025-01-01T10:12:01Z", &s, &remember(&next), &runs, &ask);
    assert_eq!(last.unsuspend, [name]);
    assert_eq!((last.running, last.queued), (1, 0));
}

#[test]
fn forbid_skips_a_request_while_a_run_is_pending_and_replace_replaces_it() {
    let mut forbid = wf("sync", "0 * * * *");
    forbid.concurrency_policy = ConcurrencyPolicy::Forbid;
    let prev = [remembered("sync", "2025-01-01T10:00:00Z")];
    let ask = asking("sync", "2025-01-01T10:30:00Z");
    for pending in [
        run("sync", "2025-01-01T10:00:00Z", RunState::Active),
        manual("sync", "2025-01-01T10:20:00Z", RunState::Queued),
    ] {
        let s = spec(4, vec![forbid.clone()]);
        let runs = [pending];
        let p = plan_asked("2025-01-01T10:30:05Z", &s, &prev, &runs, &ask);
        assert!(p.create.is_empty() && p.delete.is_empty());
        assert_eq!(p.workflows[0].manual_forbidden, Some(ts("2025-01-01T10:30:00Z")));
        assert_eq!(
            p.workflows[0].last_manual_request,
            Some(ts("2025-01-01T10:30:00Z")),
            "decided once: it does not start when the run finishes"
        );
        let mut done = runs.clone();
        done[0].state = RunState::Succeeded;
        let later = plan_asked("2025-01-01T10:31:00Z", &s, &remember(&p), &done, &ask);
        assert!(later.create.is_empty());
        assert_eq!(later.workflows[0].manual_forbidden, None, "reported once");
    }

    let mut replace = wf("sync", "0 * * * *");
    replace.concurrency_policy = ConcurrencyPolicy::Replace;
    let s = spec(1, vec![replace]);
    let runs = [
        run("sync", "2025-01-01T10:00:00Z", RunState::Active),
        manual("sync", "2025-01-01T10:20:00Z", RunState::Queued),
        run("sync", "2025-01-01T09:00:00Z", RunState::Succeeded),
    ];
    let p = plan_asked("2025-01-01T10:30:05Z", &s, &prev, &runs, &ask);
    let mut replaced = vec![runs[0].name.clone(), runs[1].name.clone()];
    replaced.sort();
    assert_eq!(p.delete, replaced);
    assert_eq!(
        created(&p),
        [(
            manual_run_name(SCHEDULER, "sync", ts("2025-01-01T10:30:00Z")),
            false
        )],
        "the freed worker takes it"
    );
    assert_eq!(p.workflows[0].last_schedule, Some(ts("2025-01-01T10:00:00Z")));
}

#[test]
fn manual_runs_count_in_the_history_of_their_workflow() {
    let s = spec(4, vec![wf("a", "0 * * * *")]);
    let runs = [
        run("a", "2025-01-01T07:00:00Z", RunState::Succeeded),
        run("a", "2025-01-01T08:00:00Z", RunState::Succeeded),
        manual("a", "2025-01-01T08:30:00Z", RunState::Succeeded),
        run("a", "2025-01-01T09:00:00Z", RunState::Succeeded),
        manual("a", "2025-01-01T09:10:00Z", RunState::Failed),
        run("a", "2025-01-01T06:00:00Z", RunState::Failed),
    ];
    let prev = [remembered("a", "2025-01-01T09:00:00Z")];
    let p = plan_asked("2025-01-01T09:30:00Z", &s, &prev, &runs, &BTreeMap::new());
    let mut expected = vec![runs[0].name.clone(), runs[5].name.clone()];
    expected.sort();
    assert_eq!(
        p.delete, expected,
        "3 succeeded and 1 failed stay, whatever started them"
    );
    assert_eq!(p.workflows[0].last_failed, Some(ts("2025-01-01T09:10:30Z")));
    assert_eq!(p.workflows[0].last_run.as_deref(), Some(runs[4].name.as_str()));
}

#[test]
fn a_request_not_created_is_asked_again_and_only_its_memory_goes_back() {
    let s = spec(2, vec![wf("sync", "0 * * * *")]);
    let prev = [remembered("sync", "2025-01-01T10:00:00Z")];
    let ask = asking("sync", "2025-01-01T10:30:00Z");
    let p = plan_asked("2025-01-01T10:30:01Z", &s, &prev, &[], &ask);
    assert_eq!(p.create.len(), 1);
    let carried = p.carried_out(&[], &[]);
    assert!(carried.create.is_empty());
    assert_eq!((carried.running, carried.queued), (0, 0));
    let w = &carried.workflows[0];
    assert_eq!(w.last_manual_request, None, "not acted on");
    assert_eq!(
        (w.last_schedule, w.last_run.as_ref()),
        (Some(ts("2025-01-01T10:00:00Z")), None)
    );
    let again = plan_asked("2025-01-01T10:31:01Z", &s, &remember(&carried), &[], &ask);
    assert_eq!(again.create.len(), 1, "tried again");
    // Never made within the starting deadline: reported late, and not tried again.
    let late = plan_asked("2025-01-01T10:35:01Z", &s, &remember(&carried), &[], &ask);
    assert!(late.create.is_empty());
    assert_eq!(late.workflows[0].manual_late, Some(ts("2025-01-01T10:30:00Z")));
    assert_eq!(
        late.workflows[0].last_manual_request,
        Some(ts("2025-01-01T10:30:00Z"))
    );
}

/// A restored backup or a status lost with the pruned Job brings an old annotation back: too late to run.
#[test]
fn a_request_older_than_the_starting_deadline_starts_nothing() {
    let mut w = wf("sync", "0 * * * *");
    w.starting_deadline_seconds = Some(60);
    let s = spec(2, vec![w]);
    let ask = asking("sync", "2025-01-01T10:30:00Z");
    let in_time = plan_asked("2025-01-01T10:31:00Z", &s, &[], &[], &ask);
    assert_eq!(in_time.create.len(), 1);
    let late = plan_asked("2025-01-01T10:31:01Z", &s, &[], &[], &ask);
    assert!(late.create.is_empty());
    assert_eq!(late.workflows[0].manual_late, Some(ts("2025-01-01T10:30:00Z")));
    assert_eq!(late.workflows[0].missed, 0, "missed counts due times only");
}

#[test]
fn unreadable_and_future_requests_are_refused_for_good() {
    let s = spec(2, vec![wf("sync", "0 * * * *")]);
    let prev = [remembered("sync", "2025-01-01T10:00:00Z")];
    for value in ["now", "2025-01-01 10:30", ""] {
        let p = plan_asked("2025-01-01T10:30:00Z", &s, &prev, &[], &asking("sync", value));
        assert!(p.create.is_empty(), "{value}");
        let refused = p.workflows[0].refused.as_ref().unwrap();
        assert_eq!(refused.value, value);
        assert!(refused.why.contains("not an RFC 3339 time"), "{}", refused.why);
        assert_eq!(p.workflows[0].last_manual_request, None);
    }

    // A little ahead is the requester's clock; further ahead is refused, and stays so once it has passed.
    let slightly = plan_asked(
        "2025-01-01T10:30:00Z",
        &s,
        &prev,
        &[],
        &asking("sync", "2025-01-01T10:31:00Z"),
    );
    assert_eq!(slightly.create.len(), 1);
    let ask = asking("sync", "2025-01-01T10:31:01Z");
    let ahead = plan_asked("2025-01-01T10:30:00Z", &s, &prev, &[], &ask);
    assert!(ahead.create.is_empty());
    assert!(ahead.workflows[0].refused.as_ref().unwrap().why.contains("ahead"));
    assert_eq!(
        ahead.next_wakeup,
        Some(ts("2025-01-01T11:00:00Z")),
        "no wake-up for it"
    );
    let status = remember(&ahead);
    assert_eq!(
        status[0].refused_run_request.as_deref(),
        Some("2025-01-01T10:31:01Z")
    );
    let passed = plan_asked("2025-01-01T10:32:00Z", &s, &status, &[], &ask);
    assert!(passed.create.is_empty(), "never starts late");
    assert_eq!(remember(&passed), status, "no write");
    // A new value is asked again, and the refusal is over.
    let renewed = plan_asked(
        "2025-01-01T10:32:00Z",
        &s,
        &status,
        &[],
        &asking("sync", "2025-01-01T10:32:00Z"),
    );
    assert_eq!(renewed.create.len(), 1);
    assert_eq!(renewed.workflows[0].refused, None);
}

#[test]
fn a_request_for_a_workflow_not_in_the_spec_starts_nothing() {
    let s = spec(2, vec![wf("sync", "0 * * * *")]);
    let mut ask = asking("gone", "2025-01-01T10:30:00Z");
    ask.insert("pod.berth.dev/kwok-complete-after".into(), "1s".into());
    let p = plan_asked("2025-01-01T10:30:00Z", &s, &[], &[], &ask);
    assert!(p.create.is_empty());
    assert_eq!(p.unknown_requests, ["gone"]);
}

#[test]
fn a_request_waits_while_suspended_and_is_decided_on_resume() {
    let mut s = spec(2, vec![wf("sync", "0 * * * *")]);
    s.suspend = true;
    let prev = [remembered("sync", "2025-01-01T10:00:00Z")];
    let ask = asking("sync", "2025-01-01T10:30:00Z");
    let p = plan_asked("2025-01-01T10:30:01Z", &s, &prev, &[], &ask);
    assert!(p.create.is_empty());
    assert_eq!((p.workflows[0].last_manual_request, p.next_wakeup), (None, None));
    s.suspend = false;
    let resumed = plan_asked("2025-01-01T10:33:00Z", &s, &remember(&p), &[], &ask);
    assert_eq!(resumed.create.len(), 1, "inside the starting deadline");
    let too_late = plan_asked("2025-01-01T10:40:00Z", &s, &remember(&p), &[], &ask);
    assert!(too_late.create.is_empty());
    assert_eq!(
        too_late.workflows[0].manual_late,
        Some(ts("2025-01-01T10:30:00Z"))
    );
}

#[test]
fn a_workflow_with_an_invalid_schedule_still_runs_by_hand() {
    let s = spec(2, vec![wf("bad", "61 * * * *")]);
    let p = plan_asked(
        "2025-01-01T10:30:00Z",
        &s,
        &[],
        &[],
        &asking("bad", "2025-01-01T10:29:59Z"),
    );
    assert!(p.workflows[0].invalid.is_some());
    assert_eq!(p.create.len(), 1);
}

/// The hour of ticks with runs asked for by hand now and then, some at a due minute's very second: every
/// request is one manual run, every due time still one scheduled run, never more active runs than workers,
/// and an operator that lost its status (halfway) repeats nothing.
#[test]
fn an_hour_of_ticks_with_requests_keeps_every_promise() {
    let mut s = spec(2, vec![wf("one", "* * * * *"), wf("two", "*/2 * * * *")]);
    s.successful_jobs_history_limit = 100;
    let start = ts("2025-01-01T10:00:00Z");
    let mut status: Vec<WorkflowStatus> = s
        .workflows
        .iter()
        .map(|w| remembered(&w.name, "2025-01-01T10:00:00Z"))
        .collect();
    let mut annotations = BTreeMap::new();
    let mut requests = BTreeSet::new();
    let mut runs: Vec<Run> = vec![];
    let mut created: HashMap<String, Trigger> = HashMap::new();
    let mut started_at: HashMap<String, Timestamp> = HashMap::new();
    for tick in 1..=360 {
        let now = start + SignedDuration::from_secs(tick * 10);
        for r in &mut runs {
            if r.state == RunState::Active
                && now.duration_since(started_at[&r.name]) >= SignedDuration::from_secs(150)
            {
                r.state = RunState::Succeeded;
                r.finished = Some(now);
            }
        }
        // Every 70 s a request for one of the workflows; every sixth comes at a due minute of `one`.
        if tick % 7 == 0 {
            let workflow = if tick % 14 == 0 { "one" } else { "two" };
            annotations.insert(format!("{RUN_REQUEST_PREFIX}{workflow}"), now.to_string());
            requests.insert((workflow.to_owned(), now));
        }
        if tick == 180 {
            status.clear();
        }
        let p = plan(&Input {
            now,
            scheduler: SCHEDULER,
            spec: &s,
            created: Some(start),
            observed: true,
            previous: &status,
            runs: &runs,
            annotations: &annotations,
        });
        for c in &p.create {
            assert!(
                created.insert(c.name.clone(), c.trigger).is_none(),
                "tick {tick}: {} created twice",
                c.name
            );
        }
        runs = apply(&runs, &p);
        for r in runs.iter().filter(|r| r.state == RunState::Active) {
            started_at.entry(r.name.clone()).or_insert(now);
        }
        let active = runs.iter().filter(|r| r.state == RunState::Active).count();
        assert!(active <= 2, "tick {tick}: {active} active");
        status = remember(&p);
    }
    let manual: BTreeSet<(String, Timestamp)> = runs
        .iter()
        .filter(|r| r.trigger == Trigger::Manual)
        .map(|r| (r.workflow.clone(), r.scheduled))
        .collect();
    assert_eq!(manual, requests, "one manual run per request");
    let scheduled = created.values().filter(|t| **t == Trigger::Schedule).count();
    assert_eq!(
        scheduled,
        60 + 30,
        "every due time once, none taken by a manual run"
    );
    assert!(status.iter().all(|w| w.missed == 0), "{status:?}");
}
