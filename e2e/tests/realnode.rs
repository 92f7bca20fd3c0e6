//! berth on a real node (issue #13): what only a container runtime can show. The chart-installed operator
//! runs as pods whose readiness the kubelet's probes decide, one of them holds the Lease; a tenant's
//! workflows run real containers that print, exit and are counted from pod phases, never more than
//! `workers` at once; a command that exits 1 is retried `backoffLimit` times and reported as failed; a
//! tenant's database is a real PostgreSQL behind real pgbouncers that a tenant pod writes to and reads from
//! through the `db` Service, and that another tenant's pod cannot reach at all (issue #14 continues it: rows
//! survive a deleted server pod, a suspend, an operator restart and, under `Retain`, the Customer's deletion;
//! many clients share a few server connections, and one client too many is refused; a lost credentials
//! Secret is reported, never regenerated over existing data; a retained volume outlives its namespace; the
//! pool rolls to new settings while a client loop runs, and not one of its transactions fails; draining the
//! pool never leaves it without a serving pod; every pod berth runs passes `restricted` Pod Security
//! without a warning).
//!
//! Runs against a cluster with real nodes and berth installed by Helm (`e2e/run.sh` does both with
//! `BERTH_REAL_NODE=1`; on kind, load the images and set `BERTH_E2E_BUSYBOX_IMAGE`). Every workflow runs
//! each minute, so a test waits for the next minute boundary before its first runs.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_api::{Customer, Scheduler};
use berth_e2e::{client, eventually, unique, wait_for, wait_gone};
use berth_scheduler::job::WORKFLOW;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, PodTemplateSpec, Secret,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;

const RELEASE_NAMESPACE: &str = "berth-system";
/// Until the next minute boundary, plus starting and running the containers.
const RUNS: Duration = Duration::from_secs(150);

fn busybox() -> String {
    std::env::var("BERTH_E2E_BUSYBOX_IMAGE").unwrap_or_else(|_| "berth.local/busybox:1.36".to_owned())
}

/// An image with `psql` and `pg_isready`.
fn postgres() -> String {
    std::env::var("BERTH_E2E_POSTGRES_IMAGE").unwrap_or_else(|_| "berth.local/postgres:15".to_owned())
}

/// Applies a Customer (deletion policy Delete) with these features.
async fn tenant(client: &Client, prefix: &str, features: serde_json::Value) -> String {
    tenant_with(client, prefix, json!({"features": features})).await
}

/// Applies a Customer (deletion policy Delete) with this spec.
async fn tenant_with(client: &Client, prefix: &str, spec: serde_json::Value) -> String {
    let name = unique(prefix);
    let mut spec = spec;
    spec["deletionPolicy"] = json!("Delete");
    let customer = json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "Customer",
        "metadata": {"name": name},
        "spec": spec
    });
    Api::<Customer>::all(client.clone())
        .patch(
            &name,
            &PatchParams::apply("berth-e2e").force(),
            &Patch::Apply(&customer),
        )
        .await
        .expect("apply Customer");
    name
}

fn scheduler_only(workers: i32, workflows: &serde_json::Value) -> serde_json::Value {
    json!({
        "database": {"enabled": false},
        "scheduler": {"enabled": true, "workers": workers, "workflows": workflows},
        "webhooks": {"enabled": false}
    })
}

/// Runs `script` in a pod of `namespace` that Pod Security `restricted` admits, with `env_from` Secrets,
/// and returns its exit code and output.
async fn run_pod(
    client: &Client,
    namespace: &str,
    image: &str,
    script: &str,
    env_from: &[&str],
) -> (i32, String) {
    run_pod_within(
        client,
        namespace,
        image,
        script,
        env_from,
        Duration::from_secs(90),
    )
    .await
}

/// [`run_pod`] for a script that may take up to `within`.
async fn run_pod_within(
    client: &Client,
    namespace: &str,
    image: &str,
    script: &str,
    env_from: &[&str],
    within: Duration,
) -> (i32, String) {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let name = unique("probe");
    let env_from: Vec<_> = env_from
        .iter()
        .map(|s| json!({"secretRef": {"name": s}}))
        .collect();
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"run-by": "berth-e2e"}},
        "spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "probe", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", script], "envFrom": env_from,
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}]
        }
    }))
    .unwrap();
    api.create(&kube::api::PostParams::default(), &pod)
        .await
        .expect("create pod");
    let done = wait_for(&api, &name, within, "the pod to finish", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    })
    .await;
    let code = done.status.unwrap().container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .terminated
        .unwrap()
        .exit_code;
    let log = api.logs(&name, &LogParams::default()).await.expect("logs");
    (code, log)
}

async fn remove(client: &Client, name: &str) {
    let api = Api::<Customer>::all(client.clone());
    api.delete(name, &DeleteParams::foreground())
        .await
        .expect("delete Customer");
    wait_gone(&api, name, Duration::from_secs(120)).await;
}

fn pod_ready(pod: &Pod) -> bool {
    let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending")
}

#[tokio::test]
async fn the_chart_installed_operator_runs_as_ready_pods_and_one_leads() {
    let client = client().await;
    let deployments = Api::<Deployment>::namespaced(client.clone(), RELEASE_NAMESPACE);
    let wanted = deployments
        .get("berth")
        .await
        .expect("the chart's Deployment")
        .spec
        .unwrap()
        .replicas
        .unwrap();
    assert!(
        wanted >= 2,
        "the chart's default of 2 replicas: one leader and a standby"
    );
    wait_for(
        &deployments,
        "berth",
        Duration::from_secs(120),
        "all replicas ready",
        |d| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(wanted),
    )
    .await;

    let pods = Api::<Pod>::namespaced(client.clone(), RELEASE_NAMESPACE)
        .list(&ListParams::default().labels("app.kubernetes.io/name=berth"))
        .await
        .unwrap()
        .items;
    let nodes = Api::<Node>::all(client.clone());
    let mut names = BTreeSet::new();
    for pod in &pods {
        let spec = pod.spec.as_ref().unwrap();
        let c = &spec.containers[0];
        assert!(
            c.readiness_probe.is_some() && c.liveness_probe.is_some(),
            "Ready must come from the kubelet probing berth, not from a pod without probes"
        );
        let status = pod.status.as_ref().unwrap();
        let cs = &status.container_statuses.as_ref().unwrap()[0];
        assert!(
            cs.ready && cs.state.as_ref().unwrap().running.is_some(),
            "{} is running and ready",
            pod.name_any()
        );
        assert!(
            cs.image_id.starts_with("sha256:") || cs.image_id.contains("@sha256:"),
            "a real runtime reports the image it ran: {:?}",
            cs.image_id
        );
        let node = nodes.get(spec.node_name.as_deref().unwrap()).await.unwrap();
        let runtime = node.status.unwrap().node_info.unwrap().container_runtime_version;
        assert!(
            runtime.starts_with("containerd://"),
            "{} runs on a containerd node, not {runtime}",
            pod.name_any()
        );
        names.insert(pod.name_any());
    }
    assert_eq!(names.len(), usize::try_from(wanted).unwrap(), "{names:?}");

    let holder = eventually(Duration::from_secs(60), "a leader", || async {
        let lease = Api::<Lease>::namespaced(client.clone(), RELEASE_NAMESPACE)
            .get_opt("berth-leader")
            .await
            .ok()??;
        lease.spec?.holder_identity.filter(|h| names.contains(h))
    })
    .await;
    assert!(
        names.contains(&holder),
        "the Lease is held by one of the pods: {holder}"
    );
}

