//! The Scheduler controller on a real control plane (issue #6): `workers` bounds the active runs and the
//! rest queue as suspended Jobs started oldest-due first; the queue survives a SIGKILLed operator with no
//! run lost or doubled; history limits prune; `suspend` starts nothing; deleting the Scheduler lets the
//! garbage collector remove its Jobs and pods; an invalid schedule is reported while its sibling runs; two
//! Schedulers of one namespace with a workflow of the same name each get their own runs; a run asked for by
//! hand (`run.berth.dev/<workflow>`, issue #19) queues behind a busy worker and starts when it frees.
//!
//! Schedulers are made directly in throwaway namespaces (no Customer). Every workflow runs each minute
//! (`* * * * *`), so each test creates its Scheduler a few seconds before a minute boundary and the first
//! runs come due at that boundary. kwok plays the pods: `pod.berth.dev/kwok-complete-after` on the
//! Scheduler sets how long a run takes.
//!
//! **One operator for the whole binary, in [`OPERATOR`].** Operators elect a leader on one Lease, so a
//! second operator of this binary would only stand by. The restart test therefore SIGKILLs the operator
//! that holds the Lease (the only one) and starts its successor in the same slot, under the slot's lock so
//! no other test starts one meanwhile. Tests running alongside see a pause of a few seconds in
//! reconciling, which their waits absorb (a run due during the pause starts late, well inside its
//! starting deadline).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_api::{RUN_REQUEST_PREFIX, Scheduler, TRIGGER_LABEL, WorkflowStatus, find_condition};
use berth_e2e::operator::external;
use berth_e2e::{Operator, TestNamespace, eventually, wait_for, wait_gone};
use berth_kit::labels::INSTANCE;
use berth_scheduler::job::{SCHEDULED_TIME, WORKFLOW};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

/// The berth operator every test of this binary talks to (none when berth runs in the cluster).
static OPERATOR: tokio::sync::Mutex<Option<Operator>> = tokio::sync::Mutex::const_new(None);

/// Fewer seconds than this before a minute boundary, and a test waits for the next one.
const MARGIN_SECS: u64 = 6;
/// Until a minute boundary, plus the margin and the restart test's pause.
const NEXT_MINUTE: Duration = Duration::from_secs(90);
const SHORT: Duration = Duration::from_secs(45);

/// CRDs, the Lease namespace and a running operator.
async fn setup() -> Client {
    let client = berth_e2e::prepare().await;
    if !external() {
        let mut slot = OPERATOR.lock().await;
        if slot.is_none() {
            *slot = Some(Operator::start("scheduler", &[]));
        }
    }
    client
}

// ------------------------------------------------------------------------------------------ objects

fn workflow(name: &str, schedule: &str) -> Value {
    json!({"name": name, "schedule": schedule, "image": "registry.example/berth-e2e/workflow:1"})
}

/// A Scheduler whose runs take `run_for` (kwok) and whose spec is `spec`.
fn scheduler(name: &str, run_for: &str, spec: &Value) -> Scheduler {
    serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "Scheduler",
        "metadata": {"name": name, "annotations": {"pod.berth.dev/kwok-complete-after": run_for}},
        "spec": spec,
    }))
    .expect("a Scheduler")
}

/// A run's Job name, as the controller names it: the workflow, the Scheduler's tag and the due time in
/// Unix minutes.
fn run_name(scheduler: &str, workflow: &str, due: i64) -> String {
    let due = Timestamp::from_second(due).expect("a due time");
    berth_scheduler::plan::run_name(scheduler, workflow, due)
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
}

/// Waits, when the next minute boundary is less than [`MARGIN_SECS`] away, until it has passed: then
/// something created now is due at the boundary after (that waiting time window is the point).
async fn wait_for_margin() {
    let now = unix_now();
    let left =
        Duration::from_secs(60 - now.as_secs() % 60) - Duration::from_nanos(u64::from(now.subsec_nanos()));
    if left < Duration::from_secs(MARGIN_SECS) {
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
}

/// The first minute boundary strictly after the object's creation (whole seconds, as the planner sees it).
fn first_due(s: &Scheduler) -> i64 {
    let created = s
        .metadata
        .creation_timestamp
        .as_ref()
        .expect("creationTimestamp")
        .0
        .as_second();
    (created.div_euclid(60) + 1) * 60
}

/// Creates Schedulers at least [`MARGIN_SECS`] before a minute boundary; returns them and that boundary
/// (Unix seconds), when their workflows first come due.
async fn create_before_a_boundary(api: &Api<Scheduler>, objs: &[Scheduler]) -> (Vec<Scheduler>, i64) {
    wait_for_margin().await;
    let mut made = vec![];
    for o in objs {
        made.push(
            api.create(&PostParams::default(), o)
                .await
                .expect("create Scheduler"),
        );
    }
    let due = first_due(&made[0]);
    assert!(
        made.iter().all(|s| first_due(s) == due),
        "created across a minute boundary"
    );
    (made, due)
}

fn conditions(s: &Scheduler) -> &[Condition] {
    s.status
        .as_ref()
        .map(|st| st.conditions.as_slice())
        .unwrap_or_default()
}

/// `Ready` with `status` and `reason`, for the current generation.
fn ready_is(s: &Scheduler, status: &str, reason: &str) -> bool {
    let current = s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation;
    current
        && find_condition(conditions(s), "Ready").is_some_and(|c| c.status == status && c.reason == reason)
}

fn workflow_status<'a>(s: &'a Scheduler, name: &str) -> Option<&'a WorkflowStatus> {
    s.status.as_ref()?.workflows.iter().find(|w| w.name == name)
}

