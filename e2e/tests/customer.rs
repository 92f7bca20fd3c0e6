//! The Customer controller on a real cluster: fan-out, ownership, drift repair, deletion policies,
//! name clashes and quiet steady state. One shared operator process serves all tests of this file.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use berth_api::{Customer, Database, Scheduler};
use berth_customer::build::POD_SECURITY_VERSION;
use berth_customer::names;
use berth_e2e::{apply_yaml, customer_ready, eventually, refusal, setup, unique, wait_for, wait_gone};
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};

const READY_WITHIN: Duration = Duration::from_secs(180);
const SHORT: Duration = Duration::from_secs(60);

fn seed(name: &str, policy: &str) -> String {
    format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec:\n  deletionPolicy: {policy}\n  features:\n    database: {{enabled: true, storage: 256Gi}}\n    scheduler: {{enabled: true, workers: 4}}\n    webhooks: {{enabled: false}}\n"
    )
}

async fn create(c: &Client, yaml: &str) -> Customer {
    let api: Api<Customer> = Api::all(c.clone());
    let customer = apply_yaml(&api, yaml).await.unwrap();
    wait_for(&api, &customer.name_any(), READY_WITHIN, "Ready", customer_ready).await
}

fn owned_by(meta: &kube::api::ObjectMeta, owner: &Customer) -> bool {
    meta.owner_references.iter().flatten().any(|o| {
        Some(&o.uid) == owner.metadata.uid.as_ref()
            && o.controller == Some(true)
            && o.block_owner_deletion == Some(true)
    })
}

async fn events_of(c: &Client, customer: &str, reason: &str) -> Vec<Event> {
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    let all = events.list(&ListParams::default()).await.unwrap();
    all.items
        .into_iter()
        .filter(|e| {
            e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(customer)
                && e.reason.as_deref() == Some(reason)
        })
        .collect()
}

fn ready_of(c: &Customer) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    condition_of(c, "Ready")
}

fn condition_of<'a>(
    c: &'a Customer,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let conditions = c.status.as_ref().map(|s| s.conditions.as_slice());
    berth_api::find_condition(conditions.unwrap_or_default(), type_)
}

/// Whether `c` reports its namespace refused for `reason`, for its current generation.
fn refused_for(c: &Customer, reason: &str) -> bool {
    condition_of(c, "NamespaceReady").is_some_and(|n| {
        n.status == "False" && n.reason == reason && n.observed_generation == c.metadata.generation
    })
}

fn recorded_uid(ns: &Namespace) -> Option<&str> {
    ns.annotations().get(names::CUSTOMER_UID).map(String::as_str)
}

/// Deletes a `deletionPolicy: Delete` Customer and waits for garbage collection to remove its namespace.
async fn delete_with_namespace(c: &Client, name: &str) {
    Api::<Customer>::all(c.clone())
        .delete(name, &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&Api::<Namespace>::all(c.clone()), name, READY_WITHIN).await;
}

/// A tenant cannot open itself to traffic from outside the cluster: the API server refuses a LoadBalancer or
/// NodePort Service in its namespace, citing the quota.
async fn outside_services_are_refused_by_the_quota(c: &Client, ns: &str) {
    let quotas: Api<ResourceQuota> = Api::namespaced(c.clone(), ns);
    // Until the quota controller has counted, admission refuses for an unknown status instead: wait, so the
    // refusal below is the one a tenant meets.
    wait_for(&quotas, names::RESOURCE_QUOTA, SHORT, "usage counted", |q| {
        q.status
            .as_ref()
            .and_then(|s| s.used.as_ref())
            .is_some_and(|u| u.contains_key("services.loadbalancers") && u.contains_key("services.nodeports"))
    })
    .await;
    let services: Api<Service> = Api::namespaced(c.clone(), ns);
    for (type_, resource) in [
        ("LoadBalancer", "services.loadbalancers"),
        ("NodePort", "services.nodeports"),
    ] {
        let service: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("exposed-{}", type_.to_lowercase())},
            "spec": {"type": type_, "selector": {"app": "x"}, "ports": [{"port": 80}]}
        }))
        .unwrap();
        let message = refusal(services.create(&PostParams::default(), &service).await);
        assert!(
            message.contains("exceeded quota") && message.contains(resource),
            "{type_}: {message}"
        );
    }
}

