//! One reconcile of a Customer, top to bottom: load (caches and one namespace lookup) → who may use the
//! namespace (pure; a free one is claimed by creating it) → build (pure) → apply → status. Under `Retain`,
//! deletion goes through the finalizer, which marks what is kept.

use std::sync::Arc;
use std::time::Duration;

use berth_api::{Customer, CustomerStatus, Database, DeletionPolicy, Scheduler, Webhook};
use berth_kit::cache::Cache;
use berth_kit::error::{Error, Result, is_conflict};
use berth_kit::runtime::Reconciler;
use berth_kit::slim::Cached;
use berth_kit::watch::{Synced, current, current_whole};
use berth_kit::{Context, Ledger, labels};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::{LimitRange, Namespace, ResourceQuota};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::build::{self, Children};
use crate::names::{CUSTOMER_UID, DATABASE, FINALIZER, SCHEDULER, WEBHOOK};
use crate::status::{self, Feature, NamespaceState, Observed};

/// Caches of what the Customer controller owns, filled by the same watches that wake it.
pub struct Stores {
    pub namespaces: Cache<Cached<Namespace>>,
    pub quotas: Cache<Cached<ResourceQuota>>,
    pub limit_ranges: Cache<Cached<LimitRange>>,
    pub network_policies: Cache<Cached<NetworkPolicy>>,
    pub role_bindings: Cache<Cached<RoleBinding>>,
    pub databases: Store<Database>,
    pub schedulers: Store<Scheduler>,
    pub webhooks: Store<Webhook>,
}

impl Stores {
    /// Until every cache has listed once, "not in the cache" means nothing. `shared` are the listings of
    /// the process-wide Database and Scheduler caches, whose stores must not be waited on here (the
    /// Database and Scheduler controllers already do, and a store wakes only one waiter).
    #[must_use]
    pub fn synced(&self, shared: Vec<BoxFuture<'static, bool>>) -> Synced {
        let mut all = vec![
            self.namespaces.listed(),
            self.quotas.listed(),
            self.limit_ranges.listed(),
            self.network_policies.listed(),
            self.role_bindings.listed(),
        ];
        all.extend(shared);
        Synced::new(all)
    }
}

pub struct Ctx {
    pub kit: Arc<Context>,
    pub stores: Stores,
    pub synced: Synced,
}

impl Reconciler for Ctx {
    type K = Customer;

    fn kit(&self) -> &Context {
        &self.kit
    }

    fn synced(&self) -> Option<&Synced> {
        Some(&self.synced)
    }

    fn api(&self, _: &Customer) -> Api<Customer> {
        self.kit.cluster_api()
    }

    async fn reconcile(&self, customer: Arc<Customer>) -> Result<Action> {
        decide(customer, self).await
    }
}

/// Applies the Customer, or deals with its deletion.
async fn decide(customer: Arc<Customer>, ctx: &Ctx) -> Result<Action> {
    let api: &Api<Customer> = &ctx.kit.cluster_api();
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
        release(api, &customer, &ctx.kit).await?;
    }
    apply(&customer, ctx).await
}

/// Who holds the tenant namespace's name.
enum Holder {
    Nobody,
    Us,
    /// Left behind by an earlier Customer of the same name under `deletionPolicy: Retain`, with the UID it
    /// records (`None`: kept by a berth that recorded none).
    Retained(Option<String>),
    Other(String),
}

/// What this reconcile does with the tenant namespace.
enum Standing {
    /// Nobody holds it: claim it (see [`claim`]).
    Free,
    /// Claimed by this reconcile: the namespace as created.
    Created(Box<Namespace>),
    Ours,
    /// Retained by the earlier Customer of this name with this UID, which the spec asks to take over.
    Adopt(String),
    /// Not berth's to touch for this Customer; `reason` is the condition's and the Warning event's.
    Refused {
        reason: &'static str,
        message: String,
    },
}

const NAME_CONFLICT: &str = "NameConflict";
const RETAINED_NAMESPACE: &str = "RetainedNamespace";

