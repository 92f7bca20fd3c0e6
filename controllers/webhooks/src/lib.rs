//! The webhooks controller: a tenant's Webhook (made by the Customer controller) says where to post;
//! this controller derives what happened in the tenant from its objects ([`derive`]), sends each endpoint
//! what it is owed ([`plan`]) and records what was delivered in the Webhook's status, so a restart or a
//! new leader sends only what is still pending.
//!
//! Needs (chart RBAC): webhooks get/list/watch, webhooks/status patch; customers get; databases,
//! schedulers and jobs list/watch in tenant namespaces; secrets get/create there (the signing key);
//! events create.
//!
//! The delivery core is kept pure and tested on its own:
//!
//! - [`sign`]: Standard Webhooks signatures, so a receiver can use an existing library to verify us;
//! - [`event`]: the closed list of events and their CloudEvents body, with ids that survive redelivery;
//! - [`retry`]: when to try again and when to stop;
//! - [`target`]: which URLs and addresses berth refuses to call, so a tenant cannot aim berth at the
//!   cluster's inside;
//! - [`deliver`]: one POST to one already-checked address, reduced to an [`deliver::Outcome`].

pub mod deliver;
pub mod derive;
pub mod event;
pub mod key;
pub mod plan;
mod reconcile;
pub mod retry;
pub mod sign;
pub mod target;

use std::future::Future;
use std::sync::Arc;

use berth_api::{Customer, Database, Scheduler, Webhook};
use berth_kit::Context;
use berth_kit::shared::Subscription;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::ObjectRef;

pub use reconcile::Webhooks;

/// The controller's name: `--controllers webhooks`, metric and event labels.
pub const NAME: &str = "webhooks";
/// The one Webhook of a tenant, in its namespace.
pub const WEBHOOK: &str = "webhooks";

/// What the webhooks controller watches, each the process's one watch of its kind.
pub struct Watches {
    pub webhooks: Subscription<Webhook>,
    pub customers: Subscription<Customer>,
    pub databases: Subscription<Database>,
    pub schedulers: Subscription<Scheduler>,
    pub jobs: Subscription<Job>,
}

/// Runs the Webhook controller until `shutdown` resolves.
///
/// A Webhook wakes when anything its events come from changes: a run (berth's Jobs) finishing, a
/// Database or Scheduler status, or its Customer. Each maps to the one Webhook of its namespace.
///
/// # Errors
/// When the TLS roots cannot be loaded (never with the built-in ones).
pub async fn run(
    ctx: Arc<Context>,
    w: Watches,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), String> {
    fn in_namespace(ns: Option<String>) -> Option<ObjectRef<Webhook>> {
        ns.map(|ns| ObjectRef::<Webhook>::new(WEBHOOK).within(&ns))
    }
    berth_kit::watch::mark_synced_when(&ctx, w.webhooks.listed());
    let controller = Controller::for_shared_stream(w.webhooks.changes, w.webhooks.store)
        .watches_shared_stream(w.jobs.changes, |j| in_namespace(j.namespace()))
        .watches_shared_stream(w.databases.changes, |d| in_namespace(d.namespace()))
        .watches_shared_stream(w.schedulers.changes, |s| in_namespace(s.namespace()))
        .watches_shared_stream(w.customers.changes, |c| {
            in_namespace(c.status.as_ref().and_then(|s| s.namespace.clone()))
        });
    let public = deliver::Client::new(None)?;
    let webhooks = Webhooks {
        kit: ctx,
        public,
        written: std::sync::Mutex::default(),
    };
    berth_kit::runtime::run(controller, Arc::new(webhooks), config, shutdown).await;
    Ok(())
}
