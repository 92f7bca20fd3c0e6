use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{DeletionPolicy, PoolSpec, UNIQUE_WORKFLOWS_MESSAGE, UNIQUE_WORKFLOWS_RULE, Workflow};
use crate::schema::quantity;
use crate::webhook::WebhookEndpoint;

const DNS_LABEL: &str = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A tenant. berth turns it into an isolated namespace with a database and a workflow scheduler.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Customer",
    status = "CustomerStatus",
    shortname = "cust",
    category = "berth",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Namespace","type":"string","jsonPath":".status.namespace"}"#,
    printcolumn = r#"{"name":"Database","type":"boolean","jsonPath":".spec.features.database.enabled"}"#,
    printcolumn = r#"{"name":"Scheduler","type":"boolean","jsonPath":".spec.features.scheduler.enabled"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","priority":1,"jsonPath":".status.summary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new(format!("has(self.spec.__namespace__) || (size(self.metadata.name) <= 63 && self.metadata.name.matches('{DNS_LABEL}'))"))
        .message("the Customer's name is used as its namespace, so it must be a DNS label (at most 63 lowercase letters, digits or '-'); choose another name or set spec.namespace"),
    // Checked here rather than retried forever by the controller: every child carries the name as a label
    // value, and the API server refuses a label value longer than 63 characters.
    validation = Rule::new("self.metadata.name.size() <= 63")
        .message("metadata.name must have at most 63 characters: a Customer's name is also the value of the label berth.dev/customer on everything berth makes for it; choose a shorter name such as big-client-0815"),
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.__namespace__) == has(oldSelf.__namespace__) && (!has(self.__namespace__) || self.__namespace__ == oldSelf.__namespace__)")
    .message("namespace is immutable: it cannot be set, changed or removed after the Customer is created"))]
pub struct CustomerSpec {
    #[serde(default)]
    pub features: Features,
    /// The tenant's namespace; defaults to the Customer's name. Immutable.
    #[schemars(length(max = 253))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(format!("size(self) <= 63 && self.matches('{DNS_LABEL}')"))
        .message("namespace must be a DNS label: at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit"))]
    pub namespace: Option<String>,
    /// Limits of the tenant's ResourceQuota.
    #[serde(default)]
    pub quota: Quota,
    /// Users and groups bound to the built-in `admin` ClusterRole inside the tenant namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub admins: Vec<AdminSubject>,
    /// Stop the tenant's workloads (database scaled to zero, no new workflow runs) without deleting data.
    #[serde(default)]
    pub suspend: bool,
    /// What happens to the namespace and its data when the Customer is deleted.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Network isolation beyond what every tenant gets (ingress from its own namespace only, and to its
    /// database servers from their pools only).
    #[serde(default)]
    pub network: Network,
    /// Take over the namespace, and the data in it, that an earlier Customer of this name left behind under
    /// `deletionPolicy: Retain`: that Customer's UID, as the namespace records it in its annotation
    /// `berth.dev/customer-uid`. Without it such a namespace is left untouched and reported
    /// (`NamespaceReady=False`, reason `RetainedNamespace`, naming the UID), so a new tenant that reuses a
    /// name never inherits an old tenant's data by accident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 36))]
    pub adopt_namespace_of: Option<String>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
pub struct Features {
    #[serde(default)]
    pub database: DatabaseFeature,
    #[serde(default)]
    pub scheduler: SchedulerFeature,
    #[serde(default)]
    pub webhooks: WebhooksFeature,
}

#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.enabled || has(self.storage)")
    .message("database.storage is required when the database is enabled (e.g. storage: 10Gi)"))]
pub struct DatabaseFeature {
    #[serde(default)]
    pub enabled: bool,
    /// Size of the PostgreSQL volume, a Kubernetes quantity such as `256Gi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    #[x_kube(validation = Rule::new(crate::schema::POSITIVE_QUANTITY_RULE)
        .message("storage must be a positive Kubernetes quantity such as 10Gi"))]
    pub storage: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolSpec>,
    /// Raise by one to give the tenant's app role a new password (the Database's `passwordRotation`).
    #[serde(default, skip_serializing_if = "crate::database::is_zero")]
    #[x_kube(validation = Rule::new("self >= 0").message(
        "database.passwordRotation must be 0 or more; raise it by one to rotate the app password (e.g. passwordRotation: 1)"
    ))]
    pub password_rotation: i32,
}

#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.workflows) || size(self.workflows) <= 64")
    .message("at most 64 workflows per tenant"))]
pub struct SchedulerFeature {
    #[serde(default)]
    pub enabled: bool,
    /// Workflow runs (Jobs) allowed at once across all of the tenant's workflows.
    #[serde(default = "default_workers")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 64").message("workers must be between 1 and 64"))]
    pub workers: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new(UNIQUE_WORKFLOWS_RULE).message(UNIQUE_WORKFLOWS_MESSAGE))]
    pub workflows: Vec<Workflow>,
}

