//! One reconcile of a Customer, top to bottom: load (caches and one namespace lookup) → build (pure) →
//! apply → status. Under `Retain`, deletion goes through the finalizer, which marks what is kept.

use std::sync::Arc;
use std::time::Duration;

use berth_api::{Customer, CustomerStatus, Database, DeletionPolicy, Scheduler};
use berth_kit::error::{Error, Result};
use berth_kit::metrics::ControllerLabel;
use berth_kit::watch::{Synced, current, listed};
use berth_kit::{Context, labels};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::build::{self, Children};
use crate::names::{CUSTOMER_UID, FINALIZER};
use crate::status::{self, Feature, NamespaceState, Observed};

/// Caches of what the Customer controller owns, filled by the same watches that wake it.
pub struct Stores {
    pub namespaces: Store<Namespace>,
    pub quotas: Store<ResourceQuota>,
    pub limit_ranges: Store<LimitRange>,
    pub network_policies: Store<NetworkPolicy>,
    pub role_bindings: Store<RoleBinding>,
    pub databases: Store<Database>,
    pub schedulers: Store<Scheduler>,
}

impl Stores {
    /// Until every cache has listed once, "not in the cache" means nothing. `shared` are the listings of
    /// the process-wide Database and Scheduler caches, whose stores must not be waited on here (the
    /// Database and Scheduler controllers already do, and a store wakes only one waiter).
    #[must_use]
    pub fn synced(&self, shared: Vec<BoxFuture<'static, bool>>) -> Synced {
        let mut all = vec![
            listed(&self.namespaces),
            listed(&self.quotas),
            listed(&self.limit_ranges),
            listed(&self.network_policies),
            listed(&self.role_bindings),
        ];
        all.extend(shared);
        Synced::new(all)
    }
}

pub struct Ctx {
    pub kit: Arc<Context>,
    pub stores: Stores,
    pub synced: Synced,
    pub customers: Store<Customer>,
}

/// A converged Customer is looked at again this often even if no watch fires.
const RESYNC: Duration = Duration::from_secs(3600);

pub async fn reconcile(customer: Arc<Customer>, ctx: Arc<Ctx>) -> Result<Action> {
    berth_kit::trace::reconcile(&ctx.kit, customer.as_ref(), converge(&customer, &ctx)).await
}

async fn converge(customer: &Arc<Customer>, ctx: &Arc<Ctx>) -> Result<Action> {
    let managed = i64::try_from(ctx.customers.len()).unwrap_or(i64::MAX);
    ctx.kit
        .metrics
        .managed
        .get_or_create(&ControllerLabel {
            controller: ctx.kit.controller,
        })
        .set(managed);
    ctx.synced.wait().await?;
    let api: Api<Customer> = ctx.kit.cluster_api();
    let result = decide(customer, ctx, &api).await;
    berth_kit::report::settle(&ctx.kit, &api, customer.as_ref(), result).await
}

/// Applies the Customer, or deals with its deletion.
async fn decide(customer: &Arc<Customer>, ctx: &Arc<Ctx>, api: &Api<Customer>) -> Result<Action> {
    let held = customer.finalizers().iter().any(|f| f == FINALIZER);
    let deleting = customer.meta().deletion_timestamp.is_some();
    // Only `Retain` has anything to do at deletion, so only a `Retain` Customer holds the finalizer: a
    // `Delete` Customer can still be deleted once berth is uninstalled.
    if customer.spec.deletion_policy == DeletionPolicy::Retain || (held && deleting) {
        return finalizer(api, FINALIZER, customer.clone(), |event| async {
            match event {
                finalizer::Event::Apply(c) => apply(&c, ctx).await,
                finalizer::Event::Cleanup(c) => cleanup(&c, ctx).await,
            }
        })
        .await
        // The inner error keeps its category.
        .map_err(|e| match e {
            finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
            finalizer::Error::AddFinalizer(e) | finalizer::Error::RemoveFinalizer(e) => Error::Kube(e),
            other => Error::Internal(other.to_string()),
        });
    }
    if deleting {
        return Ok(Action::await_change());
    }
    if held {
        release(api, customer, &ctx.kit).await?;
    }
    apply(customer, ctx).await
}

/// Who holds the tenant namespace's name.
enum Holder {
    Nobody,
    Us,
    /// Left behind by an earlier Customer of the same name under `deletionPolicy: Retain`.
    Retained,
    Other(String),
}

