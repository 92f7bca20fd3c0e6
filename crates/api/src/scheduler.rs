use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{UNIQUE_WORKFLOWS_MESSAGE, UNIQUE_WORKFLOWS_RULE, Workflow};

/// A tenant's scheduled workflows, run as Jobs with at most `workers` at a time.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Scheduler",
    namespaced,
    status = "SchedulerStatus",
    shortname = "bsched",
    category = "berth",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Workers","type":"integer","jsonPath":".spec.workers"}"#,
    printcolumn = r#"{"name":"Running","type":"integer","jsonPath":".status.running"}"#,
    printcolumn = r#"{"name":"Queued","type":"integer","jsonPath":".status.queued"}"#,
    printcolumn = r#"{"name":"Suspended","type":"boolean","jsonPath":".spec.suspend"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerSpec {
    /// Runs allowed at once across all workflows; due runs beyond it wait as suspended Jobs.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 64").message("workers must be between 1 and 64"))]
    pub workers: i32,
    /// Start no new runs; queued runs stay queued.
    #[serde(default)]
    pub suspend: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(UNIQUE_WORKFLOWS_RULE).message(UNIQUE_WORKFLOWS_MESSAGE))]
    pub workflows: Vec<Workflow>,
    /// Secret whose keys are given to every run as environment variables (the database connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from_secret: Option<String>,
    /// Succeeded Jobs kept per workflow.
    #[serde(default = "default_successful_history")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("successfulJobsHistoryLimit must be between 0 and 100"))]
    pub successful_jobs_history_limit: i32,
    /// Failed Jobs kept per workflow.
    #[serde(default = "default_failed_history")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 100").message("failedJobsHistoryLimit must be between 0 and 100"))]
    pub failed_jobs_history_limit: i32,
}

impl Default for SchedulerSpec {
    fn default() -> Self {
        Self {
            workers: 1,
            suspend: false,
            workflows: Vec::new(),
            env_from_secret: None,
            successful_jobs_history_limit: default_successful_history(),
            failed_jobs_history_limit: default_failed_history(),
        }
    }
}

fn default_successful_history() -> i32 {
    3
}
fn default_failed_history() -> i32 {
    1
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Jobs running now.
    #[serde(default)]
    pub running: i32,
    /// Jobs waiting (suspended) for a free worker.
    #[serde(default)]
    pub queued: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workflows: Vec<WorkflowStatus>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowStatus {
    pub name: String,
    /// The newest due time the scheduler acted on: started, queued, skipped (Forbid) or counted as missed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_time: Option<Time>,
    /// When a run last failed: its command exited non-zero more than `backoffLimit` times, or it ran past
    /// `activeDeadlineSeconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    /// Runs skipped because they were missed by more than the starting deadline.
    #[serde(default)]
    pub missed: i32,
    /// The newest run request (annotation `run.berth.dev/<workflow>`) acted on: its run started or queued,
    /// skipped by `Forbid`, or found later than the starting deadline. An annotation value not newer than
    /// this starts nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_manual_request: Option<Time>,
    /// The run request annotation's value while it is refused: not an RFC 3339 time, or dated ahead of the
    /// operator's clock when it was read. It stays refused even once that time has passed (a run asked for
    /// "now" never starts late); set a new value to ask again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused_run_request: Option<String>,
}

/// Prefix of the Scheduler annotation that asks for a run now: `run.berth.dev/<workflow>` set to the time of
/// the request (RFC 3339, e.g. `2026-12-01T08:00:00Z`). The Scheduler starts one manual run per new value,
/// under the same `workers` limit and `concurrencyPolicy` as a scheduled run (`kubectl berth run`).
/// A value not newer than the workflow's `lastManualRequest` starts nothing; one more than a minute ahead
/// of the operator's clock, or not a time, is refused (`RunRequestsValid=False`, a Warning Event).
pub const RUN_REQUEST_PREFIX: &str = "run.berth.dev/";
/// Label of a run's Job naming its workflow.
pub const WORKFLOW_LABEL: &str = "berth.dev/workflow";
/// Label of a run's Job saying what started it: [`TRIGGER_SCHEDULE`] or [`TRIGGER_MANUAL`].
pub const TRIGGER_LABEL: &str = "berth.dev/trigger";
pub const TRIGGER_SCHEDULE: &str = "schedule";
pub const TRIGGER_MANUAL: &str = "manual";
