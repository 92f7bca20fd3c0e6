//! The Customer controller: one cluster-scoped Customer becomes an isolated tenant namespace (Pod
//! Security, quota, limits, network policy, admin binding) with a Database and a Scheduler inside it.

pub mod build;
mod drift;
pub mod names;
mod reconcile;
pub mod status;

use std::future::Future;
use std::sync::Arc;

use berth_api::{Customer, Database, Scheduler};
use berth_kit::Context;
use berth_kit::watch::owned;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, controller};

pub use reconcile::{Ctx, Stores};

pub const NAME: &str = "customer";

/// The Customer that controls a namespaced child. `owns` would key it by the child's namespace, and a
/// cluster-scoped Customer keyed two ways could be reconciled twice at once.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the signature Controller::watches_stream asks for"
)]
fn owner<K: ResourceExt>(child: K) -> Option<ObjectRef<Customer>> {
    child
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Customer" && o.api_version == "berth.dev/v1alpha1")
        .map(|o| ObjectRef::new(&o.name))
}

/// Runs until `shutdown` resolves, then lets in-flight reconciles finish.
pub async fn run(
    kit: Arc<Context>,
    concurrency: u16,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = kit.client.clone();
    let (namespaces, ns_stream) = owned(Api::<Namespace>::all(client.clone()));
    let (quotas, quota_stream) = owned(Api::<ResourceQuota>::all(client.clone()));
    let (limit_ranges, lr_stream) = owned(Api::<LimitRange>::all(client.clone()));
    let (network_policies, np_stream) = owned(Api::<NetworkPolicy>::all(client.clone()));
    let (role_bindings, rb_stream) = owned(Api::<RoleBinding>::all(client.clone()));
    let (databases, db_stream) = owned(Api::<Database>::all(client.clone()));
    let (schedulers, sched_stream) = owned(Api::<Scheduler>::all(client.clone()));
    let stores = Stores {
        namespaces,
        quotas,
        limit_ranges,
        network_policies,
        role_bindings,
        databases,
        schedulers,
    };
    let (store, stream) = berth_kit::watch::primary(Api::<Customer>::all(client.clone()), kit.clone());
    let controller = Controller::for_stream(stream, store);
    let synced = stores.synced();
    let ctx = Arc::new(Ctx {
        kit,
        stores,
        synced,
        customers: controller.store(),
    });
    controller
        .owns_stream(ns_stream)
        .watches_stream(quota_stream, owner)
        .watches_stream(lr_stream, owner)
        .watches_stream(np_stream, owner)
        .watches_stream(rb_stream, owner)
        .watches_stream(db_stream, owner)
        .watches_stream(sched_stream, owner)
        .with_config(controller::Config::default().concurrency(concurrency))
        .graceful_shutdown_on(shutdown)
        .run(
            reconcile::reconcile,
            |c, e, ctx| ctx.kit.failed(c.as_ref(), e),
            ctx,
        )
        .for_each(|result| async move { berth_kit::trace::log_outcome(NAME, &result) })
        .await;
}
