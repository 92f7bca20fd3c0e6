//! How healthy one object is, from its status alone: the rules a person applies reading `kubectl describe`,
//! written once so `tree` and `status` agree. Pure functions of the objects, unit-tested.

use berth_api::find_condition;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, ResourceQuota};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde::Serialize;

/// The READY column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Ready {
    True,
    False,
    Unknown,
    /// The kind has no readiness (a Secret, a NetworkPolicy).
    #[serde(rename = "-")]
    None,
}

impl Ready {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
            Self::None => "-",
        }
    }
}

/// An object's health: READY, a one-word reason and, when not healthy, the full message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    pub ready: Ready,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Health {
    #[must_use]
    pub fn ok(reason: Option<&str>) -> Self {
        Self {
            ready: Ready::True,
            reason: reason.map(str::to_owned),
            message: None,
        }
    }

    #[must_use]
    pub fn none(reason: Option<String>) -> Self {
        Self {
            ready: Ready::None,
            reason,
            message: None,
        }
    }

    /// Failing as an object's own condition or status says: its reason (else `fallback`) and message.
    #[must_use]
    pub fn reported(reason: Option<&str>, fallback: &str, message: Option<&str>) -> Self {
        Self::failing(reason.unwrap_or(fallback), message.unwrap_or_default())
    }

    #[must_use]
    pub fn failing(reason: &str, message: impl Into<String>) -> Self {
        Self {
            ready: Ready::False,
            reason: Some(reason.to_owned()),
            message: Some(message.into()).filter(|m: &String| !m.is_empty()),
        }
    }
}

/// berth's kinds: their `Ready` condition, message and all.
#[must_use]
pub fn of_conditions(conditions: &[Condition]) -> Health {
    let Some(c) = find_condition(conditions, "Ready") else {
        return Health {
            ready: Ready::Unknown,
            reason: Some("NotReconciled".to_owned()),
            message: Some("no Ready condition yet: berth has not reconciled it".to_owned()),
        };
    };
    let ready = match c.status.as_str() {
        "True" => Ready::True,
        "False" => Ready::False,
        _ => Ready::Unknown,
    };
    Health {
        ready,
        reason: Some(c.reason.clone()).filter(|r| !r.is_empty()),
        message: Some(c.message.clone()).filter(|m| ready != Ready::True && !m.is_empty()),
    }
}

#[must_use]
pub fn namespace(ns: &Namespace) -> Health {
    match ns.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Terminating") => {
            let why = ns
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .into_iter()
                .flatten()
                .filter(|c| c.status == "True")
                .filter_map(|c| c.message.clone())
                .collect::<Vec<_>>()
                .join("; ");
            Health::failing("Terminating", why)
        }
        _ => Health::ok(Some("Active")),
    }
}

#[must_use]
pub fn stateful_set(s: &StatefulSet) -> Health {
    let want = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = s.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    replicas(want, ready)
}

