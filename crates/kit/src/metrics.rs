//! Prometheus metrics, labelled only by bounded values: the controller and an error category or verb.

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
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

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
}