fn counts(s: &Scheduler) -> (i32, i32) {
    s.status.as_ref().map_or((-1, -1), |st| (st.running, st.queued))
}

async fn events(api: &Api<Event>, regarding: &str, reason: &str) -> Vec<Event> {
    api.list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
                && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

// --------------------------------------------------------------------------------------------- runs

fn has_condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == type_ && c.status == "True"))
}

fn succeeded(job: &Job) -> bool {
    has_condition(job, "Complete")
}

fn suspended(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.suspend) == Some(true)
}

/// What holds a worker, as the controller counts it: not suspended and not finished.
fn active(job: &Job) -> bool {
    !suspended(job) && !succeeded(job) && !has_condition(job, "Failed")
}

fn label<'a>(job: &'a Job, key: &str) -> &'a str {
    job.labels().get(key).map_or("", String::as_str)
}

/// A run's identity: its workflow and due time (Unix seconds), from its labels.
fn run_key(job: &Job) -> (String, i64) {
    (
        label(job, WORKFLOW).to_owned(),
        label(job, SCHEDULED_TIME).parse().unwrap_or(-1),
    )
}

/// Everything a watch on a namespace's Jobs saw.
#[derive(Debug, Default)]
struct Seen {
    synced: bool,
    /// The Jobs as they are now.
    jobs: BTreeMap<String, Job>,
    /// Every Job uid ever seen per run identity (a second uid is a duplicate run).
    uids: BTreeMap<(String, i64), BTreeSet<String>>,
    /// Whether each Job was suspended when first seen (created queued).
    created_suspended: BTreeMap<String, bool>,
    /// Job names in the order they were first seen not suspended (started).
    started: Vec<String>,
    /// The most Jobs active at once.
    max_active: usize,
}

impl Seen {
    fn apply(&mut self, job: Job) {
        let name = job.name_any();
        self.uids
            .entry(run_key(&job))
            .or_default()
            .insert(job.uid().unwrap_or_default());
        self.created_suspended
            .entry(name.clone())
            .or_insert_with(|| suspended(&job));
        if !suspended(&job) && !self.started.contains(&name) {
            self.started.push(name.clone());
        }
        self.jobs.insert(name, job);
        self.max_active = self
            .max_active
            .max(self.jobs.values().filter(|j| active(j)).count());
    }

    /// The Jobs of the runs due at `due`.
    fn due_at(&self, due: i64) -> Vec<&Job> {
        self.jobs.values().filter(|j| run_key(j).1 == due).collect()
    }

    fn summary(&self) -> String {
        let jobs: Vec<String> = self
            .jobs
            .values()
            .map(|j| {
                let state = if succeeded(j) {
                    "succeeded"
                } else if suspended(j) {
                    "queued"
                } else if active(j) {
                    "active"
                } else {
                    "failed"
                };
                format!("{} {state}", j.name_any())
            })
            .collect();
        format!(
            "jobs {jobs:?}, started {:?}, max active {}",
            self.started, self.max_active
        )
    }
}

