//! Types shared by more than one kind: pool settings and workflows travel from the Customer down to the
//! Database and the Scheduler, so they are one type in both places.

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What happens to data when its owner is deleted.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeletionPolicy {
    /// Keep data-holding objects (the tenant namespace, volumes, credentials) after the owner is gone.
    #[default]
    Retain,
    /// Let garbage collection remove everything the owner created.
    Delete,
}

/// pgbouncer's `pool_mode`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// A server connection is held for the whole client session.
    Session,
    /// A server connection is held for one transaction (the usual choice for web apps).
    #[default]
    Transaction,
    /// A server connection is held for one statement; multi-statement transactions are refused.
    Statement,
}

impl PoolMode {
    /// The value pgbouncer expects in `pool_mode`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Session => "session",
            Self::Transaction => "transaction",
            Self::Statement => "statement",
        }
    }
}

/// The pgbouncer connection pool in front of a tenant's PostgreSQL.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.defaultPoolSize <= self.maxClientConnections")
    .message("pool.defaultPoolSize must not be larger than pool.maxClientConnections"))]
pub struct PoolSpec {
    /// How long a server connection stays with one client.
    #[serde(default)]
    pub mode: PoolMode,
    /// Server connections per database/user pair (pgbouncer `default_pool_size`).
    #[serde(default = "default_pool_size")]
    #[x_kube(validation = Rule::new("self >= 1").message("pool.defaultPoolSize must be at least 1"))]
    pub default_pool_size: i32,
    /// Client connections the pool accepts before refusing more (pgbouncer `max_client_conn`).
    #[serde(default = "default_max_client_connections")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100000")
        .message("pool.maxClientConnections must be between 1 and 100000"))]
    pub max_client_connections: i32,
    /// pgbouncer pods; two or more survive a node drain.
    #[serde(default = "default_pool_replicas")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 16").message("pool.replicas must be between 1 and 16"))]
    pub replicas: i32,
}

fn default_pool_size() -> i32 {
    20
}
fn default_max_client_connections() -> i32 {
    200
}
fn default_pool_replicas() -> i32 {
    2
}

impl Default for PoolSpec {
    fn default() -> Self {
        Self {
            mode: PoolMode::default(),
            default_pool_size: default_pool_size(),
            max_client_connections: default_max_client_connections(),
            replicas: default_pool_replicas(),
        }
    }
}

/// What a workflow does when its previous run is still active or queued.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ConcurrencyPolicy {
    /// Start the new run anyway (still bounded by the tenant's workers).
    #[default]
    Allow,
    /// Skip the new run.
    Forbid,
    /// Delete the previous run and start the new one.
    Replace,
}

/// Standard five-field cron or one of the `@hourly`-style macros.
const CRON_RULE: &str = r"self.matches('^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|[0-9A-Za-z*/,?-]+(\\s+[0-9A-Za-z*/,?-]+){4})$')";

/// One scheduled workflow of a tenant, run as a Kubernetes Job at each due time.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Workflow {
    /// Unique within the tenant; part of every Job name, so a DNS label of at most 40 characters.
    #[schemars(length(max = 40))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$') && size(self) <= 40")
        .message("workflow name must be lowercase letters, digits and '-', at most 40 characters"))]
    pub name: String,
    /// Cron schedule, five fields (`*/5 * * * *`) or a macro such as `@hourly`.
    #[schemars(length(max = 128))]
    #[x_kube(validation = Rule::new(CRON_RULE)
        .message("schedule must be a cron expression with five fields (e.g. '*/5 * * * *') or a macro such as '@hourly'"))]
    pub schedule: String,
    /// IANA time zone the schedule is read in (e.g. `Europe/Berlin`); UTC when unset.
    #[schemars(length(max = 64))]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Container image that runs the workflow.
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("size(self) > 0 && size(self) <= 512").message("image must not be empty"))]
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Retries of a failed run before the Job is marked failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0 && self <= 20").message("backoffLimit must be between 0 and 20"))]
    pub backoff_limit: Option<i32>,
    /// Longest time a run may take, counted from when it starts (not from when it was queued).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("activeDeadlineSeconds must be positive"))]
    pub active_deadline_seconds: Option<i64>,
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// A run missed by more than this (operator down) is skipped and counted, not started late.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("startingDeadlineSeconds must be positive"))]
    pub starting_deadline_seconds: Option<i64>,
}

/// Rule shared by every workflow list: names are Job name prefixes, so they must be unique.
pub(crate) const UNIQUE_WORKFLOWS_RULE: &str = "self.all(w, self.exists_one(o, o.name == w.name))";
pub(crate) const UNIQUE_WORKFLOWS_MESSAGE: &str = "workflow names must be unique";

/// The condition of `type_`, if present.
#[must_use]
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// `Some(true)` when the condition is `True`, `Some(false)` when it is present and not `True`.
#[must_use]
pub fn condition_status(conditions: &[Condition], type_: &str) -> Option<bool> {
    find_condition(conditions, type_).map(|c| c.status == "True")
}
