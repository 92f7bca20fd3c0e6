//! The Customer controller: one cluster-scoped Customer becomes an isolated tenant namespace (Pod
//! Security, quota, limits, network policy, admin binding) with a Database and a Scheduler inside it.

pub mod build;
pub mod names;
pub mod readiness;
mod reconcile;
pub mod status;

use std::future::Future;
use std::sync::Arc;

use berth_api::{Customer, Database, Scheduler, Webhook};
use berth_kit::Context;
use berth_kit::changes::{all_but_status, any_change};
use berth_kit::shared::Subscription;
use berth_kit::watch::owned;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, controller};

pub use reconcile::{Ctx, Stores};

pub const NAME: &str = "customer";

/// The Customer a child belongs to: its controller, or, for the namespace and guard rails a `Retain`
/// Customer leaves unowned, its customer label. (`owns` would key a namespaced child by its namespace, and
/// a cluster-scoped Customer keyed two ways could be reconciled twice at once.)
fn owner<K: ResourceExt>(child: &K) -> Option<ObjectRef<Customer>> {
    child
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "Customer" && o.api_version == "berth.dev/v1alpha1")
        .map(|o| ObjectRef::new(&o.name))
        .or_else(|| {
            child
                .labels()
                .get(berth_kit::labels::CUSTOMER)
                .map(|c| ObjectRef::new(c))
        })
}

/// The process-wide watches the Customer controller shares with the Database and Scheduler controllers.
pub struct Shared {
    /// Customers themselves: the webhooks controller reads them too.
    pub customers: Subscription<Customer>,
    pub databases: Subscription<Database>,
    pub schedulers: Subscription<Scheduler>,
    pub webhooks: Subscription<Webhook>,
    /// Customers again, deletions included, for `berth_customer_ready` (see [`readiness`]).
    pub readiness: Subscription<Customer>,
}

/// Runs until `shutdown` resolves, then lets in-flight reconciles finish.
pub async fn run(
    kit: Arc<Context>,
    shared: Shared,
    config: controller::Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = kit.client.clone();
    // Ends with the shared watch, which stops with the controllers.
    tokio::spawn(readiness::export(kit.metrics.clone(), shared.readiness));
    let (namespaces, ns_stream) = owned(Api::<Namespace>::all(client.clone()), any_change);
    let (quotas, quota_stream) = owned(Api::<ResourceQuota>::all(client.clone()), all_but_status);
    let (limit_ranges, lr_stream) = owned(Api::<LimitRange>::all(client.clone()), any_change);
    let (network_policies, np_stream) = owned(Api::<NetworkPolicy>::all(client.clone()), any_change);
    let (role_bindings, rb_stream) = owned(Api::<RoleBinding>::all(client.clone()), any_change);
    let shared_listed = vec![
        shared.databases.listed(),
        shared.schedulers.listed(),
        shared.webhooks.listed(),
    ];
    let stores = Stores {
        namespaces,
        quotas,
        limit_ranges,
        network_policies,
        role_bindings,
        databases: shared.databases.store,
        schedulers: shared.schedulers.store,
        webhooks: shared.webhooks.store,
    };
    berth_kit::watch::mark_synced_when(&kit, shared.customers.listed());
    let controller = Controller::for_shared_stream(shared.customers.changes, shared.customers.store);
    let synced = stores.synced(shared_listed);
    let ctx = Arc::new(Ctx { kit, stores, synced });
    let controller = controller
        .watches_stream(ns_stream, |o| owner(&o))
        .watches_stream(quota_stream, |o| owner(&o))
        .watches_stream(lr_stream, |o| owner(&o))
        .watches_stream(np_stream, |o| owner(&o))
        .watches_stream(rb_stream, |o| owner(&o))
        .watches_shared_stream(shared.databases.changes, |o| owner(o.as_ref()))
        .watches_shared_stream(shared.schedulers.changes, |o| owner(o.as_ref()))
        .watches_shared_stream(shared.webhooks.changes, |o| owner(o.as_ref()));
    berth_kit::runtime::run(controller, ctx, config, shutdown).await;
}
