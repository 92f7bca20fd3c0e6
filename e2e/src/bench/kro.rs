//! The peer phase: kro (kubernetes-sigs/kro) converges the same tenants from one ResourceGraphDefinition.
//!
//! The graph is not written by hand: it is derived from the objects berth's builders produce for two seed
//! tenants (the same calls the floor makes), so it cannot drift from berth. A string that differs between
//! the two tenants only by the tenant's name becomes a template on the instance's name; anything else that
//! differs (passwords, their hashes, certificates, and whatever embeds them) is something kro cannot compute,
//! so the bench computes it per tenant and passes it as a field of the instance's spec.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams,
    PostParams,
};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, ResourceExt};
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

use super::phase::{Phase, PhaseReport, Writer};
use super::sys::Meters;
use super::track::Tracker;
use super::{Config, KRO, cleanup, floor, log};

const GROUP: &str = "kro.run";
const VERSION: &str = "v1alpha1";
const KIND: &str = "BerthTenant";
const RGD: &str = "berth-tenant";
const FIELD_MANAGER: &str = "berth-bench";
/// client-go's request counter, which controller-runtime registers for every client of the process.
const REQUESTS: &str = "rest_client_requests_total";

/// What berth does for a seed tenant that kro cannot, and why; reported as "cannot" rows.
pub const CANNOT: [(&str, &str); 3] = [
    (
        "Scheduler (workflow runs)",
        "kro has no runtime: a due workflow needs a controller to start and track its Job",
    ),
    (
        "generated passwords, userlist hashes, TLS",
        "kro cannot generate secrets: the bench generates them per tenant and passes them in the instance spec",
    ),
    (
        "Database / Scheduler objects",
        "berth's own intermediate APIs; the kro instance plays their part, so the graph holds their children",
    ),
];

/// kro's settings, matched to berth's in the bench.
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub version: String,
    /// `--dynamic-controller-concurrent-reconciles`: berth's per-controller concurrency.
    pub concurrency: usize,
    /// `--client-qps`; negative turns client-go's rate limiter off, as berth has none (berth bounds the
    /// requests it has in flight instead, which kro cannot).
    pub client_qps: f64,
    pub client_burst: u32,
}

/// kro's figures: those every phase reports, its requests, and its process.
#[derive(Debug, Serialize)]
pub struct KroReport {
    #[serde(flatten)]
    pub phase: PhaseReport,
    pub settings: Settings,
    pub create_errors: usize,
    /// POST, PUT, PATCH and DELETE of kro's process, from its own client metrics.
    pub writes: f64,
    pub requests_by_method: BTreeMap<String, f64>,
    pub objects_per_tenant: usize,
    /// Instance spec fields the bench fills because kro cannot compute them.
    pub spec_fields: Vec<String>,
    pub cannot: BTreeMap<String, String>,
    pub process: Process,
}

#[derive(Debug, Serialize)]
pub struct Process {
    pub peak_rss_mib: Option<f64>,
    pub rss_mib_at_start: Option<f64>,
    /// From the first instance until every tenant was Ready.
    pub cpu_seconds: Option<f64>,
    pub log: String,
}

