//! `make bench` (issue #9): how close berth comes to the API server's own floor at scale.
//!
//! 1. floor: a tight client creates, for N tenants, exactly the objects berth would create (berth's own
//!    builders, ownerReferences stripped) with berth's concurrency, and waits for berth's readiness
//!    (namespace, StatefulSet ready, pool Deployment available);
//! 2. berth: the release operator runs as a process; N Customers are created and the bench waits until
//!    each is Ready, then watches 60 s of steady state;
//! 3. the floor's namespaces are deleted (and gone) before berth starts, on separate names.
//!
//! Prints a table, writes `target/bench/result.json` and `target/bench/ready.png`. Targets are
//! reported, never asserted. Run it through `e2e/bench.sh`, which builds everything and brings up the
//! local control plane when `KUBECONFIG` is unset.
//!
//! Environment: `N` (tenants, default 200), `BENCH_CONCURRENCY` (default 8, berth's default),
//! `BENCH_FLOOR_VERB` (`create`, default, or `apply`), `BENCH_SETTLE_SECONDS` (default 60),
//! `BENCH_TIMEOUT_SECONDS` (per phase), `BENCH_SKIP_FINAL_CLEANUP=1` (leave berth's tenants),
//! `BERTH_BIN` (default `target/release/berth`), `BERTH_CLUSTER_DIR` (for the components' PIDs).

#[path = "../bench/events.rs"]
mod events;
#[path = "../bench/floor.rs"]
mod floor;
#[path = "../bench/operator.rs"]
mod operator;
#[path = "../bench/prom.rs"]
mod prom;
#[path = "../bench/report.rs"]
mod report;
#[path = "../bench/sys.rs"]
mod sys;
#[path = "../bench/track.rs"]
mod track;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context as _, bail};
use berth_api::Customer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use plotters::style::RGBColor;
use serde_json::{Value, json};

use crate::track::{Tracker, percentile};

const FLOOR_PREFIX: &str = "bench-floor-";
const BERTH_PREFIX: &str = "bench-berth-";
/// Objects berth creates per tenant with the seed spec: Namespace, ResourceQuota, LimitRange, two
/// NetworkPolicies, RoleBinding, Database, Scheduler (Customer controller) + credentials, init and
/// pgbouncer ConfigMaps, userlist and connection Secrets, StatefulSet, Deployment, two Services, PDB
/// (Database controller). The Scheduler creates nothing until a workflow is due.
const CHILDREN_PER_TENANT: f64 = 18.0;
/// Pods per tenant: PostgreSQL plus two pgbouncers.
const PODS_PER_TENANT: usize = 3;
const WRITES: &str = "berth_api_writes_total";
const RECONCILES: &str = "berth_reconciles_total";

struct Config {
    n: usize,
    concurrency: usize,
    floor_verb: floor::Verb,
    settle: Duration,
    timeout: Duration,
    final_cleanup: bool,
    berth_bin: PathBuf,
    kubeconfig: PathBuf,
    cluster_dir: Option<PathBuf>,
    out: PathBuf,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(key) {
        Ok(v) if !v.is_empty() => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{key}={v} is not a valid value")),
        _ => Ok(default),
    }
}

impl Config {
    fn from_env() -> anyhow::Result<Self> {
        let repo = berth_e2e::repo().canonicalize()?;
        let n: usize = env_or("N", 200)?;
        if n == 0 {
            bail!("N must be at least 1");
        }
        let floor_verb = match std::env::var("BENCH_FLOOR_VERB").as_deref() {
            Ok("apply") => floor::Verb::Apply,
            Ok("create" | "") | Err(_) => floor::Verb::Create,
            Ok(other) => bail!("BENCH_FLOOR_VERB={other}: use create or apply"),
        };
        let default_timeout = 600.max(3 * n as u64);
        Ok(Self {
            n,
            concurrency: env_or("BENCH_CONCURRENCY", 8)?,
            floor_verb,
            settle: Duration::from_secs(env_or("BENCH_SETTLE_SECONDS", 60)?),
            timeout: Duration::from_secs(env_or("BENCH_TIMEOUT_SECONDS", default_timeout)?),
            final_cleanup: std::env::var("BENCH_SKIP_FINAL_CLEANUP").map_or(true, |v| v != "1"),
            berth_bin: std::env::var_os("BERTH_BIN")
                .map_or_else(|| repo.join("target/release/berth"), PathBuf::from),
            kubeconfig: berth_e2e::kubeconfig(),
            cluster_dir: std::env::var_os("BERTH_CLUSTER_DIR")
                .map(PathBuf::from)
                .or_else(|| Some(repo.join(".cluster")))
                .filter(|d| d.join("pids").is_dir()),
            out: repo.join("target/bench"),
        })
    }
}

