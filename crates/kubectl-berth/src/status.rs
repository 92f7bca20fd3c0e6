//! `kubectl berth status`: a tenant's numbers (quota, database, scheduler, webhooks) read from the
//! objects themselves, or one line per tenant. The model is built by pure functions from what was read.

use std::collections::BTreeMap;

use berth_api::{Customer, Database, Scheduler, Webhook, find_condition};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, ResourceQuota};
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Serialize;

use crate::connect::{Access, explain};
use crate::gather::{Cluster, existing_customer};

mod text;
pub use text::{render, render_overview};

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub customer: String,
    pub namespace: String,
    pub ready: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    pub suspended: bool,
    pub quota: Vec<QuotaLine>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub databases: Vec<DatabaseLine>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedulers: Vec<SchedulerLine>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<WebhooksLine>,
    /// Parts the user may not read, explained.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QuotaLine {
    pub resource: String,
    pub used: String,
    pub hard: String,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseLine {
    pub name: String,
    pub ready: String,
    /// Why it is not Ready, from its `Ready` condition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    pub storage_requested: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub storage_bound: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim: Option<String>,
    pub pool_ready: i32,
    pub pool_replicas: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connection_secret: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SchedulerLine {
    pub name: String,
    pub ready: String,
    pub workers: i32,
    pub running: i32,
    pub queued: i32,
    pub suspended: bool,
    pub workflows: Vec<WorkflowLine>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowLine {
    pub name: String,
    pub schedule: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    pub missed: i32,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhooksLine {
    pub name: String,
    pub ready: String,
    pub endpoints: Vec<EndpointLine>,
}

#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointLine {
    pub name: String,
    pub url: String,
    /// `ok`, `retrying`, `gone` or `new`.
    pub state: String,
    pub pending: i32,
    pub consecutive_failures: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_failure_reason: Option<String>,
}

fn ready_of(conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition]) -> String {
    find_condition(conditions, "Ready").map_or_else(|| "Unknown".to_owned(), |c| c.status.clone())
}

/// Quota lines, every ResourceQuota of the namespace, sorted by resource.
#[must_use]
pub fn quota_lines(quotas: &[ResourceQuota]) -> Vec<QuotaLine> {
    let mut lines: BTreeMap<String, QuotaLine> = BTreeMap::new();
    for q in quotas {
        let Some(s) = q.status.as_ref() else { continue };
        for (resource, hard) in s.hard.iter().flatten() {
            let used = s
                .used
                .as_ref()
                .and_then(|u| u.get(resource))
                .map_or_else(|| "0".to_owned(), |u| u.0.clone());
            lines.insert(
                resource.clone(),
                QuotaLine {
                    resource: resource.clone(),
                    used,
                    hard: hard.0.clone(),
                },
            );
        }
    }
    lines.into_values().collect()
}

/// A Database's numbers: the image from its server's StatefulSet (the operator's default when the spec has
/// none), storage asked for and bound, pool pods ready.
#[must_use]
pub fn database_line(
    db: &Database,
    server: Option<&StatefulSet>,
    claim: Option<&PersistentVolumeClaim>,
) -> DatabaseLine {
    let status = db.status.clone().unwrap_or_default();
    let image = db.spec.image.clone().or_else(|| {
        server
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers.first())
            .and_then(|c| c.image.clone())
    });
    DatabaseLine {
        name: db.name_any(),
        ready: ready_of(&status.conditions),
        why: find_condition(&status.conditions, "Ready")
            .filter(|c| c.status != "True" && !c.message.is_empty())
            .map(|c| format!("{}: {}", c.reason, c.message)),
        image,
        storage_requested: db.spec.storage.0.clone(),
        storage_bound: claim
            .and_then(|c| c.status.as_ref())
            .and_then(|s| s.capacity.as_ref())
            .and_then(|c| c.get("storage"))
            .map(|q| q.0.clone()),
        claim: claim.map(|c| {
            let phase = c
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".to_owned());
            format!("{} ({phase})", c.name_any())
        }),
        pool_ready: status.ready_replicas.unwrap_or(0),
        pool_replicas: if db.spec.suspend { 0 } else { db.spec.pool.replicas },
        endpoint: status.endpoint,
        connection_secret: status.connection_secret,
    }
}