/// Counts pods of `namespace` in phase Running at every change, until `done` holds for the pods seen.
async fn watch_pods(
    client: &Client,
    namespace: &str,
    done: impl Fn(&BTreeMap<String, Pod>) -> bool,
) -> (BTreeMap<String, Pod>, usize) {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let mut events = watcher(api, watcher::Config::default()).applied_objects().boxed();
    let mut pods = BTreeMap::new();
    let mut most = 0;
    let observed = tokio::time::timeout(RUNS, async {
        while let Some(pod) = events.try_next().await.expect("pod watch") {
            pods.insert(pod.name_any(), pod);
            most = most.max(pods.values().filter(|p| phase(p) == "Running").count());
            if done(&pods) {
                return;
            }
        }
    })
    .await;
    let phases: Vec<_> = pods
        .values()
        .map(|p| (p.name_any(), phase(p).to_owned()))
        .collect();
    assert!(observed.is_ok(), "timed out after {RUNS:?}; pods: {phases:?}");
    (pods, most)
}

#[tokio::test]
async fn workflows_run_real_containers_never_more_than_workers_at_once() {
    let client = client().await;
    // Four runs come due at the same minute; two workers; each run takes a few seconds.
    let workflows: Vec<_> = (0..4)
        .map(|i| {
            json!({"name": format!("step-{i}"), "schedule": "* * * * *", "image": busybox(),
                   "command": ["sh", "-c", format!("echo ran step-{i} as $(id -u); sleep 5")]})
        })
        .collect();
    let name = tenant(&client, "real-sched", scheduler_only(2, &json!(workflows))).await;

    let succeeded_workflows = |pods: &BTreeMap<String, Pod>| {
        pods.values()
            .filter(|p| phase(p) == "Succeeded")
            .filter_map(|p| p.labels().get(WORKFLOW).cloned())
            .collect::<BTreeSet<_>>()
    };
    let (pods, most) = watch_pods(&client, &name, |pods| succeeded_workflows(pods).len() == 4).await;
    assert!(most <= 2, "{most} pods ran at once with 2 workers");
    assert!(most >= 1, "a run was seen running");

    let api = Api::<Pod>::namespaced(client.clone(), &name);
    for pod in pods.values().filter(|p| phase(p) == "Succeeded") {
        let workflow = &pod.labels()[WORKFLOW];
        let log = api
            .logs(&pod.name_any(), &LogParams::default())
            .await
            .expect("kubectl logs");
        assert_eq!(
            log.trim(),
            format!("ran {workflow} as 65532"),
            "the container's own output"
        );
    }
    remove(&client, &name).await;
}

#[tokio::test]
async fn a_run_that_exits_1_is_retried_backoff_limit_times_and_reported_failed() {
    let client = client().await;
    let workflows = json!([{"name": "broken", "schedule": "* * * * *", "image": busybox(),
                           "command": ["sh", "-c", "echo failing; exit 1"], "backoffLimit": 1}]);
    let name = tenant(&client, "real-fail", scheduler_only(1, &workflows)).await;

    let jobs = Api::<Job>::namespaced(client.clone(), &name);
    let failed = eventually(RUNS, "a failed run", || async {
        jobs.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|j| {
                j.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"))
            })
    })
    .await;
    let reason = failed
        .status
        .as_ref()
        .unwrap()
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Failed")
        .and_then(|c| c.reason.clone());
    assert_eq!(reason.as_deref(), Some("BackoffLimitExceeded"));

    let pods = Api::<Pod>::namespaced(client.clone(), &name)
        .list(&ListParams::default().labels(&format!("job-name={}", failed.name_any())))
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 2, "the first attempt and backoffLimit 1 retry");
    for pod in &pods {
        let status = pod.status.as_ref().unwrap();
        assert_eq!(status.phase.as_deref(), Some("Failed"));
        let terminated = status.container_statuses.as_ref().unwrap()[0]
            .state
            .as_ref()
            .unwrap()
            .terminated
            .clone()
            .unwrap();
        assert_eq!(terminated.exit_code, 1, "the command's own exit code");
    }

    let schedulers = Api::<Scheduler>::namespaced(client.clone(), &name);
    let reported = eventually(
        Duration::from_secs(30),
        "lastFailedTime in the Scheduler's status",
        || async {
            let s = schedulers
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .next()?;
            s.status?
                .workflows
                .into_iter()
                .find(|w| w.name == "broken")?
                .last_failed_time
        },
    )
    .await;
    let finished = failed
        .status
        .unwrap()
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Failed")
        .unwrap()
        .last_transition_time;
    assert_eq!(Some(reported), finished, "the status reports when the run failed");
    remove(&client, &name).await;
}

