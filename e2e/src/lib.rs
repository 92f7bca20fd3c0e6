//! Harness of berth's end-to-end tests: a client for the cluster in `KUBECONFIG` (or the local control
//! plane of `e2e/cluster.sh`), throwaway namespaces, condition waits that dump state on failure, and the
//! berth operator run as a real process.

// Test support: failing loudly with the state of the cluster is its job.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

pub mod bench;
pub mod metrics;
pub mod operator;
pub mod otel;

use std::fmt::Debug;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use operator::Operator;

/// The repository root.
#[must_use]
pub fn repo() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// Where cargo put this workspace's binaries: `CARGO_TARGET_DIR` when set (relative to the workspace, as
/// the Makefile's cargo runs there), else `target`. A binary looked for anywhere else could be a stale one.
#[must_use]
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo().join("target"), |d| repo().join(d))
}

/// Kubeconfig of the cluster under test: `KUBECONFIG`, else the local control plane's.
#[must_use]
pub fn kubeconfig() -> PathBuf {
    std::env::var_os("KUBECONFIG").map_or_else(
        || {
            std::env::var_os("BERTH_CLUSTER_DIR")
                .map_or_else(|| repo().join(".cluster"), PathBuf::from)
                .join("kubeconfig")
        },
        PathBuf::from,
    )
}

/// An admin client of the cluster under test.
pub async fn client() -> Client {
    client_from(&kubeconfig()).await
}

/// A client that authenticates as the given kubeconfig says.
pub async fn client_from(path: &std::path::Path) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).unwrap_or_else(|e| {
        panic!(
            "no kubeconfig at {}: start the local cluster with `make cluster` or set KUBECONFIG ({e})",
            path.display()
        )
    });
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kubeconfig is unusable");
    Client::try_from(config).expect("client")
}

/// Writes a kubeconfig that authenticates as ServiceAccount `ns/sa` with a token from the TokenRequest
/// API (valid for `hours`), pointing at the same API server as the admin kubeconfig.
pub async fn service_account_kubeconfig(
    client: &Client,
    ns: &str,
    sa: &str,
    hours: i64,
    path: &std::path::Path,
) {
    let url = format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token");
    let body = serde_json::to_vec(&serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": hours * 3600},
    }))
    .expect("json");
    let request = http::Request::post(url)
        .header("Content-Type", "application/json")
        .body(body)
        .expect("request");
    let answer: serde_json::Value = client.request(request).await.expect("TokenRequest");
    let token = answer["status"]["token"]
        .as_str()
        .expect("token in TokenRequest status")
        .to_owned();
    let mut config = kube::config::Kubeconfig::read_from(kubeconfig()).expect("admin kubeconfig");
    let user = format!("{ns}-{sa}");
    config.auth_infos = vec![
        serde_json::from_value(serde_json::json!({"name": user, "user": {"token": token}}))
            .expect("auth info"),
    ];
    for ctx in config.contexts.iter_mut().filter_map(|c| c.context.as_mut()) {
        ctx.user = Some(user.clone());
    }
    std::fs::write(path, serde_yaml::to_string(&config).expect("yaml")).expect("write kubeconfig");
}

/// A name no other test (or earlier run) uses.
#[must_use]
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let pid = std::process::id();
    format!(
        "{prefix}-{:x}{:x}{}",
        pid % 4096,
        nanos % 65536,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// berth's ServiceAccount and tenant ClusterRole as `e2e/install.sh` installs the chart (release `berth`).
pub const BERTH_SERVICE_ACCOUNT: &str = "berth";
pub const BERTH_TENANT_ROLE: &str = "berth-tenant";

/// Whether `user` may `verb` core `resource` in `namespace`, as the API server's authorizer answers now.
async fn berth_may(client: &Client, user: &str, verb: &str, resource: &str, namespace: &str) -> bool {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.to_owned()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_owned()),
                resource: Some(resource.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .is_ok_and(|r| r.status.is_some_and(|s| s.allowed))
}

/// A namespace for one test, deleted by [`TestNamespace::delete`].
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = unique(prefix);
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("berth.dev/e2e".to_owned(), "true".to_owned())].into()),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create namespace");
        Self {
            name,
            client: client.clone(),
        }
    }

    /// A namespace berth may work in without a Customer, as a platform team grants one for Databases or
    /// Schedulers it creates itself: labelled as berth's (the chart's admission policy confines berth to
    /// such namespaces) and with berth's tenant ClusterRole bound to berth's ServiceAccount, as the
    /// Customer controller does in a tenant namespace. Returns once the API server authorizes berth there.
    pub async fn for_berth(client: &Client, prefix: &str) -> Self {
        let ns = Self::new(client, prefix).await;
        let label = serde_json::json!({"metadata": {"labels": {"app.kubernetes.io/managed-by": "berth"}}});
        Api::<Namespace>::all(client.clone())
            .patch(&ns.name, &PatchParams::default(), &Patch::Merge(&label))
            .await
            .expect("label the namespace as berth's");
        let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "berth-operator"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": BERTH_TENANT_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": BERTH_SERVICE_ACCOUNT, "namespace": operator::LEASE_NAMESPACE}]
        }))
        .expect("binding");
        ns.api::<k8s_openapi::api::rbac::v1::RoleBinding>()
            .create(&PostParams::default(), &binding)
            .await
            .expect("bind berth's tenant role");
        let user = format!(
            "system:serviceaccount:{}:{BERTH_SERVICE_ACCOUNT}",
            operator::LEASE_NAMESPACE
        );
        eventually(
            Duration::from_secs(30),
            "berth's binding to take effect",
            || async {
                berth_may(client, &user, "patch", "configmaps", &ns.name)
                    .await
                    .then_some(())
            },
        )
        .await;
        ns
    }

    #[must_use]
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    pub async fn delete(self) {
        let _ = Api::<Namespace>::all(self.client)
            .delete(&self.name, &DeleteParams::default())
            .await;
    }
}

