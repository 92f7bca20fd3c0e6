//! The Database controller on a real cluster (kwok runs the pods, a simulated provisioner binds the
//! volumes): readiness and ownership, a pool config change that rolls pgbouncer, an operator restart,
//! both deletion policies, suspend and quiet steady state.
//!
//! This file runs its own operator instead of the harness's shared one, because one test restarts it:
//! the tests hold [`GATE`] for reading and share the operator in [`OPERATOR`]; the restart test holds
//! it for writing, so no other test runs while the operator is replaced. With
//! `BERTH_E2E_OPERATOR=external` the in-cluster berth serves the tests and the restart test is skipped.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use berth_api::Database;
use berth_database::credentials::{APP_PASSWORD_KEY, APP_USER_KEY, SUPERUSER_PASSWORD_KEY};
use berth_database::names;
use berth_e2e::operator::{LEASE_NAMESPACE, external};
use berth_e2e::{Operator, TestNamespace, apply_yaml, eventually, prepare, wait_for, wait_gone};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Probe, Secret, Service,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Resource, ResourceExt};
use tokio::sync::{Mutex, RwLock};

const READY_WITHIN: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(60);
/// The operator's default `--shutdown-seconds`: in-flight reconciles get this long after SIGTERM.
const SHUTDOWN: Duration = Duration::from_secs(20);
/// Name of every test's Database (each test has its own namespace); unlike the product's `db`.
const DB: &str = "ledger";
/// The claim the StatefulSet creates from its `data` template for its only pod.
const CLAIM: &str = "data-ledger-postgres-0";
/// The leader Lease, in [`LEASE_NAMESPACE`].
const LEASE: &str = "berth-leader";

/// Held for reading by every test, for writing by the one that replaces the operator.
static GATE: RwLock<()> = RwLock::const_new(());
/// This file's operator; it stops when the test process exits (its standard input closes).
static OPERATOR: Mutex<Option<Operator>> = Mutex::const_new(None);

/// [`prepare`], and this file's operator running.
async fn cluster() -> Client {
    let client = prepare().await;
    if !external() {
        OPERATOR
            .lock()
            .await
            .get_or_insert_with(|| Operator::start("database", &[]));
    }
    client
}

fn spec(yaml: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Database\nmetadata: {{name: {DB}}}\nspec:\n  storage: 1Gi\n{yaml}"
    )
}

fn condition<'a>(db: &'a Database, type_: &str) -> Option<&'a Condition> {
    let conds = db
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    berth_api::find_condition(conds, type_)
}

/// Ready, and for the spec as it is now.
fn ready(db: &Database) -> bool {
    condition(db, "Ready").is_some_and(|c| c.status == "True")
        && db.status.as_ref().and_then(|s| s.observed_generation) == db.meta().generation
}

/// Applies the Database and waits until it is Ready.
async fn create(ns: &TestNamespace, yaml: &str) -> Database {
    let dbs = ns.api::<Database>();
    apply_yaml(&dbs, &spec(yaml)).await.unwrap();
    wait_for(&dbs, DB, READY_WITHIN, "Ready", ready).await
}