#[tokio::test]
async fn a_tenant_pod_uses_its_database_through_the_pool_and_other_tenants_cannot_reach_it() {
    let client = client().await;
    let database = json!({
        "database": {"enabled": true, "storage": "1Gi"},
        "scheduler": {"enabled": false},
        "webhooks": {"enabled": false}
    });
    let name = tenant(&client, "real-db", database).await;
    let other = tenant(&client, "real-other", scheduler_only(1, &json!([]))).await;
    for n in [&name, &other] {
        ready(&client, n).await;
    }

    // A real server and two real pools, on a node with a container runtime.
    let pods = Api::<Pod>::namespaced(client.clone(), &name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let running: Vec<_> = pods
        .iter()
        .filter(|p| phase(p) == "Running")
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(
        running.iter().filter(|n| n.starts_with("db-postgres-")).count(),
        1,
        "{running:?}"
    );
    assert_eq!(
        running.iter().filter(|n| n.starts_with("db-pgbouncer-")).count(),
        2,
        "{running:?}"
    );

    // The app reads nothing but the connection Secret.
    let sql = "create table visits (n int); insert into visits select generate_series(1, 5); \
               select count(*), sum(n) from visits";
    let out = through_pool(&client, &name, sql).await;
    assert_eq!(
        out.lines().last(),
        Some("5|15"),
        "rows written and read back through the pool: {out}"
    );
    // `kubectl berth psql` as a user runs it: a pod of the tenant's, through the pool, the same rows.
    let sql = "select count(*), sum(n) from visits";
    let psql = berth_e2e::kubectl_berth(&["psql", &name, "--", "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql]);
    let said = String::from_utf8_lossy(&psql.stdout);
    assert!(
        psql.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&psql.stderr)
    );
    assert_eq!(said.trim(), "5|15", "kubectl berth psql reads what the app wrote");

    // Inside the tenant the pool answers; from another tenant's namespace nothing does (berth's
    // NetworkPolicies, enforced on the node). pg_isready: 0 accepting, 2 no response.
    let probe = format!("pg_isready -U probe -d probe -t 5 -h db.{name}.svc.cluster.local -p 5432");
    // Up to 20 tries for the pod the enforcer has not seen yet; only a refusal every time fails.
    // The name must resolve (exit 9 otherwise), so that "no response" means the packets were dropped.
    let patient = format!(
        "nslookup db.{name}.svc.cluster.local >/dev/null || exit 9; \
         for i in $(seq 20); do {probe} && exit 0; sleep 1; done; exit 2"
    );
    let (inside, out) = run_pod(&client, &name, &postgres(), &patient, &[]).await;
    assert_eq!(inside, 0, "same namespace: {out}");
    let (outside, out) = run_pod(&client, &other, &postgres(), &patient, &[]).await;
    assert_eq!(outside, 2, "another tenant must get no answer: {out}");
    // Not even the tenant's own pods reach the server past the pool (only pool pods may), while the
    // same pod reaches the pool: the server's name resolves, the pool answers, the server never does.
    let server = format!("db-postgres-0.db-postgres.{name}.svc.cluster.local");
    // The pool first, patiently (the enforcer learns the new pod's address a moment after it starts;
    // exit 3 if the pool never answers), then the server, which must never answer.
    let bypass = format!(
        "nslookup {server} >/dev/null || exit 9; \
         n=0; until pg_isready -U probe -d probe -t 5 -h db.{name}.svc.cluster.local -p 5432; do \
           n=$((n+1)); [ $n -ge 20 ] && exit 3; sleep 1; done; \
         for i in $(seq 3); do pg_isready -U probe -d probe -t 5 -h {server} -p 5432 && exit 0; done; exit 2"
    );
    let (direct, out) = run_pod(&client, &name, &postgres(), &bypass, &[]).await;
    assert_eq!(
        direct, 2,
        "a tenant pod must not reach PostgreSQL but through the pool: {out}"
    );

    remove(&client, &other).await;
    remove(&client, &name).await;
}

/// A database feature of `storage: 1Gi` with these pool settings.
fn with_database(pool: &serde_json::Value) -> serde_json::Value {
    json!({
        "database": {"enabled": true, "storage": "1Gi", "pool": pool},
        "scheduler": {"enabled": false},
        "webhooks": {"enabled": false}
    })
}

/// Runs SQL through the tenant's pool as its app would (only `db-connection`), waiting for the pool to
/// answer first (the NetworkPolicy enforcer learns a new pod's address a moment after the pod starts);
/// returns psql's unaligned output.
async fn through_pool(client: &Client, namespace: &str, sql: &str) -> String {
    let script = format!(
        "until pg_isready -q -d \"$DATABASE_URL\"; do sleep 1; done; \
         psql \"$DATABASE_URL\" -v ON_ERROR_STOP=1 -tA -c \"{sql}\""
    );
    let (code, out) = run_pod(client, namespace, &postgres(), &script, &["db-connection"]).await;
    assert_eq!(code, 0, "{sql}: {out}");
    out.trim().to_owned()
}

/// A Ready tenant with a default database whose table `kept` holds `values` (SQL, e.g. `(1), (2)`),
/// written through the pool.
async fn with_rows(client: &Client, prefix: &str, values: &str) -> String {
    let name = tenant(client, prefix, with_database(&json!({}))).await;
    ready(client, &name).await;
    let sql = format!("create table kept (n int); insert into kept values {values}");
    through_pool(client, &name, &sql).await;
    name
}

async fn ready(client: &Client, name: &str) {
    let customers = Api::<Customer>::all(client.clone());
    wait_for(
        &customers,
        name,
        Duration::from_secs(180),
        "Ready",
        berth_e2e::customer_ready,
    )
    .await;
}

/// The server pod's UID once it runs and is ready.
async fn server_pod_ready(client: &Client, namespace: &str) -> String {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let pod = wait_for(
        &pods,
        "db-postgres-0",
        Duration::from_secs(120),
        "the server Ready",
        |p| pod_ready(p) && p.metadata.deletion_timestamp.is_none(),
    )
    .await;
    pod.uid().unwrap()
}

async fn set_suspend(client: &Client, name: &str, suspend: bool) {
    Api::<Customer>::all(client.clone())
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": suspend}})),
        )
        .await
        .expect("suspend");
}

#[tokio::test]
async fn rows_survive_a_deleted_server_pod_a_suspend_and_an_operator_restart() {
    let client = client().await;
    let name = with_rows(&client, "real-keep", "(1), (2), (3)").await;
    let count = "select count(*) from kept";

    // The server pod goes; the StatefulSet makes a new one on the same volume.
    let pods = Api::<Pod>::namespaced(client.clone(), &name);
    let first = server_pod_ready(&client, &name).await;
    pods.delete("db-postgres-0", &DeleteParams::default())
        .await
        .expect("delete the server pod");
    let second = eventually(Duration::from_secs(120), "a new server pod", || async {
        let uid = server_pod_ready(&client, &name).await;
        (uid != first).then_some(uid)
    })
    .await;
    assert_ne!(first, second);
    assert_eq!(
        through_pool(&client, &name, count).await,
        "3",
        "after the server pod was deleted"
    );

    // Suspend scales the server and the pool to zero; resume brings the same data back.
    set_suspend(&client, &name, true).await;
    wait_gone(&pods, "db-postgres-0", Duration::from_secs(120)).await;
    set_suspend(&client, &name, false).await;
    ready(&client, &name).await;
    assert_eq!(
        through_pool(&client, &name, count).await,
        "3",
        "after suspend and resume"
    );
    let resumed = server_pod_ready(&client, &name).await;

    // Every operator pod replaced: the new leader adopts the running tenant and changes nothing.
    let operators = Api::<Pod>::namespaced(client.clone(), RELEASE_NAMESPACE);
    operators
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app.kubernetes.io/name=berth"),
        )
        .await
        .expect("delete the operator pods");
    let deployments = Api::<Deployment>::namespaced(client.clone(), RELEASE_NAMESPACE);
    eventually(Duration::from_secs(120), "new operator pods Ready", || async {
        let d = deployments.get("berth").await.ok()?;
        let status = d.status?;
        (status.ready_replicas == d.spec?.replicas && status.updated_replicas == status.replicas)
            .then_some(())
    })
    .await;
    through_pool(&client, &name, "insert into kept values (4)").await;
    assert_eq!(
        through_pool(&client, &name, count).await,
        "4",
        "after the operator restart"
    );
    assert_eq!(
        server_pod_ready(&client, &name).await,
        resumed,
        "the restart did not touch the server"
    );
    remove(&client, &name).await;
}