/// Waits until `ready` holds for the object `name`, or fails after `timeout` with the object's YAML.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    ready: impl Fn(&K) -> bool,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static,
{
    wait_for_or_explain(api, name, timeout, what, ready, String::new).await
}

/// [`wait_for`], adding what `explain` finds to the failure message: the object alone rarely tells why
/// its children did not converge.
pub async fn wait_for_or_explain<K>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    what: &str,
    ready: impl Fn(&K) -> bool,
    explain: impl FnOnce() -> String,
) -> K
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + Sync + 'static,
{
    let cond = move |o: Option<&K>| o.is_some_and(&ready);
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, cond)).await {
        Ok(Ok(Some(obj))) => obj,
        outcome => {
            let now = api.get_opt(name).await.ok().flatten();
            let dump = now.map_or_else(
                || "<absent>".to_owned(),
                |o| serde_yaml::to_string(&o).unwrap_or_default(),
            );
            let more = explain();
            panic!(
                "timed out after {timeout:?} waiting for {what} of {name} ({outcome:?}); it is now:\n{dump}\n{more}"
            );
        }
    }
}

/// What a tenant namespace holds and what went wrong in it, as `kubectl` prints it: the workloads with
/// their conditions, the pods and where they were scheduled, and the namespace's events.
#[must_use]
pub fn namespace_report(namespace: &str) -> String {
    let kubectl = |args: &[&str]| {
        std::process::Command::new(tool("kubectl"))
            .args(args)
            .args(["-n", namespace])
            .env("KUBECONFIG", kubeconfig())
            .output()
            .map_or_else(
                |e| format!("kubectl {args:?}: {e}\n"),
                |o| {
                    format!(
                        "$ kubectl {} -n {namespace}\n{}{}",
                        args.join(" "),
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                },
            )
    };
    [
        kubectl(&[
            "get",
            "databases,schedulers,statefulsets,deployments,replicasets,pods,pvc,resourcequota",
            "-o",
            "wide",
        ]),
        kubectl(&[
            "get",
            "deployments,statefulsets",
            "-o",
            "jsonpath={range .items[*]}{.kind}/{.metadata.name} {.status.conditions}{\"\\n\"}{end}",
        ]),
        kubectl(&["get", "events", "--sort-by=.lastTimestamp"]),
    ]
    .concat()
}

/// A Customer that is `Ready` for its current generation.
#[must_use]
pub fn customer_ready(c: &berth_api::Customer) -> bool {
    let status = c.status.as_ref();
    let conditions = status.map(|s| s.conditions.as_slice()).unwrap_or_default();
    berth_api::condition_status(conditions, "Ready") == Some(true)
        && status.and_then(|s| s.observed_generation) == c.metadata.generation
}

/// Applies a Customer (deletion policy `Delete`) with a one-worker scheduler, and a 1Gi database when
/// `database`; returns its name.
pub async fn scheduler_customer(c: &Client, prefix: &str, database: bool) -> String {
    let name = unique(prefix);
    let db = if database {
        "database: {enabled: true, storage: 1Gi}, "
    } else {
        ""
    };
    let yaml = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{deletionPolicy: Delete, features: {{{db}scheduler: {{enabled: true, workers: 1}}}}}}\n"
    );
    apply_yaml(&Api::<berth_api::Customer>::all(c.clone()), &yaml)
        .await
        .expect("apply a Customer");
    name
}

