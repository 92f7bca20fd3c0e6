//! The scheduler controller: a tenant's cron workflows run as Jobs owned by their Scheduler, at most
//! `spec.workers` at once across all workflows; runs beyond that wait as suspended Jobs (the queue lives in
//! the cluster, never only in memory). The rules are in [`plan`]; the Job in [`job`].
//!
//! Needs (chart RBAC): schedulers get/list/watch, schedulers/status patch, schedulers/finalizers update
//! (blockOwnerDeletion on the runs); jobs get/list/watch/create/patch/delete; events create.

pub mod act;
pub mod job;
pub mod metrics;
pub mod plan;
mod reconcile;
pub mod schedule;
pub mod status;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use berth_api::Scheduler;
use berth_kit::Context;
use berth_kit::labels::managed_selector;
use berth_kit::shared::Subscription;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;

use crate::metrics::Published;

pub use reconcile::Schedulers;

/// What the process watches of Jobs: berth's own, by label; the operator never caches other Jobs.
#[must_use]
pub fn jobs_watch() -> watcher::Config {
    watcher::Config::default().labels(&managed_selector())
}

/// The controller's name: `--controllers scheduler`, metric and event labels.
pub const NAME: &str = "scheduler";

/// How often the series of deleted Schedulers are looked for. The shared Scheduler watch passes this
/// controller no deletions and a Scheduler has no finalizer, so a deleted one is never reconciled: its
/// series are found by comparing with the cache (no API request).
const SWEEP: Duration = Duration::from_secs(30);

/// Runs the Scheduler controller until `shutdown` resolves (then lets running reconciles finish), with at
/// most `config.concurrency` Schedulers reconciled at once.
///
/// Jobs are watched by berth's `managed-by` label only (the operator never caches other Jobs); a finished,
/// started or deleted run wakes its Scheduler, and each Scheduler also wakes at its next due time.
/// `jobs` is the process's one watch of berth's Jobs (selected by berth's `managed-by` label; see
/// [`jobs_watch`]), which the webhooks controller reads too.
pub async fn run(
    ctx: Arc<Context>,
    schedulers: Subscription<Scheduler>,
    jobs: Subscription<Job>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    berth_kit::watch::mark_synced_when(&ctx, schedulers.listed());
    let published = Arc::new(Published::default());
    let sweep = sweep(ctx.clone(), schedulers.store.clone(), published.clone());
    let controller =
        Controller::for_shared_stream(schedulers.changes, schedulers.store).owns_shared_stream(jobs.changes);
    let reconciler = Arc::new(Schedulers { kit: ctx, published });
    let running = berth_kit::runtime::run(controller, reconciler, config, shutdown);
    // The sweep ends with the controller.
    futures::future::select(std::pin::pin!(running), std::pin::pin!(sweep)).await;
}

/// Removes the series of Schedulers no longer in the cache, every [`SWEEP`].
async fn sweep(ctx: Arc<Context>, schedulers: Store<Scheduler>, published: Arc<Published>) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let present: HashSet<(String, String)> = schedulers
            .state()
            .iter()
            .map(|s| (s.namespace().unwrap_or_default(), s.name_any()))
            .collect();
        published.keep_only(&ctx.metrics, &present);
    }
}
