use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A tenant's webhook endpoints: berth posts signed notifications of what happens in the tenant to them,
/// retried until delivered or too old. Made by the Customer controller from `spec.features.webhooks`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "berth.dev",
    version = "v1alpha1",
    kind = "Webhook",
    namespaced,
    status = "WebhookStatus",
    shortname = "bhook",
    category = "berth",
    derive = "PartialEq",
    derive = "Default",
    printcolumn = r#"{"name":"Delivering","type":"integer","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Pending","type":"integer","jsonPath":".status.pending"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WebhookSpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new(UNIQUE_ENDPOINTS_RULE).message(UNIQUE_ENDPOINTS_MESSAGE))]
    pub endpoints: Vec<WebhookEndpoint>,
    /// How long an event is retried before berth gives up on it, in seconds (default one day).
    #[serde(default = "default_retry_for")]
    #[x_kube(validation = Rule::new(RETRY_FOR_RULE).message(RETRY_FOR_MESSAGE))]
    pub retry_for_seconds: i64,
}

pub(crate) const UNIQUE_ENDPOINTS_RULE: &str = "self.all(e, self.exists_one(o, o.name == e.name))";
pub(crate) const UNIQUE_ENDPOINTS_MESSAGE: &str = "webhook endpoint names must be unique";
pub(crate) const RETRY_FOR_RULE: &str = "self >= 10 && self <= 604800";
pub(crate) const RETRY_FOR_MESSAGE: &str =
    "retryForSeconds must be between 10 and 604800 (a week), e.g. retryForSeconds: 86400";

/// One day, the retry window receivers of other senders are used to.
#[must_use]
pub const fn default_retry_for() -> i64 {
    86_400
}

/// Where berth posts, and what.
#[derive(Serialize, Deserialize, KubeSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpoint {
    /// Names the endpoint in status and events: lowercase letters, digits and '-'.
    #[schemars(length(max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message(Message::Expression(
        "'endpoint name ' + self + ' must be lowercase letters, digits and \\'-\\', e.g. billing'".to_owned()
    )))]
    pub name: String,
    /// An absolute `https://` URL (`http://` only where the operator allows it). Addresses inside the
    /// cluster, on loopback or link-local (cloud metadata) are refused unless the operator allows private
    /// targets.
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(URL_RULE).message(Message::Expression(URL_MESSAGE.to_owned())))]
    pub url: String,
    /// The events sent to this endpoint; all of them when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    #[x_kube(validation = Rule::new("self.all(e, self.exists_one(o, o == e))").message("events must not repeat"))]
    pub events: Vec<WebhookEvent>,
    /// PEM certificates the endpoint's TLS certificate is checked against, instead of the public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
}

pub(crate) const URL_RULE: &str = "isURL(self) && url(self).getScheme() in ['https', 'http'] \
     && url(self).getHostname() != '' && !self.contains('#')";
pub(crate) const URL_MESSAGE: &str = "'url ' + self + ' must be an absolute https:// URL without a fragment, e.g. https://hooks.example.com/berth'";

/// Every kind of event berth sends. The list is closed so that a subscription is checked against it: a
/// misspelt event is refused, it does not silently match nothing.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WebhookEvent {
    WorkflowRunSucceeded,
    WorkflowRunFailed,
    WorkflowRunSkipped,
    DatabaseReady,
    DatabaseNotReady,
    CustomerReady,
    CustomerSuspended,
    CustomerResumed,
}

impl WebhookEvent {
    /// All of them, in a fixed order (for validation messages and documentation).
    pub const ALL: [Self; 8] = [
        Self::WorkflowRunSucceeded,
        Self::WorkflowRunFailed,
        Self::WorkflowRunSkipped,
        Self::DatabaseReady,
        Self::DatabaseNotReady,
        Self::CustomerReady,
        Self::CustomerSuspended,
        Self::CustomerResumed,
    ];

    /// The name a tenant writes in a subscription, and the suffix of the CloudEvents `type`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::WorkflowRunSucceeded => "WorkflowRunSucceeded",
            Self::WorkflowRunFailed => "WorkflowRunFailed",
            Self::WorkflowRunSkipped => "WorkflowRunSkipped",
            Self::DatabaseReady => "DatabaseReady",
            Self::DatabaseNotReady => "DatabaseNotReady",
            Self::CustomerReady => "CustomerReady",
            Self::CustomerSuspended => "CustomerSuspended",
            Self::CustomerResumed => "CustomerResumed",
        }
    }
}

impl fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WebhookEvent {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = Self::ALL.iter().map(|t| t.as_str()).collect();
            format!("unknown event type {s:?}; expected one of {}", known.join(", "))
        })
    }
}

#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: every endpoint delivers (or has nothing to deliver).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The Secret holding the signing key, once berth made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
    /// Endpoints whose last attempt succeeded, or that have had nothing to send.
    #[serde(default)]
    pub ready: i32,
    /// Events not yet delivered, over all endpoints.
    #[serde(default)]
    pub pending: i32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointStatus>,
    /// Events some endpoint is still owed, kept whole: the fact behind one can change before it is
    /// delivered (a Database not Ready, then Ready), and what is owed must not change with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub held: Vec<HeldEvent>,
}

/// An event as it will be sent.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HeldEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: WebhookEvent,
    pub subject: String,
    pub time: Time,
    /// The event's `data`, as JSON text.
    pub data: String,
}

/// What berth has delivered to one endpoint, and how the endpoint is doing. What was delivered is kept
/// here, in the cluster, so that a restarted or new leader sends only what is still pending.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EndpointStatus {
    pub name: String,
    /// Events that happened from this time on are sent: when the endpoint was first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// Ids of the events delivered or given up on, while the facts they report still exist in the tenant
    /// (an id is dropped with its fact, so the list stays as short as the tenant's history).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub settled: Vec<String>,
    #[serde(default)]
    pub pending: i32,
    #[serde(default)]
    pub consecutive_failures: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure_reason: Option<String>,
    /// When the pending events are tried again after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt: Option<Time>,
    /// Events given up on because they stayed undelivered longer than `retryForSeconds`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub expired: i64,
    /// The endpoint answered 410 Gone: nothing is sent to it until its URL changes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub gone: bool,
    /// The URL the fields above are about; a new URL starts the endpoint afresh.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(n: &i64) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_round_trip_and_unknown_ones_list_the_known() {
        for e in WebhookEvent::ALL {
            assert_eq!(e.as_str().parse::<WebhookEvent>(), Ok(e));
            assert_eq!(serde_json::to_value(e).unwrap(), e.as_str());
        }
        let err = "RunSucceeded".parse::<WebhookEvent>().unwrap_err();
        assert!(
            err.contains("\"RunSucceeded\"") && err.contains("WorkflowRunSucceeded"),
            "{err}"
        );
    }

    #[test]
    fn the_retry_window_defaults_to_a_day() {
        let spec: WebhookSpec = serde_json::from_value(serde_json::json!({})).unwrap();
        assert_eq!(spec.retry_for_seconds, 86_400);
    }
}
