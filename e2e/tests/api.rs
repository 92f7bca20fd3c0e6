//! The CRDs on a real API server: they install, the examples are accepted, and bad input is refused at
//! apply time with a message a person understands.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use berth_api::{Customer, Database, Scheduler};
use berth_e2e::{TestNamespace, apply_yaml, client, install_crds, refusal, unique};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Client, ResourceExt};

async fn ready_client() -> Client {
    let c = client().await;
    install_crds(&c).await.unwrap();
    c
}

/// Dry-run apply of raw YAML (so values the Rust types cannot even hold reach the API server):
/// validation and admission run in full, nothing is stored.
async fn dry_run(c: &Client, yaml: &str) -> Result<Customer, kube::Error> {
    let api: Api<DynamicObject> = Api::all_with(c.clone(), &ApiResource::erase::<Customer>(&()));
    let obj: DynamicObject = serde_yaml::from_str(yaml).unwrap();
    let stored = api
        .patch(
            &obj.name_any(),
            &PatchParams::apply("berth-e2e").dry_run(),
            &Patch::Apply(&obj),
        )
        .await?;
    Ok(serde_json::from_value(serde_json::to_value(stored).unwrap()).unwrap())
}

fn example(file: &str) -> String {
    std::fs::read_to_string(berth_e2e::repo().join("examples").join(file)).unwrap()
}

#[tokio::test]
async fn shipped_examples_are_accepted() {
    let c = ready_client().await;
    let seed = dry_run(&c, &example("customer.yaml")).await.unwrap();
    assert_eq!(seed.spec.features.scheduler.workers, 4);
    let full = dry_run(&c, &example("customer-full.yaml")).await.unwrap();
    assert_eq!(
        full.spec.features.database.pool.unwrap().max_client_connections,
        500
    );
}

#[tokio::test]
async fn api_server_applies_the_schema_defaults() {
    let c = ready_client().await;
    let name = unique("defaults");
    let stored = dry_run(&c, &format!("apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{features: {{database: {{enabled: true, storage: 1Gi, pool: {{}}}}}}}}\n")).await.unwrap();
    let pool = stored.spec.features.database.pool.unwrap();
    assert_eq!(
        (pool.default_pool_size, pool.max_client_connections, pool.replicas),
        (20, 200, 2)
    );
    assert_eq!(stored.spec.deletion_policy, berth_api::DeletionPolicy::Retain);
}

/// (what is wrong, the spec, words the user must read in the refusal)
const BAD: &[(&str, &str, &str)] = &[
    (
        "no workers",
        "features: {scheduler: {enabled: true, workers: 0}}",
        "workers must be between 1 and 64",
    ),
    (
        "too many workers",
        "features: {scheduler: {enabled: true, workers: 65}}",
        "workers must be between 1 and 64",
    ),
    (
        "storage is not a quantity",
        "features: {database: {enabled: true, storage: lots}}",
        "storage must be a positive Kubernetes quantity",
    ),
    (
        "zero storage",
        "features: {database: {enabled: true, storage: '0'}}",
        "storage must be a positive Kubernetes quantity",
    ),
    (
        "database without storage",
        "features: {database: {enabled: true}}",
        "database.storage is required",
    ),
    (
        "unknown deletion policy",
        "deletionPolicy: Maybe",
        "Unsupported value: \"Maybe\"",
    ),
    (
        "namespace too long",
        "namespace: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "namespace must be a DNS label",
    ),
    (
        "namespace with capitals",
        "namespace: Tenant_One",
        "namespace must be a DNS label",
    ),
    (
        "duplicate workflow names",
        "features: {scheduler: {enabled: true, workflows: [{name: a, schedule: '@hourly', image: x}, {name: a, schedule: '@daily', image: y}]}}",
        "workflow names must be unique",
    ),
    (
        "invalid cron",
        "features: {scheduler: {enabled: true, workflows: [{name: a, schedule: 'every tuesday', image: x}]}}",
        "schedule must be a cron expression",
    ),
    (
        "cron with six fields",
        "features: {scheduler: {enabled: true, workflows: [{name: a, schedule: '0 0 * * * *', image: x}]}}",
        "schedule must be a cron expression",
    ),
    (
        "pool larger than its connection limit",
        "features: {database: {enabled: true, storage: 1Gi, pool: {defaultPoolSize: 50, maxClientConnections: 10}}}",
        "pool.defaultPoolSize must not be larger than pool.maxClientConnections",
    ),
    (
        "negative quota",
        "quota: {cpu: '-1'}",
        "quota.cpu must be a positive quantity",
    ),
    (
        "negative password rotation",
        "features: {database: {enabled: true, storage: 1Gi, passwordRotation: -1}}",
        "raise it by one to rotate the app password (e.g. passwordRotation: 1)",
    ),
    (
        "webhook url that is no URL, echoed",
        "features: {webhooks: {enabled: true, endpoints: [{name: ops, url: 'hooks.example.com/b'}]}}",
        "url hooks.example.com/b must be an absolute https:// URL without a fragment, e.g. https://hooks.example.com/berth",
    ),
    (
        "webhook url of another scheme",
        "features: {webhooks: {enabled: true, endpoints: [{name: ops, url: 'ftp://hooks.example.com/b'}]}}",
        "url ftp://hooks.example.com/b must be an absolute https:// URL",
    ),
    (
        "unknown webhook event, with the known ones",
        "features: {webhooks: {enabled: true, endpoints: [{name: ops, url: 'https://h.example.com', events: [RunFailed]}]}}",
        "Unsupported value: \"RunFailed\": supported values: \"WorkflowRunSucceeded\"",
    ),
    (
        "two webhook endpoints of one name",
        "features: {webhooks: {enabled: true, endpoints: [{name: ops, url: 'https://a.example.com'}, {name: ops, url: 'https://b.example.com'}]}}",
        "webhook endpoint names must be unique",
    ),
    (
        "webhook endpoint name that is no DNS label, echoed",
        "features: {webhooks: {enabled: true, endpoints: [{name: Ops_1, url: 'https://a.example.com'}]}}",
        "endpoint name Ops_1 must be lowercase letters, digits and '-', e.g. billing",
    ),
    (
        "webhook retry window too short",
        "features: {webhooks: {enabled: true, retryForSeconds: 1}}",
        "retryForSeconds must be between 10 and 604800 (a week), e.g. retryForSeconds: 86400",
    ),
];

