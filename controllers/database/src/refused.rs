//! Why the server's pod does not exist. A Deployment says so in its `ReplicaFailure` condition, but a
//! StatefulSet has no condition for a pod it cannot create: the StatefulSet controller tells only in a
//! `FailedCreate` event on the StatefulSet. That event is read only while the pod is missing, so a running
//! tenant costs no read.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Event;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use berth_kit::Context;

/// The StatefulSet wants a pod, has seen its current spec, and has none.
pub(crate) fn pod_missing(server: &StatefulSet) -> bool {
    let wanted = server.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = server.status.as_ref() else {
        return false;
    };
    let current =
        status.observed_generation.is_some() && status.observed_generation >= server.metadata.generation;
    wanted > 0 && current && status.replicas == 0
}

/// The message of the StatefulSet controller's latest `FailedCreate` event on `server`, when its pod is
/// missing. A read that fails (the events are not readable, say, before an upgrade granted it) only means
/// berth cannot say why: the status then says the server is not ready yet, as before.
pub(crate) async fn server_refusal(kit: &Context, namespace: &str, server: &StatefulSet) -> Option<String> {
    if !pod_missing(server) {
        return None;
    }
    let events: Api<Event> = kit.api(namespace);
    let fields = format!(
        "involvedObject.kind=StatefulSet,involvedObject.name={},reason=FailedCreate",
        server.name_any()
    );
    match events.list(&ListParams::default().fields(&fields)).await {
        Ok(list) => latest(list.items),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read why the server's pod is missing");
            None
        }
    }
}

fn latest(events: Vec<Event>) -> Option<String> {
    events
        .into_iter()
        .max_by_key(|e| {
            e.last_timestamp
                .as_ref()
                .map(|t| t.0)
                .or_else(|| e.event_time.as_ref().map(|t| t.0))
        })
        .and_then(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{StatefulSetSpec, StatefulSetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn sts(replicas: i32, pods: i32, observed: Option<i64>) -> StatefulSet {
        let mut s = StatefulSet {
            spec: Some(StatefulSetSpec {
                replicas: Some(replicas),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                replicas: pods,
                observed_generation: observed,
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        };
        s.metadata.generation = Some(2);
        s
    }

    #[test]
    fn a_pod_is_missing_only_when_wanted_and_the_controller_saw_the_spec() {
        assert!(pod_missing(&sts(1, 0, Some(2))));
        assert!(!pod_missing(&sts(1, 1, Some(2))), "the pod exists");
        assert!(!pod_missing(&sts(0, 0, Some(2))), "suspended: none wanted");
        assert!(
            !pod_missing(&sts(1, 0, Some(1))),
            "the controller has not seen this spec yet"
        );
        assert!(!pod_missing(&sts(1, 0, None)), "nor any");
    }

    #[test]
    fn the_latest_refusal_is_the_one_told() {
        let event = |secs: i64, message: &str| Event {
            last_timestamp: Some(Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())),
            message: Some(message.to_owned()),
            ..Event::default()
        };
        let told = latest(vec![
            event(20, "exceeded quota: b"),
            event(10, "exceeded quota: a"),
        ]);
        assert_eq!(told.as_deref(), Some("exceeded quota: b"));
        assert_eq!(latest(Vec::new()), None);
    }
}
