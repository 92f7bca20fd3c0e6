//! The restart row: after berth converged, its process is stopped (SIGTERM) and started again with the same
//! arguments, and the new process is watched until it has re-verified every tenant. What it costs the API
//! server is reported as it is; nothing is asserted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::Serialize;

use super::log;
use crate::metrics::Scrape;
use crate::operator::{Launch, Operator};

const RECONCILES: &str = "berth_reconciles_total";
const IN_FLIGHT: &str = "berth_reconciles_in_flight";
const MANAGED: &str = "berth_managed_objects";
const REQUESTS: &str = "berth_api_requests_total";
const WRITES: &str = "berth_api_writes_total";

#[derive(Debug, Serialize)]
pub struct RestartReport {
    /// From SIGTERM until the old process exited.
    pub stop_seconds: f64,
    /// From the new process's start until it led with synced caches (`/readyz`).
    pub ready_seconds: f64,
    /// From the new process's start until every controller had started at least one reconcile per object
    /// of its kind (`berth_reconciles_total` ≥ `berth_managed_objects`) and none was in flight; `None`
    /// when that did not happen within the timeout.
    pub reverified_seconds: Option<f64>,
    pub managed_objects_by_controller: BTreeMap<String, f64>,
    pub reconciles_by_controller: BTreeMap<String, f64>,
    /// Everything the new process asked the API server until re-verified, by `verb/resource`.
    pub requests_by_verb_resource: BTreeMap<String, f64>,
    pub requests: f64,
    pub writes_by_controller_verb: BTreeMap<String, f64>,
    pub writes: f64,
    pub log: String,
}

/// Stops `old`, starts `launch` in its place and measures the new process until it has re-verified
/// everything; returns the new process, which the caller stops.
pub async fn run(
    old: &Operator,
    launch: Launch<'_>,
    timeout: Duration,
) -> anyhow::Result<(Operator, RestartReport)> {
    let t = Instant::now();
    old.signal("TERM");
    if tokio::task::block_in_place(|| old.wait(Duration::from_secs(60))).is_none() {
        bail!(
            "berth did not exit within 60 s of SIGTERM; see {}",
            old.log.display()
        );
    }
    let stop_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let op = launch.start()?;
    op.wait_ready(Duration::from_secs(120)).await?;
    let ready_seconds = t.elapsed().as_secs_f64();
    log(&format!(
        "restart: old berth exited in {stop_seconds:.1}s, new one ready in {ready_seconds:.1}s; waiting until it has re-verified every object"
    ));
    let deadline = t + timeout;
    let (scrape, reverified_seconds) = loop {
        let scrape = op.scrape()?;
        if reverified(&scrape) {
            break (scrape, Some(t.elapsed().as_secs_f64()));
        }
        if Instant::now() > deadline {
            log("restart: timed out; reporting what was reached");
            break (scrape, None);
        }
        // The counters are only readable by polling the process's /metrics.
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let zero = Scrape::default();
    let by = |name: &str, keys: &[&str]| -> BTreeMap<String, f64> {
        scrape
            .delta_by(&zero, name, keys)
            .into_iter()
            .map(|(k, v)| (k.join("/"), v))
            .collect()
    };
    let requests_by_verb_resource = by(REQUESTS, &["verb", "resource"]);
    let writes_by_controller_verb = by(WRITES, &["controller", "verb"]);
    let report = RestartReport {
        stop_seconds,
        ready_seconds,
        reverified_seconds,
        managed_objects_by_controller: by(MANAGED, &["controller"]),
        reconciles_by_controller: by(RECONCILES, &["controller"]),
        requests: requests_by_verb_resource.values().sum(),
        requests_by_verb_resource,
        writes: writes_by_controller_verb.values().sum(),
        writes_by_controller_verb,
        log: op.log.display().to_string(),
    };
    Ok((op, report))
}

/// Every controller that holds objects has started a reconcile for each, and none is running.
fn reverified(s: &Scrape) -> bool {
    let zero = Scrape::default();
    let managed = s.delta_by(&zero, MANAGED, &["controller"]);
    let reconciles = s.delta_by(&zero, RECONCILES, &["controller"]);
    !managed.is_empty()
        && managed
            .iter()
            .all(|(c, n)| reconciles.get(c).copied().unwrap_or(0.0) >= *n)
        && s.sum(IN_FLIGHT, &[]) == 0.0
}
