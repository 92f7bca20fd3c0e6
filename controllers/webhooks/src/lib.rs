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
use berth_kit::labels::managed_selector;
use berth_kit::shared::Subscription;
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::Api;
use kube::runtime::controller::{Config, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

pub use reconcile::Webhooks;

/// The controller's name: `--controllers webhooks`, metric and event labels.
pub const NAME: &str = "webhooks";
/// The one Webhook of a tenant, in its namespace.
pub const WEBHOOK: &str = "webhooks";

/// Runs the Webhook controller until `shutdown` resolves.
///
/// A Webhook wakes when anything its events come from changes: a run (berth's Jobs) finishing, a
/// Database or Scheduler status, or its Customer. Each maps to the one Webhook of its namespace.
///
/// # Errors
/// When the TLS roots cannot be loaded (never with the built-in ones).
pub async fn run(
    ctx: Arc<Context>,
    webhooks: Subscription<Webhook>,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), String> {
    let client = ctx.client.clone();
    let in_namespace = |ns: Option<String>| ns.map(|ns| ObjectRef::<Webhook>::new(WEBHOOK).within(&ns));
    berth_kit::watch::mark_synced_when(&ctx, webhooks.listed());
    let controller = Controller::for_shared_stream(webhooks.changes, webhooks.store)
        .watches(
            Api::<Job>::all(client.clone()),
            watcher::Config::default().labels(&managed_selector()),
            move |j: Job| in_namespace(j.namespace()),
        )
        .watches(
            Api::<Database>::all(client.clone()),
            watcher::Config::default(),
            move |d: Database| in_namespace(d.namespace()),
        )
        .watches(
            Api::<Scheduler>::all(client.clone()),
            watcher::Config::default(),
            move |s: Scheduler| in_namespace(s.namespace()),
        )
        .watches(
            Api::<Customer>::all(client),
            watcher::Config::default(),
            move |c: Customer| in_namespace(c.status.as_ref().and_then(|s| s.namespace.clone())),
        );
    let public = deliver::Client::new(None)?;
    let webhooks = Webhooks {
        kit: ctx,
        public,
        written: std::sync::Mutex::default(),
    };
    berth_kit::runtime::run(controller, Arc::new(webhooks), config, shutdown).await;
    Ok(())
}
