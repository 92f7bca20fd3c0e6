use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{DeletionPolicy, PoolSpec};
use crate::schema::quantity;

/// A tenant's PostgreSQL server behind a pgbouncer connection pool.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Database",
    namespaced,
    status = "DatabaseStatus",
    shortname = "bdb",
    category = "berth",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Storage","type":"string","jsonPath":".spec.storage"}"#,
    printcolumn = r#"{"name":"Pool","type":"integer","jsonPath":".status.readyReplicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseSpec {
    /// Size of the PostgreSQL volume.
    #[schemars(schema_with = "quantity")]
    #[x_kube(validation = Rule::new(crate::schema::POSITIVE_QUANTITY_RULE)
        .message("storage must be a positive Kubernetes quantity such as 10Gi"))]
    pub storage: Quantity,
    /// StorageClass of the volume; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// PostgreSQL image; the operator's default (set in the Helm chart) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Resources of the PostgreSQL container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(default)]
    pub pool: PoolSpec,
    /// Scale the server and the pool to zero; volumes and credentials stay.
    #[serde(default)]
    pub suspend: bool,
    /// `Retain` keeps the volume and the credentials Secret when the Database is deleted, and sets the
    /// bound PersistentVolume's reclaim policy to `Retain`, so even deleting the namespace keeps the data.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// Raise by one to give the app role a new password. berth stores it in the credentials Secret,
    /// pgbouncer reloads it in place (open sessions stay), and the connection Secret follows;
    /// `status.passwordRotation` says when it has. 0 is the password the Database was created with.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[x_kube(validation = Rule::new("self >= 0").message(
        "passwordRotation must be 0 or more; raise it by one to rotate the app password (e.g. passwordRotation: 1)"
    ))]
    pub password_rotation: i32,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
pub(crate) fn is_zero(n: &i32) -> bool {
    *n == 0
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `ServerReady`, `PoolReady`, `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// `host:port` of the pool Service apps connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Secret with `DATABASE_URL` and its parts, pointing at the pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_secret: Option<String>,
    /// Available pgbouncer pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// The `spec.passwordRotation` whose password the credentials, the pool and the connection Secret hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_rotation: Option<i32>,
    /// Digests of the children as berth last applied them and as the API server answered, one per child:
    /// an operator that restarts finds its children unchanged by comparing these with what it sees, instead
    /// of applying each again. Bookkeeping, not for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
}

/// The Secret a Database publishes for apps (`DATABASE_URL` and its parts), also in its
/// `status.connectionSecret`: the one name other controllers and users may rely on.
#[must_use]
pub fn connection_secret(database: &str) -> String {
    format!("{database}-connection")
}

impl berth_kit::pace::Progress for DatabaseStatus {
    fn generation(&self) -> Option<i64> {
        self.observed_generation
    }

    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
}
