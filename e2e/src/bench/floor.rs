//! The floor: a tight client that creates, for every tenant, exactly the objects berth would create
//! (`berth_customer::build::children`, `berth_database::build::children`), with berth's concurrency
//! (one pool of workers per controller), and waits for the same readiness berth waits for (namespace
//! active, StatefulSet ready, pool Deployment available). No status writes, no reads, no re-applies:
//! what the API server cannot do faster.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use berth_api::Customer;
use berth_database::build::{Children, Inputs, children};
use berth_database::{Credentials, names as db_names};
use berth_kit::Settings;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::phase::{Phase, PhaseReport, Writer};
use super::sys::Meters;
use super::track::Tracker;
use super::{Config, FLOOR, log};

/// How the floor writes: POST (the cheapest write) or server-side apply (what berth sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Create,
    Apply,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Apply => "apply",
        }
    }
}

/// The floor's figures: those both phases report, and the client's own counts.
#[derive(Debug, Serialize)]
pub struct FloorReport {
    #[serde(flatten)]
    pub phase: PhaseReport,
    pub writes: u64,
    pub retries: u64,
    pub errors: usize,
    pub client_cpu_seconds: Option<f64>,
}

/// Writes the floor's tenants and waits until they are ready.
pub async fn run(client: &Client, cfg: &Config, meters: &Meters) -> anyhow::Result<FloorReport> {
    let bench = Writer {
        pid: std::process::id(),
        metrics_port: None,
    };
    let mut phase = Phase::start(client, &FLOOR, SERVER | POOL, cfg, meters, bench)?;
    let ready = phase.ready.clone();
    phase.watch(watch_ready(client, &ready));
    let stats = Arc::new(Stats::default());
    let names = FLOOR.names(cfg.n);
    let work = create_all(client, &names, cfg.concurrency, cfg.floor_verb, &ready, &stats);
    phase.issue(work).await;
    let (writes, issued_in) = (stats.writes.load(Ordering::Relaxed), phase.issued_in());
    log(&format!(
        "floor: {writes} writes in {issued_in:.1}s; waiting for readiness"
    ));
    phase.converge().await;
    let (report, end) = phase.finish()?;
    let errors = stats.errors.lock().map(|e| e.clone()).unwrap_or_default();
    for e in errors.iter().take(5) {
        log(&format!("floor error: {e}"));
    }
    Ok(FloorReport {
        phase: report,
        writes,
        retries: stats.retries.load(Ordering::Relaxed),
        errors: errors.len(),
        client_cpu_seconds: end.cpu_since(&phase.start),
    })
}

/// Part bits of a floor tenant in the [`Tracker`].
pub const SERVER: u8 = 1;
pub const POOL: u8 = 2;

#[derive(Default)]
pub struct Stats {
    pub writes: AtomicU64,
    pub retries: AtomicU64,
    pub errors: std::sync::Mutex<Vec<String>>,
}

impl Stats {
    fn error(&self, e: &anyhow::Error) {
        if let Ok(mut v) = self.errors.lock() {
            v.push(format!("{e:#}"));
        }
    }
}

/// A Customer as the API server would return it, with a made-up UID: what `build::children` needs.
pub fn synthetic_customer(name: &str, index: usize) -> anyhow::Result<Customer> {
    let mut c = super::seed_customer(name)?;
    c.metadata.uid = Some(format!("00000000-0000-4000-8000-{index:012}"));
    Ok(c)
}

/// Watches the floor's workloads and marks tenants ready in `tracker`. Runs until aborted.
pub fn watch_ready(client: &Client, tracker: &Arc<Tracker>) -> Vec<tokio::task::JoinHandle<()>> {
    let server_ready = |s: &StatefulSet| s.status.as_ref().and_then(|st| st.ready_replicas).unwrap_or(0) >= 1;
    vec![
        watch_part(client, tracker, SERVER, server_ready),
        watch_part(client, tracker, POOL, pool_available),
    ]
}

/// Marks `part` ready for a tenant when one of its `K`s (berth-labelled) satisfies `ready`.
fn watch_part<K>(
    client: &Client,
    tracker: &Arc<Tracker>,
    part: u8,
    ready: fn(&K) -> bool,
) -> tokio::task::JoinHandle<()>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + 'static,
{
    let api: Api<K> = Api::all(client.clone());
    let tracker = tracker.clone();
    let cfg = watcher::Config::default().labels(&berth_kit::labels::managed_selector());
    tokio::spawn(async move {
        let stream = watcher(api, cfg).default_backoff().applied_objects();
        futures::pin_mut!(stream);
        while let Some(next) = stream.next().await {
            let Ok(o) = next else { continue };
            if ready(&o)
                && let Some(ns) = o.namespace()
            {
                tracker.part_ready(&ns, part);
            }
        }
    })
}

