//! The ownerReference every child of a berth object carries.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;

/// `controller: true` so exactly one parent reconciles the child, `blockOwnerDeletion: true` so a
/// foreground deletion of the parent waits for the child. `None` until the parent has a UID.
#[must_use]
pub fn owner_ref<K: Resource<DynamicType = ()>>(parent: &K) -> Option<OwnerReference> {
    let mut owner = parent.controller_owner_ref(&())?;
    owner.block_owner_deletion = Some(true);
    Some(owner)
}