#[must_use]
pub fn scheduler_line(s: &Scheduler) -> SchedulerLine {
    let status = s.status.clone().unwrap_or_default();
    let workflows = s
        .spec
        .workflows
        .iter()
        .map(|w| {
            let ws = status.workflows.iter().find(|x| x.name == w.name);
            WorkflowLine {
                name: w.name.clone(),
                schedule: w.schedule.clone(),
                last_success: ws
                    .and_then(|x| x.last_successful_time.as_ref())
                    .map(|t| t.0.to_string()),
                last_failure: ws
                    .and_then(|x| x.last_failed_time.as_ref())
                    .map(|t| t.0.to_string()),
                last_run: ws.and_then(|x| x.last_run.clone()),
                missed: ws.map_or(0, |x| x.missed),
            }
        })
        .collect();
    SchedulerLine {
        name: s.name_any(),
        ready: ready_of(&status.conditions),
        workers: s.spec.workers,
        running: status.running,
        queued: status.queued,
        suspended: s.spec.suspend,
        workflows,
    }
}

#[must_use]
pub fn webhooks_line(w: &Webhook) -> WebhooksLine {
    let status = w.status.clone().unwrap_or_default();
    let endpoints = w
        .spec
        .endpoints
        .iter()
        .map(|e| {
            let es = status.endpoints.iter().find(|x| x.name == e.name);
            let state = match es {
                None => "new",
                Some(x) if x.gone => "gone",
                Some(x) if x.consecutive_failures > 0 => "retrying",
                Some(_) => "ok",
            };
            EndpointLine {
                name: e.name.clone(),
                url: e.url.clone(),
                state: state.to_owned(),
                pending: es.map_or(0, |x| x.pending),
                consecutive_failures: es.map_or(0, |x| x.consecutive_failures),
                last_success: es.and_then(|x| x.last_success.as_ref()).map(|t| t.0.to_string()),
                last_failure_reason: es.and_then(|x| x.last_failure_reason.clone()),
            }
        })
        .collect();
    WebhooksLine {
        name: w.name_any(),
        ready: ready_of(&status.conditions),
        endpoints,
    }
}

/// Reads one tenant's status.
pub async fn read(c: &Cluster, name: &str) -> anyhow::Result<Status> {
    let cust = existing_customer(c, name).await?;
    let ns = cust
        .status
        .as_ref()
        .and_then(|s| s.namespace.clone())
        .unwrap_or_else(|| cust.namespace_name());
    let mut out = Status {
        customer: name.to_owned(),
        namespace: ns.clone(),
        ready: ready_of(
            cust.status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default(),
        ),
        summary: cust.status.as_ref().and_then(|s| s.summary.clone()),
        suspended: cust.spec.suspend,
        ..Status::default()
    };
    let lp = ListParams::default();
    let refuse = |e: &kube::Error, resource| {
        explain(
            e,
            Access {
                verb: "list",
                resource,
                namespace: Some(&ns),
                name: None,
            },
            &c.server,
        )
    };
    match Api::<ResourceQuota>::namespaced(c.client.clone(), &ns)
        .list(&lp)
        .await
    {
        Ok(l) => out.quota = quota_lines(&l.items),
        Err(e) => out.refused.push(refuse(&e, "resourcequotas")),
    }
    match Api::<Database>::namespaced(c.client.clone(), &ns).list(&lp).await {
        Ok(l) => {
            let sets = Api::<StatefulSet>::namespaced(c.client.clone(), &ns)
                .list(&lp)
                .await;
            let claims = Api::<PersistentVolumeClaim>::namespaced(c.client.clone(), &ns)
                .list(&lp)
                .await;
            let sets = sets.map(|l| l.items).unwrap_or_default();
            let claims = claims.map(|l| l.items).unwrap_or_default();
            for db in &l.items {
                let server = sets
                    .iter()
                    .find(|s| owned_by(s.owner_references(), db.uid().as_deref()));
                let claim = server.and_then(|s| {
                    let want = format!("-{}-0", s.name_any());
                    claims.iter().find(|c| c.name_any().ends_with(&want))
                });
                out.databases.push(database_line(db, server, claim));
            }
        }
        Err(e) => out.refused.push(refuse(&e, "databases.berth.dev")),
    }
    match Api::<Scheduler>::namespaced(c.client.clone(), &ns)
        .list(&lp)
        .await
    {
        Ok(l) => out.schedulers = l.items.iter().map(scheduler_line).collect(),
        Err(e) => out.refused.push(refuse(&e, "schedulers.berth.dev")),
    }
    match Api::<Webhook>::namespaced(c.client.clone(), &ns).list(&lp).await {
        Ok(l) => out.webhooks = l.items.iter().map(webhooks_line).collect(),
        Err(e) => out.refused.push(refuse(&e, "webhooks.berth.dev")),
    }
    Ok(out)
}

