//! The span every reconcile runs in: kind, namespace and name of the object, and how it ended. With
//! OpenTelemetry on, it is exported, writes made through [`crate::Context`] are its child spans, and its
//! trace id is one of its fields, so every log line of the reconcile carries it.

use std::future::Future;

use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::Instrument;

use crate::Result;
use crate::context::Context;

/// Runs `body` as one reconcile of `obj`: counted, timed, and traced.
///
/// # Errors
/// Whatever `body` returns.
pub async fn reconcile<K, F>(kit: &Context, obj: &K, body: F) -> Result<Action>
where
    K: Resource<DynamicType = ()>,
    F: Future<Output = Result<Action>>,
{
    let span = tracing::info_span!(
        "reconcile",
        controller = kit.controller,
        kind = %K::kind(&()),
        namespace = obj.namespace().unwrap_or_default(),
        name = %obj.name_any(),
        outcome = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    berth_telemetry::record_trace_id(&span);
    let _timer = kit.metrics.reconcile(kit.controller);
    let result = body.instrument(span.clone()).await;
    span.record(
        "outcome",
        result.as_ref().map_or_else(crate::Error::category, |_| "ok"),
    );
    // One line per finished reconcile, at debug: the only per-object record of a reconcile that wrote
    // nothing (the restart test reads it, and so can anyone asking "did berth look at this one?").
    span.in_scope(|| tracing::debug!("reconciled"));
    result
}

/// What a controller's run stream yields besides reconciles, logged the same way by every controller.
/// Reconcile failures are counted and logged by the error policy already. An object deleted while a
/// requeue for it was pending comes back as `ObjectNotFound`: expected, so only at debug level. Anything
/// else (a watch that cannot list, a queue error) is a warning, or it would go unseen.
pub fn log_outcome<K, E1, E2>(
    controller: &'static str,
    result: &std::result::Result<
        (kube::runtime::reflector::ObjectRef<K>, Action),
        kube::runtime::controller::Error<E1, E2>,
    >,
) where
    K: Resource,
    E1: std::error::Error + 'static,
    E2: std::error::Error + 'static,
{
    use kube::runtime::controller::Error;
    match result {
        Ok(_) | Err(Error::ReconcilerFailed(..)) => {}
        Err(e @ Error::ObjectNotFound(..)) => {
            tracing::debug!(error = %e, controller, "deleted before its requeue");
        }
        Err(e) => tracing::warn!(error = %e, controller, "controller stream error"),
    }
}