/// The Database controller's `PoolReady`: at least one pod available and the `Available` condition.
fn pool_available(d: &Deployment) -> bool {
    let Some(status) = &d.status else { return false };
    status.available_replicas.unwrap_or(0) >= 1
        && status
            .conditions
            .as_deref()
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Available" && c.status == "True")
}

/// Creates the tenants `names`: a pool of `concurrency` workers does each tenant's Customer-level
/// children (as the Customer controller), then hands it to a second pool of `concurrency` workers for
/// the Database's children (as the Database controller).
pub async fn create_all(
    client: &Client,
    names: &[String],
    concurrency: usize,
    verb: Verb,
    tracker: &Arc<Tracker>,
    stats: &Arc<Stats>,
) {
    let (tx, rx) = futures::channel::mpsc::unbounded::<(String, berth_api::Database)>();
    let customers = async move {
        let tx = tx;
        futures::stream::iter(names.iter().enumerate())
            .for_each_concurrent(concurrency, move |(i, name)| {
                let tx = tx.clone();
                async move {
                    tracker.created(name);
                    match customer_children(client, name, i, verb, stats).await {
                        Ok(Some(db)) => {
                            let _ = tx.unbounded_send((name.clone(), db));
                        }
                        Ok(None) => {}
                        Err(e) => stats.error(&e),
                    }
                }
            })
            .await;
    };
    let databases = rx.for_each_concurrent(concurrency, move |(customer, db)| async move {
        if let Err(e) = database_children(client, &customer, &db, verb, stats).await {
            stats.error(&e);
        }
    });
    futures::join!(customers, databases);
}

/// What the Customer controller writes for the seed Customer `name` (the `index`-th tenant), owner
/// references stripped: the floor writes them, and the kro phase's graph is made of them.
pub struct CustomerObjects {
    pub namespace: k8s_openapi::api::core::v1::Namespace,
    /// berth's own RoleBinding, which it creates first in every tenant.
    pub binding: k8s_openapi::api::rbac::v1::RoleBinding,
    pub resource_quota: k8s_openapi::api::core::v1::ResourceQuota,
    pub limit_range: k8s_openapi::api::core::v1::LimitRange,
    pub network_policies: [k8s_openapi::api::networking::v1::NetworkPolicy; 3],
    pub admins: k8s_openapi::api::rbac::v1::RoleBinding,
    pub database: Option<berth_api::Database>,
    pub scheduler: Option<berth_api::Scheduler>,
}

pub fn customer_objects(name: &str, index: usize) -> anyhow::Result<CustomerObjects> {
    let customer = synthetic_customer(name, index)?;
    let berth_customer::build::Children {
        mut namespace,
        mut resource_quota,
        mut limit_range,
        mut network_policies,
        egress: _,
        mut admins,
        mut database,
        mut scheduler,
        // The bench's tenants have webhooks off, as in the README's example.
        webhook: _,
    } = berth_customer::build::children(&customer).context("the synthetic Customer has a UID")?;
    // berth binds its tenant role first in every tenant namespace; so does the floor.
    let access = berth_kit::TenantAccess {
        role: crate::BERTH_TENANT_ROLE.to_owned(),
        subject: serde_json::from_value(serde_json::json!({
            "kind": "ServiceAccount", "name": crate::BERTH_SERVICE_ACCOUNT, "namespace": crate::operator::LEASE_NAMESPACE
        }))?,
    };
    let mut binding = berth_customer::build::operator_binding(&customer, Some(&access))
        .context("the synthetic Customer has a UID")?;
    let strip = |m: &mut kube::api::ObjectMeta| m.owner_references = None;
    strip(&mut namespace.metadata);
    strip(&mut binding.metadata);
    strip(&mut resource_quota.metadata);
    strip(&mut limit_range.metadata);
    for np in &mut network_policies {
        strip(&mut np.metadata);
    }
    strip(&mut admins.metadata);
    if let Some(db) = &mut database {
        strip(&mut db.metadata);
    }
    if let Some(s) = &mut scheduler {
        strip(&mut s.metadata);
    }
    Ok(CustomerObjects {
        namespace,
        binding,
        resource_quota,
        limit_range,
        network_policies,
        admins,
        database,
        scheduler,
    })
}

/// The Customer controller's children, in its order; returns the Database for the second stage.
async fn customer_children(
    client: &Client,
    name: &str,
    index: usize,
    verb: Verb,
    stats: &Stats,
) -> anyhow::Result<Option<berth_api::Database>> {
    let o = customer_objects(name, index)?;
    let ns = o.namespace.name_any();
    put(&Api::all(client.clone()), &o.namespace, verb, stats).await?;
    put(&Api::namespaced(client.clone(), &ns), &o.binding, verb, stats).await?;
    put(
        &Api::namespaced(client.clone(), &ns),
        &o.resource_quota,
        verb,
        stats,
    )
    .await?;
    put(&Api::namespaced(client.clone(), &ns), &o.limit_range, verb, stats).await?;
    for np in &o.network_policies {
        put(&Api::namespaced(client.clone(), &ns), np, verb, stats).await?;
    }
    put(&Api::namespaced(client.clone(), &ns), &o.admins, verb, stats).await?;
    if let Some(db) = &o.database {
        put(&Api::namespaced(client.clone(), &ns), db, verb, stats).await?;
    }
    if let Some(s) = &o.scheduler {
        put(&Api::namespaced(client.clone(), &ns), s, verb, stats).await?;
    }
    Ok(o.database)
}

