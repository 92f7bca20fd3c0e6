//! The Database controller: a tenant's PostgreSQL (StatefulSet with its volume) behind a pgbouncer pool
//! (Deployment, Service named like the Database, PodDisruptionBudget), with credentials generated once
//! (and never for a volume that may hold data, see `origin`) and a connection Secret for apps. See
//! `reconcile` for the pipeline, `volume` for the server's volume and `names` for every child.
//!
//! The renderers in [`pgbouncer`] and [`postgres`] (the server's bootstrap script and command) are public
//! so the real-component tests (`e2e/tests/pool_real.rs`, `e2e/tests/bootstrap_real.rs`) run exactly what
//! the operator ships.

pub mod build;
pub mod credentials;
pub mod names;
mod origin;
pub mod pgbouncer;
pub mod postgres;
pub mod readback;
mod reconcile;
mod refused;
mod status;
pub mod tls;
mod validate;
mod volume;

use std::future::Future;
use std::sync::Arc;

use berth_api::Database;
use berth_kit::Context;
use berth_kit::changes::{all_but_status, any_change};
use berth_kit::connections::Connections;
use berth_kit::namespaced::{Keep, PerNamespace};
use berth_kit::shared::Subscription;
use berth_kit::watch::{Synced, owned};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::{Controller, controller};
use kube::{Api, ResourceExt};

use crate::reconcile::{Caches, Ctx};

pub use credentials::Credentials;
pub use pgbouncer::{Endpoints, PoolConfig, config_hash, render_ini, render_userlist};

/// The controller's name: `--controllers database`, metric and event labels.
pub const NAME: &str = "database";

/// Runs the Database controller until `shutdown` resolves, then lets in-flight reconciles finish.
///
/// Children are watched through kit's label-selected caches (`app.kubernetes.io/managed-by=berth`),
/// so the operator never caches the cluster's other ConfigMaps. Secrets are not watched cluster-wide at
/// all: one metadata-only watch per namespace that holds a Database wakes the controller, and a reconcile
/// reads the Secrets it needs by name. Those watches run on clients from `watch_connections`.
///
/// RBAC it needs, cluster-wide (the chart's ClusterRole): `databases`, `configmaps`, `services`,
/// `statefulsets`, `deployments`, `poddisruptionbudgets`, `persistentvolumeclaims` list/watch;
/// `persistentvolumes` get/patch (a `Retain` Database's volume gets reclaim policy `Retain`); `events`
/// create. In tenant namespaces only (the chart's tenant ClusterRole, bound there by the Customer
/// controller): `secrets` get/list/watch/create/patch; the children's kinds get/create/patch;
/// `persistentvolumeclaims` get; `databases/status` patch, `databases/finalizers` update.
pub async fn run(
    kit: Arc<Context>,
    databases: Subscription<Database>,
    watch_connections: Arc<Connections>,
    config: controller::Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = kit.client.clone();
    let in_use = databases.store.clone();
    let keep: Keep = Arc::new(move |ns: &str| {
        in_use
            .state()
            .iter()
            .any(|d| d.namespace().as_deref() == Some(ns))
    });
    let (secret_watches, secret_stream) = PerNamespace::<Secret>::new(watch_connections, keep);
    let (config_maps, config_map_stream) = owned(Api::<ConfigMap>::all(client.clone()), all_but_status);
    let (servers, server_stream) = owned(Api::<StatefulSet>::all(client.clone()), any_change);
    let (pools, pool_stream) = owned(Api::<Deployment>::all(client.clone()), any_change);
    let (services, service_stream) = owned(Api::<Service>::all(client.clone()), all_but_status);
    let (budgets, budget_stream) = owned(Api::<PodDisruptionBudget>::all(client.clone()), all_but_status);
    let (claims, claim_stream) = volume::claims(Api::<PersistentVolumeClaim>::all(client.clone()));
    berth_kit::watch::mark_synced_when(&kit, databases.listed());
    let controller = Controller::for_shared_stream(databases.changes, databases.store);
    let synced = Synced::new(vec![
        config_maps.listed(),
        servers.listed(),
        pools.listed(),
        services.listed(),
        budgets.listed(),
        claims.listed(),
    ]);
    let ctx = Arc::new(Ctx {
        kit,
        secret_watches,
        caches: Caches {
            config_maps,
            servers,
            pools,
            services,
            budgets,
            claims,
        },
        synced,
        retained: volume::Retained::default(),
    });
    let controller = controller
        // Like `owns_stream`, plus the credentials Secret, which under `Retain` has no owner.
        .watches_stream(secret_stream, |secret| origin::databases_of(&secret))
        .owns_stream(config_map_stream)
        .owns_stream(server_stream)
        .owns_stream(pool_stream)
        .owns_stream(service_stream)
        .owns_stream(budget_stream)
        // A claim has no owner berth can be found by; its labels name its Database.
        .watches_stream(claim_stream, |claim| volume::database_of(&claim));
    berth_kit::runtime::run(controller, ctx, config, shutdown).await;
}
