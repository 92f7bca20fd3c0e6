//! The Helm chart, without a cluster: it lints, renders, runs the operator locked down, grants no wildcard,
//! writes nothing namespaced cluster-wide but the tenant RoleBinding and Events, binds only the tenant role
//! (cluster-wide) and `admin` (in a tenant), confines berth and reserves its labels with admission policies,
//! gives berth an API priority level of its own, refuses wrong values with the schema's message, and ships
//! the very CRDs that `crds/` holds. Needs helm (`e2e/cluster.sh bin`, built by
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
/// Offline, helm knows only the built-in API versions, so objects the chart renders only where the API
/// server serves their API (the admission policies) are left out: see [`render_on`].
fn render(sets: &[&str]) -> Vec<Value> {
    render_on(&[], sets)
}

/// The API version of the admission policies, which the chart renders only where the API server serves it.
const VAP_API: &str = "admissionregistration.k8s.io/v1/ValidatingAdmissionPolicy";

/// [`render`] as on an API server that also serves `api_versions` (`--api-versions`).
fn render_on(api_versions: &[&str], sets: &[&str]) -> Vec<Value> {
    let chart = chart();
    let mut args = vec![
        "template",
        "berth",
        chart.to_str().unwrap(),
        "--namespace",
        "berth-system",
    ];
    for api in api_versions {
        args.extend(["--api-versions", api]);
    }
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

fn named<'a>(docs: &'a [Value], k: &str, name: &str) -> &'a Value {
    let found: Vec<_> = docs
        .iter()
        .filter(|d| kind(d) == k && d["metadata"]["name"].as_str() == Some(name))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {k} {name}, found {}",
        found.len()
    );
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
        "prometheusRule.enabled=true",
        "grafanaDashboard.enabled=true",
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
    let with_policies = render_on(&[VAP_API], &[]);
    let mut on_vap: Vec<&str> = with_policies.iter().map(kind).collect();
    on_vap.retain(|k| k.starts_with("ValidatingAdmissionPolicy"));
    on_vap.sort_unstable();
    assert_eq!(
        on_vap,
        [
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
            "ValidatingAdmissionPolicyBinding"
        ],
        "where the API server serves ValidatingAdmissionPolicy"
    );
    for doc in &with_policies {
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
        ("BERTH_TENANT_ROLE", "berth-tenant"),
        ("BERTH_HTTP_ADDR", "0.0.0.0:8080"),
        ("BERTH_LOG_FORMAT", "json"),
        ("BERTH_CONCURRENCY", "8"),
        ("BERTH_CONTROLLERS", "customer,database,scheduler,webhooks"),
        ("BERTH_POSTGRES_IMAGE", "ghcr.io/cloudnative-pg/postgresql:17"),
        ("BERTH_PGBOUNCER_IMAGE", "ghcr.io/cloudnative-pg/pgbouncer:1.24.1"),
        ("BERTH_POSTGRES_BIN_DIR", ""),
        ("BERTH_SHUTDOWN_SECONDS", "45"),
        // Webhook targets inside the cluster or in clear are refused unless the values allow them.
        ("BERTH_WEBHOOKS_ALLOW_HTTP", "false"),
        ("BERTH_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "false"),
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
    assert_eq!(
        strings(&rule["resources"]),
        ["databases", "schedulers", "webhooks"]
    );
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
        2,
        "berth's own ClusterRoles (cluster-wide and tenant) stay"
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

/// Exactly two binds: the cluster-wide role may bind only the tenant role (the RoleBinding berth gives
/// itself in each tenant namespace), the tenant role only `admin` (the tenant's admins, in that namespace).
#[test]
fn berth_binds_only_its_tenant_role_and_admin_and_nothing_escalates() {
    for sets in VARIANTS {
        let docs = render(sets);
        let mut binds: Vec<(String, Vec<&str>)> = rules(&docs)
            .into_iter()
            .filter(|(_, r)| strings(&r["verbs"]).contains(&"bind"))
            .map(|(role, bind)| {
                assert_eq!(
                    strings(&bind["apiGroups"]),
                    ["rbac.authorization.k8s.io"],
                    "{role}"
                );
                assert_eq!(strings(&bind["resources"]), ["clusterroles"], "{role}");
                assert_eq!(strings(&bind["verbs"]), ["bind"], "{role}");
                (role, strings(&bind["resourceNames"]))
            })
            .collect();
        binds.sort();
        assert_eq!(
            binds,
            [
                ("ClusterRole/berth".to_owned(), vec!["berth-tenant"]),
                ("ClusterRole/berth-tenant".to_owned(), vec!["admin"]),
            ],
            "{sets:?}: exactly two rules bind, each one role"
        );
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

    // The names follow the release's full name, and the operator is told which role to bind.
    let docs = render(&["fullnameOverride=harbour-ops"]);
    let tenant = named(&docs, "ClusterRole", "harbour-ops-tenant");
    assert!(!tenant["rules"].as_sequence().unwrap().is_empty());
    let bind = rules(&docs)
        .into_iter()
        .find(|(role, r)| role == "ClusterRole/harbour-ops" && strings(&r["verbs"]) == ["bind"])
        .expect("the cluster-wide role binds the tenant role");
    assert_eq!(strings(&bind.1["resourceNames"]), ["harbour-ops-tenant"]);
    let env = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"];
    let role = env
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"].as_str() == Some("BERTH_TENANT_ROLE"))
        .expect("BERTH_TENANT_ROLE");
    assert_eq!(role["value"].as_str(), Some("harbour-ops-tenant"));
}

/// Write verbs: what changes an object (`get`, `list`, `watch` and `bind` do not).
const WRITES: [&str; 5] = ["create", "patch", "update", "delete", "deletecollection"];

/// `(apiGroup, resource, verbs)` of every rule of `role`, one entry per group and resource.
fn grants(role: &Value) -> Vec<(String, String, Vec<String>)> {
    let mut out = Vec::new();
    for rule in role["rules"].as_sequence().unwrap() {
        let verbs: Vec<String> = strings(&rule["verbs"]).into_iter().map(str::to_owned).collect();
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                out.push((group.to_owned(), resource.to_owned(), verbs.clone()));
            }
        }
    }
    out
}

/// The cluster-wide ClusterRole reads no Secret anywhere and writes, of namespaced kinds, only the
/// RoleBinding berth creates in a new tenant namespace and Events; everything berth writes in a tenant lives
/// in the tenant ClusterRole, which only berth binds, per tenant namespace, and never the chart.
#[test]
fn cluster_wide_berth_reads_no_secret_and_writes_only_what_a_tenant_role_cannot_hold() {
    // The cluster-wide writes, each with the verbs it may use; anything else written is a regression.
    let allowed: [(&str, &str, &[&str]); 7] = [
        ("berth.dev", "customers", &["patch"]),
        ("berth.dev", "customers/status", &["patch"]),
        ("berth.dev", "customers/finalizers", &["update"]),
        ("", "namespaces", &["create", "patch", "delete"]),
        ("", "persistentvolumes", &["patch"]),
        // Created in a namespace that did not exist a moment ago; patch and delete are the tenant role's.
        ("rbac.authorization.k8s.io", "rolebindings", &["create"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ];
    for sets in VARIANTS {
        let docs = render(sets);
        let cluster = named(&docs, "ClusterRole", "berth");
        for (group, resource, verbs) in grants(cluster) {
            assert!(
                !resource.starts_with("secrets"),
                "{sets:?}: the cluster-wide role reaches Secrets: {verbs:?}"
            );
            let writes: Vec<&String> = verbs.iter().filter(|v| WRITES.contains(&v.as_str())).collect();
            if writes.is_empty() {
                continue;
            }
            let Some((_, _, may)) = allowed.iter().find(|(g, r, _)| *g == group && *r == resource) else {
                panic!("{sets:?}: the cluster-wide role writes {group}/{resource} ({writes:?})")
            };
            for verb in writes {
                assert!(
                    may.contains(&verb.as_str()),
                    "{sets:?}: the cluster-wide role may {verb} {group}/{resource}"
                );
            }
        }

        let tenant = named(&docs, "ClusterRole", "berth-tenant");
        let tenant_grants = grants(tenant);
        let secrets = tenant_grants
            .iter()
            .find(|(g, r, _)| g.is_empty() && r == "secrets")
            .expect("the tenant role holds berth's Secrets");
        for verb in ["get", "list", "watch", "create", "patch"] {
            assert!(
                secrets.2.iter().any(|v| v == verb),
                "{sets:?}: tenant secrets {verb}"
            );
        }
        for (group, resource, _) in &tenant_grants {
            assert!(
                !matches!(
                    resource.as_str(),
                    "namespaces" | "persistentvolumes" | "customers" | "clusterrolebindings"
                ),
                "{sets:?}: the tenant role, bound in a namespace, cannot grant cluster-scoped {group}/{resource}"
            );
        }
        for binding in docs
            .iter()
            .filter(|d| matches!(kind(d), "ClusterRoleBinding" | "RoleBinding"))
        {
            assert_ne!(
                binding["roleRef"]["name"].as_str(),
                Some("berth-tenant"),
                "{sets:?}: the chart binds the tenant role ({}); only berth does, per tenant namespace",
                kind(binding)
            );
        }
        let crb = one(&docs, "ClusterRoleBinding");
        assert_eq!(crb["roleRef"]["name"].as_str(), Some("berth"));
    }
}

/// Whether `policy`'s resource rules match `resource` of `group` for `operation`.
fn policy_matches(policy: &Value, group: &str, resource: &str, operation: &str) -> bool {
    policy["spec"]["matchConstraints"]["resourceRules"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|r| {
            strings(&r["apiGroups"]).contains(&group)
                && strings(&r["resources"]).contains(&resource)
                && strings(&r["operations"]).contains(&operation)
        })
}

/// The CEL of `policy`'s match conditions, one string each.
fn conditions(policy: &Value) -> Vec<&str> {
    policy["spec"]["matchConditions"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|c| c["expression"].as_str().unwrap())
        .collect()
}

/// Two ValidatingAdmissionPolicies, each bound to deny: one keeps berth's namespaced writes in its tenant
/// namespaces (RBAC grants the RoleBinding create and the namespace patch cluster-wide), one reserves berth's
/// labels to berth. Both fail closed but never concern the cluster's own components or system:masters.
/// Rendered only where the API server serves them, and not when turned off.
#[test]
fn admission_policies_confine_berth_and_reserve_its_labels_unless_turned_off() {
    let docs = render_on(&[VAP_API], &[]);
    let berth = "system:serviceaccount:berth-system:berth";
    for name in ["berth-confine-operator", "berth-reserve-labels"] {
        let policy = named(&docs, "ValidatingAdmissionPolicy", name);
        assert_eq!(
            policy["apiVersion"].as_str(),
            Some("admissionregistration.k8s.io/v1")
        );
        assert!(policy["metadata"]["namespace"].is_null(), "cluster-scoped");
        let spec = &policy["spec"];
        assert_eq!(
            spec["failurePolicy"].as_str(),
            Some("Fail"),
            "{name} fails closed"
        );
        let validations = spec["validations"].as_sequence().unwrap();
        assert!(!validations.is_empty(), "{name}");
        for v in validations {
            assert!(v["expression"].is_string(), "{name}: {v:?}");
            let message = v["message"].as_str().unwrap_or_default();
            assert!(
                !message.is_empty() && !message.contains('\n'),
                "{name}: a one-line message: {message:?}"
            );
        }
        let binding = named(&docs, "ValidatingAdmissionPolicyBinding", name);
        assert_eq!(binding["spec"]["policyName"].as_str(), Some(name));
        assert_eq!(strings(&binding["spec"]["validationActions"]), ["Deny"]);
        assert!(
            binding["spec"]["matchResources"].is_null(),
            "{name}: the binding narrows nothing"
        );
    }

    // confine-operator: berth's requests and only those; every namespaced kind berth writes, plus the
    // namespaces; not Events (berth's land in `default`) nor Leases (the release namespace's).
    let confine = named(&docs, "ValidatingAdmissionPolicy", "berth-confine-operator");
    assert_eq!(
        conditions(confine),
        [format!("request.userInfo.username == '{berth}'")],
        "only berth's requests"
    );
    let roles = render(&[]);
    let cluster_writes = [
        ("rbac.authorization.k8s.io".to_owned(), "rolebindings".to_owned()),
        (String::new(), "namespaces".to_owned()),
    ];
    let tenant_writes = grants(named(&roles, "ClusterRole", "berth-tenant"))
        .into_iter()
        .filter(|(_, r, verbs)| {
            !r.ends_with("/finalizers") && verbs.iter().any(|v| WRITES.contains(&v.as_str()))
        })
        .map(|(g, r, _)| (g, r));
    for (group, resource) in tenant_writes.chain(cluster_writes) {
        for op in ["CREATE", "UPDATE", "DELETE"] {
            assert!(
                policy_matches(confine, &group, &resource, op),
                "confine-operator misses {op} {group}/{resource}, which berth may write"
            );
        }
    }
    for (group, resource) in [
        ("events.k8s.io", "events"),
        ("", "events"),
        ("coordination.k8s.io", "leases"),
    ] {
        assert!(
            !policy_matches(confine, group, resource, "CREATE"),
            "confine-operator must not refuse berth's {group}/{resource}"
        );
    }

    // reserve-labels: everyone but berth and the cluster's own components, on every kind berth watches by
    // label, on CREATE and UPDATE (a deletion sets no label).
    let reserve = named(&docs, "ValidatingAdmissionPolicy", "berth-reserve-labels");
    let excluded = conditions(reserve);
    for exclusion in [
        format!("request.userInfo.username != '{berth}'"),
        "!request.userInfo.username.startsWith('system:serviceaccount:kube-system:')".to_owned(),
        "!request.userInfo.username.startsWith('system:node:')".to_owned(),
    ] {
        assert!(
            excluded.contains(&exclusion.as_str()),
            "reserve-labels lacks the condition {exclusion}: {excluded:?}"
        );
    }
    for needle in [
        "'system:masters' in request.userInfo.groups",
        "'system:kube-controller-manager'",
        "'system:kube-scheduler'",
        "'system:apiserver'",
    ] {
        assert!(
            excluded.iter().any(|c| c.contains(needle)),
            "reserve-labels does not exclude {needle}: {excluded:?}"
        );
    }
    let watched = grants(named(&roles, "ClusterRole", "berth"))
        .into_iter()
        .chain(grants(named(&roles, "ClusterRole", "berth-tenant")))
        .filter(|(g, _, verbs)| g != "berth.dev" && verbs.iter().any(|v| v == "watch"));
    for (group, resource, _) in watched {
        for op in ["CREATE", "UPDATE"] {
            assert!(
                policy_matches(reserve, &group, &resource, op),
                "reserve-labels misses {op} {group}/{resource}, which berth watches by label"
            );
        }
    }
    assert!(
        reserve["spec"]["matchConstraints"]["resourceRules"]
            .as_sequence()
            .unwrap()
            .iter()
            .all(|r| !strings(&r["operations"]).contains(&"DELETE")),
        "a deletion carries no new labels"
    );

    let renamed = render_on(&[VAP_API], &["serviceAccount.name=ops-robot"]);
    let robot = "system:serviceaccount:berth-system:ops-robot";
    let confine = named(&renamed, "ValidatingAdmissionPolicy", "berth-confine-operator");
    assert_eq!(
        conditions(confine),
        [format!("request.userInfo.username == '{robot}'")]
    );
    let reserve = named(&renamed, "ValidatingAdmissionPolicy", "berth-reserve-labels");
    assert!(conditions(reserve).contains(&format!("request.userInfo.username != '{robot}'").as_str()));

    let vap = |docs: &[Value]| {
        docs.iter()
            .filter(|d| kind(d).starts_with("ValidatingAdmissionPolicy"))
            .count()
    };
    assert_eq!(vap(&docs), 4);
    assert_eq!(
        vap(&render_on(&[VAP_API], &["admissionPolicy.enabled=false"])),
        0,
        "admissionPolicy.enabled=false renders none"
    );
    assert_eq!(
        vap(&render(&[])),
        0,
        "none where the API server does not serve admissionregistration.k8s.io/v1 policies"
    );
}

#[test]
fn alerts_and_the_dashboard_are_off_by_default_and_each_alert_links_its_runbook() {
    let off = render(&[]);
    assert!(
        !off.iter()
            .any(|d| matches!(kind(d), "PrometheusRule" | "ConfigMap")),
        "rendered without being asked for"
    );
    let docs = render(&[
        "serviceMonitor.enabled=true",
        "prometheusRule.enabled=true",
        "grafanaDashboard.enabled=true",
    ]);
    // The rules group by berth's own `namespace` label, which only honorLabels keeps.
    let monitor = one(&docs, "ServiceMonitor");
    assert_eq!(monitor["spec"]["endpoints"][0]["honorLabels"], Value::Bool(true));

    let runbooks = std::fs::read_to_string(berth_e2e::repo().join("docs/runbooks.md")).unwrap();
    let rule = one(&docs, "PrometheusRule");
    let mut alerts: Vec<&str> = Vec::new();
    for r in rule["spec"]["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
    {
        let Some(alert) = r["alert"].as_str() else {
            continue;
        };
        alerts.push(alert);
        let annotations = &r["annotations"];
        for key in ["summary", "description"] {
            assert!(
                annotations[key].as_str().is_some_and(|a| !a.is_empty()),
                "{alert}: {key}"
            );
        }
        assert!(r["labels"]["severity"].as_str().is_some(), "{alert}: severity");
        let url = annotations["runbook_url"].as_str().unwrap();
        let anchor = url
            .strip_prefix("https://github.com/berth-dev/berth/blob/main/docs/runbooks.md#")
            .unwrap_or_else(|| panic!("{alert}: {url}"));
        assert_eq!(anchor, alert.to_lowercase(), "{alert}: {url}");
        assert!(
            runbooks.lines().any(|l| l == format!("## {alert}")),
            "docs/runbooks.md has no section ## {alert}"
        );
    }
    alerts.dedup();
    assert_eq!(
        alerts,
        [
            "BerthTenantNotReady",
            "BerthReconcileErrors",
            "BerthSchedulerQueueGrowing",
            "BerthWorkflowFailing",
            "BerthNoLeader",
            "BerthMetricsAbsent",
            "BerthAPIThrottled",
        ]
    );

    let dashboard = named(&docs, "ConfigMap", "berth-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = dashboard["data"]["berth.json"].as_str().unwrap();
    let file = std::fs::read_to_string(chart().join("dashboards/berth.json")).unwrap();
    assert_eq!(
        json.trim_end(),
        file.trim_end(),
        "the ConfigMap holds the file as it is"
    );
    let parsed: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(parsed["uid"], "berth-operator");
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
        (
            "admissionPolicy.enabled=yes",
            "at '/admissionPolicy/enabled': got string, want boolean",
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
