//! Prometheus metrics, labelled only by bounded values: the controller, an error category or verb, and for
//! the per-tenant series the names of objects berth owns (bounded by the Customers a cluster has, and by the
//! 64 workflows a Scheduler may hold). A per-tenant series is removed when its object goes.

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub category: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub controller: &'static str,
    pub verb: &'static str,
}

/// A request by Kubernetes verb, resource (`databases`, `jobs/status`, ...: bounded by the kinds berth
/// reads and writes) and scope (`cluster`-wide, or inside one `namespace`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub verb: &'static str,
    pub resource: String,
    pub scope: &'static str,
}

/// A webhook delivery attempt by result: `delivered`, `failed` (retried later), `gone` (410) or `expired`
/// (given up after the retry window).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub result: &'static str,
}

/// One tenant, by its Customer's name.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CustomerLabel {
    pub customer: String,
}

/// A Scheduler's runs in one state: `running` or `queued`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SchedulerRunLabels {
    pub namespace: String,
    pub scheduler: String,
    pub state: &'static str,
}

/// One workflow's runs that ended one way: `succeeded` or `failed`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkflowLabels {
    pub namespace: String,
    pub scheduler: String,
    pub workflow: String,
    pub result: &'static str,
}

/// An HTTP version as the API server answered in it: `HTTP/1.1` or `HTTP/2.0`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VersionLabel {
    pub version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
}

/// Every metric berth exports. One instance per process, shared by the controllers.
#[derive(Clone)]
pub struct Metrics {
    pub reconciles: Family<ControllerLabel, Counter>,
    pub errors: Family<ErrorLabels, Counter>,
    pub duration: Family<ControllerLabel, Histogram>,
    pub in_flight: Family<ControllerLabel, Gauge>,
    pub managed: Family<ControllerLabel, Gauge>,
    pub writes: Family<WriteLabels, Counter>,
    pub requests: Family<RequestLabels, Counter>,
    pub leader: Gauge,
    pub webhook_deliveries: Family<DeliveryLabels, Counter>,
    /// From the moment the event happened to its delivery: what a receiver waits.
    pub webhook_latency: Histogram,
    /// 1 while the tenant's Customer is `Ready`, 0 while it is not; gone with the Customer.
    pub customer_ready: Family<CustomerLabel, Gauge>,
    /// Runs per Scheduler and state, as its last status says.
    pub scheduler_runs: Family<SchedulerRunLabels, Gauge>,
    /// When a workflow's newest run of each result ended, in Unix seconds (its status'
    /// `lastSuccessfulTime` / `lastFailedTime`).
    pub workflow_last_finish: Family<WorkflowLabels, Gauge>,
    /// Requests the API server answered with 429 Too Many Requests (API Priority and Fairness).
    pub api_throttled: Family<RequestLabels, Counter>,
    /// Answers to the per-namespace watches' requests, by the HTTP version they came in: whether those
    /// watches share connections (HTTP/2) or hold one each.
    pub watch_responses: Family<VersionLabel, Counter>,
    build: Family<BuildLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
            }),
            in_flight: Family::default(),
            managed: Family::default(),
            writes: Family::default(),
            requests: Family::default(),
            leader: Gauge::default(),
            webhook_deliveries: Family::default(),
            webhook_latency: Histogram::new([
                0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 86400.0,
            ]),
            customer_ready: Family::default(),
            scheduler_runs: Family::default(),
            workflow_last_finish: Family::default(),
            api_throttled: Family::default(),
            watch_responses: Family::default(),
            build: Family::default(),
        }
    }
}

impl Metrics {
    /// Registers everything under the `berth_` prefix.
    #[must_use]
    pub fn register(self, registry: &mut Registry) -> Arc<Self> {
        let r = registry.sub_registry_with_prefix("berth");
        r.register("reconciles", "Reconciles started", self.reconciles.clone());
        r.register(
            "reconcile_errors",
            "Reconciles that failed, by error category",
            self.errors.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Time a reconcile took",
            self.duration.clone(),
        );
        r.register(
            "reconciles_in_flight",
            "Reconciles running now",
            self.in_flight.clone(),
        );
        r.register(
            "managed_objects",
            "Objects of the controller's kind in its cache",
            self.managed.clone(),
        );
        r.register(
            "api_writes",
            "Writes to the API server, by verb",
            self.writes.clone(),
        );
        r.register(
            "api_requests",
            "Every request the process sent to the API server, by verb and resource",
            self.requests.clone(),
        );
        r.register(
            "leader",
            "1 while this process holds the leader Lease",
            self.leader.clone(),
        );
        r.register(
            "webhook_deliveries",
            "Webhook delivery attempts, by result",
            self.webhook_deliveries.clone(),
        );
        r.register(
            "webhook_delivery_latency_seconds",
            "Time from an event to its delivery",
            self.webhook_latency.clone(),
        );
        r.register(
            "customer_ready",
            "1 while the Customer is Ready, 0 while it is not",
            self.customer_ready.clone(),
        );
        r.register(
            "scheduler_runs",
            "Workflow runs of a Scheduler, by state (running, queued)",
            self.scheduler_runs.clone(),
        );
        r.register(
            "workflow_last_finish_timestamp_seconds",
            "When the newest run of a workflow ended, by result (succeeded, failed)",
            self.workflow_last_finish.clone(),
        );
        r.register(
            "api_throttled",
            "Requests the API server refused with 429 Too Many Requests",
            self.api_throttled.clone(),
        );
        r.register(
            "watch_responses",
            "Answers to the per-namespace watches' requests, by HTTP version",
            self.watch_responses.clone(),
        );
        r.register("build_info", "Version of the running binary", self.build.clone());
        self.build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        Arc::new(self)
    }

