//! What the floor and berth are measured by alike, so that their figures compare: the time from the
//! first write until every tenant is Ready, the watch events on the tenants' objects, and the CPU the
//! control plane spends meanwhile.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use serde::Serialize;
use tokio::task::JoinHandle;

use super::sys::{self, Meters};
use super::track::{Tracker, percentile};
use super::{Config, Tenants, events, log};
use crate::metrics::Scrape;

/// The process that does a phase's writes: the bench itself for the floor, berth for berth.
#[derive(Clone, Copy, Debug)]
pub struct Writer {
    pub pid: u32,
    /// berth counts its own writes in its metrics; the floor counts them itself.
    pub metrics_port: Option<u16>,
}

/// The counters at one moment of a phase; figures are differences of two.
#[derive(Debug)]
pub struct Snapshot {
    components: BTreeMap<&'static str, f64>,
    cpu: Option<f64>,
    pub rss_kib: Option<u64>,
    pub peak_rss_kib: Option<u64>,
    pub events: BTreeMap<String, u64>,
    pub metrics: Scrape,
}

impl Snapshot {
    fn take(meters: &Meters, writer: Writer, events: &events::Counts) -> anyhow::Result<Self> {
        Ok(Self {
            components: meters.components(),
            cpu: meters.cpu_seconds(writer.pid),
            rss_kib: sys::status_kib(writer.pid, "VmRSS"),
            peak_rss_kib: sys::status_kib(writer.pid, "VmHWM"),
            events: events::snapshot(events),
            metrics: writer
                .metrics_port
                .map(Scrape::fetch)
                .transpose()?
                .unwrap_or_default(),
        })
    }

    /// The writer's CPU seconds since `earlier`.
    #[must_use]
    pub fn cpu_since(&self, earlier: &Self) -> Option<f64> {
        Some(self.cpu? - earlier.cpu?)
    }

    /// Each component's CPU seconds since `earlier`.
    #[must_use]
    pub fn components_since(&self, earlier: &Self) -> BTreeMap<String, f64> {
        sys::delta(&earlier.components, &self.components)
    }