/// Merge-patches the Database's spec and waits until it is Ready for that generation again.
async fn change(ns: &TestNamespace, spec: serde_json::Value) -> Database {
    let dbs = ns.api::<Database>();
    let changed = dbs
        .patch(
            DB,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await
        .unwrap();
    let generation = changed.meta().generation;
    wait_for(&dbs, DB, READY_WITHIN, "Ready for the change", |d| {
        ready(d) && d.meta().generation == generation
    })
    .await
}

fn controlled_by(meta: &ObjectMeta, owner: &Database) -> bool {
    let refs = meta.owner_references.as_deref().unwrap_or_default();
    refs.len() == 1
        && refs.iter().all(|o| {
            o.kind == "Database"
                && Some(&o.uid) == owner.metadata.uid.as_ref()
                && o.controller == Some(true)
                && o.block_owner_deletion == Some(true)
        })
}

fn text(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().expect("Secret data");
    let value = data
        .get(key)
        .unwrap_or_else(|| panic!("no {key} in {}", secret.name_any()));
    String::from_utf8(value.0.clone()).expect("UTF-8")
}

/// Pods of one component (`database` or `pool`) of the test's Database.
async fn pods(ns: &TestNamespace, component: &str) -> Vec<Pod> {
    let selector = format!("app.kubernetes.io/instance={DB},app.kubernetes.io/component={component}");
    ns.api::<Pod>()
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .items
}

fn running_and_ready(pod: &Pod) -> bool {
    let status = pod.status.as_ref();
    pod.metadata.deletion_timestamp.is_none()
        && status.and_then(|s| s.phase.as_deref()) == Some("Running")
        && status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn uids<K: Resource>(objects: &[K]) -> Vec<String> {
    objects.iter().filter_map(|o| o.meta().uid.clone()).collect()
}

fn tcp_port(probe: Option<&Probe>) -> Option<IntOrString> {
    probe?.tcp_socket.as_ref().map(|t| t.port.clone())
}

fn exec_command(probe: Option<&Probe>) -> Vec<String> {
    probe
        .and_then(|p| p.exec.as_ref())
        .and_then(|e| e.command.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_database_becomes_ready_with_every_child_owned_and_apps_pointed_at_the_pool() {
    let _gate = GATE.read().await;
    let c = cluster().await;
    let ns = TestNamespace::for_berth(&c, "db-ready").await;
    let db = create(&ns, "").await;

    // The pods run (kwok plays the kubelet): one server, the pool's two replicas.
    let server_pods = pods(&ns, names::SERVER_COMPONENT).await;
    let pool_pods = pods(&ns, names::POOL_COMPONENT).await;
    assert_eq!(server_pods.len(), 1, "one PostgreSQL pod");
    assert_eq!(pool_pods.len(), 2, "the pool's default two replicas");
    assert!(server_pods.iter().chain(&pool_pods).all(running_and_ready));

    // Every child is controlled by the Database...
    let secrets = ns.api::<Secret>();
    let config_maps = ns.api::<ConfigMap>();
    let services = ns.api::<Service>();
    let server = ns.api::<StatefulSet>().get(&names::server(DB)).await.unwrap();
    let pool = ns.api::<Deployment>().get(&names::pool(DB)).await.unwrap();
    let budget = ns
        .api::<PodDisruptionBudget>()
        .get(&names::pool(DB))
        .await
        .unwrap();
    let connection = secrets.get(&names::connection(DB)).await.unwrap();
    let pool_service = services.get(&names::pool_service(DB)).await.unwrap();
    let mut owned = vec![
        ("StatefulSet", server.metadata.clone()),
        ("Deployment", pool.metadata.clone()),
        ("PodDisruptionBudget", budget.metadata.clone()),
        ("connection Secret", connection.metadata.clone()),
        ("pool Service", pool_service.metadata.clone()),
    ];
    for name in [names::server_init(DB), names::pool(DB)] {
        owned.push(("ConfigMap", config_maps.get(&name).await.unwrap().metadata));
    }
    owned.push((
        "userlist Secret",
        secrets.get(&names::pool_auth(DB)).await.unwrap().metadata,
    ));
    owned.push((
        "certificates Secret",
        secrets.get(&names::tls(DB)).await.unwrap().metadata,
    ));
    owned.push((
        "headless Service",
        services.get(&names::server(DB)).await.unwrap().metadata,
    ));
    for (what, meta) in &owned {
        assert!(
            controlled_by(meta, &db),
            "{what} {:?} is not controlled by the Database: {:?}",
            meta.name,
            meta.owner_references
        );
        let labels = meta.labels.clone().unwrap_or_default();
        assert_eq!(labels["app.kubernetes.io/managed-by"], "berth", "{what}");
    }
    // ...except, by design, the credentials Secret under the default `Retain`: it has no owner at all, so
    // it outlives the Database together with the volume that holds its passwords.
    assert_eq!(db.spec.deletion_policy, berth_api::DeletionPolicy::Retain);
    let credentials = secrets.get(&names::credentials(DB)).await.unwrap();
    assert!(
        credentials.owner_references().is_empty(),
        "{:?}",
        credentials.owner_references()
    );
    assert_eq!(credentials.labels()["app.kubernetes.io/managed-by"], "berth");
    let claim = ns.api::<PersistentVolumeClaim>().get(CLAIM).await.unwrap();
    assert_eq!(
        claim.status.and_then(|s| s.phase).as_deref(),
        Some("Bound"),
        "the volume is provisioned"
    );

    // The budget lets voluntary disruptions take one pgbouncer pod at a time (a one-pod pool can still be
    // drained), and selects the pool's pods.
    let budget = budget.spec.unwrap();
    assert_eq!(budget.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(budget.min_available, None);
    assert_eq!(budget.selector, Some(pool.spec.clone().unwrap().selector));

    // Probes: pg_isready on the server, a TCP connect on the pool.
    let server_pod = server.spec.unwrap().template.spec.unwrap();
    let postgres = &server_pod.containers[0];
    for probe in [&postgres.readiness_probe, &postgres.liveness_probe] {
        let command = exec_command(probe.as_ref());
        assert_eq!(
            command.first().map(String::as_str),
            Some("pg_isready"),
            "{command:?}"
        );
    }
    let pool_pod = pool.spec.unwrap().template.spec.unwrap();
    let pgbouncer = &pool_pod.containers[0];
    for probe in [&pgbouncer.readiness_probe, &pgbouncer.liveness_probe] {
        assert_eq!(tcp_port(probe.as_ref()), Some(IntOrString::Int(5432)));
    }

    // Status and the connection Secret send apps to the pool Service, never to the server.
    let pool_host = format!("{DB}.{}.svc", ns.name);
    let status = db.status.clone().unwrap();
    assert_eq!(status.endpoint, Some(format!("{pool_host}:5432")));
    assert_eq!(status.connection_secret, Some(names::connection(DB)));
    assert_eq!(status.ready_replicas, Some(2));
    for t in ["ServerReady", "PoolReady"] {
        assert_eq!(condition(&db, t).map(|c| c.status.as_str()), Some("True"), "{t}");
    }
    assert_eq!(pool_service.name_any(), DB, "the endpoint names the pool Service");
    let selector = pool_service.spec.unwrap().selector.unwrap();
    assert_eq!(selector["app.kubernetes.io/component"], names::POOL_COMPONENT);
    assert_eq!(text(&connection, "host"), pool_host);
    assert_eq!(text(&connection, "port"), "5432");
    let password = text(&credentials, APP_PASSWORD_KEY);
    assert_eq!(text(&connection, "password"), password);
    let url = text(&connection, "DATABASE_URL");
    assert_eq!(
        url,
        format!("postgresql://app:{password}@{pool_host}:5432/{DB}?sslmode=require")
    );
    let tls = secrets.get(&names::tls(DB)).await.unwrap();
    assert_eq!(
        text(&connection, "ca.crt"),
        text(&tls, "ca.crt"),
        "apps get the CA"
    );
    assert!(!url.contains(&names::server(DB)), "{url} points at the server");

    ns.delete().await;
}

#[tokio::test]
async fn a_pool_setting_rolls_pgbouncer_and_keeps_the_passwords() {
    let _gate = GATE.read().await;
    let c = cluster().await;
    let ns = TestNamespace::for_berth(&c, "db-roll").await;
    create(&ns, "  pool: {defaultPoolSize: 20}\n").await;
    let deployments = ns.api::<Deployment>();
    let secrets = ns.api::<Secret>();
    let hash_of = |d: &Deployment| -> Option<String> {
        let template = d.spec.as_ref()?.template.metadata.as_ref()?;
        template
            .annotations
            .as_ref()?
            .get(names::CONFIG_HASH_ANNOTATION)
            .cloned()
    };
    let old_hash = hash_of(&deployments.get(&names::pool(DB)).await.unwrap()).expect("config hash");
    let old_pods = uids(&pods(&ns, names::POOL_COMPONENT).await);
    let replica_sets = ns.api::<ReplicaSet>();
    let old_sets = uids(&replica_sets.list(&ListParams::default()).await.unwrap().items);
    let credentials = secrets.get(&names::credentials(DB)).await.unwrap();
    let userlist = secrets.get(&names::pool_auth(DB)).await.unwrap();
    let connection = secrets.get(&names::connection(DB)).await.unwrap();

    change(&ns, serde_json::json!({"pool": {"defaultPoolSize": 35}})).await;

    let config = ns.api::<ConfigMap>().get(&names::pool(DB)).await.unwrap();
    let ini = &config.data.unwrap()[names::INI_KEY];
    assert!(ini.contains("default_pool_size = 35"), "{ini}");
    let rolled = wait_for(&deployments, &names::pool(DB), SHORT, "a new config hash", |d| {
        hash_of(d).is_some_and(|h| h != old_hash)
    })
    .await;
    let new_hash = hash_of(&rolled).unwrap();
    // A new ReplicaSet with the new hash runs the pool on new pods; the old one is scaled away.
    eventually(SHORT, "a new ReplicaSet with two ready pods", || async {
        let sets = replica_sets.list(&ListParams::default()).await.ok()?.items;
        sets.iter().find(|rs| {
            !old_sets.contains(&rs.uid().unwrap_or_default())
                && rs
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| {
                        t.metadata
                            .as_ref()
                            .and_then(|m| m.annotations.as_ref())
                            .and_then(|a| a.get(names::CONFIG_HASH_ANNOTATION))
                            == Some(&new_hash)
                    })
                && rs.status.as_ref().and_then(|s| s.ready_replicas) == Some(2)
        })?;
        Some(())
    })
    .await;
    eventually(SHORT, "only new pgbouncer pods", || async {
        let now = pods(&ns, names::POOL_COMPONENT).await;
        (now.len() == 2
            && now.iter().all(running_and_ready)
            && uids(&now).iter().all(|u| !old_pods.contains(u)))
        .then_some(())
    })
    .await;

    // The passwords did not move: the credentials Secret was not even written.
    let after = secrets.get(&names::credentials(DB)).await.unwrap();
    assert_eq!(after.data, credentials.data);
    assert_eq!(after.resource_version(), credentials.resource_version());
    assert_eq!(
        secrets.get(&names::pool_auth(DB)).await.unwrap().data,
        userlist.data
    );
    assert_eq!(
        secrets.get(&names::connection(DB)).await.unwrap().data,
        connection.data
    );
    ns.delete().await;
}

/// Nobody holds the leader Lease (a stopping operator hands it over rather than letting it expire).
/// A raised `passwordRotation` gives the app role a new password in the credentials Secret, the pool's
/// userlist and the connection Secret, says so in the status, and keeps the pool's pods (pgbouncer reloads
/// the userlist in place) and the superuser's password.
#[tokio::test]
async fn a_password_rotation_reaches_every_secret_and_keeps_the_pool_pods() {
    let _gate = GATE.read().await;
    let c = cluster().await;
    let ns = TestNamespace::for_berth(&c, "db-rotate").await;
    let db = create(&ns, "").await;
    assert_eq!(db.status.unwrap().password_rotation, Some(0));
    let secrets = ns.api::<Secret>();
    let before = secrets.get(&names::credentials(DB)).await.unwrap();
    let pool_before = uids(&pods(&ns, names::POOL_COMPONENT).await);
    let template_before = ns
        .api::<Deployment>()
        .get(&names::pool(DB))
        .await
        .unwrap()
        .spec
        .unwrap()
        .template;

    let dbs = ns.api::<Database>();
    dbs.patch(
        DB,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"passwordRotation": 1}})),
    )
    .await
    .unwrap();
    wait_for(&dbs, DB, READY_WITHIN, "rotation 1 in the status", |d| {
        d.status.as_ref().and_then(|s| s.password_rotation) == Some(1)
    })
    .await;

    let after = secrets.get(&names::credentials(DB)).await.unwrap();
    let new = text(&after, APP_PASSWORD_KEY);
    assert_ne!(new, text(&before, APP_PASSWORD_KEY), "a new app password");
    assert_eq!(
        text(&after, "POSTGRES_PASSWORD"),
        text(&before, "POSTGRES_PASSWORD"),
        "the superuser's stays"
    );
    assert_eq!(
        after
            .annotations()
            .get("berth.dev/password-rotation")
            .map(String::as_str),
        Some("1")
    );
    let userlist = text(
        &secrets.get(&names::pool_auth(DB)).await.unwrap(),
        names::USERLIST_KEY,
    );
    assert!(
        userlist.contains(&format!("\"{new}\"")),
        "the pool's userlist has it"
    );
    let connection = secrets.get(&names::connection(DB)).await.unwrap();
    assert_eq!(text(&connection, "password"), new);
    assert!(text(&connection, "DATABASE_URL").contains(&new));
    let template_after = ns
        .api::<Deployment>()
        .get(&names::pool(DB))
        .await
        .unwrap()
        .spec
        .unwrap()
        .template;
    assert_eq!(
        template_after, template_before,
        "the pool is reloaded, not rolled"
    );
    assert_eq!(uids(&pods(&ns, names::POOL_COMPONENT).await), pool_before);
    let events = ns.api::<k8s_openapi::api::core::v1::Event>();
    eventually(SHORT, "a PasswordRotated event", || async {
        let params = ListParams::default().fields(&format!("involvedObject.name={DB}"));
        let listed = events.list(&params).await.ok()?;
        listed
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("PasswordRotated"))
            .then_some(())
    })
    .await;
    ns.delete().await;
}

