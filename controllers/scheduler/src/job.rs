//! The Job of one run (built, never read back into a spec), and the planner's view of an existing Job.
//!
//! Every run's pod runs under the `restricted` Pod Security Standard: non-root (UID/GID 65532), no
//! privilege escalation, all capabilities dropped, the runtime's default seccomp profile, and no service
//! account token (a workflow talks to its database, not to the Kubernetes API). The root filesystem is
//! read-only, so a compromised run cannot rewrite its own image's binaries; its scratch space is an
//! `emptyDir` at `/tmp`, capped at [`SCRATCH_LIMIT`] so one run cannot fill the node's disk.
//!
//! **Pod annotations.** A Scheduler annotation whose key starts with `pod.berth.dev/` is copied onto every
//! run's pod with the leading `pod.` removed: `pod.berth.dev/kwok-complete-after: 20s` on the Scheduler gives
//! the pods `berth.dev/kwok-complete-after: 20s` (an annotation key has one `/`, so the prefix cannot simply
//! be cut off in front of a key that has its own). Other Scheduler annotations are not copied.

use std::collections::BTreeMap;

use berth_api::{Scheduler, TRIGGER_LABEL, TRIGGER_MANUAL, Workflow};
use berth_kit::labels::{BERTH, COMPONENT, INSTANCE, MANAGED_BY, customer_of, labels};
use berth_kit::seal::Seal;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, EnvFromSource, PodSecurityContext, PodSpec,
    PodTemplateSpec, ResourceRequirements, SeccompProfile, SecretEnvSource, SecurityContext, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use crate::plan::{Run, RunState, RunToCreate, Trigger};

/// `app.kubernetes.io/component` of every run.
pub const COMPONENT_NAME: &str = "scheduler";
/// Label: the workflow a run belongs to.
pub const WORKFLOW: &str = berth_api::WORKFLOW_LABEL;
/// Label (Unix seconds) and annotation (RFC 3339): the time the run was due, or for a manual run the time
/// of its request (which is how a restarted operator knows that request was acted on).
pub const SCHEDULED_TIME: &str = "berth.dev/scheduled-time";
/// Scheduler annotations with this key prefix go onto the run's pod without the leading `pod.`.
pub const POD_ANNOTATION_PREFIX: &str = "pod.berth.dev/";
const POD_ANNOTATION_STRIP: &str = "pod.";
/// The one container of a run's pod.
pub const CONTAINER: &str = "workflow";
/// UID and GID of a run's process (distroless `nonroot`).
pub const RUN_AS: i64 = 65532;
/// The volume holding a run's scratch space.
const SCRATCH: &str = "tmp";
/// Where it is mounted: the default `TMPDIR`, so tools that write temporary files need no setting.
const SCRATCH_PATH: &str = "/tmp";
/// Beyond this the kubelet evicts the run: a bound on what one run can take from the node's disk, large
/// enough for a dump of a small tenant database.
const SCRATCH_LIMIT: &str = "1Gi";

/// Resources of a run whose workflow names none: small, and with limits so a tenant ResourceQuota on
/// limits admits the pod.
#[must_use]
pub fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q("100m")),
            ("memory".to_owned(), q("128Mi")),
        ])),
        limits: Some(BTreeMap::from([
            ("cpu".to_owned(), q("500m")),
            ("memory".to_owned(), q("256Mi")),
        ])),
        ..ResourceRequirements::default()
    }
}

/// The label selector of one Scheduler's runs (together with the controller owner reference, which
/// [`view`]'s caller checks).
#[must_use]
pub fn selector(scheduler: &str) -> String {
    format!("{MANAGED_BY}={BERTH},{COMPONENT}={COMPONENT_NAME},{INSTANCE}={scheduler}")
}