#[must_use]
pub fn deployment(d: &Deployment) -> Health {
    let conditions = d
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
    {
        return Health::reported(c.reason.as_deref(), "ReplicaFailure", c.message.as_deref());
    }
    if let Some(c) = conditions
        .iter()
        .find(|c| c.type_ == "Progressing" && c.status == "False")
    {
        return Health::reported(c.reason.as_deref(), "NotProgressing", c.message.as_deref());
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = d.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    replicas(want, ready)
}

#[must_use]
pub fn replica_set(r: &ReplicaSet) -> Health {
    let failure = r
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True");
    if let Some(c) = failure {
        return Health::reported(c.reason.as_deref(), "ReplicaFailure", c.message.as_deref());
    }
    let want = r.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let ready = r.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
    replicas(want, ready)
}

fn replicas(want: i32, ready: i32) -> Health {
    if want == 0 {
        Health::ok(Some("ScaledToZero"))
    } else if ready >= want {
        Health::ok(None)
    } else {
        Health::failing("ReplicasNotReady", format!("{ready} of {want} replicas ready"))
    }
}

/// The most telling thing about a pod: a container stuck waiting or crashed, unschedulable, not ready.
#[must_use]
pub fn pod(p: &Pod) -> Health {
    let Some(status) = p.status.as_ref() else {
        return Health::failing("Pending", "");
    };
    match status.phase.as_deref() {
        Some("Succeeded") => return Health::ok(Some("Completed")),
        Some("Failed") => {
            return Health::reported(status.reason.as_deref(), "Failed", status.message.as_deref());
        }
        _ => {}
    }
    let containers = status
        .init_container_statuses
        .iter()
        .flatten()
        .chain(status.container_statuses.iter().flatten());
    for c in containers {
        let state = c.state.as_ref();
        if let Some(w) = state.and_then(|s| s.waiting.as_ref())
            && let Some(reason) = w.reason.as_deref()
            && reason != "PodInitializing"
            && reason != "ContainerCreating"
        {
            let message = w.message.clone().unwrap_or_default();
            return Health::failing(
                reason,
                format!("container {}: {message}", c.name)
                    .trim_end_matches(": ")
                    .to_owned(),
            );
        }
        if let Some(t) = c.last_state.as_ref().and_then(|s| s.terminated.as_ref())
            && c.restart_count > 0
            && !c.ready
        {
            let reason = t.reason.as_deref().unwrap_or("Terminated");
            return Health::failing(
                reason,
                format!(
                    "container {} restarted {} times, last exit code {}{}",
                    c.name,
                    c.restart_count,
                    t.exit_code,
                    t.message.as_deref().map(|m| format!(": {m}")).unwrap_or_default()
                ),
            );
        }
    }
    let conditions = status.conditions.as_deref().unwrap_or_default();
    let condition = |t: &str| conditions.iter().find(|c| c.type_ == t);
    if let Some(c) = condition("PodScheduled").filter(|c| c.status == "False") {
        return Health::reported(c.reason.as_deref(), "Unschedulable", c.message.as_deref());
    }
    match condition("Ready") {
        Some(c) if c.status == "True" => Health::ok(None),
        Some(c) => Health::reported(c.reason.as_deref(), "NotReady", c.message.as_deref()),
        None => Health::failing(status.phase.as_deref().unwrap_or("Pending"), ""),
    }
}

#[must_use]
pub fn claim(c: &PersistentVolumeClaim) -> Health {
    match c.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some("Bound") => Health::ok(Some("Bound")),
        Some("Lost") => Health::failing("Lost", "the bound PersistentVolume no longer exists"),
        phase => Health::failing(phase.unwrap_or("Pending"), ""),
    }
}

/// A run: queued and running runs are neither healthy nor failing; a failed run is.
#[must_use]
pub fn job(j: &Job) -> Health {
    let status = j.status.as_ref();
    let conditions = status.and_then(|s| s.conditions.as_deref()).unwrap_or_default();
    let is = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
    if is("Complete").is_some() {
        return Health::ok(Some("Succeeded"));
    }
    if let Some(c) = is("Failed") {
        return Health::reported(c.reason.as_deref(), "Failed", c.message.as_deref());
    }
    if j.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false) {
        return Health::none(Some("Queued".to_owned()));
    }
    Health::none(Some("Running".to_owned()))
}

