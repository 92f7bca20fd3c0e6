//! Least privilege, as the API server enforces it: what berth's ServiceAccount may do (RBAC, asked with
//! SubjectAccessReviews, and the chart's admission policy, tried with dry-run writes as berth), what a
//! tenant admin may not do to berth's objects, and that a tenant's own Secrets never reach berth's memory.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use berth_api::{Customer, Database, Scheduler};
use berth_e2e::{TestNamespace, apply_yaml, customer_ready, operator, setup, unique, wait_for};
use k8s_openapi::ByteString;
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

const READY_WITHIN: Duration = Duration::from_secs(180);
/// The chart's release namespace and ServiceAccount, as `e2e/install.sh` installs it.
const BERTH_NAMESPACE: &str = "berth-system";
const BERTH_SA: &str = "berth";
const TENANT_ADMIN: &str = "alice";

fn berth_user() -> String {
    format!("system:serviceaccount:{BERTH_NAMESPACE}:{BERTH_SA}")
}

fn berth_groups() -> Vec<String> {
    vec![
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{BERTH_NAMESPACE}"),
        "system:authenticated".to_owned(),
    ]
}

/// A client that acts as `user` (the test's own credentials are a cluster admin's, which may impersonate).
async fn acting_as(user: &str, groups: Vec<String>) -> Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(berth_e2e::kubeconfig()).unwrap();
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    config.auth_info.impersonate = Some(user.to_owned());
    config.auth_info.impersonate_groups = Some(groups);
    Client::try_from(config).unwrap()
}

/// A tenant with a Database (so berth watches the namespace's Secrets) whose admin is [`TENANT_ADMIN`].
async fn tenant(c: &Client, prefix: &str, quota: &str) -> String {
    let name = unique(prefix);
    let yaml = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec:\n  deletionPolicy: Delete\n  admins: [{{kind: User, name: {TENANT_ADMIN}}}]\n  {quota}\n  features:\n    database: {{enabled: true, storage: 1Gi}}\n    scheduler: {{enabled: true, workers: 1}}\n"
    );
    let customers = Api::<Customer>::all(c.clone());
    apply_yaml(&customers, &yaml).await.unwrap();
    wait_for(&customers, &name, READY_WITHIN, "Ready", customer_ready).await;
    name
}

async fn drop_tenant(c: &Client, name: &str) {
    let _ = Api::<Customer>::all(c.clone())
        .delete(name, &DeleteParams::foreground())
        .await;
}

/// Whether RBAC lets berth's ServiceAccount `verb` `resource` (in `namespace`; `None`: cluster-wide).
async fn berth_may(c: &Client, verb: &str, group: &str, resource: &str, namespace: Option<&str>) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(berth_user()),
            groups: Some(berth_groups()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.to_owned()),
                group: Some(group.to_owned()),
                resource: Some(resource.to_owned()),
                namespace: namespace.map(str::to_owned),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let answer = Api::<SubjectAccessReview>::all(c.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    answer.status.is_some_and(|s| s.allowed)
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

/// The refusal's message, asserting it was the admission policy's (a 403 or 422 naming it), not RBAC's.
fn refused_by_policy<T: std::fmt::Debug>(r: Result<T, kube::Error>, what: &str) -> String {
    match r {
        Err(kube::Error::Api(s)) if s.message.contains("ValidatingAdmissionPolicy") => s.message,
        other => panic!("{what}: expected a refusal by berth's admission policy, got {other:?}"),
    }
}

#[tokio::test]
async fn berth_may_read_secrets_and_write_workloads_only_in_its_tenants() {
    let c = setup().await;
    let tenant = tenant(&c, "sec-rbac", "").await;
    let other = TestNamespace::new(&c, "sec-plain").await;

    // Inside its tenant: what the tenant ClusterRole, bound there by the Customer controller, grants.
    for (verb, group, resource) in [
        ("get", "", "secrets"),
        ("watch", "", "secrets"),
        ("create", "apps", "statefulsets"),
        ("patch", "rbac.authorization.k8s.io", "rolebindings"),
        ("delete", "batch", "jobs"),
    ] {
        assert!(
            berth_may(&c, verb, group, resource, Some(&tenant)).await,
            "berth may {verb} {resource} in its tenant {tenant}"
        );
    }
    // Anywhere else: no Secret at all, cluster-wide included, and no workload or RBAC change.
    for ns in [Some("kube-system"), Some(other.name.as_str()), None] {
        for (verb, group, resource) in [
            ("get", "", "secrets"),
            ("list", "", "secrets"),
            ("watch", "", "secrets"),
            ("create", "", "pods"),
            ("create", "apps", "deployments"),
            ("patch", "apps", "statefulsets"),
            ("create", "batch", "jobs"),
            ("patch", "rbac.authorization.k8s.io", "rolebindings"),
            ("delete", "rbac.authorization.k8s.io", "rolebindings"),
            ("create", "", "configmaps"),
        ] {
            assert!(
                !berth_may(&c, verb, group, resource, ns).await,
                "berth may not {verb} {resource} in {ns:?}"
            );
        }
    }

    // RBAC cannot grant a right in a namespace that does not exist yet, so creating the tenant's first
    // RoleBinding is a cluster-wide grant; the admission policy confines it (and every namespaced write of
    // berth's) to tenant namespaces, and a namespace update to berth's own namespaces.
    let berth = acting_as(&berth_user(), berth_groups()).await;
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "berth-operator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "berth-tenant"},
        "subjects": [{"kind": "ServiceAccount", "name": BERTH_SA, "namespace": BERTH_NAMESPACE}]
    }))
    .unwrap();
    for ns in ["kube-system", other.name.as_str()] {
        let r = Api::<RoleBinding>::namespaced(berth.clone(), ns)
            .create(&dry_run(), &binding)
            .await;
        let message = refused_by_policy(r, &format!("berth binding itself in {ns}"));
        assert!(message.contains("tenant"), "{message}");
    }
    let label = json!({"metadata": {"labels": {"berth-e2e/touched": "yes"}}});
    let params = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let r = Api::<Namespace>::all(berth.clone())
        .patch(&other.name, &params, &Patch::Merge(&label))
        .await;
    refused_by_policy(r, "berth changing a namespace that is not a tenant's");
    // ...while in its tenant the same writes pass.
    Api::<Namespace>::all(berth.clone())
        .patch(&tenant, &params, &Patch::Merge(&label))
        .await
        .expect("berth may change its tenant's namespace");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "probe"}})).unwrap();
    Api::<ConfigMap>::namespaced(berth, &tenant)
        .create(&dry_run(), &cm)
        .await
        .expect("berth may write in its tenant");

    drop_tenant(&c, &tenant).await;
    other.delete().await;
}