async fn lease_free(leases: &Api<Lease>) -> bool {
    let lease = leases.get_opt(LEASE).await.unwrap();
    lease
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .is_none_or(|h| h.is_empty())
}

#[tokio::test]
async fn an_operator_restart_keeps_the_passwords() {
    // Alone: the operator every other test relies on is replaced here.
    let _gate = GATE.write().await;
    if external() {
        eprintln!("skipped: berth runs in the cluster (BERTH_E2E_OPERATOR=external), not as a process here");
        return;
    }
    let c = prepare().await;
    let leases = Api::<Lease>::namespaced(c.clone(), LEASE_NAMESPACE);
    let mut running = OPERATOR.lock().await;
    if let Some(shared) = running.take() {
        shared.signal("TERM");
        eventually(SHORT, "the Lease handed over", || async {
            lease_free(&leases).await.then_some(())
        })
        .await;
    }

    let first = Operator::start("database-first", &[]);
    let ns = TestNamespace::for_berth(&c, "db-restart").await;
    create(&ns, "").await;
    let secrets = ns.api::<Secret>();
    let credentials = secrets.get(&names::credentials(DB)).await.unwrap();
    let connection = secrets.get(&names::connection(DB)).await.unwrap();

    first.signal("TERM");
    let exit = first.wait(SHUTDOWN);
    assert!(
        exit.is_some_and(|s| s.code() == Some(0)),
        "SIGTERM: exit {exit:?} within {SHUTDOWN:?}\n{}",
        first.log_tail()
    );
    assert!(lease_free(&leases).await, "the Lease is handed over on SIGTERM");
    drop(first);

    let second = Operator::start("database-restarted", &[]);
    // A change makes the new operator reconcile the Database again (its first reconcile, at start,
    // already found the credentials Secret).
    change(&ns, serde_json::json!({"pool": {"replicas": 3}})).await;
    // The third pool pod becoming available wakes the controller again.
    wait_for(&ns.api::<Database>(), DB, SHORT, "three pool pods", |d| {
        d.status.as_ref().and_then(|s| s.ready_replicas) == Some(3)
    })
    .await;
    let holder = leases
        .get(LEASE)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder, Some(format!("{}-{}", second.name, second.port)));
    let reconciles = second
        .metric("berth_reconciles_total", &[("controller", "database")])
        .unwrap_or_default();
    assert!(reconciles >= 1.0, "the new operator reconciled: {reconciles}");

    let after = secrets.get(&names::credentials(DB)).await.unwrap();
    assert_eq!(after.uid(), credentials.uid(), "the same Secret");
    for key in [APP_PASSWORD_KEY, SUPERUSER_PASSWORD_KEY] {
        assert_eq!(text(&after, key), text(&credentials, key), "{key}");
    }
    assert_eq!(
        after.resource_version(),
        credentials.resource_version(),
        "never written again"
    );
    let connection_after = secrets.get(&names::connection(DB)).await.unwrap();
    assert_eq!(text(&connection_after, "password"), text(&connection, "password"));
    *running = Some(second);
    drop(running);
    ns.delete().await;
}

