//! Faults injected into the local control plane and into berth itself, each followed by a check that
//! nothing was lost, duplicated or written by the wrong process:
//! - a leader frozen (SIGSTOP) past its Lease writes nothing once a standby leads, proven by the API
//!   server's audit log, and goes back to standby instead of exiting;
//! - a 30 s API server outage: the leader stays up and leading, and applies an edit made afterwards;
//! - etcd restarted and its history compacted (every watch must list again): berth converges;
//! - the API server throttles berth with 429 (a priority level of one share): berth converges without
//!   an error storm;
//! - SIGKILL in the middle of a fan-out of 50 tenants: afterwards every child exists once, with the UID
//!   and the password it had before.
//!
//! They stop components of `e2e/cluster.sh`'s control plane, so they run one at a time and only there.
//! Races and deletions are tested beside their features (two Customers naming one namespace, two
//! Schedulers with one workflow name, `Retain`, `helm uninstall`).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use berth_api::{Customer, Database, Scheduler, connection_secret};
use berth_e2e::metrics::Scrape;
use berth_e2e::operator::{LEASE_NAMESPACE, external};
use berth_e2e::{
    Operator, apply_yaml, delete_customers, eventually, kubeconfig, prepare, repo, scheduler_customer,
    wait_customer_ready,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

/// The tests' lease duration (see `Operator::start`).
const LEASE: Duration = Duration::from_secs(6);
const READY_WITHIN: Duration = Duration::from_secs(120);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The control plane to themselves, and only where `e2e/cluster.sh` runs it (its components can be
/// stopped, and its API server keeps an audit log).
async fn faults() -> Option<(tokio::sync::MutexGuard<'static, ()>, Client)> {
    if external() {
        eprintln!("berth runs in the cluster; these tests start their own operators");
        return None;
    }
    let ours = cluster(&["kubeconfig"]);
    if kubeconfig() != std::path::Path::new(ours.trim()) || !audit_log().exists() {
        eprintln!("the cluster is not e2e/cluster.sh's: its components cannot be stopped here");
        return None;
    }
    let serial = SERIAL.lock().await;
    let c = prepare().await;
    // A test that failed left its operators killed, their Lease held until it expires (90 s for the outage
    // test's); nobody holds it now, so it goes.
    let _ = Api::<Lease>::namespaced(c.clone(), LEASE_NAMESPACE)
        .delete("berth-leader", &DeleteParams::default())
        .await;
    Some((serial, c))
}

/// Runs `e2e/cluster.sh ARGS` and returns what it printed.
fn cluster(args: &[&str]) -> String {
    let out = std::process::Command::new(repo().join("e2e/cluster.sh"))
        .args(args)
        .output()
        .expect("run e2e/cluster.sh");
    assert!(
        out.status.success(),
        "e2e/cluster.sh {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn audit_log() -> PathBuf {
    PathBuf::from(cluster(&["audit"]).trim())
}

async fn standing_by(op: &Operator) {
    eventually(Duration::from_secs(30), "the standby to be ready", || async {
        op.get("/readyz").filter(|(code, _)| *code == 200).map(drop)
    })
    .await;
}

fn running(op: &Operator) -> bool {
    op.wait(Duration::ZERO).is_none()
}

fn identity(op: &Operator) -> String {
    format!("{}-{}", op.name, op.port)
}

/// Sets a tenant's workers and waits until its Scheduler shows them: an edit travelling through berth.
async fn edit_reaches_the_scheduler(c: &Client, name: &str, workers: i64, within: Duration) {
    let patch = serde_json::json!({"spec": {"features": {"scheduler": {"workers": workers}}}});
    Api::<Customer>::all(c.clone())
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let schedulers: Api<Scheduler> = Api::namespaced(c.clone(), name);
    let what = format!("the Scheduler of {name} to have {workers} workers");
    eventually(within, &what, || async {
        let s = schedulers.list(&ListParams::default()).await.ok()?;
        s.items
            .iter()
            .any(|s| serde_json::to_value(&s.spec).is_ok_and(|v| v["workers"] == workers))
            .then_some(())
    })
    .await;
}

/// One write in the API server's audit log.
struct Write {
    verb: String,
    uri: String,
    at: Timestamp,
}

/// Every write the audit log records from the process named `identity` (its User-Agent names it).
fn writes_of(identity: &str) -> Vec<Write> {
    let agent = format!("({identity})");
    let text = std::fs::read_to_string(audit_log()).expect("read the audit log");
    text.lines()
        .filter(|l| l.contains(&agent))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["userAgent"].as_str().is_some_and(|a| a.ends_with(&agent)))
        .map(|e| Write {
            verb: e["verb"].as_str().unwrap_or_default().to_owned(),
            uri: e["requestURI"].as_str().unwrap_or_default().to_owned(),
            at: e["requestReceivedTimestamp"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .expect("a request time"),
        })
        .collect()
}

#[tokio::test]
async fn a_leader_frozen_past_its_lease_writes_nothing_once_a_standby_leads() {
    let Some((_serial, c)) = faults().await else {
        return;
    };
    let a = Operator::start("frozen-a", &[]);
    a.leading(Duration::from_secs(30)).await;
    let b = Operator::start("frozen-b", &[]);
    standing_by(&b).await;

    // Frozen in the middle of work: a fan-out has reconciles, requests and retries in flight.
    let mut names = vec![scheduler_customer(&c, "frozen", false).await];
    wait_customer_ready(&c, &names[0], READY_WITHIN).await;
    for _ in 0..12 {
        names.push(scheduler_customer(&c, "frozen", false).await);
    }
    eventually(Duration::from_secs(30), "the fan-out to start", || async {
        let writes = a.metric("berth_api_writes_total", &[("controller", "customer")]);
        (writes.unwrap_or(0.0) > 20.0).then_some(())
    })
    .await;
    a.signal("STOP");
    // And more work it will find queued when it wakes: watch events of an edit of its first tenant.
    let patch = serde_json::json!({"spec": {"features": {"scheduler": {"workers": 2}}}});
    Api::<Customer>::all(c.clone())
        .patch(&names[0], &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    b.leading(LEASE * 4).await;
    a.signal("CONT");

    let what = format!("the woken leader to step down; its log:\n{}", a.log_tail());
    eventually(Duration::from_secs(30), &what, || async {
        a.metric("berth_leader", &[])
            .is_some_and(|v| v < 0.5)
            .then_some(())
    })
    .await;
    assert!(running(&a), "it went back to standby rather than exiting");
    assert!(
        std::fs::read_to_string(&a.log)
            .unwrap()
            .contains("back to standby"),
        "{}",
        a.log_tail()
    );
    for n in &names {
        wait_customer_ready(&c, n, READY_WITHIN).await;
    }

    let lease = Api::<Lease>::namespaced(c.clone(), LEASE_NAMESPACE)
        .get("berth-leader")
        .await
        .unwrap();
    let spec = lease.spec.unwrap();
    assert_eq!(spec.holder_identity, Some(identity(&b)));
    let taken = spec.acquire_time.expect("acquire time").0;
    let writes = writes_of(&identity(&a));
    assert!(
        writes.iter().any(|w| w.at < taken),
        "the audit log shows the first leader's writes before it froze"
    );
    let late: Vec<String> = writes
        .iter()
        .filter(|w| w.at >= taken)
        .map(|w| format!("{} {} {} at {}", w.verb, w.uri, identity(&a), w.at))
        .collect();
    assert!(
        late.is_empty(),
        "written after {} took the Lease at {taken}:\n{}",
        identity(&b),
        late.join("\n")
    );
    drop(b);
    a.stop(Duration::from_secs(25));
    delete_customers(&c, &names).await;
}

#[tokio::test]
async fn a_thirty_second_api_server_outage_keeps_the_leader_leading() {
    let Some((_serial, c)) = faults().await else {
        return;
    };
    // The default timings (90 s Lease); stopped gracefully at the end, which hands the Lease back.
    let a = Operator::start("outage-a", &["--lease-seconds", "90"]);
    a.leading(Duration::from_secs(30)).await;
    let before = scheduler_customer(&c, "outage", false).await;
    wait_customer_ready(&c, &before, READY_WITHIN).await;

    cluster(&["stop", "kube-apiserver"]);
    // The fault itself lasts 30 s: nothing answers meanwhile, so there is no condition to wait on.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(running(&a), "berth exited during the outage:\n{}", a.log_tail());
    cluster(&["start", "kube-apiserver"]);

    // Promptly: once the restarted API server serves again (its RBAC cache warms up, every watch lists
    // anew), not after a resync.
    edit_reaches_the_scheduler(&c, &before, 3, Duration::from_secs(60)).await;
    let after = scheduler_customer(&c, "outage", false).await;
    wait_customer_ready(&c, &after, READY_WITHIN).await;
    assert!(a.is_leader(), "still leading:\n{}", a.log_tail());
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(!log.contains("lost the leader Lease"), "{}", a.log_tail());
    a.stop(Duration::from_secs(25));
    delete_customers(&c, &[before, after]).await;
}

#[tokio::test]
async fn a_restarted_etcd_and_a_compacted_history_converge() {
    let Some((_serial, c)) = faults().await else {
        return;
    };
    let a = Operator::start("etcd-a", &[]);
    a.leading(Duration::from_secs(30)).await;
    let before = scheduler_customer(&c, "etcd", false).await;
    wait_customer_ready(&c, &before, READY_WITHIN).await;

    cluster(&["stop", "etcd"]);
    cluster(&["start", "etcd"]);
    // Every watch resuming from before now gets 410 Gone and must list again.
    cluster(&["compact"]);

    edit_reaches_the_scheduler(&c, &before, 2, Duration::from_secs(60)).await;
    let after = scheduler_customer(&c, "etcd", false).await;
    wait_customer_ready(&c, &after, READY_WITHIN).await;
    assert!(running(&a), "{}", a.log_tail());
    a.stop(Duration::from_secs(25));
    delete_customers(&c, &[before, after]).await;
}

const TINY: &str = "berth-e2e-tiny";
const LEASES: &str = "berth-e2e-leases";

/// Puts the ServiceAccount `berth` on a priority level of one share that rejects what it cannot seat
/// at once (its Leases on the built-in `leader-election` level, as the chart does).
async fn throttle(c: &Client, on: bool) {
    let schemas: Api<FlowSchema> = Api::all(c.clone());
    let levels: Api<PriorityLevelConfiguration> = Api::all(c.clone());
    for n in [TINY, LEASES] {
        let _ = schemas.delete(n, &DeleteParams::default()).await;
    }
    let _ = levels.delete(TINY, &DeleteParams::default()).await;
    if !on {
        return;
    }
    let subject = format!(
        "subjects: [{{kind: ServiceAccount, serviceAccount: {{name: berth, namespace: {LEASE_NAMESPACE}}}}}]"
    );
    let level = format!(
        "apiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: PriorityLevelConfiguration\nmetadata: {{name: {TINY}}}\nspec: {{type: Limited, limited: {{nominalConcurrencyShares: 1, lendablePercent: 0, limitResponse: {{type: Reject}}}}}}\n"
    );
    apply_yaml(&levels, &level).await.unwrap();
    let leases = format!(
        "apiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: FlowSchema\nmetadata: {{name: {LEASES}}}\nspec: {{matchingPrecedence: 90, priorityLevelConfiguration: {{name: leader-election}}, rules: [{{{subject}, resourceRules: [{{verbs: ['*'], apiGroups: [coordination.k8s.io], resources: [leases], namespaces: ['*']}}]}}]}}\n"
    );
    apply_yaml(&schemas, &leases).await.unwrap();
    let rest = format!(
        "apiVersion: flowcontrol.apiserver.k8s.io/v1\nkind: FlowSchema\nmetadata: {{name: {TINY}}}\nspec: {{matchingPrecedence: 91, priorityLevelConfiguration: {{name: {TINY}}}, distinguisherMethod: {{type: ByUser}}, rules: [{{{subject}, resourceRules: [{{verbs: ['*'], apiGroups: ['*'], resources: ['*'], namespaces: ['*'], clusterScope: true}}], nonResourceRules: [{{verbs: ['*'], nonResourceURLs: ['*']}}]}}]}}\n"
    );
    apply_yaml(&schemas, &rest).await.unwrap();
}

async fn rejected(c: &Client) -> f64 {
    let text = c
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .unwrap();
    Scrape::parse(&text).sum(
        "apiserver_flowcontrol_rejected_requests_total",
        &[("priority_level", TINY)],
    )
}

#[tokio::test]
async fn throttled_with_429_berth_converges_without_an_error_storm() {
    let Some((_serial, c)) = faults().await else {
        return;
    };
    if std::env::var_os("BERTH_E2E_OPERATOR_KUBECONFIG").is_none() {
        eprintln!("berth runs as cluster admin here (exempt from flow control); nothing to throttle");
        return;
    }
    throttle(&c, true).await;
    let a = Operator::start("throttled-a", &[]);
    a.leading(Duration::from_secs(30)).await;
    let mut names = Vec::new();
    for _ in 0..15 {
        names.push(scheduler_customer(&c, "throttled", true).await);
    }
    for n in &names {
        wait_customer_ready(&c, n, Duration::from_secs(240)).await;
    }
    let refused = rejected(&c).await;
    assert!(
        refused > 0.0,
        "the API server never answered 429: nothing was tested"
    );
    // Retried below the concurrency limit: a 429 costs a wait, not a failed reconcile each time.
    let errors = a.metric("berth_reconcile_errors_total", &[]).unwrap_or(0.0);
    assert!(
        errors <= names.len() as f64,
        "{errors} failed reconciles for {} tenants and {refused} refusals:\n{}",
        names.len(),
        a.log_tail()
    );
    throttle(&c, false).await;
    a.stop(Duration::from_secs(25));
    delete_customers(&c, &names).await;
}

/// What a tenant's children are before a fault: UIDs by kind and name, and the password.
async fn snapshot(c: &Client, name: &str) -> (BTreeMap<String, String>, Option<BTreeMap<String, String>>) {
    let mut uids = BTreeMap::new();
    let mut note = |kind: &str, uid: Option<String>| {
        if let Some(u) = uid {
            uids.insert(kind.to_owned(), u);
        }
    };
    let ns = Api::<Namespace>::all(c.clone()).get_opt(name).await.unwrap();
    note("Namespace", ns.and_then(|o| o.uid()));
    let dbs = Api::<Database>::namespaced(c.clone(), name);
    let db = dbs.list(&ListParams::default()).await.unwrap().items;
    note("Database", db.first().and_then(ResourceExt::uid));
    let sch = Api::<Scheduler>::namespaced(c.clone(), name);
    let s = sch.list(&ListParams::default()).await.unwrap().items;
    note("Scheduler", s.first().and_then(ResourceExt::uid));
    let secret = match db.first() {
        Some(d) => Api::<Secret>::namespaced(c.clone(), name)
            .get_opt(&connection_secret(&d.name_any()))
            .await
            .unwrap(),
        None => None,
    };
    note("Secret", secret.as_ref().and_then(ResourceExt::uid));
    let password = secret.and_then(|s| s.data).map(|d| {
        d.into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
            .collect()
    });
    (uids, password)
}

#[tokio::test]
async fn sigkill_in_the_middle_of_a_fan_out_of_fifty_tenants_loses_and_duplicates_nothing() {
    let Some((_serial, c)) = faults().await else {
        return;
    };
    let first = Operator::start("killed-a", &[]);
    first.leading(Duration::from_secs(30)).await;
    let mut names = Vec::new();
    for _ in 0..50 {
        names.push(scheduler_customer(&c, "killed", true).await);
    }
    let namespaces: Api<Namespace> = Api::all(c.clone());
    eventually(Duration::from_secs(60), "ten tenants under way", || async {
        let ns = namespaces.list(&ListParams::default()).await.ok()?;
        let started = ns.items.iter().filter(|n| names.contains(&n.name_any())).count();
        (started >= 10).then_some(())
    })
    .await;
    first.signal("KILL");
    let mut before = BTreeMap::new();
    for n in &names {
        before.insert(n.clone(), snapshot(&c, n).await);
    }

    let second = Operator::start("killed-b", &[]);
    for n in &names {
        wait_customer_ready(&c, n, Duration::from_secs(300)).await;
    }
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    let all = events.list(&ListParams::default()).await.unwrap().items;
    for n in &names {
        let (uids, password) = &before[n];
        let (now, now_password) = snapshot(&c, n).await;
        for (kind, uid) in uids {
            assert_eq!(
                now.get(kind),
                Some(uid),
                "{n}: the {kind} made before the kill is kept"
            );
        }
        if password.is_some() {
            assert_eq!(&now_password, password, "{n}: the credentials are unchanged");
        }
        let created = all
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(n.as_str()))
            .filter(|e| e.reason.as_deref() == Some("Created"))
            .count();
        // A kill between the create and its event loses the event, never duplicates the namespace.
        assert!(created <= 1, "{n}: namespace created {created} times");
        let dbs = Api::<Database>::namespaced(c.clone(), n)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(dbs.items.len(), 1, "{n}: one Database");
        let sch = Api::<Scheduler>::namespaced(c.clone(), n)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(sch.items.len(), 1, "{n}: one Scheduler");
    }
    second.stop(Duration::from_secs(25));
    delete_customers(&c, &names).await;
}