#[tokio::test]
async fn under_retain_the_data_outlives_the_customer_and_comes_back_with_it() {
    let client = client().await;
    let name = unique("real-retain");
    let apply = |deletion_policy: &str, adopt: Option<&str>| {
        let mut spec = json!({"deletionPolicy": deletion_policy, "features": with_database(&json!({}))});
        if let Some(uid) = adopt {
            spec["adoptNamespaceOf"] = json!(uid);
        }
        json!({
            "apiVersion": "berth.dev/v1alpha1", "kind": "Customer", "metadata": {"name": name},
            "spec": spec
        })
    };
    let customers = Api::<Customer>::all(client.clone());
    let ssa = PatchParams::apply("berth-e2e").force();
    customers
        .patch(&name, &ssa, &Patch::Apply(&apply("Retain", None)))
        .await
        .expect("apply");
    ready(&client, &name).await;
    let old_uid = customers.get(&name).await.unwrap().uid().unwrap();
    through_pool(
        &client,
        &name,
        "create table kept (n int); insert into kept values (7)",
    )
    .await;
    let secrets = Api::<Secret>::namespaced(client.clone(), &name);
    let password = |s: Secret| s.data.unwrap()["password"].clone();
    let before = password(secrets.get("db-connection").await.unwrap());

    // Foreground, the harshest way: garbage collection removes every dependent before the Customer goes.
    customers
        .delete(&name, &DeleteParams::foreground())
        .await
        .expect("delete Customer");
    wait_gone(&customers, &name, Duration::from_secs(120)).await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &name);
    let claim = claims
        .get("data-db-postgres-0")
        .await
        .expect("the volume's claim is kept");
    assert!(
        secrets.get_opt("db-credentials").await.unwrap().is_some(),
        "the credentials are kept"
    );

    // The name alone does not bring the data back (it could be a new tenant's); the old UID does.
    customers
        .patch(&name, &ssa, &Patch::Apply(&apply("Delete", None)))
        .await
        .expect("re-create");
    let refused = wait_for(
        &customers,
        &name,
        Duration::from_secs(60),
        "RetainedNamespace",
        |c| {
            let conditions = c
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            berth_api::find_condition(conditions, "NamespaceReady").is_some_and(|n| {
                n.reason == "RetainedNamespace" && n.observed_generation == c.metadata.generation
            })
        },
    )
    .await;
    let conditions = refused.status.unwrap().conditions;
    let message = &berth_api::find_condition(&conditions, "Ready").unwrap().message;
    assert!(
        message.contains(&format!("set spec.adoptNamespaceOf: {old_uid} ")),
        "says how to take it over: {message}"
    );
    let namespace = Api::<Namespace>::all(client.clone()).get(&name).await.unwrap();
    assert_eq!(
        namespace.annotations().get("berth.dev/customer-uid"),
        Some(&old_uid),
        "left as it was"
    );
    customers
        .patch(&name, &ssa, &Patch::Apply(&apply("Delete", Some(&old_uid))))
        .await
        .expect("opt in");
    ready(&client, &name).await;
    let again = claims.get("data-db-postgres-0").await.unwrap();
    assert_eq!(again.uid(), claim.uid(), "the same claim, so the same volume");
    assert_eq!(
        password(secrets.get("db-connection").await.unwrap()),
        before,
        "the old password"
    );
    assert_eq!(
        through_pool(&client, &name, "select n from kept").await,
        "7",
        "the old rows"
    );
    remove(&client, &name).await;
}

#[tokio::test]
async fn many_clients_share_a_few_server_connections_and_one_too_many_is_refused() {
    let client = client().await;
    let pool = json!({"defaultPoolSize": 3, "maxClientConnections": 12, "replicas": 1});
    let name = tenant(&client, "real-pool", with_database(&pool)).await;
    ready(&client, &name).await;

    // 12 clients each hold a transaction for 6 s through the pool; meanwhile a 13th is refused by pgbouncer.
    // Then the server's sessions of the app's user are counted, through the pool (apps cannot reach the
    // server past it): pgbouncer keeps the server connections it opened, idle, so they are still there.
    // pg_isready waits for the pool.
    let script = r#"
        until pg_isready -q -d "$DATABASE_URL"; do sleep 1; done
        for i in $(seq 12); do psql "$DATABASE_URL" -tA -c 'select pg_sleep(6)' >/dev/null 2>&1 && echo ok >>/tmp/done & done
        sleep 3
        psql "$DATABASE_URL" -tA -c 'select 1' 2>&1 | sed 's/^/extra: /'
        wait
        psql "$DATABASE_URL" -tA -c "select 'server: ' || count(*) from pg_stat_activity where usename = '$user'"
        echo "done: $(wc -l </tmp/done)"
    "#;
    let (code, out) = run_pod(&client, &name, &postgres(), script, &["db-connection"]).await;
    assert_eq!(code, 0, "{out}");
    let line = |prefix: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} in {out}"))
            .trim()
            .to_owned()
    };
    let server: u32 = line("server: ").parse().unwrap();
    assert!(
        (1..=3).contains(&server),
        "12 clients through at most defaultPoolSize (3) server connections: {server}"
    );
    assert!(
        line("extra: ").contains("no more connections allowed (max_client_conn)"),
        "{out}"
    );
    assert_eq!(line("done: "), "12", "every pooled client got its answer: {out}");
    remove(&client, &name).await;
}