async fn namespace_holder(c: &Customer, ctx: &Ctx) -> Result<Holder> {
    let name = c.namespace_name();
    let uid = c.uid().unwrap_or_default();
    let ours = |ns: &Namespace| {
        ns.owner_references().iter().any(|o| o.uid == uid) || ns.annotations().get(CUSTOMER_UID) == Some(&uid)
    };
    if ctx
        .stores
        .namespaces
        .get(&ObjectRef::new(&name))
        .is_some_and(|ns| ours(&ns))
    {
        return Ok(Holder::Us);
    }
    // Not in berth's cache: either it does not exist yet, or it is somebody else's.
    let api: Api<Namespace> = ctx.kit.cluster_api();
    Ok(match api.get_metadata_opt(&name).await? {
        None => Holder::Nobody,
        Some(ns) if ns.owner_references().iter().any(|o| o.uid == uid) => Holder::Us,
        Some(ns) if ns.annotations().get(CUSTOMER_UID) == Some(&uid) => Holder::Us,
        // Kept under `Retain` by an earlier Customer of this name (names are unique, so that one is gone),
        // and nobody owns it: a Customer re-created with the same name takes its tenant (and data) back.
        Some(ns)
            if ns.owner_references().is_empty()
                && ns.labels().get(labels::CUSTOMER) == Some(&c.name_any())
                && ns
                    .labels()
                    .get(labels::MANAGED_BY)
                    .is_some_and(|v| v == labels::BERTH) =>
        {
            Holder::Retained
        }
        Some(ns) => {
            let owner = ns.labels().get(labels::CUSTOMER).map_or_else(
                || "is not managed by berth".to_owned(),
                |other| format!("belongs to Customer {other}"),
            );
            Holder::Other(format!(
                "namespace {name} already exists and {owner}; berth leaves it untouched"
            ))
        }
    })
}