/// The seed Customer of the issue, with `deletionPolicy: Delete`.
pub fn seed_customer(name: &str) -> anyhow::Result<Customer> {
    Ok(serde_json::from_value(json!({
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

fn log(line: &str) {
    eprintln!("[bench] {line}");
}

async fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).with_context(|| {
        format!(
            "no kubeconfig at {}: run through e2e/bench.sh or set KUBECONFIG",
            kubeconfig.display()
        )
    })?;
    let config =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i:05}")).collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    std::fs::create_dir_all(&cfg.out)?;
    let client = client(&cfg.kubeconfig).await?;
    let ticks = sys::clock_ticks();
    let pids = sys::component_pids(cfg.cluster_dir.as_deref());

    let machine = json!({
        "nproc": std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        "mem_gib": sys::mem_total_gib(),
        "load_at_start": sys::load_average(),
    });
    let kubernetes = client.apiserver_version().await?.git_version;
    let repo = berth_e2e::repo().canonicalize()?;
    let berth_version = sys::command_line(&cfg.berth_bin, &["--version"], None).unwrap_or_default();
    let git = sys::command_line(Path::new("git"), &["rev-parse", "--short", "HEAD"], Some(&repo))
        .unwrap_or_default();
    let dirty = sys::command_line(Path::new("git"), &["status", "--porcelain"], Some(&repo)).is_some();
    let git = if dirty { format!("{git}-dirty") } else { git };
    log(&format!(
        "N={} concurrency={} floor verb={} | {} CPUs, {:.1} GiB, load {} | kubernetes {kubernetes} | {berth_version} ({git})",
        cfg.n,
        cfg.concurrency,
        cfg.floor_verb.as_str(),
        machine["nproc"],
        sys::mem_total_gib().unwrap_or(0.0),
        sys::load_average().unwrap_or_default(),
    ));
    if pids.is_empty() {
        log("no local control plane PIDs (BERTH_CLUSTER_DIR): API server CPU is not measured");
    }

    prepare(&client, &cfg).await?;

    // ---------------------------------------------------------------------------------------- floor
    log("phase 1/2: floor");
    let floor_names = names(FLOOR_PREFIX, cfg.n);
    let tracker = Arc::new(Tracker::new(FLOOR_PREFIX, floor::SERVER | floor::POOL));
    let watches = floor::watch_ready(&client, &tracker);
    let floor_created = Arc::new(Tracker::new(FLOOR_PREFIX, 1));
    let (floor_events, floor_event_watches) = events::count(&client, FLOOR_PREFIX, &floor_created);
    let stats = Arc::new(floor::Stats::default());
    let cpu0 = sys::cpu_of(&pids, ticks);
    let self0 = sys::cpu_seconds(std::process::id(), ticks);
    let t0 = tracker.elapsed();
    floor::create_all(
        &client,
        &floor_names,
        cfg.concurrency,
        cfg.floor_verb,
        &tracker,
        &stats,
    )
    .await;
    let created_in = tracker.elapsed() - t0;
    log(&format!(
        "floor: {} writes in {created_in:.1}s; waiting for readiness",
        stats.writes.load(Ordering::Relaxed)
    ));
    let floor_done = wait_ready(&tracker, cfg.n, cfg.timeout, "floor").await;
    let cpu1 = sys::cpu_of(&pids, ticks);
    let self1 = sys::cpu_seconds(std::process::id(), ticks);
    let floor_events = events::snapshot(&floor_events);
    for w in watches.into_iter().chain(floor_event_watches) {
        w.abort();
    }
    let floor_outcomes = tracker.outcomes();
    let floor_errors = stats.errors.lock().map(|e| e.clone()).unwrap_or_default();
    for e in floor_errors.iter().take(5) {
        log(&format!("floor error: {e}"));
    }
    let floor_summary = summary(&floor_outcomes, cfg.n);
    let floor_json = json!({
        "t_seconds": floor_summary.t_all,
        "complete": floor_done,
        "ready": floor_summary.ready.len(),
        "create_seconds": created_in,
        "latency_seconds": floor_summary.latency_json(),
        "writes": stats.writes.load(Ordering::Relaxed),
        "retries": stats.retries.load(Ordering::Relaxed),
        "errors": floor_errors.len(),
        "client_cpu_seconds": self0.zip(self1).map(|(a, b)| b - a),
        "watch_events_by_kind": floor_events,
        "all_objects_exist_seconds": objects_exist(&floor_created, cfg.n),
        "components_cpu_seconds": sys::delta(&cpu0, &cpu1),
    });
    log("floor: deleting its namespaces");
    delete_namespaces(&client, FLOOR_PREFIX, cfg.concurrency, cfg.timeout).await?;

    // ---------------------------------------------------------------------------------------- berth
    log("phase 2/2: berth");
    let mut op = operator::Operator::start(&cfg.berth_bin, &cfg.kubeconfig, cfg.out.join("operator.log"))?;
    op.wait_ready(Duration::from_secs(120)).await?;
    let berth_names = names(BERTH_PREFIX, cfg.n);
    let m0 = prom::scrape(op.port)?;
    let op0 = sys::cpu_seconds(op.pid(), ticks);
    let rss_start = sys::status_kib(op.pid(), "VmRSS");
    let cpu0 = sys::cpu_of(&pids, ticks);
    let tracker = Arc::new(Tracker::new(BERTH_PREFIX, 1));
    let watch = watch_customers(&client, &tracker);
    let berth_created = Arc::new(Tracker::new(BERTH_PREFIX, 1));
    let (berth_events, berth_event_watches) = events::count(&client, BERTH_PREFIX, &berth_created);
    let t0 = tracker.elapsed();
    let create_errors = create_customers(&client, &berth_names, cfg.concurrency, &tracker).await;
    let created_in = tracker.elapsed() - t0;
    log(&format!(
        "berth: {} Customers created in {created_in:.1}s; waiting until Ready",
        cfg.n
    ));
    let berth_done = wait_ready(&tracker, cfg.n, cfg.timeout, "berth").await;
    let m1 = prom::scrape(op.port)?;
    let events_converged = events::snapshot(&berth_events);
    let op1 = sys::cpu_seconds(op.pid(), ticks);
    let cpu1 = sys::cpu_of(&pids, ticks);
    log(&format!(
        "berth: converged; watching {}s of steady state",
        cfg.settle.as_secs()
    ));
    tokio::time::sleep(cfg.settle).await;
    let m2 = prom::scrape(op.port)?;
    let events_settled = events::snapshot(&berth_events);
    let op2 = sys::cpu_seconds(op.pid(), ticks);
    let cpu2 = sys::cpu_of(&pids, ticks);
    let hwm = sys::status_kib(op.pid(), "VmHWM");
    let rss_end = sys::status_kib(op.pid(), "VmRSS");
    watch.abort();
    for w in berth_event_watches {
        w.abort();
    }
    let berth_outcomes = tracker.outcomes();
    let berth_summary = summary(&berth_outcomes, cfg.n);

    let n = cfg.n as f64;
    let writes = m1.delta_by(&m0, WRITES, &["controller", "verb"]);
    let reconciles = m1.delta_by(&m0, RECONCILES, &["controller"]);
    let writes_total: f64 = writes.values().sum();
    let object_writes: f64 = writes
        .iter()
        .filter(|(k, _)| matches!(k[1].as_str(), "apply" | "create" | "patch" | "delete"))
        .map(|(_, v)| v)
        .sum();
    let steady_writes = m2.delta_sum(&m1, WRITES);
    let steady_reconciles = m2.delta_by(&m1, RECONCILES, &["controller"]);
    let mib = |k: Option<u64>| k.map(|k| k as f64 / 1024.0);
    let berth_json = json!({
        "t_seconds": berth_summary.t_all,
        "complete": berth_done,
        "ready": berth_summary.ready.len(),
        "create_seconds": created_in,
        "create_errors": create_errors,
        "latency_seconds": berth_summary.latency_json(),
        "writes": writes_total,
        "writes_by_controller_verb": keyed(&writes),
        "writes_per_customer_by_controller_verb": keyed_per(&writes, n),
        "reconciles_by_controller": keyed(&reconciles),
        "reconciles_per_customer_by_controller": keyed_per(&reconciles, n),
        "writes_per_child_object": writes_total / (n * CHILDREN_PER_TENANT),
        "object_writes_per_child_object": object_writes / (n * CHILDREN_PER_TENANT),
        "steady_state": {
            "seconds": cfg.settle.as_secs(),
            "writes": steady_writes,
            "writes_by_controller_verb": keyed(&m2.delta_by(&m1, WRITES, &["controller", "verb"])),
            "reconciles_by_controller": keyed(&steady_reconciles),
            "operator_cpu_seconds": op1.zip(op2).map(|(a, b)| b - a),
            "components_cpu_seconds": sys::delta(&cpu1, &cpu2),
        },
        "operator": {
            "peak_rss_mib": mib(hwm),
            "rss_mib_at_start": mib(rss_start),
            "rss_mib_at_end": mib(rss_end),
            "cpu_seconds": op0.zip(op1).map(|(a, b)| b - a),
            "log": op.log.display().to_string(),
        },
        "components_cpu_seconds": sys::delta(&cpu0, &cpu1),
        "watch_events_by_kind": events_converged,
        "all_objects_exist_seconds": objects_exist(&berth_created, cfg.n),
    });
    let berth_json = {
        let mut j = berth_json;
        let steady: BTreeMap<String, u64> = events_settled
            .iter()
            .map(|(k, v)| (k.clone(), v - events_converged.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect();
        j["steady_state"]["watch_events_by_kind"] = json!(steady);
        j
    };

    if cfg.final_cleanup {
        log("berth: deleting its Customers");
        delete_customers(&client, cfg.concurrency, cfg.timeout).await?;
    }
    op.stop(Duration::from_secs(25));

    // --------------------------------------------------------------------------------------- report
    let ratio = berth_summary
        .t_all
        .zip(floor_summary.t_all)
        .filter(|(_, f)| *f > 0.0)
        .map(|(b, f)| b / f);
    let per_child = writes_total / (n * CHILDREN_PER_TENANT);
    let rss_mib = mib(hwm);
    let targets = json!({
        "ratio_le_1_25": {"value": ratio, "met": ratio.map(|r| r <= 1.25)},
        "steady_state_writes_eq_0": {"value": steady_writes, "met": steady_writes == 0.0},
        "writes_per_child_object_le_2": {"value": per_child, "met": per_child <= 2.0},
        "operator_rss_lt_64_mib_at_1000": {
            "value": rss_mib,
            "n": cfg.n,
            "met": rss_mib.filter(|_| cfg.n >= 1000).map(|r| r < 64.0),
        },
    });
    let result = json!({
        "n": cfg.n,
        "concurrency": cfg.concurrency,
        "floor_verb": cfg.floor_verb.as_str(),
        "machine": machine,
        "versions": {"kubernetes": kubernetes, "berth": berth_version, "git": git},
        "floor": floor_json,
        "berth": berth_json,
        "ratio": ratio,
        "targets": targets,
        "ready_curves": {"floor": floor_summary.ready, "berth": berth_summary.ready},
    });
    let json_path = cfg.out.join("result.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&result)?)?;
    let png = cfg.out.join("ready.png");
    if let Err(e) = report::plot(
        &png,
        cfg.n,
        &[
            ("floor", RGBColor(31, 119, 180), &floor_summary.ready),
            ("berth", RGBColor(214, 39, 40), &berth_summary.ready),
        ],
    ) {
        log(&format!("could not draw {}: {e:#}", png.display()));
    }
    print_table(&result, &writes, &reconciles, n);
    println!("\nwrote {} and {}", json_path.display(), png.display());
    Ok(())
}

/// CRDs, the Lease namespace, enough fake node capacity, no leftovers of an earlier run.
async fn prepare(client: &Client, cfg: &Config) -> anyhow::Result<()> {
    berth_e2e::install_crds(client).await?;
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("berth-system".to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .patch(
            "berth-system",
            &PatchParams::apply("berth-bench"),
            &Patch::Apply(&ns),
        )
        .await?;

    let leftover_customers = Api::<Customer>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|c| c.name_any().starts_with(BERTH_PREFIX));
    if leftover_customers {
        log("removing Customers left by an earlier run");
        delete_customers(client, cfg.concurrency, cfg.timeout).await?;
    }
    for prefix in [FLOOR_PREFIX, BERTH_PREFIX] {
        delete_namespaces(client, prefix, cfg.concurrency, cfg.timeout).await?;
    }

    // Capacity: every tenant runs PODS_PER_TENANT pods.
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let pod_slots: usize = nodes
        .items
        .iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_none_or(Vec::is_empty)
        })
        .filter_map(|n| {
            n.status
                .as_ref()?
                .allocatable
                .as_ref()?
                .get("pods")?
                .0
                .parse::<usize>()
                .ok()
        })
        .sum();
    let pods = Api::<Pod>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    let needed = cfg.n * PODS_PER_TENANT;
    if pod_slots.saturating_sub(pods) < needed {
        bail!(
            "the cluster has room for {} more pods ({} nodes, {pods} pods running) but N={} needs {needed}: \
             bring it up with more fake nodes, e.g. BERTH_NODES={} e2e/cluster.sh up",
            pod_slots.saturating_sub(pods),
            nodes.items.len(),
            cfg.n,
            (needed + pods).div_ceil(110) + 1,
        );
    }
    ensure_service_ips(client, cfg).await
}

/// Every tenant's pool Service takes a ClusterIP. The local control plane's range is a /24 (about 250
/// Services): when it is too small for N, the bench adds a ServiceCIDR (networking.k8s.io/v1, no API
/// server restart needed) on the local cluster, and refuses to touch a foreign one.
async fn ensure_service_ips(client: &Client, cfg: &Config) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::networking::v1::{ServiceCIDR, ServiceCIDRSpec};
    const EXTRA: &str = "berth-bench";
    let cidrs = Api::<ServiceCIDR>::all(client.clone());
    let size: u64 = cidrs
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .flat_map(|c| c.spec.as_ref().and_then(|s| s.cidrs.clone()).unwrap_or_default())
        .filter(|c| c.contains('.'))
        .filter_map(|c| c.split_once('/').and_then(|(_, p)| p.parse::<u32>().ok()))
        .map(|prefix| (1u64 << (32 - prefix.min(32))).saturating_sub(2))
        .sum();
    let used = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.cluster_ip.as_deref())
                .is_some_and(|ip| ip != "None")
        })
        .count() as u64;
    let needed = cfg.n as u64 + 10;
    if size.saturating_sub(used) >= needed {
        return Ok(());
    }
    if cfg.cluster_dir.is_none() {
        bail!(
            "the cluster has {} free Service IPs, N={} needs {needed}: widen --service-cluster-ip-range or add a ServiceCIDR",
            size.saturating_sub(used),
            cfg.n
        );
    }
    log(&format!(
        "Service IP range has {} free addresses, N={} needs {needed}: adding ServiceCIDR {EXTRA} 10.96.0.0/16",
        size.saturating_sub(used),
        cfg.n
    ));
    let extra = ServiceCIDR {
        metadata: ObjectMeta {
            name: Some(EXTRA.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceCIDRSpec {
            cidrs: Some(vec!["10.96.0.0/16".to_owned()]),
        }),
        ..ServiceCIDR::default()
    };
    cidrs
        .patch(EXTRA, &PatchParams::apply("berth-bench"), &Patch::Apply(&extra))
        .await?;
    // Usable once the API server marks it Ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = cidrs
            .get(EXTRA)
            .await?
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("ServiceCIDR {EXTRA} did not become Ready");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits for `n` ready tenants, logging progress every 15 s; false on timeout.
async fn wait_ready(tracker: &Tracker, n: usize, timeout: Duration, phase: &str) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if tracker.wait_for(n, left.min(Duration::from_secs(15))).await {
            return true;
        }
        log(&format!(
            "{phase}: {}/{n} ready after {:.0}s",
            tracker.ready_count(),
            tracker.elapsed()
        ));
        if left.is_zero() || tokio::time::Instant::now() >= deadline {
            log(&format!("{phase}: timed out; reporting what was reached"));
            return false;
        }
    }
}