#[tokio::test]
async fn seed_example_fans_out_to_an_owned_isolated_tenant() {
    let c = setup().await;
    let name = unique("seed");
    let customer = create(&c, &seed(&name, "Delete")).await;
    let status = customer.status.clone().unwrap();
    assert_eq!(status.namespace.as_deref(), Some(name.as_str()));
    assert_eq!(
        status.summary.as_deref(),
        Some("namespace ready, database ready, scheduler ready, webhooks off")
    );
    for t in ["Ready", "NamespaceReady", "DatabaseReady", "SchedulerReady"] {
        assert_eq!(
            berth_api::condition_status(&status.conditions, t),
            Some(true),
            "{t}"
        );
    }

    let ns = Api::<Namespace>::all(c.clone()).get(&name).await.unwrap();
    assert!(owned_by(&ns.metadata, &customer));
    let labels = ns.labels();
    assert_eq!(labels["pod-security.kubernetes.io/enforce"], "restricted");
    for mode in ["enforce", "audit", "warn"] {
        assert_eq!(
            labels[&format!("pod-security.kubernetes.io/{mode}-version")],
            POD_SECURITY_VERSION,
            "{mode}"
        );
    }
    assert_eq!(labels["berth.dev/customer"], name);

    let quota = Api::<ResourceQuota>::namespaced(c.clone(), &name)
        .get(names::RESOURCE_QUOTA)
        .await
        .unwrap();
    assert!(owned_by(&quota.metadata, &customer));
    outside_services_are_refused_by_the_quota(&c, &name).await;
    let limits = Api::<LimitRange>::namespaced(c.clone(), &name)
        .get(names::LIMIT_RANGE)
        .await
        .unwrap();
    assert!(owned_by(&limits.metadata, &customer));
    for np in [names::DENY_INGRESS, names::ALLOW_SAME_NAMESPACE] {
        let np = Api::<NetworkPolicy>::namespaced(c.clone(), &name)
            .get(np)
            .await
            .unwrap();
        assert!(owned_by(&np.metadata, &customer));
    }
    let rb = Api::<RoleBinding>::namespaced(c.clone(), &name)
        .get(names::ADMINS)
        .await
        .unwrap();
    assert!(owned_by(&rb.metadata, &customer));
    let db = Api::<Database>::namespaced(c.clone(), &name)
        .get(names::DATABASE)
        .await
        .unwrap();
    assert!(owned_by(&db.metadata, &customer));
    assert_eq!(db.spec.storage.0, "256Gi");
    let sched = Api::<Scheduler>::namespaced(c.clone(), &name)
        .get(names::SCHEDULER)
        .await
        .unwrap();
    assert!(owned_by(&sched.metadata, &customer));
    assert_eq!(sched.spec.workers, 4);
    assert!(
        !events_of(&c, &name, "Created").await.is_empty(),
        "a Created event on the Customer"
    );

    delete_with_namespace(&c, &name).await;
}