/// Runs kro on the bench's tenants, cleans them up, and stops kro.
pub async fn run(client: &Client, cfg: &Config, meters: &Meters, dir: &Path) -> anyhow::Result<KroReport> {
    let settings = Settings {
        version: std::env::var("KRO_VERSION").unwrap_or_else(|_| "unknown".to_owned()),
        concurrency: cfg.concurrency,
        client_qps: -1.0,
        client_burst: 150,
    };
    install_crds(client, dir).await?;
    let graph = Graph::derive()?;
    std::fs::write(
        cfg.out.join("kro-rgd.json"),
        serde_json::to_string_pretty(&graph.rgd)?,
    )?;
    log(&format!(
        "kro: graph of {} objects per tenant, {} instance fields the bench fills: {}",
        graph.objects,
        graph.fields.len(),
        graph
            .fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let kro = Kro::start(dir, cfg, &settings)?;
    kro.wait_ready(Duration::from_secs(120)).await?;
    apply_graph(client, &graph).await?;
    let writer = Writer {
        pid: kro.pid(),
        metrics_port: Some(kro.metrics_port),
    };
    let report = measure(client, cfg, meters, &graph, writer)
        .await
        .map(|m| KroReport {
            phase: m.phase,
            settings: settings.clone(),
            create_errors: m.create_errors,
            writes: m
                .requests
                .iter()
                .filter(|(k, _)| matches!(k.as_str(), "POST" | "PUT" | "PATCH" | "DELETE"))
                .map(|(_, v)| v)
                .sum(),
            requests_by_method: m.requests,
            objects_per_tenant: graph.objects,
            spec_fields: graph.fields.iter().map(|f| f.name.clone()).collect(),
            cannot: CANNOT
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            process: Process {
                peak_rss_mib: m.peak_rss_kib.map(|k| k as f64 / 1024.0),
                rss_mib_at_start: m.rss_kib_at_start.map(|k| k as f64 / 1024.0),
                cpu_seconds: m.cpu_seconds,
                log: kro.log.display().to_string(),
            },
        });
    if cfg.final_cleanup {
        log("kro: deleting its instances");
        if let Err(e) = delete_instances(client, cfg).await {
            log(&format!("kro: cleanup: {e:#}"));
        }
    }
    kro.stop(Duration::from_secs(30));
    report
}

struct Measured {
    phase: PhaseReport,
    create_errors: usize,
    /// kro's client requests by HTTP method, from the first instance until every tenant was Ready.
    requests: BTreeMap<String, f64>,
    cpu_seconds: Option<f64>,
    peak_rss_kib: Option<u64>,
    rss_kib_at_start: Option<u64>,
}

/// The phase proper: N instances at the bench's concurrency, each awaited until kro calls it ready.
async fn measure(
    client: &Client,
    cfg: &Config,
    meters: &Meters,
    graph: &Graph,
    writer: Writer,
) -> anyhow::Result<Measured> {
    let mut phase = Phase::start(client, &KRO, 1, cfg, meters, writer)?;
    let ready = phase.ready.clone();
    phase.watch([watch_instances(client, &ready)]);
    let names = KRO.names(cfg.n);
    let create_errors = phase
        .issue(create_instances(client, graph, &names, cfg.concurrency, &ready))
        .await;
    log(&format!(
        "kro: {} instances created in {:.1}s; waiting until Ready",
        cfg.n,
        phase.issued_in()
    ));
    phase.converge().await;
    let (report, end) = phase.finish()?;
    let requests = end.metrics.delta_by(&phase.start.metrics, REQUESTS, &["method"]);
    Ok(Measured {
        phase: report,
        create_errors,
        requests: requests.into_iter().map(|(k, v)| (k.join("/"), v)).collect(),
        cpu_seconds: end.cpu_since(&phase.start),
        peak_rss_kib: end.peak_rss_kib,
        rss_kib_at_start: phase.start.rss_kib,
    })
}

fn instance_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, KIND))
}

/// kro's CRDs, from the module it was built from (`e2e/build-kro.sh`).
async fn install_crds(client: &Client, dir: &Path) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir.join("crds"))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        let crd: Value = serde_yaml::from_str(&text).with_context(|| format!("{}", path.display()))?;
        let name = crd["metadata"]["name"]
            .as_str()
            .context("CRD without a name")?
            .to_owned();
        api.patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("installing {name}"))?;
        names.push(name);
    }
    for name in names {
        established(&api, &name).await?;
    }
    Ok(())
}

async fn established(api: &Api<CustomResourceDefinition>, name: &str) -> anyhow::Result<()> {
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(api.clone(), name, conditions::is_crd_established()),
    )
    .await
    .with_context(|| format!("CRD {name} not established"))??;
    Ok(())
}

/// Applies the graph and waits until kro has accepted it and serves its instance API.
async fn apply_graph(client: &Client, graph: &Graph) -> anyhow::Result<()> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(GROUP, VERSION, "ResourceGraphDefinition"));
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    api.patch(
        RGD,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&graph.rgd),
    )
    .await
    .context("applying the ResourceGraphDefinition")?;
    let active = |o: Option<&DynamicObject>| {
        o.and_then(|o| o.data["status"]["state"].as_str().map(|s| s == "Active"))
            .unwrap_or(false)
    };
    let waited =
        tokio::time::timeout(Duration::from_secs(90), await_condition(api.clone(), RGD, active)).await;
    if waited.is_err() {
        let status = api
            .get(RGD)
            .await
            .map(|o| o.data["status"].clone())
            .unwrap_or_default();
        bail!("kro did not accept the ResourceGraphDefinition: {status}");
    }
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    established(&crds, &format!("{}.{GROUP}", instance_resource().plural)).await
}

