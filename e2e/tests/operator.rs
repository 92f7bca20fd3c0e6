//! The berth process itself: leader election between two replicas, hand-over on SIGKILL and SIGTERM,
//! probes and metrics, graceful shutdown in the middle of a fan-out, and traces reaching a real
//! OpenTelemetry Collector. Every test starts its own operators; they share one Lease, so the tests
//! run one at a time.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use berth_api::{Customer, Database, Scheduler};
use berth_e2e::metrics::Scrape;
use berth_e2e::operator::external;
use berth_e2e::otel::{Collector, collector_binary};
use berth_e2e::{
    Operator, apply_yaml, delete_customers, eventually, eventually_or_explain, prepare, scheduler_customer,
    unique, wait_customer_ready,
};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};

/// The tests' lease duration (see `Operator::start`).
const LEASE: Duration = Duration::from_secs(6);
const READY_WITHIN: Duration = Duration::from_secs(120);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The cluster to themselves: these tests start their own operators, which share one Lease, so they run
/// one at a time and not at all where berth already runs in the cluster.
async fn own_operators() -> Option<(tokio::sync::MutexGuard<'static, ()>, Client)> {
    if external() {
        eprintln!("berth runs in the cluster; this test needs to start its own operators");
        return None;
    }
    let serial = SERIAL.lock().await;
    Some((serial, prepare().await))
}

fn reconciles(op: &Operator) -> f64 {
    op.metric("berth_reconciles_total", &[("controller", "customer")])
        .unwrap_or(0.0)
}

#[tokio::test]
async fn only_the_leader_reconciles_and_a_killed_leader_is_replaced_within_the_lease() {
    let Some((_serial, c)) = own_operators().await else {
        return;
    };
    let a = Operator::start("leader-a", &[]);
    a.leading(Duration::from_secs(30)).await;
    let b = Operator::start("leader-b", &[]);
    eventually(Duration::from_secs(30), "the standby to be ready", || async {
        b.get("/readyz").filter(|(code, _)| *code == 200).map(drop)
    })
    .await;

    let first = scheduler_customer(&c, "lead", false).await;
    wait_customer_ready(&c, &first, READY_WITHIN).await;
    assert!(reconciles(&a) > 0.0, "the leader reconciled");
    assert!(reconciles(&b) < f64::EPSILON, "the standby did not reconcile");
    assert!(!b.is_leader());

    a.signal("KILL");
    let killed = Instant::now();
    b.leading(LEASE * 3).await;
    let takeover = killed.elapsed();
    assert!(
        takeover <= LEASE + Duration::from_secs(4),
        "took over after {takeover:?}, lease is {LEASE:?}"
    );
    let second = scheduler_customer(&c, "lead", false).await;
    wait_customer_ready(&c, &second, READY_WITHIN).await;
    assert!(reconciles(&b) > 0.0, "the new leader reconciles");
    delete_customers(&c, &[first, second]).await;
}

#[tokio::test]
async fn sigterm_releases_the_lease_so_the_standby_takes_over_at_once() {
    let Some((_serial, _c)) = own_operators().await else {
        return;
    };
    let a = Operator::start("term-a", &[]);
    a.leading(Duration::from_secs(30)).await;
    let b = Operator::start("term-b", &[]);
    eventually(Duration::from_secs(30), "the standby to be ready", || async {
        b.get("/readyz").filter(|(code, _)| *code == 200).map(drop)
    })
    .await;

    a.signal("TERM");
    let asked = Instant::now();
    let status = a
        .wait(Duration::from_secs(25))
        .expect("berth exits after SIGTERM");
    assert!(status.success(), "exit status {status:?}; log:\n{}", a.log_tail());
    b.leading(LEASE).await;
    let handover = asked.elapsed();
    assert!(
        handover < LEASE,
        "hand-over took {handover:?}: the lease was not released"
    );
}