/// What `c` may do with the namespace `holder` holds. A retained namespace holds an earlier tenant's data,
/// and a new tenant may reuse the name by accident: it is taken over only when the spec names the UID it
/// records, which only someone who looked at it can know.
fn standing(c: &Customer, holder: Holder) -> Standing {
    let recorded = match holder {
        Holder::Nobody => return Standing::Free,
        Holder::Us => return Standing::Ours,
        Holder::Other(message) => {
            return Standing::Refused {
                reason: NAME_CONFLICT,
                message,
            };
        }
        Holder::Retained(recorded) => recorded,
    };
    let asked = c.spec.adopt_namespace_of.as_deref();
    let ns = c.namespace_name();
    let name = c.name_any();
    let kept = format!(
        "namespace {ns} was kept with its data (deletionPolicy: Retain) by an earlier Customer {name}"
    );
    let message = match recorded {
        Some(uid) if asked == Some(uid.as_str()) => return Standing::Adopt(uid),
        Some(uid) => {
            let instead = asked.map_or_else(String::new, |a| format!(", not {a}"));
            format!(
                "{kept} with UID {uid}{instead}; berth leaves it untouched: set spec.adoptNamespaceOf: {uid} \
                 to take it over with its data, or re-create this Customer with another spec.namespace"
            )
        }
        None => {
            let uid = c.uid().unwrap_or_default();
            format!(
                "{kept}, which it does not name by UID; berth leaves it untouched: run `kubectl annotate \
                 namespace {ns} {CUSTOMER_UID}={uid}` to take it over with its data, or re-create this \
                 Customer with another spec.namespace"
            )
        }
    };
    Standing::Refused {
        reason: RETAINED_NAMESPACE,
        message,
    }
}

async fn namespace_holder(c: &Customer, ctx: &Ctx) -> Result<Holder> {
    let name = c.namespace_name();
    let cached = ctx.stores.namespaces.get(&ObjectRef::new(&name));
    if let Some(h @ Holder::Us) = cached.map(|ns| holder(c, Some(ns.meta()))) {
        return Ok(h);
    }
    // Not in berth's cache as ours: either it does not exist yet, or it is somebody else's.
    let api: Api<Namespace> = ctx.kit.cluster_api();
    let live = api.get_metadata_opt(&name).await?;
    Ok(holder(c, live.as_ref().map(|m| &m.metadata)))
}

/// Who holds `c`'s namespace, given that namespace's metadata (`None`: it does not exist).
fn holder(c: &Customer, ns: Option<&ObjectMeta>) -> Holder {
    let Some(ns) = ns else {
        return Holder::Nobody;
    };
    let uid = c.uid().unwrap_or_default();
    let owners = ns.owner_references.as_deref().unwrap_or_default();
    let labels = ns.labels.clone().unwrap_or_default();
    let recorded = ns.annotations.as_ref().and_then(|a| a.get(CUSTOMER_UID));
    if owners.iter().any(|o| o.uid == uid) || recorded == Some(&uid) {
        return Holder::Us;
    }
    // Kept under `Retain` by an earlier Customer of this name (names are unique, so that one is gone),
    // and nobody owns it.
    if owners.is_empty()
        && labels.get(labels::CUSTOMER) == Some(&c.name_any())
        && labels.get(labels::MANAGED_BY).is_some_and(|v| v == labels::BERTH)
    {
        return Holder::Retained(recorded.cloned());
    }
    let name = c.namespace_name();
    let owner = labels.get(labels::CUSTOMER).map_or_else(
        || "is not managed by berth".to_owned(),
        |other| format!("belongs to Customer {other}"),
    );
    Holder::Other(format!(
        "namespace {name} already exists and {owner}; berth leaves it untouched"
    ))
}