/// Resources whose use has reached the hard limit, e.g. `pods 4/4`: the usual reason a pool or a run
/// cannot start.
#[must_use]
pub fn quota(q: &ResourceQuota) -> Health {
    let status = q.status.as_ref();
    let hard = status.and_then(|s| s.hard.as_ref());
    let used = status.and_then(|s| s.used.as_ref());
    let full: Vec<String> = hard
        .into_iter()
        .flatten()
        .filter_map(|(name, limit)| {
            let used = used.and_then(|u| u.get(name))?;
            let (u, l) = (
                crate::quantity::parse(&used.0)?,
                crate::quantity::parse(&limit.0)?,
            );
            // A limit of 0 forbids (LoadBalancer Services, say): nothing was used up.
            (l > 0.0 && u >= l).then(|| format!("{name} {}/{}", used.0, limit.0))
        })
        .collect();
    if full.is_empty() {
        Health::none(None)
    } else {
        Health::none(Some(format!("AtLimit: {}", full.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_replica_failure_names_the_quota_in_full() {
        let message = "pods \"db-pgbouncer-7d9f-x\" is forbidden: exceeded quota: tenant-quota, requested: pods=1, used: pods=2, limited: pods=2";
        let rs: ReplicaSet = from(json!({
            "spec": {"replicas": 2},
            "status": {"replicas": 0, "conditions": [
                {"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message}
            ]}
        }));
        let h = replica_set(&rs);
        assert_eq!(h.ready, Ready::False);
        assert_eq!(h.reason.as_deref(), Some("FailedCreate"));
        assert_eq!(h.message.as_deref(), Some(message));
    }

    #[test]
    fn replicas_short_of_the_spec_are_not_ready_and_zero_is_a_choice() {
        let d: Deployment = from(json!({"spec": {"replicas": 2}, "status": {"readyReplicas": 1}}));
        assert_eq!(deployment(&d).message.as_deref(), Some("1 of 2 replicas ready"));
        let s: StatefulSet = from(json!({"spec": {"replicas": 0}}));
        assert_eq!(stateful_set(&s), Health::ok(Some("ScaledToZero")));
    }

    #[test]
    fn a_waiting_container_beats_the_ready_condition() {
        let p: Pod = from(json!({"status": {
            "phase": "Pending",
            "conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
            "containerStatuses": [{"name": "pgbouncer", "ready": false, "restartCount": 0, "image": "x", "imageID": "",
                "state": {"waiting": {"reason": "ErrImageNeverPull", "message": "image \"x\" is not present"}}}]
        }}));
        let h = pod(&p);
        assert_eq!(h.reason.as_deref(), Some("ErrImageNeverPull"));
        assert_eq!(
            h.message.as_deref(),
            Some("container pgbouncer: image \"x\" is not present")
        );
    }

    #[test]
    fn an_unschedulable_pod_says_why() {
        let p: Pod = from(json!({"status": {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 nodes are available"}
        ]}}));
        assert_eq!(
            pod(&p),
            Health::failing("Unschedulable", "0/1 nodes are available")
        );
        let ready: Pod = from(
            json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(pod(&ready), Health::ok(None));
    }

    #[test]
    fn runs_are_queued_running_succeeded_or_failed() {
        let queued: Job = from(json!({"spec": {"suspend": true, "template": {}}}));
        assert_eq!(job(&queued).reason.as_deref(), Some("Queued"));
        assert_eq!(job(&queued).ready, Ready::None);
        let failed: Job = from(json!({"spec": {"template": {}}, "status": {"conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit"}
        ]}}));
        assert_eq!(
            job(&failed),
            Health::failing(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit"
            )
        );
    }

    #[test]
    fn berth_kinds_report_their_ready_condition_and_keep_the_message_only_when_failing() {
        let c = |status: &str| Condition {
            type_: "Ready".to_owned(),
            status: status.to_owned(),
            reason: "PoolNotReady".to_owned(),
            message: "0 of 2 pool replicas available".to_owned(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
            observed_generation: None,
        };
        let h = of_conditions(&[c("False")]);
        assert_eq!(h.ready, Ready::False);
        assert_eq!(h.message.as_deref(), Some("0 of 2 pool replicas available"));
        assert_eq!(of_conditions(&[c("True")]).message, None);
        assert_eq!(of_conditions(&[]).ready, Ready::Unknown);
    }

    #[test]
    fn a_quota_at_its_limit_is_named() {
        let q: ResourceQuota = from(json!({"status": {
            "hard": {"pods": "2", "requests.storage": "300Gi", "count/secrets": "100", "services.nodeports": "0"},
            "used": {"pods": "2", "requests.storage": "256Gi", "count/secrets": "4", "services.nodeports": "0"}
        }}));
        assert_eq!(quota(&q).reason.as_deref(), Some("AtLimit: pods 2/2"));
    }
}