#[tokio::test]
async fn probes_tell_alive_from_ready_and_metrics_count_reconciles() {
    let Some((_serial, c)) = own_operators().await else {
        return;
    };

    // An API server that cannot be reached: alive, never ready.
    let nowhere = std::env::temp_dir().join(format!("{}.kubeconfig", unique("nowhere")));
    std::fs::write(
        &nowhere,
        "apiVersion: v1\nkind: Config\nclusters: [{name: x, cluster: {server: 'https://127.0.0.1:9'}}]\nusers: [{name: x, user: {token: t}}]\ncontexts: [{name: x, context: {cluster: x, user: x}}]\ncurrent-context: x\n",
    )
    .unwrap();
    let cut_off = Operator::start_with_env("cut-off", &[], &[("KUBECONFIG", nowhere.to_str().unwrap())]);
    let alive = eventually(Duration::from_secs(20), "/healthz", || async {
        cut_off.get("/healthz")
    })
    .await;
    assert_eq!(alive.0, 200);
    for _ in 0..3 {
        assert_eq!(
            cut_off.get("/readyz").map(|r| r.0),
            Some(503),
            "ready without ever reaching the API server"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    drop(cut_off);

    let op = Operator::start("probes", &[]);
    op.leading(Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(30),
        "/readyz after the caches synced",
        || async { op.get("/readyz").filter(|(code, _)| *code == 200).map(drop) },
    )
    .await;
    let before = reconciles(&op);
    let name = scheduler_customer(&c, "metrics", false).await;
    wait_customer_ready(&c, &name, READY_WITHIN).await;
    let after = reconciles(&op);
    assert!(
        after > before,
        "berth_reconciles_total moved: {before} -> {after}"
    );
    let (_, body) = op.get("/metrics").unwrap();
    for series in [
        "berth_reconcile_duration_seconds_bucket",
        "berth_api_writes_total",
        "berth_build_info",
        "berth_managed_objects",
    ] {
        assert!(body.contains(series), "{series} missing from /metrics:\n{body}");
    }
    delete_customers(&c, &[name]).await;
}

#[tokio::test]
async fn each_kind_is_listed_once_even_when_two_controllers_read_it() {
    let Some((_serial, _c)) = own_operators().await else {
        return;
    };
    let op = Operator::start("shared", &[]);
    op.leading(Duration::from_secs(30)).await;
    eventually(Duration::from_secs(30), "/readyz", || async {
        op.get("/readyz").filter(|(code, _)| *code == 200).map(drop)
    })
    .await;
    // Databases and Schedulers are read by the Customer controller and by their own controllers. (The
    // Scheduler controller also lists one Scheduler's Jobs in its namespace; those lists are not watches.)
    let kinds = [
        "customers",
        "databases",
        "schedulers",
        "namespaces",
        "resourcequotas",
        "limitranges",
        "networkpolicies",
        "rolebindings",
        "configmaps",
        "services",
        "statefulsets",
        "deployments",
        "poddisruptionbudgets",
        "jobs",
        "persistentvolumeclaims",
    ];
    for resource in kinds {
        let lists = op
            .metric(
                "berth_api_requests_total",
                &[("verb", "list"), ("resource", resource), ("scope", "cluster")],
            )
            .unwrap_or(0.0);
        assert!(
            (lists - 1.0).abs() < f64::EPSILON,
            "{resource} listed {lists} times, expected once; /metrics:\n{}",
            op.get("/metrics").map(|r| r.1).unwrap_or_default()
        );
    }
    // Secrets are not listed cluster-wide at all (berth may not: its tenant role grants them per tenant
    // namespace, where a metadata-only watch per namespace with a Database wakes the Database controller).
    let secrets = op
        .metric(
            "berth_api_requests_total",
            &[("verb", "list"), ("resource", "secrets"), ("scope", "cluster")],
        )
        .unwrap_or(0.0);
    assert!(
        secrets.abs() < f64::EPSILON,
        "Secrets listed cluster-wide {secrets} times"
    );
}

/// The log level at which berth writes one line per finished reconcile, naming the object.
const RECONCILE_LINES: (&str, &str) = ("RUST_LOG", "info,kube=warn,berth_kit::trace=debug");

/// A new process (started with [`RECONCILE_LINES`]) has re-verified each named tenant: reconciled its
/// Customer and the Database in its namespace, and has nothing in flight. Named, not counted: tenants of
/// earlier tests may still be going away, and one deleted before the new process lists it is never
/// reconciled by it.
async fn reverified(op: &Operator, names: &[String]) {
    let missing = || {
        let log = std::fs::read_to_string(&op.log).unwrap_or_default();
        let done: Vec<&str> = log.lines().filter(|l| l.contains("reconciled")).collect();
        let mut missing = Vec::new();
        for n in names {
            let customer = format!("kind=Customer namespace=\"\" name={n} ");
            let database = format!("kind=Database namespace=\"{n}\" ");
            if !done.iter().any(|l| l.contains(&customer)) {
                missing.push(format!("Customer {n}"));
            }
            if !done.iter().any(|l| l.contains(&database)) {
                missing.push(format!("the Database in {n}"));
            }
        }
        missing
    };
    let idle = || {
        op.scrape()
            .is_ok_and(|s| s.sum("berth_reconciles_in_flight", &[]) == 0.0)
    };
    eventually_or_explain(
        Duration::from_secs(60),
        "the new process to reconcile every named tenant, with nothing in flight",
        || async { (missing().is_empty() && idle()).then_some(()) },
        || format!("not reconciled: {:?}; log:\n{}", missing(), op.log_tail()),
    )
    .await;
}

#[tokio::test]
async fn a_restarted_operator_finds_converged_tenants_as_it_left_them_and_writes_nothing() {
    let Some((_serial, c)) = own_operators().await else {
        return;
    };
    let first = Operator::start("restart-a", &[]);
    first.leading(Duration::from_secs(30)).await;
    // The writes counted below are the whole process's, so no other tenant may still be changing: an earlier
    // suite's namespaces, deleted while no operator ran, finish here (their Databases' finalizers need one).
    eventually(
        READY_WITHIN,
        "the namespaces earlier tests deleted to be gone",
        || async {
            let all = Api::<Namespace>::all(c.clone())
                .list(&ListParams::default())
                .await
                .ok()?;
            (!all.items.iter().any(|n| n.metadata.deletion_timestamp.is_some())).then_some(())
        },
    )
    .await;
    let mut names = Vec::new();
    for _ in 0..3 {
        names.push(scheduler_customer(&c, "restart", true).await);
    }
    for n in &names {
        wait_customer_ready(&c, n, READY_WITHIN).await;
    }
    // Ready needs one pgbouncer pod; the status counts every ready one, and a count that still moves after
    // the restart is news the new process rightly writes. Converged means every pool pod counted.
    eventually(
        READY_WITHIN,
        "every pool pod counted in its Database's status",
        || async {
            let mut all = Vec::new();
            for n in &names {
                let dbs = Api::<Database>::namespaced(c.clone(), n)
                    .list(&ListParams::default())
                    .await
                    .ok()?;
                all.extend(dbs.items);
            }
            let counted =
                |d: &Database| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(d.spec.pool.replicas);
            (all.len() == names.len() && all.iter().all(counted)).then_some(())
        },
    )
    .await;
    // A new tenant's children are written by creates that only create; later changes by applies.
    let before = first.scrape().unwrap();
    let written_before = ["create", "apply"]
        .iter()
        .map(|verb| before.sum("berth_api_writes_total", &[("verb", verb)]))
        .sum::<f64>();
    assert!(written_before > 0.0, "the first process wrote the children");
    first.stop(Duration::from_secs(25));

    let second = Operator::start_with_env("restart-b", &[], &[RECONCILE_LINES]);
    second.leading(Duration::from_secs(30)).await;
    reverified(&second, &names).await;
    let scrape = second.scrape().unwrap();
    let writes = scrape.delta_by(
        &Scrape::default(),
        "berth_api_writes_total",
        &["controller", "verb"],
    );
    // The Secret watches it started there (one per tenant with a Database) came over HTTP/2, sharing a
    // connection, not one HTTP/1.1 connection each.
    let answered = |version| scrape.sum("berth_watch_responses_total", &[("version", version)]);
    assert!(
        answered("HTTP/2.0") >= names.len() as f64 && answered("HTTP/1.1") == 0.0,
        "watch answers by HTTP version: 2.0: {}, 1.1: {}",
        answered("HTTP/2.0"),
        answered("HTTP/1.1")
    );
    let written: f64 = writes.values().sum();
    assert_eq!(
        written,
        0.0,
        "every child was recorded in its parent's status as berth left it, so a restart writes nothing; \
         writes by controller and verb: {writes:?}; log:\n{}",
        second.log_tail()
    );
    for n in &names {
        wait_customer_ready(&c, n, READY_WITHIN).await;
    }
    drop(second);
    delete_customers(&c, &names).await;
}

#[tokio::test]
async fn sigterm_during_a_fan_out_loses_and_duplicates_nothing() {
    let Some((_serial, c)) = own_operators().await else {
        return;
    };
    let first = Operator::start("fanout-a", &[]);
    first.leading(Duration::from_secs(30)).await;
    let mut names = Vec::new();
    for _ in 0..20 {
        names.push(scheduler_customer(&c, "fan", false).await);
    }
    eventually(Duration::from_secs(30), "the fan-out to start", || async {
        (reconciles(&first) > 0.0).then_some(())
    })
    .await;
    first.signal("TERM");
    let status = first
        .wait(Duration::from_secs(25))
        .expect("exits within the shutdown timeout");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        first.log_tail()
    );

    let second = Operator::start("fanout-b", &[]);
    for n in &names {
        wait_customer_ready(&c, n, READY_WITHIN).await;
    }
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    let all = events.list(&ListParams::default()).await.unwrap().items;
    for n in &names {
        let created = all
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(n.as_str()))
            .filter(|e| e.reason.as_deref() == Some("Created"))
            .count();
        assert_eq!(created, 1, "{n}: namespace created once");
        let schedulers = Api::<Scheduler>::namespaced(c.clone(), n)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(schedulers.items.len(), 1, "{n}: one Scheduler");
    }
    drop(second);
    delete_customers(&c, &names).await;
}

