//! One reconcile of a Scheduler: load (its Jobs) → plan (pure) → act → status → requeue at the next due time.

use std::sync::Arc;
use std::time::Duration;

use berth_api::Scheduler;
use berth_kit::runtime::Reconciler;
use berth_kit::seal::Seal;
use berth_kit::{Context, Error, Result};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use crate::metrics::Published;
use crate::plan::{Input, Run, plan};
use crate::{act, job, status};

/// The shortest requeue, so a wake-up a little before the due time (clocks differ) cannot spin.
const MIN_REQUEUE: Duration = Duration::from_secs(1);

/// The Scheduler controller's side of the runtime: its reconciles need no cache but the Jobs it lists.
pub struct Schedulers {
    pub kit: Arc<Context>,
    /// The series this process exports for each Scheduler.
    pub published: Arc<Published>,
}

impl Reconciler for Schedulers {
    type K = Scheduler;

    fn kit(&self) -> &Context {
        &self.kit
    }

    fn api(&self, scheduler: &Scheduler) -> Api<Scheduler> {
        self.kit.api(&scheduler.namespace().unwrap_or_default())
    }

    async fn reconcile(&self, scheduler: Arc<Scheduler>) -> Result<Action> {
        let Some(namespace) = scheduler.namespace() else {
            return Err(Error::InvalidSpec("a Scheduler must have a namespace".to_owned()));
        };
        converge(
            &scheduler,
            &self.kit,
            &self.published,
            &namespace,
            &self.api(&scheduler),
        )
        .await
    }
}

async fn converge(
    scheduler: &Scheduler,
    ctx: &Context,
    published: &Published,
    namespace: &str,
    api: &Api<Scheduler>,
) -> Result<Action> {
    let name = scheduler.name_any();
    if scheduler.meta().deletion_timestamp.is_some() {
        // The garbage collector removes the runs.
        published.forget(&ctx.metrics, namespace, &name);
        return Ok(Action::await_change());
    }
    let owner = berth_kit::owner_ref(scheduler)
        .ok_or_else(|| Error::InvalidSpec(format!("Scheduler {name} has no uid yet")))?;

    // Load: a fresh, label-selected list, so the queue is never judged on a cache that missed a create.
    let jobs: Api<Job> = ctx.api(namespace);
    let runs = load(&jobs, &name, &owner.uid, ctx.settings.seal.as_ref()).await?;

    // Plan.
    let now = Timestamp::now();
    let old = scheduler.status.as_ref();
    let planned = plan(&Input {
        now,
        scheduler: &name,
        spec: &scheduler.spec,
        created: scheduler.meta().creation_timestamp.as_ref().map(|t| t.0),
        observed: old.is_some_and(|s| s.observed_generation.is_some()),
        previous: old.map(|s| s.workflows.as_slice()).unwrap_or_default(),
        runs: &runs,
        annotations: scheduler.annotations(),
    });

    // Act.
    let next_wakeup = planned.next_wakeup;
    let carried = act::act(ctx, scheduler, &jobs, planned, &owner).await?;

    // Status: what was carried out.
    let new = status::status(
        old,
        scheduler.meta().generation,
        &carried.plan,
        &carried.conflicts,
        scheduler.spec.suspend,
        now,
    );
    ctx.apply_status(api, scheduler, old, &new).await?;
    published.publish(&ctx.metrics, namespace, &name, &new);

    // A run not created is decided again; soon, while its starting deadline may still allow it.
    let retry = (!carried.not_created.is_empty()).then(|| now + act::CONFLICT_RETRY);
    Ok(requeue(next_wakeup.into_iter().chain(retry).min(), now))
}

/// The Scheduler's runs: Jobs carrying its labels, controlled by it (its uid, so a Scheduler
/// recreated under the same name does not adopt its predecessor's runs) and sealed by berth, whatever their names: runs named
/// before names carried the Scheduler's tag still hold workers, queue, and count as history.
async fn load(jobs: &Api<Job>, scheduler: &str, uid: &str, seal: Option<&Seal>) -> Result<Vec<Run>> {
    let list = jobs
        .list(&ListParams::default().labels(&job::selector(scheduler)))
        .await?;
    Ok(list
        .items
        .iter()
        .filter(|j| job::is_ours(&j.metadata, uid, seal))
        .filter_map(job::view)
        .collect())
}

/// Wake up at the next due time, or to resync, whichever comes first.
fn requeue(next: Option<Timestamp>, now: Timestamp) -> Action {
    let resync = berth_kit::runtime::RESYNC;
    match next {
        Some(at) => Action::requeue(at.duration_since(now).unsigned_abs().clamp(MIN_REQUEUE, resync)),
        None => Action::requeue(resync),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requeue_waits_until_the_next_due_time() {
        let now: Timestamp = "2025-01-01T10:04:30Z".parse().unwrap();
        let due: Timestamp = "2025-01-01T10:05:00Z".parse().unwrap();
        assert_eq!(requeue(Some(due), now), Action::requeue(Duration::from_secs(30)));
        assert_eq!(requeue(Some(now), now), Action::requeue(MIN_REQUEUE));
        assert_eq!(requeue(None, now), Action::requeue(berth_kit::runtime::RESYNC));
        let next_year: Timestamp = "2026-01-01T10:05:00Z".parse().unwrap();
        assert_eq!(
            requeue(Some(next_year), now),
            Action::requeue(berth_kit::runtime::RESYNC)
        );
    }
}