/// Marks a Customer ready in `tracker` when its `Ready` condition is `True`.
fn watch_customers(client: &Client, tracker: &Arc<Tracker>) -> tokio::task::JoinHandle<()> {
    let api: Api<Customer> = Api::all(client.clone());
    let tracker = tracker.clone();
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default())
            .default_backoff()
            .applied_objects();
        futures::pin_mut!(stream);
        while let Some(next) = stream.next().await {
            let Ok(c) = next else { continue };
            let ready = c
                .status
                .as_ref()
                .and_then(|s| berth_api::find_condition(&s.conditions, "Ready"))
                .is_some_and(|c| c.status == "True");
            if ready {
                tracker.part_ready(&c.name_any(), 1);
            }
        }
    })
}

/// Creates the Customers with `concurrency` requests in flight; returns how many failed.
async fn create_customers(client: &Client, names: &[String], concurrency: usize, tracker: &Tracker) -> usize {
    let api: Api<Customer> = Api::all(client.clone());
    futures::stream::iter(names)
        .map(|name| {
            let api = api.clone();
            async move {
                tracker.created(name);
                let customer = seed_customer(name)?;
                api.create(&PostParams::default(), &customer)
                    .await
                    .with_context(|| format!("creating Customer {name}"))
            }
        })
        .buffer_unordered(concurrency)
        .filter_map(|r| async move {
            r.err().map(|e| {
                log(&format!("{e:#}"));
            })
        })
        .count()
        .await
}