#[tokio::test]
async fn hand_made_changes_are_put_back() {
    let c = setup().await;
    let name = unique("drift");
    create(&c, &seed(&name, "Delete")).await;
    let quotas: Api<ResourceQuota> = Api::namespaced(c.clone(), &name);
    let old_quota = quotas.get(names::RESOURCE_QUOTA).await.unwrap();
    quotas
        .delete(names::RESOURCE_QUOTA, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&quotas, names::RESOURCE_QUOTA, SHORT, "re-creation", |q| {
        q.uid() != old_quota.uid()
    })
    .await;

    let policies: Api<NetworkPolicy> = Api::namespaced(c.clone(), &name);
    let opened = serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "spec": {"ingress": [{"from": [{"namespaceSelector": {}}]}]}
    });
    policies
        .patch(
            names::DENY_INGRESS,
            &PatchParams::apply("someone-else").force(),
            &Patch::Apply(&opened),
        )
        .await
        .unwrap();
    wait_for(&policies, names::DENY_INGRESS, SHORT, "repair", |np| {
        np.spec
            .as_ref()
            .is_some_and(|s| s.ingress.as_ref().is_none_or(Vec::is_empty))
    })
    .await;

    let dbs: Api<Database> = Api::namespaced(c.clone(), &name);
    let old_db = dbs.get(names::DATABASE).await.unwrap();
    dbs.delete(names::DATABASE, &DeleteParams::default())
        .await
        .unwrap();
    wait_for(&dbs, names::DATABASE, SHORT, "re-creation", |d| {
        d.uid() != old_db.uid()
    })
    .await;
    // Each repair is told, naming what was put back and how it had been changed.
    for what in [
        "ResourceQuota/tenant-quota, which was deleted",
        "Database/db, which was deleted",
    ] {
        eventually(SHORT, &format!("a DriftRepaired event for {what}"), || async {
            let events = events_of(&c, &name, "DriftRepaired").await;
            events
                .into_iter()
                .find(|e| e.note.as_deref().is_some_and(|n| n.contains(what)))
        })
        .await;
    }

    Api::<Customer>::all(c.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn retain_keeps_the_namespace_and_its_data() {
    let c = setup().await;
    let name = unique("retain");
    let yaml = |policy: &str, adopt: Option<&str>| {
        let adopt = adopt.map_or_else(String::new, |uid| format!(", adoptNamespaceOf: '{uid}'"));
        format!(
            "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{deletionPolicy: {policy}{adopt}}}\n"
        )
    };
    let first = create(&c, &yaml("Retain", None)).await;
    let old_uid = first.uid().unwrap();
    let secrets: Api<Secret> = Api::namespaced(c.clone(), &name);
    let data: Secret = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "tenant-data"}, "stringData": {"k": "v"}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &data).await.unwrap();

    // Foreground: the garbage collector deletes every dependent before the Customer itself goes, and before
    // berth's finalizer can do anything. So once the Customer is gone, whatever it still owned is gone too.
    let customers: Api<Customer> = Api::all(c.clone());
    customers
        .delete(&name, &DeleteParams::foreground())
        .await
        .unwrap();
    wait_gone(&customers, &name, SHORT).await;
    let ns = Api::<Namespace>::all(c.clone()).get(&name).await.unwrap();
    assert!(ns.owner_references().is_empty(), "{:?}", ns.owner_references());
    assert_eq!(
        ns.labels().get("berth.dev/retained").map(String::as_str),
        Some("true")
    );
    assert_eq!(recorded_uid(&ns), Some(old_uid.as_str()), "whose it was");
    let kept_version = ns.resource_version();
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    assert!(
        secrets.get_opt("tenant-data").await.unwrap().is_some(),
        "the tenant's Secret survives"
    );
    // ...and stays fenced: what kept the tenant isolated is kept with it.
    let kept = Api::<NetworkPolicy>::namespaced(c.clone(), &name)
        .get(names::DENY_INGRESS)
        .await
        .expect("the default-deny policy is kept");
    assert!(kept.owner_references().is_empty());
    Api::<ResourceQuota>::namespaced(c.clone(), &name)
        .get(names::RESOURCE_QUOTA)
        .await
        .expect("the quota is kept");
    Api::<RoleBinding>::namespaced(c.clone(), &name)
        .get(names::ADMINS)
        .await
        .expect("the admin binding is kept");

    // The same name applied again is not enough: it may be a new tenant reusing a name, who must not get
    // the old one's data. berth refuses, leaves the namespace as it was, and says how to take it over.
    apply_yaml(&customers, &yaml("Delete", None)).await.unwrap();
    let refused = wait_for(&customers, &name, SHORT, "a RetainedNamespace condition", |cu| {
        refused_for(cu, "RetainedNamespace")
    })
    .await;
    assert_ne!(refused.uid().as_deref(), Some(old_uid.as_str()));
    let ready = ready_of(&refused).cloned().unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "RetainedNamespace")
    );
    assert!(
        ready.message.contains(&format!(
            "set spec.adoptNamespaceOf: {old_uid} to take it over with its data"
        )),
        "{}",
        ready.message
    );
    assert!(
        ready.message.contains(&format!("namespace {name} ")),
        "{}",
        ready.message
    );
    assert!(!events_of(&c, &name, "RetainedNamespace").await.is_empty());
    assert!(events_of(&c, &name, "Adopted").await.is_empty());
    let ns = Api::<Namespace>::all(c.clone()).get(&name).await.unwrap();
    assert_eq!(ns.resource_version(), kept_version, "untouched");
    assert_eq!(recorded_uid(&ns), Some(old_uid.as_str()));
    assert!(ns.owner_references().is_empty());

    // Asked for by the UID the namespace records, the tenant comes back, data and all.
    apply_yaml(&customers, &yaml("Delete", Some(&old_uid)))
        .await
        .unwrap();
    let again = wait_for(&customers, &name, READY_WITHIN, "Ready", customer_ready).await;
    let ns = Api::<Namespace>::all(c.clone()).get(&name).await.unwrap();
    assert!(owned_by(&ns.metadata, &again), "{:?}", ns.owner_references());
    assert_eq!(recorded_uid(&ns), again.uid().as_deref(), "recorded anew");
    assert_eq!(ns.labels().get("berth.dev/retained"), None);
    assert!(secrets.get_opt("tenant-data").await.unwrap().is_some());
    assert!(!events_of(&c, &name, "Adopted").await.is_empty());
    customers.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_gone(&Api::<Namespace>::all(c.clone()), &name, READY_WITHIN).await;
}

