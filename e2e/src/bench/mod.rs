//! The scale benchmark behind `make bench` (`src/bin/bench.rs` says what it measures and how to run it).
//! Each phase writes N tenants and measures them through a [`phase::Phase`]; [`report::Report`] is what
//! lands in `result.json`, and [`table`] prints it.

pub mod berth;
pub mod chart;
pub mod cleanup;
pub mod cluster;
pub mod config;
pub mod events;
pub mod floor;
pub mod kro;
pub mod phase;
pub mod report;
pub mod restart;
pub mod sys;
pub mod table;
pub mod track;

use berth_api::Customer;

pub use config::Config;

/// Objects berth creates per tenant with the seed spec: Namespace, berth's own RoleBinding, ResourceQuota,
/// LimitRange, three NetworkPolicies, the admins' RoleBinding, Database, Scheduler (Customer controller) +
/// credentials and TLS Secrets, init and pgbouncer ConfigMaps, userlist and connection Secrets,
/// StatefulSet, Deployment, two Services, PDB (Database controller). The Scheduler creates nothing until a
/// workflow is due. The floor writes the same objects (its table row counts them).
pub const CHILDREN_PER_TENANT: f64 = 21.0;
/// Pods per tenant: PostgreSQL plus two pgbouncers.
pub const PODS_PER_TENANT: usize = 3;

/// The tenants of one phase. Each phase has its own names, so that one never waits on (or deletes)
/// what the other wrote.
pub struct Tenants {
    pub phase: &'static str,
    pub prefix: &'static str,
    /// Selects the tenants' child objects; `None` is berth's `managed-by` label (the floor writes it too).
    pub children: Option<&'static str>,
}

pub const FLOOR: Tenants = Tenants {
    phase: "floor",
    prefix: "bench-floor-",
    children: None,
};
pub const BERTH: Tenants = Tenants {
    phase: "berth",
    prefix: "bench-berth-",
    children: None,
};
/// kro labels what it creates as its own, over the `managed-by` label of berth's templates.
pub const KRO: Tenants = Tenants {
    phase: "kro",
    prefix: "bench-kro-",
    children: Some("kro.run/owned=true"),
};

impl Tenants {
    #[must_use]
    pub fn names(&self, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{}{i:05}", self.prefix)).collect()
    }
}

/// The seed Customer of the issue, with `deletionPolicy: Delete`.
pub fn seed_customer(name: &str) -> anyhow::Result<Customer> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "Customer",
        "metadata": {"name": name},
        "spec": {
            "deletionPolicy": "Delete",
            "features": {
                "database": {"enabled": true, "storage": "256Gi"},
                "scheduler": {"enabled": true, "workers": 4},
                "webhooks": {"enabled": false},
            },
        },
    }))?)
}

/// Progress goes to stderr, so that stdout holds only the table.
pub fn log(line: &str) {
    eprintln!("[bench] {line}");
}

/// Runs `each` over `items` with `concurrency` in flight, as a phase creates its tenants' objects; logs every
/// failure and returns how many failed.
pub async fn count_failures<I, F, Fut, T>(items: I, concurrency: usize, each: F) -> usize
where
    I: IntoIterator,
    F: FnMut(I::Item) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    use futures::StreamExt;
    futures::stream::iter(items)
        .map(each)
        .buffer_unordered(concurrency)
        .filter_map(|r| async move { r.err().map(|e| log(&format!("{e:#}"))) })
        .count()
        .await
}

/// Watches `api` and marks a tenant (named like the object) ready in `tracker` once `ready` holds, for a
/// phase whose tenant is one object that reports its own readiness (a Customer, a kro instance).
pub fn watch_ready<K>(
    api: kube::Api<K>,
    tracker: &std::sync::Arc<track::Tracker>,
    ready: fn(&K) -> bool,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    use futures::StreamExt;
    use kube::ResourceExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let tracker = tracker.clone();
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        while let Some(next) = stream.next().await {
            let Ok(o) = next else { continue };
            if ready(&o) {
                tracker.part_ready(&o.name_any(), 1);
            }
        }
    })
}