/// A continuous watch of a namespace's Jobs, recording every state it sees; stops when dropped.
struct JobLog {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl JobLog {
    async fn start(api: Api<Job>) -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let writer = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, watcher::Config::default()).default_backoff().boxed();
            while let Some(event) = stream.next().await {
                let mut s = writer.lock().unwrap();
                match event {
                    Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j)) => s.apply(j),
                    Ok(watcher::Event::Delete(j)) => {
                        s.jobs.remove(&j.name_any());
                    }
                    Ok(watcher::Event::InitDone) => s.synced = true,
                    Ok(watcher::Event::Init) => {}
                    Err(e) => eprintln!("job watch: {e}"),
                }
            }
        });
        let log = Self { seen, task };
        log.until(SHORT, "the Job watch to sync", |s| s.synced.then_some(()))
            .await;
        log
    }

    /// Polls the record until `check` answers, or fails with what was seen.
    async fn until<T>(&self, timeout: Duration, what: &str, check: impl Fn(&Seen) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            {
                let s = self.seen.lock().unwrap();
                if let Some(t) = check(&s) {
                    return t;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "timed out after {timeout:?} waiting for {what}; {}",
                    s.summary()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn read<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }
}

impl Drop for JobLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// True when `names` all have a Job that succeeded.
fn all_succeeded(s: &Seen, names: &[String]) -> bool {
    names.iter().all(|n| s.jobs.get(n).is_some_and(succeeded))
}

// -------------------------------------------------------------------------------------------- tests

/// Six runs due at once with four workers: four start, two queue, never more than four are active, and
/// the queued ones start as workers free up, oldest-due first and, due together, in workflow order.
#[tokio::test]
async fn six_runs_due_at_once_never_exceed_four_workers_and_queue_in_order() {
    let c = setup().await;
    let ns = TestNamespace::for_berth(&c, "sched-workers").await;
    let schedulers: Api<Scheduler> = ns.api();
    let log = JobLog::start(ns.api()).await;
    let flows = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"];
    let spec = json!({
        "workers": 4,
        "workflows": flows.iter().map(|f| workflow(f, "* * * * *")).collect::<Vec<_>>(),
    });
    let (_, due) = create_before_a_boundary(&schedulers, &[scheduler("batch", "20s", &spec)]).await;
    let names: Vec<String> = flows.iter().map(|f| run_name("batch", f, due)).collect();

    let s = wait_for(&schedulers, "batch", NEXT_MINUTE, "4 running and 2 queued", |s| {
        counts(s) == (4, 2)
    })
    .await;
    assert!(ready_is(&s, "True", "Ready"), "{:?}", conditions(&s));
    log.until(SHORT, "six runs, two of them queued", |s| {
        let jobs = s.due_at(due);
        (jobs.len() == 6 && jobs.iter().filter(|j| suspended(j)).count() == 2).then_some(())
    })
    .await;

    // Two run lengths: the last queued run finishes about 40 s after the due time.
    log.until(Duration::from_secs(120), "all six runs to succeed", |s| {
        all_succeeded(s, &names).then_some(())
    })
    .await;
    log.read(|s| {
        assert_eq!(
            s.max_active,
            4,
            "at most (and at some moment exactly) 4 active; {}",
            s.summary()
        );
        let queued: Vec<&str> = names
            .iter()
            .filter(|n| s.created_suspended.get(*n) == Some(&true))
            .map(String::as_str)
            .collect();
        assert_eq!(queued, names[4..], "the last two in workflow order were queued");
        let started: Vec<&String> = s.started.iter().filter(|n| names.contains(n)).collect();
        assert_eq!(
            started,
            names.iter().collect::<Vec<_>>(),
            "started in due (then workflow) order"
        );
        for n in &names {
            let key = run_key(&s.jobs[n]);
            assert_eq!(key.1, due, "{n} carries its due time");
            assert_eq!(s.uids[&key].len(), 1, "one Job for {key:?}");
        }
    });
    let s = wait_for(&schedulers, "batch", SHORT, "an idle status", |s| {
        counts(s) == (0, 0)
            && flows.iter().all(|f| {
                workflow_status(s, f).and_then(|w| w.last_run.as_deref())
                    == Some(run_name("batch", f, due).as_str())
                    && workflow_status(s, f)
                        .and_then(|w| w.last_successful_time.as_ref())
                        .is_some()
            })
    })
    .await;
    for f in flows {
        let w = workflow_status(&s, f).unwrap();
        assert!(
            w.last_schedule_time.as_ref().unwrap().0.as_second() >= due,
            "{w:?}"
        );
        assert!(
            w.last_successful_time.as_ref().unwrap().0.as_second() >= due,
            "{w:?}"
        );
    }
    ns.delete().await;
}

/// SIGKILL of the operator while runs are queued: the queue stays in the cluster (the active run finishes,
/// the queued ones stay queued while no operator runs), and the successor starts each queued run once.
#[tokio::test]
async fn a_killed_operator_loses_no_queued_run_and_doubles_none() {
    if external() {
        eprintln!("skipped: berth runs in the cluster, this test cannot kill it");
        return;
    }
    let c = setup().await;
    let ns = TestNamespace::for_berth(&c, "sched-restart").await;
    let schedulers: Api<Scheduler> = ns.api();
    let log = JobLog::start(ns.api()).await;
    let flows = ["first", "second", "third"];
    let spec = json!({
        "workers": 1,
        "workflows": flows.iter().map(|f| workflow(f, "* * * * *")).collect::<Vec<_>>(),
    });
    let (_, due) = create_before_a_boundary(&schedulers, &[scheduler("crashy", "8s", &spec)]).await;
    let names: Vec<String> = flows.iter().map(|f| run_name("crashy", f, due)).collect();
    log.until(NEXT_MINUTE, "one active and two queued runs", |s| {
        let jobs = s.due_at(due);
        (jobs.len() == 3 && jobs.iter().filter(|j| suspended(j)).count() == 2).then_some(())
    })
    .await;

    // Hold the slot: no other test may start an operator while this one is down.
    let mut slot = OPERATOR.lock().await;
    let old = slot.take().expect("the operator of this binary");
    old.signal("KILL");
    let exit = old
        .wait(Duration::from_secs(10))
        .expect("the killed operator exits");
    assert_eq!(exit.signal(), Some(9), "{exit:?}");

    log.until(SHORT, "the active run to finish without an operator", |s| {
        s.jobs.get(&names[0]).is_some_and(succeeded).then_some(())
    })
    .await;
    log.read(|s| {
        assert!(
            names[1..].iter().all(|n| s.jobs.get(n).is_some_and(suspended)),
            "queued runs wait for an operator; {}",
            s.summary()
        );
    });

    let successor = Operator::start("scheduler-restarted", &[]);
    eventually(SHORT, "the successor to take the leader Lease", || async {
        (successor.metric("berth_leader", &[]) == Some(1.0)).then_some(())
    })
    .await;
    *slot = Some(successor);
    drop(slot);

    log.until(Duration::from_secs(60), "every run to succeed", |s| {
        all_succeeded(s, &names).then_some(())
    })
    .await;
    log.read(|s| {
        assert_eq!(s.max_active, 1, "one worker; {}", s.summary());
        let started: Vec<&String> = s.started.iter().filter(|n| names.contains(n)).collect();
        assert_eq!(started, names.iter().collect::<Vec<_>>());
        assert_eq!(s.due_at(due).len(), 3, "{}", s.summary());
        for (key, uids) in &s.uids {
            assert_eq!(uids.len(), 1, "run {key:?} made more than once: {uids:?}");
        }
    });
    wait_for(
        &schedulers,
        "crashy",
        SHORT,
        "an idle status naming the runs",
        |s| {
            counts(s) == (0, 0)
                && flows.iter().all(|f| {
                    workflow_status(s, f)
                        .and_then(|w| w.last_successful_time.as_ref())
                        .is_some()
                })
        },
    )
    .await;
    ns.delete().await;
}

/// Fast runs across two minutes with `successfulJobsHistoryLimit: 1`: the older succeeded Job of each
/// workflow is deleted, and the status names each workflow's last run and times.
#[tokio::test]
async fn history_limits_prune_old_runs_and_status_tells_the_last_run() {
    let c = setup().await;
    let ns = TestNamespace::for_berth(&c, "sched-history").await;
    let schedulers: Api<Scheduler> = ns.api();
    let jobs: Api<Job> = ns.api();
    let flows = ["vacuum", "report"];
    let spec = json!({
        "workers": 2,
        "successfulJobsHistoryLimit": 1,
        "workflows": flows.iter().map(|f| workflow(f, "* * * * *")).collect::<Vec<_>>(),
    });
    let (_, first) = create_before_a_boundary(&schedulers, &[scheduler("tidy", "1s", &spec)]).await;
    let second = first + 60;

    // Both first runs succeed…
    for f in flows {
        wait_for(
            &jobs,
            &run_name("tidy", f, first),
            NEXT_MINUTE,
            "success",
            succeeded,
        )
        .await;
    }
    // …and once the second ones have too, the first ones go.
    let s = wait_for(
        &schedulers,
        "tidy",
        Duration::from_secs(90),
        "the second runs' success",
        |s| {
            flows.iter().all(|f| {
                workflow_status(s, f).is_some_and(|w| {
                    w.last_run.as_deref() == Some(run_name("tidy", f, second).as_str())
                        && w.last_successful_time
                            .as_ref()
                            .is_some_and(|t| t.0.as_second() >= second)
                })
            })
        },
    )
    .await;
    for f in flows {
        wait_gone(&jobs, &run_name("tidy", f, first), SHORT).await;
        let w = workflow_status(&s, f).unwrap();
        assert!(
            w.last_schedule_time.as_ref().unwrap().0.as_second() >= second,
            "{w:?}"
        );
        assert_eq!(w.missed, 0, "{w:?}");
    }
    let left = jobs.list(&ListParams::default()).await.unwrap().items;
    for f in flows {
        let done: Vec<String> = left
            .iter()
            .filter(|j| label(j, WORKFLOW) == f && succeeded(j))
            .map(ResourceExt::name_any)
            .collect();
        assert!(done.len() <= 1, "{f}: {done:?} kept, limit 1");
    }
    assert!(ready_is(&s, "True", "Ready"), "{:?}", conditions(&s));
    ns.delete().await;
}

/// A suspended Scheduler starts nothing at a due minute (a running sibling in the same namespace shows the
/// minute came) and says `Suspended`; on resume, the due time it slept through starts once, late.
#[tokio::test]
async fn suspend_starts_nothing_and_resume_starts_the_slept_run_once() {
    let c = setup().await;
    let ns = TestNamespace::for_berth(&c, "sched-suspend").await;
    let schedulers: Api<Scheduler> = ns.api();
    let jobs: Api<Job> = ns.api();
    // The two Schedulers name their workflows apart, so each run is known by its workflow alone.
    let paused = scheduler(
        "paused",
        "1s",
        &json!({"workers": 1, "suspend": true, "workflows": [workflow("sleeper", "* * * * *")]}),
    );
    let control = scheduler(
        "control",
        "1s",
        &json!({"workers": 1, "workflows": [workflow("awake", "* * * * *")]}),
    );
    let (_, due) = create_before_a_boundary(&schedulers, &[paused, control]).await;
    wait_for(&schedulers, "paused", SHORT, "Ready/Suspended", |s| {
        ready_is(s, "True", "Suspended")
    })
    .await;

    wait_for(
        &jobs,
        &run_name("control", "awake", due),
        NEXT_MINUTE,
        "the control run's success",
        succeeded,
    )
    .await;
    let theirs = jobs
        .list(&ListParams::default().labels(&format!("{INSTANCE}=paused")))
        .await
        .unwrap()
        .items;
    assert!(
        theirs.is_empty(),
        "a suspended Scheduler started {:?}",
        theirs.iter().map(ResourceExt::name_any).collect::<Vec<_>>()
    );
    let s = schedulers.get("paused").await.unwrap();
    assert!(ready_is(&s, "True", "Suspended"), "{:?}", conditions(&s));
    assert_eq!(counts(&s), (0, 0));
    assert_eq!(
        workflow_status(&s, "sleeper").and_then(|w| w.last_schedule_time.as_ref()),
        None
    );

    schedulers
        .patch(
            "paused",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": false}})),
        )
        .await
        .unwrap();
    let s = wait_for(
        &schedulers,
        "paused",
        SHORT,
        "Ready/Ready and the slept run",
        |s| {
            ready_is(s, "True", "Ready")
                && workflow_status(s, "sleeper").and_then(|w| w.last_run.as_deref())
                    == Some(run_name("paused", "sleeper", due).as_str())
        },
    )
    .await;
    let w = workflow_status(&s, "sleeper").unwrap();
    assert_eq!(w.last_schedule_time.as_ref().unwrap().0.as_second(), due, "{w:?}");
    assert_eq!(w.missed, 0, "{w:?}");
    wait_for(
        &jobs,
        &run_name("paused", "sleeper", due),
        SHORT,
        "the slept run's success",
        succeeded,
    )
    .await;
    let theirs = jobs
        .list(&ListParams::default().labels(&format!("{INSTANCE}=paused")))
        .await
        .unwrap()
        .items;
    let at_due = theirs.iter().filter(|j| run_key(j).1 == due).count();
    assert_eq!(at_due, 1, "the slept due time runs once");
    ns.delete().await;
}

/// Deleting a Scheduler lets the garbage collector remove its Jobs (running and queued) and their pods.
#[tokio::test]
async fn deleting_the_scheduler_garbage_collects_its_jobs_and_pods() {
    let c = setup().await;
    let ns = TestNamespace::for_berth(&c, "sched-gc").await;
    let schedulers: Api<Scheduler> = ns.api();
    let jobs: Api<Job> = ns.api();
    let pods: Api<Pod> = ns.api();
    let spec = json!({
        "workers": 1,
        "workflows": [workflow("long", "* * * * *"), workflow("waiting", "* * * * *")],
    });
    let (made, due) = create_before_a_boundary(&schedulers, &[scheduler("doomed", "10m", &spec)]).await;
    let uid = made[0].uid().unwrap();
    let running = wait_for(
        &jobs,
        &run_name("doomed", "long", due),
        NEXT_MINUTE,
        "a running run",
        |j| !suspended(j),
    )
    .await;
    let queued = wait_for(
        &jobs,
        &run_name("doomed", "waiting", due),
        SHORT,
        "a queued run",
        suspended,
    )
    .await;
    for j in [&running, &queued] {
        assert!(
            j.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true) && o.block_owner_deletion == Some(true)),
            "{:?}",
            j.owner_references()
        );
    }
    let selector = format!("batch.kubernetes.io/job-name={}", running.name_any());
    let pod = eventually(SHORT, "the run's pod to run", || async {
        pods.list(&ListParams::default().labels(&selector))
            .await
            .unwrap()
            .items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;

    schedulers
        .delete("doomed", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&schedulers, "doomed", SHORT).await;
    wait_gone(&jobs, &running.name_any(), Duration::from_secs(60)).await;
    wait_gone(&jobs, &queued.name_any(), Duration::from_secs(60)).await;
    wait_gone(&pods, &pod.name_any(), Duration::from_secs(60)).await;
    assert!(
        jobs.list(&ListParams::default()).await.unwrap().items.is_empty(),
        "no run made after the deletion"
    );
    ns.delete().await;
}

/// A schedule the CRD admits but cron rejects (`61 * * * *`): `Ready=False/InvalidSchedule`, one Warning
/// Event, no run for that workflow, while its valid sibling runs on time.
#[tokio::test]
async fn an_invalid_schedule_is_reported_while_its_sibling_runs() {
    let c = setup().await;
    let ns = TestNamespace::for_berth(&c, "sched-invalid").await;
    let schedulers: Api<Scheduler> = ns.api();
    let jobs: Api<Job> = ns.api();
    let spec = json!({
        "workers": 2,
        "workflows": [workflow("broken", "61 * * * *"), workflow("fine", "* * * * *")],
    });
    let (_, due) = create_before_a_boundary(&schedulers, &[scheduler("mixed", "1s", &spec)]).await;
    let s = wait_for(&schedulers, "mixed", SHORT, "Ready=False/InvalidSchedule", |s| {
        ready_is(s, "False", "InvalidSchedule")
    })
    .await;
    let ready = find_condition(conditions(&s), "Ready").unwrap();
    assert!(ready.message.contains("workflow broken"), "{}", ready.message);
    assert!(!ready.message.contains("workflow fine"), "{}", ready.message);
    let valid = find_condition(conditions(&s), "SchedulesValid").unwrap();
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "InvalidSchedule")
    );

    let event_api: Api<Event> = ns.api();
    let warning = eventually(SHORT, "an InvalidSchedule Event", || async {
        events(&event_api, "mixed", "InvalidSchedule").await.pop()
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("workflow broken"),
        "{warning:?}"
    );

    wait_for(
        &jobs,
        &run_name("mixed", "fine", due),
        NEXT_MINUTE,
        "the valid sibling's success",
        succeeded,
    )
    .await;
    let s = wait_for(
        &schedulers,
        "mixed",
        SHORT,
        "the sibling's success in status",
        |s| {
            workflow_status(s, "fine")
                .and_then(|w| w.last_successful_time.as_ref())
                .is_some()
        },
    )
    .await;
    assert!(ready_is(&s, "False", "InvalidSchedule"), "{:?}", conditions(&s));
    let broken = workflow_status(&s, "broken").unwrap();
    assert_eq!(
        (broken.last_schedule_time.as_ref(), broken.last_run.as_deref()),
        (None, None)
    );
    let all = jobs.list(&ListParams::default()).await.unwrap().items;
    assert!(
        all.iter().all(|j| label(j, WORKFLOW) == "fine"),
        "{:?}",
        all.iter().map(ResourceExt::name_any).collect::<Vec<_>>()
    );
    // Said once, not on every reconcile (several ran since: the run started and finished).
    let said = events(&event_api, "mixed", "InvalidSchedule").await;
    assert_eq!(said.len(), 1, "{said:?}");
    assert!(said[0].series.is_none(), "repeated: {:?}", said[0].series);
    ns.delete().await;
}