#[tokio::test]
async fn bad_input_is_refused_with_a_clear_message() {
    let c = ready_client().await;
    let mut failures = Vec::new();
    for (what, spec, message) in BAD {
        let yaml = format!(
            "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {}}}\nspec: {{{spec}}}\n",
            unique("bad")
        );
        match dry_run(&c, &yaml).await {
            Err(kube::Error::Api(s)) if s.message.contains(message) => {}
            other => failures.push(format!(
                "{what}: expected a refusal saying {message:?}, got {other:?}"
            )),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn customer_name_must_fit_a_namespace_unless_one_is_given() {
    let c = ready_client().await;
    let long = format!("{}-{}", "x".repeat(60), unique("n"));
    let msg = refusal(
        dry_run(
            &c,
            &format!(
                "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {long}}}\nspec: {{}}\n"
            ),
        )
        .await,
    );
    assert!(msg.contains("used as its namespace"), "{msg}");
    // Even with a namespace of its own, the name is a label value everywhere: at most 63 characters.
    let msg = refusal(dry_run(&c, &format!("apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {long}}}\nspec: {{namespace: short}}\n")).await);
    assert!(msg.contains("at most 63 characters"), "{msg}");
    assert!(msg.contains("such as big-client-0815"), "{msg}");
    let u = unique("n");
    let longest = format!("{}-{u}", "x".repeat(62 - u.len()));
    assert_eq!(longest.len(), 63);
    dry_run(&c, &format!("apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {longest}}}\nspec: {{namespace: short}}\n")).await.unwrap();
}

#[tokio::test]
async fn namespace_cannot_change_after_creation() {
    let c = ready_client().await;
    let api: Api<Customer> = Api::all(c.clone());
    let name = unique("immutable");
    let create = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{namespace: {name}-a, deletionPolicy: Delete}}\n"
    );
    apply_yaml(&api, &create).await.unwrap();
    let change = create.replace(&format!("{name}-a"), &format!("{name}-b"));
    let msg = refusal(apply_yaml(&api, &change).await);
    assert!(msg.contains("namespace is immutable"), "{msg}");
    let unset = format!(
        "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{deletionPolicy: Delete}}\n"
    );
    let msg = refusal(apply_yaml(&api, &unset).await);
    assert!(msg.contains("namespace is immutable"), "{msg}");
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn namespaced_kinds_validate_too() {
    let c = ready_client().await;
    let ns = TestNamespace::new(&c, "api-ns").await;
    let dbs: Api<Database> = ns.api();
    let msg = refusal(apply_yaml(&dbs, "apiVersion: berth.dev/v1alpha1\nkind: Database\nmetadata: {name: d}\nspec: {storage: 1Gi, pool: {replicas: 0}}\n").await);
    assert!(msg.contains("pool.replicas must be between 1 and 16"), "{msg}");
    let scheds: Api<Scheduler> = ns.api();
    let msg = refusal(apply_yaml(&scheds, "apiVersion: berth.dev/v1alpha1\nkind: Scheduler\nmetadata: {name: s}\nspec: {workers: 3, successfulJobsHistoryLimit: -1}\n").await);
    assert!(
        msg.contains("successfulJobsHistoryLimit must be between 0 and 100"),
        "{msg}"
    );
    ns.delete().await;
}

#[tokio::test]
async fn kubectl_shows_the_printer_columns() {
    let c = ready_client().await;
    let api: Api<Customer> = Api::all(c.clone());
    let name = unique("columns");
    apply_yaml(&api, &format!("apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {{name: {name}}}\nspec: {{deletionPolicy: Delete, features: {{scheduler: {{enabled: true, workers: 2}}}}}}\n")).await.unwrap();
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new(berth_e2e::tool("kubectl"))
            .args(["--kubeconfig", berth_e2e::kubeconfig().to_str().unwrap()])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = kubectl(&["get", "customers", &name]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "NAMESPACE", "DATABASE", "SCHEDULER", "READY", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(&row[..1], [name.as_str()]);
    assert!(
        row.contains(&"false") && row.contains(&"true"),
        "database off, scheduler on: {table}"
    );
    let short = kubectl(&["get", "cust", &name, "-o", "name"]);
    assert_eq!(short.trim(), format!("customer.berth.dev/{name}"));
    let category = kubectl(&["get", "berth", "-A", "-o", "name"]);
    assert!(
        category.contains(&format!("customer.berth.dev/{name}")),
        "{category}"
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}