/// Takes a free namespace by creating it as it should be (see [`berth_kit::apply::create`]): the create
/// fails when the name exists, where an apply would take over whatever another Customer made a moment
/// earlier, so of two Customers naming one namespace at once exactly one wins. The other reads what the
/// winner made and decides again, as if it had found it there.
async fn claim(c: &Customer, ns: &Namespace, ctx: &Ctx) -> Result<Standing> {
    let kit = &ctx.kit;
    let api: Api<Namespace> = kit.cluster_api();
    match kit.create(&api, ns).await {
        Ok(created) => Ok(Standing::Created(Box::new(created))),
        Err(Error::Kube(e)) if is_conflict(&e) => {
            let name = ns.name_any();
            let live = api.get_metadata_opt(&name).await?;
            match standing(c, holder(c, live.as_ref().map(|m| &m.metadata))) {
                Standing::Free => Err(Error::Unavailable(format!(
                    "namespace {name} was deleted while berth created it"
                ))),
                other => Ok(other),
            }
        }
        Err(e) => Err(e),
    }
}

/// Drops the finalizer of a Customer switched from `Retain` to `Delete`, never another writer's.
async fn release(api: &Api<Customer>, c: &Customer, kit: &Context) -> Result<()> {
    let rest: Vec<&String> = c.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    kit.swap_metadata(api, c, serde_json::json!({"finalizers": rest}))
        .await
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
        webhooks: Feature::Blocked,
        suspended: c.spec.suspend,
        generation: c.meta().generation,
    };
    let mut standing = standing(c, namespace_holder(c, ctx).await?);
    if matches!(standing, Standing::Free) {
        standing = claim(c, &kids.namespace, ctx).await?;
    }
    let (database, scheduler, webhook);
    let mut record = None;
    let action = match standing {
        Standing::Refused { reason, message } => {
            if !already_reported(old, status::NAMESPACE_READY, reason) {
                kit.event(&c.object_ref(&()), EventType::Warning, reason, message.clone())
                    .await;
            }
            seen.namespace = NamespaceState::Refused { reason, message };
            // Nothing berth watches changes when someone else's namespace goes away; look again now and then.
            Action::requeue(Duration::from_secs(60))
        }
        // `claim` never answers `Free` (a namespace gone again is an error, retried), so this is only ever
        // what the type requires.
        Standing::Free | Standing::Created(_) | Standing::Ours | Standing::Adopt(_) => {
            let me = c.object_ref(&());
            // Told as soon as it is true: a reconcile cut short after the claim would otherwise never say
            // it, since the next one finds the namespace already ours.
            if matches!(standing, Standing::Created(_)) {
                kit.event(
                    &me,
                    EventType::Normal,
                    "Created",
                    format!("created tenant namespace {ns_name}"),
                )
                .await;
            }
            let ledger = Ledger::new(old.and_then(|s| s.applied.as_deref()));
            let fresh = match &standing {
                Standing::Created(ns) => Some(Namespace::clone(ns)),
                _ => None,
            };
            let applied = apply_children(c, kids, fresh, ctx, &ledger).await?;
            record = ledger.record();
            seen.namespace = applied.namespace;
            (database, scheduler, webhook) = (applied.database, applied.scheduler, applied.webhook);
            seen.database = feature(c.spec.features.database.enabled, database.as_ref());
            seen.scheduler = feature(c.spec.features.scheduler.enabled, scheduler.as_ref());
            seen.webhooks = feature(c.spec.features.webhooks.enabled, webhook.as_ref());
            if let Standing::Adopt(uid) = &standing {
                let note = format!(
                    "took over tenant namespace {ns_name} with its data, kept by the earlier Customer {} \
                     with UID {uid}, as spec.adoptNamespaceOf asks",
                    c.name_any()
                );
                kit.event(&me, EventType::Normal, "Adopted", note).await;
            }
            ledger.tell(kit, &me).await;
            if matches!(seen.namespace, NamespaceState::Active) {
                Action::requeue(berth_kit::runtime::RESYNC)
            } else {
                Action::requeue(Duration::from_secs(5))
            }
        }
    };
    let mut new = status::status(old, &seen, &berth_kit::conditions::now());
    if record.is_some() {
        new.applied = record;
    }
    // The children's progress on the way to Ready is paced (see `berth_kit::pace`).
    let api: Api<Customer> = kit.cluster_api();
    match kit.paced_status(&api, c, old, &new).await? {
        Some(wait) => Ok(Action::requeue(wait)),
        None => Ok(action),
    }
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
    webhook: Option<Webhook>,
}