#[tokio::test]
async fn delete_removes_the_namespace_through_garbage_collection() {
    let c = setup().await;
    let name = unique("delete");
    let yaml = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{deletionPolicy: Delete}}\n"
    );
    create(&c, &yaml).await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), &name);
    let data: Secret =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "tenant-data"}})).unwrap();
    secrets.create(&PostParams::default(), &data).await.unwrap();
    delete_with_namespace(&c, &name).await;
}

/// The namespace and the database credentials are created only if absent, yet their ownerReferences are
/// berth's apply's like every other child's: a live tenant switched to `Retain` loses them (so deleting the
/// Customer would keep it), and switched back gets them again.
#[tokio::test]
async fn switching_a_live_tenant_to_retain_and_back_moves_the_owner_references() {
    let c = setup().await;
    let name = unique("switch");
    let customers: Api<Customer> = Api::all(c.clone());
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let secrets: Api<Secret> = Api::namespaced(c.clone(), &name);
    let credentials = berth_database::names::credentials(names::DATABASE);
    let customer = create(&c, &seed(&name, "Delete")).await;
    let database: Database = Api::namespaced(c.clone(), &name)
        .get(names::DATABASE)
        .await
        .unwrap();
    let owned_by_database = |s: &Secret| {
        s.owner_references()
            .iter()
            .any(|o| Some(&o.uid) == database.metadata.uid.as_ref())
    };
    assert!(owned_by(
        &namespaces.get(&name).await.unwrap().metadata,
        &customer
    ));
    assert!(owned_by_database(&secrets.get(&credentials).await.unwrap()));

    apply_yaml(&customers, &seed(&name, "Retain")).await.unwrap();
    wait_for(&namespaces, &name, SHORT, "the namespace unowned", |ns| {
        ns.owner_references().is_empty()
    })
    .await;
    // A guard rail still controlled by the Customer is berth's to un-own, not a name clash.
    let quotas: Api<ResourceQuota> = Api::namespaced(c.clone(), &name);
    wait_for(&quotas, names::RESOURCE_QUOTA, SHORT, "the quota unowned", |q| {
        q.owner_references().is_empty()
    })
    .await;
    wait_for(&secrets, &credentials, SHORT, "the credentials unowned", |s| {
        s.owner_references().is_empty()
    })
    .await;

    apply_yaml(&customers, &seed(&name, "Delete")).await.unwrap();
    wait_for(&namespaces, &name, SHORT, "the namespace owned again", |ns| {
        owned_by(&ns.metadata, &customer)
    })
    .await;
    wait_for(
        &secrets,
        &credentials,
        SHORT,
        "the credentials owned again",
        |s| owned_by_database(s),
    )
    .await;
    wait_for(&customers, &name, SHORT, "Ready", customer_ready).await;
    delete_with_namespace(&c, &name).await;
}