#[tokio::test]
async fn only_berth_may_mark_an_object_as_berths() {
    let c = setup().await;
    let tenant = tenant(&c, "sec-labels", "").await;
    let admin = acting_as(TENANT_ADMIN, vec!["system:authenticated".to_owned()]).await;
    let secrets = Api::<Secret>::namespaced(admin.clone(), &tenant);

    // A Secret posing as berth's (which berth's watches would select) is refused, with a message that
    // says what to do instead; the same Secret without berth's label is the tenant's to make.
    let forged: Secret = serde_json::from_value(json!({
        "metadata": {"name": "forged", "labels": {"app.kubernetes.io/managed-by": "berth"}},
        "stringData": {"k": "v"}
    }))
    .unwrap();
    let message = refused_by_policy(
        secrets.create(&PostParams::default(), &forged).await,
        "a tenant admin's Secret labelled as berth's",
    );
    assert!(
        message.contains("app.kubernetes.io/managed-by") && message.contains("reserved"),
        "{message}"
    );
    let mut own = forged.clone();
    own.metadata.labels = None;
    secrets
        .create(&PostParams::default(), &own)
        .await
        .expect("the tenant's own Secret");
    // Adding berth's labels afterwards is refused too.
    let r = secrets
        .patch(
            "forged",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"berth.dev/customer": tenant}}})),
        )
        .await;
    refused_by_policy(r, "a tenant admin labelling a Secret as a Customer's");

    // A Job posing as a run of the tenant's Scheduler (its labels and its ownerReference) cannot be made,
    // so it can never count against `workers` or the history.
    let scheduler = Api::<Scheduler>::namespaced(c.clone(), &tenant)
        .get(berth_customer::names::SCHEDULER)
        .await
        .unwrap();
    let forged_run: Job = serde_json::from_value(json!({
        "metadata": {
            "name": "forged-run",
            "labels": {
                "app.kubernetes.io/managed-by": "berth",
                "app.kubernetes.io/instance": scheduler.name_any(),
            },
            "ownerReferences": [{
                "apiVersion": "berth.dev/v1alpha1", "kind": "Scheduler",
                "name": scheduler.name_any(), "uid": scheduler.uid().unwrap(), "controller": true
            }]
        },
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "x", "image": "busybox"}]}}}
    }))
    .unwrap();
    let r = Api::<Job>::namespaced(admin, &tenant)
        .create(&PostParams::default(), &forged_run)
        .await;
    refused_by_policy(r, "a tenant admin's Job posing as a workflow run");

    drop_tenant(&c, &tenant).await;
}

