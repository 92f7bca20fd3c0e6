//! The scheduler controller: a tenant's cron workflows run as Jobs owned by their Scheduler, at most
//! `spec.workers` at once across all workflows; runs beyond that wait as suspended Jobs (the queue lives in
//! the cluster, never only in memory). The rules are in [`plan`]; the Job in [`job`].
//!
//! Needs (chart RBAC): schedulers get/list/watch, schedulers/status patch, schedulers/finalizers update
//! (blockOwnerDeletion on the runs); jobs get/list/watch/create/patch/delete; events create.

pub mod act;
pub mod job;
pub mod plan;
mod reconcile;
pub mod schedule;
pub mod status;

use std::future::Future;
use std::sync::Arc;

use berth_api::Scheduler;
use berth_kit::Context;
use berth_kit::labels::managed_selector;
use berth_kit::shared::Subscription;
use k8s_openapi::api::batch::v1::Job;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::watcher;

pub use reconcile::Schedulers;

/// What the process watches of Jobs: berth's own, by label; the operator never caches other Jobs.
#[must_use]
pub fn jobs_watch() -> watcher::Config {
    watcher::Config::default().labels(&managed_selector())
}

/// The controller's name: `--controllers scheduler`, metric and event labels.
pub const NAME: &str = "scheduler";

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
    let controller =
        Controller::for_shared_stream(schedulers.changes, schedulers.store).owns_shared_stream(jobs.changes);
    berth_kit::runtime::run(controller, Arc::new(Schedulers { kit: ctx }), config, shutdown).await;
}
