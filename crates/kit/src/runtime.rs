//! The one way a berth controller runs. A controller declares its watches on a kube-runtime
//! [`Controller`] and implements [`Reconciler`]; [`run`] does the rest the same way for every kind: the
//! `managed` gauge, the wait for caches, the reconcile span and timer, settling the outcome into status
//! and events ([`crate::report`]), the per-object back-off, and logging what the run stream yields.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{Action, Config, Controller};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::Context;
use crate::error::Result;
use crate::metrics::ControllerLabel;
use crate::watch::Synced;

/// How often a converged object is looked at again with no watch event: a child deleted while a watch was
/// re-listing sends no event, and would otherwise stay missing. Cheap: a converged reconcile writes nothing.
pub const RESYNC: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// One controller: its kind, and how one object of it converges.
pub trait Reconciler: Send + Sync + 'static {
    type K: Resource<DynamicType = ()> + Clone + Serialize + DeserializeOwned + Debug + Send + Sync + 'static;

    fn kit(&self) -> &Context;

    /// The caches a reconcile reads, which must have listed before "not in the cache" means anything.
    fn synced(&self) -> Option<&Synced> {
        None
    }

    /// Where `obj`'s status is written.
    fn api(&self, obj: &Self::K) -> Api<Self::K>;

    /// Brings the cluster in line with `obj`: load, build, apply, status, requeue.
    fn reconcile(&self, obj: Arc<Self::K>) -> impl Future<Output = Result<Action>> + Send;
}

/// Runs `controller` with `reconciler` until `shutdown` resolves, then lets in-flight reconciles finish.
pub async fn run<R: Reconciler>(
    controller: Controller<R::K>,
    reconciler: Arc<R>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let store = controller.store();
    let name = reconciler.kit().controller;
    let error_policy = move |obj: Arc<R::K>, e: &crate::Error, r: Arc<R>| {
        // Deleted objects never succeed again; their failure counts go here, not on success.
        let present: std::collections::HashSet<String> =
            store.state().iter().filter_map(|o| o.uid()).collect();
        r.kit().forget_unless(|uid| present.contains(uid));
        r.kit().failed(obj.as_ref(), e)
    };
    let managed = controller.store();
    controller
        .with_config(config)
        // kube backs off the merged stream of every trigger, so one broken watch would silence all of a
        // controller's triggers for up to 30 s (after an API server restart, every watch breaks at once).
        .trigger_backoff(crate::watch::retry())
        .graceful_shutdown_on(shutdown)
        .run(
            move |obj, r: Arc<R>| {
                let managed = i64::try_from(managed.len()).unwrap_or(i64::MAX);
                async move {
                    let kit = r.kit();
                    kit.metrics
                        .managed
                        .get_or_create(&ControllerLabel {
                            controller: kit.controller,
                        })
                        .set(managed);
                    crate::trace::reconcile(kit, obj.as_ref(), async {
                        if let Some(synced) = r.synced() {
                            synced.wait().await?;
                        }
                        let result = r.reconcile(obj.clone()).await;
                        crate::report::settle(kit, &r.api(&obj), obj.as_ref(), result).await
                    })
                    .await
                }
            },
            error_policy,
            reconciler,
        )
        .for_each(|result| async move { crate::trace::log_outcome(name, &result) })
        .await;
}