    /// Counts a reconcile and times it until the guard drops, whatever way the reconcile ends.
    #[must_use]
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer {
        let label = ControllerLabel { controller };
        self.reconciles.get_or_create(&label).inc();
        self.in_flight.get_or_create(&label).inc();
        ReconcileTimer {
            metrics: self.clone(),
            label,
            start: Instant::now(),
        }
    }
}

pub struct ReconcileTimer {
    metrics: Metrics,
    label: ControllerLabel,
    start: Instant,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.metrics.in_flight.get_or_create(&self.label).dec();
        self.metrics
            .duration
            .get_or_create(&self.label)
            .observe(self.start.elapsed().as_secs_f64());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    /// The registry as Prometheus would scrape it, with a sample in every family: an empty family is not
    /// encoded at all. Destructured without `..`, so a new metric cannot be left out.
    pub(crate) fn encoded_with_every_family() -> String {
        let mut registry = Registry::default();
        let m = Metrics::default().register(&mut registry);
        let Metrics {
            reconciles,
            errors,
            duration,
            in_flight,
            managed,
            writes,
            requests,
            leader,
            webhook_deliveries,
            webhook_latency,
            customer_ready,
            scheduler_runs,
            workflow_last_finish,
            api_throttled,
            watch_responses,
            build: _,
        } = m.as_ref();
        let controller = ControllerLabel { controller: "c" };
        let request = RequestLabels {
            verb: "get",
            resource: "r".to_owned(),
            scope: "cluster",
        };
        reconciles.get_or_create(&controller).inc();
        errors
            .get_or_create(&ErrorLabels {
                controller: "c",
                category: "Internal",
            })
            .inc();
        duration.get_or_create(&controller).observe(1.0);
        in_flight.get_or_create(&controller).set(1);
        managed.get_or_create(&controller).set(1);
        writes
            .get_or_create(&WriteLabels {
                controller: "c",
                verb: "patch",
            })
            .inc();
        requests.get_or_create(&request).inc();
        watch_responses
            .get_or_create(&VersionLabel {
                version: "HTTP/2.0".to_owned(),
            })
            .inc();
        leader.set(1);
        webhook_deliveries
            .get_or_create(&DeliveryLabels { result: "delivered" })
            .inc();
        webhook_latency.observe(1.0);
        customer_ready
            .get_or_create(&CustomerLabel {
                customer: "t".to_owned(),
            })
            .set(1);
        scheduler_runs
            .get_or_create(&SchedulerRunLabels {
                namespace: "t".to_owned(),
                scheduler: "s".to_owned(),
                state: "queued",
            })
            .set(1);
        workflow_last_finish
            .get_or_create(&WorkflowLabels {
                namespace: "t".to_owned(),
                scheduler: "s".to_owned(),
                workflow: "w".to_owned(),
                result: "failed",
            })
            .set(1);
        api_throttled.get_or_create(&request).inc();
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn reconcile_guard_counts_and_times() {
        let mut registry = Registry::default();
        let m = Metrics::default().register(&mut registry);
        drop(m.reconcile("customer"));
        let _running = m.reconcile("customer");
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(
            out.contains("berth_reconciles_total{controller=\"customer\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("berth_reconciles_in_flight{controller=\"customer\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("berth_reconcile_duration_seconds_count{controller=\"customer\"} 1"),
            "{out}"
        );
    }

    #[test]
    fn per_tenant_series_are_named_as_the_alert_rules_expect() {
        let mut registry = Registry::default();
        let m = Metrics::default().register(&mut registry);
        let tenant = CustomerLabel {
            customer: "acme".to_owned(),
        };
        m.customer_ready.get_or_create(&tenant).set(0);
        m.scheduler_runs
            .get_or_create(&SchedulerRunLabels {
                namespace: "acme".to_owned(),
                scheduler: "scheduler".to_owned(),
                state: "queued",
            })
            .set(3);
        m.workflow_last_finish
            .get_or_create(&WorkflowLabels {
                namespace: "acme".to_owned(),
                scheduler: "scheduler".to_owned(),
                workflow: "nightly".to_owned(),
                result: "failed",
            })
            .set(1_764_000_000);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        for line in [
            "berth_customer_ready{customer=\"acme\"} 0",
            "berth_scheduler_runs{namespace=\"acme\",scheduler=\"scheduler\",state=\"queued\"} 3",
            "berth_workflow_last_finish_timestamp_seconds{namespace=\"acme\",scheduler=\"scheduler\",workflow=\"nightly\",result=\"failed\"} 1764000000",
        ] {
            assert!(out.contains(line), "{line} missing from\n{out}");
        }
        // A deleted tenant's series goes with it.
        m.customer_ready.remove(&tenant);
        let mut out = String::new();
        encode(&mut out, &registry).unwrap();
        assert!(!out.contains("customer=\"acme\""), "{out}");
    }
}