#[tokio::test]
async fn a_lost_credentials_secret_is_reported_and_never_regenerated_over_the_data() {
    let client = client().await;
    let name = with_rows(&client, "real-creds", "(5)").await;
    let server = server_pod_ready(&client, &name).await;

    let secrets = Api::<Secret>::namespaced(client.clone(), &name);
    let lost = secrets.get("db-credentials").await.unwrap();
    secrets
        .delete("db-credentials", &DeleteParams::default())
        .await
        .unwrap();
    let databases = Api::<berth_api::Database>::namespaced(client.clone(), &name);
    let reported = wait_for(
        &databases,
        "db",
        Duration::from_secs(60),
        "CredentialsMissing",
        |d| {
            let conditions = d
                .status
                .as_ref()
                .map(|s| s.conditions.as_slice())
                .unwrap_or_default();
            berth_api::find_condition(conditions, "Ready").is_some_and(|c| c.reason == "CredentialsMissing")
        },
    )
    .await;
    let conditions = reported.status.unwrap().conditions;
    let message = &berth_api::find_condition(&conditions, "Ready").unwrap().message;
    assert!(
        message.contains("restore Secret db-credentials"),
        "says how to recover: {message}"
    );
    assert!(
        secrets.get_opt("db-credentials").await.unwrap().is_none(),
        "no new passwords were made"
    );
    assert_eq!(
        server_pod_ready(&client, &name).await,
        server,
        "the server was left alone"
    );

    // The platform team restores the Secret from its backup; the old password reads the old rows.
    let mut restored = lost.clone();
    restored.metadata = kube::api::ObjectMeta {
        name: lost.metadata.name.clone(),
        labels: lost.metadata.labels.clone(),
        owner_references: lost.metadata.owner_references.clone(),
        ..kube::api::ObjectMeta::default()
    };
    secrets
        .create(&kube::api::PostParams::default(), &restored)
        .await
        .expect("restore");
    ready(&client, &name).await;
    assert_eq!(through_pool(&client, &name, "select n from kept").await, "5");
    remove(&client, &name).await;
}

#[tokio::test]
async fn a_retained_databases_volume_outlives_a_deleted_namespace() {
    let client = client().await;
    let name = unique("real-pv");
    let customer = json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Customer", "metadata": {"name": name},
        "spec": {"deletionPolicy": "Retain", "features": with_database(&json!({}))}
    });
    let customers = Api::<Customer>::all(client.clone());
    customers
        .patch(
            &name,
            &PatchParams::apply("berth-e2e").force(),
            &Patch::Apply(&customer),
        )
        .await
        .unwrap();
    ready(&client, &name).await;
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), &name);
    let volume = claims
        .get("data-db-postgres-0")
        .await
        .unwrap()
        .spec
        .unwrap()
        .volume_name
        .unwrap();
    let volumes = Api::<PersistentVolume>::all(client.clone());
    wait_for(
        &volumes,
        &volume,
        Duration::from_secs(60),
        "reclaim policy Retain",
        |pv| {
            pv.spec
                .as_ref()
                .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
                == Some("Retain")
        },
    )
    .await;

    // The Customer goes (its namespace stays, under Retain); then someone deletes the namespace itself.
    customers.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_gone(&customers, &name, Duration::from_secs(120)).await;
    let namespaces = Api::<Namespace>::all(client.clone());
    namespaces.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_gone(&namespaces, &name, Duration::from_secs(180)).await;
    let kept = wait_for(&volumes, &volume, Duration::from_secs(60), "Released", |pv| {
        pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released")
    })
    .await;
    assert_eq!(
        kept.spec.unwrap().claim_ref.unwrap().namespace.as_deref(),
        Some(name.as_str())
    );
    volumes.delete(&volume, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn the_pool_rolls_to_new_settings_without_a_failed_transaction() {
    let client = client().await;
    let name = tenant(
        &client,
        "real-roll",
        with_database(&json!({"defaultPoolSize": 5})),
    )
    .await;
    ready(&client, &name).await;
    through_pool(&client, &name, "create table ticks (n int)").await;
    let pods = Api::<Pod>::namespaced(client.clone(), &name);
    let pool_pods = || async {
        let listed = pods
            .list(&ListParams::default().labels("app.kubernetes.io/component=pool"))
            .await;
        listed
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.name_any())
            .collect::<BTreeSet<_>>()
    };
    let before = pool_pods().await;

    // A client that opens a connection per transaction, as a web app's short requests do, for 75 s.
    let script = r#"
        until pg_isready -q -d "$DATABASE_URL"; do sleep 1; done
        ok=0; failed=0; end=$(( $(date +%s) + 75 ))
        while [ "$(date +%s)" -lt "$end" ]; do
            if psql "$DATABASE_URL" -tA -c "insert into ticks values (1)" >/dev/null 2>>/tmp/errors; then
                ok=$((ok + 1)); else failed=$((failed + 1)); fi
        done
        echo "ok: $ok"; echo "failed: $failed"; cat /tmp/errors
    "#;
    let loop_client = {
        let client = client.clone();
        let name = name.clone();
        tokio::spawn(async move { run_pod(&client, &name, &postgres(), script, &["db-connection"]).await })
    };
    // Once the loop's pod runs, change a pool setting: the config hash changes and the pods roll.
    eventually(Duration::from_secs(60), "the client loop running", || async {
        let listed = pods
            .list(&ListParams::default().labels("run-by=berth-e2e"))
            .await
            .ok()?;
        listed.items.iter().any(|p| phase(p) == "Running").then_some(())
    })
    .await;
    Api::<Customer>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"features": {"database": {"pool": {"defaultPoolSize": 6}}}}})),
        )
        .await
        .expect("change the pool size");
    let rolled = eventually(Duration::from_secs(70), "every pool pod replaced", || async {
        let now = pool_pods().await;
        (now.len() == 2 && now.is_disjoint(&before)).then_some(now)
    })
    .await;

    let (code, out) = loop_client.await.unwrap();
    assert_eq!(code, 0, "{out}");
    let count = |prefix: &str| -> u32 {
        out.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert!(count("ok: ") > 10, "{out}");
    assert_eq!(
        count("failed: "),
        0,
        "not one transaction may fail while {before:?} became {rolled:?}: {out}"
    );

    remove(&client, &name).await;
}

#[tokio::test]
async fn a_session_mode_pool_serves_queries_in_session_mode() {
    let client = client().await;
    let name = tenant(
        &client,
        "real-session",
        with_database(&json!({"mode": "session"})),
    )
    .await;
    ready(&client, &name).await;
    // A query through the pool, then the pool's own configuration (the app role may read pgbouncer's
    // console). SHOW CONFIG, not SHOW POOLS: the Service may send the second connection to the other
    // pgbouncer pod, which lists a pool only once a client of its own used it.
    let script = r#"
        until pg_isready -q -d "$DATABASE_URL"; do sleep 1; done
        psql "$DATABASE_URL" -tA -c "select 'query: ' || 40 + 2"
        psql "host=$host port=$port dbname=pgbouncer user=$user password=$password" -tA -c "show config" |
            awk -F'|' '$1 == "pool_mode" {print "mode: " $2}'
    "#;
    let (code, out) = run_pod(&client, &name, &postgres(), script, &["db-connection"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l == "query: 42"), "{out}");
    assert!(out.lines().any(|l| l == "mode: session"), "{out}");
    remove(&client, &name).await;
}