#[tokio::test]
async fn someone_elses_namespace_is_left_alone() {
    let c = setup().await;
    let name = unique("clash");
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let theirs: Namespace =
        serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {"team": "other"}}}))
            .unwrap();
    namespaces.create(&PostParams::default(), &theirs).await.unwrap();
    let customers: Api<Customer> = Api::all(c.clone());
    let yaml = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{deletionPolicy: Delete}}\n"
    );
    apply_yaml(&customers, &yaml).await.unwrap();
    let refused = wait_for(&customers, &name, SHORT, "a NameConflict condition", |cu| {
        ready_of(cu).is_some_and(|r| r.status == "False" && r.reason == "NameConflict")
    })
    .await;
    let ready = ready_of(&refused).cloned().unwrap();
    assert!(
        ready.message.contains("not managed by berth"),
        "{}",
        ready.message
    );
    assert!(!events_of(&c, &name, "NameConflict").await.is_empty());
    let ns = namespaces.get(&name).await.unwrap();
    assert!(ns.owner_references().is_empty());
    let expected: BTreeMap<String, String> =
        [("team", "other"), ("kubernetes.io/metadata.name", name.as_str())]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    assert_eq!(ns.labels(), &expected, "berth added nothing");
    assert!(
        Api::<ResourceQuota>::namespaced(c.clone(), &name)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );

    customers.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_gone(&customers, &name, SHORT).await;
    assert!(
        namespaces.get_opt(&name).await.unwrap().is_some(),
        "deleting the Customer did not delete their namespace"
    );
    namespaces.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn two_customers_naming_one_namespace_at_once_leave_it_to_exactly_one() {
    let c = setup().await;
    let ns_name = unique("race");
    let (a, b) = (unique("race-a"), unique("race-b"));
    let yaml = |name: &str| {
        format!(
            "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{namespace: {ns_name}, deletionPolicy: Delete}}\n"
        )
    };
    let customers: Api<Customer> = Api::all(c.clone());
    let (yaml_a, yaml_b) = (yaml(&a), yaml(&b));
    let (made_a, made_b) = tokio::join!(apply_yaml(&customers, &yaml_a), apply_yaml(&customers, &yaml_b));
    made_a.unwrap();
    made_b.unwrap();

    // One comes up, the other is told whose namespace it is; which is which is the race's to decide.
    let (winner, loser) = eventually(READY_WITHIN, "one Ready and one NameConflict", || async {
        let (x, y) = (customers.get(&a).await.ok()?, customers.get(&b).await.ok()?);
        let settled = |w: &Customer, l: &Customer| customer_ready(w) && refused_for(l, "NameConflict");
        if settled(&x, &y) {
            Some((x, y))
        } else if settled(&y, &x) {
            Some((y, x))
        } else {
            None
        }
    })
    .await;
    let namespaces: Api<Namespace> = Api::all(c.clone());
    let ns = namespaces.get(&ns_name).await.unwrap();
    assert_eq!(recorded_uid(&ns), winner.uid().as_deref());
    let owners: Vec<&str> = ns.owner_references().iter().map(|o| o.uid.as_str()).collect();
    assert_eq!(
        owners,
        [winner.uid().unwrap().as_str()],
        "owned by the winner alone"
    );
    assert_eq!(ns.labels().get("berth.dev/customer"), Some(&winner.name_any()));
    let ready = ready_of(&loser).cloned().unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "NameConflict")
    );
    assert!(
        ready
            .message
            .contains(&format!("belongs to Customer {}", winner.name_any())),
        "{}",
        ready.message
    );
    assert!(!events_of(&c, &loser.name_any(), "NameConflict").await.is_empty());
    assert!(
        events_of(&c, &loser.name_any(), "Created").await.is_empty(),
        "the loser never thought it had created the namespace"
    );
    assert!(!events_of(&c, &winner.name_any(), "Created").await.is_empty());

    // The loser first, so it cannot take the name once the winner's namespace is gone.
    customers
        .delete(&loser.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&customers, &loser.name_any(), SHORT).await;
    customers
        .delete(&winner.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    wait_gone(&namespaces, &ns_name, READY_WITHIN).await;
}

