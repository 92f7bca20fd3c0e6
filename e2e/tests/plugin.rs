//! `kubectl berth` as a user runs it: through kubectl's plugin lookup (the `kubectl-berth` binary on PATH),
//! with the admin kubeconfig or impersonating a tenant admin. The tree of a healthy tenant and of one whose
//! quota blocks its pool, the status numbers against the objects, a manual run under `workers`, suspend
//! and resume, and the messages for an unknown Customer and for missing RBAC.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::process::Output;
use std::time::Duration;

use berth_api::{Customer, Database, TRIGGER_LABEL, TRIGGER_MANUAL};
use berth_e2e::{apply_yaml, customer_ready, eventually, kubectl_berth, setup, unique, wait_for};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, ResourceQuota, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};

const READY_WITHIN: Duration = Duration::from_secs(180);
const SHORT: Duration = Duration::from_secs(60);

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

async fn customer(c: &Client, spec: &Value) -> String {
    let name = unique("plugin");
    let body = json!({"apiVersion": "berth.dev/v1alpha1", "kind": "Customer", "metadata": {"name": name}, "spec": spec});
    apply_yaml(
        &Api::<Customer>::all(c.clone()),
        &serde_yaml::to_string(&body).unwrap(),
    )
    .await
    .unwrap();
    name
}

/// A Customer with this spec, once it is Ready.
async fn ready_customer(c: &Client, spec: &Value) -> String {
    let name = customer(c, spec).await;
    let customers = Api::<Customer>::all(c.clone());
    wait_for(&customers, &name, READY_WITHIN, "Ready", customer_ready).await;
    name
}

async fn delete(c: &Client, name: &str) {
    let _ = Api::<Customer>::all(c.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn the_tree_of_a_healthy_tenant_shows_what_berth_made_and_no_secret_value() {
    let c = setup().await;
    let name = ready_customer(
        &c,
        &json!({"deletionPolicy": "Delete", "features": {"database": {"enabled": true, "storage": "1Gi"}, "scheduler": {"enabled": true, "workers": 2}}}),
    )
    .await;

    let out = kubectl_berth(&["tree", &name]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("READY") && lines[0].contains("AGE"),
        "{stdout}"
    );
    assert!(lines[1].starts_with(&format!("Customer/{name} ")), "{stdout}");
    assert!(lines[1].contains(" True "), "the Customer is Ready:\n{stdout}");
    for child in [
        format!("Namespace/{name}"),
        "ResourceQuota/tenant-quota".to_owned(),
        "LimitRange/tenant-defaults".to_owned(),
        "NetworkPolicy/default-deny-ingress".to_owned(),
        "Database/db".to_owned(),
        "StatefulSet/db-postgres".to_owned(),
        "PersistentVolumeClaim/data-db-postgres-0".to_owned(),
        "Deployment/db-pgbouncer".to_owned(),
        "Pod/db-postgres-0".to_owned(),
        "Secret/db-credentials".to_owned(),
        "Secret/db-connection".to_owned(),
        "Scheduler/workflows".to_owned(),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("─{child} "))),
            "{child} missing from the tree:\n{stdout}"
        );
    }
    assert!(
        !stdout.contains("message:"),
        "a healthy tenant has no cause:\n{stdout}"
    );
    assert!(!stdout.contains('\x1b'), "no colour when not on a terminal");

    // Secrets by name only: no value, in text or JSON.
    let secret = Api::<Secret>::namespaced(c.clone(), &name)
        .get("db-credentials")
        .await
        .unwrap();
    let json_out = kubectl_berth(&["tree", &name, "-o", "json"]);
    let (json_text, _) = text(&json_out);
    let tree: Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(tree["kind"], "Customer");
    assert_eq!(tree["ready"], "True");
    let passwords: Vec<String> = secret
        .data
        .unwrap()
        .into_iter()
        .filter(|(key, _)| key.to_ascii_lowercase().contains("password"))
        .map(|(_, v)| String::from_utf8_lossy(&v.0).into_owned())
        .collect();
    assert!(!passwords.is_empty(), "the credentials hold passwords");
    for p in &passwords {
        assert!(!stdout.contains(p.as_str()), "a password is in the tree");
        assert!(!json_text.contains(p.as_str()), "a password is in the JSON");
    }
    delete(&c, &name).await;
}