/// `template` as a Pod a user could create in a tenant namespace: no ServiceAccount (the tenant has only
/// `default`), and an empty directory for each volume a StatefulSet's claim template would provide.
fn pod_of(template: PodTemplateSpec) -> serde_json::Value {
    let mut spec = template.spec.expect("a pod spec");
    spec.service_account_name = None;
    spec.service_account = None;
    let volumes = spec.volumes.get_or_insert_default();
    let mounted: BTreeSet<String> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .flat_map(|c| c.volume_mounts.iter().flatten().map(|m| m.name.clone()))
        .collect();
    for name in mounted {
        if !volumes.iter().any(|v| v.name == name) {
            volumes.push(serde_json::from_value(json!({"name": name, "emptyDir": {}})).unwrap());
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "admission-"}, "spec": spec})
}

/// Creates `pod` in `namespace` with `kubectl --dry-run=server`, as a user would; fails with what kubectl
/// printed unless it was admitted without a single warning.
fn admitted_without_warnings(what: &str, namespace: &str, pod: &serde_json::Value) {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut kubectl = Command::new(berth_e2e::tool("kubectl"))
        .args([
            "create",
            "--dry-run=server",
            "-o",
            "name",
            "-n",
            namespace,
            "-f",
            "-",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    kubectl
        .stdin
        .take()
        .unwrap()
        .write_all(pod.to_string().as_bytes())
        .unwrap();
    let out = kubectl.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "{what}: {stderr}"
    );
}

#[tokio::test]
async fn every_pod_berth_runs_is_admitted_by_restricted_pod_security_without_a_warning() {
    let client = client().await;
    let workflows =
        json!([{"name": "tick", "schedule": "* * * * *", "image": busybox(), "command": ["true"]}]);
    let features = json!({
        "database": {"enabled": true, "storage": "1Gi"},
        "scheduler": {"enabled": true, "workers": 1, "workflows": workflows},
        "webhooks": {"enabled": false}
    });
    let name = tenant(&client, "real-psa", features).await;
    ready(&client, &name).await;
    // Enforced and warned at the same level, so an admitted pod is a restricted pod.
    let ns = Api::<Namespace>::all(client.clone()).get(&name).await.unwrap();
    for mode in ["enforce", "warn"] {
        assert_eq!(
            ns.labels()
                .get(&format!("pod-security.kubernetes.io/{mode}"))
                .map(String::as_str),
            Some("restricted"),
            "{mode}"
        );
    }
    let jobs = Api::<Job>::namespaced(client.clone(), &name);
    let run = eventually(RUNS, "a workflow run's Job", || async {
        let listed = jobs.list(&ListParams::default().labels(WORKFLOW)).await.ok()?;
        listed.items.into_iter().next()
    })
    .await;
    let template = |spec: Option<PodTemplateSpec>| spec.expect("a pod template");
    let server = Api::<StatefulSet>::namespaced(client.clone(), &name)
        .get("db-postgres")
        .await
        .unwrap();
    let pool = Api::<Deployment>::namespaced(client.clone(), &name)
        .get("db-pgbouncer")
        .await
        .unwrap();
    let operator = Api::<Deployment>::namespaced(client.clone(), RELEASE_NAMESPACE)
        .get("berth")
        .await
        .unwrap();
    for (what, pod) in [
        ("the PostgreSQL server", template(server.spec.map(|s| s.template))),
        ("the pool", template(pool.spec.map(|s| s.template))),
        ("a workflow run", template(run.spec.map(|s| s.template))),
        ("the operator", template(operator.spec.map(|s| s.template))),
    ] {
        admitted_without_warnings(what, &name, &pod_of(pod));
    }
    remove(&client, &name).await;
}

/// Selects the pool's pods.
const POOL: &str = "app.kubernetes.io/component=pool";

/// A pod the pool's Service sends clients to, and that the disruption budget counts as healthy.
fn serving(pod: &Pod) -> bool {
    pod_ready(pod) && pod.metadata.deletion_timestamp.is_none()
}

/// Watches the pool's pods and, from the first complete listing on (tells `listed`), returns the fewest
/// serving at any time until `done`.
async fn fewest_serving(
    api: Api<Pod>,
    listed: tokio::sync::oneshot::Sender<()>,
    mut done: tokio::sync::oneshot::Receiver<()>,
) -> usize {
    let mut events = watcher(api, watcher::Config::default().labels(POOL)).boxed();
    let mut pods = BTreeMap::new();
    let mut listed = Some(listed);
    let mut relisting = true;
    let mut fewest = usize::MAX;
    loop {
        tokio::select! {
            _ = &mut done => return fewest,
            event = events.try_next() => match event.expect("pod watch").expect("watch open") {
                watcher::Event::Init => {
                    relisting = true;
                    pods.clear();
                }
                watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                    pods.insert(p.name_any(), p);
                }
                watcher::Event::Delete(p) => {
                    pods.remove(&p.name_any());
                }
                watcher::Event::InitDone => {
                    relisting = false;
                    if let Some(l) = listed.take() {
                        let _ = l.send(());
                    }
                }
            }
        }
        if !relisting {
            fewest = fewest.min(pods.values().filter(|p| serving(p)).count());
        }
    }
}