/// What the Database controller writes for `db` of `customer`, owner references stripped, with fresh
/// passwords and certificates (as berth generates them per Database).
pub fn database_objects(customer: &str, db: &berth_api::Database) -> anyhow::Result<Children> {
    let ns = db.namespace().context("the Database has a namespace")?;
    let name = db.name_any();
    let credentials = Credentials::generate(
        db_names::SUPERUSER,
        &db_names::sql_database(&name),
        db_names::APP_USER,
    )
    .map_err(|e| anyhow!("random passwords: {e}"))?;
    let owner = berth_kit::owner_ref(&with_uid(db)).context("the Database has a UID")?;
    let subjects = berth_database::tls::Subjects::in_cluster(&name, &ns);
    let tls = berth_database::tls::Tls::generate(
        &name,
        &subjects,
        &credentials.app_user,
        time::OffsetDateTime::now_utc(),
    )
    .map_err(|e| anyhow!("{e}"))?;
    let mut kids = children(&Inputs {
        db,
        namespace: &ns,
        name: &name,
        customer,
        owner: &owner,
        credentials: &credentials,
        tls: &tls,
        settings: &Settings::default(),
        existing_claims: None,
    });
    for (_, meta) in kids.metas_mut() {
        meta.owner_references = None;
    }
    Ok(kids)
}

/// The Database controller's children, in its order.
async fn database_children(
    client: &Client,
    customer: &str,
    db: &berth_api::Database,
    verb: Verb,
    stats: &Stats,
) -> anyhow::Result<()> {
    let ns = db.namespace().context("the Database has a namespace")?;
    let kids = database_objects(customer, db)?;
    let Children {
        credentials,
        tls,
        server_init,
        pool_config,
        pool_auth,
        connection,
        server,
        pool,
        server_service,
        pool_service,
        pool_budget,
    } = &kids;
    put(&Api::namespaced(client.clone(), &ns), credentials, verb, stats).await?;
    put(&Api::namespaced(client.clone(), &ns), tls, verb, stats).await?;
    put(&Api::namespaced(client.clone(), &ns), server_init, verb, stats).await?;
    put(&Api::namespaced(client.clone(), &ns), pool_config, verb, stats).await?;
    put(&Api::namespaced(client.clone(), &ns), pool_auth, verb, stats).await?;
    put(&Api::namespaced(client.clone(), &ns), connection, verb, stats).await?;
    put(&Api::namespaced(client.clone(), &ns), server, verb, stats).await?;
    put(&Api::namespaced(client.clone(), &ns), pool, verb, stats).await?;
    put(&Api::namespaced(client.clone(), &ns), server_service, verb, stats).await?;
    put(&Api::namespaced(client.clone(), &ns), pool_service, verb, stats).await?;
    put(&Api::namespaced(client.clone(), &ns), pool_budget, verb, stats).await?;
    Ok(())
}

/// The floor's Database as the API server would return it: with a (made-up) UID, for the builders'
/// owner reference, which is stripped again before anything is written.
fn with_uid(db: &berth_api::Database) -> berth_api::Database {
    let mut db = db.clone();
    db.metadata.uid = Some("00000000-0000-4000-8000-database0000".to_owned());
    db
}

/// One write of `obj`; AlreadyExists counts as done, anything else is retried a few times.
async fn put<K>(api: &Api<K>, obj: &K, verb: Verb, stats: &Stats) -> anyhow::Result<()>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug,
{
    let name = obj.name_any();
    let mut attempt = 0u32;
    loop {
        stats.writes.fetch_add(1, Ordering::Relaxed);
        let result = match verb {
            Verb::Create => api.create(&PostParams::default(), obj).await.map(drop),
            Verb::Apply => api
                .patch(
                    &name,
                    &PatchParams::apply("berth-bench").force(),
                    &Patch::Apply(obj),
                )
                .await
                .map(drop),
        };
        match result {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(s)) if s.is_already_exists() => return Ok(()),
            Err(e) if attempt < 5 => {
                stats.retries.fetch_add(1, Ordering::Relaxed);
                log(&format!("retrying {} {name}: {e}", K::kind(&())));
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e).with_context(|| format!("{} {name}", K::kind(&()))),
        }
    }
}
