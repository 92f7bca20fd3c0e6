//! berth's phase: the release operator runs as a process, N Customers are created, and the bench waits
//! until each is Ready, then watches the steady state. berth's own metrics count its writes and
//! reconciles. Then the operator is restarted and measured until it has re-verified every tenant.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use berth_api::Customer;
use kube::Client;
use kube::api::{Api, PostParams};
use serde::Serialize;
use tokio::task::JoinHandle;

use super::phase::{Phase, PhaseReport, Snapshot, Writer};
use super::restart::{self, RestartReport};
use super::sys::Meters;
use super::track::Tracker;
use super::{BERTH, CHILDREN_PER_TENANT, Config, cleanup, log};
use crate::operator::Launch;

const WRITES: &str = "berth_api_writes_total";
const RECONCILES: &str = "berth_reconciles_total";
const REQUESTS: &str = "berth_api_requests_total";

/// berth's figures: those both phases report, its writes and reconciles until every tenant was Ready,
/// then the steady state.
#[derive(Debug, Serialize)]
pub struct BerthReport {
    #[serde(flatten)]
    pub phase: PhaseReport,
    pub create_errors: usize,
    pub writes: f64,
    pub writes_by_controller_verb: BTreeMap<String, f64>,
    pub writes_per_customer_by_controller_verb: BTreeMap<String, f64>,
    pub reconciles_by_controller: BTreeMap<String, f64>,
    pub reconciles_per_customer_by_controller: BTreeMap<String, f64>,
    /// Every request, reads too, until every tenant was Ready: what the API server served berth.
    pub requests_per_customer_by_verb_resource: BTreeMap<String, f64>,
    pub writes_per_child_object: f64,
    /// Without status writes and events: what changes objects.
    pub object_writes_per_child_object: f64,
    pub steady_state: Steady,
    pub operator: Operator,
    /// After the steady state: a new process with the same arguments re-verifies every tenant.
    pub restart: Option<RestartReport>,
}

/// After convergence, where any write or reconcile is one too many.
#[derive(Debug, Serialize)]
pub struct Steady {
    pub seconds: u64,
    pub writes: f64,
    pub writes_by_controller_verb: BTreeMap<String, f64>,
    pub reconciles_by_controller: BTreeMap<String, f64>,
    pub operator_cpu_seconds: Option<f64>,
    pub components_cpu_seconds: BTreeMap<String, f64>,
    pub watch_events_by_kind: BTreeMap<String, u64>,
}

/// The operator process itself.
#[derive(Debug, Serialize)]
pub struct Operator {
    /// VmHWM after the steady state: the most the process ever held.
    pub peak_rss_mib: Option<f64>,
    /// Once it led and its caches had synced, before the first Customer.
    pub rss_mib_at_start: Option<f64>,
    pub rss_mib_at_end: Option<f64>,
    /// From the first Customer until every tenant was Ready.
    pub cpu_seconds: Option<f64>,
    pub log: String,
}

/// Runs berth on the bench's tenants and stops it again.
/// Runs berth on the bench's tenants, restarts it once they converged (when `cfg.restart`), and stops
/// it. Its tenants are deleted when `delete_tenants` (always before another phase needs the nodes).
pub async fn run(
    client: &Client,
    cfg: &Config,
    meters: &Meters,
    delete_tenants: bool,
) -> anyhow::Result<BerthReport> {
    let rust_log = std::env::var("BENCH_OPERATOR_LOG").unwrap_or_else(|_| "info,kube=warn".to_owned());
    // The restarted process gets exactly the same arguments; only its log file differs.
    let launch = |log: &str| Launch {
        name: "bench",
        bin: cfg.berth_bin.clone(),
        kubeconfig: cfg.kubeconfig.clone(),
        log: Some(cfg.out.join(log)),
        rust_log: rust_log.clone(),
        args: Vec::new(),
        envs: &[],
    };
    let op = launch("operator.log").start()?;
    op.wait_ready(Duration::from_secs(120)).await?;
    let berth = Writer {
        pid: op.pid(),
        metrics_port: Some(op.port),
    };
    let mut phase = Phase::start(client, &BERTH, 1, cfg, meters, berth)?;
    let ready = phase.ready.clone();
    phase.watch([watch_customers(client, &ready)]);
    let names = BERTH.names(cfg.n);
    let create_errors = phase
        .issue(create_customers(client, &names, cfg.concurrency, &ready))
        .await;
    let (n, issued_in) = (cfg.n, phase.issued_in());
    log(&format!(
        "berth: {n} Customers created in {issued_in:.1}s; waiting until Ready"
    ));
    phase.converge().await;
    let (common, converged) = phase.finish()?;
    log(&format!(
        "berth: converged; watching {}s of steady state",
        cfg.settle.as_secs()
    ));
    tokio::time::sleep(cfg.settle).await;
    let settled = phase.snapshot()?;
    let at = [&phase.start, &converged, &settled];
    let mut report = BerthReport::new(common, at, cfg, create_errors, &op.log);
    drop(phase);
    let op = if cfg.restart {
        log("berth: restarting the operator");
        match restart::run(&op, launch("operator-restart.log"), cfg.timeout).await {
            Ok((new, r)) => {
                report.restart = Some(r);
                new
            }
            Err(e) => {
                log(&format!("restart: {e:#}"));
                op
            }
        }
    } else {
        op
    };
    if delete_tenants {
        log("berth: deleting its Customers");
        cleanup::delete_customers(client, cfg).await?;
    }
    op.stop(Duration::from_secs(25));
    Ok(report)
}