    /// Watch events per kind since `earlier`, kinds without any left out.
    #[must_use]
    pub fn events_since(&self, earlier: &Self) -> BTreeMap<String, u64> {
        self.events
            .iter()
            .map(|(k, v)| (k.clone(), v - earlier.events.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect()
    }
}

/// One phase from its first write until every tenant is Ready (or the timeout). Dropping it stops its
/// watches.
pub struct Phase {
    tenants: &'static Tenants,
    n: usize,
    timeout: Duration,
    /// Tenants become ready in it through the watches the phase is given ([`Phase::watch`]).
    pub ready: Arc<Tracker>,
    /// A tenant is "created" here once its last child exists.
    created: Arc<Tracker>,
    events: events::Counts,
    watches: Vec<JoinHandle<()>>,
    meters: Meters,
    writer: Writer,
    pub start: Snapshot,
    issued_in: f64,
    complete: bool,
}

/// What both phases report under the same keys.
#[derive(Debug, Serialize)]
pub struct PhaseReport {
    /// Until the last tenant was Ready; `None` when not all were.
    pub t_seconds: Option<f64>,
    pub complete: bool,
    pub ready: usize,
    /// How long issuing the writes took.
    pub create_seconds: f64,
    pub latency_seconds: Latency,
    pub all_objects_exist_seconds: Option<f64>,
    pub watch_events_by_kind: BTreeMap<String, u64>,
    pub components_cpu_seconds: BTreeMap<String, f64>,
    /// When each tenant became Ready, ascending; the report keeps them apart, as `ready_curves`.
    #[serde(skip)]
    pub curve: Vec<f64>,
}

/// Create → Ready per tenant.
#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

impl Phase {
    /// Starts counting: `parts` are the [`Tracker`] bits that make one of `tenants` ready.
    pub fn start(
        client: &Client,
        tenants: &'static Tenants,
        parts: u8,
        cfg: &Config,
        meters: &Meters,
        writer: Writer,
    ) -> anyhow::Result<Self> {
        // Both trackers start together, so "every object exists" and "Ready" share one clock.
        let ready = Arc::new(Tracker::new(tenants.prefix, parts));
        let created = Arc::new(Tracker::new(tenants.prefix, 1));
        let (events, watches) = events::count(
            client,
            tenants.prefix,
            tenants
                .children
                .map_or_else(berth_kit::labels::managed_selector, str::to_owned),
            &created,
        );
        let start = Snapshot::take(meters, writer, &events)?;
        Ok(Self {
            tenants,
            n: cfg.n,
            timeout: cfg.timeout,
            ready,
            created,
            events,
            watches,
            meters: meters.clone(),
            writer,
            start,
            issued_in: 0.0,
            complete: false,
        })
    }

    /// Watches of the phase's own that mark tenants ready; they stop with the phase.
    pub fn watch(&mut self, handles: impl IntoIterator<Item = JoinHandle<()>>) {
        self.watches.extend(handles);
    }

    /// Runs the phase's writes and times them.
    pub async fn issue<T>(&mut self, writes: impl Future<Output = T>) -> T {
        let t0 = self.ready.elapsed();
        let out = writes.await;
        self.issued_in = self.ready.elapsed() - t0;
        out
    }

    #[must_use]
    pub fn issued_in(&self) -> f64 {
        self.issued_in
    }

    /// Waits until every tenant is ready, logging progress every 15 s; gives up after the timeout and
    /// reports what was reached.
    pub async fn converge(&mut self) {
        let (phase, n) = (self.tenants.phase, self.n);
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if self.ready.wait_for(n, left.min(Duration::from_secs(15))).await {
                self.complete = true;
                return;
            }
            let (count, elapsed) = (self.ready.ready_count(), self.ready.elapsed());
            log(&format!("{phase}: {count}/{n} ready after {elapsed:.0}s"));
            if tokio::time::Instant::now() >= deadline {
                log(&format!("{phase}: timed out; reporting what was reached"));
                return;
            }
        }
    }

    pub fn snapshot(&self) -> anyhow::Result<Snapshot> {
        Snapshot::take(&self.meters, self.writer, &self.events)
    }

    /// The phase's figures now, and the snapshot they end at.
    pub fn finish(&self) -> anyhow::Result<(PhaseReport, Snapshot)> {
        let end = self.snapshot()?;
        let outcomes = self.ready.outcomes();
        let mut curve: Vec<f64> = outcomes.iter().filter_map(|o| o.ready).collect();
        curve.sort_by(f64::total_cmp);
        let mut latency: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| Some(o.ready? - o.created?))
            .collect();
        latency.sort_by(f64::total_cmp);
        let report = PhaseReport {
            t_seconds: curve.last().copied().filter(|_| curve.len() >= self.n),
            complete: self.complete,
            ready: curve.len(),
            create_seconds: self.issued_in,
            latency_seconds: Latency {
                p50: percentile(&latency, 50.0),
                p95: percentile(&latency, 95.0),
                p99: percentile(&latency, 99.0),
                max: latency.last().copied(),
            },
            all_objects_exist_seconds: all_exist(&self.created, self.n),
            watch_events_by_kind: end.events.clone(),
            components_cpu_seconds: end.components_since(&self.start),
            curve,
        };
        Ok((report, end))
    }
}

impl Drop for Phase {
    fn drop(&mut self) {
        for w in &self.watches {
            w.abort();
        }
    }
}

/// When the last tenant's last child appeared.
fn all_exist(created: &Tracker, n: usize) -> Option<f64> {
    let times: Vec<f64> = created.outcomes().iter().filter_map(|o| o.ready).collect();
    (times.len() >= n).then(|| times.iter().copied().fold(0.0, f64::max))
}