/// One instance per tenant name, `concurrency` in flight; returns how many failed.
async fn create_instances(
    client: &Client,
    graph: &Graph,
    names: &[String],
    concurrency: usize,
    tracker: &Tracker,
) -> usize {
    let ar = instance_resource();
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
    super::count_failures(names.iter().enumerate(), concurrency, |(i, name)| {
        let api = api.clone();
        async move {
            // The tenant's secrets are generated before its clock starts, as berth's are not part of the
            // Customer either.
            let instance = graph.instance(name, i)?;
            tracker.created(name);
            api.create(&PostParams::default(), &serde_json::from_value(instance)?)
                .await
                .with_context(|| format!("creating {KIND} {name}"))
        }
    })
    .await
}

/// kro's Ready: the instance's `Ready` condition is `True` and its state `ACTIVE` (every node synced,
/// readyWhen included).
fn instance_ready(o: &DynamicObject) -> bool {
    let status = &o.data["status"];
    status["state"] == "ACTIVE"
        && status["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn watch_instances(client: &Client, tracker: &Arc<Tracker>) -> JoinHandle<()> {
    super::watch_ready(
        Api::all_with(client.clone(), &instance_resource()),
        tracker,
        instance_ready,
    )
}

/// Deletes the instances (kro deletes their objects, in reverse dependency order), then waits for the
/// namespaces to be gone.
async fn delete_instances(client: &Client, cfg: &Config) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = Api::all_with(client.clone(), &instance_resource());
    let mine = |list: Vec<kube::core::PartialObjectMeta<DynamicObject>>| -> Vec<String> {
        list.iter()
            .map(ResourceExt::name_any)
            .filter(|n| n.starts_with(KRO.prefix))
            .collect()
    };
    let names = mine(api.list_metadata(&ListParams::default()).await?.items);
    futures::stream::iter(&names)
        .for_each_concurrent(cfg.concurrency, |name| {
            let api = api.clone();
            async move {
                let _ = api.delete(name, &DeleteParams::background()).await;
            }
        })
        .await;
    let deadline = tokio::time::Instant::now() + cfg.timeout;
    loop {
        let left = mine(api.list_metadata(&ListParams::default()).await?.items);
        if left.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            log(&format!(
                "kro: removing the finalizer of {} instances",
                left.len()
            ));
            let strip = json!({"metadata": {"finalizers": null}});
            for name in &left {
                let _ = api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&strip))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    cleanup::delete_namespaces(client, &KRO, cfg).await
}