/// Deletes every bench Customer (removing the finalizer if no operator runs to do it) and waits until
/// they and their namespaces are gone.
async fn delete_customers(client: &Client, concurrency: usize, timeout: Duration) -> anyhow::Result<()> {
    let api: Api<Customer> = Api::all(client.clone());
    let mine: Vec<String> = api
        .list_metadata(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|n| n.starts_with(BERTH_PREFIX))
        .collect();
    futures::stream::iter(&mine)
        .for_each_concurrent(concurrency, |name| {
            let api = api.clone();
            async move {
                let _ = api.delete(name, &DeleteParams::background()).await;
            }
        })
        .await;
    // berth removes its finalizer within seconds; a leftover from a run without berth needs help.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = api
            .list_metadata(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|c| c.name_any().starts_with(BERTH_PREFIX))
            .collect::<Vec<_>>();
        if left.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            log(&format!("removing the finalizer of {} Customers", left.len()));
            let strip = json!({"metadata": {"finalizers": null}});
            for c in &left {
                let _ = api
                    .patch(&c.name_any(), &PatchParams::default(), &Patch::Merge(&strip))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    delete_namespaces(client, BERTH_PREFIX, concurrency, timeout).await
}

/// Deletes the namespaces named `prefix*` and waits until they are gone.
async fn delete_namespaces(
    client: &Client,
    prefix: &str,
    concurrency: usize,
    timeout: Duration,
) -> anyhow::Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let list = |api: Api<Namespace>| async move {
        anyhow::Ok(
            api.list_metadata(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|n| n.name_any().starts_with(prefix))
                .collect::<Vec<_>>(),
        )
    };
    let present = list(api.clone()).await?;
    if present.is_empty() {
        return Ok(());
    }
    let t = std::time::Instant::now();
    futures::stream::iter(present.iter().filter(|n| n.metadata.deletion_timestamp.is_none()))
        .for_each_concurrent(concurrency, |ns| {
            let api = api.clone();
            async move {
                let _ = api.delete(&ns.name_any(), &DeleteParams::background()).await;
            }
        })
        .await;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = list(api.clone()).await?.len();
        if left == 0 {
            log(&format!(
                "{} namespaces {prefix}* gone in {:.0}s",
                present.len(),
                t.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{left} namespaces {prefix}* still there after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

struct Summary {
    /// Ready times since the phase started, ascending.
    ready: Vec<f64>,
    /// Create → Ready per tenant, ascending.
    latency: Vec<f64>,
    /// Time until the last of N was ready (None when not all were).
    t_all: Option<f64>,
}

impl Summary {
    fn latency_json(&self) -> Value {
        json!({
            "p50": percentile(&self.latency, 50.0),
            "p95": percentile(&self.latency, 95.0),
            "p99": percentile(&self.latency, 99.0),
            "max": self.latency.last(),
        })
    }
}

fn summary(outcomes: &[track::Outcome], n: usize) -> Summary {
    let mut ready: Vec<f64> = outcomes.iter().filter_map(|o| o.ready).collect();
    ready.sort_by(f64::total_cmp);
    let mut latency: Vec<f64> = outcomes
        .iter()
        .filter_map(|o| Some(o.ready? - o.created?))
        .collect();
    latency.sort_by(f64::total_cmp);
    let t_all = (ready.len() >= n).then(|| ready.last().copied()).flatten();
    Summary {
        ready,
        latency,
        t_all,
    }
}

/// When the last tenant's last child appeared, relative to the phase's start (both trackers start
/// together, just before the first write).
fn objects_exist(created: &Tracker, n: usize) -> Option<f64> {
    let times: Vec<f64> = created.outcomes().iter().filter_map(|o| o.ready).collect();
    (times.len() >= n).then(|| times.iter().copied().fold(0.0, f64::max))
}

fn keyed(m: &BTreeMap<Vec<String>, f64>) -> Value {
    Value::Object(m.iter().map(|(k, v)| (k.join("/"), json!(v))).collect())
}

fn keyed_per(m: &BTreeMap<Vec<String>, f64>, n: f64) -> Value {
    Value::Object(
        m.iter()
            .map(|(k, v)| (k.join("/"), json!((v / n * 100.0).round() / 100.0)))
            .collect(),
    )
}

fn print_table(
    r: &Value,
    writes: &BTreeMap<Vec<String>, f64>,
    reconciles: &BTreeMap<Vec<String>, f64>,
    n: f64,
) {
    let f = |v: &Value| v.as_f64();
    let (fl, be) = (&r["floor"], &r["berth"]);
    let comp = |phase: &Value, c: &str| f(&phase["components_cpu_seconds"][c]);
    let lat = |phase: &Value| {
        let l = &phase["latency_seconds"];
        format!(
            "{} / {} / {}",
            report::num(f(&l["p50"]), 1),
            report::num(f(&l["p95"]), 1),
            report::num(f(&l["p99"]), 1)
        )
    };
    let t = &r["targets"];
    let met = |k: &str| report::verdict(t[k]["met"].as_bool());
    println!();
    println!(
        "berth scale benchmark: N = {} tenants, concurrency {} per controller, floor writes by {}",
        r["n"],
        r["concurrency"],
        r["floor_verb"].as_str().unwrap_or_default()
    );
    println!(
        "machine: {} CPUs, {} GiB RAM, load at start {} | kubernetes {} | {} ({})",
        r["machine"]["nproc"],
        report::num(f(&r["machine"]["mem_gib"]), 1),
        r["machine"]["load_at_start"].as_str().unwrap_or("-"),
        r["versions"]["kubernetes"].as_str().unwrap_or("-"),
        r["versions"]["berth"].as_str().unwrap_or("-"),
        r["versions"]["git"].as_str().unwrap_or("-"),
    );
    println!();
    println!("{:<38} {:>16} {:>16}", "", "floor", "berth");
    let row = |label: &str, a: String, b: String| println!("{label:<38} {a:>16} {b:>16}");
    // A figure both phases report under the same key.
    let both = |label: &str, key: &str, digits: usize| {
        row(
            label,
            report::num(f(&fl[key]), digits),
            report::num(f(&be[key]), digits),
        );
    };
    let cpu = |label: &str, component: &str| {
        row(
            label,
            report::num(comp(fl, component), 1),
            report::num(comp(be, component), 1),
        );
    };
    both("time until all Ready (s)", "t_seconds", 1);
    row(
        "tenants Ready",
        format!("{}/{}", fl["ready"], r["n"]),
        format!("{}/{}", be["ready"], r["n"]),
    );
    both("requests issued in (s)", "create_seconds", 1);
    both(
        "every child object exists after (s)",
        "all_objects_exist_seconds",
        1,
    );
    row("create→Ready p50/p95/p99 (s)", lat(fl), lat(be));
    both("API writes (total)", "writes", 0);
    row(
        "API writes per tenant",
        report::num(f(&fl["writes"]).map(|w| w / n), 1),
        report::num(f(&be["writes"]).map(|w| w / n), 1),
    );
    cpu("kube-apiserver CPU (s)", "kube-apiserver");
    cpu("etcd CPU (s)", "etcd");
    cpu("kube-controller-manager CPU (s)", "kube-controller-manager");
    row(
        "client CPU (s): bench / berth",
        report::num(f(&fl["client_cpu_seconds"]), 1),
        report::num(f(&be["operator"]["cpu_seconds"]), 1),
    );
    println!();
    println!(
        "T_berth / T_floor            = {:<10} target <= 1.25           {}",
        report::num(f(&r["ratio"]), 2),
        met("ratio_le_1_25")
    );
    println!(
        "writes per child object      = {:<10} target <= 2 ({} children/tenant; apply/create/patch/delete only: {})  {}",
        report::num(f(&be["writes_per_child_object"]), 2),
        CHILDREN_PER_TENANT,
        report::num(f(&be["object_writes_per_child_object"]), 2),
        met("writes_per_child_object_le_2")
    );
    println!(
        "writes in {}s of steady state = {:<10} target 0                 {}  (reconciles: {})",
        be["steady_state"]["seconds"],
        report::num(f(&be["steady_state"]["writes"]), 0),
        met("steady_state_writes_eq_0"),
        be["steady_state"]["reconciles_by_controller"]
    );
    println!(
        "operator peak RSS (VmHWM)    = {:<10} target < 64 MiB at N=1000 {}",
        format!("{} MiB", report::num(f(&be["operator"]["peak_rss_mib"]), 1)),
        met("operator_rss_lt_64_mib_at_1000")
    );
    println!();
    println!("berth API writes per Customer (controller/verb):");
    for (k, v) in writes {
        println!("  {:<28} {:>8.2}", k.join("/"), v / n);
    }
    println!("berth reconciles per Customer:");
    for (k, v) in reconciles {
        println!("  {:<28} {:>8.2}", k.join("/"), v / n);
    }
    println!("watch events (creates + updates) per tenant until all Ready:");
    println!("  {:<28} {:>8} {:>8}", "kind", "floor", "berth");
    let fe = fl["watch_events_by_kind"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let bev = be["watch_events_by_kind"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let kinds: std::collections::BTreeSet<&String> = fe.keys().chain(bev.keys()).collect();
    for k in kinds {
        let per = |m: &serde_json::Map<String, Value>| {
            report::num(m.get(k).and_then(Value::as_f64).map(|v| v / n), 2)
        };
        println!("  {:<28} {:>8} {:>8}", k, per(&fe), per(&bev));
    }
}