#[tokio::test]
async fn retain_keeps_the_volume_and_the_credentials_for_the_next_database() {
    let _gate = GATE.read().await;
    let c = cluster().await;
    let ns = TestNamespace::for_berth(&c, "db-retain").await;
    create(&ns, "  deletionPolicy: Retain\n").await;
    let claims = ns.api::<PersistentVolumeClaim>();
    let secrets = ns.api::<Secret>();
    let claim = claims.get(CLAIM).await.unwrap();
    assert!(
        claim.owner_references().is_empty(),
        "{:?}",
        claim.owner_references()
    );
    let credentials = secrets.get(&names::credentials(DB)).await.unwrap();

    let dbs = ns.api::<Database>();
    dbs.delete(DB, &DeleteParams::default()).await.unwrap();
    wait_gone(&dbs, DB, SHORT).await;
    // The garbage collector removes what the Database owned, the server pod included...
    wait_gone(&ns.api::<StatefulSet>(), &names::server(DB), SHORT).await;
    wait_gone(&ns.api::<Deployment>(), &names::pool(DB), SHORT).await;
    wait_gone(&secrets, &names::connection(DB), SHORT).await;
    wait_gone(&ns.api::<Pod>(), &format!("{}-0", names::server(DB)), SHORT).await;
    // ...and, given time to act on anything else it could, leaves the volume and the passwords.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = claims.get(CLAIM).await.unwrap();
    assert_eq!(kept.uid(), claim.uid());
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "the claim is being deleted"
    );
    let kept_credentials = secrets.get(&names::credentials(DB)).await.unwrap();
    assert_eq!(kept_credentials.uid(), credentials.uid());
    assert_eq!(kept_credentials.data, credentials.data);

    // A Database of the same name finds both again: the same volume, logged in to with the same passwords.
    create(&ns, "  deletionPolicy: Retain\n").await;
    assert_eq!(claims.get(CLAIM).await.unwrap().uid(), claim.uid());
    let again = secrets.get(&names::credentials(DB)).await.unwrap();
    assert_eq!(again.uid(), credentials.uid());
    assert_eq!(again.data, credentials.data);
    ns.delete().await;
}