/// Drops the finalizer of a Customer switched from `Retain` to `Delete`. The resourceVersion makes it a
/// compare-and-swap, so another writer's finalizer is never lost.
async fn release(api: &Api<Customer>, c: &Customer, kit: &Context) -> Result<()> {
    let rest: Vec<&String> = c.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let patch = serde_json::json!({
        "metadata": {"finalizers": rest, "resourceVersion": c.resource_version()}
    });
    kit.count_write("patch");
    api.patch(&c.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

async fn apply(c: &Customer, ctx: &Ctx) -> Result<Action> {
    let kit = &ctx.kit;
    let Some(kids) = build::children(c) else {
        return Err(Error::InvalidSpec("the Customer has no UID yet".to_owned()));
    };
    let ns_name = c.namespace_name();
    let old = c.status.as_ref();
    let mut seen = Observed {
        namespace_name: ns_name.clone(),
        namespace: NamespaceState::Active,
        database: Feature::Blocked,
        scheduler: Feature::Blocked,
        suspended: c.spec.suspend,
        generation: c.meta().generation,
    };
    let holder = namespace_holder(c, ctx).await?;
    let (database, scheduler);
    let action = match holder {
        Holder::Other(why) => {
            if !already_reported(old, status::NAMESPACE_READY, "NameConflict") {
                kit.event(
                    &c.object_ref(&()),
                    EventType::Warning,
                    "NameConflict",
                    why.clone(),
                )
                .await;
            }
            seen.namespace = NamespaceState::Conflict(why);
            // Nothing berth watches changes when that namespace goes away; look again now and then.
            Action::requeue(Duration::from_secs(60))
        }
        Holder::Nobody | Holder::Us | Holder::Retained => {
            let created = matches!(holder, Holder::Nobody);
            let adopted = matches!(holder, Holder::Retained);
            let drift = if created || adopted {
                Vec::new()
            } else {
                crate::drift::drifted(c, &kids, &ctx.stores)
            };
            let applied = apply_children(c, kids, ctx).await?;
            seen.namespace = applied.namespace;
            (database, scheduler) = (applied.database, applied.scheduler);
            seen.database = feature(c.spec.features.database.enabled, database.as_ref());
            seen.scheduler = feature(c.spec.features.scheduler.enabled, scheduler.as_ref());
            let me = c.object_ref(&());
            if created {
                kit.event(
                    &me,
                    EventType::Normal,
                    "Created",
                    format!("created tenant namespace {ns_name}"),
                )
                .await;
            }
            if adopted {
                let note = format!(
                    "took back tenant namespace {ns_name}, retained by an earlier Customer of this name"
                );
                kit.event(&me, EventType::Normal, "Adopted", note).await;
            }
            if !drift.is_empty() {
                tracing::info!(?drift, "repaired drift");
                let note = format!("put back what was changed by hand: {}", drift.join(", "));
                kit.event(&me, EventType::Normal, "DriftRepaired", note).await;
            }
            if matches!(seen.namespace, NamespaceState::Active) {
                Action::requeue(RESYNC)
            } else {
                Action::requeue(Duration::from_secs(5))
            }
        }
    };
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let new = status::status(old, &seen, &now);
    let api: Api<Customer> = kit.cluster_api();
    kit.apply_status(&api, c, old, &new).await?;
    Ok(action)
}

fn feature<K>(enabled: bool, applied: Option<&K>) -> Feature<'_, K> {
    match (enabled, applied) {
        (false, _) => Feature::Disabled,
        (true, Some(k)) => Feature::Applied(k),
        (true, None) => Feature::Blocked,
    }
}

fn already_reported(old: Option<&CustomerStatus>, type_: &str, reason: &str) -> bool {
    old.and_then(|s| berth_api::find_condition(&s.conditions, type_))
        .is_some_and(|c| c.reason == reason)
}

struct Applied {
    namespace: NamespaceState,
    database: Option<Database>,
    scheduler: Option<Scheduler>,
}

/// Applies in dependency order: the namespace first (nothing else can exist without it), then the
/// guard rails (quota, limits, network policy, RBAC) before any workload-bearing child.
async fn apply_children(c: &Customer, kids: Children, ctx: &Ctx) -> Result<Applied> {
    let Children {
        namespace,
        resource_quota,
        limit_range,
        network_policies,
        admins,
        database,
        scheduler,
    } = kids;
    let kit = &ctx.kit;
    let st = &ctx.stores;
    let name = c.namespace_name();
    // Each child is written only when it differs from what berth last applied (see
    // `Context::apply_unless_unchanged`); the caches say whether anyone touched it since.
    let ns = kit
        .apply_unless_unchanged(
            &kit.cluster_api(),
            &namespace,
            current(&st.namespaces, &namespace),
        )
        .await?;
    let phase = ns
        .status
        .and_then(|s| s.phase)
        .unwrap_or_else(|| "Active".to_owned());
    if phase != "Active" {
        return Ok(Applied {
            namespace: NamespaceState::NotActive(phase),
            database: None,
            scheduler: None,
        });
    }
    kit.apply_unless_unchanged(
        &kit.api(&name),
        &resource_quota,
        current(&st.quotas, &resource_quota),
    )
    .await?;
    kit.apply_unless_unchanged(
        &kit.api(&name),
        &limit_range,
        current(&st.limit_ranges, &limit_range),
    )
    .await?;
    for np in &network_policies {
        remove_foreign_rules(kit, &st.network_policies, np).await?;
        kit.apply_unless_unchanged(&kit.api(&name), np, current(&st.network_policies, np))
            .await?;
    }
    kit.apply_unless_unchanged(&kit.api(&name), &admins, current(&st.role_bindings, &admins))
        .await?;
    let database = sync_optional(
        kit,
        &ctx.stores.databases,
        &name,
        crate::names::DATABASE,
        database,
    )
    .await?;
    let scheduler = sync_optional(
        kit,
        &ctx.stores.schedulers,
        &name,
        crate::names::SCHEDULER,
        scheduler,
    )
    .await?;
    Ok(Applied {
        namespace: NamespaceState::Active,
        database,
        scheduler,
    })
}

/// A rule someone added by hand to a policy berth keeps rule-free (default-deny) is not berth's field, so
/// server-side apply would leave it; and berth cannot own "no rules" (the API server drops an empty list,
/// which would make every apply a write). So such rules are removed explicitly, only when present.
async fn remove_foreign_rules(
    kit: &Context,
    cache: &Store<NetworkPolicy>,
    desired: &NetworkPolicy,
) -> Result<()> {
    let wants_rules = desired
        .spec
        .as_ref()
        .and_then(|s| s.ingress.as_ref())
        .is_some_and(|r| !r.is_empty());
    let ns = desired.namespace().unwrap_or_default();
    let Some(have) = cache.get(&ObjectRef::new(&desired.name_any()).within(&ns)) else {
        return Ok(());
    };
    let has_rules = have
        .spec
        .as_ref()
        .and_then(|s| s.ingress.as_ref())
        .is_some_and(|r| !r.is_empty());
    if wants_rules || !has_rules {
        return Ok(());
    }
    let remove = serde_json::json!({"spec": {"ingress": null}});
    let api: Api<NetworkPolicy> = kit.api(&ns);
    kit.count_write("patch");
    api.patch(
        &desired.name_any(),
        &PatchParams::apply(&kit.manager),
        &Patch::Merge(&remove),
    )
    .await?;
    Ok(())
}

/// Applies a feature's child when it is wanted, deletes it when it is not and still exists.
async fn sync_optional<K>(
    kit: &Context,
    store: &Store<K>,
    ns: &str,
    name: &str,
    desired: Option<K>,
) -> Result<Option<K>>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + berth_kit::slim::Slim,
{
    let api: Api<K> = kit.api(ns);
    match desired {
        Some(obj) => {
            let cached = current(store, &obj);
            Ok(Some(kit.apply_unless_unchanged(&api, &obj, cached).await?))
        }
        None => {
            if store.get(&ObjectRef::new(name).within(ns)).is_some() {
                kit.delete(&api, name).await?;
            }
            Ok(None)
        }
    }
}

/// The Customer is going away. Under `Retain` its namespace and guard rails have no owner, so garbage
/// collection cannot reach them; the namespace is only marked as retained, for people and for the next
/// Customer of this name. Under `Delete` there is nothing to do but let garbage collection work.
async fn cleanup(c: &Customer, ctx: &Ctx) -> Result<Action> {
    if c.spec.deletion_policy == DeletionPolicy::Delete {
        return Ok(Action::await_change());
    }
    if let (Holder::Us, Some(ns)) = (namespace_holder(c, ctx).await?, build::retained_namespace(c)) {
        let kit = &ctx.kit;
        kit.apply(&kit.cluster_api(), &ns).await?;
        let note = format!(
            "namespace {} is kept (deletionPolicy: Retain)",
            c.namespace_name()
        );
        kit.event(&c.object_ref(&()), EventType::Normal, "Retained", note)
            .await;
    }
    Ok(Action::await_change())
}