/// The kro controller as a process of the bench, on loopback ports of its own.
struct Kro {
    child: Child,
    metrics_port: u16,
    health_port: u16,
    log: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Kro {
    fn start(dir: &Path, cfg: &Config, s: &Settings) -> anyhow::Result<Self> {
        let bin = dir.join("controller");
        let (metrics_port, health_port) = (free_port()?, free_port()?);
        let log_path = cfg.out.join("kro.log");
        let out = File::create(&log_path)?;
        let err = out.try_clone()?;
        let child = Command::new(&bin)
            .arg(format!("--metrics-bind-address=127.0.0.1:{metrics_port}"))
            .arg(format!("--health-probe-bind-address=127.0.0.1:{health_port}"))
            .arg("--leader-elect=false")
            .arg(format!(
                "--dynamic-controller-concurrent-reconciles={}",
                s.concurrency
            ))
            .arg(format!("--client-qps={}", s.client_qps))
            .arg(format!("--client-burst={}", s.client_burst))
            .env("KUBECONFIG", &cfg.kubeconfig)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        log(&format!(
            "kro: {} (pid {}), metrics on 127.0.0.1:{metrics_port}, concurrency {}, client QPS {} burst {}",
            bin.display(),
            child.id(),
            s.concurrency,
            s.client_qps,
            s.client_burst
        ));
        Ok(Self {
            child,
            metrics_port,
            health_port,
            log: log_path,
        })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if crate::metrics::get(self.health_port, "/readyz").is_ok_and(|(code, _)| code == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("kro not ready after {timeout:?}; see {}", self.log.display());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, then SIGKILL after `grace`.
    fn stop(mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A value of the instance spec: where it sits in which object.
#[derive(Debug)]
struct Field {
    name: String,
    id: String,
    path: Vec<Seg>,
}

#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

/// The ResourceGraphDefinition, and how to make an instance of it for a tenant.
pub struct Graph {
    pub rgd: Value,
    fields: Vec<Field>,
    pub objects: usize,
}

/// berth's objects of one seed tenant, each under a resource id of the graph, in berth's order.
fn tenant(name: &str, index: usize) -> anyhow::Result<Vec<(String, Value)>> {
    let c = floor::customer_objects(name, index)?;
    let db = c.database.context("the seed Customer has a database")?;
    let d = floor::database_objects(name, &db)?;
    let mut out = vec![
        // `namespace` is one of kro's reserved words.
        ("tenantNamespace".to_owned(), serde_json::to_value(&c.namespace)?),
        ("operatorBinding".to_owned(), serde_json::to_value(&c.binding)?),
        (
            "resourceQuota".to_owned(),
            serde_json::to_value(&c.resource_quota)?,
        ),
        ("limitRange".to_owned(), serde_json::to_value(&c.limit_range)?),
    ];
    for (i, np) in c.network_policies.iter().enumerate() {
        out.push((format!("networkPolicy{i}"), serde_json::to_value(np)?));
    }
    out.push(("admins".to_owned(), serde_json::to_value(&c.admins)?));
    let kids = [
        ("credentials", string_data(&d.credentials)?),
        ("tls", string_data(&d.tls)?),
        ("serverInit", serde_json::to_value(&d.server_init)?),
        ("poolConfig", serde_json::to_value(&d.pool_config)?),
        ("poolAuth", string_data(&d.pool_auth)?),
        ("connection", string_data(&d.connection)?),
        ("server", serde_json::to_value(&d.server)?),
        ("pool", serde_json::to_value(&d.pool)?),
        ("serverService", serde_json::to_value(&d.server_service)?),
        ("poolService", serde_json::to_value(&d.pool_service)?),
        ("poolBudget", serde_json::to_value(&d.pool_budget)?),
    ];
    out.extend(kids.into_iter().map(|(id, v)| (id.to_owned(), v)));
    Ok(out)
}

/// The Secret with its `data` as `stringData`: kro type-checks `data` as bytes and cannot write a CEL bytes
/// value, so a templated Secret has to be written as text (the API server stores it as `data` again).
fn string_data(secret: &k8s_openapi::api::core::v1::Secret) -> anyhow::Result<Value> {
    let mut v = serde_json::to_value(secret)?;
    if let (Some(map), Some(data)) = (v.as_object_mut(), &secret.data) {
        map.remove("data");
        let text: anyhow::Result<Map<String, Value>> = data
            .iter()
            .map(|(k, b)| {
                let s =
                    String::from_utf8(b.0.clone()).with_context(|| format!("Secret key {k} is not text"))?;
                Ok((k.clone(), Value::String(s)))
            })
            .collect();
        map.insert("stringData".to_owned(), Value::Object(text?));
    }
    Ok(v)
}

impl Graph {
    /// From two tenants' objects: what is equal is literal, what differs by the name is a template,
    /// the rest is an instance field.
    pub fn derive() -> anyhow::Result<Self> {
        let names = KRO.names(2);
        let (a, b) = (tenant(&names[0], 0)?, tenant(&names[1], 1)?);
        let mut fields = Vec::new();
        let mut resources = Vec::new();
        for ((id, x), (_, y)) in a.iter().zip(&b) {
            let mut path = Vec::new();
            let mut template = walk(x, y, (&names[0], &names[1]), id, &mut path, &mut fields)?;
            // Namespaced objects name the Namespace resource, so that kro creates it first.
            if id != "tenantNamespace" && template["metadata"].get("namespace").is_some() {
                template["metadata"]["namespace"] = json!("${tenantNamespace.metadata.name}");
            }
            let mut resource = json!({"id": id, "template": template});
            if let Some(ready) = ready_when(id) {
                resource["readyWhen"] = json!(ready);
            }
            resources.push(resource);
        }
        let spec: Map<String, Value> = fields.iter().map(|f| (f.name.clone(), json!("string"))).collect();
        let rgd = json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": "ResourceGraphDefinition",
            "metadata": {"name": RGD},
            "spec": {
                "schema": {"apiVersion": VERSION, "kind": KIND, "scope": "Cluster", "spec": spec},
                "resources": resources,
            },
        });
        Ok(Self {
            rgd,
            objects: a.len(),
            fields,
        })
    }

    /// The instance for tenant `name`: its own generated secrets in the fields kro cannot compute.
    fn instance(&self, name: &str, index: usize) -> anyhow::Result<Value> {
        let objects: BTreeMap<String, Value> = tenant(name, index)?.into_iter().collect();
        let mut spec = Map::new();
        for f in &self.fields {
            let mut v = objects.get(&f.id).context("object of a field")?;
            for seg in &f.path {
                v = match seg {
                    Seg::Key(k) => &v[k.as_str()],
                    Seg::Index(i) => &v[*i],
                };
            }
            spec.insert(f.name.clone(), v.clone());
        }
        Ok(json!({
            "apiVersion": format!("{GROUP}/{VERSION}"),
            "kind": KIND,
            "metadata": {"name": name},
            "spec": spec,
        }))
    }
}

/// berth's readiness, per resource: PostgreSQL's pod ready, the pool available (the floor's and
/// berth's `PoolReady`).
fn ready_when(id: &str) -> Option<Vec<&'static str>> {
    match id {
        "server" => Some(vec!["${server.status.?readyReplicas.orValue(0) >= 1}"]),
        "pool" => Some(vec![
            "${pool.status.?availableReplicas.orValue(0) >= 1}",
            "${pool.status.?conditions.orValue([]).exists(c, c.type == 'Available' && c.status == 'True')}",
        ]),
        _ => None,
    }
}

fn walk(
    a: &Value,
    b: &Value,
    names: (&str, &str),
    id: &str,
    path: &mut Vec<Seg>,
    fields: &mut Vec<Field>,
) -> anyhow::Result<Value> {
    Ok(match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            if x.keys().collect::<BTreeSet<_>>() != y.keys().collect::<BTreeSet<_>>() {
                bail!("{id}: the two tenants' objects differ in shape at {path:?}");
            }
            let mut out = Map::new();
            for (k, v) in x {
                path.push(Seg::Key(k.clone()));
                out.insert(k.clone(), walk(v, &y[k], names, id, path, fields)?);
                path.pop();
            }
            Value::Object(out)
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            let mut out = Vec::new();
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                path.push(Seg::Index(i));
                out.push(walk(v, w, names, id, path, fields)?);
                path.pop();
            }
            Value::Array(out)
        }
        (Value::String(x), Value::String(y)) if x == y => Value::String(escape(x)),
        (Value::String(x), Value::String(y)) if x.replace(names.0, names.1) == *y => {
            Value::String(escape(x).replace(names.0, "${schema.metadata.name}"))
        }
        (Value::String(_), Value::String(_)) => {
            let name = field_name(id, path, fields);
            let placeholder = format!("${{schema.spec.{name}}}");
            fields.push(Field {
                name,
                id: id.to_owned(),
                path: path.clone(),
            });
            Value::String(placeholder)
        }
        (x, y) if x == y => x.clone(),
        _ => bail!("{id}: a value other than a string differs between two tenants at {path:?}"),
    })
}