/// A tenant's own ConfigMap under the name of the pool's: berth neither takes it over nor overwrites it; it
/// says so on the Database, and goes on once the name is free.
#[tokio::test]
async fn an_object_of_someone_else_under_a_childs_name_is_reported_not_taken_over() {
    let _gate = GATE.read().await;
    let c = cluster().await;
    let ns = TestNamespace::for_berth(&c, "db-foreign").await;
    let maps = ns.api::<ConfigMap>();
    let mine = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {}}}\ndata: {{owner: the tenant}}\n",
        names::pool(DB)
    );
    let theirs = apply_yaml(&maps, &mine).await.unwrap();

    let dbs = ns.api::<Database>();
    apply_yaml(&dbs, &spec("")).await.unwrap();
    let refused = wait_for(&dbs, DB, READY_WITHIN, "a NameConflict", |d| {
        condition(d, "Ready").is_some_and(|c| c.status == "False" && c.reason == "NameConflict")
    })
    .await;
    let message = &condition(&refused, "Ready").unwrap().message;
    assert!(
        message.contains(&format!(
            "ConfigMap {}/{} already exists",
            ns.name,
            names::pool(DB)
        )),
        "{message}"
    );
    assert!(message.contains("berth leaves it untouched"), "{message}");
    let kept = maps.get(&names::pool(DB)).await.unwrap();
    assert_eq!(
        kept.resource_version(),
        theirs.resource_version(),
        "not written to"
    );
    assert!(kept.owner_references().is_empty());

    maps.delete(&names::pool(DB), &DeleteParams::default())
        .await
        .unwrap();
    let db = wait_for(&dbs, DB, READY_WITHIN, "Ready once the name is free", ready).await;
    let made = maps.get(&names::pool(DB)).await.unwrap();
    assert!(controlled_by(&made.metadata, &db), "berth's own now");
    ns.delete().await;
}

