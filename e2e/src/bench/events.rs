//! Counts of watch events (creates and updates, spec or status) per kind on the tenants' objects:
//! each one is a wake-up for whichever controller watches that kind, so next to berth's reconcile
//! counts they show what drives its reconciles. Metadata-only watches, the same in both phases.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, LimitRange, Namespace, Pod, ResourceQuota, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::core::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;

use super::track::Tracker;

pub type Counts = Arc<Mutex<BTreeMap<&'static str, u64>>>;

/// Watches every kind a tenant is made of (and its pods) until the handles are aborted. The first
/// PodDisruptionBudget of a tenant (the last child both berth and the floor write) marks it in
/// `created`: from then on every object of the tenant exists.
pub fn count(
    client: &Client,
    prefix: &str,
    selector: String,
    created: &Arc<Tracker>,
) -> (Counts, Vec<JoinHandle<()>>) {
    let w = Watches {
        client,
        prefix,
        counts: Arc::default(),
        selector,
    };
    let handles = vec![
        w.spawn::<Namespace>("Namespace", true, None),
        w.spawn::<ResourceQuota>("ResourceQuota", true, None),
        w.spawn::<LimitRange>("LimitRange", true, None),
        w.spawn::<NetworkPolicy>("NetworkPolicy", true, None),
        w.spawn::<RoleBinding>("RoleBinding", true, None),
        w.spawn::<berth_api::Customer>("Customer", false, None),
        w.spawn::<berth_api::Database>("Database", true, None),
        w.spawn::<berth_api::Scheduler>("Scheduler", true, None),
        w.spawn::<Secret>("Secret", true, None),
        w.spawn::<ConfigMap>("ConfigMap", true, None),
        w.spawn::<StatefulSet>("StatefulSet", true, None),
        w.spawn::<Deployment>("Deployment", true, None),
        w.spawn::<Service>("Service", true, None),
        w.spawn::<PodDisruptionBudget>("PodDisruptionBudget", true, Some(created.clone())),
        w.spawn::<Pod>("Pod", false, None),
    ];
    (w.counts, handles)
}

/// A copy of the counts now.
pub fn snapshot(counts: &Counts) -> BTreeMap<String, u64> {
    counts
        .lock()
        .map(|c| c.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect())
        .unwrap_or_default()
}

struct Watches<'a> {
    client: &'a Client,
    prefix: &'a str,
    counts: Counts,
    /// berth's label: the common kinds are watched through it, so the bench does not cache the cluster.
    selector: String,
}

impl Watches<'_> {
    fn spawn<K>(&self, kind: &'static str, labelled: bool, created: Option<Arc<Tracker>>) -> JoinHandle<()>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    {
        let api: Api<PartialObjectMeta<K>> = Api::all(self.client.clone());
        let mut cfg = watcher::Config::default();
        if labelled {
            cfg = cfg.labels(&self.selector);
        }
        let prefix = self.prefix.to_owned();
        let counts = self.counts.clone();
        tokio::spawn(async move {
            let stream = watcher(api, cfg).default_backoff();
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                let Ok(watcher::Event::Apply(obj)) = event else {
                    continue;
                };
                // Namespaced objects live in the tenant's namespace; Namespaces and Customers carry its
                // name.
                let tenant = obj.namespace().unwrap_or_else(|| obj.name_any());
                if !tenant.starts_with(&prefix) {
                    continue;
                }
                if let Ok(mut c) = counts.lock() {
                    *c.entry(kind).or_insert(0) += 1;
                }
                if let Some(t) = &created {
                    t.part_ready(&tenant, 1);
                }
            }
        })
    }
}