#[tokio::test]
async fn reconcile_spans_reach_a_real_opentelemetry_collector() {
    let Some((_serial, c)) = own_operators().await else {
        return;
    };
    let collector = Collector::start(&collector_binary());
    let endpoint = collector.endpoint();
    let op = Operator::start_with_env(
        "traced",
        &[],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())],
    );
    op.leading(Duration::from_secs(30)).await;
    let name = scheduler_customer(&c, "traced", false).await;
    wait_customer_ready(&c, &name, READY_WITHIN).await;
    let span = collector.wait_for_span("reconcile", "name", &name);
    assert_eq!(
        span.attributes.get("kind").map(String::as_str),
        Some("Customer"),
        "{span:?}"
    );
    assert_eq!(
        span.attributes.get("controller").map(String::as_str),
        Some("customer"),
        "{span:?}"
    );
    assert!(span.attributes.contains_key("outcome"), "{span:?}");
    // Spans are exported in batches, so a reconcile's write spans may arrive a few seconds after the first
    // reconcile span seen. A new tenant's children are created (a create that only creates), others applied.
    eventually(
        Duration::from_secs(30),
        "create or apply spans inside a reconcile trace of the Customer",
        || async {
            let all = collector.spans();
            let traces: Vec<&str> = all
                .iter()
                .filter(|s| s.name == "reconcile" && s.attributes.get("name") == Some(&name))
                .map(|s| s.trace_id.as_str())
                .collect();
            all.iter()
                .any(|s| {
                    matches!(s.name.as_str(), "create" | "apply") && traces.contains(&s.trace_id.as_str())
                })
                .then_some(())
        },
    )
    .await;
    delete_customers(&c, std::slice::from_ref(&name)).await;
    drop(op);
    collector.finish();
}