/// The credentials Secret is the tenant's to restore, so what berth reads back is input: a newline in a
/// name would add pgbouncer directives. It is reported and nothing is applied; the pool keeps its config.
#[tokio::test]
async fn a_newline_read_back_from_the_credentials_is_reported_and_changes_no_pool_config() {
    let _gate = GATE.read().await;
    let c = cluster().await;
    let ns = TestNamespace::for_berth(&c, "db-readback").await;
    create(&ns, "").await;
    let maps = ns.api::<ConfigMap>();
    let before = maps.get(&names::pool(DB)).await.unwrap();
    let secrets = ns.api::<Secret>();
    let good = secrets.get(&names::credentials(DB)).await.unwrap();
    let injected = serde_json::json!({"stringData": {APP_USER_KEY: "app\nadmin_users = app"}});
    secrets
        .patch(
            &names::credentials(DB),
            &PatchParams::default(),
            &Patch::Merge(&injected),
        )
        .await
        .unwrap();

    let dbs = ns.api::<Database>();
    let held = wait_for(&dbs, DB, SHORT, "CredentialsInvalid", |d| {
        condition(d, "Ready").is_some_and(|c| c.status == "False" && c.reason == "CredentialsInvalid")
    })
    .await;
    let message = &condition(&held, "Ready").unwrap().message;
    assert!(message.contains(APP_USER_KEY), "{message}");
    assert!(message.contains("\\n"), "the newline is shown escaped: {message}");
    let after = maps.get(&names::pool(DB)).await.unwrap();
    assert_eq!(
        after.resource_version(),
        before.resource_version(),
        "pgbouncer.ini untouched"
    );
    assert_eq!(after.data, before.data);

    let restore = serde_json::json!({"data": {APP_USER_KEY: good.data.unwrap()[APP_USER_KEY]}});
    secrets
        .patch(
            &names::credentials(DB),
            &PatchParams::default(),
            &Patch::Merge(&restore),
        )
        .await
        .unwrap();
    wait_for(&dbs, DB, READY_WITHIN, "Ready with the restored Secret", ready).await;
    ns.delete().await;
}

