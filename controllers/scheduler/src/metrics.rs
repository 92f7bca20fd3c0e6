//! The Scheduler's series for the alert rules, made from the status a reconcile computes:
//! `berth_scheduler_runs{namespace,scheduler,state}` from `running` and `queued`, and
//! `berth_workflow_last_finish_timestamp_seconds{namespace,scheduler,workflow,result}` from each workflow's
//! `lastSuccessfulTime` / `lastFailedTime` (a workflow that never ended one way has no series for it).
//!
//! A series goes when what it describes goes: a workflow's with the workflow (the next status lacks it),
//! a Scheduler's with the Scheduler. The process remembers what it published per Scheduler, since a
//! metric family cannot be listed.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use berth_api::SchedulerStatus;
use berth_kit::metrics::{Metrics, SchedulerRunLabels, WorkflowLabels};

pub const RUNNING: &str = "running";
pub const QUEUED: &str = "queued";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";

/// Every series of one Scheduler, with its value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Series {
    pub runs: Vec<(SchedulerRunLabels, i64)>,
    pub finishes: Vec<(WorkflowLabels, i64)>,
}

/// The series `status` of Scheduler `namespace/scheduler` stands for.
#[must_use]
pub fn series(namespace: &str, scheduler: &str, status: &SchedulerStatus) -> Series {
    let runs = [(RUNNING, status.running), (QUEUED, status.queued)]
        .into_iter()
        .map(|(state, count)| {
            let labels = SchedulerRunLabels {
                namespace: namespace.to_owned(),
                scheduler: scheduler.to_owned(),
                state,
            };
            (labels, i64::from(count))
        })
        .collect();
    let finishes = status
        .workflows
        .iter()
        .flat_map(|w| {
            [
                (SUCCEEDED, w.last_successful_time.as_ref()),
                (FAILED, w.last_failed_time.as_ref()),
            ]
            .into_iter()
            .filter_map(move |(result, at)| {
                let labels = WorkflowLabels {
                    namespace: namespace.to_owned(),
                    scheduler: scheduler.to_owned(),
                    workflow: w.name.clone(),
                    result,
                };
                Some((labels, at?.0.as_second()))
            })
        })
        .collect();
    Series { runs, finishes }
}

/// `(namespace, name)` of a Scheduler: its series are named so, whatever its uid.
type Key = (String, String);

/// The workflow series this process has published, per Scheduler.
#[derive(Debug, Default)]
pub struct Published {
    finishes: Mutex<HashMap<Key, HashSet<WorkflowLabels>>>,
}

impl Published {
    /// Sets the Scheduler's series from `status` and removes its workflow series the status no longer has.
    pub fn publish(&self, metrics: &Metrics, namespace: &str, scheduler: &str, status: &SchedulerStatus) {
        let Series { runs, finishes } = series(namespace, scheduler, status);
        for (labels, value) in runs {
            metrics.scheduler_runs.get_or_create(&labels).set(value);
        }
        let now: HashSet<WorkflowLabels> = finishes.iter().map(|(l, _)| l.clone()).collect();
        for (labels, value) in finishes {
            metrics.workflow_last_finish.get_or_create(&labels).set(value);
        }
        let key = (namespace.to_owned(), scheduler.to_owned());
        let before = self.lock().insert(key, now.clone()).unwrap_or_default();
        for gone in before.difference(&now) {
            metrics.workflow_last_finish.remove(gone);
        }
    }

    /// Removes every series of the Scheduler.
    pub fn forget(&self, metrics: &Metrics, namespace: &str, scheduler: &str) {
        let key = (namespace.to_owned(), scheduler.to_owned());
        for labels in self.lock().remove(&key).unwrap_or_default() {
            metrics.workflow_last_finish.remove(&labels);
        }
        for state in [RUNNING, QUEUED] {
            metrics.scheduler_runs.remove(&SchedulerRunLabels {
                namespace: namespace.to_owned(),
                scheduler: scheduler.to_owned(),
                state,
            });
        }
    }

    /// Removes the series of every Scheduler published for but not `present` any more.
    pub fn keep_only(&self, metrics: &Metrics, present: &HashSet<Key>) {
        let gone: Vec<Key> = self
            .lock()
            .keys()
            .filter(|k| !present.contains(*k))
            .cloned()
            .collect();
        for (namespace, scheduler) in gone {
            self.forget(metrics, &namespace, &scheduler);
        }
    }