/// The Job of `run` of `workflow`, owned by `owner` (kit's controller reference to the Scheduler, with
/// blockOwnerDeletion, which needs `update` on `schedulers/finalizers` where the
/// OwnerReferencesPermissionEnforcement admission plugin is on).
#[must_use]
pub fn build(scheduler: &Scheduler, workflow: &Workflow, run: &RunToCreate, owner: OwnerReference) -> Job {
    let namespace = scheduler.namespace().unwrap_or_default();
    let mut labels = labels(&customer_of(scheduler.labels(), &namespace), COMPONENT_NAME);
    labels.insert(INSTANCE.to_owned(), scheduler.name_any());
    labels.insert(WORKFLOW.to_owned(), workflow.name.clone());
    labels.insert(SCHEDULED_TIME.to_owned(), run.scheduled.as_second().to_string());
    labels.insert(TRIGGER_LABEL.to_owned(), run.trigger.label().to_owned());
    let annotations = BTreeMap::from([(SCHEDULED_TIME.to_owned(), run.scheduled.to_string())]);
    let pod_annotations: BTreeMap<String, String> = scheduler
        .annotations()
        .iter()
        .filter(|(k, _)| k.starts_with(POD_ANNOTATION_PREFIX))
        .filter_map(|(k, v)| Some((k.strip_prefix(POD_ANNOTATION_STRIP)?.to_owned(), v.clone())))
        .collect();
    let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());

    Job {
        metadata: ObjectMeta {
            name: Some(run.name.clone()),
            namespace: Some(namespace),
            labels: Some(labels.clone()),
            annotations: Some(annotations.clone()),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(JobSpec {
            suspend: Some(run.suspended),
            backoff_limit: workflow.backoff_limit,
            active_deadline_seconds: workflow.active_deadline_seconds,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    annotations: Some(annotations.into_iter().chain(pod_annotations).collect()),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_owned()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(RUN_AS),
                        run_as_group: Some(RUN_AS),
                        seccomp_profile: Some(runtime_default()),
                        ..PodSecurityContext::default()
                    }),
                    volumes: Some(vec![Volume {
                        name: SCRATCH.to_owned(),
                        empty_dir: Some(EmptyDirVolumeSource {
                            size_limit: Some(Quantity(SCRATCH_LIMIT.to_owned())),
                            ..EmptyDirVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]),
                    containers: vec![Container {
                        name: CONTAINER.to_owned(),
                        image: Some(workflow.image.clone()),
                        command: non_empty(&workflow.command),
                        args: non_empty(&workflow.args),
                        env: (!workflow.env.is_empty()).then(|| workflow.env.clone()),
                        env_from: scheduler.spec.env_from_secret.as_ref().map(|secret| {
                            vec![EnvFromSource {
                                secret_ref: Some(SecretEnvSource {
                                    name: secret.clone(),
                                    optional: None,
                                }),
                                ..EnvFromSource::default()
                            }]
                        }),
                        resources: Some(workflow.resources.clone().unwrap_or_else(default_resources)),
                        volume_mounts: Some(vec![VolumeMount {
                            name: SCRATCH.to_owned(),
                            mount_path: SCRATCH_PATH.to_owned(),
                            ..VolumeMount::default()
                        }]),
                        security_context: Some(SecurityContext {
                            allow_privilege_escalation: Some(false),
                            read_only_root_filesystem: Some(true),
                            capabilities: Some(Capabilities {
                                drop: Some(vec!["ALL".to_owned()]),
                                ..Capabilities::default()
                            }),
                            run_as_non_root: Some(true),
                            run_as_user: Some(RUN_AS),
                            seccomp_profile: Some(runtime_default()),
                            ..SecurityContext::default()
                        }),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            ..JobSpec::default()
        }),
        status: None,
    }
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        ..SeccompProfile::default()
    }
}

/// Whether a Job is a run of the Scheduler with `uid`: that Scheduler is its controller, and berth made
/// it for that Scheduler (its `seal`; see `berth_kit::seal`). A Scheduler recreated under the same name has
/// a new uid, so it neither adopts nor mistakes its predecessor's runs; a Job someone else made with the
/// Scheduler's labels and owner reference holds no worker, queues nothing and is never pruned as history.
#[must_use]
pub fn is_ours(job: &ObjectMeta, uid: &str, seal: Option<&Seal>) -> bool {
    controlled_by(job, uid) && seal.is_none_or(|s| s.made(job, uid))
}

fn controlled_by(job: &ObjectMeta, uid: &str) -> bool {
    job.owner_references
        .iter()
        .flatten()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

/// Who holds the name of a run whose create answered AlreadyExists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// This Scheduler's own run: an earlier create whose answer was lost. The run is made.
    Us,
    /// This Scheduler's run on its way out, or nothing by the time it was read: not made, and nothing to
    /// report; the next reconcile tries again.
    Leaving,
    /// Someone else's Job (another Scheduler's, a predecessor's of the same name, a hand-made one): not
    /// made, and a conflict to report. Says whose.
    Other(String),
}

/// What an existing Job with a run's name means for the Scheduler with `uid` ([`Holder`]), from the Job's
/// metadata as read after the 409 (`None`: it was gone).
#[must_use]
pub fn holder(existing: Option<&ObjectMeta>, uid: &str, seal: Option<&Seal>) -> Holder {
    let Some(job) = existing else {
        return Holder::Leaving;
    };
    if is_ours(job, uid, seal) {
        return if job.deletion_timestamp.is_some() {
            Holder::Leaving
        } else {
            Holder::Us
        };
    }
    if controlled_by(job, uid) {
        return Holder::Other(
            "a Job of that name exists with this Scheduler as its controller, but berth did not make it \
             (no valid berth.dev/seal)"
                .to_owned(),
        );
    }
    let controller = job
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    Holder::Other(match controller {
        Some(o) => format!(
            "a Job of that name exists, controlled by {} {} (uid {}), not by this Scheduler",
            o.kind, o.name, o.uid
        ),
        None => "a Job of that name exists and has no controller; it is not this Scheduler's".to_owned(),
    })
}

/// The planner's view of a Job, or `None` for a Job that is not a run (no workflow or due time) or is
/// already being deleted.
#[must_use]
pub fn view(job: &Job) -> Option<Run> {
    if job.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let workflow = job.labels().get(WORKFLOW)?.clone();
    let scheduled = job
        .labels()
        .get(SCHEDULED_TIME)
        .and_then(|s| s.parse::<i64>().ok())
        .and_then(|s| Timestamp::from_second(s).ok())
        .or_else(|| job.annotations().get(SCHEDULED_TIME)?.parse().ok())?;
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let finished = |type_: &str| {
        conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "True")
            .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
    };
    let (state, finished) = if let Some(at) = finished("Complete") {
        let completion = job
            .status
            .as_ref()
            .and_then(|s| s.completion_time.as_ref())
            .map(|t| t.0);
        (RunState::Succeeded, completion.or(at))
    } else if let Some(at) = finished("Failed") {
        (RunState::Failed, at)
    } else if job.spec.as_ref().and_then(|s| s.suspend) == Some(true) {
        (RunState::Queued, None)
    } else {
        (RunState::Active, None)
    };
    // Jobs from before the label were all started by their schedule.
    let trigger = if job.labels().get(TRIGGER_LABEL).map(String::as_str) == Some(TRIGGER_MANUAL) {
        Trigger::Manual
    } else {
        Trigger::Schedule
    };
    Some(Run {
        name: job.name_any(),
        workflow,
        scheduled,
        state,
        finished,
        trigger,
    })
}

#[cfg(test)]
mod tests;
