//! The local control plane is a real cluster: its controllers, scheduler, garbage collector and RBAC
//! behave as upstream Kubernetes does. Every later test relies on these facts.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use berth_e2e::{TestNamespace, client, wait_for, wait_gone};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;

const MINUTE: Duration = Duration::from_secs(60);

fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn deployment_reaches_two_ready_replicas() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "smoke-deploy").await;
    let deploy: Deployment = from_json(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}
            }
        }
    }));
    let api: Api<Deployment> = ns.api();
    api.create(&PostParams::default(), &deploy).await.unwrap();
    let ready = |d: &Deployment| d.status.as_ref().and_then(|s| s.ready_replicas) == Some(2);
    wait_for(&api, "web", MINUTE, "2 ready replicas", ready).await;
    ns.delete().await;
}

#[tokio::test]
async fn job_completes() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "smoke-job").await;
    let job: Job = from_json(json!({
        "metadata": {"name": "once"},
        "spec": {
            "completions": 1,
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}
        }
    }));
    let api: Api<Job> = ns.api();
    api.create(&PostParams::default(), &job).await.unwrap();
    let complete = |j: &Job| {
        j.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Complete" && c.status == "True"))
    };
    wait_for(&api, "once", MINUTE, "Complete", complete).await;
    ns.delete().await;
}

#[tokio::test]
async fn garbage_collector_removes_dependents_of_a_deleted_owner() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "smoke-gc").await;
    let cms: Api<ConfigMap> = ns.api();
    let owner = cms
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "owner"}})),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = ns.api();
    let mut dependent: Secret = from_json(json!({"metadata": {"name": "dependent"}}));
    dependent.metadata.owner_references = Some(vec![owner.controller_owner_ref(&()).unwrap()]);
    secrets.create(&PostParams::default(), &dependent).await.unwrap();
    cms.delete("owner", &DeleteParams::default()).await.unwrap();
    wait_gone(&secrets, "dependent", MINUTE).await;
    ns.delete().await;
}

#[tokio::test]
async fn rbac_refuses_what_a_role_does_not_grant() {
    let c = client().await;
    let ns = TestNamespace::new(&c, "smoke-rbac").await;
    let sa: ServiceAccount = ns
        .api()
        .create(
            &PostParams::default(),
            &from_json(json!({"metadata": {"name": "narrow"}})),
        )
        .await
        .unwrap();
    let role: Role = from_json(json!({
        "metadata": {"name": "read-configmaps"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]
    }));
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = from_json(json!({
        "metadata": {"name": "narrow"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-configmaps"},
        "subjects": [{"kind": "ServiceAccount", "name": "narrow", "namespace": ns.name}]
    }));
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    let kubeconfig = std::env::temp_dir().join(format!("{}.kubeconfig", ns.name));
    berth_e2e::service_account_kubeconfig(&c, &ns.name, &sa.name_any(), 1, &kubeconfig).await;
    let narrow = berth_e2e::client_from(&kubeconfig).await;
    let allowed: Api<ConfigMap> = Api::namespaced(narrow.clone(), &ns.name);
    berth_e2e::eventually(MINUTE, "the RoleBinding to take effect", || async {
        allowed.list(&Default::default()).await.ok()
    })
    .await;
    let refused = Api::<Secret>::namespaced(narrow.clone(), &ns.name)
        .list(&Default::default())
        .await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{refused:?}"
    );
    let elsewhere = Api::<ConfigMap>::namespaced(narrow, "default")
        .list(&Default::default())
        .await;
    assert!(
        matches!(elsewhere, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{elsewhere:?}"
    );
    ns.delete().await;
}