fn owned_by(
    refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference],
    uid: Option<&str>,
) -> bool {
    uid.is_some_and(|u| refs.iter().any(|r| r.uid == u))
}

/// One tenant in the overview.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub customer: String,
    pub namespace: String,
    pub ready: String,
    /// `ready/replicas` of the pool, `-` without a database.
    pub pool: String,
    /// `running/workers`, `-` without a scheduler.
    pub workers: String,
    pub queued: String,
    /// `ok/endpoints`, `-` without webhooks.
    pub webhooks: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// One line per Customer, from one list per kind across the cluster.
pub async fn overview(c: &Cluster) -> anyhow::Result<(Vec<Overview>, Vec<String>)> {
    let lp = ListParams::default();
    let all = |resource| Access {
        verb: "list",
        resource,
        namespace: None,
        name: None,
    };
    let customers = Api::<Customer>::all(c.client.clone())
        .list(&lp)
        .await
        .map_err(|e| anyhow::anyhow!(explain(&e, all("customers.berth.dev"), &c.server)))?;
    let mut refused = Vec::new();
    let dbs = listed(c, &mut refused, "databases.berth.dev").await;
    let scheds = listed(c, &mut refused, "schedulers.berth.dev").await;
    let hooks = listed(c, &mut refused, "webhooks.berth.dev").await;
    let lines = customers
        .items
        .iter()
        .map(|cust| overview_line(cust, dbs.as_deref(), scheds.as_deref(), hooks.as_deref()))
        .collect();
    Ok((lines, refused))
}

/// Every object of a kind across the cluster, or `None` (and why) when the user may not list them.
async fn listed<K>(c: &Cluster, refused: &mut Vec<String>, resource: &'static str) -> Option<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match Api::<K>::all(c.client.clone()).list(&ListParams::default()).await {
        Ok(l) => Some(l.items),
        Err(e) => {
            let a = Access {
                verb: "list",
                resource,
                namespace: None,
                name: None,
            };
            refused.push(explain(&e, a, &c.server));
            None
        }
    }
}

fn in_tenant<'a, K: kube::Resource>(all: Option<&'a [K]>, cust: &Customer) -> Option<Vec<&'a K>> {
    let uid = cust.uid();
    all.map(|xs| {
        xs.iter()
            .filter(|x| {
                owned_by(
                    x.meta().owner_references.as_deref().unwrap_or_default(),
                    uid.as_deref(),
                )
            })
            .collect()
    })
}

