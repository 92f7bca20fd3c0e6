//! The Helm chart, without a cluster: it lints, renders, runs the operator locked down, grants no wildcard
//! and no `bind` but on `admin`, gives berth an API priority level of its own, refuses wrong values with the
//! schema's message, and ships the very CRDs that `crds/` holds. Needs helm (`e2e/cluster.sh bin`, built by
//! `e2e/build-components.sh`): without it every test fails, none is skipped.
//!
//! One test needs a cluster, and so is ignored unless asked for (`-- --ignored`): `helm uninstall` keeps the
//! CRDs and with them every tenant.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
// Only tests here: the helpers below get clippy's test allowances (unwrap, expect, panic) too.
#![cfg(test)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use berth_api::Customer;
use berth_e2e::{apply_yaml, wait_for, wait_gone};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use serde::Deserialize as _;
use serde_yaml::Value;

fn chart() -> PathBuf {
    berth_e2e::repo().join("charts/berth")
}

/// Runs helm with `args`; panics (the test fails) when helm cannot be started at all.
fn helm(args: &[&str]) -> Output {
    let helm = berth_e2e::tool("helm");
    Command::new(&helm).args(args).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {} ({e}): build it with e2e/build-components.sh (see e2e/cluster.sh bin)",
            helm.display()
        )
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `helm template` of the chart as release `berth` in `berth-system` with `--set` values; its documents.
fn render(sets: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "berth",
        chart.to_str().unwrap(),
        "--namespace",
        "berth-system",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template {sets:?} failed:\n{}",
        text(&out.stderr)
    );
    serde_yaml::Deserializer::from_str(&text(&out.stdout))
        .map(|doc| Value::deserialize(doc).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or_default()
}

fn one<'a>(docs: &'a [Value], k: &str) -> &'a Value {
    let found: Vec<_> = docs.iter().filter(|d| kind(d) == k).collect();
    assert_eq!(found.len(), 1, "expected exactly one {k}, found {}", found.len());
    found[0]
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Every value combination that changes what the chart renders, so each branch is checked.
const VARIANTS: [&[&str]; 3] = [
    &[],
    &[
        "replicaCount=1",
        "flowControl.enabled=false",
        "rbac.aggregateToTenantRoles=false",
    ],
    &[
        "rbac.ownerReferencesPermissionEnforcement=true",
        "serviceMonitor.enabled=true",
    ],
];

/// Rules of every Role and ClusterRole, with the name of the role they are in.
fn rules(docs: &[Value]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter(|d| matches!(kind(d), "Role" | "ClusterRole"))
        .flat_map(|d| {
            let name = format!(
                "{}/{}",
                kind(d),
                d["metadata"]["name"].as_str().unwrap_or_default()
            );
            d["rules"]
                .as_sequence()
                .into_iter()
                .flatten()
                .map(move |r| (name.clone(), r))
        })
        .collect()
}