/// resourceVersion of every object of the tenant, keyed by kind/name.
async fn versions(c: &Client, customer: &str) -> BTreeMap<String, String> {
    use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
    use k8s_openapi::api::core::v1::{ConfigMap, Service};
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    async fn add<K>(out: &mut BTreeMap<String, String>, api: Api<K>)
    where
        K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    {
        for o in api.list(&ListParams::default()).await.unwrap().items {
            out.insert(
                format!("{}/{}", K::kind(&()), o.name_any()),
                o.resource_version().unwrap_or_default(),
            );
        }
    }
    let mut out = BTreeMap::new();
    let ns = customer;
    out.insert(
        "Customer".into(),
        Api::<Customer>::all(c.clone())
            .get(customer)
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
    );
    out.insert(
        "Namespace".into(),
        Api::<Namespace>::all(c.clone())
            .get(ns)
            .await
            .unwrap()
            .resource_version()
            .unwrap(),
    );
    add(&mut out, Api::<ResourceQuota>::namespaced(c.clone(), ns)).await;
    add(&mut out, Api::<LimitRange>::namespaced(c.clone(), ns)).await;
    add(&mut out, Api::<NetworkPolicy>::namespaced(c.clone(), ns)).await;
    add(&mut out, Api::<RoleBinding>::namespaced(c.clone(), ns)).await;
    add(&mut out, Api::<Database>::namespaced(c.clone(), ns)).await;
    add(&mut out, Api::<Scheduler>::namespaced(c.clone(), ns)).await;
    add(&mut out, Api::<StatefulSet>::namespaced(c.clone(), ns)).await;
    add(&mut out, Api::<Deployment>::namespaced(c.clone(), ns)).await;
    add(&mut out, Api::<Service>::namespaced(c.clone(), ns)).await;
    add(&mut out, Api::<ConfigMap>::namespaced(c.clone(), ns)).await;
    add(&mut out, Api::<Secret>::namespaced(c.clone(), ns)).await;
    add(&mut out, Api::<PodDisruptionBudget>::namespaced(c.clone(), ns)).await;
    out
}