fn default_workers() -> i32 {
    1
}

impl Default for SchedulerFeature {
    fn default() -> Self {
        Self {
            enabled: false,
            workers: default_workers(),
            workflows: Vec::new(),
        }
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    /// Where the tenant's pods may connect to. `Unrestricted` (the default): anywhere. `Internet`: the
    /// cluster's DNS, the pods of the tenant's own namespace, and public addresses only; not other
    /// namespaces, nodes, the API server, private or shared address ranges, or link-local addresses such
    /// as a cloud's metadata service.
    #[serde(default)]
    pub egress: Egress,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Egress {
    #[default]
    Unrestricted,
    Internet,
}

/// Signed notifications of what happens in the tenant, posted to the tenant's own endpoints.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhooksFeature {
    #[serde(default)]
    pub enabled: bool,
    /// At most 8, each with a unique name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new(crate::webhook::UNIQUE_ENDPOINTS_RULE)
        .message(crate::webhook::UNIQUE_ENDPOINTS_MESSAGE))]
    pub endpoints: Vec<WebhookEndpoint>,
    /// How long an undelivered event is retried, in seconds (default 86400, a day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new(crate::webhook::RETRY_FOR_RULE).message(crate::webhook::RETRY_FOR_MESSAGE))]
    pub retry_for_seconds: Option<i64>,
}

/// Hard limits of the tenant namespace. Unset fields get berth's defaults.
///
/// The object counts bound what a tenant can make the API server store and every controller watching
/// the kind cache. Their defaults leave room for what berth itself makes in the namespace; a value set
/// below that stops berth's own children from being created, and the Customer says so.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Quota {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    #[x_kube(validation = Rule::new(crate::schema::POSITIVE_QUANTITY_RULE)
        .message("quota.cpu must be a positive quantity such as 8 or 500m"))]
    pub cpu: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    #[x_kube(validation = Rule::new(crate::schema::POSITIVE_QUANTITY_RULE)
        .message("quota.memory must be a positive quantity such as 16Gi"))]
    pub memory: Option<Quantity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("quota.pods must be at least 1"))]
    pub pods: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "quantity")]
    #[x_kube(validation = Rule::new(crate::schema::POSITIVE_QUANTITY_RULE)
        .message("quota.storage must be a positive quantity such as 500Gi"))]
    pub storage: Option<Quantity>,
    /// Secrets (`count/secrets`; default 100). berth's database keeps 4 there: credentials, certificates,
    /// the pool's userlist, the connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("quota.secrets must not be negative"))]
    pub secrets: Option<i32>,
    /// ConfigMaps (`count/configmaps`; default 100). berth's database keeps 2 there, and Kubernetes
    /// publishes `kube-root-ca.crt` in every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("quota.configMaps must not be negative"))]
    pub config_maps: Option<i32>,
    /// Services (`count/services`; default 20). berth's database keeps 2 there. Services of type
    /// LoadBalancer or NodePort are never allowed: they would reach past the namespace's network policies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("quota.services must not be negative"))]
    pub services: Option<i32>,
    /// Jobs (`count/jobs.batch`; default 500), finished ones included. The scheduler keeps up to 64
    /// workflows' 4 finished runs each plus up to 64 running, and queues due runs as Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("quota.jobs must not be negative"))]
    pub jobs: Option<i32>,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminKind {
    User,
    Group,
}

/// A user or group made admin of the tenant namespace.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
pub struct AdminSubject {
    pub kind: AdminKind,
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("size(self) > 0 && size(self) <= 253").message("admin name must not be empty"))]
    pub name: String,
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CustomerStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The namespace berth created (or would create) for this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `Ready`, `NamespaceReady`, `DatabaseReady`, `SchedulerReady`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// One line for humans, e.g. `database ready, scheduler ready`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Digests of the children as berth last applied them and as the API server answered, one per child:
    /// an operator that restarts finds its children unchanged by comparing these with what it sees, instead
    /// of applying each again. Bookkeeping, not for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
}

/// The Customer's condition saying whether it is suspended: `True` (reason `Suspended`), or `False` with reason
/// `Active`, or [`RESUMED`] once a suspended Customer is resumed, so that moment is something others (the
/// webhooks) can tell, not only a change of spec.
pub const SUSPENDED: &str = "Suspended";
/// The reason of [`SUSPENDED`] after a suspension ended.
pub const RESUMED: &str = "Resumed";

impl Customer {
    /// The tenant namespace: `spec.namespace`, else the Customer's name.
    #[must_use]
    pub fn namespace_name(&self) -> String {
        self.spec
            .namespace
            .clone()
            .unwrap_or_else(|| kube::ResourceExt::name_any(self))
    }
}

impl berth_kit::pace::Progress for CustomerStatus {
    fn generation(&self) -> Option<i64> {
        self.observed_generation
    }

    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}