    /// The Schedulers published for.
    #[must_use]
    pub fn schedulers(&self) -> Vec<Key> {
        self.lock().keys().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, HashSet<WorkflowLabels>>> {
        // The map is consistent after every statement, so a panic elsewhere cannot leave it half-written.
        self.finishes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use berth_api::WorkflowStatus;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    fn time(s: &str) -> Option<Time> {
        Some(Time(s.parse().unwrap()))
    }

    fn a_status() -> SchedulerStatus {
        SchedulerStatus {
            running: 2,
            queued: 5,
            workflows: vec![
                WorkflowStatus {
                    name: "vacuum".into(),
                    last_successful_time: time("2025-01-01T10:00:41Z"),
                    last_failed_time: time("2025-01-01T09:00:00Z"),
                    ..WorkflowStatus::default()
                },
                WorkflowStatus {
                    name: "never-ran".into(),
                    last_schedule_time: time("2025-01-01T10:00:00Z"),
                    ..WorkflowStatus::default()
                },
            ],
            ..SchedulerStatus::default()
        }
    }

    fn text(registry: &Registry) -> String {
        let mut out = String::new();
        encode(&mut out, registry).unwrap();
        out
    }

    #[test]
    fn the_status_maps_to_counts_and_finish_times() {
        let s = series("tenant-ns", "nightly-jobs", &a_status());
        let runs: Vec<(&str, i64)> = s.runs.iter().map(|(l, v)| (l.state, *v)).collect();
        assert_eq!(runs, [(RUNNING, 2), (QUEUED, 5)]);
        assert!(
            s.runs
                .iter()
                .all(|(l, _)| l.namespace == "tenant-ns" && l.scheduler == "nightly-jobs")
        );
        let finishes: Vec<(&str, &str, i64)> = s
            .finishes
            .iter()
            .map(|(l, v)| (l.workflow.as_str(), l.result, *v))
            .collect();
        assert_eq!(
            finishes,
            [
                ("vacuum", SUCCEEDED, 1_735_725_641),
                ("vacuum", FAILED, 1_735_722_000)
            ],
            "a workflow that never ended has no series"
        );
        assert_eq!(
            series("tenant-ns", "nightly-jobs", &SchedulerStatus::default())
                .runs
                .len(),
            2,
            "zero runs is a value"
        );
    }

    #[test]
    fn a_workflow_leaving_the_spec_or_the_scheduler_going_removes_its_series() {
        let mut registry = Registry::default();
        let m = Metrics::default().register(&mut registry);
        let p = Published::default();
        p.publish(&m, "tenant-ns", "nightly-jobs", &a_status());
        p.publish(&m, "tenant-ns", "other", &a_status());
        let out = text(&registry);
        for line in [
            "berth_scheduler_runs{namespace=\"tenant-ns\",scheduler=\"nightly-jobs\",state=\"queued\"} 5",
            "berth_workflow_last_finish_timestamp_seconds{namespace=\"tenant-ns\",scheduler=\"nightly-jobs\",workflow=\"vacuum\",result=\"failed\"} 1735722000",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }

        let mut fewer = a_status();
        fewer.workflows.remove(0);
        fewer.queued = 0;
        p.publish(&m, "tenant-ns", "nightly-jobs", &fewer);
        let out = text(&registry);
        assert!(
            !out.contains("scheduler=\"nightly-jobs\",workflow=\"vacuum\""),
            "{out}"
        );
        assert!(out.contains("scheduler=\"other\",workflow=\"vacuum\""), "{out}");
        assert!(
            out.contains(
                "berth_scheduler_runs{namespace=\"tenant-ns\",scheduler=\"nightly-jobs\",state=\"queued\"} 0"
            ),
            "{out}"
        );

        let present = HashSet::from([("tenant-ns".to_owned(), "other".to_owned())]);
        p.keep_only(&m, &present);
        let out = text(&registry);
        assert!(!out.contains("nightly-jobs"), "{out}");
        assert!(out.contains("scheduler=\"other\""), "{out}");
        assert_eq!(p.schedulers(), [("tenant-ns".to_owned(), "other".to_owned())]);
        p.forget(&m, "tenant-ns", "other");
        assert!(!text(&registry).contains("tenant-ns"));
        assert!(p.schedulers().is_empty());
    }
}