/// Applies in dependency order: the namespace first (nothing else can exist without it), then the
/// guard rails (quota, limits, network policy, RBAC) before any workload-bearing child. `created`: the
/// namespace as this reconcile's claim created it, already as it should be. Within a step the children
/// do not depend on each other and are ensured at once: a new tenant's reconcile is a chain of round
/// trips, and its length is how many tenants a worker sets up a second.
async fn apply_children(
    c: &Customer,
    kids: Children,
    created: Option<Namespace>,
    ctx: &Ctx,
    ledger: &Ledger,
) -> Result<Applied> {
    let Children {
        namespace,
        resource_quota,
        limit_range,
        network_policies,
        egress,
        admins,
        database,
        scheduler,
        webhook,
    } = kids;
    let kit = &ctx.kit;
    let st = &ctx.stores;
    let name = c.namespace_name();
    // Each child is written only when it differs from what berth last applied (see `Context::ensure`);
    // the caches say whether anyone touched it since, and what was put back is noted for one event.
    let ns = match created {
        Some(ns) => ledger.keep(kit, &namespace, kit.created(&namespace, ns)),
        None => {
            ledger
                .ensure(
                    kit,
                    &kit.cluster_api(),
                    &namespace,
                    current(&st.namespaces, &namespace),
                )
                .await?
        }
    };
    let phase = ns
        .status
        .and_then(|s| s.phase)
        .unwrap_or_else(|| "Active".to_owned());
    if phase != "Active" {
        return Ok(Applied {
            namespace: NamespaceState::NotActive(phase),
            database: None,
            scheduler: None,
            webhook: None,
        });
    }
    let access = kit.settings.tenant_access.as_ref();
    let fresh = match build::operator_binding(c, access) {
        Some(binding) => bind_operator(kit, &st.role_bindings, &binding, ledger).await?,
        None => false,
    };
    let quota = current(&st.quotas, &resource_quota);
    let quotas: Api<ResourceQuota> = kit.api(&name);
    if fresh {
        // A new tenant: nothing recorded to recall.
        let applied = granted(|| kit.ensure(&quotas, &resource_quota, quota.clone())).await?;
        ledger.keep(kit, &resource_quota, applied);
    } else {
        ledger.ensure(kit, &quotas, &resource_quota, quota).await?;
    }
    let (limits, policies, bindings) = (
        kit.api::<LimitRange>(&name),
        kit.api::<NetworkPolicy>(&name),
        kit.api::<RoleBinding>(&name),
    );
    let policy = |np: &NetworkPolicy| {
        let (policies, np) = (&policies, np.clone());
        async move {
            remove_foreign_rules(kit, &st.network_policies, &np).await?;
            let cached = current(&st.network_policies, &np);
            ledger.ensure(kit, policies, &np, cached).await
        }
    };
    let restricting = ObjectRef::<Cached<NetworkPolicy>>::new(crate::names::RESTRICT_EGRESS).within(&name);
    let egress = async {
        match egress {
            Some(np) => {
                let cached = current(&st.network_policies, &np);
                ledger.ensure(kit, &policies, &np, cached).await?;
            }
            None if st.network_policies.get(&restricting).is_some() => {
                kit.delete(&policies, crate::names::RESTRICT_EGRESS).await?;
            }
            None => {}
        }
        Ok(())
    };
    let cached_limits = current(&st.limit_ranges, &limit_range);
    futures::try_join!(
        ledger.ensure(kit, &limits, &limit_range, cached_limits),
        futures::future::try_join_all(network_policies.iter().map(policy)),
        egress,
        ledger.ensure(kit, &bindings, &admins, current(&st.role_bindings, &admins)),
    )?;
    let (database, scheduler, webhook) = futures::try_join!(
        sync_optional(kit, &st.databases, &name, DATABASE, database, ledger),
        sync_optional(kit, &st.schedulers, &name, SCHEDULER, scheduler, ledger),
        sync_optional(kit, &st.webhooks, &name, WEBHOOK, webhook, ledger),
    )?;
    Ok(Applied {
        namespace: NamespaceState::Active,
        database,
        scheduler,
        webhook,
    })
}

