//! Reads a tenant with the user's access: the Customer, its namespace and every kind berth makes in it, one
//! list per kind. Secrets are read as metadata only, so no value ever reaches this process. What the user
//! may not read becomes a line that says so, and the rest is still shown.

use std::collections::HashMap;

use berth_api::{Customer, Database, Scheduler, Webhook};
use berth_kit::labels::{BERTH, MANAGED_BY};
use futures::future::join_all;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Event, LimitRange, Namespace, PersistentVolumeClaim, Pod, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, PartialObjectMeta};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::connect::{Access, explain, is_forbidden, is_not_found};
use crate::health::{self, Health, Ready};
use crate::tree::{Item, Warning};

/// Warning events shown per object: the latest.
const WARNINGS_PER_OBJECT: usize = 3;

/// A connection and where it points.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub server: String,
}

/// What was read, and what the user was not allowed to read.
#[derive(Default)]
pub struct Read {
    pub customer: Option<Item>,
    pub namespace: Option<Item>,
    pub items: Vec<Item>,
    /// Explained refusals, one per request refused.
    pub refused: Vec<String>,
}

/// The Customer, or a clear error: not found (with how to list them), forbidden, unreachable.
pub async fn customer(c: &Cluster, name: &str) -> Result<Customer, kube::Error> {
    Api::<Customer>::all(c.client.clone()).get(name).await
}

/// The Customer, or an error a user can act on.
pub async fn existing_customer(c: &Cluster, name: &str) -> anyhow::Result<Customer> {
    customer(c, name)
        .await
        .map_err(|e| anyhow::anyhow!(customer_error(c, name, &e)))
}

/// Explains a failed Customer lookup.
#[must_use]
pub fn customer_error(c: &Cluster, name: &str, e: &kube::Error) -> String {
    if is_not_found(e) {
        return format!("Customer \"{name}\" not found; `kubectl get customers` lists the tenants");
    }
    explain(
        e,
        access("get", "customers.berth.dev", None, Some(name)),
        &c.server,
    )
}

fn access<'a>(
    verb: &'a str,
    resource: &'a str,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
) -> Access<'a> {
    Access {
        verb,
        resource,
        namespace,
        name,
    }
}

/// Everything `tree` shows for the Customer `name`. A Customer the user may not read is assumed to live in
/// the namespace of its name (the default), so a tenant admin still sees their namespace.
pub async fn tenant(c: &Cluster, name: &str) -> anyhow::Result<Read> {
    let mut read = Read::default();
    let ns = match customer(c, name).await {
        Ok(cust) => {
            let ns = cust
                .status
                .as_ref()
                .and_then(|s| s.namespace.clone())
                .unwrap_or_else(|| cust.namespace_name());
            let mut item = item(&cust, "Customer", customer_health(&cust));
            item.warnings = customer_warnings(c, &cust).await;
            read.customer = Some(item);
            ns
        }
        Err(e) if is_forbidden(&e) => {
            let why = customer_error(c, name, &e);
            read.customer = Some(refused_item("Customer", name, &why));
            read.refused.push(why);
            name.to_owned()
        }
        Err(e) => anyhow::bail!(customer_error(c, name, &e)),
    };
    match Api::<Namespace>::all(c.client.clone()).get(&ns).await {
        Ok(n) => read.namespace = Some(item(&n, "Namespace", health::namespace(&n))),
        Err(e) if is_not_found(&e) => {}
        Err(e) => {
            let why = explain(&e, access("get", "namespaces", None, Some(&ns)), &c.server);
            read.namespace = Some(refused_item("Namespace", &ns, &why));
            read.refused.push(why);
        }
    }
    // No namespace yet (or any more): nothing in it to list.
    if read.namespace.is_none() {
        return Ok(read);
    }
    let lists = namespaced(c, &ns).await;
    let mut warnings = warnings(c, &ns).await;
    for list in lists {
        match list {
            Ok(items) => read.items.extend(items),
            Err(why) => read.refused.push(why),
        }
    }
    for i in &mut read.items {
        i.warnings = warnings.remove(&i.uid).unwrap_or_default();
    }
    Ok(read)
}

fn customer_health(c: &Customer) -> Health {
    ready(c.status.as_ref().map(|s| &s.conditions))
}

/// A berth kind's health: its `Ready` condition, once it has a status.
fn ready(conditions: Option<&Vec<Condition>>) -> Health {
    health::of_conditions(conditions.map(Vec::as_slice).unwrap_or_default())
}

