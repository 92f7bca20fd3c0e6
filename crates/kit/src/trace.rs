//! The span every reconcile runs in: kind, namespace and name of the object, and how it ended. With
//! OpenTelemetry on, it is exported; writes made through [`crate::Context`] are its child spans.

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
    );
    let _timer = kit.metrics.reconcile(kit.controller);
    let result = body.instrument(span.clone()).await;
    span.record(
        "outcome",
        result.as_ref().map_or_else(crate::Error::category, |_| "ok"),
    );
    result
}