#[must_use]
pub fn overview_line(
    cust: &Customer,
    dbs: Option<&[Database]>,
    scheds: Option<&[Scheduler]>,
    hooks: Option<&[Webhook]>,
) -> Overview {
    let unknown = || "?".to_owned();
    let pool = in_tenant(dbs, cust).map_or_else(unknown, |ds| match ds.first() {
        None => "-".to_owned(),
        Some(d) => {
            let l = database_line(d, None, None);
            format!("{}/{}", l.pool_ready, l.pool_replicas)
        }
    });
    let sched = in_tenant(scheds, cust).map(|s| s.first().map(|s| scheduler_line(s)));
    let (workers, queued) = match &sched {
        None => (unknown(), unknown()),
        Some(None) => ("-".to_owned(), "-".to_owned()),
        Some(Some(s)) => (format!("{}/{}", s.running, s.workers), s.queued.to_string()),
    };
    let webhooks = in_tenant(hooks, cust).map_or_else(unknown, |hs| match hs.first() {
        None => "-".to_owned(),
        Some(h) => {
            let l = webhooks_line(h);
            let ok = l.endpoints.iter().filter(|e| e.state == "ok").count();
            format!("{ok}/{}", l.endpoints.len())
        }
    });
    Overview {
        customer: cust.name_any(),
        namespace: cust
            .status
            .as_ref()
            .and_then(|s| s.namespace.clone())
            .unwrap_or_else(|| cust.namespace_name()),
        ready: ready_of(
            cust.status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default(),
        ),
        pool,
        workers,
        queued,
        webhooks,
        created: cust.metadata.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        summary: cust.status.as_ref().and_then(|s| s.summary.clone()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use k8s_openapi::jiff::Timestamp;
    use serde_json::json;

    #[test]
    fn quota_lines_merge_every_quota_sorted_and_show_zero_for_unused() {
        let q: ResourceQuota = serde_json::from_value(json!({"status": {
            "hard": {"pods": "50", "count/secrets": "100", "requests.storage": "300Gi"},
            "used": {"pods": "3", "requests.storage": "256Gi"}
        }}))
        .unwrap();
        let lines = quota_lines(&[q]);
        let got: Vec<_> = lines
            .iter()
            .map(|l| format!("{} {}/{}", l.resource, l.used, l.hard))
            .collect();
        assert_eq!(
            got,
            ["count/secrets 0/100", "pods 3/50", "requests.storage 256Gi/300Gi"]
        );
    }

    #[test]
    fn a_database_line_takes_the_image_from_its_server_and_the_bound_size_from_its_claim() {
        let db: Database = serde_json::from_value(json!({
            "metadata": {"name": "db"},
            "spec": {"storage": "256Gi", "pool": {"replicas": 2}},
            "status": {"readyReplicas": 1, "connectionSecret": "db-connection", "endpoint": "db-pgbouncer.acme.svc:5432",
                "conditions": [{"type": "Ready", "status": "False", "reason": "PoolNotReady", "message": "", "lastTransitionTime": "2026-12-01T08:00:00Z"}]}
        }))
        .unwrap();
        let server: StatefulSet = serde_json::from_value(json!({"spec": {"selector": {}, "serviceName": "db-postgres",
            "template": {"spec": {"containers": [{"name": "postgres", "image": "berth.local/postgres:17"}]}}}}))
        .unwrap();
        let claim: PersistentVolumeClaim =
            serde_json::from_value(json!({"metadata": {"name": "data-db-postgres-0"},
            "status": {"phase": "Bound", "capacity": {"storage": "256Gi"}}}))
            .unwrap();
        let l = database_line(&db, Some(&server), Some(&claim));
        assert_eq!(l.image.as_deref(), Some("berth.local/postgres:17"));
        assert_eq!(l.storage_bound.as_deref(), Some("256Gi"));
        assert_eq!(l.claim.as_deref(), Some("data-db-postgres-0 (Bound)"));
        assert_eq!((l.pool_ready, l.pool_replicas), (1, 2));
        assert_eq!(l.ready, "False");
        let text = render(
            &Status {
                customer: "acme".to_owned(),
                namespace: "acme".to_owned(),
                ready: "False".to_owned(),
                databases: vec![l],
                ..Status::default()
            },
            Timestamp::UNIX_EPOCH,
        );
        assert!(
            text.contains("  pool        1/2 pgbouncer pods ready\n"),
            "{text}"
        );
        assert!(
            text.contains("  storage     256Gi requested, 256Gi bound (claim data-db-postgres-0 (Bound))\n"),
            "{text}"
        );
        assert!(text.contains("  connection  Secret db-connection\n"), "{text}");
    }

    #[test]
    fn a_scheduler_line_pairs_spec_workflows_with_their_status() {
        let s: Scheduler = serde_json::from_value(json!({
            "metadata": {"name": "workflows"},
            "spec": {"workers": 4, "workflows": [
                {"name": "nightly", "schedule": "@daily", "image": "busybox"},
                {"name": "new", "schedule": "* * * * *", "image": "busybox"}
            ]},
            "status": {"running": 1, "queued": 2, "workflows": [
                {"name": "nightly", "lastSuccessfulTime": "2026-12-01T02:00:00Z", "lastRun": "nightly-abcde-29400000", "missed": 1}
            ]}
        }))
        .unwrap();
        let l = scheduler_line(&s);
        assert_eq!((l.workers, l.running, l.queued), (4, 1, 2));
        assert_eq!(
            l.workflows[0].last_success.as_deref(),
            Some("2026-12-01T02:00:00Z")
        );
        assert_eq!(l.workflows[0].missed, 1);
        assert_eq!(l.workflows[1].last_run, None);
    }
}