/// Binds berth's tenant role to berth in the namespace, before anything else is written there: every
/// other child is written with the rights it grants. Created with a plain create when the cache does not
/// hold it, since the API server authorizes an apply as `patch`, which berth holds only through this very
/// binding. What the create wrote is noted as if applied, so the next reconcile finds nothing to write.
/// Returns whether it was created just now.
async fn bind_operator(
    kit: &Context,
    cache: &Cache<Cached<RoleBinding>>,
    binding: &RoleBinding,
    ledger: &Ledger,
) -> Result<bool> {
    let cached = current(cache, binding);
    let api: Api<RoleBinding> = kit.api(&binding.namespace().unwrap_or_default());
    if cached.is_none() {
        let params = PostParams {
            field_manager: Some(kit.manager.clone()),
            ..PostParams::default()
        };
        kit.count_write("create");
        match api.create(&params, binding).await {
            Ok(created) => {
                ledger.keep(kit, binding, kit.created(binding, created));
                return Ok(true);
            }
            // There already: whose it is, and whether it is as it should be, is `ensure`'s to find out.
            Err(e) if is_conflict(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    ledger.ensure(kit, &api, binding, cached).await?;
    Ok(false)
}

/// Runs the first write after a new binding, again while the API server's authorizer has not seen the
/// binding yet (it follows RBAC objects through a watch of its own, usually within milliseconds): that
/// refusal is not one to report, or to wait out with the error back-off.
async fn granted<T, F, Fut>(mut write: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut wait = Duration::from_millis(20);
    loop {
        match write().await {
            Err(Error::Kube(kube::Error::Api(s))) if s.code == 403 && wait < Duration::from_secs(3) => {
                tracing::debug!(message = %s.message, "waiting for berth's new binding to take effect");
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
}

/// A rule someone added by hand to a policy berth keeps rule-free (default-deny) is not berth's field, so
/// server-side apply would leave it; and berth cannot own "no rules" (the API server drops an empty list,
/// which would make every apply a write). So such rules are removed explicitly, only when present.
async fn remove_foreign_rules(
    kit: &Context,
    cache: &Cache<Cached<NetworkPolicy>>,
    desired: &NetworkPolicy,
) -> Result<()> {
    let ns = desired.namespace().unwrap_or_default();
    let have = cache.get(&ObjectRef::new(&desired.name_any()).within(&ns));
    if !foreign_rules(desired, have.map(|h| h.object()).as_ref()) {
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

/// Whether `have` carries ingress rules that `desired`, a policy berth keeps rule-free, does not.
fn foreign_rules(desired: &NetworkPolicy, have: Option<&NetworkPolicy>) -> bool {
    let rules = |np: &NetworkPolicy| {
        np.spec
            .as_ref()
            .and_then(|s| s.ingress.as_ref())
            .is_some_and(|r| !r.is_empty())
    };
    !rules(desired) && have.is_some_and(rules)
}

/// Applies a feature's child when it is wanted, deletes it when it is not and still exists.
async fn sync_optional<K>(
    kit: &Context,
    store: &Store<K>,
    ns: &str,
    name: &str,
    desired: Option<K>,
    ledger: &Ledger,
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
            let cached = current_whole(store, &obj);
            Ok(Some(ledger.ensure(kit, &api, &obj, cached).await?))
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

#[cfg(test)]
mod tests;