#[tokio::test]
async fn a_quota_that_blocks_the_pool_is_named_in_full_and_status_shows_the_real_numbers() {
    let c = setup().await;
    // The server's pod takes the only pod the quota allows: the pool's pods are refused.
    let name = customer(
        &c,
        &json!({"deletionPolicy": "Delete", "quota": {"pods": 1}, "features": {"database": {"enabled": true, "storage": "1Gi"}}}),
    )
    .await;
    let replica_sets: Api<ReplicaSet> = Api::namespaced(c.clone(), &name);
    eventually(
        READY_WITHIN,
        "the pool's ReplicaSet to fail on the quota",
        || async {
            let list = replica_sets.list(&ListParams::default()).await.ok()?;
            list.items.into_iter().find(|rs| {
                rs.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .into_iter()
                    .flatten()
                    .any(|c| {
                        c.type_ == "ReplicaFailure"
                            && c.message.as_deref().is_some_and(|m| m.contains("exceeded quota"))
                    })
            })
        },
    )
    .await;

    let out = kubectl_berth(&["tree", &name]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let cause = stdout
        .lines()
        .position(|l| l.contains("─ReplicaSet/db-pgbouncer-") && l.contains(" False "))
        .unwrap_or_else(|| panic!("the failing ReplicaSet is not in the tree:\n{stdout}"));
    let message = stdout.lines().nth(cause + 1).unwrap();
    // The whole message, as the ReplicaSet controller wrote it, to its last words.
    assert!(
        message
            .trim_start()
            .trim_start_matches(['│', ' '])
            .starts_with("message: pods \"db-pgbouncer-"),
        "{stdout}"
    );
    assert!(
        message.contains("is forbidden: exceeded quota: tenant-quota"),
        "{stdout}"
    );
    assert!(
        message.trim_end().ends_with("limited: pods=1"),
        "the message is cut:\n{stdout}"
    );
    // The Deployment fails for the same reason, but its ReplicaSet is deeper: the message is told once, there.
    let deployment = stdout
        .lines()
        .position(|l| l.contains("─Deployment/db-pgbouncer "))
        .unwrap();
    assert!(
        !stdout.lines().nth(deployment + 1).unwrap().contains("message:"),
        "{stdout}"
    );
    assert!(
        stdout.lines().nth(1).unwrap().contains(" False "),
        "the Customer is not Ready:\n{stdout}"
    );

    let out = kubectl_berth(&["status", &name]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let quota = Api::<ResourceQuota>::namespaced(c.clone(), &name)
        .get("tenant-quota")
        .await
        .unwrap();
    let status = quota.status.unwrap();
    for (resource, hard) in status.hard.unwrap() {
        let used = status
            .used
            .as_ref()
            .and_then(|u| u.get(&resource))
            .map_or("0".to_owned(), |q| q.0.clone());
        let row: Vec<&str> = vec![resource.as_str(), used.as_str(), hard.0.as_str()];
        assert!(
            stdout
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>() == row),
            "quota row {row:?} missing:\n{stdout}"
        );
    }
    // The pool's numbers move while its pods come and go: the same numbers as the Database's status, read
    // just before.
    let dbs = Api::<Database>::namespaced(c.clone(), &name);
    eventually(SHORT, "status to show the Database's pool numbers", || async {
        let db = dbs.get("db").await.ok()?;
        let ready = db.status.as_ref().and_then(|s| s.ready_replicas).unwrap_or(0);
        let (out, _) = text(&kubectl_berth(&["status", &name]));
        out.contains(&format!("{ready}/{} pgbouncer pods ready", db.spec.pool.replicas))
            .then_some(())
    })
    .await;
    // The Database tells why its pods are not there, and status shows it. The server and the pool race for
    // the one pod the quota allows: whichever lost is the one named (a StatefulSet's refusal comes from the
    // StatefulSet controller's event, a Deployment's from its ReplicaFailure condition).
    let server_won = Api::<Pod>::namespaced(c.clone(), &name)
        .get_opt("db-postgres-0")
        .await
        .unwrap()
        .is_some();
    let refused = if server_won {
        "pgbouncer pods cannot be created: exceeded quota: tenant-quota, requested: pods=1"
    } else {
        "the PostgreSQL pod cannot be created: exceeded quota: tenant-quota, requested: pods=1"
    };
    eventually(SHORT, "status to say why the pods are missing", || async {
        let (out, _) = text(&kubectl_berth(&["status", &name]));
        out.contains(refused).then_some(())
    })
    .await;
    assert!(stdout.contains("1Gi requested"), "{stdout}");
    assert!(stdout.contains("Secret db-connection"), "{stdout}");

    // The overview has the tenant on a line of its own.
    let out = kubectl_berth(&["status"]);
    let (stdout, _) = text(&out);
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing:\n{stdout}"));
    assert_eq!(line.split_whitespace().nth(2), Some("False"), "{line}");
    delete(&c, &name).await;
}

#[tokio::test]
async fn run_starts_a_manual_run_and_queues_the_next_while_the_worker_is_busy() {
    let c = setup().await;
    let workflow =
        |n: &str| json!({"name": n, "schedule": "0 0 1 1 *", "image": "busybox", "command": ["true"]});
    let name = ready_customer(
        &c,
        &json!({"deletionPolicy": "Delete", "features": {"scheduler": {"enabled": true, "workers": 1, "workflows": [workflow("first"), workflow("second")]}}}),
    )
    .await;
    // kwok keeps a run's pod running this long, so the one worker stays busy.
    let schedulers: Api<berth_api::Scheduler> = Api::namespaced(c.clone(), &name);
    let hold = json!({"metadata": {"annotations": {"pod.berth.dev/kwok-complete-after": "600s"}}});
    schedulers
        .patch("workflows", &PatchParams::default(), &Patch::Merge(&hold))
        .await
        .unwrap();

    let out = kubectl_berth(&["run", &name, "first"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("run first-") && stdout.contains(" started."),
        "{stdout}"
    );
    let out = kubectl_berth(&["run", &name, "second"]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("is queued: all 1 workers of the Scheduler are busy"),
        "{stdout}"
    );

    let jobs = Api::<Job>::namespaced(c.clone(), &name)
        .list(&ListParams::default().labels(&format!("{TRIGGER_LABEL}={TRIGGER_MANUAL}")))
        .await
        .unwrap();
    assert_eq!(jobs.items.len(), 2, "one run per request");
    let suspended: Vec<bool> = jobs
        .items
        .iter()
        .map(|j| j.spec.as_ref().unwrap().suspend == Some(true))
        .collect();
    assert_eq!(
        suspended.iter().filter(|s| **s).count(),
        1,
        "one runs, one waits for the worker"
    );

    let out = kubectl_berth(&["run", &name, "third"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("\"third\" is not a workflow of Customer") && stderr.contains("first, second"),
        "{stderr}"
    );
    delete(&c, &name).await;
}

#[tokio::test]
async fn suspend_and_resume_reach_the_database() {
    let c = setup().await;
    let name = ready_customer(
        &c,
        &json!({"deletionPolicy": "Delete", "features": {"database": {"enabled": true, "storage": "1Gi"}}}),
    )
    .await;
    let dbs: Api<Database> = Api::namespaced(c.clone(), &name);
    let out = kubectl_berth(&["suspend", &name]);
    assert!(out.status.success(), "{:?}", text(&out));
    wait_for(&dbs, "db", SHORT, "suspended", |d| d.spec.suspend).await;
    let out = kubectl_berth(&["resume", &name]);
    assert!(out.status.success(), "{:?}", text(&out));
    wait_for(&dbs, "db", SHORT, "resumed", |d| !d.spec.suspend).await;
    delete(&c, &name).await;
}

#[tokio::test]
async fn an_unknown_customer_and_missing_rbac_get_clear_messages() {
    let c = setup().await;
    let out = kubectl_berth(&["tree", "no-such-tenant"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert_eq!(
        stderr.trim(),
        "error: Customer \"no-such-tenant\" not found; `kubectl get customers` lists the tenants"
    );

    // A cluster that is not there: the kubeconfig's address, and what to check.
    let dir = tempfile::tempdir().unwrap();
    let nowhere = dir.path().join("kubeconfig");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    std::fs::write(
        &nowhere,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: gone, cluster: {{server: 'https://127.0.0.1:{port}', insecure-skip-tls-verify: true}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: gone, context: {{cluster: gone, user: u}}}}]\ncurrent-context: gone\n"
        ),
    )
    .unwrap();
    let out = kubectl_berth(&["--kubeconfig", nowhere.to_str().unwrap(), "status", "acme"]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.starts_with(&format!(
            "error: cannot reach the cluster at https://127.0.0.1:{port}/"
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("check that it is running and that KUBECONFIG or --context point at it"),
        "{stderr}"
    );

    // alice administers the tenant's namespace and nothing else.
    let alice = unique("alice");
    let name = ready_customer(
        &c,
        &json!({"deletionPolicy": "Delete", "admins": [{"kind": "User", "name": alice}], "features": {"database": {"enabled": true, "storage": "1Gi"}}}),
    )
    .await;
    let out = kubectl_berth(&["--as", &alice, "tree", &name]);
    let (stdout, stderr) = text(&out);
    assert!(!out.status.success(), "a partial view fails the exit code");
    assert!(
        stderr.contains(&format!(
            "forbidden: you may not get customers.berth.dev \"{name}\" (cluster-scoped); ask for a role that grants `get` on customers.berth.dev"
        )),
        "{stderr}"
    );
    // Her own Namespace she may read: a RoleBinding in a namespace reaches that Namespace object too.
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("└─Namespace/{name} "))),
        "{stdout}"
    );
    // What alice may read is still shown.
    assert!(stdout.contains("─Database/db "), "{stdout}");
    assert!(stdout.contains("─Deployment/db-pgbouncer "), "{stdout}");

    let out = kubectl_berth(&["--as", &alice, "suspend", &name]);
    let (_, stderr) = text(&out);
    assert!(!out.status.success());
    assert!(
        stderr.contains("you may not patch customers.berth.dev"),
        "{stderr}"
    );
    delete(&c, &name).await;
}