#[tokio::test]
async fn draining_the_pool_never_takes_its_last_serving_pod() {
    let client = client().await;
    let name = tenant(&client, "real-evict", with_database(&json!({"replicas": 2}))).await;
    ready(&client, &name).await;
    // The disruption controller must have counted both pool pods healthy before one may go.
    let budgets = Api::<PodDisruptionBudget>::namespaced(client.clone(), &name);
    let allows = |b: &PodDisruptionBudget| b.status.as_ref().is_some_and(|s| s.disruptions_allowed >= 1);
    let allowing = || {
        let within = Duration::from_secs(120);
        wait_for(&budgets, "db-pgbouncer", within, "a disruption allowed", allows)
    };
    allowing().await;
    let pods = Api::<Pod>::namespaced(client.clone(), &name);
    let listed = pods.list(&ListParams::default().labels(POOL)).await.unwrap();
    let both: Vec<String> = listed
        .items
        .iter()
        .filter(|p| serving(p))
        .map(ResourceExt::name_any)
        .collect();
    assert_eq!(both.len(), 2, "{both:?}");

    let (listed_tx, listed_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let watching = tokio::spawn(fewest_serving(pods.clone(), listed_tx, done_rx));
    listed_rx.await.expect("the pool's pods listed");
    // As `kubectl drain` does: evict each, and when the budget refuses, try again once it allows.
    let evict = kube::api::EvictParams::default();
    let mut refused = 0;
    for pod in &both {
        loop {
            match pods.evict(pod, &evict).await {
                Ok(_) => break,
                Err(kube::Error::Api(status)) if status.code == 429 => {
                    refused += 1;
                    allowing().await;
                }
                Err(e) => panic!("evicting {pod}: {e}"),
            }
        }
    }
    done_tx.send(()).unwrap();
    let fewest = watching.await.unwrap();
    assert!(
        fewest >= 1,
        "both pool pods drained, at one moment none served ({refused} evictions refused)"
    );
    remove(&client, &name).await;
}

/// Everything a user can read about a tenant without reading its Secrets, as text: its Customer and
/// Database, the namespace's ConfigMaps, workloads, pods and events, and the logs of every container of the
/// tenant's pods and of berth's own.
async fn readable_without_secrets(client: &Client, name: &str) -> Vec<(String, String)> {
    async fn all<K>(api: Api<K>, out: &mut Vec<(String, String)>)
    where
        K: kube::Resource<DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        for o in api.list(&ListParams::default()).await.unwrap().items {
            let text = serde_json::to_string(&o).unwrap();
            out.push((format!("{} {}", K::kind(&()), o.name_any()), text));
        }
    }
    let mut out = Vec::new();
    let customer = Api::<Customer>::all(client.clone()).get(name).await.unwrap();
    out.push(("Customer".to_owned(), serde_json::to_string(&customer).unwrap()));
    all(
        Api::<berth_api::Database>::namespaced(client.clone(), name),
        &mut out,
    )
    .await;
    all(
        Api::<k8s_openapi::api::core::v1::ConfigMap>::namespaced(client.clone(), name),
        &mut out,
    )
    .await;
    all(Api::<StatefulSet>::namespaced(client.clone(), name), &mut out).await;
    all(Api::<Deployment>::namespaced(client.clone(), name), &mut out).await;
    all(Api::<Pod>::namespaced(client.clone(), name), &mut out).await;
    all(
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), name),
        &mut out,
    )
    .await;
    all(
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(client.clone(), "default"),
        &mut out,
    )
    .await;
    for ns in [name, RELEASE_NAMESPACE] {
        let pods = Api::<Pod>::namespaced(client.clone(), ns);
        for pod in pods.list(&ListParams::default()).await.unwrap().items {
            let spec = pod.spec.clone().unwrap_or_default();
            let containers = spec.init_containers.iter().flatten().chain(&spec.containers);
            for c in containers {
                let params = LogParams {
                    container: Some(c.name.clone()),
                    ..LogParams::default()
                };
                if let Ok(log) = pods.logs(&pod.name_any(), &params).await {
                    out.push((format!("log of {}/{}", pod.name_any(), c.name), log));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn no_password_is_readable_outside_its_secrets() {
    use berth_database::credentials::{APP_PASSWORD_KEY, SUPERUSER_PASSWORD_KEY};
    let client = client().await;
    // Logins through the pool and on the server, so their logs have something to say.
    let name = with_rows(&client, "real-secret", "(1)").await;
    let credentials = Api::<Secret>::namespaced(client.clone(), &name)
        .get("db-credentials")
        .await
        .unwrap();
    let data = credentials.data.unwrap();
    let passwords: Vec<String> = [APP_PASSWORD_KEY, SUPERUSER_PASSWORD_KEY]
        .iter()
        .map(|k| String::from_utf8(data[*k].0.clone()).unwrap())
        .collect();
    let readable = readable_without_secrets(&client, &name).await;
    assert!(
        readable
            .iter()
            .any(|(what, _)| what.starts_with("log of db-postgres-0/")),
        "the server's logs were read: {:?}",
        readable.iter().map(|(w, _)| w).collect::<Vec<_>>()
    );
    for (what, text) in &readable {
        for p in &passwords {
            assert!(!text.contains(p.as_str()), "a password in {what}");
        }
    }
    remove(&client, &name).await;
}

/// `spec.network.egress: Internet` on the node's NetworkPolicy enforcer: the tenant's pods still resolve
/// names through the cluster DNS, but reach no pod of another namespace, even one every other pod reaches.
#[tokio::test]
async fn internet_only_egress_keeps_dns_and_reaches_no_other_namespace() {
    let client = client().await;
    // A web server in a namespace without any NetworkPolicy: open to every pod.
    let web = berth_e2e::TestNamespace::new(&client, "real-web").await;
    let server: Pod = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "web", "image": busybox(), "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "mkdir -p /tmp/www && echo reachable >/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
            }]
        }
    }))
    .unwrap();
    let pods = web.api::<Pod>();
    pods.create(&kube::api::PostParams::default(), &server)
        .await
        .unwrap();
    let running = wait_for(
        &pods,
        "web",
        Duration::from_secs(90),
        "the web server running",
        |p| phase(p) == "Running" && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some(),
    )
    .await;
    let ip = running.status.unwrap().pod_ip.unwrap();

    let open = tenant(&client, "real-egress-open", scheduler_only(1, &json!([]))).await;
    let closed = tenant_with(
        &client,
        "real-egress-closed",
        json!({"network": {"egress": "Internet"}, "features": scheduler_only(1, &json!([]))}),
    )
    .await;
    for n in [&open, &closed] {
        ready(&client, n).await;
    }
    // busybox's wget crashes on a connection that fails; nc reports it.
    let fetch = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 8080 | grep reachable");
    // Control: from a tenant with open egress the server answers.
    let reach = format!("for i in $(seq 20); do {fetch} && exit 0; sleep 1; done; exit 2");
    let (code, out) = run_pod(&client, &open, &busybox(), &reach, &[]).await;
    assert_eq!((code, out.trim()), (0, "reachable"), "open egress: {out}");
    // Under `Internet`: names resolve (exit 9 otherwise); the server, once the enforcer has seen the new pod,
    // stops answering (exit 3 if it never does) and answers none of five more tries (exit 4 if it does).
    let blocked = format!(
        "nslookup kubernetes.default.svc.cluster.local >/dev/null || exit 9; \
         n=0; while {fetch} >/dev/null; do n=$((n+1)); [ $n -ge 20 ] && exit 3; sleep 1; done; \
         for i in $(seq 5); do {fetch} >/dev/null && exit 4; done; exit 0"
    );
    let (code, out) = run_pod(&client, &closed, &busybox(), &blocked, &[]).await;
    assert_eq!(
        code, 0,
        "internet-only egress must keep DNS and block another namespace: {out}"
    );

    remove(&client, &open).await;
    remove(&client, &closed).await;
    web.delete().await;
}

/// The `db-connection` Secret's `password`.
async fn app_password(client: &Client, namespace: &str) -> String {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get("db-connection")
        .await
        .unwrap();
    String::from_utf8(secret.data.unwrap()["password"].0.clone()).unwrap()
}