fn refused_item(kind: &'static str, name: &str, why: &str) -> Item {
    Item {
        kind,
        name: name.to_owned(),
        uid: format!("refused:{kind}/{name}"),
        owner: None,
        berth: false,
        created: None,
        health: Health {
            ready: Ready::Unknown,
            reason: Some("Forbidden".to_owned()),
            message: Some(why.to_owned()),
        },
        warnings: Vec::new(),
    }
}

/// An item of `obj`, hung under its controller (or its first owner).
pub fn item<K: Resource>(obj: &K, kind: &'static str, health: Health) -> Item {
    let meta = obj.meta();
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first())
        .map(|o| o.uid.clone());
    Item {
        kind,
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        owner,
        berth: meta
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED_BY))
            .is_some_and(|v| v == BERTH),
        created: meta.creation_timestamp.as_ref().map(|t| t.0.to_string()),
        health,
        warnings: Vec::new(),
    }
}

type Listed = Result<Vec<Item>, String>;

/// Every object of a kind in the namespace, or why the user may not list them.
async fn objects<K>(c: &Cluster, ns: &str, resource: &str) -> Result<Vec<K>, String>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(c.client.clone(), ns)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|e| explain(&e, access("list", resource, Some(ns), None), &c.server))
}

async fn list<K>(c: &Cluster, ns: &str, resource: &'static str, to_item: fn(&K) -> Item) -> Listed
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    Ok(objects::<K>(c, ns, resource).await?.iter().map(to_item).collect())
}

/// Names only: the values of a Secret are never requested.
async fn secrets(c: &Cluster, ns: &str) -> Listed {
    let api: Api<Secret> = Api::namespaced(c.client.clone(), ns);
    match api.list_metadata(&ListParams::default()).await {
        Ok(l) => Ok(l
            .items
            .iter()
            .map(|s: &PartialObjectMeta<Secret>| item(s, "Secret", Health::none(None)))
            .collect()),
        Err(e) => Err(explain(&e, access("list", "secrets", Some(ns), None), &c.server)),
    }
}

async fn namespaced(c: &Cluster, ns: &str) -> Vec<Listed> {
    let mut lists: Vec<std::pin::Pin<Box<dyn std::future::Future<Output = Listed> + Send + '_>>> = vec![
        Box::pin(list::<ResourceQuota>(c, ns, "resourcequotas", |q| {
            item(q, "ResourceQuota", health::quota(q))
        })),
        Box::pin(list::<LimitRange>(c, ns, "limitranges", |l| {
            item(l, "LimitRange", Health::none(None))
        })),
        Box::pin(list::<NetworkPolicy>(
            c,
            ns,
            "networkpolicies.networking.k8s.io",
            |p| item(p, "NetworkPolicy", Health::none(None)),
        )),
        Box::pin(list::<RoleBinding>(
            c,
            ns,
            "rolebindings.rbac.authorization.k8s.io",
            |r| item(r, "RoleBinding", Health::none(None)),
        )),
        Box::pin(list::<Database>(c, ns, "databases.berth.dev", |d| {
            item(d, "Database", ready(d.status.as_ref().map(|s| &s.conditions)))
        })),
        Box::pin(list::<Scheduler>(c, ns, "schedulers.berth.dev", |s| {
            item(s, "Scheduler", ready(s.status.as_ref().map(|s| &s.conditions)))
        })),
        Box::pin(list::<Webhook>(c, ns, "webhooks.berth.dev", |w| {
            item(w, "Webhook", ready(w.status.as_ref().map(|s| &s.conditions)))
        })),
        Box::pin(stateful_sets_and_claims(c, ns)),
        Box::pin(list::<Deployment>(c, ns, "deployments.apps", |d| {
            item(d, "Deployment", health::deployment(d))
        })),
        Box::pin(replica_sets(c, ns)),
        Box::pin(list::<Pod>(c, ns, "pods", |p| item(p, "Pod", health::pod(p)))),
        Box::pin(list::<Service>(c, ns, "services", |s| {
            item(s, "Service", Health::none(None))
        })),
        Box::pin(list::<PodDisruptionBudget>(
            c,
            ns,
            "poddisruptionbudgets.policy",
            |p| item(p, "PodDisruptionBudget", Health::none(None)),
        )),
        Box::pin(list::<ConfigMap>(c, ns, "configmaps", |m| {
            item(m, "ConfigMap", Health::none(None))
        })),
        Box::pin(secrets(c, ns)),
        Box::pin(list::<Job>(c, ns, "jobs.batch", |j| {
            item(j, "Job", health::job(j))
        })),
    ];
    join_all(lists.drain(..)).await
}

