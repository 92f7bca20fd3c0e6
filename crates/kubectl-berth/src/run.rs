//! `kubectl berth run`: asks the tenant's Scheduler for a run of one workflow now. The plugin never makes
//! the Job itself: the Scheduler does, under its `workers` limit and the workflow's `concurrencyPolicy`, and
//! seals it as its own, exactly as a scheduled run. The request is an annotation holding its time, so the
//! same request is never run twice, whoever restarts.

use std::time::Duration;

use berth_api::{RUN_REQUEST_PREFIX, Scheduler, TRIGGER_LABEL, TRIGGER_MANUAL, WORKFLOW_LABEL};
use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::connect::{Access, explain};
use crate::gather::{Cluster, existing_customer};

/// The annotation patch that asks for a run of `workflow` at `now` (RFC 3339, whole seconds).
#[must_use]
pub fn request(workflow: &str, now: Timestamp) -> serde_json::Value {
    let at = Timestamp::from_second(now.as_second()).unwrap_or(now);
    json!({"metadata": {"annotations": {format!("{RUN_REQUEST_PREFIX}{workflow}"): at.to_string()}}})
}

/// The tenant's Scheduler, or why there is none to ask.
async fn scheduler(c: &Cluster, customer_name: &str) -> anyhow::Result<Scheduler> {
    let cust = existing_customer(c, customer_name).await?;
    if !cust.spec.features.scheduler.enabled {
        anyhow::bail!(
            "Customer \"{customer_name}\" has no scheduler: set spec.features.scheduler.enabled: true to run workflows"
        );
    }
    let ns = cust.namespace_name();
    let uid = cust.uid().unwrap_or_default();
    let api: Api<Scheduler> = Api::namespaced(c.client.clone(), &ns);
    let list = api.list(&ListParams::default()).await.map_err(|e| {
        let a = Access {
            verb: "list",
            resource: "schedulers.berth.dev",
            namespace: Some(&ns),
            name: None,
        };
        anyhow::anyhow!(explain(&e, a, &c.server))
    })?;
    list.items
        .into_iter()
        .find(|s| s.owner_references().iter().any(|o| o.uid == uid))
        .ok_or_else(|| anyhow::anyhow!("Customer \"{customer_name}\" has no Scheduler in namespace {ns} yet: is berth running? (`kubectl berth tree {customer_name}`)"))
}

/// Requests the run; with `wait`, waits for the Scheduler's Job and says whether it runs or is queued.
pub async fn run(
    c: &Cluster,
    customer_name: &str,
    workflow: &str,
    wait: Option<Duration>,
) -> anyhow::Result<String> {
    let s = scheduler(c, customer_name).await?;
    let ns = s.namespace().unwrap_or_default();
    if !s.spec.workflows.iter().any(|w| w.name == workflow) {
        let known: Vec<&str> = s.spec.workflows.iter().map(|w| w.name.as_str()).collect();
        anyhow::bail!(
            "\"{workflow}\" is not a workflow of Customer \"{customer_name}\"; its workflows: {}",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    let now = Timestamp::now();
    let api: Api<Scheduler> = Api::namespaced(c.client.clone(), &ns);
    let pp = PatchParams::default();
    api.patch(&s.name_any(), &pp, &Patch::Merge(request(workflow, now)))
        .await
        .map_err(|e| {
            let a = Access {
                verb: "patch",
                resource: "schedulers.berth.dev",
                namespace: Some(&ns),
                name: Some(&s.name_any()),
            };
            anyhow::anyhow!(explain(&e, a, &c.server))
        })?;
    let suspended = if s.spec.suspend {
        " The Scheduler is suspended: the run starts if it is resumed within the workflow's startingDeadlineSeconds (default 300)."
    } else {
        ""
    };
    let Some(timeout) = wait else {
        return Ok(format!("requested a run of {workflow} in {ns}.{suspended}"));
    };
    let jobs: Api<Job> = Api::namespaced(c.client.clone(), &ns);
    let selector = format!("{WORKFLOW_LABEL}={workflow},{TRIGGER_LABEL}={TRIGGER_MANUAL}");
    let requested = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let stream = watcher::watcher(jobs, watcher::Config::default().labels(&selector));
    let mut runs = Box::pin(stream.filter_map(|ev| async move {
        match ev {
            Ok(watcher::Event::Apply(j) | watcher::Event::InitApply(j)) => {
                let created = j.creation_timestamp().map(|t| t.0);
                created.is_some_and(|t| t >= requested).then_some(j)
            }
            _ => None,
        }
    }));
    let found = tokio::time::timeout(timeout, runs.next()).await;
    match found {
        Ok(Some(job)) => {
            let queued = job.spec.as_ref().and_then(|s| s.suspend).unwrap_or(false);
            Ok(if queued {
                format!(
                    "run {} of {workflow} is queued: all {} workers of the Scheduler are busy.",
                    job.name_any(),
                    s.spec.workers
                )
            } else {
                format!("run {} of {workflow} started.", job.name_any())
            })
        }
        _ => anyhow::bail!(
            "requested a run of {workflow}, but no run appeared within {}s.{suspended} `kubectl describe scheduler -n {ns} {}` shows why (e.g. concurrencyPolicy: Forbid while a run is active).",
            timeout.as_secs(),
            s.name_any()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_the_workflows_annotation_holding_the_time_in_whole_seconds() {
        let now: Timestamp = "2026-12-01T08:00:00.123456Z".parse().unwrap_or_default();
        assert_eq!(
            request("nightly", now),
            json!({"metadata": {"annotations": {"run.berth.dev/nightly": "2026-12-01T08:00:00Z"}}})
        );
    }
}