#[tokio::test]
async fn converged_tenant_sees_no_writes_for_30_seconds() {
    let c = setup().await;
    let name = unique("steady");
    create(&c, &seed(&name, "Delete")).await;
    // Ready can arrive a moment before the last child's status settles; wait until two snapshots agree.
    let mut before = versions(&c, &name).await;
    let deadline = tokio::time::Instant::now() + SHORT;
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = versions(&c, &name).await;
        if now == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the tenant never settled: {before:?} -> {now:?}"
        );
        before = now;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = versions(&c, &name).await;
    let changed: Vec<&String> = after.keys().filter(|k| before.get(*k) != after.get(*k)).collect();
    assert!(changed.is_empty(), "written in steady state: {changed:?}");
    Api::<Customer>::all(c.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_refused_namespace_is_reported_in_status_and_events_until_it_is_allowed() {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let c = setup().await;
    let name = unique("refused");
    // An admission rule of the cluster's, refusing this one namespace.
    let policy: ValidatingAdmissionPolicy = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE", "UPDATE"],
                "resources": ["namespaces"]
            }]},
            "validations": [{
                "expression": format!("object.metadata.name != '{name}'"),
                "message": format!("namespace {name} is not allowed here")
            }]
        }
    }))
    .unwrap();
    let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]}
    }))
    .unwrap();
    let policies = Api::<ValidatingAdmissionPolicy>::all(c.clone());
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(c.clone());
    policies.create(&PostParams::default(), &policy).await.unwrap();
    bindings.create(&PostParams::default(), &binding).await.unwrap();
    // The API server loads a new policy a moment after it is stored.
    let namespaces = Api::<Namespace>::all(c.clone());
    let probe: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually(SHORT, "the policy in force", || async {
        namespaces.create(&dry_run, &probe).await.is_err().then_some(())
    })
    .await;

    let customers: Api<Customer> = Api::all(c.clone());
    let yaml = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{deletionPolicy: Delete}}\n"
    );
    apply_yaml(&customers, &yaml).await.unwrap();
    let refused = wait_for(&customers, &name, SHORT, "Ready=False, refused", |cu| {
        ready_of(cu).is_some_and(|r| r.status == "False" && r.message.contains("is not allowed here"))
    })
    .await;
    let ready = ready_of(&refused).cloned().unwrap();
    assert!(
        ["Rejected", "Forbidden"].contains(&ready.reason.as_str()),
        "{ready:?}"
    );
    assert!(
        !events_of(&c, &name, &ready.reason).await.is_empty(),
        "a Warning event says so too"
    );

    // Once the cluster allows it, the tenant comes up (the refused apply is retried with back-off).
    bindings.delete(&name, &DeleteParams::default()).await.unwrap();
    policies.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_for(&customers, &name, READY_WITHIN, "Ready", customer_ready).await;
    delete_with_namespace(&c, &name).await;
}

#[tokio::test]
async fn egress_is_restricted_to_dns_the_namespace_and_the_internet_on_request_and_opened_again() {
    let c = setup().await;
    let name = unique("egress");
    let yaml = |egress: &str| {
        format!(
            "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec:\n  deletionPolicy: Delete\n  network: {{egress: {egress}}}\n"
        )
    };
    let customer = create(&c, &yaml("Internet")).await;
    let policies = Api::<NetworkPolicy>::namespaced(c.clone(), &name);
    let np = eventually(SHORT, "restrict-egress", || async {
        policies.get_opt(names::RESTRICT_EGRESS).await.unwrap()
    })
    .await;
    assert!(owned_by(&np.metadata, &customer));
    let spec = np.spec.unwrap();
    assert_eq!(spec.policy_types, Some(vec!["Egress".to_owned()]));
    let blocks: Vec<_> = spec
        .egress
        .unwrap()
        .into_iter()
        .flat_map(|r| r.to.unwrap_or_default())
        .filter_map(|p| p.ip_block)
        .collect();
    assert!(
        blocks
            .iter()
            .any(|b| b.cidr == "0.0.0.0/0" && b.except.iter().flatten().any(|e| e == "169.254.0.0/16")),
        "the internet, without link-local (cloud metadata): {blocks:?}"
    );

    apply_yaml(&Api::<Customer>::all(c.clone()), &yaml("Unrestricted"))
        .await
        .unwrap();
    wait_gone(&policies, names::RESTRICT_EGRESS, SHORT).await;
    // An unknown value is refused by the API server with the values it accepts.
    let refused = refusal(
        Api::<Customer>::all(c.clone())
            .patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"network": {"egress": "Closed"}}})),
            )
            .await,
    );
    assert!(
        refused.contains("Closed") && refused.contains("Unrestricted") && refused.contains("Internet"),
        "{refused}"
    );
    delete_with_namespace(&c, &name).await;
}