/// The field managers that own some of `meta`'s fields through server-side apply.
fn appliers(meta: &kube::api::ObjectMeta) -> Vec<(String, Option<String>)> {
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|e| e.operation.as_deref() == Some("Apply"))
        .map(|e| (e.manager.clone().unwrap_or_default(), e.subresource.clone()))
        .collect()
}

#[tokio::test]
async fn fields_an_earlier_version_applied_as_berth_pass_to_the_controller_that_applies_them_now() {
    let Some((_serial, c)) = own_operators().await else {
        return;
    };
    use k8s_openapi::api::core::v1::Namespace;
    use kube::ResourceExt;
    use kube::api::{Patch, PatchParams};
    // The tenant as a version with one manager for everything left it: its namespace applied as `berth`,
    // with a label that version set and this one does not.
    let name = unique("legacy");
    let yaml = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{deletionPolicy: Delete}}\n"
    );
    let customer = apply_yaml(&Api::<Customer>::all(c.clone()), &yaml).await.unwrap();
    let mut ns = berth_customer::build::children(&customer).unwrap().namespace;
    ns.metadata
        .labels
        .get_or_insert_default()
        .insert("berth.dev/retired".to_owned(), "yes".to_owned());
    let namespaces = Api::<Namespace>::all(c.clone());
    namespaces
        .patch(&name, &PatchParams::apply("berth").force(), &Patch::Apply(&ns))
        .await
        .unwrap();

    let op = Operator::start("heir", &[]);
    op.leading(Duration::from_secs(30)).await;
    wait_customer_ready(&c, &name, READY_WITHIN).await;
    let now = namespaces.get(&name).await.unwrap();
    assert_eq!(
        appliers(&now.metadata),
        [("berth/customer".to_owned(), None)],
        "one applier, the Customer controller"
    );
    // It took the old manager's fields whole: what it no longer sends is gone, what it sends is kept.
    assert_eq!(now.labels().get("berth.dev/retired"), None);
    assert_eq!(
        now.labels()
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
    let customer = Api::<Customer>::all(c.clone()).get(&name).await.unwrap();
    let status_appliers: Vec<_> = appliers(&customer.metadata)
        .into_iter()
        .filter(|(_, subresource)| subresource.as_deref() == Some("status"))
        .collect();
    assert_eq!(
        status_appliers,
        [("berth/customer".to_owned(), Some("status".to_owned()))]
    );
    delete_customers(&c, &[name]).await;
}