/// Waits until Customer `name` is [`customer_ready`].
pub async fn wait_customer_ready(c: &Client, name: &str, within: Duration) {
    let customers = Api::<berth_api::Customer>::all(c.clone());
    // The tests leave spec.namespace unset: the namespace is named after the Customer.
    let explain = || namespace_report(name);
    wait_for_or_explain(&customers, name, within, "Ready", customer_ready, explain).await;
}

/// Deletes these Customers, whether or not they still exist.
pub async fn delete_customers(c: &Client, names: &[String]) {
    for n in names {
        let _ = Api::<berth_api::Customer>::all(c.clone())
            .delete(n, &DeleteParams::default())
            .await;
    }
}

/// Waits until `name` is gone.
pub async fn wait_gone<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let uid = match api.get_opt(name).await.expect("get") {
        Some(o) => o.uid().unwrap_or_default(),
        None => return,
    };
    let gone = tokio::time::timeout(
        timeout,
        await_condition(api.clone(), name, conditions::is_deleted(&uid)),
    )
    .await;
    assert!(matches!(gone, Ok(Ok(_))), "{name} still exists after {timeout:?}");
}

/// Polls `check` until it returns `Some`, for facts no single watch shows (counts across objects).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_or_explain(timeout, what, check, String::new).await
}

/// [`eventually`], and on timeout the panic adds what `explain` says then (what is still missing, a log).
pub async fn eventually_or_explain<T, F, Fut>(
    timeout: Duration,
    what: &str,
    mut check: F,
    explain: impl FnOnce() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(t) = check().await {
            return t;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}\n{}", explain());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Everything a berth test needs: the CRDs, the operator's namespace, and a running operator (unless
/// berth already runs in the cluster).
pub async fn setup() -> Client {
    let client = prepare().await;
    let _ = operator::shared();
    client
}

/// The CRDs and the operator's namespace, without starting an operator.
pub async fn prepare() -> Client {
    let client = client().await;
    install_crds(&client).await.expect("install CRDs");
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(operator::LEASE_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    let api = Api::<Namespace>::all(client.clone());
    api.patch(
        operator::LEASE_NAMESPACE,
        &PatchParams::apply("berth-e2e"),
        &Patch::Apply(&ns),
    )
    .await
    .expect("namespace");
    client
}

/// Installs berth's CRDs (server-side apply, so it is harmless when the chart already did) and waits
/// until the API server serves them.
pub async fn install_crds(client: &Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for (_, crd) in berth_api::crds() {
        let name = crd.name_any();
        api.patch(
            &name,
            &PatchParams::apply("berth-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying CRD {name}"))?;
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        match tokio::time::timeout(Duration::from_secs(30), established).await {
            Ok(Ok(_)) => {}
            _ => bail!("CRD {name} did not become Established"),
        }
    }
    Ok(())
}

/// Applies a YAML document (any kind berth's types cover) and returns the API server's answer.
pub async fn apply_yaml<K>(api: &Api<K>, yaml: &str) -> Result<K, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let obj: K = serde_yaml::from_str(yaml).expect("test YAML parses");
    api.patch(
        &obj.name_any(),
        &PatchParams::apply("berth-e2e").force(),
        &Patch::Apply(&obj),
    )
    .await
}

/// The message of an API server refusal, for asserting what a user would read.
#[must_use]
pub fn refusal<T: Debug>(r: Result<T, kube::Error>) -> String {
    match r {
        Err(kube::Error::Api(s)) => s.message,
        other => panic!("expected the API server to refuse, got {other:?}"),
    }
}

/// Path of a binary the project builds with Go into the cache (kubectl, helm, …).
#[must_use]
pub fn tool(name: &str) -> PathBuf {
    let out = std::process::Command::new(repo().join("e2e/cluster.sh"))
        .arg("bin")
        .output();
    let dir = out
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    dir.map_or_else(|| PathBuf::from(name), |d| PathBuf::from(d).join(name))
}

/// `kubectl berth <args>` as a user runs it: kubectl finds the `kubectl-berth` this workspace built (in
/// [`target_dir`], or `BERTH_E2E_PLUGIN`) on PATH; the cluster under test is its KUBECONFIG. No colour: the
/// output is not a terminal.
#[must_use]
pub fn kubectl_berth(args: &[&str]) -> std::process::Output {
    let plugin = std::env::var_os("BERTH_E2E_PLUGIN")
        .map_or_else(|| target_dir().join("debug/kubectl-berth"), PathBuf::from);
    assert!(
        plugin.exists(),
        "{} is missing: cargo build -p kubectl-berth",
        plugin.display()
    );
    let dir = plugin.parent().expect("a directory").to_path_buf();
    let inherited = std::env::var_os("PATH").unwrap_or_default();
    let path =
        std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&inherited))).expect("PATH");
    std::process::Command::new(tool("kubectl"))
        .arg("berth")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("run kubectl berth")
}