#[test]
fn helm_lint_passes() {
    let chart = chart();
    for strict in [
        &["lint", chart.to_str().unwrap(), "--strict"][..],
        &["lint", chart.to_str().unwrap()],
    ] {
        let out = helm(strict);
        assert!(
            out.status.success(),
            "helm {strict:?} failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}

#[test]
fn helm_template_renders_the_operator_and_its_rbac() {
    let docs = render(&[]);
    let mut kinds: Vec<&str> = docs.iter().map(kind).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "FlowSchema",
            "PodDisruptionBudget",
            "PriorityLevelConfiguration",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ],
        "the default render"
    );
    for doc in &docs {
        let labels = &doc["metadata"]["labels"];
        for key in [
            "app.kubernetes.io/name",
            "app.kubernetes.io/instance",
            "app.kubernetes.io/version",
            "helm.sh/chart",
        ] {
            assert!(labels[key].is_string(), "{} lacks label {key}", kind(doc));
        }
        assert_eq!(
            labels["app.kubernetes.io/managed-by"].as_str(),
            Some("Helm"),
            "{}",
            kind(doc)
        );
    }

    let pdb = one(&docs, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
    assert!(
        render(&["replicaCount=1"])
            .iter()
            .all(|d| kind(d) != "PodDisruptionBudget"),
        "no PDB for 1 replica"
    );

    assert!(
        docs.iter().all(|d| kind(d) != "ServiceMonitor"),
        "ServiceMonitor is opt-in"
    );
    let with_monitor = render(&["serviceMonitor.enabled=true"]);
    let monitor = one(&with_monitor, "ServiceMonitor");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("http-metrics")
    );

    let service = one(&docs, "Service");
    assert_eq!(service["spec"]["ports"][0]["name"].as_str(), Some("http-metrics"));
    assert_eq!(service["spec"]["ports"][0]["port"].as_u64(), Some(8080));
}

#[test]
fn the_operator_pod_runs_locked_down_with_the_chart_settings() {
    let docs = render(&["shutdownSeconds=45"]);
    let deployment = one(&docs, "Deployment");
    assert_eq!(
        deployment["spec"]["replicas"].as_u64(),
        Some(2),
        "two replicas for leader election"
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"].as_str(), Some("berth"));
    assert_eq!(
        pod["terminationGracePeriodSeconds"].as_u64(),
        Some(55),
        "shutdownSeconds + 10"
    );

    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"].as_bool(), Some(true));
    assert_eq!(psc["runAsUser"].as_u64(), Some(65532));
    assert_eq!(psc["runAsGroup"].as_u64(), Some(65532));
    assert_eq!(psc["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"));

    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let csc = &c["securityContext"];
    assert_eq!(csc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(csc["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(&csc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        c["image"].as_str(),
        Some("ghcr.io/berth-dev/berth:0.1.0"),
        "the tag defaults to appVersion"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"].as_str(), Some("/healthz"));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/readyz"));
    assert_eq!(c["ports"][0]["containerPort"].as_u64(), Some(8080));
    assert_eq!(c["ports"][0]["name"].as_str(), Some("http"));

    let env = |name: &str| -> Value {
        let found = c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"].as_str() == Some(name));
        found.cloned().unwrap_or_else(|| panic!("no env {name}"))
    };
    assert_eq!(
        env("POD_NAME")["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.name")
    );
    assert_eq!(
        env("POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"].as_str(),
        Some("metadata.namespace")
    );
    for (name, value) in [
        ("BERTH_LEASE_NAMESPACE", "berth-system"),
        ("BERTH_HTTP_ADDR", "0.0.0.0:8080"),
        ("BERTH_LOG_FORMAT", "json"),
        ("BERTH_CONCURRENCY", "8"),
        ("BERTH_CONTROLLERS", "customer,database,scheduler"),
        ("BERTH_POSTGRES_IMAGE", "ghcr.io/cloudnative-pg/postgresql:17"),
        ("BERTH_PGBOUNCER_IMAGE", "ghcr.io/cloudnative-pg/pgbouncer:1.24.1"),
        ("BERTH_POSTGRES_BIN_DIR", ""),
        ("BERTH_SHUTDOWN_SECONDS", "45"),
    ] {
        assert_eq!(env(name)["value"].as_str(), Some(value), "{name}");
    }
}

#[test]
fn berth_gets_an_api_priority_level_of_its_own_unless_turned_off() {
    let docs = render(&[]);
    let level = one(&docs, "PriorityLevelConfiguration");
    let schema = one(&docs, "FlowSchema");
    for doc in [level, schema] {
        assert_eq!(
            doc["apiVersion"].as_str(),
            Some("flowcontrol.apiserver.k8s.io/v1"),
            "{}",
            kind(doc)
        );
        assert!(doc["metadata"]["namespace"].is_null(), "cluster-scoped");
    }
    let spec = &schema["spec"];
    assert_eq!(
        spec["priorityLevelConfiguration"]["name"], level["metadata"]["name"],
        "the schema sends berth to its own level"
    );
    let precedence = spec["matchingPrecedence"].as_u64().unwrap();
    assert!(
        precedence < 9000,
        "{precedence}: the built-in service-accounts schema (9000) would match first"
    );
    let rules = spec["rules"].as_sequence().unwrap();
    assert_eq!(rules.len(), 1);
    let subjects = rules[0]["subjects"].as_sequence().unwrap();
    assert_eq!(subjects.len(), 1, "berth's requests only: {subjects:?}");
    assert_eq!(subjects[0]["kind"].as_str(), Some("ServiceAccount"));
    let pod = &one(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(
        subjects[0]["serviceAccount"]["name"], pod["serviceAccountName"],
        "the operator pods' ServiceAccount"
    );
    assert_eq!(
        subjects[0]["serviceAccount"]["namespace"].as_str(),
        Some("berth-system")
    );
    assert_eq!(spec["distinguisherMethod"]["type"].as_str(), Some("ByNamespace"));

    let limited = &level["spec"]["limited"];
    assert_eq!(level["spec"]["type"].as_str(), Some("Limited"));
    assert_eq!(limited["nominalConcurrencyShares"].as_u64(), Some(20));
    assert_eq!(limited["lendablePercent"].as_u64(), Some(50));
    assert_eq!(
        limited["limitResponse"]["type"].as_str(),
        Some("Queue"),
        "a burst waits rather than failing with 429"
    );

    let renamed = render(&[
        "serviceAccount.name=ops-robot",
        "flowControl.matchingPrecedence=800",
    ]);
    let spec = &one(&renamed, "FlowSchema")["spec"];
    assert_eq!(
        spec["rules"][0]["subjects"][0]["serviceAccount"]["name"].as_str(),
        Some("ops-robot")
    );
    assert_eq!(spec["matchingPrecedence"].as_u64(), Some(800));

    let off = render(&["flowControl.enabled=false"]);
    assert!(
        off.iter()
            .all(|d| !matches!(kind(d), "FlowSchema" | "PriorityLevelConfiguration")),
        "flowControl.enabled=false renders neither"
    );
}

/// The ClusterRoles the API server folds into the built-in `view`, `edit` and `admin`.
fn aggregated(docs: &[Value]) -> Vec<&Value> {
    docs.iter()
        .filter(|d| kind(d) == "ClusterRole")
        .filter(|d| {
            d["metadata"]["labels"]
                .as_mapping()
                .into_iter()
                .flatten()
                .any(|(k, _)| {
                    k.as_str()
                        .is_some_and(|k| k.starts_with("rbac.authorization.k8s.io/aggregate-to-"))
                })
        })
        .collect()
}

/// Tenants read, and only read, their own Databases and Schedulers through the built-in roles; berth's own
/// ClusterRole is never folded into them.
#[test]
fn tenant_roles_may_read_berth_objects_unless_turned_off() {
    let docs = render(&[]);
    let [role] = aggregated(&docs)[..] else {
        panic!("one aggregated ClusterRole: {:?}", aggregated(&docs))
    };
    assert_eq!(role["metadata"]["name"].as_str(), Some("berth-tenant-view"));
    let labels = &role["metadata"]["labels"];
    for to in ["view", "edit", "admin"] {
        assert_eq!(
            labels[format!("rbac.authorization.k8s.io/aggregate-to-{to}").as_str()].as_str(),
            Some("true"),
            "aggregated to {to}"
        );
    }
    assert!(role["aggregationRule"].is_null());
    let [rule] = role["rules"].as_sequence().unwrap().as_slice() else {
        panic!("one rule: {role:?}")
    };
    assert_eq!(strings(&rule["apiGroups"]), ["berth.dev"]);
    assert_eq!(strings(&rule["resources"]), ["databases", "schedulers"]);
    assert_eq!(strings(&rule["verbs"]), ["get", "list", "watch"], "read only");
    assert!(
        docs.iter()
            .filter(|d| matches!(kind(d), "ClusterRoleBinding" | "RoleBinding"))
            .all(|b| b["roleRef"]["name"] != role["metadata"]["name"]),
        "nothing binds it directly"
    );

    let off = render(&["rbac.aggregateToTenantRoles=false"]);
    assert!(
        aggregated(&off).is_empty(),
        "turned off, the built-in roles stay as shipped"
    );
    assert_eq!(
        off.iter().filter(|d| kind(d) == "ClusterRole").count(),
        1,
        "berth's own ClusterRole stays"
    );
}

#[test]
fn no_rule_uses_a_wildcard() {
    for sets in VARIANTS {
        let docs = render(sets);
        let rules = rules(&docs);
        assert!(rules.len() > 10, "{sets:?}: the roles have rules");
        for (role, rule) in rules {
            for field in [
                "verbs",
                "resources",
                "apiGroups",
                "resourceNames",
                "nonResourceURLs",
            ] {
                assert!(
                    !strings(&rule[field]).iter().any(|s| s.contains('*')),
                    "{sets:?}: {role} has a wildcard in {field}: {rule:?}"
                );
            }
            assert!(
                rule["nonResourceURLs"].is_null(),
                "{role}: berth calls no non-resource URL"
            );
        }
    }
}

#[test]
fn the_only_bind_is_on_the_admin_cluster_role_and_nothing_escalates() {
    for sets in VARIANTS {
        let docs = render(sets);
        let binds: Vec<_> = rules(&docs)
            .into_iter()
            .filter(|(_, r)| strings(&r["verbs"]).contains(&"bind"))
            .collect();
        assert_eq!(binds.len(), 1, "{sets:?}: exactly one rule binds: {binds:?}");
        let (role, bind) = &binds[0];
        assert!(role.starts_with("ClusterRole/"), "{role}");
        assert_eq!(strings(&bind["apiGroups"]), ["rbac.authorization.k8s.io"]);
        assert_eq!(strings(&bind["resources"]), ["clusterroles"]);
        assert_eq!(strings(&bind["resourceNames"]), ["admin"]);
        assert_eq!(strings(&bind["verbs"]), ["bind"]);
        for (role, rule) in rules(&docs) {
            for verb in ["escalate", "impersonate"] {
                assert!(
                    !strings(&rule["verbs"]).contains(&verb),
                    "{sets:?}: {role} may {verb}"
                );
            }
            let resources = strings(&rule["resources"]);
            for forbidden in [
                "clusterrolebindings",
                "roles",
                "nodes",
                "pods/exec",
                "serviceaccounts/token",
            ] {
                assert!(
                    !resources.contains(&forbidden),
                    "{sets:?}: {role} reaches {forbidden}"
                );
            }
            if resources.contains(&"leases") {
                assert!(
                    role.starts_with("Role/"),
                    "{sets:?}: leases only in the release namespace, not {role}"
                );
            }
        }
    }
}

#[test]
fn a_wrong_value_fails_with_the_schema_message() {
    let chart = chart();
    let chart = chart.to_str().unwrap();
    for (set, message) in [
        (
            "replicaCount=many",
            "at '/replicaCount': got string, want integer",
        ),
        (
            "logFormat=xml",
            "at '/logFormat': value must be one of 'json', 'text'",
        ),
        ("concurrency=0", "at '/concurrency': minimum: got 0, want 1"),
        (
            "flowControl.matchingPrecedence=0",
            "at '/flowControl/matchingPrecedence': minimum: got 0, want 1",
        ),
        (
            "rbac.aggregateToTenantRoles=maybe",
            "at '/rbac/aggregateToTenantRoles': got string, want boolean",
        ),
        ("surprise=1", "additional properties 'surprise' not allowed"),
    ] {
        let out = helm(&["template", "berth", chart, "--set", set]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "--set {set} was accepted");
        assert!(
            stderr.contains("values don't meet the specifications of the schema"),
            "--set {set}: {stderr}"
        );
        assert!(
            stderr.contains(message),
            "--set {set}: expected {message:?} in:\n{stderr}"
        );
    }
}

#[test]
fn the_chart_ships_the_crds_byte_for_byte() {
    let repo = berth_e2e::repo();
    let names = |dir: PathBuf| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let source = names(repo.join("crds"));
    assert!(!source.is_empty(), "crds/ is empty");
    assert_eq!(
        names(chart().join("crds")),
        source,
        "charts/berth/crds has other files than crds/: run `make crds`"
    );
    for file in &source {
        let want = std::fs::read(repo.join("crds").join(file)).unwrap();
        let have = std::fs::read(chart().join("crds").join(file)).unwrap();
        assert!(
            have == want,
            "charts/berth/crds/{file} differs from crds/{file}: run `make crds`"
        );
    }
}

/// Runs helm against the cluster under test; panics with helm's output when it fails.
fn helm_on_cluster(args: &[&str]) {
    let kubeconfig = berth_e2e::kubeconfig();
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", kubeconfig.to_str().unwrap()]);
    let out = helm(&all);
    assert!(
        out.status.success(),
        "helm {all:?} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"))
}

/// `helm uninstall` must never delete a CRD: that would delete every Customer, and through garbage collection
/// every tenant with its data. After it, a Customer under `deletionPolicy: Delete` (which holds no finalizer)
/// still goes on `kubectl delete`, with no operator left to help. The test installs a release of its own,
/// whose operator never starts (its image is never pulled), so the suite's release and operator stay; the
/// CRDs are cluster-wide, so if they were the release's, this release would have had to install them.
#[tokio::test]
#[ignore = "needs a cluster: cargo test -p berth-e2e --test chart -- --ignored"]
async fn uninstall_keeps_the_crds_and_customers_and_a_customer_can_still_be_deleted() {
    const WITHIN: Duration = Duration::from_secs(60);
    let client = berth_e2e::client().await;
    let release = berth_e2e::unique("uninstall");
    let chart = chart();
    helm_on_cluster(&[
        "install",
        &release,
        chart.to_str().unwrap(),
        "--namespace",
        &release,
        "--create-namespace",
        "--set",
        "image.repository=berth.invalid/never-pulled",
        "--set",
        "image.pullPolicy=Never",
        "--set",
        "replicaCount=1",
    ]);

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut before = Vec::new();
    for (_, crd) in berth_api::crds() {
        let name = crd.name_any();
        let live = wait_for(&crds, &name, WITHIN, "Established", established).await;
        before.push((name, live.uid()));
    }
    let customers: Api<Customer> = Api::all(client.clone());
    let name = berth_e2e::unique("kept");
    let yaml = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{deletionPolicy: Delete}}\n"
    );
    let customer = apply_yaml(&customers, &yaml).await.unwrap();

    helm_on_cluster(&["uninstall", &release, "--namespace", &release, "--wait"]);

    for (crd, uid) in &before {
        let live = crds
            .get_opt(crd)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("helm uninstall deleted CRD {crd}"));
        assert_eq!(&live.uid(), uid, "CRD {crd} was deleted and created again");
        assert!(
            live.metadata.deletion_timestamp.is_none(),
            "helm uninstall is deleting CRD {crd}"
        );
    }
    let kept = customers
        .get_opt(&name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("Customer {name} is gone with the release"));
    assert_eq!(kept.uid(), customer.uid());
    assert!(kept.metadata.deletion_timestamp.is_none());
    assert_eq!(
        kept.finalizers(),
        &[] as &[String],
        "deletionPolicy Delete holds no finalizer, so no operator is needed to delete it"
    );

    // As a user would, and waiting as kubectl does (a watch until the object is gone).
    let kubeconfig = berth_e2e::kubeconfig();
    let kubectl = berth_e2e::tool("kubectl");
    let out = Command::new(&kubectl)
        .args(["--kubeconfig", kubeconfig.to_str().unwrap()])
        .args(["delete", "customer", &name, "--wait=true", "--timeout=60s"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {} ({e})", kubectl.display()));
    assert!(
        out.status.success(),
        "kubectl delete customer {name} failed:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    wait_gone(&customers, &name, WITHIN).await;

    let _ = Api::<Namespace>::all(client)
        .delete(&release, &DeleteParams::default())
        .await;
}