#[tokio::test]
async fn delete_removes_the_volume_and_the_credentials() {
    let _gate = GATE.read().await;
    let c = cluster().await;
    let ns = TestNamespace::for_berth(&c, "db-delete").await;
    let db = create(&ns, "  deletionPolicy: Delete\n").await;
    let claims = ns.api::<PersistentVolumeClaim>();
    let secrets = ns.api::<Secret>();
    let credentials = secrets.get(&names::credentials(DB)).await.unwrap();
    assert!(
        controlled_by(&credentials.metadata, &db),
        "{:?}",
        credentials.owner_references()
    );
    // The StatefulSet's persistentVolumeClaimRetentionPolicy (whenDeleted: Delete) makes the StatefulSet
    // controller give the claim the StatefulSet as owner, so the garbage collector removes it with it.
    let claim = claims.get(CLAIM).await.unwrap();
    let retention = ns
        .api::<StatefulSet>()
        .get(&names::server(DB))
        .await
        .unwrap()
        .spec
        .unwrap()
        .persistent_volume_claim_retention_policy
        .unwrap();
    assert_eq!(retention.when_deleted.as_deref(), Some("Delete"));
    assert_eq!(retention.when_scaled.as_deref(), Some("Retain"));
    assert!(
        claim
            .owner_references()
            .iter()
            .any(|o| o.kind == "StatefulSet" && o.name == names::server(DB)),
        "{:?}",
        claim.owner_references()
    );
    let volume = claim.spec.and_then(|s| s.volume_name).expect("a bound volume");

    let dbs = ns.api::<Database>();
    dbs.delete(DB, &DeleteParams::default()).await.unwrap();
    wait_gone(&dbs, DB, SHORT).await;
    wait_gone(&secrets, &names::credentials(DB), SHORT).await;
    wait_gone(&claims, CLAIM, READY_WITHIN).await;
    // The volume's reclaim policy (Delete, from the StorageClass) removes the volume too.
    wait_gone(&Api::<PersistentVolume>::all(c.clone()), &volume, SHORT).await;
    ns.delete().await;
}

