//! Which children were changed or deleted by someone other than berth since the Customer last converged:
//! the caches are compared with what is about to be applied, for the `DriftRepaired` event.

use berth_api::Customer;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::build::Children;
use crate::reconcile::Stores;

/// Children that existed at the last converged generation and are now gone or changed by someone else.
pub(crate) fn drifted(c: &Customer, kids: &Children, stores: &Stores) -> Vec<String> {
    let converged = c.status.as_ref().and_then(|s| s.observed_generation) == c.meta().generation;
    tracing::debug!(converged, "checking children for drift");
    if !converged {
        return Vec::new();
    }
    let ns = c.namespace_name();
    let mut out = Vec::new();
    let mut check = |kind: &str, name: String, found: Option<bool>| match found {
        None => out.push(format!("{kind}/{name} (deleted)")),
        Some(false) => out.push(format!("{kind}/{name} (changed)")),
        Some(true) => {}
    };
    // Quota quantities come back canonicalised by the API server, so only its existence is compared.
    let q = &kids.resource_quota;
    check(
        "ResourceQuota",
        q.name_any(),
        cached(&stores.quotas, &ns, q, |_, _| true),
    );
    let lr = &kids.limit_range;
    check(
        "LimitRange",
        lr.name_any(),
        cached(&stores.limit_ranges, &ns, lr, |a, b| a.spec == b.spec),
    );
    for np in &kids.network_policies {
        check(
            "NetworkPolicy",
            np.name_any(),
            cached(&stores.network_policies, &ns, np, |a, b| a.spec == b.spec),
        );
    }
    let rb = &kids.admins;
    let same_binding = |a: &RoleBinding, b: &RoleBinding| {
        a.role_ref == b.role_ref
            && a.subjects.as_deref().unwrap_or_default() == b.subjects.as_deref().unwrap_or_default()
    };
    check(
        "RoleBinding",
        rb.name_any(),
        cached(&stores.role_bindings, &ns, rb, same_binding),
    );
    if let Some(db) = &kids.database {
        check(
            "Database",
            db.name_any(),
            cached(&stores.databases, &ns, db, |a, b| a.spec == b.spec),
        );
    }
    if let Some(s) = &kids.scheduler {
        check(
            "Scheduler",
            s.name_any(),
            cached(&stores.schedulers, &ns, s, |a, b| a.spec == b.spec),
        );
    }
    out
}

/// `None` when `desired` is missing from the cache, else whether the cached copy matches it.
fn cached<K>(store: &Store<K>, ns: &str, desired: &K, same: impl Fn(&K, &K) -> bool) -> Option<bool>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store
        .get(&ObjectRef::new(&desired.name_any()).within(ns))
        .map(|have| same(&have, desired))
}