/// StatefulSets, and their volume claims hung under them: the StatefulSet controller owns its claims only
/// under a retention policy, but always names them `<template>-<set>-<ordinal>`.
async fn stateful_sets_and_claims(c: &Cluster, ns: &str) -> Listed {
    let sets: Vec<StatefulSet> = objects(c, ns, "statefulsets.apps").await?;
    let claims: Vec<PersistentVolumeClaim> = objects(c, ns, "persistentvolumeclaims").await?;
    let mut out: Vec<Item> = sets
        .iter()
        .map(|s| item(s, "StatefulSet", health::stateful_set(s)))
        .collect();
    for claim in &claims {
        let mut i = item(claim, "PersistentVolumeClaim", health::claim(claim));
        if i.owner.is_none() {
            i.owner = sets.iter().find(|s| claim_of(s, &i.name)).and_then(|s| s.uid());
        }
        out.push(i);
    }
    Ok(out)
}

fn claim_of(set: &StatefulSet, claim: &str) -> bool {
    let name = set.name_any();
    set.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|t| t.metadata.name.as_deref())
        .any(|t| {
            claim
                .strip_prefix(&format!("{t}-{name}-"))
                .is_some_and(|ordinal| ordinal.parse::<u32>().is_ok())
        })
}

/// ReplicaSets a Deployment still uses: old ones scaled to nothing are history, not part of the tenant.
async fn replica_sets(c: &Cluster, ns: &str) -> Listed {
    let all: Vec<ReplicaSet> = objects(c, ns, "replicasets.apps").await?;
    let newest: HashMap<String, String> = {
        let mut by_owner: HashMap<String, &ReplicaSet> = HashMap::new();
        for rs in &all {
            let owner = item(rs, "ReplicaSet", Health::none(None))
                .owner
                .unwrap_or_default();
            let newer = by_owner
                .get(&owner)
                .is_none_or(|o| o.metadata.creation_timestamp < rs.metadata.creation_timestamp);
            if newer {
                by_owner.insert(owner, rs);
            }
        }
        by_owner
            .into_iter()
            .map(|(o, rs)| (o, rs.uid().unwrap_or_default()))
            .collect()
    };
    Ok(all
        .iter()
        .filter(|rs| {
            let scaled = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0
                || rs.status.as_ref().is_some_and(|s| s.replicas > 0);
            scaled || newest.values().any(|u| Some(u) == rs.uid().as_ref())
        })
        .map(|rs| item(rs, "ReplicaSet", health::replica_set(rs)))
        .collect())
}

/// The latest Warning events per object UID.
async fn warnings(c: &Cluster, ns: &str) -> HashMap<String, Vec<Warning>> {
    let api: Api<Event> = Api::namespaced(c.client.clone(), ns);
    let lp = ListParams::default().fields("type=Warning");
    api.list(&lp).await.map(|l| group(l.items)).unwrap_or_default()
}

/// A cluster-scoped object's events are recorded in `default`.
async fn customer_warnings(c: &Cluster, cust: &Customer) -> Vec<Warning> {
    let Some(uid) = cust.uid() else { return Vec::new() };
    let api: Api<Event> = Api::namespaced(c.client.clone(), "default");
    let lp = ListParams::default().fields(&format!("type=Warning,involvedObject.uid={uid}"));
    api.list(&lp)
        .await
        .map(|l| group(l.items).remove(&uid).unwrap_or_default())
        .unwrap_or_default()
}

fn group(events: Vec<Event>) -> HashMap<String, Vec<Warning>> {
    let mut by_uid: HashMap<String, Vec<(String, Warning)>> = HashMap::new();
    for e in events {
        let Some(uid) = e.involved_object.uid.clone() else {
            continue;
        };
        let last = e
            .last_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
            .or_else(|| e.first_timestamp.as_ref().map(|t| t.0.to_string()));
        let w = Warning {
            reason: e.reason.clone().unwrap_or_default(),
            message: e.message.clone().unwrap_or_default(),
            count: e.count.unwrap_or(1),
            last: last.clone(),
        };
        by_uid.entry(uid).or_default().push((last.unwrap_or_default(), w));
    }
    by_uid
        .into_iter()
        .map(|(uid, mut ws)| {
            // RFC 3339 in UTC sorts as text.
            ws.sort_by(|a, b| b.0.cmp(&a.0));
            (
                uid,
                ws.into_iter().take(WARNINGS_PER_OBJECT).map(|(_, w)| w).collect(),
            )
        })
        .collect()
}