/// A literal `${…}` (a shell variable in a script) would be read by kro as CEL: it becomes a CEL string
/// literal of itself, as kro's documentation says to write it.
fn escape(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let literal = &rest[start..=start + len];
        let quoted = literal.replace('\\', "\\\\").replace('"', "\\\"");
        out.push_str(&format!("${{\"{quoted}\"}}"));
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// `credentials` + `data/password` → `credentialsDataPassword`, unique among `fields`.
fn field_name(id: &str, path: &[Seg], fields: &[Field]) -> String {
    let mut name = id.to_owned();
    for seg in path {
        let word = match seg {
            Seg::Key(k) => k.clone(),
            Seg::Index(i) => i.to_string(),
        };
        let mut upper = true;
        for c in word.chars() {
            if c.is_ascii_alphanumeric() {
                name.push(if upper { c.to_ascii_uppercase() } else { c });
                upper = false;
            } else {
                upper = true;
            }
        }
    }
    let mut unique = name.clone();
    let mut n = 2;
    while fields.iter().any(|f| f.name == unique) {
        unique = format!("{name}{n}");
        n += 1;
    }
    unique
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_variables_stay_literal() {
        assert_eq!(escape("a ${PGDATA} b"), "a ${\"${PGDATA}\"} b");
        assert_eq!(escape("no vars"), "no vars");
    }

    #[test]
    fn field_names_are_identifiers() {
        let path = [Seg::Key("data".into()), Seg::Key("tls.crt".into())];
        assert_eq!(field_name("tls", &path, &[]), "tlsDataTlsCrt");
    }
}