#[tokio::test]
async fn suspend_scales_to_zero_and_keeps_the_data() {
    let _gate = GATE.read().await;
    let c = cluster().await;
    let ns = TestNamespace::for_berth(&c, "db-suspend").await;
    create(&ns, "").await;
    let claims = ns.api::<PersistentVolumeClaim>();
    let secrets = ns.api::<Secret>();
    let claim = claims.get(CLAIM).await.unwrap();
    let credentials = secrets.get(&names::credentials(DB)).await.unwrap();

    let dbs = ns.api::<Database>();
    dbs.patch(
        DB,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"suspend": true}})),
    )
    .await
    .unwrap();
    let suspended = wait_for(&dbs, DB, SHORT, "Suspended with no pool pod", |d| {
        d.status.as_ref().and_then(|s| s.observed_generation) == d.meta().generation
            && ["Ready", "ServerReady", "PoolReady"]
                .iter()
                .all(|t| condition(d, t).is_some_and(|c| c.status == "False" && c.reason == "Suspended"))
            && d.status.as_ref().and_then(|s| s.ready_replicas) == Some(0)
    })
    .await;
    let message = &condition(&suspended, "Ready").unwrap().message;
    assert!(message.contains("suspend"), "{message}");
    let server = ns.api::<StatefulSet>().get(&names::server(DB)).await.unwrap();
    assert_eq!(server.spec.unwrap().replicas, Some(0));
    let pool = ns.api::<Deployment>().get(&names::pool(DB)).await.unwrap();
    assert_eq!(pool.spec.unwrap().replicas, Some(0));
    eventually(SHORT, "no pod left", || async {
        let left =
            pods(&ns, names::SERVER_COMPONENT).await.len() + pods(&ns, names::POOL_COMPONENT).await.len();
        (left == 0).then_some(())
    })
    .await;

    // Data untouched: the same claim, still bound, and the same passwords.
    let kept = claims.get(CLAIM).await.unwrap();
    assert_eq!(kept.uid(), claim.uid());
    assert!(kept.metadata.deletion_timestamp.is_none());
    assert_eq!(kept.status.and_then(|s| s.phase).as_deref(), Some("Bound"));
    let kept_credentials = secrets.get(&names::credentials(DB)).await.unwrap();
    assert_eq!(kept_credentials.data, credentials.data);
    assert_eq!(
        kept_credentials.resource_version(),
        credentials.resource_version()
    );

    // Resuming brings the server back on the same volume.
    change(&ns, serde_json::json!({"suspend": false})).await;
    assert_eq!(claims.get(CLAIM).await.unwrap().uid(), claim.uid());
    assert!(
        pods(&ns, names::SERVER_COMPONENT)
            .await
            .iter()
            .all(running_and_ready)
    );
    ns.delete().await;
}

/// resourceVersion of the Database and of everything labelled as its child, keyed by kind/name.
async fn versions(ns: &TestNamespace) -> BTreeMap<String, String> {
    async fn add<K>(out: &mut BTreeMap<String, String>, api: Api<K>)
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        let children = ListParams::default().labels(&format!("app.kubernetes.io/instance={DB}"));
        for o in api.list(&children).await.unwrap().items {
            out.insert(
                format!("{}/{}", K::kind(&()), o.name_any()),
                o.resource_version().unwrap_or_default(),
            );
        }
    }
    let mut out = BTreeMap::new();
    let db = ns.api::<Database>().get(DB).await.unwrap();
    out.insert("Database".into(), db.resource_version().unwrap());
    add(&mut out, ns.api::<Secret>()).await;
    add(&mut out, ns.api::<ConfigMap>()).await;
    add(&mut out, ns.api::<StatefulSet>()).await;
    add(&mut out, ns.api::<Deployment>()).await;
    add(&mut out, ns.api::<Service>()).await;
    add(&mut out, ns.api::<PodDisruptionBudget>()).await;
    add(&mut out, ns.api::<PersistentVolumeClaim>()).await;
    out
}

#[tokio::test]
async fn a_ready_database_sees_no_writes_for_20_seconds() {
    let _gate = GATE.read().await;
    let c = cluster().await;
    let ns = TestNamespace::for_berth(&c, "db-steady").await;
    create(&ns, "").await;
    // Ready can come a moment before the workloads' last status update; wait until two snapshots agree.
    let mut before = versions(&ns).await;
    let deadline = tokio::time::Instant::now() + SHORT;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = versions(&ns).await;
        if now == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Database never settled: {before:?} -> {now:?}"
        );
        before = now;
    }
    assert_eq!(
        before.len(),
        13,
        "the Database, its eleven children and the claim: {before:?}"
    );
    tokio::time::sleep(Duration::from_secs(20)).await;
    let after = versions(&ns).await;
    let changed: Vec<&String> = after.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
    assert!(changed.is_empty(), "written in steady state: {changed:?}");
    ns.delete().await;
}
