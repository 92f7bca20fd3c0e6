//! Server-side apply under a controller's field manager (see [`crate::managers`]). `force` is right here:
//! the controller owns every field it sends, and SSA leaves every field it does not send to whoever owns it.

use std::fmt::Debug;

use kube::api::{Api, DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result, is_not_found};

/// Applies `obj` (which must carry apiVersion and kind) through `api` as `manager`, scoped where `obj`
/// lives.
///
/// # Errors
/// Whatever the API server answers.
pub async fn apply<K>(api: &Api<K>, obj: &K, manager: &str) -> Result<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    Ok(api
        .patch(&obj.name_any(), &params(manager), &Patch::Apply(obj))
        .await?)
}

/// Creates `obj` by a server-side apply that carries a resourceVersion no object can have
/// ([`NEVER_A_VERSION`]): where nothing of that name exists the API server creates it (an apply ignores the
/// version on create), and where something does it refuses with 409 (the version does not match). So one
/// write both decides "only if absent", as a POST would, and leaves every field owned by `manager`'s apply,
/// which a POST would not: a field a create sets stays the create's, and a later apply could never remove
/// it (an ownerReference that a switch to `Retain` must take away).
///
/// # Errors
/// Whatever the API server answers: 409 when the name is taken.
pub async fn create<K>(api: &Api<K>, obj: &K, manager: &str) -> Result<K>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    let mut fresh = obj.clone();
    fresh.meta_mut().resource_version = Some(NEVER_A_VERSION.to_owned());
    Ok(api
        .patch(&obj.name_any(), &params(manager), &Patch::Apply(&fresh))
        .await?)
}

/// A forced apply as `manager`, without the duplicate-field check. That check (`fieldValidation` `Warn`,
/// the default, or `Strict`) makes the API server parse the body as YAML a second time, and berth's
/// bodies are serialized from typed structs, which cannot repeat a field; an unknown field is refused by
/// the apply itself whatever the directive.
fn params(manager: &str) -> PatchParams {
    PatchParams::apply(manager).force().validation_ignore()
}

/// The largest etcd revision (an int64): the version of no stored object, yet a valid one to send.
pub const NEVER_A_VERSION: &str = "9223372036854775807";

/// Applies only the status subresource of `obj` as `manager`; returns the object as it then is.
///
/// # Errors
/// Whatever the API server answers.
pub async fn apply_status<K, S>(api: &Api<K>, obj: &K, status: &S, manager: &str) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(&obj.name_any(), &params(manager), &Patch::Apply(&body))
        .await
        .map_err(Error::Kube)
}

/// Deletes `name` in the background (the garbage collector removes its dependents); a missing object is done.
///
/// # Errors
/// Any API error but 404.
pub async fn delete_if_exists<K>(api: &Api<K>, name: &str) -> Result<bool>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let params = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(e) if is_not_found(&e) => Ok(false),
        Err(e) => Err(e.into()),
    }
}