/// Sets the schema of the Scheduler's `spec.envFromSecret` (replacing the whole definition, as an
/// upgrade of the chart's CRD would).
async fn scheduler_env_schema(c: &Client, schema: serde_json::Value) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds = Api::<CustomResourceDefinition>::all(c.clone());
    let mut crd = serde_json::to_value(crds.get("schedulers.berth.dev").await.unwrap()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["envFromSecret"] =
        schema;
    let crd: CustomResourceDefinition = serde_json::from_value(crd).unwrap();
    crds.replace("schedulers.berth.dev", &kube::api::PostParams::default(), &crd)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_object_berth_cannot_read_is_skipped_and_every_other_tenant_still_reconciles() {
    let Some((_serial, c)) = own_operators().await else {
        return;
    };
    use kube::core::{ApiResource, DynamicObject};
    // A Scheduler stored while its schema allowed what berth's types do not (as when a CRD is upgraded
    // before the operator): `envFromSecret` an object, not a name. Then the schema is put back.
    let relaxed = serde_json::json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    scheduler_env_schema(&c, relaxed).await;
    let namespace = berth_e2e::TestNamespace::new(&c, "unreadable").await;
    let schedulers = Api::<DynamicObject>::namespaced_with(
        c.clone(),
        &namespace.name,
        &ApiResource::erase::<Scheduler>(&()),
    );
    let bad: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "berth.dev/v1alpha1", "kind": "Scheduler",
        "metadata": {"name": "unreadable"},
        "spec": {"workers": 1, "envFromSecret": {"not": "a name"}}
    }))
    .unwrap();
    // The API server takes up a changed schema a moment after it is stored.
    eventually(Duration::from_secs(30), "the relaxed schema in force", || async {
        schedulers
            .create(&kube::api::PostParams::default(), &bad)
            .await
            .ok()
    })
    .await;
    scheduler_env_schema(&c, serde_json::json!({"type": "string", "nullable": true})).await;

    let op = Operator::start("guard", &[]);
    op.leading(Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(30),
        "the unreadable Scheduler reported",
        || async {
            op.log_tail()
                .contains("skipping an object berth cannot read")
                .then_some(())
        },
    )
    .await;
    let name = scheduler_customer(&c, "guarded", false).await;
    wait_customer_ready(&c, &name, READY_WITHIN).await;

    schedulers
        .delete("unreadable", &DeleteParams::default())
        .await
        .unwrap();
    namespace.delete().await;
    delete_customers(&c, &[name]).await;
}