#[tokio::test]
async fn tls_on_both_hops_and_a_password_rotation_breaks_no_open_session() {
    let client = client().await;
    let name = tenant(&client, "real-tls", with_database(&json!({}))).await;
    ready(&client, &name).await;

    // The client hop: the pool's certificate checks out against the CA in the connection Secret for the
    // host apps dial (verify-full), and a client without TLS is refused. The server hop, as PostgreSQL
    // sees it (pg_stat_ssl): encrypted, and logged in by the pool's certificate.
    let script = r#"
        until pg_isready -q -d "$DATABASE_URL"; do sleep 1; done
        printf '%s\n' "$CA_CRT" >/tmp/ca.crt
        conn="host=$host port=$port dbname=$database user=$user password=$password"
        psql "$conn sslmode=verify-full sslrootcert=/tmp/ca.crt" -tA -c \
            "select 'server hop: ' || ssl || ' ' || client_dn from pg_stat_ssl where pid = pg_backend_pid()"
        psql "$conn sslmode=disable" -tA -c "select 1" >/dev/null 2>&1 || echo "plain: refused"
        case "$DATABASE_URL" in *sslmode=require) echo "url: require";; esac
    "#;
    // `ca.crt` is no shell variable name (busybox's sh drops it from the environment), so the CA from the
    // connection Secret reaches the probe under another name, from a Secret of the test's.
    let connection = Api::<Secret>::namespaced(client.clone(), &name)
        .get("db-connection")
        .await
        .expect("the connection Secret");
    let ca = connection
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .expect("ca.crt in db-connection");
    let probe_ca: Secret = serde_json::from_value(json!({
        "metadata": {"name": "probe-ca"},
        "stringData": {"CA_CRT": String::from_utf8(ca.0.clone()).expect("PEM text")}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &name)
        .create(&kube::api::PostParams::default(), &probe_ca)
        .await
        .expect("hand the CA to the probe");
    let (code, out) = run_pod(
        &client,
        &name,
        &postgres(),
        script,
        &["db-connection", "probe-ca"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.lines().any(|l| l == "server hop: true /CN=app"), "{out}");
    assert!(out.lines().any(|l| l == "plain: refused"), "{out}");
    assert!(out.lines().any(|l| l == "url: require"), "{out}");

    // A session held open across a rotation: one query every half second for two minutes, and psql stops
    // at the first error (ON_ERROR_STOP), so its exit code and the count tell whether one failed.
    let old = app_password(&client, &name).await;
    let session = r#"
        until pg_isready -q -d "$DATABASE_URL"; do sleep 1; done
        i=0; while [ $i -lt 240 ]; do echo "select 'tick';"; i=$((i + 1)); sleep 0.5; done |
            psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -tA >/tmp/out 2>&1
        status=$?
        echo "ticks: $(grep -c '^tick$' /tmp/out)"; echo "status: $status"
        # Whatever else psql said (nothing, when every query succeeded: grep then exits 1).
        grep -v '^tick$' /tmp/out || true
    "#;
    let held = {
        let (client, name) = (client.clone(), name.clone());
        tokio::spawn(async move {
            run_pod_within(
                &client,
                &name,
                &postgres(),
                session,
                &["db-connection"],
                Duration::from_secs(240),
            )
            .await
        })
    };
    let pods = Api::<Pod>::namespaced(client.clone(), &name);
    eventually(Duration::from_secs(60), "the session running", || async {
        let listed = pods
            .list(&ListParams::default().labels("run-by=berth-e2e"))
            .await
            .ok()?;
        listed.items.iter().any(|p| phase(p) == "Running").then_some(())
    })
    .await;
    let pool_pods = || async {
        let listed = pods
            .list(&ListParams::default().labels("app.kubernetes.io/component=pool"))
            .await
            .unwrap();
        listed
            .items
            .iter()
            .map(|p| p.uid().unwrap())
            .collect::<BTreeSet<_>>()
    };
    let pool_before = pool_pods().await;

    Api::<Customer>::all(client.clone())
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"features": {"database": {"passwordRotation": 1}}}})),
        )
        .await
        .expect("ask for a rotation");
    let databases = Api::<berth_api::Database>::namespaced(client.clone(), &name);
    wait_for(
        &databases,
        "db",
        Duration::from_secs(60),
        "rotation 1 in the status",
        |d| d.status.as_ref().and_then(|s| s.password_rotation) == Some(1),
    )
    .await;
    let new = app_password(&client, &name).await;
    assert_ne!(new, old, "the connection Secret has the new password");

    // At each pool pod (the Service would pick one at random, and the kubelet updates each pod's mounted
    // userlist on its own schedule): a new client with the new password gets in once that pod's userlist
    // is updated and pgbouncer reloaded it; with the old one it then no longer does. The old password
    // reaches the pod from a Secret of the test's, never from its command line.
    let pool_ips: Vec<String> = pods
        .list(&ListParams::default().labels(POOL))
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| p.status.as_ref()?.pod_ip.clone())
        .collect();
    assert_eq!(pool_ips.len(), pool_before.len(), "every pool pod has an address");
    let kept: Secret = serde_json::from_value(json!({
        "metadata": {"name": "old-password"},
        "stringData": {"OLD_PASSWORD": old, "POOL_IPS": pool_ips.join(" ")}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &name)
        .create(&kube::api::PostParams::default(), &kept)
        .await
        .expect("keep the old password");
    let script = r#"
        for ip in $POOL_IPS; do
            conn="host=$ip port=$port dbname=$database user=$user"
            ok=""
            for i in $(seq 75); do
                PGPASSWORD="$password" psql "$conn" -tA -c "select 1" >/dev/null 2>&1 && { ok=1; break; }
                sleep 2
            done
            [ -n "$ok" ] && echo "new: ok at $ip" || echo "new: refused at $ip"
            PGPASSWORD="$OLD_PASSWORD" psql "$conn" -tA -c "select 1" >/dev/null 2>&1 \
                && echo "old: accepted at $ip" || echo "old: refused at $ip"
        done
    "#;
    let (code, out) = run_pod_within(
        &client,
        &name,
        &postgres(),
        script,
        &["db-connection", "old-password"],
        Duration::from_secs(400),
    )
    .await;
    assert_eq!(code, 0, "{out}");
    for ip in &pool_ips {
        assert!(out.lines().any(|l| l == format!("new: ok at {ip}")), "{out}");
        assert!(out.lines().any(|l| l == format!("old: refused at {ip}")), "{out}");
    }

    let (code, out) = held.await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines().any(|l| l == "ticks: 240"),
        "not one query of the open session may fail: {out}"
    );
    assert!(out.lines().any(|l| l == "status: 0"), "{out}");
    assert_eq!(
        pool_pods().await,
        pool_before,
        "the pool reloaded in place, no pod was replaced"
    );
    remove(&client, &name).await;
}