impl BerthReport {
    /// From snapshots at the start, at convergence and after the steady state.
    fn new(
        phase: PhaseReport,
        [start, converged, settled]: [&Snapshot; 3],
        cfg: &Config,
        create_errors: usize,
        log: &Path,
    ) -> Self {
        let n = cfg.n as f64;
        let (m0, m1) = (&start.metrics, &converged.metrics);
        let writes = m1.delta_by(m0, WRITES, &["controller", "verb"]);
        let reconciles = m1.delta_by(m0, RECONCILES, &["controller"]);
        let requests = m1.delta_by(m0, REQUESTS, &["verb", "resource"]);
        let total: f64 = writes.values().sum();
        let to_objects: f64 = writes
            .iter()
            .filter(|(k, _)| matches!(k[1].as_str(), "apply" | "create" | "patch" | "delete"))
            .map(|(_, v)| v)
            .sum();
        Self {
            phase,
            create_errors,
            writes: total,
            writes_by_controller_verb: keyed(&writes),
            writes_per_customer_by_controller_verb: per_customer(&writes, n),
            reconciles_by_controller: keyed(&reconciles),
            reconciles_per_customer_by_controller: per_customer(&reconciles, n),
            requests_per_customer_by_verb_resource: per_customer(&requests, n),
            writes_per_child_object: total / (n * CHILDREN_PER_TENANT),
            object_writes_per_child_object: to_objects / (n * CHILDREN_PER_TENANT),
            steady_state: Steady::between(converged, settled, cfg.settle),
            operator: Operator {
                peak_rss_mib: mib(settled.peak_rss_kib),
                rss_mib_at_start: mib(start.rss_kib),
                rss_mib_at_end: mib(settled.rss_kib),
                cpu_seconds: converged.cpu_since(start),
                log: log.display().to_string(),
            },
            restart: None,
        }
    }
}

impl Steady {
    fn between(converged: &Snapshot, settled: &Snapshot, settle: Duration) -> Self {
        let (m1, m2) = (&converged.metrics, &settled.metrics);
        Self {
            seconds: settle.as_secs(),
            writes: m2.delta_sum(m1, WRITES),
            writes_by_controller_verb: keyed(&m2.delta_by(m1, WRITES, &["controller", "verb"])),
            reconciles_by_controller: keyed(&m2.delta_by(m1, RECONCILES, &["controller"])),
            operator_cpu_seconds: settled.cpu_since(converged),
            components_cpu_seconds: settled.components_since(converged),
            watch_events_by_kind: settled.events_since(converged),
        }
    }
}

fn mib(kib: Option<u64>) -> Option<f64> {
    kib.map(|k| k as f64 / 1024.0)
}

/// Label values joined by `/` (`customer/apply`), the report's keys.
fn keyed(m: &BTreeMap<Vec<String>, f64>) -> BTreeMap<String, f64> {
    m.iter().map(|(k, v)| (k.join("/"), *v)).collect()
}

/// Per Customer, to two decimals.
fn per_customer(m: &BTreeMap<Vec<String>, f64>, n: f64) -> BTreeMap<String, f64> {
    m.iter()
        .map(|(k, v)| (k.join("/"), (v / n * 100.0).round() / 100.0))
        .collect()
}

/// Marks a Customer ready in `tracker` when its `Ready` condition is `True`.
fn watch_customers(client: &Client, tracker: &Arc<Tracker>) -> JoinHandle<()> {
    super::watch_ready(Api::all(client.clone()), tracker, |c: &Customer| {
        c.status
            .as_ref()
            .and_then(|s| berth_api::find_condition(&s.conditions, "Ready"))
            .is_some_and(|c| c.status == "True")
    })
}

/// Creates the Customers with `concurrency` requests in flight; returns how many failed.
async fn create_customers(client: &Client, names: &[String], concurrency: usize, tracker: &Tracker) -> usize {
    let api: Api<Customer> = Api::all(client.clone());
    super::count_failures(names, concurrency, |name| {
        let api = api.clone();
        async move {
            tracker.created(name);
            let customer = super::seed_customer(name)?;
            api.create(&PostParams::default(), &customer)
                .await
                .with_context(|| format!("creating Customer {name}"))
        }
    })
    .await
}