/// Resident memory of a process, from /proc (the operator runs on this machine).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_tenants_own_secrets_never_reach_berths_memory() {
    const COUNT: usize = 300;
    const SIZE: usize = 100 * 1024;
    let c = setup().await;
    let Some(berth) = operator::shared() else {
        eprintln!("skipped: berth runs in the cluster, its memory is not this machine's to read");
        return;
    };
    let tenant = tenant(&c, "sec-rss", "quota: {secrets: 400}").await;
    let before = rss_kib(berth.pid());

    // 300 large Secrets, about 30 MiB, of the tenant's own: in the namespace whose Secrets berth watches
    // (metadata only, berth's labels only), and which its Database controller reconciles.
    let secrets = Api::<Secret>::namespaced(c.clone(), &tenant);
    let body = ByteString(vec![b'x'; SIZE]);
    for i in 0..COUNT {
        let s: Secret = serde_json::from_value(json!({"metadata": {"name": format!("bulk-{i}")}})).unwrap();
        let s = Secret {
            data: Some([("blob".to_owned(), body.clone())].into()),
            ..s
        };
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    // berth still converges in that namespace: a change reaches the Database and it is Ready again.
    let customers = Api::<Customer>::all(c.clone());
    customers
        .patch(
            &tenant,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"features": {"database": {"pool": {"replicas": 2}}}}})),
        )
        .await
        .unwrap();
    wait_for(
        &Api::<Database>::namespaced(c.clone(), &tenant),
        berth_customer::names::DATABASE,
        READY_WITHIN,
        "Ready with two pool pods",
        |d| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(2),
    )
    .await;
    let after = rss_kib(berth.pid());
    let grown = after.saturating_sub(before);
    eprintln!("berth: {before} KiB before, {after} KiB after the tenant's Secrets");
    let data = (COUNT * SIZE / 1024) as u64;
    assert!(
        grown < data / 3,
        "berth's memory grew by {grown} KiB with {data} KiB of the tenant's Secrets ({before} -> {after} KiB)"
    );
    drop_tenant(&c, &tenant).await;
}

/// A Job with a Scheduler's labels and controller reference that berth did not make (here a cluster
/// admin's, whom the admission policy lets through) is no run: it holds no worker and is not counted.
#[tokio::test]
async fn a_job_berth_did_not_seal_is_not_a_run() {
    let c = setup().await;
    let tenant = tenant(&c, "sec-seal", "").await;
    let schedulers = Api::<Scheduler>::namespaced(c.clone(), &tenant);
    let scheduler = schedulers.get(berth_customer::names::SCHEDULER).await.unwrap();
    let labels: serde_json::Map<String, serde_json::Value> =
        berth_scheduler::job::selector(&scheduler.name_any())
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), json!(v)))
            .collect();
    let forged: Job = serde_json::from_value(json!({
        "metadata": {
            "name": "forged-run",
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "berth.dev/v1alpha1", "kind": "Scheduler",
                "name": scheduler.name_any(), "uid": scheduler.uid().unwrap(), "controller": true
            }]
        },
        // A pod the tenant namespace's restricted Pod Security admits, so the Job really runs.
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "x", "image": "busybox",
                "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}
            }]
        }}}
    }))
    .unwrap();
    let jobs = Api::<Job>::namespaced(c.clone(), &tenant);
    jobs.create(&PostParams::default(), &forged).await.unwrap();
    wait_for(&jobs, "forged-run", READY_WITHIN, "the forged Job running", |j| {
        j.status.as_ref().and_then(|s| s.active) == Some(1)
    })
    .await;
    // A change the Scheduler must act on: once it has, its status counts no run.
    Api::<Customer>::all(c.clone())
        .patch(
            &tenant,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"features": {"scheduler": {"workers": 2}}}})),
        )
        .await
        .unwrap();
    let seen = wait_for(
        &schedulers,
        berth_customer::names::SCHEDULER,
        READY_WITHIN,
        "the Scheduler to observe workers: 2",
        |s| {
            s.spec.workers == 2
                && s.status.as_ref().and_then(|st| st.observed_generation) == s.metadata.generation
        },
    )
    .await;
    let status = seen.status.unwrap();
    assert_eq!(
        (status.running, status.queued),
        (0, 0),
        "the forged Job counted as a run"
    );
    assert!(
        jobs.get_opt("forged-run").await.unwrap().is_some(),
        "berth leaves a Job it did not make alone"
    );
    drop_tenant(&c, &tenant).await;
}

/// berth as the chart runs it (webhooks.allowPrivateTargets off) refuses a tenant's endpoint on loopback:
/// the reason shows in the Webhook's status, and nothing ever connects to the address.
#[tokio::test]
async fn a_webhook_aimed_at_loopback_is_refused_without_a_connection() {
    let c = setup().await;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let name = unique("sec-hook");
    let yaml = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{deletionPolicy: Delete, features: {{webhooks: {{enabled: true, endpoints: [{{name: inside, url: 'https://127.0.0.1:{port}/hook'}}]}}}}}}\n"
    );
    apply_yaml(&Api::<Customer>::all(c.clone()), &yaml).await.unwrap();
    let hooks = Api::<berth_api::Webhook>::namespaced(c.clone(), &name);
    let refused = wait_for(&hooks, "webhooks", READY_WITHIN, "a refused endpoint", |h| {
        h.status.as_ref().is_some_and(|s| {
            s.endpoints.iter().any(|e| {
                e.last_failure_reason
                    .as_deref()
                    .is_some_and(|r| r.contains("127.0.0.1"))
            })
        })
    })
    .await;
    let reason = refused.status.unwrap().endpoints[0]
        .last_failure_reason
        .clone()
        .unwrap();
    assert!(
        reason.contains("webhooks go to public addresses only"),
        "{reason}"
    );
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "berth connected to a refused address"
    );
    Api::<Customer>::all(c.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}