/// Whether `job` is controlled by the object with `uid`.
fn controlled_by(job: &Job, uid: &str) -> bool {
    job.owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// Two Schedulers in one namespace, each with a workflow named `sync`, over two due minutes: every minute
/// each gets a run of its own (its name, its label, it as controller), none is lost, and each one's status
/// names a run that is its own Job, at its `lastScheduleTime`. Before run names carried the Scheduler, the
/// second create of a minute answered AlreadyExists and that Scheduler took the other's Job for its run.
#[tokio::test]
async fn two_schedulers_with_the_same_workflow_name_both_get_every_run() {
    let c = setup().await;
    let ns = TestNamespace::for_berth(&c, "sched-twins").await;
    let schedulers: Api<Scheduler> = ns.api();
    let jobs: Api<Job> = ns.api();
    let event_api: Api<Event> = ns.api();
    let log = JobLog::start(ns.api()).await;
    let twins = ["twin-a", "twin-b"];
    let spec = json!({"workers": 1, "workflows": [workflow("sync", "* * * * *")]});
    let (made, first) =
        create_before_a_boundary(&schedulers, &twins.map(|t| scheduler(t, "1s", &spec))).await;
    let uids: BTreeMap<&str, String> = twins
        .iter()
        .zip(&made)
        .map(|(t, s)| (*t, s.uid().expect("a uid")))
        .collect();
    let second = first + 60;
    let runs: Vec<(&str, i64, String)> = [first, second]
        .into_iter()
        .flat_map(|due| twins.map(|t| (t, due, run_name(t, "sync", due))))
        .collect();
    let names: Vec<String> = runs.iter().map(|(_, _, n)| n.clone()).collect();
    let distinct: BTreeSet<&String> = names.iter().collect();
    assert_eq!(distinct.len(), 4, "one name per Scheduler and minute: {names:?}");

    log.until(
        NEXT_MINUTE + Duration::from_secs(60),
        "each Scheduler's runs of two minutes to succeed",
        |s| all_succeeded(s, &names).then_some(()),
    )
    .await;
    log.read(|s| {
        for (twin, due, name) in &runs {
            let job = &s.jobs[name];
            assert!(
                controlled_by(job, &uids[twin]),
                "{name} is not {twin}'s: {:?}",
                job.owner_references()
            );
            assert_eq!(label(job, INSTANCE), *twin, "{name}");
            assert_eq!(run_key(job), ("sync".to_owned(), *due), "{name}");
        }
        for twin in twins {
            let mut per_minute: BTreeMap<i64, usize> = BTreeMap::new();
            for job in s.jobs.values().filter(|j| label(j, INSTANCE) == twin) {
                *per_minute.entry(run_key(job).1).or_default() += 1;
            }
            assert!(
                per_minute.values().all(|&n| n == 1),
                "{twin}: {per_minute:?}; {}",
                s.summary()
            );
        }
    });

    for twin in twins {
        let s = wait_for(&schedulers, twin, SHORT, "a status telling its second run", |s| {
            workflow_status(s, "sync").is_some_and(|w| {
                let at_least = |t: Option<&Time>| t.is_some_and(|t| t.0.as_second() >= second);
                at_least(w.last_schedule_time.as_ref()) && at_least(w.last_successful_time.as_ref())
            })
        })
        .await;
        assert!(ready_is(&s, "True", "Ready"), "{twin}: {:?}", conditions(&s));
        let w = workflow_status(&s, "sync").unwrap();
        assert_eq!(w.missed, 0, "{twin}: {w:?}");
        // What the status claims is a Job that exists and is this Scheduler's own.
        let last = w
            .last_schedule_time
            .as_ref()
            .expect("lastScheduleTime")
            .0
            .as_second();
        let last_run = w.last_run.clone().expect("lastRun");
        let job = jobs.get(&last_run).await.expect("the last run's Job");
        assert!(
            controlled_by(&job, &uids[twin]),
            "{twin}: {last_run} is not its own"
        );
        assert_eq!(
            run_key(&job).1,
            last,
            "{twin}: lastScheduleTime is its last run's"
        );
        let conflicts = events(&event_api, twin, "NameConflict").await;
        assert!(conflicts.is_empty(), "{twin}: {conflicts:?}");
    }
    ns.delete().await;
}

/// The series `name` with `labels` on the operator this binary started: `None` when it started none (berth
/// runs in the cluster) or `/metrics` does not answer, else their sum when any exist.
async fn scrape_metric(name: &str, labels: &[(&str, &str)]) -> Option<Option<f64>> {
    let slot = OPERATOR.lock().await;
    let operator = slot.as_ref()?;
    let scrape = operator.scrape().ok()?;
    let present = scrape.iter().any(|(series, _)| series.matches(name, labels));
    Some(present.then(|| scrape.sum(name, labels)))
}

/// `kubectl berth run`'s annotation on a Scheduler whose one worker is busy: one manual run is created,
/// labelled `manual`, queued (suspended) and counted as queued; it starts once the scheduled run ends,
/// and only once. A request for a workflow the spec lacks is reported, not run.
#[tokio::test]
async fn a_run_asked_for_by_hand_queues_behind_a_busy_worker_then_starts() {
    let c = setup().await;
    let ns = TestNamespace::for_berth(&c, "sched-manual").await;
    let schedulers: Api<Scheduler> = ns.api();
    let log = JobLog::start(ns.api()).await;
    // `adhoc` comes due once a year, on 1 January: in this test it runs by hand only.
    let spec = json!({
        "workers": 1,
        "workflows": [workflow("busy", "* * * * *"), workflow("adhoc", "0 0 1 1 *")],
    });
    let (_, due) = create_before_a_boundary(&schedulers, &[scheduler("handy", "20s", &spec)]).await;
    let busy = run_name("handy", "busy", due);
    log.until(NEXT_MINUTE, "the scheduled run to hold the worker", |s| {
        s.jobs.get(&busy).is_some_and(active).then_some(())
    })
    .await;

    let requested = Timestamp::from_second(i64::try_from(unix_now().as_secs()).unwrap()).unwrap();
    let ask = |workflow: &str, at: String| {
        let key = format!("{RUN_REQUEST_PREFIX}{workflow}");
        Patch::Merge(json!({"metadata": {"annotations": {key: at}}}))
    };
    schedulers
        .patch(
            "handy",
            &PatchParams::default(),
            &ask("adhoc", requested.to_string()),
        )
        .await
        .unwrap();
    let manual = berth_scheduler::plan::manual_run_name("handy", "adhoc", requested);
    let job = log
        .until(SHORT, "the manual run, queued", |s| s.jobs.get(&manual).cloned())
        .await;
    assert!(suspended(&job), "the worker is busy: {job:?}");
    assert_eq!(label(&job, TRIGGER_LABEL), "manual");
    assert_eq!(run_key(&job), ("adhoc".to_owned(), requested.as_second()));
    let s = wait_for(&schedulers, "handy", SHORT, "the queued manual run", |s| {
        counts(s).1 == 1
            && workflow_status(s, "adhoc").and_then(|w| w.last_manual_request.as_ref())
                == Some(&Time(requested))
    })
    .await;
    assert_eq!(
        workflow_status(&s, "adhoc").and_then(|w| w.last_schedule_time.as_ref()),
        None,
        "a manual run is not a due time"
    );
    let queued = [
        ("namespace", ns.name.as_str()),
        ("scheduler", "handy"),
        ("state", "queued"),
    ];
    if scrape_metric("berth_scheduler_runs", &queued).await.is_some() {
        eventually(SHORT, "berth_scheduler_runs{state=queued} 1", || async {
            let value = scrape_metric("berth_scheduler_runs", &queued).await?;
            (value == Some(1.0)).then_some(())
        })
        .await;
    }

    log.until(
        NEXT_MINUTE,
        "the manual run to start once the worker frees",
        |s| s.started.contains(&manual).then_some(()),
    )
    .await;
    log.read(|s| {
        assert!(s.jobs.get(&busy).is_some_and(succeeded), "{}", s.summary());
        assert_eq!(label(&s.jobs[&busy], TRIGGER_LABEL), "schedule");
        assert_eq!(s.max_active, 1, "one worker; {}", s.summary());
        let pos = |n: &String| s.started.iter().position(|x| x == n);
        assert!(pos(&busy) < pos(&manual), "{}", s.summary());
    });
    log.until(NEXT_MINUTE, "the manual run to succeed", |s| {
        s.jobs.get(&manual).is_some_and(succeeded).then_some(())
    })
    .await;
    log.read(|s| {
        let runs = s.uids.get(&("adhoc".to_owned(), requested.as_second()));
        assert_eq!(
            runs.map(BTreeSet::len),
            Some(1),
            "one run per request; {}",
            s.summary()
        );
        let adhoc = s.jobs.values().filter(|j| label(j, WORKFLOW) == "adhoc").count();
        assert_eq!(adhoc, 1, "{}", s.summary());
    });

    schedulers
        .patch(
            "handy",
            &PatchParams::default(),
            &ask("nope", requested.to_string()),
        )
        .await
        .unwrap();
    let s = wait_for(
        &schedulers,
        "handy",
        SHORT,
        "the unknown workflow reported",
        |s| {
            find_condition(conditions(s), "RunRequestsValid")
                .is_some_and(|c| c.status == "False" && c.reason == "InvalidRunRequest")
        },
    )
    .await;
    assert!(ready_is(&s, "True", "Ready"), "{:?}", conditions(&s));
    let warned = events(&ns.api(), "handy", "InvalidRunRequest").await;
    assert!(!warned.is_empty(), "a Warning Event");

    // Gone with the Scheduler: its series too.
    schedulers
        .delete("handy", &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&schedulers, "handy", SHORT).await;
    if scrape_metric("berth_scheduler_runs", &queued).await.is_some() {
        eventually(
            Duration::from_secs(60),
            "the deleted Scheduler's series to go",
            || async {
                let runs = scrape_metric("berth_scheduler_runs", &queued[..2]).await?;
                runs.is_none().then_some(())
            },
        )
        .await;
    }
    ns.delete().await;
}
